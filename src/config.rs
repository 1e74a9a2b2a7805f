//! Configuration: `config.toml`, the environment, a Strapi project's `.env`, and flags.
//!
//! Two phases. [`RawConfig`] mirrors `config.toml` (unknown keys and wrong types are errors that
//! name the key and the line). [`Config::resolve`] then applies, per setting, the precedence
//! *command-line flags > process environment > the Strapi folder's `.env` > `config.toml` >
//! defaults*, validates, and converts into typed sections, one per stage. Secrets live in
//! [`Secret`], whose `Debug` and `Display` never show the value.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

mod api_js;
pub use api_js::ApiPrivateAttributes;

/// Default database URL: Strapi's own defaults for a PostgreSQL project.
pub const DEFAULT_DATABASE_URL: &str = "postgres://strapi:strapi@127.0.0.1:5432/strapi";
/// Default replication slot name.
pub const DEFAULT_SLOT: &str = "strapi_io";
/// Default publication name.
pub const DEFAULT_PUBLICATION: &str = "strapi_io";
/// Strapi's tables live in `public` unless `DATABASE_SCHEMA` says otherwise.
pub const DEFAULT_SCHEMA: &str = "public";
/// Next to Strapi's 1337, so both can run on one host.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:1338";
/// socket.io's default path.
pub const DEFAULT_IO_PATH: &str = "/socket.io";
/// socket.io 4's default `pingInterval`.
pub const DEFAULT_PING_INTERVAL_MS: u64 = 25_000;
/// socket.io 4's default `pingTimeout`.
pub const DEFAULT_PING_TIMEOUT_MS: u64 = 20_000;
/// socket.io 4's default `connectTimeout`.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 45_000;
/// socket.io 4's default `maxHttpBufferSize` (1 MB).
pub const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 1_000_000;
/// Slots of a socket's send channel (socketioxide's `max_buffer_size`). A socket whose
/// unwritten events would fill it (less a reserve for its heartbeat) falls behind and is fed
/// from the replay buffer as it drains.
pub const DEFAULT_MAX_BUFFERED_EVENTS: usize = 4096;
/// Bytes of events queued for one socket and not yet written, at most (plus one event). It
/// bounds what a socket's writer batches into one write, and so the WebSocket write buffer,
/// which keeps the largest size it reached for the socket's life.
pub const DEFAULT_MAX_BUFFERED_BYTES: u64 = 16 * 1024;
/// The users-permissions public role's name, as the plugin's `publicRoleName` default.
pub const DEFAULT_PUBLIC_ROLE_NAME: &str = "Public";
/// The `pg_logical_emit_message` prefix the bridge listens to.
pub const DEFAULT_MESSAGE_PREFIX: &str = "strapi_io";
/// How long a webhook handler may take before the client's ack carries an error.
pub const DEFAULT_WEBHOOK_TIMEOUT_MS: u64 = 5_000;
/// Client events with a handler one socket may send per second, on average. A person types,
/// clicks and scrolls at well under this rate; a script looping `emit` is held to it.
pub const DEFAULT_CLIENT_EVENTS_PER_SECOND: u32 = 10;
/// Client events one socket may send in a burst above the rate (a page that sends a few at
/// load).
pub const DEFAULT_CLIENT_EVENTS_BURST: u32 = 20;

/// Default `[io] max_subscriptions_per_socket`: a page following a list of entries, with room
/// to spare; each subscription is a room the socket is in.
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_SOCKET: usize = 100;
/// Webhook calls in flight at once over all sockets; more are refused at once (the ack says
/// so) instead of queuing without bound in front of Strapi.
pub const DEFAULT_WEBHOOK_MAX_IN_FLIGHT: usize = 64;
/// The largest webhook answer read, in bytes; it becomes an acknowledgement a client receives,
/// so it is held to the size a client may send (`io.max_payload_bytes`' default).
pub const DEFAULT_WEBHOOK_MAX_RESPONSE_BYTES: usize = 1_000_000;
/// The shortest webhook secret accepted: 16 bytes leaves no room for guessing.
pub const MIN_WEBHOOK_SECRET_BYTES: usize = 16;
/// Largest event payload sent whole (1 MiB). Above it a data event goes out with its id only
/// and `"truncated": true` in `meta`: a Strapi entry's scalar fields rarely come near it, while
/// a pasted base64 image in rich text would otherwise be copied into every socket's queue.
pub const DEFAULT_MAX_EVENT_BYTES: u64 = 1024 * 1024;

/// The event actions a data change can produce (Strapi v4 semantics).
pub const DATA_ACTIONS: [&str; 6] = [
    "create",
    "update",
    "delete",
    "publish",
    "unpublish",
    "createOrUpdate",
];

/// The read actions a content type's `content_types` entry may list: events of GET requests
/// through the reverse proxy (`[proxy]`).
pub const READ_ACTIONS: [&str; 2] = ["find", "findOne"];

/// Strapi's REST prefix (`api.rest.prefix` in Strapi's `config/api.js`).
pub const DEFAULT_PROXY_API_PREFIX: &str = "/api";

/// A configuration problem, said so that the reader knows what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key, or a value of the wrong type.
    #[error("{path}, line {line}: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// The parser's message (names the key).
        message: String,
    },
    /// A value has the right type but is not acceptable.
    #[error("{key}: {message}")]
    Invalid {
        /// The setting, as written in `config.toml` (`database.url`) or its variable name.
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A secret value: shown as `[redacted]` by `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where it is used (signing, hashing, comparing).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

// ---------------------------------------------------------------------------------------------
// Raw: mirrors config.toml
// ---------------------------------------------------------------------------------------------

/// `config.toml` as written. Every section is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[database]`
    #[serde(default)]
    pub database: RawDatabase,
    /// `[server]`
    #[serde(default)]
    pub server: RawServer,
    /// `[io]`
    #[serde(default)]
    pub io: RawIo,
    /// `[auth]`
    #[serde(default)]
    pub auth: RawAuth,
    /// `content_types = "*"` or `[content_types]`
    pub content_types: Option<RawContentTypes>,
    /// `[messages]`
    #[serde(default)]
    pub messages: RawMessages,
    /// `[admin]`
    #[serde(default)]
    pub admin: RawAdmin,
    /// `[[events]]`
    #[serde(default)]
    pub events: Vec<RawEvent>,
    /// `[delivery]`
    #[serde(default)]
    pub delivery: RawDelivery,
    /// `[strapi]`
    #[serde(default)]
    pub strapi: RawStrapi,
    /// `[proxy]`
    #[serde(default)]
    pub proxy: RawProxy,
    /// `[webhooks]`
    #[serde(default)]
    pub webhooks: RawWebhooks,
    /// `[metrics]`
    #[serde(default)]
    pub metrics: RawMetrics,
}

/// `[webhooks]`: what every webhook handler shares.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhooks {
    /// HMAC key of `X-Strapi-IO-Signature`; `STRAPI_IO_WEBHOOK_SECRET` overrides.
    pub secret: Option<String>,
    /// Calls in flight at once, over all sockets.
    pub max_in_flight: Option<usize>,
    /// Largest answer read, in bytes.
    pub max_response_bytes: Option<usize>,
}

