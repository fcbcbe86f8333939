//! Real DNSSEC on loopback: zones signed with `ldns-signzone`, served by
//! NSD, and Unbound validating them with the parent zone's key as its
//! trust anchor, each on a port of its own on 127.0.0.1. A postman that
//! trusts the AD bit (`dns.dnssec = "trust-ad"`) is pointed at Unbound
//! ([`Dnssec::resolver`]); pointed at NSD ([`Dnssec::authority`]) it sees
//! answers without the AD bit, as behind a non-validating resolver.
//!
//! The first zone of [`Dnssec::start`] is the parent (`test.`) and is
//! always signed; the others are its children, delegated from it (NS and
//! glue, and a DS record for each signed child): an unsigned child is an
//! insecure delegation, a child signed with expired signatures is bogus
//! (Unbound answers SERVFAIL). A record can be tampered with after
//! signing ([`Zone::tamper`]), which makes that RRset bogus alone.
//!
//! NSD, ldnsutils and Unbound are Debian packages (`scripts/test.sh`
//! installs them); a test that needs them fails, saying so, when they are
//! missing. Unbound refuses `test.` by default (RFC 6761 special names), so
//! its config says `local-zone: "test." nodefault`, and it must be allowed
//! to ask a server on localhost (`do-not-query-localhost: no`).

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::net::free_port;

/// How long NSD and Unbound may take to answer their first query.
const START_WITHIN: Duration = Duration::from_secs(20);

/// How a zone is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// Not at all: an insecure delegation from its parent.
    Unsigned,
    /// With signatures valid now.
    Signed,
    /// With signatures that expired in 2020: bogus to a validator.
    Expired,
}

/// One zone: its origin, records in zone-file syntax relative to it, how
/// it is signed, and which TLSA records are spoilt after signing.
#[derive(Debug, Clone)]
pub struct Zone {
    origin: String,
    signing: Signing,
    records: Vec<String>,
    tampered: Vec<String>,
}

impl Zone {
    /// An empty zone at `origin` (fully qualified, `plain.test.`); its SOA
    /// and NS records are added.
    pub fn new(origin: &str, signing: Signing) -> Zone {
        assert!(
            origin.ends_with('.'),
            "zone origin {origin:?} needs its dot"
        );
        Zone {
            origin: origin.to_owned(),
            signing,
            records: Vec::new(),
            tampered: Vec::new(),
        }
    }

    /// A record line, as in a zone file with `$ORIGIN` this zone
    /// (`"d1 MX 10 mx.d1.test."`).
    pub fn record(mut self, line: &str) -> Zone {
        self.records.push(line.to_owned());
        self
    }

    /// `name A ip`.
    pub fn a(self, name: &str, ip: impl std::fmt::Display) -> Zone {
        self.record(&format!("{name} A {ip}"))
    }

    /// `domain MX 10 host` (both relative or fully qualified).
    pub fn mx(self, domain: &str, host: &str) -> Zone {
        self.record(&format!("{domain} MX 10 {host}"))
    }

    /// `_<port>._tcp.<host> TLSA usage selector matching data`.
    pub fn tlsa(self, host: &str, port: u16, (u, s, m): (u8, u8, u8), data: &[u8]) -> Zone {
        self.record(&format!(
            "_{port}._tcp.{host} TLSA {u} {s} {m} {}",
            hex(data)
        ))
    }

    /// After signing, changes the data of the TLSA records of
    /// `_<port>._tcp.<host>` (relative): their signature no longer
    /// verifies.
    pub fn tamper(mut self, host: &str, port: u16) -> Zone {
        self.tampered.push(format!("_{port}._tcp.{host}"));
        self
    }

    /// `name` made absolute in this zone.
    fn absolute(&self, name: &str) -> String {
        if name.ends_with('.') {
            name.to_owned()
        } else if name == "@" {
            self.origin.clone()
        } else {
            format!("{name}.{}", self.origin)
        }
    }

    /// The zone file name in the work directory.
    fn file(&self) -> String {
        format!("{}zone", self.origin)
    }
}

