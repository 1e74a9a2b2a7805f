//! The walsender connection: socket (TCP or Unix), SSLRequest and TLS, the startup message with
//! `replication=database`, authentication (cleartext, MD5, SCRAM-SHA-256), then simple queries
//! and the switch to CopyBoth.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::{ErrorResponseBody, Message, NoticeResponseBody};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::{Host, TargetSessionAttrs};
use tokio_postgres::fallible_iterator::FallibleIterator;

use super::copy_both::{Frame, next_frame};
use super::error::{ReplicationError, ServerError, active_pid};
use crate::config::DatabaseConfig;
use crate::pg::{self, TlsPolicy};

/// How much to read at a time: big enough that one read carries hundreds of small pgoutput
/// messages, small enough that a batch does not pin much memory.
const READ_CHUNK: usize = 64 * 1024;

/// How long connecting and logging in may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A byte stream to the server, whatever its transport.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One row of a simple query's result, as text.
#[derive(Debug, Clone)]
pub(super) struct Row {
    columns: Arc<[String]>,
    values: Vec<Option<String>>,
}

impl Row {
    /// The value of a named column; `None` when NULL or absent.
    pub(super) fn get(&self, column: &str) -> Option<&str> {
        let i = self.columns.iter().position(|c| c == column)?;
        self.values.get(i)?.as_deref()
    }
}

/// A logged-in walsender connection.
pub(super) struct Conn {
    io: Box<dyn Io>,
    /// Bytes read and not yet split into frames.
    pub(super) read_buf: BytesMut,
    write_buf: BytesMut,
    /// `user@host:port/dbname`, for messages.
    pub(super) target: String,
    /// ParameterStatus values the server sent at startup.
    pub(super) parameters: HashMap<String, String>,
    /// The walsender's process id (BackendKeyData).
    pub(super) backend_pid: i32,
    /// Whether TLS is in use.
    pub(super) tls: bool,
}

impl Conn {
    /// Connects to the first reachable host, negotiates TLS, starts a `replication=database`
    /// session and authenticates.
    pub(super) async fn connect(
        db: &DatabaseConfig,
        tls: &TlsPolicy,
    ) -> Result<Conn, ReplicationError> {
        let target = db.display_target();
        match tokio::time::timeout(CONNECT_TIMEOUT, Self::connect_inner(db, tls, &target)).await {
            Ok(result) => result,
            Err(_) => Err(ReplicationError::Connect {
                target,
                message: format!(
                    "no answer within {} s: is the host reachable?",
                    CONNECT_TIMEOUT.as_secs()
                ),
            }),
        }
    }

    /// Tries each configured host in turn, as libpq does: the first that accepts the login
    /// and, with `target_session_attrs`, has the wanted kind of session (`read-write`: not a
    /// standby) wins. The connection names the host it reached.
    async fn connect_inner(
        db: &DatabaseConfig,
        tls: &TlsPolicy,
        target: &str,
    ) -> Result<Conn, ReplicationError> {
        let mut last_error = None;
        let mut fatal = None;
        for (host, port) in candidates(db) {
            let host_target = host_target(db, &host, port);
            let attempt = async {
                let (io, is_tls) = open_stream(db, tls, &host, port, &host_target).await?;
                let mut conn = Conn {
                    io,
                    read_buf: BytesMut::with_capacity(READ_CHUNK),
                    write_buf: BytesMut::with_capacity(256),
                    target: host_target.clone(),
                    parameters: HashMap::new(),
                    backend_pid: 0,
                    tls: is_tls,
                };
                conn.startup(db).await?;
                conn.check_session_attrs(db.pg.get_target_session_attrs())
                    .await?;
                Ok::<Conn, ReplicationError>(conn)
            }
            .await;
            // Any failure moves on to the next host, as libpq does: a standby that has not
            // yet replayed the database's creation refuses what the primary accepts.
            match attempt {
                Ok(conn) => return Ok(conn),
                Err(e) => {
                    tracing::debug!(host = %host_target, error = %e, "host not usable; trying the next");
                    if !e.is_retryable() && fatal.is_none() {
                        fatal = Some(e);
                    } else {
                        last_error = Some(e);
                    }
                }
            }
        }
        // A configuration problem (wrong password, missing database) says more than a host
        // that was down.
        Err(fatal
            .or(last_error)
            .unwrap_or_else(|| ReplicationError::Connect {
                target: target.to_owned(),
                message: "no host configured".to_owned(),
            }))
    }

