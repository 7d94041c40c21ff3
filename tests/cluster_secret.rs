//! A cluster with a `cluster_secret_file` (issue 20, "authenticated
//! internode traffic and gossip"), with real `corekv serve` processes on
//! loopback: members replicate through the HELLO challenge; a stranger's
//! internode connection is refused before any request is served, whatever
//! it sends; forged gossip (right checksum and cluster hash, no MAC, or a
//! MAC under another secret) changes nothing; a datagram with a valid MAC
//! is answered once and its replay is dropped; every refusal is counted.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cluster::{get, normal_ids, put, up_ids, values, Cluster};
use common::metric;
use corekv_cluster::gossip::wire::{self, Message};
use corekv_cluster::gossip::{Delta, NodeMeta, NodeStatus};
use corekv_cluster::secret::ClusterSecret;
use corekv_net::native::{Consistency, ErrorCode};
use corekv_net::peer::{self, PeerRequest, PeerResponse};
use corekv_net::Limits;

const SECRET: &str = "a cluster secret for the tests, 48 bytes long...";

fn secret_cluster(n: usize) -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secret");
    std::fs::write(&path, format!("{SECRET}\n")).expect("write secret");
    let cluster = Cluster::start(
        n,
        &format!("cluster_secret_file = \"{}\"\n", path.display()),
    );
    // The nodes read the file at start; it may go now.
    drop(dir);
    cluster
}

/// An internode connection made by hand: frames in, frames out.
struct RawPeer {
    stream: TcpStream,
    buf: Vec<u8>,
    next_id: u64,
}

impl RawPeer {
    fn connect(addr: SocketAddr) -> RawPeer {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        RawPeer {
            stream,
            buf: Vec::new(),
            next_id: 1,
        }
    }

    /// Sends `req`; the answer, or None once the node closed the connection.
    fn call(&mut self, req: &PeerRequest) -> Option<PeerResponse> {
        let mut out = Vec::new();
        peer::encode_request(peer::VERSION_MAX, self.next_id, req, &mut out);
        self.next_id += 1;
        if self.stream.write_all(&out).is_err() {
            return None;
        }
        let limits = Limits::default();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some((_, resp, used)) =
                peer::decode_response(&self.buf, &limits).expect("a well-formed answer")
            {
                self.buf.drain(..used);
                return Some(resp);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// True once the node has closed the connection.
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0))
    }
}

fn hello(nonce: Option<[u8; 16]>) -> PeerRequest {
    PeerRequest::Hello {
        version_min: peer::VERSION_MIN,
        version_max: peer::VERSION_MAX,
        node_id: 77,
        cluster: "corekv".into(),
        nonce,
    }
}

fn refused(answer: Option<PeerResponse>) -> String {
    match answer {
        Some(PeerResponse::Error {
            code: ErrorCode::Unauthenticated,
            message,
        }) => message,
        other => panic!("expected an UNAUTHENTICATED refusal, got {other:?}"),
    }
}

#[test]
fn members_replicate_and_a_stranger_without_the_secret_is_refused() {
    let cluster = secret_cluster(3);
    // Members authenticate each other: writes at ALL reach every node.
    let mut c1 = cluster.client(0);
    put(&mut c1, "k", "v", Vec::new(), Consistency::All).expect("put at ALL");
    let mut c3 = cluster.client(2);
    let got = get(&mut c3, "k", Consistency::All).expect("get at ALL");
    assert_eq!(values(&got), ["v"]);

    let node = &cluster.nodes[1];
    let before = metric(node, "corekv_peer_auth_refusals_total");

    // HELLO without a challenge (a node without the secret, or anyone).
    let mut p = RawPeer::connect(node.peer);
    let why = refused(p.call(&hello(None)));
    assert!(why.contains("cluster secret"), "{why}");
    assert!(p.closed(), "connection left open after the refusal");

    // HELLO with a challenge, then requests without AUTH.
    let mut p = RawPeer::connect(node.peer);
    match p.call(&hello(Some([7; 16]))) {
        Some(PeerResponse::Hello {
            challenge: Some(_), ..
        }) => {}
        other => panic!("expected a challenge, got {other:?}"),
    }
    refused(p.call(&PeerRequest::Read { key: b"k".to_vec() }));
    assert!(p.closed());

    // A made-up proof.
    let mut p = RawPeer::connect(node.peer);
    assert!(matches!(
        p.call(&hello(Some([8; 16]))),
        Some(PeerResponse::Hello { .. })
    ));
    let why = refused(p.call(&PeerRequest::Auth { proof: [0; 32] }));
    assert!(why.contains("another cluster secret"), "{why}");
    assert!(p.closed());

    // The proof of another secret, computed correctly.
    let mut p = RawPeer::connect(node.peer);
    let caller_nonce = [9u8; 16];
    let Some(PeerResponse::Hello {
        node_id,
        challenge: Some(ch),
        ..
    }) = p.call(&hello(Some(caller_nonce)))
    else {
        panic!("no challenge");
    };
    let wrong = ClusterSecret::new(b"some other secret, long enough").expect("secret");
    let proof = wrong.hello_proof(
        corekv_cluster::secret::HelloSide::Caller,
        &corekv_cluster::secret::HelloTranscript {
            cluster: "corekv",
            caller: 77,
            replica: node_id,
            caller_nonce: &caller_nonce,
            replica_nonce: &ch.nonce,
        },
    );
    refused(p.call(&PeerRequest::Auth { proof }));

    // Shards report their counters to the admin thread periodically.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after = metric(node, "corekv_peer_auth_refusals_total");
        if after >= before + 4.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "refusals counted: {before} -> {after}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // And the members still talk.
    put(&mut c1, "k2", "v2", Vec::new(), Consistency::All).expect("put at ALL after the strangers");
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64
}

