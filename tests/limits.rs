//! Bounds on the SQL session (timeouts, keepalives), publication DDL that never stalls the
//! event path, the HTTP emit API's permission filter, and the suite's own completeness.

use std::time::Duration;

use serde_json::json;
use strapi_io_bridge::config::DatabaseConfig;
use strapi_io_bridge::pg;

use crate::support::bridge::{ALICE, Bridge, EDDIE, FULL_ACCESS_TOKEN, StrapiDb, http_client, jwt};
use crate::support::client::{SioClient, marker};
use crate::support::pg::{SUPERUSER, SUPERUSER_PASSWORD, TempCluster, TestDb};
use crate::support::wait;

fn config(url: &str) -> DatabaseConfig {
    DatabaseConfig::from_url(url, "DATABASE_URL").expect("a valid URL")
}

async fn show(client: &tokio_postgres::Client, name: &str) -> String {
    client
        .query_one(&format!("SHOW {name}"), &[])
        .await
        .unwrap_or_else(|e| panic!("SHOW {name}: {e}"))
        .get(0)
}

#[tokio::test]
async fn sql_sessions_have_timeouts_unless_the_url_sets_them() {
    let cluster = TempCluster::shared();
    let db = TestDb::new(cluster);
    let client = pg::connect(&db.config()).await.expect("connect");
    assert_eq!(show(&client, "statement_timeout").await, "1min");
    assert_eq!(show(&client, "lock_timeout").await, "10s");

    let url = cluster.url(
        SUPERUSER,
        SUPERUSER_PASSWORD,
        db.name(),
        "sslmode=disable&options=-c%20statement_timeout%3D5s",
    );
    let client = pg::connect(&config(&url)).await.expect("connect");
    assert_eq!(show(&client, "statement_timeout").await, "5s");
    assert_eq!(show(&client, "lock_timeout").await, "10s");
}

#[test]
fn tcp_keepalives_and_timeouts_default_unless_the_url_sets_them() {
    let c = pg::session_config(&config("postgres://u:p@db.example:5432/strapi"));
    assert_eq!(c.get_connect_timeout(), Some(&pg::DEFAULT_CONNECT_TIMEOUT));
    assert!(c.get_keepalives());
    assert_eq!(c.get_keepalives_idle(), pg::DEFAULT_KEEPALIVES_IDLE);
    assert_eq!(
        c.get_keepalives_interval(),
        Some(pg::DEFAULT_KEEPALIVES_INTERVAL)
    );
    assert_eq!(
        c.get_keepalives_retries(),
        Some(pg::DEFAULT_KEEPALIVES_RETRIES)
    );
    assert_eq!(
        c.get_tcp_user_timeout(),
        Some(&pg::DEFAULT_TCP_USER_TIMEOUT)
    );

    let c = pg::session_config(&config(
        "postgres://u:p@db.example:5432/strapi?connect_timeout=3&keepalives_idle=7&tcp_user_timeout=9",
    ));
    assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(3)));
    assert_eq!(c.get_keepalives_idle(), Duration::from_secs(7));
    // tokio-postgres reads tcp_user_timeout in seconds (libpq: milliseconds).
    assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(9)));
}

#[tokio::test]
async fn connecting_to_a_server_that_never_answers_gives_up_after_the_connect_timeout() {
    // Accepts TCP connections and never says a word (a hung server or a black-holing proxy).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let url = format!("postgres://u:p@127.0.0.1:{port}/x?sslmode=disable&connect_timeout=1");
    let err = wait::within("pg::connect to give up", Duration::from_secs(30), async {
        pg::connect(&config(&url)).await
    })
    .await
    .expect_err("nothing answers");
    assert!(err.to_string().contains("no answer within 1s"), "{err}");
    silent.abort();
}

