//! PostgreSQL plumbing shared by the stages: TLS per `sslmode` and ordinary SQL connections.
//!
//! Receives a [`DatabaseConfig`]; hands on a connected `tokio_postgres::Client` whose
//! connection task runs in the background, and the [`TlsPolicy`] the replication client uses
//! for its own connection. Errors say what failed and what to change. It never logs the
//! password and never retries: callers decide.
//!
//! No SQL session can hang the bridge: connecting gives up after a connect timeout, TCP
//! keepalives and a TCP user timeout notice a peer that vanished, and every session runs with
//! `statement_timeout` and `lock_timeout`. Each default below applies unless the URL sets the
//! same libpq parameter (`connect_timeout`, `keepalives_idle`, `keepalives_interval`,
//! `keepalives_count`, `tcp_user_timeout`, or `options=-c statement_timeout=…`).

pub mod tls;

use std::error::Error as _;
use std::io;
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;

use crate::config::{DatabaseConfig, SslMode};
pub use tls::{MakeRustlsConnect, MaybeTls, TlsError, TlsPolicy};

/// An SQL identifier in double quotes, inner quotes doubled (`my "table"` → `"my ""table"""`).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal; backslashes make it an `E''` literal so its meaning never depends on
/// `standard_conforming_strings` (as libpq's `PQescapeLiteral`).
pub fn quote_literal(value: &str) -> String {
    let quoted = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// What PostgreSQL sees as `application_name` when the URL sets none.
pub const APPLICATION_NAME: &str = "strapi-io-bridge";

/// Connecting (TCP, TLS, login) gives up after this, as libpq's `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle connection is probed after this (the kernel's default is two hours, longer than
/// the idle timeout of most NATs and load balancers).
pub const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(30);
/// Between keepalive probes.
pub const DEFAULT_KEEPALIVES_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the connection counts as dead.
pub const DEFAULT_KEEPALIVES_RETRIES: u32 = 3;
/// Sent data unacknowledged for this long ends the connection (instead of the kernel's
/// retransmissions, about 15 minutes).
pub const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// `statement_timeout` of the bridge's sessions: its queries read catalogs, a row or the ids of
/// one table's published entries.
pub const DEFAULT_STATEMENT_TIMEOUT: &str = "60s";
/// `lock_timeout` of the bridge's sessions: a read waits this long behind a lock Strapi holds
/// (a migration's `ALTER TABLE`), then fails instead of stalling every event.
pub const DEFAULT_LOCK_TIMEOUT: &str = "10s";

/// tokio-postgres' keepalive idle time when the URL sets none.
const DRIVER_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// Connecting for ordinary SQL failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The TLS settings are unusable (for instance an unreadable `sslrootcert`).
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// Connecting took longer than the connect timeout.
    #[error(
        "cannot connect to PostgreSQL at {target}: no answer within {after:?} (is the host \
         reachable and PostgreSQL running? connect_timeout=<seconds> in the URL changes the wait)"
    )]
    Timeout {
        /// `user@host:port/dbname` (never the password).
        target: String,
        /// The connect timeout.
        after: Duration,
    },
    /// PostgreSQL could not be reached, refused the login, or the session failed to start.
    #[error("cannot connect to PostgreSQL at {target}: {message}")]
    Connect {
        /// `user@host:port/dbname` (never the password).
        target: String,
        /// What went wrong and what to change.
        message: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl PgError {
    /// The SQLSTATE the server sent, if the failure came from the server.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            PgError::Connect { source, .. } => source.code(),
            PgError::Tls(_) | PgError::Timeout { .. } => None,
        }
    }
}

/// Whether every configured host is a Unix-domain socket directory (no TLS there, as libpq).
pub(crate) fn unix_only(db: &DatabaseConfig) -> bool {
    let hosts = db.pg.get_hosts();
    !hosts.is_empty() && hosts.iter().all(|h| matches!(h, Host::Unix(_)))
}

/// Opens an ordinary SQL session with TLS per `sslmode`, spawns its connection task (which logs
/// how it ended) and returns the client.
pub async fn connect(db: &DatabaseConfig) -> Result<tokio_postgres::Client, PgError> {
    connect_inner(db, None).await
}

