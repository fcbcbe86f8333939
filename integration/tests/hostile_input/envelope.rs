//! Envelope blocks (issue 22, defects 2, 6, 8, 12 and 13's `enqueue`): what
//! postman writes it reads back, however many recipients; recipients are
//! checked against their folder and sent once; a bounce that can never be
//! written is a double bounce; `enqueue` streams; a full disk never sends
//! an accepted recipient again. See hostile_input.rs.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use postman_integration::postman::ConfigFile;
use postman_integration::queue::{queue_file, unix_now};
use postman_integration::{
    postman, DnsServer, HostileServer, QueueState, RunOutput, Script, TestNet, TestQueue, Zones,
};
use serde_json::Value;

use crate::common::{
    check, config, local_config, message, refusing, without_params, LOCAL_DOMAIN, LOCAL_SENDER,
};

/// How long an `enqueue` or an operator command may take here.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// `postman <command> --config FILE <args>`, `input` on standard input.
fn command(file: &ConfigFile, command: &str, args: &[String], input: &[u8]) -> RunOutput {
    let config = file.path().to_string_lossy().into_owned();
    let mut all: Vec<&str> = vec![command, "--config", &config];
    all.extend(args.iter().map(String::as_str));
    postman!().run_with_input(&all, input, COMMAND_DEADLINE)
}

/// The `postman queue --json` objects.
fn listing(file: &ConfigFile) -> Vec<Value> {
    let out = command(file, "queue", &["--json".to_owned()], b"");
    out.assert_success();
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// Every recipient still queued, per `postman queue --json`, which must be
/// able to read every file.
fn queued_recipients(file: &ConfigFile) -> Vec<String> {
    let mut out = Vec::new();
    for entry in listing(file) {
        assert!(
            entry["error"].is_null(),
            "every queued file reads back: {entry}"
        );
        for r in entry["recipients"].as_array().expect("recipients") {
            out.push(r.as_str().expect("a string").to_owned());
        }
    }
    out
}

/// The recipients a scripted server took in transactions that went on to
/// DATA: those it accepted (it answers the first `limit` RCPTs of each
/// transaction politely) and was sent the message for.
fn delivered(server: &HostileServer, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    for conn in server.connections() {
        let mut taken: Vec<String> = Vec::new();
        for command in &conn.commands {
            let upper = command.to_ascii_uppercase();
            if upper.starts_with("MAIL") || upper.starts_with("RSET") {
                taken.clear();
            } else if upper.starts_with("RCPT TO:") && taken.len() < limit {
                let path = &command["RCPT TO:".len()..];
                let end = path.find('>').map_or(path.len(), |i| i + 1);
                taken.push(path[..end].trim_matches(['<', '>']).to_owned());
            } else if upper.starts_with("DATA") {
                out.append(&mut taken);
            }
        }
    }
    out
}

/// The addresses that occur more than once in `list`, with their counts.
fn duplicates(list: &[String]) -> HashMap<&str, usize> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for a in list {
        *counts.entry(a.as_str()).or_default() += 1;
    }
    counts.retain(|_, n| *n > 1);
    counts
}

