//! Benchmark of the benchmark: one generator core against an in-process
//! null server pinned to the other core. The generator must not be the
//! bottleneck: ≥ 1 M pipelined and ≥ 60 k unpipelined requests/s.
//! When `redis-benchmark` is installed, it runs against the same null
//! server for comparison.
//!
//! Run: `cargo bench -p corekv-bench --bench null_server`
//! (set `NULL_BENCH_SECS` to change the 5 s per measurement).

use std::process::Command;
use std::time::Duration;

use corekv_bench::keys::Distribution;
use corekv_bench::null_server::{NullServer, NullServerOptions};
use corekv_bench::report::fmt_us;
use corekv_bench::run::{quantile_us, run_target};
use corekv_bench::target::{Protocol, Target};
use corekv_bench::worker::{Mode, RunSpec};
use corekv_bench::workload::{Mix, ValueSize, Workload};

fn spec(
    addr: std::net::SocketAddr,
    protocol: Protocol,
    conns: usize,
    depth: usize,
    mode: Mode,
    secs: f64,
) -> RunSpec {
    RunSpec {
        target: Target {
            name: "null".into(),
            protocol,
            addr,
        },
        workload: Workload {
            name: "get=50,put=50".into(),
            mix: Mix::parse("get=50,put=50").expect("mix"),
            dist: Distribution::Uniform,
            key_count: 100_000,
            value_size: ValueSize::Fixed(3),
        },
        mode,
        threads: 1,
        connections: conns,
        pipeline: depth,
        duration: Duration::from_secs_f64(secs),
        requests: None,
        timeout: Duration::from_secs(5),
        seed: 1,
        pin: vec![1],
        busy_poll: false,
        interval: Duration::from_secs(1),
        load: false,
        credentials: None,
    }
}

fn redis_benchmark(port: u16, clients: usize, pipeline: usize, n: u64) -> Option<String> {
    let out = Command::new("taskset")
        .args(["-c", "1", "redis-benchmark", "-h", "127.0.0.1"])
        .args(["-p", &port.to_string()])
        .args(["-c", &clients.to_string(), "-P", &pipeline.to_string()])
        .args(["-n", &n.to_string(), "-t", "set,get", "-d", "3", "-q"])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).replace('\r', "\n"))
}

fn main() {
    let secs: f64 = std::env::var("NULL_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    println!("generator pinned to CPU 1, null server to CPU 0, {secs} s each, 50 % GET / 50 % SET, 3-byte values");
    println!(
        "{:<8} {:<28} {:>12} {:>9} {:>9}",
        "proto", "shape", "req/s", "p50", "p99"
    );
    for protocol in [Protocol::Native, Protocol::Resp] {
        let srv = NullServer::start(NullServerOptions {
            cpu: Some(0),
            ..NullServerOptions::new(protocol)
        })
        .expect("null server");
        let shapes: [(&str, usize, usize, Mode); 4] = [
            ("closed, 1 conn × 256 deep", 1, 256, Mode::Closed),
            ("closed, 4 conns × 64 deep", 4, 64, Mode::Closed),
            ("closed, 50 conns × 1", 50, 1, Mode::Closed),
            (
                "open 50 k/s, 50 conns × 1",
                50,
                1,
                Mode::Open { rate: 50_000.0 },
            ),
        ];
        for (name, conns, depth, mode) in shapes {
            let sp = spec(srv.addr(), protocol, conns, depth, mode, secs);
            let r = run_target(&sp, &mut |_| {}).expect("run");
            let all = r.stats.all();
            println!(
                "{:<8} {:<28} {:>12.0} {:>9} {:>9}   errors {}",
                protocol.scheme(),
                name,
                all.ok() as f64 / r.elapsed.as_secs_f64(),
                fmt_us(quantile_us(&all.hist, 0.5)),
                fmt_us(quantile_us(&all.hist, 0.99)),
                all.errors
            );
        }
        if protocol == Protocol::Resp {
            let port = srv.addr().port();
            for (clients, pipe, n) in [(50, 1, 1_000_000u64), (50, 16, 10_000_000)] {
                match redis_benchmark(port, clients, pipe, n) {
                    Some(out) => {
                        for line in out.lines().filter(|l| l.contains("requests per second")) {
                            println!("redis-benchmark -c {clients} -P {pipe}: {}", line.trim());
                        }
                    }
                    None => println!("(redis-benchmark not installed: skipped)"),
                }
            }
        }
    }
}
