//! Tokens: the position of a key on the ring and inside a shard.
//!
//! `token = xxh3_64(key)` with a fixed seed of 0. It is part of the on-disk
//! and wire formats (entries are ordered by `(token, key)`), so it must never
//! change and must never come from a std or randomised hasher.

use std::ops::RangeInclusive;

/// A key's 64-bit position on the token ring.
pub type Token = u64;

/// Computes the token of `key`; stable across processes, machines and versions.
pub fn token_of(key: &[u8]) -> Token {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// An inclusive range of tokens, `start..=end`; scans over the whole shard
/// use `TokenRange::FULL`. Inclusive bounds let the full ring be expressed
/// without a 65-bit end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenRange {
    /// First token included.
    pub start: Token,
    /// Last token included.
    pub end: Token,
}

impl TokenRange {
    /// Every token.
    pub const FULL: TokenRange = TokenRange {
        start: 0,
        end: u64::MAX,
    };

    /// True when `token` lies in the range.
    pub fn contains(&self, token: Token) -> bool {
        self.start <= token && token <= self.end
    }

    /// The range as a std inclusive range.
    pub fn as_range(&self) -> RangeInclusive<Token> {
        self.start..=self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_stable_across_builds() {
        // Pinned values: a change here breaks every data directory and cluster.
        assert_eq!(token_of(b""), 0x2d06800538d394c2);
        assert_eq!(token_of(b"session:42"), token_of(b"session:42"));
        assert_ne!(token_of(b"a"), token_of(b"b"));
    }
}
