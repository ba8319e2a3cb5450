//! Payout creates admitted together (group commit). A `POST /v1/payouts`
//! that needs nothing unusual (no quote, no campaign) is handed to one
//! [`Batcher`]: while a group is being admitted, the creates that arrive
//! wait and form the next group, up to `api.group_creates`. A group is one
//! transaction: its `Idempotency-Key`s claimed by one statement, its
//! payouts admitted by [`Policy::admit_together`] (parties and balances
//! locked and limit usage read once for all), its responses stored by one
//! statement. A lone create is a group of one and goes at once.
//!
//! A create comes to the group routed by its number's prefix (or the
//! provider it names), its party's payout settings not read: the group
//! locks the party and reads them then, and a party whose settings name
//! another provider sends the create back to be routed again.
//!
//! A create the group cannot answer (its key used before, its party or
//! balance new, a refusal, a party whose settings route it elsewhere, or a
//! group that failed as a whole) is answered alone by the one-at-a-time
//! path, after the group committed; it then reads the party's settings,
//! claims its key, replays, creates what is missing or says why it is
//! refused, exactly as if it had never been grouped.

use futures::FutureExt;
use serde_json::Value;
use sqlx::PgPool;

use super::views::IntentView;
use crate::policy::{Policy, Together};
use crate::runner::Batcher;
use crate::store::idempotency::{self, Claim};
use crate::store::Foreground;
use crate::workflow::engine::{Engine, NewIntent};

/// One payout create, validated, with its `Idempotency-Key`.
pub(super) struct Create {
    pub owner: String,
    pub key: String,
    pub request_hash: Vec<u8>,
    pub new: NewIntent,
    /// The request named no provider and `new`'s was chosen by the number's
    /// prefix, without the party's payout settings: the group checks them
    /// under the party's lock.
    pub routed_by_prefix: bool,
}

/// What became of a create handed to the group.
pub(super) enum Answer {
    /// Created: the view stored as the key's response, and its location.
    Created { view: Value, location: String },
    /// Not answered by the group: to be routed again with the party's
    /// payout settings and created alone.
    Alone,
}

/// The payout creates of one node.
#[derive(Clone)]
pub struct PayoutCreates {
    /// `None` when creates are admitted alone (`api.group_creates = 1`).
    batcher: Option<Batcher<Create, Answer>>,
}

impl PayoutCreates {
    /// Groups of up to `group` creates, `lanes` of them admitted at once;
    /// `group` 1 or less admits each alone.
    pub fn new(
        pool: PgPool,
        engine: Engine,
        policy: Policy,
        idempotency_ttl_s: i64,
        group: usize,
        lanes: usize,
        foreground: Foreground,
    ) -> PayoutCreates {
        if group <= 1 {
            return PayoutCreates { batcher: None };
        }
        let batcher = Batcher::new("payout_creates", group, lanes.max(1), move |creates: Vec<Create>| {
            let (pool, engine, policy) = (pool.clone(), engine.clone(), policy.clone());
            let entered = foreground.enter();
            async move {
                let count = creates.len();
                let _entered = entered;
                match admit(&pool, &engine, &policy, idempotency_ttl_s, creates).await {
                    Ok(answers) => answers,
                    Err(error) => {
                        tracing::warn!(%error, creates = count, "a group of payout creates failed; each goes alone");
                        (0..count).map(|_| Answer::Alone).collect()
                    }
                }
            }
            .boxed()
        });
        PayoutCreates { batcher: Some(batcher) }
    }

    /// Whether creates are admitted in groups at all.
    pub(super) fn groups(&self) -> bool {
        self.batcher.is_some()
    }

    /// Admits `create` with whatever other creates are waiting.
    pub(super) async fn run(&self, create: Create) -> Result<Answer, anyhow::Error> {
        match &self.batcher {
            Some(batcher) => Ok(batcher.run(create).await?),
            None => Ok(Answer::Alone),
        }
    }
}

/// Admits one group in one transaction; answers in the creates' order.
async fn admit(
    pool: &PgPool,
    engine: &Engine,
    policy: &Policy,
    ttl_s: i64,
    creates: Vec<Create>,
) -> anyhow::Result<Vec<Answer>> {
    let now = engine.jobs().clock().sql_now();
    // Keys are claimed in (owner, key) order, so that two groups cannot
    // deadlock on them; the second create with a key this group already
    // claims goes alone (and replays the first one's response).
    let mut order: Vec<usize> = (0..creates.len()).collect();
    order.sort_by(|&a, &b| (&creates[a].owner, &creates[a].key).cmp(&(&creates[b].owner, &creates[b].key)));
    order.dedup_by(|&mut b, &mut a| (&creates[a].owner, &creates[a].key) == (&creates[b].owner, &creates[b].key));
    let claims: Vec<Claim<'_>> = order
        .iter()
        .map(|&i| Claim {
            owner: &creates[i].owner,
            key: &creates[i].key,
            request_hash: &creates[i].request_hash,
        })
        .collect();

    let mut tx = pool.begin().await?;
    let held = idempotency::claim_many(&mut tx, &claims, ttl_s, now).await?;
    let mut claimed = vec![false; creates.len()];
    for (&i, held) in order.iter().zip(held) {
        claimed[i] = held;
    }
    let (grouped, routed_by_prefix): (Vec<NewIntent>, Vec<bool>) = creates
        .iter()
        .zip(&claimed)
        .filter(|(_, &claimed)| claimed)
        .map(|(c, _)| (c.new.clone(), c.routed_by_prefix))
        .unzip();
    let mut outcomes = policy
        .admit_together(engine, &mut tx, grouped, &routed_by_prefix)
        .await?
        .into_iter();

    let mut answers = Vec::with_capacity(creates.len());
    let mut released: Vec<(&str, &str)> = Vec::new();
    let mut stored: Vec<(usize, Value)> = Vec::new();
    for (i, (create, claimed)) in creates.iter().zip(&claimed).enumerate() {
        let outcome = if *claimed {
            outcomes.next().expect("an outcome per grouped payout")
        } else {
            Together::Alone
        };
        answers.push(match outcome {
            Together::Admitted(row) => {
                let view = serde_json::to_value(IntentView::from_row(&row))?;
                stored.push((i, view.clone()));
                Answer::Created {
                    view,
                    location: format!("/v1/{}s/{}", row.kind, row.id),
                }
            }
            Together::Alone => {
                if *claimed {
                    released.push((&create.owner, &create.key));
                }
                Answer::Alone
            }
        });
    }
    idempotency::release_many(&mut tx, &released).await?;
    let responses: Vec<(&str, &str, i16, &Value)> = stored
        .iter()
        .map(|(i, view)| (creates[*i].owner.as_str(), creates[*i].key.as_str(), 201, view))
        .collect();
    idempotency::store_responses(&mut tx, &responses).await?;
    tx.commit().await?;
    Ok(answers)
}
