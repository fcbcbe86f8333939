//! Finishing a transaction: its per-recipient results become fates for
//! the [`Settler`](crate::settler::Settler), and the settlement goes to a
//! disk thread ([`finish_job`]); or it has no result to settle, and the
//! message goes back unchanged ([`hand_back_job`]).

use std::time::SystemTime;

use postman::config::SiteShape;
use postman::dsn::RecipientReport;
use postman::queue::Marked;
use postman::smtp::{Class, MessageResult};
use slog::error;

use super::hand_back::{hand_back, Reason};
use super::job::{Job, QueueFile, Settlement};
use super::shared::Shared;
use crate::settler::{Fate, RecipientFate};

/// The reply of a transaction that says the site throttles this client
/// (`smtp::throttle`, with the site's own patterns), if one does.
pub fn throttle_of(result: &MessageResult, shape: &SiteShape) -> Option<String> {
    result.recipients.iter().find_map(|r| {
        let outcome = r.result.as_ref().err()?;
        let reply = outcome.reply.as_ref()?;
        shape
            .is_throttle(outcome.stage, reply)
            .then(|| reply.to_string().trim_end().to_owned())
    })
}

/// Turns the transaction's results into fates and settles the message.
pub fn finish_job(
    job: Job,
    result: MessageResult,
    shared: &mut Shared,
    relay: &str,
    throttle: Option<String>,
) {
    let fates = fates(result, relay, SystemTime::now());
    for f in &fates {
        match f.fate {
            Fate::Delivered { .. } => shared.stats.sent += 1,
            Fate::Deferred => shared.stats.deferred += 1,
            Fate::Failed(_) => shared.stats.bounced += 1,
            // Sent again: neither deferred nor bounced yet.
            Fate::Again => {}
        }
    }
    let open = job.body.map(|body| {
        let (buffer, open) = body.into_parts();
        if let Some(buffer) = buffer {
            shared.body_pool.give(buffer);
        }
        open
    });
    // Every recipient accepted (the common case): the file's name goes
    // here, so that a crash from now on cannot send it again. It is still
    // open, so freeing its blocks, which waits on the disk, happens when the
    // disk thread closes it.
    let all_delivered = fates
        .iter()
        .all(|f| matches!(f.fate, Fate::Delivered { .. }));
    let file = if all_delivered {
        match job.claimed.remove_delivered() {
            Marked::Removed(leftover) => QueueFile::Removed(Some(leftover)),
            Marked::Failed(claimed, e) => {
                error!(shared.log, "cannot remove a delivered queue file"; "queue_id" => &job.msg.id,
                    "domain" => &job.msg.domain, "error" => %e);
                QueueFile::Claimed(claimed)
            }
        }
    } else {
        QueueFile::Claimed(job.claimed)
    };
    let settlement = Box::new(Settlement {
        msg: job.msg,
        file,
        fates,
        relay: relay.to_owned(),
        log: shared.log.clone(),
        open,
        throttle,
    });
    if settlement.finished_already() {
        shared.tell(settlement.finished());
        shared.disk.hold(settlement);
    } else if let Err(settlement) = shared.disk.try_settle(settlement) {
        settle_here(shared, settlement);
    }
}

/// The fates of a transaction's recipients, in envelope order, the last
/// attempt ending at `now`. `relay` (`host[address]:port`) prefixes each
/// failure's text; its host names the remote MTA in a bounce. A recipient
/// delivered to a server that did not advertise DSN carries the report of
/// a success notice, which the settle plan sends if its NOTIFY asked.
fn fates(result: MessageResult, relay: &str, now: SystemTime) -> Vec<RecipientFate> {
    let host = relay.split('[').next().unwrap_or(relay);
    let again = result.send_again();
    let server_dsn = result.dsn;
    result
        .recipients
        .into_iter()
        .zip(again)
        .map(|(r, again)| {
            let outcome = match r.result {
                Ok(reply) => {
                    let relayed = (!server_dsn)
                        .then(|| RecipientReport::relayed(&r.recipient, &reply, host, relay, now));
                    return RecipientFate {
                        recipient: r.recipient,
                        fate: Fate::Delivered { relayed },
                        code: Some(reply.code),
                        status: reply.enhanced,
                        text: reply.to_string(),
                    };
                }
                Err(outcome) => outcome,
            };
            let reply = outcome.reply.as_ref();
            let fate = match outcome.class {
                // Over the server's limit of recipients per transaction.
                _ if again => Fate::Again,
                Class::Transient => Fate::Deferred,
                Class::Permanent => Fate::Failed(RecipientReport::from_outcome(
                    &r.recipient,
                    &outcome,
                    Some(host),
                    Some(now),
                )),
            };
            RecipientFate {
                code: reply.map(|r| r.code),
                status: reply.and_then(|r| r.enhanced).or(outcome.status),
                text: format!("host {relay} {outcome}"),
                recipient: r.recipient,
                fate,
            }
        })
        .collect()
}

