//! Throwaway PostgreSQL clusters for tests.
//!
//! [`TempCluster`] runs `initdb` in a temporary directory and starts PostgreSQL on a free port
//! (TCP on 127.0.0.1 and a Unix socket inside the directory), with logical replication on.
//! As root, the binaries run as the `postgres` user. [`TempCluster::shared`] is one cluster for
//! the whole test binary; [`TestDb`] gives each test a fresh database on it and cleans up on
//! drop. Tests that restart or reconfigure PostgreSQL start their own cluster.
//!
//! A shared cluster is never dropped (it lives in a static), so every cluster has a watchdog
//! process that stops it and removes its directory once the test process is gone.

use std::collections::HashSet;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use strapi_io_bridge::config::DatabaseConfig;

/// The superuser's name in every test cluster.
pub const SUPERUSER: &str = "postgres";
/// The superuser's password (TCP logins need one).
pub const SUPERUSER_PASSWORD: &str = "bridge-test-superuser";

/// How clients over TCP authenticate (`pg_hba.conf`). Unix-socket logins are always `trust`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HbaAuth {
    /// No password.
    Trust,
    /// Cleartext password (only sensible over TLS).
    Password,
    /// `md5`: MD5 for roles whose password is stored as MD5, SCRAM for roles stored as SCRAM
    /// (PostgreSQL picks SCRAM when the stored verifier is SCRAM), so it covers both.
    Md5,
    /// `scram-sha-256` only.
    Scram,
}

