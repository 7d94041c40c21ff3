//! Bounds every decoder enforces.

/// Sizes a peer may send. Exceeding one is an error detected from the
/// frame header, so a server can answer and close without buffering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest native frame (after the 4-byte length), in bytes.
    pub max_frame_bytes: usize,
    /// Largest key.
    pub max_key_bytes: usize,
    /// Largest value.
    pub max_value_bytes: usize,
    /// Most elements in one RESP array (e.g. MSET arguments).
    pub max_array_len: usize,
    /// Longest RESP inline command line.
    pub max_inline_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 2 * 1024 * 1024,
            max_key_bytes: 64 * 1024,
            max_value_bytes: 1024 * 1024,
            max_array_len: 1024 * 1024,
            max_inline_bytes: 64 * 1024,
        }
    }
}
