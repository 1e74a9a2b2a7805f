//! `demo`: a throwaway PostgreSQL with a small Strapi-shaped database, the bridge on it, and a
//! writer that changes something every few seconds.
//!
//! Receives the command-line options; starts a [`Cluster`] (logical replication on), loads a
//! Strapi database into it (the same ones the tests use: Strapi 5's by default, Strapi 4's with
//! `--strapi 4`; a draft & publish collection `message`, a plain collection `chat`, a single
//! type `homepage`, the Public and Authenticated roles with read permissions, users), runs
//! [`check::setup`], runs the [`pipeline`] in this process, and then writes the next change of
//! a fixed cycle every `--interval` seconds, as that Strapi writes it (Strapi 5: a document's
//! draft and published rows, each operation one transaction), printing one line per write. On Ctrl-C or SIGTERM it stops writing, shuts the bridge down
//! gracefully, and stops and removes the cluster (unless `--keep`). It never touches a database
//! it did not create.

use std::fmt::Display;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::check;
use crate::cli::{Common, EXIT_CONFIG, EXIT_FAILURE};
use crate::cluster::{Binaries, Cluster, ClusterError, ClusterOptions};
use crate::config::{CliOverrides, Config, EnvVars, RawConfig, Sources};
use crate::pg;
use crate::pipeline;

/// The Strapi 4 database the demo loads with `--strapi 4`: Strapi 4.26.2's tables and
/// content-type schema with a few rows (see its header).
const FIXTURE_SQL: &str = include_str!("../tests/fixtures/strapi4.sql");

/// The users-permissions JWT secret the fixture's rows assume.
const JWT_SECRET: &str = "j9skLpTvMt6nUUQMqNMjAg==";
/// The API token salt the fixture's API tokens are hashed with.
const API_TOKEN_SALT: &str = "7hOJwW+vNX8lRL0c0cedWA==";

/// The Strapi 5 database the demo loads by default: as Strapi 5.54.0 laid it out after its
/// first boot, roles, permissions and users included (see its header).
const FIXTURE5_SQL: &str = include_str!("../tests/fixtures/strapi5.sql");
/// The Strapi 5 fixture's users-permissions JWT secret.
const JWT_SECRET5: &str = "bqGg5w2ClHqVgs/XwSexSA==";
/// The Strapi 5 fixture's API token salt.
const API_TOKEN_SALT5: &str = "To6g4FaYaMnOPEMs2T1swg==";

/// Which Strapi's database the demo shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Strapi 4.26.2: one row per entry.
    Strapi4,
    /// Strapi 5.54.0: documents (draft and published rows sharing a `document_id`).
    Strapi5,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::Strapi4 => "Strapi 4",
            Flavor::Strapi5 => "Strapi 5",
        }
    }

    fn fixture(self) -> &'static str {
        match self {
            Flavor::Strapi4 => FIXTURE_SQL,
            Flavor::Strapi5 => FIXTURE5_SQL,
        }
    }

    fn secrets(self) -> (&'static str, &'static str) {
        match self {
            Flavor::Strapi4 => (JWT_SECRET, API_TOKEN_SALT),
            Flavor::Strapi5 => (JWT_SECRET5, API_TOKEN_SALT5),
        }
    }
}
/// The fixture's user the printed JWT is for (`up_users.id`, role Authenticated).
const DEMO_USER_ID: i64 = 1;
/// Its username, for the printed snippet.
const DEMO_USER_NAME: &str = "alice";
/// How long the printed JWT is valid: Strapi's default `expiresIn` (30 days).
const DEMO_JWT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Database, role and password, as a Strapi project's defaults.
const DB_NAME: &str = "strapi";
const DB_USER: &str = "strapi";
const DB_PASSWORD: &str = "strapi";

/// Where the demo listens unless `--listen` says otherwise: loopback only, next to Strapi's 1337.
const DEFAULT_DEMO_LISTEN: &str = "127.0.0.1:1338";

/// What to install when PostgreSQL's server programs are missing.
const INSTALL_HINT: &str = "strapi-io-bridge demo needs PostgreSQL's server programs (initdb, pg_ctl, postgres): \
     install them with `apt install postgresql` (Debian/Ubuntu) or `brew install postgresql` (macOS)";

