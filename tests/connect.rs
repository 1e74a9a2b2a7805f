//! `pg::connect`: ordinary SQL sessions with TLS per sslmode, and errors that say what to fix.

use std::net::TcpListener;

use strapi_io_bridge::config::DatabaseConfig;
use strapi_io_bridge::pg;

use crate::support::pg::{SUPERUSER, SUPERUSER_PASSWORD, TempCluster, TestDb};

fn config(url: &str) -> DatabaseConfig {
    DatabaseConfig::from_url(url, "DATABASE_URL").expect("a valid URL")
}

async fn uses_tls(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("query pg_stat_ssl")
        .get(0)
}

#[tokio::test]
async fn connects_over_tcp_and_runs_sql() {
    let db = TestDb::new(TempCluster::shared());
    let client = pg::connect(&db.config()).await.expect("connect");
    let name: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(name, db.name());
    assert!(!uses_tls(&client).await, "sslmode=disable");
    let app: String = client
        .query_one("SHOW application_name", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(app, pg::APPLICATION_NAME);
}

#[tokio::test]
async fn unix_socket_never_uses_tls_even_when_required() {
    let cluster = TempCluster::shared();
    let db = TestDb::new(cluster);
    let url = format!(
        "host={} port={} user={SUPERUSER} dbname={} sslmode=require",
        cluster.socket_dir().display(),
        cluster.port(),
        db.name()
    );
    let client = pg::connect(&config(&url)).await.expect("connect");
    assert!(!uses_tls(&client).await);
}

#[tokio::test]
async fn tls_follows_sslmode() {
    let cluster = TempCluster::shared_tls();
    let db = TestDb::new(cluster);
    let ca = cluster
        .ca_pem()
        .expect("a TLS cluster")
        .display()
        .to_string();
    let port = cluster.port();
    let name = db.name();
    let base = format!("postgres://{SUPERUSER}:{SUPERUSER_PASSWORD}");
    for url in [
        format!("{base}@127.0.0.1:{port}/{name}?sslmode=prefer"),
        format!("{base}@127.0.0.1:{port}/{name}?sslmode=require"),
        format!("{base}@127.0.0.1:{port}/{name}?sslmode=verify-ca&sslrootcert={ca}"),
        format!("{base}@localhost:{port}/{name}?sslmode=verify-full&sslrootcert={ca}"),
    ] {
        let client = pg::connect(&config(&url))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(uses_tls(&client).await, "{url}");
    }

    let err = pg::connect(&config(&format!(
        "{base}@127.0.0.1:{port}/{name}?sslmode=verify-full&sslrootcert={ca}"
    )))
    .await
    .expect_err("the certificate does not name 127.0.0.1");
    assert!(
        err.to_string().contains("does not name \"127.0.0.1\""),
        "{err}"
    );

    let err = pg::connect(&config(&format!(
        "{base}@localhost:{port}/{name}?sslmode=verify-full"
    )))
    .await
    .expect_err("the test CA is not trusted without sslrootcert");
    assert!(err.to_string().contains("sslrootcert"), "{err}");

    let err = pg::connect(&config(&format!(
        "{base}@127.0.0.1:{port}/{name}?sslmode=disable"
    )))
    .await
    .expect_err("pg_hba.conf accepts TLS only");
    assert!(
        err.to_string()
            .contains("add a line for this client to pg_hba.conf"),
        "{err}"
    );
}

#[tokio::test]
async fn server_without_tls_is_refused_when_tls_is_required() {
    let cluster = TempCluster::shared();
    let db = TestDb::new(cluster);
    let url = cluster.url(SUPERUSER, SUPERUSER_PASSWORD, db.name(), "sslmode=require");
    let err = pg::connect(&config(&url))
        .await
        .expect_err("the shared cluster has no TLS");
    assert!(err.to_string().contains("does not accept TLS"), "{err}");
    // prefer falls back to plain.
    let url = cluster.url(SUPERUSER, SUPERUSER_PASSWORD, db.name(), "sslmode=prefer");
    let client = pg::connect(&config(&url)).await.expect("connect");
    assert!(!uses_tls(&client).await);
}

#[tokio::test]
async fn errors_say_what_to_fix() {
    let cluster = TempCluster::shared();
    let db = TestDb::new(cluster);

    let url = cluster.url(SUPERUSER, "wrong-secret", db.name(), "sslmode=disable");
    let err = pg::connect(&config(&url))
        .await
        .expect_err("wrong password");
    let text = err.to_string();
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(
        text.contains("check the password of user \"postgres\" in DATABASE_URL"),
        "{text}"
    );
    assert!(
        !text.contains("wrong-secret"),
        "the password leaked: {text}"
    );

    let url = cluster.url(
        SUPERUSER,
        SUPERUSER_PASSWORD,
        "no_such_db",
        "sslmode=disable",
    );
    let err = pg::connect(&config(&url)).await.expect_err("no database");
    assert!(err.to_string().contains("does not exist"), "{err}");

    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("postgres://u:p@127.0.0.1:{port}/x?sslmode=disable");
    let err = pg::connect(&config(&url))
        .await
        .expect_err("nothing listens");
    assert!(
        err.to_string()
            .contains(&format!("is PostgreSQL running at 127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn verify_ca_trusts_only_its_sslrootcert() {
    let cluster = TempCluster::shared_tls();
    let db = TestDb::new(cluster);
    let port = cluster.port();
    let name = db.name();
    let base = format!("postgres://{SUPERUSER}:{SUPERUSER_PASSWORD}@127.0.0.1:{port}/{name}");

    // A CA that did not sign the server's certificate.
    let dir = tempfile::tempdir().expect("a temp dir");
    let key = rcgen::KeyPair::generate().expect("a key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, params.self_signed(&key).expect("a CA").pem()).expect("write");
    let err = pg::connect(&config(&format!(
        "{base}?sslmode=verify-ca&sslrootcert={}",
        other.display()
    )))
    .await
    .expect_err("the server's CA is not the one given");
    assert!(
        err.to_string().contains("not signed by a trusted root"),
        "{err}"
    );

    // Without sslrootcert, verify-ca has nothing of its own to trust: refused before
    // connecting, instead of trusting every public CA without a host-name check.
    let err = pg::connect(&config(&format!("{base}?sslmode=verify-ca")))
        .await
        .expect_err("verify-ca needs sslrootcert");
    assert!(
        err.to_string()
            .contains("sslmode=verify-ca: needs sslrootcert=/path/to/ca.pem"),
        "{err}"
    );
    let err = pg::connect(&config(&format!(
        "{base}?sslmode=verify-ca&sslrootcert=system"
    )))
    .await
    .expect_err("public roots need verify-full");
    assert!(
        err.to_string().contains("needs sslmode=verify-full"),
        "{err}"
    );
}