/// `[metrics]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `"public"`, `"admin"` or `"off"`.
    pub access: Option<String>,
}

/// `[delivery]`: the replay window.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    /// How long emitted events stay replayable, like `"2m"`.
    pub replay_window: Option<String>,
    /// How many bytes of events stay replayable at most, like `"64MiB"`.
    pub replay_max_bytes: Option<String>,
}

/// `[strapi]`: what Strapi keeps in code rather than in the database.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStrapi {
    /// Strapi's `config/api.js` `responses.privateAttributes`.
    pub private_attributes: Option<Vec<String>>,
}

/// `[proxy]`: the reverse proxy in front of Strapi.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    /// Strapi's base URL (`http://127.0.0.1:1337`); the proxy is off without it.
    pub upstream: Option<String>,
    /// Strapi's REST prefix.
    pub api_prefix: Option<String>,
}

/// `[database]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    /// PostgreSQL URL; `DATABASE_URL` overrides.
    pub url: Option<String>,
    /// Replication slot name.
    pub slot: Option<String>,
    /// Publication name.
    pub publication: Option<String>,
    /// Schema of Strapi's tables; `DATABASE_SCHEMA` overrides.
    pub schema: Option<String>,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Listen address; `--listen` overrides.
    pub listen: Option<String>,
}

/// `[io]`, the plugin's `IOServerOptions`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIo {
    /// Socket.IO path.
    pub path: Option<String>,
    /// `pingInterval`.
    pub ping_interval_ms: Option<u64>,
    /// `pingTimeout`.
    pub ping_timeout_ms: Option<u64>,
    /// `connectTimeout`.
    pub connect_timeout_ms: Option<u64>,
    /// `maxHttpBufferSize`.
    pub max_payload_bytes: Option<u64>,
    /// Events queued per socket before it is fed from the replay buffer instead.
    pub max_buffered_events: Option<usize>,
    /// Unwritten bytes queued per socket before it is fed from the replay buffer instead.
    pub max_buffered_bytes: Option<u64>,
    /// Largest payload sent whole; larger data events go out with the id only.
    pub max_event_bytes: Option<u64>,
    /// Allowed transports.
    pub transports: Option<Vec<String>>,
    /// `[io.cors]`
    pub cors: Option<RawCors>,
    /// Rooms clients may join and leave themselves (`join-room` / `leave-room`).
    pub joinable_rooms: Option<Vec<String>>,
    /// Largest WebSocket message a client may send, in bytes.
    pub ws_max_message_bytes: Option<usize>,
    /// Largest WebSocket frame a client may send, in bytes.
    pub ws_max_frame_bytes: Option<usize>,
    /// Client events with a handler per socket and second.
    pub client_events_per_second: Option<u32>,
    /// Client events per socket allowed in a burst.
    pub client_events_burst: Option<u32>,
    /// Subscriptions one socket may hold.
    pub max_subscriptions_per_socket: Option<usize>,
}

/// `[io.cors]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// `"*"` or a list of origins.
    pub origin: Option<StringOrList>,
    /// Allowed methods.
    pub methods: Option<Vec<String>>,
    /// `Access-Control-Allow-Credentials`.
    pub credentials: Option<bool>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum StringOrList {
    /// One string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl StringOrList {
    fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s],
            StringOrList::Many(v) => v,
        }
    }
}

/// `[auth]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Room and role of sockets without a token.
    pub public_role_name: Option<String>,
    /// `"read"` or `"action"`.
    pub permission_mode: Option<String>,
    /// `"refresh"` or `"legacy-support"` (Strapi 5's users-permissions `jwtManagement`).
    pub jwt_management: Option<String>,
    /// For local use; `JWT_SECRET` overrides.
    pub jwt_secret: Option<String>,
    /// For local use; `API_TOKEN_SALT` overrides.
    pub api_token_salt: Option<String>,
}

/// `content_types = "*"` or a table of content type → `"*"` or a list of actions.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawContentTypes {
    /// `"*"`
    All(String),
    /// `[content_types]`
    Some(BTreeMap<String, StringOrList>),
}

/// `[messages]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMessages {
    /// The `pg_logical_emit_message` prefix to listen to.
    pub prefix: Option<String>,
    /// Whether a message may carry a data action (`create`, `update`, …).
    pub allow_data_actions: Option<bool>,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Bearer token of `POST /io/emit` and `/io/raw`; `STRAPI_IO_ADMIN_TOKEN` overrides.
    pub token: Option<String>,
}

/// One `[[events]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvent {
    /// `connection`, `disconnect`, or a client event name.
    pub name: Option<String>,
    /// `log`, `relay` or `webhook`.
    pub handler: Option<String>,
    /// `relay`: where to relay instead of the sender's rooms.
    pub rooms: Option<Vec<String>>,
    /// `webhook`: where to POST.
    pub url: Option<String>,
    /// `webhook`: how long to wait.
    pub timeout_ms: Option<u64>,
}

impl RawConfig {
    /// Parses TOML text; errors name the key and the line.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| {
                    text.as_bytes()[..span.start.min(text.len())]
                        .iter()
                        .filter(|&&b| b == b'\n')
                        .count()
                        + 1
                })
                .unwrap_or(1);
            // The first line of toml's message repeats the position; keep the explanation.
            let message = e.message().trim().to_owned();
            ConfigError::Toml {
                path: path.to_owned(),
                line,
                message,
            }
        })
    }

    /// Reads and parses a file. A missing file is an error only when `required`.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(RawConfig::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sources other than the file
// ---------------------------------------------------------------------------------------------

/// Settings given on the command line; they win over everything else.
#[derive(Debug, Default, Clone)]
pub struct CliOverrides {
    /// `--listen`
    pub listen: Option<String>,
    /// `--content-types '*'` or `--content-types message,chat`
    pub content_types: Option<String>,
    /// `--database-url`
    pub database_url: Option<String>,
}

/// Environment variables, from the process or from a Strapi project's `.env`.
#[derive(Debug, Default, Clone)]
pub struct EnvVars {
    vars: HashMap<String, String>,
    origin: String,
}

impl EnvVars {
    /// Variables with a description of where they came from (used in messages).
    pub fn new(vars: HashMap<String, String>, origin: impl Into<String>) -> Self {
        EnvVars {
            vars,
            origin: origin.into(),
        }
    }

    /// The process environment.
    pub fn from_process() -> Self {
        Self::new(std::env::vars().collect(), "the environment")
    }

    /// Parses a `.env` file the way Strapi (dotenv) reads it: `KEY=value` lines, `#` comments,
    /// optional `export `, values optionally in single or double quotes.
    pub fn parse_dotenv(text: &str, origin: impl Into<String>) -> Self {
        let mut vars = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let key = key.trim();
            let mut value = value.trim();
            if value.len() >= 2
                && ((value.starts_with('"') && value.ends_with('"'))
                    || (value.starts_with('\'') && value.ends_with('\'')))
            {
                value = &value[1..value.len() - 1];
            } else if let Some(i) = value.find(" #") {
                value = value[..i].trim_end();
            }
            let value = if line.contains("=\"") {
                value.replace("\\n", "\n")
            } else {
                value.to_owned()
            };
            vars.insert(key.to_owned(), value);
        }
        EnvVars::new(vars, origin)
    }

    /// Reads `<dir>/.env`.
    pub fn load_strapi_dir(dir: &Path) -> Result<Self, ConfigError> {
        let path = dir.join(".env");
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(Self::parse_dotenv(&text, path.display().to_string()))
    }

    /// A non-empty variable.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Where these variables came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// Everything [`Config::resolve`] reads, in precedence order.
