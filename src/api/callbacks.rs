//! `/callbacks/mpesa/{kind}/{token}`: where Daraja reports results. The
//! handler only checks the source, stores the raw body and enqueues its
//! processing, in one transaction, then answers the way Daraja expects.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::FutureExt;
use serde_json::json;
use sqlx::PgPool;

use super::AppState;
use crate::providers::mpesa::c2b;
use crate::providers::mpesa::c2b_token;
use crate::providers::mpesa::callbacks::{validate, ProcessCallbacks, KINDS};
use crate::providers::mpesa::wire::C2bNotice;
use crate::runner::{Batcher, JobClient, NewJob};
use crate::store::inbox::{self, NewCallback};

/// Loan states whose `LOAN-<n>` reference C2B validation refuses (when
/// `loans.refuse_unknown_references` is on). A defaulted loan still takes
/// payments.
const CLOSED_LOAN_STATES: [&str; 5] = ["repaid", "rejected", "cancelled", "expired", "disbursement_failed"];

/// Longest token accepted in a callback path.
const MAX_TOKEN_CHARS: usize = 64;

/// Validation answers carry string codes, as Daraja documents them.
fn c2b_answer(code: &str, description: &str) -> Response {
    (
        StatusCode::OK,
        Json(json!({ "ResultCode": code, "ResultDesc": description })),
    )
        .into_response()
}

fn answer(status: StatusCode, code: i32, description: &str) -> Response {
    (status, Json(json!({ "ResultCode": code, "ResultDesc": description }))).into_response()
}

/// Where a callback came from: the peer's address or, when the peer is one
/// of `http.trusted_proxies` (a TLS terminator in front of Tuma), the
/// nearest entry of its `X-Forwarded-For` (read from the right) that is not
/// a trusted proxy itself. Entries further left were written by the client
/// and prove nothing. An entry that does not read as an address (`ip`,
/// `ip:port` or `[v6]:port`), or a header that is not text, names no one:
/// the source is then the unspecified address, which no allow-list names.
/// An IPv4 address on a dual-stack socket reads as IPv4.
pub(crate) fn source_of(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let peer = peer.ip().to_canonical();
    if !trusted.contains(&peer) {
        return peer;
    }
    let nobody = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
    let mut values = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        match value.to_str() {
            Ok(text) => values.push(text),
            Err(_) => return nobody,
        }
    }
    // Several headers read as one list, in order.
    let entries: Vec<&str> = values.iter().flat_map(|value| value.split(',')).collect();
    for entry in entries.into_iter().rev() {
        let entry = entry.trim();
        let address = entry
            .parse::<IpAddr>()
            .ok()
            .or_else(|| entry.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
            .map(|ip| ip.to_canonical());
        match address {
            Some(ip) if trusted.contains(&ip) => continue,
            Some(ip) => return ip,
            None => return nobody,
        }
    }
    peer
}

