//! Circuit breaking per provider. A provider failing fast (a burst of 5xx,
//! overload answers or timeouts) would otherwise have every payout burn its
//! retries against it, and end up dead or unresolved for nothing. After
//! `trip_after` such answers in a row, the breaker *opens*: the provider's
//! queue is paused on every node until a backoff has passed (a timed pause
//! in the database, so it survives restarts and holds across nodes), and
//! jobs that meet the trouble meanwhile are snoozed, not failed. When the
//! pause ends, the next calls probe the provider (half-open): one success
//! closes the breaker; more trouble opens it again for twice as long, up to
//! `open_max_s`.
//!
//! The counting is per node (each node sees its own calls); the pause is
//! shared. The decision is a pure function of the breaker's state, the
//! answer and the time ([`Breaker::record`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// `[providers.<name>.circuit]` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitConfig {
    /// Provider-trouble answers in a row that open the breaker.
    pub trip_after: u32,
    /// How long the first opening pauses the provider's queue, in seconds;
    /// each further opening without a success in between doubles it.
    pub open_base_s: u64,
    /// The longest pause, in seconds.
    pub open_max_s: u64,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            trip_after: 5,
            open_base_s: 5,
            open_max_s: 300,
        }
    }
}

/// One provider's breaker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Breaker {
    /// Trouble answers in a row since the last success.
    pub consecutive: u32,
    /// Openings since the last success.
    pub trips: u32,
    /// While set and in the future, the breaker is open.
    pub open_until: Option<DateTime<Utc>>,
}

/// What a recorded answer means for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Carry on (retry as the job's policy says).
    Closed,
    /// This answer opened the breaker: pause the queue until the time.
    Trip { until: DateTime<Utc>, pause: Duration },
    /// The breaker is open already: snooze the job until it closes.
    Open { remaining: Duration },
}

impl Breaker {
    /// Records one answer: `trouble` when the provider failed fast, else
    /// any answer at all (a refusal of one request is still an answer).
    pub fn record(&mut self, config: &CircuitConfig, trouble: bool, now: DateTime<Utc>) -> Decision {
        if !trouble {
            *self = Breaker::default();
            return Decision::Closed;
        }
        if let Some(until) = self.open_until.filter(|until| *until > now) {
            let remaining = (until - now).to_std().unwrap_or_default();
            return Decision::Open { remaining };
        }
        self.consecutive += 1;
        // Half-open: the first answer after a pause decides.
        let probing = self.trips > 0;
        if self.consecutive < config.trip_after.max(1) && !probing {
            return Decision::Closed;
        }
        self.trips += 1;
        let factor = 2u64.saturating_pow(self.trips.saturating_sub(1).min(32));
        let pause_s = config.open_base_s.saturating_mul(factor).min(config.open_max_s).max(1);
        let pause = Duration::from_secs(pause_s);
        let until = now + chrono::Duration::seconds(pause_s as i64);
        self.open_until = Some(until);
        self.consecutive = 0;
        Decision::Trip { until, pause }
    }

    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.open_until.is_some_and(|until| until > now)
    }
}

/// Every provider's breaker on this node.
#[derive(Clone, Default)]
pub struct Circuits {
    configs: Arc<HashMap<String, CircuitConfig>>,
    breakers: Arc<Mutex<HashMap<String, Breaker>>>,
}

impl Circuits {
    pub fn new(configs: HashMap<String, CircuitConfig>) -> Circuits {
        Circuits {
            configs: Arc::new(configs),
            breakers: Arc::default(),
        }
    }

    /// Records an answer from `provider` and says what to do.
    pub fn record(&self, provider: &str, trouble: bool, now: DateTime<Utc>) -> Decision {
        let config = self.configs.get(provider).cloned().unwrap_or_default();
        let mut breakers = self.breakers.lock().expect("circuit state poisoned");
        let breaker = breakers.entry(provider.to_owned()).or_default();
        let decision = breaker.record(&config, trouble, now);
        let open = breaker.is_open(now);
        drop(breakers);
        metrics::gauge!("tuma_provider_circuit_open", "provider" => provider.to_owned()).set(if open {
            1.0
        } else {
            0.0
        });
        if let Decision::Trip { pause, .. } = &decision {
            metrics::counter!("tuma_provider_circuit_trips_total", "provider" => provider.to_owned()).increment(1);
            tracing::warn!(
                provider,
                pause_s = pause.as_secs(),
                "provider failing fast; its queue is paused"
            );
        }
        decision
    }

    /// How long until `provider`'s breaker closes, if it is open now.
    pub fn open_for(&self, provider: &str, now: DateTime<Utc>) -> Option<Duration> {
        let breakers = self.breakers.lock().expect("circuit state poisoned");
        let until = breakers.get(provider)?.open_until.filter(|until| *until > now)?;
        (until - now).to_std().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn the_breaker_opens_after_a_burst_and_doubles_its_pause_while_the_provider_stays_down() {
        let config = CircuitConfig::default();
        let mut breaker = Breaker::default();
        for _ in 0..4 {
            assert_eq!(breaker.record(&config, true, at(0)), Decision::Closed);
        }
        assert_eq!(
            breaker.record(&config, true, at(0)),
            Decision::Trip {
                until: at(5),
                pause: Duration::from_secs(5)
            }
        );
        assert_eq!(
            breaker.record(&config, true, at(2)),
            Decision::Open {
                remaining: Duration::from_secs(3)
            }
        );
        // The pause is over: the first probe fails and the pause doubles.
        assert_eq!(
            breaker.record(&config, true, at(6)),
            Decision::Trip {
                until: at(16),
                pause: Duration::from_secs(10)
            }
        );
        // A success closes it and forgets the trips.
        assert_eq!(breaker.record(&config, false, at(20)), Decision::Closed);
        assert_eq!(breaker, Breaker::default());
    }

    #[test]
    fn answers_that_are_not_trouble_keep_the_breaker_closed() {
        let config = CircuitConfig::default();
        let mut breaker = Breaker::default();
        for i in 0..20 {
            let trouble = i % 2 == 0;
            assert_eq!(breaker.record(&config, trouble, at(i)), Decision::Closed);
        }
    }

    #[test]
    fn the_pause_never_exceeds_its_maximum() {
        let config = CircuitConfig {
            trip_after: 1,
            open_base_s: 100,
            open_max_s: 300,
        };
        let mut breaker = Breaker::default();
        let mut now = 0;
        let mut pauses = Vec::new();
        for _ in 0..5 {
            if let Decision::Trip { pause, until } = breaker.record(&config, true, at(now)) {
                pauses.push(pause.as_secs());
                now = (until - at(0)).num_seconds();
            }
        }
        assert_eq!(pauses, vec![100, 200, 300, 300, 300]);
    }
}