/// The first case: `enqueue` with 40,000 recipients wrote a 1.36 MB
/// block that `run` quarantined at once. Their addresses here are long
/// enough that even the compact list needs more than one block: postman
/// says so and writes two messages, and every recipient is delivered.
#[test]
fn forty_thousand_recipients_from_enqueue_are_all_delivered() {
    let net = TestNet::new();
    let server = HostileServer::polite(net.addr(1));
    let dns = DnsServer::start(Zones::new().mx_at("d1.test", net.ipv4(1)));
    let queue = TestQueue::new();
    let file = config(&queue, &net, &dns).write();

    let all: Vec<String> = (0..40_000)
        .map(|i| format!("r{i:05}-twenty-seven@d1.test"))
        .collect();
    let mut args = vec!["--from".to_owned(), "alice@src.test".to_owned()];
    // `--to=ADDRESS`, one argument each: 40,000 pairs would pass ARG_MAX.
    args.extend(all.iter().map(|a| format!("--to={a}")));
    let msg = message("forty-thousand", "to very many\n");
    let out = command(&file, "enqueue", &args, &msg);
    out.assert_success();
    let ids: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(ids.len(), 2, "two queue files: {}", out.stdout);
    assert!(
        out.stderr.contains("40000 recipients") && out.stderr.contains("2 queue files"),
        "enqueue says it split them: {}",
        out.stderr
    );

    let run = postman!().run_once_within(&file, Duration::from_secs(120));
    run.assert_success();
    check(
        run.quarantines().is_empty() && queue.state().is_empty(),
        "every file read back, nothing left or set aside",
        &queue,
        &run,
    );
    let got = delivered(&server, usize::MAX);
    let dups = duplicates(&got);
    assert!(dups.is_empty(), "{} sent twice", dups.len());
    let got: BTreeSet<String> = got.into_iter().collect();
    let want: BTreeSet<String> = all.into_iter().collect();
    assert!(got == want, "{} of 40000 delivered", got.len());
    let ids = server.message_ids();
    assert_eq!(ids.len(), 2, "two messages");
    assert_eq!(ids[0], ids[1], "with one Message-ID");
}

/// `n` in base 36, `width` digits.
fn base36(mut n: u32, width: usize) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = digits[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(out).expect("ascii")
}

/// The second case: a valid block of 100,000 comma-separated
/// recipients (900 KB, written by another program), and a server that
/// answers `452` past its limit of recipients per transaction. postman
/// rewrote the rest one `X-Postman-To` each (2.4 MB) and quarantined the
/// file on the next run. Now every recipient is delivered exactly once or
/// still queued, readable, after each run; a flush between runs makes the
/// rest due whether a `452` starts the next transaction at once or not.
///
/// The server took 100 a transaction; this one takes 10,000: each
/// transaction records the pending list again, so 1,000 of them take
/// minutes in a debug build without showing more.
#[test]
fn a_hundred_thousand_recipients_past_a_452_are_each_sent_once_or_kept() {
    const LIMIT: usize = 10_000;
    let net = TestNet::new();
    let server = HostileServer::start(
        net.addr(1),
        vec![Script::polite().max_recipients(LIMIT, "452 4.5.3 Too many recipients")],
    );
    let dns = DnsServer::start(Zones::new().mx_at("h.t", net.ipv4(1)));
    let queue = TestQueue::new();
    let all: Vec<String> = (0..100_000)
        .map(|i| format!("{}@h.t", base36(i, 4)))
        .collect();
    let block = format!(
        "X-Postman-From: <alice@src.test>\nX-Postman-Date: {}\nX-Postman-To: {}\n\n",
        unix_now(),
        all.join(",")
    );
    assert!(
        block.len() > 850_000 && block.len() < 1 << 20,
        "{} bytes",
        block.len()
    );
    let msg = message("hundred-thousand", "to even more\n");
    queue.add_raw("h.t", "m1", &[block.as_bytes(), &msg].concat());
    let file = config(&queue, &net, &dns).write();

    for round in 1..=2 {
        let run = postman!().run_once_within(&file, Duration::from_secs(120));
        run.assert_success();
        // The log holds a record per recipient: a text search, not a parse.
        check(
            !run.stderr.contains("quarantined") && queue.state().quarantined.is_empty(),
            &format!("run {round}: nothing quarantined"),
            &queue,
            &run,
        );
        let sent = delivered(&server, LIMIT);
        let dups = duplicates(&sent);
        assert!(dups.is_empty(), "run {round}: {} sent twice", dups.len());
        let pending = queued_recipients(&file);
        let sent: BTreeSet<String> = sent.into_iter().collect();
        let pending: BTreeSet<String> = pending.into_iter().collect();
        assert!(
            sent.is_disjoint(&pending),
            "run {round}: a recipient both sent and queued"
        );
        let union: BTreeSet<String> = sent.union(&pending).cloned().collect();
        assert_eq!(
            union.len(),
            all.len(),
            "run {round}: {} sent, {} queued",
            sent.len(),
            pending.len()
        );
        if pending.is_empty() {
            break;
        }
        command(&file, "flush", &[], b"").assert_success();
    }
    assert!(
        delivered(&server, LIMIT).len() >= 2 * LIMIT,
        "at least one transaction a run"
    );
    // After the first 452 a connection sends no more RCPTs a transaction
    // than the server took: about 2 × 100,000 in all, where sending every
    // pending recipient again in each transaction made 550,000.
    let rcpts = server.count_commands("RCPT");
    assert!(
        rcpts <= 2 * all.len() + LIMIT,
        "{rcpts} RCPT commands for {} recipients",
        all.len()
    );
}

