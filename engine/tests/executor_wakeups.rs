//! A shard's executor sleeps whenever it has nothing to do, and every kind
//! of event must wake it again, not just the first one: the engine's file
//! work that runs on glommio's blocking thread pool, and messages from
//! other shards. Both arrive through the executor's latency ring, which a
//! sleeping executor watches through a poll that the vendored glommio now
//! keeps across sleeps (see `vendor/glommio/COREKV-PATCHES.md`). A poll
//! that fired once and was then taken for still armed would leave the
//! executor asleep on the second event; these tests wait for the
//! twentieth, with a deadline, so such a hang fails instead of stalling.

use std::sync::mpsc;
use std::time::Duration;

use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};

/// Rounds of "sleep, then be woken" per test.
const ROUNDS: u32 = 20;

/// Generous: each round takes about 2 ms when the wake-ups work.
const DEADLINE: Duration = Duration::from_secs(20);

/// Runs `f` on an executor thread and fails the test if it has not
/// finished by the deadline.
fn within_deadline<F, Fut>(f: F) -> u32
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = u32> + 'static,
{
    let (tx, rx) = mpsc::channel();
    let _executor = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let n = f().await;
            let _ = tx.send(n);
        })
        .expect("spawn executor");
    rx.recv_timeout(DEADLINE)
        .expect("the executor stopped waking up (still asleep after the deadline)")
}

#[test]
fn blocking_pool_results_wake_a_sleeping_executor_every_time() {
    let done = within_deadline(|| async {
        let mut done = 0;
        for _ in 0..ROUNDS {
            // The executor has nothing else to do while the pool thread
            // sleeps, so it goes to sleep too; the result must wake it.
            done += glommio::executor()
                .spawn_blocking(|| {
                    std::thread::sleep(Duration::from_millis(2));
                    1
                })
                .await;
        }
        done
    });
    assert_eq!(done, ROUNDS);
}

#[test]
fn messages_from_another_executor_wake_a_sleeping_executor_every_time() {
    let (sender, receiver) = shared_channel::new_bounded::<u32>(1);
    let _sender = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let sender = sender.connect().await;
            for i in 0..ROUNDS {
                // Pause first, so the receiver is asleep when `i` arrives.
                glommio::timer::sleep(Duration::from_millis(2)).await;
                if sender.send(i).await.is_err() {
                    return;
                }
            }
        })
        .expect("spawn sender");
    let received = within_deadline(move || async move {
        let receiver = receiver.connect().await;
        let mut received = 0;
        while let Some(i) = receiver.recv().await {
            assert_eq!(i, received, "messages arrive in order");
            received += 1;
            if received == ROUNDS {
                break;
            }
        }
        received
    });
    assert_eq!(received, ROUNDS);
}