    /// `target_session_attrs`: `read-write` refuses a read-only session (a standby, also
    /// one in the middle of being promoted), `read-only` a writable one, as libpq does.
    async fn check_session_attrs(
        &mut self,
        wanted: TargetSessionAttrs,
    ) -> Result<(), ReplicationError> {
        let want_read_only = match wanted {
            TargetSessionAttrs::ReadWrite => false,
            TargetSessionAttrs::ReadOnly => true,
            _ => return Ok(()),
        };
        let rows = self.simple_query("SHOW transaction_read_only").await?;
        let read_only = rows.first().and_then(|r| r.get("transaction_read_only")) == Some("on");
        if read_only == want_read_only {
            return Ok(());
        }
        let message = if read_only {
            "the server is read-only (a standby, or not yet promoted) and target_session_attrs \
             asks for read-write"
        } else {
            "the server accepts writes and target_session_attrs asks for read-only"
        };
        Err(ReplicationError::Connect {
            target: self.target.clone(),
            message: message.to_owned(),
        })
    }

    async fn startup(&mut self, db: &DatabaseConfig) -> Result<(), ReplicationError> {
        let user = db.pg.get_user().unwrap_or_default();
        let dbname = db.pg.get_dbname().unwrap_or_default();
        let application_name = db.pg.get_application_name().unwrap_or(pg::APPLICATION_NAME);
        let mut params = vec![
            ("user", user),
            ("database", dbname),
            ("replication", "database"),
            ("application_name", application_name),
            // pgoutput sends text values in the client encoding; the pipeline expects UTF-8.
            ("client_encoding", "UTF8"),
            // pgoutput prints values with the walsender session's settings: ISO dates (Strapi's
            // payload format starts from them), UTC for `timestamptz`, and floats with enough
            // digits to round-trip (shortest exact form on PostgreSQL 12+).
            ("DateStyle", "ISO, MDY"),
            ("TimeZone", "UTC"),
            ("IntervalStyle", "postgres"),
            ("extra_float_digits", "3"),
        ];
        if let Some(options) = db.pg.get_options() {
            params.push(("options", options));
        }
        frontend::startup_message(params, &mut self.write_buf)
            .map_err(|e| self.protocol(format!("cannot encode the startup message: {e}")))?;
        self.flush().await?;
        self.authenticate(db).await?;
        loop {
            match self.read_message().await? {
                Frame::Other(Message::ParameterStatus(p)) => {
                    if let (Ok(name), Ok(value)) = (p.name(), p.value()) {
                        self.parameters.insert(name.to_owned(), value.to_owned());
                    }
                }
                Frame::Other(Message::BackendKeyData(k)) => self.backend_pid = k.process_id(),
                Frame::Other(Message::NoticeResponse(n)) => log_notice(&n),
                Frame::Other(Message::ReadyForQuery(_)) => return Ok(()),
                Frame::Other(Message::ErrorResponse(e)) => {
                    return Err(classify_startup(server_error(&e), db, &self.target));
                }
                _ => return Err(self.protocol("unexpected message during startup".to_owned())),
            }
        }
    }