/// Like [`connect`], and also collects the NOTICE messages the server sends (what `setup`
/// reports it did). The returned future resolves to them once the client is dropped and the
/// connection has closed.
pub async fn connect_with_notices(
    db: &DatabaseConfig,
) -> Result<
    (
        tokio_postgres::Client,
        impl std::future::Future<Output = Vec<String>>,
    ),
    PgError,
> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let client = connect_inner(db, Some(tx)).await?;
    Ok((client, async move { rx.await.unwrap_or_default() }))
}

/// The connection parameters with the bridge's defaults for what the URL leaves unset: the
/// application name, the connect timeout, TCP keepalives and the TCP user timeout.
pub fn session_config(db: &DatabaseConfig) -> tokio_postgres::Config {
    let mut config = db.pg.clone();
    if config.get_application_name().is_none() {
        config.application_name(APPLICATION_NAME);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if config.get_keepalives() {
        if config.get_keepalives_idle() == DRIVER_KEEPALIVES_IDLE {
            config.keepalives_idle(DEFAULT_KEEPALIVES_IDLE);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(DEFAULT_KEEPALIVES_INTERVAL);
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(DEFAULT_KEEPALIVES_RETRIES);
        }
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(DEFAULT_TCP_USER_TIMEOUT);
    }
    config
}

/// The `SET`s that give a session the default timeouts the URL's `options` do not set.
fn session_settings(config: &tokio_postgres::Config) -> String {
    let given = config.get_options().unwrap_or("");
    [
        ("statement_timeout", DEFAULT_STATEMENT_TIMEOUT),
        ("lock_timeout", DEFAULT_LOCK_TIMEOUT),
    ]
    .iter()
    .filter(|(name, _)| !given.contains(name))
    .map(|(name, value)| format!("SET {name} = '{value}';"))
    .collect::<Vec<_>>()
    .join(" ")
}

async fn connect_inner(
    db: &DatabaseConfig,
    notices: Option<tokio::sync::oneshot::Sender<Vec<String>>>,
) -> Result<tokio_postgres::Client, PgError> {
    let mut config = session_config(db);
    let target = db.display_target();
    let policy = TlsPolicy::new(effective_mode(db), db.ssl_root_cert.as_deref())?;
    let fail = |source: tokio_postgres::Error| PgError::Connect {
        target: target.clone(),
        message: explain_driver_error(&source, db),
        source,
    };
    // tokio-postgres' own timeout covers the TCP connect only; this one covers TLS and the
    // login too, as libpq's.
    let after = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let timed_out = || PgError::Timeout {
        target: target.clone(),
        after,
    };
    let client = match policy.make_tls_connect() {
        None => {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, connection) =
                tokio::time::timeout(after, config.connect(tokio_postgres::NoTls))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(fail)?;
            spawn_connection(connection, target.clone(), notices);
            client
        }
        Some(tls) => {
            config.ssl_mode(if policy.mode() == SslMode::Prefer {
                tokio_postgres::config::SslMode::Prefer
            } else {
                tokio_postgres::config::SslMode::Require
            });
            let (client, connection) = tokio::time::timeout(after, config.connect(tls))
                .await
                .map_err(|_| timed_out())?
                .map_err(fail)?;
            spawn_connection(connection, target.clone(), notices);
            client
        }
    };
    let settings = session_settings(&config);
    if !settings.is_empty() {
        client.batch_execute(&settings).await.map_err(fail)?;
    }
    Ok(client)
}

/// `sslmode`, except that Unix-domain sockets never use TLS.
pub(crate) fn effective_mode(db: &DatabaseConfig) -> SslMode {
    if unix_only(db) {
        SslMode::Disable
    } else {
        db.ssl_mode
    }
}

/// Drives a connection in the background, logging how it ended and, when asked, collecting the
/// server's notices.
fn spawn_connection<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    target: String,
    notices: Option<tokio::sync::oneshot::Sender<Vec<String>>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut collected = Vec::new();
        let ended = loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notice(n))) => {
                    collected.push(n.message().to_owned());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            }
        };
        match ended {
            Ok(()) => tracing::debug!(%target, "PostgreSQL connection closed"),
            Err(e) => tracing::warn!(%target, error = %e, "PostgreSQL connection ended"),
        }
        if let Some(tx) = notices {
            let _ = tx.send(collected);
        }
    });
}

