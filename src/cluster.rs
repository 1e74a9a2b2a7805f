//! Throwaway PostgreSQL clusters, for `demo` and the integration tests.
//!
//! [`Cluster::create`] finds the PostgreSQL server programs ([`Binaries::find`]), runs `initdb`
//! into a fresh temporary folder and starts the server with `wal_level = logical`, TCP on
//! `127.0.0.1` at a port that was free, a Unix socket inside the folder, small memory settings
//! and durability off (nothing in it is meant to survive). Running as root, every PostgreSQL
//! program runs as the `postgres` user, because `initdb` and `postgres` refuse root.
//!
//! Dropping the [`Cluster`] stops the server and removes the folder. A watchdog process does
//! the same when this process ends without dropping it (killed, or the cluster lives in a
//! static): it waits for the end of a pipe only this process holds.
//!
//! It never touches a cluster it did not create, never connects to the server itself (callers
//! use [`Cluster::superuser_config`]), and reports every failure as a [`ClusterError`] with
//! PostgreSQL's own output.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::Read as _;
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{LazyLock, Mutex, PoisonError};

/// The superuser every cluster is created with.
pub const SUPERUSER: &str = "postgres";

/// Where Debian and Ubuntu install each PostgreSQL version (`<root>/<version>/bin`).
pub const DEBIAN_VERSIONS_ROOT: &str = "/usr/lib/postgresql";

/// The environment variable naming the folder of the PostgreSQL programs to use; it wins over
/// `PATH` and [`DEBIAN_VERSIONS_ROOT`] (the test matrix runs each version this way).
pub const PG_BIN_ENV: &str = "PG_BIN";

/// How many ports are tried when another process takes the chosen one before PostgreSQL binds.
const START_ATTEMPTS: usize = 5;

/// How long `pg_ctl` waits for the server to start or stop, in seconds. Generous for a loaded
/// two-core machine; a healthy throwaway cluster starts in well under a second.
const PG_CTL_TIMEOUT_SECS: &str = "60";

/// Lines of the server log quoted in a start failure.
const LOG_LINES_IN_ERRORS: usize = 20;

/// Why a cluster could not be found, created, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No `initdb` on `PATH` nor under [`DEBIAN_VERSIONS_ROOT`].
    #[error(
        "PostgreSQL server programs not found: no initdb on PATH or in {DEBIAN_VERSIONS_ROOT}/*/bin"
    )]
    NoBinaries,
    /// [`PG_BIN_ENV`] names a folder without `initdb` and `pg_ctl`.
    #[error("{PG_BIN_ENV}={0} holds no initdb and pg_ctl: point it at a PostgreSQL bin folder")]
    BadPgBin(PathBuf),
    /// Running as root, but there is no `postgres` user to run PostgreSQL as.
    #[error(
        "running as root, PostgreSQL has to run as another user (initdb refuses root), \
         but there is no `postgres` user: {0}"
    )]
    NoPostgresUser(String),
    /// A file-system operation or spawning a program failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path or program.
        context: String,
        /// Why.
        source: std::io::Error,
    },
    /// A PostgreSQL program ran and failed.
    #[error("{program} failed: {output}")]
    Program {
        /// The program and its action (`initdb`, `pg_ctl stop`).
        program: String,
        /// What it printed.
        output: String,
    },
    /// The server did not start.
    #[error("PostgreSQL did not start: {output}\nlast lines of its log:\n{log}")]
    NotStarted {
        /// What `pg_ctl` printed.
        output: String,
        /// The end of the server log.
        log: String,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Io { context, source }
}

/// How TCP clients authenticate (`pg_hba.conf`). Unix-socket logins are always `trust`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TcpAuth {
    /// No password.
    Trust,
    /// Cleartext password (only sensible over TLS).
    Password,
    /// `md5`: MD5 for roles whose password is stored as MD5, SCRAM for roles stored as SCRAM
    /// (PostgreSQL picks SCRAM when the stored verifier is SCRAM), so it covers both.
    Md5,
    /// `scram-sha-256` only: PostgreSQL's default since version 14.
    #[default]
    ScramSha256,
}

