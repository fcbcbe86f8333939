//! `postman enqueue --from ADDR --to ADDR… [--notify …] [--ret …] [--envid
//! …] [--requiretls] [FILE|-]`: checks the addresses (RFC 5321 §4.1.2), and
//! queues the message one file per destination domain, with the sender's
//! DSN and REQUIRETLS parameters (`postman::queue::admin::enqueue`),
//! printing each queue id. The
//! message is streamed from the file or standard input into the queue, never
//! held in memory whole, and stored exactly as read: bare LF line ends are
//! kept, and postman sends every line end as CRLF. When a domain's
//! recipients do not fit one envelope block they are split over several
//! messages, and standard error says so.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{bail, Context as _};
use postman::config::Config;
use postman::queue::admin;

/// Queues the message in `input` (a file, or standard input for `None`
/// or `-`) from `from` to `to`, with the sender's `params`.
pub fn enqueue(
    config: &Config,
    from: &str,
    to: &[String],
    params: &admin::SenderParams,
    input: Option<&Path>,
) -> anyhow::Result<()> {
    let sender = admin::parse_sender(from)?;
    let mut bad = Vec::new();
    let mut recipients = Vec::new();
    for given in to {
        match admin::parse_recipient(given) {
            Ok(address) => recipients.push(address),
            Err(e) => bad.push(e.to_string()),
        }
    }
    if !bad.is_empty() {
        bail!("{}", bad.join("; "));
    }
    if recipients.is_empty() {
        bail!("no recipient: give at least one --to ADDRESS");
    }
    let queue = super::open_queue(config, true)?;
    let mut message: Box<dyn Read> = match input {
        Some(path) if path != Path::new("-") => Box::new(
            File::open(path)
                .with_context(|| format!("cannot read the message from {}", path.display()))?,
        ),
        _ => Box::new(std::io::stdin().lock()),
    };
    let pid = std::process::id();
    let mut serial = 0;
    let done = admin::enqueue(
        &queue,
        &sender,
        &recipients,
        params,
        &mut message,
        SystemTime::now(),
        || {
            serial += 1;
            admin::unique_name(SystemTime::now(), pid, serial, &config.hostname)
        },
    )?;
    for split in &done.split {
        eprintln!(
            "postman: the {} recipients of {} do not fit one envelope block \
             ({} bytes): queued as {} queue files, each a message of its own \
             with the same body and Message-ID",
            split.recipients,
            split.domain,
            postman::queue::MAX_WRITTEN_BLOCK,
            split.files
        );
    }
    let text: String = done.ids.iter().map(|id| format!("{id}\n")).collect();
    super::print(&text)
}
