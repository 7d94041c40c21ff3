//! End-to-end tests of a cluster: three real `corekv serve` processes on
//! loopback, joined by gossip through one seed, N = 3.

mod common;

use std::time::Duration;

use common::cluster::{context, get, put, status, values, wait_for, Cluster};
use common::Server;
use corekv_net::client::ClientError;
use corekv_net::native::{Consistency, ErrorCode, RequestBody, ResponseBody};

#[test]
fn quorum_survives_a_dead_node_and_reads_repair_it() {
    // Hints expire at once here, so only read repair can bring the
    // restarted node up to date.
    let mut cluster = Cluster::start(3, "hint_window_s = 0");
    let quorum = Consistency::Quorum;
    // QUORUM writes through one node are seen by QUORUM reads through another.
    for i in 0..60 {
        let mut writer = cluster.client(i % 3);
        let mut reader = cluster.client((i + 1) % 3);
        let key = format!("k{i}");
        put(&mut writer, &key, &format!("v{i}"), Vec::new(), quorum).expect("quorum put");
        let got = get(&mut reader, &key, quorum).expect("quorum get");
        assert_eq!(values(&got), [format!("v{i}")], "key {key}");
    }
    // Every replica holds every key (N = 3 on three nodes) once the
    // writes beyond W have landed in the background.
    for node in 0..3 {
        wait_for(&format!("60 keys on node {}", node + 1), || {
            status(&cluster.nodes[node])["keys_estimate"].as_u64() == Some(60)
        });
    }

    cluster.nodes[2].signal_and_wait("-KILL");
    let mut c = cluster.client(0);
    put(&mut c, "while-down", "fresh", Vec::new(), quorum).expect("QUORUM with one node down");
    assert_eq!(
        values(&get(&mut c, "while-down", quorum).expect("get")),
        ["fresh"]
    );
    assert_eq!(values(&get(&mut c, "k7", quorum).expect("get")), ["v7"]);
    match put(&mut c, "all", "x", Vec::new(), Consistency::All) {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, ErrorCode::Unavailable, "{message}");
        }
        other => panic!("ALL with a node down must fail as unavailable: {other:?}"),
    }
    // Gossip convicts the dead node; `corekv status` shows the cluster as
    // this node sees it.
    wait_for("node 3 marked down on node 1", || {
        common::cluster::up_ids(&cluster.nodes[0]) == [1, 2]
    });
    let out = cluster.nodes[0].cli(&["status"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let row = |id: &str| {
        table
            .lines()
            .filter(|l| {
                ["UP", "DOWN", "UNREACHABLE"]
                    .iter()
                    .any(|s| l.starts_with(s))
            })
            .find(|l| l.split_whitespace().nth(2) == Some(id))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        row("1").starts_with("UP") && row("2").starts_with("UP"),
        "{table}"
    );
    assert!(row("3").starts_with("DOWN"), "{table}");
    assert!(row("3").contains("normal"), "{table}");
    // Now the node is known down: refused up front, naming it.
    match get(&mut c, "k1", Consistency::All) {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, ErrorCode::Unavailable);
            assert!(message.contains("down: 3"), "{message}");
        }
        other => panic!("ALL read with a node down must fail: {other:?}"),
    }

    // Read repair leaves versions younger than 100 ms alone (presumed in
    // flight); this one is older by the time it is read.
    std::thread::sleep(Duration::from_millis(150));
    cluster.nodes[2].restart();
    // A QUORUM read coordinated by the restarted node finds its own copy
    // stale and repairs it in the background.
    let mut c3 = cluster.client(2);
    let got = get(&mut c3, "while-down", quorum).expect("quorum get on the restarted node");
    assert_eq!(values(&got), ["fresh"]);
    wait_for("a read repair on node 3", || {
        status(&cluster.nodes[2])["totals"]["read_repairs"].as_u64() >= Some(1)
    });
    // With the two others gone, a read at ONE can only be served by node
    // 3's own replica: the repaired value must be there.
    cluster.nodes[0].signal_and_wait("-KILL");
    cluster.nodes[1].signal_and_wait("-KILL");
    let mut c3 = cluster.client(2);
    let got = get(&mut c3, "while-down", Consistency::One).expect("ONE on node 3 alone");
    assert_eq!(values(&got), ["fresh"]);
    match get(&mut c3, "while-down", quorum) {
        Err(ClientError::Server { code, .. }) => {
            assert!(matches!(code, ErrorCode::Unavailable | ErrorCode::Timeout))
        }
        other => panic!("QUORUM with two nodes down must fail: {other:?}"),
    }
}

