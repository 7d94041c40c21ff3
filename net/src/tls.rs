//! TLS 1.3 (rustls with the ring provider) for every corekv port.
//!
//! - [`Identity`] is a node's certificate chain and key, and the CA it
//!   checks the other side against, loaded once at start; a missing,
//!   unreadable or garbage PEM file is a typed [`TlsError`], never a panic.
//! - [`MaybeTls`] is a connection that is either plain TCP or TLS over it,
//!   so the servers' and clients' connection loops are written once.
//! - [`accept`] runs a server handshake under a deadline, so a client that
//!   sends nothing (or garbage) cannot hold a connection slot.
//!
//! A TLS stream buffers: writers call `flush` after `write_all`.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use futures_rustls::{TlsAcceptor, TlsConnector};
pub use rustls::pki_types::ServerName as TlsServerName;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A certificate file holds no PEM certificate.
    #[error("{path}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file holds no PEM private key.
    #[error("{path}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it: {reason}")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// A PEM file is malformed.
    #[error("{path}: bad PEM: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// A CA file holds a certificate rustls cannot use as a root.
    #[error("{path}: not a usable CA certificate: {reason}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("TLS certificate and key refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// Client-certificate checking needs a CA and none was given.
    #[error("client-certificate checking needs a CA file (tls_ca_file)")]
    NoCa,
    /// The client-certificate verifier could not be built.
    #[error("client-certificate verifier: {0}")]
    Verifier(String),
    /// The address is not a valid TLS server name.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
}

/// Whether a server asks the other side for a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    Off,
    /// One is asked for; a client without one is let in, a wrong one is not.
    Optional,
    /// A certificate signed by the CA is required.
    Required,
}

/// The ring provider. Its `default_provider` is deprecated in rustls
/// 0.23.48 only because ring has no post-quantum key exchange; aws-lc
/// (which has) needs cmake and clang to build, which these machines lack.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file, in order (a chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::NoKey {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The CA certificates of a PEM file as trust roots (at least one).
pub fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

/// A node's certificate chain and private key, and the CA it checks other
/// sides' certificates against (when one is configured). Loading checks
/// that the key fits the certificate.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Option<Arc<RootCertStore>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Identity")
            .field("certificates", &self.chain.len())
            .field("ca", &self.roots.is_some())
            .finish()
    }
}

impl Identity {
    /// Loads `cert` (PEM chain, leaf first), `key` (PEM) and optionally
    /// `ca` (PEM roots); fails with the file and the reason.
    pub fn load(cert: &Path, key: &Path, ca: Option<&Path>) -> Result<Identity, TlsError> {
        let identity = Identity {
            chain: load_certs(cert)?,
            key: load_key(key)?,
            roots: ca.map(load_roots).transpose()?,
        };
        // Builds once so that a key that does not fit fails at start.
        identity.server_config(ClientAuth::Off)?;
        Ok(identity)
    }

    /// True when a CA was loaded.
    pub fn has_ca(&self) -> bool {
        self.roots.is_some()
    }

    /// A TLS 1.3-only server configuration presenting this identity,
    /// checking client certificates against the CA as `clients` says.
    pub fn server_config(&self, clients: ClientAuth) -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?;
        let builder = match clients {
            ClientAuth::Off => builder.with_no_client_auth(),
            ClientAuth::Optional | ClientAuth::Required => {
                let roots = self.roots.clone().ok_or(TlsError::NoCa)?;
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider());
                let verifier = if clients == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .map_err(|e| TlsError::Verifier(e.to_string()))?,
                )
            }
        };
        // No ALPN: a server that names protocols refuses clients offering
        // others; curl without an answer speaks HTTP/1.1.
        let config = builder.with_single_cert(self.chain.clone(), self.key.clone_key())?;
        Ok(Arc::new(config))
    }

    /// A TLS 1.3-only client configuration that presents this identity and
    /// checks the server against the CA (mutual TLS between nodes).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let roots = self.roots.clone().ok_or(TlsError::NoCa)?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        Ok(Arc::new(config))
    }
}

/// A TLS 1.3-only client configuration trusting the CA in `ca`, presenting
/// `identity` (certificate and key files) when given: for the CLI and tests.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(load_roots(ca)?);
    let config = match identity {
        Some((cert, key)) => builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The server name a client checks the certificate against: the host part
/// of `host:port` (an IP address needs an IP SAN, a name a DNS SAN).
pub fn server_name(addr: &str) -> Result<ServerName<'static>, TlsError> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName(host.to_string()))
}

/// A connection that is plain TCP or TLS over it.
pub enum MaybeTls<S> {
    /// No TLS.
    Plain(S),
    /// TLS (either side), boxed: the session state is large.
    Tls(Box<futures_rustls::TlsStream<S>>),
}

impl<S> MaybeTls<S> {
    /// True for a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }

    /// The underlying socket.
    pub fn get_ref(&self) -> &S {
        match self {
            MaybeTls::Plain(s) => s,
            MaybeTls::Tls(t) => t.get_ref().0,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
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
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_close(cx),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_close(cx),
        }
    }
}

/// Why a server handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client did not finish the handshake in time.
    #[error("TLS handshake not finished within {0:?}")]
    TimedOut(Duration),
    /// The handshake failed (not TLS, a refused certificate, a closed
    /// connection).
    #[error("TLS handshake failed: {0}")]
    Failed(io::Error),
}

/// Runs the server side of a handshake on `stream`, within `timeout`
/// (on a glommio executor).
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    acceptor: &TlsAcceptor,
    stream: S,
    timeout: Duration,
) -> Result<MaybeTls<S>, HandshakeError> {
    let handshake = async { Some(acceptor.accept(stream).await) };
    let deadline = async {
        glommio::timer::sleep(timeout).await;
        None
    };
    match futures_lite::future::or(handshake, deadline).await {
        None => Err(HandshakeError::TimedOut(timeout)),
        Some(Err(e)) => Err(HandshakeError::Failed(e)),
        Some(Ok(s)) => Ok(MaybeTls::Tls(Box::new(s.into()))),
    }
}

/// Runs the client side of a handshake on `stream` (no deadline: callers
/// bound the whole connect).
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    stream: S,
) -> io::Result<MaybeTls<S>> {
    let s = TlsConnector::from(config).connect(name, stream).await?;
    Ok(MaybeTls::Tls(Box::new(s.into())))
}