/// How long the bridge may take from start to streaming before the demo gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful shutdown of the bridge may take.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// Shortest accepted `--interval`.
const MIN_INTERVAL_SECS: f64 = 0.05;

/// Runs the demo until Ctrl-C or SIGTERM; returns the process exit status.
pub async fn run(
    common: &Common,
    interval: f64,
    keep: bool,
    flavor: Flavor,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    if !interval.is_finite() || interval < MIN_INTERVAL_SECS {
        eprintln!("--interval must be at least {MIN_INTERVAL_SECS} seconds, got {interval}");
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    for (given, flag) in [
        (common.config.is_some(), "--config"),
        (common.strapi_dir.is_some(), "--strapi-dir"),
        (common.database_url.is_some(), "--database-url"),
    ] {
        if given {
            eprintln!("note: demo ignores {flag}: it brings its own database");
        }
    }
    let listen_text = common.listen.as_deref().unwrap_or(DEFAULT_DEMO_LISTEN);
    let Ok(listen) = listen_text.parse::<SocketAddr>() else {
        eprintln!("--listen {listen_text:?} is not an address:port like 127.0.0.1:1338");
        return Ok(ExitCode::from(EXIT_CONFIG));
    };
    // Bind first: a busy port is told before anything is created.
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            eprintln!(
                "{listen} is already in use (another bridge or demo?): choose another address, \
                 e.g. --listen {}:{}",
                listen.ip(),
                listen.port().wrapping_add(1).max(1024)
            );
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
        Err(e) => {
            eprintln!("cannot listen on {listen}: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let binaries = match Binaries::find() {
        Ok(b) => b,
        Err(ClusterError::NoBinaries) => {
            eprintln!("{INSTALL_HINT}");
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
        Err(e) => return Err(e.into()),
    };
    let shutdown = crate::shutdown::on_signal();

    say(format!(
        "strapi-io-bridge demo: a throwaway PostgreSQL with a small {} database, and the bridge on it",
        flavor.name()
    ));
    say("");
    let cluster = tokio::task::spawn_blocking(move || {
        Cluster::create_with(
            binaries,
            ClusterOptions {
                folder_prefix: "strapi-io-demo-".to_owned(),
                ..ClusterOptions::default()
            },
        )
    })
    .await
    .context("the cluster set-up task failed")?
    .context("starting a throwaway PostgreSQL")?;
    let version = cluster
        .binaries()
        .version()
        .ok()
        .as_deref()
        .and_then(|v| v.split("(PostgreSQL) ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .map(|v| format!("PostgreSQL {v}"))
        .unwrap_or_else(|| "PostgreSQL".to_owned());
    say(format!(
        "  cluster    {}  ({version}, port {}; {})",
        cluster.root().display(),
        cluster.port(),
        if keep {
            "kept on exit (--keep)"
        } else {
            "removed on exit"
        }
    ));

    let content_types = common.content_types.as_deref().unwrap_or("*");
    let outcome = serve(
        &cluster,
        listener,
        content_types,
        interval,
        &shutdown,
        started,
        flavor,
    )
    .await;
    let code = match &outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    };
    finish(cluster, keep).await;
    Ok(code)
}

/// Everything between a started cluster and its removal.
async fn serve(
    cluster: &Cluster,
    listener: TcpListener,
    content_types: &str,
    interval: f64,
    shutdown: &CancellationToken,
    started: Instant,
    flavor: Flavor,
) -> anyhow::Result<()> {
    load_database(cluster, flavor).await?;
    let cfg = demo_config(
        cluster.port(),
        listener.local_addr()?,
        content_types,
        flavor,
    )?;
    say(format!(
        "  database   postgres://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{}/{DB_NAME}  (psql it to make changes of your own)",
        cluster.port()
    ));
    let notices = check::setup(&cfg).await.context("running setup")?;
    let published = notices
        .iter()
        .filter(|n| n.starts_with("published"))
        .count();
    let full = notices
        .iter()
        .filter(|n| n.starts_with("replica identity"))
        .count();
    say(format!(
        "  setup      publication {} with {published} tables, REPLICA IDENTITY FULL on {full} content-type tables",
        cfg.database.publication
    ));

    let writer_client = pg::connect(&cfg.database)
        .await
        .context("connecting the demo writer")?;
    let slot = cfg.database.slot.clone();
    let url = format!("http://{}", printable_addr(cfg.server.listen));
    // The bridge runs in its own task; `bridge_ended` tells the demo when it stopped, and its
    // result is taken once, at the end.
    let stop_bridge = CancellationToken::new();
    let bridge_ended = CancellationToken::new();
    let bridge: JoinHandle<anyhow::Result<()>> = tokio::spawn({
        let (stop, ended) = (stop_bridge.clone(), bridge_ended.clone());
        async move {
            let result = pipeline::run(cfg, listener, stop).await;
            ended.cancel();
            result
        }
    });

    let ready = tokio::select! {
        r = wait_until_streaming(&writer_client, &slot) => r.map(|()| true),
        () = bridge_ended.cancelled() => Ok(false),
        () = shutdown.cancelled() => Ok(false),
    };
    let written = match ready {
        Ok(true) => {
            say(format!(
                "  bridge     Socket.IO on {url}, streaming {:.1} s after start",
                started.elapsed().as_secs_f64()
            ));
            say("");
            print_snippets(&url, flavor).map(|()| {
                say(format!(
                    "Writing a change every {interval} s (Ctrl-C stops the demo and removes the cluster):"
                ))
            })
        }
        other => other.map(|_| ()),
    };
    if written.is_ok() && ready_to_write(&bridge_ended, shutdown) {
        write_until_stopped(&writer_client, interval, &bridge_ended, shutdown, flavor).await;
    }
    let stopped_by_us = shutdown.is_cancelled() && !bridge_ended.is_cancelled();
    if stopped_by_us {
        say("stopping: the bridge finishes what it read and confirms it to PostgreSQL");
    }
    drop(writer_client);
    stop_bridge.cancel();
    let stopped = match tokio::time::timeout(SHUTDOWN_TIMEOUT, bridge).await {
        Ok(Ok(Ok(()))) if !shutdown.is_cancelled() && written.is_ok() => {
            Err(anyhow::anyhow!("the bridge stopped unexpectedly"))
        }
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e.context("the bridge stopped")),
        Ok(Err(e)) => Err(anyhow::anyhow!("the bridge task failed: {e}")),
        Err(_) => Err(anyhow::anyhow!(
            "the bridge did not stop within {SHUTDOWN_TIMEOUT:?}"
        )),
    };
    // The bridge's own error explains the others.
    stopped.and(written)
}

/// Neither the bridge nor a signal has stopped the demo yet.
fn ready_to_write(bridge_ended: &CancellationToken, shutdown: &CancellationToken) -> bool {
    !bridge_ended.is_cancelled() && !shutdown.is_cancelled()
}

/// Stops the cluster and removes it, or keeps it; says which.
async fn finish(cluster: Cluster, keep: bool) {
    let root = cluster.root().to_owned();
    let data = cluster.data_dir().to_owned();
    let outcome = tokio::task::spawn_blocking(move || {
        if keep {
            cluster.keep().map(|_| ())
        } else {
            cluster.remove()
        }
    })
    .await;
    match outcome {
        Ok(Ok(())) if keep => say(format!(
            "stopped; kept {} (to start it again, as the folder's owner: pg_ctl -D {} -l {}/postgres.log start)",
            root.display(),
            data.display(),
            root.display()
        )),
        Ok(Ok(())) => say(format!("stopped; removed {}", root.display())),
        Ok(Err(e)) => eprintln!("warning: cleaning up {}: {e}", root.display()),
        Err(e) => eprintln!("warning: cleaning up {}: {e}", root.display()),
    }
}

/// Creates the `strapi` role and database and loads the flavor's fixture as that role, so it
/// owns the tables as Strapi's database user does.
async fn load_database(cluster: &Cluster, flavor: Flavor) -> anyhow::Result<()> {
    let admin = connect(cluster.superuser_config("postgres"))
        .await
        .context("connecting as the superuser")?;
    admin
        .batch_execute(&format!(
            "SET password_encryption = 'scram-sha-256'; \
             CREATE ROLE {DB_USER} LOGIN REPLICATION PASSWORD '{DB_PASSWORD}'"
        ))
        .await
        .context("creating the strapi role")?;
    // CREATE DATABASE cannot share a statement batch (an implicit transaction).
    admin
        .batch_execute(&format!("CREATE DATABASE {DB_NAME} OWNER {DB_USER}"))
        .await
        .context("creating the strapi database")?;
    drop(admin);
    let mut config = cluster.superuser_config(DB_NAME);
    config.user(DB_USER);
    let owner = connect(config)
        .await
        .context("connecting as the strapi role")?;
    owner
        .batch_execute(flavor.fixture())
        .await
        .context("loading the Strapi database")?;
    Ok(())
}

async fn connect(config: tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "demo SQL connection ended");
        }
    });
    Ok(client)
}

