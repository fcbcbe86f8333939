//! `postman flush`: making a domain's deferred messages due now (Postfix's
//! `postqueue -f`) and ending its backoff. Each deferred file is claimed
//! (so a running delivery is never disturbed and a running postman sees it
//! leave), rewritten without `X-Postman-Next-Attempt` through `tmp/` and a
//! rename ([`crate::queue::Claimed::rewrite_and_release`]), and so comes back as a new
//! version that a running postman's scanner reads again.

use std::fs::File;
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use super::remove_owner_dir;
use crate::queue::{
    claim, clear_backoff, list_messages, read_backoff, read_envelope_from, split_off,
    DomainBackoff, Envelope, Queue, ReadError, RetryState,
};

/// What [`flush`] did in one domain.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlushReport {
    /// The domain folder.
    pub domain: String,
    /// Messages whose `X-Postman-Next-Attempt` was removed.
    pub flushed: Vec<String>,
    /// Deferred messages being delivered or gone when their turn came.
    pub busy: Vec<String>,
    /// Files whose envelope cannot be read, with why: left alone (a
    /// running postman quarantines them).
    pub unreadable: Vec<(String, String)>,
    /// Messages that could not be flushed (a failed claim or rewrite),
    /// with why; they keep their old state.
    pub errors: Vec<(String, String)>,
    /// The domain's backoff that was removed, if it had one.
    pub backoff_cleared: Option<DomainBackoff>,
}

/// Makes the deferred messages of `domain` due now: each file whose
/// `X-Postman-Next-Attempt` is after `now` is claimed, rewritten without
/// it (attempts and last error stay) and put back through `tmp/` and a
/// rename ([`crate::queue::Claimed::rewrite_and_release`]); files claimed by a running
/// delivery are skipped. Then `<domain>/.backoff` is removed (whatever it
/// is: a backoff that cannot be read is reported as none). Held messages
/// stay held. `NotFound` when the domain folder does not exist.
pub fn flush(queue: &Queue, domain: &str, owner: &str, now: SystemTime) -> io::Result<FlushReport> {
    let dir = queue.domain(domain)?;
    let mut report = FlushReport {
        domain: domain.to_owned(),
        ..FlushReport::default()
    };
    for name in list_messages(&dir)? {
        match flush_one(queue, domain, &name, owner, now) {
            Ok(Flushed::Yes(split)) => {
                report.flushed.push(name);
                report.flushed.extend(split);
            }
            Ok(Flushed::NotDeferred) => {}
            Ok(Flushed::Busy) => report.busy.push(name),
            Ok(Flushed::Unreadable(why)) => report.unreadable.push((name, why)),
            Err(e) => report.errors.push((name, e)),
        }
    }
    remove_owner_dir(queue, domain, owner);
    report.backoff_cleared = read_backoff(queue, domain).ok().flatten();
    clear_backoff(queue, domain)?;
    Ok(report)
}

enum Flushed {
    /// Made due; with the names of new messages split off it, if any.
    Yes(Vec<String>),
    NotDeferred,
    Busy,
    Unreadable(String),
}

fn flush_one(
    queue: &Queue,
    domain: &str,
    name: &str,
    owner: &str,
    now: SystemTime,
) -> Result<Flushed, String> {
    let deferred = |file: io::Result<(File, std::fs::Metadata)>| -> Result<Option<(Envelope, RetryState)>, String> {
        let envelope = match file.map_err(ReadError::Io).and_then(|(mut f, _)| read_envelope_from(&mut f)) {
            Ok(envelope) => envelope,
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let retry = RetryState::from_envelope(&envelope).map_err(|e| e.to_string())?;
        Ok(retry
            .next_attempt
            .is_some_and(|at| at > now)
            .then_some((envelope, retry)))
    };
    // A look without a claim first: most files need nothing.
    let dir = queue.domain(domain).map_err(|e| e.to_string())?;
    match deferred(dir.open_file(name)) {
        Ok(Some(_)) => {}
        Ok(None) => return Ok(Flushed::NotDeferred),
        Err(why) => return Ok(Flushed::Unreadable(why)),
    }
    let claimed = match claim(queue, domain, name, owner) {
        Ok(Some(claimed)) => claimed,
        Ok(None) => return Ok(Flushed::Busy),
        Err(e) => return Err(format!("cannot claim it: {e}")),
    };
    // Read again under the claim: a delivery may have rewritten it.
    let (envelope, mut retry) = match deferred(claimed.open()) {
        Ok(Some(found)) => found,
        other => {
            let _ = claimed.release();
            return other.map(|_| Flushed::NotDeferred);
        }
    };
    retry.next_attempt = None;
    let arrival = match envelope.arrival {
        Some(arrival) => arrival,
        None => claimed
            .open()
            .and_then(|(_, m)| m.modified())
            .unwrap_or(UNIX_EPOCH),
    };
    let blocks = match retry.render_blocks(&envelope, &envelope.recipients, arrival) {
        Ok(blocks) => blocks,
        Err(e) => {
            let _ = claimed.release();
            return Err(format!("cannot render its new envelope: {e}"));
        }
    };
    // Recipients beyond one block (a block written by another program close
    // to the limit) go on as new messages, due now like this one.
    let rest: Vec<&[u8]> = blocks[1..].iter().map(|b| b.bytes.as_slice()).collect();
    let mut split = Vec::new();
    if !rest.is_empty() {
        let mut k = 0;
        let result = claimed.open().and_then(|(mut source, _)| {
            split_off(
                queue,
                domain,
                &mut source,
                envelope.body_offset,
                &rest,
                || {
                    k += 1;
                    format!("{name}.{k}")
                },
            )
        });
        split = match result {
            Ok(names) => names,
            Err(e) => {
                let _ = claimed.release();
                return Err(format!(
                    "cannot queue the recipients that do not fit one envelope block: {e}"
                ));
            }
        };
    }
    claimed
        .rewrite_and_release(&blocks[0].bytes, envelope.body_offset)
        .map_err(|e| format!("cannot rewrite it: {e}"))?;
    Ok(Flushed::Yes(split))
}

#[cfg(test)]
#[path = "flush_tests.rs"]
mod tests;
