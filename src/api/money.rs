//! Parties, balances, credits, ledger entries and FX quotes.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::{Caller, Scope};
use super::intents::admit_error;
use super::problem::{ApiError, FieldError, Problem};
use super::{body, AppState};
use crate::domain::{Country, Currency, Money, Msisdn, PartyId};
use crate::ledger::{self, AccountBalance, AccountKey, AccountKind, EntryRow, Leg, NewTransfer, Recorded};
use crate::store::parties::{self, PartyProfile, PartyRow};

const ROLES: [&str; 7] = ["creator", "ngo", "worker", "borrower", "lender", "employer", "customer"];

/// `PUT /v1/parties/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutParty {
    /// creator, ngo, worker, borrower, lender, employer or customer.
    #[schema(example = "creator")]
    pub role: String,
    /// 0 (phone verified), 1 (national ID), 2 (full KYC).
    #[schema(example = 1)]
    pub kyc_tier: i16,
    /// ISO 3166 alpha-2.
    #[schema(example = "KE")]
    pub country: Option<String>,
    /// Where payouts go when a payout names no phone (auto-payouts).
    #[schema(example = "0712345678")]
    pub payout_msisdn: Option<String>,
    #[schema(example = "mpesa")]
    pub payout_provider: Option<String>,
}

/// `PUT /v1/parties/{id}/payout-settings`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPayoutSettings {
    /// Pay the balance out automatically when it exceeds the threshold.
    pub auto_payout: bool,
    #[schema(example = "100")]
    pub threshold: Option<String>,
    #[schema(example = "KES")]
    pub currency: Option<String>,
}

/// A party as the API shows it; the payout phone is masked.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartyView {
    pub id: String,
    pub role: String,
    pub kyc_tier: i16,
    pub country: Option<String>,
    #[schema(example = "*********678")]
    pub payout_msisdn: Option<String>,
    pub payout_provider: Option<String>,
    pub auto_payout: bool,
    pub auto_payout_threshold: Option<String>,
    pub auto_payout_currency: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl From<PartyRow> for PartyView {
    fn from(row: PartyRow) -> PartyView {
        PartyView {
            id: row.id,
            role: row.role,
            kyc_tier: row.kyc_tier,
            country: row.country,
            payout_msisdn: row
                .payout_msisdn
                .map(|m| Msisdn::try_from(m).map(|m| m.masked()).unwrap_or_else(|_| "***".into())),
            payout_provider: row.payout_provider,
            auto_payout: row.auto_payout_enabled,
            auto_payout_threshold: row.auto_payout_threshold.map(|t| t.to_string()),
            auto_payout_currency: row.auto_payout_currency,
            updated_at: row.updated_at,
        }
    }
}

fn party_id(id: &str) -> Result<PartyId, ApiError> {
    PartyId::parse(id).map_err(|detail| ApiError::invalid("id", "invalid_party_id", detail))
}

