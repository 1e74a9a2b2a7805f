//! Access taken away is gone at once, also for connected sockets: regenerated API tokens,
//! revoked sockets with a full send buffer, expiring credentials and fresh ones, writes that
//! change nothing, and start-up and slot loss not undoing what the loaded snapshot says.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::support::bridge::{
    ALICE, BOB, Bridge, EDDIE, FULL_ACCESS_TOKEN, JWT_SECRET, READ_ONLY_TOKEN, StrapiDb,
    http_client, reqwest_get,
};
use crate::support::client::{Got, SioClient, marker};
use crate::support::wait;

const ALL: &str = "content_types = \"*\"";

async fn new_message(db: &StrapiDb<'_>, id: i64) {
    db.sql(&format!(
        "INSERT INTO messages (id, text, secret, created_at, updated_at, published_at) \
         VALUES ({id}, 'message {id}', 'private', now(), now(), now())"
    ))
    .await;
}

async fn new_chat(db: &StrapiDb<'_>, id: i64) {
    db.sql(&format!(
        "INSERT INTO chats (id, name, created_at, updated_at) VALUES ({id}, 'chat {id}', now(), now())"
    ))
    .await;
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A users-permissions JWT for `user_id` expiring at `exp` (Unix seconds).
fn jwt_until(user_id: i64, exp: i64) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "id": user_id, "iat": unix_now(), "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("sign a JWT")
}

/// The value of an unlabelled metric on `/metrics`.
async fn metric(bridge: &Bridge, name: &str) -> Option<f64> {
    let (_, text) = reqwest_get(&bridge.url("/metrics")).await?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
}

#[tokio::test]
async fn a_regenerated_api_token_cuts_off_sockets_of_the_old_key() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(ALL)).await;
    let auth = json!({ "token": READ_ONLY_TOKEN, "strategy": "apiToken" });
    let mut old_key = SioClient::connected(bridge.addr, auth.clone()).await;
    let mut public = SioClient::connected(bridge.addr, json!({})).await;

    // Strapi's "Regenerate": same id, new access_key.
    db.sql(&format!(
        "UPDATE strapi_api_tokens SET access_key = '{}' WHERE id = 1",
        "ab".repeat(64)
    ))
    .await;
    new_message(&db, 100).await;
    marker(&db, 1).await;
    assert_eq!(old_key.next().await, Got::Closed);
    public.event("message:create").await;
    public.marker(1).await;
    // And the old key is refused from now on.
    let mut again = SioClient::connect(bridge.addr, auth).await;
    assert_eq!(
        again.next().await,
        Got::ConnectError("Invalid token.".to_owned())
    );
    bridge.stop().await.unwrap();
}

/// An engine.io long-polling client that reads only when told: its socket's send buffer
/// fills up on the server while it does not poll.
struct PollingClient {
    http: reqwest::Client,
    url: String,
}

impl PollingClient {
    /// Opens a session and connects to `/` with `auth`; returns once the CONNECT was read.
    async fn connect(bridge: &Bridge, auth: Value) -> PollingClient {
        let http = http_client().expect("HTTP client");
        let base = bridge.url("/socket.io/?EIO=4&transport=polling");
        let open = http
            .get(&base)
            .send()
            .await
            .expect("open")
            .text()
            .await
            .unwrap();
        let handshake: Value = serde_json::from_str(open.strip_prefix('0').expect("OPEN packet"))
            .expect("OPEN payload");
        let sid = handshake["sid"].as_str().expect("sid").to_owned();
        let client = PollingClient {
            http,
            url: format!("{base}&sid={sid}"),
        };
        let posted = client
            .http
            .post(&client.url)
            .body(format!("40{auth}"))
            .send()
            .await
            .expect("CONNECT");
        assert!(posted.status().is_success(), "CONNECT: {}", posted.status());
        let packets = client.poll().await.expect("CONNECT answer");
        assert!(
            packets.iter().any(|p| p.starts_with("40{")),
            "not connected: {packets:?}"
        );
        client
    }

    /// One POST of a packet (e.g. an EVENT).
    async fn send(&self, packet: &str) {
        let posted = self
            .http
            .post(&self.url)
            .body(packet.to_owned())
            .send()
            .await
            .expect("POST");
        assert!(posted.status().is_success(), "POST: {}", posted.status());
    }