/// Lower-case hex.
pub fn hex(data: &[u8]) -> String {
    data.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// NSD serving signed zones and Unbound validating them; both stop when
/// this is dropped.
pub struct Dnssec {
    dir: tempfile::TempDir,
    nsd: Child,
    unbound: Child,
    authority: SocketAddr,
    resolver: SocketAddr,
}

impl Dnssec {
    /// Keys, signs and serves `zones` (the first is the parent, the
    /// others its children), and starts Unbound with the parent's key as
    /// trust anchor. Panics, saying why, when a tool is missing or a
    /// server does not start.
    pub fn start(zones: &[Zone]) -> Dnssec {
        let (nsd, unbound, keygen, signzone) = (
            tool("nsd"),
            tool("unbound"),
            tool("ldns-keygen"),
            tool("ldns-signzone"),
        );
        let dir = tempfile::Builder::new()
            .prefix("postman-dnssec-")
            .tempdir()
            .expect("a temporary directory");
        let work = dir.path();
        let (parent, children) = zones.split_first().expect("at least the parent zone");
        assert_ne!(
            parent.signing,
            Signing::Unsigned,
            "the parent zone holds the anchor"
        );
        let mut delegations = Vec::new();
        let mut signed_children = Vec::new();
        for child in children {
            let ns = format!("ns.{}", child.origin);
            delegations.push(format!("{} NS {ns}", child.origin));
            delegations.push(format!("{ns} A 127.0.0.1"));
            if child.signing != Signing::Unsigned {
                let keys = Keys::make(&keygen, work, &child.origin);
                let ds = std::fs::read_to_string(work.join(format!("{}.ds", keys.ksk)))
                    .expect("ldns-keygen wrote the DS record");
                delegations.push(ds.trim().to_owned());
                signed_children.push((child, keys));
            } else {
                write_zone(work, child, &[]);
            }
        }
        let parent_keys = Keys::make(&keygen, work, &parent.origin);
        write_zone(work, parent, &delegations);
        sign(&signzone, work, parent, &parent_keys);
        for (child, keys) in &signed_children {
            write_zone(work, child, &[]);
            sign(&signzone, work, child, keys);
        }
        let authority = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let resolver = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let anchor = work.join(format!("{}.ds", parent_keys.ksk));
        std::fs::write(work.join("nsd.conf"), nsd_conf(work, authority, zones))
            .expect("write nsd.conf");
        std::fs::write(
            work.join("unbound.conf"),
            unbound_conf(work, resolver, authority, &anchor, zones),
        )
        .expect("write unbound.conf");
        let nsd = spawn(&nsd, &["-d", "-c"], &work.join("nsd.conf"), work, "nsd");
        let unbound = spawn(
            &unbound,
            &["-d", "-c"],
            &work.join("unbound.conf"),
            work,
            "unbound",
        );
        let servers = Dnssec {
            dir,
            nsd,
            unbound,
            authority,
            resolver,
        };
        servers.wait_until_answering(authority, "nsd");
        servers.wait_until_answering(resolver, "unbound");
        servers
    }

    /// Unbound, validating: its answers for the signed zones carry AD.
    pub fn resolver(&self) -> SocketAddr {
        self.resolver
    }

    /// NSD: authoritative, never sets AD.
    pub fn authority(&self) -> SocketAddr {
        self.authority
    }

    /// What a server wrote (`nsd` or `unbound`), for a failing test.
    pub fn log(&self, server: &str) -> String {
        let read = |name: String| std::fs::read_to_string(self.dir.path().join(name));
        format!(
            "{}{}",
            read(format!("{server}.out")).unwrap_or_default(),
            read(format!("{server}.log")).unwrap_or_default()
        )
    }

    /// Polls `addr` with `test. SOA` until it answers.
    fn wait_until_answering(&self, addr: SocketAddr, server: &str) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set a read timeout");
        // id 0x5053, RD, one question: test. SOA IN.
        let query = b"\x50\x53\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04test\x00\x00\x06\x00\x01";
        let deadline = Instant::now() + START_WITHIN;
        let mut reply = [0u8; 512];
        while Instant::now() < deadline {
            if socket.send_to(query, addr).is_ok() {
                if let Ok((n, _)) = socket.recv_from(&mut reply) {
                    if n >= 2 && reply[..2] == query[..2] {
                        return;
                    }
                }
            }
        }
        panic!(
            "{server} did not answer at {addr} within {START_WITHIN:?}:\n{}",
            self.log(server)
        );
    }
}

impl Drop for Dnssec {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: NSD's main process then stops the server
        // and xfrd processes it forked, which would keep the port.
        for child in [&mut self.nsd, &mut self.unbound] {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        for child in [&mut self.nsd, &mut self.unbound] {
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The path of `name` (in `PATH`, `/usr/sbin` or `/usr/bin`), or a panic
/// that says how to install it.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: the DNSSEC tests need NSD, ldnsutils and Unbound \
                 (apt-get install nsd ldnsutils unbound; scripts/test.sh installs them)"
            )
        })
}

/// A zone's key-signing and zone-signing keys (ldns file base names).
struct Keys {
    ksk: String,
    zsk: String,
}

