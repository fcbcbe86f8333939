//! postman's actors: Scanner → Dispatcher → I/O workers, with the Logger as
//! the drain thread of slog-async records, each on its own thread and
//! talking only through bounded `crossbeam-channel` mailboxes (see
//! shared/DESIGN.md). Also the command line of the `postman` binary.

pub mod bind;
pub mod cli;
pub mod credentials;
pub mod daemon;
pub mod descriptors;
pub mod dispatcher;
pub mod egress;
pub mod explain;
pub mod https;
pub mod logging;
pub mod mailbox;
pub mod messages;
pub mod records;
pub mod reporter;
pub mod resolver;
pub mod scanner;
pub mod settler;
pub mod worker;
