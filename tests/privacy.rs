//! What never leaves the bridge, and what no database role can make it send (issue 12): private
//! attributes as Strapi's sanitizer hides them, a replayed older schema, `admin::` types,
//! secrets in `tail`, who may call `pg_logical_emit_message` and what its messages may pose
//! as, and events larger than `io.max_event_bytes`. Real PostgreSQL and real Socket.IO clients.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use strapi_io_bridge::check::{self, Level};
use strapi_io_bridge::config::{Config, EnvVars, RawConfig, Sources};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::bridge::{
    API_TOKEN_SALT, Bridge, FIXTURE, FULL_ACCESS_TOKEN, JWT_SECRET, StrapiDb,
};
use crate::support::client::{Got, Inbox, NodeClient, SioClient, marker};
use crate::support::pg::{TempCluster, TestDb};
use crate::support::wait;

/// A configuration from `toml` with the fixture's secrets and, when given, a Strapi project
/// folder (`--strapi-dir`); the database is set by the caller.
fn resolve(toml: &str, strapi_dir: Option<&Path>) -> Config {
    let file = RawConfig::parse(toml, Path::new("test.toml")).unwrap();
    let env = [
        ("JWT_SECRET".to_owned(), JWT_SECRET.to_owned()),
        ("API_TOKEN_SALT".to_owned(), API_TOKEN_SALT.to_owned()),
    ];
    Config::resolve(&Sources {
        env: EnvVars::new(env.into_iter().collect(), "the test"),
        strapi_dir: strapi_dir.map(Path::to_owned),
        file,
        file_path: "test.toml".into(),
        ..Sources::default()
    })
    .unwrap()
}

/// `StrapiDb::config` with a Strapi project folder.
fn config_with_strapi_dir(db: &StrapiDb<'_>, toml: &str, strapi_dir: &Path) -> Config {
    let mut cfg = resolve(toml, Some(strapi_dir));
    cfg.database = db.db.config();
    cfg
}

/// Changes `api::message.message` in the stored content-type schema: `path` below it is set to
/// the JSON `value`.
fn schema_edit(path: &str, value: &str) -> String {
    format!(
        "UPDATE strapi_core_store_settings \
            SET value = jsonb_set(value::jsonb, '{{api::message.message,{path}}}', '{value}')::text \
          WHERE key = 'strapi_content_types_schema'"
    )
}

fn attributes(event: &Value) -> &serde_json::Map<String, Value> {
    event["data"]["attributes"]
        .as_object()
        .unwrap_or_else(|| panic!("no attributes in {event}"))
}

