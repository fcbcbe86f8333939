//! `postman enqueue --from ADDR --to ADDR… [FILE|-]`: checks the addresses
//! (RFC 5321 §4.1.2), reads the message, and queues one file per
//! destination domain (`postman::queue::admin::enqueue`), printing each
//! queue id. The message is stored exactly as read: bare LF line ends are
//! kept, and postman sends every line end as CRLF.

use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{bail, Context as _};
use postman::config::Config;
use postman::queue::admin;

/// Queues the message in `input` (a file, or standard input for `None`
/// or `-`) from `from` to `to`.
pub fn enqueue(
    config: &Config,
    from: &str,
    to: &[String],
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
    let message = read_message(input)?;
    let layout = super::open_queue(config, true)?;
    let pid = std::process::id();
    let mut serial = 0;
    let ids = admin::enqueue(
        &layout,
        &sender,
        &recipients,
        &message,
        SystemTime::now(),
        || {
            serial += 1;
            admin::unique_name(SystemTime::now(), pid, serial, &config.hostname)
        },
    )?;
    let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
    super::print(&text)
}

fn read_message(input: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    let mut message = Vec::new();
    match input {
        None => read_stdin(&mut message)?,
        Some(path) if path == Path::new("-") => read_stdin(&mut message)?,
        Some(path) => {
            message = std::fs::read(path)
                .with_context(|| format!("cannot read the message from {}", path.display()))?;
        }
    }
    Ok(message)
}

fn read_stdin(buf: &mut Vec<u8>) -> anyhow::Result<()> {
    std::io::stdin()
        .lock()
        .read_to_end(buf)
        .context("cannot read the message from standard input")?;
    Ok(())
}
