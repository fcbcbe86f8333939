//! Messages whose new state could not be recorded after an attempt that
//! made part of them final (a recipient delivered, or refused and bounced):
//! sent again as they stand on disk, they would repeat that part. So they
//! stay claimed and out of the dispatcher's hands, and the settler that
//! holds them tries to record the state now and then; once it is
//! recorded, the claim goes back and the scanner finds the message again.
//!
//! A process that stops while it holds some (SIGTERM, or the end of a
//! `--once` run) leaves their claims in `.active/<owner>/`: the next start
//! puts them back. When the state was written into the space reserved for
//! it and only its rename failed, recovery finds it there and puts it in
//! place first ([`postman::queue::adopt_reservation`]); when it could not
//! even be written there (an I/O error, not a full disk: that space was
//! taken before the transaction), the message goes back with the state it
//! had before the attempt, and the recipients that attempt delivered are
//! sent again: the log says which.

use std::time::{Duration, Instant};

use postman::queue::{Claimed, Recorded, Unrecorded};
use slog::{error, info, warn, Logger};

use super::Settler;

/// How often a kept message's state is tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);

/// Every this many failed tries, the log says again that a message waits.
const SAY_EVERY: u32 = 12;

/// A message kept claimed until its state is recorded.
#[derive(Debug)]
pub struct Kept {
    id: String,
    domain: String,
    claimed: Claimed,
    state: Vec<u8>,
    split: Vec<(String, Vec<u8>)>,
    tries: u32,
    next: Instant,
}

impl Kept {
    /// A message whose state `state` (and the states of `split`, new
    /// messages of the same queue file) could not be recorded just now.
    pub fn new(
        id: String,
        domain: String,
        claimed: Claimed,
        state: Vec<u8>,
        split: Vec<(String, Vec<u8>)>,
    ) -> Kept {
        Kept {
            id,
            domain,
            claimed,
            state,
            split,
            tries: 1,
            next: Instant::now() + RETRY_EVERY,
        }
    }
}

impl Settler {
    /// When the next kept message is due for another try, if any is kept.
    pub fn next_kept_retry(&self) -> Option<Instant> {
        self.kept.iter().map(|k| k.next).min()
    }

    /// The messages kept, handed over (to a disk thread, which tries them
    /// again: the worker's own settler has no timer for it).
    pub fn take_kept(&mut self) -> Vec<Kept> {
        std::mem::take(&mut self.kept)
    }

    /// Takes over messages another settler kept.
    pub fn add_kept(&mut self, kept: Vec<Kept>) {
        self.kept.extend(kept);
    }

    /// Tries again to record the state of each kept message due at `now`;
    /// those recorded go back into the queue.
    pub fn retry_kept(&mut self, now: Instant, log: &Logger) {
        let mut still = Vec::new();
        for kept in std::mem::take(&mut self.kept) {
            if kept.next > now {
                still.push(kept);
                continue;
            }
            if let Some(kept) = try_record(kept, now, log) {
                still.push(kept);
            }
        }
        self.kept = still;
    }

    /// Postman stops: one last try for each kept message, then the claims
    /// of those still unrecorded are left for recovery at the next start
    /// (see the module's documentation).
    pub fn abandon_kept(&mut self, log: &Logger) {
        for kept in std::mem::take(&mut self.kept) {
            if let Some(kept) = try_record(kept, Instant::now(), log) {
                error!(log, "stopping with a message whose state could not be recorded: its claim stays for the next start, which puts it back";
                    "queue_id" => &kept.id, "domain" => &kept.domain, "tries" => kept.tries,
                    "claim" => %kept.claimed.path().display());
                kept.claimed.abandon();
            }
        }
    }
}

/// One try; the message back when it is still not recorded.
fn try_record(mut kept: Kept, now: Instant, log: &Logger) -> Option<Kept> {
    match kept.claimed.record_and_release(&kept.state, &kept.split) {
        Ok(recorded) => {
            info!(log, "the message's state is recorded at last; it is back in the queue";
                "queue_id" => &kept.id, "domain" => &kept.domain, "tries" => kept.tries + 1);
            if let Recorded::NotReleased(e) = recorded {
                error!(log, "the message's state is recorded, but its claim cannot be given back; the next start puts it back";
                    "queue_id" => &kept.id, "domain" => &kept.domain, "error" => %e);
            }
            None
        }
        Err(unrecorded) => {
            let Unrecorded { claimed, error } = *unrecorded;
            kept.claimed = claimed;
            kept.tries += 1;
            kept.next = now + RETRY_EVERY;
            if kept.tries.is_multiple_of(SAY_EVERY) {
                warn!(log, "still cannot record the message's state: it stays claimed and unsent";
                    "queue_id" => &kept.id, "domain" => &kept.domain, "tries" => kept.tries,
                    "error" => %error);
            }
            Some(kept)
        }
    }
}
