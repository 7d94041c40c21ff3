//! Merging sorted sources (memtable snapshots and SSTable iterators) into
//! one ordered stream of `(token, key, sibling set)`, merging the sets of a
//! key that appears in several sources. Used by scans and compaction.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::options::ConflictMode;
use crate::table::TableIter;
use crate::token::Token;
use crate::version::SiblingSet;

/// One raw entry: token, key, encoded sibling set.
pub(crate) type Row = (Token, Vec<u8>, Vec<u8>);

/// A sorted input of the merge.
pub(crate) enum Source {
    /// Rows already in memory (a memtable range), in order.
    Rows(std::vec::IntoIter<Row>),
    /// A table being read block by block; the path names it in errors.
    Table(TableIter, PathBuf),
}

impl Source {
    async fn next(&mut self) -> Result<Option<Row>> {
        match self {
            Source::Rows(rows) => Ok(rows.next()),
            Source::Table(iter, _) => iter.next().await,
        }
    }

    fn label(&self) -> PathBuf {
        match self {
            Source::Rows(_) => PathBuf::from("memtable"),
            Source::Table(_, path) => path.clone(),
        }
    }
}

/// K-way merge over a handful of sources (one per memtable and table; a
/// linear scan of the heads beats a heap at these counts).
pub(crate) struct MergeIter {
    sources: Vec<Source>,
    heads: Vec<Option<Row>>,
    mode: ConflictMode,
}

impl MergeIter {
    /// Starts the merge, reading the first row of every source.
    pub(crate) async fn new(mut sources: Vec<Source>, mode: ConflictMode) -> Result<Self> {
        let mut heads = Vec::with_capacity(sources.len());
        for s in &mut sources {
            heads.push(s.next().await?);
        }
        Ok(MergeIter {
            sources,
            heads,
            mode,
        })
    }

    /// The next key in `(token, key)` order with its merged set.
    pub(crate) async fn next(&mut self) -> Result<Option<(Token, Vec<u8>, SiblingSet)>> {
        let mut min: Option<(Token, Vec<u8>)> = None;
        for (token, key, _) in self.heads.iter().flatten() {
            let smaller = match &min {
                None => true,
                Some((t, k)) => (*token, key.as_slice()) < (*t, k.as_slice()),
            };
            if smaller {
                min = Some((*token, key.clone()));
            }
        }
        let Some((token, key)) = min else {
            return Ok(None);
        };
        let mut merged: Option<SiblingSet> = None;
        for i in 0..self.heads.len() {
            let matches = matches!(&self.heads[i], Some((t, k, _)) if *t == token && *k == key);
            if !matches {
                continue;
            }
            if let Some((_, _, bytes)) = self.heads[i].take() {
                let set = SiblingSet::decode(&bytes, self.mode).map_err(|e| {
                    Error::corrupt(
                        self.sources[i].label(),
                        0,
                        format!("entry for a key of token {token:#x}: {e}"),
                    )
                })?;
                match merged.as_mut() {
                    Some(m) => m.merge(&set, self.mode),
                    None => merged = Some(set),
                }
            }
            self.heads[i] = self.sources[i].next().await?;
        }
        Ok(merged.map(|set| (token, key, set)))
    }
}