pub async fn mpesa(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((kind, token)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let remote = source_of(peer, &headers, &state.config.http.trusted_proxies);
    let allowlist = state
        .config
        .mpesa
        .as_ref()
        .map(|m| m.callback_allowlist.clone())
        .unwrap_or_default();
    let source_ok = allowlist.is_empty()
        || allowlist
            .iter()
            .any(|ip| ip.trim().parse::<IpAddr>().is_ok_and(|ip| ip.to_canonical() == remote));
    let kind_ok = KINDS.contains(&kind.as_str());
    let token_ok = !token.is_empty() && token.len() <= MAX_TOKEN_CHARS && token.bytes().all(|b| b.is_ascii_hexdigit());
    let parsed = if kind_ok {
        validate(&kind, &body).err()
    } else {
        Some(format!("unknown callback kind {kind:?}"))
    };
    // What is settled at the door (stored, answered, never processed): a
    // refusal, or a C2B validation decision; `None` goes on to a job.
    let settled = if !source_ok {
        Some("refused_source")
    } else if !token_ok {
        Some("unknown_token")
    } else if parsed.is_some() {
        Some("malformed")
    } else {
        None
    };
    // A C2B validation is a question Daraja waits on: decide now, by rules.
    let decision = match (kind.as_str(), settled, state.config.mpesa.as_ref()) {
        ("c2b-validation", None, Some(mpesa)) if token == c2b_token(mpesa) => {
            let notice: C2bNotice = serde_json::from_slice(&body).expect("validated above");
            Some(c2b::validate(mpesa, &notice))
        }
        _ => None,
    };
    let decision = match decision {
        Some(Ok(())) if state.config.loans.refuse_unknown_references => {
            let notice: C2bNotice = serde_json::from_slice(&body).expect("validated above");
            match crate::loans::parse_reference(&notice.bill_ref_number) {
                Some(number) => match crate::store::loans::state_by_number(&state.pool, number).await {
                    Ok(Some(loan_state)) if !CLOSED_LOAN_STATES.contains(&loan_state.as_str()) => Some(Ok(())),
                    Ok(_) => Some(Err((c2b::INVALID_ACCOUNT, "Invalid Account Number"))),
                    Err(error) => {
                        // Unanswered, M-Pesa applies the registered
                        // ResponseType; a 503 says the same thing sooner.
                        tracing::error!(%error, "could not look up a loan for C2B validation");
                        return answer(StatusCode::SERVICE_UNAVAILABLE, 1, "Try again");
                    }
                },
                None => Some(Ok(())),
            }
        }
        other => other,
    };
    let settled = match (kind.as_str(), settled, &decision) {
        ("c2b-validation", None, None) => Some("unknown_token"),
        (_, _, Some(Ok(()))) => Some("accepted"),
        (_, _, Some(Err(_))) => Some("rejected"),
        (_, settled, _) => settled,
    };
    let stored = keep(
        &state,
        Received {
            provider: "mpesa",
            kind: &kind,
            kind_ok,
            token: &token,
            body: &body,
            parse_error: parsed.as_deref(),
            remote,
            settled,
        },
        // The job's inbox ids are filled in by the statement that stores the rows.
        NewJob::new(&ProcessCallbacks::default()),
    );
    match stored.await {
        Err(error) => {
            // Not stored: make Daraja (and our polls) try again.
            tracing::error!(%error, "could not store an M-Pesa callback");
            answer(StatusCode::SERVICE_UNAVAILABLE, 1, "Try again")
        }
        Ok(id) => match settled {
            None => answer(StatusCode::OK, 0, "Accepted"),
            Some("accepted") => c2b_answer("0", "Accepted"),
            Some("rejected") => {
                let (code, reason) = decision.and_then(|d| d.err()).unwrap_or(("C2B00016", "Rejected"));
                tracing::info!(inbox_id = id, code, "C2B payment refused at validation");
                c2b_answer(code, reason)
            }
            Some("malformed") => {
                tracing::warn!(inbox_id = id, "malformed M-Pesa callback stored");
                answer(StatusCode::BAD_REQUEST, 1, "Malformed callback")
            }
            Some(reason) => {
                tracing::warn!(inbox_id = id, reason, "M-Pesa callback refused and stored");
                answer(StatusCode::FORBIDDEN, 1, "Rejected")
            }
        },
    }
}

/// `/callbacks/{provider}/{kind}/{token}` for the providers behind the
/// adapter interface (Airtel, MTN, Tigo; Vodacom Tanzania answers in the
/// call and sends none). Like Daraja's: check, store the raw body and
/// enqueue its processing in one transaction, then answer the way the
/// provider expects (its adapter's `callback_ack`).
pub async fn provider(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((provider, kind, token)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let remote = source_of(peer, &headers, &state.config.http.trusted_proxies);
    let Some(adapter) = state.adapters.get(&provider).cloned() else {
        return crate::api::problem::ApiError::NotFound("no such route".into()).into_response();
    };
    let kind_ok = adapter.callback_kinds().contains(&kind.as_str());
    let token_ok = !token.is_empty() && token.len() <= MAX_TOKEN_CHARS && token.bytes().all(|b| b.is_ascii_hexdigit());
    let parse_error = if kind_ok {
        adapter.parse_callback(&kind, &body).err()
    } else {
        Some(format!("unknown callback kind {kind:?}"))
    };
    let settled = if !token_ok {
        Some("unknown_token")
    } else if parse_error.is_some() {
        Some("malformed")
    } else {
        None
    };
    let name = adapter.name();
    let stored = keep(
        &state,
        Received {
            provider: name,
            kind: &kind,
            kind_ok,
            token: &token,
            body: &body,
            parse_error: parse_error.as_deref(),
            remote,
            settled,
        },
        // The job's inbox ids are filled in by the statement that stores the rows.
        NewJob::new(&crate::providers::callbacks::ProcessProviderCallbacks::default()),
    );
    let (status, ack) = match stored.await {
        Err(error) => {
            tracing::error!(%error, provider = name, "could not store a callback");
            return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "try again" }))).into_response();
        }
        Ok(id) => {
            if let Some(reason) = settled {
                tracing::warn!(inbox_id = id, provider = name, reason, "callback stored and refused");
            }
            adapter.callback_ack(&kind, settled.is_none())
        }
    };
    (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), Json(ack)).into_response()
}