#[derive(Debug, Default)]
pub struct Sources {
    /// Command-line flags.
    pub cli: CliOverrides,
    /// The process environment.
    pub env: EnvVars,
    /// The Strapi project's `.env` (`--strapi-dir`).
    pub strapi_env: Option<EnvVars>,
    /// The Strapi project folder, for messages.
    pub strapi_dir: Option<PathBuf>,
    /// `config.toml`.
    pub file: RawConfig,
    /// Where `file` came from, for messages.
    pub file_path: PathBuf,
}

impl Sources {
    /// A variable from the process environment, else from the Strapi `.env`, with its origin.
    fn var(&self, key: &str) -> Option<(&str, String)> {
        if let Some(v) = self.env.get(key) {
            return Some((v, format!("{key} from {}", self.env.origin())));
        }
        let strapi = self.strapi_env.as_ref()?;
        strapi
            .get(key)
            .map(|v| (v, format!("{key} from {}", strapi.origin())))
    }
}

// ---------------------------------------------------------------------------------------------
// Resolved, typed configuration
// ---------------------------------------------------------------------------------------------

/// TLS policy for database connections, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, without verifying the certificate; else plain.
    Prefer,
    /// TLS always, without verifying the certificate.
    Require,
    /// TLS always; the certificate must chain to a trusted root (no host name check).
    VerifyCa,
    /// TLS always; the certificate must chain to a trusted root and name the host.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "unknown sslmode {other:?}; use disable, prefer, require, verify-ca or verify-full"
                ));
            }
        })
    }
}

/// `[database]`: how to reach Strapi's PostgreSQL and which slot and publication to use.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Connection parameters (host or Unix socket directory, port, user, password, dbname).
    /// Its `Debug` redacts the password. `sslmode` is in [`Self::ssl_mode`].
    pub pg: tokio_postgres::Config,
    /// TLS policy.
    pub ssl_mode: SslMode,
    /// The trusted root certificates (`sslrootcert=` in the URL): a PEM file, or `system` for
    /// the public roots (see [`crate::pg::tls`]).
    pub ssl_root_cert: Option<PathBuf>,
    /// Replication slot.
    pub slot: String,
    /// Publication.
    pub publication: String,
    /// Schema of Strapi's tables.
    pub schema: String,
    /// Where the URL came from (`config.toml`, `DATABASE_URL from …`), for messages.
    pub url_origin: String,
}

impl DatabaseConfig {
    /// Parses a PostgreSQL URL or key=value string; `sslmode` and `sslrootcert` are taken out
    /// here because the bridge does TLS itself (rustls) and supports `verify-full`.
    pub fn from_url(url: &str, key: &str) -> Result<Self, ConfigError> {
        let (rest, ssl_mode, ssl_root_cert) = split_ssl_params(url)
            .map_err(|m| ConfigError::invalid(key, format!("{m} (in {})", redact_url(url))))?;
        let pg = tokio_postgres::Config::from_str(&rest).map_err(|e| {
            ConfigError::invalid(
                key,
                format!(
                    "not a PostgreSQL URL ({e}): {}; expected postgres://user:password@host:5432/dbname",
                    redact_url(url)
                ),
            )
        })?;
        if pg.get_dbname().is_none() {
            return Err(ConfigError::invalid(
                key,
                format!("{} names no database", redact_url(url)),
            ));
        }
        if pg.get_user().is_none() {
            return Err(ConfigError::invalid(
                key,
                format!("{} names no user", redact_url(url)),
            ));
        }
        Ok(DatabaseConfig {
            pg,
            ssl_mode,
            ssl_root_cert,
            slot: DEFAULT_SLOT.to_owned(),
            publication: DEFAULT_PUBLICATION.to_owned(),
            schema: DEFAULT_SCHEMA.to_owned(),
            url_origin: key.to_owned(),
        })
    }

    /// `user@host:port/dbname`, for logs and messages (never the password).
    pub fn display_target(&self) -> String {
        use tokio_postgres::config::Host;
        let host = match self.pg.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_owned(),
        };
        let port = self.pg.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}@{}:{}/{}",
            self.pg.get_user().unwrap_or(""),
            host,
            port,
            self.pg.get_dbname().unwrap_or("")
        )
    }
}

/// Removes `sslmode` and `sslrootcert` from a URL's query (or a key=value string).
fn split_ssl_params(url: &str) -> Result<(String, SslMode, Option<PathBuf>), String> {
    let mut mode = SslMode::Prefer;
    let mut root = None;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), mode, root));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sslmode" => mode = v.parse()?,
                "sslrootcert" => root = Some(PathBuf::from(percent_decode(v))),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((rest, mode, root))
    } else {
        let mut kept = Vec::new();
        for part in url.split_whitespace() {
            match part.split_once('=') {
                Some(("sslmode", v)) => mode = v.parse()?,
                Some(("sslrootcert", v)) => root = Some(PathBuf::from(v)),
                _ => kept.push(part),
            }
        }
        Ok((kept.join(" "), mode, root))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if let (b'%', Some(b)) = (bytes[i], hex) {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URL with its password replaced by `***`, safe to print.
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let after = &url[scheme_end + 3..];
        let authority_end = after.find(['/', '?']).unwrap_or(after.len());
        let authority = &after[..authority_end];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[scheme_end + 3 + at..]
                );
            }
        }
        url.to_owned()
    } else {
        url.split_whitespace()
            .map(|p| {
                if p.starts_with("password=") {
                    "password=***"
                } else {
                    p
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where Socket.IO, health, metrics and the emit API listen.
    pub listen: SocketAddr,
}

/// Socket.IO transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    Websocket,
}

/// `[io.cors]`: CORS for the polling transport. Absent means no CORS headers, as the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfig {
    /// `None` = any origin (`"*"`), else the allowed origins.
    pub origins: Option<Vec<String>>,
    /// Allowed methods.
    pub methods: Vec<String>,
    /// Whether credentials are allowed.
    pub credentials: bool,
}

/// `[io]`: the Socket.IO server options.
#[derive(Debug, Clone)]
pub struct IoConfig {
    /// Request path.
    pub path: String,
    /// `pingInterval`.
    pub ping_interval: Duration,
    /// `pingTimeout`.
    pub ping_timeout: Duration,
    /// `connectTimeout`.
    pub connect_timeout: Duration,
    /// `maxHttpBufferSize`.
    pub max_payload_bytes: u64,
    /// Events queued per socket before it is fed from the replay buffer instead.
    pub max_buffered_events: usize,
    /// Unwritten bytes queued per socket before it is fed from the replay buffer instead.
    pub max_buffered_bytes: u64,
    /// Largest event payload sent whole, in bytes.
    pub max_event_bytes: usize,
    /// Allowed transports.
    pub transports: Vec<Transport>,
    /// CORS, when configured.
    pub cors: Option<CorsConfig>,
    /// Rooms clients may join and leave themselves (`join-room` / `leave-room`).
    pub joinable_rooms: Vec<String>,
}

/// Which roles receive a content type's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermissionMode {
    /// A role receives every event of a content type it may `find` or `findOne`.
    Read,
    /// The plugin's rule: the role needs the event's own action (publish and createOrUpdate
    /// need `update`, unpublish needs `delete`).
    Action,
}

