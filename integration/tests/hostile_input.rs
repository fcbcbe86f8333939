//! End to end, issue 22: hostile or unlucky input must never lose,
//! duplicate, hang or escape. One regression test per defect found by
//! trying to break postman, each against the real binary and real peers on
//! loopback; the modules group them by where the defect lived.

mod common;

/// Servers that talk out of turn, loops back to ourselves, 452, MX fan-out.
#[path = "hostile_input/network.rs"]
mod network;

/// Links, special files and odd names under the queue root; recovery.
#[path = "hostile_input/files.rs"]
mod files;

/// Envelope blocks: sizes postman writes, recipients, rewrites on a full disk.
#[path = "hostile_input/envelope.rs"]
mod envelope;

/// What reaches the log and the settings.
#[path = "hostile_input/logs.rs"]
mod logs;
