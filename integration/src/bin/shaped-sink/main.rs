//! shaped-sink: a fast SMTP sink for the benchmark's `sites` and `mix`
//! workloads (scripts/bench.sh), where smtp-sink cannot serve: many sites
//! on many loopback addresses, each with its own behaviour.
//!
//! ```text
//! shaped-sink CONFIG.json STATS.json
//! ```
//!
//! CONFIG names the port, the host name and the sites (see `site.rs`): a
//! working server, perhaps capped at N connections at once (one more is
//! greeted `421` and closed, as Exim's `smtp_accept_max` does), throttling
//! past a message rate with a configurable reply at MAIL or at the final
//! dot, greylisting first attempts; or a black hole that accepts and never
//! greets. An address of the plan where nothing listens refuses
//! connections (the kernel's RST). Messages are thrown away.
//!
//! Every 10 ms, when something changed, STATS is rewritten (temporary file
//! and rename) with the totals and each group's; on SIGTERM or SIGINT it is
//! written with every site's too, and the sink exits. Recipients are counted
//! once each (`unique`) beside all accepted messages, so a message sent twice
//! shows; `last_unique_at` is the Unix time of the latest first acceptance,
//! the moment the last of the workload arrived.
//!
//! One thread serves everything (a tokio current-thread runtime), like
//! smtp-sink's event loop; the bench measures its CPU beside the senders'.

mod session;
mod site;

use std::collections::{BTreeMap, HashSet};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use nix::sys::signal::{SigSet, Signal};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};

use session::{Policy, Session};
use site::{lock, Admission, CounterValues, Mode, RateAt, Site, SiteConfig};

/// How often the stats file may be rewritten.
const STATS_EVERY: Duration = Duration::from_millis(10);
/// A connection silent this long is closed (smtp-sink's `-t` is 100 s; a
/// black hole waits for its client to give up, longer than any greeting
/// timeout in the bench).
const IDLE: Duration = Duration::from_secs(900);
/// Listen backlog of each address (the kernel caps it at somaxconn).
const BACKLOG: i32 = 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    port: u16,
    #[serde(default = "default_hostname")]
    hostname: String,
    sites: Vec<SiteConfig>,
}

fn default_hostname() -> String {
    "shaped-sink.test".into()
}

/// Everything the connections share.
struct Receiver {
    hostname: String,
    sites: Vec<Arc<Site>>,
    /// Recipients of accepted messages, lower-cased.
    seen: Mutex<HashSet<String>>,
    /// Unix time, in microseconds, of the latest first acceptance.
    last_unique_us: AtomicU64,
    started: f64,
}

/// One connection's view: its site and the receiver.
struct Conn<'a> {
    site: &'a Site,
    receiver: &'a Receiver,
}

impl Policy for Conn<'_> {
    fn mail(&self, now: Instant) -> Option<String> {
        self.site.over_rate(RateAt::Mail, now).map(str::to_owned)
    }

    fn rcpt(&self, sender: &str, recipient: &str, now: Instant) -> Option<String> {
        self.site
            .greylisted(sender, recipient, now)
            .map(str::to_owned)
    }

    fn data_end(&self, now: Instant) -> Option<String> {
        self.site.over_rate(RateAt::DataEnd, now).map(str::to_owned)
    }

    fn accepted(&self, recipients: &[String], _: Instant) {
        let c = &self.site.counters;
        c.messages.fetch_add(1, Ordering::Relaxed);
        let mut seen = lock(&self.receiver.seen);
        let fresh = recipients
            .iter()
            .filter(|r| seen.insert(r.to_ascii_lowercase()))
            .count();
        drop(seen);
        if fresh > 0 {
            c.unique.fetch_add(fresh as u64, Ordering::Relaxed);
            self.receiver
                .last_unique_us
                .store(unix_micros(), Ordering::Relaxed);
        }
    }
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, stats] = args.as_slice() else {
        bail!("usage: shaped-sink CONFIG.json STATS.json");
    };
    let text = std::fs::read_to_string(config).with_context(|| format!("read {config}"))?;
    let config: Config = serde_json::from_str(&text).with_context(|| format!("parse {config}"))?;
    let stats = PathBuf::from(stats);
    // SIGTERM and SIGINT wait for the thread below, blocked everywhere else
    // (threads inherit the mask).
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().context("block SIGTERM and SIGINT")?;
    let now = Instant::now();
    let receiver = Arc::new(Receiver {
        hostname: config.hostname,
        sites: config
            .sites
            .into_iter()
            .map(|s| Arc::new(Site::new(s, now)))
            .collect(),
        seen: Mutex::new(HashSet::new()),
        last_unique_us: AtomicU64::new(0),
        started: unix_micros() as f64 / 1e6,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let listeners = runtime.block_on(listen_all(&receiver, config.port))?;
    {
        let receiver = Arc::clone(&receiver);
        let stats = stats.clone();
        std::thread::spawn(move || {
            let signal = signals.wait();
            if let Err(e) = write_stats(&receiver, &stats, true) {
                eprintln!("shaped-sink: final stats: {e:#}");
            }
            eprintln!("shaped-sink: stopped by {signal:?}");
            std::process::exit(0);
        });
    }
    eprintln!(
        "shaped-sink: {} sites on {} addresses, port {}",
        receiver.sites.len(),
        listeners.len(),
        config.port
    );
    runtime.block_on(async move {
        for (listener, site) in listeners {
            tokio::spawn(accept_loop(listener, site, Arc::clone(&receiver)));
        }
        stats_loop(receiver, stats).await
    })
}

async fn listen_all(
    receiver: &Receiver,
    port: u16,
) -> anyhow::Result<Vec<(TcpListener, Arc<Site>)>> {
    let mut out = Vec::new();
    for site in &receiver.sites {
        for ip in &site.config.addrs {
            let addr = SocketAddr::new(*ip, port);
            let listener =
                bind(addr).with_context(|| format!("listen on {addr} for {}", site.config.name))?;
            out.push((listener, Arc::clone(site)));
        }
    }
    Ok(out)
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

async fn accept_loop(listener: TcpListener, site: Arc<Site>, receiver: Arc<Receiver>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, Arc::clone(&site), Arc::clone(&receiver)));
            }
            // Out of descriptors or the like: let the client wait a moment.
            Err(e) => {
                eprintln!("shaped-sink: accept on {}: {e}", site.config.name);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, site: Arc<Site>, receiver: Arc<Receiver>) {
    let _ = stream.set_nodelay(true);
    match site.config.mode {
        Mode::Blackhole => {
            // Counted, never capped, never greeted.
            site.admit_uncapped();
            let _ = tokio::time::timeout(IDLE, drain(&stream)).await;
            site.leave();
        }
        Mode::Serve => match site.admit() {
            Admission::Busy => {
                let busy = format!("{}\r\n", site.config.busy_reply);
                let _ = write_all(&stream, busy.as_bytes()).await;
            }
            Admission::Serve => {
                let conn = Conn {
                    site: &site,
                    receiver: &receiver,
                };
                let _ = converse(&stream, &conn).await;
                site.leave();
            }
        },
    }
}

