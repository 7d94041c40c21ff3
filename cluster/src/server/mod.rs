//! Client-facing servers of one shard: accept loops for the native protocol
//! (shared port and this shard's own port) and RESP, with the limits every
//! connection lives within.

mod command;
mod idle;
mod native;
mod peer;
mod pipeline;
mod resp;
mod resp_auth;
mod status;

pub use crate::wire_context::{decode as decode_context, encode as encode_context};

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::{TcpListener, TcpStream};

use crate::coordinator::Coordinator;
use crate::error::{Error, Result};
use crate::runtime::config::NodeConfig;
use crate::runtime::metrics::bump;

/// Shared by a shard's servers: whether the shard is stopping, and how many
/// connections are open.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Rc<ShutdownState>,
}

#[derive(Default)]
struct ShutdownState {
    stopping: Cell<bool>,
    /// Wakes everything waiting in [`Shutdown::stopped`].
    stop_signal: StopSignal,
    /// Duplicates of the listening sockets, shut down by `begin`.
    listeners: std::cell::RefCell<Vec<socket2::Socket>>,
    connections: Cell<usize>,
    in_flight: Cell<usize>,
}

/// A semaphore that never has permits: `begin` closes it, which fails
/// every waiting (and later) acquire at once, so waiters need no polling.
struct StopSignal(glommio::sync::Semaphore);

impl Default for StopSignal {
    fn default() -> StopSignal {
        StopSignal(glommio::sync::Semaphore::new(0))
    }
}

impl Shutdown {
    /// A shard that is serving.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Stops accepting at once (the listening sockets leave LISTEN now, not
    /// when io_uring releases them after exit); connections finish the
    /// request at hand and close.
    pub fn begin(&self) {
        self.inner.stopping.set(true);
        self.inner.stop_signal.0.close();
        for socket in self.inner.listeners.borrow_mut().drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    /// True once stopping.
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.get()
    }

    /// Resolves once the shard starts stopping (at once if it has).
    pub async fn stopped(&self) {
        if self.is_stopping() {
            return;
        }
        // Never granted: it fails when `begin` closes the semaphore.
        let _ = self.inner.stop_signal.0.acquire(1).await;
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.inner.connections.get()
    }

    /// Waits until no request is in flight (or `timeout` passes).
    pub async fn drained(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.inner.in_flight.get() > 0 && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    }

    fn request_started(&self) {
        self.inner.in_flight.set(self.inner.in_flight.get() + 1);
    }

    fn request_finished(&self) {
        self.inner
            .in_flight
            .set(self.inner.in_flight.get().saturating_sub(1));
    }
}

/// Counts a connection for as long as it lives.
struct ConnectionGuard(Shutdown);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let c = &self.0.inner.connections;
        c.set(c.get().saturating_sub(1));
    }
}

/// One kind of connection's count on this shard (clients, or internode),
/// against its own limit.
#[derive(Clone)]
struct OpenConnections {
    open: Rc<Cell<usize>>,
    max: usize,
    kind: &'static str,
    last_refusal_logged: Rc<Cell<Option<Instant>>>,
}

impl OpenConnections {
    fn new(max: usize, kind: &'static str) -> OpenConnections {
        OpenConnections {
            open: Rc::new(Cell::new(0)),
            max,
            kind,
            last_refusal_logged: Rc::new(Cell::new(None)),
        }
    }

    /// Logs a refusal at most every 10 s (they are counted in metrics).
    fn log_refusal(&self) {
        let now = Instant::now();
        let quiet = self
            .last_refusal_logged
            .get()
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10));
        if !quiet {
            self.last_refusal_logged.set(Some(now));
            tracing::warn!(
                kind = self.kind,
                max = self.max,
                "connection limit reached; closing new connections (logged at most every 10 s; see corekv_connections_refused_total)"
            );
        }
    }
}

