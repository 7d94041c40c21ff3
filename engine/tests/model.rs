//! Model-based property test: random sequences of put / delete / TTL /
//! flush / compact / reopen against a BTreeMap model. The engine must agree
//! with the model after every step, in both conflict modes.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use corekv_engine::version::wall_clock_ms;
use corekv_engine::{ConflictMode, Engine, TokenRange, WriteContext, WriteOptions};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Put {
        key: u8,
        len: usize,
        ttl_ms: Option<u64>,
    },
    Delete {
        key: u8,
    },
    Get {
        key: u8,
    },
    Flush,
    Compact,
    Reopen,
    Sleep,
    Scan,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..40, 0usize..3000, prop_oneof![3 => Just(None), 1 => Just(Some(1u64)), 1 => Just(Some(3_600_000u64))])
            .prop_map(|(key, len, ttl_ms)| Op::Put { key, len, ttl_ms }),
        2 => (0u8..40).prop_map(|key| Op::Delete { key }),
        4 => (0u8..40).prop_map(|key| Op::Get { key }),
        1 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        1 => Just(Op::Sleep),
        1 => Just(Op::Scan),
    ]
}

fn key_of(k: u8) -> Vec<u8> {
    format!("key-{k:03}").into_bytes()
}

/// Value bytes derived from the key and a sequence number, so a stale
/// version is distinguishable from the latest.
fn value_of(k: u8, seq: usize, len: usize) -> Vec<u8> {
    let mut v = format!("{k}:{seq}:").into_bytes();
    v.resize(len.max(v.len()), b'a' + (seq % 26) as u8);
    v
}

/// What the model expects for a key: a value and its absolute expiry.
type Model = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

/// Checks a read against the model, tolerating the instant of expiry
/// falling between the two clock readings around the call.
fn check(
    key: &[u8],
    got: Option<Vec<u8>>,
    model: &Model,
    before_ms: u64,
    after_ms: u64,
) -> Result<(), String> {
    match model.get(key) {
        None => match got {
            None => Ok(()),
            Some(v) => Err(format!(
                "{}: expected absent, got {} bytes",
                String::from_utf8_lossy(key),
                v.len()
            )),
        },
        Some((value, expires)) => {
            let surely_live = *expires == 0 || *expires > after_ms;
            let surely_dead = *expires != 0 && *expires <= before_ms;
            match got {
                Some(v) if &v == value && !surely_dead => Ok(()),
                None if !surely_live => Ok(()),
                other => Err(format!(
                    "{}: expected {} bytes (expires {expires}, now {before_ms}..{after_ms}), got {:?}",
                    String::from_utf8_lossy(key),
                    value.len(),
                    other.map(|v| v.len())
                )),
            }
        }
    }
}

async fn read(engine: &Engine, key: &[u8]) -> Option<Vec<u8>> {
    let set = engine.get(key).await.expect("get");
    let set = set?;
    let now = wall_clock_ms();
    let live: Vec<_> = set.live(now).collect();
    assert!(
        live.len() <= 1,
        "overwrites must not leave siblings: {set:?}"
    );
    live.first().and_then(|v| v.value.clone())
}

fn run_case(mode: ConflictMode, ops: Vec<Op>) -> Result<(), String> {
    common::run(move || async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = common::small_options(mode);
        let mut engine = Engine::open(dir.path(), opts.clone()).await.expect("open");
        let mut model = Model::new();
        let write = WriteOptions {
            ttl: None,
            context: WriteContext::Overwrite,
        };
        for (seq, op) in ops.into_iter().enumerate() {
            match op {
                Op::Put { key, len, ttl_ms } => {
                    let k = key_of(key);
                    let v = value_of(key, seq, len);
                    let o = WriteOptions {
                        ttl: ttl_ms.map(Duration::from_millis),
                        ..write.clone()
                    };
                    let version = engine.put(&k, &v, &o).await.map_err(|e| e.to_string())?;
                    model.insert(k, (v, version.expires_at_ms));
                }
                Op::Delete { key } => {
                    let k = key_of(key);
                    engine.delete(&k, &write).await.map_err(|e| e.to_string())?;
                    model.remove(&k);
                }
                Op::Get { key } => {
                    let k = key_of(key);
                    let before = wall_clock_ms();
                    let got = read(&engine, &k).await;
                    check(&k, got, &model, before, wall_clock_ms())?;
                }
                Op::Flush => engine.flush().await.map_err(|e| e.to_string())?,
                Op::Compact => engine.compact_all().await.map_err(|e| e.to_string())?,
                Op::Reopen => {
                    engine.close().await.map_err(|e| e.to_string())?;
                    drop(engine);
                    engine = Engine::open(dir.path(), opts.clone())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Op::Sleep => glommio::timer::sleep(Duration::from_millis(3)).await,
                Op::Scan => {
                    let before = wall_clock_ms();
                    let mut seen = BTreeMap::new();
                    let mut after: Option<Vec<u8>> = None;
                    for _ in 0..100 {
                        let batch = engine
                            .scan(TokenRange::FULL, after.as_deref(), 7)
                            .await
                            .map_err(|e| e.to_string())?;
                        let now = wall_clock_ms();
                        for (k, set) in batch.entries {
                            if let Some(v) = set.live(now).next() {
                                seen.insert(k, v.value.clone().unwrap_or_default());
                            }
                        }
                        match batch.next_after {
                            Some(a) => after = Some(a),
                            None => break,
                        }
                    }
                    let after_ms = wall_clock_ms();
                    for k in model
                        .keys()
                        .chain(seen.keys())
                        .cloned()
                        .collect::<std::collections::BTreeSet<_>>()
                    {
                        check(&k, seen.get(&k).cloned(), &model, before, after_ms)?;
                    }
                }
            }
        }
        // Final check after a last reopen: everything acknowledged is there.
        engine.close().await.map_err(|e| e.to_string())?;
        let engine = Engine::open(dir.path(), opts)
            .await
            .map_err(|e| e.to_string())?;
        for key in 0u8..40 {
            let k = key_of(key);
            let before = wall_clock_ms();
            let got = read(&engine, &k).await;
            check(&k, got, &model, before, wall_clock_ms())?;
        }
        engine.close().await.map_err(|e| e.to_string())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn engine_matches_model_last_writer_wins(ops in prop::collection::vec(arb_op(), 1..120)) {
        run_case(ConflictMode::LastWriterWins, ops).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn engine_matches_model_siblings_with_overwrite(ops in prop::collection::vec(arb_op(), 1..120)) {
        run_case(ConflictMode::Siblings, ops).map_err(TestCaseError::fail)?;
    }
}
