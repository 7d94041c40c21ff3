//! Jepsen-style set-add on three real nodes (N = 3, QUORUM): clients add
//! elements to one key by read-modify-write — half of the writes with the
//! context of a read, half with the context of their own last OK — while a
//! nemesis kills nodes with SIGKILL and freezes them with SIGSTOP. The
//! history of acknowledged adds is checked at the end: every acknowledged
//! element is in the final set (nothing acknowledged is lost, whichever
//! context the client wrote back). Bounded: about 12 s of load.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{wait_for, Cluster};
use corekv_net::client::Client;
use corekv_net::native::{Consistency, RequestBody, ResponseBody};

const KEY: &[u8] = b"set";
const CLIENTS: usize = 3;
const LOAD: Duration = Duration::from_secs(12);

/// The elements a read shows (the union of its siblings) and its context.
fn read(c: &mut Client, level: Consistency) -> Option<(BTreeSet<String>, Vec<u8>)> {
    match c.call(RequestBody::Get {
        consistency: level,
        key: KEY.to_vec(),
    }) {
        Ok(ResponseBody::Value { context, siblings }) => {
            let elements = siblings
                .iter()
                .filter_map(|s| s.value.as_ref())
                .flat_map(|v| {
                    String::from_utf8_lossy(v)
                        .split(',')
                        .filter(|e| !e.is_empty())
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect();
            Some((elements, context))
        }
        Ok(ResponseBody::NotFound { context }) => Some((BTreeSet::new(), context)),
        _ => None,
    }
}

fn write(c: &mut Client, set: &BTreeSet<String>, context: Vec<u8>) -> Option<Vec<u8>> {
    let value = set.iter().cloned().collect::<Vec<_>>().join(",");
    match c.call(RequestBody::Put {
        consistency: Consistency::Quorum,
        ttl_ms: 0,
        context,
        key: KEY.to_vec(),
        value: value.into_bytes(),
    }) {
        Ok(ResponseBody::Ok { context }) => Some(context),
        _ => None,
    }
}

/// One client: adds `c{id}-{n}` elements until `stop`, moving to the next
/// node when its node does not answer. Returns the acknowledged elements.
fn client(id: usize, nodes: Vec<SocketAddr>, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut acked = Vec::new();
    let mut node = id % nodes.len();
    let mut conn: Option<Client> = None;
    // What this client last wrote and the OK context covering it.
    let mut own: Option<(BTreeSet<String>, Vec<u8>)> = None;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Client::connect(nodes[node], Duration::from_millis(1500)) {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    node = (node + 1) % nodes.len();
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        n += 1;
        let element = format!("c{id}-{n}");
        // Half of the adds build on the client's own last write and its OK
        // context (no read): concurrent adds by others must stay siblings.
        let base = match own.take() {
            Some(own) if n % 2 == 0 => Some(own),
            _ => read(c, Consistency::Quorum),
        };
        let Some((mut set, context)) = base else {
            conn = None;
            node = (node + 1) % nodes.len();
            continue;
        };
        set.insert(element.clone());
        match write(c, &set, context) {
            Some(ok) => {
                acked.push(element);
                own = Some((set, ok));
            }
            None => {
                // Indeterminate: maybe written, maybe not. Not acknowledged.
                conn = None;
                node = (node + 1) % nodes.len();
            }
        }
    }
    acked
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

#[test]
fn every_acknowledged_add_survives_kills_and_pauses() {
    // COREKV_SEED=<seed> replays the fault schedule.
    let seed = common::seed::seed("jepsen_set");
    let mut cluster = Cluster::start(3, "hint_window_s = 600");
    let nodes: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.native).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (nodes, stop, acked) = (nodes.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mine = client(id, nodes, stop);
                acked.lock().expect("history").extend(mine);
            })
        })
        .collect();

    // The nemesis: each round picks a node and a fault by the seed.
    let start = Instant::now();
    let mut rng = seed | 1;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut faults = Vec::new();
    while start.elapsed() < LOAD {
        std::thread::sleep(Duration::from_millis(800));
        let victim = (next() % 3) as usize;
        let pid = cluster.nodes[victim].child.as_ref().map(|c| c.id());
        let Some(pid) = pid else { continue };
        if next() % 2 == 0 {
            faults.push(format!("kill -9 node {}", victim + 1));
            cluster.nodes[victim].signal_and_wait("-KILL");
            std::thread::sleep(Duration::from_millis(500));
            cluster.nodes[victim].restart();
        } else {
            faults.push(format!("SIGSTOP node {} for 1.5 s", victim + 1));
            signal(pid, "-STOP");
            std::thread::sleep(Duration::from_millis(1500));
            signal(pid, "-CONT");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("client thread");
    }
    let acked = acked.lock().expect("history").clone();
    assert!(
        acked.len() > 50,
        "too few acknowledged adds to mean anything: {} ({faults:?})",
        acked.len()
    );

    // Heal: every node up and seen up, hints delivered, then a final read
    // at ALL must hold every acknowledged element.
    cluster.wait_converged();
    let mut final_set = BTreeSet::new();
    wait_for("every acknowledged element in a read at ALL", || {
        let mut c = cluster.client(0);
        if let Some((set, _)) = read(&mut c, Consistency::All) {
            final_set = set;
        }
        acked.iter().all(|e| final_set.contains(e))
    });
    let lost: Vec<&String> = acked.iter().filter(|e| !final_set.contains(*e)).collect();
    assert!(
        lost.is_empty(),
        "seed {seed}: lost {} of {} acknowledged adds: {lost:?}; faults {faults:?}",
        lost.len(),
        acked.len()
    );
    println!(
        "jepsen_set: {} acknowledged adds, all present; faults: {faults:?}",
        acked.len()
    );
}