/// Which users-permissions JWTs Strapi accepts: its `jwtManagement` setting (Strapi 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JwtManagement {
    /// `legacy-support`, the default when unset: both `{"id": n}` and session access tokens
    /// (`{"userId": "n", "type": "access"}`).
    #[default]
    LegacySupport,
    /// `refresh` (new Strapi 5 projects): only session access tokens.
    Refresh,
}

impl JwtManagement {
    /// The setting's value as Strapi spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            JwtManagement::LegacySupport => "legacy-support",
            JwtManagement::Refresh => "refresh",
        }
    }

    fn parse(text: &str) -> Option<JwtManagement> {
        match text {
            "legacy-support" => Some(JwtManagement::LegacySupport),
            "refresh" => Some(JwtManagement::Refresh),
            _ => None,
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Room and role for sockets without a token.
    pub public_role_name: String,
    /// Who receives what.
    pub permission_mode: PermissionMode,
    /// Users-permissions JWT secret (raw bytes of the string), if known.
    pub jwt_secret: Option<Secret>,
    /// Where the JWT secret came from, for `check`.
    pub jwt_secret_origin: Option<String>,
    /// Which JWT shapes are accepted.
    pub jwt_management: JwtManagement,
    /// Where `jwt_management` came from (or why the default is in force), for `check`.
    pub jwt_management_origin: String,
    /// API token salt, if known.
    pub api_token_salt: Option<Secret>,
}

/// Which actions of one content type go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionFilter {
    /// Every action (`"*"`).
    All,
    /// Only these actions.
    Only(Vec<String>),
}

/// `content_types`: which events go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentTypesConfig {
    /// Nothing configured: the bridge emits no data events (as the plugin's default).
    Unset,
    /// `content_types = "*"`
    All,
    /// Per content type (singularName or uid) → actions; checked against the catalog at start.
    Some(Vec<(String, ActionFilter)>),
}

/// What a `[[events]]` entry does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventHandler {
    /// Log the socket id, role and user id.
    Log,
    /// Re-emit to the sender's role rooms (or to `rooms`), not back to the sender.
    Relay {
        /// Where to relay instead of the sender's rooms.
        rooms: Option<Vec<String>>,
    },
    /// POST to a URL; the JSON answer becomes the client's acknowledgement.
    Webhook {
        /// Target.
        url: String,
        /// How long to wait.
        timeout: Duration,
    },
}

/// One `[[events]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventConfig {
    /// `connection`, `disconnect`, or a client event name (case-sensitive).
    pub name: String,
    /// What to do.
    pub handler: EventHandler,
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[database]`
    pub database: DatabaseConfig,
    /// `[server]`
    pub server: ServerConfig,
    /// `[io]`
    pub io: IoConfig,
    /// `[auth]`
    pub auth: AuthConfig,
    /// `content_types`
    pub content_types: ContentTypesConfig,
    /// `[messages] prefix`
    pub message_prefix: String,
    /// `[admin] token` / `STRAPI_IO_ADMIN_TOKEN`; `None` turns the HTTP emit API off.
    pub admin_token: Option<Secret>,
    /// `[[events]]`
    pub events: Vec<EventConfig>,
    /// `[delivery]`
    pub delivery: crate::delivery::DeliveryConfig,
    /// `[messages] allow_data_actions`: whether a `pg_logical_emit_message` may send a data
    /// action (`message:create`…) or a `raw` event named like one.
    pub allow_data_actions: bool,
    /// `[strapi]`
    pub strapi: StrapiConfig,
    /// `[proxy]`; `None` when no upstream is configured (the proxy is off).
    pub proxy: Option<ProxyConfig>,
    /// Size and rate limits of what clients send, webhook safeguards, `/metrics` access.
    pub limits: IoLimits,
}

/// Who may read `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAccess {
    /// Anyone who reaches the port (the default; keep the port private or use `admin`).
    Public,
    /// Only requests with `Authorization: Bearer <admin token>`.
    Admin,
    /// No `/metrics` route.
    Off,
}

/// What bounds the work and memory a client (or anyone reaching the port) can cause, and what
/// protects webhook targets. `Default` is the documented defaults without a webhook secret.
#[derive(Debug, Clone)]
pub struct IoLimits {
    /// `[io] ws_max_message_bytes`: a larger WebSocket message closes the connection.
    pub ws_max_message_bytes: usize,
    /// `[io] ws_max_frame_bytes`: a larger WebSocket frame closes the connection.
    pub ws_max_frame_bytes: usize,
    /// `[io] max_payload_bytes` again: the largest `POST /io/emit` / `/io/raw` body.
    pub http_max_body_bytes: usize,
    /// `[io] client_events_per_second`: the refill rate of each socket's event allowance.
    pub client_events_per_second: u32,
    /// `[io] client_events_burst`: the allowance's size.
    pub client_events_burst: u32,
    /// `[io] max_subscriptions_per_socket`: subscriptions one socket may hold.
    pub max_subscriptions_per_socket: usize,
    /// `[webhooks] secret` / `STRAPI_IO_WEBHOOK_SECRET`: the HMAC key webhook requests are
    /// signed with; required when a webhook handler is configured.
    pub webhook_secret: Option<Secret>,
    /// `[webhooks] max_in_flight`.
    pub webhook_max_in_flight: usize,
    /// `[webhooks] max_response_bytes`.
    pub webhook_max_response_bytes: usize,
    /// `[metrics] access`.
    pub metrics: MetricsAccess,
}

impl Default for IoLimits {
    fn default() -> Self {
        let payload = usize::try_from(DEFAULT_MAX_PAYLOAD_BYTES).unwrap_or(usize::MAX);
        IoLimits {
            ws_max_message_bytes: payload,
            ws_max_frame_bytes: payload,
            http_max_body_bytes: payload,
            client_events_per_second: DEFAULT_CLIENT_EVENTS_PER_SECOND,
            client_events_burst: DEFAULT_CLIENT_EVENTS_BURST,
            max_subscriptions_per_socket: DEFAULT_MAX_SUBSCRIPTIONS_PER_SOCKET,
            webhook_secret: None,
            webhook_max_in_flight: DEFAULT_WEBHOOK_MAX_IN_FLIGHT,
            webhook_max_response_bytes: DEFAULT_WEBHOOK_MAX_RESPONSE_BYTES,
            metrics: MetricsAccess::Public,
        }
    }
}