/// Each of `names` in `domain` is quarantined with a reason that says `why`.
fn assert_quarantined(queue: &TestQueue, domain: &str, names: &[&str], why: &str) {
    let state = queue.state();
    for name in names {
        let reason = state
            .quarantined_entry(domain, name)
            .and_then(|q| q.reason.clone())
            .unwrap_or_else(|| panic!("{name} quarantined: {state:#?}"));
        assert!(reason.contains(why), "{name}: {reason}");
    }
}

/// The RCPT paths a server was sent, without `RCPT TO:` and parameters.
fn rcpt_paths(server: &HostileServer) -> Vec<String> {
    server
        .commands()
        .iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("RCPT TO:"))
        .map(|c| without_params(&c["RCPT TO:".len()..]).to_owned())
        .collect()
}

/// Defect 8: a local-domain sender with a 300-octet local part and a
/// recipient refused with 550. The bounce into a mailbox of that name
/// failed with "File name too long", taken as temporary: the refused
/// recipient was sent again at every retry, for ever; and a 5,000-octet
/// recipient went out as it was. Both are refused when the file is read
/// now (RFC 5321 §4.5.3.1), as `enqueue` refuses them: quarantined with
/// the reason, never a RCPT over 256 octets, never a second attempt.
#[test]
fn addresses_over_the_rfc_5321_limits_are_refused_before_any_attempt() {
    let net = TestNet::new();
    let server = HostileServer::start(net.addr(1), vec![refusing("550 5.1.1 no such user")]);
    let dns = DnsServer::start(Zones::new().mx_at("d1.test", net.ipv4(1)));
    let queue = TestQueue::new();
    let long_sender = format!("{}@{LOCAL_DOMAIN}", "a".repeat(300));
    queue.add(
        "d1.test",
        "m1",
        &long_sender,
        &["x@d1.test"],
        &message("m1", "x\n"),
    );
    let long_rcpt = format!("{}@d1.test", "b".repeat(5000));
    queue.add(
        "d1.test",
        "m2",
        LOCAL_SENDER,
        &[&long_rcpt],
        &message("m2", "x\n"),
    );
    let file = local_config(&queue, &net, &dns).write();

    for round in 1..=2 {
        let run = postman!().run_once(&file);
        run.assert_success();
        check(
            rcpt_paths(&server).iter().all(|p| p.len() <= 256),
            &format!("run {round}: no RCPT path over 256 octets"),
            &queue,
            &run,
        );
        command(&file, "flush", &[], b"").assert_success();
    }
    assert!(
        server.count_commands("MAIL") <= 1,
        "not retried past a first attempt: {:?}",
        server.commands()
    );
    assert_quarantined(&queue, "d1.test", &["m1", "m2"], "64 octets");
}

