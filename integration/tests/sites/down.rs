//! See sites.rs. A site none of whose servers can be reached backs off as
//! one: a round of attempts for all its domains, not one per domain, a
//! backoff kept in `.OTHER_SERVERS/.sites/` across restarts; and a
//! site that holds connections without greeting does not take the
//! connections another site needs.

use std::path::Path;
use std::time::{Duration, Instant};

use postman_integration::queue::REMOTE_DIR;
use postman_integration::{
    numbered_domains, postman, BlackHole, DnsServer, HostileServer, TestNet, TestQueue, Zones,
};

use super::common::{check, config};
use super::{field_of, named, queue_each};

/// Connections a site may open in its first round before it knows the
/// host is down: its initial connections (5, as Postfix's
/// `initial_destination_concurrency`), far below one per domain.
const FIRST_ROUND: usize = 5;

/// 30 domains whose one MX host is down (a listener that resets every
/// connection, so the attempts are counted).
struct DownSite {
    hole: BlackHole,
    _dns: DnsServer,
    queue: TestQueue,
    domains: Vec<String>,
    config: postman_integration::Config,
}

impl DownSite {
    fn new() -> DownSite {
        let net = TestNet::new();
        let hole = BlackHole::resetting(net.addr(1));
        let domains = numbered_domains("d", 30, "down.test");
        let dns = DnsServer::start(
            Zones::new()
                .mx_shared(&domains, "mx.down.test")
                .a("mx.down.test", net.ipv4(1)),
        );
        let queue = TestQueue::new();
        queue_each(&queue, &domains, 1);
        let config = config(&queue, &net, &dns);
        DownSite {
            hole,
            _dns: dns,
            queue,
            domains,
            config,
        }
    }
}

/// The files of `<root>/.OTHER_SERVERS/.sites/` (other than its `tmp/`)
/// with their contents, or a panic naming the folder.
fn site_entries(root: &Path) -> Vec<(String, String)> {
    let dir = root.join(REMOTE_DIR).join(".sites");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; the site's backoff belongs there", dir.display()));
    let mut files: Vec<(String, String)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != "tmp")
        .map(|e| {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), text)
        })
        .collect();
    files.sort();
    files
}

/// One `run --once` is one round: the down site is tried with at most
/// [`FIRST_ROUND`] connections (it was one per domain, 30), it backs off
/// once (one `site backing off` record naming the site, one file under
/// `.OTHER_SERVERS/.sites/` naming it with `failures: 1`, no per-domain
/// `.backoff` file), and a restarted postman
/// makes no attempt while that backoff lasts. Nothing is bounced.
#[test]
fn a_down_site_is_tried_once_per_round_and_stays_backed_off_after_a_restart() {
    let site = DownSite::new();
    let mut cfg = site.config.clone();
    cfg.min_backoff = 3600;
    let cfg = cfg.write();

    let first = postman!().run_once(&cfg);
    first.assert_success();
    let tried = site.hole.connection_count();
    check(
        (1..=FIRST_ROUND).contains(&tried),
        &format!(
            "{tried} attempts at a down host shared by {} domains; 1 to {FIRST_ROUND} expected",
            site.domains.len()
        ),
        &site.queue,
        &first,
    );
    let records = first.records();
    let backing_off = named(&records, "site backing off");
    check(
        backing_off.len() == 1,
        &format!("one `site backing off` record, got {}", backing_off.len()),
        &site.queue,
        &first,
    );
    let sites = field_of(&backing_off, "site");
    assert!(sites[0].contains("mx.down.test"), "the site: {sites:?}");
    let entries = site_entries(site.queue.root());
    assert_eq!(entries.len(), 1, "one site backs off: {entries:?}");
    let (_, text) = &entries[0];
    assert!(
        text.contains("mx.down.test") && text.contains("failures: 1"),
        "the site's backoff names it and counts one failure: {text:?}"
    );
    for domain in &site.domains {
        let backoff = site.queue.domain_dir(domain).join(".backoff");
        assert!(
            !backoff.exists(),
            "{} exists: the backoff is the site's",
            backoff.display()
        );
    }
    assert_eq!(
        site.queue.state().queued_count(),
        site.domains.len(),
        "every message stays queued"
    );

    let second = postman!().run_once(&cfg);
    second.assert_success();
    check(
        site.hole.connection_count() == tried,
        &format!(
            "the restarted postman tried the backing-off site again: {} attempts, {tried} before",
            site.hole.connection_count()
        ),
        &site.queue,
        &second,
    );
    assert_eq!(site.queue.state().queued_count(), site.domains.len());
    for out in [&first, &second] {
        let bounced = out
            .deliveries()
            .iter()
            .filter(|d| d.status == "bounced")
            .count();
        assert_eq!(
            bounced, 0,
            "nothing bounces for a down site:\n{}",
            out.stderr
        );
    }
}