/// `[strapi]`: Strapi settings that live in its code, not in the database.
#[derive(Debug, Clone, Default)]
pub struct StrapiConfig {
    /// Attribute names hidden in every content type: `private_attributes` and, with
    /// `--strapi-dir`, the literal list in `config/api.js` (their union).
    pub private_attributes: Vec<String>,
    /// `[strapi] private_attributes` as configured.
    pub configured: Vec<String>,
    /// What `--strapi-dir`'s `config/api.js` says.
    pub api_js: ApiPrivateAttributes,
}

/// `[proxy]`: forward every other HTTP request to Strapi, and emit `find`/`findOne` events of
/// successful REST reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Strapi's base URL, `http://host:port` (a path, if any, is prepended to forwarded paths).
    pub upstream: String,
    /// Strapi's REST prefix, `/api`.
    pub api_prefix: String,
}

impl Config {
    /// Applies the precedence and validates. The first problem found is returned.
    pub fn resolve(src: &Sources) -> Result<Config, ConfigError> {
        let database = resolve_database(src)?;
        let server = resolve_server(src)?;
        let io = resolve_io(&src.file.io)?;
        let auth = resolve_auth(src)?;
        let content_types = resolve_content_types(src)?;
        let message_prefix = resolve_prefix(&src.file.messages)?;
        let admin_token = src
            .var("STRAPI_IO_ADMIN_TOKEN")
            .map(|(v, _)| v.to_owned())
            .or_else(|| src.file.admin.token.clone())
            .filter(|t| !t.is_empty())
            .map(Secret::new);
        let events = resolve_events(&src.file.events)?;
        let limits = resolve_limits(src, &io, &events, admin_token.is_some())?;
        Ok(Config {
            database,
            server,
            io,
            auth,
            content_types,
            message_prefix,
            admin_token,
            events,
            limits,
            proxy: resolve_proxy(&src.file.proxy)?,
            delivery: resolve_delivery(&src.file.delivery)?,
            allow_data_actions: src.file.messages.allow_data_actions.unwrap_or(false),
            strapi: resolve_strapi(src)?,
        })
    }

    /// Reads `config.toml` (required only when `required`), the Strapi `.env` when a folder is
    /// given, and the process environment; then resolves.
    pub fn load(
        path: &Path,
        required: bool,
        strapi_dir: Option<&Path>,
        cli: CliOverrides,
    ) -> Result<Config, ConfigError> {
        let file = RawConfig::load(path, required)?;
        let strapi_env = strapi_dir.map(EnvVars::load_strapi_dir).transpose()?;
        Config::resolve(&Sources {
            cli,
            env: EnvVars::from_process(),
            strapi_env,
            strapi_dir: strapi_dir.map(Path::to_owned),
            file,
            file_path: path.to_owned(),
        })
    }
}

fn resolve_database(src: &Sources) -> Result<DatabaseConfig, ConfigError> {
    if let Some((client, origin)) = src.var("DATABASE_CLIENT")
        && client != "postgres"
        && client != "postgresql"
        && client != "pg"
    {
        return Err(ConfigError::invalid(
            origin,
            format!(
                "this Strapi project uses {client:?}; strapi-io-bridge reads PostgreSQL's \
                 logical replication, so the project must run on PostgreSQL \
                 (DATABASE_CLIENT=postgres)"
            ),
        ));
    }
    let file_path = src.file_path.display().to_string();
    let mut db = if let Some(url) = &src.cli.database_url {
        DatabaseConfig::from_url(url, "--database-url")?
    } else if let Some((url, origin)) = src.var("DATABASE_URL") {
        DatabaseConfig::from_url(url, &origin)?
    } else if let Some(url) = strapi_parts_url(src)? {
        let origin = format!(
            "DATABASE_HOST/PORT/NAME/USERNAME/PASSWORD from {}",
            src.strapi_env
                .as_ref()
                .map(EnvVars::origin)
                .unwrap_or("the environment")
        );
        DatabaseConfig::from_url(&url, &origin)?
    } else if let Some(url) = &src.file.database.url {
        DatabaseConfig::from_url(url, &format!("database.url in {file_path}"))?
    } else {
        DatabaseConfig::from_url(DEFAULT_DATABASE_URL, "the default database.url")?
    };
    if let Some(slot) = &src.file.database.slot {
        db.slot = slot.clone();
    }
    if let Some(publication) = &src.file.database.publication {
        db.publication = publication.clone();
    }
    if let Some((schema, _)) = src.var("DATABASE_SCHEMA") {
        db.schema = schema.to_owned();
    } else if let Some(schema) = &src.file.database.schema {
        db.schema = schema.clone();
    }
    for (key, value) in [
        ("database.slot", &db.slot),
        ("database.publication", &db.publication),
    ] {
        if value.is_empty()
            || value.len() > 63
            || !value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "{value:?} is not a valid name: use 1 to 63 lower-case letters, digits and underscores"
                ),
            ));
        }
    }
    if db.schema.is_empty() {
        return Err(ConfigError::invalid("database.schema", "must not be empty"));
    }
    Ok(db)
}

/// Builds a URL from Strapi's `DATABASE_HOST` … variables, when any of them is set.
fn strapi_parts_url(src: &Sources) -> Result<Option<String>, ConfigError> {
    const PARTS: [&str; 5] = [
        "DATABASE_HOST",
        "DATABASE_PORT",
        "DATABASE_NAME",
        "DATABASE_USERNAME",
        "DATABASE_PASSWORD",
    ];
    if !PARTS.iter().any(|k| src.var(k).is_some()) {
        return Ok(None);
    }
    let get = |k: &str, default: &str| {
        src.var(k)
            .map(|(v, _)| v.to_owned())
            .unwrap_or_else(|| default.to_owned())
    };
    let host = get("DATABASE_HOST", "localhost");
    let port = get("DATABASE_PORT", "5432");
    if port.parse::<u16>().is_err() {
        return Err(ConfigError::invalid(
            "DATABASE_PORT",
            format!("{port:?} is not a port number"),
        ));
    }
    let name = get("DATABASE_NAME", "strapi");
    let user = get("DATABASE_USERNAME", "strapi");
    let password = get("DATABASE_PASSWORD", "strapi");
    let ssl = src
        .var("DATABASE_SSL")
        .map(|(v, _)| v == "true" || v == "1")
        .unwrap_or(false);
    let reject_unauthorized = src
        .var("DATABASE_SSL_REJECT_UNAUTHORIZED")
        .map(|(v, _)| v != "false" && v != "0")
        .unwrap_or(true);
    let sslmode = match (ssl, reject_unauthorized) {
        (false, _) => "disable",
        (true, true) => "verify-full",
        (true, false) => "require",
    };
    // key=value form: no percent-encoding needed, values are quoted.
    let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    Ok(Some(format!(
        "host={} port={} dbname={} user={} password={} sslmode={}",
        quote(&host),
        port,
        quote(&name),
        quote(&user),
        quote(&password),
        sslmode
    )))
}

fn resolve_server(src: &Sources) -> Result<ServerConfig, ConfigError> {
    let (value, key) = match (&src.cli.listen, &src.file.server.listen) {
        (Some(v), _) => (v.as_str(), "--listen"),
        (None, Some(v)) => (v.as_str(), "server.listen"),
        (None, None) => (DEFAULT_LISTEN, "server.listen"),
    };
    let listen = value.parse().map_err(|_| {
        ConfigError::invalid(
            key,
            format!("{value:?} is not an address:port like 0.0.0.0:1338"),
        )
    })?;
    Ok(ServerConfig { listen })
}