/// Reads and forgets until the client closes.
async fn drain(stream: &TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    while read_some(stream, &mut buf).await? > 0 {}
    Ok(())
}

async fn converse(stream: &TcpStream, conn: &Conn<'_>) -> std::io::Result<()> {
    let mut session = Session::new(&conn.receiver.hostname);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let out = session.output();
        if !out.is_empty() {
            write_all(stream, out).await?;
            out.clear();
        }
        if session.closing() {
            return Ok(());
        }
        let n = match tokio::time::timeout(IDLE, read_some(stream, &mut buf)).await {
            Ok(read) => read?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        session.feed(&buf[..n], conn, Instant::now());
    }
}

async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct Stats<'a> {
    started: f64,
    written: f64,
    last_unique_at: Option<f64>,
    total: CounterValues,
    groups: BTreeMap<&'a str, CounterValues>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sites: Option<BTreeMap<&'a str, CounterValues>>,
}

async fn stats_loop(receiver: Arc<Receiver>, path: PathBuf) -> anyhow::Result<()> {
    let mut last = None;
    let mut tick = tokio::time::interval(STATS_EVERY);
    loop {
        tick.tick().await;
        let total = totals(&receiver);
        if last.as_ref() != Some(&total) {
            write_stats(&receiver, &path, false)?;
            last = Some(total);
        }
    }
}

/// A cheap fingerprint of the counters: whether anything changed.
fn totals(receiver: &Receiver) -> Vec<u64> {
    let mut sum = CounterValues::default();
    for site in &receiver.sites {
        sum.add(&site.values());
    }
    let active: u64 = receiver
        .sites
        .iter()
        .map(|s| s.counters.active.load(Ordering::Relaxed))
        .sum();
    vec![
        sum.connections,
        sum.refused,
        sum.throttled,
        sum.greylisted,
        sum.messages,
        active,
    ]
}

fn write_stats(receiver: &Receiver, path: &Path, every_site: bool) -> anyhow::Result<()> {
    let mut total = CounterValues::default();
    let mut groups: BTreeMap<&str, CounterValues> = BTreeMap::new();
    let mut sites = BTreeMap::new();
    for site in &receiver.sites {
        let v = site.values();
        total.add(&v);
        groups
            .entry(site.config.group.as_str())
            .or_default()
            .add(&v);
        if every_site {
            sites.insert(site.config.name.as_str(), v);
        }
    }
    let last = receiver.last_unique_us.load(Ordering::Relaxed);
    let stats = Stats {
        started: receiver.started,
        written: unix_micros() as f64 / 1e6,
        last_unique_at: (last > 0).then(|| last as f64 / 1e6),
        total,
        groups,
        sites: every_site.then_some(sites),
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&stats)?)
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}
