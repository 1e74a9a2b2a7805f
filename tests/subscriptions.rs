//! Subscriptions with real Socket.IO clients: `auth.subscribe = "explicit"`,
//! `strapi-io:subscribe` / `strapi-io:unsubscribe` and their acks, the plugin 5.x names
//! (`subscribe-entity`, `join-room`), one delivery per socket however many of its rooms an event
//! goes to, a revoked permission dropping the subscription, and `/metrics`; subscriptions sent
//! in `auth.subscriptions` and the catch-up of a reconnect that includes them; the cap per
//! socket and the rate limit of subscription requests.

use futures::FutureExt;
use rust_socketio::Payload as SioPayload;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::support::bridge::{ALICE, Bridge, EDDIE, StrapiDb, jwt, reqwest_get};
use crate::support::client::{Got, NodeClient, SioClient, WAIT, marker, node_client_installed};
use crate::support::wait;

const CONFIG: &str = "content_types = \"*\"\n[io]\njoinable_rooms = [\"lobby\"]\n";

async fn new_message(db: &StrapiDb<'_>, id: i64) {
    db.sql(&format!(
        "INSERT INTO messages (id, text, created_at, updated_at, published_at) \
         VALUES ({id}, 'message {id}', now(), now(), now())"
    ))
    .await;
}

async fn new_chat(db: &StrapiDb<'_>, id: i64) {
    db.sql(&format!(
        "INSERT INTO chats (id, name, created_at, updated_at) VALUES ({id}, 'chat {id}', now(), now())"
    ))
    .await;
}

fn ok() -> Vec<Value> {
    vec![json!({ "ok": true })]
}