    async fn authenticate(&mut self, db: &DatabaseConfig) -> Result<(), ReplicationError> {
        let user = db.pg.get_user().unwrap_or_default();
        let password = db.pg.get_password();
        let target = self.target.clone();
        let auth_error = |message: String| ReplicationError::Auth {
            target: target.clone(),
            message,
        };
        let need_password = || {
            auth_error(format!(
                "the server asks for a password but none is configured: add it to the database \
                 URL in {}",
                db.url_origin
            ))
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            let Frame::Other(message) = self.read_message().await? else {
                return Err(self.protocol("unexpected message during login".to_owned()));
            };
            match message {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    let password = password.ok_or_else(need_password)?;
                    frontend::password_message(password, &mut self.write_buf)
                        .map_err(|e| auth_error(format!("cannot send the password: {e}")))?;
                    self.flush().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let password = password.ok_or_else(need_password)?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        user.as_bytes(),
                        password,
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.write_buf)
                        .map_err(|e| auth_error(format!("cannot send the password: {e}")))?;
                    self.flush().await?;
                }
                Message::AuthenticationSasl(body) => {
                    let password = password.ok_or_else(need_password)?;
                    let mut mechanisms = body.mechanisms();
                    let mut offered = Vec::new();
                    while let Some(m) = mechanisms
                        .next()
                        .map_err(|e| self.protocol(format!("bad SASL mechanism list: {e}")))?
                    {
                        offered.push(m.to_owned());
                    }
                    if !offered.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                        return Err(auth_error(format!(
                            "the server offers only SASL mechanisms {offered:?}; this client \
                             supports SCRAM-SHA-256"
                        )));
                    }
                    // Channel binding is not offered, so the `n` GS2 header is correct even
                    // when the server also offers SCRAM-SHA-256-PLUS.
                    let state = ScramSha256::new(password, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        sasl::SCRAM_SHA_256,
                        state.message(),
                        &mut self.write_buf,
                    )
                    .map_err(|e| auth_error(format!("cannot start SCRAM: {e}")))?;
                    scram = Some(state);
                    self.flush().await?;
                }
                Message::AuthenticationSaslContinue(body) => {
                    let state = scram
                        .as_mut()
                        .ok_or_else(|| self.protocol("SASL continue before start".to_owned()))?;
                    state
                        .update(body.data())
                        .map_err(|e| auth_error(format!("SCRAM exchange failed: {e}")))?;
                    frontend::sasl_response(state.message(), &mut self.write_buf)
                        .map_err(|e| auth_error(format!("SCRAM exchange failed: {e}")))?;
                    self.flush().await?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let state = scram
                        .as_mut()
                        .ok_or_else(|| self.protocol("SASL final before start".to_owned()))?;
                    state.finish(body.data()).map_err(|e| {
                        auth_error(format!("the server's SCRAM signature is invalid: {e}"))
                    })?;
                }
                Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential
                | Message::AuthenticationGss
                | Message::AuthenticationSspi
                | Message::AuthenticationGssContinue(_) => {
                    return Err(auth_error(
                        "the server asks for an authentication method this client does not \
                         support (Kerberos/GSSAPI/SSPI); use scram-sha-256, md5 or password in \
                         pg_hba.conf"
                            .to_owned(),
                    ));
                }
                Message::NoticeResponse(n) => log_notice(&n),
                Message::ErrorResponse(e) => {
                    return Err(classify_startup(server_error(&e), db, &self.target));
                }
                _ => return Err(self.protocol("unexpected message during login".to_owned())),
            }
        }
    }

    /// Runs one simple query and returns its rows (of the last result set).
    pub(super) async fn simple_query(&mut self, sql: &str) -> Result<Vec<Row>, ReplicationError> {
        frontend::query(sql, &mut self.write_buf)
            .map_err(|e| self.protocol(format!("cannot encode query: {e}")))?;
        self.flush().await?;
        let mut columns: Arc<[String]> = Arc::from(Vec::new());
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let Frame::Other(message) = self.read_message().await? else {
                return Err(self.protocol(format!("unexpected answer to {sql:?}")));
            };
            match message {
                Message::RowDescription(body) => {
                    let names: Vec<String> = body
                        .fields()
                        .map(|f| Ok(f.name().to_owned()))
                        .collect()
                        .map_err(|e| self.protocol(format!("bad RowDescription: {e}")))?;
                    columns = Arc::from(names);
                    rows.clear();
                }
                Message::DataRow(body) => {
                    let buffer = body.buffer();
                    let values: Vec<Option<String>> = body
                        .ranges()
                        .map(|r| {
                            Ok(r.and_then(|r| buffer.get(r))
                                .map(|b| String::from_utf8_lossy(b).into_owned()))
                        })
                        .collect()
                        .map_err(|e| self.protocol(format!("bad DataRow: {e}")))?;
                    rows.push(Row {
                        columns: columns.clone(),
                        values,
                    });
                }
                Message::CommandComplete(_) | Message::EmptyQueryResponse => {}
                Message::NoticeResponse(n) => log_notice(&n),
                Message::ParameterStatus(_) => {}
                Message::ErrorResponse(e) => error = Some(server_error(&e)),
                Message::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(ReplicationError::Server(e)),
                        None => Ok(rows),
                    };
                }
                _ => return Err(self.protocol(format!("unexpected answer to {sql:?}"))),
            }
        }
    }

    /// Sends a command that switches to CopyBoth (START_REPLICATION) and waits for the switch.
    pub(super) async fn start_copy_both(&mut self, sql: &str) -> Result<(), ReplicationError> {
        frontend::query(sql, &mut self.write_buf)
            .map_err(|e| self.protocol(format!("cannot encode query: {e}")))?;
        self.flush().await?;
        let mut error = None;
        loop {
            match self.read_message().await? {
                Frame::CopyBothResponse => return Ok(()),
                Frame::Other(Message::NoticeResponse(n)) => log_notice(&n),
                Frame::Other(Message::ParameterStatus(_)) => {}
                Frame::Other(Message::ErrorResponse(e)) => error = Some(server_error(&e)),
                Frame::Other(Message::ReadyForQuery(_)) => {
                    return Err(match error {
                        Some(e) => ReplicationError::Server(e),
                        None => self.protocol("START_REPLICATION ended without streaming".into()),
                    });
                }
                _ => return Err(self.protocol(format!("unexpected answer to {sql:?}"))),
            }
        }
    }

    /// Reads until one whole message is buffered, and returns it.
    pub(super) async fn read_message(&mut self) -> Result<Frame, ReplicationError> {
        loop {
            if let Some(frame) = next_frame(&mut self.read_buf).map_err(|e| self.protocol(e))? {
                return Ok(frame);
            }
            self.read_more().await?;
        }
    }

    /// Reads what the socket has into the buffer (at least one byte). Cancel-safe: when the
    /// future is dropped before completing, nothing was read.
    pub(super) async fn read_more(&mut self) -> Result<usize, ReplicationError> {
        self.read_buf.reserve(READ_CHUNK);
        match self.io.read_buf(&mut self.read_buf).await {
            Ok(0) => Err(self.lost("the server closed the connection".to_owned())),
            Ok(n) => Ok(n),
            Err(e) => Err(self.lost(e.to_string())),
        }
    }

    /// Buffers raw message bytes to send with the next [`flush`](Self::flush).
    pub(super) fn buffer(&mut self) -> &mut BytesMut {
        &mut self.write_buf
    }

    /// Writes everything buffered.
    pub(super) async fn flush(&mut self) -> Result<(), ReplicationError> {
        let result = async {
            self.io.write_all(&self.write_buf).await?;
            self.io.flush().await
        }
        .await;
        self.write_buf.clear();
        result.map_err(|e| self.lost(e.to_string()))
    }

    /// Ends the session politely (Terminate) and closes the socket.
    pub(super) async fn terminate(mut self) {
        frontend::terminate(&mut self.write_buf);
        if self.flush().await.is_ok() {
            let _ = self.io.shutdown().await;
        }
    }

    /// A connection-lost error for this connection.
    pub(super) fn lost(&self, reason: String) -> ReplicationError {
        ReplicationError::ConnectionLost {
            target: self.target.clone(),
            reason,
        }
    }

    fn protocol(&self, what: String) -> ReplicationError {
        ReplicationError::Protocol(format!("{what} (from {})", self.target))
    }
}

