//! Server tests: the router bound on `127.0.0.1:0`, real Socket.IO clients (`rust_socketio`)
//! that push what they receive into a channel, and an access state built from a small
//! snapshot (roles Public, Authenticated and Editor; users; a JWT signed here; API tokens).
//!
//! "Receives nothing else" is shown by order, not by waiting: after the messages under test a
//! marker is sent, and the marker must be the next thing the client sees.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::Location;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::StatusCode;
use futures::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload as SioPayload};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::handshake::Session;
use super::{Emitter, IoOptions, build};
use crate::access::{
    Access, AccessConfig, AccessHandle, AccessSnapshot, ApiToken, Delivery, Identity, Outgoing,
    Role, TokenKind, User,
};
use crate::config::{
    CorsConfig, EventConfig, EventHandler, IoConfig, PermissionMode, Secret, Transport,
};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::pgoutput::{Relation, RelationId, ReplicaIdentity, RowOp, Value as PgValue};
use crate::strapi::{
    AccessChange, AccessTable, Action, Catalog, CatalogHandle, ContentType, Kind, Payload, RawEmit,
};

/// How long any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

const JWT_SECRET: &str = "test-jwt-secret";
const TOKEN_SALT: &str = "test-token-salt";
const READER_TOKEN: &str = "reader-token-0123456789abcdef";
const EXPIRED_TOKEN: &str = "expired-token-0123456789abcdef";
const ADMIN_TOKEN: &str = "admin-secret";

const ALICE: i64 = 1; // Authenticated
const EDDIE: i64 = 2; // Editor
const BOB: i64 = 3; // blocked
const CAROL: i64 = 4; // not confirmed (email confirmation is on)

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn access_config() -> AccessConfig {
    AccessConfig {
        public_role_name: "Public".to_owned(),
        permission_mode: PermissionMode::Read,
        jwt_secret: Some(Secret::new(JWT_SECRET)),
        jwt_management: Default::default(),
        api_token_salt: Some(Secret::new(TOKEN_SALT)),
    }
}

fn access_key(token: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha512>::new_from_slice(TOKEN_SALT.as_bytes())
        .unwrap_or_else(|e| panic!("hmac key: {e}"));
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn snapshot() -> AccessSnapshot {
    let role = |id, name: &str, kind: &str| Role {
        id,
        name: name.to_owned(),
        kind: kind.to_owned(),
    };
    let user = |id, blocked, confirmed| User {
        id,
        blocked,
        confirmed,
    };
    AccessSnapshot {
        roles: vec![
            role(1, "Authenticated", "authenticated"),
            role(2, "Public", "public"),
            role(3, "Editor", "editor"),
        ],
        role_permissions: vec![
            (1, "api::message.message.find".to_owned()),
            (2, "api::message.message.find".to_owned()),
            (3, "api::message.message.find".to_owned()),
            (3, "api::secret.secret.find".to_owned()),
        ],
        users: vec![
            user(ALICE, false, true),
            user(EDDIE, false, true),
            user(BOB, true, true),
            user(CAROL, false, false),
        ],
        user_roles: vec![(ALICE, 1), (EDDIE, 3), (BOB, 1), (CAROL, 1)],
        api_tokens: vec![
            ApiToken {
                id: 1,
                name: "Reader".to_owned(),
                kind: TokenKind::ReadOnly,
                access_key: access_key(READER_TOKEN),
                expires_at_unix_micros: None,
            },
            ApiToken {
                id: 2,
                name: "Old".to_owned(),
                kind: TokenKind::FullAccess,
                access_key: access_key(EXPIRED_TOKEN),
                expires_at_unix_micros: Some(1_000_000),
            },
        ],
        token_permissions: vec![],
        email_confirmation: true,
    }
}

fn jwt(user_id: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "id": user_id, "iat": now, "exp": now + 3600 }),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("signing a JWT: {e}"))
}

fn content_type(uid: &str, singular: &str) -> ContentType {
    ContentType {
        uid: uid.to_owned(),
        table: format!("{singular}s"),
        kind: Kind::Collection,
        singular_name: singular.to_owned(),
        plural_name: format!("{singular}s"),
        draft_and_publish: false,
        localized: false,
        attributes: vec![],
    }
}

