//! `postman flush`: making a domain's deferred messages due now (Postfix's
//! `postqueue -f`) and ending its backoff. Each deferred message is claimed
//! (so a running delivery is never disturbed and a running postman sees it
//! leave), its state file written without `X-Postman-Next-Attempt`
//! ([`crate::queue::Claimed::record_and_release`]), and the claim put
//! back, which a running postman's scanner sees and reads again.
//!
//! A site's backoff (`.OTHER_SERVERS/.sites/`, the MX hosts that domains
//! share) ends with a flush too ([`flush_sites`]): every one for a flush
//! of everything, those whose `domains:` name the domain for a flush of
//! one. A running postman's scanner sees the file go and lifts the site.

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use super::remove_owner_dir;
use crate::queue::{
    claim, clear_backoff, list_messages, list_site_backoffs, read_backoff, read_queued,
    remove_site_file, DomainBackoff, Queue, Queued, ReadError, Recorded, SiteBackoff, Unrecorded,
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
    /// Messages that could not be flushed (a failed claim or record),
    /// with why; they keep their old state.
    pub errors: Vec<(String, String)>,
    /// The domain's backoff that was removed, if it had one.
    pub backoff_cleared: Option<DomainBackoff>,
}

/// Makes the deferred messages of `domain` due now: each message whose
/// `X-Postman-Next-Attempt` is after `now` is claimed, its state recorded
/// without it (attempts and last error stay) and put back
/// ([`crate::queue::Claimed::record_and_release`]); files claimed by a
/// running delivery are skipped. Then `<domain>/.backoff` is removed (whatever it
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

/// What [`flush_sites`] did.
#[derive(Debug, Default)]
pub struct SiteFlush {
    /// The backoffs removed, with their file names.
    pub lifted: Vec<(String, SiteBackoff)>,
    /// Files that could not be read, removed all the same (a flush of
    /// everything only).
    pub unreadable: Vec<(String, String)>,
    /// Files that could not be removed, with why.
    pub errors: Vec<(String, io::Error)>,
}

/// Ends site backoffs: all of them when `domain` is `None`, else those
/// whose `domains:` list names `domain` (the site files say which domains
/// were routed to the site, so no DNS lookup is needed). Call it before
/// flushing the messages, so that a running postman lifts the site before
/// it sees them come back.
pub fn flush_sites(queue: &Queue, domain: Option<&str>) -> io::Result<SiteFlush> {
    let files = match list_site_backoffs(queue) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(SiteFlush::default()),
        other => other?,
    };
    let mut report = SiteFlush::default();
    for (file, site) in files.found {
        if domain.is_some_and(|d| !site.domains.iter().any(|name| name == d)) {
            continue;
        }
        match remove_site_file(queue, &file) {
            Ok(()) => report.lifted.push((file, site)),
            Err(e) => report.errors.push((file, e)),
        }
    }
    if domain.is_none() {
        for (file, why) in files.bad {
            match remove_site_file(queue, &file) {
                Ok(()) => report.unreadable.push((file, why.to_string())),
                Err(e) => report.errors.push((file, e)),
            }
        }
    }
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
    let deferred = |queued: Result<Queued, ReadError>| -> Result<Option<Queued>, String> {
        match queued {
            Ok(queued) => Ok(queued
                .retry
                .next_attempt
                .is_some_and(|at| at > now)
                .then_some(queued)),
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    };
    // A look without a claim first: most files need nothing.
    let dir = queue.domain(domain).map_err(|e| e.to_string())?;
    let peek = dir
        .open_file(name)
        .map_err(ReadError::Io)
        .and_then(|(mut file, meta)| read_queued(&dir, name, &mut file, meta.len(), domain));
    match deferred(peek) {
        Ok(Some(_)) => {}
        Ok(None) => return Ok(Flushed::NotDeferred),
        Err(why) => return Ok(Flushed::Unreadable(why)),
    }
    let claimed = match claim(queue, domain, name, owner) {
        Ok(Some(claimed)) => claimed,
        Ok(None) => return Ok(Flushed::Busy),
        Err(e) => return Err(format!("cannot claim it: {e}")),
    };
    // Read again under the claim: a delivery may have recorded a new state.
    let read = claimed
        .open()
        .map_err(ReadError::Io)
        .and_then(|(mut file, meta)| {
            let arrival = meta.modified().unwrap_or(UNIX_EPOCH);
            claimed
                .read_queued(&mut file, meta.len())
                .map(|queued| (queued, arrival))
        });
    let (queued, mtime) = match read {
        Ok((queued, mtime)) => match deferred(Ok(queued)) {
            Ok(Some(queued)) => (queued, mtime),
            other => {
                let _ = claimed.release();
                return other.map(|_| Flushed::NotDeferred);
            }
        },
        Err(e) => {
            let _ = claimed.release();
            return deferred(Err(e)).map(|_| Flushed::NotDeferred);
        }
    };
    let mut retry = queued.retry.clone();
    retry.next_attempt = None;
    let arrival = queued.envelope.arrival.unwrap_or(mtime);
    let recipients = &queued.envelope.recipients;
    let blocks = match retry.render_state(&queued.envelope, recipients, arrival, queued.tie) {
        Ok(blocks) => blocks,
        Err(e) => {
            let _ = claimed.release();
            return Err(format!("cannot render its new state: {e}"));
        }
    };
    // Recipients beyond one block (a block written by another program close
    // to the limit) go on as new messages of the same queue file, due now
    // like this one.
    let split: Vec<(String, Vec<u8>)> = blocks[1..]
        .iter()
        .enumerate()
        .map(|(k, b)| (format!("{name}.{}", k + 1), b.bytes.clone()))
        .collect();
    match claimed.record_and_release(&blocks[0].bytes, &split) {
        Ok(Recorded::Released) => Ok(Flushed::Yes(split.into_iter().map(|(n, _)| n).collect())),
        Ok(Recorded::NotReleased(e)) => Err(format!(
            "its new state is recorded, but it cannot be put back (a restart does): {e}"
        )),
        Err(unrecorded) => {
            let Unrecorded { claimed, error } = *unrecorded;
            let _ = claimed.release();
            Err(format!("cannot record its new state: {error}"))
        }
    }
}

#[cfg(test)]
#[path = "flush_tests.rs"]
mod tests;
