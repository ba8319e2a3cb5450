//! `/v1/loans`: request a loan, let the lender (or an admin) decide on it,
//! and read it with its schedule and repayments.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::{Caller, Scope};
use super::intents::{claim, created, idempotency_key, Claimed};
use super::problem::{ApiError, FieldError, Problem};
use super::validate::{validate, IntentInput, PhoneInput};
use super::views::{money_text, EventView};
use super::{body, AppState};
use crate::domain::{Money, PartyId};
use crate::loans::schedule::Installment;
use crate::loans::{self, Actor, Decision, Excess, LoanError, NewLoan};
use crate::store::intents::{self, IntentRow};
use crate::store::loans::{self as store, LoanRow, RepaymentRow};

/// Longest grace period or interval a loan may ask for, in days.
const MAX_DAYS: u32 = 3660;

/// The borrower of a loan request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BorrowerInput {
    #[schema(example = "borrower-17")]
    pub party_id: String,
    /// Where the loan is sent and reminders go.
    #[schema(example = "0712345678")]
    pub msisdn: String,
    /// Defaults to the currency's configured provider.
    pub provider: Option<String>,
}

/// `POST /v1/loans`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLoan {
    pub borrower: BorrowerInput,
    /// The party whose balance funds the loan and receives its repayments.
    #[schema(example = "lender-3")]
    pub lender_id: String,
    #[schema(example = "5000")]
    pub principal: String,
    #[schema(example = "KES")]
    pub currency: String,
    /// Each installment; the last one takes what remains.
    #[schema(example = "500")]
    pub installment_amount: String,
    /// Days between installments, from the disbursement (default
    /// `loans.interval_days`).
    #[serde(default)]
    pub interval_days: Option<u32>,
    /// Days after a loan falls overdue before it is defaulted (default
    /// `loans.grace_days`).
    #[serde(default)]
    pub grace_days: Option<u32>,
    /// What a payment beyond the installment due does (default
    /// `loans.excess`).
    #[serde(default)]
    pub excess: Option<Excess>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// One installment of the schedule.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstallmentView {
    pub seq: i32,
    pub due_at: DateTime<Utc>,
    #[schema(example = "500.00")]
    pub amount: String,
    #[schema(example = "0.00")]
    pub paid: String,
    /// The STK reminder sent on its due date, if any.
    pub reminder_id: Option<Uuid>,
}

/// One payment applied to the loan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RepaymentView {
    /// What paid: `c2b:<receipt>` or `collection:<intent id>`.
    pub source: String,
    pub receipt: Option<String>,
    /// The whole payment.
    #[schema(example = "1000.00")]
    pub paid_in: String,
    /// What reduced the loan.
    #[schema(example = "500.00")]
    pub applied: String,
    /// What went to the borrower's balance.
    #[schema(example = "500.00")]
    pub excess: String,
    #[schema(example = "4500.00")]
    pub outstanding_after: String,
    /// The reversal that undid it, if any.
    pub reversed_by: Option<Uuid>,
    pub at: DateTime<Utc>,
}

impl RepaymentView {
    fn new(row: &RepaymentRow, currency: &str) -> RepaymentView {
        RepaymentView {
            source: row.source.clone(),
            receipt: row.receipt.clone(),
            paid_in: money_text(row.paid_in, currency),
            applied: money_text(row.applied, currency),
            excess: money_text(row.excess, currency),
            outstanding_after: money_text(row.outstanding_after, currency),
            reversed_by: row.reversed_by,
            at: row.at,
        }
    }
}

/// A loan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoanView {
    pub id: Uuid,
    /// What borrowers pay with as the M-Pesa account number.
    #[schema(example = "LOAN-1001")]
    pub reference: String,
    /// `requested`, `approved`, `disbursing`, `active`, `overdue`,
    /// `repaid`, `defaulted`, `rejected`, `cancelled`, `expired` or
    /// `disbursement_failed`.
    pub state: String,
    pub borrower_id: String,
    pub lender_id: String,
    #[schema(example = "5000.00")]
    pub principal: String,
    pub currency: String,
    #[schema(example = "500.00")]
    pub installment_amount: String,
    pub interval_days: i32,
    pub grace_days: i32,
    pub excess: String,
    /// Principal not yet repaid.
    #[schema(example = "4500.00")]
    pub outstanding: String,
    /// The payout that sends the loan to the borrower.
    pub disbursement_id: Option<Uuid>,
    pub activated_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
}

impl LoanView {
    pub fn new(loan: &LoanRow, intent: &IntentRow) -> LoanView {
        LoanView {
            id: loan.intent_id,
            reference: loans::reference(loan.number),
            state: intent.state.clone(),
            borrower_id: loan.borrower_id.clone(),
            lender_id: loan.lender_id.clone(),
            principal: money_text(loan.principal, &loan.currency),
            currency: loan.currency.clone(),
            installment_amount: money_text(loan.installment_amount, &loan.currency),
            interval_days: loan.interval_days,
            grace_days: loan.grace_days,
            excess: loan.excess.clone(),
            outstanding: money_text(loan.outstanding, &loan.currency),
            disbursement_id: loan.disbursement_id,
            activated_at: loan.activated_at,
            metadata: intent.metadata.clone(),
            created_at: loan.created_at,
        }
    }
}