#[tokio::test]
async fn private_attributes_never_leave_as_strapis_sanitizer_hides_them() {
    // options.privateAttributes and a truthy non-boolean `private` in the schema row;
    // `[strapi] private_attributes` and config/api.js for the site-wide list.
    let db = StrapiDb::new(&format!(
        "{}; {}",
        schema_edit("options,privateAttributes", r#"["likes"]"#),
        schema_edit("attributes,body,private", r#""yes""#),
    ))
    .await;
    let strapi = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(strapi.path().join("config")).unwrap();
    std::fs::write(
        strapi.path().join("config/api.js"),
        "module.exports = {\n  responses: { privateAttributes: ['ratio'] },\n  rest: { defaultLimit: 25 },\n};\n",
    )
    .unwrap();
    let cfg = config_with_strapi_dir(
        &db,
        "content_types = \"*\"\n[strapi]\nprivate_attributes = [\"displayTitle\"]\n",
        strapi.path(),
    );
    let bridge = Bridge::start(cfg.clone()).await;
    let mut public = SioClient::connected(bridge.addr, json!({})).await;
    // The npm client too, as Strapi users run it.
    let mut node = NodeClient::connected(bridge.addr, &["--events", "3"]).await;

    db.sql(
        "INSERT INTO messages (id, text, secret, likes, display_title, body, ratio, created_at, updated_at, published_at) \
         VALUES (100, 'hello', 'top', 7, 'Title', 'the body', 0.5, now(), now(), now())",
    )
    .await;
    db.sql("DELETE FROM messages WHERE id = 100").await;
    marker(&db, 1).await;
    let inboxes: [&mut Inbox; 2] = [&mut public, &mut node];
    for inbox in inboxes {
        for action in ["message:create", "message:delete"] {
            let event = inbox.event(action).await;
            let attrs = attributes(&event);
            assert_eq!(attrs["text"], "hello", "{event}");
            assert!(attrs.contains_key("createdAt"), "{event}");
            for hidden in ["secret", "likes", "body", "displayTitle", "ratio"] {
                assert!(
                    !attrs.contains_key(hidden),
                    "{action} carries {hidden}: {event}"
                );
            }
        }
        inbox.marker(1).await;
    }

    // check says where the site-wide list came from.
    let report = check::check(&cfg).await.to_string();
    assert!(
        report.contains("private attributes hidden in every content type ([strapi] private_attributes): displayTitle, ratio"),
        "{report}"
    );
    assert!(report.contains("config/api.js"), "{report}");
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn check_says_when_the_site_wide_private_attributes_are_unknown() {
    let db = StrapiDb::new("").await;
    let strapi = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(strapi.path().join("config")).unwrap();
    std::fs::write(
        strapi.path().join("config/api.js"),
        "module.exports = ({ env }) => ({ responses: { privateAttributes: env.array('HIDDEN') } });\n",
    )
    .unwrap();
    let cfg = config_with_strapi_dir(&db, "", strapi.path());
    let report = check::check(&cfg).await;
    let finding = report
        .findings
        .iter()
        .find(|f| {
            f.message
                .contains("responses.privateAttributes cannot be read")
        })
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(finding.level, Level::Warning, "{report}");
    assert!(
        finding
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("[strapi] private_attributes")),
        "{report}"
    );
    // Without the folder the key is empty and check says the list is not in the database.
    let report = check::check(&db.config("")).await.to_string();
    assert!(
        report.contains("[strapi] private_attributes is empty: Strapi's site-wide responses.privateAttributes (config/api.js) is not in the database"),
        "{report}"
    );
}

#[tokio::test]
async fn a_schema_row_replayed_from_before_a_field_was_made_private_never_republishes_it() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config("content_types = \"*\"")).await;
    let mut public = SioClient::connected(bridge.addr, json!({})).await;
    let insert = |id: i64| {
        format!(
            "INSERT INTO messages (id, text, likes, created_at, updated_at, published_at) \
             VALUES ({id}, 'm{id}', 42, now(), now(), now())"
        )
    };
    // The schema as it was: likes public.
    db.sql(&insert(101)).await;
    let before = public.event("message:create").await;
    assert_eq!(attributes(&before)["likes"], 42, "{before}");
    // Made private in Strapi, then the older schema row comes again (as a replay after a
    // restart brings it, or a rollback of the deploy): likes stays private.
    db.sql(&schema_edit("options,privateAttributes", r#"["likes"]"#))
        .await;
    db.sql(&insert(102)).await;
    db.sql(&schema_edit("options,privateAttributes", "[]"))
        .await;
    db.sql(&insert(103)).await;
    marker(&db, 2).await;
    for id in [102, 103] {
        let event = public.event("message:create").await;
        assert_eq!(event["data"]["id"], id, "{event}");
        assert!(
            !attributes(&event).contains_key("likes"),
            "likes was published again: {event}"
        );
    }
    public.marker(2).await;
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn admin_content_types_are_never_emitted_even_when_named() {
    let db = StrapiDb::new("").await;
    let cfg = db.config("[content_types]\nmessage = \"*\"\n\"admin::api-token\" = \"*\"\n");
    let bridge = Bridge::start(cfg.clone()).await;
    // A full-access token reads every content type the bridge emits.
    let mut full = SioClient::connected(
        bridge.addr,
        json!({ "token": FULL_ACCESS_TOKEN, "strategy": "apiToken" }),
    )
    .await;
    db.sql("UPDATE strapi_api_tokens SET description = 'renamed', access_key = 'new-key-hash' WHERE id = 3")
        .await;
    db.sql(
        "INSERT INTO messages (id, text, created_at, updated_at, published_at) \
         VALUES (110, 'after', now(), now(), now())",
    )
    .await;
    marker(&db, 3).await;
    // The token row never arrives (it would carry accessKey); the message does.
    let event = full.event("message:create").await;
    assert_eq!(event["data"]["id"], 110, "{event}");
    full.marker(3).await;

    let report = check::check(&cfg).await;
    let finding = report
        .findings
        .iter()
        .find(|f| f.message.contains("admin::api-token"))
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(finding.level, Level::Warning, "{report}");
    assert!(finding.message.contains("never emitted"), "{report}");
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn an_event_larger_than_max_event_bytes_goes_out_with_its_id_only() {
    let db = StrapiDb::new("").await;
    let bridge =
        Bridge::start(db.config("content_types = \"*\"\n[io]\nmax_event_bytes = 2000\n")).await;
    let mut public = SioClient::connected(bridge.addr, json!({})).await;
    db.sql(&format!(
        "INSERT INTO messages (id, text, body, created_at, updated_at, published_at) \
         VALUES (120, 'big', '{}', now(), now(), now())",
        "x".repeat(5000)
    ))
    .await;
    db.sql(
        "INSERT INTO messages (id, text, body, created_at, updated_at, published_at) \
         VALUES (121, 'small', 'short', now(), now(), now())",
    )
    .await;
    // A custom message that large has no id to keep: not sent.
    db.sql(&format!(
        "SELECT pg_logical_emit_message(true, 'strapi_io', '{{\"raw\":\"huge\",\"data\":\"{}\"}}')",
        "y".repeat(5000)
    ))
    .await;
    marker(&db, 4).await;
    public
        .expect(
            "message:create",
            json!({"data": {"id": 120, "attributes": {}}, "meta": {"truncated": true}}),
        )
        .await;
    let small = public.event("message:create").await;
    assert_eq!(attributes(&small)["body"], "short", "{small}");
    assert_eq!(small["meta"], json!({}), "{small}");
    public.marker(4).await;
    bridge.stop().await.unwrap();
}

fn emit_sql(body: &str) -> String {
    format!(
        "SELECT pg_logical_emit_message(true, 'strapi_io', '{}')",
        body.replace('\'', "''")
    )
}

#[tokio::test]
async fn a_custom_message_cannot_forge_a_data_event_unless_allowed() {
    let db = StrapiDb::new("").await;
    let forged = [
        r#"{"emit":"api::message.message.create","data":{"data":{"id":1,"attributes":{"text":"<img src=x onerror=alert(1)>"}},"meta":{}}}"#,
        r#"{"raw":"message:update","data":{"data":{"id":1,"attributes":{}},"meta":{}},"room":"Public"}"#,
    ];
    let bridge = Bridge::start(db.config("content_types = \"*\"")).await;
    let mut public = SioClient::connected(bridge.addr, json!({})).await;
    for body in forged {
        db.sql(&emit_sql(body)).await;
    }
    // A custom action is still fine.
    db.sql(&emit_sql(
        r#"{"emit":"api::message.message.someCustomAction","data":1}"#,
    ))
    .await;
    marker(&db, 5).await;
    public.expect("message:someCustomAction", json!(1)).await;
    public.marker(5).await;
    bridge.stop().await.unwrap();

    // Allowed by the operator: they go out.
    let bridge =
        Bridge::start(db.config("content_types = \"*\"\n[messages]\nallow_data_actions = true\n"))
            .await;
    let mut public = SioClient::connected(bridge.addr, json!({})).await;
    for body in forged {
        db.sql(&emit_sql(body)).await;
    }
    marker(&db, 6).await;
    // The slot's confirmed position trails by the replay window, so the restarted bridge may
    // first replay the first run's custom action and marker to this client, which connected
    // without an offset (at least once); nothing else may come before the forged create.
    let created = loop {
        match public.next().await {
            Got::Event(name, mut args) if name == "message:create" && args.len() == 1 => {
                break args.remove(0);
            }
            Got::Event(name, args)
                if name == "message:someCustomAction" && args == [json!(1)]
                    || name == "marker" && args == [json!(5)] => {}
            other => panic!("expected message:create, got {other:?}"),
        }
    };
    assert_eq!(created["data"]["id"], 1, "{created}");
    public.event("message:update").await;
    public.marker(6).await;
    bridge.stop().await.unwrap();
}

/// Runs `sql` as `role` (password `pw`); `Err` carries the SQLSTATE.
async fn run_as(db: &TestDb<'_>, role: &str, sql: &str) -> Result<(), String> {
    let url = db.cluster().url(role, "pw", db.name(), "sslmode=disable");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect as {role}: {e}"));
    tokio::spawn(connection);
    client
        .batch_execute(sql)
        .await
        .map_err(|e| e.code().map(|c| c.code().to_owned()).unwrap_or_default())
}

#[tokio::test]
async fn setup_takes_pg_logical_emit_message_away_from_public_and_check_warns_until_then() {
    let db = TestDb::new(TempCluster::shared());
    let owner = format!("{}_strapi", db.name());
    let other = format!("{}_reporting", db.name());
    db.create_role(&owner, "pw", "", false);
    db.create_role(&other, "pw", "", false);
    db.psql(&format!(
        "ALTER DATABASE {} OWNER TO {owner}; ALTER SCHEMA public OWNER TO {owner}",
        db.name()
    ));
    // Strapi's role owns its tables, as when Strapi creates them.
    run_as(&db, &owner, FIXTURE).await.unwrap();
    let emit = emit_sql(r#"{"raw":"x"}"#);
    assert_eq!(
        run_as(&db, &other, &emit).await,
        Ok(()),
        "PUBLIC may call it"
    );

    let owner_url = db.cluster().url(&owner, "pw", db.name(), "sslmode=disable");
    let mut as_owner = resolve("", None);
    as_owner.database = db.config_for(&owner_url);
    let report = check::check(&as_owner).await.to_string();
    assert!(
        report.contains("every database role may call pg_logical_emit_message(boolean,text,"),
        "{report}"
    );

    // Strapi's own role cannot revoke it: setup prints what a superuser must run.
    let notices = check::setup(&as_owner).await.unwrap().join("\n");
    assert!(notices.contains("as a superuser run: GRANT EXECUTE ON FUNCTION pg_catalog.pg_logical_emit_message(boolean,text,"), "{notices}");
    assert_eq!(
        notices.matches("FROM PUBLIC").count(),
        2,
        "both overloads (text and bytea): {notices}"
    );
    assert_eq!(run_as(&db, &other, &emit).await, Ok(()));

    // A superuser's setup does it.
    let mut as_superuser = as_owner.clone();
    as_superuser.database = db.config();
    let notices = check::setup(&as_superuser).await.unwrap().join("\n");
    assert_eq!(
        notices.matches("custom events: REVOKE EXECUTE").count(),
        2,
        "{notices}"
    );
    assert!(
        notices.contains(&format!("TO {owner}")),
        "granted to Strapi's role: {notices}"
    );
    assert_eq!(
        run_as(&db, &other, &emit).await,
        Err("42501".to_owned()),
        "another role may no longer call it"
    );
    assert_eq!(
        run_as(&db, &owner, &emit).await,
        Ok(()),
        "Strapi's role still may"
    );
    let report = check::check(&as_owner).await.to_string();
    assert!(!report.contains("every database role may call"), "{report}");
    assert!(
        report.contains(&format!(
            "pg_logical_emit_message: only {owner} and superusers may send custom events"
        )),
        "{report}"
    );
    // Idempotent.
    let notices = check::setup(&as_superuser).await.unwrap();
    assert!(
        notices.iter().all(|n| !n.contains("custom events")),
        "{notices:?}"
    );
}

/// A `strapi-io-bridge tail` process and its output lines.
struct Tail {
    _child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Tail {
    fn start(config: &Path, show_secrets: bool) -> Tail {
        let mut command = Command::new(env!("CARGO_BIN_EXE_strapi-io-bridge"));
        for var in [
            "DATABASE_URL",
            "JWT_SECRET",
            "API_TOKEN_SALT",
            "STRAPI_IO_ADMIN_TOKEN",
        ] {
            command.env_remove(var);
        }
        command.arg("tail").arg("--config").arg(config);
        if show_secrets {
            command.arg("--show-secrets");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Tail {
            _child: child,
            lines,
        }
    }

    /// Every line up to the commit of the transaction that touched `messages`.
    async fn until_messages_commit(&mut self) -> String {
        let mut out = String::new();
        let mut seen = false;
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
                .await
                .expect("tail prints within 30 s")
                .unwrap()
                .expect("tail keeps running");
            let v: Value = serde_json::from_str(&line).unwrap();
            seen |= v["table"] == "public.messages";
            out.push_str(&line);
            out.push('\n');
            if seen && v["type"] == "commit" {
                return out;
            }
        }
    }
}

#[tokio::test]
async fn tail_masks_password_hashes_tokens_and_private_attributes_unless_asked() {
    let db = StrapiDb::new("").await;
    let dir = tempfile::tempdir().unwrap();
    let config = |slot: &str| {
        let path = dir.path().join(format!("{slot}.toml"));
        std::fs::write(
            &path,
            format!(
                "[database]\nurl = \"{}\"\nslot = \"{slot}\"\npublication = \"{}\"\n",
                db.db.cluster().superuser_url(db.db.name()),
                db.db.publication()
            ),
        )
        .unwrap();
        path
    };
    // admin:: tables are not published by setup; published here to show tail masks them too.
    db.sql(&format!(
        "ALTER PUBLICATION {} ADD TABLE admin_users",
        db.db.publication()
    ))
    .await;
    let masked_slot = format!("{}_masked", db.db.slot());
    let shown_slot = format!("{}_shown", db.db.slot());
    let mut masked = Tail::start(&config(&masked_slot), false);
    let mut shown = Tail::start(&config(&shown_slot), true);
    for slot in [&masked_slot, &shown_slot] {
        wait::until("tail's slot to stream", wait::DEFAULT_TIMEOUT, || async {
            db.db.psql(&format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}' AND active \
                 AND confirmed_flush_lsn IS NOT NULL"
            )) == "1"
        })
        .await;
    }
    db.sql(
        "UPDATE up_users SET password = 'hash-SECRET1', reset_password_token = 'reset-SECRET2', \
           confirmation_token = 'confirm-SECRET3' WHERE id = 1; \
         UPDATE admin_users SET password = 'admin-SECRET4' WHERE id = 1; \
         UPDATE strapi_api_tokens SET access_key = 'key-SECRET5' WHERE id = 3; \
         UPDATE messages SET secret = 'private-SECRET6', text = 'visible text' WHERE id = 1",
    )
    .await;
    let masked = masked.until_messages_commit().await;
    let shown = shown.until_messages_commit().await;
    for n in 1..=6 {
        let secret = format!("SECRET{n}");
        assert!(!masked.contains(&secret), "{secret} printed: {masked}");
        assert!(
            shown.contains(&secret),
            "--show-secrets hides {secret}: {shown}"
        );
    }
    // The old row of messages (REPLICA IDENTITY FULL) is masked too.
    assert!(!masked.contains("top-secret"), "{masked}");
    assert!(masked.contains("visible text"), "{masked}");
    assert!(
        masked.contains(r#""password":{"redacted":true}"#),
        "{masked}"
    );
    assert!(
        masked.contains(r#""access_key":{"redacted":true}"#),
        "{masked}"
    );
}

#[tokio::test]
async fn after_a_restart_the_replayed_older_schema_row_never_republishes_a_private_field() {
    use strapi_io_bridge::health::Health;
    use strapi_io_bridge::replication::{self, Progress};
    use tokio_util::sync::CancellationToken;

    let db = StrapiDb::new("").await;
    let cfg = db.config("content_types = \"*\"");
    let slot = cfg.database.slot.clone();
    // The bridge's slot, confirmed before the writes below (the bridge was stopped then).
    db.sql(&format!(
        "SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"
    ))
    .await;
    // Strapi boots with the schema as it was (likes public) and writes an entry; then a
    // deploy makes likes private. The bridge, started now, loads the schema with likes
    // private, and replays the older schema row and the entry from the slot.
    db.sql(&schema_edit("options,privateAttributes", "[]"))
        .await;
    // Where a client that was connected before the deploy had got to.
    let before: u64 = {
        let lsn = db.db.psql("SELECT pg_current_wal_lsn()");
        let (hi, lo) = lsn.split_once('/').unwrap();
        (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
    };
    db.sql(
        "INSERT INTO messages (id, text, likes, created_at, updated_at, published_at) \
         VALUES (130, 'before the deploy', 42, now(), now(), now())",
    )
    .await;
    db.sql(&schema_edit("options,privateAttributes", r#"["likes"]"#))
        .await;

    // Another connection holds the slot (as a second instance would) without confirming
    // anything, so the bridge waits for it while a client connects.
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let (_progress, progress_rx) = tokio::sync::watch::channel(Progress::default());
    let hold = CancellationToken::new();
    let holder = tokio::spawn(replication::run(
        cfg.database.clone(),
        tx,
        progress_rx,
        Health::new(),
        hold.clone(),
    ));
    let active =
        format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}' AND active");
    wait::until("the holder to stream", wait::DEFAULT_TIMEOUT, || async {
        db.db.psql(&active) == "1"
    })
    .await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let bridge = tokio::spawn(strapi_io_bridge::pipeline::run(cfg, listener, stop.clone()));
    let healthz = format!("http://{addr}/healthz");
    wait::until("the bridge to listen", wait::DEFAULT_TIMEOUT, || async {
        crate::support::bridge::reqwest_get(&healthz)
            .await
            .is_some()
    })
    .await;
    // The holder lets go; the bridge takes the slot and rebuilds its replay buffer from it
    // (handshakes wait for that), replaying the older schema row and the entry.
    hold.cancel();
    holder.await.unwrap().unwrap();
    drop(rx);
    let metrics = format!("http://{addr}/metrics");
    wait::until(
        "the replay buffer rebuilt",
        wait::DEFAULT_TIMEOUT * 2,
        || async {
            crate::support::bridge::reqwest_get(&metrics)
                .await
                .is_some_and(|(_, body)| {
                    body.lines().any(|l| {
                        l.strip_prefix("strapi_io_replay_rebuild_events ")
                            .and_then(|v| v.trim().parse::<f64>().ok())
                            .is_some_and(|v| v >= 1.0)
                    })
                })
        },
    )
    .await;
    // A client connected before the deploy resumes from where it was and is sent the entry.
    let offset = format!("{before:016X}-00000000");
    let mut public = SioClient::connect(addr, json!({ "offset": offset })).await;
    assert!(
        matches!(public.next().await, crate::support::client::Got::Connected),
        "the resuming client connects"
    );
    marker(&db, 7).await;
    let event = public.event("message:create").await;
    assert_eq!(event["data"]["id"], 130, "{event}");
    assert!(
        !attributes(&event).contains_key("likes"),
        "the replayed schema published likes again: {event}"
    );
    public.marker(7).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), bridge)
        .await
        .expect("the bridge stops within 30 s")
        .unwrap()
        .unwrap();
}