#[tokio::test]
async fn explicit_mode_receives_only_the_subscribed_entry_and_each_event_once() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(CONFIG)).await;
    let explicit = SioClient::connected(
        bridge.addr,
        json!({ "token": jwt(ALICE, false), "subscribe": "explicit" }),
    )
    .await;
    let roles = SioClient::connected(bridge.addr, json!({ "token": jwt(ALICE, false) })).await;
    let sub = json!({ "type": "message", "id": 501 });
    assert_eq!(explicit.ack("strapi-io:subscribe", sub.clone()).await, ok());
    // Also in its role room, which receives the same events: still one delivery.
    assert_eq!(roles.ack("strapi-io:subscribe", sub).await, ok());
    let (mut explicit, mut roles) = (explicit, roles);

    new_message(&db, 500).await;
    new_message(&db, 501).await;
    new_chat(&db, 500).await;
    db.sql("UPDATE messages SET text = 'edited' WHERE id = 501")
        .await;
    marker(&db, 1).await;

    assert_eq!(explicit.event("message:create").await["data"]["id"], 501);
    assert_eq!(explicit.event("message:update").await["data"]["id"], 501);
    explicit.marker(1).await;

    assert_eq!(roles.event("message:create").await["data"]["id"], 500);
    assert_eq!(roles.event("message:create").await["data"]["id"], 501);
    assert_eq!(roles.event("chat:create").await["data"]["id"], 500);
    assert_eq!(roles.event("message:update").await["data"]["id"], 501);
    roles.marker(1).await;

    // A whole-type subscription, then unsubscribing from the entry.
    assert_eq!(
        explicit
            .ack("strapi-io:subscribe", json!({ "type": "api::chat.chat" }))
            .await,
        ok()
    );
    assert_eq!(
        explicit
            .ack(
                "strapi-io:unsubscribe",
                json!({ "type": "message", "id": 501 })
            )
            .await,
        ok()
    );
    db.sql("UPDATE messages SET text = 'again' WHERE id = 501")
        .await;
    new_chat(&db, 501).await;
    marker(&db, 2).await;
    assert_eq!(explicit.event("chat:create").await["data"]["id"], 501);
    explicit.marker(2).await;

    // /metrics counts subscriptions per type (alice's two sockets: message 501 on one, chat
    // on the other).
    let (_, text) = reqwest_get(&bridge.url("/metrics")).await.unwrap();
    assert!(
        text.contains("strapi_io_subscriptions{content_type=\"api::chat.chat\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("strapi_io_subscriptions{content_type=\"api::message.message\"} 1"),
        "{text}"
    );
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_and_forbidden_types_and_bad_requests_are_refused_in_the_ack() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(CONFIG)).await;
    let public = SioClient::connected(bridge.addr, json!({ "subscribe": "explicit" })).await;
    let cases = [
        (json!({ "type": "nope" }), "unknown content type \"nope\""),
        // Public may not read chats.
        (
            json!({ "type": "chat" }),
            "not allowed to read api::chat.chat",
        ),
        (
            json!({ "type": "message", "id": "x" }),
            "id \"x\" is not an entry id (an integer)",
        ),
        (
            json!({ "id": 1 }),
            "expected { type: <content type>, id?: <entry id> }",
        ),
    ];
    for (request, error) in cases {
        assert_eq!(
            public.ack("strapi-io:subscribe", request.clone()).await,
            vec![json!({ "error": error })],
            "{request}"
        );
    }
    // Nothing was subscribed: the explicit Public socket sees only the marker.
    let mut public = public;
    new_chat(&db, 600).await;
    new_message(&db, 600).await;
    marker(&db, 1).await;
    public.marker(1).await;

    // An unknown subscribe mode is refused at the handshake.
    let mut bad = SioClient::connect(bridge.addr, json!({ "subscribe": "all" })).await;
    assert_eq!(
        bad.next().await,
        Got::ConnectError("auth.subscribe must be \"explicit\" or left out".to_owned())
    );
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn a_revoked_permission_drops_the_subscription() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(CONFIG)).await;
    // Editor: find on chat only.
    let eddie = SioClient::connected(
        bridge.addr,
        json!({ "token": jwt(EDDIE, false), "subscribe": "explicit" }),
    )
    .await;
    assert_eq!(
        eddie
            .ack("strapi-io:subscribe", json!({ "type": "chat" }))
            .await,
        ok()
    );
    let mut eddie = eddie;
    new_chat(&db, 700).await;
    assert_eq!(eddie.event("chat:create").await["data"]["id"], 700);

    db.sql(
        "DELETE FROM up_permissions WHERE action = 'api::chat.chat.find' AND id IN \
         (SELECT permission_id FROM up_permissions_role_links WHERE role_id = 3)",
    )
    .await;
    new_chat(&db, 701).await;
    marker(&db, 1).await;
    eddie
        .expect(
            "strapi-io:unsubscribed",
            json!({ "type": "api::chat.chat", "id": null, "error": "no longer allowed to read api::chat.chat" }),
        )
        .await;
    eddie.marker(1).await;
    // And it cannot subscribe again.
    assert_eq!(
        eddie
            .ack("strapi-io:subscribe", json!({ "type": "chat" }))
            .await,
        vec![json!({ "error": "not allowed to read api::chat.chat" })]
    );
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn plugin_5_event_names_work() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(CONFIG)).await;
    let public = SioClient::connected(bridge.addr, json!({ "subscribe": "explicit" })).await;
    assert_eq!(
        public
            .ack(
                "subscribe-entity",
                json!({ "uid": "api::message.message", "id": 800 })
            )
            .await,
        vec![json!({ "success": true, "room": "sub:api::message.message:800" })]
    );
    assert_eq!(
        public.ack("join-room", json!("lobby")).await,
        vec![json!({ "success": true, "room": "lobby" })]
    );
    assert_eq!(
        public.ack("join-room", json!("Authenticated")).await,
        vec![json!({ "success": false, "error": "room \"Authenticated\" is not joinable" })]
    );
    assert_eq!(
        public
            .ack(
                "subscribe-entity",
                json!({ "uid": "api::chat.chat", "id": 1 })
            )
            .await,
        vec![json!({ "success": false, "error": "not allowed to read api::chat.chat" })]
    );
    let mut public = public;
    new_message(&db, 799).await;
    new_message(&db, 800).await;
    db.sql(
        "SELECT pg_logical_emit_message(true, 'strapi_io', \
         '{\"raw\":\"lobby:news\",\"data\":1,\"room\":\"lobby\"}')",
    )
    .await;
    marker(&db, 1).await;
    assert_eq!(public.event("message:create").await["data"]["id"], 800);
    public.expect("lobby:news", json!(1)).await;
    public.marker(1).await;

    assert_eq!(
        public
            .ack(
                "unsubscribe-entity",
                json!({ "uid": "api::message.message", "id": 800 })
            )
            .await,
        vec![json!({ "success": true, "room": "sub:api::message.message:800" })]
    );
    assert_eq!(
        public.ack("leave-room", json!({ "room": "lobby" })).await,
        vec![json!({ "success": true, "room": "lobby" })]
    );
    db.sql("UPDATE messages SET text = 'edited' WHERE id = 800")
        .await;
    marker(&db, 2).await;
    public.marker(2).await;

    // The npm client, as a ported plugin 5.x client runs it.
    if node_client_installed() {
        let mut node = NodeClient::connected(
            bridge.addr,
            &[
                "--auth-json",
                r#"{"subscribe":"explicit"}"#,
                "--emit",
                r#"subscribe-entity={"uid":"api::message.message","id":801}"#,
                "--until",
                "message:create",
            ],
        )
        .await;
        match node.next().await {
            Got::Other(line) => {
                let v: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v["ack"], "subscribe-entity");
                assert_eq!(v["data"][0]["success"], true, "{line}");
            }
            other => panic!("expected the ack, got {other:?}"),
        }
        new_message(&db, 801).await;
        assert_eq!(node.event("message:create").await["data"]["id"], 801);
    }
    bridge.stop().await.unwrap();
}

