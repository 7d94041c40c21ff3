//! End-to-end tests of gossip membership and failure detection: real
//! `corekv serve` processes on loopback that find each other through one
//! seed, notice crashes and pauses, and keep serving what their quorum
//! allows.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{get, put, status, up_ids, values, wait_for, Cluster};
use common::metric;
use corekv_cluster::topology::Topology;
use corekv_net::native::{Consistency, RequestBody, ResponseBody};

/// The topology node `i` serves to clients.
fn topology(cluster: &Cluster, i: usize) -> Topology {
    let ResponseBody::Topology(json) = cluster
        .client(i)
        .call(RequestBody::Topology)
        .expect("topology")
    else {
        panic!("not a topology answer");
    };
    Topology::from_json(&json).expect("parses")
}

/// Waits until every running node except `except` believes exactly `up`
/// up; returns how long that took.
fn wait_view(cluster: &Cluster, except: &[usize], up: &[u64]) -> Duration {
    let started = Instant::now();
    for (i, node) in cluster.nodes.iter().enumerate() {
        if except.contains(&i) {
            continue;
        }
        wait_for(&format!("node {} to see {up:?} up", i + 1), || {
            up_ids(node) == up
        });
    }
    started.elapsed()
}

#[test]
fn nodes_join_through_one_seed_and_a_newcomer_appears_everywhere() {
    let mut cluster = Cluster::start(3, "");
    // Every node knows every other's metadata, and builds the same ring.
    let fingerprint = topology(&cluster, 0).ring().fingerprint();
    for i in 0..3 {
        let t = topology(&cluster, i);
        assert_eq!(t.members().len(), 3);
        assert_eq!(t.ring().fingerprint(), fingerprint, "node {}", i + 1);
        let racks: Vec<&str> = t.members().iter().map(|m| m.rack.as_str()).collect();
        assert_eq!(racks, ["r0", "r1", "r2"], "racks travel with gossip");
    }
    cluster.add_node();
    cluster.wait_converged();
    let fingerprint = topology(&cluster, 3).ring().fingerprint();
    for i in 0..4 {
        assert_eq!(topology(&cluster, i).ring().fingerprint(), fingerprint);
    }
    // `corekv status --json` on any node lists all four, normal and up.
    let out = cluster.nodes[1].cli(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let members = v["members"].as_array().expect("members");
    assert_eq!(members.len(), 4);
    for m in members {
        assert_eq!(m["status"], "normal", "{m}");
        assert_eq!(m["up"], true, "{m}");
        assert!(m["ownership"].as_f64().expect("ownership") > 0.3, "{m}");
    }
    // A restarted node serves with the membership it remembered.
    cluster.nodes[3].signal_and_wait("-TERM");
    cluster.nodes[3].restart();
    assert_eq!(topology(&cluster, 3).members().len(), 4);
}

#[test]
fn a_killed_node_is_marked_down_everywhere_while_quorum_writes_go_on() {
    let mut cluster = Cluster::start(3, "");
    let mut c = cluster.client(0);
    cluster.nodes[2].signal_and_wait("-KILL");
    let mut acked = Vec::new();
    let started = Instant::now();
    let mut i = 0;
    while up_ids(&cluster.nodes[0]) != [1, 2] || up_ids(&cluster.nodes[1]) != [1, 2] {
        let key = format!("during{i}");
        put(&mut c, &key, "v", Vec::new(), Consistency::Quorum).expect("QUORUM while one is down");
        acked.push(key);
        i += 1;
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "node 3 not marked down within 20 s"
        );
    }
    // 100 ms rounds, phi 8: at least 8 × ln 10 × 100 ms ≈ 1.8 s of silence.
    let detected = started.elapsed();
    assert!(
        detected >= Duration::from_millis(1500),
        "convicted after only {detected:?}"
    );
    for k in 0..50 {
        let key = format!("after{k}");
        put(&mut c, &key, "v", Vec::new(), Consistency::Quorum).expect("QUORUM after conviction");
        acked.push(key);
    }
    assert!(metric(&cluster.nodes[0], "corekv_gossip_state_changes_total") >= 1.0);
    assert_eq!(
        metric(&cluster.nodes[0], "corekv_cluster_members{state=\"down\"}"),
        1.0
    );
    // The first hints are older than the conviction took: replication lag.
    wait_for("the oldest hint's age in /metrics", || {
        metric(&cluster.nodes[0], "corekv_hints_oldest_age_seconds") >= 1.0
    });
    cluster.nodes[2].restart();
    wait_view(&cluster, &[], &[1, 2, 3]);
    // Hints bring node 3 up to date: every acknowledged write is on it.
    wait_for("hints delivered to node 3", || {
        (0..2).all(|n| status(&cluster.nodes[n])["totals"]["hints_pending"].as_u64() == Some(0))
    });
    wait_for("no replication lag left", || {
        metric(&cluster.nodes[0], "corekv_hints_oldest_age_seconds") == 0.0
    });
    cluster.nodes[0].signal_and_wait("-KILL");
    cluster.nodes[1].signal_and_wait("-KILL");
    let mut c3 = cluster.client(2);
    for key in &acked {
        let got = get(&mut c3, key, Consistency::One).expect("ONE on node 3");
        assert_eq!(values(&got), ["v"], "{key} lost");
    }
}

#[test]
fn a_paused_node_is_marked_down_and_up_again_when_it_resumes() {
    let cluster = Cluster::start(3, "");
    let pid = cluster.nodes[1]
        .child
        .as_ref()
        .expect("running")
        .id()
        .to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    wait_view(&cluster, &[1], &[1, 3]);
    // Writes whose replicas include the paused node still reach QUORUM.
    let mut c = cluster.client(0);
    for i in 0..20 {
        put(
            &mut c,
            &format!("p{i}"),
            "v",
            Vec::new(),
            Consistency::Quorum,
        )
        .expect("put");
    }
    signal("-CONT");
    wait_view(&cluster, &[], &[1, 2, 3]);
}

#[test]
fn no_node_is_marked_down_under_load() {
    let cluster = Cluster::start(3, "conflict = \"lww\"");
    let before: Vec<f64> = cluster
        .nodes
        .iter()
        .map(|n| metric(n, "corekv_gossip_state_changes_total"))
        .collect();
    // Both cores busy: three nodes and a closed-loop client, bounded.
    let out = Command::new(common::corekv())
        .args(["bench", "--quiet", "--closed", "--workload", "a"])
        .args(["--keys", "2000", "--connections", "8", "--pipeline", "8"])
        .args(["--duration", "6s", "--requests", "2000000"])
        .args(["--target", &format!("native://{}", cluster.nodes[0].native)])
        .output()
        .expect("bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, node) in cluster.nodes.iter().enumerate() {
        assert_eq!(
            metric(node, "corekv_gossip_state_changes_total"),
            before[i],
            "node {} flapped under load",
            i + 1
        );
        assert_eq!(up_ids(node), [1, 2, 3]);
        assert!(metric(node, "corekv_gossip_round_trip_seconds_mean") > 0.0);
    }
}
