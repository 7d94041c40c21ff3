//! The hand-over between the tasks that encode a connection's outgoing
//! messages and the one task that writes them: encoders append to a queue,
//! and the writer swaps the queue for the buffer it sent last, emptied. So
//! a connection keeps two buffers with their capacity instead of
//! allocating (and growing) a fresh queue after every write.

/// Largest buffer a writer hands back for reuse. Above it (after a large
/// value went out) the buffer is freed, so an idle connection does not
/// keep a megabyte.
pub const REUSED_BYTES_MAX: usize = 64 * 1024;

/// Takes everything `queued` holds and leaves `sent` (the buffer the
/// writer finished with, emptied here) in its place. The result is empty
/// when nothing was queued; hand it back on the next call either way.
pub fn take_queued(queued: &mut Vec<u8>, mut sent: Vec<u8>) -> Vec<u8> {
    if sent.capacity() > REUSED_BYTES_MAX {
        sent = Vec::new();
    }
    sent.clear();
    std::mem::replace(queued, sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_gets_the_sent_buffer_back_empty_with_its_capacity() {
        let mut queued = b"answer".to_vec();
        let mut sent = Vec::with_capacity(1024);
        sent.extend_from_slice(b"previous batch");
        let out = take_queued(&mut queued, sent);
        assert_eq!(out, b"answer");
        assert!(queued.is_empty());
        assert!(
            queued.capacity() >= 1024,
            "the sent buffer's capacity is reused"
        );
    }

    #[test]
    fn a_large_buffer_is_not_kept() {
        let mut queued = Vec::new();
        let sent = vec![0u8; REUSED_BYTES_MAX + 1];
        let out = take_queued(&mut queued, sent);
        assert!(out.is_empty());
        assert_eq!(queued.capacity(), 0);
    }
}