/// A Rust client that keeps each event's trailing offset (the other tests' clients drop it).
struct OffsetClient {
    client: Client,
    rx: mpsc::UnboundedReceiver<(String, Vec<Value>)>,
}

impl OffsetClient {
    /// Connects with `auth` and waits until the handshake is accepted.
    async fn connected(addr: std::net::SocketAddr, auth: Value) -> OffsetClient {
        let (tx, rx) = mpsc::unbounded_channel();
        let on_connect = tx.clone();
        let client = ClientBuilder::new(format!("http://{addr}/"))
            .auth(auth)
            .reconnect(false)
            .on(rust_socketio::Event::Connect, move |_, _| {
                let tx = on_connect.clone();
                async move {
                    let _ = tx.send(("connect".to_owned(), vec![]));
                }
                .boxed()
            })
            .on_any(move |event, p, _| {
                let tx = tx.clone();
                async move {
                    let args = match p {
                        SioPayload::Text(values) => values,
                        _ => vec![],
                    };
                    let _ = tx.send((event.to_string(), args));
                }
                .boxed()
            })
            .connect()
            .await
            .unwrap_or_else(|e| panic!("client cannot reach the bridge: {e}"));
        let mut c = OffsetClient { client, rx };
        let (event, args) = c.next().await;
        assert_eq!(
            (event.as_str(), args),
            ("connect", vec![]),
            "the client connects"
        );
        c
    }

    async fn next(&mut self) -> (String, Vec<Value>) {
        match tokio::time::timeout(WAIT, self.rx.recv()).await {
            Ok(Some(got)) => got,
            Ok(None) => panic!("the client is gone"),
            Err(_) => panic!("nothing received within {WAIT:?}"),
        }
    }

    /// The next message must be `event` with its data and offset; returns them.
    #[track_caller]
    fn expect(&mut self, event: &str) -> impl Future<Output = (Value, String)> + '_ {
        let at = std::panic::Location::caller();
        let event = event.to_owned();
        async move {
            match self.next().await {
                (name, args) if name == event && args.len() == 2 && args[1].is_string() => {
                    (args[0].clone(), args[1].as_str().unwrap().to_owned())
                }
                other => panic!("{at}: expected {event} with an offset, got {other:?}"),
            }
        }
    }

    async fn close(self) {
        let _ = self.client.disconnect().await;
    }
}

async fn metrics_text(bridge: &Bridge) -> String {
    reqwest_get(&bridge.url("/metrics"))
        .await
        .map(|(_, text)| text)
        .unwrap_or_default()
}