/// A forged state for node 2: a newer generation, left the cluster.
fn forged_left(victim: &common::Server) -> Message {
    Message::Ack2 {
        from: 99,
        states: vec![Delta {
            id: 2,
            generation: u64::MAX / 2,
            heartbeat: 1,
            version: 1,
            full: Some((
                NodeStatus::Left,
                NodeMeta {
                    id: 2,
                    native_addr: victim.native,
                    peer_addr: victim.peer,
                    shards: 1,
                    rack: "evil".into(),
                    dc: "evil".into(),
                    weight: 1.0,
                    tokens: vec![1, 2, 3],
                },
            )),
        }],
    }
}

/// Waits up to `wait` for one datagram on `socket`.
fn answer(socket: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    socket.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = vec![0u8; 65536];
    socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

#[test]
fn forged_and_replayed_gossip_changes_nothing() {
    let cluster = secret_cluster(3);
    let target = &cluster.nodes[0];
    let hash = wire::cluster_hash("corekv");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.connect(target.peer).expect("connect");
    let unauthenticated = "corekv_gossip_unauthenticated_datagrams_total";
    let before = metric(target, unauthenticated);

    // Right checksum and cluster hash, no MAC: the forged "node 2 left".
    socket
        .send(&wire::encode(hash, &forged_left(&cluster.nodes[1])))
        .expect("send");
    // A MAC under another secret.
    let other = ClusterSecret::new(b"another secret, also long enough").expect("secret");
    socket
        .send(&wire::seal(
            hash,
            Some((&other, now_us())),
            &forged_left(&cluster.nodes[1]),
        ))
        .expect("send");
    // A SYN without a MAC gets no answer (the old amplifier).
    let syn = Message::Syn {
        from: 99,
        digests: Vec::new(),
    };
    socket.send(&wire::encode(hash, &syn)).expect("send");
    assert!(
        answer(&socket, Duration::from_secs(1)).is_none(),
        "a SYN without a MAC was answered"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(target, unauthenticated) < before + 3.0 {
        assert!(Instant::now() < deadline, "forgeries not counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Several gossip rounds later node 2 is still up and normal everywhere.
    std::thread::sleep(Duration::from_secs(1));
    for node in &cluster.nodes {
        assert_eq!(normal_ids(node), [1, 2, 3]);
        assert_eq!(up_ids(node), [1, 2, 3]);
    }

    // A datagram with a valid MAC is answered (the positive control: what
    // was refused above was refused for its MAC) ...
    let secret = ClusterSecret::new(SECRET.as_bytes()).expect("secret");
    let sealed = wire::seal(hash, Some((&secret, now_us())), &syn);
    socket.send(&sealed).expect("send");
    let reply = answer(&socket, Duration::from_secs(5)).expect("an ACK to a valid SYN");
    let opened = wire::open(hash, Some(&secret), &reply).expect("an authenticated ACK");
    assert!(matches!(opened.msg, Message::Ack { .. }));
    // ... once: the same bytes again, and a stale stamp, are dropped.
    let replays = metric(target, "corekv_gossip_replayed_datagrams_total");
    socket.send(&sealed).expect("send");
    let stale = wire::seal(hash, Some((&secret, now_us() - 120_000_000)), &syn);
    socket.send(&stale).expect("send");
    assert!(
        answer(&socket, Duration::from_secs(1)).is_none(),
        "a replayed or stale SYN was answered"
    );
    assert!(metric(target, "corekv_gossip_replayed_datagrams_total") >= replays + 2.0);
    assert_eq!(normal_ids(target), [1, 2, 3]);
}

#[test]
fn without_a_secret_a_strangers_syn_gets_no_more_than_it_sent() {
    let cluster = Cluster::start(2, "");
    let hash = wire::cluster_hash("corekv");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.connect(cluster.nodes[0].peer).expect("connect");
    // The smallest SYN: it knows nothing, so everything is news to it.
    let syn = wire::encode(
        hash,
        &Message::Syn {
            from: 99,
            digests: Vec::new(),
        },
    );
    socket.send(&syn).expect("send");
    let reply = answer(&socket, Duration::from_secs(5)).expect("an ACK");
    assert!(
        reply.len() <= syn.len() + 4,
        "a {}-byte SYN from a stranger got a {}-byte reply (amplification)",
        syn.len(),
        reply.len()
    );
    // Members still get everything: the cluster converged above, and a
    // third node joins through the trimmed first exchange.
    let mut cluster = cluster;
    cluster.add_node();
    cluster.wait_converged();
}