fn catalog() -> CatalogHandle {
    CatalogHandle::new(Catalog::new(vec![
        content_type("api::message.message", "message"),
        content_type("api::secret.secret", "secret"),
    ]))
}

fn io_config() -> IoConfig {
    IoConfig {
        path: "/socket.io".to_owned(),
        ping_interval: Duration::from_secs(25),
        ping_timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(45),
        max_payload_bytes: 1_000_000,
        max_buffered_events: 1024,
        max_buffered_bytes: 64 * 1024,
        max_event_bytes: 1 << 20,
        transports: vec![Transport::Polling, Transport::Websocket],
        cors: None,
        joinable_rooms: vec![],
    }
}

fn options() -> IoOptions {
    IoOptions {
        io: io_config(),
        events: vec![],
        admin_token: None,
        proxy: None,
        limits: crate::config::IoLimits::default(),
        delivery: crate::delivery::DeliveryConfig::default(),
        wal_emit: None,
    }
}

fn payload(json: Value) -> Payload {
    Payload::from_value(&json).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------------
// Server and clients
// ---------------------------------------------------------------------------------------------

struct TestServer {
    addr: SocketAddr,
    emitter: Emitter,
    access: AccessHandle,
    health: Health,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_router(router: Router) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            panic!("server: {e}");
        }
    });
    (addr, task)
}

async fn serve(opts: IoOptions, access: AccessHandle) -> TestServer {
    let health = Health::new();
    let (router, emitter) = build(
        opts,
        access.clone(),
        catalog(),
        health.clone(),
        Metrics::new(),
    );
    let (addr, task) = serve_router(router).await;
    TestServer {
        addr,
        emitter,
        access,
        health,
        task,
    }
}

async fn serve_snapshot(opts: IoOptions) -> TestServer {
    serve(
        opts,
        AccessHandle::from_snapshot(access_config(), snapshot()),
    )
    .await
}

impl TestServer {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The rooms `auth` is put in, asked of the access state directly.
    fn rooms_of(&self, token: Option<&str>, strategy: Option<&str>) -> Vec<String> {
        self.access
            .authenticate(token, strategy)
            .unwrap_or_else(|e| panic!("fixture refused: {e}"))
            .rooms
    }

    /// The id of the (one) connected socket of this identity.
    fn sid_of(&self, identity: &Identity) -> String {
        let sockets = self.emitter.io.sockets();
        let found: Vec<String> = sockets
            .iter()
            .filter(|s| {
                s.extensions
                    .get::<Session>()
                    .is_some_and(|sess| sess.principal.identity == *identity)
            })
            .map(|s| s.id.to_string())
            .collect();
        assert_eq!(found.len(), 1, "sockets of {identity:?}: {found:?}");
        found[0].clone()
    }

    #[allow(clippy::unused_async)] // awaited like the client helpers
    async fn deliver(&self, event: &str, rooms: Vec<String>, data: Value) {
        self.emitter.send(Outgoing::Deliver(Delivery {
            event: event.to_owned(),
            rooms: Arc::from(rooms),
            payload: payload(data),
            subject: None,
        }));
    }

    #[allow(clippy::unused_async)] // awaited like the client helpers
    async fn raw(&self, event: &str, rooms: Option<Vec<String>>, data: Value) {
        self.emitter.send(Outgoing::Raw(RawEmit {
            event: event.to_owned(),
            data: payload(data),
            rooms,
        }));
    }

    /// A marker to every socket: whatever a client sees before it was sent earlier.
    async fn marker(&self, n: u32) {
        self.raw("marker", None, json!(n)).await;
    }
}

/// What a test client saw, in order.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Connected,
    ConnectError(String),
    Error(String),
    Event(String, Vec<Value>),
    Closed,
}

struct TestClient {
    client: Client,
    rx: mpsc::UnboundedReceiver<Got>,
}

fn values(payload: SioPayload) -> Vec<Value> {
    match payload {
        SioPayload::Text(values) => values,
        SioPayload::Binary(bytes) => vec![json!({ "binary": bytes.len() })],
        #[allow(deprecated)]
        SioPayload::String(s) => vec![serde_json::from_str(&s).unwrap_or(Value::String(s))],
    }
}

/// Stream events end with their offset; the tests here look at the arguments before it.
fn without_offset(mut args: Vec<Value>) -> Vec<Value> {
    if args
        .last()
        .and_then(Value::as_str)
        .is_some_and(|s| s.parse::<crate::delivery::Offset>().is_ok())
    {
        args.pop();
    }
    args
}

