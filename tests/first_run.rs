//! The first five minutes, through the real binary: `demo` end to end with a Socket.IO client,
//! and `check` / `setup` / `run` started from a Strapi project folder (`--strapi-dir`).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::support::client::SioClient;
use crate::support::pg::{SUPERUSER, SUPERUSER_PASSWORD, TempCluster, TestDb};
use crate::support::wait::{self, DEFAULT_TIMEOUT};

const BIN: &str = env!("CARGO_BIN_EXE_strapi-io-bridge");

/// The Strapi 4 database (see its header for content types, roles, users and secrets).
const FIXTURE: &str = include_str!("fixtures/strapi4.sql");
/// The fixture's secrets.
const JWT_SECRET: &str = "j9skLpTvMt6nUUQMqNMjAg==";
const API_TOKEN_SALT: &str = "7hOJwW+vNX8lRL0c0cedWA==";
/// Strapi's tables live outside `public` here, so `check` finding them proves DATABASE_SCHEMA
/// was read.
const SCHEMA: &str = "strapi_app";

/// Variables of the developer's shell that would change what the bridge resolves.
const ISOLATED_VARS: [&str; 16] = [
    "DATABASE_CLIENT",
    "DATABASE_URL",
    "DATABASE_HOST",
    "DATABASE_PORT",
    "DATABASE_NAME",
    "DATABASE_USERNAME",
    "DATABASE_PASSWORD",
    "DATABASE_SSL",
    "DATABASE_SSL_REJECT_UNAUTHORIZED",
    "DATABASE_SCHEMA",
    "JWT_SECRET",
    "API_TOKEN_SALT",
    "STRAPI_IO_ADMIN_TOKEN",
    "STRAPI_IO_LOG",
    "RUST_LOG",
    "NO_COLOR",
];

/// The binary, run in `cwd` (so no stray config.toml is read) with only `env` of the variables
/// above set, logging at info without colours.
fn bridge(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args).current_dir(cwd).stdin(Stdio::null());
    for var in ISOLATED_VARS {
        command.env_remove(var);
    }
    command.env("STRAPI_IO_LOG", "info").env("NO_COLOR", "1");
    for (k, v) in env {
        command.env(k, v);
    }
    command.kill_on_drop(true);
    command
}

