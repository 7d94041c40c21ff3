//! TLS on every port (issue 20): redis-cli `--tls` with AUTH works and
//! plain TCP gets nothing; native TLS clients work; client certificates
//! are checked against `tls_ca_file`; a handshake that never comes times
//! out and is counted; internode mutual TLS carries W=all / R=all; admin
//! HTTP answers curl over TLS. Certificates are made with the openssl CLI
//! (test.sh installs it) in a temporary directory.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_ports, Server};
use corekv_net::client::Client;
use corekv_net::native::{Consistency, RequestBody, ResponseBody};

/// A CA and a node certificate it signed (SAN 127.0.0.1, serverAuth and
/// clientAuth), plus a rogue CA's certificate for the same name.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    fn cert(&self) -> PathBuf {
        self.dir.join("node.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("node.key")
    }
    fn rogue_cert(&self) -> PathBuf {
        self.dir.join("rogue.pem")
    }
    fn rogue_key(&self) -> PathBuf {
        self.dir.join("rogue.key")
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (Debian package openssl) must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_pki(dir: &Path) -> Pki {
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n",
    )
    .expect("ext");
    for (ca, leaf) in [("ca", "node"), ("rogueca", "rogue")] {
        let ca_key = format!("{ca}.key");
        let ca_pem = format!("{ca}.pem");
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &ca_key,
                "-out",
                &ca_pem,
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca}"),
            ],
        );
        let key = format!("{leaf}.key");
        let csr = format!("{leaf}.csr");
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={leaf}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &format!("{leaf}.pem"),
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
    }
    Pki {
        dir: dir.to_path_buf(),
    }
}

fn tls_settings(pki: &Pki) -> String {
    format!(
        "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
        pki.cert(),
        pki.key()
    )
}

fn server_with(dir: &Path, config: &str) -> Server {
    let path = dir.join("node.toml");
    std::fs::write(&path, config).expect("write config");
    Server::start(
        &dir.join("data"),
        1,
        &["--config", path.to_str().expect("utf-8 path")],
    )
}

fn redis_cli_tls(server: &Server, pki: &Pki, extra: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &server.resp.port().to_string()])
        .arg("--tls")
        .arg("--cacert")
        .arg(pki.ca())
        .args(extra)
        .output()
        .expect("redis-cli (Debian package redis-tools)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// GET over HTTPS with curl: (status code, body).
fn curl(pki: &Pki, addr: SocketAddr, path: &str, client_cert: bool) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "--cacert"])
        .arg(pki.ca())
        .args(["-w", "\n%{http_code}"]);
    if client_cert {
        cmd.arg("--cert")
            .arg(pki.cert())
            .arg("--key")
            .arg(pki.key());
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{}{path}", addr.port()))
        .output()
        .expect("curl (Debian package curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn https_metric(pki: &Pki, node: &Server, name: &str, client_cert: bool) -> f64 {
    let (code, text) = curl(pki, node.admin, "/metrics", client_cert);
    assert_eq!(code, 200, "{text}");
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

fn wait_https_metric(pki: &Pki, node: &Server, name: &str, at_least: f64, cert: bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = https_metric(pki, node, name, cert);
        if got >= at_least {
            return got;
        }
        assert!(Instant::now() < deadline, "{name} stayed at {got}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tls_client(
    addr: SocketAddr,
    pki: &Pki,
    identity: Option<(&Path, &Path)>,
) -> Result<Client, String> {
    let config = corekv_net::tls::client_config(&pki.ca(), identity).map_err(|e| e.to_string())?;
    Client::connect_tls(&addr.to_string(), Duration::from_secs(5), config)
        .map_err(|e| e.to_string())
}

/// Plain bytes to a TLS port get no answer: the connection closes.
fn plain_gets_no_answer(addr: SocketAddr, request: &[u8]) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = s.write_all(request);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"+PONG") && !answer.starts_with(b"-"),
        "a plain client was answered: {answer:?}"
    );
}

