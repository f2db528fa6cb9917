//! Allocations: guaranteed sub-budgets (spec/http.md §3.8, §6.16–6.19).
//!
//! A parent, holding its token, sets an amount aside for a child named by
//! the child's token, at every budget scope above the child; the child's
//! reserves then draw from it. Create, read, release and list; each
//! handler verifies, turns the request into a typed [`Command`], and
//! renders the typed outcome like the reservation handlers do.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::render::allocation_json;
use super::{
    ApiError, Authn, bearer, bearer_with_proof, fingerprint, idem_key, json_body, now_secs,
    respond, run, ttl, unavailable,
};
use crate::caveat::Unit;
use crate::ledger::{
    AllocAmount, AllocId, AllocateRequest, Command, MAX_AMOUNT, Operation, Outcome, Overflow,
    ScopeKey,
};
use crate::server::state::AppState;
use crate::token::Token;

/// An allocation lasts an hour unless asked otherwise (at most a day, like
/// a hold); it also ends when the child token expires.
pub(crate) const DEFAULT_ALLOCATION_TTL_MS: u64 = 3_600_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AllocateBody {
    /// The child's token, text form: it must verify and descend from the
    /// caller's token.
    child_token: String,
    unit: String,
    #[serde(default)]
    amount: Option<Value>,
    /// A fraction of the parent's remaining, in (0, 1].
    #[serde(default)]
    fraction: Option<Value>,
    #[serde(default)]
    overflow: Option<String>,
    #[serde(default)]
    ttl_ms: Option<Value>,
    idempotency_key: String,
}

fn new_allocation_id(now_ms: u64) -> Result<AllocId, ApiError> {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).map_err(|_| unavailable())?;
    Ok(AllocId::new(now_ms, b))
}

/// Whether a token's validity window has closed (with the verifier's skew).
fn expired(state: &AppState, token: &Token) -> bool {
    let skew = state
        .verifier
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .skew();
    token
        .authority()
        .not_after()
        .is_some_and(|na| now_secs(state) > na.saturating_add(skew))
}

fn amount_of(b: &AllocateBody) -> Result<AllocAmount, ApiError> {
    let invalid = |m: &str| ApiError::new(400, "invalid_amount", m);
    match (&b.amount, &b.fraction) {
        (Some(v), None) => {
            let n = super::amount(v, "amount")?;
            if n == 0 {
                return Err(invalid("amount must be at least 1"));
            }
            Ok(AllocAmount::Fixed(n))
        }
        (None, Some(v)) => {
            // To the nearest millionth (0.29 is 290 000 ppm, not the
            // 289 999 that binary floating point would floor to); the
            // amount itself is then rounded down by the ledger, so it never
            // exceeds the share asked for by more than a millionth.
            let ppm = v
                .as_f64()
                .filter(|f| *f > 0.0 && *f <= 1.0)
                .map(|f| (f * 1_000_000.0).round())
                .filter(|p| *p >= 1.0)
                .ok_or_else(|| invalid("fraction must be a number in (0, 1], at least 0.000001"))?;
            // In 1..=1e6 by the filters above.
            Ok(AllocAmount::Fraction { ppm: ppm as u32 })
        }
        _ => Err(invalid("give exactly one of amount and fraction")),
    }
}

