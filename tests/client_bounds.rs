//! Clients cannot make a node hold unbounded memory or connections
//! (issue 20, "clients bounded"), with a real `corekv serve` on loopback:
//! pipelined reads of a 1 MiB value that are never read cost the server at
//! most about twice `output_buffer_mib` (native and RESP), a RESP command
//! past `query_buffer_mib` is refused, a request trickling in slower than
//! `request_read_timeout_ms` is cut, a slow admin client does not hold up
//! `/health`, and a full client-connection limit leaves internode
//! connections alone. Meanwhile other clients are served, and every cut is
//! counted.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{http_get, metric, wait_metric, Server};
use corekv_net::client::Client;
use corekv_net::native::{self, Consistency, Request, RequestBody, ResponseBody};
use corekv_net::peer::{self, PeerRequest, PeerResponse};
use corekv_net::Limits;

const MIB: usize = 1 << 20;

fn start(settings: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("corekv.toml");
    std::fs::write(&config, settings).expect("config");
    let config = config.to_string_lossy().into_owned();
    let server = Server::start(&dir.path().join("data"), 1, &["--config", &config]);
    (dir, server)
}

fn rss_bytes(server: &Server) -> usize {
    let pid = server.child.as_ref().expect("running").id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

fn put_big(server: &Server) {
    let mut c = Client::connect(server.native, Duration::from_secs(10)).expect("connect");
    let answer = c
        .call(RequestBody::Put {
            consistency: Consistency::Default,
            ttl_ms: 0,
            context: Vec::new(),
            key: b"big".to_vec(),
            value: vec![7u8; MIB],
        })
        .expect("put big");
    assert!(matches!(answer, ResponseBody::Ok { .. }), "{answer:?}");
}

/// Another client is served: a put and a get of a small key.
fn still_serves(server: &Server) {
    let mut c = Client::connect(server.native, Duration::from_secs(10)).expect("connect");
    c.call(RequestBody::Put {
        consistency: Consistency::Default,
        ttl_ms: 0,
        context: Vec::new(),
        key: b"small".to_vec(),
        value: b"v".to_vec(),
    })
    .expect("put while a client stalls");
    let got = c
        .call(RequestBody::Get {
            consistency: Consistency::Default,
            key: b"small".to_vec(),
        })
        .expect("get while a client stalls");
    assert!(matches!(got, ResponseBody::Value { .. }), "{got:?}");
}

/// Waits up to `wait` for the server to close `s` (EOF or reset).
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + wait;
    let mut b = [0u8; 65536];
    while Instant::now() < deadline {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn unread_answers_stay_within_the_output_bound() {
    let (_dir, server) = start("output_buffer_mib = 4\n");
    put_big(&server);
    still_serves(&server);
    let before = rss_bytes(&server);

    // Native: 1 000 pipelined GETs of the 1 MiB value, answers never read.
    let mut native_conn = TcpStream::connect(server.native).expect("connect");
    let mut frames = Vec::new();
    for id in 0..1000 {
        native::encode_request(
            &Request {
                id,
                body: RequestBody::Get {
                    consistency: Consistency::Default,
                    key: b"big".to_vec(),
                },
            },
            &mut frames,
        );
    }
    native_conn.write_all(&frames).expect("send");
    // RESP: the same, never read.
    let mut resp_conn = TcpStream::connect(server.resp).expect("connect");
    resp_conn
        .write_all(&b"GET big\r\n".repeat(1000))
        .expect("send");
    std::thread::sleep(Duration::from_secs(2));
    let grown = rss_bytes(&server).saturating_sub(before);
    // Unbounded, each would hold 1 000 MiB. Bounded: twice 4 MiB each,
    // plus socket buffers.
    assert!(
        grown < 120 * MIB,
        "RSS grew by {} MiB with two stalled readers",
        grown / MIB
    );
    still_serves(&server);
    drop(native_conn);
    drop(resp_conn);
    still_serves(&server);
}

#[test]
fn a_resp_command_past_the_query_buffer_is_refused() {
    let (_dir, server) = start("query_buffer_mib = 4\n");
    let mut s = TcpStream::connect(server.resp).expect("connect");
    // An MSET of 1 000 pairs of 1 MiB values, sent until refused.
    s.write_all(b"*2001\r\n$4\r\nMSET\r\n").expect("send");
    let pair = {
        let mut p = b"$1\r\nk\r\n$1048576\r\n".to_vec();
        p.extend_from_slice(&vec![b'x'; MIB]);
        p.extend_from_slice(b"\r\n");
        p
    };
    for _ in 0..8 {
        if s.write_all(&pair).is_err() {
            break;
        }
    }
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("-ERR") && answer.contains("query buffer"),
        "{answer:?}"
    );
    wait_metric(&server, "corekv_connections_cut_total", 1.0);
    still_serves(&server);
}

#[test]
fn a_request_that_trickles_in_is_cut() {
    let (_dir, server) = start("request_read_timeout_ms = 1000\n");
    let started = Instant::now();
    let mut native_conn = TcpStream::connect(server.native).expect("connect");
    let mut resp_conn = TcpStream::connect(server.resp).expect("connect");
    let mut frame = Vec::new();
    native::encode_request(
        &Request {
            id: 1,
            body: RequestBody::Get {
                consistency: Consistency::Default,
                key: b"a-key-that-arrives-slowly".to_vec(),
            },
        },
        &mut frame,
    );
    let resp_cmd = b"*2\r\n$3\r\nGET\r\n$25\r\na-key-that-arrives-slowly\r\n";
    // One byte every 200 ms: each byte resets an idle timeout, none
    // finishes the request.
    let mut cut = [false, false];
    for i in 0..(frame.len() - 1).min(resp_cmd.len() - 1) {
        if !cut[0] && native_conn.write_all(&frame[i..i + 1]).is_err() {
            cut[0] = true;
        }
        if !cut[1] && resp_conn.write_all(&resp_cmd[i..i + 1]).is_err() {
            cut[1] = true;
        }
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        cut[0] || closed_within(&mut native_conn, Duration::from_secs(2)),
        "native connection not cut"
    );
    assert!(
        cut[1] || closed_within(&mut resp_conn, Duration::from_secs(2)),
        "RESP connection not cut"
    );
    assert!(started.elapsed() < Duration::from_secs(6));
    wait_metric(&server, "corekv_connections_cut_total", 2.0);
    still_serves(&server);
}

#[test]
fn a_slow_admin_client_does_not_hold_up_health() {
    let (_dir, server) = start("");
    // Connects and sends a byte now and then, never a whole request.
    let mut slow = TcpStream::connect(server.admin).expect("connect");
    slow.write_all(b"GE").expect("send");
    let t = Instant::now();
    let (code, _) = http_get(server.admin, "/health");
    assert_eq!(code, 200);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "/health took {:?} behind a slow client",
        t.elapsed()
    );
    // The slow one is dropped by the whole-request deadline.
    assert!(closed_within(&mut slow, Duration::from_secs(5)));
}