/// Create or update a party.
#[utoipa::path(put, path = "/v1/parties/{id}", tag = "parties", request_body = PutParty,
    params(("id" = String, Path)),
    responses((status = 200, body = PartyView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn put_party(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PartyView>, ApiError> {
    caller.require(Scope::PartiesWrite)?;
    let id = party_id(&id)?;
    let (request, _) = body::parse::<PutParty>(&headers, body, state.config.api.body_limit_bytes)?;
    let mut errors = Vec::new();
    if !ROLES.contains(&request.role.as_str()) {
        errors.push(FieldError::new(
            "role",
            "invalid_role",
            format!("one of {}", ROLES.join(", ")),
        ));
    }
    if !(0..=2).contains(&request.kyc_tier) {
        errors.push(FieldError::new("kyc_tier", "invalid_kyc_tier", "0, 1 or 2"));
    }
    let country = request.country.as_deref().map(str::to_ascii_uppercase);
    if country
        .as_deref()
        .is_some_and(|c| c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        errors.push(FieldError::new(
            "country",
            "invalid_country",
            "an ISO 3166 alpha-2 code, e.g. KE",
        ));
    }
    let default_country = country
        .as_deref()
        .and_then(|c| Country::ALL.into_iter().find(|k| k.code() == c))
        .unwrap_or(Country::KE);
    let msisdn = match request
        .payout_msisdn
        .as_deref()
        .map(|m| Msisdn::parse(m, default_country))
    {
        Some(Ok(m)) => Some(m.digits().to_owned()),
        Some(Err(e)) => {
            errors.push(FieldError::new("payout_msisdn", "invalid_phone_number", e.to_string()));
            None
        }
        None => None,
    };
    if let Some(provider) = &request.payout_provider {
        if !state.config.providers.contains_key(provider) {
            errors.push(FieldError::new(
                "payout_provider",
                "unknown_provider",
                "not a configured provider",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let mut tx = state.pool.begin().await?;
    let row = parties::upsert_profile(
        &mut tx,
        &caller.owner,
        id.as_str(),
        &PartyProfile {
            role: &request.role,
            kyc_tier: request.kyc_tier,
            country: country.as_deref(),
            payout_msisdn: msisdn.as_deref(),
            payout_provider: request.payout_provider.as_deref(),
        },
        state.engine.jobs().clock().sql_now(),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(row.into()))
}

/// Set a party's auto-payout.
#[utoipa::path(put, path = "/v1/parties/{id}/payout-settings", tag = "parties", request_body = PutPayoutSettings,
    params(("id" = String, Path)),
    responses((status = 200, body = PartyView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn put_payout_settings(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PartyView>, ApiError> {
    caller.require(Scope::PartiesWrite)?;
    let id = party_id(&id)?;
    let (request, _) = body::parse::<PutPayoutSettings>(&headers, body, state.config.api.body_limit_bytes)?;
    let (threshold, currency) = match (&request.threshold, &request.currency) {
        (Some(threshold), Some(currency)) => {
            let currency = currency
                .parse::<Currency>()
                .map_err(|_| ApiError::invalid("currency", "unsupported_currency", "KES, UGX, TZS, RWF or USD"))?;
            let threshold = Money::parse(threshold, currency)
                .ok()
                .filter(|m| !m.amount().is_sign_negative())
                .ok_or_else(|| ApiError::invalid("threshold", "invalid_amount", "a decimal string such as \"100\""))?;
            (Some(threshold.amount()), Some(currency.code()))
        }
        (None, None) if !request.auto_payout => (None, None),
        _ => {
            return Err(ApiError::invalid(
                "threshold",
                "missing_field",
                "auto-payout needs both a threshold and its currency",
            ))
        }
    };
    let mut tx = state.pool.begin().await?;
    let row = parties::set_auto_payout(
        &mut tx,
        &caller.owner,
        id.as_str(),
        &parties::AutoPayout {
            enabled: request.auto_payout,
            threshold,
            currency,
        },
        state.policy.default_tier(),
        state.engine.jobs().clock().sql_now(),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(row.into()))
}

/// Get a party.
#[utoipa::path(get, path = "/v1/parties/{id}", tag = "parties", params(("id" = String, Path)),
    responses((status = 200, body = PartyView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
pub async fn get_party(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PartyView>, ApiError> {
    caller.require(Scope::IntentsRead)?;
    let row = parties::get(&state.pool, &caller.owner, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no party {id}")))?;
    Ok(Json(row.into()))
}

/// A party's balances, one account per currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Balances {
    pub party_id: String,
    pub accounts: Vec<AccountBalance>,
}

/// A party's balances.
#[utoipa::path(get, path = "/v1/parties/{id}/balances", tag = "parties", params(("id" = String, Path)),
    responses((status = 200, body = Balances), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = [])))]
pub async fn party_balances(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Balances>, ApiError> {
    caller.require(Scope::IntentsRead)?;
    let accounts = ledger::balances_of(&state.pool, &caller.owner, AccountKind::Party, &id).await?;
    Ok(Json(Balances { party_id: id, accounts }))
}

/// A campaign's buckets.
#[utoipa::path(get, path = "/v1/campaigns/{id}/balances", tag = "parties", params(("id" = String, Path)),
    responses((status = 200, body = Balances), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = [])))]
pub async fn campaign_balances(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Balances>, ApiError> {
    caller.require(Scope::IntentsRead)?;
    let accounts = ledger::balances_of(&state.pool, &caller.owner, AccountKind::Campaign, &id).await?;
    Ok(Json(Balances { party_id: id, accounts }))
}

/// `POST /v1/parties/{id}/credits`: money the product owes the party
/// (earnings, a top-up), from the owner's own books.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCredit {
    #[schema(example = "50.00")]
    pub amount: String,
    #[schema(example = "USD")]
    pub currency: String,
    /// Unique per credit: crediting the same reference again is a no-op
    /// (with the same amount) or a 409 (with another).
    #[schema(example = "sale-8812")]
    pub reference: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreditView {
    pub transfer_id: Uuid,
    /// False when this reference had already been credited.
    pub created: bool,
    pub balance: Option<AccountBalance>,
}

/// Credit a party's balance.
///
/// A party not seen before is created with the default KYC tier, as its
/// first payout or its payout settings would create it.
#[utoipa::path(post, path = "/v1/parties/{id}/credits", tag = "parties", request_body = CreateCredit,
    params(("id" = String, Path)),
    responses((status = 201, body = CreditView), (status = 200, description = "Already credited", body = CreditView),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn credit_party(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreditView>), ApiError> {
    caller.require(Scope::PartiesWrite)?;
    let id = party_id(&id)?;
    let (request, _) = body::parse::<CreateCredit>(&headers, body, state.config.api.body_limit_bytes)?;
    let currency = request
        .currency
        .parse::<Currency>()
        .map_err(|_| ApiError::invalid("currency", "unsupported_currency", "KES, UGX, TZS, RWF or USD"))?;
    let amount = Money::parse(&request.amount, currency)
        .ok()
        .filter(Money::is_positive)
        .ok_or_else(|| {
            ApiError::invalid(
                "amount",
                "invalid_amount",
                "a positive decimal string at the currency's precision",
            )
        })?;
    let reference = request.reference.trim();
    if reference.is_empty() || reference.len() > 64 || reference.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "reference",
            "invalid_reference",
            "1 to 64 printable characters",
        ));
    }
    let payee = AccountKey::party(&caller.owner, id.as_str(), currency);
    let transfer = NewTransfer {
        key: ledger::joined_key(&["credit", &caller.owner, id.as_str(), reference]),
        owner: caller.owner.clone(),
        kind: "credit".into(),
        intent_id: None,
        description: format!("credit {reference}"),
        legs: vec![
            Leg::debit(
                AccountKey::funding(&caller.owner, currency),
                amount.amount(),
                "credited to a party",
            ),
            Leg::credit(payee.clone(), amount.amount(), reference),
        ],
    };
    let mut tx = state.pool.begin().await?;
    let now = state.engine.jobs().clock().sql_now();
    let recorded = crate::policy::credit(
        &mut tx,
        state.engine.jobs(),
        &transfer,
        &payee,
        amount.amount(),
        now,
        state.policy.default_tier(),
    )
    .await
    .map_err(|e| match e {
        ledger::LedgerError::Mismatch { .. } => ApiError::InvalidState(e.to_string()),
        other => ApiError::Internal(other.into()),
    })?;
    tx.commit().await?;
    let balance = ledger::balances_of(&state.pool, &caller.owner, AccountKind::Party, id.as_str())
        .await?
        .into_iter()
        .find(|b| b.currency == currency.code());
    let (status, transfer_id, created) = match recorded {
        Recorded::New { transfer_id } => (StatusCode::CREATED, transfer_id, true),
        Recorded::Already { transfer_id, .. } => (StatusCode::OK, transfer_id, false),
    };
    Ok((
        status,
        Json(CreditView {
            transfer_id,
            created,
            balance,
        }),
    ))
}

/// A page of an account's entries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntryPage {
    pub account: AccountBalance,
    pub data: Vec<EntryRow>,
    pub next_cursor: Option<String>,
}

/// An account's entries. Owners see their own accounts; admin keys see the
/// platform's (floats, fees, FX, suspense) too.
#[utoipa::path(get, path = "/v1/ledger/accounts/{id}/entries", tag = "ledger",
    params(("id" = Uuid, Path), ("cursor" = Option<String>, Query), ("limit" = Option<u32>, Query)),
    responses((status = 200, body = EntryPage), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn account_entries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<EntryPage>, ApiError> {
    caller.require(Scope::IntentsRead)?;
    let not_found = || ApiError::NotFound(format!("no account {id}"));
    let account_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let account = ledger::find_account(&state.pool, account_id)
        .await?
        .ok_or_else(not_found)?;
    let visible = account.owner == caller.owner || caller.require(Scope::Admin).is_ok();
    if !visible {
        return Err(not_found());
    }
    let before = match query.get("cursor") {
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::invalid("cursor", "invalid_cursor", "use next_cursor from a previous page"))?,
        ),
        None => None,
    };
    let limit = body::page_limit(&query, &state.config.api)?;
    let mut data = ledger::entries(&state.pool, account_id, before, i64::from(limit) + 1).await?;
    let next_cursor = body::next_page(&mut data, limit, |e| e.id.to_string());
    Ok(Json(EntryPage {
        account,
        data,
        next_cursor,
    }))
}

/// `POST /v1/quotes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateQuote {
    #[schema(example = "creator-42")]
    pub party_id: String,
    /// What leaves the party's balance.
    #[schema(example = "50.00")]
    pub source_amount: String,
    #[schema(example = "USD")]
    pub source_currency: String,
    #[schema(example = "KES")]
    pub target_currency: String,
    /// Defaults to the target currency's configured provider.
    #[schema(example = "mpesa")]
    pub provider: Option<String>,
}

/// A quote: the rate, its source, the fees and what arrives, until
/// `expires_at`.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuoteView {
    pub id: Uuid,
    pub party_id: String,
    pub provider: String,
    #[schema(value_type = String, example = "130")]
    pub rate: Decimal,
    #[schema(example = "config")]
    pub rate_source: String,
    pub rate_as_of: DateTime<Utc>,
    pub breakdown: crate::policy::fees::Breakdown,
    /// The `amount` a payout using this quote must carry.
    #[schema(value_type = String, example = "6040.00")]
    pub received: Decimal,
    pub target_currency: String,
    pub expires_at: DateTime<Utc>,
    pub used_by: Option<Uuid>,
}

impl QuoteView {
    fn from_row(row: crate::store::policy::QuoteRow) -> Result<QuoteView, ApiError> {
        Ok(QuoteView {
            breakdown: serde_json::from_value(row.breakdown).map_err(|e| ApiError::Internal(e.into()))?,
            id: row.id,
            party_id: row.party_id,
            provider: row.provider,
            rate: row.rate,
            rate_source: row.rate_source,
            rate_as_of: row.rate_as_of,
            received: row.received,
            target_currency: row.target_currency,
            expires_at: row.expires_at,
            used_by: row.used_by,
        })
    }
}

/// Quote a payout across currencies.
#[utoipa::path(post, path = "/v1/quotes", tag = "quotes", request_body = CreateQuote,
    responses((status = 201, body = QuoteView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn create_quote(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<QuoteView>), ApiError> {
    caller.require(Scope::IntentsWrite)?;
    let (request, _) = body::parse::<CreateQuote>(&headers, body, state.config.api.body_limit_bytes)?;
    let mut errors = Vec::new();
    let mut currency = |field: &str, code: &str| {
        code.parse::<Currency>()
            .map_err(|_| {
                errors.push(FieldError::new(
                    field,
                    "unsupported_currency",
                    "KES, UGX, TZS, RWF or USD",
                ))
            })
            .ok()
    };
    let source = currency("source_currency", &request.source_currency);
    let target = currency("target_currency", &request.target_currency);
    let sent = source.and_then(|c| {
        Money::parse(&request.source_amount, c)
            .ok()
            .filter(Money::is_positive)
            .or_else(|| {
                errors.push(FieldError::new(
                    "source_amount",
                    "invalid_amount",
                    "a positive decimal string",
                ));
                None
            })
    });
    let party = PartyId::parse(&request.party_id)
        .map_err(|d| errors.push(FieldError::new("party_id", "invalid_party_id", d)))
        .ok();
    let provider = match (&request.provider, target) {
        (Some(p), Some(t))
            if state
                .config
                .providers
                .get(p)
                .is_some_and(|c| c.currencies.contains_key(&t)) =>
        {
            Some(p.clone())
        }
        (Some(_), _) => {
            errors.push(FieldError::new(
                "provider",
                "currency_not_served",
                "the provider does not carry this currency",
            ));
            None
        }
        (None, Some(t)) => state.config.routing.default_provider.get(&t).cloned().or_else(|| {
            errors.push(FieldError::new(
                "target_currency",
                "unsupported_currency",
                "no provider pays out this currency",
            ));
            None
        }),
        (None, None) => None,
    };
    let (Some(source), Some(target), Some(sent), Some(party), Some(provider), true) =
        (source, target, sent, party, provider, errors.is_empty())
    else {
        return Err(ApiError::Invalid(errors));
    };
    let now = state.engine.jobs().clock().local_now();
    let mut conn = state.pool.acquire().await?;
    let row = state
        .policy
        .quote(
            &mut conn,
            &crate::policy::QuoteRequest {
                owner: &caller.owner,
                party_id: party.as_str(),
                sent: sent.amount(),
                source,
                target,
                provider: &provider,
            },
            now,
        )
        .await
        .map_err(admit_error)?;
    Ok((StatusCode::CREATED, Json(QuoteView::from_row(row)?)))
}

/// Get a quote.
#[utoipa::path(get, path = "/v1/quotes/{id}", tag = "quotes", params(("id" = Uuid, Path)),
    responses((status = 200, body = QuoteView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
pub async fn get_quote(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<QuoteView>, ApiError> {
    caller.require(Scope::IntentsRead)?;
    let not_found = || ApiError::NotFound(format!("no quote {id}"));
    let quote_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let row = crate::store::policy::get_quote(&state.pool, &caller.owner, quote_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(QuoteView::from_row(row)?))
}
