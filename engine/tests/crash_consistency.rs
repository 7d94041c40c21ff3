//! Crash consistency with real processes: a child process writes in `batch`
//! mode from many concurrent tasks and prints every acknowledged key; the
//! parent kills it with SIGKILL at a random moment, reopens the data
//! directory and checks that every acknowledged write is there. Small
//! memtables make the kills land during flushes and compactions too.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use corekv_engine::version::wall_clock_ms;
use corekv_engine::{ConflictMode, Engine, WriteOptions};

const CYCLES: usize = 20;
const WRITERS: usize = 32;
/// Bounds on one child's work, so a child that is never killed still stops
/// by itself.
const WRITES_PER_TASK_MAX: usize = 100_000;
const CHILD_RUN_MAX: Duration = Duration::from_secs(30);
const CHILD_ENV: &str = "COREKV_CRASH_CHILD_DIR";

fn value_for(key: &str) -> Vec<u8> {
    let mut v = key.as_bytes().to_vec();
    v.resize(100 + key.len() * 7 % 900, b'v');
    v
}

/// The child: writes until killed, printing `ACK <key>` after each ack.
#[test]
#[ignore = "run by crash_consistency as a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let cycle: usize = std::env::var("COREKV_CRASH_CYCLE")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    common::run(move || async move {
        let engine = Engine::open(&dir, common::small_options(ConflictMode::LastWriterWins))
            .await
            .expect("child open");
        println!("READY");
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let engine = engine.clone();
            tasks.push(glommio::spawn_local(async move {
                let deadline = Instant::now() + CHILD_RUN_MAX;
                for i in 0..WRITES_PER_TASK_MAX {
                    if Instant::now() > deadline {
                        break;
                    }
                    let key = format!("c{cycle}-w{w}-{i}");
                    engine
                        .put(key.as_bytes(), &value_for(&key), &WriteOptions::default())
                        .await
                        .expect("child put");
                    println!("ACK {key}");
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
}

/// Kills the child if the parent fails before doing so.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary path");
    let mut acked: Vec<String> = Vec::new();
    let mut seed = wall_clock_ms() | 1;
    for cycle in 0..CYCLES {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env("COREKV_CRASH_CYCLE", cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let mut child = KillOnDrop(child);
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the child to open (replaying the previous crash), then
        // let it write for a random 50..400 ms before the kill.
        let ready_deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                // libtest prints "test crash_child ... " before the child's own output.
                Ok(line) if line.ends_with("READY") => break,
                Ok(_) => {}
                Err(_) if Instant::now() < ready_deadline => {}
                Err(_) => panic!("cycle {cycle}: child did not open the data directory in 60 s"),
            }
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(50 + seed % 350));
        child.0.kill().expect("kill -9 child");
        child.0.wait().expect("reap child");
        reader.join().expect("reader thread");
        let before = acked.len();
        acked.extend(
            rx.try_iter()
                .filter_map(|l| l.strip_prefix("ACK ").map(str::to_owned)),
        );
        assert!(
            acked.len() > before,
            "cycle {cycle}: the child acknowledged nothing"
        );
    }

    let keys = acked.clone();
    let missing = common::run(move || async move {
        let engine = Engine::open(
            dir.path(),
            common::small_options(ConflictMode::LastWriterWins),
        )
        .await
        .expect("reopen after crashes");
        let mut missing = Vec::new();
        for key in &keys {
            let got = engine.get(key.as_bytes()).await.expect("get");
            let value = got.and_then(|s| s.winner(wall_clock_ms()).and_then(|v| v.value.clone()));
            if value.as_deref() != Some(value_for(key).as_slice()) {
                missing.push(key.clone());
            }
        }
        let stats = engine.stats();
        eprintln!(
            "crash test: {} acknowledged writes over {CYCLES} kills; {} tables, {} flushes this open",
            keys.len(),
            stats.tables,
            stats.flushes
        );
        engine.close().await.expect("close");
        missing
    });
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}