/// Releases a place in an [`OpenConnections`] count.
struct OpenGuard(Rc<Cell<usize>>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// The TLS acceptor of one listener, its deadline and its failure log.
struct Handshake {
    acceptor: corekv_net::tls::TlsAcceptor,
    timeout: Duration,
    failures: crate::tls::FailureLog,
}

/// Limits applied to every client connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Client connections per shard beyond which new ones are closed at once.
    pub max_connections: usize,
    /// Internode connections per shard, likewise.
    pub max_peer_connections: usize,
    /// A request must arrive whole within this long of its first byte.
    pub request_read_timeout: Duration,
    /// Queued answer bytes past which a connection reads no new request
    /// (twice this: closed).
    pub output_buffer_bytes: usize,
    /// Largest unfinished RESP command buffered.
    pub query_buffer_bytes: usize,
    /// Idle time after which a connection is closed.
    pub idle_timeout: Duration,
    /// Requests a native connection may have in flight.
    pub max_in_flight: usize,
    /// Largest key accepted.
    pub max_key_bytes: usize,
    /// Largest value accepted.
    pub max_value_bytes: usize,
}

impl ConnectionLimits {
    fn from_config(config: &NodeConfig) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: config.max_connections_per_shard,
            max_peer_connections: config.max_peer_connections_per_shard,
            request_read_timeout: Duration::from_millis(config.request_read_timeout_ms.max(1)),
            output_buffer_bytes: usize::try_from(config.output_buffer_mib.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
            query_buffer_bytes: usize::try_from(config.query_buffer_mib.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
            idle_timeout: Duration::from_secs(config.idle_timeout_s.max(1)),
            max_in_flight: config.max_in_flight_per_connection,
            max_key_bytes: config.max_key_bytes,
            max_value_bytes: config.max_value_bytes,
        }
    }
}

/// Which protocol a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Native,
    Resp,
    Peer,
}

/// The listeners of one shard, each with a duplicate descriptor of its
/// socket used to shut it down.
pub struct Listeners {
    list: Vec<(Protocol, TcpListener, socket2::Socket)>,
}

/// Binds a listening socket with SO_REUSEPORT (every shard binds the shared
/// ports; the kernel spreads connections) and returns it with a duplicate.
///
/// The duplicate exists for shutdown: glommio's in-flight `accept` holds a
/// reference to the socket inside io_uring, which the kernel tears down
/// asynchronously after the process exits, so a merely closed listener can
/// keep accepting (and then resetting) connections for a moment after a
/// stop. `Shutdown::begin` calls `shutdown(2)` on the duplicate, which takes
/// the socket out of LISTEN at once, so a restarted node never loses
/// connections to its predecessor.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<(TcpListener, socket2::Socket)> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    let control = socket.try_clone()?;
    // SAFETY: `into_raw_fd` hands over a bound, listening TCP socket that
    // nothing else owns; glommio takes ownership and closes it on drop.
    let listener = unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) };
    Ok((listener, control))
}

/// Binds the shared native and RESP ports (SO_REUSEPORT: every shard binds
/// them and the kernel spreads connections), this shard's own native port
/// `native port + 1 + index`, and its internode port `peer port + index`.
pub fn bind_all(config: &NodeConfig, index: usize) -> Result<Listeners> {
    let bind = |addr: std::net::SocketAddr| {
        listen(addr).map_err(|e| Error::Io {
            context: format!("binding {addr} (is another corekv or program using it?)"),
            source: e,
        })
    };
    let mut own = config.native_addr;
    let port = u16::try_from(usize::from(own.port()) + 1 + index).map_err(|_| {
        Error::Config(format!(
            "native port {} + shard {index} overflows",
            own.port()
        ))
    })?;
    own.set_port(port);
    let mut peer = config.peer_addr;
    let port = u16::try_from(usize::from(peer.port()) + index).map_err(|_| {
        Error::Config(format!(
            "peer port {} + shard {index} overflows",
            peer.port()
        ))
    })?;
    peer.set_port(port);
    Ok(Listeners {
        list: vec![
            with(Protocol::Native, bind(config.native_addr)?),
            with(Protocol::Native, bind(own)?),
            with(Protocol::Resp, bind(config.resp_addr)?),
            with(Protocol::Peer, bind(peer)?),
        ],
    })
}

fn with(
    protocol: Protocol,
    (listener, control): (TcpListener, socket2::Socket),
) -> (Protocol, TcpListener, socket2::Socket) {
    (protocol, listener, control)
}

