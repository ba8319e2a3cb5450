//! API keys remembered between requests, so that a request does not read
//! its key from the database each time.
//!
//! A remembered key is trusted only while this process hears every change
//! to `api_keys`: a trigger notifies `tuma_api_keys` with the key's prefix
//! on each update or delete (a revocation, whoever makes it), and the
//! runner's LISTEN connection tells the cache, which forgets that key. While
//! that connection is down, or before it first listens, nothing is
//! remembered and every request reads its key. The connection counts as
//! listening only once a probe it sent itself has come back, and one that
//! stops hearing its probes (every 5 s) is dropped as lost, so a connection
//! that went silent without closing is noticed within about 10 s. A
//! revocation therefore takes effect on every node as soon as its
//! notification arrives (milliseconds after it commits); `api.key_cache_s`
//! bounds how long any key is remembered even so.
//!
//! A key read from the database is remembered only if nothing was forgotten
//! while it was being read: otherwise a read that began before a revocation
//! committed could remember the key after its notification was handled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::runner::{ListenSignal, Subscription};
use crate::store::keys::{self, KeyRow};

/// The channel the `api_keys` trigger notifies; the payload is the key's
/// prefix, or `*` for all of them.
pub const CHANNEL: &str = "tuma_api_keys";

/// The API keys this process remembers. Cheap to clone; clones share it.
#[derive(Clone, Debug)]
pub struct KeyCache {
    inner: Arc<Mutex<State>>,
    ttl: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// Whether the LISTEN connection hears `CHANNEL` now.
    listening: bool,
    /// Bumped by everything that forgets: a read remembers its row only if
    /// this did not move while it read.
    generation: u64,
    keys: HashMap<String, (KeyRow, Instant)>,
}

impl KeyCache {
    /// Remembers keys for at most `ttl`; zero remembers nothing.
    pub fn new(ttl: Duration) -> KeyCache {
        KeyCache {
            inner: Arc::default(),
            ttl,
        }
    }

    /// The live key with `prefix`, remembered or read.
    pub async fn by_prefix(&self, pool: &PgPool, prefix: &str) -> Result<Option<KeyRow>, sqlx::Error> {
        let generation = {
            let state = self.state();
            if let Some((row, at)) = state.keys.get(prefix) {
                if state.listening && at.elapsed() < self.ttl {
                    return Ok(Some(row.clone()));
                }
            }
            state.generation
        };
        let row = keys::by_prefix(pool, prefix).await?;
        if let Some(row) = &row {
            self.remember(prefix, row, generation);
        }
        Ok(row)
    }

    /// Remembers `row` if the cache is in use and nothing was forgotten
    /// since `generation` was read.
    fn remember(&self, prefix: &str, row: &KeyRow, generation: u64) {
        let mut state = self.state();
        if self.ttl.is_zero() || !state.listening || state.generation != generation {
            return;
        }
        state.keys.insert(prefix.to_owned(), (row.clone(), Instant::now()));
    }

    /// Forgets the key with `prefix` (`*`: every key).
    pub fn forget(&self, prefix: &str) {
        self.state().forget(prefix);
    }

    /// What the runner's LISTEN connection tells the cache.
    fn heard(&self, signal: ListenSignal<'_>) {
        let mut state = self.state();
        match signal {
            ListenSignal::Notified(prefix) => state.forget(prefix),
            ListenSignal::Listening | ListenSignal::Deaf => {
                state.forget("*");
                state.listening = signal == ListenSignal::Listening;
            }
        }
    }

    /// The runner subscription that keeps the cache true.
    pub fn subscription(&self) -> Subscription {
        let cache = self.clone();
        Subscription {
            channel: CHANNEL,
            on: Arc::new(move |signal| cache.heard(signal)),
        }
    }

    /// How many keys are remembered now.
    pub fn len(&self) -> usize {
        self.state().keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().expect("key cache mutex poisoned")
    }
}

impl State {
    fn forget(&mut self, prefix: &str) {
        self.generation += 1;
        if prefix == "*" {
            self.keys.clear();
        } else {
            self.keys.remove(prefix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str) -> KeyRow {
        KeyRow {
            id: uuid::Uuid::now_v7(),
            name: name.to_owned(),
            owner: "acme".to_owned(),
            key_hash: vec![1, 2, 3],
            scopes: vec!["admin".to_owned()],
        }
    }

    fn listening(ttl: Duration) -> KeyCache {
        let cache = KeyCache::new(ttl);
        cache.heard(ListenSignal::Listening);
        cache
    }

    #[test]
    fn a_key_is_remembered_only_while_changes_are_heard() {
        let deaf = KeyCache::new(Duration::from_secs(60));
        deaf.remember("aaaaaaaa", &row("a"), 0);
        assert!(deaf.is_empty(), "nothing is remembered before the connection listens");

        let cache = listening(Duration::from_secs(60));
        let generation = cache.state().generation;
        cache.remember("aaaaaaaa", &row("a"), generation);
        assert_eq!(cache.len(), 1);
        cache.heard(ListenSignal::Deaf);
        assert!(cache.is_empty(), "losing the connection forgets everything");
        let generation = cache.state().generation;
        cache.remember("aaaaaaaa", &row("a"), generation);
        assert!(cache.is_empty(), "and nothing is remembered until it listens again");

        let off = listening(Duration::ZERO);
        let generation = off.state().generation;
        off.remember("aaaaaaaa", &row("a"), generation);
        assert!(off.is_empty(), "a zero lifetime turns the cache off");
    }

    #[test]
    fn a_read_that_overlapped_a_revocation_is_not_remembered() {
        let cache = listening(Duration::from_secs(60));
        // A request starts reading the key...
        let generation = cache.state().generation;
        // ...the key is revoked and its notification handled meanwhile...
        cache.heard(ListenSignal::Notified("aaaaaaaa"));
        // ...and the row it read, from before the revocation, is dropped.
        cache.remember("aaaaaaaa", &row("a"), generation);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_notification_forgets_its_key_and_a_star_forgets_all() {
        let cache = listening(Duration::from_secs(60));
        for prefix in ["aaaaaaaa", "bbbbbbbb", "cccccccc"] {
            let generation = cache.state().generation;
            cache.remember(prefix, &row(prefix), generation);
        }
        cache.heard(ListenSignal::Notified("bbbbbbbb"));
        assert_eq!(cache.len(), 2);
        assert!(!cache.state().keys.contains_key("bbbbbbbb"));
        cache.heard(ListenSignal::Notified("*"));
        assert!(cache.is_empty());
    }
}