#[test]
fn redis_cli_tls_with_auth_works_and_plain_tcp_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path());
    let server = server_with(
        dir.path(),
        &format!(
            "{}requirepass = \"tls sesame 42\"\ntls_handshake_timeout_ms = 500\n",
            tls_settings(&pki)
        ),
    );
    let auth = ["-a", "tls sesame 42", "--no-auth-warning"];
    let mut args = auth.to_vec();
    args.extend(["SET", "k", "v"]);
    assert_eq!(redis_cli_tls(&server, &pki, &args), "OK");
    let mut args = auth.to_vec();
    args.extend(["GET", "k"]);
    assert_eq!(redis_cli_tls(&server, &pki, &args), "v");
    // Without AUTH: refused as over plain TCP.
    let out = redis_cli_tls(&server, &pki, &["GET", "k"]);
    assert!(out.contains("NOAUTH"), "{out}");
    // Plain RESP and plain native get nothing back.
    plain_gets_no_answer(server.resp, b"PING\r\n");
    let out = common::redis_cli(&server, &["PING"]);
    assert!(!out.contains("PONG"), "{out}");
    // A native TLS client (and the CLI with --tls-ca).
    let mut c = tls_client(server.native, &pki, None).expect("native TLS");
    c.auth(b"default", b"tls sesame 42").expect("auth");
    let got = c
        .call(RequestBody::Get {
            consistency: Consistency::Default,
            key: b"k".to_vec(),
        })
        .expect("get");
    assert!(matches!(got, ResponseBody::Value { .. }), "{got:?}");
    let out = Command::new(common::corekv())
        .args(["get", "k", "--addr", &server.native.to_string(), "--tls-ca"])
        .arg(pki.ca())
        .env("COREKV_PASSWORD", "tls sesame 42")
        .output()
        .expect("cli");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains('v'),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A connection that never says hello is closed at the deadline and
    // counted.
    let started = Instant::now();
    let mut idle = TcpStream::connect(server.resp).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    let n = idle.read(&mut byte).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    wait_https_metric(
        &pki,
        &server,
        "corekv_tls_handshake_failures_total",
        2.0,
        false,
    );
    // Admin HTTP over TLS.
    let (code, body) = curl(&pki, server.admin, "/health", false);
    assert_eq!((code, body.trim()), (200, "ready"));
}

#[test]
fn client_certificates_are_checked_against_the_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path());
    let server = server_with(
        dir.path(),
        &format!("{}tls_ca_file = {:?}\n", tls_settings(&pki), pki.ca()),
    );
    let (cert, key, rogue_cert, rogue_key) =
        (pki.cert(), pki.key(), pki.rogue_cert(), pki.rogue_key());
    let good = [
        "--cert",
        cert.to_str().expect("utf-8"),
        "--key",
        key.to_str().expect("utf-8"),
    ];
    assert_eq!(
        redis_cli_tls(&server, &pki, &[&good[..], &["PING"]].concat()),
        "PONG"
    );
    let rogue = [
        "--cert",
        rogue_cert.to_str().expect("utf-8"),
        "--key",
        rogue_key.to_str().expect("utf-8"),
    ];
    let out = redis_cli_tls(&server, &pki, &[&rogue[..], &["PING"]].concat());
    assert!(
        !out.contains("PONG"),
        "a rogue certificate was let in: {out}"
    );
    let out = redis_cli_tls(&server, &pki, &["PING"]);
    assert!(!out.contains("PONG"), "no certificate was let in: {out}");
    // Native: the CA's certificate works, a rogue one does not.
    let mut c =
        tls_client(server.native, &pki, Some((&pki.cert(), &pki.key()))).expect("good cert");
    assert!(matches!(c.call(RequestBody::Ping), Ok(ResponseBody::Pong)));
    let refused = tls_client(
        server.native,
        &pki,
        Some((&pki.rogue_cert(), &pki.rogue_key())),
    )
    .and_then(|mut c| c.call(RequestBody::Ping).map_err(|e| e.to_string()));
    assert!(refused.is_err(), "{refused:?}");
    wait_https_metric(
        &pki,
        &server,
        "corekv_tls_handshake_failures_total",
        3.0,
        true,
    );
}

