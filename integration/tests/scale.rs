//! Scale and fairness of the actors: one I/O worker carries hundreds of
//! connections at once in its pselect loop, a domain with a large backlog
//! does not delay a domain with a single message, and when few descriptors
//! below `select(2)`'s `FD_SETSIZE` are left, route lookups do not take them
//! from the connections and a connection that finds none waits, untried.

mod common;

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{check, config, message};
use postman_integration::hostile::Script;
use postman_integration::postman::ConfigFile;
use postman_integration::{
    postman, Config, DnsServer, HostileServer, RunOutput, TestNet, TestQueue, Zones,
};
use serde_json::Value;

/// The number of domains (one message each, one connection each) in the
/// connection-scale test.
const DOMAINS: usize = 300;

#[test]
fn one_worker_carries_hundreds_of_connections_at_once() {
    let net = TestNet::new();
    // Every connection waits 1.5 s for its greeting, so all of them are
    // open at the same time inside the single worker.
    let server = HostileServer::start(
        net.addr(1),
        vec![Script::new()
            .stall(1500)
            .greet("220 slow.test ESMTP")
            .then_polite()],
    );
    // Each domain its own MX host name (one site each), every name the
    // same server: one connection per domain, all open at once.
    let mut zones = Zones::new();
    for i in 0..DOMAINS {
        let host = format!("mx{i}.scale.test");
        zones = zones
            .mx(&format!("d{i}.scale.test"), 10, &host)
            .a(&host, net.ipv4(1));
    }
    let dns = DnsServer::start(zones);
    let queue = TestQueue::new();
    for i in 0..DOMAINS {
        let domain = format!("d{i}.scale.test");
        queue.add(
            &domain,
            &format!("m{i}"),
            "sender@src.test",
            &[&format!("user@{domain}")],
            &message(&format!("m{i}"), "hello\n"),
        );
    }
    let mut cfg = config(&queue, &net, &dns);
    cfg.threads = 1;
    cfg.max_connections = 400;
    cfg.timeouts.greeting = 20;
    let out = postman!().run_once_within(&cfg.write(), Duration::from_secs(60));
    out.assert_success();

    let sent = out
        .deliveries()
        .iter()
        .filter(|d| d.status == "sent")
        .count();
    check(
        sent == DOMAINS,
        "every message should be sent",
        &queue,
        &out,
    );
    assert_eq!(
        server.connection_count(),
        DOMAINS,
        "one connection per domain"
    );

    // The worker's last metrics record says how many connections it held
    // at once.
    let peak = out.max_metric("worker", "peak_connections");
    eprintln!("peak connections in one worker: {peak} of {DOMAINS}");
    check(
        peak >= 250,
        &format!("one worker should hold at least 250 connections at once, held {peak}"),
        &queue,
        &out,
    );
}

#[test]
fn a_large_backlog_does_not_delay_a_domain_with_one_message() {
    let net = TestNet::new();
    let big_server = HostileServer::polite(net.addr(1));
    let small_server = HostileServer::polite(net.addr(2));
    let dns = DnsServer::start(
        Zones::new()
            .mx_at("big.test", net.ipv4(1))
            .mx_at("small.test", net.ipv4(2)),
    );
    let queue = TestQueue::new();
    // The scanner lists "big.test" first, so a first-come-first-served
    // dispatcher would send all of these before the small domain's message.
    let backlog = 600;
    for i in 0..backlog {
        queue.add(
            "big.test",
            &format!("big{i:04}"),
            "sender@src.test",
            &["user@big.test"],
            &message(&format!("big{i}"), "bulk\n"),
        );
    }
    queue.add(
        "small.test",
        "small",
        "sender@src.test",
        &["user@small.test"],
        &message("small", "urgent\n"),
    );
    let mut cfg = config(&queue, &net, &dns);
    cfg.threads = 1;
    cfg.max_connections_per_domain = 2;
    cfg.max_messages_per_connection = 1000;
    let out = postman!().run_once_within(&cfg.write(), Duration::from_secs(60));
    out.assert_success();

    let sent: Vec<Value> = out
        .records()
        .into_iter()
        .filter(|r| r["msg"] == "delivery" && r["status"] == "sent")
        .collect();
    check(
        sent.len() == backlog + 1,
        "every message should be sent",
        &queue,
        &out,
    );
    let position = sent
        .iter()
        .position(|r| r["domain"] == "small.test")
        .unwrap_or(usize::MAX);
    eprintln!(
        "small.test delivered as number {} of {}",
        position + 1,
        sent.len()
    );
    assert!(
        position < backlog / 10,
        "small.test should be delivered among the first {} records, was number {}",
        backlog / 10,
        position + 1
    );
    assert_eq!(
        small_server.connection_count(),
        1,
        "one connection to small.test"
    );
    assert!(
        big_server.connection_count() <= 2,
        "at most max_connections_per_domain connections to big.test, saw {}",
        big_server.connection_count()
    );
}

