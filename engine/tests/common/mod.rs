//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

pub mod fuzz;
#[path = "../../../tests/common/loopfs.rs"]
pub mod loopfs;
pub mod seed;

use std::future::Future;
use std::time::Duration;

use corekv_engine::{ConflictMode, Options, SyncMode};

/// Runs `f` on a fresh glommio executor and returns its output. Each test
/// gets its own executor, like a shard.
pub fn run<T: Send + 'static, F, Fut>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("executor thread")
}

/// Small bounds so a short test flushes, rolls segments and compacts.
pub fn small_options(conflict: ConflictMode) -> Options {
    Options {
        replica_id: 7,
        max_key_bytes: 256,
        max_value_bytes: 8 * 1024,
        conflict,
        sync_mode: SyncMode::Batch,
        segment_bytes: 128 * 1024,
        commit_batch_bytes_max: 32 * 1024,
        memtable_bytes_max: 16 * 1024,
        log_bytes_max: 64 << 20,
        block_cache_bytes: 64 * 1024,
        block_bytes: 4096,
        bloom_bits_per_key: 10,
        gc_grace: Duration::from_secs(3600),
        compaction_min_tables: 3,
        compaction_max_tables: 8,
        // Small, so concurrent reads in the tests also wait for slots.
        max_concurrent_reads: 2,
        auto_compaction: true,
        // Room for a few of the largest values, inside one batch.
        max_set_bytes: Some(24 * 1024),
        ..Options::default()
    }
}

/// What a Redis-style reader sees of a get's answer.
pub fn value_of(set: Option<corekv_engine::version::SiblingSet>) -> Option<Vec<u8>> {
    set.and_then(|s| {
        s.winner(corekv_engine::version::wall_clock_ms())
            .and_then(|v| v.value.clone())
    })
}

/// Files in `dir` whose names start with `prefix`, sorted.
pub fn files_with(dir: &std::path::Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    v.sort();
    v
}
