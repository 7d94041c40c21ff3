//! Compaction policy. The merge itself lives with the engine (it needs the
//! engine's tables and manifest); choosing what to merge is sans-io.

pub(crate) mod picker;
