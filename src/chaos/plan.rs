//! What the soak asks of the engine: a seeded mix of payouts and
//! collections over every provider and currency the simulators serve, with
//! the subscribers that make them fail in the ways real ones do.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// A route through one provider: its country code, a prefix the built-in
/// routing table gives to it (the number routes the intent), the currency, and the whole-unit amount ranges used.
struct Route {
    provider: &'static str,
    country_code: &'static str,
    prefix: &'static str,
    currency: &'static str,
    payout: (u64, u64),
    collection: (u64, u64),
}

const ROUTES: [Route; 8] = [
    Route {
        provider: "mpesa",
        country_code: "254",
        prefix: "72",
        currency: "KES",
        payout: (100, 3_000),
        collection: (10, 1_000),
    },
    Route {
        provider: "airtel",
        country_code: "254",
        prefix: "73",
        currency: "KES",
        payout: (100, 3_000),
        collection: (10, 1_000),
    },
    Route {
        provider: "airtel",
        country_code: "256",
        prefix: "70",
        currency: "UGX",
        payout: (5_000, 200_000),
        collection: (1_000, 50_000),
    },
    Route {
        provider: "airtel",
        country_code: "255",
        prefix: "68",
        currency: "TZS",
        payout: (2_000, 100_000),
        collection: (1_000, 20_000),
    },
    Route {
        provider: "mtn",
        country_code: "256",
        prefix: "77",
        currency: "UGX",
        payout: (5_000, 200_000),
        collection: (1_000, 50_000),
    },
    Route {
        provider: "mtn",
        country_code: "250",
        prefix: "78",
        currency: "RWF",
        payout: (1_000, 50_000),
        collection: (500, 10_000),
    },
    Route {
        provider: "vodacom_tz",
        country_code: "255",
        prefix: "74",
        currency: "TZS",
        payout: (2_000, 100_000),
        collection: (1_000, 20_000),
    },
    Route {
        provider: "tigo_tz",
        country_code: "255",
        prefix: "65",
        currency: "TZS",
        payout: (2_000, 100_000),
        collection: (1_000, 20_000),
    },
];

/// The currencies the soak pays out in, so parties can be funded in each.
pub const CURRENCIES: [&str; 4] = ["KES", "UGX", "TZS", "RWF"];

/// Paying parties per currency (each payout locks its party's balance).
pub const PARTIES: usize = 16;

/// One intent the soak submits.
pub struct Planned {
    /// `payouts` or `collections`: the API path under `/v1`.
    pub path: &'static str,
    pub provider: &'static str,
    pub body: Value,
    /// Unique per intent (and per seed): retries send it again, so that a
    /// request cut by a crash is never created twice.
    pub idempotency_key: String,
}

/// `count` intents for `seed`: about three payouts for each collection,
/// spread over every route.
pub fn plan(count: usize, seed: u64) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xc4a0_5eed);
    (0..count)
        .map(|i| {
            let route = &ROUTES[rng.random_range(0..ROUTES.len())];
            let payout = rng.random_range(0..4) != 0;
            let roll = rng.random_range(0..100);
            // The subscriber table every simulator follows: …009 is not a
            // customer (a payout fails); …001 declines a prompt, …003 never
            // answers it (it expires), …004 has too little money.
            let ending = match (payout, roll) {
                (true, 0..3) => 9,
                (false, 0..5) => 1,
                (false, 5..8) => 3,
                (false, 8..12) => 4,
                _ => rng.random_range(100..900),
            };
            let msisdn = format!("{}{}{:04}{:03}", route.country_code, route.prefix, i % 10_000, ending);
            let (low, high) = if payout { route.payout } else { route.collection };
            let amount = rng.random_range(low..=high).to_string();
            let metadata = json!({ "scenario": "chaos", "seq": i });
            let body = if payout {
                json!({
                    "amount": amount, "currency": route.currency, "recipient": { "msisdn": msisdn },
                    "party_id": party(route.currency, i), "reference": format!("chaos-{i}"),
                    "metadata": metadata,
                })
            } else {
                json!({
                    "amount": amount, "currency": route.currency, "payer": { "msisdn": msisdn },
                    "party_id": format!("shop-{}", route.currency.to_lowercase()),
                    "reference": format!("chaos-{i}"), "metadata": metadata,
                })
            };
            Planned {
                path: if payout { "payouts" } else { "collections" },
                provider: route.provider,
                body,
                idempotency_key: format!("chaos-{seed}-{i}"),
            }
        })
        .collect()
}

/// The party the `i`th payout in `currency` is paid from.
pub fn party(currency: &str, i: usize) -> String {
    format!("payer-{}-{}", currency.to_lowercase(), i % PARTIES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_is_a_function_of_the_seed() {
        let a: Vec<String> = plan(50, 3).iter().map(|p| p.body.to_string()).collect();
        let b: Vec<String> = plan(50, 3).iter().map(|p| p.body.to_string()).collect();
        let c: Vec<String> = plan(50, 4).iter().map(|p| p.body.to_string()).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn every_provider_and_both_directions_are_exercised() {
        let planned = plan(400, 1);
        for route in &ROUTES {
            assert!(planned
                .iter()
                .any(|p| p.provider == route.provider && p.path == "payouts"));
            assert!(planned
                .iter()
                .any(|p| p.provider == route.provider && p.path == "collections"));
        }
        let keys: std::collections::BTreeSet<_> = planned.iter().map(|p| &p.idempotency_key).collect();
        assert_eq!(keys.len(), planned.len());
    }
}