/// Defect 8, past the queue lifetime: a bounce that cannot be written for
/// now (a file stands where the sender's mailbox would be) kept the refused
/// recipient queued, and it was sent again at every retry, past
/// `max_queue_lifetime`, since a refused recipient never expires. Once the
/// message has outlived its lifetime it is a double bounce: kept in .failed
/// with the reason, the refused recipient not tried again.
#[test]
fn a_bounce_still_unwritten_at_the_end_of_the_queue_lifetime_is_a_double_bounce() {
    let net = TestNet::new();
    let server = HostileServer::start(net.addr(1), vec![refusing("550 5.1.1 no such user")]);
    let dns = DnsServer::start(Zones::new().mx_at("d1.test", net.ipv4(1)));
    let queue = TestQueue::new();
    std::fs::write(queue.root().join("bob"), b"in the way").expect("a file for a mailbox");
    let sender = format!("bob@{LOCAL_DOMAIN}");
    let six_days_ago = unix_now() - 6 * 86_400;
    queue.add_raw(
        "d1.test",
        "m1",
        &queue_file(
            &sender,
            &["x@d1.test"],
            six_days_ago,
            &message("m1", "x\n"),
            "\n",
        ),
    );
    let file = local_config(&queue, &net, &dns).write();

    let run = postman!().run_once(&file);
    run.assert_success();
    command(&file, "flush", &[], b"").assert_success();
    let again = postman!().run_once(&file);
    again.assert_success();
    check(
        server.count_commands("RCPT") == 1,
        "the refused recipient is tried once",
        &queue,
        &again,
    );
    let state = queue.state();
    let failed = state
        .failed_entry("d1.test", "m1")
        .unwrap_or_else(|| panic!("m1 kept in .failed: {state:#?}\n{}", run.stderr));
    let reason = failed.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("x@d1.test") && reason.contains("no bounce could be written"),
        "{reason}"
    );
    assert!(state.queued.is_empty(), "nothing left queued: {state:#?}");
}

/// Defect 12, foreign recipients: `h.test/` holding `<victim@d1.test>` sent
/// `RCPT TO:<victim@d1.test>` to h.test's server. A recipient of another
/// domain is never sent to this folder's servers: the file is quarantined
/// with a reason naming it (the folder's recipients stay with it, for the
/// postmaster to look at: which of them is right is not postman's guess).
#[test]
fn a_recipient_of_another_domain_is_never_sent_to_the_folders_servers() {
    let net = TestNet::new();
    let h_server = HostileServer::polite(net.addr(1));
    let d1_server = HostileServer::polite(net.addr(2));
    let dns = DnsServer::start(
        Zones::new()
            .mx_at("h.test", net.ipv4(1))
            .mx_at("d1.test", net.ipv4(2)),
    );
    let queue = TestQueue::new();
    queue.add(
        "h.test",
        "m1",
        "a@src.test",
        &["victim@d1.test"],
        &message("m1", "x\n"),
    );
    queue.add(
        "h.test",
        "m2",
        "a@src.test",
        &["ok@h.test", "victim@d1.test"],
        &message("m2", "x\n"),
    );
    queue.add(
        "h.test",
        "m3",
        "a@src.test",
        &["Fine@H.Test"],
        &message("m3", "x\n"),
    );
    let file = config(&queue, &net, &dns).write();

    let run = postman!().run_once(&file);
    run.assert_success();
    let sent = rcpt_paths(&h_server);
    check(
        sent == ["<Fine@H.Test>"],
        &format!("only m3's recipient reaches h.test's server: {sent:?}"),
        &queue,
        &run,
    );
    assert_eq!(d1_server.connection_count(), 0, "nor another domain's");
    assert_quarantined(&queue, "h.test", &["m1", "m2"], "victim@d1.test");
}

