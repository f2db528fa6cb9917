//! `POST /v1/tokens` (minting, administrative) and `POST /v1/authorize`
//! (spec/http.md §6.2, §6.3).

use super::Authn;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ActionBody, ApiError, amount, authorize, bearer, json_body, now_secs, require_admin};
use crate::caveat::{ArgBound, ArgConstraint, Budget, Caveat, Unit};
use crate::pattern::ActionPattern;
use crate::server::state::AppState;
use crate::token::Token;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BudgetBody {
    unit: String,
    ceiling: Value,
    #[serde(default)]
    tools: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ArgBody {
    action: String,
    arg: String,
    #[serde(default)]
    min: Option<i64>,
    #[serde(default)]
    max: Option<i64>,
    #[serde(default)]
    one_of: Option<Vec<String>>,
}

/// The caveats of a new root token, as JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MintBody {
    #[serde(default)]
    budgets: Vec<BudgetBody>,
    tools: Vec<String>,
    #[serde(default)]
    depth: Option<u32>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    resources: Option<Vec<String>>,
    #[serde(default)]
    args: Vec<ArgBody>,
    #[serde(default)]
    label: Option<String>,
}

fn mint_caveats(state: &AppState, b: MintBody) -> Result<Vec<Caveat>, ApiError> {
    let bad = |m: &str| ApiError::new(400, "invalid_caveat", m);
    let mut c = Vec::new();
    for budget in b.budgets {
        let unit = Unit::parse(&budget.unit).map_err(bad)?;
        let ceiling = amount(&budget.ceiling, "ceiling")?;
        let tools = budget
            .tools
            .map(|t| ActionPattern::parse(&t).map_err(|e| bad(e.reason())))
            .transpose()?;
        c.push(Caveat::Budget(Budget {
            unit,
            ceiling,
            tools,
        }));
    }
    // Any pattern that reaches into the admin namespace (`*`, `baton.*`,
    // `baton.admin.mint`...) is refused: admin rights come only from the
    // admin token and its attenuations.
    let admin = ActionPattern::parse("baton.admin.*").expect("valid literal pattern");
    if b.tools
        .iter()
        .any(|t| ActionPattern::parse(t).is_ok_and(|p| p.overlaps(&admin)))
    {
        return Err(ApiError::new(
            400,
            "invalid_caveat",
            "minted tokens cannot grant the admin namespace",
        ));
    }
    c.push(Caveat::tools(b.tools.iter().map(String::as_str)).map_err(|e| bad(e.reason()))?);
    if let Some(d) = b.depth {
        c.push(Caveat::Depth(d));
    }
    if let Some(ttl) = b.ttl_seconds {
        c.push(Caveat::Expiry {
            not_after: now_secs(state).saturating_add(ttl),
            not_before: None,
        });
    }
    if let Some(r) = b.resources {
        c.push(Caveat::resources(r.iter().map(String::as_str)).map_err(|e| bad(e.reason()))?);
    }
    for a in b.args {
        let action = ActionPattern::parse(&a.action).map_err(|e| bad(e.reason()))?;
        let bound = match (a.min, a.max, a.one_of) {
            (None, None, Some(set)) => ArgBound::OneOf(set.into_iter().collect()),
            (min, max, None) => ArgBound::Range { min, max },
            _ => {
                return Err(bad(
                    "an argument bound is a range (min/max) or one_of, not both",
                ));
            }
        };
        c.push(Caveat::ArgBound(ArgConstraint {
            action,
            arg: a.arg,
            bound,
        }));
    }
    if let Some(l) = b.label {
        c.push(Caveat::Label(l));
    }
    Ok(c)
}

pub(crate) async fn mint(
    State(state): State<AppState>,
    headers: Authn,
    body: Result<Json<MintBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let token = bearer(&state, &headers)?;
    require_admin(&state, &token, "baton.admin.mint")?;
    let caveats = mint_caveats(&state, json_body(body)?)?;
    let signer = state.signer.read().unwrap_or_else(|p| p.into_inner());
    let minted =
        Token::mint(&signer, caveats).map_err(|e| ApiError::new(400, e.code(), &e.to_string()))?;
    Ok((StatusCode::CREATED, Json(json!({ "token": minted.to_text(), "block_id": minted.block_ids()[0].to_string(), "kid": minted.root_kid().to_string() })))
        .into_response())
}

pub(crate) async fn authorize_handler(
    State(state): State<AppState>,
    headers: Authn,
    body: Result<Json<ActionBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let token = bearer(&state, &headers)?;
    let a = json_body(body)?;
    let auth = authorize(&state, &token, &a)?;
    let budgets: Vec<Value> = auth
        .budgets
        .iter()
        .map(|s| json!({ "block": s.block, "block_id": s.block_id.to_string(), "unit": s.unit.as_str(), "ceiling": s.ceiling, "tools": s.tools.as_ref().map(|p| p.as_str()) }))
        .collect();
    Ok(Json(json!({ "decision": "allow", "budgets": budgets })).into_response())
}