/// A loan with its schedule, repayments and history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoanDetail {
    #[serde(flatten)]
    pub loan: LoanView,
    pub installments: Vec<InstallmentView>,
    pub repayments: Vec<RepaymentView>,
    pub events: Vec<EventView>,
}

/// A lender's (or an admin's) decision on a loan.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoanDecisionBody {
    /// The party the caller acts for: it must be the loan's lender. Admin
    /// keys may leave it out.
    #[schema(example = "lender-3")]
    pub acting_party: Option<String>,
}

/// Request a loan.
#[utoipa::path(post, path = "/v1/loans", tag = "loans", request_body = CreateLoan,
    params(("Idempotency-Key" = String, Header, description = "Unique per loan request; a replay returns the first response")),
    responses((status = 201, body = LoanView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn create_loan(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Scope::IntentsWrite)?;
    idempotency_key(&headers)?;
    let (request, json) = body::parse::<CreateLoan>(&headers, body, state.config.api.body_limit_bytes)?;
    let location = |view: &serde_json::Value| Some(format!("/v1/loans/{}", view["id"].as_str()?));
    let new = match validate_loan(&request, &state, &caller) {
        Ok(new) => new,
        Err(refusal) => return super::intents::replay_or(&state, &caller, &headers, &json, location, refusal).await,
    };
    let (mut tx, key) = match claim(&state, &caller, &headers, &json, location).await? {
        Claimed::Replay(response) => return Ok(response),
        Claimed::Fresh(tx, key) => (tx, key),
    };
    let (intent, loan) = state.loans.create(&mut tx, new).await.map_err(loan_error)?;
    let view = serde_json::to_value(LoanView::new(&loan, &intent)).map_err(|e| ApiError::Internal(e.into()))?;
    created(tx, &caller.owner, &key, view, &format!("/v1/loans/{}", intent.id)).await
}

fn validate_loan(request: &CreateLoan, state: &AppState, caller: &Caller) -> Result<NewLoan, ApiError> {
    let config = &state.config;
    let phone = PhoneInput {
        msisdn: request.borrower.msisdn.clone(),
        provider: request.borrower.provider.clone(),
    };
    // The loan's amount, phone and provider are a payout's (its
    // disbursement): the same rules apply.
    let base = validate(
        &IntentInput {
            kind: "payout",
            amount: &request.principal,
            currency: &request.currency,
            phone_field: "borrower",
            phone: &phone,
            party_id: &request.borrower.party_id,
            reference: "loan",
            metadata: &request.metadata,
            campaign_id: None,
            party_provider: None,
        },
        config,
        &caller.owner,
        &caller.name,
    );
    let mut errors = match &base {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| match e.field.as_str() {
                "amount" => FieldError::new("principal", &e.code, &e.detail),
                "party_id" => FieldError::new("borrower.party_id", &e.code, &e.detail),
                _ => e.clone(),
            })
            .collect(),
    };
    let lender = PartyId::parse(&request.lender_id)
        .map_err(|detail| errors.push(FieldError::new("lender_id", "invalid_party_id", detail)))
        .ok();
    if lender.as_ref().is_some_and(|l| l.as_str() == request.borrower.party_id) {
        errors.push(FieldError::new(
            "lender_id",
            "lender_is_borrower",
            "a party cannot lend to itself",
        ));
    }
    let installment = match (request.currency.parse(), base.as_ref().ok()) {
        (Ok(currency), Some(base)) => match Money::parse(&request.installment_amount, currency) {
            Ok(money) if money.is_positive() && money.amount() <= base.amount.amount() => {
                let whole = config.providers.get(&base.provider).is_none_or(|p| p.whole_units);
                if whole && !money.is_whole() {
                    errors.push(FieldError::new(
                        "installment_amount",
                        "too_many_decimals",
                        format!("{} carries whole {currency} only", base.provider),
                    ));
                }
                Some(money.amount())
            }
            Ok(_) => {
                errors.push(FieldError::new(
                    "installment_amount",
                    "installment_out_of_range",
                    "the installment must be greater than zero and at most the principal",
                ));
                None
            }
            Err(_) => {
                errors.push(FieldError::new(
                    "installment_amount",
                    "invalid_amount",
                    format!("a decimal string in {currency}, such as \"500\""),
                ));
                None
            }
        },
        _ => None,
    };
    let defaults = &config.loans;
    let interval_days = request.interval_days.unwrap_or(defaults.interval_days);
    if interval_days == 0 || interval_days > MAX_DAYS {
        errors.push(FieldError::new(
            "interval_days",
            "out_of_range",
            format!("1 to {MAX_DAYS} days"),
        ));
    }
    let grace_days = request.grace_days.unwrap_or(defaults.grace_days);
    if grace_days > MAX_DAYS {
        errors.push(FieldError::new(
            "grace_days",
            "out_of_range",
            format!("0 to {MAX_DAYS} days"),
        ));
    }
    match (errors.is_empty(), base, lender, installment) {
        (true, Ok(base), Some(lender), Some(installment)) => Ok(NewLoan {
            owner: caller.owner.clone(),
            created_by: caller.name.clone(),
            borrower: base.party_id,
            msisdn: base.msisdn,
            lender,
            principal: base.amount,
            installment,
            interval_days,
            grace_days,
            excess: request.excess.unwrap_or(defaults.excess),
            provider: base.provider,
            metadata: base.metadata,
        }),
        _ => Err(ApiError::Invalid(errors)),
    }
}

