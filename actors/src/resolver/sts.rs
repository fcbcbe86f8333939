//! MTA-STS discovery for a route (RFC 8461 §3): the `_mta-sts` TXT
//! lookup, the policy cache under the queue root, and the HTTPS fetch when
//! the cache says one is due. The decisions are the core's
//! ([`mta_sts::decide`]); this module carries them out.
//!
//! The cache is one file a domain, `.OTHER_SERVERS/.mta-sts/<domain>`
//! (the scanner skips dot names), written whole through a temporary name
//! and a rename, so that a restart, or another postman on the same queue,
//! finds the last good policy. A damaged file is logged and taken as
//! absent. The fetch and the file I/O run on the runtime's blocking
//! threads; the TXT lookup runs beside the MX lookup, so a domain without
//! a policy waits for nothing more.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use hickory_resolver::proto::rr::RData;
use postman::mta_sts::http::{self, End, FetchError, MAX_BODY, MAX_HEAD};
use postman::mta_sts::{self, Cached, Plan, Policy, Record, RecordError, TxtAnswer};
use postman::queue::dirfd::QueueDir;
use postman::route::AddrAnswer;
use postman::tls::{ActiveSts, Level, StsProblem, StsStatus};
use rustls::ClientConfig;
use slog::{info, warn, Logger};

use super::DnsResolver;
use crate::descriptors::above_fd_setsize;
use crate::https::{self, Exchange, HttpsError};
use crate::worker::tls::{checked_config, RootsError};

/// The port of the policy server: fixed by the `https:` URL (RFC 8461
/// §3.3).
pub const POLICY_PORT: u16 = 443;

/// How long a whole policy fetch may take, connection and all (KumoMTA's
/// 20 s; the policy is a few hundred bytes).
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

/// The cache folder, below the queue root.
const CACHE_DIR: &str = ".OTHER_SERVERS/.mta-sts";

/// The largest cache file read: a policy and its three header lines.
const MAX_CACHE_FILE: u64 = (MAX_BODY + 1024) as u64;

/// What MTA-STS needs from the configuration.
#[derive(Debug, Clone)]
pub struct StsSettings {
    /// `tls.mta_sts`: look policies up at all.
    pub enabled: bool,
    /// The queue root, where the cache lives.
    pub maildir: PathBuf,
    /// `tls.ca_file`: trusted beside the system roots.
    pub ca_file: Option<PathBuf>,
    /// `tls.mode` and `tls.policy`: a domain whose level is `mta-sts`
    /// has its policy looked up even when `enabled` is off.
    pub mode: Level,
    pub levels: BTreeMap<String, Level>,
}

impl StsSettings {
    /// The settings in `config`.
    pub fn of(config: &postman::config::Config) -> StsSettings {
        StsSettings {
            enabled: enabled(config),
            maildir: config.maildir.clone(),
            ca_file: config.tls_ca_file.clone(),
            mode: config.tls_mode,
            levels: config.tls_policy.clone(),
        }
    }

    /// Whether `domain`'s policy is looked up: where its level uses one
    /// ([`Level::wants_sts`]: `may`, `encrypt` and `dane` with
    /// `tls.mta_sts`, and `mta-sts` always); never at `none`, `verify`,
    /// `secure` or `dane-only`, which a policy cannot change.
    fn looks_up(&self, domain: &str) -> bool {
        let level = self.levels.get(domain).copied().unwrap_or(self.mode);
        level.wants_sts(self.enabled)
    }
}

/// `tls.mta_sts`, on by default (a careful sender does not wait to be
/// told).
fn enabled(config: &postman::config::Config) -> bool {
    config.tls_discovery.mta_sts
}

/// The MTA-STS state of one resolver: settings, cache folder, the TLS
/// configuration for fetches (built at the first fetch) and the recent
/// fetch failures.
pub struct Sts {
    settings: StsSettings,
    /// `None` when the cache folder cannot be had (no queue yet: `postman
    /// route` on a new machine); policies are then fetched every time.
    cache: Option<QueueDir>,
    tls: OnceLock<Result<Arc<ClientConfig>, Arc<RootsError>>>,
    /// The last failed fetch of each domain and why, for
    /// [`mta_sts::FETCH_RETRY`].
    failed: Mutex<HashMap<String, (SystemTime, StsProblem)>>,
    log: Logger,
}

