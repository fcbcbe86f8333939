//! The `postman` command line (clap): `run` and `check-config`, and the
//! operator commands (`queue`, `enqueue`, `flush`, `hold`, `release`,
//! `delete`, `bounce`, `suspend`, `resume`, `stats`). Thin glue: settings come from the core's
//! config module, the work from the daemon (`crate::daemon`) and the
//! operator commands' crate (`postman_ops`, `actors/ops/`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use postman::config::{self, ConfigFile, Flags};
use postman::queue::admin::SenderParams;
use postman::queue::params::{MsgParams, Notify, Ret};
use slog::o;

#[derive(Parser)]
#[command(name = "postman", version, about = "Outbound SMTP delivery agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Deliver the queue: as a daemon, or with --once until nothing is due.
    Run {
        #[command(flatten)]
        settings: SettingArgs,
        /// Deliver what is due now and exit; deferred mail stays queued.
        #[arg(long)]
        once: bool,
    },
    /// Print the effective settings (defaults < file < POSTMAN_* env < flags).
    CheckConfig {
        #[command(flatten)]
        settings: SettingArgs,
    },
    /// Say where mail to an address would go and how, without sending anything.
    Route {
        #[command(flatten)]
        settings: SettingArgs,
        /// The recipient.
        #[arg(value_name = "ADDRESS")]
        recipient: String,
        /// The sender (per-sender relays); default: the null sender.
        #[arg(long, value_name = "ADDRESS", default_value = "")]
        from: String,
    },
    /// Send the TLS reports (RFC 8460) of a day now: yesterday's (UTC) by default.
    TlsReport {
        #[command(flatten)]
        settings: SettingArgs,
        /// The day, YYYY-MM-DD (UTC).
        #[arg(long, value_name = "YYYY-MM-DD")]
        day: Option<String>,
    },
    /// List the queued messages, oldest first (like mailq), or a summary.
    Queue {
        #[command(flatten)]
        settings: SettingArgs,
        /// list: every message; summary: by site, with connections, limits, rates and holds.
        #[arg(value_enum, default_value_t = QueueView::List)]
        view: QueueView,
        /// With summary: per-domain counts and ages instead (like qshape).
        #[arg(long)]
        by_domain: bool,
        /// Only messages for this destination domain.
        #[arg(long, value_name = "DOMAIN")]
        domain: Option<String>,
        /// One JSON object a line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Queue a message for remote delivery, one queue file per recipient domain.
    Enqueue {
        #[command(flatten)]
        settings: SettingArgs,
        /// Envelope sender; '' or '<>' is the null sender.
        #[arg(long, value_name = "ADDRESS")]
        from: String,
        /// Envelope recipient (repeat for more).
        #[arg(long, value_name = "ADDRESS", required = true)]
        to: Vec<String>,
        #[command(flatten)]
        wishes: SenderArgs,
        /// The message (RFC 5322 headers and body); '-' or none: standard input.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Make deferred messages due now and end the domains' backoff.
    Flush {
        #[command(flatten)]
        settings: SettingArgs,
        /// Only this destination domain.
        #[arg(long, value_name = "DOMAIN")]
        domain: Option<String>,
    },
    /// Put messages on hold: no delivery until released (postsuper -h).
    Hold {
        #[command(flatten)]
        settings: SettingArgs,
        /// domain/name, or a name found in one domain.
        #[arg(value_name = "QUEUE_ID", required = true)]
        ids: Vec<String>,
    },
    /// Release held messages into the queue (postsuper -H).
    Release {
        #[command(flatten)]
        settings: SettingArgs,
        /// domain/name, or a name found in one domain.
        #[arg(value_name = "QUEUE_ID", required = true)]
        ids: Vec<String>,
    },
    /// Delete queued or held messages (postsuper -d).
    Delete {
        #[command(flatten)]
        settings: SettingArgs,
        /// domain/name, or a name found in one domain.
        #[arg(value_name = "QUEUE_ID", required = true)]
        ids: Vec<String>,
    },
    /// Bounce messages to their senders now, then delete them.
    Bounce {
        #[command(flatten)]
        settings: SettingArgs,
        /// domain/name, or a name found in one domain.
        #[arg(value_name = "QUEUE_ID", required = true)]
        ids: Vec<String>,
    },
    /// Suspend delivery to a domain or a site, for a while or until resumed.
    Suspend {
        #[command(flatten)]
        settings: SettingArgs,
        #[command(flatten)]
        target: TargetArgs,
        /// How long: seconds, or with a unit (90, 90s, 15m, 2h, 1d); none: until resume.
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        /// Why, for the log, the deferral records and queue summary.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// End a suspension of a domain or a site.
    Resume {
        #[command(flatten)]
        settings: SettingArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Summarise a JSON log: throughput, deferrals by domain, top errors, metrics.
    Stats {
        /// The log (log.format = "json"); '-' or none: standard input.
        #[arg(value_name = "LOGFILE")]
        log: Option<PathBuf>,
        /// Keep reading the file as it grows and print again (until Ctrl-C).
        #[arg(long, short = 'f')]
        follow: bool,
        /// Seconds between two summaries with --follow.
        #[arg(long, value_name = "SECS", default_value_t = 2)]
        interval: u64,
    },
}

/// What `postman queue` prints.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum QueueView {
    List,
    Summary,
}

/// What `suspend` and `resume` act on: one domain, or every site with an
/// MX host name under a suffix.
#[derive(Args, Clone)]
#[group(required = true, multiple = false)]
struct TargetArgs {
    /// A destination domain.
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
    /// Every site with an MX host under this suffix (google.com: aspmx.l.google.com, …),
    /// matched as [delivery.site."<suffix>"] rules match.
    #[arg(long, value_name = "SUFFIX")]
    site: Option<String>,
}

impl TargetArgs {
    fn given(&self) -> postman_ops::control::Given<'_> {
        use postman_ops::control::Given;
        match (&self.domain, &self.site) {
            (Some(domain), _) => Given::Domain(domain),
            (None, Some(site)) => Given::Site(site),
            // clap's group requires one of them.
            (None, None) => Given::Domain(""),
        }
    }
}

/// What the sender asks of the delivery of an enqueued message, as
/// sendmail's `-N`, `-R` and `-V` (RFC 3461 DSN) and RFC 8689 REQUIRETLS.
/// Each value is checked by the queue format's own parser.
#[derive(Args)]
struct SenderArgs {
    /// Delivery notices wanted for every recipient: never, or a comma list of success, failure, delay (sendmail -N) [default: failure and delay].
    #[arg(long, value_name = "WHEN", value_parser = notify_arg)]
    notify: Option<Notify>,
    /// What a failure notice returns of the message: full or hdrs (sendmail -R) [default: hdrs].
    #[arg(long, value_name = "full|hdrs", value_parser = ret_arg)]
    ret: Option<Ret>,
    /// An envelope id for the notices to quote, as plain text; postman xtext-encodes it (sendmail -V).
    #[arg(long, value_name = "TEXT", value_parser = envid_arg)]
    envid: Option<String>,
    /// Deliver only over TLS with a verified certificate, to servers that promise the same (RFC 8689); else the message bounces.
    #[arg(long)]
    requiretls: bool,
}

impl SenderArgs {
    fn params(self) -> SenderParams {
        SenderParams {
            message: MsgParams {
                ret: self.ret,
                envid: self.envid,
                requiretls: self.requiretls,
            },
            notify: self.notify,
        }
    }
}

fn notify_arg(value: &str) -> Result<Notify, String> {
    Notify::parse(value).map_err(|e| format!("{e} (for example never, or success,failure)"))
}

fn ret_arg(value: &str) -> Result<Ret, String> {
    Ret::parse(value).map_err(|_| "expected full or hdrs".to_owned())
}

fn envid_arg(value: &str) -> Result<String, String> {
    MsgParams::envid_from_text(value).map_err(str::to_owned)
}

/// Flags shared by every command that reads the settings; each overrides
/// the key named in its help.
#[derive(Args, Clone)]
struct SettingArgs {
    /// Settings file [default: config/postman.toml, if it exists].
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// application.maildir.path
    #[arg(long, value_name = "PATH")]
    maildir: Option<PathBuf>,
    /// application.threads
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// application.server_port
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// application.hostname
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// application.debug
    #[arg(long)]
    debug: bool,
}

impl SettingArgs {
    fn load(&self) -> anyhow::Result<config::Loaded> {
        let file = match &self.config {
            Some(path) => ConfigFile::Named(path.clone()),
            None => ConfigFile::Default,
        };
        let flags = Flags {
            maildir: self.maildir.clone(),
            threads: self.threads,
            server_port: self.port,
            hostname: self.hostname.clone(),
            debug: self.debug.then_some(true),
        };
        Ok(config::load(&file, &flags, &system_hostname())?)
    }

    /// [`SettingArgs::load`], then what the routing table refers to
    /// (`egress::prepare`): for the commands that deliver or check.
    fn load_for_delivery(&self) -> anyhow::Result<config::Loaded> {
        let mut loaded = self.load()?;
        crate::egress::prepare(&mut loaded.config)?;
        Ok(loaded)
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "postman: {}",
                postman::terminal::for_terminal(&format!("{e:#}"))
            );
            ExitCode::FAILURE
        }
    }
}

