//! End-to-end topology changes under load: nodes join (bootstrap
//! streaming while coordinators already send them the writes of their
//! future ranges), leave (decommission hands everything over), and a dead
//! node is removed (removenode, then repair restores N copies); a crash
//! in the middle of a stream resumes from where it stopped.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::cluster::{get, put, status, values, wait_for, Cluster};
use corekv_net::client::Client;
use corekv_net::native::Consistency;

/// A client writing fresh keys at QUORUM until stopped (bounded in count
/// and time); what it had acknowledged, and how many writes failed.
struct Writer {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(Vec<String>, usize)>,
}

impl Writer {
    fn start(addr: std::net::SocketAddr, prefix: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let prefix = prefix.to_string();
        let handle = std::thread::spawn(move || {
            let mut c = Client::connect(addr, Duration::from_secs(10)).expect("connect");
            let (mut acked, mut failed) = (Vec::new(), 0);
            let started = Instant::now();
            for i in 0..200_000 {
                if flag.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(120) {
                    break;
                }
                let key = format!("{prefix}{i}");
                match put(&mut c, &key, "w", Vec::new(), Consistency::Quorum) {
                    Ok(_) => acked.push(key),
                    Err(_) => {
                        failed += 1;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
            (acked, failed)
        });
        Writer { stop, handle }
    }

    fn finish(self) -> (Vec<String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("writer")
    }
}

/// Every key readable at QUORUM through node `via`.
fn assert_all_readable(cluster: &Cluster, via: usize, keys: &[String]) {
    let mut c = cluster.client(via);
    for key in keys {
        let got = get(&mut c, key, Consistency::Quorum).expect("QUORUM read");
        assert_eq!(values(&got), ["w"], "{key} lost");
    }
}

fn ownership(cluster: &Cluster, via: usize) -> Vec<f64> {
    status(&cluster.nodes[via])["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["ownership"].as_f64().expect("ownership"))
        .collect()
}

#[test]
fn growing_from_3_to_6_and_shrinking_to_4_under_load_loses_nothing() {
    let mut cluster = Cluster::start(3, "conflict = \"lww\"");
    let mut c = cluster.client(0);
    let preload: Vec<String> = (0..2000).map(|i| format!("pre{i}")).collect();
    for k in &preload {
        put(&mut c, k, "w", Vec::new(), Consistency::Quorum).expect("preload");
    }
    let writer = Writer::start(cluster.nodes[0].native, "grow");
    // Reads and updates at QUORUM (the nodes' default levels) through
    // node 2 meanwhile: open loop, bounded, stops by itself.
    let bench = std::process::Command::new(common::corekv())
        .args(["bench", "--quiet", "--workload", "a", "--keys", "2000"])
        .args(["--rate", "1000", "--duration", "15s", "--threads", "1"])
        .args(["--target", &format!("native://{}", cluster.nodes[1].native)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("corekv bench");
    for _ in 0..3 {
        cluster.add_node();
        cluster.wait_converged();
    }
    let (grown, failed) = writer.finish();
    let out = bench.wait_with_output().expect("bench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<u64> = text
        .lines()
        .find(|l| l.starts_with("all "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(3)
                .filter_map(|n| n.replace(',', "").parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(all.len(), 3, "{text}");
    let (requests, errors, timeouts) = (all[0], all[1], all[2]);
    assert!(requests > 5_000, "{text}");
    assert!(
        (errors + timeouts) * 100 <= requests,
        "bench while growing: {text}"
    );
    assert!(
        grown.len() > 100,
        "the writer made progress: {}",
        grown.len()
    );
    assert!(
        failed * 100 <= grown.len(),
        "{failed} of {} writes failed while nodes joined",
        grown.len()
    );
    // The newcomers hold their share: bootstrap streamed, writes went on.
    let owns = ownership(&cluster, 4);
    let mean = owns.iter().sum::<f64>() / owns.len() as f64;
    let max = owns.iter().cloned().fold(0.0, f64::max);
    assert!(max / mean <= 1.15, "ownership {owns:?}");
    for node in 3..6 {
        let s = status(&cluster.nodes[node]);
        assert!(
            s["totals"]["stream_keys"].as_u64() > Some(0),
            "node {} streamed",
            node + 1
        );
    }
    assert_all_readable(&cluster, 3, &preload);
    assert_all_readable(&cluster, 5, &grown);

    // Shrink: nodes 5 and 6 leave, one after the other, under load.
    let writer = Writer::start(cluster.nodes[0].native, "shrink");
    for node in [5, 4] {
        let out = cluster.nodes[node].cli(&["decommission"]);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.nodes[node].signal_and_wait("-TERM");
    }
    let (shrunk, failed) = writer.finish();
    assert!(failed * 100 <= shrunk.len().max(100), "{failed} failed");
    cluster.nodes.truncate(4);
    cluster.wait_converged();
    for via in [0, 3] {
        let t = status(&cluster.nodes[via]);
        assert_eq!(t["members"].as_array().map(Vec::len), Some(4), "{t}");
    }
    assert_all_readable(&cluster, 1, &preload);
    assert_all_readable(&cluster, 2, &grown);
    assert_all_readable(&cluster, 3, &shrunk);
    // A decommissioned node's data directory refuses to serve again.
    let dir = cluster.dir.path().join("node6");
    let out = std::process::Command::new(common::corekv())
        .args(["serve", "--data-dir"])
        .arg(&dir)
        .args(["--admin-addr", "off", "--native-addr", "127.0.0.1:0"])
        .args(["--resp-addr", "127.0.0.1:0", "--peer-addr", "127.0.0.1:0"])
        .args(["--shards", "1"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("decommissioned"), "{err}");
}

#[test]
fn decommission_is_refused_when_it_would_break_n() {
    let cluster = Cluster::start(3, "");
    let out = cluster.nodes[2].cli(&["decommission"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("replication factor"), "{err}");
}

#[test]
fn removenode_after_a_crash_restores_n_copies() {
    let mut cluster = Cluster::start(4, "conflict = \"lww\"");
    let mut c = cluster.client(0);
    const KEYS: u64 = 3000;
    for i in 0..KEYS {
        put(&mut c, &format!("r{i}"), "w", Vec::new(), Consistency::All).expect("put");
    }
    cluster.nodes[3].signal_and_wait("-KILL");
    wait_for("node 4 down", || {
        common::cluster::up_ids(&cluster.nodes[0]) == [1, 2, 3]
    });
    let out = cluster.nodes[0].cli(&["removenode", "4"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // N = 3 on three nodes: every node holds every key again.
    for node in 0..3 {
        let keys = status(&cluster.nodes[node])["keys_estimate"].as_u64();
        assert_eq!(keys, Some(KEYS), "node {}", node + 1);
        let members = status(&cluster.nodes[node])["members"]
            .as_array()
            .map(Vec::len);
        assert_eq!(members, Some(3));
    }
}

#[test]
fn a_join_interrupted_by_a_crash_resumes_and_completes() {
    // Throttled to 1 MiB/s so the stream is still running when killed.
    let mut cluster = Cluster::start(3, "stream_mib_per_s = 1\nconflict = \"lww\"");
    let mut c = cluster.client(0);
    let value = "x".repeat(1000);
    const KEYS: usize = 4000;
    for i in 0..KEYS {
        put(
            &mut c,
            &format!("s{i}"),
            &value,
            Vec::new(),
            Consistency::All,
        )
        .expect("put");
    }
    let n = cluster.add_node();
    wait_for("node 4 to start streaming", || {
        status(&cluster.nodes[n])["totals"]["stream_keys"].as_u64() > Some(500)
    });
    cluster.nodes[n].signal_and_wait("-KILL");
    cluster.nodes[n].restart();
    cluster.wait_converged();
    let resumed = status(&cluster.nodes[n])["totals"]["stream_keys"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        cluster.nodes[n]
            .log_text()
            .contains("resuming an interrupted topology change"),
        "{}",
        cluster.nodes[n].log_text()
    );
    // It did not start over: the second run streamed less than it owns.
    let owned = status(&cluster.nodes[n])["keys_estimate"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        resumed < owned,
        "streamed {resumed} after the restart, owns {owned}"
    );
    // Its own replica answers every key it now owns (ONE, local first).
    let topology = {
        use corekv_net::native::{RequestBody, ResponseBody};
        let ResponseBody::Topology(json) = cluster
            .client(n)
            .call(RequestBody::Topology)
            .expect("topology")
        else {
            panic!("no topology");
        };
        corekv_cluster::topology::Topology::from_json(&json).expect("parses")
    };
    let mut c4 = cluster.client(n);
    let mine = topology.index_of(4).expect("node 4");
    let mut checked = 0;
    for i in 0..KEYS {
        let key = format!("s{i}");
        if !topology
            .ring()
            .replicas(corekv_engine::token_of(key.as_bytes()))
            .contains(&mine)
        {
            continue;
        }
        checked += 1;
        let got = get(&mut c4, &key, Consistency::One).expect("ONE");
        assert_eq!(values(&got), std::slice::from_ref(&value), "{key}");
    }
    assert!(checked as u64 >= owned.min(KEYS as u64) / 2, "{checked}");
}
