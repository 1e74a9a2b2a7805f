//! Throwaway PostgreSQL clusters for tests, on top of [`strapi_io_bridge::cluster`].
//!
//! [`TempCluster`] is a library [`Cluster`] (initdb in a temporary folder, a free port, TCP on
//! 127.0.0.1 and a Unix socket inside the folder, logical replication on, the `postgres` user
//! when root, a watchdog) plus what only tests want: a superuser password, TLS certificates from
//! a generated CA, blocking psql helpers, and methods that panic with PostgreSQL's output.
//! [`TempCluster::shared`] is one cluster for the whole test binary; [`TestDb`] gives each test
//! a fresh database on it and cleans up on drop. Tests that restart or reconfigure PostgreSQL
//! start their own cluster.
//!
//! A shared cluster is never dropped (it lives in a static); the library's watchdog stops it
//! and removes its folder once the test process is gone.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use strapi_io_bridge::cluster::{
    Binaries, Cluster, ClusterOptions as LibOptions, DEBIAN_VERSIONS_ROOT, TcpAuth, TlsFiles,
};
use strapi_io_bridge::config::DatabaseConfig;

/// The superuser's name in every test cluster.
pub const SUPERUSER: &str = strapi_io_bridge::cluster::SUPERUSER;
/// The superuser's password (TCP logins need one).
pub const SUPERUSER_PASSWORD: &str = "bridge-test-superuser";

/// How clients over TCP authenticate (`pg_hba.conf`). Unix-socket logins are always `trust`.
pub type HbaAuth = TcpAuth;

/// How to set up a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `wal_level` (`logical` unless a test wants to see it refused).
    pub wal_level: &'static str,
    /// TCP authentication.
    pub auth: HbaAuth,
    /// Serve TLS with a certificate for `localhost` signed by a generated CA; TCP clients must
    /// then use TLS (`hostssl` lines only).
    pub ssl: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            wal_level: "logical",
            auth: HbaAuth::Md5,
            ssl: false,
        }
    }
}

/// A running throwaway PostgreSQL.
pub struct TempCluster {
    cluster: Cluster,
    ca_pem: Option<PathBuf>,
}

static SHARED: LazyLock<TempCluster> =
    LazyLock::new(|| TempCluster::new(ClusterOptions::default()));

static SHARED_TLS: LazyLock<TempCluster> = LazyLock::new(|| {
    TempCluster::new(ClusterOptions {
        ssl: true,
        auth: HbaAuth::Password,
        ..ClusterOptions::default()
    })
});

