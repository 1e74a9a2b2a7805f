//! The whole bridge in-process on a test database loaded with the Strapi 4 fixture.
//!
//! [`StrapiDb`] is a fresh database holding `tests/fixtures/strapi4.sql` with `setup` applied;
//! [`Bridge`] runs `pipeline::run` on it, listening on `127.0.0.1:0`, and is ready (its
//! `/readyz` answered 200) when `start` returns.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use strapi_io_bridge::config::{Config, EnvVars, RawConfig, Sources};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::pg::{TempCluster, TestDb};
use super::wait;

/// The fixture: a Strapi-4-shaped database (see its header for roles, users and tokens).
pub const FIXTURE: &str = include_str!("../fixtures/strapi4.sql");
/// The fixture's users-permissions JWT secret.
pub const JWT_SECRET: &str = "j9skLpTvMt6nUUQMqNMjAg==";
/// The fixture's API-token salt.
pub const API_TOKEN_SALT: &str = "7hOJwW+vNX8lRL0c0cedWA==";
/// The fixture's read-only API token, in clear.
pub const READ_ONLY_TOKEN: &str = "30b14af979b15677995281242a0abe535606e30a71f6b8be72ea5d8e8d411a205bf5a23d2d422e9e79c20df74ee490eea2304280c76cd02632ec47c4a92da1f22ed3f463bdf69171f20d8e1ada5784b2e06964d6a68a7a46d873fd055fd3f8db73cf5e76513ca2a2eb1683406dea98a564baaf4900c7ffb13b9435577e4eef63";
/// The fixture's full-access API token, in clear.
pub const FULL_ACCESS_TOKEN: &str = "8dab4d2476def611966ff29dc815607aff831a289f6d34e04aa5c899b35c479679b04ce707ab899959d8364b4b6f114f8e9ae32273a4cd3d0d45200df3f1c4d822dc7345c293db80e63f5915e467e481fa3d24b2fb338120e1e16be712c2a6f766ed70b8e78d5d2b7481f2cc65dd50412d6924f64612279a6a186af6e7334851";
/// The fixture's custom API token (find on message and chat), in clear.
pub const CUSTOM_TOKEN: &str = "765e1d67685e62823d13cfcf25815c7b7927215f40de9f5a96e232d9d30c3dd49879e75640aa2f6f453c57fb05c9d9a89cf480a278b4c9cf95df644e15d8cc180bdb513ebb83122036b563810d0843bbc189f4b43d33643e5e8d466a75e169cdce8454a4bf89cac2b1683d24074b25d700f78427130a73b885095e358c932cfe";

/// Users of the fixture.
pub const ALICE: i64 = 1; // Authenticated
/// Editor (reads chats only).
pub const EDDIE: i64 = 2;
/// Authenticated.
pub const BOB: i64 = 3;

/// The Strapi 5 fixture: a database Strapi 5.54.0 laid out (see its header), recorded by
/// `tests/e2e/record5.mjs`.
pub const FIXTURE5: &str = include_str!("../fixtures/strapi5.sql");
/// The Strapi 5 fixture's users-permissions JWT secret.
pub const JWT_SECRET5: &str = "bqGg5w2ClHqVgs/XwSexSA==";
/// The Strapi 5 fixture's API-token salt.
pub const API_TOKEN_SALT5: &str = "To6g4FaYaMnOPEMs2T1swg==";
/// The Strapi 5 fixture's full-access API token, in clear.
pub const FULL_ACCESS_TOKEN5: &str = "253b73e511b882095eef08b8071cbe0068a6fc2a115d0ebe2b22b8d996ab6b0b31e7b25654e83164537390c09dd0d5b73096377ace3e1c124ef96af77a020e295f28e49f9b42cad04b2d425b63b1e66e7e780a08fa41f22ae1f601ee9d8f8f808d2469859c3be4a0b2e3e8dfff3bfdad2772c59c6d3e079a90b3dde345e77b40";
/// The Strapi 5 fixture's custom API token (find on messages), in clear.
pub const CUSTOM_TOKEN5: &str = "d47879e83b56525b552a6db4e7ff3da92dcb422241b5dbccab43bb87160888dc660ab78c196c6dfe43812db5dffab541d5f258683abfbfbdf79690b5f871f042ee5b9e047d38200c00729b6f98118be1891aaac9c2c9760d85dd420f716325e2aeecaaa3c5cc4cc5f87f23e5469f3d26fec83afc056484471fbed09d833a2111";

/// A fresh database with the fixture loaded and `setup` applied.
pub struct StrapiDb<'a> {
    /// The database.
    pub db: TestDb<'a>,
    /// `JWT_SECRET` and `API_TOKEN_SALT` its rows assume.
    secrets: (&'static str, &'static str),
}