fn resolve_io(raw: &RawIo) -> Result<IoConfig, ConfigError> {
    let path = raw
        .path
        .clone()
        .unwrap_or_else(|| DEFAULT_IO_PATH.to_owned());
    if !path.starts_with('/') || path.len() < 2 {
        return Err(ConfigError::invalid(
            "io.path",
            format!("{path:?} must start with / (like /socket.io)"),
        ));
    }
    let ms = |v: Option<u64>, d: u64, key: &str| -> Result<Duration, ConfigError> {
        let v = v.unwrap_or(d);
        if v == 0 {
            return Err(ConfigError::invalid(key, "must be greater than 0"));
        }
        Ok(Duration::from_millis(v))
    };
    let transports = match &raw.transports {
        None => vec![Transport::Polling, Transport::Websocket],
        Some(list) => {
            let mut out = Vec::new();
            for t in list {
                out.push(match t.as_str() {
                    "polling" => Transport::Polling,
                    "websocket" => Transport::Websocket,
                    other => {
                        return Err(ConfigError::invalid(
                            "io.transports",
                            format!(
                                "unknown transport {other:?}; use \"polling\" and/or \"websocket\""
                            ),
                        ));
                    }
                });
            }
            if out.is_empty() {
                return Err(ConfigError::invalid(
                    "io.transports",
                    "needs at least one of \"polling\", \"websocket\"",
                ));
            }
            out
        }
    };
    if let Some(c) = &raw.cors
        && c.credentials == Some(true)
        && c.origin
            .clone()
            .map(StringOrList::into_vec)
            .is_some_and(|list| list.iter().any(|o| o == "*"))
    {
        return Err(ConfigError::invalid(
            "io.cors.origin",
            "\"*\" cannot be combined with io.cors.credentials = true (browsers refuse it, and \
             allowing every origin with credentials would let any site act for your users): \
             list the sites' origins, like origin = [\"https://www.example.com\"], or set \
             credentials = false",
        ));
    }
    let cors = raw.cors.as_ref().map(|c| {
        let origins = match c.origin.clone().map(StringOrList::into_vec) {
            None => Some(Vec::new()),
            Some(list) if list.iter().any(|o| o == "*") => None,
            Some(list) => Some(list),
        };
        CorsConfig {
            origins,
            methods: c
                .methods
                .clone()
                .unwrap_or_else(|| vec!["GET".to_owned(), "POST".to_owned()]),
            credentials: c.credentials.unwrap_or(false),
        }
    });
    let max_payload_bytes = raw.max_payload_bytes.unwrap_or(DEFAULT_MAX_PAYLOAD_BYTES);
    if max_payload_bytes == 0 {
        return Err(ConfigError::invalid(
            "io.max_payload_bytes",
            "must be greater than 0",
        ));
    }
    let max_buffered_events = raw
        .max_buffered_events
        .unwrap_or(DEFAULT_MAX_BUFFERED_EVENTS);
    if max_buffered_events == 0 {
        return Err(ConfigError::invalid(
            "io.max_buffered_events",
            "must be greater than 0",
        ));
    }
    let max_buffered_bytes = raw.max_buffered_bytes.unwrap_or(DEFAULT_MAX_BUFFERED_BYTES);
    if max_buffered_bytes == 0 {
        return Err(ConfigError::invalid(
            "io.max_buffered_bytes",
            "must be greater than 0",
        ));
    }
    let max_event_bytes = raw.max_event_bytes.unwrap_or(DEFAULT_MAX_EVENT_BYTES);
    if max_event_bytes == 0 {
        return Err(ConfigError::invalid(
            "io.max_event_bytes",
            "must be greater than 0",
        ));
    }
    Ok(IoConfig {
        path,
        ping_interval: ms(
            raw.ping_interval_ms,
            DEFAULT_PING_INTERVAL_MS,
            "io.ping_interval_ms",
        )?,
        ping_timeout: ms(
            raw.ping_timeout_ms,
            DEFAULT_PING_TIMEOUT_MS,
            "io.ping_timeout_ms",
        )?,
        connect_timeout: ms(
            raw.connect_timeout_ms,
            DEFAULT_CONNECT_TIMEOUT_MS,
            "io.connect_timeout_ms",
        )?,
        max_payload_bytes,
        max_buffered_events,
        max_buffered_bytes,
        max_event_bytes: usize::try_from(max_event_bytes).unwrap_or(usize::MAX),
        transports,
        cors,
        joinable_rooms: resolve_joinable_rooms(raw.joinable_rooms.as_deref())?,
    })
}

fn resolve_joinable_rooms(raw: Option<&[String]>) -> Result<Vec<String>, ConfigError> {
    let rooms = raw.unwrap_or_default().to_vec();
    if let Some(bad) = rooms
        .iter()
        .find(|r| r.is_empty() || r.starts_with("sub:") || r.starts_with("api-token:"))
    {
        return Err(ConfigError::invalid(
            "io.joinable_rooms",
            format!(
                "{bad:?} cannot be joinable: room names must not be empty, and the prefixes \
                 sub: and api-token: are the bridge's own"
            ),
        ));
    }
    Ok(rooms)
}

fn resolve_proxy(raw: &RawProxy) -> Result<Option<ProxyConfig>, ConfigError> {
    let Some(upstream) = raw.upstream.as_deref().map(str::trim) else {
        return Ok(None);
    };
    let Some(rest) = upstream.strip_prefix("http://") else {
        return Err(ConfigError::invalid(
            "proxy.upstream",
            format!(
                "{upstream:?} must be an http:// URL of Strapi, like \"http://127.0.0.1:1337\" \
                 (the proxy forwards to Strapi on the same host or a private network; TLS is \
                 for the proxy in front of the bridge)"
            ),
        ));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || rest.contains(['?', '#']) {
        return Err(ConfigError::invalid(
            "proxy.upstream",
            format!(
                "{upstream:?} must be http://host:port with an optional path, like \"http://127.0.0.1:1337\""
            ),
        ));
    }
    if upstream.parse::<axum::http::Uri>().is_err() {
        return Err(ConfigError::invalid(
            "proxy.upstream",
            format!("{upstream:?} is not a valid URL"),
        ));
    }
    let api_prefix = raw
        .api_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_PROXY_API_PREFIX.to_owned());
    if !api_prefix.starts_with('/') || api_prefix.len() < 2 || api_prefix.ends_with('/') {
        return Err(ConfigError::invalid(
            "proxy.api_prefix",
            format!("{api_prefix:?} must start with / and not end with one, like \"/api\""),
        ));
    }
    Ok(Some(ProxyConfig {
        upstream: upstream.trim_end_matches('/').to_owned(),
        api_prefix,
    }))
}