/// Get a loan with its schedule, repayments and history.
#[utoipa::path(get, path = "/v1/loans/{id}", tag = "loans", params(("id" = Uuid, Path)),
    responses((status = 200, body = LoanDetail), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)),
    security(("api_key" = [])))]
pub async fn get_loan(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<LoanDetail>, ApiError> {
    caller.require(Scope::IntentsRead)?;
    let (loan, intent) = find(&state, &caller, &id).await?;
    let mut conn = state.pool.acquire().await?;
    let installments = store::installments(&mut conn, loan.intent_id).await?;
    let reminders = store::reminders(&mut conn, loan.intent_id).await?;
    let repayments = store::repayments(&state.pool, loan.intent_id).await?;
    let events = intents::events(&state.pool, loan.intent_id).await?;
    Ok(Json(LoanDetail {
        loan: LoanView::new(&loan, &intent),
        installments: installments
            .iter()
            .map(|i: &Installment| InstallmentView {
                seq: i.seq,
                due_at: i.due_at,
                amount: money_text(i.amount, &loan.currency),
                paid: money_text(i.paid, &loan.currency),
                reminder_id: reminders.iter().find(|(seq, _)| *seq == i.seq).map(|(_, id)| *id),
            })
            .collect(),
        repayments: repayments
            .iter()
            .map(|r| RepaymentView::new(r, &loan.currency))
            .collect(),
        events: events.iter().map(EventView::from).collect(),
    }))
}

async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<(LoanRow, IntentRow), ApiError> {
    let not_found = || ApiError::NotFound(format!("no loan {id}"));
    let id = Uuid::parse_str(id).map_err(|_| not_found())?;
    let loan = store::get(&state.pool, &caller.owner, id)
        .await?
        .ok_or_else(not_found)?;
    let mut conn = state.pool.acquire().await?;
    let intent = intents::get(&mut conn, id).await?.ok_or_else(not_found)?;
    Ok((loan, intent))
}

/// Approve a requested loan: its disbursement payout is admitted from the
/// lender's balance at once (refused, the loan stays requested).
#[utoipa::path(post, path = "/v1/loans/{id}/approve", tag = "loans", request_body = LoanDecisionBody,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = LoanView), (status = 401, body = Problem),
        (status = 403, description = "Missing scope, or the caller is not the lender (the borrower never may)", body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, description = "The lender's balance or limits do not allow the disbursement", body = Problem)),
    security(("api_key" = [])))]
pub async fn approve_loan(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<LoanView>, ApiError> {
    decide(state, caller, id, headers, body, Decision::Approve).await
}

/// Reject a requested loan.
#[utoipa::path(post, path = "/v1/loans/{id}/reject", tag = "loans", request_body = LoanDecisionBody,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = LoanView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("api_key" = [])))]
pub async fn reject_loan(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<LoanView>, ApiError> {
    decide(state, caller, id, headers, body, Decision::Reject).await
}

async fn decide(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    decision: Decision,
) -> Result<Json<LoanView>, ApiError> {
    caller.require(Scope::IntentsWrite)?;
    let request: LoanDecisionBody = body::parse_or_default(&headers, body, state.config.api.body_limit_bytes)?;
    let not_found = || ApiError::NotFound(format!("no loan {id}"));
    let loan_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let actor = Actor {
        name: caller.name.clone(),
        admin: caller.require(Scope::Admin).is_ok(),
        party: request
            .acting_party
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty()),
    };
    let mut tx = state.pool.begin().await?;
    let intent = state
        .loans
        .decide(&mut tx, &caller.owner, loan_id, decision, &actor)
        .await
        .map_err(loan_error)?;
    tx.commit().await?;
    let loan = store::get(&state.pool, &caller.owner, loan_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(LoanView::new(&loan, &intent)))
}

pub(super) fn loan_error(error: LoanError) -> ApiError {
    match error {
        LoanError::NotFound => ApiError::NotFound("no such loan".into()),
        LoanError::NotAllowed(detail) => ApiError::NotAllowed(detail),
        LoanError::Conflict(detail) => ApiError::InvalidState(detail),
        LoanError::Refused(refusal) => ApiError::Refused(refusal),
        other => ApiError::Internal(other.into()),
    }
}