/// The README's reconnect: an explicit-mode client following one entry disconnects; that entry
/// and others change meanwhile (emitted while nobody subscribed to it); it reconnects with its
/// last offset and its subscriptions in `auth`, and gets exactly the missed events of its
/// entry, in order, once, then the live ones.
#[tokio::test]
async fn a_reconnect_with_offset_and_subscriptions_replays_the_missed_events_of_the_entry() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(CONFIG)).await;
    let token = jwt(ALICE, false);
    let auth = |offset: Option<&str>| {
        json!({
            "token": token,
            "subscribe": "explicit",
            "subscriptions": [{ "type": "message", "id": 901 }],
            "offset": offset,
        })
    };
    // Receives everything Authenticated may read: shows when the bridge has emitted a write.
    let mut observer = SioClient::connected(bridge.addr, json!({ "token": token })).await;

    let mut first = OffsetClient::connected(bridge.addr, auth(None)).await;
    new_message(&db, 900).await;
    new_message(&db, 901).await;
    marker(&db, 1).await;
    let (created, _) = first.expect("message:create").await;
    assert_eq!(created["data"]["id"], 901);
    let (n, last) = first.expect("marker").await;
    assert_eq!(n, 1);
    first.close().await;
    // Its socket is gone, and with it the only subscription to messages: what follows goes
    // to no subscription room.
    wait::until("the subscription to end with its socket", WAIT, || async {
        metrics_text(&bridge)
            .await
            .contains("strapi_io_subscriptions{content_type=\"api::message.message\"} 0")
    })
    .await;

    db.sql("UPDATE messages SET text = 'missed 1' WHERE id = 901")
        .await;
    new_message(&db, 902).await;
    db.sql("UPDATE messages SET text = 'not followed' WHERE id = 900")
        .await;
    new_chat(&db, 900).await;
    db.sql("UPDATE messages SET text = 'missed 2' WHERE id = 901")
        .await;
    marker(&db, 2).await;
    loop {
        if let Got::Event(name, args) = observer.next().await
            && name == "marker"
            && args == [json!(2)]
        {
            break;
        }
    }

    let mut second = OffsetClient::connected(bridge.addr, auth(Some(&last))).await;
    // Live writes while the catch-up may still run: they follow it, in order.
    db.sql("UPDATE messages SET text = 'live' WHERE id = 901")
        .await;
    new_message(&db, 903).await;
    marker(&db, 3).await;

    let mut offsets = vec![last];
    for text in ["missed 1", "missed 2"] {
        let (update, offset) = second.expect("message:update").await;
        assert_eq!(update["data"]["id"], 901);
        assert_eq!(update["data"]["attributes"]["text"], text);
        offsets.push(offset);
    }
    let (n, offset) = second.expect("marker").await;
    assert_eq!(n, 2);
    offsets.push(offset);
    let (update, offset) = second.expect("message:update").await;
    assert_eq!(update["data"]["attributes"]["text"], "live");
    offsets.push(offset);
    let (n, offset) = second.expect("marker").await;
    assert_eq!(
        n, 3,
        "nothing else, and nothing twice, before the live marker"
    );
    offsets.push(offset);
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "offsets grow: {offsets:?}"
    );
    second.close().await;
    bridge.stop().await.unwrap();
}