impl HbaAuth {
    fn method(self) -> &'static str {
        match self {
            HbaAuth::Trust => "trust",
            HbaAuth::Password => "password",
            HbaAuth::Md5 => "md5",
            HbaAuth::Scram => "scram-sha-256",
        }
    }
}

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
    root: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    port: u16,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    watchdog: Mutex<Option<Child>>,
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
        let bin = postgres_bin_dir();
        let run_as = postgres_user_ids();
        let root = tempfile::Builder::new()
            .prefix("bridge-pg-")
            .tempdir()
            .expect("create a temporary directory")
            .keep();
        let data = root.join("data");
        let socket_dir = root.join("socket");
        fs::create_dir(&socket_dir).expect("create the socket directory");
        let pwfile = root.join("pwfile");
        fs::write(&pwfile, SUPERUSER_PASSWORD).expect("write the password file");
        let mut cluster = TempCluster {
            log: root.join("postgres.log"),
            root,
            data,
            socket_dir,
            port: 0,
            bin,
            run_as,
            watchdog: Mutex::new(None),
            ca_pem: None,
        };
        cluster.chown_all(&cluster.root);
        cluster.run_checked(
            Command::new(cluster.bin.join("initdb"))
                .arg("-D")
                .arg(&cluster.data)
                .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C"])
                .args(["--no-sync", "--no-instructions"])
                .arg(format!("--pwfile={}", pwfile.display())),
            "initdb",
        );
        cluster.write_hba(&options);
        if options.ssl {
            cluster.ca_pem = Some(cluster.write_certificates());
        }
        cluster.chown_all(&cluster.root);
        cluster.start_watchdog();
        cluster.start_on_free_port(&options);
        cluster
    }

    /// TCP port on 127.0.0.1 (the Unix socket uses the same number).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A PostgreSQL program from the same installation (`psql`, `pg_recvlogical`, ...).
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// The directory holding the Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The CA certificate (PEM) that signed the server certificate, when started with TLS.
    pub fn ca_pem(&self) -> Option<&Path> {
        self.ca_pem.as_deref()
    }

    /// A TCP URL for `user`/`password` on database `db`; `params` is appended as the query
    /// (for example `sslmode=disable`).
    pub fn url(&self, user: &str, password: &str, db: &str, params: &str) -> String {
        let mut url = format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", self.port);
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
        fs::read_to_string(&self.log).is_ok_and(|log| log.contains(text))
    }

    /// Runs SQL as the superuser over the Unix socket (blocking, for setup and `Drop`) and
    /// returns psql's unaligned output. Panics when psql fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("psql on {db} failed for {sql:?}: {e}"))
    }

    /// [`psql`](Self::psql) that returns the error instead of panicking.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let output = self.run(
            Command::new(self.bin.join("psql"))
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
                .arg("-h")
                .arg(&self.socket_dir)
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    SUPERUSER,
                    "-d",
                    db,
                    "-c",
                    sql,
                ]),
        );
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// A superuser SQL session over the Unix socket.
    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(SUPERUSER)
            .dbname(db);
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to test database {db}: {e}"));
        tokio::spawn(connection);
        client
    }

    /// Stops PostgreSQL (fast shutdown: sessions are ended, walsenders finish sending).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"]);
    }

    /// Starts PostgreSQL again after [`stop`](Self::stop), on the same port.
    pub fn start(&self) {
        self.pg_ctl(&["start", "-w", "-t", "60"]);
    }

    /// Stops and starts PostgreSQL.
    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    fn pg_ctl(&self, args: &[&str]) {
        let mut command = Command::new(self.bin.join("pg_ctl"));
        command
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(args);
        let output = self.run(&mut command);
        if !output.status.success() {
            panic!(
                "pg_ctl {args:?} failed: {}\n{}\nserver log:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    fn start_on_free_port(&mut self, options: &ClusterOptions) {
        let conf = self.data.join("postgresql.conf");
        let base = fs::read_to_string(&conf).expect("read postgresql.conf");
        for attempt in 0..5 {
            self.port = free_port();
            let mut settings = format!(
                "\n# test cluster\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
                 unix_socket_directories = '{socket}'\nwal_level = {wal_level}\nfsync = off\n\
                 full_page_writes = off\nsynchronous_commit = off\nshared_buffers = 16MB\n\
                 max_connections = 100\nmax_replication_slots = 20\nmax_wal_senders = 20\n\
                 wal_sender_timeout = '10s'\ntimezone = 'UTC'\nlog_line_prefix = '%m [%p] %d '\n",
                port = self.port,
                socket = self.socket_dir.display(),
                wal_level = options.wal_level,
            );
            if options.ssl {
                settings.push_str(
                    "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
                );
            }
            fs::write(&conf, format!("{base}{settings}")).expect("write postgresql.conf");
            let mut command = Command::new(self.bin.join("pg_ctl"));
            command
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&self.log)
                .args(["start", "-w", "-t", "60"]);
            let output = self.run(&mut command);
            if output.status.success() {
                return;
            }
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            if attempt < 4 && log.contains("could not bind") {
                continue;
            }
            panic!(
                "PostgreSQL did not start: {}\nserver log:\n{log}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    fn write_hba(&self, options: &ClusterOptions) {
        let kind = if options.ssl { "hostssl" } else { "host" };
        let method = options.auth.method();
        let hba = format!(
            "local all all trust\n\
             {kind} all all 127.0.0.1/32 {method}\n\
             {kind} all all ::1/128 {method}\n"
        );
        fs::write(self.data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
    }

    /// A CA and a server certificate for `localhost` (DNS name only, not 127.0.0.1), so
    /// `verify-full` succeeds by name and fails by address.
    fn write_certificates(&self) -> PathBuf {
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
        fs::write(self.data.join("server.crt"), cert.pem()).expect("write server.crt");
        let key_path = self.data.join("server.key");
        fs::write(&key_path, key.serialize_pem()).expect("write server.key");
        set_mode(&key_path, 0o600);
        let ca_path = self.root.join("ca.pem");
        fs::write(&ca_path, ca.pem()).expect("write ca.pem");
        ca_path
    }

    /// A shell that waits for this process to end, then stops the cluster and removes it.
    fn start_watchdog(&self) {
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; \
             '{pg_ctl}' -D '{data}' stop -m immediate >/dev/null 2>&1; rm -rf '{root}'",
            pid = std::process::id(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.data.display(),
            root = self.root.display(),
        );
        let mut command = Command::new("sh");
        command
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so a Ctrl-C aimed at the tests does not stop it.
            .process_group(0);
        self.as_postgres(&mut command);
        let child = command.spawn().expect("spawn the cluster watchdog");
        *self.watchdog.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
    }

    fn as_postgres(&self, command: &mut Command) {
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
    }

    fn run(&self, command: &mut Command) -> Output {
        self.as_postgres(command);
        command
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {command:?}: {e}"))
    }

    fn run_checked(&self, command: &mut Command, what: &str) {
        let output = self.run(command);
        if !output.status.success() {
            panic!(
                "{what} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    fn chown_all(&self, path: &Path) {
        let Some((uid, gid)) = self.run_as else {
            return;
        };
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        if path.is_dir() {
            for entry in fs::read_dir(path).expect("read directory").flatten() {
                self.chown_all(&entry.path());
            }
        }
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        if let Some(mut watchdog) = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let mut command = Command::new(self.bin.join("pg_ctl"));
        command
            .arg("-D")
            .arg(&self.data)
            .args(["stop", "-m", "immediate", "-w"]);
        self.as_postgres(&mut command);
        let _ = command.stdout(Stdio::null()).stderr(Stdio::null()).status();
        let _ = fs::remove_dir_all(&self.root);
    }
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

/// The directory of the newest PostgreSQL binaries: `initdb` on PATH, else the highest
/// `/usr/lib/postgresql/<version>/bin`.
fn postgres_bin_dir() -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if initdb.is_file()
                && let Ok(real) = fs::canonicalize(&initdb)
                && let Some(parent) = real.parent()
            {
                return parent.to_owned();
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("no PostgreSQL binaries: put initdb on PATH or install postgresql")
}

/// `Some((uid, gid))` of the `postgres` user when running as root (initdb refuses root).
fn postgres_user_ids() -> Option<(u32, u32)> {
    let me = fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    if me != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("running as root needs a `postgres` user to run PostgreSQL")
    };
    Some((id("-u"), id("-g")))
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A port nobody in this process was given before and that was free a moment ago.
fn free_port() -> u16 {
    static GIVEN: LazyLock<Mutex<HashSet<u16>>> = LazyLock::new(Default::default);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind a free port")
            .port();
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}
