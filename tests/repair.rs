//! End-to-end anti-entropy: replicas that diverged while one was down
//! (with hints disabled) are brought back together by `corekv repair`,
//! deletes included, and a repair of equal replicas moves no keys.

mod common;

use common::cluster::{get, put, status, values, Cluster};
use corekv_net::native::{Consistency, RequestBody, ResponseBody};

fn repair(node: &common::Server, extra: &[&str]) -> String {
    let mut args = vec!["repair"];
    args.extend_from_slice(extra);
    let out = node.cli(&args);
    assert!(
        out.status.success(),
        "repair failed: {}{}\nnode log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        node.log_text()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn moved(node: &common::Server) -> (u64, u64) {
    let s = status(node);
    (
        s["totals"]["repair_keys_pulled"].as_u64().unwrap_or(0),
        s["totals"]["repair_keys_pushed"].as_u64().unwrap_or(0),
    )
}

#[test]
fn repair_brings_back_what_a_replica_missed_and_then_moves_nothing() {
    // No hints: only repair can bring node 3 up to date.
    let mut cluster = Cluster::start(3, "hints_max_per_shard = 0");
    let mut c = cluster.client(0);
    for i in 0..200 {
        put(
            &mut c,
            &format!("old{i}"),
            "v",
            Vec::new(),
            Consistency::All,
        )
        .expect("put");
    }
    cluster.nodes[2].signal_and_wait("-KILL");
    const KEYS: usize = 10_000;
    for i in 0..KEYS {
        put(
            &mut c,
            &format!("k{i}"),
            &format!("value-{i}"),
            Vec::new(),
            Consistency::Two,
        )
        .expect("W=2 with one node down");
    }
    // Deletes node 3 misses too.
    for i in 0..50 {
        let got = get(&mut c, &format!("old{i}"), Consistency::Two).expect("get");
        let ResponseBody::Value { context, .. } = got else {
            panic!("old{i} missing");
        };
        c.call(RequestBody::Delete {
            consistency: Consistency::Two,
            context,
            key: format!("old{i}").into_bytes(),
        })
        .expect("delete");
    }
    cluster.nodes[2].restart();
    cluster.wait_converged();
    let mut c3 = cluster.client(2);
    // Before: node 3's own replica lacks the writes.
    let missing = (0..KEYS)
        .step_by(97)
        .filter(|i| {
            let got = get(&mut c3, &format!("k{i}"), Consistency::One).expect("ONE");
            values(&got).is_empty()
        })
        .count();
    assert!(
        missing > 90,
        "node 3 should have missed the writes ({missing})"
    );

    let report = repair(&cluster.nodes[2], &[]);
    assert!(report.contains("repair finished"), "{report}");
    let (pulled, pushed) = moved(&cluster.nodes[2]);
    // The ONE reads above read-repaired the ~100 keys they touched.
    assert!(
        (KEYS as u64 - 150..=KEYS as u64 + 50).contains(&pulled) && pushed == 0,
        "pulled {pulled}, pushed {pushed}"
    );
    // Now node 3 alone answers every key, and the deletes hold.
    cluster.nodes[0].signal_and_wait("-KILL");
    cluster.nodes[1].signal_and_wait("-KILL");
    let mut c3 = cluster.client(2);
    for i in 0..KEYS {
        let got = get(&mut c3, &format!("k{i}"), Consistency::One).expect("ONE");
        assert_eq!(values(&got), [format!("value-{i}")], "k{i}");
    }
    for i in 0..200 {
        let got = get(&mut c3, &format!("old{i}"), Consistency::One).expect("ONE");
        let expected: Vec<String> = if i < 50 { vec![] } else { vec!["v".into()] };
        assert_eq!(values(&got), expected, "old{i}");
    }
    cluster.nodes[0].restart();
    cluster.nodes[1].restart();
    cluster.wait_converged();
    // A second repair finds equal trees and moves nothing.
    let before: Vec<(u64, u64)> = cluster.nodes.iter().map(moved).collect();
    repair(&cluster.nodes[2], &[]);
    repair(&cluster.nodes[0], &["--node", "2"]);
    let after: Vec<(u64, u64)> = cluster.nodes.iter().map(moved).collect();
    assert_eq!(before, after, "a repair of equal replicas moved keys");
}

#[test]
fn repair_settings_that_would_resurrect_deletes_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "gc_grace_s = 3600\nrepair_interval_s = 7200\n").expect("write");
    let out = std::process::Command::new(common::corekv())
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("repair_interval_s") && err.contains("gc_grace_s"),
        "{err}"
    );
    // Unknown nodes and bad ranges are clear errors, not silent no-ops.
    let cluster = Cluster::start(2, "");
    for args in [
        &["repair", "--node", "9"][..],
        &["repair", "--range", "9:1"][..],
    ] {
        let out = cluster.nodes[0].cli(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("node 9") || err.contains("after its end"),
            "{err}"
        );
    }
}

#[test]
fn the_scheduler_repairs_without_being_asked() {
    // Repairs every second: a replica that missed writes (no hints) catches
    // up by itself.
    let mut cluster = Cluster::start(2, "hints_max_per_shard = 0\nrepair_interval_s = 1");
    let mut c = cluster.client(0);
    cluster.nodes[1].signal_and_wait("-KILL");
    for i in 0..300 {
        put(&mut c, &format!("s{i}"), "v", Vec::new(), Consistency::One).expect("W=1");
    }
    cluster.nodes[1].restart();
    cluster.wait_converged();
    common::cluster::wait_for("a scheduled repair to bring node 2 up to date", || {
        let s = status(&cluster.nodes[1]);
        s["totals"]["repair_runs"].as_u64() >= Some(1) && s["keys_estimate"].as_u64() == Some(300)
    });
    // Node 2's own replica answers everything (ONE is served locally first).
    cluster.nodes[0].signal_and_wait("-KILL");
    let mut c2 = cluster.client(1);
    for i in 0..300 {
        let got = get(&mut c2, &format!("s{i}"), Consistency::One).expect("ONE");
        assert_eq!(values(&got), ["v"], "s{i}");
    }
}
