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
    /// a writer that changes something every two seconds. Ctrl-C removes everything.
    Demo {
        /// Seconds between demo writes.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        /// Keep the cluster folder after exit (for inspection).
        #[arg(long)]
        keep: bool,
    },
    /// Print the committed changes the bridge decodes, one JSON line each, confirming each
    /// transaction after it is printed (for debugging a database).
    Tail,
}
