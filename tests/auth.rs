//! Client authentication and roles (issue 20), with real `corekv serve`
//! processes on loopback, redis-cli and the native client:
//!
//! - `requirepass`: nothing but PING and AUTH runs before AUTH (NOAUTH), a
//!   wrong password is WRONGPASS, `redis-cli -a` and HELLO AUTH work;
//! - a users file written by `corekv user add` (password on stdin, argon2
//!   hash in the file): roles and key patterns are enforced on RESP, the
//!   native port and each shard's own port; the CLI authenticates from
//!   COREKV_PASSWORD; refusals are counted;
//! - a flood of wrong passwords on one shard does not stop that shard from
//!   serving an authenticated client.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{corekv, redis_cli, wait_metric, Server};
use corekv_net::client::{Client, ClientError};
use corekv_net::native::{ErrorCode, RequestBody, ResponseBody};

fn client(addr: std::net::SocketAddr) -> Client {
    Client::connect(addr, Duration::from_secs(10)).expect("connect")
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

/// `corekv user add NAME --role ROLE [--key K]...` with `password` on stdin.
fn user_add(users: &Path, name: &str, password: &str, role: &str, keys: &[&str]) -> String {
    let mut cmd = Command::new(corekv());
    cmd.args(["user", "add", name, "--role", role, "--users-file"])
        .arg(users);
    for k in keys {
        cmd.args(["--key", k]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run corekv user add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "user add {name}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(result: Result<ResponseBody, ClientError>) -> (ErrorCode, String) {
    match result {
        Err(ClientError::Server { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn requirepass_gates_every_command_until_auth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server_with(dir.path(), "requirepass = \"open sesame 42\"\n");
    assert_eq!(redis_cli(&server, &["PING"]), "PONG");
    assert_eq!(
        redis_cli(&server, &["SET", "k", "v"]),
        "NOAUTH Authentication required."
    );
    assert_eq!(
        redis_cli(&server, &["GET", "k"]),
        "NOAUTH Authentication required."
    );
    // redis-cli reports the failed AUTH on stderr and runs the command
    // unauthenticated.
    assert_eq!(
        redis_cli(&server, &["-a", "wrong", "--no-auth-warning", "GET", "k"]),
        "NOAUTH Authentication required."
    );
    let ok = |args: &[&str]| {
        let mut all = vec!["-a", "open sesame 42", "--no-auth-warning"];
        all.extend_from_slice(args);
        redis_cli(&server, &all)
    };
    assert_eq!(ok(&["SET", "k", "v"]), "OK");
    assert_eq!(ok(&["GET", "k"]), "v");
    assert_eq!(ok(&["ACL", "WHOAMI"]), "default");
    // HELLO 2 AUTH authenticates and answers the server's description.
    let hello = redis_cli(
        &server,
        &["HELLO", "2", "AUTH", "default", "open sesame 42"],
    );
    assert!(hello.contains("proto"), "{hello}");
    // The native port asks the same: nothing before AUTH.
    let mut c = client(server.native);
    let (code, _) = refused(c.get(b"k"));
    assert_eq!(code, ErrorCode::Unauthenticated);
    assert!(matches!(c.call(RequestBody::Ping), Ok(ResponseBody::Pong)));
    let (code, _) = refused(
        c.auth(b"default", b"open sesame 4")
            .map(|_| ResponseBody::Pong),
    );
    assert_eq!(code, ErrorCode::Unauthenticated);
    c.auth(b"default", b"open sesame 42").expect("auth");
    assert!(matches!(c.get(b"k"), Ok(ResponseBody::Value { .. })));
    assert_eq!(
        wait_metric(&server, "corekv_client_auth_failures_total", 2.0),
        2.0
    );
}

#[test]
fn users_file_roles_and_key_patterns_are_enforced_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("users.toml");
    let said = user_add(
        &users,
        "alice",
        "alice-password",
        "readwrite",
        &["session:*"],
    );
    assert!(said.contains("added user alice"), "{said}");
    user_add(&users, "bob", "bob-password", "read", &[]);
    user_add(&users, "ops", "ops-password", "admin", &[]);
    // The file holds hashes, never the passwords, and only its owner reads it.
    let text = std::fs::read_to_string(&users).expect("users file");
    assert!(
        text.contains("$argon2id$") && !text.contains("alice-password"),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&users)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "users file mode {mode:o}");

    let server = server_with(
        dir.path(),
        &format!("users_file = \"{}\"\n", users.display()),
    );
    // Every native port: the node's and the shard's own.
    for addr in [server.native, server.shard_addr(0)] {
        let mut alice = client(addr);
        let (code, _) = refused(alice.put(b"session:1", b"v1", 0, &[]));
        assert_eq!(code, ErrorCode::Unauthenticated, "{addr}");
        alice.auth(b"alice", b"alice-password").expect("alice");
        alice
            .put(b"session:1", b"v1", 0, &[])
            .expect("alice writes her keys");
        let (code, message) = refused(alice.put(b"other:1", b"v", 0, &[]));
        assert_eq!(code, ErrorCode::Forbidden, "{message}");
        assert!(message.contains("alice"), "{message}");
        let (code, _) = refused(alice.get(b"other:1"));
        assert_eq!(code, ErrorCode::Forbidden);
        let (code, _) = refused(alice.call(RequestBody::Admin(br#"{"op":"compact"}"#.to_vec())));
        assert_eq!(code, ErrorCode::Forbidden);

        let mut bob = client(addr);
        bob.auth(b"bob", b"bob-password").expect("bob");
        assert!(matches!(
            bob.get(b"session:1"),
            Ok(ResponseBody::Value { .. })
        ));
        let (code, message) = refused(bob.delete(b"session:1", &[]));
        assert_eq!(code, ErrorCode::Forbidden, "{message}");
        // A right password for another user opens nothing.
        let mut mallory = client(addr);
        let (code, _) = refused(
            mallory
                .auth(b"bob", b"alice-password")
                .map(|_| ResponseBody::Pong),
        );
        assert_eq!(code, ErrorCode::Unauthenticated);
    }
    // RESP: the same users and rules, in Redis's words.
    let as_user = |user: &str, password: &str, args: &[&str]| {
        let mut all = vec!["--user", user, "--pass", password, "--no-auth-warning"];
        all.extend_from_slice(args);
        redis_cli(&server, &all)
    };
    assert_eq!(
        as_user("alice", "alice-password", &["SET", "session:2", "x"]),
        "OK"
    );
    assert_eq!(as_user("bob", "bob-password", &["GET", "session:2"]), "x");
    assert!(
        as_user("bob", "bob-password", &["SET", "session:2", "y"]).starts_with("NOPERM"),
        "a read user cannot SET"
    );
    assert_eq!(
        as_user("alice", "alice-password", &["GET", "other:2"]),
        "NOPERM No permissions to access a key"
    );
    assert_eq!(
        as_user("alice", "alice-password", &["ACL", "WHOAMI"]),
        "alice"
    );
    // The CLI takes the password from the environment only.
    let cli = |user: &str, password: Option<&str>, args: &[&str]| {
        let mut cmd = Command::new(corekv());
        cmd.args(args)
            .args(["--addr", &server.native.to_string(), "--user", user])
            .env_remove("COREKV_PASSWORD");
        if let Some(p) = password {
            cmd.env("COREKV_PASSWORD", p);
        }
        cmd.output().expect("run corekv")
    };
    let out = cli("bob", Some("bob-password"), &["get", "session:2"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "x\n", "{out:?}");
    let out = cli("bob", None, &["get", "session:2"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("COREKV_PASSWORD"),
        "{out:?}"
    );
    // `corekv status` asks each member for its figures with the same user.
    let out = cli("bob", Some("bob-password"), &["status"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.lines().any(|l| l.starts_with("UP ")),
        "{out:?}"
    );
    let out = cli("ops", Some("ops-password"), &["compact"]);
    assert!(out.status.success(), "the admin role runs ADMIN: {out:?}");
    let out = cli("bob", Some("bob-password"), &["compact"]);
    assert!(!out.status.success(), "a read user cannot compact: {out:?}");
    // Refusals are visible: 2 wrong passwords, and 2 × 4 native + 2 RESP
    // + 1 CLI permission refusals.
    assert_eq!(
        wait_metric(&server, "corekv_client_auth_failures_total", 2.0),
        2.0
    );
    assert_eq!(
        wait_metric(&server, "corekv_client_permission_refusals_total", 11.0),
        11.0
    );
}

#[test]
fn a_flood_of_wrong_passwords_does_not_stop_the_shard_serving_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("users.toml");
    user_add(&users, "app", "app-password", "readwrite", &[]);
    let server = server_with(
        dir.path(),
        &format!("users_file = \"{}\"\n", users.display()),
    );
    let addr = server.native;
    // Attackers: 8 connections, each trying wrong passwords (bounded).
    let attackers: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = client(addr);
                let mut refused = 0;
                for i in 0..10 {
                    let guess = format!("guess-{t}-{i}");
                    if c.auth(b"app", guess.as_bytes()).is_err() {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    // Meanwhile the application, authenticated once, keeps working on the
    // same (only) shard.
    let mut app = client(addr);
    app.auth(b"app", b"app-password").expect("app");
    for i in 0..500 {
        let key = format!("k{i}");
        app.put(key.as_bytes(), b"v", 0, &[])
            .unwrap_or_else(|e| panic!("write {key} during the flood: {e}"));
    }
    let refused: usize = attackers
        .into_iter()
        .map(|a| a.join().expect("attacker"))
        .sum();
    assert_eq!(refused, 80, "every wrong guess is refused");
    assert_eq!(
        wait_metric(&server, "corekv_client_auth_failures_total", 80.0),
        80.0
    );
}

#[test]
fn async_and_shard_aware_clients_connect_as_a_user() {
    use corekv_cluster::client::{ShardAwareClient, ShardAwareError};
    use corekv_net::async_client::AsyncClient;
    use corekv_net::native::Consistency;
    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("users.toml");
    user_add(&users, "alice", "alice-password", "readwrite", &[]);
    let config = dir.path().join("node.toml");
    std::fs::write(&config, format!("users_file = \"{}\"\n", users.display())).expect("config");
    let server = Server::start(
        &dir.path().join("data"),
        2,
        &["--config", config.to_str().expect("utf-8 path")],
    );
    let (native, shard1) = (server.native, server.shard_addr(1));
    let outcome = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            // The async client: right password works, wrong one is typed.
            let c = AsyncClient::connect_as(native, b"alice", b"alice-password", 8)
                .await
                .expect("alice connects");
            c.call(RequestBody::Put {
                consistency: Consistency::Default,
                ttl_ms: 0,
                context: Vec::new(),
                key: b"a1".to_vec(),
                value: b"v".to_vec(),
            })
            .await
            .expect("alice writes");
            c.close();
            for addr in [native, shard1] {
                match AsyncClient::connect_as(addr, b"alice", b"wrong", 8).await {
                    Err(ClientError::Unauthenticated(_)) => {}
                    Err(e) => panic!("{addr}: expected Unauthenticated, got {e}"),
                    Ok(_) => panic!("{addr}: a wrong password was accepted"),
                }
            }
            // The shard-aware client: refused at the seed, typed.
            match ShardAwareClient::connect_as(native, b"alice", b"nope", 8).await {
                Err(ShardAwareError::Unauthenticated { .. }) => {}
                Err(e) => panic!("expected Unauthenticated, got {e}"),
                Ok(_) => panic!("a wrong password was accepted"),
            }
            // ... and with the right password every per-shard connection
            // authenticates (keys land on both shards).
            let sa = ShardAwareClient::connect_as(native, b"alice", b"alice-password", 8)
                .await
                .expect("shard-aware alice");
            for i in 0..64 {
                let key = format!("sa{i}").into_bytes();
                sa.call(RequestBody::Put {
                    consistency: Consistency::Default,
                    ttl_ms: 0,
                    context: Vec::new(),
                    key: key.clone(),
                    value: b"v".to_vec(),
                })
                .await
                .expect("put through the owning shard");
                let got = sa
                    .call(RequestBody::Get {
                        consistency: Consistency::Default,
                        key,
                    })
                    .await
                    .expect("get");
                assert!(matches!(got, ResponseBody::Value { .. }), "{got:?}");
            }
            // Without credentials the same routes are refused.
            let anon = ShardAwareClient::connect(native, 8).await;
            if let Ok(anon) = anon {
                let r = anon
                    .call(RequestBody::Get {
                        consistency: Consistency::Default,
                        key: b"sa1".to_vec(),
                    })
                    .await;
                assert!(
                    matches!(
                        r,
                        Err(ClientError::Server {
                            code: ErrorCode::Unauthenticated,
                            ..
                        })
                    ),
                    "{r:?}"
                );
            }
        })
        .expect("executor")
        .join();
    outcome.expect("client run");
}

fn bench_as(server: &Server, user: Option<&str>, password: Option<&str>, url: &str) -> Output {
    let target = format!("t={url}://{}", server.native);
    let mut cmd = Command::new(corekv());
    cmd.args([
        "bench",
        "--target",
        &target,
        "--workload",
        "c",
        "--keys",
        "100",
        "--rate",
        "500",
        "--duration",
        "1s",
        "--threads",
        "1",
        "--connections",
        "2",
        "--quiet",
    ])
    .env_remove("COREKV_PASSWORD");
    if let Some(u) = user {
        cmd.args(["--user", u]);
    }
    if let Some(p) = password {
        cmd.env("COREKV_PASSWORD", p);
    }
    cmd.output().expect("run corekv bench")
}

#[test]
fn bench_authenticates_with_user_and_the_password_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("users.toml");
    user_add(&users, "loader", "loader-password", "readwrite", &[]);
    let server = server_with(
        dir.path(),
        &format!("users_file = \"{}\"\n", users.display()),
    );
    for url in ["native", "native-sharded"] {
        let ok = bench_as(&server, Some("loader"), Some("loader-password"), url);
        assert!(ok.status.success(), "{url}: {ok:?}");

        let wrong = bench_as(&server, Some("loader"), Some("wrong"), url);
        assert!(!wrong.status.success(), "{url}: wrong password ran");
        let err = String::from_utf8_lossy(&wrong.stderr);
        assert!(err.contains("authentication failed"), "{url}: {err}");
    }
    let no_password = bench_as(&server, Some("loader"), None, "native");
    assert!(!no_password.status.success());
    let err = String::from_utf8_lossy(&no_password.stderr);
    assert!(err.contains("COREKV_PASSWORD"), "{err}");
}

/// Sends `signal` to the server by the PID this test started.
fn signal(server: &Server, signal: &str) {
    let pid = server.child.as_ref().expect("running").id().to_string();
    let ok = Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill");
    assert!(ok.success());
}

/// Retries `f` every 100 ms for at most 10 s until it returns true.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within 10 s");
}

#[test]
fn sighup_reloads_the_users_file_and_a_broken_file_keeps_the_old_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("users.toml");
    user_add(&users, "alice", "alice-password", "readwrite", &[]);
    user_add(&users, "bob", "bob-password", "readwrite", &[]);
    let server = server_with(
        dir.path(),
        &format!("users_file = \"{}\"\n", users.display()),
    );
    let mut bob = client(server.native);
    bob.auth(b"bob", b"bob-password").expect("bob");
    bob.put(b"k", b"v", 0, &[]).expect("bob writes");
    // Cache alice's credentials on the shard before the change.
    client(server.native)
        .auth(b"alice", b"alice-password")
        .expect("alice");

    let out = Command::new(corekv())
        .args(["user", "remove", "bob", "--users-file"])
        .arg(&users)
        .output()
        .expect("user remove");
    assert!(out.status.success(), "{out:?}");
    user_add(&users, "alice", "alice-new", "readwrite", &[]);
    signal(&server, "-HUP");
    wait_metric(&server, "corekv_users_reloads_total", 1.0);
    // Bob's open connection is refused from its next command.
    let (code, _) = refused(bob.put(b"k", b"v2", 0, &[]));
    assert_eq!(code, ErrorCode::Unauthenticated);
    let mut c = client(server.native);
    assert!(c.auth(b"bob", b"bob-password").is_err(), "removed bob");
    assert!(c.auth(b"alice", b"alice-password").is_err(), "old password");
    c.auth(b"alice", b"alice-new")
        .expect("alice's new password");

    // A broken file: counted, logged, the old users stay.
    std::fs::write(&users, "this is [not toml").expect("break the file");
    signal(&server, "-HUP");
    wait_metric(&server, "corekv_users_reload_failures_total", 1.0);
    let mut c = client(server.native);
    c.auth(b"alice", b"alice-new").expect("alice still works");
    eventually("the failure is logged", || {
        server.log_text().contains("users file reload failed")
    });
}

#[test]
fn a_changed_users_file_is_picked_up_without_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("users.toml");
    user_add(&users, "alice", "alice-password", "readwrite", &[]);
    let server = server_with(
        dir.path(),
        &format!(
            "users_file = \"{}\"\nusers_file_check_s = 1\n",
            users.display()
        ),
    );
    assert!(client(server.native).auth(b"carol", b"carol-pw").is_err());
    user_add(&users, "carol", "carol-pw", "read", &[]);
    wait_metric(&server, "corekv_users_reloads_total", 1.0);
    client(server.native)
        .auth(b"carol", b"carol-pw")
        .expect("carol, added without a SIGHUP");
}
