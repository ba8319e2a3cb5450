//! Payout creates first: while a group of creates is being admitted, the
//! node's other database work waits for it before starting a transaction.
//!
//! On a node whose cores PostgreSQL shares, the runner's work arrives in
//! bursts (a busy queue is claimed every `runner.busy_poll_ms`), and a
//! burst's statements, each on its own backend, take the cores from the
//! create groups running beside them: at 500 creates a second a create in
//! a burst waited 15–20 ms. Here a connection leaving the main pool waits
//! while a group is in flight, at most `api.creates_first_ms`, and the
//! waiters go one at a time, a millisecond apart, once no group is: the
//! runner's work fills the gaps between groups instead of landing on them.
//! A create's own statements run on the create lanes' pool, which never
//! waits. The cost is the runner's: at full load it catches up only as
//! creates leave room (see ARCHITECTURE.md).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// How far apart waiters are let go once no group is in flight.
const STAGGER: Duration = Duration::from_millis(1);

/// The create groups in flight on this node, and the work waiting for them.
#[derive(Clone)]
pub struct Foreground {
    inner: Arc<Inner>,
}

struct Inner {
    /// The longest one acquisition waits; zero: none does.
    max_wait: Duration,
    in_flight: AtomicUsize,
    clear: Notify,
}

impl std::fmt::Debug for Foreground {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Foreground")
            .field("max_wait", &self.inner.max_wait)
            .field("in_flight", &self.inner.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}

/// A group in flight, until dropped.
#[must_use = "the group counts as in flight only while this is held"]
pub struct Entered {
    inner: Arc<Inner>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        if self.inner.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            // One waiter now; it lets the next go a moment later.
            self.inner.clear.notify_one();
        }
    }
}

impl Foreground {
    /// Work waits at most `max_wait` for the groups in flight; zero turns
    /// waiting off.
    pub fn new(max_wait: Duration) -> Foreground {
        Foreground {
            inner: Arc::new(Inner {
                max_wait,
                in_flight: AtomicUsize::new(0),
                clear: Notify::new(),
            }),
        }
    }

    /// Nothing ever waits.
    pub fn off() -> Foreground {
        Foreground::new(Duration::ZERO)
    }

    /// A group starts; it is in flight until the guard is dropped.
    pub fn enter(&self) -> Entered {
        self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
        Entered {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Returns once no group is in flight (and, if it had to wait, its turn
    /// among the waiters came), or after the longest wait.
    pub async fn wait(&self) {
        let inner = &self.inner;
        if inner.max_wait.is_zero() || inner.in_flight.load(Ordering::SeqCst) == 0 {
            return;
        }
        let deadline = tokio::time::Instant::now() + inner.max_wait;
        loop {
            let notified = inner.clear.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if inner.in_flight.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
        // Woken as the one waiter to go: the next goes a moment later, if
        // the way is still clear then (else the next group's end wakes it).
        let inner = Arc::clone(inner);
        tokio::spawn(async move {
            tokio::time::sleep(STAGGER).await;
            if inner.in_flight.load(Ordering::SeqCst) == 0 {
                inner.clear.notify_one();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn nothing_waits_while_no_group_is_in_flight_or_when_turned_off() {
        let started = Instant::now();
        Foreground::new(Duration::from_millis(25)).wait().await;
        let off = Foreground::off();
        let _group = off.enter();
        off.wait().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn work_waits_for_the_group_and_no_longer_than_the_longest_wait() {
        let foreground = Foreground::new(Duration::from_millis(25));
        let group = foreground.enter();
        let waiter = tokio::spawn({
            let foreground = foreground.clone();
            async move {
                let started = Instant::now();
                foreground.wait().await;
                started.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        drop(group);
        assert_eq!(waiter.await.unwrap(), Duration::from_millis(10));

        let _stuck = foreground.enter();
        let started = Instant::now();
        foreground.wait().await;
        assert_eq!(started.elapsed(), Duration::from_millis(25));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_go_one_at_a_time_once_the_groups_end() {
        let foreground = Foreground::new(Duration::from_millis(100));
        let first = foreground.enter();
        let second = foreground.enter();
        let start = Instant::now();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let foreground = foreground.clone();
                tokio::spawn(async move {
                    foreground.wait().await;
                    start.elapsed()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(waiters.iter().all(|w| !w.is_finished()), "one group is still in flight");
        drop(second);
        let mut released = Vec::new();
        for waiter in waiters {
            released.push(waiter.await.unwrap());
        }
        released.sort();
        assert_eq!(released, [10, 11, 12].map(Duration::from_millis), "a millisecond apart");
    }
}
