//! Statements that many jobs run alike, one round trip for all who ask at
//! the same time ([`Batcher`]): reading the intent an action is about,
//! committing a provider request id before its call, noting a provider
//! call. Each is its own autocommitted statement, so grouping changes
//! nothing about what is durable when: a request id is committed when
//! [`Grouped::request_id`] returns, as before.

use futures::FutureExt;
use sqlx::PgPool;
use uuid::Uuid;

use super::intents::{self, IntentRow};
use crate::runner::{Batcher, JobError};

/// Most statements grouped into one.
const GROUP: usize = 128;
/// Groups of one statement in progress at once.
const LANES: usize = 2;

/// A provider call to note ([`super::provider_calls`]).
pub struct CallNote {
    pub intent_id: Uuid,
    /// The job and its run ([`crate::runner::JobContext::run`]) that made
    /// the call.
    pub job_id: i64,
    pub run: i32,
    pub provider: &'static str,
    pub call: &'static str,
    pub request_id: Option<String>,
    pub outcome: &'static str,
    pub code: Option<String>,
    pub latency: std::time::Duration,
}

/// The grouped statements of one database.
#[derive(Clone)]
pub struct Grouped {
    reads: Batcher<Uuid, Result<Option<IntentRow>, String>>,
    request_ids: Batcher<(Uuid, String), Result<Option<String>, String>>,
    notes: Batcher<CallNote, Result<(), String>>,
}

impl Grouped {
    pub fn new(pool: PgPool) -> Grouped {
        let reads = {
            let pool = pool.clone();
            Batcher::new("intent_reads", GROUP, LANES, move |ids: Vec<Uuid>| {
                let pool = pool.clone();
                async move {
                    match intents::get_many(&pool, &ids).await {
                        Ok(rows) => ids
                            .iter()
                            .map(|id| Ok(rows.iter().find(|row| row.id == *id).cloned()))
                            .collect(),
                        Err(error) => ids.iter().map(|_| Err(error.to_string())).collect(),
                    }
                }
                .boxed()
            })
        };
        let request_ids = {
            let pool = pool.clone();
            Batcher::new("request_ids", GROUP, LANES, move |wanted: Vec<(Uuid, String)>| {
                let pool = pool.clone();
                async move {
                    match intents::assign_provider_refs(&pool, &wanted).await {
                        Ok(assigned) => wanted
                            .iter()
                            .map(|(id, _)| Ok(assigned.iter().find(|(a, _)| a == id).map(|(_, r)| r.clone())))
                            .collect(),
                        Err(error) => wanted.iter().map(|_| Err(error.to_string())).collect(),
                    }
                }
                .boxed()
            })
        };
        let notes = Batcher::new("provider_calls", GROUP, LANES, move |notes: Vec<CallNote>| {
            let pool = pool.clone();
            async move {
                match super::provider_calls::record_many(&pool, &notes).await {
                    Ok(()) => notes.iter().map(|_| Ok(())).collect(),
                    Err(error) => notes.iter().map(|_| Err(error.to_string())).collect(),
                }
            }
            .boxed()
        });
        Grouped {
            reads,
            request_ids,
            notes,
        }
    }

    /// The intent `id`, as it is now (not locked).
    pub async fn intent(&self, id: Uuid) -> Result<Option<IntentRow>, JobError> {
        self.reads.run(id).await.map_err(JobError::retryable)?.map_err(database)
    }

    /// Records `fresh` as intent `id`'s provider request id unless one is
    /// recorded already, and returns the one that is (committed).
    pub async fn request_id(&self, id: Uuid, fresh: String) -> Result<String, JobError> {
        self.request_ids
            .run((id, fresh))
            .await
            .map_err(JobError::retryable)?
            .map_err(database)?
            .ok_or_else(|| JobError::fatal(format!("intent {id} does not exist")))
    }

    /// `intent`'s committed request id: the one it was created with or an
    /// earlier attempt recorded, else `fresh()` recorded now
    /// ([`Grouped::request_id`]).
    pub async fn committed_request_id(
        &self,
        intent: &IntentRow,
        fresh: impl FnOnce() -> String,
    ) -> Result<String, JobError> {
        match &intent.provider_ref {
            Some(committed) => Ok(committed.clone()),
            None => self.request_id(intent.id, fresh()).await,
        }
    }

    /// Notes a provider call, best effort: losing the note must never stop
    /// the money's own steps.
    pub async fn note(&self, note: CallNote) {
        metrics::histogram!("tuma_provider_call_seconds", "provider" => note.provider, "call" => note.call)
            .record(note.latency.as_secs_f64());
        let (intent_id, provider) = (note.intent_id, note.provider);
        let noted = match self.notes.run(note).await {
            Ok(noted) => noted,
            Err(panicked) => Err(panicked.to_string()),
        };
        if let Err(error) = noted {
            tracing::warn!(%intent_id, provider, %error, "could not note a provider call");
        }
    }

    /// Notes, before a request is sent, that it is about to be: unlike
    /// [`Grouped::note`] this must commit, or the request is not sent, for
    /// a later run learns from it that this one may have reached the
    /// provider ([`super::provider_calls::may_have_sent_before`]).
    pub async fn note_sending(&self, note: CallNote) -> Result<(), JobError> {
        self.notes
            .run(note)
            .await
            .map_err(JobError::retryable)?
            .map_err(database)
    }
}

fn database(error: String) -> JobError {
    JobError::Retryable(format!("database: {error}"))
}