/// A domain's MTA-STS status and, for people (`postman route`, the log),
/// where it came from.
#[derive(Debug, Clone)]
pub struct StsFound {
    pub status: StsStatus,
    pub how: String,
}

impl Sts {
    /// The state for `settings`; opens (creating) the cache folder under
    /// an existing `.OTHER_SERVERS`.
    pub fn new(settings: StsSettings, log: Logger) -> Sts {
        let cache = if settings.enabled
            || settings.mode == Level::MtaSts
            || settings.levels.values().any(|l| *l == Level::MtaSts)
        {
            match open_cache(&settings.maildir) {
                Ok(dir) => Some(dir),
                Err(e) => {
                    warn!(log, "MTA-STS policies are not cached: cannot open the cache folder";
                        "dir" => %settings.maildir.join(CACHE_DIR).display(), "error" => %e);
                    None
                }
            }
        } else {
            None
        };
        Sts {
            settings,
            cache,
            tls: OnceLock::new(),
            failed: Mutex::new(HashMap::new()),
            log,
        }
    }

    /// The MTA-STS status of `domain` for a route to its MX hosts.
    pub(super) async fn lookup(self: &Arc<Self>, resolver: &DnsResolver, domain: &str) -> StsFound {
        if !self.settings.looks_up(domain) {
            let level = self.settings.levels.get(domain).copied();
            let why = match level.unwrap_or(self.settings.mode) {
                level if self.settings.enabled => format!("not used at level {level}"),
                _ => "off (tls.mta_sts = false)".to_owned(),
            };
            return found(StsStatus::NotLooked, &why);
        }
        if !postman::queue::valid_domain(domain) {
            return found(StsStatus::NotLooked, "not looked up: not an A-label domain");
        }
        let txt = txt_record(resolver, domain).await;
        let cached = self.read_cache(domain).await;
        let now = SystemTime::now();
        let failure = self.failure(domain);
        let plan = mta_sts::decide(now, cached.as_ref(), &txt, failure.as_ref().map(|f| f.0));
        match plan {
            Plan::Use => match cached {
                Some(c) => found(policy(&c), &format!("cached, {}", ages(&c, now))),
                None => found(StsStatus::NoPolicy, "no policy"),
            },
            Plan::FailedLately => {
                let problem = failure.map_or_else(
                    || StsProblem::Fetch("the last fetch failed".to_owned()),
                    |f| f.1,
                );
                let how = format!(
                    "{problem} (fetched again {}s after the failure)",
                    mta_sts::FETCH_RETRY.as_secs()
                );
                found(StsStatus::Unavailable(problem), &how)
            }
            Plan::NoPolicy => found(StsStatus::NoPolicy, &no_policy(&txt, cached.as_ref())),
            Plan::Refresh | Plan::Fetch { .. } => {
                let TxtAnswer::Record(record) = txt else {
                    // decide() fetches only for a record; keep what we had.
                    return match cached {
                        Some(c) => found(policy(&c), "cached"),
                        None => found(StsStatus::NoPolicy, "no policy"),
                    };
                };
                self.fetch_and_keep(resolver, domain, record, cached, now)
                    .await
            }
        }
    }

    /// Fetches `domain`'s policy for `record`, caches it, and falls back
    /// to `cached` while it holds when the fetch fails.
    async fn fetch_and_keep(
        self: &Arc<Self>,
        resolver: &DnsResolver,
        domain: &str,
        record: Record,
        cached: Option<Cached>,
        now: SystemTime,
    ) -> StsFound {
        match self.fetch(resolver, domain).await {
            Ok(policy_text) => {
                let fresh = Cached::new(record.id, policy_text, now);
                self.forget_failure(domain);
                self.write_cache(domain, &fresh).await;
                info!(self.log, "MTA-STS policy fetched"; "domain" => domain,
                    "id" => &fresh.id, "mode" => fresh.policy.mode.as_str(),
                    "max_age" => fresh.policy.max_age);
                let how = format!("fetched now, expires {}", utc(fresh.expires));
                found(policy(&fresh), &how)
            }
            Err(problem) => {
                warn!(self.log, "MTA-STS policy fetch failed"; "domain" => domain,
                    "id" => &record.id, "error" => %problem);
                self.note_failure(domain, now, problem.clone());
                match cached.filter(|c| c.fresh(now)) {
                    Some(c) => {
                        let how = format!(
                            "cached, {}; the fetch for id {} failed: {problem}",
                            ages(&c, now),
                            record.id
                        );
                        found(policy(&c), &how)
                    }
                    None => {
                        let how = problem.to_string();
                        found(StsStatus::Unavailable(problem), &how)
                    }
                }
            }
        }
    }

