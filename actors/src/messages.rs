//! The mailbox messages between the actors. Every piece of state has one
//! owner; a [`QueuedMessage`] moves from the scanner to the dispatcher, to an
//! I/O worker for one delivery attempt, and back when it has to wait.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use postman::config::{Config, SiteShape};
use postman::queue::{Envelope, RetryState, Suspension, Tie};
use postman::route::{Route, RouteError, SiteName};
use postman::schedule::{Queued, SiteId};
use postman::smtp::{EnhancedCode, ReplyCode};

/// One queue file as the scanner found it: the envelope header block is
/// parsed, the message itself stays on disk.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// The file name inside the domain folder: the queue id in every log record.
    pub id: String,
    /// The destination domain (the folder name).
    pub domain: String,
    pub path: PathBuf,
    pub envelope: Envelope,
    /// `X-Postman-Date`, or the file's modification time when it has none.
    pub arrival: SystemTime,
    /// Size of the whole file in bytes.
    pub size: u64,
    /// Earlier attempts, from the file's `X-Postman-*` retry headers.
    pub retry: RetryState,
    /// The file as it was before the scanner read `envelope`.
    pub identity: Option<FileIdentity>,
    /// What the message's state file must name: its queue file's size and
    /// the hash of its own envelope block (`None` until it was read).
    pub tie: Option<Tie>,
    /// The scheduler's key when a `[routing.sender_relayhost]` rule routes
    /// it (`routing::route_key`); `None`: its domain.
    pub route_key: Option<String>,
}

impl QueuedMessage {
    /// What the scheduler queues it under: its domain, or its domain and
    /// the sender rule that routes it.
    pub fn route_key(&self) -> &str {
        self.route_key.as_deref().unwrap_or(&self.domain)
    }
}

/// What changes when a queue file is replaced (every writer renames a new
/// file into place, a new inode) or written in place (size, modification
/// time). A claim's rename keeps all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileIdentity {
    pub fn of(metadata: &Metadata) -> FileIdentity {
        FileIdentity {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.size(),
            mtime: metadata.mtime(),
            mtime_nsec: metadata.mtime_nsec(),
        }
    }
}

#[cfg(test)]
impl QueuedMessage {
    /// A message of `d.test` that exists only in memory, for unit tests.
    pub fn for_test(id: &str, recipients: &[&str]) -> QueuedMessage {
        QueuedMessage {
            id: id.into(),
            domain: "d.test".into(),
            path: std::path::PathBuf::from(id),
            envelope: postman::queue::Envelope {
                sender: String::new(),
                recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
                arrival: None,
                body_offset: 0,
                extra: Vec::new(),
                duplicates: 0,
                params: Default::default(),
                rcpt_params: Default::default(),
            },
            arrival: std::time::UNIX_EPOCH,
            size: 0,
            retry: postman::queue::RetryState::default(),
            identity: None,
            tie: None,
            route_key: None,
        }
    }
}

impl Queued for QueuedMessage {
    fn id(&self) -> &str {
        &self.id
    }
    fn domain(&self) -> &str {
        self.route_key()
    }
}

/// Identifies a connection within one worker. The generation makes an answer
/// that arrives after the connection closed (and its slot was reused) harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub index: u32,
    pub generation: u32,
}

/// What became of one message after an attempt, as far as the dispatcher
/// needs to know. The worker already logged each recipient and updated the
/// queue file.
#[derive(Debug)]
pub enum Disposition {
    /// Nothing left to do for this message: delivered, set aside as failed,
    /// or the file vanished (deleted by an administrator).
    Finished,
    /// At least one recipient is still pending: the message comes back to
    /// wait for its next attempt.
    Deferred(Box<QueuedMessage>),
    /// The message was not tried (its connection closed first, or postman
    /// is stopping), or its recipients left are those a server refused for
    /// its limit of recipients per transaction: it is ready again at once.
    Unused(Box<QueuedMessage>),
}

/// Why a connection failed on every address of a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedConnection {
    pub reason: String,
    /// The last server that answered before failing, `none` if none did.
    pub relay: String,
    /// Its reply code, if it gave a reply.
    pub code: Option<ReplyCode>,
    /// The RFC 3463 status of the deferral: that reply's enhanced code, or
    /// 4.4.6 (mail loop) when `loops`.
    pub status: Option<EnhancedCode>,
    /// Every address failed because it loops back to this host (it is this
    /// host's, or its server names this host): the reason is `mail for
    /// <domain> loops back to myself`, and an expired message bounces with
    /// status 5.4.6.
    pub loops: bool,
    /// The last server's reply said this client sends too much: the reply.
    /// Not a failure of the message: it goes back untried.
    pub throttle: Option<String>,
}