/// How each site is treated, after the settings: the `[delivery]` defaults,
/// then each rule with its unset keys filled in, in the order they are
/// tried. As TOML comments, so the output stays a settings file.
fn describe_sites(sites: &config::SiteRules) -> String {
    let mut out = String::from(
        "\n# Sites, as validated: a site no rule matches, then each rule in the order\n\
         # they are tried (the longest suffix first), keys it leaves out filled in.\n",
    );
    out.push_str(&format!("# (defaults) {}\n", sites.defaults()));
    for rule in sites.rules() {
        let suffix = rule.rule.as_deref().unwrap_or_default();
        out.push_str(&format!("# {suffix:?} {rule}\n"));
    }
    out
}

/// The routing table after validation, one entry a line in the order they
/// are tried, as TOML comments. `password_file` is a path: the passwords
/// themselves are never printed.
fn describe_routing(routing: &postman::routing::Routing) -> String {
    let mut out = String::from(
        "\n# Routing, as validated, in the order it is tried: transport entries\n\
         # (exact domain, then the closest .parent), the relay host, MX delivery,\n\
         # then the fallback relays behind MX delivery.\n",
    );
    let entry = |name: &str, hop: &postman::routing::Hop| {
        let login = routing
            .credentials_for(hop)
            .map_or_else(String::new, |c| format!(" (AUTH as {})", c.user));
        format!(
            "# {name} → {}{}{login}\n",
            hop.describe(),
            hop.site_suffix()
        )
    };
    for (pattern, hop) in &routing.transport {
        out.push_str(&entry(&format!("transport {:?}", pattern.to_string()), hop));
    }
    match &routing.relayhost {
        Some(hop) => out.push_str(&entry("relayhost", hop)),
        None => out.push_str(&entry("(every other domain)", &routing.mx)),
    }
    for hop in &routing.fallback {
        out.push_str(&entry("fallback_relay", hop));
    }
    out
}

fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CheckConfig { settings } => check_config(&settings),
        Command::Run { settings, once } => run_daemon(settings, once),
        Command::Route {
            settings,
            recipient,
            from,
        } => crate::explain::route(&settings.load_for_delivery()?.config, &recipient, &from),
        Command::TlsReport { settings, day } => {
            let config = settings.load_for_delivery()?.config;
            let log = slog::Logger::root(slog::Discard, slog::o!());
            let out = crate::reporter::send_now(&config, day.as_deref(), &log)?;
            print!("{out}");
            Ok(())
        }
        Command::Queue {
            settings,
            view,
            by_domain,
            domain,
            json,
        } => {
            let view = queue_view(view, by_domain)?;
            postman_ops::queue(&settings.load()?.config, view, domain.as_deref(), json)
        }
        Command::Enqueue {
            settings,
            from,
            to,
            wishes,
            file,
        } => postman_ops::enqueue(
            &settings.load()?.config,
            &from,
            &to,
            &wishes.params(),
            file.as_deref(),
        ),
        Command::Flush { settings, domain } => {
            postman_ops::flush(&settings.load()?.config, domain.as_deref())
        }
        Command::Hold { settings, ids } => postman_ops::hold(&settings.load()?.config, &ids),
        Command::Release { settings, ids } => postman_ops::release(&settings.load()?.config, &ids),
        Command::Delete { settings, ids } => postman_ops::delete(&settings.load()?.config, &ids),
        Command::Bounce { settings, ids } => postman_ops::bounce(&settings.load()?.config, &ids),
        Command::Suspend {
            settings,
            target,
            duration,
            reason,
        } => postman_ops::control::suspend(
            &settings.load()?.config,
            target.given(),
            duration.as_deref(),
            reason.as_deref(),
        ),
        Command::Resume { settings, target } => {
            postman_ops::control::resume(&settings.load()?.config, target.given())
        }
        Command::Stats {
            log,
            follow,
            interval,
        } => postman_ops::stats(&postman_ops::StatsOptions {
            input: log,
            follow,
            interval: std::time::Duration::from_secs(interval.max(1)),
        }),
    }
}