/// The bridge's configuration for the demo, resolved as for a Strapi project whose `.env`
/// points at the demo database, with the fixture's secrets and `content_types` (`*` unless
/// `--content-types` says otherwise).
fn demo_config(
    port: u16,
    listen: SocketAddr,
    content_types: &str,
    flavor: Flavor,
) -> anyhow::Result<Config> {
    let (jwt_secret, api_token_salt) = flavor.secrets();
    let dotenv = format!(
        "DATABASE_CLIENT=postgres\n\
         DATABASE_HOST=127.0.0.1\n\
         DATABASE_PORT={port}\n\
         DATABASE_NAME={DB_NAME}\n\
         DATABASE_USERNAME={DB_USER}\n\
         DATABASE_PASSWORD={DB_PASSWORD}\n\
         DATABASE_SSL=false\n\
         JWT_SECRET={jwt_secret}\n\
         API_TOKEN_SALT={api_token_salt}\n"
    );
    let sources = Sources {
        cli: CliOverrides {
            listen: Some(listen.to_string()),
            content_types: Some(content_types.to_owned()),
            database_url: None,
        },
        // The demo's database is its own: nothing from the environment or config.toml applies.
        env: EnvVars::default(),
        strapi_env: Some(EnvVars::parse_dotenv(&dotenv, "the demo's Strapi .env")),
        strapi_dir: None,
        file: RawConfig::default(),
        file_path: PathBuf::from("(none: demo)"),
    };
    Config::resolve(&sources).context("the demo's configuration")
}

