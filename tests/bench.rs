//! `corekv bench` end to end: a real corekv node and a real redis-server,
//! the same workload against both, the summary and `--out` files checked.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{corekv, free_ports, Server};

/// A redis-server on a free loopback port, killed on drop.
struct Redis {
    child: Child,
    addr: SocketAddr,
}

impl Redis {
    fn start() -> Redis {
        let port = free_ports(1);
        let child = Command::new("/usr/bin/redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, addr }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn bench_corekv_against_redis() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), 1, &["--conflict", "lww"]);
    let redis = Redis::start();
    let out = dir.path().join("out");
    let res = Command::new(corekv())
        .arg("bench")
        .args(["--target", &format!("corekv=native://{}", server.native)])
        .args(["--target", &format!("corekv-resp=resp://{}", server.resp)])
        .args(["--target", &format!("redis=resp://{}", redis.addr)])
        .args([
            "--workload",
            "f",
            "--keys",
            "2000",
            "--value-size",
            "50..150",
        ])
        .args(["--rate", "2000", "--duration", "2s", "--threads", "1"])
        .args(["--load", "--quiet", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{stdout}\n{stderr}");
    for name in ["corekv", "corekv-resp", "redis"] {
        assert!(
            stdout.contains(&format!("{name}: loaded 2000 keys")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("redis/corekv"), "no ratios: {stdout}");
    assert!(stdout.contains("×"), "{stdout}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let targets = json["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 3);
    for t in targets {
        let name = t["target"]["name"].as_str().unwrap();
        let all = &t["all"];
        assert_eq!(all["errors"], 0, "{name}: {t}");
        assert_eq!(t["unsent"], 0, "{name}");
        // 2 s at 2000/s; RMW counts once.
        assert_eq!(all["count"], 4000, "{name}: {all}");
        let ops: Vec<&str> = t["ops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["op"].as_str().unwrap())
            .collect();
        assert_eq!(ops, ["read", "rmw"], "{name}");
        assert!(all["p99_us"].as_f64().unwrap() > 0.0);
        let hlog = std::fs::read_to_string(out.join(format!("{name}.hlog"))).unwrap();
        assert!(
            hlog.contains("Tag=read") && hlog.contains("Tag=rmw"),
            "{name}: {hlog}"
        );
    }
    for svg in ["latency.svg", "timeline.svg"] {
        let s = std::fs::read_to_string(out.join(svg)).unwrap();
        assert!(s.starts_with("<svg") && s.contains("redis"), "{svg}");
    }
    // Reads after the load phase find the keys on both servers.
    let nf = |i: usize| targets[i]["ops"][0]["not_found"].as_u64().unwrap();
    assert_eq!((nf(0), nf(1), nf(2)), (0, 0, 0));
}

#[test]
fn bench_reports_a_refused_connection_clearly() {
    let port = free_ports(1);
    let res = Command::new(corekv())
        .args(["bench", "--target", &format!("native://127.0.0.1:{port}")])
        .args(["--duration", "1s"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("cannot connect") && err.contains("refused"),
        "{err}"
    );
}

#[test]
fn shard_aware_bench_never_crosses_cores() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), 2, &["--conflict", "lww"]);
    let out = dir.path().join("out");
    let res = Command::new(corekv())
        .arg("bench")
        .args([
            "--target",
            &format!("sharded=native-sharded://{}", server.native),
        ])
        .args(["--workload", "a", "--keys", "1000"])
        .args(["--rate", "2000", "--duration", "1s", "--threads", "1"])
        .args(["--load", "--quiet", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let all = &json["targets"][0]["all"];
    assert_eq!(all["errors"], 0, "{all}");
    assert_eq!(all["count"], 2000, "{all}");
    // Every request (load phase included) went to its key's own shard.
    let status = server.cli(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["totals"]["forwards"], 0, "{status}");
    // 1000 loads and 2000 measured requests, all served by their shard.
    let served: u64 = status["per_shard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["applies"].as_u64().unwrap() + s["gets"].as_u64().unwrap())
        .sum();
    assert_eq!(served, 3000, "{status}");
}