impl TempCluster {
    /// The cluster shared by the tests that do not restart or reconfigure PostgreSQL.
    pub fn shared() -> &'static TempCluster {
        &SHARED
    }

    /// A shared cluster that serves TLS only (`hostssl` lines, cleartext passwords inside TLS),
    /// with a certificate for `localhost` from [`ca_pem`](Self::ca_pem).
    pub fn shared_tls() -> &'static TempCluster {
        &SHARED_TLS
    }

    /// Creates and starts a cluster. Panics with PostgreSQL's output when that fails.
    pub fn new(options: ClusterOptions) -> TempCluster {
        let certificates = options.ssl.then(certificates);
        let cluster = Cluster::create(LibOptions {
            wal_level: options.wal_level.to_owned(),
            tcp_auth: options.auth,
            superuser_password: Some(SUPERUSER_PASSWORD.to_owned()),
            tls: certificates.as_ref().map(|(tls, _)| tls.clone()),
            folder_prefix: "bridge-pg-".to_owned(),
        })
        .unwrap_or_else(|e| panic!("cannot start a test cluster: {e}"));
        let ca_pem = certificates.map(|(_, ca)| {
            let path = cluster.root().join("ca.pem");
            fs::write(&path, ca).expect("write ca.pem");
            path
        });
        TempCluster { cluster, ca_pem }
    }

    /// The library cluster underneath.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// TCP port on 127.0.0.1 (the Unix socket uses the same number).
    pub fn port(&self) -> u16 {
        self.cluster.port()
    }

    /// A PostgreSQL program from the same installation (`psql`, `pg_recvlogical`, ...).
    pub fn program(&self, name: &str) -> PathBuf {
        self.cluster.program(name)
    }

    /// The directory holding the Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.cluster.socket_dir()
    }

    /// The CA certificate (PEM) that signed the server certificate, when started with TLS.
    pub fn ca_pem(&self) -> Option<&Path> {
        self.ca_pem.as_deref()
    }

    /// A TCP URL for `user`/`password` on database `db`; `params` is appended as the query
    /// (for example `sslmode=disable`).
    pub fn url(&self, user: &str, password: &str, db: &str, params: &str) -> String {
        let mut url = format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{db}",
            self.port()
        );
        if !params.is_empty() {
            url.push('?');
            url.push_str(params);
        }
        url
    }

    /// The superuser over TCP without TLS.
    pub fn superuser_url(&self, db: &str) -> String {
        self.url(SUPERUSER, SUPERUSER_PASSWORD, db, "sslmode=disable")
    }

    /// Whether the server log contains `text`.
    pub fn log_contains(&self, text: &str) -> bool {
        fs::read_to_string(self.cluster.log_file()).is_ok_and(|log| log.contains(text))
    }

    /// Runs SQL as the superuser over the Unix socket (blocking, for setup and `Drop`) and
    /// returns psql's unaligned output. Panics when psql fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("psql on {db} failed for {sql:?}: {e}"))
    }

    /// [`psql`](Self::psql) that returns the error instead of panicking.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut command: Command = self.cluster.command(&psql_program(self.cluster.binaries()));
        command
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port().to_string(),
                "-U",
                SUPERUSER,
                "-d",
                db,
                "-c",
                sql,
            ]);
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// A superuser SQL session over the Unix socket.
    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        let (client, connection) = self
            .cluster
            .superuser_config(db)
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to test database {db}: {e}"));
        tokio::spawn(connection);
        client
    }

    /// The server's `server_version_num` (`170004` for 17.4): tests of features that appeared
    /// in a given major version check it and say when they skip.
    pub fn version_num(&self) -> u32 {
        let text = self.psql("postgres", "SHOW server_version_num");
        text.parse()
            .unwrap_or_else(|_| panic!("server_version_num is not a number: {text:?}"))
    }

    /// The major version (`17`).
    pub fn major(&self) -> u32 {
        self.version_num() / 10_000
    }

    /// Appends lines to `postgresql.conf` and restarts PostgreSQL so they take effect.
    pub fn configure(&self, lines: &str) {
        self.cluster
            .append_settings(lines)
            .unwrap_or_else(|e| panic!("configuring the test cluster: {e}"));
        self.restart();
    }

    /// A streaming standby of this cluster with `settings` (this cluster is stopped for the
    /// copy and started again). Panics with PostgreSQL's output when that fails.
    pub fn standby(&self, settings: &str) -> TempCluster {
        self.stop();
        let standby = self.cluster.copy_as_standby(settings);
        self.start();
        TempCluster {
            cluster: standby.unwrap_or_else(|e| panic!("cannot start a standby: {e}")),
            ca_pem: None,
        }
    }

    /// Promotes this standby and waits until it accepts writes.
    pub fn promote(&self) {
        self.cluster
            .promote()
            .unwrap_or_else(|e| panic!("promoting the standby: {e}"));
    }

    /// The server log, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.cluster.log_file()).unwrap_or_default()
    }

    /// Stops PostgreSQL (fast shutdown: sessions are ended, walsenders finish sending).
    pub fn stop(&self) {
        self.cluster
            .stop()
            .unwrap_or_else(|e| panic!("stopping the test cluster: {e}"));
    }

    /// Starts PostgreSQL again after [`stop`](Self::stop), on the same port.
    pub fn start(&self) {
        self.cluster
            .start()
            .unwrap_or_else(|e| panic!("starting the test cluster again: {e}"));
    }

    /// Stops and starts PostgreSQL.
    pub fn restart(&self) {
        self.stop();
        self.start();
    }
}

/// The `psql` to run: the cluster's installation's, else (server-only installations such as the
/// npm packages of the version matrix) the newest under /usr/lib/postgresql, else `psql` on
/// `PATH`. psql speaks to servers of other major versions for the plain SQL tests send.
fn psql_program(bin: &Binaries) -> String {
    let own = bin.program("psql");
    if own.is_file() {
        return own.display().to_string();
    }
    let mut installed: Vec<(u32, PathBuf)> = fs::read_dir(DEBIAN_VERSIONS_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let psql = e.path().join("bin").join("psql");
            psql.is_file().then_some((major, psql))
        })
        .collect();
    installed.sort();
    match installed.pop() {
        Some((_, psql)) => psql.display().to_string(),
        None => "psql".to_owned(),
    }
}

