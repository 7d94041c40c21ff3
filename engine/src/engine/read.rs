//! The read path: memtables, then every table whose range and bloom filter
//! admit the key, merging sibling sets (a key's versions may be spread over
//! several tables, so the first hit is not the answer).

use std::rc::Rc;

use super::Engine;
use crate::error::{Error, Result};
use crate::merge::{MergeIter, Source};
use crate::token::{token_of, Token, TokenRange};
use crate::version::{wall_clock_ms, SiblingSet};

/// One page of a token-range scan.
#[derive(Debug, Default)]
pub struct ScanBatch {
    /// Keys in `(token, key)` order with their sets (expired versions
    /// removed; keys with nothing left omitted).
    pub entries: Vec<(Vec<u8>, SiblingSet)>,
    /// Pass as `after` to continue; `None` when the range is exhausted.
    pub next_after: Option<Vec<u8>>,
}

impl Engine {
    /// The key's sibling set as a reader sees it now: expired versions
    /// removed; `None` when nothing is left. Tombstones stay in the set (a
    /// coordinator needs their causal context); `SiblingSet::live` and
    /// `winner` give what a user sees.
    pub async fn get(&self, key: &[u8]) -> Result<Option<SiblingSet>> {
        let set = self.get_raw(key).await?;
        self.counters.gets.set(self.counters.gets.get() + 1);
        let now = wall_clock_ms();
        Ok(set
            .map(|s| s.without_expired(now))
            .filter(|s| !s.is_empty()))
    }

    /// What a Redis-style reader sees of `key` at `now_ms` — the
    /// [`SiblingSet::winner`]'s value and expiry (0 = none), or `None` —
    /// passed to `f` as borrowed bytes, when that needs neither I/O nor a
    /// decoded sibling set: no table may hold the key (key range and bloom
    /// filter), no frozen memtable has it, and the active memtable holds at
    /// most a single version. `Ok(None)` (without calling `f`) otherwise:
    /// then [`Engine::get`] answers.
    ///
    /// The point reads of a cache-like workload all take this path; it
    /// skips the decode, the allocations of a set and its value, and the
    /// copy of the value out of the memtable.
    pub fn winner_now<T>(
        &self,
        key: &[u8],
        now_ms: u64,
        f: impl FnOnce(Option<(&[u8], u64)>) -> T,
    ) -> Result<Option<T>> {
        self.check_key(key)?;
        self.check_open()?;
        let token = token_of(key);
        let st = self.state.borrow();
        if let Some(frozen) = &st.frozen {
            if frozen.mem.borrow().get(token, key).is_some() {
                return Ok(None);
            }
        }
        if st.tables.iter().any(|t| t.may_contain(token, key)) {
            return Ok(None);
        }
        let winner = match st.active.get(token, key) {
            None => None,
            Some(bytes) => {
                match SiblingSet::encoded_single_winner(bytes, self.opts.conflict, now_ms) {
                    Some(winner) => winner,
                    None => return Ok(None),
                }
            }
        };
        self.counters.gets.set(self.counters.gets.get() + 1);
        Ok(Some(f(winner)))
    }

    /// The merged set with nothing filtered.
    pub(super) async fn get_raw(&self, key: &[u8]) -> Result<Option<SiblingSet>> {
        self.check_key(key)?;
        self.check_open()?;
        let token = token_of(key);
        let mode = self.opts.conflict;
        let mut acc: Option<SiblingSet> = None;
        let mut merge = |bytes: &[u8], source: &dyn Fn() -> std::path::PathBuf| -> Result<()> {
            let set = SiblingSet::decode(bytes, mode).map_err(|e| {
                Error::corrupt(
                    source(),
                    0,
                    format!("entry of a key with token {token:#x}: {e}"),
                )
            })?;
            match acc.as_mut() {
                Some(a) => a.merge(&set, mode),
                None => acc = Some(set),
            }
            Ok(())
        };
        let tables: Vec<Rc<crate::table::TableReader>> = {
            let st = self.state.borrow();
            if let Some(bytes) = st.active.get(token, key) {
                merge(bytes, &|| "memtable".into())?;
            }
            if let Some(frozen) = &st.frozen {
                if let Some(bytes) = frozen.mem.borrow().get(token, key) {
                    merge(bytes, &|| "memtable".into())?;
                }
            }
            // Only the key-range check here; TableReader::get consults the
            // bloom filter itself.
            st.tables
                .iter()
                .filter(|t| t.in_range(token, key))
                .cloned()
                .collect()
        };
        for table in tables {
            if let Some(bytes) = table.get(token, key).await? {
                let path = table.meta().path.clone();
                merge(&bytes, &move || path.clone())?;
            }
        }
        Ok(acc)
    }

    /// Up to `limit` keys of `range` in `(token, key)` order, starting after
    /// the key `after` (from the previous batch's `next_after`), or at the
    /// range start. Reads a consistent-enough view for repair and streaming:
    /// each key is merged from every source; keys written during the scan
    /// may or may not appear.
    pub async fn scan(
        &self,
        range: TokenRange,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ScanBatch> {
        self.check_open()?;
        let limit = limit.max(1);
        let (start_token, start_key, exclusive): (Token, Vec<u8>, bool) = match after {
            Some(k) => (token_of(k), k.to_vec(), true),
            None => (range.start, Vec::new(), false),
        };
        let mut sources = Vec::new();
        {
            let st = self.state.borrow();
            let start = (start_token, start_key.as_slice());
            sources.push(Source::Rows(
                st.active
                    .range(start, exclusive, range.end, limit)
                    .into_iter(),
            ));
            if let Some(frozen) = &st.frozen {
                let rows = frozen
                    .mem
                    .borrow()
                    .range(start, exclusive, range.end, limit);
                sources.push(Source::Rows(rows.into_iter()));
            }
            for t in &st.tables {
                let iter = t.iter((start_token, start_key.clone()), range.end, true);
                sources.push(Source::Table(iter, t.meta().path.clone()));
            }
        }
        let mut merge = MergeIter::new(sources, self.opts.conflict).await?;
        let now = wall_clock_ms();
        let mut batch = ScanBatch::default();
        let mut last: Option<Vec<u8>> = None;
        let mut seen = 0usize;
        while let Some((token, key, set)) = merge.next().await? {
            if exclusive && token == start_token && key == start_key {
                continue;
            }
            seen += 1;
            last = Some(key.clone());
            let set = set.without_expired(now);
            if !set.is_empty() {
                batch.entries.push((key, set));
            }
            if seen >= limit {
                break;
            }
        }
        batch.next_after = if seen >= limit { last } else { None };
        Ok(batch)
    }
}