#[test]
fn concurrent_writes_become_siblings_and_a_context_resolves_them() {
    let cluster = Cluster::start(3, "");
    let mut a = cluster.client(0);
    let mut b = cluster.client(1);
    let all = Consistency::All;
    put(&mut a, "cart", "apple", Vec::new(), all).expect("put a");
    put(&mut b, "cart", "pear", Vec::new(), all).expect("put b");
    let got = get(&mut a, "cart", all).expect("get");
    assert_eq!(values(&got), ["apple", "pear"], "blind writes are siblings");
    // Writing back with the context of that read supersedes both.
    put(&mut b, "cart", "apple+pear", context(&got), all).expect("resolve");
    for node in 0..3 {
        let mut c = cluster.client(node);
        let got = get(&mut c, "cart", Consistency::One).expect("get");
        assert_eq!(values(&got), ["apple+pear"], "node {}", node + 1);
    }
    // The CLI shows siblings too.
    put(&mut a, "cli", "x", Vec::new(), all).expect("put");
    // The CLI lists siblings oldest first and RESP picks the last writer,
    // both by HLC reading; two nodes' readings within one millisecond tie
    // and the tie goes to the replica id (random per data directory), so
    // leave a few ms.
    std::thread::sleep(Duration::from_millis(5));
    put(&mut b, "cli", "y", Vec::new(), all).expect("put");
    let out = cluster.nodes[2].cli(&["get", "cli", "--consistency", "all"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("sibling 1: x") && text.contains("sibling 2: y"),
        "{text}"
    );
    // RESP GET answers the last writer.
    assert_eq!(common::redis_cli(&cluster.nodes[0], &["GET", "cli"]), "y");
}

#[test]
fn last_writer_wins_keeps_one_value() {
    let cluster = Cluster::start(3, "conflict = \"lww\"");
    let mut a = cluster.client(0);
    let mut b = cluster.client(1);
    put(&mut a, "k", "first", Vec::new(), Consistency::All).expect("put");
    std::thread::sleep(Duration::from_millis(5));
    put(&mut b, "k", "second", Vec::new(), Consistency::All).expect("put");
    for node in 0..3 {
        let got = get(&mut cluster.client(node), "k", Consistency::One).expect("get");
        assert_eq!(values(&got), ["second"], "node {}", node + 1);
    }
}

#[test]
fn levels_beyond_n_and_gossip_mistakes_are_clear_errors() {
    let cluster = Cluster::start(3, "");
    let mut c = cluster.client(0);
    match put(&mut c, "k", "v", Vec::new(), Consistency::Count(4)) {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, ErrorCode::Unavailable);
            assert!(message.contains("only 3"), "{message}");
        }
        other => panic!("W=4 with N=3 must fail: {other:?}"),
    }
    // Settings gossip cannot work with refuse to start, naming the key.
    let dir = tempfile::tempdir().expect("tempdir");
    for (setting, named) in [
        ("phi_convict_threshold = 0.0", "phi_convict_threshold"),
        ("gossip_interval_ms = 0", "gossip_interval_ms"),
        (
            "peer_addr = \"0.0.0.0:7100\"\nseeds = [\"127.0.0.1:7100\"]",
            "peer_addr",
        ),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, setting).expect("write");
        let out = std::process::Command::new(common::corekv())
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--data-dir"])
            .arg(dir.path().join("data"))
            .output()
            .expect("run");
        assert!(!out.status.success(), "{setting}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{setting}: {err}");
    }
}

#[test]
fn the_shard_aware_client_never_makes_a_node_cross_cores() {
    use corekv_cluster::client::ShardAwareClient;
    let cluster = Cluster::start_sharded(3, 2, "");
    let seed = cluster.nodes[1].native;
    let outcome = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let client = ShardAwareClient::connect(seed, 64).await.expect("topology");
            assert_eq!(client.topology().members().len(), 3);
            for i in 0..300 {
                let key = format!("sa{i}").into_bytes();
                client
                    .call(RequestBody::Put {
                        consistency: Consistency::Quorum,
                        ttl_ms: 0,
                        context: Vec::new(),
                        key: key.clone(),
                        value: b"v".to_vec(),
                    })
                    .await
                    .expect("put");
                let got = client
                    .call(RequestBody::Get {
                        consistency: Consistency::Quorum,
                        key,
                    })
                    .await
                    .expect("get");
                assert!(matches!(got, ResponseBody::Value { .. }));
            }
        })
        .expect("executor")
        .join();
    outcome.expect("client run");
    let mut writes = 0;
    let mut repairs = 0;
    for node in &cluster.nodes {
        let s = status(node);
        repairs += s["totals"]["read_repairs"].as_u64().unwrap_or(0);
        for shard in s["per_shard"].as_array().expect("shards") {
            assert_eq!(shard["forwards"].as_u64(), Some(0), "{s}");
            writes += shard["applies"].as_u64().unwrap_or(0);
        }
    }
    // Every put reached all three replicas; a read that raced the third
    // replica's write repaired it once more.
    assert!(
        (900..=900 + repairs).contains(&writes),
        "{writes} applies, {repairs} repairs"
    );
}