/// The hosts to try with their ports, in order (a single port applies to every host).
fn candidates(db: &DatabaseConfig) -> Vec<(Host, u16)> {
    let hosts = db.pg.get_hosts();
    let ports = db.pg.get_ports();
    if hosts.is_empty() {
        return vec![(
            Host::Tcp("localhost".to_owned()),
            ports.first().copied().unwrap_or(5432),
        )];
    }
    hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432);
            (host.clone(), port)
        })
        .collect()
}

/// `user@host:port/dbname` for one host of the URL (never the password).
fn host_target(db: &DatabaseConfig, host: &Host, port: u16) -> String {
    let host = match host {
        Host::Tcp(h) => h.clone(),
        Host::Unix(p) => p.display().to_string(),
    };
    format!(
        "{}@{host}:{port}/{}",
        db.pg.get_user().unwrap_or(""),
        db.pg.get_dbname().unwrap_or("")
    )
}

async fn open_stream(
    db: &DatabaseConfig,
    tls: &TlsPolicy,
    host: &Host,
    port: u16,
    target: &str,
) -> Result<(Box<dyn Io>, bool), ReplicationError> {
    match host {
        Host::Unix(dir) => {
            let path = dir.join(format!(".s.PGSQL.{port}"));
            match UnixStream::connect(&path).await {
                Ok(s) => Ok((Box::new(s), false)),
                Err(e) => Err(connect_error(&e, db, target)),
            }
        }
        Host::Tcp(name) => match TcpStream::connect((name.as_str(), port)).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                match tls.negotiate(s, name).await {
                    Ok(stream) => {
                        let is_tls = stream.is_tls();
                        Ok((Box::new(stream) as Box<dyn Io>, is_tls))
                    }
                    Err(pg::tls::NegotiateError::Io(e)) => Err(connect_error(&e, db, target)),
                    Err(pg::tls::NegotiateError::Tls(source)) => Err(ReplicationError::Tls {
                        target: target.to_owned(),
                        source,
                    }),
                }
            }
            Err(e) => Err(connect_error(&e, db, target)),
        },
    }
}

