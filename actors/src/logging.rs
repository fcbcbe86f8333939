//! The Logger actor: the `slog-async` drain thread that every other actor
//! writes to. Actors never print; the log stream is also the metrics interface.

use postman::config::LogFormat;
use slog::{o, Drain, Logger};

/// Records queued between the actors and the drain thread. Delivery records
/// must never be lost, so a full channel blocks the writer
/// ([`slog_async::OverflowStrategy::Block`]); 8192 records absorb a burst of
/// several thousand deliveries while the terminal or disk catches up.
const LOG_CHANNEL_CAPACITY: usize = 8192;

/// Starts the drain thread. Keep the guard alive until every actor has been
/// joined: dropping it flushes the remaining records and joins the thread.
pub fn start(format: LogFormat, debug: bool) -> (Logger, slog_async::AsyncGuard) {
    let level = if debug {
        slog::Level::Debug
    } else {
        slog::Level::Info
    };
    let (drain, guard) = match format {
        LogFormat::Json => {
            let drain = slog_json::Json::new(std::io::stderr())
                .add_default_keys()
                .set_flush(true)
                .build()
                .fuse();
            spawn(drain.filter_level(level).fuse())
        }
        LogFormat::Term => {
            let decorator = slog_term::PlainDecorator::new(std::io::stderr());
            let drain = slog_term::FullFormat::new(decorator).build().fuse();
            spawn(drain.filter_level(level).fuse())
        }
    };
    (Logger::root(drain.fuse(), o!()), guard)
}

fn spawn<D>(drain: D) -> (slog_async::Async, slog_async::AsyncGuard)
where
    D: Drain<Err = slog::Never, Ok = ()> + Send + 'static,
{
    slog_async::Async::new(drain)
        .chan_size(LOG_CHANNEL_CAPACITY)
        .overflow_strategy(slog_async::OverflowStrategy::Block)
        .thread_name("postman-logger".into())
        .build_with_guard()
}
