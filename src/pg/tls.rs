//! TLS per `sslmode`, with rustls (the `ring` provider).
//!
//! [`TlsPolicy`] turns the configured [`SslMode`] and `sslrootcert` into a rustls
//! [`ClientConfig`] once; both connection kinds use it: ordinary SQL through tokio-postgres
//! ([`MakeRustlsConnect`]) and the replication connection, which speaks the SSLRequest itself
//! ([`TlsPolicy::negotiate`]). What each mode checks is libpq's:
//!
//! | sslmode | TLS | certificate chain | host name |
//! |---|---|---|---|
//! | `disable` | never | – | – |
//! | `prefer` | if the server accepts SSLRequest, else plain | no | no |
//! | `require` | always | no | no |
//! | `verify-ca` | always | yes | no |
//! | `verify-full` | always | yes | yes |
//!
//! Trusted roots, as libpq: with `sslrootcert=/path/ca.pem`, only the PEM certificates of that
//! file; with `sslrootcert=system`, the public Mozilla set (webpki-roots), for `verify-full`
//! only. Without `sslrootcert`, `verify-full` trusts the public set (as Node's `pg` does for
//! Strapi's `DATABASE_SSL`), and `verify-ca` is refused: public roots without a host-name check
//! would accept any certificate any public CA issued to anyone.
//! Unix-domain sockets never use TLS, as with libpq. Channel binding (`SCRAM-SHA-256-PLUS`) is
//! not offered; SCRAM runs without it.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::TlsConnector;

use crate::config::SslMode;

/// The TLS settings could not be turned into a client configuration, or a TLS session could not
/// be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `sslrootcert` names a file that cannot be read or holds no usable certificate.
    #[error("sslrootcert {path}: {message}")]
    RootCert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the configuration (no usable protocol version or verifier).
    #[error("TLS setup failed: {0}")]
    Config(String),
    /// The server answered the SSLRequest with "no", and the sslmode needs TLS.
    #[error(
        "the server does not accept TLS connections but sslmode={mode} needs TLS: enable ssl in \
         postgresql.conf, or use sslmode=prefer (or disable)"
    )]
    NotOffered {
        /// The configured mode.
        mode: &'static str,
    },
    /// The host name cannot be used as a TLS server name.
    #[error("{host:?} is not a valid TLS server name")]
    ServerName {
        /// The host as configured.
        host: String,
    },
    /// The mode and `sslrootcert` do not make a safe combination.
    #[error("sslmode={mode}: {message}")]
    Roots {
        /// The configured mode.
        mode: &'static str,
        /// What to set instead.
        message: String,
    },
    /// The handshake failed (certificate rejected, protocol mismatch, connection lost).
    #[error("TLS handshake failed: {message}")]
    Handshake {
        /// Why, with a hint when the certificate was rejected.
        message: String,
        /// Whether the failure is about the certificate or TLS parameters (not the network):
        /// retrying will not help.
        certificate: bool,
    },
}

