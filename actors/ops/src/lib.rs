//! The operator commands of the `postman` binary, in the manner of
//! Postfix's postqueue/postsuper and KumoMTA's kcli: `queue` (list and
//! summary), `enqueue`, `flush`, `hold`, `release`, `delete`, `bounce`,
//! `suspend`, `resume` and `stats`. Glue only: the file work is in
//! `postman::queue::admin` and its neighbours, safe while a daemon delivers
//! from the same queue; here are the settings, the clock, this process's
//! claim owner, and what is printed.
//!
//! A crate of its own beside the actors (`actors/ops/`): it depends on the
//! core only, so that a command reads without the daemon and the daemon
//! without the commands; the `postman` binary's command line
//! (`actors/src/cli.rs`) dispatches to it.
//!
//! What is done goes to standard output, one line per message; what could
//! not be done goes to standard error, and the exit status is non-zero when
//! anything failed (after the rest was processed).

pub mod admin;
pub mod control;
mod format;
pub mod inject;
pub mod listing;
mod sites;
pub mod stats;

use std::io::{self, Write};

use anyhow::{bail, Context as _};
use postman::config::Config;
use postman::queue::{self, Layout, Queue};

pub use admin::{bounce, delete, flush, hold, release};
pub use inject::enqueue;
pub use listing::queue;
pub use stats::{stats, StatsOptions};

/// The queue of `config` (`application.maildir.path`), opened: a mistyped
/// `--maildir` is an error, not an empty queue, and so is a linked
/// `.OTHER_SERVERS`. `create` makes `.OTHER_SERVERS` when it is missing
/// (for the commands that write into the queue).
fn open_queue(config: &Config, create: bool) -> anyhow::Result<Queue> {
    let layout = Layout::new(config.maildir.clone());
    let opened = if create {
        Queue::create(layout)
    } else {
        Queue::open(layout)
    };
    opened.with_context(|| {
        format!(
            "cannot read the queue root {} (application.maildir.path)",
            config.maildir.display()
        )
    })
}

/// A `--domain` value as a queue folder name: lower-cased, an LDH domain in
/// A-label form.
fn domain_arg(domain: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(given) = domain else {
        return Ok(None);
    };
    let domain = given.trim_end_matches('.').to_ascii_lowercase();
    if !queue::valid_domain(&domain) {
        bail!("invalid --domain {given:?}: expected a domain name in A-label form (xn--… for non-ASCII)");
    }
    Ok(Some(domain))
}

/// Writes `text` to standard output. A closed pipe (`postman queue | head`)
/// is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    // File names, addresses and server replies come from outside: nothing
    // in them may drive the operator's terminal.
    let text = postman::terminal::for_terminal(text);
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

/// Reports one failed item on standard error.
fn complain(error: &dyn std::fmt::Display) {
    eprintln!(
        "postman: {}",
        postman::terminal::for_terminal(&error.to_string())
    );
}

/// The error that makes the exit status non-zero after `failed` of
/// `total` items failed (each was reported already).
fn failures(failed: usize, total: usize, what: &str) -> anyhow::Result<()> {
    if failed == 0 {
        return Ok(());
    }
    bail!("{failed} of {total} {what} failed (see above)")
}
