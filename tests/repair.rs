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

/// Issue 22's resurrection scenario: a replica is down while a key is
/// deleted; gc_grace passes on the others, with flushes and a major
/// compaction; the replica comes back holding the old value. The others
/// kept the tombstone (no repair reached every replica since the delete),
/// so repair carries the delete to it instead of the value back to them.
#[test]
fn a_delete_missed_by_a_down_replica_stays_deleted_after_gc_grace() {
    // No hints: only the kept tombstone and repair can carry the delete.
    let mut cluster = Cluster::start(
        3,
        "hints_max_per_shard = 0\ngc_grace_s = 3\nhint_window_s = 1\nrepair_interval_s = 1",
    );
    let mut c = cluster.client(0);
    put(&mut c, "ghost", "boo", Vec::new(), Consistency::All).expect("put at ALL");
    put(&mut c, "alive", "yes", Vec::new(), Consistency::All).expect("put at ALL");
    cluster.nodes[2].signal_and_wait("-TERM");
    // A delete supersedes what its context was shown: read, then delete.
    let read = get(&mut c, "ghost", Consistency::Quorum).expect("read");
    assert_eq!(values(&read), ["boo"]);
    let deleted = c
        .call(RequestBody::Delete {
            consistency: Consistency::Quorum,
            context: common::cluster::context(&read),
            key: b"ghost".to_vec(),
        })
        .expect("delete at QUORUM");
    assert!(
        !matches!(deleted, ResponseBody::Error { .. }),
        "{deleted:?}"
    );
    // gc_grace passes; both remaining replicas flush and compact.
    std::thread::sleep(std::time::Duration::from_secs(4));
    for n in 0..2 {
        let out = cluster.nodes[n].cli(&["compact"]);
        assert!(
            out.status.success(),
            "compact: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The horizon is the last complete repair, before node 3 stopped.
        let s = status(&cluster.nodes[n]);
        assert!(
            s["per_shard"][0]["tombstone_gc_horizon_ms"].is_u64(),
            "node {}: {}",
            n + 1,
            s["per_shard"][0]
        );
    }
    cluster.nodes[2].restart();
    cluster.wait_converged();
    // A complete repair from each side.
    for n in [2, 0] {
        repair(&cluster.nodes[n], &[]);
    }
    let got = get(&mut c, "ghost", Consistency::All).expect("read at ALL");
    assert!(
        values(&got).is_empty(),
        "the deleted key came back after gc_grace: {got:?}"
    );
    let mut c3 = cluster.client(2);
    let got = get(&mut c3, "ghost", Consistency::One).expect("read at ONE");
    assert!(values(&got).is_empty(), "node 3 still serves it: {got:?}");
    let got = get(&mut c, "alive", Consistency::All).expect("read");
    assert_eq!(values(&got), ["yes"]);
}
