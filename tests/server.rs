//! End-to-end tests of `corekv serve` with real processes on loopback: the
//! CLI, redis-cli, restarts and kill -9, pipelining, bad input, and
//! forwarding between shards.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{redis_cli, Server};
use corekv_net::client::Client;
use corekv_net::native::{ErrorCode, RequestBody, ResponseBody};

fn client(addr: std::net::SocketAddr) -> Client {
    Client::connect(addr, Duration::from_secs(10)).expect("connect")
}

fn value_of(body: ResponseBody) -> Option<Vec<u8>> {
    match body {
        ResponseBody::Value { mut siblings, .. } => {
            assert_eq!(siblings.len(), 1, "unexpected siblings");
            siblings.pop().and_then(|s| s.value)
        }
        ResponseBody::NotFound { .. } => None,
        other => panic!("unexpected response {other:?}"),
    }
}

#[test]
fn cli_put_get_del_and_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), 1, &[]);
    let out = server.cli(&["put", "session:1", "hello world"]);
    assert!(out.status.success(), "{out:?}");
    let out = server.cli(&["get", "session:1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello world\n");
    // A second put replaces (the CLI writes with the context it read).
    assert!(server.cli(&["put", "session:1", "v2"]).status.success());
    let out = server.cli(&["get", "session:1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v2\n");
    assert!(server.cli(&["del", "session:1"]).status.success());
    let out = server.cli(&["get", "session:1"]);
    assert_eq!(out.status.code(), Some(1), "absent key exits 1");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = server.cli(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status is JSON");
    assert_eq!(status["shards"], 1);
    assert_eq!(status["commitlog_sync"], "batch");
    // Errors are clear and non-zero.
    let out = std::process::Command::new(common::corekv())
        .args(["get", "k", "--addr", "127.0.0.1:1"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[test]
fn redis_cli_set_get_del_expire_ttl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), 1, &[]);
    assert_eq!(redis_cli(&server, &["PING"]), "PONG");
    assert_eq!(redis_cli(&server, &["SET", "a", "1"]), "OK");
    assert_eq!(redis_cli(&server, &["GET", "a"]), "1");
    assert_eq!(redis_cli(&server, &["TTL", "a"]), "-1");
    assert_eq!(redis_cli(&server, &["EXPIRE", "a", "100"]), "1");
    let ttl: i64 = redis_cli(&server, &["TTL", "a"]).parse().expect("integer");
    assert!((95..=100).contains(&ttl), "ttl {ttl}");
    assert_eq!(redis_cli(&server, &["SET", "b", "2", "PX", "100"]), "OK");
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(redis_cli(&server, &["GET", "b"]), "");
    assert_eq!(redis_cli(&server, &["TTL", "b"]), "-2");
    assert_eq!(redis_cli(&server, &["SET", "a", "x", "NX"]), "");
    assert_eq!(redis_cli(&server, &["SET", "c", "3", "XX"]), "");
    assert_eq!(redis_cli(&server, &["MSET", "c", "3", "d", "4"]), "OK");
    assert_eq!(redis_cli(&server, &["MGET", "a", "c", "zz"]), "1\n3"); // nil prints as an empty line
    assert_eq!(redis_cli(&server, &["EXISTS", "a", "c", "zz"]), "2");
    assert_eq!(redis_cli(&server, &["DEL", "a", "c", "zz"]), "2");
    assert_eq!(redis_cli(&server, &["GET", "a"]), "");
    assert!(redis_cli(&server, &["NOSUCHCMD"]).contains("unknown command"));
    assert!(redis_cli(&server, &["GET"]).contains("wrong number of arguments"));
}

#[test]
fn data_survives_clean_restart_and_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), 2, &["--memtable-mib", "1"]);
    let mut c = client(server.native);
    let value = vec![b'v'; 2000];
    for i in 0..2000 {
        c.put(format!("k{i}").as_bytes(), &value, 0, b"")
            .expect("put");
    }
    drop(c);
    // SIGTERM: drain, flush, exit 0.
    let status = server.signal_and_wait("-TERM");
    assert!(
        status.success(),
        "SIGTERM exit: {status}; log: {}",
        server.log_text()
    );
    server.restart();
    let mut c = client(server.native);
    for i in (0..2000).step_by(13) {
        let got = c.get(format!("k{i}").as_bytes()).unwrap_or_else(|e| {
            std::thread::sleep(Duration::from_millis(500));
            panic!("get k{i}: {e}; server log:\n{}", server.log_text())
        });
        assert_eq!(value_of(got), Some(value.clone()), "k{i}");
    }
    for i in 2000..2500 {
        c.put(format!("k{i}").as_bytes(), &value, 0, b"")
            .expect("put");
    }
    drop(c);
    // kill -9: every acknowledged write (batch mode) is still there.
    let status = server.signal_and_wait("-KILL");
    assert!(!status.success());
    server.restart();
    let mut c = client(server.native);
    for i in 0..2500 {
        let got = c.get(format!("k{i}").as_bytes()).unwrap_or_else(|e| {
            std::thread::sleep(Duration::from_millis(500));
            panic!("get k{i}: {e}; server log:\n{}", server.log_text())
        });
        assert_eq!(value_of(got), Some(value.clone()), "k{i}");
    }
}