/// Runs the binary to completion.
async fn bridge_output(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let output = bridge(cwd, args, env).output();
    wait::within(
        &format!("strapi-io-bridge {args:?}"),
        DEFAULT_TIMEOUT,
        output,
    )
    .await
    .unwrap_or_else(|e| panic!("run {BIN}: {e}"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A long-running bridge process whose output is read as it comes.
struct Running {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    fn spawn(mut command: Command) -> Running {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("start strapi-io-bridge");
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let all = stdout.clone();
        let out_reader = tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                all.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut err = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let all = stderr.clone();
        let err_reader = tokio::spawn(async move {
            while let Ok(Some(line)) = err.next_line().await {
                all.lock().unwrap().push(line);
            }
        });
        Running {
            child,
            lines,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// The next stdout line that starts with `prefix`.
    #[track_caller]
    fn line_starting<'a>(&'a mut self, prefix: &'a str) -> impl Future<Output = String> + 'a {
        let at = std::panic::Location::caller();
        async move {
            let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
            loop {
                match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                    Ok(Some(line)) if line.starts_with(prefix) => return line,
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => panic!(
                        "{at}: no line starting with {prefix:?}\nstdout:\n{}\nstderr:\n{}",
                        self.stdout_text(),
                        self.stderr_text()
                    ),
                }
            }
        }
    }

    fn terminate(&self) {
        let pid = self.child.id().expect("the process is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    async fn exit_status(&mut self) -> ExitStatus {
        let status = wait::within("the process to exit", DEFAULT_TIMEOUT, self.child.wait())
            .await
            .expect("wait for the process");
        // Let the readers take in the last lines.
        for reader in self.readers.drain(..) {
            wait::within("the output to end", DEFAULT_TIMEOUT, reader)
                .await
                .expect("output reader");
        }
        status
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// HTTP status of `GET path`, or `None` while nothing answers.
async fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// demo
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn demo_streams_each_action_to_socket_io_clients_and_removes_its_cluster() {
    let started = Instant::now();
    let cwd = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut demo = Running::spawn(bridge(
        cwd.path(),
        &[
            "demo",
            "--strapi",
            "4",
            "--interval",
            "0.3",
            "--listen",
            &addr,
        ],
        &[],
    ));

    let cluster_line = demo.line_starting("  cluster    ").await;
    let folder = PathBuf::from(
        cluster_line
            .split_whitespace()
            .nth(1)
            .expect("the cluster line names the folder"),
    );
    assert!(
        folder.is_dir(),
        "{} exists while the demo runs",
        folder.display()
    );
    let bridge_line = demo.line_starting("  bridge     ").await;
    assert!(
        bridge_line.contains(&format!("http://{addr}")),
        "{bridge_line}"
    );
    let snippet = demo.line_starting("    node -e ").await;
    assert!(
        snippet.contains(&format!("io('http://{addr}')")),
        "{snippet}"
    );
    let with_token = demo.line_starting("    node -e ").await;
    let token = with_token
        .split("token: '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("the second snippet carries a token");

    let url = format!("http://{addr}/");
    let mut public = SioClient::connected_url(url.clone(), json!({})).await;
    let mut alice = SioClient::connected_url(url, json!({ "token": token })).await;
    let event_timeout = Duration::from_secs(20);

    // Public joins somewhere in the cycle: wait for the next create, then the message's whole
    // life must follow in order, then the homepage, then (no chat: Public may not read chats)
    // the next round's create.
    let (mut name, mut data) = public.next_event(event_timeout).await;
    let first_event = started.elapsed();
    while name != "message:create" {
        (name, data) = public.next_event(event_timeout).await;
    }
    let id = data["data"]["id"].clone();
    let attributes = &data["data"]["attributes"];
    assert!(
        attributes["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Hello from the demo")),
        "{data}"
    );
    assert_eq!(
        attributes["publishedAt"],
        Value::Null,
        "created as a draft: {data}"
    );
    assert!(
        attributes.get("secret").is_none(),
        "private attribute sent: {data}"
    );
    for (want, published) in [
        ("message:update", false),
        ("message:publish", true),
        ("message:unpublish", false),
        ("message:delete", false),
    ] {
        let (name, data) = public.next_event(event_timeout).await;
        assert_eq!(name, want, "{data}");
        assert_eq!(data["data"]["id"], id, "{name}: {data}");
        assert_eq!(
            data["data"]["attributes"]["publishedAt"].is_string(),
            published,
            "{name}: {data}"
        );
    }
    let (name, _) = public.next_event(event_timeout).await;
    assert_eq!(name, "homepage:createOrUpdate");
    let (name, data) = public.next_event(event_timeout).await;
    assert_eq!(
        name, "message:create",
        "Public must not receive chat events: {data}"
    );
    assert_ne!(data["data"]["id"], id);

    // The demo user (Authenticated) also receives the chats.
    loop {
        let (name, data) = alice.next_event(event_timeout).await;
        if name == "chat:create" {
            assert!(data["data"]["attributes"]["name"].is_string(), "{data}");
            break;
        }
    }
    public.close().await;
    alice.close().await;

    demo.terminate();
    let status = demo.exit_status().await;
    assert!(
        status.success(),
        "demo exited with {status}\nstdout:\n{}\nstderr:\n{}",
        demo.stdout_text(),
        demo.stderr_text()
    );
    assert!(
        !folder.exists(),
        "{} is left after the demo stopped",
        folder.display()
    );
    assert!(
        demo.stdout_text()
            .contains(&format!("stopped; removed {}", folder.display())),
        "{}",
        demo.stdout_text()
    );
    eprintln!("demo: first event {first_event:?} after the process started");
    assert!(first_event < Duration::from_secs(30), "{first_event:?}");
}

#[tokio::test]
async fn demo_shows_a_strapi5_database_by_default_one_event_per_document_operation() {
    let cwd = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut demo = Running::spawn(bridge(
        cwd.path(),
        &["demo", "--interval", "0.3", "--listen", &addr],
        &[],
    ));
    let cluster_line = demo.line_starting("  cluster    ").await;
    let folder = PathBuf::from(
        cluster_line
            .split_whitespace()
            .nth(1)
            .expect("the cluster line names the folder"),
    );
    demo.line_starting("    node -e ").await;
    let with_token = demo.line_starting("    node -e ").await;
    let token = with_token
        .split("token: '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("the second snippet carries a token");
    assert!(
        demo.stdout_text().contains("small Strapi 5 database"),
        "{}",
        demo.stdout_text()
    );
    let url = format!("http://{addr}/");
    let mut public = SioClient::connected_url(url.clone(), json!({})).await;
    let mut alice = SioClient::connected_url(url, json!({ "token": token })).await;
    let event_timeout = Duration::from_secs(20);

    // A document's whole life, in Strapi 5's flat shape: the published row of a publish has
    // its own id, the document id stays.
    let (mut name, mut data) = public.next_event(event_timeout).await;
    while name != "message:create" {
        (name, data) = public.next_event(event_timeout).await;
    }
    let document = data["data"]["documentId"].clone();
    assert!(document.is_string(), "{data}");
    assert!(
        data["data"].get("attributes").is_none(),
        "flat payload: {data}"
    );
    assert!(
        data["data"].get("secret").is_none(),
        "private attribute sent: {data}"
    );
    assert_eq!(data["data"]["publishedAt"], Value::Null, "a draft: {data}");
    for (want, published) in [
        ("message:update", false),
        ("message:publish", true),
        ("message:unpublish", false),
        ("message:delete", false),
    ] {
        let (name, data) = public.next_event(event_timeout).await;
        assert_eq!(name, want, "{data}");
        assert_eq!(data["data"]["documentId"], document, "{name}: {data}");
        assert_eq!(
            data["data"]["publishedAt"].is_string(),
            published,
            "{name}: {data}"
        );
    }
    let (name, data) = public.next_event(event_timeout).await;
    assert_eq!(name, "homepage:createOrUpdate", "{data}");
    assert!(data["data"]["publishedAt"].is_string(), "{data}");
    let (name, data) = public.next_event(event_timeout).await;
    assert_eq!(name, "message:create", "Public reads no chats: {data}");
    loop {
        let (name, data) = alice.next_event(event_timeout).await;
        if name == "chat:create" {
            assert!(data["data"]["publishedAt"].is_string(), "{data}");
            break;
        }
    }
    public.close().await;
    alice.close().await;
    demo.terminate();
    let status = demo.exit_status().await;
    assert!(
        status.success(),
        "demo exited with {status}\nstdout:\n{}\nstderr:\n{}",
        demo.stdout_text(),
        demo.stderr_text()
    );
    assert!(!folder.exists(), "{} is left", folder.display());
}

// ---------------------------------------------------------------------------------------------
// --strapi-dir
// ---------------------------------------------------------------------------------------------

/// A database holding the Strapi fixture in [`SCHEMA`].
async fn strapi_db() -> TestDb<'static> {
    let db = TestDb::new(TempCluster::shared());
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {SCHEMA}; SET search_path = {SCHEMA}"
        ))
        .await
        .unwrap();
    client.batch_execute(FIXTURE).await.unwrap();
    db
}

/// A working folder (the bridge's cwd, with a config.toml) holding a Strapi project folder
/// `strapi/` with a `.env`.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    /// `config.toml` names this database's slot and publication (so tests on the shared
    /// cluster do not share them), plus `database` keys and `sections` of its own.
    fn new(db: &TestDb<'_>, database: &str, sections: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("strapi")).unwrap();
        let toml = format!(
            "[database]\nslot = \"{}\"\npublication = \"{}\"\n{database}\n{sections}\n",
            db.slot(),
            db.publication()
        );
        std::fs::write(dir.path().join("config.toml"), toml).unwrap();
        Project { dir }
    }

    fn cwd(&self) -> &Path {
        self.dir.path()
    }

    fn strapi_dir(&self) -> PathBuf {
        self.dir.path().join("strapi")
    }

    fn env_path(&self) -> String {
        self.strapi_dir().join(".env").display().to_string()
    }

    fn write_env(&self, text: &str) {
        std::fs::write(self.strapi_dir().join(".env"), text).unwrap();
    }
}

/// A Strapi project's `.env` for `db` on the shared cluster (as `strapi new` writes it, plus
/// the DATABASE_* lines of a PostgreSQL project), with `password` and `ssl`.
fn strapi_env(db: &TestDb<'_>, password: &str, ssl: bool, jwt: bool) -> String {
    let mut env = format!(
        "HOST=0.0.0.0\nPORT=1337\nAPP_KEYS=\"a,b\"\nADMIN_JWT_SECRET=admin-only\n\
         TRANSFER_TOKEN_SALT=transfer-only\n\
         # Database\n\
         DATABASE_CLIENT=postgres\n\
         DATABASE_HOST=127.0.0.1\n\
         DATABASE_PORT={port}\n\
         DATABASE_NAME={name}\n\
         DATABASE_USERNAME={SUPERUSER}\n\
         DATABASE_PASSWORD='{password}'\n\
         DATABASE_SSL={ssl}\n\
         DATABASE_SCHEMA={SCHEMA}\n\
         API_TOKEN_SALT={API_TOKEN_SALT}\n",
        port = db.cluster().port(),
        name = db.name(),
    );
    if jwt {
        env.push_str(&format!("JWT_SECRET={JWT_SECRET}\n"));
    }
    env
}

/// `check`'s line naming the database and where its address came from.
fn configuration_line(out: &str) -> &str {
    out.lines()
        .find(|l| l.contains("configuration: database"))
        .unwrap_or_else(|| panic!("no configuration line in:\n{out}"))
}

#[tokio::test]
async fn check_and_setup_read_every_setting_from_the_strapi_project_env() {
    let db = strapi_db().await;
    // config.toml points elsewhere; the project's .env wins over it.
    let project = Project::new(
        &db,
        "url = \"postgres://nobody:nothing@127.0.0.1:1/nowhere\"\nschema = \"public\"",
        "[auth]\njwt_secret = \"from-config-toml\"\napi_token_salt = \"from-config-toml\"",
    );
    project.write_env(&strapi_env(&db, SUPERUSER_PASSWORD, false, true));
    let dir = project.strapi_dir().display().to_string();

    let setup = bridge_output(project.cwd(), &["setup", "--strapi-dir", &dir], &[]).await;
    assert!(
        setup.status.success(),
        "setup: {}{}",
        stdout(&setup),
        stderr(&setup)
    );
    assert!(
        stdout(&setup).contains(&format!("created publication {}", db.publication())),
        "{}",
        stdout(&setup)
    );
    assert!(
        stdout(&setup).contains(&format!("replica identity full on {SCHEMA}.messages")),
        "{}",
        stdout(&setup)
    );

    let check = bridge_output(project.cwd(), &["check", "--strapi-dir", &dir], &[]).await;
    let out = stdout(&check);
    assert!(
        check.status.success(),
        "check failed:\n{out}{}",
        stderr(&check)
    );
    assert_eq!(
        configuration_line(&out).trim(),
        format!(
            "ok       configuration: database {SUPERUSER}@127.0.0.1:{}/{} \
             (from DATABASE_HOST/PORT/NAME/USERNAME/PASSWORD from {}), slot {}, publication {}",
            db.cluster().port(),
            db.name(),
            project.env_path(),
            db.slot(),
            db.publication()
        )
    );
    // The content types were found in DATABASE_SCHEMA, and the tables are published there.
    assert!(out.contains("api::message.message"), "{out}");
    assert!(
        out.contains("Strapi tables the bridge reads are published") && !out.contains("misses"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "JWT secret: JWT_SECRET from {}",
            project.env_path()
        )),
        "{out}"
    );
    assert!(out.contains("API_TOKEN_SALT is set"), "{out}");
    // Nothing configured for content types: said once, with the fix.
    assert_eq!(
        out.matches("no content types configured").count(),
        1,
        "{out}"
    );
    assert!(out.contains("--content-types '*'"), "{out}");
    for secret in [JWT_SECRET, API_TOKEN_SALT, SUPERUSER_PASSWORD] {
        assert!(!out.contains(secret), "check printed a secret:\n{out}");
        assert!(!stderr(&check).contains(secret), "check logged a secret");
    }
}

#[tokio::test]
async fn flags_beat_the_environment_which_beats_the_project_env() {
    let db = strapi_db().await;
    let project = Project::new(&db, "", "");
    let dir = project.strapi_dir().display().to_string();
    let right_url = db.cluster().superuser_url(db.name());
    let wrong_url = db
        .cluster()
        .url(SUPERUSER, "wrong-password", db.name(), "sslmode=disable");
    // The project's .env alone: a wrong password, TLS on (the cluster has none), no JWT secret.
    project.write_env(&strapi_env(&db, "wrong-password", true, false));
    let check = bridge_output(project.cwd(), &["check", "--strapi-dir", &dir], &[]).await;
    let out = stdout(&check);
    assert_eq!(check.status.code(), Some(1), "{out}");
    assert!(out.contains("cannot connect"), "{out}");
    // A missing JWT_SECRET is reported with where to find it.
    let jwt = out
        .lines()
        .skip_while(|l| !l.contains("JWT_SECRET is not set"))
        .take(2)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(jwt.contains("--strapi-dir"), "{out}");
    assert!(jwt.contains(".env"), "{out}");

    // The process environment overrides the .env, variable by variable.
    let env = [
        ("DATABASE_PASSWORD", SUPERUSER_PASSWORD),
        ("DATABASE_SSL", "false"),
        ("JWT_SECRET", "from-the-environment"),
    ];
    let setup = bridge_output(project.cwd(), &["setup", "--strapi-dir", &dir], &env).await;
    assert!(
        setup.status.success(),
        "{}{}",
        stdout(&setup),
        stderr(&setup)
    );
    let check = bridge_output(project.cwd(), &["check", "--strapi-dir", &dir], &env).await;
    let out = stdout(&check);
    assert!(check.status.success(), "{out}{}", stderr(&check));
    assert!(
        configuration_line(&out).contains(&format!(
            "{SUPERUSER}@127.0.0.1:{}/{}",
            db.cluster().port(),
            db.name()
        )),
        "{out}"
    );
    assert!(
        out.contains("JWT secret: JWT_SECRET from the environment"),
        "{out}"
    );
    assert!(
        !out.contains("from-the-environment"),
        "the secret was printed:\n{out}"
    );

    // DATABASE_URL in the environment beats the .env's DATABASE_HOST/...
    let env = [("DATABASE_URL", wrong_url.as_str())];
    let check = bridge_output(project.cwd(), &["check", "--strapi-dir", &dir], &env).await;
    let out = stdout(&check);
    assert_eq!(check.status.code(), Some(1), "{out}");
    assert!(
        configuration_line(&out).contains("(from DATABASE_URL from the environment)"),
        "{out}"
    );
    assert!(out.contains("cannot connect"), "{out}");

    // ... and --database-url beats it; --content-types beats config.toml's (absent) setting.
    let check = bridge_output(
        project.cwd(),
        &[
            "check",
            "--strapi-dir",
            &dir,
            "--database-url",
            &right_url,
            "--content-types",
            "message",
        ],
        &env,
    )
    .await;
    let out = stdout(&check);
    assert!(check.status.success(), "{out}{}", stderr(&check));
    assert!(
        configuration_line(&out).contains("(from --database-url)"),
        "{out}"
    );
    let message_line = out
        .lines()
        .find(|l| l.contains("api::message.message"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(message_line.contains("events: "), "{message_line}");
    let chat_line = out
        .lines()
        .find(|l| l.contains("api::chat.chat"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(chat_line.contains("no events"), "{chat_line}");
    assert!(!out.contains("no content types configured"), "{out}");
}

#[tokio::test]
async fn a_sqlite_project_is_refused_with_a_clear_message() {
    let cwd = tempfile::tempdir().unwrap();
    let strapi = cwd.path().join("strapi");
    std::fs::create_dir(&strapi).unwrap();
    std::fs::write(
        strapi.join(".env"),
        "DATABASE_CLIENT=sqlite\nDATABASE_FILENAME=.tmp/data.db\nJWT_SECRET=x\n",
    )
    .unwrap();
    let dir = strapi.display().to_string();
    for command in ["check", "run", "setup"] {
        let output = bridge_output(cwd.path(), &[command, "--strapi-dir", &dir], &[]).await;
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{command}: {err}");
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("configuration error: DATABASE_CLIENT from ")
                && first.contains(&format!("{}", strapi.join(".env").display()))
                && first.contains("\"sqlite\"")
                && first.contains("must run on PostgreSQL (DATABASE_CLIENT=postgres)"),
            "{command}: {err}"
        );
    }
}

#[tokio::test]
async fn run_from_a_strapi_folder_without_content_types_starts_and_says_it_emits_nothing() {
    let db = strapi_db().await;
    let project = Project::new(&db, "", "");
    project.write_env(&strapi_env(&db, SUPERUSER_PASSWORD, false, true));
    let dir = project.strapi_dir().display().to_string();
    let setup = bridge_output(project.cwd(), &["setup", "--strapi-dir", &dir], &[]).await;
    assert!(
        setup.status.success(),
        "{}{}",
        stdout(&setup),
        stderr(&setup)
    );

    let addr = format!("127.0.0.1:{}", free_port());
    let mut run = Running::spawn(bridge(
        project.cwd(),
        &["run", "--strapi-dir", &dir, "--listen", &addr],
        &[],
    ));
    wait::until("/readyz to answer 200", DEFAULT_TIMEOUT, || {
        let addr = addr.clone();
        async move { http_status(&addr, "/readyz").await == Some(200) }
    })
    .await;

    // A data change emits nothing; a custom emit after it still goes out, so it is the first
    // thing the client receives.
    let mut client = SioClient::connected_url(format!("http://{addr}/"), json!({})).await;
    let sql = db.client().await;
    sql.batch_execute(&format!(
        "INSERT INTO {SCHEMA}.messages (text, created_at, updated_at, published_at) \
         VALUES ('not sent', now(), now(), now())"
    ))
    .await
    .unwrap();
    sql.batch_execute(
        "SELECT pg_logical_emit_message(true, 'strapi_io', '{\"raw\":\"marker\",\"data\":1}')",
    )
    .await
    .unwrap();
    let (name, data) = client.next_event(DEFAULT_TIMEOUT).await;
    assert_eq!((name.as_str(), data), ("marker", json!(1)));
    client.close().await;

    run.terminate();
    let status = run.exit_status().await;
    let log = run.stderr_text();
    assert!(status.success(), "run exited with {status}:\n{log}");
    assert_eq!(
        log.matches("content_types is not set: no data events are sent")
            .count(),
        1,
        "{log}"
    );
    for secret in [JWT_SECRET, API_TOKEN_SALT, SUPERUSER_PASSWORD] {
        assert!(!log.contains(secret), "a secret was logged:\n{log}");
    }
}
