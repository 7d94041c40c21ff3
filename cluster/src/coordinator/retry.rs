//! Replica writes that failed, waiting to be sent again (bounded).
//!
//! A coordinator answers its client after W replicas; a replica that
//! failed or timed out gets the write again from here, with exponential
//! backoff, a bounded number of times. The queue is bounded too: when it
//! is full the oldest entry is dropped and counted — anti-entropy repairs
//! what it loses. (Hinted handoff will make these durable.)

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::ring::NodeIndex;
use crate::runtime::metrics::{bump, ShardMetrics};

/// First retry delay; doubles per attempt.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// One replica write to send again.
#[derive(Clone, Debug)]
pub struct Retry {
    /// The replica node.
    pub node: NodeIndex,
    /// The key.
    pub key: Vec<u8>,
    /// Encoded sibling set to merge there.
    pub set: Vec<u8>,
    /// Attempts made so far (the original send counts as one).
    pub attempts: u32,
    /// Not before this instant.
    pub due: Instant,
}

/// A shard's retry queue.
pub struct RetryQueue {
    items: RefCell<VecDeque<Retry>>,
    capacity: usize,
    attempts_max: u32,
    metrics: Rc<ShardMetrics>,
}

impl RetryQueue {
    /// An empty queue holding at most `capacity` entries, each tried at
    /// most `attempts_max` times in all; counted in `metrics`.
    pub fn new(capacity: usize, attempts_max: u32, metrics: Rc<ShardMetrics>) -> RetryQueue {
        RetryQueue {
            items: RefCell::new(VecDeque::new()),
            capacity,
            attempts_max,
            metrics,
        }
    }

    /// Queues a write that failed on its first send.
    pub fn push_failed(&self, node: NodeIndex, key: Vec<u8>, set: Vec<u8>) {
        self.requeue(Retry {
            node,
            key,
            set,
            attempts: 1,
            due: Instant::now(),
        });
        bump(&self.metrics.retries_queued);
    }

    /// Puts back an entry whose retry failed, or drops it when its attempts
    /// are used up.
    pub fn requeue(&self, mut retry: Retry) {
        if retry.attempts >= self.attempts_max {
            bump(&self.metrics.retries_dropped);
            return;
        }
        let shift = retry.attempts.saturating_sub(1).min(16);
        retry.due = Instant::now() + (BACKOFF_FIRST * (1u32 << shift)).min(BACKOFF_MAX);
        let mut items = self.items.borrow_mut();
        if items.len() >= self.capacity {
            items.pop_front();
            bump(&self.metrics.retries_dropped);
        }
        if self.capacity > 0 {
            items.push_back(retry);
        } else {
            bump(&self.metrics.retries_dropped);
        }
        self.metrics.retries_pending.set(items.len() as u64);
    }

    /// Takes up to `max` entries that are due.
    pub fn take_due(&self, max: usize) -> Vec<Retry> {
        let now = Instant::now();
        let mut items = self.items.borrow_mut();
        let mut due = Vec::new();
        let mut i = 0;
        while i < items.len() && due.len() < max {
            if items[i].due <= now {
                if let Some(r) = items.remove(i) {
                    due.push(r);
                }
            } else {
                i += 1;
            }
        }
        self.metrics.retries_pending.set(items.len() as u64);
        due
    }

    /// Records a successful retry.
    pub fn delivered(&self) {
        bump(&self.metrics.retries_delivered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_size_and_attempts() {
        let metrics = Rc::new(ShardMetrics::default());
        let q = RetryQueue::new(2, 3, metrics.clone());
        for i in 0..3u8 {
            q.push_failed(0, vec![i], vec![]);
        }
        let s = metrics.snapshot();
        assert_eq!(
            (s.retries_pending, s.retries_queued, s.retries_dropped),
            (2, 3, 1)
        );
        // The first retry waits for the first backoff step.
        assert!(q.take_due(10).is_empty());
        std::thread::sleep(Duration::from_millis(150));
        let due = q.take_due(10);
        assert_eq!(due.iter().map(|r| r.key[0]).collect::<Vec<_>>(), [1, 2]);
        // Requeued entries wait for their backoff.
        for mut r in due {
            r.attempts += 1;
            q.requeue(r);
        }
        assert!(q.take_due(10).is_empty());
        std::thread::sleep(Duration::from_millis(250));
        let again = q.take_due(10);
        assert_eq!(again.len(), 2);
        for mut r in again {
            r.attempts += 1; // third attempt failed: given up
            q.requeue(r);
        }
        assert_eq!(metrics.snapshot().retries_pending, 0);
        assert_eq!(metrics.snapshot().retries_dropped, 3);
    }
}