#[test]
fn pipelined_requests_all_get_their_own_responses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), 2, &[]);
    let mut c = client(server.native);
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..300 {
        let body = if i % 2 == 0 {
            RequestBody::Put {
                consistency: Default::default(),
                ttl_ms: 0,
                context: vec![],
                key: format!("p{i}").into_bytes(),
                value: format!("v{i}").into_bytes(),
            }
        } else {
            RequestBody::Ping
        };
        ids.insert(c.send(body).expect("send"));
    }
    for _ in 0..300 {
        let resp = c.recv().expect("recv");
        assert!(ids.remove(&resp.id), "unknown or duplicate id {}", resp.id);
        assert!(
            matches!(resp.body, ResponseBody::Ok { .. } | ResponseBody::Pong),
            "{:?}",
            resp.body
        );
    }
    // RESP pipelining: replies come back in request order.
    let mut s = TcpStream::connect(server.resp).expect("connect resp");
    let mut req = Vec::new();
    for i in 0..50 {
        req.extend_from_slice(format!("SET r{i} {i}\r\nGET r{i}\r\n").as_bytes());
    }
    s.write_all(&req).expect("write");
    let mut expected = String::new();
    for i in 0..50 {
        expected.push_str(&format!("+OK\r\n${}\r\n{i}\r\n", i.to_string().len()));
    }
    let mut got = vec![0u8; expected.len()];
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.read_exact(&mut got).expect("read replies");
    assert_eq!(String::from_utf8_lossy(&got), expected);
}

#[test]
fn garbage_and_oversized_frames_do_not_harm_other_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), 1, &["--max-value-bytes", "4096"]);
    let mut good = client(server.native);
    good.put(b"safe", b"value", 0, b"").expect("put");

    // A frame header announcing 1 GiB: an error, then the server closes.
    let mut big = client(server.native);
    let mut frame = (1u32 << 30).to_le_bytes().to_vec();
    frame.extend_from_slice(&[1, 0x02]);
    frame.extend_from_slice(&7u64.to_le_bytes());
    big.send_raw(&frame).expect("send");
    let resp = big.recv().expect("error response");
    assert!(
        matches!(
            resp.body,
            ResponseBody::Error {
                code: ErrorCode::FrameTooLarge,
                ..
            }
        ),
        "{resp:?}"
    );
    assert!(
        big.recv().is_err(),
        "connection must be closed after an oversized frame"
    );

    // An oversized value inside a valid frame: a typed error, connection stays.
    let mut c = client(server.native);
    match c.put(b"k", &vec![0u8; 5000], 0, b"") {
        Err(corekv_net::client::ClientError::Server { code, .. }) => {
            assert_eq!(code, ErrorCode::ValueTooLarge)
        }
        other => panic!("expected VALUE_TOO_LARGE, got {other:?}"),
    }
    assert!(matches!(c.call(RequestBody::Ping), Ok(ResponseBody::Pong)));

    // Random garbage on both protocols.
    for addr in [server.native, server.resp] {
        let mut s = TcpStream::connect(addr).expect("connect");
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let garbage: Vec<u8> = (0..4096)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = s.write_all(&garbage);
        let _ = s.shutdown(std::net::Shutdown::Write);
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    // A half-closed client that never sends a full frame.
    let mut slow = TcpStream::connect(server.native).expect("connect");
    slow.write_all(&[10, 0]).expect("partial header");

    // The well-behaved client is unaffected.
    assert_eq!(
        value_of(good.get(b"safe").expect("get")),
        Some(b"value".to_vec())
    );
    assert_eq!(redis_cli(&server, &["PING"]), "PONG");
}