/// Defect 12, duplicates: 500 identical recipients gave 500 RCPTs. Each
/// recipient (the same local part, the domain in any case) is sent once,
/// with one delivery record; the log says once how many were dropped.
#[test]
fn a_recipient_named_five_hundred_times_is_sent_once() {
    let net = TestNet::new();
    let server = HostileServer::polite(net.addr(1));
    let dns = DnsServer::start(Zones::new().mx_at("d1.test", net.ipv4(1)));
    let queue = TestQueue::new();
    let mut to = vec!["u@d1.test"; 499];
    to.push("u@D1.TEST");
    to.push("other@d1.test");
    queue.add("d1.test", "m1", "a@src.test", &to, &message("m1", "x\n"));
    let file = config(&queue, &net, &dns).write();

    let run = postman!().run_once(&file);
    run.assert_success();
    let sent = rcpt_paths(&server);
    check(
        sent == ["<u@d1.test>", "<other@d1.test>"],
        &format!("each recipient once: {sent:?}"),
        &queue,
        &run,
    );
    let records = run.deliveries();
    assert_eq!(records.len(), 2, "one record a recipient: {records:#?}");
    let noted: Vec<Value> = run
        .records()
        .into_iter()
        .filter(|r| r["msg"] == "recipients named more than once are sent once")
        .collect();
    assert_eq!(noted.len(), 1, "said once: {noted:#?}");
    assert_eq!(noted[0]["duplicates"], 499, "{:#?}", noted[0]);
    assert!(queue.state().is_empty(), "delivered and removed");
}

/// The largest `VmHWM` (peak resident set) of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("a VmHWM line");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmHWM in kB");
    kb * 1024
}

/// Defect 13, `enqueue`: it read all of standard input into memory before
/// writing the queue file. 100 MB piped in now pass through in chunks: the
/// process's peak resident set, read while it still waits for the end of
/// its input (all but a pipe's worth has gone through by then), stays far
/// below the message's size, and the file holds the message whole.
#[test]
fn enqueue_streams_a_large_message_into_the_queue() {
    use std::io::Write as _;
    use std::process::Stdio;
    const MIB: usize = 1 << 20;
    const SIZE_MIB: usize = 100;
    let queue = TestQueue::new();
    let unused_dns = "127.0.0.1:9".parse().expect("an address");
    let file = postman_integration::Config::new(queue.root(), 25, unused_dns).write();
    let config = file.path().to_string_lossy().into_owned();
    let args = [
        "enqueue",
        "--config",
        &config,
        "--from",
        "a@src.test",
        "--to",
        "x@d1.test",
    ];
    let mut child = postman!()
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start postman enqueue");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let head = message("big", "");
    let line = format!("{}\n", "0123456789abcdef".repeat(4));
    let chunk = line.repeat(MIB / line.len());
    stdin.write_all(&head).expect("write the header");
    for _ in 0..SIZE_MIB {
        stdin.write_all(chunk.as_bytes()).expect("write a chunk");
    }
    let peak = peak_rss(child.id());
    drop(stdin);
    let deadline = std::time::Instant::now() + COMMAND_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("postman enqueue did not exit within {COMMAND_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    assert!(
        status.success(),
        "enqueue failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = head.len() + SIZE_MIB * chunk.len();
    eprintln!(
        "peak RSS of enqueue with {SIZE_MIB} MiB on stdin: {} KiB",
        peak / 1024
    );
    assert!(
        peak < (size / 5) as u64,
        "peak RSS {peak} bytes for a message of {size}"
    );
    let queued = queue.state().queued_in("d1.test");
    assert_eq!(queued.len(), 1, "one file: {queued:?}");
    let bytes = std::fs::metadata(queue.domain_dir("d1.test").join(&queued[0]))
        .expect("stat")
        .len();
    assert!(
        bytes > size as u64 && bytes < size as u64 + 200,
        "{bytes} bytes queued for a message of {size}"
    );
}

/// A tmpfs of its own, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=`), or says why not.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::Builder::new()
            .prefix("postman-tmpfs-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Fills what is left of it with one file; returns the file.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = self.path().join("fill");
        let mut file = std::fs::File::create(&path).expect("create the filler");
        let zeros = vec![0u8; 64 * 1024];
        loop {
            match file.write(&zeros) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // Whatever a page more would need is gone too.
        let _ = file.write_all(&zeros[..1]);
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.path())
            .status();
    }
}