/// `FD_SETSIZE` on Linux: the I/O workers' sockets must stay below it.
const FD_SETSIZE: i32 = 1024;

/// Whether postman can open descriptors above `FD_SETSIZE` here (the daemon
/// raises its soft limit up to the hard one). Where it cannot, the squeezed
/// runs would only measure the machine.
fn descriptors_above_fd_setsize() -> bool {
    use nix::sys::resource::{getrlimit, Resource};
    let ok = getrlimit(Resource::RLIMIT_NOFILE).is_ok_and(|(_, hard)| hard >= 4096);
    if !ok {
        eprintln!("skipped: the hard RLIMIT_NOFILE is below 4096");
    }
    ok
}

/// Runs `postman run --once` as a process that already has every descriptor
/// from `squeeze_from` to `FD_SETSIZE - 1` open (copies of /dev/null it
/// inherits), as a daemon with hundreds of files and sockets open would: only
/// the numbers below `squeeze_from`, less postman's own few (standard
/// streams, eventfds, epoll, inotify: 9 in all), are left for sockets that
/// must fit in an `fd_set`. Its descriptor limit stays far above
/// `FD_SETSIZE`.
fn run_squeezed(config: &ConfigFile, squeeze_from: i32, deadline: Duration) -> RunOutput {
    run_limited(config, squeeze_from, None, deadline)
}