#[test]
fn keys_are_forwarded_between_shards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), 2, &[]);
    // Write everything through shard 0's own port (half the keys belong to
    // shard 1), read everything back through shard 1's port.
    let mut c0 = client(server.shard_addr(0));
    for i in 0..400 {
        c0.put(
            format!("f{i}").as_bytes(),
            format!("{i}").as_bytes(),
            0,
            b"",
        )
        .expect("put");
    }
    let mut c1 = client(server.shard_addr(1));
    for i in 0..400 {
        assert_eq!(
            value_of(c1.get(format!("f{i}").as_bytes()).expect("get")),
            Some(format!("{i}").into_bytes())
        );
    }
    let ResponseBody::Status(json) = c0.call(RequestBody::Status).expect("status") else {
        panic!("no status")
    };
    let status: serde_json::Value = serde_json::from_slice(&json).expect("json");
    let puts: Vec<u64> = status["per_shard"]
        .as_array()
        .expect("per shard")
        .iter()
        // The coordinating shard mints each version; the owner applies it.
        .map(|s| s["applies"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        puts.iter().all(|&p| p > 100),
        "both shards own keys: {puts:?}"
    );
    assert!(
        status["totals"]["forwards"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );
}

#[test]
fn refuses_a_different_shard_count_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = Server::start(&data, 2, &[]);
    assert!(server.signal_and_wait("-TERM").success());
    let out = std::process::Command::new(common::corekv())
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--shards",
            "1",
            "--native-addr",
            "127.0.0.1:0",
            "--resp-addr",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("created with 2 shards") && err.contains("--shards 2"),
        "{err}"
    );
}

#[test]
fn async_client_keeps_many_requests_in_flight_on_one_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), 2, &[]);
    let addr = server.native;
    let checked = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let c = std::rc::Rc::new(
                corekv_net::async_client::AsyncClient::connect(addr, 512)
                    .await
                    .expect("connect"),
            );
            let mut tasks = Vec::new();
            for i in 0..2000u32 {
                let c = c.clone();
                tasks.push(glommio::spawn_local(async move {
                    let key = format!("a{i}").into_bytes();
                    let put = RequestBody::Put {
                        consistency: Default::default(),
                        ttl_ms: 0,
                        context: vec![],
                        key: key.clone(),
                        value: i.to_le_bytes().to_vec(),
                    };
                    c.call(put).await.expect("put");
                    let got = c
                        .call(RequestBody::Get {
                            consistency: Default::default(),
                            key,
                        })
                        .await
                        .expect("get");
                    assert_eq!(value_of(got), Some(i.to_le_bytes().to_vec()));
                }));
            }
            let n = tasks.len();
            for t in tasks {
                t.await;
            }
            n
        })
        .expect("executor")
        .join()
        .expect("client thread");
    assert_eq!(checked, 2000);
}