/// `auth.subscriptions` entries are checked as `strapi-io:subscribe` requests are: the refused
/// ones come back with `strapi-io:unsubscribed` (as sent, with the reason), the others hold;
/// a value that is not a list, or a list over the cap, refuses the handshake.
#[tokio::test]
async fn handshake_subscriptions_are_checked_like_subscribe_requests() {
    let db = StrapiDb::new("").await;
    let cfg = format!("{CONFIG}max_subscriptions_per_socket = 4\n");
    let bridge = Bridge::start(db.config(&cfg)).await;
    let mut public = SioClient::connected(
        bridge.addr,
        json!({
            "subscribe": "explicit",
            "subscriptions": [
                { "type": "message", "id": 1001 },
                { "type": "chat" },
                { "type": "nope", "id": 3 },
                { "id": 4 },
            ],
        }),
    )
    .await;
    public
        .expect(
            "strapi-io:unsubscribed",
            json!({ "type": "chat", "id": null, "error": "not allowed to read api::chat.chat" }),
        )
        .await;
    public
        .expect(
            "strapi-io:unsubscribed",
            json!({ "type": "nope", "id": 3, "error": "unknown content type \"nope\"" }),
        )
        .await;
    public
        .expect(
            "strapi-io:unsubscribed",
            json!({
                "type": null,
                "id": 4,
                "error": "expected { type: <content type>, id?: <entry id> }",
            }),
        )
        .await;
    new_message(&db, 1000).await;
    new_message(&db, 1001).await;
    marker(&db, 1).await;
    assert_eq!(public.event("message:create").await["data"]["id"], 1001);
    public.marker(1).await;

    let mut bad = SioClient::connect(bridge.addr, json!({ "subscriptions": "message" })).await;
    assert_eq!(
        bad.next().await,
        Got::ConnectError("auth.subscriptions must be a list of { type, id? }".to_owned())
    );
    let five: Vec<Value> = (1..=5)
        .map(|id| json!({ "type": "message", "id": id }))
        .collect();
    let mut over = SioClient::connect(bridge.addr, json!({ "subscriptions": five })).await;
    assert_eq!(
        over.next().await,
        Got::ConnectError(
            "auth.subscriptions has 5 entries; a socket may hold at most 4 subscriptions \
             (io.max_subscriptions_per_socket)"
                .to_owned()
        )
    );
    bridge.stop().await.unwrap();
}

const RATE_LIMITED: &str = "rate limited: too many events from this socket; try again later";

/// `[io] max_subscriptions_per_socket` caps what one socket holds; subscription and room
/// requests draw on the socket's allowance of client events, and past it are refused in the ack.
#[tokio::test]
async fn subscriptions_are_capped_per_socket_and_requests_are_rate_limited() {
    let db = StrapiDb::new("").await;
    let cfg = format!(
        "{CONFIG}max_subscriptions_per_socket = 3\nclient_events_per_second = 1\n\
         client_events_burst = 8\n"
    );
    let bridge = Bridge::start(db.config(&cfg)).await;
    let public = SioClient::connected(bridge.addr, json!({ "subscribe": "explicit" })).await;
    let sub = |id: i64| json!({ "type": "message", "id": id });
    for id in 1..=3 {
        assert_eq!(public.ack("strapi-io:subscribe", sub(id)).await, ok());
    }
    let full = vec![
        json!({ "error": "too many subscriptions (at most 3 per socket); unsubscribe first" }),
    ];
    assert_eq!(public.ack("strapi-io:subscribe", sub(4)).await, full);
    // One already held is no new one.
    assert_eq!(public.ack("strapi-io:subscribe", sub(3)).await, ok());
    assert_eq!(public.ack("strapi-io:unsubscribe", sub(3)).await, ok());
    assert_eq!(public.ack("strapi-io:subscribe", sub(4)).await, ok());

    // A flood: the burst passes, the rest (but what the rate refills meanwhile) is refused.
    for (event, data, refused) in [
        (
            "strapi-io:subscribe",
            sub(1),
            json!({ "error": RATE_LIMITED }),
        ),
        (
            "join-room",
            json!("lobby"),
            json!({ "success": false, "error": RATE_LIMITED }),
        ),
    ] {
        let client = SioClient::connected(bridge.addr, json!({ "subscribe": "explicit" })).await;
        let started = std::time::Instant::now();
        let mut answers = Vec::new();
        for _ in 0..40 {
            answers.push(client.ack(event, data.clone()).await);
        }
        let elapsed = started.elapsed().as_secs() as usize;
        let passed = answers
            .iter()
            .filter(|a| **a != vec![refused.clone()])
            .count();
        assert!(
            (8..=8 + elapsed + 1).contains(&passed),
            "{event}: {passed} of 40 passed in {elapsed} s: {answers:?}"
        );
        for a in &answers {
            assert!(
                *a == vec![refused.clone()] || a[0]["ok"] == true || a[0]["success"] == true,
                "{event}: {a:?}"
            );
        }
    }
    let text = metrics_text(&bridge).await;
    assert!(
        text.contains("strapi_io_client_events_dropped_total{reason=\"rate_limited\"}"),
        "{text}"
    );
    bridge.stop().await.unwrap();
}