fn resolve_limits(
    src: &Sources,
    io: &IoConfig,
    events: &[EventConfig],
    admin_token: bool,
) -> Result<IoLimits, ConfigError> {
    let defaults = IoLimits::default();
    let raw = &src.file.io;
    let payload = usize::try_from(io.max_payload_bytes).unwrap_or(usize::MAX);
    let positive = |v: Option<usize>, d: usize, key: &str| -> Result<usize, ConfigError> {
        match v.unwrap_or(d) {
            0 => Err(ConfigError::invalid(key, "must be greater than 0")),
            v => Ok(v),
        }
    };
    let ws_max_message_bytes =
        positive(raw.ws_max_message_bytes, payload, "io.ws_max_message_bytes")?;
    let ws_max_frame_bytes = positive(raw.ws_max_frame_bytes, payload, "io.ws_max_frame_bytes")?;
    let client_events_per_second = raw
        .client_events_per_second
        .unwrap_or(defaults.client_events_per_second);
    let client_events_burst = raw
        .client_events_burst
        .unwrap_or(defaults.client_events_burst);
    if client_events_per_second == 0 || client_events_burst == 0 {
        return Err(ConfigError::invalid(
            "io.client_events_per_second / io.client_events_burst",
            "must be greater than 0 (to ignore client events, configure no [[events]] for them)",
        ));
    }
    let max_subscriptions_per_socket = positive(
        raw.max_subscriptions_per_socket,
        defaults.max_subscriptions_per_socket,
        "io.max_subscriptions_per_socket",
    )?;
    let hooks = &src.file.webhooks;
    let webhook_max_in_flight = positive(
        hooks.max_in_flight,
        defaults.webhook_max_in_flight,
        "webhooks.max_in_flight",
    )?;
    let webhook_max_response_bytes = positive(
        hooks.max_response_bytes,
        defaults.webhook_max_response_bytes,
        "webhooks.max_response_bytes",
    )?;
    let (webhook_secret, secret_key) = match src.var("STRAPI_IO_WEBHOOK_SECRET") {
        Some((v, origin)) => (Some(v.to_owned()), origin),
        None => (
            hooks.secret.clone().filter(|s| !s.is_empty()),
            "webhooks.secret".to_owned(),
        ),
    };
    if let Some(secret) = &webhook_secret
        && secret.len() < MIN_WEBHOOK_SECRET_BYTES
    {
        return Err(ConfigError::invalid(
            secret_key,
            format!(
                "is {} bytes; use at least {MIN_WEBHOOK_SECRET_BYTES} random bytes, for example \
                 the output of `openssl rand -hex 32`",
                secret.len()
            ),
        ));
    }
    if webhook_secret.is_none()
        && let Some(e) = events
            .iter()
            .find(|e| matches!(e.handler, EventHandler::Webhook { .. }))
    {
        return Err(ConfigError::invalid(
            "webhooks.secret",
            format!(
                "the webhook handler of {:?} needs a secret to sign its requests with (so the \
                 receiving route can trust the socket's userId): set STRAPI_IO_WEBHOOK_SECRET, \
                 for example to the output of `openssl rand -hex 32`, and verify \
                 X-Strapi-IO-Signature in the route (see the README)",
                e.name
            ),
        ));
    }
    let metrics = match src.file.metrics.access.as_deref() {
        None | Some("public") => MetricsAccess::Public,
        Some("admin") if admin_token => MetricsAccess::Admin,
        Some("admin") => {
            return Err(ConfigError::invalid(
                "metrics.access",
                "\"admin\" needs the admin token: set STRAPI_IO_ADMIN_TOKEN (or [admin] token)",
            ));
        }
        Some("off") => MetricsAccess::Off,
        Some(other) => {
            return Err(ConfigError::invalid(
                "metrics.access",
                format!("unknown value {other:?}; use \"public\", \"admin\" or \"off\""),
            ));
        }
    };
    Ok(IoLimits {
        ws_max_message_bytes,
        ws_max_frame_bytes,
        http_max_body_bytes: payload,
        client_events_per_second,
        client_events_burst,
        max_subscriptions_per_socket,
        webhook_secret: webhook_secret.map(Secret::new),
        webhook_max_in_flight,
        webhook_max_response_bytes,
        metrics,
    })
}

fn resolve_strapi(src: &Sources) -> Result<StrapiConfig, ConfigError> {
    let configured = src
        .file
        .strapi
        .private_attributes
        .clone()
        .unwrap_or_default();
    if configured.iter().any(|n| n.trim().is_empty()) {
        return Err(ConfigError::invalid(
            "strapi.private_attributes",
            "holds an empty name; list attribute names as in Strapi's config/api.js, like [\"createdBy\", \"internalNote\"]",
        ));
    }
    let api_js = match &src.strapi_dir {
        Some(dir) => api_js::read(dir),
        None => ApiPrivateAttributes::NoStrapiDir,
    };
    if let ApiPrivateAttributes::Unreadable(file, why) = &api_js {
        tracing::warn!(
            file = %file.display(),
            "responses.privateAttributes cannot be read ({why}): copy Strapi's list into [strapi] private_attributes, or attributes it hides site-wide are sent"
        );
    }
    let mut private_attributes = configured.clone();
    for name in api_js.names() {
        if !private_attributes.contains(name) {
            private_attributes.push(name.clone());
        }
    }
    Ok(StrapiConfig {
        private_attributes,
        configured,
        api_js,
    })
}

fn resolve_auth(src: &Sources) -> Result<AuthConfig, ConfigError> {
    let raw = &src.file.auth;
    let permission_mode = match raw.permission_mode.as_deref() {
        None | Some("read") => PermissionMode::Read,
        Some("action") => PermissionMode::Action,
        Some(other) => {
            return Err(ConfigError::invalid(
                "auth.permission_mode",
                format!("unknown mode {other:?}; use \"read\" or \"action\""),
            ));
        }
    };
    let public_role_name = raw
        .public_role_name
        .clone()
        .unwrap_or_else(|| DEFAULT_PUBLIC_ROLE_NAME.to_owned());
    if public_role_name.is_empty() {
        return Err(ConfigError::invalid(
            "auth.public_role_name",
            "must not be empty",
        ));
    }
    let file_path = src.file_path.display().to_string();
    let (jwt_secret, jwt_secret_origin) = match src.var("JWT_SECRET") {
        Some((v, origin)) => (Some(Secret::new(v)), Some(origin)),
        None => match raw.jwt_secret.as_deref().filter(|s| !s.is_empty()) {
            Some(v) => (
                Some(Secret::new(v)),
                Some(format!("auth.jwt_secret in {file_path}")),
            ),
            None => (None, None),
        },
    };
    let api_token_salt = src
        .var("API_TOKEN_SALT")
        .map(|(v, _)| v.to_owned())
        .or_else(|| raw.api_token_salt.clone())
        .filter(|s| !s.is_empty())
        .map(Secret::new);
    let (jwt_management, jwt_management_origin) = resolve_jwt_management(src)?;
    Ok(AuthConfig {
        public_role_name,
        permission_mode,
        jwt_secret,
        jwt_secret_origin,
        jwt_management,
        jwt_management_origin,
        api_token_salt,
    })
}