/// Waits until the bridge's replication slot is active, i.e. the bridge streams and will see
/// every later write.
async fn wait_until_streaming(client: &Client, slot: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let active = client
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .context("watching for the bridge's replication slot")?
            .is_some_and(|row| row.get::<_, bool>(0));
        if active {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("the bridge was not streaming after {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn printable_addr(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// Prints how to connect: Node one-liners for the Public role and for the demo user, and the
/// repository's `listen.mjs`.
fn print_snippets(url: &str, flavor: Flavor) -> anyhow::Result<()> {
    let token = demo_user_jwt(flavor.secrets().0)?;
    let line = |options: &str, tag: &str| {
        format!(
            "    node -e \"require('socket.io-client').io('{url}'{options}).onAny((e, d) => console.log({tag}e, JSON.stringify(d)))\""
        )
    };
    say("Connect with socket.io-client 4 (in a folder where `npm install socket.io-client` ran):");
    say("  as Public, no token (message and homepage events):");
    say(line("", ""));
    say(format!(
        "  as {DEMO_USER_NAME} (Authenticated) with a JWT valid 30 days (message, homepage and chat events):"
    ));
    say(line(
        &format!(", {{ auth: {{ token: '{token}' }} }}"),
        &format!("'{DEMO_USER_NAME}', "),
    ));
    say("  or, from a checkout of strapi-io-bridge (npm ci in tests/node first):");
    say(format!(
        "    node tests/node/listen.mjs --url {url} --events 1000000 --timeout 86400000"
    ));
    say("");
    Ok(())
}

/// A users-permissions JWT for the demo user, as Strapi signs it: HS256 with the UTF-8 bytes of
/// JWT_SECRET, `{"id", "iat", "exp"}` (Strapi 5 issues this shape in `legacy-support`, the mode
/// the demo runs in).
fn demo_user_jwt(secret: &str) -> anyhow::Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    let claims = serde_json::json!({
        "id": DEMO_USER_ID,
        "iat": now,
        "exp": now + DEMO_JWT_LIFETIME.as_secs(),
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("signing the demo user's JWT")
}

/// One write of the cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// INSERT a draft message.
    Create,
    /// UPDATE its text.
    Update,
    /// Set its `published_at`.
    Publish,
    /// Clear its `published_at`.
    Unpublish,
    /// DELETE it.
    Delete,
    /// UPDATE the homepage single type.
    Homepage,
    /// INSERT a chat (a collection without draft & publish that only Authenticated may read).
    Chat,
}

impl Step {
    const CYCLE: [Step; 7] = [
        Step::Create,
        Step::Update,
        Step::Publish,
        Step::Unpublish,
        Step::Delete,
        Step::Homepage,
        Step::Chat,
    ];

    /// The event this write produces.
    fn event(self) -> &'static str {
        match self {
            Step::Create => "message:create",
            Step::Update => "message:update",
            Step::Publish => "message:publish",
            Step::Unpublish => "message:unpublish",
            Step::Delete => "message:delete",
            Step::Homepage => "homepage:createOrUpdate",
            Step::Chat => "chat:create",
        }
    }
}

/// The writer's state: which message it is working on and which round of the cycle it is in.
struct Writer<'a> {
    client: &'a Client,
    round: u32,
    message: Option<i32>,
    flavor: Flavor,
    /// Strapi 5: the `document_id` of the message being worked on.
    document: Option<String>,
}

impl Writer<'_> {
    /// Applies `step`; returns what was done, for the console.
    async fn apply(&mut self, step: Step) -> Result<String, tokio_postgres::Error> {
        if self.flavor == Flavor::Strapi5 {
            return self.apply5(step).await;
        }
        match (step, self.message) {
            (Step::Create, _) => self.create_message().await,
            (Step::Homepage, _) => self.edit_homepage().await,
            (Step::Chat, _) => self.create_chat().await,
            (_, Some(id)) => self.change_message(step, id).await,
            (_, None) => Ok("no demo message to change (its create failed)".to_owned()),
        }
    }

    async fn create_message(&mut self) -> Result<String, tokio_postgres::Error> {
        let text = format!("Hello from the demo #{}", self.round);
        let row = self
            .client
            .query_one(
                "INSERT INTO messages (text, secret, likes, flag, created_at, updated_at, published_at)
                 VALUES ($1, 'private: never sent', 0, false, now(), now(), NULL) RETURNING id",
                &[&text],
            )
            .await?;
        let id: i32 = row.get(0);
        self.message = Some(id);
        Ok(format!("message {id} {text:?}, a draft"))
    }

    async fn change_message(
        &mut self,
        step: Step,
        id: i32,
    ) -> Result<String, tokio_postgres::Error> {
        let (sql, done) = match step {
            Step::Update => (
                "UPDATE messages SET text = text || ' (edited)', likes = likes + 1, updated_at = now() WHERE id = $1",
                "text edited",
            ),
            Step::Publish => (
                "UPDATE messages SET published_at = now(), updated_at = now() WHERE id = $1",
                "published",
            ),
            Step::Unpublish => (
                "UPDATE messages SET published_at = NULL, updated_at = now() WHERE id = $1",
                "back to draft",
            ),
            _ => ("DELETE FROM messages WHERE id = $1", "deleted"),
        };
        let changed = self.client.execute(sql, &[&id]).await?;
        if step == Step::Delete {
            self.message = None;
        }
        Ok(if changed == 0 {
            format!("message {id} is gone (deleted by hand?); nothing changed")
        } else {
            format!("message {id} {done}")
        })
    }

    async fn edit_homepage(&mut self) -> Result<String, tokio_postgres::Error> {
        let title = format!("Demo homepage, edit {}", self.round);
        let changed = self
            .client
            .execute(
                "UPDATE homepages SET title = $1, updated_at = now()
                  WHERE id = (SELECT min(id) FROM homepages)",
                &[&title],
            )
            .await?;
        if changed == 0 {
            self.client
                .execute(
                    "INSERT INTO homepages (title, created_at, updated_at, published_at)
                     VALUES ($1, now(), now(), now())",
                    &[&title],
                )
                .await?;
        }
        Ok(format!("homepage title {title:?}"))
    }

    async fn create_chat(&mut self) -> Result<String, tokio_postgres::Error> {
        let name = format!("demo-{}", self.round);
        let row = self
            .client
            .query_one(
                "INSERT INTO chats (name, created_at, updated_at) VALUES ($1, now(), now()) RETURNING id",
                &[&name],
            )
            .await?;
        let id: i32 = row.get(0);
        Ok(format!(
            "chat {id} {name:?}, for Authenticated only (Public may not read chats)"
        ))
    }
}