/// [`run_squeezed`], and with `nofile`, a process whose descriptor limit
/// (soft and hard `RLIMIT_NOFILE`) is that: it cannot raise it.
fn run_limited(
    config: &ConfigFile,
    squeeze_from: i32,
    nofile: Option<u64>,
    deadline: Duration,
) -> RunOutput {
    let null = File::open("/dev/null").expect("open /dev/null");
    let null_fd = null.as_raw_fd();
    let path = config.path().to_string_lossy().into_owned();
    let mut command = postman!().command(&["run", "--config", &path, "--once"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only dup2(2), which is async-signal-safe, and setrlimit(2), a plain
    // system call; it allocates nothing and takes no lock. `null_fd` stays
    // open in the parent until `spawn` returns, and the child has its own
    // copy of it. Whatever the child inherited at those numbers is
    // close-on-exec (Rust opens every descriptor that way), so replacing it
    // loses nothing the child needs.
    unsafe {
        command.pre_exec(move || {
            for fd in squeeze_from..FD_SETSIZE {
                if fd != null_fd && nix::libc::dup2(null_fd, fd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(n) = nofile {
                nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)?;
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let child = command.spawn().expect("start postman");
    drop(null);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(deadline) {
        Ok(output) => output.expect("wait for postman"),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let output = rx
                .recv()
                .expect("postman's output")
                .expect("wait for postman");
            panic!(
                "postman did not exit within {deadline:?}: killed\n--- stderr ---\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    };
    RunOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// The MX host of [`many_domains`]: it waits `stall_ms` before its
/// greeting, which keeps connections open together, then accepts all.
fn slow_greeter(net: &TestNet, stall_ms: u64) -> HostileServer {
    HostileServer::start(
        net.addr(1),
        vec![Script::new()
            .stall(stall_ms)
            .greet("220 mx.fd.test ESMTP")
            .then_polite()],
    )
}

/// `domains` domains `d<i>.fd.test`, one message each, each with its own
/// MX host name (so its own site) at `net`'s first address, and a config
/// for them with one connection per domain.
fn many_domains(net: &TestNet, domains: usize) -> (DnsServer, TestQueue, Config) {
    // Each domain its own MX host name (one site each), every name the
    // same server.
    let mut zones = Zones::new();
    for i in 0..domains {
        let host = format!("mx{i}.fd.test");
        zones = zones
            .mx(&format!("d{i}.fd.test"), 10, &host)
            .a(&host, net.ipv4(1));
    }
    let dns = DnsServer::start(zones);
    let queue = TestQueue::new();
    for i in 0..domains {
        let domain = format!("d{i}.fd.test");
        queue.add(
            &domain,
            &format!("m{i}"),
            "sender@src.test",
            &[&format!("user@{domain}")],
            &message(&format!("m{i}"), "hello\n"),
        );
    }
    let mut cfg = config(&queue, net, &dns);
    cfg.max_connections_per_domain = 1;
    cfg.timeouts.greeting = 20;
    (dns, queue, cfg)
}

/// A UDP relay in front of the test DNS server that holds every answer back
/// for up to `max_delay`, as distant nameservers would: each query in flight
/// keeps its socket open that long, and lookups end one by one rather than
/// in waves. Stops when dropped.
struct SlowDns {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl SlowDns {
    fn start(upstream: SocketAddr, max_delay: Duration) -> SlowDns {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind the DNS relay"));
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set the relay's read timeout");
        let addr = socket.local_addr().expect("the relay's address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
                let (n, client) = match socket.recv_from(&mut buf) {
                    Ok((n, client)) if n >= 2 => (n, client),
                    _ => continue,
                };
                let query = buf[..n].to_vec();
                // The query id is random: so is the delay.
                let id = u64::from(u16::from_be_bytes([query[0], query[1]]));
                let delay = max_delay * (id % 64 + 1) as u32 / 64;
                let socket = Arc::clone(&socket);
                // A thread per query, so the delays overlap.
                std::thread::spawn(move || {
                    let Ok(relay) = UdpSocket::bind("127.0.0.1:0") else {
                        return;
                    };
                    let _ = relay.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut reply = [0u8; 4096];
                    if relay.send_to(&query, upstream).is_ok() {
                        if let Ok(n) = relay.recv(&mut reply) {
                            std::thread::sleep(delay);
                            let _ = socket.send_to(&reply[..n], client);
                        }
                    }
                });
            }
        });
        SlowDns { addr, stop }
    }
}

impl Drop for SlowDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Domains that have a `.backoff` file.
fn backoff_files(queue: &TestQueue) -> Vec<String> {
    let remote = queue.root().join(".OTHER_SERVERS");
    let mut found: Vec<String> = std::fs::read_dir(&remote)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().join(".backoff").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// What every squeezed run must show: each of the `domains` messages sent
/// at its first try, no deferral, no domain backed off, nothing left.
fn check_all_sent_untroubled(domains: usize, queue: &TestQueue, out: &RunOutput) {
    out.assert_success();
    let deliveries = out.deliveries();
    let sent = deliveries.iter().filter(|d| d.status == "sent").count();
    let other: Vec<_> = deliveries.iter().filter(|d| d.status != "sent").collect();
    check(
        other.is_empty(),
        &format!(
            "no message should be deferred for want of a local descriptor; {} other records, the first: {:#?}",
            other.len(),
            other.first()
        ),
        queue,
        out,
    );
    check(
        sent == domains,
        &format!("every message should be sent, {sent} of {domains} were"),
        queue,
        out,
    );
    let backoffs = backoff_files(queue);
    check(
        backoffs.is_empty(),
        &format!(
            "no domain should back off for a local limit, {} did: {:?}",
            backoffs.len(),
            &backoffs[..backoffs.len().min(5)]
        ),
        queue,
        out,
    );
    check(
        queue.state().is_empty(),
        "nothing should be left in the queue",
        queue,
        out,
    );
}

/// Lines of the log that say a socket did not fit below FD_SETSIZE.
fn fd_setsize_lines(out: &RunOutput) -> usize {
    out.stderr
        .lines()
        .filter(|l| l.contains("FD_SETSIZE"))
        .count()
}

/// The dispatcher's warnings that a connection was put off.
fn local_limit_warnings(out: &RunOutput) -> usize {
    out.records()
        .iter()
        .filter(|r| {
            r["level"] == "WARN"
                && r["msg"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("local descriptor limit"))
        })
        .count()
}

/// The `bench.sh scale` failure, made small: route lookups for hundreds of
/// domains at once used to hold hundreds of UDP sockets on the lowest free
/// descriptors, so the workers' SMTP sockets landed at or above FD_SETSIZE,
/// the connect was refused and the domain was backed off as if unreachable.
/// With fewer connections allowed than the select-able range has room for,
/// every connection must get a descriptor that fits.
#[test]
fn route_lookups_leave_the_select_range_to_connections() {
    const DOMAINS: usize = 800;
    if !descriptors_above_fd_setsize() {
        return;
    }
    let net = TestNet::new();
    // A stall before the greeting keeps the connections open together, up
    // to max_connections.
    let server = slow_greeter(&net, 200);
    let (dns, queue, mut cfg) = many_domains(&net, DOMAINS);
    // Answers take up to 400 ms, so hundreds of lookups in flight hold a
    // socket each while the connections for the routes already known open.
    let slow = SlowDns::start(dns.addr(), Duration::from_millis(200));
    cfg.nameservers = vec![slow.addr];
    // One worker, so its peak is the number of connections open at once.
    cfg.threads = 1;
    cfg.max_connections = 90;
    // About 119 descriptors fit: the connections take 90, which leaves too
    // few for the sockets of the route lookups in flight unless those are
    // kept out of the range.
    let out = run_squeezed(&cfg.write(), 128, Duration::from_secs(60));

    check_all_sent_untroubled(DOMAINS, &queue, &out);
    check(
        fd_setsize_lines(&out) == 0 && local_limit_warnings(&out) == 0,
        &format!(
            "every socket should have fitted below FD_SETSIZE: {} lines name it, {} local limit warnings",
            fd_setsize_lines(&out),
            local_limit_warnings(&out)
        ),
        &queue,
        &out,
    );
    assert_eq!(
        server.connection_count(),
        DOMAINS,
        "one connection per domain"
    );
    let peak = out.max_metric("worker", "peak_connections");
    eprintln!(
        "peak connections: {peak} of at most {}, {:?}",
        cfg.max_connections, out.elapsed
    );
    check(
        peak <= u64::from(cfg.max_connections),
        &format!(
            "at most max_connections = {} connections at once, saw {peak}",
            cfg.max_connections
        ),
        &queue,
        &out,
    );
}

/// When more connections are allowed than descriptors below FD_SETSIZE are
/// free, a connection that gets a descriptor beyond it is the process's
/// limit, not the domain's fault: the message goes back untried (no failed
/// attempt on the file, no deferral record, no domain backoff), a warning
/// says why, and it is sent once descriptors are free again.
#[test]
fn a_connection_beyond_fd_setsize_waits_untried() {
    const DOMAINS: usize = 120;
    if !descriptors_above_fd_setsize() {
        return;
    }
    let net = TestNet::new();
    // Connections stay open 800 ms, long enough for far more of them to be
    // wanted at once than fit.
    let server = slow_greeter(&net, 800);
    let (_dns, queue, mut cfg) = many_domains(&net, DOMAINS);
    cfg.threads = 2;
    cfg.max_connections = DOMAINS as u32;
    // About 31 descriptors fit.
    let out = run_squeezed(&cfg.write(), 40, Duration::from_secs(60));

    check_all_sent_untroubled(DOMAINS, &queue, &out);
    let warnings = local_limit_warnings(&out);
    eprintln!(
        "{warnings} local descriptor limit warnings, {:?}",
        out.elapsed
    );
    check(
        warnings > 0,
        "connections beyond the select-able range should have been put off with a warning",
        &queue,
        &out,
    );
    // A burst of put-offs is one warning per pause, not one per connection.
    let put_off = out.max_metric("dispatcher", "local_limits");
    eprintln!("{put_off} connections put off");
    check(
        put_off > 1 && (warnings as u64) < put_off,
        &format!("{warnings} warnings for {put_off} connections put off: one per pause expected"),
        &queue,
        &out,
    );
    // A socket that does not fit is closed before it connects: the server
    // saw one connection per message.
    assert_eq!(
        server.connection_count(),
        DOMAINS,
        "one connection per domain"
    );
}

/// With the whole descriptor table full (a low `ulimit -n` the daemon
/// cannot raise, and connections held open by a slow server), route
/// lookups and queue files find no descriptor either. That says nothing
/// about a domain or a file: like a connection, each is put off and taken
/// up again after a pause, and every message goes out in the run with
/// nothing deferred and no domain backed off.
#[test]
fn lookups_and_queue_files_short_of_descriptors_are_put_off() {
    const DOMAINS: usize = 60;
    // About 20 for postman's own (standard streams, epoll, inotify,
    // eventfds, the DNS runtime), the rest for 60 lookups and connections.
    const NOFILE: u64 = 40;
    let net = TestNet::new();
    let server = slow_greeter(&net, 300);
    let (_dns, queue, mut cfg) = many_domains(&net, DOMAINS);
    cfg.threads = 1;
    cfg.max_connections = DOMAINS as u32;
    let out = run_limited(
        &cfg.write(),
        FD_SETSIZE,
        Some(NOFILE),
        Duration::from_secs(90),
    );

    check_all_sent_untroubled(DOMAINS, &queue, &out);
    // The lookups come first, 60 at once: they are the first put off.
    let lookups_put_off = out.records().iter().any(|r| {
        r["level"] == "WARN"
            && r["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("local descriptor limit: route lookup put off"))
    });
    check(
        lookups_put_off,
        "route lookups should have been put off with a warning",
        &queue,
        &out,
    );
    eprintln!(
        "{} put off in all, {} warnings, {} connections, {:?}",
        out.max_metric("dispatcher", "local_limits"),
        local_limit_warnings(&out),
        server.connection_count(),
        out.elapsed
    );
    // A connection whose message's file could not be opened closes
    // without sending; each message is received once.
    assert_eq!(server.body_count(), DOMAINS, "each message once");
}

/// The soft and hard `RLIMIT_NOFILE` of process `pid`, by util-linux's
/// `prlimit`.
fn nofile_of(pid: u32) -> (u64, u64) {
    let out = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            "--nofile",
            "--raw",
            "--noheadings",
        ])
        .args(["--output", "SOFT,HARD"])
        .output()
        .expect("run prlimit");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut numbers = text.split_whitespace().map(|n| n.parse().expect("a limit"));
    (
        numbers.next().expect("soft limit"),
        numbers.next().expect("hard limit"),
    )
}

/// Sets the soft `RLIMIT_NOFILE` of process `pid`.
fn set_nofile(pid: u32, soft: u64, hard: u64) {
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={soft}:{hard}"),
        ])
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit failed");
}

/// A new queue file that the scanner cannot open for want of a descriptor
/// (every one the daemon may have is taken) is not skipped: the scanner
/// waits for one, says so once, and the file goes out as soon as a
/// descriptor is free, without waiting for the next rescan.
#[test]
fn a_new_file_waits_for_a_descriptor_to_read_it() {
    let net = TestNet::new();
    let server = HostileServer::polite(net.addr(1));
    let dns = DnsServer::start(Zones::new().mx_at("fd.test", net.ipv4(1)));
    let queue = TestQueue::new();
    std::fs::create_dir_all(queue.domain_dir("fd.test").join("tmp")).unwrap();
    let mut cfg = config(&queue, &net, &dns);
    // Only inotify and the wait can bring the file in time.
    cfg.rescan_interval = 300;
    let mut daemon = postman!().spawn_daemon(&cfg.write());
    assert!(
        daemon.wait_for(Duration::from_secs(10), |r| r
            .iter()
            .any(|r| r["msg"] == "queue scanned")),
        "started: {}",
        daemon.log_text()
    );
    let pid = daemon.pid();
    let (soft, hard) = nofile_of(pid);
    // With the limit at the lowest free descriptor number, every number
    // below it is in use: no open(2) in the daemon can succeed.
    let used: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the daemon's descriptors")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let lowest_free = (0..).find(|n| !used.contains(n)).expect("a free number");
    set_nofile(pid, lowest_free, hard);
    queue.add(
        "fd.test",
        "m1",
        "a@src.test",
        &["u@fd.test"],
        &message("fd1", "x\n"),
    );
    let waiting = |r: &[Value]| {
        r.iter().any(|r| {
            r["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("local descriptor limit: the scan waits"))
        })
    };
    let warned = daemon.wait_for(Duration::from_secs(3), waiting);
    set_nofile(pid, soft, hard);
    assert!(warned, "the scan should wait: {}", daemon.log_text());
    let delivered = daemon.wait_for_deliveries(1, Duration::from_secs(10));
    assert_eq!(delivered.len(), 1, "{}", daemon.log_text());
    assert_eq!(server.body_count(), 1);
    assert!(
        !daemon
            .records()
            .iter()
            .any(|r| r["msg"] == "cannot read queue file"),
        "the file was read after the wait: {}",
        daemon.log_text()
    );
    assert!(daemon.terminate(common::STOP_WITHIN).is_some(), "stopped");
}
