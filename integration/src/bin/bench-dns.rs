//! bench-dns: the benchmark's authoritative DNS server (scripts/bench.sh
//! `sites` and `mix`), the tests' hickory server ([`DnsServer`]) serving a
//! zone file on a given address, so that both senders route by MX through
//! it: postman by `dns.nameservers`, Postfix by the system resolver of the
//! bench's network namespace (port 53 there).
//!
//! ```text
//! bench-dns ZONE ADDR:PORT
//! ```
//!
//! ZONE holds one record a line, `name ttl IN MX pref host` or
//! `name ttl IN A address` (the TTL of the first record applies to all).
//! Everything else is NXDOMAIN. On SIGTERM or SIGINT it prints how many
//! questions of each type it was asked, as one JSON object, and exits.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{bail, Context};
use nix::sys::signal::{SigSet, Signal};
use postman_integration::{DnsServer, Zones};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, zone, addr] = args.as_slice() else {
        bail!("usage: bench-dns ZONE ADDR:PORT");
    };
    let addr: SocketAddr = addr.parse().with_context(|| format!("address {addr}"))?;
    let text = std::fs::read_to_string(zone).with_context(|| format!("read {zone}"))?;
    let zones = parse(&text).with_context(|| format!("zone file {zone}"))?;
    // Block the signals before the server's thread starts, so only the
    // wait below sees them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().context("block SIGTERM and SIGINT")?;
    let server = DnsServer::start_at(zones, addr);
    eprintln!("bench-dns: serving {zone} on {}", server.addr());
    signals.wait().context("wait for a signal")?;
    let mut asked: BTreeMap<String, usize> = BTreeMap::new();
    for q in server.queries() {
        *asked.entry(q.kind).or_default() += 1;
    }
    println!("{}", serde_json::to_string(&asked)?);
    Ok(())
}

fn parse(text: &str) -> anyhow::Result<Zones> {
    let mut zones = Zones::new();
    let mut ttl = None;
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [] => {}
            [name, t, "IN", "MX", pref, host] => {
                ttl.get_or_insert(t.parse::<u32>()?);
                zones = zones.mx(name, pref.parse()?, host);
            }
            [name, t, "IN", "A", ip] => {
                ttl.get_or_insert(t.parse::<u32>()?);
                zones = zones.a(name, ip.parse::<Ipv4Addr>()?);
            }
            _ => bail!(
                "line {}: not `name ttl IN MX pref host` or `name ttl IN A ip`: {line}",
                n + 1
            ),
        }
    }
    Ok(match ttl {
        Some(ttl) => zones.ttl(ttl),
        None => zones,
    })
}
