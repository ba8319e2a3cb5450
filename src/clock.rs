//! The engine's notion of "now" for durable time: job run times, leases,
//! retention cut-offs and (later) workflow timers.
//!
//! In production every node reads the *database's* clock (`now()` inside the
//! SQL), so that nodes whose own clocks drift still agree on when a lease ran
//! out. Tests swap in a [`ManualClock`] and move time forward explicitly, so
//! a 30-second poll or an hour of backoff is tested without sleeping.
//!
//! Every SQL statement that reads time takes `coalesce($n, now())` with
//! `$n = clock.sql_now()`: `None` means "the database's clock".

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// Where durable time comes from.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The database server's clock: one clock for every node.
    #[default]
    Database,
    /// A clock that only moves when a test moves it.
    Manual(ManualClock),
}

impl Clock {
    /// The value to bind for `coalesce($n, now())` in SQL.
    pub fn sql_now(&self) -> Option<DateTime<Utc>> {
        match self {
            Clock::Database => None,
            Clock::Manual(clock) => Some(clock.now()),
        }
    }

    /// The current time as this process sees it: the manual time in tests,
    /// the local clock otherwise (only for values that are not compared
    /// across nodes, such as the tick a cron entry fired for).
    pub fn local_now(&self) -> DateTime<Utc> {
        match self {
            Clock::Database => Utc::now(),
            Clock::Manual(clock) => clock.now(),
        }
    }
}

/// A clock for tests: starts at a given instant and moves only by
/// [`ManualClock::advance`]. Cheap to clone; clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock reading `start`, truncated to whole microseconds because that
    /// is what Postgres stores; comparisons with stored times stay exact.
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        let start = start
            .duration_trunc(TimeDelta::microseconds(1))
            .expect("truncating to microseconds cannot overflow");
        ManualClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// A clock reading the current wall-clock time.
    pub fn starting_now() -> ManualClock {
        ManualClock::new(Utc::now())
    }

    pub fn now(&self) -> DateTime<Utc> {
        *self.now.lock().expect("clock mutex poisoned")
    }

    pub fn advance(&self, by: Duration) {
        let by = TimeDelta::from_std(by).expect("advance by a sane duration");
        *self.now.lock().expect("clock mutex poisoned") += by;
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().expect("clock mutex poisoned") = to;
    }
}