    /// One GET: the packets it carried; `None` when the session is gone (or nothing came
    /// within the HTTP client's timeout).
    async fn poll(&self) -> Option<Vec<String>> {
        let response = self.http.get(&self.url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = response.text().await.ok()?;
        Some(body.split('\u{1e}').map(str::to_owned).collect())
    }
}

#[tokio::test]
async fn a_revoked_socket_with_a_full_send_buffer_leaves_its_rooms_at_once() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(&format!(
        "{ALL}\n[io]\nmax_buffered_events = 4\nping_interval_ms = 120000\nping_timeout_ms = 120000\n\
         [[events]]\nname = \"chat:typing\"\nhandler = \"relay\"\nrooms = [\"Public\"]\n"
    )))
    .await;
    let bob = PollingClient::connect(
        &bridge,
        json!({ "token": crate::support::bridge::jwt(BOB, false) }),
    )
    .await;
    let mut public = SioClient::connected(bridge.addr, json!({})).await;

    // Bob does not poll: his buffer of 4 fills, the rest is dropped for him. (The control
    // client reads each message before the next: its buffer holds 4 too.)
    for id in 200..210 {
        new_message(&db, id).await;
        public.event("message:create").await;
    }
    marker(&db, 1).await;
    public.marker(1).await;
    // Bob's socket is full: its messages were dropped, or it fell behind the live stream.
    let dropped = metric(&bridge, "strapi_io_events_dropped_total").await;
    let behind = metric(&bridge, "strapi_io_sockets_fell_behind").await;
    assert!(
        dropped >= Some(1.0) || behind >= Some(1.0),
        "dropped {dropped:?}, fell behind {behind:?}"
    );

    // Bob is blocked while his buffer is full: the DISCONNECT cannot be queued.
    db.sql("UPDATE up_users SET blocked = true WHERE id = 3")
        .await;
    marker(&db, 2).await;
    public.marker(2).await;
    // What the revoked socket sends is not relayed.
    bob.send(r#"42["chat:typing","from a revoked socket"]"#)
        .await;
    marker(&db, 20).await;
    public.marker(20).await;

    // Bob's client reads what was queued before the block, and polls on.
    let mut seen = bob.poll().await.unwrap_or_default();
    new_message(&db, 999).await;
    public.event("message:create").await;
    marker(&db, 3).await;
    public.marker(3).await;
    let mut disconnected = seen.iter().any(|p| p == "41");
    while let Some(packets) = bob.poll().await {
        disconnected |= packets.iter().any(|p| p == "41" || p == "1");
        seen.extend(packets);
        if disconnected {
            break;
        }
    }
    assert!(
        !seen
            .iter()
            .any(|p| p.contains("message 999") || p.contains("marker")),
        "a revoked socket received events after the block: {seen:?}"
    );
    assert!(
        disconnected || bob.poll().await.is_none(),
        "the revoked socket was not disconnected: {seen:?}"
    );
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn a_connected_jwt_is_disconnected_at_its_exp_and_a_token_at_its_expires_at() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(ALL)).await;
    let exp = unix_now() + 3;
    let mut alice =
        SioClient::connected(bridge.addr, json!({ "token": jwt_until(ALICE, exp) })).await;
    let mut token = SioClient::connected(
        bridge.addr,
        json!({ "token": READ_ONLY_TOKEN, "strategy": "apiToken" }),
    )
    .await;
    // The admin sets the token to expire in three seconds.
    db.sql("UPDATE strapi_api_tokens SET expires_at = (now() AT TIME ZONE 'UTC') + interval '3 seconds' WHERE id = 1")
        .await;
    marker(&db, 1).await;
    token.marker(1).await;
    alice.marker(1).await;

    assert_eq!(alice.next().await, Got::Closed);
    assert!(unix_now() >= exp, "disconnected before exp");
    assert_eq!(token.next().await, Got::Closed);
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn a_fresh_token_sent_before_exp_keeps_the_socket_in_the_new_identitys_rooms() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(ALL)).await;
    let exp = unix_now() + 4;
    // Alice (Authenticated: messages and chats), then a fresh token for eddie (Editor: chats).
    let mut client =
        SioClient::connected(bridge.addr, json!({ "token": jwt_until(ALICE, exp) })).await;
    client
        .emit(
            "strapi-io:auth",
            json!(crate::support::bridge::jwt(EDDIE, false)),
        )
        .await;
    // The new rooms apply once a message no longer reaches the socket.
    let mut n = 0;
    loop {
        n += 1;
        assert!(n < 50, "the fresh token was never applied");
        new_message(&db, 300 + i64::from(n)).await;
        marker(&db, n).await;
        match client.next().await {
            Got::Event(name, _) if name == "message:create" => client.marker(n).await,
            Got::Event(name, args) if name == "marker" && args == vec![json!(n)] => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    // Past alice's exp the socket is still there, in eddie's rooms.
    wait::until("alice's exp to pass", Duration::from_secs(30), || async {
        unix_now() > exp + 1
    })
    .await;
    new_message(&db, 400).await;
    new_chat(&db, 400).await;
    marker(&db, 100).await;
    assert_eq!(client.event("chat:create").await["data"]["id"], 400);
    client.marker(100).await;
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn token_use_and_app_columns_do_not_recheck_sockets() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(ALL)).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(
            SioClient::connected(
                bridge.addr,
                json!({ "token": READ_ONLY_TOKEN, "strategy": "apiToken" }),
            )
            .await,
        );
        clients.push(
            SioClient::connected(
                bridge.addr,
                json!({ "token": crate::support::bridge::jwt(ALICE, false) }),
            )
            .await,
        );
    }
    let mut public = SioClient::connected(bridge.addr, json!({})).await;
    marker(&db, 1).await;
    public.marker(1).await;
    for client in &mut clients {
        client.marker(1).await;
    }
    let before = metric(&bridge, "strapi_io_socket_rechecks_total")
        .await
        .expect("the recheck counter");

    // Commit-to-client time of a message, as the Public client sees it (printed, not asserted:
    // timing belongs in the benchmark).
    async fn latency(sql: &tokio_postgres::Client, public: &mut SioClient, id: i64) -> Duration {
        let start = std::time::Instant::now();
        sql.batch_execute(&format!(
            "INSERT INTO messages (id, text, created_at, updated_at, published_at) \
             VALUES ({id}, 'message {id}', now(), now(), now())"
        ))
        .await
        .unwrap();
        public.event("message:create").await;
        start.elapsed()
    }
    let writer = db.db.client().await;
    let mut quiet = Vec::new();
    for id in 500..505 {
        quiet.push(latency(&writer, &mut public, id).await);
    }

    // What Strapi 4 does on every API-token request, and an app's own column on up_users, at
    // about 200 writes a second for three seconds, while events keep flowing.
    let sql = db.db.client().await;
    let flood = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        for i in 0..600 {
            tick.tick().await;
            let statement = if i % 2 == 0 {
                "UPDATE strapi_api_tokens SET last_used_at = now() WHERE id = 1"
            } else {
                "UPDATE up_users SET updated_at = now() WHERE id = 1"
            };
            sql.batch_execute(statement).await.unwrap();
        }
    });
    let mut busy = Vec::new();
    let mut id = 600;
    while !flood.is_finished() {
        busy.push(latency(&writer, &mut public, id).await);
        id += 1;
    }
    flood.await.unwrap();
    eprintln!("commit to client, quiet: {quiet:?}; during 200 token-use writes/s: {busy:?}");
    marker(&db, 2).await;
    public.marker(2).await;
    let messages = 5 + (id - 600);
    for client in &mut clients {
        for _ in 0..messages {
            client.event("message:create").await;
        }
        client.marker(2).await;
    }
    assert_eq!(
        metric(&bridge, "strapi_io_socket_rechecks_total").await,
        Some(before),
        "writes that change nothing the bridge reads re-checked sockets"
    );
    // A change that matters re-checks only its user's sockets (alice: five of them).
    db.sql("UPDATE up_users SET blocked = true WHERE id = 1")
        .await;
    marker(&db, 3).await;
    public.marker(3).await;
    assert_eq!(
        metric(&bridge, "strapi_io_socket_rechecks_total").await,
        Some(before + 5.0)
    );
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn run_refuses_a_publication_without_the_access_tables() {
    let db = StrapiDb::new("").await;
    let cfg = db.config(ALL);
    db.sql(&format!(
        "ALTER PUBLICATION \"{}\" DROP TABLE up_users",
        cfg.database.publication
    ))
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = wait::within(
        "run to refuse",
        Duration::from_secs(60),
        Box::pin(strapi_io_bridge::pipeline::run(
            cfg.clone(),
            listener,
            Default::default(),
        )),
    )
    .await
    .expect_err("run starts without up_users published");
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!(
            "ALTER PUBLICATION \"{}\" ADD TABLE \"public\".\"up_users\";",
            cfg.database.publication
        )),
        "{text}"
    );
}