/// Strapi 5's writes: each operation one transaction over the document's rows, as Strapi 5
/// issues them (publish inserts a published copy of the draft, unpublish deletes it).
impl Writer<'_> {
    async fn apply5(&mut self, step: Step) -> Result<String, tokio_postgres::Error> {
        match (step, self.document.clone()) {
            (Step::Create, _) => self.create_document().await,
            (Step::Homepage, _) => self.edit_homepage5().await,
            (Step::Chat, _) => self.create_chat5().await,
            (_, Some(document)) => self.change_document(step, &document).await,
            (_, None) => Ok("no demo message to change (its create failed)".to_owned()),
        }
    }

    async fn create_document(&mut self) -> Result<String, tokio_postgres::Error> {
        let text = format!("Hello from the demo #{}", self.round);
        let row = self
            .client
            .query_one(
                "INSERT INTO messages (document_id, text, secret, likes, flag, created_at, updated_at, published_at)
                 VALUES (substr(md5(random()::text), 1, 24), $1, 'private: never sent', 0, false, now(), now(), NULL)
                 RETURNING document_id",
                &[&text],
            )
            .await?;
        let document: String = row.get(0);
        let line = format!("message {document} {text:?}, a draft");
        self.document = Some(document);
        Ok(line)
    }

    async fn change_document(
        &mut self,
        step: Step,
        document: &str,
    ) -> Result<String, tokio_postgres::Error> {
        let doc = crate::pg::quote_literal(document);
        let (sql, done) = match step {
            Step::Update => (
                format!(
                    "UPDATE messages SET text = text || ' (edited)', likes = likes + 1, updated_at = now()                      WHERE document_id = {doc} AND published_at IS NULL"
                ),
                "draft edited",
            ),
            Step::Publish => (
                format!(
                    "BEGIN;                      UPDATE messages SET updated_at = now() WHERE document_id = {doc} AND published_at IS NULL;                      INSERT INTO messages (document_id, text, secret, likes, flag, created_at, updated_at, published_at)                        SELECT document_id, text, secret, likes, flag, created_at, updated_at, now()                        FROM messages WHERE document_id = {doc} AND published_at IS NULL;                      COMMIT"
                ),
                "published (a published row beside the draft)",
            ),
            Step::Unpublish => (
                format!(
                    "DELETE FROM messages WHERE document_id = {doc} AND published_at IS NOT NULL"
                ),
                "unpublished (its published row deleted)",
            ),
            _ => (
                format!("DELETE FROM messages WHERE document_id = {doc}"),
                "deleted",
            ),
        };
        self.client.batch_execute(&sql).await?;
        if step == Step::Delete {
            self.document = None;
        }
        Ok(format!("message {document} {done}"))
    }

    async fn edit_homepage5(&mut self) -> Result<String, tokio_postgres::Error> {
        let title = crate::pg::quote_literal(&format!("Demo homepage, edit {}", self.round));
        let exists = self
            .client
            .query_opt("SELECT 1 FROM homepages LIMIT 1", &[])
            .await?
            .is_some();
        let sql = if exists {
            format!(
                "BEGIN;                  UPDATE homepages SET title = {title}, updated_at = now() WHERE published_at IS NULL;                  DELETE FROM homepages WHERE published_at IS NOT NULL;                  INSERT INTO homepages (document_id, title, created_at, updated_at, published_at)                    SELECT document_id, title, created_at, updated_at, now() FROM homepages WHERE published_at IS NULL;                  COMMIT"
            )
        } else {
            format!(
                "BEGIN;                  INSERT INTO homepages (document_id, title, created_at, updated_at, published_at)                    VALUES ('demohomepage000000000000', {title}, now(), now(), NULL),                           ('demohomepage000000000000', {title}, now(), now(), now());                  COMMIT"
            )
        };
        self.client.batch_execute(&sql).await?;
        Ok(format!("homepage title {title}"))
    }

    async fn create_chat5(&mut self) -> Result<String, tokio_postgres::Error> {
        let name = format!("demo-{}", self.round);
        let row = self
            .client
            .query_one(
                "INSERT INTO chats (document_id, name, created_at, updated_at, published_at)
                 VALUES (substr(md5(random()::text), 1, 24), $1, now(), now(), now()) RETURNING document_id",
                &[&name],
            )
            .await?;
        let document: String = row.get(0);
        Ok(format!(
            "chat {document} {name:?}, for Authenticated only (Public may not read chats)"
        ))
    }
}