/// The RCPT commands a server received for `address`.
fn rcpts_to(server: &HostileServer, address: &str) -> usize {
    let want = format!("<{address}>");
    rcpt_paths(server).iter().filter(|p| **p == want).count()
}

/// Defect 6: on a full disk, one recipient accepted and one deferred, the
/// rewrite of the queue file (which copied the message) failed, "it keeps
/// its old state", and the next run sent the accepted recipient again. The
/// state now lives in a state file whose room is taken before the
/// transaction: the disk is filled while the server holds its reply to
/// the final dot, the outcome is recorded all the same, the runs on the
/// full disk never send the accepted recipient again, and once space is
/// freed the deferred one is delivered. Needs to mount a 2 MB tmpfs; where
/// that is not permitted the test says it was skipped.
#[test]
fn a_full_disk_never_sends_an_accepted_recipient_again() {
    let tmpfs = match Tmpfs::mount("2m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            eprintln!("skipped: cannot mount a tmpfs ({why})");
            return;
        }
    };
    let root = tmpfs.path().join("queue");
    let domain_dir = root.join(".OTHER_SERVERS").join("full.test");
    std::fs::create_dir_all(&domain_dir).expect("make the queue");
    let net = TestNet::new();
    let first = Script::new()
        .greet("220 full.test ESMTP")
        .default_reply()
        .default_reply()
        .expect("RCPT TO:<kept@", "250 2.1.5 ok")
        .expect("RCPT TO:<later@", "451 4.3.0 try again later")
        .expect("DATA", "354 go ahead")
        .body_silently()
        // The test fills the disk now.
        .stall(1000)
        .greet("250 2.0.0 queued")
        .then_polite();
    let server = HostileServer::start(
        net.addr(1),
        vec![
            first,
            refusing("451 4.3.0 try again later"),
            Script::polite(),
        ],
    );
    let dns = DnsServer::start(Zones::new().mx_at("full.test", net.ipv4(1)));
    let path = postman_integration::queue::write_queue_file(
        &domain_dir,
        "m1",
        &queue_file(
            "a@src.test",
            &["kept@full.test", "later@full.test"],
            unix_now(),
            &message("full", "on a full disk\n"),
            "\n",
        ),
    );
    let mut cfg = postman_integration::Config::new(&root, net.port(), dns.addr());
    cfg.min_backoff = 1;
    let file = cfg.write();

    // Run 1: the disk fills while the server holds the reply to the dot.
    let (run, filler) = std::thread::scope(|s| {
        let run = s.spawn(|| postman!().run_once(&file));
        assert!(
            server.wait_bodies(1, Duration::from_secs(20)),
            "the message is sent"
        );
        let filler = tmpfs.fill();
        (run.join().expect("the run"), filler)
    });
    run.assert_success();
    let state = QueueState::read(&root);
    assert!(
        state.quarantined.is_empty() && state.failed.is_empty(),
        "{state:#?}\n{}",
        run.stderr
    );
    let delivered = run
        .deliveries()
        .iter()
        .filter(|d| d.to == "kept@full.test" && d.status == "sent")
        .count();
    assert_eq!(delivered, 1, "kept@ delivered once:\n{}", run.stderr);

    // Run 2, the disk still full: only later@ is tried again.
    wait_until_due(&path);
    let run = postman!().run_once(&file);
    run.assert_success();
    assert_eq!(
        rcpts_to(&server, "later@full.test"),
        2,
        "later@ tried again:\n{}",
        run.stderr
    );
    assert_eq!(
        rcpts_to(&server, "kept@full.test"),
        1,
        "kept@ never again:\n{}",
        run.stderr
    );

    // Space again: later@ is delivered, kept@ still never sent again.
    std::fs::remove_file(&filler).expect("free the space");
    wait_until_due(&path);
    let run = postman!().run_once(&file);
    run.assert_success();
    assert_eq!(rcpts_to(&server, "kept@full.test"), 1, "kept@ once in all");
    assert_eq!(
        rcpts_to(&server, "later@full.test"),
        3,
        "later@ a third time"
    );
    assert!(
        run.deliveries()
            .iter()
            .any(|d| d.to == "later@full.test" && d.status == "sent"),
        "later@ delivered:\n{}",
        run.stderr
    );
    let state = QueueState::read(&root);
    assert!(state.is_empty(), "nothing left: {state:#?}");
}