/// `postman check-config`: the settings in force, then the site rules.
fn check_config(settings: &SettingArgs) -> anyhow::Result<()> {
    let loaded = settings.load_for_delivery()?;
    let text =
        toml::to_string_pretty(&loaded.settings).context("cannot render the settings as TOML")?;
    print!("{text}");
    print!("{}", describe_sites(&loaded.config.sites));
    print!("{}", describe_routing(&loaded.config.routing));
    Ok(())
}

/// `postman run`: the daemon, or one pass with `--once`.
fn run_daemon(settings: SettingArgs, once: bool) -> anyhow::Result<()> {
    let loaded = settings.load_for_delivery()?;
    let config = loaded.config;
    // Before the logger's thread, the first after this one.
    let descriptors = crate::descriptors::prepare();
    let signals = crate::daemon::block_signals()?;
    let (log, guard, log_control) =
        crate::logging::start(config.log_format, config.debug, config.log_file.as_deref())?;
    let log = log.new(o!("pid" => std::process::id()));
    let runtime = crate::daemon::Runtime {
        signals,
        descriptors,
        log_control,
        settings: loaded.settings,
        reload: Box::new(move || settings.load_for_delivery()),
    };
    let result = crate::daemon::run(config, once, runtime, &log);
    if let Err(e) = &result {
        slog::error!(log, "postman cannot work"; "error" => format!("{e:#}"));
    }
    drop(log);
    // Flush every record before the process exits.
    drop(guard);
    result
}

/// What `postman queue` shows.
fn queue_view(view: QueueView, by_domain: bool) -> anyhow::Result<postman_ops::listing::View> {
    use postman_ops::listing::View;
    Ok(match (view, by_domain) {
        (QueueView::List, false) => View::List,
        (QueueView::List, true) => anyhow::bail!("--by-domain goes with queue summary"),
        (QueueView::Summary, false) => View::Summary,
        (QueueView::Summary, true) => View::DomainSummary,
    })
}

/// The machine's name, the default for `application.hostname`.
fn system_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