#[test]
fn bad_tls_settings_stop_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let cases = [
        (
            format!("tls_cert_file = {:?}\n", pki.cert()),
            "without tls_key_file",
        ),
        (
            format!("{}internode_tls = true\n", tls_settings(&pki)),
            "internode_tls needs tls_ca_file",
        ),
        (
            format!(
                "tls_cert_file = {garbage:?}\ntls_key_file = {:?}\n",
                pki.key()
            ),
            "no PEM certificate",
        ),
        (
            format!(
                "tls_cert_file = {:?}\ntls_key_file = \"/nonexistent/key.pem\"\n",
                pki.cert()
            ),
            "/nonexistent/key.pem",
        ),
        (
            format!(
                "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
                pki.cert(),
                pki.rogue_key()
            ),
            "refused",
        ),
    ];
    for (i, (config, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, config).expect("write");
        let port = free_ports(6);
        let out = Command::new(common::corekv())
            .args(["serve", "--config"])
            .arg(&path)
            .arg("--data-dir")
            .arg(dir.path().join(format!("data{i}")))
            .args([
                "--shards",
                "1",
                "--native-addr",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--resp-addr", &format!("127.0.0.1:{}", port + 2)])
            .args(["--peer-addr", &format!("127.0.0.1:{}", port + 3)])
            .args(["--admin-addr", &format!("127.0.0.1:{}", port + 4)])
            .output()
            .expect("serve");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} started");
        assert!(err.contains(expected), "case {i}: {err}");
        assert!(!err.contains("panicked"), "case {i}: {err}");
    }
}

#[test]
fn internode_mutual_tls_carries_quorum_all_and_refuses_certless_peers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path());
    let settings = format!(
        "{}tls_ca_file = {:?}\ninternode_tls = true\ntls_auth_clients = \"optional\"\n",
        tls_settings(&pki),
        pki.ca()
    );
    let mut nodes: Vec<Server> = Vec::new();
    for i in 0..3 {
        let id = i + 1;
        let base = free_ports(4);
        let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let addrs = [at(base), at(base + 2), at(base + 3)];
        let seed = nodes.first().map_or(addrs[2], |n| n.peer);
        let config = dir.path().join(format!("node{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "node_id = {id}\nrack = \"r{i}\"\nseeds = [\"{seed}\"]\nreplication_factor = 3\nrequest_timeout_ms = 2000\ngossip_interval_ms = 50\nauto_bootstrap = false\n{settings}"
            ),
        )
        .expect("config");
        let config = config.to_string_lossy().into_owned();
        nodes.push(Server::start_logging_to(
            &dir.path().join(format!("node{id}.log")),
            &dir.path().join(format!("node{id}")),
            1,
            addrs,
            &["--config", &config],
        ));
    }
    // W=all succeeds once every node sees the others (bounded).
    let mut c = tls_client(nodes[0].native, &pki, None).expect("client");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let put = c.call(RequestBody::Put {
            consistency: Consistency::All,
            ttl_ms: 0,
            context: Vec::new(),
            key: b"everywhere".to_vec(),
            value: b"tls".to_vec(),
        });
        if matches!(put, Ok(ResponseBody::Ok { .. })) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "W=all never succeeded: {put:?}\n{}",
            nodes[0].log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for node in &nodes {
        let mut c = tls_client(node.native, &pki, None).expect("client");
        let got = c
            .call(RequestBody::Get {
                consistency: Consistency::All,
                key: b"everywhere".to_vec(),
            })
            .expect("R=all");
        match got {
            ResponseBody::Value { siblings, .. } => {
                assert_eq!(siblings[0].value.as_deref(), Some(&b"tls"[..]))
            }
            other => panic!("{other:?}"),
        }
    }
    // A peer without a certificate: the handshake is refused, counted.
    let before = https_metric(
        &pki,
        &nodes[1],
        "corekv_peer_tls_handshake_failures_total",
        false,
    );
    let refused = tls_client(nodes[1].peer, &pki, None)
        .and_then(|mut c| c.call(RequestBody::Ping).map_err(|e| e.to_string()));
    assert!(refused.is_err(), "{refused:?}");
    plain_gets_no_answer(nodes[1].peer, b"\x00\x00\x00\x10hello, no tls");
    wait_https_metric(
        &pki,
        &nodes[1],
        "corekv_peer_tls_handshake_failures_total",
        before + 2.0,
        false,
    );
}