#[test]
fn config_file_limits_idle_timeout_connections_and_sigint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("corekv.toml");
    std::fs::write(
        &config,
        "idle_timeout_s = 1\nmax_connections_per_shard = 3\ncommitlog_sync = \"periodic\"\n",
    )
    .expect("write config");
    let config_arg = config.to_string_lossy().into_owned();
    let mut server = Server::start(&dir.path().join("data"), 1, &["--config", &config_arg]);

    // The file's values are in force. The readiness probes' connections
    // count against the limit of 3 until the shard has read their EOF, so
    // the first connection may still be refused: retry it, bounded.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut c, json) = loop {
        let mut c = client(server.native);
        match c.call(RequestBody::Status) {
            Ok(ResponseBody::Status(json)) => break (c, json),
            other => {
                assert!(Instant::now() < deadline, "no status: {other:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let status: serde_json::Value = serde_json::from_slice(&json).expect("json");
    assert!(
        status["commitlog_sync"]
            .as_str()
            .unwrap_or("")
            .starts_with("periodic"),
        "{status}"
    );

    // An idle connection is closed after idle_timeout_s.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        c.call(RequestBody::Ping).is_err(),
        "idle connection should have been closed"
    );

    // Connections beyond the per-shard limit are closed at once; the first
    // three keep working.
    let mut kept: Vec<Client> = (0..3).map(|_| client(server.native)).collect();
    for k in &mut kept {
        assert!(matches!(k.call(RequestBody::Ping), Ok(ResponseBody::Pong)));
    }
    let mut extra = client(server.native);
    assert!(
        extra.call(RequestBody::Ping).is_err(),
        "a 4th connection must be refused"
    );
    drop(kept);

    // SIGINT stops the node cleanly, like SIGTERM.
    let status = server.signal_and_wait("-INT");
    assert!(
        status.success(),
        "SIGINT exit: {status}; log: {}",
        server.log_text()
    );
}

#[test]
fn a_second_node_on_the_same_ports_or_data_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), 1, &[]);
    let run = |data: &std::path::Path, native: String, resp: String| {
        std::process::Command::new(common::corekv())
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .args([
                "--shards",
                "1",
                "--native-addr",
                &native,
                "--resp-addr",
                &resp,
            ])
            .output()
            .expect("run")
    };
    // Same ports, other data: SO_REUSEPORT must not let it share our traffic.
    let out = run(
        &dir.path().join("other"),
        server.native.to_string(),
        server.resp.to_string(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is taken"), "{err}");
    // Same data, other ports: the data directory lock refuses it.
    let base = common::free_ports(4);
    let out = run(
        &dir.path().join("data"),
        format!("127.0.0.1:{base}"),
        format!("127.0.0.1:{}", base + 3),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another corekv process"), "{err}");
    // The first node is unaffected.
    assert_eq!(redis_cli(&server, &["PING"]), "PONG");
}

#[test]
fn admin_endpoint_serves_metrics_health_and_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), 2, &[]);
    // Ready once every shard has reported (within a second of start).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while common::http_get(server.admin, "/health").0 != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let applies = |text: &str| -> f64 {
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("Prometheus text");
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == "corekv_engine_operations_total")
            .filter(|s| s.labels.get("op") == Some("apply"))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    let (code, before) = common::http_get(server.admin, "/metrics");
    assert_eq!(code, 200);
    assert!(before.contains("corekv_ready 1"), "{before}");
    let mut c = client(server.native);
    for i in 0..50 {
        c.put(format!("m{i}").as_bytes(), b"v", 0, b"")
            .expect("put");
    }
    // Shards report once a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, now) = common::http_get(server.admin, "/metrics");
        if applies(&now) >= applies(&before) + 50.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "counters never moved: {now}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Every put was timed, on whichever shard took it.
    let (_, text) = common::http_get(server.admin, "/metrics");
    let puts_timed: u64 = text
        .lines()
        .filter(|l| {
            l.starts_with("corekv_request_duration_seconds_count{") && l.contains("op=\"put\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(puts_timed, 50, "{text}");
    let (code, status) = common::http_get(server.admin, "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).expect("JSON");
    assert_eq!(status["shards"].as_array().map(Vec::len), Some(2));
    assert_eq!(common::http_get(server.admin, "/nope").0, 404);
}

#[test]
fn periodic_mode_keeps_acknowledged_writes_across_kill_9() {
    // Periodic mode acknowledges once the kernel has the write (page
    // cache): a crash of the process, unlike a power loss, loses nothing.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(
        &dir.path().join("data"),
        1,
        &["--commitlog-sync", "periodic", "--memtable-mib", "1"],
    );
    let mut c = client(server.native);
    let value = vec![b'p'; 1500];
    for round in 0..3 {
        for i in 0..1000 {
            c.put(format!("p{round}-{i}").as_bytes(), &value, 0, b"")
                .expect("put");
        }
        let status = server.signal_and_wait("-KILL");
        assert!(!status.success());
        server.restart();
        c = client(server.native);
        for r in 0..=round {
            for i in 0..1000 {
                let got = c.get(format!("p{r}-{i}").as_bytes()).expect("get");
                assert_eq!(
                    value_of(got),
                    Some(value.clone()),
                    "p{r}-{i} after kill {round}"
                );
            }
        }
    }
}

/// The value of `field` in the `/proc` status of each of the server's
/// `corekv-shard` threads (the executors and their blocking threads).
fn shard_thread_field(server: &Server, field: &str) -> Vec<String> {
    let pid = server.child.as_ref().expect("running").id();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("task list");
    tasks
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            if !comm.starts_with("corekv-shard") {
                return None;
            }
            let status = std::fs::read_to_string(dir.join("status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .map(|v| v.trim().to_string())
        })
        .collect()
}

/// Voluntary context switches of the server's shard threads so far: each
/// is one sleep of a shard, ended by one wake-up.
fn shard_wakeups(server: &Server) -> u64 {
    shard_thread_field(server, "voluntary_ctxt_switches:")
        .iter()
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

#[test]
fn idle_connections_and_a_periodic_log_do_not_keep_waking_the_shard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        &dir.path().join("data"),
        1,
        &["--commitlog-sync", "periodic"],
    );
    // Open connections that then sit idle, after one write to dirty the log.
    let mut clients: Vec<Client> = (0..20).map(|_| client(server.native)).collect();
    assert!(matches!(
        clients[0].call(RequestBody::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ttl_ms: 0,
            context: Vec::new(),
            consistency: Default::default(),
        }),
        Ok(ResponseBody::Ok { .. })
    ));
    std::thread::sleep(Duration::from_millis(300));
    let window = Duration::from_secs(2);
    let before = shard_wakeups(&server);
    std::thread::sleep(window);
    let per_s = (shard_wakeups(&server) - before) as f64 / window.as_secs_f64();
    // What is left are the shard's housekeeping timers (tens a second).
    // A watch that polled each idle connection every 50 ms, or a sync loop
    // that woke every 10 ms with nothing to sync, would each add hundreds.
    assert!(
        per_s < 150.0,
        "an idle shard woke {per_s:.0} times a second with 20 idle connections"
    );
    for c in &mut clients {
        assert!(matches!(c.call(RequestBody::Ping), Ok(ResponseBody::Pong)));
    }
}