#[test]
fn missed_writes_become_hints_that_survive_a_restart_and_are_delivered() {
    let mut cluster = Cluster::start(3, "");
    cluster.nodes[2].signal_and_wait("-KILL");
    let mut c = cluster.client(0);
    for i in 0..20 {
        let key = format!("hinted{i}");
        put(&mut c, &key, "late", Vec::new(), Consistency::Quorum).expect("quorum put");
    }
    wait_for("20 hints on node 1", || {
        status(&cluster.nodes[0])["totals"]["hints_stored"].as_u64() >= Some(20)
    });
    // The node holding the hints crashes and comes back: they are on disk.
    cluster.nodes[0].signal_and_wait("-KILL");
    cluster.nodes[0].restart();
    assert_eq!(
        status(&cluster.nodes[0])["totals"]["hints_pending"].as_u64(),
        Some(20)
    );
    cluster.nodes[2].restart();
    wait_for("the hints to reach node 3", || {
        let s = status(&cluster.nodes[0]);
        s["totals"]["hints_delivered"].as_u64() == Some(20)
            && s["totals"]["hints_pending"].as_u64() == Some(0)
    });
    // Node 3 alone must now hold every write (no read touched it before).
    cluster.nodes[0].signal_and_wait("-KILL");
    cluster.nodes[1].signal_and_wait("-KILL");
    let mut c3 = cluster.client(2);
    for i in 0..20 {
        let got = get(&mut c3, &format!("hinted{i}"), Consistency::One).expect("ONE");
        assert_eq!(values(&got), ["late"], "key hinted{i}");
    }
    assert_eq!(
        status(&cluster.nodes[2])["totals"]["read_repairs"].as_u64(),
        Some(0)
    );
}

#[test]
fn sloppy_quorum_writes_through_a_stand_in_and_hands_off_later() {
    use corekv_cluster::topology::Topology;
    let mut cluster = Cluster::start(4, "");
    let mut c = cluster.client(0);
    let ResponseBody::Topology(json) = c.call(RequestBody::Topology).expect("topology") else {
        panic!("not a topology answer");
    };
    let topology = Topology::from_json(&json).expect("parses");
    // Keys whose replicas are nodes 1, 2 and 3 (so node 4 is the stand-in).
    let keys: Vec<String> = (0..400)
        .map(|i| format!("s{i}"))
        .filter(|k| {
            let token = corekv_engine::token_of(k.as_bytes());
            let mut ids: Vec<u32> = topology
                .ring()
                .replicas(token)
                .iter()
                .map(|&n| topology.members()[n].id)
                .collect();
            ids.sort_unstable();
            ids == [1, 2, 3]
        })
        .take(20)
        .collect();
    assert_eq!(keys.len(), 20);
    cluster.nodes[1].signal_and_wait("-KILL");
    cluster.nodes[2].signal_and_wait("-KILL");
    // Two of three replicas are down: W = 2 holds via node 4, both while
    // the failures are only seen as refused connections...
    for k in &keys[..10] {
        put(&mut c, k, "sloppy", Vec::new(), Consistency::Two).expect("sloppy write");
    }
    // ...and once gossip has marked both down everywhere.
    wait_for("nodes 2 and 3 marked down", || {
        common::cluster::up_ids(&cluster.nodes[0]) == [1, 4]
            && common::cluster::up_ids(&cluster.nodes[3]) == [1, 4]
    });
    for k in &keys[10..] {
        put(&mut c, k, "sloppy", Vec::new(), Consistency::Two).expect("sloppy write");
    }
    let hints = |nodes: &[Server], node: usize, what: &str| {
        status(&nodes[node])["totals"][what].as_u64().unwrap_or(0)
    };
    wait_for("hints for both owners", || {
        hints(&cluster.nodes, 0, "hints_stored") + hints(&cluster.nodes, 3, "hints_stored") >= 40
    });
    assert!(
        hints(&cluster.nodes, 3, "hints_stored") >= 20,
        "node 4 stood in"
    );
    // A strict read cannot use the stand-in.
    assert!(get(&mut c, &keys[0], Consistency::Two).is_err());
    cluster.nodes[1].restart();
    cluster.nodes[2].restart();
    wait_for("the hints to be handed off", || {
        hints(&cluster.nodes, 0, "hints_delivered") + hints(&cluster.nodes, 3, "hints_delivered")
            >= 40
    });
    for node in [1, 2] {
        let keys_there = status(&cluster.nodes[node])["keys_estimate"].as_u64();
        assert_eq!(keys_there, Some(20), "node {} got every write", node + 1);
    }
    for k in &keys {
        let got = get(&mut c, k, Consistency::All).expect("all replicas agree");
        assert_eq!(values(&got), ["sloppy"]);
    }
}
