//! Postfix's smtpd, a real third-party SMTP server, as a test peer: a
//! private instance per test, from its own `config_directory` in a
//! temporary directory, listening on one loopback `ip:port`.
//!
//! The instance's master runs in the foreground (`master -d`) as a child of
//! the test, with an exit time as a safety net, and is stopped on drop.
//! Every message for the configured domains goes to one Maildir through
//! Postfix's virtual delivery agent, so a test reads what Postfix received.
//! Postfix logs to a file (`maillog_file`), with
//!
//! * `smtpd_tls_loglevel = 1`: "Anonymous TLS connection established from
//!   …: TLSv1.3 with cipher …", the proof that TLS was used;
//! * verbose logging for loopback clients (`debug_peer_level = 3`), which
//!   includes every command received and each read from the client
//!   (`vstream_buf_get_ready: fd N got M`): the proof of pipelining;
//! * the per-session summary, `disconnect from … ehlo=2 starttls=1 mail=1
//!   rcpt=2 bdat=1 quit=1`: the proof of STARTTLS and BDAT.
//!
//! A machine without Postfix fails the test saying what to install.
//!
//! [`ClientLimits`] make the instance limit its clients the way real
//! servers do, through Postfix's anvil(8) service: connections at once
//! (`smtpd_client_connection_count_limit`), connections and messages per
//! time unit (`smtpd_client_connection_rate_limit`,
//! `smtpd_client_message_rate_limit`, `anvil_rate_time_unit`). Postfix
//! then answers, in its own words, `421 4.7.0 <host> Error: too many
//! connections from <ip>` (and closes) or `450 4.7.1 Error: too much mail
//! from <ip>` (to MAIL), and logs a `warning: … limit exceeded` for each
//! refusal, which [`Postfix::refusals`] counts. Loopback clients are not
//! exempt then (`smtpd_client_event_limit_exceptions` is emptied; by
//! default it is `$mynetworks`). [`PostfixOptions::quiet`] turns off the
//! verbose per-command logging, which a test of hundreds of messages does
//! not need.
//!
//! [`PostfixOptions::sasl`] makes the instance a submission relay as mail
//! providers run one: STARTTLS before anything, then SMTP AUTH through
//! Cyrus SASL (see [`SaslUsers`]), relaying only for authenticated
//! clients, so its `535` and `554` are the real answers.
//! [`PostfixOptions::implicit_tls_port`] adds a listener where TLS starts
//! at once (RFC 8314, "port 465"). What smtpd accepted, from which address,
//! after which AUTH, and what it refused, are read back from its log
//! ([`Postfix::accepted`], [`Postfix::auth_failures`],
//! [`Postfix::rejections`], [`Postfix::sessions`]).

mod log;
mod sasl;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::certs::make_readable;

pub use log::{Accepted, AuthFailure, Rejection, SaslLogin, Session};
use sasl::MYHOSTNAME;
pub use sasl::{SaslUsers, DEFAULT_MECHANISMS};

/// Where Debian puts Postfix's daemons.
const DAEMON_DIRECTORY: &str = "/usr/lib/postfix/sbin";

/// How long an instance may take to start: `postfix check` sleeps a
/// little, CI machines are slow.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A test's master exits by itself after this long, should the test die
/// without stopping it.
const SAFETY_EXIT: Duration = Duration::from_secs(600);

/// How a private Postfix instance runs.
#[derive(Debug, Clone, Default)]
pub struct PostfixOptions {
    /// The server's certificate and key (PEM): STARTTLS is offered.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// EHLO keywords Postfix must not announce
    /// (`smtpd_discard_ehlo_keywords`: `pipelining`, `chunking`, …).
    pub discard_ehlo_keywords: Vec<String>,
    /// Limits on each client (by IP address): what anvil(8) counts.
    pub limits: Option<ClientLimits>,
    /// No verbose logging of loopback clients' sessions (which
    /// [`Postfix::log`] otherwise holds, command by command).
    pub quiet: bool,
    /// SMTP AUTH for these users, and relaying for them only (see
    /// [`SaslUsers`]): with [`tls`](Self::tls), AUTH and MAIL only after
    /// STARTTLS (`smtpd_tls_security_level = encrypt`,
    /// `smtpd_tls_auth_only = yes`).
    pub sasl: Option<SaslUsers>,
    /// A second listener on the same address and this port (e.g.
    /// [`crate::net::free_port`]) where TLS starts at once
    /// (`smtpd_tls_wrappermode = yes`, RFC 8314). Needs
    /// [`tls`](Self::tls).
    pub implicit_tls_port: Option<u16>,
    /// More `main.cf` lines.
    pub extra: Vec<String>,
}