/// The npm client running the README's snippet (`tests/node/follow.mjs`): what it prints, and
/// its stdin for `disconnect` / `connect`.
struct NodeFollow {
    _child: Child,
    stdin: ChildStdin,
    rx: mpsc::UnboundedReceiver<String>,
}

impl NodeFollow {
    fn start(addr: std::net::SocketAddr, subscriptions: &Value) -> NodeFollow {
        assert!(
            node_client_installed(),
            "the npm socket.io-client is not installed: run `npm ci` in tests/node (.ci/run does)"
        );
        let script =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node/follow.mjs");
        let mut child = Command::new("node")
            .arg(script)
            .args(["--url", &format!("http://{addr}")])
            .args(["--subscriptions", &subscriptions.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        NodeFollow {
            _child: child,
            stdin,
            rx,
        }
    }

    async fn command(&mut self, command: &str) {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }

    async fn line(&mut self) -> String {
        match tokio::time::timeout(WAIT, self.rx.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!("the npm client exited"),
            Err(_) => panic!("the npm client printed nothing within {WAIT:?}"),
        }
    }

    /// The next line must be an event named `event`; returns its data.
    #[track_caller]
    fn event(&mut self, event: &str) -> impl Future<Output = Value> + '_ {
        let at = std::panic::Location::caller();
        let event = event.to_owned();
        async move {
            let line = self.line().await;
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("{at}: expected {event}, got {line:?}"));
            assert_eq!(v["event"], event.as_str(), "{at}: {line}");
            v["data"].clone()
        }
    }
}

/// What `a_reconnect_with_offset_and_subscriptions_replays_the_missed_events_of_the_entry`
/// shows with the Rust client, with the npm `socket.io-client` running the README's snippet: a
/// refused entry is dropped from the client's list by the `strapi-io:unsubscribed` handler, and
/// after a disconnect the entry's missed events, then live ones, arrive in order, once.
#[tokio::test]
async fn the_npm_client_running_the_readme_snippet_resumes_its_subscriptions() {
    let db = StrapiDb::new("").await;
    let bridge = Bridge::start(db.config(CONFIG)).await;
    let mut observer = SioClient::connected(bridge.addr, json!({})).await;
    let mut node = NodeFollow::start(
        bridge.addr,
        &json!([
            { "type": "api::message.message", "id": 1101 },
            { "type": "api::chat.chat" },
        ]),
    );
    assert_eq!(node.line().await, "connect");
    // Public may not read chats.
    let refused = node.event("strapi-io:unsubscribed").await;
    assert_eq!(refused["type"], "api::chat.chat");
    new_message(&db, 1100).await;
    new_message(&db, 1101).await;
    marker(&db, 1).await;
    assert_eq!(node.event("message:create").await["data"]["id"], 1101);
    assert_eq!(node.event("marker").await, 1);

    node.command("disconnect").await;
    assert_eq!(node.line().await, "disconnect io client disconnect");
    wait::until("the subscription to end with its socket", WAIT, || async {
        metrics_text(&bridge)
            .await
            .contains("strapi_io_subscriptions{content_type=\"api::message.message\"} 0")
    })
    .await;
    db.sql("UPDATE messages SET text = 'missed' WHERE id = 1101")
        .await;
    new_message(&db, 1102).await;
    marker(&db, 2).await;
    loop {
        if let Got::Event(name, args) = observer.next().await
            && name == "marker"
            && args == [json!(2)]
        {
            break;
        }
    }

    node.command("connect").await;
    assert_eq!(node.line().await, "connect");
    db.sql("UPDATE messages SET text = 'live' WHERE id = 1101")
        .await;
    marker(&db, 3).await;
    // No second refusal: the handler took chat off the list.
    let missed = node.event("message:update").await;
    assert_eq!(missed["data"]["attributes"]["text"], "missed");
    assert_eq!(node.event("marker").await, 2);
    let live = node.event("message:update").await;
    assert_eq!(live["data"]["attributes"]["text"], "live");
    assert_eq!(node.event("marker").await, 3);
    bridge.stop().await.unwrap();
}
