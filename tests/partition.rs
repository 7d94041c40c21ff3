//! A network partition between real nodes: three `corekv serve`
//! processes, each in its own network namespace on a bridge, and iptables
//! rules in one namespace that cut it off from the other two. Both sides
//! keep serving what their quorum allows; after the rules go, gossip,
//! hints and read repair bring the cluster back to one state.
//!
//! Needs root (namespaces, iptables): the test is in a `needs_host` module,
//! #[ignore]d elsewhere and run by `CI=true ./test.sh` (`common::require`).

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The namespaces, bridge and veth pairs of one test; removed on drop.
struct Lab {
    tag: String,
    nodes: usize,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run a command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

impl Lab {
    /// `nodes` namespaces, node i at 10.77.0.i/24, joined by a bridge in a
    /// hub namespace (nothing is added to the host's own namespace).
    fn new(nodes: usize) -> Lab {
        let lab = Lab {
            tag: format!("ckv{}", std::process::id() % 100_000),
            nodes,
        };
        let hub = lab.hub();
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for i in 1..=nodes {
            let ns = lab.ns(i);
            let veth = format!("{}v{i}", lab.tag);
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &veth, "netns", &hub, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            ip(&["-n", &hub, "link", "set", &veth, "master", "br0", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", lab.addr(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    fn hub(&self) -> String {
        format!("{}h", self.tag)
    }

    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    fn addr(&self, i: usize) -> String {
        format!("10.77.0.{i}")
    }

    /// A command run inside node `i`'s namespace.
    fn exec(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(i), program]);
        c
    }

    /// Drops all traffic between node `i` and node `j`, in `i`'s namespace.
    fn cut(&self, i: usize, j: usize) {
        let peer = self.addr(j);
        for (chain, dir) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
            run(self
                .exec(i, "iptables")
                .args(["-A", chain, dir, &peer, "-j", "DROP"]));
        }
    }

    /// Removes every rule in node `i`'s namespace.
    fn heal(&self, i: usize) {
        run(self.exec(i, "iptables").args(["-F"]));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 1..=self.nodes {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(i)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.hub()])
            .status();
    }
}

/// A node running in its namespace; killed on drop.
struct Node {
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(lab: &Lab, i: usize, dir: &Path) -> Node {
    let a = lab.addr(i);
    let config = dir.join(format!("node{i}.toml"));
    std::fs::write(
        &config,
        format!(
            "node_id = {i}\nrack = \"r{i}\"\nshards = 1\nreplication_factor = 3\n\
             native_addr = \"{a}:7000\"\nresp_addr = \"{a}:7379\"\npeer_addr = \"{a}:7100\"\n\
             admin_addr = \"off\"\nseeds = [\"{}:7100\"]\ngossip_interval_ms = 100\n\
             request_timeout_ms = 1000\n",
            lab.addr(1)
        ),
    )
    .expect("config");
    let log = std::fs::File::create(dir.join(format!("node{i}.log"))).expect("log");
    let child = lab
        .exec(i, common::corekv())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join(format!("data{i}")))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn corekv in its namespace");
    Node { child }
}

/// Runs the CLI against node `i` from inside its namespace.
fn cli(lab: &Lab, i: usize, args: &[&str]) -> Output {
    lab.exec(i, common::corekv())
        .args(args)
        .args(["--addr", &format!("{}:7000", lab.addr(i)), "--timeout", "3"])
        .output()
        .expect("run the CLI")
}

/// Ids node `i` believes up, or `None` while it does not answer.
fn up_ids(lab: &Lab, i: usize) -> Option<Vec<u64>> {
    ids_where(lab, i, |m| m["up"].as_bool() == Some(true))
}

/// Ids node `i` believes up and normal (joined).
fn normal_ids(lab: &Lab, i: usize) -> Option<Vec<u64>> {
    ids_where(lab, i, |m| {
        m["up"].as_bool() == Some(true) && m["status"] == "normal"
    })
}

fn ids_where(lab: &Lab, i: usize, pick: impl Fn(&serde_json::Value) -> bool) -> Option<Vec<u64>> {
    let out = cli(lab, i, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut ids: Vec<u64> = v["members"]
        .as_array()?
        .iter()
        .filter(|m| pick(m))
        .filter_map(|m| m["id"].as_u64())
        .collect();
    ids.sort_unstable();
    Some(ids)
}

fn hints_pending(lab: &Lab, i: usize) -> Option<u64> {
    let out = cli(lab, i, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["totals"]["hints_pending"].as_u64()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn put(lab: &Lab, i: usize, key: &str, value: &str, level: &str) -> Output {
    cli(lab, i, &["put", key, value, "-l", level])
}

fn get(lab: &Lab, i: usize, key: &str, level: &str) -> String {
    let out = cli(lab, i, &["get", key, "-l", level]);
    assert!(
        out.status.success(),
        "get {key} at {level} on node {i}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Tests that need root: ignored unless asked for, and failing, not
/// passing, when run where they cannot test ([`common::require`]).
mod needs_host {
    use super::*;
    use common::require;

    #[test]
    #[ignore = "needs root (network namespaces, iptables); CI=true ./test.sh runs it"]
    fn both_sides_of_a_partition_serve_what_their_quorum_allows_and_converge() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        require(root, "root, for network namespaces and iptables");
        let lab = Lab::new(3);
        let dir = tempfile::tempdir().expect("tempdir");
        let _nodes: Vec<Node> = (1..=3).map(|i| start(&lab, i, dir.path())).collect();
        for i in 1..=3 {
            wait_for(&format!("node {i} to see all three joined"), || {
                normal_ids(&lab, i) == Some(vec![1, 2, 3])
            });
        }

        // Node 3 loses the other two.
        lab.cut(3, 1);
        lab.cut(3, 2);
        for (i, view) in [(1, vec![1, 2]), (2, vec![1, 2]), (3, vec![3])] {
            wait_for(&format!("node {i}'s side of the partition"), || {
                up_ids(&lab, i) == Some(view.clone())
            });
        }
        // The majority side takes QUORUM writes (node 3's copies become hints).
        for k in 0..10 {
            let out = put(&lab, 1, &format!("major{k}"), "m", "quorum");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The minority side refuses QUORUM, clearly, and takes ONE.
        let out = put(&lab, 3, "minor", "x", "quorum");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("unavailable"), "{err}");
        let out = put(&lab, 3, "minor", "x", "one");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        lab.heal(3);
        for i in 1..=3 {
            wait_for(&format!("node {i} to see all three again"), || {
                up_ids(&lab, i) == Some(vec![1, 2, 3])
            });
        }
        wait_for("the majority's hints to reach node 3", || {
            hints_pending(&lab, 1) == Some(0) && hints_pending(&lab, 2) == Some(0)
        });
        // Node 3's own replica now holds what the majority wrote...
        for k in 0..10 {
            assert_eq!(get(&lab, 3, &format!("major{k}"), "one"), "m", "major{k}");
        }
        // ...and a read at ALL through the majority finds the minority's write.
        assert_eq!(get(&lab, 1, "minor", "all"), "x");
    }
}