    /// GET the policy of `domain` from `mta-sts.<domain>` and parse it.
    async fn fetch(
        self: &Arc<Self>,
        resolver: &DnsResolver,
        domain: &str,
    ) -> Result<Policy, StsProblem> {
        let deadline = Instant::now() + FETCH_TIMEOUT;
        let host = http::policy_host(domain);
        let mut until = Instant::now();
        let addrs = match super::addresses(resolver, &host, &mut until).await {
            AddrAnswer::Addrs(addrs) => addrs,
            AddrAnswer::NoRecords => return Err(no_address(&host, "no A or AAAA record")),
            AddrAnswer::NxDomain => return Err(no_address(&host, "no such name")),
            AddrAnswer::Failed(why) => return Err(no_address(&host, &why)),
        };
        let exchange = Exchange {
            name: host,
            addrs,
            port: POLICY_PORT,
            request: http::request(domain),
            max_response: MAX_HEAD + MAX_BODY,
            deadline,
        };
        let this = Arc::clone(self);
        let job = tokio::task::spawn_blocking(move || {
            let config = this
                .tls_config()
                .map_err(|e| StsProblem::Fetch(format!("cannot check certificates: {e}")))?;
            let (bytes, end) = https::exchange(&exchange, config, |bytes, end| {
                !matches!(http::response(bytes, end), Ok(None))
            })
            .map_err(fetch_problem)?;
            body_policy(&bytes, end)
        });
        match tokio::time::timeout(FETCH_TIMEOUT + Duration::from_secs(1), job).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(StsProblem::Fetch(format!("the fetch stopped: {e}"))),
            Err(_) => Err(StsProblem::Fetch("timed out".to_owned())),
        }
    }

    /// The fetch's TLS configuration: WebPKI with the system roots and
    /// `tls.ca_file`, built at the first fetch.
    fn tls_config(&self) -> Result<Arc<ClientConfig>, Arc<RootsError>> {
        self.tls
            .get_or_init(|| {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                checked_config(&provider, self.settings.ca_file.clone())
                    .map(|checked| checked.config)
                    .map_err(Arc::new)
            })
            .clone()
    }

    fn failure(&self, domain: &str) -> Option<(SystemTime, StsProblem)> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.get(domain).cloned()
    }

    fn note_failure(&self, domain: &str, at: SystemTime, problem: StsProblem) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.insert(domain.to_owned(), (at, problem));
    }

    fn forget_failure(&self, domain: &str) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.remove(domain);
    }

    /// The cached policy of `domain`, if any and readable.
    async fn read_cache(self: &Arc<Self>, domain: &str) -> Option<Cached> {
        self.cache.as_ref()?;
        let this = Arc::clone(self);
        let name = domain.to_owned();
        tokio::task::spawn_blocking(move || this.read_cache_now(&name))
            .await
            .ok()
            .flatten()
    }

    fn read_cache_now(&self, domain: &str) -> Option<Cached> {
        let dir = self.cache.as_ref()?;
        let bytes = match dir.read_small(domain, MAX_CACHE_FILE) {
            Ok(bytes) => bytes?,
            Err(e) => {
                warn!(self.log, "cannot read the cached MTA-STS policy; taken as absent";
                    "file" => %dir.display_path(domain).display(), "error" => %e);
                return None;
            }
        };
        let decoded = std::str::from_utf8(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|text| Cached::decode(text).map_err(|e| e.to_string()));
        match decoded {
            Ok(cached) => Some(cached),
            Err(e) => {
                warn!(self.log, "damaged MTA-STS cache file; taken as absent";
                    "file" => %dir.display_path(domain).display(), "error" => e);
                None
            }
        }
    }

    async fn write_cache(self: &Arc<Self>, domain: &str, entry: &Cached) {
        if self.cache.is_none() {
            return;
        }
        let this = Arc::clone(self);
        let name = domain.to_owned();
        let text = entry.encode();
        let _ = tokio::task::spawn_blocking(move || {
            let Some(dir) = this.cache.as_ref() else {
                return;
            };
            if let Err(e) = write_file(dir, &name, text.as_bytes()) {
                warn!(this.log, "cannot cache the MTA-STS policy";
                    "file" => %dir.display_path(&name).display(), "error" => %e);
            }
        })
        .await;
    }
}