/// How Postfix limits one client, as a provider's MX host does. 0 means no
/// limit, as in Postfix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimits {
    /// Connections open at once (`smtpd_client_connection_count_limit`);
    /// one more is greeted `421 4.7.0 … Error: too many connections from
    /// <ip>` and closed.
    pub connections: u32,
    /// New connections per [`ClientLimits::time_unit`]
    /// (`smtpd_client_connection_rate_limit`); one more gets the same 421.
    pub connection_rate: u32,
    /// MAIL commands per time unit (`smtpd_client_message_rate_limit`);
    /// one more is answered `450 4.7.1 Error: too much mail from <ip>`.
    pub message_rate: u32,
    /// `anvil_rate_time_unit` (whole seconds; Postfix's default is 60 s).
    pub time_unit: Duration,
}

impl ClientLimits {
    /// At most `n` connections at once, nothing else limited.
    pub fn connections(n: u32) -> ClientLimits {
        ClientLimits {
            connections: n,
            connection_rate: 0,
            message_rate: 0,
            time_unit: Duration::from_secs(60),
        }
    }

    /// At most `n` messages (MAIL commands) per `unit`, nothing else
    /// limited.
    pub fn message_rate(n: u32, unit: Duration) -> ClientLimits {
        ClientLimits {
            connections: 0,
            connection_rate: 0,
            message_rate: n,
            time_unit: unit,
        }
    }

    fn main_cf(&self) -> String {
        format!(
            "smtpd_client_event_limit_exceptions =\n\
             smtpd_client_connection_count_limit = {}\n\
             smtpd_client_connection_rate_limit = {}\n\
             smtpd_client_message_rate_limit = {}\n\
             anvil_rate_time_unit = {}s\n",
            self.connections,
            self.connection_rate,
            self.message_rate,
            self.time_unit.as_secs().max(1),
        )
    }
}

/// The refusals anvil's limits caused, from Postfix's own warnings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refusals {
    /// Connections greeted 421 for the count limit (`warning: Connection
    /// concurrency limit exceeded`).
    pub concurrency: usize,
    /// Connections greeted 421 for the connection rate (`warning:
    /// Connection rate limit exceeded`).
    pub connection_rate: usize,
    /// MAIL commands answered 450 for the message rate (`warning: Message
    /// delivery request rate limit exceeded`).
    pub message_rate: usize,
}

impl Refusals {
    /// Connections refused, for either reason.
    pub fn connections(&self) -> usize {
        self.concurrency + self.connection_rate
    }
}

/// A running private Postfix instance; stopped on drop.
pub struct Postfix {
    child: Child,
    root: tempfile::TempDir,
    addr: SocketAddr,
    implicit_tls: Option<SocketAddr>,
}