fn connect_error(err: &io::Error, db: &DatabaseConfig, target: &str) -> ReplicationError {
    ReplicationError::Connect {
        target: target.to_owned(),
        message: pg::explain_io_error(err, db),
    }
}

/// The fields of an ErrorResponse.
pub(super) fn server_error(body: &ErrorResponseBody) -> ServerError {
    let mut e = ServerError {
        severity: "ERROR".to_owned(),
        code: String::new(),
        message: String::new(),
        detail: None,
        hint: None,
    };
    let mut fields = body.fields();
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'V' => e.severity = value,
            b'S' if e.severity == "ERROR" => e.severity = value,
            b'C' => e.code = value,
            b'M' => e.message = value,
            b'D' => e.detail = Some(value),
            b'H' => e.hint = Some(value),
            _ => {}
        }
    }
    e
}

fn log_notice(body: &NoticeResponseBody) {
    let mut fields = body.fields();
    let mut message = String::new();
    while let Ok(Some(field)) = fields.next() {
        if field.type_() == b'M' {
            message = String::from_utf8_lossy(field.value_bytes()).into_owned();
        }
    }
    tracing::info!(%message, "PostgreSQL notice");
}

/// Classifies an error the server sent while the session starts.
fn classify_startup(e: ServerError, db: &DatabaseConfig, target: &str) -> ReplicationError {
    let user = db.pg.get_user().unwrap_or_default().to_owned();
    let hint = pg::hint_for_sqlstate(&e.code, &e.message, db);
    let message = match &hint {
        Some(h) => format!("{}; {h}", e.message),
        None => e.message.clone(),
    };
    match e.code.as_str() {
        "28P01" | "28000" => ReplicationError::Auth {
            target: target.to_owned(),
            message,
        },
        "42501" => ReplicationError::NoReplicationPrivilege { user, message },
        "3D000" => ReplicationError::DatabaseMissing {
            database: db.pg.get_dbname().unwrap_or_default().to_owned(),
            message,
        },
        _ => classify(e, db),
    }
}