/// A callback as it reached one of the handlers.
struct Received<'a> {
    provider: &'static str,
    kind: &'a str,
    /// Whether `kind` is one the provider sends.
    kind_ok: bool,
    token: &'a str,
    body: &'a [u8],
    parse_error: Option<&'a str>,
    /// Where it came from (see [`source_of`]).
    remote: IpAddr,
    /// Set when the callback is not to be processed at all.
    settled: Option<&'static str>,
}

/// Counts a callback, stores it (its kind and token cut to what the inbox
/// keeps) and, unless it is settled already, has `process` (a job over a
/// group of callbacks) enqueued for it, by way of [`Inbox`]. Returns the
/// inbox id once it is committed.
async fn keep(state: &AppState, received: Received<'_>, process: NewJob) -> Result<i64, String> {
    let Received {
        provider,
        kind,
        kind_ok,
        token,
        body,
        parse_error,
        remote,
        settled,
    } = received;
    let kind_label = if kind_ok { kind.to_owned() } else { "unknown".to_owned() };
    metrics::counter!("tuma_callbacks_received_total", "provider" => provider, "kind" => kind_label.clone())
        .increment(1);
    if let Some(outcome) = settled {
        metrics::counter!("tuma_callbacks_total", "provider" => provider, "kind" => kind_label, "outcome" => outcome)
            .increment(1);
    }
    state
        .callbacks
        .keep(NewCallback {
            provider,
            kind: kind.chars().take(32).collect(),
            token: token.chars().take(MAX_TOKEN_CHARS).collect(),
            body: body.to_vec(),
            parse_error: parse_error.map(str::to_owned),
            remote_addr: Some(remote.to_string()),
            outcome: settled,
            process,
        })
        .await
}

/// Most callbacks stored by one statement.
const GROUP: usize = 128;
/// Groups stored at once.
const LANES: usize = 2;

/// The callback inbox of one node: callbacks that arrive while a group is
/// being stored form the next group, stored by one statement (group
/// commit) that also enqueues one job to process the group's callbacks of
/// each kind. A provider hears "received" only once its callback's group
/// committed, as when each was stored alone; a lone callback is a group
/// of one and goes at once.
#[derive(Clone)]
pub struct Inbox {
    batcher: Batcher<NewCallback, Result<i64, String>>,
}

