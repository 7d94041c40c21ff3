//! A panicking shard stops its node (issue 19): a real `corekv serve`
//! with the test hook `COREKV_TEST_PANIC_SHARD` exits non-zero within a
//! bounded time, naming the shard and the panic, instead of living on as
//! a zombie that gossips "up" with a slice of its keys unserved.

mod common;

use std::time::{Duration, Instant};

use common::{http_get, Server};

#[test]
fn a_shard_panic_stops_the_node_with_a_non_zero_exit_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_with_env(
        &dir.path().join("data"),
        2,
        &[],
        &[
            ("COREKV_TEST_PANIC_SHARD", "1"),
            ("COREKV_TEST_PANIC_AFTER_MS", "2000"),
        ],
    );
    // Before the panic the node is healthy.
    let (code, body) = http_get(server.admin, "/health");
    assert_eq!(code, 200, "{body}");
    let started = Instant::now();
    let mut child = server.child.take().expect("running");
    let mut unhealthy_seen = Vec::new();
    // Bounded: the panic comes after 2 s; the others drain and flush fast
    // on an idle node; 30 s is the node's own shutdown bound.
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the node still runs 40 s after its shard should have panicked: {}",
            server.log_text()
        );
        // While it stops, /health must never say 200 again after the panic.
        if started.elapsed() > Duration::from_millis(2500) {
            if let Ok(s) =
                std::net::TcpStream::connect_timeout(&server.admin, Duration::from_millis(100))
            {
                drop(s);
                if let Ok((code, body)) =
                    std::panic::catch_unwind(|| http_get(server.admin, "/health"))
                {
                    unhealthy_seen.push((code, body));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "exit status {status}");
    assert_eq!(
        status.code(),
        Some(1),
        "an error exit, not a signal: {status}"
    );
    let log = server.log_text();
    assert!(
        log.contains("shard 1 panicked") && log.contains("panics on purpose"),
        "{log}"
    );
    // Any /health answer after the panic is not 200 (and, if it names a
    // shard, it names shard 1).
    for (code, body) in &unhealthy_seen {
        if code == &200 {
            panic!("/health said 200 after the panic: {body}");
        }
    }
    eprintln!(
        "{} /health answers while stopping: {:?}",
        unhealthy_seen.len(),
        unhealthy_seen.first()
    );
}