/// Explains a tokio-postgres error: the server's message with a hint, or the network failure.
fn explain_driver_error(err: &tokio_postgres::Error, db: &DatabaseConfig) -> String {
    if let Some(db_err) = err.as_db_error() {
        let base = db_err.message().to_owned();
        return match hint_for_sqlstate(db_err.code().code(), db_err.message(), db) {
            Some(hint) => format!("{base}; {hint}"),
            None => base,
        };
    }
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(io_err) = e.downcast_ref::<io::Error>() {
            return explain_io_error(io_err, db);
        }
        if let Some(tls_err) = e.downcast_ref::<TlsError>() {
            return tls_err.to_string();
        }
        let message = e.to_string();
        if message.contains("server does not support TLS") {
            return TlsError::NotOffered {
                mode: tls::mode_name(db.ssl_mode),
            }
            .to_string();
        }
        text = format!("{text}: {message}");
        source = e.source();
    }
    text
}

/// What to do about an error the server sent while a session starts, by SQLSTATE.
pub(crate) fn hint_for_sqlstate(code: &str, message: &str, db: &DatabaseConfig) -> Option<String> {
    let user = db.pg.get_user().unwrap_or("");
    let dbname = db.pg.get_dbname().unwrap_or("");
    match code {
        // invalid_password
        "28P01" => Some(format!(
            "check the password of user {user:?} in {}",
            db.url_origin
        )),
        // invalid_authorization_specification: pg_hba.conf rejected or has no line
        "28000" if message.contains("pg_hba.conf") => Some(format!(
            "add a line for this client to pg_hba.conf (for example `host {dbname} {user} \
             <client address>/32 scram-sha-256`) and reload PostgreSQL"
        )),
        "28000" => Some(format!("check user {user:?} in {}", db.url_origin)),
        // invalid_catalog_name
        "3D000" => Some(format!(
            "check the database name in {} (Strapi's DATABASE_NAME)",
            db.url_origin
        )),
        // too_many_connections
        "53300" => Some("raise max_connections or close idle sessions".to_owned()),
        // cannot_connect_now: starting up, shutting down, in recovery
        "57P03" => Some("PostgreSQL is starting or stopping; try again shortly".to_owned()),
        // insufficient_privilege while starting a walsender ("permission denied to start WAL
        // sender" from PostgreSQL 16)
        "42501" if message.contains("replication") || message.contains("WAL sender") => {
            Some(format!(
                "grant it with `ALTER ROLE \"{}\" WITH REPLICATION` (as a superuser; on managed \
             services use the provider's replication role)",
                user.replace('"', "\"\"")
            ))
        }
        _ => None,
    }
}

/// Explains a network error with the address it concerned.
pub(crate) fn explain_io_error(err: &io::Error, db: &DatabaseConfig) -> String {
    let port = db.pg.get_ports().first().copied().unwrap_or(5432);
    let host = match db.pg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(dir)) => {
            let socket = dir.join(format!(".s.PGSQL.{port}"));
            return match err.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => format!(
                    "{err}: no PostgreSQL listens on the Unix socket {}; is PostgreSQL running \
                     with unix_socket_directories including {}?",
                    socket.display(),
                    dir.display()
                ),
                _ => format!("{err} (Unix socket {})", socket.display()),
            };
        }
        None => "localhost".to_owned(),
    };
    match err.kind() {
        io::ErrorKind::ConnectionRefused => format!(
            "connection refused: is PostgreSQL running at {host}:{port} and listening on TCP \
             (listen_addresses)?"
        ),
        io::ErrorKind::TimedOut => {
            format!("timed out: is {host}:{port} reachable (firewall, security group)?")
        }
        io::ErrorKind::NotFound => format!("{err}: cannot resolve host name {host:?}"),
        _ => err.to_string(),
    }
}
