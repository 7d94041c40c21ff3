//! End to end: a write supersedes exactly what its client was shown, and
//! no context or write pattern from a client can crash a node (issue 19).
//! Real `corekv serve` processes on loopback, spoken to in the native
//! protocol as docs/PROTOCOL.md describes it.

mod common;

use std::time::Duration;

use common::cluster::{get, put, values, Cluster};
use common::Server;
use corekv_net::client::{Client, ClientError};
use corekv_net::native::{Consistency, ErrorCode, RequestBody, ResponseBody};

fn ok_context(body: ResponseBody) -> Vec<u8> {
    match body {
        ResponseBody::Ok { context } => context,
        other => panic!("expected OK, got {other:?}"),
    }
}

fn read_context(body: &ResponseBody) -> Vec<u8> {
    match body {
        ResponseBody::Value { context, .. } | ResponseBody::NotFound { context } => context.clone(),
        other => panic!("expected a read answer, got {other:?}"),
    }
}

/// The five steps, each client on its own connection to `a` and
/// `b` (which may be the same node, or different nodes).
fn five_steps(a: &mut Client, b: &mut Client, reader: &mut Client, key: &str, level: Consistency) {
    put(b, key, "from-B", Vec::new(), level).expect("B's blind put");
    let ca = ok_context(put(a, key, "from-A", Vec::new(), level).expect("A's blind put"));
    assert_eq!(
        values(&get(reader, key, level).expect("get")),
        ["from-A", "from-B"],
        "two blind writes are siblings"
    );
    put(a, key, "from-A2", ca, level).expect("A's put with its own OK context");
    assert_eq!(
        values(&get(reader, key, level).expect("get")),
        ["from-A2", "from-B"],
        "B's acknowledged write survives: A never saw it"
    );
    // A client that read both and writes back resolves them.
    let both = get(reader, key, level).expect("get");
    put(a, key, "resolved", read_context(&both), level).expect("resolving put");
    assert_eq!(values(&get(reader, key, level).expect("get")), ["resolved"]);
}

#[test]
fn a_write_with_its_own_ok_context_keeps_the_sibling_it_never_saw() {
    let dir = tempfile::tempdir().expect("tempdir");
    // One shard (every request on the key's shard), then two shards
    // reached through the shared port (writes forwarded to the owner).
    for shards in [1, 2] {
        let server = Server::start(&dir.path().join(format!("s{shards}")), shards, &[]);
        let connect = || Client::connect(server.native, Duration::from_secs(10)).expect("connect");
        let (mut a, mut b, mut r) = (connect(), connect(), connect());
        for i in 0..8 {
            five_steps(
                &mut a,
                &mut b,
                &mut r,
                &format!("cart{i}"),
                Consistency::Default,
            );
        }
    }
}

#[test]
fn across_nodes_and_through_a_node_that_is_no_replica() {
    // Four nodes at N = 3: every key has a node that is not its replica,
    // which has a replica mint the write (internode MINT).
    let cluster = Cluster::start(4, "");
    let quorum = Consistency::Quorum;
    for i in 0..12 {
        let key = format!("cart{i}");
        let (na, nb, nr) = (i % 4, (i + 1) % 4, (i + 2) % 4);
        let (mut a, mut b, mut r) = (cluster.client(na), cluster.client(nb), cluster.client(nr));
        five_steps(&mut a, &mut b, &mut r, &key, quorum);
    }
}

#[test]
fn crafted_contexts_and_blind_write_storms_get_errors_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("n"), 1, &[]);
    let mut c = Client::connect(server.native, Duration::from_secs(10)).expect("connect");

    // 40 000 made-up context entries: refused, twice, without a crash.
    let mut crafted = vec![2u8];
    crafted.extend_from_slice(&40_000u32.to_le_bytes());
    for r in 1..=40_000u64 {
        crafted.extend_from_slice(&r.to_le_bytes());
        crafted.extend_from_slice(&1u64.to_le_bytes());
    }
    crafted.extend_from_slice(&0u32.to_le_bytes());
    for _ in 0..2 {
        match c.put(b"cart", b"x", 0, &crafted) {
            Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::ContextTooLarge),
            other => panic!("expected CONTEXT_TOO_LARGE, got {other:?}"),
        }
    }
    // A context from the far future: refused, so it cannot drag the clock.
    let mut future = vec![2u8];
    future.extend_from_slice(&1u32.to_le_bytes());
    future.extend_from_slice(&7u64.to_le_bytes());
    future.extend_from_slice(&u64::MAX.to_le_bytes());
    future.extend_from_slice(&0u32.to_le_bytes());
    match c.put(b"cart", b"x", 0, &future) {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::ClockSkew),
        other => panic!("expected CLOCK_SKEW, got {other:?}"),
    }
    // Garbage is a bad frame, not a crash.
    match c.put(b"cart", b"x", 0, &[2, 9, 9]) {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::BadFrame),
        other => panic!("expected BAD_FRAME, got {other:?}"),
    }

    // 70 000 blind writes to one key, pipelined 500 at a time: the first
    // 100 become siblings, the rest are refused with TOO_MANY_SIBLINGS.
    let (mut ok, mut refused) = (0usize, 0usize);
    for _ in 0..140 {
        for j in 0..500 {
            c.send(RequestBody::Put {
                consistency: Consistency::Default,
                ttl_ms: 0,
                context: Vec::new(),
                key: b"hot".to_vec(),
                value: format!("v{j}").into_bytes(),
            })
            .expect("send");
        }
        for _ in 0..500 {
            match c.recv().expect("answer").body {
                ResponseBody::Ok { .. } => ok += 1,
                ResponseBody::Error { code, .. } => {
                    assert_eq!(code, ErrorCode::TooManySiblings);
                    refused += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!((ok, refused), (100, 69_900));
    let hot = c.get(b"hot").expect("get");
    let ResponseBody::Value { siblings, .. } = &hot else {
        panic!("no value: {hot:?}")
    };
    assert_eq!(siblings.len(), 100);

    // Across a restart (the commit log replays every acknowledged write)
    // the node serves, and a write with the read's context resolves them.
    server.signal_and_wait("-KILL");
    server.restart();
    let mut c = Client::connect(server.native, Duration::from_secs(10)).expect("reconnect");
    let hot = c.get(b"hot").expect("get after restart");
    let ResponseBody::Value { siblings, context } = &hot else {
        panic!("no value: {hot:?}")
    };
    assert_eq!(siblings.len(), 100);
    assert!(matches!(
        c.put(b"hot", b"one", 0, context).expect("resolve"),
        ResponseBody::Ok { .. }
    ));
    let ResponseBody::Value { siblings, .. } = c.get(b"hot").expect("get") else {
        panic!("no value")
    };
    assert_eq!(siblings.len(), 1);
    assert!(matches!(
        c.put(b"cart", b"fine", 0, &[]).expect("ordinary put"),
        ResponseBody::Ok { .. }
    ));
}