/// A disk already full when a message's transaction would start: nothing
/// is sent (no room for its state file, so no outcome could be recorded),
/// the file is left as it was, and `run --once` ends instead of trying it
/// again every half second until the disk has room. The next run, with
/// room, delivers it. Needs a tmpfs, as above.
#[test]
fn run_once_on_a_full_disk_leaves_the_message_for_the_next_run() {
    let tmpfs = match Tmpfs::mount("2m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            eprintln!("skipped: cannot mount a tmpfs ({why})");
            return;
        }
    };
    let root = tmpfs.path().join("queue");
    let domain_dir = root.join(".OTHER_SERVERS").join("full.test");
    std::fs::create_dir_all(&domain_dir).expect("make the queue");
    let net = TestNet::new();
    let server = HostileServer::start(net.addr(1), vec![Script::polite()]);
    let dns = DnsServer::start(Zones::new().mx_at("full.test", net.ipv4(1)));
    let bytes = queue_file(
        "a@src.test",
        &["one@full.test", "two@full.test"],
        unix_now(),
        &message("full-before", "the disk was full first\n"),
        "\n",
    );
    let path = postman_integration::queue::write_queue_file(&domain_dir, "m1", &bytes);
    let cfg = postman_integration::Config::new(&root, net.port(), dns.addr());
    let file = cfg.write();
    let filler = tmpfs.fill();

    let run = postman!().run_once_within(&file, Duration::from_secs(20));
    run.assert_success();
    assert!(
        run.elapsed < Duration::from_secs(10),
        "run --once ends on a full disk: {:?}\n{}",
        run.elapsed,
        run.stderr
    );
    assert_eq!(
        server.count_commands("MAIL"),
        0,
        "nothing sent:\n{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read(&path).expect("still queued"),
        bytes,
        "the queue file is as it was"
    );
    assert!(
        run.stderr.contains("disk space"),
        "the log says why:\n{}",
        run.stderr
    );

    std::fs::remove_file(&filler).expect("free the space");
    let run = postman!().run_once_within(&file, Duration::from_secs(20));
    run.assert_success();
    for to in ["<one@full.test>", "<two@full.test>"] {
        assert_eq!(
            rcpt_paths(&server).iter().filter(|p| *p == to).count(),
            1,
            "{to} sent once:\n{}",
            run.stderr
        );
    }
    let state = QueueState::read(&root);
    assert!(state.is_empty(), "nothing left: {state:#?}");
}