impl Postfix {
    /// Starts an instance listening on `ip:port` that accepts mail for
    /// `domains` from loopback clients (from authenticated clients only
    /// with [`PostfixOptions::sasl`]). Panics, naming the fix, when it
    /// cannot.
    pub fn start(ip: IpAddr, port: u16, domains: &[&str], options: &PostfixOptions) -> Postfix {
        let master = Path::new(DAEMON_DIRECTORY).join("master");
        if !master.exists() {
            panic!(
                "{} not found: the interop tests need Postfix (`apt-get install postfix`, or run \
                 scripts/test.sh, which installs it)",
                master.display()
            );
        }
        check_options(options);
        let root = tempfile::Builder::new()
            .prefix("postman-postfix-")
            .tempdir()
            .expect("create a temporary Postfix root");
        let conf = write_config(root.path(), ip, port, domains, options);
        postfix_check(root.path(), &conf);
        let child = Command::new(&master)
            .arg("-c")
            .arg(&conf)
            .arg("-d")
            .arg("-e")
            .arg(SAFETY_EXIT.as_secs().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", master.display()));
        let mut postfix = Postfix {
            child,
            root,
            addr: SocketAddr::new(ip, port),
            implicit_tls: options
                .implicit_tls_port
                .map(|port| SocketAddr::new(ip, port)),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !postfix.log().contains("daemon started") {
            if let Ok(Some(status)) = postfix.child.try_wait() {
                panic!(
                    "Postfix master exited with {status} while starting\n--- maillog ---\n{}",
                    postfix.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "Postfix did not start within {START_TIMEOUT:?}\n--- maillog ---\n{}",
                    postfix.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        postfix
    }

    /// The address smtpd listens on (STARTTLS, when offered).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The implicit-TLS listener's address, if
    /// [`PostfixOptions::implicit_tls_port`] asked for one.
    pub fn implicit_tls_addr(&self) -> Option<SocketAddr> {
        self.implicit_tls
    }

    /// Everything Postfix logged so far.
    pub fn log(&self) -> String {
        read_log(self.root.path())
    }

    /// Waits until the log holds `needle` or `timeout` passed; returns
    /// whether it does.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many SMTP connections smtpd took so far (its `connect from`
    /// lines), refused ones included.
    pub fn connection_count(&self) -> usize {
        count_smtpd(&self.log(), ": connect from ")
    }

    /// The refusals anvil's limits caused so far (see [`ClientLimits`]).
    pub fn refusals(&self) -> Refusals {
        let log = self.log();
        Refusals {
            concurrency: count_smtpd(&log, "warning: Connection concurrency limit exceeded"),
            connection_rate: count_smtpd(&log, "warning: Connection rate limit exceeded"),
            message_rate: count_smtpd(
                &log,
                "warning: Message delivery request rate limit exceeded",
            ),
        }
    }

    /// The messages smtpd accepted so far, each with the client's address
    /// and its AUTH (`client=unknown[127.0.0.2], sasl_method=PLAIN,
    /// sasl_username=relay-user`), in log order.
    pub fn accepted(&self) -> Vec<Accepted> {
        log::accepted(&self.log())
    }

    /// The failed AUTH attempts so far (each answered `535 5.7.8 Error:
    /// authentication failed: …`).
    pub fn auth_failures(&self) -> Vec<AuthFailure> {
        log::auth_failures(&self.log())
    }

    /// The commands smtpd refused by its restrictions so far, e.g. the
    /// `554 5.7.1 … Access denied` of an unauthenticated RCPT.
    pub fn rejections(&self) -> Vec<Rejection> {
        log::rejections(&self.log())
    }

    /// The SMTP sessions so far, with what was said in each (unless
    /// [`PostfixOptions::quiet`]) and which part came before TLS.
    pub fn sessions(&self) -> Vec<Session> {
        log::sessions(&self.log())
    }

    /// How many connections came from each client address.
    pub fn connections_by_client(&self) -> BTreeMap<IpAddr, usize> {
        log::connections_by_client(&self.log())
    }

    /// Waits until `done` holds or `timeout` passed, checking every 50 ms;
    /// returns whether it held. E.g. `postfix.wait_until(t, |p|
    /// p.accepted().len() == 2)`.
    pub fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&Postfix) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many messages were delivered into the Maildir so far (without
    /// reading them).
    pub fn message_count(&self) -> usize {
        std::fs::read_dir(self.root.path().join("mail/box/new"))
            .map(|entries| entries.count())
            .unwrap_or(0)
    }

    /// Waits until `n` messages were delivered or `timeout` passed; returns
    /// how many were.
    pub fn wait_for_message_count(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.message_count();
            if got >= n || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The messages delivered so far, as Postfix wrote them (its
    /// `Return-Path`, `Delivered-To` and `Received` headers first), in
    /// file-name order.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let new = self.root.path().join("mail/box/new");
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&new) {
            Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display())))
            .collect()
    }

    /// Waits until `n` messages are delivered or `timeout` passed.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.messages();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Postfix {
    /// The messages Postfix put on hold (a `HOLD` access action, as in
    /// `smtpd_recipient_restrictions = check_recipient_access static:HOLD`),
    /// each as `postcat -e` prints its envelope records: `dsn_envid: …`,
    /// `dsn_ret: …`, `dsn_orig_rcpt: …`, `dsn_notify: …`, `recipient: …`.
    pub fn held(&self) -> Vec<String> {
        let hold = self.root.path().join("queue/hold");
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&hold) {
            Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        let conf = self.root.path().join("conf");
        files
            .iter()
            .map(|file| {
                let out = Command::new("postcat")
                    .arg("-e")
                    .arg("-c")
                    .arg(&conf)
                    .arg(file)
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run postcat: {e}"));
                assert!(
                    out.status.success(),
                    "postcat -e {}: {}",
                    file.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
            .collect()
    }

    /// Waits until `n` messages are on hold or `timeout` passed.
    pub fn wait_for_held(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.held();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        // SIGTERM lets master stop its children; kill() is SIGKILL.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Panics on options that cannot make a working instance.
fn check_options(options: &PostfixOptions) {
    if options.implicit_tls_port.is_some() && options.tls.is_none() {
        panic!("PostfixOptions::implicit_tls_port needs a certificate in PostfixOptions::tls");
    }
    if let Some(sasl) = &options.sasl {
        if options.tls.is_none() && !sasl.plaintext {
            panic!(
                "PostfixOptions::sasl without tls: give a certificate, or set \
                 SaslUsers::plaintext to offer AUTH in plaintext"
            );
        }
    }
}

/// Makes the instance's directories under `root` and writes its
/// configuration; returns the `config_directory`.
fn write_config(
    root: &Path,
    ip: IpAddr,
    port: u16,
    domains: &[&str],
    options: &PostfixOptions,
) -> PathBuf {
    let (uid, gid) = postfix_ids();
    make_readable(root);
    for sub in ["conf", "queue", "data", "mail"] {
        std::fs::create_dir(root.join(sub))
            .unwrap_or_else(|e| panic!("create Postfix {sub} dir: {e}"));
    }
    let conf = root.join("conf");
    make_readable(&conf);
    for owned in ["data", "mail"] {
        std::os::unix::fs::chown(root.join(owned), Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown Postfix {owned} dir to postfix: {e}"));
    }
    if let Some(sasl) = &options.sasl {
        sasl.install(root, uid, gid);
    }
    std::fs::write(
        conf.join("main.cf"),
        main_cf(root, ip, domains, options, uid, gid),
    )
    .expect("write main.cf");
    std::fs::write(
        conf.join("master.cf"),
        master_cf(ip, port, options.implicit_tls_port),
    )
    .expect("write master.cf");
    conf
}

/// `postfix check`, which creates the queue directories with their owners.
fn postfix_check(root: &Path, conf: &Path) {
    // CI's PATH may lack /usr/sbin.
    let postfix_command = ["/usr/sbin/postfix", "/usr/bin/postfix"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("postfix");
    let check = Command::new(postfix_command)
        .arg("-c")
        .arg(conf)
        .arg("check")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `postfix check`: {e}; install postfix"));
    if !check.status.success() {
        panic!(
            "`postfix -c {} check` failed ({}): {}{}\n--- maillog ---\n{}",
            conf.display(),
            check.status,
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr),
            read_log(root),
        );
    }
}

/// How many of smtpd's log lines hold `needle`.
fn count_smtpd(log: &str, needle: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("postfix/smtpd[") && l.contains(needle))
        .count()
}

fn read_log(root: &Path) -> String {
    std::fs::read_to_string(root.join("maillog")).unwrap_or_default()
}

/// The postfix user's uid and gid, from /etc/passwd.
fn postfix_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                ["postfix", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
                _ => None,
            }
        })
        .unwrap_or_else(|| {
            panic!("no postfix user in /etc/passwd: install postfix (scripts/test.sh does it)")
        })
}

fn main_cf(
    root: &Path,
    ip: IpAddr,
    domains: &[&str],
    options: &PostfixOptions,
    uid: u32,
    gid: u32,
) -> String {
    let security = security_cf(root, options);
    let root = root.display();
    let protocols = if ip.is_ipv6() { "all" } else { "ipv4" };
    let mut cf = format!(
        "# written by postman-integration for one test
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = {MYHOSTNAME}
mydomain = {MYHOSTNAME}
myorigin = {MYHOSTNAME}
# master.cf names the one address to listen on.
inet_interfaces = all
inet_protocols = {protocols}
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
virtual_mailbox_domains = {domains}
virtual_mailbox_base = {root}/mail
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
biff = no
smtputf8_enable = yes
",
        domains = domains.join(" "),
    );
    if !options.quiet {
        cf.push_str("debug_peer_list = 127.0.0.0/8 [::1]/128\ndebug_peer_level = 3\n");
    }
    match &options.limits {
        Some(limits) => cf.push_str(&limits.main_cf()),
        // Postfix's default exempts $mynetworks, which SASL empties.
        None => cf.push_str("smtpd_client_event_limit_exceptions = 127.0.0.0/8 [::1]/128\n"),
    }
    cf.push_str(&security);
    if !options.discard_ehlo_keywords.is_empty() {
        cf.push_str(&format!(
            "smtpd_discard_ehlo_keywords = {}\n",
            options.discard_ehlo_keywords.join(" ")
        ));
    }
    for line in &options.extra {
        cf.push_str(line);
        cf.push('\n');
    }
    cf
}

/// The `main.cf` lines for TLS and for whom smtpd relays: loopback
/// clients (`mynetworks`) with opportunistic STARTTLS, or authenticated
/// clients only (see [`SaslUsers`]).
fn security_cf(root: &Path, options: &PostfixOptions) -> String {
    let mut cf = String::new();
    if let Some((cert, key)) = &options.tls {
        cf.push_str(&format!(
            "smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n\
             smtpd_tls_loglevel = 1\nsmtpd_tls_received_header = yes\n",
            cert.display(),
            key.display()
        ));
    }
    match &options.sasl {
        Some(sasl) => cf.push_str(&sasl.main_cf(root, options.tls.is_some())),
        None => {
            cf.push_str("mynetworks = 127.0.0.0/8 [::1]/128\n");
            cf.push_str("smtpd_relay_restrictions = permit_mynetworks, reject\n");
            if options.tls.is_some() {
                cf.push_str("smtpd_tls_security_level = may\n");
            }
        }
    }
    cf
}

/// The services a delivery needs, none chrooted; with `implicit_tls`, a
/// second smtpd where TLS starts at once.
fn master_cf(ip: IpAddr, port: u16, implicit_tls: Option<u16>) -> String {
    let listen = |port: u16| match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    };
    let wrapper = match implicit_tls {
        Some(port) => format!(
            "{} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes \
             -o smtpd_tls_security_level=encrypt\n",
            listen(port)
        ),
        None => String::new(),
    };
    format!(
        "# written by postman-integration for one test
{listen} inet n - n - - smtpd
{wrapper}cleanup    unix n - n - 0 cleanup
qmgr       unix n - n 300 1 qmgr
tlsmgr     unix - - n 1000? 1 tlsmgr
rewrite    unix - - n - - trivial-rewrite
bounce     unix - - n - 0 bounce
defer      unix - - n - 0 bounce
trace      unix - - n - 0 bounce
verify     unix - - n - 1 verify
flush      unix n - n 1000? 0 flush
proxymap   unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp       unix - - n - - smtp
relay      unix - - n - - smtp
showq      unix n - n - - showq
error      unix - - n - - error
retry      unix - - n - - error
discard    unix - - n - - discard
local      unix - n n - - local
virtual    unix - n n - - virtual
anvil      unix - - n - 1 anvil
scache     unix - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
",
        listen = listen(port),
    )
}