impl TcpAuth {
    fn method(self) -> &'static str {
        match self {
            TcpAuth::Trust => "trust",
            TcpAuth::Password => "password",
            TcpAuth::Md5 => "md5",
            TcpAuth::ScramSha256 => "scram-sha-256",
        }
    }
}

/// A server certificate and its private key (PEM), to serve TLS.
#[derive(Clone)]
pub struct TlsFiles {
    /// The certificate chain, PEM.
    pub certificate_pem: String,
    /// The private key, PEM.
    pub private_key_pem: String,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles")
            .field("certificate_pem", &self.certificate_pem)
            .field("private_key_pem", &"[redacted]")
            .finish()
    }
}

/// How to set up a cluster. The default is what the bridge needs: logical replication,
/// SCRAM over TCP, no TLS, no superuser password.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `wal_level`: `logical` unless a caller wants to see a lower level refused.
    pub wal_level: String,
    /// How TCP clients authenticate.
    pub tcp_auth: TcpAuth,
    /// The superuser's password, for TCP logins as [`SUPERUSER`]; none means the superuser
    /// logs in over the Unix socket only.
    pub superuser_password: Option<String>,
    /// Serve TLS with these files; TCP clients must then use TLS (`hostssl` lines only).
    pub tls: Option<TlsFiles>,
    /// Start of the temporary folder's name, so a listing of the temporary directory shows
    /// who made it.
    pub folder_prefix: String,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            wal_level: "logical".to_owned(),
            tcp_auth: TcpAuth::default(),
            superuser_password: None,
            tls: None,
            folder_prefix: "strapi-io-pg-".to_owned(),
        }
    }
}

