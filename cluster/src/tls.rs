//! A node's TLS setup, built once at start from `tls_cert_file`,
//! `tls_key_file`, `tls_ca_file`, `tls_auth_clients` and `internode_tls`
//! (docs/OPERATIONS.md, "TLS"), and the rate-limited log of failed
//! handshakes.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corekv_net::tls::{ClientAuth, Identity, TlsAcceptor, TlsError};
use rustls::ClientConfig;

use crate::error::{Error, Result};
use crate::runtime::config::NodeConfig;

/// The TLS configurations a node serves and dials with.
#[derive(Clone)]
pub struct NodeTls {
    /// Client ports (native, RESP) and admin HTTP: TLS only, when set.
    pub clients: Option<TlsAcceptor>,
    /// The internode port: mutual TLS against the CA, when set.
    pub peer_server: Option<TlsAcceptor>,
    /// Internode dials: present the node's certificate, check the other
    /// node's against the CA, when set.
    pub peer_client: Option<Arc<ClientConfig>>,
    /// The admin endpoint's server configuration (a blocking server).
    pub admin: Option<Arc<rustls::ServerConfig>>,
    /// A handshake must finish within this long of the accept.
    pub handshake_timeout: Duration,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("clients", &self.clients.is_some())
            .field("internode", &self.peer_server.is_some())
            .finish()
    }
}

/// Loaded setups compare equal only to themselves (NodeConfig is
/// `PartialEq` for its keys' sake).
impl PartialEq for NodeTls {
    fn eq(&self, other: &NodeTls) -> bool {
        std::ptr::eq(self, other)
    }
}

fn tls_error(what: &str, e: TlsError) -> Error {
    Error::Config(format!("{what}: {e}"))
}

/// Checks the TLS keys of `config` and loads the files they name; `None`
/// when TLS is off. Every inconsistent or unreadable setting is an error
/// naming the key.
pub fn load(config: &NodeConfig) -> Result<Option<NodeTls>> {
    let clients = match config.tls_auth_clients.as_str() {
        "yes" => ClientAuth::Required,
        "optional" => ClientAuth::Optional,
        "no" => ClientAuth::Off,
        other => {
            return Err(Error::Config(format!(
                "tls_auth_clients must be \"yes\", \"optional\" or \"no\", not {other:?}"
            )))
        }
    };
    if config.tls_handshake_timeout_ms == 0 {
        return Err(Error::Config(
            "tls_handshake_timeout_ms must be above 0".into(),
        ));
    }
    let (cert, key) = match (&config.tls_cert_file, &config.tls_key_file) {
        (None, None) => {
            if config.internode_tls {
                return Err(Error::Config(
                    "internode_tls needs tls_cert_file, tls_key_file and tls_ca_file".into(),
                ));
            }
            if config.tls_ca_file.is_some() {
                return Err(Error::Config(
                    "tls_ca_file is set without tls_cert_file and tls_key_file".into(),
                ));
            }
            return Ok(None);
        }
        (Some(_), None) => {
            return Err(Error::Config(
                "tls_cert_file is set without tls_key_file".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(Error::Config(
                "tls_key_file is set without tls_cert_file".into(),
            ))
        }
        (Some(c), Some(k)) => (c.as_path(), k.as_path()),
    };
    if config.internode_tls && config.tls_ca_file.is_none() {
        return Err(Error::Config(
            "internode_tls needs tls_ca_file: nodes check each other's certificates against it"
                .into(),
        ));
    }
    let identity = Identity::load(cert, key, config.tls_ca_file.as_deref())
        .map_err(|e| tls_error("TLS (tls_cert_file, tls_key_file, tls_ca_file)", e))?;
    // No CA: nothing to check client certificates against.
    let clients = if identity.has_ca() {
        clients
    } else {
        ClientAuth::Off
    };
    let client_config = identity
        .server_config(clients)
        .map_err(|e| tls_error("TLS for client ports", e))?;
    let (peer_server, peer_client) = if config.internode_tls {
        let server = identity
            .server_config(ClientAuth::Required)
            .map_err(|e| tls_error("internode TLS", e))?;
        let client = identity
            .client_config()
            .map_err(|e| tls_error("internode TLS", e))?;
        (Some(TlsAcceptor::from(server)), Some(client))
    } else {
        (None, None)
    };
    Ok(Some(NodeTls {
        clients: Some(TlsAcceptor::from(client_config.clone())),
        peer_server,
        peer_client,
        admin: Some(client_config),
        handshake_timeout: Duration::from_millis(config.tls_handshake_timeout_ms),
    }))
}

/// Logs failed handshakes at most every 10 s per shard and kind (they
/// are counted in `corekv_tls_handshake_failures_total` and
/// `corekv_peer_tls_handshake_failures_total`).
#[derive(Default)]
pub(crate) struct FailureLog {
    last: Cell<Option<Instant>>,
}

impl FailureLog {
    pub(crate) fn log(
        &self,
        kind: &str,
        peer: Option<std::net::SocketAddr>,
        error: &dyn std::fmt::Display,
    ) {
        let now = Instant::now();
        let quiet = self
            .last
            .get()
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10));
        if !quiet {
            self.last.set(Some(now));
            tracing::warn!(
                kind,
                ?peer,
                %error,
                "TLS handshake failed (logged at most every 10 s; see corekv_tls_handshake_failures_total)"
            );
        }
    }
}