impl Inbox {
    pub fn new(pool: PgPool, jobs: JobClient) -> Inbox {
        let batcher = Batcher::new("callback_inbox", GROUP, LANES, move |callbacks: Vec<NewCallback>| {
            let (pool, jobs) = (pool.clone(), jobs.clone());
            async move {
                let notify = jobs.notify_for(callbacks.iter().filter(|c| c.outcome.is_none()).map(|c| &c.process));
                let now = jobs.clock().sql_now();
                match inbox::insert_and_enqueue(&pool, &callbacks, notify, now).await {
                    Ok(ids) => ids.into_iter().map(Ok).collect(),
                    // One callback the database refuses must not cost the
                    // others their place: each goes again on its own.
                    Err(error) if callbacks.len() > 1 => {
                        tracing::warn!(%error, callbacks = callbacks.len(), "a group of callbacks failed; each goes alone");
                        let mut answers = Vec::with_capacity(callbacks.len());
                        for callback in callbacks {
                            let alone = std::slice::from_ref(&callback);
                            let answer = match inbox::insert_and_enqueue(&pool, alone, notify, now).await {
                                Ok(ids) => ids.first().copied().ok_or_else(|| "no inbox id returned".to_owned()),
                                Err(error) => Err(error.to_string()),
                            };
                            answers.push(answer);
                        }
                        answers
                    }
                    Err(error) => vec![Err(error.to_string())],
                }
            }
            .boxed()
        });
        Inbox { batcher }
    }

    /// Stores `callback` (and enqueues its processing) with whatever others
    /// are waiting; its inbox id once committed.
    pub async fn keep(&self, callback: NewCallback) -> Result<i64, String> {
        self.batcher
            .run(callback)
            .await
            .map_err(|panicked| panicked.to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn the_source_is_the_nearest_address_a_trusted_proxy_did_not_write() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let from_proxy: SocketAddr = "10.0.0.5:40000".parse().unwrap();
        let daraja: IpAddr = "196.201.214.200".parse().unwrap();
        // The client may write anything to the left; the proxy appends
        // the address it saw.
        let headers = forwarded("196.201.214.200, 203.0.113.9");
        assert_eq!(
            source_of(from_proxy, &headers, &[proxy]),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        let headers = forwarded("203.0.113.9, 196.201.214.200");
        assert_eq!(source_of(from_proxy, &headers, &[proxy]), daraja);
        // Two proxies in a row: the second's entry for the first is skipped.
        let headers = forwarded("196.201.214.200, 10.0.0.6");
        let both = [proxy, "10.0.0.6".parse().unwrap()];
        assert_eq!(source_of(from_proxy, &headers, &both), daraja);
        // From anyone else the header is ignored.
        let direct: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let headers = forwarded("196.201.214.200");
        assert_eq!(
            source_of(direct, &headers, &[proxy]),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // No header: the proxy itself.
        assert_eq!(source_of(from_proxy, &HeaderMap::new(), &[proxy]), proxy);
        // What is not an address names no one, and no allow-list names
        // no one: a client cannot hide behind the proxy's own address.
        let nobody: IpAddr = "0.0.0.0".parse().unwrap();
        assert_eq!(source_of(from_proxy, &forwarded("x"), &[proxy]), nobody);
        assert_eq!(
            source_of(from_proxy, &forwarded("196.201.214.200, x"), &[proxy]),
            nobody
        );
        // Proxies that write the port too.
        assert_eq!(
            source_of(from_proxy, &forwarded("196.201.214.200:51000"), &[proxy]),
            daraja
        );
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(source_of(from_proxy, &forwarded("[2001:db8::7]:443"), &[proxy]), v6);
        // An IPv4 peer on a dual-stack socket reads as IPv4.
        let mapped: SocketAddr = "[::ffff:196.201.214.200]:443".parse().unwrap();
        assert_eq!(source_of(mapped, &HeaderMap::new(), &[]), daraja);
    }
}