/// Writes the next step at once and then every `interval` seconds, until shutdown or until the
/// bridge stops on its own. A failed write is reported and the cycle goes on.
async fn write_until_stopped(
    client: &Client,
    interval: f64,
    bridge_ended: &CancellationToken,
    shutdown: &CancellationToken,
    flavor: Flavor,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(interval));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut writer = Writer {
        client,
        round: 1,
        message: None,
        flavor,
        document: None,
    };
    for (n, step) in Step::CYCLE.iter().copied().cycle().enumerate() {
        tokio::select! {
            _ = ticks.tick() => {}
            () = bridge_ended.cancelled() => return,
            () = shutdown.cancelled() => return,
        }
        if n > 0 && step == Step::Create {
            writer.round += 1;
        }
        let clock = clock_time();
        match writer.apply(step).await {
            Ok(what) => say(format!("  {clock}  {:<24} {what}", step.event())),
            Err(e) => say(format!("  {clock}  {:<24} write failed: {e}", step.event())),
        }
    }
}

/// `HH:MM:SS` in UTC, for the console lines.
fn clock_time() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

/// Prints a line on stdout; a closed stdout (the demo piped into `head`) is not an error.
fn say(line: impl Display) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secrets_are_the_fixtures() {
        assert!(FIXTURE_SQL.contains(&format!("JWT_SECRET     = {JWT_SECRET}")));
        assert!(FIXTURE_SQL.contains(&format!("API_TOKEN_SALT = {API_TOKEN_SALT}")));
        assert!(FIXTURE5_SQL.contains(&format!("JWT_SECRET     = {JWT_SECRET5}")));
        assert!(FIXTURE5_SQL.contains(&format!("API_TOKEN_SALT = {API_TOKEN_SALT5}")));
        assert!(FIXTURE5_SQL.contains(&format!(
            "Users {DEMO_USER_ID} {DEMO_USER_NAME} (Authenticated)"
        )));
        assert!(FIXTURE_SQL.contains(&format!(
            "{DEMO_USER_ID} {DEMO_USER_NAME}  {DEMO_USER_NAME}@example.com  Authenticated"
        )));
    }

    #[test]
    fn the_demo_user_jwt_verifies_with_the_fixture_secret() {
        let token = demo_user_jwt(JWT_SECRET).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes()),
            &validation,
        )
        .unwrap();
        assert_eq!(data.claims["id"], DEMO_USER_ID);
        let lifetime = data.claims["exp"].as_u64().unwrap() - data.claims["iat"].as_u64().unwrap();
        assert_eq!(lifetime, DEMO_JWT_LIFETIME.as_secs());
    }

    #[test]
    fn the_demo_config_reads_everything_from_its_env() {
        let cfg = demo_config(
            5433,
            "127.0.0.1:1338".parse().unwrap(),
            "*",
            Flavor::Strapi4,
        )
        .unwrap();
        assert_eq!(
            cfg.database.display_target(),
            "strapi@127.0.0.1:5433/strapi"
        );
        assert_eq!(cfg.database.ssl_mode, crate::config::SslMode::Disable);
        assert_eq!(cfg.content_types, crate::config::ContentTypesConfig::All);
        assert_eq!(
            cfg.auth.jwt_secret.as_ref().map(|s| s.expose()),
            Some(JWT_SECRET)
        );
        assert_eq!(
            cfg.auth.api_token_salt.as_ref().map(|s| s.expose()),
            Some(API_TOKEN_SALT)
        );
        assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:1338");
    }

    #[test]
    fn the_install_hint_is_one_line_naming_both_package_managers() {
        assert!(!INSTALL_HINT.contains('\n'));
        assert!(INSTALL_HINT.contains("apt install postgresql"));
        assert!(INSTALL_HINT.contains("brew install postgresql"));
    }

    #[test]
    fn the_cycle_covers_every_data_action_of_a_message() {
        let events: Vec<_> = Step::CYCLE.iter().map(|s| s.event()).collect();
        assert_eq!(
            &events[..5],
            [
                "message:create",
                "message:update",
                "message:publish",
                "message:unpublish",
                "message:delete"
            ]
        );
    }
}
