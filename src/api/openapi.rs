//! The OpenAPI 3 document, generated from the handlers' annotations and
//! served at `/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{approvals, intents, loans, money, operations, problem, reversals, validate, views, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(title = "Tuma", description = "A durable payout and collection engine for mobile money. \
        Errors are application/problem+json; creates need an Idempotency-Key."),
    paths(
        intents::create_payout, intents::list_payouts, intents::get_payout, intents::cancel_payout,
        intents::create_collection, intents::list_collections, intents::get_collection, intents::cancel_collection,
        webhooks::create_endpoint, webhooks::list_endpoints, webhooks::disable_endpoint,
        money::put_party, money::put_payout_settings, money::get_party, money::party_balances,
        money::campaign_balances, money::credit_party, money::account_entries, money::create_quote, money::get_quote,
        approvals::list_approvals, approvals::approve, approvals::reject, approvals::create_batch,
        approvals::approve_batch,
        loans::create_loan, loans::get_loan, loans::approve_loan, loans::reject_loan,
        reversals::create_reversal, intents::get_reversal,
        operations::reconciliation_report, operations::adjust_float, operations::resolve_payout,
        operations::resolve_collection, operations::resolve_reversal, operations::balance_history, operations::tax_report,
        operations::providers_report, operations::late_successes, operations::settle_late_success, operations::review_callback,
    ),
    components(schemas(
        validate::CreatePayout, validate::CreateCollection, validate::PhoneInput,
        views::IntentView, views::IntentDetail, views::IntentPage, views::EventView, views::PhoneView,
        problem::Problem, problem::FieldError, webhooks::CreateEndpoint, webhooks::EndpointView,
        webhooks::EndpointSummary, webhooks::EndpointList,
        views::FlagView, views::ApprovalView, crate::policy::fees::Breakdown,
        money::PutParty, money::PutPayoutSettings, money::PartyView, money::Balances, money::CreateCredit,
        money::CreditView, money::EntryPage, money::CreateQuote, money::QuoteView,
        crate::ledger::AccountBalance, crate::ledger::EntryRow,
        approvals::ApprovalPage, approvals::DecisionBody, approvals::DecisionView, approvals::CreateBatch,
        approvals::BatchView, approvals::BatchDecisionView,
        loans::CreateLoan, loans::BorrowerInput, loans::LoanView, loans::LoanDetail, loans::InstallmentView,
        loans::RepaymentView, loans::LoanDecisionBody, crate::loans::Excess, reversals::CreateReversal,
        operations::FloatAdjustment, operations::FloatAdjustmentView, operations::Resolution,
        crate::reconcile::Report, crate::reconcile::FloatCheck, crate::reconcile::IntentLine,
        crate::reconcile::SuspenseLine, crate::reconcile::CallbackLine, crate::reconcile::LateSuccessLine,
        operations::BalancePoint, operations::BalanceHistory, operations::TaxLineView, operations::TaxReportView,
        operations::ProviderStatsView, operations::ProvidersReport, operations::LateSuccessView,
        operations::LateSuccessList, operations::LateSuccessSettlement,
        operations::CallbackReviewView, operations::CallbackReviewRequest,
    )),
    modifiers(&BearerKey, &CommonRefusals, &ProblemContentType),
)]
pub struct ApiDoc;

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tuma_…")
                    .build(),
            ),
        );
    }
}

/// Errors are served as `application/problem+json` (RFC 9457); the
/// handlers' annotations name the `Problem` body, this says its media type.
struct ProblemContentType;

impl Modify for ProblemContentType {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for response in operation.responses.responses.values_mut() {
                    let RefOr::T(response) = response else { continue };
                    let is_problem = response.content.get("application/json").is_some_and(|content| {
                        matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem"))
                    });
                    if is_problem {
                        if let Some(content) = response.content.shift_remove("application/json") {
                            response.content.insert("application/problem+json".to_owned(), content);
                        }
                    }
                }
            }
        }
    }
}

/// Refusals every `/v1` operation can answer whatever its own annotation
/// lists: authentication and scope (401, 403), a control character in the
/// path or query (422), and, with a body, broken JSON (400), a body over the
/// limit (413) or not JSON (415).
struct CommonRefusals;

impl Modify for CommonRefusals {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let problem = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build(),
            )
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let mut codes = vec![
                    ("401", "A valid API key is required"),
                    ("403", "The API key may not do this"),
                    ("422", "Invalid fields, or a control character in the path or query"),
                ];
                if operation.request_body.is_some() {
                    codes.extend([
                        ("400", "The body is not valid JSON"),
                        ("413", "The body is too large"),
                        ("415", "The body must be JSON"),
                    ]);
                }
                for (code, description) in codes {
                    operation
                        .responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| problem(description));
                }
            }
        }
    }
}