impl Keys {
    fn make(keygen: &Path, dir: &Path, origin: &str) -> Keys {
        let key = |ksk: bool| {
            let mut command = Command::new(keygen);
            command.current_dir(dir).args(["-a", "ECDSAP256SHA256"]);
            if ksk {
                command.arg("-k");
            }
            let out = command.arg(origin).output().expect("run ldns-keygen");
            assert!(
                out.status.success(),
                "ldns-keygen {origin}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        Keys {
            ksk: key(true),
            zsk: key(false),
        }
    }
}

/// Writes `zone`'s file (SOA, NS, its records, then `extra` lines).
fn write_zone(dir: &Path, zone: &Zone, extra: &[String]) {
    let origin = &zone.origin;
    let mut text = format!(
        "$ORIGIN {origin}\n$TTL 5\n@ SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 5\n\
         @ NS ns.{origin}\nns.{origin} A 127.0.0.1\n"
    );
    for line in zone.records.iter().chain(extra) {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(dir.join(zone.file()), text).expect("write a zone file");
}

/// Signs `zone` into `<file>.signed`, with expired dates if it asks, and
/// spoils the TLSA records it names.
fn sign(signzone: &Path, dir: &Path, zone: &Zone, keys: &Keys) {
    let mut command = Command::new(signzone);
    command.current_dir(dir);
    if zone.signing == Signing::Expired {
        command.args(["-i", "20190101000000", "-e", "20200101000000"]);
    }
    let out = command
        .args([&zone.file(), &keys.zsk, &keys.ksk])
        .output()
        .expect("run ldns-signzone");
    assert!(
        out.status.success(),
        "ldns-signzone {}: {}",
        zone.origin,
        String::from_utf8_lossy(&out.stderr)
    );
    if zone.tampered.is_empty() {
        return;
    }
    let path = dir.join(format!("{}.signed", zone.file()));
    let text = std::fs::read_to_string(&path).expect("read the signed zone");
    let owners: Vec<String> = zone.tampered.iter().map(|n| zone.absolute(n)).collect();
    let mut spoilt = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let tlsa = fields.len() > 4 && fields[3] == "TLSA";
            if tlsa && owners.iter().any(|o| o.eq_ignore_ascii_case(fields[0])) {
                spoilt += 1;
                // The digest's last hex digit, changed.
                let (head, last) = line.split_at(line.len() - 1);
                format!("{head}{}", if last == "0" { "1" } else { "0" })
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert!(spoilt > 0, "no TLSA record of {owners:?} to tamper with");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write the tampered zone");
}

fn nsd_conf(dir: &Path, addr: SocketAddr, zones: &[Zone]) -> String {
    let d = dir.display();
    let mut conf = format!(
        "server:\n  ip-address: {ip}@{port}\n  username: \"\"\n  chroot: \"\"\n  \
         zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  database: \"\"\n  \
         zonelistfile: \"{d}/zone.list\"\n  xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  \
         logfile: \"{d}/nsd.log\"\n  server-count: 1\n  verbosity: 1\n\
         remote-control:\n  control-enable: no\n",
        ip = addr.ip(),
        port = addr.port(),
    );
    for zone in zones {
        let file = match zone.signing {
            Signing::Unsigned => zone.file(),
            Signing::Signed | Signing::Expired => format!("{}.signed", zone.file()),
        };
        let _ = write!(
            conf,
            "zone:\n  name: \"{}\"\n  zonefile: \"{file}\"\n",
            zone.origin
        );
    }
    conf
}

fn unbound_conf(
    dir: &Path,
    addr: SocketAddr,
    authority: SocketAddr,
    anchor: &Path,
    zones: &[Zone],
) -> String {
    let d = dir.display();
    let mut conf = format!(
        "server:\n  interface: {ip}@{port}\n  do-daemonize: no\n  username: \"\"\n  \
         chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"\"\n  use-syslog: no\n  \
         verbosity: 1\n  do-ip6: no\n  access-control: 127.0.0.0/8 allow\n  \
         do-not-query-localhost: no\n  local-zone: \"test.\" nodefault\n  \
         trust-anchor-file: \"{anchor}\"\n  module-config: \"validator iterator\"\n  \
         val-log-level: 2\n  num-threads: 1\n  outgoing-range: 64\n  so-reuseport: no\n  \
         cache-max-ttl: 5\n  cache-max-negative-ttl: 5\n\
         remote-control:\n  control-enable: no\n",
        ip = addr.ip(),
        port = addr.port(),
        anchor = anchor.display(),
    );
    // Every zone is asked of NSD directly: the delegations' glue would
    // send Unbound to port 53.
    for zone in zones {
        let _ = write!(
            conf,
            "stub-zone:\n  name: \"{}\"\n  stub-addr: {}@{}\n",
            zone.origin,
            authority.ip(),
            authority.port()
        );
    }
    conf
}

/// Starts `program args config`, its output in `<name>.out` in `dir`.
fn spawn(program: &Path, args: &[&str], config: &Path, dir: &Path, name: &str) -> Child {
    let out = std::fs::File::create(dir.join(format!("{name}.out"))).expect("create a log file");
    let err = out.try_clone().expect("clone the log file");
    Command::new(program)
        .args(args)
        .arg(config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()))
}
