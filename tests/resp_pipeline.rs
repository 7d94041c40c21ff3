//! A RESP pipeline of writes to one key (issue 23): SETs of the same key
//! no longer wait for each other's commit-log sync, so this checks what
//! a Redis user relies on instead: replies in order, a GET in the
//! pipeline sees the SET before it, the last SET wins, and after kill -9
//! the replayed log still gives the last SET (every SET was acknowledged
//! after its sync, in `batch` mode, the default).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::cluster::status;
use common::{redis_cli, Server};

fn command(out: &mut Vec<u8>, args: &[&str]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
}

/// Reads until `expected` bytes arrived (bounded by the read timeout).
fn read_exactly(stream: &mut TcpStream, expected: usize) -> String {
    let mut got = Vec::with_capacity(expected);
    let mut chunk = [0u8; 4096];
    while got.len() < expected {
        let n = stream.read(&mut chunk).expect("read replies");
        assert!(n > 0, "connection closed after {} bytes", got.len());
        got.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(got).expect("utf-8 replies")
}

#[test]
fn pipelined_sets_of_one_key_answer_in_order_and_the_last_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), 1, &["--commitlog-sync", "batch"]);
    let mut stream = TcpStream::connect(server.resp).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut pipeline = Vec::new();
    let mut expected = String::new();
    // 64 SETs of one key, then a GET: it must see the 64th.
    for i in 0..64 {
        command(&mut pipeline, &["SET", "k", &format!("v{i:02}")]);
        expected.push_str("+OK\r\n");
    }
    command(&mut pipeline, &["GET", "k"]);
    expected.push_str("$3\r\nv63\r\n");
    // SET / GET alternating: each GET sees the SET just before it.
    for i in 0..16 {
        let v = format!("w{i:02}");
        command(&mut pipeline, &["SET", "k", &v]);
        command(&mut pipeline, &["GET", "k"]);
        expected.push_str(&format!("+OK\r\n$3\r\n{v}\r\n"));
    }
    // Interleaved keys, each overwritten several times.
    for i in 0..32 {
        command(
            &mut pipeline,
            &["SET", &format!("j{}", i % 4), &format!("x{i:02}")],
        );
        expected.push_str("+OK\r\n");
    }
    command(&mut pipeline, &["MGET", "j0", "j1", "j2", "j3"]);
    expected.push_str("*4\r\n$3\r\nx28\r\n$3\r\nx29\r\n$3\r\nx30\r\n$3\r\nx31\r\n");
    // A conditional SET reads the key: it must see the SETs before it.
    command(&mut pipeline, &["SET", "k", "nx", "NX"]);
    expected.push_str("$-1\r\n");
    command(&mut pipeline, &["SET", "k", "last"]);
    expected.push_str("+OK\r\n");
    let log = |s: &serde_json::Value| {
        (
            s["commitlog_records"].as_u64().expect("records"),
            s["commitlog_syncs"].as_u64().expect("syncs"),
        )
    };
    let (records_before, syncs_before) = log(&status(&server));
    stream.write_all(&pipeline).expect("send pipeline");
    let got = read_exactly(&mut stream, expected.len());
    assert_eq!(got, expected);
    // The 64 SETs that opened the pipeline arrived together and shared
    // fdatasyncs instead of taking one each (the GETs between the later
    // SETs make those wait their turn).
    let (records, syncs) = log(&status(&server));
    let (records, syncs) = (records - records_before, syncs - syncs_before);
    assert!(
        records >= 113 && syncs * 4 <= records,
        "{records} writes took {syncs} fdatasyncs"
    );
    let text = String::from_utf8_lossy(&server.cli(&["status"]).stdout).into_owned();
    assert!(text.contains("writes per fdatasync"), "{text}");
    drop(stream);
    // Every SET was acknowledged after its sync: kill -9, replay, and the
    // last SET of each key is still the one a reader sees.
    server.signal_and_wait("-KILL");
    server.restart();
    assert_eq!(redis_cli(&server, &["GET", "k"]), "last");
    for i in 0..4 {
        assert_eq!(
            redis_cli(&server, &["GET", &format!("j{i}")]),
            format!("x{}", 28 + i)
        );
    }
}
