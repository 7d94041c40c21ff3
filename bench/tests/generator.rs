//! The generator against in-process null servers: rate accuracy,
//! coordinated omission, both protocols, failures.

use std::time::Duration;

use corekv_bench::keys::Distribution;
use corekv_bench::null_server::{NullServer, NullServerOptions, Stall};
use corekv_bench::run::run_target;
use corekv_bench::stats::Stats;
use corekv_bench::target::{Protocol, Target};
use corekv_bench::worker::{Mode, RunSpec};
use corekv_bench::workload::{ycsb, Mix, OpKind, ValueSize, Workload};

fn spec(server: &NullServer, protocol: Protocol, mode: Mode, duration: Duration) -> RunSpec {
    RunSpec {
        target: Target {
            name: "null".into(),
            protocol,
            addr: server.addr(),
        },
        workload: Workload {
            name: "test".into(),
            mix: Mix::parse("get=50,put=50").expect("a valid mix"),
            dist: Distribution::Zipfian { theta: 0.99 },
            key_count: 1000,
            value_size: ValueSize::Range(10, 100),
        },
        mode,
        threads: 1,
        connections: 2,
        pipeline: 64,
        duration,
        requests: None,
        timeout: Duration::from_secs(5),
        seed: 7,
        pin: vec![],
        busy_poll: false,
        interval: Duration::from_millis(500),
        load: false,
        credentials: None,
    }
}

fn server(protocol: Protocol) -> NullServer {
    NullServer::start(NullServerOptions::new(protocol)).expect("start the null server")
}

fn ok(s: &Stats) -> u64 {
    s.all().ok()
}

#[test]
fn open_loop_holds_the_rate_within_two_percent() {
    // Busy polling (one worker, so one core) must keep the same schedule.
    for (protocol, busy_poll) in [
        (Protocol::Native, false),
        (Protocol::Resp, false),
        (Protocol::Native, true),
    ] {
        let srv = server(protocol);
        let rate = 20_000.0;
        let mut sp = spec(&srv, protocol, Mode::Open { rate }, Duration::from_secs(2));
        sp.threads = if busy_poll { 1 } else { 2 };
        sp.busy_poll = busy_poll;
        let mut points = Vec::new();
        let r = run_target(&sp, &mut |p| points.push(p.rate)).unwrap();
        let n = ok(&r.stats);
        assert_eq!(r.stats.errors(), 0, "{:?}", r.stats.error_samples);
        assert_eq!(r.stats.unsent, 0);
        // Exactly rate × duration requests were scheduled and answered…
        assert_eq!(n, 40_000, "{protocol:?} busy_poll {busy_poll}");
        // …and they went out at the rate: every full interval within 2 %.
        let full = &points[..points.len() - 1];
        assert!(full.len() >= 3, "{points:?}");
        for p in full {
            assert!(
                (p - rate).abs() / rate < 0.02,
                "{protocol:?} busy_poll {busy_poll}: {points:?}"
            );
        }
        assert!(r.elapsed < Duration::from_millis(2300), "{:?}", r.elapsed);
    }
}

#[test]
fn a_server_stall_shows_in_the_tail() {
    // 2000 req/s for 3 s; the server stalls 200 ms once after ~1 s.
    let rate = 2000.0;
    let stall = Duration::from_millis(200);
    let srv = NullServer::start(NullServerOptions {
        stall: Some(Stall {
            after_requests: 2000,
            duration: stall,
        }),
        ..NullServerOptions::new(Protocol::Resp)
    })
    .unwrap();
    let mut sp = spec(
        &srv,
        Protocol::Resp,
        Mode::Open { rate },
        Duration::from_secs(3),
    );
    sp.pipeline = 1;
    sp.connections = 4;
    let r = run_target(&sp, &mut |_| {}).unwrap();
    let all = r.stats.all();
    assert_eq!(r.stats.errors(), 0);
    assert_eq!(all.ok(), 6000);
    let max_ms = all.hist.max() as f64 / 1e6;
    assert!(max_ms >= 200.0, "max {max_ms} ms");
    assert!(max_ms < 260.0, "max {max_ms} ms");
    // Requests intended during the stall wait for its end: those intended
    // in its first half see ≥ 100 ms, i.e. rate × stall / 2 = 200 of them.
    let slow = all.hist.count_between(100_000_000, u64::MAX);
    let expected = rate * stall.as_secs_f64() / 2.0;
    assert!(
        (slow as f64 - expected).abs() <= expected * 0.15,
        "{slow} samples ≥ 100 ms, expected ~{expected}"
    );
    let p999_ms = all.hist.value_at_quantile(0.999) as f64 / 1e6;
    assert!(p999_ms > 150.0, "p99.9 {p999_ms} ms");
}