/// The configured `sslmode` with its rustls configuration, built once per process.
#[derive(Clone)]
pub struct TlsPolicy {
    mode: SslMode,
    config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for TlsPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPolicy")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl TlsPolicy {
    /// Builds the rustls configuration for `mode`, reading `root_cert` (PEM) when given.
    pub fn new(mode: SslMode, root_cert: Option<&Path>) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = |provider: Arc<CryptoProvider>| {
            let roots = Arc::new(root_store(mode, root_cert)?);
            WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))
        };
        let verifier: Arc<dyn ServerCertVerifier> = match mode {
            SslMode::Disable => return Ok(TlsPolicy { mode, config: None }),
            SslMode::Prefer | SslMode::Require => Arc::new(NoVerification(provider.clone())),
            SslMode::VerifyCa => Arc::new(ChainOnly(webpki(provider.clone())?)),
            SslMode::VerifyFull => webpki(provider.clone())?,
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(TlsPolicy {
            mode,
            config: Some(Arc::new(config)),
        })
    }

    /// The configured mode.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// The rustls configuration; `None` for `sslmode=disable`.
    pub fn client_config(&self) -> Option<&Arc<ClientConfig>> {
        self.config.as_ref()
    }

    /// A tokio-postgres TLS connector with this policy, or `None` for `sslmode=disable`.
    pub fn make_tls_connect(&self) -> Option<MakeRustlsConnect> {
        self.config
            .clone()
            .map(|config| MakeRustlsConnect { config })
    }

    /// Speaks the SSLRequest on a fresh TCP stream to `host` and, when the server accepts,
    /// runs the TLS handshake. With `prefer`, a server that declines yields the plain stream.
    pub async fn negotiate<S>(
        &self,
        mut stream: S,
        host: &str,
    ) -> Result<MaybeTls<S>, NegotiateError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(config) = &self.config else {
            return Ok(MaybeTls::Plain(stream));
        };
        let name = server_name(host)?;
        let mut request = bytes::BytesMut::with_capacity(8);
        postgres_protocol::message::frontend::ssl_request(&mut request);
        stream.write_all(&request).await?;
        stream.flush().await?;
        let answer = stream.read_u8().await?;
        match answer {
            b'S' => {}
            b'N' if self.mode == SslMode::Prefer => return Ok(MaybeTls::Plain(stream)),
            b'N' => {
                return Err(TlsError::NotOffered {
                    mode: mode_name(self.mode),
                }
                .into());
            }
            other => {
                return Err(NegotiateError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected answer {other:#04x} to SSLRequest"),
                )));
            }
        }
        let tls = TlsConnector::from(config.clone())
            .connect(name, stream)
            .await
            .map_err(|e| TlsError::from_handshake(&e, host))?;
        Ok(MaybeTls::Tls(Box::new(tls)))
    }
}

/// Why [`TlsPolicy::negotiate`] failed: the network, or TLS itself.
#[derive(Debug, thiserror::Error)]
pub enum NegotiateError {
    /// Reading or writing the SSLRequest failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// TLS refused or failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The libpq spelling of a mode, for messages.
pub fn mode_name(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

impl TlsError {
    /// Describes a failed handshake, with what to change when the certificate was refused.
    pub fn from_handshake(err: &io::Error, host: &str) -> TlsError {
        let rustls_err = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        let Some(rustls_err) = rustls_err else {
            return TlsError::Handshake {
                message: err.to_string(),
                certificate: false,
            };
        };
        let hint = match rustls_err {
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                "; the server's certificate is not signed by a trusted root: give its CA \
                 certificate with sslrootcert=/path/to/ca.pem"
                    .to_owned()
            }
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => format!(
                "; the server's certificate does not name {host:?}: connect with a host name the \
                 certificate lists, or use sslmode=verify-ca"
            ),
            rustls::Error::InvalidCertificate(_) => {
                "; the server's certificate was refused".to_owned()
            }
            _ => String::new(),
        };
        TlsError::Handshake {
            message: format!("{rustls_err}{hint}"),
            certificate: true,
        }
    }
}

fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName {
        host: host.to_owned(),
    })
}

/// The `sslrootcert` value that means the public roots.
pub const SYSTEM_ROOTS: &str = "system";