/// Classifies an error the server sent after login (slot commands, streaming).
pub(super) fn classify(e: ServerError, db: &DatabaseConfig) -> ReplicationError {
    match e.code.as_str() {
        "55006" if e.message.contains("replication slot") => ReplicationError::SlotActive {
            slot: db.slot.clone(),
            pid: active_pid(&e.message),
        },
        "55000" if e.message.contains("wal_level") => ReplicationError::WalLevel {
            actual: "below logical".to_owned(),
        },
        // START_REPLICATION on an invalidated slot: "can no longer get changes from
        // replication slot" (17+), "cannot read from logical replication slot" (13–16).
        "55000"
            if e.message
                .contains("can no longer get changes from replication slot")
                || e.message
                    .contains("cannot read from logical replication slot") =>
        {
            ReplicationError::SlotInvalidated {
                slot: db.slot.clone(),
                reason: e.detail.clone().unwrap_or(e.message),
            }
        }
        "42704" if e.message.contains("publication") => ReplicationError::PublicationMissing {
            publication: db.publication.clone(),
            database: db.pg.get_dbname().unwrap_or_default().to_owned(),
        },
        "42501" => ReplicationError::NoReplicationPrivilege {
            user: db.pg.get_user().unwrap_or_default().to_owned(),
            message: e.message,
        },
        _ => ReplicationError::Server(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> DatabaseConfig {
        DatabaseConfig::from_url("postgres://bridge:pw@db.example:5432/strapi", "test").unwrap()
    }

    fn err(code: &str, message: &str) -> ServerError {
        ServerError {
            severity: "ERROR".into(),
            code: code.into(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    #[test]
    fn server_errors_map_to_what_the_caller_does_next() {
        let active = classify(
            err(
                "55006",
                "replication slot \"strapi_io\" is active for PID 99",
            ),
            &db(),
        );
        assert!(matches!(
            active,
            ReplicationError::SlotActive { pid: Some(99), .. }
        ));
        assert!(active.is_retryable());
        let wal = classify(
            err("55000", "logical decoding requires wal_level >= logical"),
            &db(),
        );
        assert!(matches!(wal, ReplicationError::WalLevel { .. }) && !wal.is_retryable());
        let publication = classify(
            err("42704", "publication \"strapi_io\" does not exist"),
            &db(),
        );
        assert!(!publication.is_retryable());
        let other = classify(err("57P01", "terminating connection"), &db());
        assert!(other.is_retryable());
    }

    #[test]
    fn every_host_is_tried_in_order_and_named_on_its_own() {
        let db = DatabaseConfig::from_url(
            "postgres://bridge:pw@db1:5433,db2/strapi?target_session_attrs=read-write",
            "test",
        )
        .unwrap();
        let hosts = candidates(&db);
        assert_eq!(hosts.len(), 2);
        let targets: Vec<String> = hosts.iter().map(|(h, p)| host_target(&db, h, *p)).collect();
        assert_eq!(
            targets,
            ["bridge@db1:5433/strapi", "bridge@db2:5432/strapi"]
        );
        assert_eq!(
            db.pg.get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        let single = DatabaseConfig::from_url("postgres://bridge@db1/strapi", "test").unwrap();
        assert_eq!(
            candidates(&single)
                .iter()
                .map(|(h, p)| host_target(&single, h, *p))
                .collect::<Vec<_>>(),
            ["bridge@db1:5432/strapi"]
        );
    }

    #[test]
    fn an_invalidated_slot_is_fatal() {
        let e = classify(
            ServerError {
                detail: Some(
                    "This slot has been invalidated because it exceeded the maximum reserved size."
                        .into(),
                ),
                ..err(
                    "55000",
                    "cannot read from logical replication slot \"strapi_io\"",
                )
            },
            &db(),
        );
        assert!(
            matches!(e, ReplicationError::SlotInvalidated { .. }),
            "{e:?}"
        );
        assert!(!e.is_retryable());
        let e = classify(
            err(
                "55000",
                "can no longer get changes from replication slot \"strapi_io\"",
            ),
            &db(),
        );
        assert!(
            matches!(e, ReplicationError::SlotInvalidated { .. }),
            "{e:?}"
        );
    }

    #[test]
    fn login_errors_are_fatal_with_hints() {
        let auth = classify_startup(
            err(
                "28P01",
                "password authentication failed for user \"bridge\"",
            ),
            &db(),
            "t",
        );
        assert!(!auth.is_retryable());
        assert!(auth.to_string().contains("check the password"), "{auth}");
        let hba = classify_startup(
            err(
                "28000",
                "no pg_hba.conf entry for host \"10.0.0.1\", user \"bridge\", database \"strapi\"",
            ),
            &db(),
            "t",
        );
        assert!(hba.to_string().contains("add a line"), "{hba}");
        let privilege = classify_startup(
            err(
                "42501",
                "must be superuser or replication role to start walsender",
            ),
            &db(),
            "t",
        );
        assert!(matches!(
            privilege,
            ReplicationError::NoReplicationPrivilege { .. }
        ));
        assert!(privilege.to_string().contains("WITH REPLICATION"));
    }
}
