//! Group commit for workers: many jobs of one kind, running at the same time
//! on this node, handled together by one call that can do their database
//! work in one transaction.
//!
//! A worker hands its item to a [`Batcher`] and waits for its own answer.
//! Items queue while a batch is being handled; the next batch takes
//! everything that queued (up to its maximum), so batches grow with load by
//! themselves and a lone item is handled at once, never held back waiting
//! for company. Each batch runs on its own task, so a job whose attempt is
//! stopped (timeout, shutdown) cannot cut short the other jobs' work; a
//! handler that means to commit a job's work must therefore complete that
//! job in the same transaction ([`JobContext::complete_all_in`]), which
//! fails for a job whose lease has gone.
//!
//! [`JobContext::complete_all_in`]: super::JobContext::complete_all_in

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::oneshot;

type Handler<I, O> = Arc<dyn Fn(Vec<I>) -> BoxFuture<'static, Vec<O>> + Send + Sync>;

/// Hands items to a handler in batches; see the module documentation.
pub struct Batcher<I, O> {
    shared: Arc<Shared<I, O>>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Batcher {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<I, O> {
    /// For metrics: `tuma_batch_size{batch}`.
    name: &'static str,
    handler: Handler<I, O>,
    max_batch: usize,
    lanes: usize,
    state: Mutex<Queue<I, O>>,
}

struct Queue<I, O> {
    waiting: VecDeque<(I, oneshot::Sender<O>)>,
    /// Batch tasks running now; at most `lanes`.
    busy: usize,
}

/// Why a batched item got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the batch handling this item panicked")]
pub struct BatchPanicked;

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// A batcher named `name` (in metrics) calling `handler` with at most
    /// `max_batch` items at a time, on at most `lanes` batches at once. The
    /// handler returns one answer per item, in the items' order.
    pub fn new<F>(name: &'static str, max_batch: usize, lanes: usize, handler: F) -> Batcher<I, O>
    where
        F: Fn(Vec<I>) -> BoxFuture<'static, Vec<O>> + Send + Sync + 'static,
    {
        assert!(max_batch > 0 && lanes > 0, "a batcher needs room for one item");
        Batcher {
            shared: Arc::new(Shared {
                name,
                handler: Arc::new(handler),
                max_batch,
                lanes,
                state: Mutex::new(Queue {
                    waiting: VecDeque::new(),
                    busy: 0,
                }),
            }),
        }
    }

    /// Queues `item` and waits for its answer.
    pub async fn run(&self, item: I) -> Result<O, BatchPanicked> {
        let (answer, answered) = oneshot::channel();
        let start_lane = {
            let mut queue = self.shared.state.lock().expect("batcher mutex poisoned");
            queue.waiting.push_back((item, answer));
            let free = queue.busy < self.shared.lanes;
            if free {
                queue.busy += 1;
            }
            free
        };
        if start_lane {
            tokio::spawn(lane(Arc::clone(&self.shared)));
        }
        answered.await.map_err(|_| BatchPanicked)
    }
}

/// Handles batches until nothing is waiting, then gives its lane back.
async fn lane<I: Send + 'static, O: Send + 'static>(shared: Arc<Shared<I, O>>) {
    loop {
        let batch: Vec<(I, oneshot::Sender<O>)> = {
            let mut queue = shared.state.lock().expect("batcher mutex poisoned");
            if queue.waiting.is_empty() {
                queue.busy -= 1;
                return;
            }
            let take = queue.waiting.len().min(shared.max_batch);
            queue.waiting.drain(..take).collect()
        };
        let (items, answers): (Vec<I>, Vec<oneshot::Sender<O>>) = batch.into_iter().unzip();
        let expected = items.len();
        metrics::histogram!("tuma_batch_size", "batch" => shared.name).record(expected as f64);
        // The handler is called inside the caught future, so that a panic
        // while building its future is caught too.
        let handled = async { (shared.handler)(items).await };
        match AssertUnwindSafe(handled).catch_unwind().await {
            Ok(outputs) => {
                debug_assert_eq!(outputs.len(), expected, "a batch handler answers every item");
                for (answer, output) in answers.into_iter().zip(outputs) {
                    // The waiting job may be gone (timed out, shut down);
                    // its answer is then nobody's.
                    let _ = answer.send(output);
                }
            }
            // Dropping the answers tells each waiting item.
            Err(_) => tracing::error!(batch = shared.name, items = expected, "batch handler panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn items_arriving_while_a_batch_runs_are_handled_together_and_each_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let batcher = Batcher::new("test", 100, 1, move |items: Vec<u32>| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(items.len());
                tokio::time::sleep(Duration::from_millis(20)).await;
                items.into_iter().map(|i| i * 10).collect()
            }
            .boxed()
        });
        let answers = futures::future::join_all((0..50u32).map(|i| {
            let batcher = batcher.clone();
            async move { batcher.run(i).await.unwrap() }
        }))
        .await;
        assert_eq!(answers, (0..50u32).map(|i| i * 10).collect::<Vec<_>>());
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 50);
        assert!(sizes.len() < 50, "items were batched: {sizes:?}");
        // A lone item is handled at once, without waiting for company.
        assert_eq!(batcher.run(7).await, Ok(70));
    }

    #[tokio::test]
    async fn batches_never_exceed_their_maximum_and_lanes_run_side_by_side() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let largest = Arc::new(AtomicUsize::new(0));
        let (r, m, l) = (Arc::clone(&running), Arc::clone(&most), Arc::clone(&largest));
        let batcher = Batcher::new("test", 4, 3, move |items: Vec<u32>| {
            let (r, m, l) = (Arc::clone(&r), Arc::clone(&m), Arc::clone(&l));
            async move {
                l.fetch_max(items.len(), Ordering::SeqCst);
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                items
            }
            .boxed()
        });
        let answers = futures::future::join_all((0..40u32).map(|i| {
            let batcher = batcher.clone();
            async move { batcher.run(i).await.unwrap() }
        }))
        .await;
        assert_eq!(answers, (0..40u32).collect::<Vec<_>>());
        assert!(largest.load(Ordering::SeqCst) <= 4);
        assert!(most.load(Ordering::SeqCst) <= 3);
        assert!(most.load(Ordering::SeqCst) >= 2, "lanes ran side by side");
    }

    #[tokio::test]
    async fn a_panicking_batch_fails_its_items_and_the_batcher_keeps_working() {
        let batcher = Batcher::new("test", 10, 1, |items: Vec<u32>| {
            async move {
                assert!(!items.contains(&13), "unlucky");
                items
            }
            .boxed()
        });
        assert_eq!(batcher.run(13).await, Err(BatchPanicked));
        assert_eq!(batcher.run(7).await, Ok(7));
        // A handler that panics before it has a future to give back.
        let batcher = Batcher::new("test", 10, 1, |items: Vec<u32>| {
            assert!(!items.contains(&13), "unlucky");
            async move { items }.boxed()
        });
        assert_eq!(batcher.run(13).await, Err(BatchPanicked));
        assert_eq!(batcher.run(7).await, Ok(7));
    }
}