/// `POST /v1/allocations`.
pub(crate) async fn allocate(
    State(state): State<AppState>,
    headers: Authn,
    body: Result<Json<AllocateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (token, proof) = bearer_with_proof(&state, &headers)?;
    let b = json_body(body)?;
    let amount = amount_of(&b)?;
    let overflow = match b.overflow.as_deref() {
        None => Overflow::Deny,
        Some(s) => Overflow::parse(s).ok_or_else(|| {
            ApiError::new(400, "invalid_request", "overflow is \"deny\" or \"shared\"")
        })?,
    };
    let ttl_ms = ttl(b.ttl_ms.as_ref())?.unwrap_or(DEFAULT_ALLOCATION_TTL_MS);
    let unit = Unit::parse(&b.unit)
        .map_err(|_| ApiError::new(400, "invalid_request", "unit is not a valid unit name"))?;
    let idem = idem_key(&token, &b.idempotency_key)?;
    let child = {
        let verifier = state.verifier.read().unwrap_or_else(|p| p.into_inner());
        verifier.verify_text(b.child_token.trim()).map_err(|e| {
            let status = if matches!(e, crate::VerifyError::Revoked { .. }) {
                403
            } else {
                400
            };
            ApiError::new(status, "invalid_child_token", &e.to_string())
        })?
    };
    let parent_ids = token.block_ids();
    let child_ids = child.block_ids();
    if child_ids.len() <= parent_ids.len() || !child_ids.starts_with(parent_ids) {
        let e = crate::ledger::LedgerError::NotDescendant;
        return Err(ApiError::new(403, e.code(), &e.to_string()));
    }
    let child_last = child_ids[child_ids.len() - 1];
    let fp = fingerprint(
        "allocate",
        &token,
        &json!([
            child_last.to_string(),
            b.unit,
            b.amount,
            b.fraction,
            overflow.as_str(),
            ttl_ms
        ]),
    );
    if expired(&state, &token) || expired(&state, &child) {
        // A replay is answered from its record even if a token has expired
        // since; a new allocation needs both tokens valid now.
        let cmd = Command {
            op: Operation::Replay,
            idem: Some((idem, fp)),
            proof,
        };
        return match run(&state, cmd, "allocate").await? {
            o @ (Outcome::Allocation { .. } | Outcome::Refused(_)) => {
                Ok(respond(&state, &o, "allocate"))
            }
            _ => {
                let e = crate::error::Denied::Expired;
                Err(ApiError::new(403, e.code(), &e.to_string()))
            }
        };
    }
    // Every budget in the unit that applies to every action, of every
    // block above the child, nearest first; and the child's own ceiling
    // (the smallest in its chain).
    let budgets = child.authority().budgets();
    let mut scopes: Vec<(usize, ScopeKey, u64)> = budgets
        .iter()
        .filter(|(block, bud)| {
            *block + 1 < child_ids.len() && bud.unit == unit && bud.tools.is_none()
        })
        .map(|(block, bud)| {
            (
                *block,
                ScopeKey {
                    block: child_ids[*block],
                    unit: unit.clone(),
                    tools: None,
                },
                bud.ceiling.min(MAX_AMOUNT),
            )
        })
        .collect();
    scopes.sort_by_key(|s| std::cmp::Reverse(s.0));
    let child_ceiling = budgets
        .iter()
        .filter(|(_, bud)| bud.unit == unit && bud.tools.is_none())
        .map(|(_, bud)| bud.ceiling.min(MAX_AMOUNT))
        .min()
        .unwrap_or(MAX_AMOUNT);
    let req = AllocateRequest {
        id: new_allocation_id(state.ledger.clock.now_ms())?,
        parent: parent_ids.to_vec(),
        child: child_ids.to_vec(),
        unit,
        scopes: scopes.into_iter().map(|(_, k, c)| (k, c)).collect(),
        amount,
        child_ceiling,
        overflow,
        ttl_ms,
        not_after_ms: child
            .authority()
            .not_after()
            .map(|s| s.saturating_mul(1000)),
    };
    let cmd = Command {
        op: Operation::Allocate { req },
        idem: Some((idem, fp)),
        proof,
    };
    let outcome = run(&state, cmd, "allocate").await?;
    Ok(respond(&state, &outcome, "allocate"))
}

/// An allocation id from the path; anything else names nothing this token
/// can see (404 after authentication, like a reservation id).
fn allocation_id(path: Result<Path<String>, PathRejection>) -> Result<AllocId, ApiError> {
    path.ok()
        .and_then(|Path(id)| AllocId::parse(&id))
        .ok_or_else(|| ApiError::new(404, "allocation_not_found", "no such allocation"))
}

/// `GET /v1/allocations/{id}`.
pub(crate) async fn get_allocation(
    State(state): State<AppState>,
    headers: Authn,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let token = bearer(&state, &headers)?;
    let id = allocation_id(path)?;
    let cmd = Command {
        op: Operation::GetAllocation {
            chain: token.block_ids().to_vec(),
            id,
        },
        idem: None,
        proof: None,
    };
    let outcome = run(&state, cmd, "get_allocation").await?;
    Ok(respond(&state, &outcome, "get_allocation"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseBody {
    idempotency_key: String,
}

/// `POST /v1/allocations/{id}/release`: by the parent, an ancestor of it,
/// or the child.
pub(crate) async fn release_allocation(
    State(state): State<AppState>,
    headers: Authn,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<ReleaseBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (token, proof) = bearer_with_proof(&state, &headers)?;
    let b = json_body(body)?;
    let idem = idem_key(&token, &b.idempotency_key)?;
    let id = allocation_id(path)?;
    let fp = fingerprint("release_allocation", &token, &json!([id.to_string()]));
    let cmd = Command {
        op: Operation::ReleaseAllocation {
            chain: token.block_ids().to_vec(),
            id,
        },
        idem: Some((idem, fp)),
        proof,
    };
    let outcome = run(&state, cmd, "release_allocation").await?;
    Ok(respond(&state, &outcome, "release_allocation"))
}

/// `GET /v1/allocations`: the active allocations to the caller's
/// descendants, by id. Active allocations are in memory on the embedded
/// store; a shared store's are read from the database (its tree's only,
/// through an index of the active ones).
pub(crate) async fn list_allocations(
    State(state): State<AppState>,
    headers: Authn,
) -> Result<Response, ApiError> {
    let token = bearer(&state, &headers)?;
    let ids = token.block_ids();
    let tree = *ids.first().ok_or_else(unavailable)?;
    let list = state
        .ledger
        .with_allocations(tree, |l| l.allocations_of(ids))
        .await
        .ok_or_else(unavailable)?;
    let items: Vec<Value> = list.iter().map(allocation_json).collect();
    Ok(Json(json!({ "allocations": items })).into_response())
}