#[tokio::test]
async fn a_new_content_table_that_strapi_holds_does_not_stall_events_and_is_published_later() {
    let db = StrapiDb::new("").await;
    db.sql(
        "CREATE TABLE notes (id serial PRIMARY KEY, body text, created_at timestamp(6), \
         updated_at timestamp(6), created_by_id integer, updated_by_id integer)",
    )
    .await;
    let bridge = Bridge::start(db.config("content_types = \"*\"")).await;
    // A full-access token reads every content type, the new one included.
    let mut reader = SioClient::connected(
        bridge.addr,
        json!({ "token": FULL_ACCESS_TOKEN, "strategy": "apiToken" }),
    )
    .await;

    // A long Strapi transaction (an export) reads notes and keeps its lock.
    let holder = db.db.client().await;
    holder
        .batch_execute("BEGIN; LOCK TABLE notes IN ACCESS SHARE MODE")
        .await
        .expect("lock notes");

    // Strapi registers the content type: the bridge wants notes in the publication with
    // REPLICA IDENTITY FULL, which needs a lock the export holds.
    db.sql(
        "UPDATE strapi_core_store_settings SET value = jsonb_set(value::jsonb, '{api::note.note}', \
           '{\"kind\":\"collectionType\",\"collectionName\":\"notes\",\"uid\":\"api::note.note\", \
             \"info\":{\"singularName\":\"note\",\"pluralName\":\"notes\",\"displayName\":\"Note\"}, \
             \"options\":{\"draftAndPublish\":false},\"pluginOptions\":{}, \
             \"attributes\":{\"body\":{\"type\":\"text\"},\"createdAt\":{\"type\":\"datetime\"}, \
               \"updatedAt\":{\"type\":\"datetime\"}}}')::text \
         WHERE key = 'strapi_content_types_schema'",
    )
    .await;
    // Events keep flowing while the table is held.
    marker(&db, 1).await;
    reader.marker(1).await;
    db.sql("UPDATE messages SET likes = 41 WHERE id = 1").await;
    reader.event("message:update").await;

    // Once the export ends, the next changes after the retry delay publish the table.
    holder.batch_execute("COMMIT").await.expect("unlock");
    let check = db.db.client().await;
    let publication = db.db.publication();
    let (db_ref, check, publication) = (&db, &check, &publication);
    let mut n = 1;
    wait::until(
        "notes to join the publication",
        Duration::from_secs(60),
        move || {
            n += 1;
            let (db, n) = (db_ref, n);
            async move {
                marker(db, n).await;
                check
                    .query_one(
                        "SELECT count(*) FROM pg_publication_tables p JOIN pg_class c \
                     ON c.relname = p.tablename WHERE p.pubname = $1 AND p.tablename = 'notes' \
                     AND c.relreplident = 'f'",
                        &[publication],
                    )
                    .await
                    .map(|r| r.get::<_, i64>(0) == 1)
                    .unwrap_or(false)
            }
        },
    )
    .await;
    db.sql("INSERT INTO notes (body, created_at, updated_at) VALUES ('first', now(), now())")
        .await;
    loop {
        let (name, data) = reader.next_event(Duration::from_secs(30)).await;
        if name == "marker" {
            continue;
        }
        assert_eq!(name, "note:create", "{data}");
        assert_eq!(data["data"]["attributes"]["body"], "first");
        break;
    }
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn the_http_emit_api_reaches_only_the_roles_that_may_read_the_type() {
    let db = StrapiDb::new("").await;
    let mut cfg = db.config("content_types = \"*\"");
    cfg.admin_token = Some(strapi_io_bridge::config::Secret::new("s3cret-admin"));
    let bridge = Bridge::start(cfg).await;
    let mut public = SioClient::connected(bridge.addr, json!({})).await;
    let mut alice = SioClient::connected(bridge.addr, json!({ "token": jwt(ALICE, false) })).await;
    let mut eddie = SioClient::connected(bridge.addr, json!({ "token": jwt(EDDIE, false) })).await;
    let http = http_client().unwrap();
    let post = |path: &str, body: &str| {
        let request = http
            .post(bridge.url(path))
            .bearer_auth("s3cret-admin")
            .header("content-type", "application/json")
            .body(body.to_owned());
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            )
        }
    };

    // Authenticated and Editor may find chats; Public may not.
    let (status, body) = post(
        "/io/emit",
        r#"{"emit":"api::chat.chat.typing","data":{"n":1}}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    alice.expect("chat:typing", json!({"n": 1})).await;
    eddie.expect("chat:typing", json!({"n": 1})).await;
    let (status, body) = post("/io/raw", r#"{"raw":"hello","data":2,"room":"Editor"}"#).await;
    assert_eq!(status, 202, "{body}");
    eddie.expect("hello", json!(2)).await;
    marker(&db, 1).await;
    public.marker(1).await;
    alice.marker(1).await;
    eddie.marker(1).await;
    bridge.stop().await.unwrap();
}

#[test]
fn every_test_file_is_a_module_of_the_test_binary() {
    // `autotests = false`: a tests/*.rs without its `mod` line in tests/main.rs never runs.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let main = std::fs::read_to_string(dir.join("main.rs")).expect("tests/main.rs");
    let modules: Vec<&str> = main
        .lines()
        .filter_map(|l| l.trim().strip_prefix("mod "))
        .filter_map(|l| l.strip_suffix(';'))
        .collect();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tests/") {
        let path = entry.expect("a directory entry").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "rs") && stem != "main" && !modules.contains(&stem)
        {
            missing.push(stem.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "tests/{{{}}}.rs are not compiled: add `mod <name>;` to tests/main.rs",
        missing.join(",")
    );
}

#[test]
fn the_test_scripts_refuse_to_skip_the_bridges_end_to_end_tests() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = |script: &str, args: &[&str], env: &[(&str, &str)]| {
        // Without cargo on PATH and with no PostgreSQL binaries, a script whose guard is missing
        // fails at its next step, with another message, instead of running the suite.
        let out = std::process::Command::new("bash")
            .arg(root.join(script))
            .args(args)
            .env_remove("CI")
            .env_remove("E2E_STRICT")
            .env_remove("E2E_WITHOUT_BRIDGE")
            .env("PATH", "/usr/bin:/bin")
            .env("PG_BIN", "/nonexistent")
            .envs(env.iter().copied())
            .output()
            .expect("bash runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run("tests/run.sh", &[], &[("E2E_WITHOUT_BRIDGE", "1")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("E2E_WITHOUT_BRIDGE=1 would skip"), "{err}");
    for env in [[("CI", "true")], [("E2E_STRICT", "1")]] {
        let (code, err) = run("tests/e2e/run.sh", &["--without-bridge"], &env);
        assert_eq!(code, Some(1), "{env:?}: {err}");
        assert!(err.contains("is refused in CI"), "{env:?}: {err}");
    }
}

#[tokio::test]
async fn a_node_route_verifying_as_the_readme_shows_accepts_the_bridges_webhooks_only() {
    use tokio::io::AsyncBufReadExt;
    const SECRET: &str = "webhook-secret-for-the-node-check";
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/verify-webhook.mjs");
    let mut node = tokio::process::Command::new("node")
        .arg(script)
        .arg(SECRET)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (.ci/run installs it)");
    let mut lines = tokio::io::BufReader::new(node.stdout.take().expect("stdout")).lines();
    let port: u16 = next_line(&mut lines)
        .await
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .expect("listening <port>");

    let db = StrapiDb::new("").await;
    let cfg = db.config(&format!(
        "[[events]]\nname = \"connection\"\nhandler = \"webhook\"\nurl = \"http://127.0.0.1:{port}/\"\n\
         [webhooks]\nsecret = \"{SECRET}\"\n"
    ));
    let bridge = Bridge::start(cfg).await;
    let _alice = SioClient::connected(bridge.addr, json!({ "token": jwt(ALICE, false) })).await;
    let got: serde_json::Value =
        serde_json::from_str(&next_line(&mut lines).await).expect("a JSON line");
    assert_eq!(got["verified"], true, "{got}");
    assert_eq!(got["body"]["event"], "connection", "{got}");
    assert_eq!(got["body"]["socket"]["userId"], ALICE, "{got}");

    // The same headers on a forged body (another user) are refused.
    let http = http_client().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        .to_string();
    let body =
        r#"{"event":"connection","args":[],"socket":{"id":"x","role":"Authenticated","userId":1}}"#;
    let sign = |ts: &str| strapi_io_bridge::io::webhook_signature(SECRET, ts, body.as_bytes());
    let forged = body.replace("\"userId\":1", "\"userId\":2");
    for (ts, signature, sent, verified) in [
        // The bridge's signature function and the README's check agree,
        (now.clone(), sign(&now), body.to_owned(), true),
        // a body changed after signing is refused,
        (now.clone(), sign(&now), forged, false),
        // and so is a signed request replayed later.
        (
            "1700000000".to_owned(),
            sign("1700000000"),
            body.to_owned(),
            false,
        ),
    ] {
        http.post(format!("http://127.0.0.1:{port}/"))
            .header("x-strapi-io-timestamp", ts)
            .header("x-strapi-io-signature", signature)
            .body(sent)
            .send()
            .await
            .expect("the node target answers");
        let got: serde_json::Value =
            serde_json::from_str(&next_line(&mut lines).await).expect("a JSON line");
        assert_eq!(got["verified"], verified, "{got}");
    }
    bridge.stop().await.unwrap();
}

/// The next line the node target prints.
async fn next_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> String {
    wait::within(
        "a line from the node target",
        Duration::from_secs(30),
        lines.next_line(),
    )
    .await
    .expect("read node's stdout")
    .expect("node is running")
}