/// `auth.jwt_management` from config.toml, else the literal in the Strapi project's
/// `config/plugins.js` (`--strapi-dir`), else Strapi's default `legacy-support`.
fn resolve_jwt_management(src: &Sources) -> Result<(JwtManagement, String), ConfigError> {
    let file_path = src.file_path.display();
    if let Some(text) = src.file.auth.jwt_management.as_deref() {
        let mode = JwtManagement::parse(text).ok_or_else(|| {
            ConfigError::invalid(
                "auth.jwt_management",
                format!("unknown mode {text:?}; use \"refresh\" or \"legacy-support\" (Strapi's users-permissions jwtManagement)"),
            )
        })?;
        return Ok((mode, format!("auth.jwt_management in {file_path}")));
    }
    let Some(dir) = &src.strapi_dir else {
        return Ok((
            JwtManagement::LegacySupport,
            "Strapi's default (no --strapi-dir to read config/plugins.js from, and auth.jwt_management is not set)".to_owned(),
        ));
    };
    match plugins_js::read(dir) {
        plugins_js::PluginsJwtManagement::Literal(text, path) => {
            let mode = JwtManagement::parse(&text).ok_or_else(|| {
                ConfigError::invalid(
                    format!("jwtManagement in {}", path.display()),
                    format!(
                        "unknown mode {text:?}; Strapi knows \"refresh\" and \"legacy-support\""
                    ),
                )
            })?;
            Ok((mode, format!("jwtManagement in {}", path.display())))
        }
        plugins_js::PluginsJwtManagement::NotLiteral(path) => Ok((
            JwtManagement::LegacySupport,
            format!(
                "Strapi's default: jwtManagement in {} is not a plain string the bridge can read; if it is \"refresh\", set auth.jwt_management = \"refresh\"",
                path.display()
            ),
        )),
        plugins_js::PluginsJwtManagement::Unset => Ok((
            JwtManagement::LegacySupport,
            format!(
                "Strapi's default (no jwtManagement in {}/config/plugins.js)",
                dir.display()
            ),
        )),
    }
}

fn resolve_content_types(src: &Sources) -> Result<ContentTypesConfig, ConfigError> {
    if let Some(flag) = &src.cli.content_types {
        let flag = flag.trim();
        if flag == "*" {
            return Ok(ContentTypesConfig::All);
        }
        let keys: Vec<_> = flag
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| (k.to_owned(), ActionFilter::All))
            .collect();
        if keys.is_empty() {
            return Err(ConfigError::invalid(
                "--content-types",
                "give '*' or a comma-separated list of content types",
            ));
        }
        return Ok(ContentTypesConfig::Some(keys));
    }
    match &src.file.content_types {
        None => Ok(ContentTypesConfig::Unset),
        Some(RawContentTypes::All(s)) if s == "*" => Ok(ContentTypesConfig::All),
        Some(RawContentTypes::All(s)) => Err(ConfigError::invalid(
            "content_types",
            format!("{s:?}: use \"*\" or a [content_types] table"),
        )),
        Some(RawContentTypes::Some(map)) => {
            let mut out = Vec::new();
            for (key, value) in map {
                let filter = match value {
                    StringOrList::One(s) if s == "*" => ActionFilter::All,
                    StringOrList::One(s) => {
                        return Err(ConfigError::invalid(
                            format!("content_types.{key}"),
                            format!("{s:?}: use \"*\" or a list of actions like [\"create\"]"),
                        ));
                    }
                    StringOrList::Many(list) => {
                        for a in list {
                            if !DATA_ACTIONS.contains(&a.as_str())
                                && !READ_ACTIONS.contains(&a.as_str())
                            {
                                return Err(ConfigError::invalid(
                                    format!("content_types.{key}"),
                                    format!(
                                        "unknown action {a:?}; known actions: {}, {}",
                                        DATA_ACTIONS.join(", "),
                                        READ_ACTIONS.join(", ")
                                    ),
                                ));
                            }
                        }
                        ActionFilter::Only(list.clone())
                    }
                };
                out.push((key.clone(), filter));
            }
            Ok(ContentTypesConfig::Some(out))
        }
    }
}

fn resolve_delivery(raw: &RawDelivery) -> Result<crate::delivery::DeliveryConfig, ConfigError> {
    use crate::delivery::{DeliveryConfig, parse_bytes, parse_duration};
    let mut cfg = DeliveryConfig::default();
    if let Some(w) = &raw.replay_window {
        cfg.replay_window =
            parse_duration(w).map_err(|e| ConfigError::invalid("delivery.replay_window", e))?;
    }
    if let Some(b) = &raw.replay_max_bytes {
        cfg.replay_max_bytes =
            parse_bytes(b).map_err(|e| ConfigError::invalid("delivery.replay_max_bytes", e))?;
    }
    Ok(cfg)
}

fn resolve_prefix(raw: &RawMessages) -> Result<String, ConfigError> {
    let prefix = raw
        .prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_MESSAGE_PREFIX.to_owned());
    if prefix.is_empty() {
        return Err(ConfigError::invalid("messages.prefix", "must not be empty"));
    }
    Ok(prefix)
}

fn resolve_events(raw: &[RawEvent]) -> Result<Vec<EventConfig>, ConfigError> {
    let mut out = Vec::new();
    for (i, e) in raw.iter().enumerate() {
        let key = format!("events[{i}]");
        let name = e
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ConfigError::invalid(&key, "needs a name"))?;
        let key = format!("events[{i}] ({name})");
        let handler = match e.handler.as_deref() {
            Some("log") => EventHandler::Log,
            Some("relay") => EventHandler::Relay {
                rooms: e.rooms.clone(),
            },
            Some("webhook") => {
                let url = e
                    .url
                    .clone()
                    .ok_or_else(|| ConfigError::invalid(&key, "a webhook handler needs a url"))?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ConfigError::invalid(
                        &key,
                        format!("url {url:?} must start with http:// or https://"),
                    ));
                }
                EventHandler::Webhook {
                    url,
                    timeout: Duration::from_millis(
                        e.timeout_ms.unwrap_or(DEFAULT_WEBHOOK_TIMEOUT_MS).max(1),
                    ),
                }
            }
            Some(other) => {
                return Err(ConfigError::invalid(
                    &key,
                    format!("unknown handler {other:?}; use \"log\", \"relay\" or \"webhook\""),
                ));
            }
            None => {
                return Err(ConfigError::invalid(
                    &key,
                    "needs a handler: \"log\", \"relay\" or \"webhook\"",
                ));
            }
        };
        if matches!(handler, EventHandler::Relay { .. })
            && matches!(name.as_str(), "connection" | "disconnect")
        {
            return Err(ConfigError::invalid(
                &key,
                "connection and disconnect take the \"log\" or \"webhook\" handler",
            ));
        }
        if e.rooms.is_some() && !matches!(handler, EventHandler::Relay { .. }) {
            return Err(ConfigError::invalid(
                &key,
                "rooms applies to the relay handler only",
            ));
        }
        if (e.url.is_some() || e.timeout_ms.is_some())
            && !matches!(handler, EventHandler::Webhook { .. })
        {
            return Err(ConfigError::invalid(
                &key,
                "url and timeout_ms apply to the webhook handler only",
            ));
        }
        out.push(EventConfig { name, handler });
    }
    Ok(out)
}

mod plugins_js;

#[cfg(test)]
mod tests;