#[test]
fn closed_loop_pipelines_on_both_protocols() {
    for protocol in [Protocol::Native, Protocol::Resp] {
        let srv = server(protocol);
        let mut sp = spec(&srv, protocol, Mode::Closed, Duration::from_millis(500));
        sp.workload.mix = ycsb("f", 0.99).unwrap().0;
        let r = run_target(&sp, &mut |_| {}).unwrap();
        assert_eq!(r.stats.errors(), 0, "{:?}", r.stats.error_samples);
        assert!(ok(&r.stats) > 10_000, "{protocol:?}: {}", ok(&r.stats));
        assert!(r.stats.op(OpKind::Rmw).ok() > 0);
        // Every GET on the null server finds nothing.
        assert_eq!(
            r.stats.op(OpKind::Read).not_found,
            r.stats.op(OpKind::Read).ok()
        );
    }
}

#[test]
fn request_cap_and_load_phase() {
    let srv = server(Protocol::Native);
    let mut sp = spec(
        &srv,
        Protocol::Native,
        Mode::Closed,
        Duration::from_secs(10),
    );
    sp.requests = Some(12_345);
    sp.threads = 2;
    let r = run_target(&sp, &mut |_| {}).unwrap();
    assert_eq!(ok(&r.stats), 12_345);
    let mut load = spec(
        &srv,
        Protocol::Native,
        Mode::Closed,
        Duration::from_secs(3600),
    );
    load.load = true;
    load.threads = 2;
    let before = srv.served();
    let r = run_target(&load, &mut |_| {}).unwrap();
    assert_eq!(r.stats.op(OpKind::Update).ok(), 1000);
    assert!(srv.served() - before >= 1000);
}

#[test]
fn refused_connection_is_a_clear_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = Target::parse(&format!("gone=native://127.0.0.1:{port}")).unwrap();
    let srv = server(Protocol::Native);
    let mut sp = spec(
        &srv,
        Protocol::Native,
        Mode::Closed,
        Duration::from_millis(100),
    );
    sp.target = t;
    let e = run_target(&sp, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("cannot connect to gone"), "{e}");
    assert!(e.contains("refused"), "{e}");
}

#[test]
fn a_server_that_goes_away_is_counted_not_hidden() {
    let srv = server(Protocol::Resp);
    let mut sp = spec(
        &srv,
        Protocol::Resp,
        Mode::Open { rate: 5000.0 },
        Duration::from_secs(2),
    );
    sp.timeout = Duration::from_millis(300);
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        drop(srv);
    });
    let r = run_target(&sp, &mut |_| {}).unwrap();
    h.join().unwrap();
    assert!(ok(&r.stats) > 1000);
    assert!(r.stats.errors() + r.stats.unsent > 0);
    assert!(
        r.stats.error_samples.iter().any(|m| m.contains("closed")),
        "{:?}",
        r.stats.error_samples
    );
}

#[test]
fn a_server_that_stops_answering_cannot_hang_the_run() {
    // Accepts, never answers; holds the sockets for 2 s.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hole = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let mut held = Vec::new();
        let end = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < end {
            if let Ok((s, _)) = listener.accept() {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let srv = server(Protocol::Native);
    let mut sp = spec(
        &srv,
        Protocol::Native,
        Mode::Closed,
        Duration::from_secs(30),
    );
    sp.target.addr = addr;
    sp.timeout = Duration::from_millis(300);
    let t = std::time::Instant::now();
    let r = run_target(&sp, &mut |_| {}).unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(1800),
        "{:?}",
        t.elapsed()
    );
    // Every connection's in-flight requests were given up as timeouts.
    assert_eq!(r.stats.all().timeouts, 2 * 64);
    assert_eq!(r.stats.errors(), 2 * 64);
    assert!(
        r.stats
            .error_samples
            .iter()
            .any(|m| m.contains("no answer")),
        "{:?}",
        r.stats.error_samples
    );
    hole.join().unwrap();
}