#[tokio::test]
async fn replayed_access_rows_older_than_the_loaded_snapshot_change_nothing() {
    // Chat 9 has a TOASTed name and chats log no old row: an update of another column makes
    // the bridge read the name back, which a lock held by the test stalls, so the test can
    // look at the bridge in the middle of the replay.
    let db = StrapiDb::new("ALTER TABLE chats ALTER COLUMN name TYPE text").await;
    db.sql(
        "INSERT INTO chats (id, name, created_at, updated_at) VALUES (9, \
           (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 400)), now(), now()); \
         ALTER TABLE chats REPLICA IDENTITY DEFAULT",
    )
    .await;
    let cfg = db.config(ALL);
    // Create the slot, then stop: what follows is replayed at the next start.
    Bridge::start(cfg.clone()).await.stop().await.unwrap();

    // Public's message permissions are touched (full rows in the WAL), then the stall point,
    // a message, and the permissions are revoked. Bob is touched, then blocked; token 1 is
    // used, then deleted; token 2 is used, then regenerated.
    db.sql(
        "CREATE TABLE public_message_perms AS SELECT p.id FROM up_permissions p \
           JOIN up_permissions_role_links l ON l.permission_id = p.id \
           JOIN up_roles r ON r.id = l.role_id \
           WHERE r.type = 'public' AND p.action LIKE 'api::message.message.find%'; \
         UPDATE up_permissions SET updated_at = now() WHERE id IN (SELECT id FROM public_message_perms); \
         UPDATE up_permissions_role_links SET permission_order = permission_order \
           WHERE permission_id IN (SELECT id FROM public_message_perms); \
         UPDATE up_users SET updated_at = now() WHERE id = 3; \
         UPDATE strapi_api_tokens SET last_used_at = now() WHERE id IN (1, 2); \
         UPDATE chats SET updated_at = now() WHERE id = 9",
    )
    .await;
    new_message(&db, 801).await;
    db.sql(
        "DELETE FROM up_permissions WHERE id IN (SELECT id FROM public_message_perms); \
         UPDATE up_users SET blocked = true WHERE id = 3; \
         DELETE FROM strapi_api_tokens WHERE id = 1; \
         UPDATE strapi_api_tokens SET access_key = repeat('ab', 64) WHERE id = 2",
    )
    .await;

    let lock = db.db.client().await;
    lock.batch_execute("BEGIN; LOCK TABLE chats IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(strapi_io_bridge::pipeline::run(
        cfg,
        listener,
        shutdown.clone(),
    ));
    wait::until(
        "the replay to stall on chat 9",
        wait::DEFAULT_TIMEOUT,
        || async {
            lock.query_one(
                "SELECT count(*) FROM pg_locks WHERE relation = 'chats'::regclass \
                 AND NOT granted",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
                > 0
        },
    )
    .await;

    // In the middle of the replay, past the old rows: what the snapshot refuses stays refused.
    let mut public = SioClient::connected(addr, json!({})).await;
    for auth in [
        json!({ "token": crate::support::bridge::jwt(BOB, false) }),
        json!({ "token": READ_ONLY_TOKEN, "strategy": "apiToken" }),
        json!({ "token": FULL_ACCESS_TOKEN, "strategy": "apiToken" }),
    ] {
        let mut c = SioClient::connect(addr, auth.clone()).await;
        match c.next().await {
            Got::ConnectError(_) => {}
            other => panic!("{auth} got {other:?} during the replay"),
        }
    }
    // The replayed message goes to nobody who may not read it now: not to Public.
    lock.batch_execute("ROLLBACK").await.unwrap();
    marker(&db, 1).await;
    public.marker(1).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_slot_created_again_is_a_reported_discontinuity_and_reloads_access() {
    let db = StrapiDb::new("").await;
    let cfg = db.config(ALL);
    let slot = cfg.database.slot.clone();
    let bridge = Bridge::start(cfg).await;
    let mut token = SioClient::connected(
        bridge.addr,
        json!({ "token": READ_ONLY_TOKEN, "strategy": "apiToken" }),
    )
    .await;
    let mut public = SioClient::connected(bridge.addr, json!({})).await;
    assert_eq!(
        metric(&bridge, "strapi_io_replication_discontinuities").await,
        Some(0.0)
    );

    // The slot is lost (its walsender ended, the slot dropped) and the token deleted before
    // the bridge is back.
    let sql = db.db.client().await;
    wait::until("the slot to be dropped", wait::DEFAULT_TIMEOUT, || {
        let sql = &sql;
        let slot = slot.clone();
        async move {
            sql.batch_execute(&format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                   WHERE slot_name = '{slot}' AND active_pid IS NOT NULL; \
                 SELECT pg_drop_replication_slot('{slot}'); \
                 DELETE FROM strapi_api_tokens WHERE id = 1"
            ))
            .await
            .is_ok()
        }
    })
    .await;

    assert_eq!(token.next().await, Got::Closed);
    wait::until(
        "the discontinuity on /metrics",
        wait::DEFAULT_TIMEOUT,
        || async { metric(&bridge, "strapi_io_replication_discontinuities").await == Some(1.0) },
    )
    .await;
    let (_, ready) = reqwest_get(&bridge.url("/readyz")).await.unwrap();
    assert!(ready.contains("had to be created again"), "{ready}");
    // Events flow again.
    new_message(&db, 900).await;
    assert_eq!(public.event("message:create").await["data"]["id"], 900);
    bridge.stop().await.unwrap();
}
