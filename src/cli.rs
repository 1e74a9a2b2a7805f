//! The command line: `run` (the default), `check`, `setup`, `demo`, `tail`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::CliOverrides;

/// Live Socket.IO events for a Strapi site, read from its PostgreSQL through logical
/// replication. No code inside Strapi.
#[derive(Debug, Parser)]
#[command(name = "strapi-io-bridge", version, about, long_about = None)]
pub struct Cli {
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Options of `run` when no subcommand is given.
    #[command(flatten)]
    pub common: Common,
}

/// Options every subcommand takes.
#[derive(Debug, Clone, Args, Default)]
pub struct Common {
    /// Configuration file (TOML). Missing is fine unless given explicitly.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// A Strapi project folder: read its `.env` (DATABASE_*, JWT_SECRET, API_TOKEN_SALT) so no
    /// secret has to be copied into config.toml.
    #[arg(long, global = true, value_name = "PATH")]
    pub strapi_dir: Option<PathBuf>,

    /// PostgreSQL URL; wins over DATABASE_URL and config.toml.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// Listen address for Socket.IO, health and metrics (overrides server.listen).
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Which content types emit events: '*' or a comma-separated list of singular names or
    /// uids (overrides content_types).
    #[arg(long, global = true, value_name = "LIST")]
    pub content_types: Option<String>,
}

impl Common {
    /// The configuration file and whether it must exist (it must when named explicitly).
    pub fn config_path(&self) -> (PathBuf, bool) {
        match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from("config.toml"), false),
        }
    }

    /// The flags that override configuration.
    pub fn overrides(&self) -> CliOverrides {
        CliOverrides {
            listen: self.listen.clone(),
            content_types: self.content_types.clone(),
            database_url: self.database_url.clone(),
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream changes and serve Socket.IO (the default).
    Run,
    /// Check the database and configuration; exit 0 only when the bridge can run.
    Check,
    /// Create the publication and set replica identities (idempotent).
    Setup {
        /// Print the SQL instead of running it (for a DBA or a superuser session).
        #[arg(long)]
        print: bool,
    },
    /// Start a throwaway PostgreSQL with a small Strapi-shaped database, the bridge on it, and
    /// a writer that changes something every two seconds. Ctrl-C removes everything. Needs
    /// PostgreSQL's server programs (`apt install postgresql` or `brew install postgresql`).
    Demo {
        /// Seconds between demo writes.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        /// Keep the cluster folder after exit (for inspection).
        #[arg(long)]
        keep: bool,
        /// Which Strapi's database to show: 5 (documents, the default) or 4.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(4..=5))]
        strapi: u8,
    },
    /// Print the committed changes the bridge decodes, one JSON line each, confirming each
    /// transaction after it is printed (for debugging a database). Password hashes, tokens,
    /// key hashes and private attributes are masked.
    Tail {
        /// Print secret and private columns as they are.
        #[arg(long)]
        show_secrets: bool,
    },
}

/// Exit status when the configuration is wrong (nothing was started).
pub const EXIT_CONFIG: u8 = 2;
/// Exit status when the bridge stopped on an error, or `check` found one.
pub const EXIT_FAILURE: u8 = 1;

/// Runs the command; returns the process exit status.
pub async fn execute(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    use std::process::ExitCode;

    use anyhow::Context;

    let common = cli.common.clone();
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::Demo {
        interval,
        keep,
        strapi,
    } = command
    {
        let flavor = if strapi == 4 {
            crate::demo::Flavor::Strapi4
        } else {
            crate::demo::Flavor::Strapi5
        };
        return crate::demo::run(&common, interval, keep, flavor).await;
    }
    let (path, required) = common.config_path();
    let cfg = match crate::config::Config::load(
        &path,
        required,
        common.strapi_dir.as_deref(),
        common.overrides(),
    ) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    match command {
        Command::Run => {
            let listener = tokio::net::TcpListener::bind(cfg.server.listen)
                .await
                .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
            let shutdown = crate::shutdown::on_signal();
            crate::pipeline::run(cfg, listener, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => {
            let report = crate::check::check(&cfg).await;
            println!("{report}");
            Ok(if report.can_run() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILURE)
            })
        }
        Command::Setup { print } => {
            if print {
                print!("{}", crate::check::setup_sql(&cfg));
                return Ok(ExitCode::SUCCESS);
            }
            let notices = crate::check::setup(&cfg).await?;
            if notices.is_empty() {
                println!(
                    "publication {} and replica identities were already set up; nothing changed",
                    cfg.database.publication
                );
            } else {
                for n in notices {
                    println!("{n}");
                }
            }
            println!("next: strapi-io-bridge check");
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail { show_secrets } => {
            let shutdown = crate::shutdown::on_signal();
            crate::tail::run(cfg, show_secrets, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { .. } => unreachable_demo(),
    }
}

fn unreachable_demo() -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("demo is handled before configuration is loaded")
}