/// The roots `mode` trusts with `root_cert`: the file's certificates alone, or the public set
/// where that is safe (see the module docs).
fn root_store(mode: SslMode, root_cert: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let public = || RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let refuse = |message: &str| TlsError::Roots {
        mode: mode_name(mode),
        message: message.to_owned(),
    };
    match root_cert {
        Some(path) if path == Path::new(SYSTEM_ROOTS) => {
            if mode == SslMode::VerifyFull {
                return Ok(public());
            }
            return Err(refuse(
                "sslrootcert=system (the public CAs) needs sslmode=verify-full, as libpq:                  without the host-name check any certificate a public CA issued would do",
            ));
        }
        None if mode == SslMode::VerifyFull => return Ok(public()),
        None => {
            return Err(refuse(
                "needs sslrootcert=/path/to/ca.pem, the CA that signed the server's certificate                  (without it only public CAs could be trusted, and without the host-name check                  any certificate they issued would do); or use sslmode=verify-full",
            ));
        }
        Some(_) => {}
    }
    let mut roots = RootCertStore::empty();
    if let Some(path) = root_cert {
        let err = |message: String| TlsError::RootCert {
            path: path.to_owned(),
            message,
        };
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))? {
            let cert = cert.map_err(|e| err(format!("not PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| err(format!("unusable certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(err("holds no PEM certificate".to_owned()));
        }
    }
    Ok(roots)
}

/// `prefer` and `require`: any certificate is accepted; the handshake signatures are still
/// checked so the session keys belong to whoever sent the certificate.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not checked. WebPKI
/// checks the chain before the name, so a name mismatch means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A stream that is either plain or wrapped in TLS, after [`TlsPolicy::negotiate`].
#[derive(Debug)]
pub enum MaybeTls<S> {
    /// No TLS (`disable`, or `prefer` with a server that declined).
    Plain(S),
    /// TLS established.
    Tls(Box<tokio_rustls::client::TlsStream<S>>),
}

impl<S> MaybeTls<S> {
    /// Whether TLS is in use.
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// tokio-postgres
// ---------------------------------------------------------------------------------------------

/// tokio-postgres' TLS hook over tokio-rustls, so ordinary SQL follows the same policy.
#[derive(Clone)]
pub struct MakeRustlsConnect {
    config: Arc<ClientConfig>,
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = TlsError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, TlsError> {
        Ok(RustlsConnect {
            config: self.config.clone(),
            host: domain.to_owned(),
        })
    }
}

/// One TLS handshake for tokio-postgres, to the host it was made for.
pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    host: String,
}

impl<S> tokio_postgres::tls::TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, TlsError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = server_name(&self.host)?;
            TlsConnector::from(self.config)
                .connect(name, stream)
                .await
                .map(|s| RustlsStream(Box::new(s)))
                .map_err(|e| TlsError::from_handshake(&e, &self.host))
        })
    }
}

/// A TLS stream handed to tokio-postgres.
pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        tokio_postgres::tls::ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().0.as_mut()).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().0.as_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().0.as_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().0.as_mut()).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disable_builds_no_tls_configuration() {
        let policy = TlsPolicy::new(SslMode::Disable, None).unwrap();
        assert!(policy.client_config().is_none());
        assert!(policy.make_tls_connect().is_none());
    }

    #[test]
    fn every_other_mode_builds_a_configuration() {
        for mode in [SslMode::Prefer, SslMode::Require, SslMode::VerifyFull] {
            let policy = TlsPolicy::new(mode, None).unwrap();
            assert!(policy.client_config().is_some(), "{mode:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = write_ca(dir.path(), "ca.pem");
        let policy = TlsPolicy::new(SslMode::VerifyCa, Some(&ca)).unwrap();
        assert!(policy.client_config().is_some());
    }

    /// A self-signed CA certificate, as PEM in `dir/name`.
    fn write_ca(dir: &Path, name: &str) -> PathBuf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, cert.pem()).unwrap();
        path
    }

    #[test]
    fn sslrootcert_is_the_only_trust_anchor_and_system_means_the_public_roots() {
        let dir = tempfile::tempdir().unwrap();
        let ca = write_ca(dir.path(), "ca.pem");
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let roots = root_store(mode, Some(&ca)).unwrap();
            assert_eq!(
                roots.len(),
                1,
                "{mode:?}: only the file's CA, no public roots"
            );
        }
        let system = root_store(SslMode::VerifyFull, Some(Path::new("system"))).unwrap();
        assert_eq!(system.len(), webpki_roots::TLS_SERVER_ROOTS.len());
        assert!(system.len() > 100);
    }

    #[test]
    fn verify_ca_without_its_own_root_is_refused() {
        let err = TlsPolicy::new(SslMode::VerifyCa, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("sslmode=verify-ca: needs sslrootcert=/path/to/ca.pem"),
            "{err}"
        );
        let err = TlsPolicy::new(SslMode::VerifyCa, Some(Path::new("system")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs sslmode=verify-full"), "{err}");
    }

    #[test]
    fn unreadable_root_certificate_names_the_file() {
        let err = TlsPolicy::new(SslMode::VerifyFull, Some(Path::new("/nonexistent/ca.pem")))
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn root_certificate_without_pem_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = TlsPolicy::new(SslMode::VerifyCa, Some(&path)).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }
}