/// Settles in the worker's own thread a settlement no disk thread has
/// room for, which also slows this worker to the pace of the disk.
pub fn settle_here(shared: &mut Shared, settlement: Box<Settlement>) {
    if let Some(done) = settlement.settle_for_dispatcher(&mut shared.settler) {
        shared.tell(done);
    }
    // A message whose state could not be recorded is kept by a disk
    // thread, which tries again on its own clock.
    let kept = shared.settler.take_kept();
    if !kept.is_empty() {
        shared.disk.keep(kept);
    }
}

/// Hands back the message of a transaction that has no result to settle
/// (see [`Reason`]): it could not finish (the connection broke without a
/// result, postman is stopping), or the server never judged it (its reused
/// connection ended before any reply but RSET's: see
/// [`MessageResult::untried`]). Nothing is recorded on the file; its body's
/// buffer goes back to the pool, and the message is counted.
pub fn hand_back_job(shared: &mut Shared, job: Job, reason: Reason<'_>) {
    match &reason {
        Reason::Untried { .. } => shared.stats.untried += 1,
        Reason::Deferred { record: Some(_) } => {
            shared.stats.deferred += job.msg.envelope.recipients.len() as u64;
        }
        _ => {}
    }
    if let Some(body) = job.body {
        shared.body_pool.recycle(body);
    }
    hand_back(&shared.ctx(), job.msg, Some(job.claimed), reason);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use postman::smtp::{Outcome, RecipientResult, Reply, Scope, Stage};

    use super::*;

    const RELAY: &str = "mx.d.test[192.0.2.1]:25";

    fn reply(text: &str) -> Reply {
        text.parse()
            .unwrap_or_else(|e| panic!("test reply {text:?} does not parse: {e}"))
    }

    /// A recipient's result in a row: delivered with a reply, refused at
    /// RCPT with a reply, refused with postman's own status at the end of
    /// DATA, or lost without a reply.
    #[derive(Clone, Copy)]
    enum R {
        Ok(&'static str),
        Rcpt(&'static str),
        TooBig,
        Lost,
    }

    fn result(recipient: &str, r: R) -> RecipientResult {
        let result = match r {
            R::Ok(text) => Ok(reply(text)),
            R::Rcpt(text) => {
                let reply = reply(text);
                Err(Outcome::from_reply(
                    Class::of(reply.code),
                    Scope::Recipient,
                    Stage::Rcpt,
                    reply,
                ))
            }
            R::TooBig => Err(Outcome::from_reply(
                Class::Permanent,
                Scope::Message,
                Stage::DataEnd,
                reply("552 too big"),
            )
            .with_status(postman::dsn::STATUS_PERMANENT)),
            R::Lost => Err(Outcome::without_reply(
                Class::Transient,
                Scope::Destination,
                Stage::DataEnd,
                "lost connection while sending end of data",
            )),
        };
        RecipientResult {
            recipient: recipient.to_owned(),
            result,
        }
    }

    /// A fate as a row shows it: kind, code, status, text.
    fn shown(f: &RecipientFate) -> (String, &'static str, u16, String, String) {
        let kind = match f.fate {
            Fate::Delivered { .. } => "delivered",
            Fate::Deferred => "deferred",
            Fate::Again => "again",
            Fate::Failed(_) => "failed",
        };
        (
            f.recipient.clone(),
            kind,
            f.code.map_or(0, |c| c.get()),
            f.status.map(|s| s.to_string()).unwrap_or_default(),
            f.text.clone(),
        )
    }

    /// Recipient, kind, code (0: none), status ("": none), text.
    type Row = (&'static str, &'static str, u16, &'static str, &'static str);
    /// A row's name, its recipients' results, and the fates they make.
    type Case = (&'static str, &'static [(&'static str, R)], &'static [Row]);

    #[test]
    fn each_result_becomes_its_fate() {
        let cases: &[Case] = &[
            (
                "delivered: the reply as the server gave it",
                &[("a", R::Ok("250 2.0.0 queued as 1"))],
                &[("a", "delivered", 250, "2.0.0", "250 2.0.0 queued as 1")],
            ),
            (
                "a 4xx to RCPT is deferred, a 5xx failed",
                &[
                    ("a", R::Rcpt("450 4.2.0 greylisted")),
                    ("b", R::Rcpt("550 5.1.1 no such user")),
                ],
                &[
                    (
                        "a",
                        "deferred",
                        450,
                        "4.2.0",
                        "host mx.d.test[192.0.2.1]:25 said: 450 4.2.0 greylisted (in reply to RCPT TO command)",
                    ),
                    (
                        "b",
                        "failed",
                        550,
                        "5.1.1",
                        "host mx.d.test[192.0.2.1]:25 said: 550 5.1.1 no such user (in reply to RCPT TO command)",
                    ),
                ],
            ),
            (
                "over the server's limit beside a delivery: again",
                &[("a", R::Ok("250 ok")), ("b", R::Rcpt("452 4.5.3 too many"))],
                &[
                    ("a", "delivered", 250, "", "250 ok"),
                    (
                        "b",
                        "again",
                        452,
                        "4.5.3",
                        "host mx.d.test[192.0.2.1]:25 said: 452 4.5.3 too many (in reply to RCPT TO command)",
                    ),
                ],
            ),
            (
                "over the limit with nothing delivered: deferred",
                &[("a", R::Rcpt("452 too many"))],
                &[(
                    "a",
                    "deferred",
                    452,
                    "",
                    "host mx.d.test[192.0.2.1]:25 said: 452 too many (in reply to RCPT TO command)",
                )],
            ),
            (
                "postman's own status when the reply has none",
                &[("a", R::TooBig)],
                &[(
                    "a",
                    "failed",
                    552,
                    "5.0.0",
                    "host mx.d.test[192.0.2.1]:25 said: 552 too big (in reply to end of DATA command)",
                )],
            ),
            (
                "no reply: no code, no status",
                &[("a", R::Lost)],
                &[(
                    "a",
                    "deferred",
                    0,
                    "",
                    "host mx.d.test[192.0.2.1]:25 lost connection while sending end of data",
                )],
            ),
        ];
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for (name, results, want) in cases {
            let result = MessageResult {
                recipients: results.iter().map(|&(r, x)| result(r, x)).collect(),
                untried: false,
                dsn: false,
            };
            let got = fates(result, RELAY, now);
            let got: Vec<_> = got.iter().map(shown).collect();
            let want: Vec<_> = want
                .iter()
                .map(|&(r, k, c, s, t)| (r.to_owned(), k, c, s.to_owned(), t.to_owned()))
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    /// A delivered recipient carries the report of a success notice only
    /// when the server did not advertise DSN (RFC 3461 §5.2.2): the reply,
    /// its 2.X.X status (else 2.0.0), the host, Postfix's sentence.
    #[test]
    fn a_delivery_without_dsn_carries_a_relayed_report() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        // (server DSN, reply, status expected in the report; "" for none)
        let cases = [
            (true, "250 2.1.5 ok", ""),
            (false, "250 2.1.5 ok", "2.1.5"),
            (false, "250 queued", "2.0.0"),
        ];
        for (dsn, text, want) in cases {
            let result = MessageResult {
                recipients: vec![result("a", R::Ok(text))],
                untried: false,
                dsn,
            };
            let got = fates(result, RELAY, now);
            let Some(Fate::Delivered { relayed }) = got.first().map(|f| &f.fate) else {
                panic!("dsn {dsn}, {text:?}: delivered: {got:?}");
            };
            let Some(report) = relayed else {
                assert_eq!(want, "", "dsn {dsn}, {text:?}: no report");
                continue;
            };
            assert_eq!(
                report.status.to_string(),
                want,
                "dsn {dsn}, {text:?}: status"
            );
            assert_eq!(report.reply.as_deref(), Some(text), "{text:?}: reply");
            assert_eq!(
                report.remote_mta.as_deref(),
                Some("mx.d.test"),
                "{text:?}: host"
            );
            assert_eq!(report.last_attempt, Some(now), "{text:?}: when");
            assert_eq!(
                report.reason,
                format!("delivery via {RELAY}: {text}"),
                "{text:?}: reason"
            );
        }
    }

    /// A failed recipient's report names the host without its address and
    /// carries the reply and the time of the attempt.
    #[test]
    fn a_failure_reports_the_host() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let result = MessageResult {
            recipients: vec![result("a", R::Rcpt("550 5.1.1 no such user"))],
            untried: false,
            dsn: false,
        };
        let got = fates(result, RELAY, now);
        let Some(Fate::Failed(report)) = got.first().map(|f| &f.fate) else {
            panic!("a 550 to RCPT fails: {got:?}");
        };
        assert_eq!(
            report.remote_mta.as_deref(),
            Some("mx.d.test"),
            "remote MTA"
        );
        assert_eq!(
            report.reply.as_deref(),
            Some("550 5.1.1 no such user"),
            "reply"
        );
        assert_eq!(report.last_attempt, Some(now), "last attempt");
        assert_eq!(
            report.reason,
            "host mx.d.test said: 550 5.1.1 no such user (in reply to RCPT TO command)",
            "reason"
        );
    }
}