/// `connect_error` reaches rust_socketio's error callback as
/// `Received an ConnectError frame: {"message":"..."}`.
fn error_event(payload: SioPayload) -> Got {
    let text = match values(payload).into_iter().next() {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    match text.strip_prefix("Received an ConnectError frame: ") {
        Some(json) => {
            let message = serde_json::from_str::<Value>(json)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| json.to_owned());
            Got::ConnectError(message)
        }
        None => Got::Error(text),
    }
}

async fn connect(addr: SocketAddr, auth: Value) -> TestClient {
    let (tx, rx) = mpsc::unbounded_channel();
    let (on_connect, on_error, on_close, on_any) = (tx.clone(), tx.clone(), tx.clone(), tx);
    let client = ClientBuilder::new(format!("http://{addr}/"))
        .auth(auth)
        .reconnect(false)
        .on(Event::Connect, move |_, _| {
            let tx = on_connect.clone();
            async move {
                let _ = tx.send(Got::Connected);
            }
            .boxed()
        })
        .on(Event::Error, move |p, _| {
            let tx = on_error.clone();
            async move {
                let _ = tx.send(error_event(p));
            }
            .boxed()
        })
        .on(Event::Close, move |_, _| {
            let tx = on_close.clone();
            async move {
                let _ = tx.send(Got::Closed);
            }
            .boxed()
        })
        .on_any(move |event, p, _| {
            let tx = on_any.clone();
            async move {
                let _ = tx.send(Got::Event(event.to_string(), without_offset(values(p))));
            }
            .boxed()
        })
        .connect()
        .await
        .unwrap_or_else(|e| panic!("client cannot reach the server: {e}"));
    TestClient { client, rx }
}

impl TestClient {
    #[track_caller]
    fn next(&mut self) -> impl Future<Output = Got> + '_ {
        let at = Location::caller();
        async move {
            match tokio::time::timeout(WAIT, self.rx.recv()).await {
                Ok(Some(got)) => got,
                Ok(None) => panic!("{at}: client channel closed"),
                Err(_) => panic!("{at}: nothing received within {WAIT:?}"),
            }
        }
    }

    #[track_caller]
    fn expect(&mut self, want: Got) -> impl Future<Output = ()> + '_ {
        let at = Location::caller();
        async move {
            let got = self.next().await;
            assert_eq!(got, want, "{at}");
        }
    }

    /// The next message must be `event`; returns its arguments.
    #[track_caller]
    fn event(&mut self, event: &'static str) -> impl Future<Output = Vec<Value>> + '_ {
        let at = Location::caller();
        async move {
            match self.next().await {
                Got::Event(name, args) if name == event => args,
                other => panic!("{at}: expected {event}, got {other:?}"),
            }
        }
    }

    #[track_caller]
    fn marker(&mut self, n: u32) -> impl Future<Output = ()> + '_ {
        let at = Location::caller();
        async move {
            let got = self.next().await;
            assert_eq!(got, Got::Event("marker".to_owned(), vec![json!(n)]), "{at}");
        }
    }

    /// Emits with an acknowledgement and waits for it; returns the ack's arguments.
    async fn ask(&self, event: &str, args: Vec<Value>) -> Vec<Value> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.client
            .emit_with_ack(event, args, WAIT, move |p, _| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(values(p));
                }
                .boxed()
            })
            .await
            .unwrap_or_else(|e| panic!("emit {event}: {e}"));
        let got = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no acknowledgement for {event} within {WAIT:?}"))
            .unwrap_or_else(|| panic!("ack channel closed"));
        // rust_socketio hands the ack's argument array over as one value.
        match got.as_slice() {
            [Value::Array(args)] => args.clone(),
            _ => got,
        }
    }
}

async fn connected(addr: SocketAddr, auth: Value) -> TestClient {
    let mut c = connect(addr, auth).await;
    c.expect(Got::Connected).await;
    c
}