/// The dispatcher's mailbox. A queued message travels boxed in it and in
/// the workers' (as it does in the workers' answer channels): a bounded
/// channel writes every one of its slots when it is made, so small slots
/// keep start-up from touching megabytes.
#[derive(Debug)]
pub enum DispatcherMsg {
    /// The scanner found a queue file, or a new version of one it reported
    /// before (the dispatcher replaces what it holds, unless the message is
    /// in flight: the worker's result is newer).
    Found(Box<QueuedMessage>),
    /// A file the scanner reported earlier is no longer in the queue.
    Gone { domain: String, id: String },
    /// The domain's `.backoff` file was removed: it may be tried at once.
    BackoffCleared { domain: String },
    /// The operator's suspensions (`.OTHER_SERVERS/.suspend/`) as they
    /// hold now: sent at the first scan and whenever they change.
    Suspensions(Vec<Suspension>),
    /// A site's backoff file (`.OTHER_SERVERS/.sites/<file>`) was removed
    /// (`postman flush`): that site may be tried at once.
    SiteBackoffCleared { file: String },
    /// The scanner finished its first full pass over the queue.
    ScanDone,
    /// A route lookup finished: the route and the site its MX records
    /// name.
    Resolved {
        domain: String,
        route: Result<Route, RouteError>,
        site: SiteName,
        valid_until: Instant,
    },
    /// A server of this site took a transaction: it greeted, answered
    /// EHLO and judged a message (a session it ended before that proves
    /// nothing: see the dispatcher's `policy` module).
    Established { site: SiteId },
    /// A delivery attempt ended (or a message came back untried).
    Done {
        domain: String,
        /// The message's queue id.
        id: String,
        disposition: Disposition,
        /// The server judged the message: some recipient has its reply.
        /// Only that earns the domain more connections; a transaction cut
        /// off by a broken connection, or a file that could not be read,
        /// says nothing about what the server can take.
        answered: bool,
        /// The server's reply said this client sends too much
        /// (`smtp::throttle`): the reply, for the log.
        throttle: Option<String>,
    },
    /// The connection is idle and may carry another message of any domain
    /// of its site.
    WantMore {
        worker: usize,
        conn: ConnId,
        site: SiteId,
        /// The domain of the message it carried: the connection counts
        /// against that domain's `max_connections_per_domain` no longer.
        held: Option<String>,
    },
    /// No address of any MX host could be brought to the point of accepting a
    /// message. The job comes back for the dispatcher to settle (it counts
    /// as a failed attempt); the domain should back off.
    ConnectFailed {
        domain: String,
        job: Box<QueuedMessage>,
        failure: FailedConnection,
    },
    /// A message could not even be started for a reason of this process's
    /// own (no socket descriptor below `FD_SETSIZE`, descriptors or socket
    /// buffers exhausted), not the domain's or the file's: the job comes
    /// back untried, with nothing recorded on its file, and the domain is
    /// not backed off. New work should wait a moment.
    LocalLimit {
        domain: String,
        job: Box<QueuedMessage>,
        /// What was put off, and for want of what.
        what: PutOff,
        reason: String,
    },
    /// A route lookup failed while this process was short of descriptors
    /// or socket buffers for its queries: no answer about the domain, so
    /// nothing is deferred or backed off; the lookup is asked again after a
    /// moment.
    LookupPutOff { domain: String, reason: String },
    /// A connection is closed; its slot counts no longer.
    Closed {
        worker: usize,
        conn: ConnId,
        site: SiteId,
        /// The domain it counted against, if it had not asked for more
        /// since its last message.
        held: Option<String>,
        /// It told [`DispatcherMsg::Established`].
        proved: bool,
    },
    /// A message given to a connection that had closed meanwhile: back
    /// untried, and the connection counts against its domain no longer.
    NotTaken(Box<QueuedMessage>),
    /// A worker has closed every connection and stopped.
    WorkerStopped { worker: usize },
    /// SIGINT or SIGTERM: stop gracefully.
    Shutdown,
    /// SIGHUP: the settings were loaded again.
    Reload(Box<Config>),
}

/// Work put off for a shortage of this process's own
/// ([`DispatcherMsg::LocalLimit`], [`DispatcherMsg::LookupPutOff`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOff {
    /// A connection: no socket descriptor (below `FD_SETSIZE`) or buffer.
    Connection,
    /// A route lookup: no socket for its queries.
    RouteLookup,
    /// A queue file: no descriptor to claim or open it.
    QueueFile,
    /// A message's transaction: no disk space to reserve its state file.
    /// Unlike descriptors, which connections give back as they close, a
    /// full disk may stay full: the message waits longer, and `--once`
    /// leaves it for the next run.
    StateFileSpace,
}

impl PutOff {
    /// For the log: what was put off.
    pub fn describe(self) -> &'static str {
        match self {
            PutOff::Connection => "connection",
            PutOff::RouteLookup => "route lookup",
            PutOff::QueueFile => "queue file",
            PutOff::StateFileSpace => "state file space",
        }
    }

    /// Whether the shortage is of disk space rather than descriptors.
    pub fn is_disk_space(self) -> bool {
        self == PutOff::StateFileSpace
    }
}

/// An I/O worker's mailbox.
#[derive(Debug)]
pub enum WorkerMsg {
    /// Open a new connection to `site` along `route` (the route of `job`'s
    /// domain, whose TLS mode it takes) and deliver `job` on it; then
    /// messages of any domain of the site, at most `max_messages` in all.
    Open {
        site: SiteId,
        route: Route,
        job: Box<QueuedMessage>,
        max_messages: usize,
        /// The site's shaping rule: its throttle patterns.
        shape: Arc<SiteShape>,
        /// The site's name, for the delivery records.
        site_name: Arc<str>,
    },
    /// The answer to [`DispatcherMsg::WantMore`]: the next message, or `None`
    /// to say goodbye to the server.
    Next {
        conn: ConnId,
        job: Option<Box<QueuedMessage>>,
    },
    /// Finish what is in flight within the grace period, then stop.
    Shutdown,
    /// New settings (SIGHUP): timeouts, limits and the retry schedule apply
    /// to what starts from now on.
    Reload(Box<Config>),
}

/// The scanner's mailbox (from the wiring).
#[derive(Debug)]
pub enum ScannerMsg {
    /// Stop watching the queue and exit.
    Shutdown,
}
