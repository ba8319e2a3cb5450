//! The one retry schedule of the runner.
//!
//! After failed attempt `n` (1-based) a job waits a random time drawn
//! uniformly from `[0, min(max_ms, base_ms × 2^(n−1))]`: exponential growth,
//! capped, with *full jitter*. Full jitter spreads the retries of many jobs
//! that failed together (a provider outage) over the whole window instead of
//! sending them back in synchronized waves.
//!
//! With the defaults (`base_ms` = 1 s, `max_ms` = 1 h) the window after
//! attempt 1 is up to 1 s, after attempt 5 up to 16 s, after attempt 10 up to
//! 8.5 min, and from attempt 13 on the 1-hour cap.

use std::time::Duration;

use rand::Rng;
use serde::Deserialize;

/// Parameters of the retry schedule, from `[runner.retry]` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Upper bound of the first retry window, in milliseconds.
    pub base_ms: u64,
    /// Cap on any retry window, in milliseconds.
    pub max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_ms: 1_000,
            max_ms: 3_600_000,
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the wait after failed attempt `attempt` (1-based).
    pub fn window_ms(&self, attempt: u32) -> u64 {
        // 2^63 already overflows any cap; clamp the exponent to stay exact.
        let exponent = attempt.saturating_sub(1).min(62);
        self.base_ms.saturating_mul(1u64 << exponent).min(self.max_ms)
    }

    /// The wait before the next attempt after failed attempt `attempt`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        Duration::from_millis(rng.random_range(0..=self.window_ms(attempt)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    #[test]
    fn windows_double_then_cap() {
        let policy = RetryPolicy::default();
        let windows: Vec<u64> = (1..=14).map(|n| policy.window_ms(n)).collect();
        assert_eq!(&windows[..5], &[1_000, 2_000, 4_000, 8_000, 16_000]);
        assert_eq!(windows[12], 3_600_000);
        assert_eq!(windows[13], 3_600_000);
        assert_eq!(policy.window_ms(u32::MAX), 3_600_000);
    }

    proptest! {
        #[test]
        fn delays_stay_inside_the_window(attempt in 1u32..100, seed in any::<u64>()) {
            let policy = RetryPolicy::default();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let delay = policy.delay(attempt, &mut rng);
            prop_assert!(delay.as_millis() as u64 <= policy.window_ms(attempt));
        }
    }
}