/// Waits until the message at `path` is due again (its retry state says
/// so, in its state file or its own block), or gone.
fn wait_until_due(path: &std::path::Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        // A run may have found it due already and delivered it.
        if !path.exists() {
            return;
        }
        let fields = postman_integration::queue::envelope_fields(path);
        let next = postman_integration::queue::field(&fields, "X-Postman-Next-Attempt")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if next < unix_now() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never due: {fields:#?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server that takes `kept@` and defers `later@` on its first
/// connection, then takes everything.
fn kept_then_polite(net: &TestNet) -> HostileServer {
    HostileServer::start(
        net.addr(1),
        vec![
            Script::polite().answer("RCPT TO:<later@", "451 4.3.0 try again later"),
            Script::polite(),
        ],
    )
}

/// A queue with `m1` from a@src.test to kept@ and later@ of `kept.test`,
/// whose `.state` is a file, so that no state file can be recorded.
fn queue_with_a_broken_state_folder() -> (TestQueue, std::path::PathBuf) {
    let queue = TestQueue::new();
    let path = queue.add(
        "kept.test",
        "m1",
        "a@src.test",
        &["kept@kept.test", "later@kept.test"],
        &message("kept", "x\n"),
    );
    std::fs::write(queue.domain_dir("kept.test").join(".state"), b"in the way")
        .expect("a file where .state goes");
    (queue, path)
}

/// When the outcome of an attempt that delivered part of a message cannot
/// be recorded, the message stays claimed and is not sent again; a run
/// that ends then leaves the claim, with the state written into the room
/// reserved for it, and the next start puts that state in place before it
/// puts the message back: the accepted recipient is never sent again.
#[test]
fn an_unrecorded_state_keeps_the_message_claimed_and_recovery_puts_it_in_place() {
    let net = TestNet::new();
    let server = kept_then_polite(&net);
    let dns = DnsServer::start(Zones::new().mx_at("kept.test", net.ipv4(1)));
    let (queue, path) = queue_with_a_broken_state_folder();
    let mut cfg = config(&queue, &net, &dns);
    cfg.min_backoff = 1;
    let file = cfg.write();

    let run = postman!().run_once(&file);
    run.assert_success();
    check(
        run.stderr
            .contains("it stays claimed, and is not sent again")
            && run
                .stderr
                .contains("stopping with a message whose state could not be recorded"),
        "the log says the message is kept, then left for the next start",
        &queue,
        &run,
    );
    check(
        queue.state().active_names() == ["m1"],
        "the claim stays",
        &queue,
        &run,
    );
    std::fs::remove_file(queue.domain_dir("kept.test").join(".state")).expect("repair");

    let run = postman!().run_once(&file);
    run.assert_success();
    check(
        run.stderr
            .contains("unrecorded state found in its reservation"),
        "recovery puts the recorded state in place",
        &queue,
        &run,
    );
    wait_until_due(&path);
    let run = postman!().run_once(&file);
    run.assert_success();
    assert_eq!(
        rcpts_to(&server, "kept@kept.test"),
        1,
        "kept@ once:\n{}",
        run.stderr
    );
    assert_eq!(rcpts_to(&server, "later@kept.test"), 2, "later@ again");
    check(queue.state().is_empty(), "delivered and gone", &queue, &run);
}

/// The same in a running daemon: the worker tries to record the state
/// again now and then, and once it can, the message goes back into the
/// queue and on, without its accepted recipient.
#[test]
fn a_daemon_records_a_kept_state_once_it_can_and_goes_on() {
    let net = TestNet::new();
    let server = kept_then_polite(&net);
    let dns = DnsServer::start(Zones::new().mx_at("kept.test", net.ipv4(1)));
    let (queue, _path) = queue_with_a_broken_state_folder();
    let mut cfg = config(&queue, &net, &dns);
    cfg.min_backoff = 1;
    let mut daemon = postman!().spawn_daemon(&cfg.write());

    let kept = daemon.wait_for(Duration::from_secs(20), |records| {
        records.iter().any(|r| {
            r["msg"]
                .as_str()
                .is_some_and(|m| m.contains("it stays claimed, and is not sent again"))
        })
    });
    assert!(kept, "kept:\n{}", daemon.log_text());
    std::fs::remove_file(queue.domain_dir("kept.test").join(".state")).expect("repair");
    let delivered = daemon.wait_for(Duration::from_secs(30), |records| {
        postman_integration::postman::deliveries(records)
            .iter()
            .any(|d| d.to == "later@kept.test" && d.status == "sent")
    });
    daemon.terminate(crate::common::STOP_WITHIN);
    let log = daemon.log_text();
    assert!(delivered, "later@ delivered:\n{log}");
    assert!(log.contains("recorded at last"), "{log}");
    assert_eq!(rcpts_to(&server, "kept@kept.test"), 1, "kept@ once:\n{log}");
    assert!(queue.state().is_empty(), "{:#?}", queue.state());
}