#[test]
fn clients_at_their_limit_leave_internode_connections_alone() {
    let (_dir, server) = start("max_connections_per_shard = 3\n");
    // A connection the server answered PING on (so it has accepted it).
    let answered = || -> Option<TcpStream> {
        let mut s = TcpStream::connect(server.native).ok()?;
        let mut f = Vec::new();
        native::encode_request(
            &Request {
                id: 1,
                body: RequestBody::Ping,
            },
            &mut f,
        );
        s.write_all(&f).ok()?;
        let mut b = [0u8; 64];
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        (s.read(&mut b).ok()? > 0).then_some(s)
    };
    // The readiness probes of `start` count against the limit until the
    // shard has seen them close: retry (bounded) while one still does.
    let held: Vec<TcpStream> = (0..3)
        .map(|i| {
            (0..50)
                .find_map(|_| {
                    answered().or_else(|| {
                        std::thread::sleep(Duration::from_millis(100));
                        None
                    })
                })
                .unwrap_or_else(|| panic!("client connection {i} of 3 was refused"))
        })
        .collect();
    let refused_before = metric(&server, "corekv_connections_refused_total");
    let mut fourth = TcpStream::connect(server.native).expect("connect");
    assert!(
        closed_within(&mut fourth, Duration::from_secs(5)),
        "a fourth client connection was kept"
    );
    wait_metric(
        &server,
        "corekv_connections_refused_total",
        refused_before + 1.0,
    );
    // Internode connections have their own limit: HELLO is answered.
    let mut p = TcpStream::connect(server.peer).expect("connect peer");
    let mut f = Vec::new();
    peer::encode_request(
        peer::VERSION_MIN,
        1,
        &PeerRequest::Hello {
            version_min: peer::VERSION_MIN,
            version_max: peer::VERSION_MAX,
            node_id: 9,
            cluster: "corekv".into(),
            nonce: None,
        },
        &mut f,
    );
    p.write_all(&f).expect("hello");
    p.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let answer = loop {
        if let Some((_, a, _)) =
            peer::decode_response(&buf, &Limits::default()).expect("well-formed")
        {
            break a;
        }
        let n = p.read(&mut chunk).expect("hello answer");
        assert!(n > 0, "internode connection closed");
        buf.extend_from_slice(&chunk[..n]);
    };
    assert!(matches!(answer, PeerResponse::Hello { .. }), "{answer:?}");
    drop(held);
}