/// Tests that need a second CPU: ignored unless asked for, and failing,
/// not passing, when run where they cannot test ([`common::require`]).
mod needs_host {
    use super::*;
    use common::require;

    /// With the shards pinned to some CPUs and others left over, each shard's
    /// blocking thread (periodic fdatasyncs and their writeback, unlinks,
    /// manifest writes) runs on the spare ones, off the shard's CPU; writes
    /// still become durable and survive a kill -9.
    #[test]
    #[ignore = "needs 2+ CPUs; CI=true ./test.sh runs it"]
    fn blocking_work_runs_on_the_cpus_the_shards_leave_spare() {
        let online = std::thread::available_parallelism().map_or(1, |n| n.get());
        require(online >= 2, "a second CPU for the shards to leave spare");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Server::start(
            &dir.path().join("data"),
            1,
            &["--cpus", "0", "--commitlog-sync", "periodic"],
        );
        let mut c = client(server.native);
        for i in 0..200 {
            c.put(format!("b{i}").as_bytes(), b"v", 0, b"")
                .expect("put");
        }
        let cpus = shard_thread_field(&server, "Cpus_allowed_list:");
        assert!(
            cpus.iter().any(|c| c == "0"),
            "no shard executor pinned to CPU 0: {cpus:?}"
        );
        let spare: Vec<&String> = cpus.iter().filter(|c| *c != "0").collect();
        assert!(!spare.is_empty(), "no blocking thread off CPU 0: {cpus:?}");
        for list in &spare {
            let allowed = corekv_tuning::host::parse::cpu_list(list).expect("CPU list");
            assert!(
                !allowed.contains(&0),
                "a blocking thread may run on the shard's CPU 0: {list}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(!server.signal_and_wait("-KILL").success());
        server.restart();
        let mut c = client(server.native);
        for i in (0..200).step_by(13) {
            assert_eq!(
                value_of(c.get(format!("b{i}").as_bytes()).expect("get")),
                Some(b"v".to_vec()),
                "b{i} after kill -9"
            );
        }
    }
}