/// Opens `.OTHER_SERVERS/.mta-sts` under `maildir`, creating the last
/// component only: the queue itself is made by whoever owns it.
/// Its descriptor is kept for the process's life, so it goes above
/// `FD_SETSIZE` with the queue's other long-kept folders.
fn open_cache(maildir: &Path) -> std::io::Result<QueueDir> {
    let dir = QueueDir::open_root(maildir)?
        .dir(".OTHER_SERVERS")?
        .dir_create(".mta-sts")?;
    Ok(match above_fd_setsize(dir.as_fd()) {
        Some(high) => dir.with_descriptor(high),
        None => dir,
    })
}

/// Writes `name` in `dir` whole: a temporary dot name, fsync, rename over
/// the old file, fsync the folder. A reader sees the old or the new file.
fn write_file(dir: &QueueDir, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = format!(".tmp.{}.{n}.{name}", std::process::id());
    let written = dir.create_new(&tmp, 0o644).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let renamed = written.and_then(|()| dir.rename(&tmp, dir, name));
    if renamed.is_err() {
        let _ = dir.remove_file(&tmp);
    }
    renamed?;
    dir.sync()
}

/// The `_mta-sts.<domain>` TXT answer (hickory follows a CNAME chain).
async fn txt_record(resolver: &DnsResolver, domain: &str) -> TxtAnswer {
    let name = format!("_mta-sts.{}.", domain.trim_end_matches('.'));
    match resolver.txt_lookup(name.as_str()).await {
        Ok(lookup) => {
            let texts: Vec<String> = lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::TXT(txt) => Some(txt.txt_data.concat()),
                    _ => None,
                })
                .filter_map(|bytes| String::from_utf8(bytes).ok())
                .collect();
            match Record::from_txt(&texts) {
                Ok(record) => TxtAnswer::Record(record),
                Err(RecordError::None | RecordError::Several(_) | RecordError::Malformed(_)) => {
                    TxtAnswer::NoRecord
                }
            }
        }
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => TxtAnswer::NoRecord,
        Err(_) => TxtAnswer::Failed,
    }
}

/// The policy in a response that [`http::response`] found whole.
fn body_policy(bytes: &[u8], end: End) -> Result<Policy, StsProblem> {
    let body = match http::response(bytes, end) {
        Ok(Some(body)) => body,
        Ok(None) => {
            return Err(fetch_error(FetchError::Truncated {
                got: 0,
                declared: None,
            }))
        }
        Err(e) => return Err(fetch_error(e)),
    };
    let text = std::str::from_utf8(body)
        .map_err(|_| StsProblem::Invalid("the policy is not UTF-8 text".to_owned()))?;
    Policy::parse(text).map_err(|e| StsProblem::Invalid(e.to_string()))
}

fn fetch_error(e: FetchError) -> StsProblem {
    StsProblem::Fetch(e.to_string())
}

fn fetch_problem(e: HttpsError) -> StsProblem {
    match e {
        HttpsError::Certificate(_) => StsProblem::WebPki(e.to_string()),
        e => StsProblem::Fetch(e.to_string()),
    }
}

fn no_address(host: &str, why: &str) -> StsProblem {
    StsProblem::Fetch(format!("{host} has no address: {why}"))
}

fn policy(cached: &Cached) -> StsStatus {
    StsStatus::Policy(Arc::new(ActiveSts {
        id: cached.id.clone(),
        policy: cached.policy.clone(),
    }))
}

fn found(status: StsStatus, how: &str) -> StsFound {
    StsFound {
        status,
        how: how.to_owned(),
    }
}

/// Why there is no policy, for people.
fn no_policy(txt: &TxtAnswer, cached: Option<&Cached>) -> String {
    let expired = if cached.is_some() {
        " (the cached one expired)"
    } else {
        ""
    };
    match txt {
        TxtAnswer::NoRecord => format!("no policy: no _mta-sts TXT record{expired}"),
        TxtAnswer::Failed => format!("no policy: the _mta-sts TXT lookup failed{expired}"),
        TxtAnswer::Record(_) => format!("no policy{expired}"),
    }
}

/// When a cached policy was fetched and until when it holds.
fn ages(cached: &Cached, now: SystemTime) -> String {
    let age = now
        .duration_since(cached.fetched)
        .map_or(0, |d| d.as_secs());
    format!("fetched {age}s ago, expires {}", utc(cached.expires))
}

fn utc(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