/// The folder of one PostgreSQL installation's programs (`initdb`, `pg_ctl`, `postgres`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// The folder [`PG_BIN_ENV`] names when set, else `initdb`'s folder when it is on `PATH`
    /// (the user's choice), else the highest version under [`DEBIAN_VERSIONS_ROOT`].
    pub fn find() -> Result<Binaries, ClusterError> {
        if let Some(dir) = std::env::var_os(PG_BIN_ENV).filter(|d| !d.is_empty()) {
            return Self::in_dir(Path::new(&dir));
        }
        Self::find_in(
            std::env::var_os("PATH").as_deref(),
            Path::new(DEBIAN_VERSIONS_ROOT),
        )
    }

    /// The programs in `dir`, which must hold `initdb` and `pg_ctl`.
    pub fn in_dir(dir: &Path) -> Result<Binaries, ClusterError> {
        if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
            Ok(Binaries {
                dir: dir.to_owned(),
            })
        } else {
            Err(ClusterError::BadPgBin(dir.to_owned()))
        }
    }

    /// [`find`](Self::find) with the search path and the versions folder given.
    pub fn find_in(path: Option<&OsStr>, versions_root: &Path) -> Result<Binaries, ClusterError> {
        if let Some(path) = path {
            for dir in std::env::split_paths(path) {
                let initdb = dir.join("initdb");
                if !initdb.is_file() {
                    continue;
                }
                // Follow symbolic links (Homebrew links bin/initdb into its Cellar), so the
                // programs beside it are the same installation's.
                let real = fs::canonicalize(&initdb).unwrap_or(initdb);
                if let Some(dir) = real.parent()
                    && dir.join("pg_ctl").is_file()
                {
                    return Ok(Binaries {
                        dir: dir.to_owned(),
                    });
                }
            }
        }
        let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(versions_root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                let version = name
                    .to_str()?
                    .split('.')
                    .map(str::parse)
                    .collect::<Result<Vec<u32>, _>>()
                    .ok()?;
                let bin = entry.path().join("bin");
                (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
                    .then_some((version, bin))
            })
            .collect();
        versions.sort();
        versions
            .pop()
            .map(|(_, dir)| Binaries { dir })
            .ok_or(ClusterError::NoBinaries)
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A program of this installation.
    pub fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// What `postgres --version` says (`postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)`).
    pub fn version(&self) -> Result<String, ClusterError> {
        let program = self.program("postgres");
        let output = Command::new(&program)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(io_error(format!("run {}", program.display())))?;
        if !output.status.success() {
            return Err(ClusterError::Program {
                program: "postgres --version".to_owned(),
                output: printed(&output),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

/// A running throwaway PostgreSQL; stopped and removed on drop.
pub struct Cluster {
    root: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    port: u16,
    bin: Binaries,
    run_as: Option<(u32, u32)>,
    watchdog: Mutex<Option<Watchdog>>,
    kept: bool,
}

/// A shell that stops the cluster and removes its folder once its standard input ends, which
/// happens when this process ends: only this process holds the pipe's other end.
struct Watchdog {
    child: Child,
    // Held, never written: closing it (by dropping, or by the process ending) is the signal.
    _pipe: ChildStdin,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("root", &self.root)
            .field("port", &self.port)
            .field("bin", &self.bin.dir)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Finds the PostgreSQL programs, creates a cluster in a new temporary folder and starts it.
    pub fn create(options: ClusterOptions) -> Result<Cluster, ClusterError> {
        Self::create_with(Binaries::find()?, options)
    }

    /// [`create`](Self::create) with these programs.
    pub fn create_with(bin: Binaries, options: ClusterOptions) -> Result<Cluster, ClusterError> {
        let root = make_temp_folder(&options.folder_prefix)?;
        // From here on, dropping `cluster` (on any error below) removes the folder.
        let mut cluster = Cluster {
            data: root.join("data"),
            socket_dir: root.join("socket"),
            log: root.join("postgres.log"),
            root,
            port: 0,
            bin,
            run_as: None,
            watchdog: Mutex::new(None),
            kept: false,
        };
        let me = fs::metadata(&cluster.root)
            .map_err(io_error(format!("inspect {}", cluster.root.display())))?
            .uid();
        if me == 0 {
            cluster.run_as = Some(postgres_user_ids()?);
        }
        fs::create_dir(&cluster.socket_dir)
            .map_err(io_error(format!("create {}", cluster.socket_dir.display())))?;
        let pwfile = cluster.root.join("pwfile");
        if let Some(password) = &options.superuser_password {
            write_file(&pwfile, password, 0o600)?;
        }
        cluster.chown_all(&cluster.root)?;
        cluster.start_watchdog()?;

        let mut initdb = cluster.command("initdb");
        initdb.arg("-D").arg(&cluster.data).args([
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        if options.superuser_password.is_some() {
            initdb.arg(format!("--pwfile={}", pwfile.display()));
        }
        cluster.run_checked(&mut initdb, "initdb")?;
        let _ = fs::remove_file(&pwfile);

        cluster.write_hba(&options)?;
        if let Some(tls) = &options.tls {
            write_file(
                &cluster.data.join("server.crt"),
                &tls.certificate_pem,
                0o644,
            )?;
            write_file(
                &cluster.data.join("server.key"),
                &tls.private_key_pem,
                0o600,
            )?;
        }
        cluster.chown_all(&cluster.root)?;
        cluster.start_on_free_port(&options)?;
        Ok(cluster)
    }

    /// The temporary folder holding everything (data, socket, log).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The folder holding the Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The server log.
    pub fn log_file(&self) -> &Path {
        &self.log
    }

    /// TCP port on 127.0.0.1 (the Unix socket uses the same number).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PostgreSQL programs this cluster runs with.
    pub fn binaries(&self) -> &Binaries {
        &self.bin
    }

    /// A program of the same installation (`psql`, `pg_recvlogical`, …).
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.program(name)
    }

    /// A command for a program of the same installation (an absolute path runs that program
    /// instead), running as the cluster's owner (the `postgres` user when this process is
    /// root), with standard input closed.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.program(program));
        command.stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// Connection parameters for the superuser on database `db`, over the Unix socket (always
    /// `trust`, no password).
    pub fn superuser_config(&self, db: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(SUPERUSER)
            .dbname(db);
        config
    }

    /// Stops the server (fast shutdown: sessions are ended, walsenders finish sending).
    pub fn stop(&self) -> Result<(), ClusterError> {
        self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", PG_CTL_TIMEOUT_SECS])
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port.
    pub fn start(&self) -> Result<(), ClusterError> {
        self.pg_ctl(&["start", "-w", "-t", PG_CTL_TIMEOUT_SECS])
    }

    /// Appends lines to `postgresql.conf` (later lines win over earlier ones). They take effect
    /// at the next [`start`](Self::start), or reload for settings that allow it.
    pub fn append_settings(&self, lines: &str) -> Result<(), ClusterError> {
        let conf = self.data.join("postgresql.conf");
        let base =
            fs::read_to_string(&conf).map_err(io_error(format!("read {}", conf.display())))?;
        fs::write(&conf, format!("{base}\n{lines}\n"))
            .map_err(io_error(format!("write {}", conf.display())))
    }

    /// Makes a streaming standby of this cluster, the way one is made without
    /// `pg_basebackup`: this cluster must be stopped cleanly ([`stop`](Self::stop)) when it is
    /// called; its data folder is copied into a new temporary folder with `standby.signal`, a
    /// new port and socket, `primary_conninfo` pointing at this cluster's socket, and
    /// `settings` (e.g. `primary_slot_name`, `hot_standby_feedback`). The standby is started;
    /// start this cluster again for it to stream. Like any [`Cluster`], it is removed on drop.
    pub fn copy_as_standby(&self, settings: &str) -> Result<Cluster, ClusterError> {
        let root = make_temp_folder("strapi-io-standby-")?;
        let mut standby = Cluster {
            data: root.join("data"),
            socket_dir: root.join("socket"),
            log: root.join("postgres.log"),
            root,
            port: 0,
            bin: self.bin.clone(),
            run_as: self.run_as,
            watchdog: Mutex::new(None),
            kept: false,
        };
        fs::create_dir(&standby.socket_dir)
            .map_err(io_error(format!("create {}", standby.socket_dir.display())))?;
        let mut copy = Command::new("cp");
        copy.arg("-a").arg(&self.data).arg(&standby.data);
        let output = copy
            .output()
            .map_err(io_error(format!("copy {}", self.data.display())))?;
        if !output.status.success() {
            return Err(ClusterError::Program {
                program: "cp -a".to_owned(),
                output: printed(&output),
            });
        }
        let _ = fs::remove_file(standby.data.join("postmaster.pid"));
        write_file(&standby.data.join("standby.signal"), "", 0o600)?;
        standby.chown_all(&standby.root)?;
        standby.start_watchdog()?;
        let conninfo = format!(
            "host={} port={} user={SUPERUSER} dbname=postgres application_name=standby",
            self.socket_dir.display(),
            self.port
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            standby.port = free_port()?;
            standby.append_settings(&format!(
                "# standby of {primary}\n\
                 port = {port}\n\
                 unix_socket_directories = '{socket}'\n\
                 primary_conninfo = '{conninfo}'\n\
                 {settings}",
                primary = self.root.display(),
                port = standby.port,
                socket = standby.socket_dir.display().to_string().replace('\'', "''"),
                conninfo = conninfo.replace('\'', "''"),
            ))?;
            let output = standby.pg_ctl_output(&["start", "-w", "-t", PG_CTL_TIMEOUT_SECS])?;
            if output.status.success() {
                return Ok(standby);
            }
            let log = fs::read_to_string(&standby.log).unwrap_or_default();
            if attempt < START_ATTEMPTS && log.contains("could not bind") {
                continue;
            }
            return Err(ClusterError::NotStarted {
                output: printed(&output),
                log: standby.log_tail(),
            });
        }
    }

    /// Promotes a standby to a primary and waits until it accepts writes.
    pub fn promote(&self) -> Result<(), ClusterError> {
        self.pg_ctl(&["promote", "-w", "-t", PG_CTL_TIMEOUT_SECS])
    }

    /// Stops and starts the server.
    pub fn restart(&self) -> Result<(), ClusterError> {
        self.stop()?;
        self.start()
    }

    /// Stops the server and removes the folder, reporting what failed (dropping does the same
    /// silently).
    pub fn remove(mut self) -> Result<(), ClusterError> {
        self.disarm_watchdog();
        let stopped = self.stop();
        let removed = fs::remove_dir_all(&self.root)
            .map_err(io_error(format!("remove {}", self.root.display())));
        // Whatever happened, do not try again on drop.
        self.kept = true;
        if stopped.is_err() {
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        }
        stopped.and(removed)
    }

    /// Stops the server and leaves the folder in place; returns it. `pg_ctl -D <folder>/data
    /// start` starts the cluster again.
    pub fn keep(mut self) -> Result<PathBuf, ClusterError> {
        self.disarm_watchdog();
        self.kept = true;
        self.stop()?;
        Ok(self.root.clone())
    }

    /// `pg_ctl -D <data> -l <log> <args>`, run as the cluster's owner; its output.
    fn pg_ctl_output(&self, args: &[&str]) -> Result<std::process::Output, ClusterError> {
        let mut command = self.command("pg_ctl");
        command
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(args);
        self.output(&mut command, "pg_ctl")
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), ClusterError> {
        let output = self.pg_ctl_output(args)?;
        if output.status.success() {
            return Ok(());
        }
        Err(ClusterError::Program {
            program: format!("pg_ctl {}", args.first().copied().unwrap_or_default()),
            output: format!(
                "{}\nlast lines of the server log:\n{}",
                printed(&output),
                self.log_tail()
            ),
        })
    }

    fn start_on_free_port(&mut self, options: &ClusterOptions) -> Result<(), ClusterError> {
        let conf = self.data.join("postgresql.conf");
        let base =
            fs::read_to_string(&conf).map_err(io_error(format!("read {}", conf.display())))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.port = free_port()?;
            let mut settings = format!(
                "\n# throwaway cluster (strapi-io-bridge)\n\
                 port = {port}\n\
                 listen_addresses = '127.0.0.1'\n\
                 unix_socket_directories = '{socket}'\n\
                 wal_level = {wal_level}\n\
                 fsync = off\n\
                 full_page_writes = off\n\
                 synchronous_commit = off\n\
                 shared_buffers = 16MB\n\
                 max_connections = 100\n\
                 max_replication_slots = 20\n\
                 max_wal_senders = 20\n\
                 wal_sender_timeout = '10s'\n\
                 timezone = 'UTC'\n\
                 log_line_prefix = '%m [%p] %d '\n",
                port = self.port,
                socket = self.socket_dir.display().to_string().replace('\'', "''"),
                wal_level = options.wal_level,
            );
            if options.tls.is_some() {
                settings.push_str(
                    "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
                );
            }
            // The file is the postgres user's; rewriting it in place keeps its owner.
            fs::write(&conf, format!("{base}{settings}"))
                .map_err(io_error(format!("write {}", conf.display())))?;
            let output = self.pg_ctl_output(&["start", "-w", "-t", PG_CTL_TIMEOUT_SECS])?;
            if output.status.success() {
                return Ok(());
            }
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            if attempt < START_ATTEMPTS && log.contains("could not bind") {
                continue;
            }
            return Err(ClusterError::NotStarted {
                output: printed(&output),
                log: self.log_tail(),
            });
        }
    }

    fn write_hba(&self, options: &ClusterOptions) -> Result<(), ClusterError> {
        let kind = if options.tls.is_some() {
            "hostssl"
        } else {
            "host"
        };
        let method = options.tcp_auth.method();
        // `replication` lines match physical replication only: a standby made with
        // `copy_as_standby` streams over the Unix socket.
        let hba = format!(
            "local all all trust\n\
             local replication all trust\n\
             {kind} all all 127.0.0.1/32 {method}\n\
             {kind} all all ::1/128 {method}\n"
        );
        let path = self.data.join("pg_hba.conf");
        fs::write(&path, hba).map_err(io_error(format!("write {}", path.display())))
    }

    fn start_watchdog(&self) -> Result<(), ClusterError> {
        // Paths go in as arguments, so no quoting is needed.
        const SCRIPT: &str = "read -r _ignored; \
             \"$1\" -D \"$2\" stop -m immediate >/dev/null 2>&1; rm -rf \"$3\"";
        let mut command = Command::new("sh");
        command
            .args(["-c", SCRIPT, "strapi-io-pg-watchdog"])
            .arg(self.bin.program("pg_ctl"))
            .arg(&self.data)
            .arg(&self.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so a Ctrl-C aimed at this process does not stop it.
            .process_group(0);
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        let mut child = command
            .spawn()
            .map_err(io_error("start the cluster's watchdog (sh)"))?;
        let Some(pipe) = child.stdin.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ClusterError::Io {
                context: "start the cluster's watchdog".to_owned(),
                source: std::io::Error::other("no pipe to its standard input"),
            });
        };
        *self.watchdog.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Watchdog { child, _pipe: pipe });
        Ok(())
    }

    fn disarm_watchdog(&self) {
        if let Some(mut watchdog) = self
            .watchdog
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = watchdog.child.kill();
            let _ = watchdog.child.wait();
        }
    }

    fn output(&self, command: &mut Command, what: &str) -> Result<Output, ClusterError> {
        command
            .output()
            .map_err(io_error(format!("run {what} ({})", self.bin.dir.display())))
    }

    fn run_checked(&self, command: &mut Command, what: &str) -> Result<(), ClusterError> {
        let output = self.output(command, what)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(ClusterError::Program {
                program: what.to_owned(),
                output: printed(&output),
            })
        }
    }

    fn chown_all(&self, path: &Path) -> Result<(), ClusterError> {
        let Some((uid, gid)) = self.run_as else {
            return Ok(());
        };
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(io_error(format!("chown {}", path.display())))?;
        if path.is_dir() && !path.is_symlink() {
            let entries =
                fs::read_dir(path).map_err(io_error(format!("read {}", path.display())))?;
            for entry in entries.flatten() {
                self.chown_all(&entry.path())?;
            }
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_LINES_IN_ERRORS)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.disarm_watchdog();
        if self.kept {
            return;
        }
        let mut command = self.command("pg_ctl");
        command
            .arg("-D")
            .arg(&self.data)
            .args(["stop", "-m", "immediate", "-w"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = command.status();
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// A new, empty folder in the system's temporary directory, readable only by its owner.
fn make_temp_folder(prefix: &str) -> Result<PathBuf, ClusterError> {
    let parent = std::env::temp_dir();
    let mut last = None;
    for _ in 0..16 {
        let path = parent.join(format!("{prefix}{:08x}", rand::random::<u32>()));
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(io_error(format!("create a folder in {}", parent.display()))(e)),
        }
    }
    Err(ClusterError::Io {
        context: format!("create a folder in {}", parent.display()),
        source: last.unwrap_or_else(|| std::io::Error::other("every name was taken")),
    })
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), ClusterError> {
    fs::write(path, contents).map_err(io_error(format!("write {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_error(format!("chmod {}", path.display())))
}

/// The `postgres` user's uid and gid: from `id`, else from `/etc/passwd`.
fn postgres_user_ids() -> Result<(u32, u32), ClusterError> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id")
            .args([flag, SUPERUSER])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if let (Some(uid), Some(gid)) = (id("-u"), id("-g")) {
        return Ok((uid, gid));
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd_ids(&passwd, SUPERUSER).ok_or_else(|| {
        ClusterError::NoPostgresUser(
            "`id postgres` failed and /etc/passwd has no postgres line; \
             install PostgreSQL's server package (it creates the user) or run as another user"
                .to_owned(),
        )
    })
}

/// `(uid, gid)` of `user` in `/etc/passwd` text (`name:x:uid:gid:…`).
fn passwd_ids(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// A port on 127.0.0.1 that was free a moment ago and that this process has not handed out
/// before (so two clusters started at once never race for the same one).
fn free_port() -> Result<u16, ClusterError> {
    static GIVEN: LazyLock<Mutex<HashSet<u16>>> = LazyLock::new(Default::default);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(io_error("find a free port on 127.0.0.1"))?
            .port();
        if GIVEN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port)
        {
            return Ok(port);
        }
    }
}

fn printed(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    if !stderr.is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stderr);
    }
    if text.is_empty() {
        text = format!("exit status {}", output.status);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_install(dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        for program in ["initdb", "pg_ctl", "postgres"] {
            fs::write(dir.join(program), "").unwrap();
        }
    }

    #[test]
    fn the_highest_installed_version_is_found() {
        let root = std::env::temp_dir().join(format!("cluster-find-{}", rand::random::<u32>()));
        for version in ["9.6", "13", "15", "not-a-version"] {
            fake_install(&root.join(version).join("bin"));
        }
        fs::create_dir_all(root.join("17").join("bin")).unwrap(); // no programs
        let found = Binaries::find_in(None, &root).unwrap();
        assert_eq!(found.dir(), root.join("15").join("bin"));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn initdb_on_path_wins_over_installed_versions() {
        let root = std::env::temp_dir().join(format!("cluster-path-{}", rand::random::<u32>()));
        fake_install(&root.join("versions").join("15").join("bin"));
        fake_install(&root.join("custom"));
        let path = std::env::join_paths([root.join("empty"), root.join("custom")]).unwrap();
        let found = Binaries::find_in(Some(&path), &root.join("versions")).unwrap();
        assert_eq!(found.dir(), fs::canonicalize(root.join("custom")).unwrap());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_named_folder_must_hold_the_programs() {
        let root = std::env::temp_dir().join(format!("cluster-dir-{}", rand::random::<u32>()));
        fake_install(&root.join("bin"));
        assert_eq!(
            Binaries::in_dir(&root.join("bin")).unwrap().dir(),
            root.join("bin")
        );
        let err = Binaries::in_dir(&root).unwrap_err();
        assert!(err.to_string().contains("PG_BIN="), "{err}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn no_binaries_is_an_error_that_says_what_was_searched() {
        let root = std::env::temp_dir().join(format!("cluster-none-{}", rand::random::<u32>()));
        let path = std::env::join_paths([root.join("bin")]).unwrap();
        let err = Binaries::find_in(Some(&path), &root).unwrap_err();
        assert!(matches!(err, ClusterError::NoBinaries), "{err:?}");
        assert!(err.to_string().contains("no initdb on PATH"), "{err}");
    }

    #[test]
    fn passwd_lines_give_uid_and_gid() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      postgres:x:104:110:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";
        assert_eq!(passwd_ids(passwd, "postgres"), Some((104, 110)));
        assert_eq!(passwd_ids(passwd, "nobody"), None);
        assert_eq!(passwd_ids("postgres:x:abc:1:::\n", "postgres"), None);
    }

    #[test]
    fn tls_keys_are_not_debug_printed() {
        let tls = TlsFiles {
            certificate_pem: "CERT".to_owned(),
            private_key_pem: "KEY".to_owned(),
        };
        let shown = format!("{tls:?}");
        assert!(
            shown.contains("CERT") && !shown.contains("\"KEY\""),
            "{shown}"
        );
    }
}
