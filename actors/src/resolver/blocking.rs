//! DNS lookups for a thread of its own outside the resolver actor (the TLS
//! reporter, once a day): a small runtime and a resolver with the daemon's
//! settings, each lookup waited for.

use std::net::IpAddr;

use anyhow::Context as _;
use hickory_resolver::proto::rr::RData;
use postman::config::Config;
use postman::route::AddrAnswer;

use super::{addresses, build_resolver, DnsResolver, HighFdRuntime};

pub struct BlockingLookups {
    runtime: tokio::runtime::Runtime,
    resolver: DnsResolver,
}

impl BlockingLookups {
    pub fn new(config: &Config) -> anyhow::Result<BlockingLookups> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the DNS runtime")?;
        let resolver = {
            // The resolver's connections bind to the runtime that first
            // uses them: this one.
            let _enter = runtime.enter();
            build_resolver(
                HighFdRuntime::default(),
                &config.nameservers,
                config.dns_timeout,
                config.dns_attempts,
            )?
        };
        Ok(BlockingLookups { runtime, resolver })
    }

    /// The TXT records of `name`, each record's strings joined (those not
    /// UTF-8 left out); none for NXDOMAIN or NODATA. `Err` says why the
    /// lookup failed (a SERVFAIL, a timeout).
    pub fn txt(&self, name: &str) -> Result<Vec<String>, String> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self
            .runtime
            .block_on(self.resolver.txt_lookup(fqdn.as_str()))
        {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::TXT(txt) => String::from_utf8(txt.txt_data.concat()).ok(),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The addresses of `host`.
    pub fn addrs(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let mut until = std::time::Instant::now();
        match self
            .runtime
            .block_on(addresses(&self.resolver, host, &mut until))
        {
            AddrAnswer::Addrs(addrs) => Ok(addrs),
            AddrAnswer::NoRecords | AddrAnswer::NxDomain => Err(format!("{host} has no address")),
            AddrAnswer::Failed(why) => Err(format!("{host}: {why}")),
        }
    }
}