/// A CA and a server certificate for `localhost` (DNS name only, not 127.0.0.1), so
/// `verify-full` succeeds by name and fails by address; and the CA's certificate (PEM).
fn certificates() -> (TlsFiles, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "strapi-io-bridge test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
    let key = rcgen::KeyPair::generate().expect("server key");
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca).expect("server certificate");
    (
        TlsFiles {
            certificate_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
        },
        ca.pem(),
    )
}

/// A fresh database on a cluster; on drop its sessions are ended, its replication slots and the
/// roles it created are dropped, and the database is removed.
pub struct TestDb<'a> {
    cluster: &'a TempCluster,
    name: String,
    roles: Mutex<Vec<String>>,
}

static NEXT_DB: AtomicU32 = AtomicU32::new(1);

impl<'a> TestDb<'a> {
    /// Creates the database `t<n>`.
    pub fn new(cluster: &'a TempCluster) -> TestDb<'a> {
        let name = format!("t{}", NEXT_DB.fetch_add(1, Ordering::Relaxed));
        cluster.psql("postgres", &format!("CREATE DATABASE {name}"));
        TestDb {
            cluster,
            name,
            roles: Mutex::new(Vec::new()),
        }
    }

    /// The database name; also the stem of its slot and publication names.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster it lives on.
    pub fn cluster(&self) -> &'a TempCluster {
        self.cluster
    }

    /// The slot name tests use by default.
    pub fn slot(&self) -> String {
        format!("slot_{}", self.name)
    }

    /// The publication name tests use by default.
    pub fn publication(&self) -> String {
        format!("pub_{}", self.name)
    }

    /// A bridge configuration from `url` with this database's slot and publication.
    pub fn config_for(&self, url: &str) -> DatabaseConfig {
        let mut config = DatabaseConfig::from_url(url, "the test URL").expect("test URL is valid");
        config.slot = self.slot();
        config.publication = self.publication();
        config
    }

    /// The bridge configuration: superuser over TCP (SCRAM), no TLS.
    pub fn config(&self) -> DatabaseConfig {
        self.config_for(&self.cluster.superuser_url(&self.name))
    }

    /// A superuser SQL session on this database.
    pub async fn client(&self) -> tokio_postgres::Client {
        self.cluster.client(&self.name).await
    }

    /// Runs SQL as the superuser (blocking).
    pub fn psql(&self, sql: &str) -> String {
        self.cluster.psql(&self.name, sql)
    }

    /// Creates a login role dropped with the database. `md5` stores its password as MD5
    /// instead of SCRAM, so the server asks for MD5 authentication.
    pub fn create_role(&self, name: &str, password: &str, attributes: &str, md5: bool) {
        let encryption = if md5 { "md5" } else { "scram-sha-256" };
        self.cluster.psql(
            "postgres",
            &format!(
                "SET password_encryption = '{encryption}'; \
                 CREATE ROLE {name} LOGIN {attributes} PASSWORD '{password}'; \
                 GRANT ALL ON DATABASE {db} TO {name}",
                db = self.name
            ),
        );
        self.roles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.to_owned());
    }
}

impl TestDb<'_> {
    /// Drops `role` with the database (for roles created by other means than
    /// [`create_role`](Self::create_role)).
    pub fn drop_role_later(&self, role: &str) {
        self.roles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(role.to_owned());
    }
}

impl Drop for TestDb<'_> {
    fn drop(&mut self) {
        let name = &self.name;
        // Walsenders and sessions first, then the slots once nothing holds them.
        for _ in 0..100 {
            let _ = self.cluster.try_psql(
                "postgres",
                &format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = '{name}' AND pid <> pg_backend_pid(); \
                     SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                     WHERE database = '{name}' AND active_pid IS NULL"
                ),
            );
            let left = self.cluster.try_psql(
                "postgres",
                &format!("SELECT count(*) FROM pg_replication_slots WHERE database = '{name}'"),
            );
            if left.as_deref().is_ok_and(|n| n == "0") || left.is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.cluster.try_psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        for role in self.roles.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = self
                .cluster
                .try_psql("postgres", &format!("DROP ROLE IF EXISTS {role}"));
        }
    }
}