/// Starts an accept loop per listener; each stops accepting when the shard
/// begins stopping (and then ends by itself).
pub fn spawn_all(
    listeners: Listeners,
    coordinator: Rc<Coordinator>,
    config: &NodeConfig,
    shutdown: Shutdown,
) -> Result<()> {
    let limits = ConnectionLimits::from_config(config);
    // This shard's authenticator (its own credential cache), or `None`
    // when authentication is off.
    let auth = match &config.users {
        Some(users) => Some(Rc::new(
            crate::auth::Authenticator::with_store(users.0.clone())
                .map_err(|e| Error::Config(e.to_string()))?,
        )),
        None => None,
    };
    let tls = config.tls.clone();
    let clients = OpenConnections::new(limits.max_connections, "client");
    let peers = OpenConnections::new(limits.max_peer_connections, "internode");
    listeners
        .list
        .into_iter()
        .for_each(|(protocol, listener, control)| {
            let coordinator = coordinator.clone();
            let shutdown = shutdown.clone();
            shutdown.inner.listeners.borrow_mut().push(control);
            let count = match protocol {
                Protocol::Peer => peers.clone(),
                Protocol::Native | Protocol::Resp => clients.clone(),
            };
            let handshake = tls.as_ref().and_then(|t| {
                let acceptor = match protocol {
                    Protocol::Peer => t.peer_server.clone(),
                    Protocol::Native | Protocol::Resp => t.clients.clone(),
                }?;
                Some(Rc::new(Handshake {
                    acceptor,
                    timeout: t.handshake_timeout,
                    failures: crate::tls::FailureLog::default(),
                }))
            });
            glommio::spawn_local(accept_loop(
                protocol,
                listener,
                coordinator,
                limits,
                count,
                shutdown,
                (auth.clone(), handshake),
            ))
            .detach();
        });
    Ok(())
}

async fn accept_loop(
    protocol: Protocol,
    listener: TcpListener,
    coordinator: Rc<Coordinator>,
    limits: ConnectionLimits,
    count: OpenConnections,
    shutdown: Shutdown,
    // Who may talk: the authenticator, and the TLS handshake first.
    (auth, handshake): (
        Option<Rc<crate::auth::Authenticator>>,
        Option<Rc<Handshake>>,
    ),
) {
    loop {
        let stop = async {
            shutdown.stopped().await;
            None
        };
        let accepted = future::or(async { Some(listener.accept().await) }, stop).await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(_)) if shutdown.is_stopping() => return,
            Some(Err(e)) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if count.open.get() >= count.max {
            let m = coordinator.router().metrics();
            match protocol {
                Protocol::Peer => bump(&m.peer_connections_refused),
                Protocol::Native | Protocol::Resp => bump(&m.connections_refused),
            }
            count.log_refusal();
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        shutdown.inner.connections.set(shutdown.connections() + 1);
        count.open.set(count.open.get() + 1);
        let guard = (
            ConnectionGuard(shutdown.clone()),
            OpenGuard(count.open.clone()),
        );
        let coordinator = coordinator.clone();
        let shutdown = shutdown.clone();
        let auth = auth.clone();
        let handshake = handshake.clone();
        glommio::spawn_local(async move {
            let _guard = guard;
            let peer = stream.peer_addr().ok();
            // The handshake runs in the connection's task (the accept loop
            // goes on) and within its deadline, holding its slot no longer.
            let stream = match handshake {
                None => corekv_net::tls::MaybeTls::Plain(stream),
                Some(h) => match corekv_net::tls::accept(&h.acceptor, stream, h.timeout).await {
                    Ok(s) => s,
                    Err(e) => {
                        let m = coordinator.router().metrics();
                        let kind = match protocol {
                            Protocol::Peer => {
                                bump(&m.peer_tls_handshake_failures);
                                "internode"
                            }
                            Protocol::Native | Protocol::Resp => {
                                bump(&m.tls_handshake_failures);
                                "client"
                            }
                        };
                        h.failures.log(kind, peer, &e);
                        return;
                    }
                },
            };
            let result = match protocol {
                Protocol::Native => {
                    native::serve_connection(stream, coordinator, limits, shutdown, auth).await
                }
                Protocol::Resp => {
                    resp::serve_connection(stream, coordinator, limits, shutdown, auth).await
                }
                Protocol::Peer => {
                    peer::serve_connection(stream, coordinator, limits, shutdown).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(?peer, error = %e, "connection closed with an error");
            }
        })
        .detach();
    }
}

/// Type of the streams handed to connection loops: plain TCP, or TLS
/// once its handshake finished.
pub(crate) type Stream = corekv_net::tls::MaybeTls<TcpStream>;
