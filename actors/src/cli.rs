//! The `postman` command line (clap): `run` and `check-config`. Thin glue:
//! settings come from the core's config module, the work from the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use postman::config::{self, ConfigFile, Flags};
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
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postman: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CheckConfig { settings } => {
            let loaded = settings.load()?;
            let text = toml::to_string_pretty(&loaded.settings)
                .context("cannot render the settings as TOML")?;
            print!("{text}");
            Ok(())
        }
        Command::Run { settings, once } => {
            let loaded = settings.load()?;
            let config = loaded.config;
            let signals = crate::daemon::block_signals()?;
            let (log, guard, log_control) =
                crate::logging::start(config.log_format, config.debug, config.log_file.as_deref())?;
            let log = log.new(o!("pid" => std::process::id()));
            let runtime = crate::daemon::Runtime {
                signals,
                log_control,
                settings: loaded.settings,
                reload: Box::new(move || settings.load()),
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
    }
}

/// The machine's name, the default for `application.hostname`.
fn system_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