impl<'a> StrapiDb<'a> {
    /// Loads the fixture into a new database on the shared cluster. `before_setup` runs first
    /// (e.g. to empty tables) so that it produces no events.
    pub async fn new(before_setup: &str) -> StrapiDb<'a> {
        Self::on(TempCluster::shared(), before_setup).await
    }

    /// The same on a given cluster.
    pub async fn on(cluster: &'a TempCluster, before_setup: &str) -> StrapiDb<'a> {
        Self::load(cluster, FIXTURE, (JWT_SECRET, API_TOKEN_SALT), before_setup).await
    }

    /// A fresh database holding the Strapi 5 fixture, `setup` applied.
    pub async fn strapi5(before_setup: &str) -> StrapiDb<'a> {
        Self::load(
            TempCluster::shared(),
            FIXTURE5,
            (JWT_SECRET5, API_TOKEN_SALT5),
            before_setup,
        )
        .await
    }

    async fn load(
        cluster: &'a TempCluster,
        fixture: &str,
        secrets: (&'static str, &'static str),
        before_setup: &str,
    ) -> StrapiDb<'a> {
        let db = TestDb::new(cluster);
        let client = db.client().await;
        client
            .batch_execute(fixture)
            .await
            .expect("load the fixture");
        if !before_setup.is_empty() {
            client
                .batch_execute(before_setup)
                .await
                .expect("prepare the fixture");
        }
        let strapi = StrapiDb { db, secrets };
        let cfg = strapi.config("");
        strapi_io_bridge::check::setup(&cfg)
            .await
            .expect("setup on the fixture");
        strapi
    }

    /// A bridge configuration for this database: `extra_toml` is a config.toml fragment; the
    /// database, slot and publication are this database's, the secrets the fixture's.
    pub fn config(&self, extra_toml: &str) -> Config {
        let mut cfg = config_with_secrets(extra_toml, self.secrets);
        cfg.database = self.db.config();
        cfg
    }

    /// Runs SQL as the superuser.
    pub async fn sql(&self, sql: &str) {
        self.db
            .client()
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// A bridge configuration from a config.toml fragment with the fixture's secrets; its database
/// is the default one (callers set `database`).
pub fn config_with(extra_toml: &str) -> Config {
    config_with_secrets(extra_toml, (JWT_SECRET, API_TOKEN_SALT))
}

/// [`config_with`], with the given `JWT_SECRET` and `API_TOKEN_SALT`.
pub fn config_with_secrets(extra_toml: &str, secrets: (&str, &str)) -> Config {
    let file = RawConfig::parse(extra_toml, Path::new("test.toml")).expect("test config");
    let mut env = std::collections::HashMap::new();
    env.insert("JWT_SECRET".to_owned(), secrets.0.to_owned());
    env.insert("API_TOKEN_SALT".to_owned(), secrets.1.to_owned());
    Config::resolve(&Sources {
        env: EnvVars::new(env, "the test"),
        file,
        file_path: "test.toml".into(),
        ..Sources::default()
    })
    .expect("test config resolves")
}

/// A running bridge.
pub struct Bridge {
    /// Where Socket.IO and the HTTP routes listen.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Bridge {
    /// Starts the pipeline with `cfg` and waits until `/readyz` says ready.
    pub async fn start(cfg: Config) -> Bridge {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(strapi_io_bridge::pipeline::run(
            cfg,
            listener,
            shutdown.clone(),
        ));
        let bridge = Bridge {
            addr,
            shutdown,
            task: Some(task),
        };
        let url = bridge.url("/readyz");
        wait::until("the bridge to be ready", wait::DEFAULT_TIMEOUT, || {
            let url = url.clone();
            async move {
                reqwest_get(&url)
                    .await
                    .is_some_and(|(status, _)| status == 200)
            }
        })
        .await;
        bridge
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops gracefully and returns how the pipeline ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the bridge stops within 30 s")
            .expect("the bridge task does not panic")
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A GET with a short timeout: `(status, body)`, or `None` when nothing answered.
pub async fn reqwest_get(url: &str) -> Option<(u16, String)> {
    let client = http_client()?;
    let response = client.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.unwrap_or_default()))
}

/// An HTTP client for tests (the process-wide TLS provider installed first, as `main` does).
pub fn http_client() -> Option<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()
}

/// A users-permissions JWT for `user_id`, signed with the fixture's secret, valid for an hour
/// (or expired an hour ago).
pub fn jwt(user_id: i64, expired: bool) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let (iat, exp) = if expired {
        (now - 7200, now - 3600)
    } else {
        (now, now + 3600)
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "id": user_id, "iat": iat, "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("sign a JWT")
}