fn http() -> reqwest::Client {
    super::events::webhook_client().unwrap_or_else(|e| panic!("http client: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Handshake and rooms
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn public_socket_gets_public_deliveries_and_nothing_else() {
    let server = serve_snapshot(options()).await;
    let mut public = connected(server.addr, json!({})).await;

    let secret_rooms = server
        .access
        .rooms_for("api::secret.secret", &Action::Create);
    assert!(
        !secret_rooms.contains(&"Public".to_owned()),
        "{secret_rooms:?}"
    );
    server
        .deliver("secret:create", secret_rooms.to_vec(), json!({"no": 1}))
        .await;
    let message_rooms = server
        .access
        .rooms_for("api::message.message", &Action::Create);
    let entry = json!({"data": {"id": 1, "attributes": {"text": "hi"}}, "meta": {}});
    server
        .deliver("message:create", message_rooms.to_vec(), entry.clone())
        .await;
    server.deliver("message:update", vec![], json!(1)).await;
    server.marker(1).await;

    assert_eq!(public.event("message:create").await, vec![entry]);
    public.marker(1).await;
}

#[tokio::test]
async fn payload_is_sent_verbatim_as_one_argument() {
    let server = serve_snapshot(options()).await;
    let mut public = connected(server.addr, json!({"token": ""})).await;
    let rooms = vec!["Public".to_owned()];
    server
        .deliver("message:create", rooms.clone(), json!([1, 2]))
        .await;
    server
        .deliver("message:update", rooms, json!({"a": {"b": [null, "x"]}}))
        .await;
    assert_eq!(public.event("message:create").await, vec![json!([1, 2])]);
    assert_eq!(
        public.event("message:update").await,
        vec![json!({"a": {"b": [null, "x"]}})]
    );
}

#[tokio::test]
async fn jwt_user_joins_its_role_room() {
    let server = serve_snapshot(options()).await;
    let token = jwt(ALICE);
    let rooms = server.rooms_of(Some(&token), None);
    assert_eq!(rooms, vec!["Authenticated".to_owned()]);
    let mut alice = connected(server.addr, json!({ "token": token })).await;
    let mut public = connected(server.addr, json!({})).await;

    server
        .deliver("message:create", vec!["Authenticated".to_owned()], json!(1))
        .await;
    server.marker(1).await;
    assert_eq!(alice.event("message:create").await, vec![json!(1)]);
    alice.marker(1).await;
    public.marker(1).await;
}

#[tokio::test]
async fn custom_role_user_gets_its_role_events() {
    let server = serve_snapshot(options()).await;
    let token = jwt(EDDIE);
    let mut eddie = connected(server.addr, json!({ "token": token })).await;
    let mut alice = connected(server.addr, json!({ "token": jwt(ALICE) })).await;

    let rooms = server
        .access
        .rooms_for("api::secret.secret", &Action::Update);
    assert!(rooms.contains(&"Editor".to_owned()), "{rooms:?}");
    server
        .deliver("secret:update", rooms.to_vec(), json!({"id": 7}))
        .await;
    server.marker(1).await;
    assert_eq!(eddie.event("secret:update").await, vec![json!({"id": 7})]);
    eddie.marker(1).await;
    alice.marker(1).await;
}

#[tokio::test]
async fn api_token_socket_joins_the_token_room() {
    let server = serve_snapshot(options()).await;
    let auth = json!({ "token": READER_TOKEN, "strategy": "apiToken" });
    let rooms = server.rooms_of(Some(READER_TOKEN), Some("apiToken"));
    let mut reader = connected(server.addr, auth).await;
    let mut public = connected(server.addr, json!({})).await;

    server
        .deliver("secret:create", rooms.clone(), json!("for the token"))
        .await;
    server.marker(1).await;
    assert_eq!(
        reader.event("secret:create").await,
        vec![json!("for the token")]
    );
    reader.marker(1).await;
    public.marker(1).await;
}

#[tokio::test]
async fn refused_handshakes_carry_the_exact_message_and_join_nothing() {
    let server = serve_snapshot(options()).await;
    let cases = [
        (json!({ "token": "not-a-jwt.at.all" }), "Invalid token."),
        (json!({ "token": 42 }), "Invalid token."),
        (json!({ "token": jwt(99) }), "Invalid token."),
        (json!({ "token": jwt(BOB) }), "Invalid credentials"),
        (json!({ "token": jwt(CAROL) }), "Invalid credentials"),
        (
            json!({ "token": EXPIRED_TOKEN, "strategy": "apiToken" }),
            "Token expired",
        ),
        (
            json!({ "token": "unknown", "strategy": "apiToken" }),
            "Invalid token.",
        ),
    ];
    for (auth, message) in cases {
        let mut c = connect(server.addr, auth.clone()).await;
        assert_eq!(
            c.next().await,
            Got::ConnectError(message.to_owned()),
            "{auth}"
        );
    }
    assert_eq!(server.emitter.connected(), 0);
    // Nothing joined a room: a delivery to every role reaches nobody, and the sockets stay
    // unknown to the server.
    let mut public = connected(server.addr, json!({})).await;
    server
        .deliver(
            "message:create",
            vec!["Public".into(), "Authenticated".into(), "Editor".into()],
            json!(1),
        )
        .await;
    assert_eq!(public.event("message:create").await, vec![json!(1)]);
    assert_eq!(server.emitter.connected(), 1);
}

#[tokio::test]
async fn handshake_before_access_is_loaded_is_refused() {
    let server = serve(options(), AccessHandle::default()).await;
    let mut c = connect(server.addr, json!({})).await;
    assert_eq!(
        c.next().await,
        Got::ConnectError("Server is starting, try again".to_owned())
    );
    assert_eq!(server.emitter.connected(), 0);
}

// ---------------------------------------------------------------------------------------------
// Access changes
// ---------------------------------------------------------------------------------------------

fn relation(name: &str, columns: &[(&str, u32)]) -> Arc<Relation> {
    Arc::new(Relation::described(
        RelationId(1),
        "public",
        name,
        ReplicaIdentity::Default,
        columns,
    ))
}

fn text(s: &str) -> PgValue {
    PgValue::Text(bytes::Bytes::from(s.to_owned()))
}

#[tokio::test]
async fn access_change_disconnects_a_blocked_user_and_moves_a_user_whose_role_changed() {
    let mut access = Access::from_snapshot(access_config(), snapshot());
    let server = serve(options(), access.handle()).await;
    let mut alice = connected(server.addr, json!({ "token": jwt(ALICE) })).await;
    let mut eddie = connected(server.addr, json!({ "token": jwt(EDDIE) })).await;
    let mut public = connected(server.addr, json!({})).await;

    // Alice is blocked.
    let mut which = access.apply(AccessChange::Row {
        table: AccessTable::Users,
        relation: relation(
            "up_users",
            &[("id", 23), ("blocked", 16), ("confirmed", 16)],
        ),
        op: RowOp::Update {
            old: None,
            new: vec![text("1"), text("t"), text("t")],
        },
    });
    // Eddie (user-role link 2) becomes Authenticated.
    which.merge(access.apply(AccessChange::Row {
        table: AccessTable::UserRoleLinks,
        relation: relation(
            "up_users_role_links",
            &[("id", 23), ("user_id", 23), ("role_id", 23)],
        ),
        op: RowOp::Update {
            old: None,
            new: vec![text("2"), text("2"), text("1")],
        },
    }));
    server.emitter.send(Outgoing::AccessChanged(which));

    alice.expect(Got::Closed).await;
    server
        .deliver(
            "secret:update",
            vec!["Editor".to_owned()],
            json!("old room"),
        )
        .await;
    server
        .deliver(
            "message:update",
            vec!["Authenticated".to_owned()],
            json!("new room"),
        )
        .await;
    server.marker(1).await;
    assert_eq!(eddie.event("message:update").await, vec![json!("new room")]);
    eddie.marker(1).await;
    public.marker(1).await;
    assert_eq!(server.emitter.connected(), 2);
}

// ---------------------------------------------------------------------------------------------
// Raw
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn raw_goes_to_everyone_to_a_room_or_to_one_socket() {
    let server = serve_snapshot(options()).await;
    let mut alice = connected(server.addr, json!({ "token": jwt(ALICE) })).await;
    let mut eddie = connected(server.addr, json!({ "token": jwt(EDDIE) })).await;
    let mut public = connected(server.addr, json!({})).await;

    server.raw("news", None, json!({"all": true})).await;
    for c in [&mut alice, &mut eddie, &mut public] {
        assert_eq!(c.event("news").await, vec![json!({"all": true})]);
    }

    server
        .raw("news", Some(vec!["Editor".to_owned()]), json!("editors"))
        .await;
    let alice_sid = server.sid_of(&Identity::User { id: ALICE });
    server
        .raw("news", Some(vec![alice_sid]), json!("just alice"))
        .await;
    server.raw("news", Some(vec![]), json!("nobody")).await;
    server.marker(1).await;

    assert_eq!(eddie.event("news").await, vec![json!("editors")]);
    assert_eq!(alice.event("news").await, vec![json!("just alice")]);
    for c in [&mut alice, &mut eddie, &mut public] {
        c.marker(1).await;
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP routes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn cors_headers_only_when_configured_and_only_on_socket_io() {
    let polling = "/socket.io/?EIO=4&transport=polling";
    let origin = "http://app.example";

    let plain = serve_snapshot(options()).await;
    let res = http()
        .get(plain.url(polling))
        .header("Origin", origin)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        res.headers()
    );

    let mut opts = options();
    opts.io.cors = Some(CorsConfig {
        origins: Some(vec![origin.to_owned()]),
        methods: vec!["GET".to_owned(), "POST".to_owned()],
        credentials: true,
    });
    let with_cors = serve_snapshot(opts).await;
    let res = http()
        .get(with_cors.url(polling))
        .header("Origin", origin)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some(origin)
    );
    assert_eq!(
        res.headers()
            .get("access-control-allow-credentials")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let res = http()
        .get(with_cors.url("/healthz"))
        .header("Origin", origin)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn readyz_says_what_is_not_ready_until_everything_is() {
    let server = serve_snapshot(options()).await;
    let get = |path: &'static str| {
        let url = server.url(path);
        async move {
            let res = http()
                .get(url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let status = res.status();
            (status, res.text().await.unwrap_or_default())
        }
    };
    assert_eq!(get("/healthz").await.0, StatusCode::OK);
    let (status, body) = get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(
        body,
        json!({"ready": false, "waiting_for": ["replication stream", "content-type catalog", "roles and permissions"]})
    );
    server.health.set_streaming(true);
    server.health.set_catalog_loaded(true);
    let (_, body) = get("/readyz").await;
    assert!(
        body.contains("roles and permissions") && !body.contains("catalog"),
        "{body}"
    );
    server.health.set_access_loaded(true);
    let (status, body) = get("/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"ready":true}"#)
    );
}

#[tokio::test]
async fn metrics_show_rooms_emits_and_replication_progress() {
    let server = serve_snapshot(options()).await;
    server
        .health
        .set_server_lsn(crate::lsn::Lsn(0x2_0000_0000 + 2048));
    server
        .health
        .set_confirmed_lsn(crate::lsn::Lsn(0x2_0000_0000));
    let mut public = connected(server.addr, json!({})).await;
    let _alice = connected(server.addr, json!({ "token": jwt(ALICE) })).await;
    server
        .deliver("message:create", vec!["Public".to_owned()], json!(1))
        .await;
    public.event("message:create").await;

    let res = http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap_or_default();
    for needle in [
        "strapi_io_sockets_connected 2",
        "strapi_io_room_sockets{room=\"Public\"} 1",
        "strapi_io_room_sockets{room=\"Authenticated\"} 1",
        "strapi_io_events_emitted_total{content_type=\"message\",action=\"create\"} 1",
        "strapi_io_events_dropped_total 0",
        "strapi_io_replication_lag_bytes 2048",
        "strapi_io_replication_lag_seconds",
        "strapi_io_confirmed_lsn 8589934592",
        "strapi_io_ready 0",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from\n{text}");
    }
}

#[tokio::test]
async fn http_emit_api_is_absent_without_an_admin_token() {
    let server = serve_snapshot(options()).await;
    for path in ["/io/emit", "/io/raw"] {
        let res = http()
            .post(server.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .body(r#"{"raw":"x"}"#)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn http_emit_api_checks_the_token_and_the_body_and_reports_targets() {
    let mut opts = options();
    opts.admin_token = Some(Secret::new(ADMIN_TOKEN));
    let server = serve_snapshot(opts).await;
    server.health.set_access_loaded(true);
    let mut public = connected(server.addr, json!({})).await;
    let mut alice = connected(server.addr, json!({ "token": jwt(ALICE) })).await;

    let post = |path: &'static str, token: Option<&'static str>, body: &'static str| {
        let url = server.url(path);
        async move {
            let mut req = http().post(url).body(body);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let res = req.send().await.unwrap_or_else(|e| panic!("{e}"));
            let status = res.status();
            let text = res.text().await.unwrap_or_default();
            let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            (status, json)
        }
    };

    let raw = r#"{"raw":"hello","data":{"x":1}}"#;
    assert_eq!(post("/io/raw", None, raw).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        post("/io/raw", Some("wrong"), raw).await.0,
        StatusCode::UNAUTHORIZED
    );

    let (status, body) = post("/io/raw", Some(ADMIN_TOKEN), "{").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("EOF")),
        "{body}"
    );
    let (status, body) = post(
        "/io/emit",
        Some(ADMIN_TOKEN),
        r#"{"emit":"api::nothing.nothing.ping","data":1}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("api::nothing.nothing")),
        "{body}"
    );
    let (status, body) = post("/io/emit", Some(ADMIN_TOKEN), raw).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("/io/raw")),
        "{body}"
    );

    assert_eq!(
        post("/io/raw", Some(ADMIN_TOKEN), raw).await,
        (StatusCode::ACCEPTED, json!({"targeted": 2}))
    );
    assert_eq!(public.event("hello").await, vec![json!({"x": 1})]);
    assert_eq!(alice.event("hello").await, vec![json!({"x": 1})]);

    assert_eq!(
        post(
            "/io/raw",
            Some(ADMIN_TOKEN),
            r#"{"raw":"hello","data":2,"room":"Authenticated"}"#
        )
        .await,
        (StatusCode::ACCEPTED, json!({"targeted": 1}))
    );
    assert_eq!(alice.event("hello").await, vec![json!(2)]);

    // Every role may find messages (permission mode "read"), so both sockets are targeted.
    assert_eq!(
        post(
            "/io/emit",
            Some(ADMIN_TOKEN),
            r#"{"emit":"api::message.message.ping","data":{"n":3}}"#
        )
        .await,
        (StatusCode::ACCEPTED, json!({"targeted": 2}))
    );
    assert_eq!(public.event("message:ping").await, vec![json!({"n": 3})]);
    assert_eq!(alice.event("message:ping").await, vec![json!({"n": 3})]);
    server.marker(1).await;
    public.marker(1).await;
    alice.marker(1).await;
}

// ---------------------------------------------------------------------------------------------
// [[events]] handlers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn relay_reaches_the_senders_role_room_but_not_the_sender() {
    let mut opts = options();
    opts.events = vec![
        EventConfig {
            name: "chat".to_owned(),
            handler: EventHandler::Relay { rooms: None },
        },
        EventConfig {
            name: "shout".to_owned(),
            handler: EventHandler::Relay {
                rooms: Some(vec!["Public".to_owned()]),
            },
        },
        EventConfig {
            name: "connection".to_owned(),
            handler: EventHandler::Log,
        },
    ];
    let server = serve_snapshot(opts).await;
    let token = jwt(ALICE);
    let mut alice = connected(server.addr, json!({ "token": token })).await;
    let mut alice2 = connected(server.addr, json!({ "token": token })).await;
    let mut public = connected(server.addr, json!({})).await;

    alice
        .client
        .emit("chat", vec![json!("hi"), json!({"n": 1})])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        alice2.event("chat").await,
        vec![json!("hi"), json!({"n": 1})]
    );
    alice
        .client
        .emit("shout", json!("everyone"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A relay is not replayable: after a string, a `null` keeps clients from taking it for
    // an offset.
    assert_eq!(
        public.event("shout").await,
        vec![json!("everyone"), Value::Null]
    );
    // Unknown (and differently cased) events are ignored.
    alice
        .client
        .emit("Chat", json!("ignored"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    public
        .client
        .emit("chat", json!("public chat"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A later relay that arrives shows the ones before it were handled.
    alice
        .client
        .emit("chat", json!("again"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        alice2.event("chat").await,
        vec![json!("again"), Value::Null]
    );
    server.marker(1).await;
    alice.marker(1).await;
    alice2.marker(1).await;
    public.marker(1).await;
}

/// A webhook target: `/ok` answers with what it got, `/fail` with 500, `/slow` never.
async fn webhook_target() -> (SocketAddr, JoinHandle<()>) {
    use axum::routing::post;
    let app = Router::new()
        .route(
            "/ok",
            post(|axum::Json(body): axum::Json<Value>| async move {
                axum::Json(json!({ "ok": true, "got": body }))
            }),
        )
        .route(
            "/fail",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route("/slow", post(std::future::pending::<&'static str>));
    serve_router(app).await
}

#[tokio::test]
async fn webhook_answers_become_acknowledgements() {
    let (target, _target_task) = webhook_target().await;
    let down = {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        l.local_addr().unwrap_or_else(|e| panic!("{e}"))
    };
    let hook = |name: &str, url: String, ms: u64| EventConfig {
        name: name.to_owned(),
        handler: EventHandler::Webhook {
            url,
            timeout: Duration::from_millis(ms),
        },
    };
    let mut opts = options();
    opts.events = vec![
        hook("ask", format!("http://{target}/ok"), 5_000),
        hook("fail", format!("http://{target}/fail"), 5_000),
        hook("slow", format!("http://{target}/slow"), 300),
        hook("down", format!("http://{down}/"), 5_000),
    ];
    let server = serve_snapshot(opts).await;
    let alice = connected(server.addr, json!({ "token": jwt(ALICE) })).await;
    let sid = server.sid_of(&Identity::User { id: ALICE });

    let ack = alice.ask("ask", vec![json!("q"), json!({"n": 2})]).await;
    assert_eq!(
        ack,
        vec![json!({
            "ok": true,
            "got": {
                "event": "ask",
                "args": ["q", {"n": 2}],
                "socket": {"id": sid, "role": "Authenticated", "userId": ALICE},
            }
        })]
    );

    let error_of = |ack: Vec<Value>| -> String {
        match ack.as_slice() {
            [v] => v["error"].as_str().unwrap_or_default().to_owned(),
            _ => panic!("unexpected ack {ack:?}"),
        }
    };
    let e = error_of(alice.ask("fail", vec![json!(1)]).await);
    assert!(e.contains("500"), "{e}");
    let e = error_of(alice.ask("slow", vec![json!(1)]).await);
    assert!(e.contains("timed out after 300 ms"), "{e}");
    let e = error_of(alice.ask("down", vec![json!(1)]).await);
    assert!(e.contains("unreachable"), "{e}");
}

#[tokio::test]
async fn close_drops_every_socket_and_lets_a_graceful_shutdown_finish() {
    let health = Health::new();
    let access = AccessHandle::from_snapshot(access_config(), snapshot());
    let (router, emitter) = build(options(), access, catalog(), health, Metrics::new());
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    let _public = connected(addr, json!({})).await;
    let _alice = connected(addr, json!({ "token": jwt(ALICE) })).await;
    assert_eq!(emitter.connected(), 2);

    emitter.close().await;
    let _ = stop.send(());
    assert_eq!(emitter.connected(), 0);

    match tokio::time::timeout(WAIT, server).await {
        Ok(Ok(Ok(()))) => {}
        other => panic!("server did not shut down cleanly: {other:?}"),
    }
}

#[tokio::test]
async fn connection_and_disconnect_webhooks_are_posted() {
    use axum::routing::post;
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    let app = Router::new().route(
        "/record",
        post(move |axum::Json(body): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let (target, _target_task) = serve_router(app).await;
    let hook = |name: &str| EventConfig {
        name: name.to_owned(),
        handler: EventHandler::Webhook {
            url: format!("http://{target}/record"),
            timeout: Duration::from_secs(5),
        },
    };
    let mut opts = options();
    opts.events = vec![hook("connection"), hook("disconnect")];
    let server = serve_snapshot(opts).await;
    let mut recorded = async || {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no webhook call within {WAIT:?}"))
            .unwrap_or_else(|| panic!("webhook target gone"))
    };

    let alice = connected(server.addr, json!({ "token": jwt(ALICE) })).await;
    let sid = server.sid_of(&Identity::User { id: ALICE });
    let socket = json!({"id": sid, "role": "Authenticated", "userId": ALICE});
    assert_eq!(
        recorded().await,
        json!({"event": "connection", "args": [], "socket": socket})
    );
    alice
        .client
        .disconnect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        recorded().await,
        json!({"event": "disconnect", "args": [], "socket": socket})
    );
}

// Limits: WebSocket sizes, the emit API's auth order, /metrics access, webhook signing and
// safeguards, per-socket event rates.
mod limits;