/// A running daemon probes a down site once per round: with a backoff of
/// 1–2 s it goes round at least four times in a few seconds, and every
/// round after the first (at most [`FIRST_ROUND`] connections) is one
/// connection, whatever the number of domains (30).
#[test]
fn a_daemon_probes_a_down_site_once_per_round() {
    const ROUNDS: usize = 4;
    let site = DownSite::new();
    let mut cfg = site.config.clone();
    cfg.min_backoff = 1;
    cfg.max_backoff = Some(2);
    let mut daemon = postman!().spawn_daemon(&cfg.write());
    let went_round = daemon.wait_for(Duration::from_secs(30), |records| {
        named(records, "site backing off").len() >= ROUNDS
    });
    daemon.terminate(super::common::STOP_WITHIN);
    let records = daemon.records();
    let rounds = named(&records, "site backing off").len();
    let attempts = site.hole.connection_count();
    assert!(
        went_round,
        "{rounds} `site backing off` records in 30 s, {ROUNDS} expected ({attempts} attempts)\n{}",
        daemon.log_text()
    );
    eprintln!("{attempts} attempts in {rounds} rounds at a down site of 30 domains");
    assert!(
        attempts <= FIRST_ROUND + (rounds - 1),
        "{attempts} attempts in {rounds} rounds: one per round after a first of at most \
         {FIRST_ROUND} expected\n{}",
        daemon.log_text()
    );
}

/// The issue's "black-holed MX host shared by 20 domains got 40
/// connections": a site whose server accepts and never greets (20 domains)
/// holds only its own few connections while it waits for greetings (15 s),
/// so a busy site beside it (50 domains × 2 messages) is delivered in
/// about the time it takes alone: at most twice that, plus 2 s. Both
/// runs queue the busy mail into a running daemon; in the second the black
/// hole already holds connections.
#[test]
fn a_black_holed_site_does_not_slow_a_busy_one() {
    let alone = busy_site_time(false);
    let beside = busy_site_time(true);
    eprintln!("busy site: {alone:?} alone, {beside:?} beside a black hole");
    let limit = alone * 2 + Duration::from_secs(2);
    assert!(
        beside <= limit,
        "the busy site took {beside:?} beside the black hole, {alone:?} alone; at most {limit:?} \
         expected"
    );
}

/// How long a daemon takes from queueing 50 domains × 2 messages for a
/// busy site until its server has them all, with or without a black-holed
/// site (20 domains, queued first) holding connections.
fn busy_site_time(with_black_hole: bool) -> Duration {
    let net = TestNet::new();
    let hole = BlackHole::start(net.addr(1));
    let busy = HostileServer::polite(net.addr(2));
    let holed = numbered_domains("h", 20, "hole.test");
    let domains = numbered_domains("b", 50, "busy.test");
    let dns = DnsServer::start(
        Zones::new()
            .mx_shared(&holed, "mx.hole.test")
            .a("mx.hole.test", net.ipv4(1))
            .mx_shared(&domains, "mx.busy.test")
            .a("mx.busy.test", net.ipv4(2)),
    );
    let queue = TestQueue::new();
    let mut cfg = config(&queue, &net, &dns);
    cfg.timeouts.greeting = 15;
    let daemon = postman!().spawn_daemon(&cfg.write());
    if with_black_hole {
        queue_each(&queue, &holed, 1);
        assert!(
            hole.wait_connections(1, Duration::from_secs(20)),
            "the black hole was never tried\n{}",
            daemon.log_text()
        );
    }
    let started = Instant::now();
    let total = queue_each(&queue, &domains, 2);
    let all = busy.wait_bodies(total, Duration::from_secs(60));
    assert!(
        all,
        "the busy site received {} of {total} in 60 s (black hole: {with_black_hole}, {} \
         connections to it)\n{}",
        busy.body_count(),
        hole.connection_count(),
        daemon.log_text()
    );
    let last = busy.body_times().last().copied().unwrap_or(started);
    last.saturating_duration_since(started)
}
