//! `GET /v1/balances`: the counters of every budget scope of the caller's
//! chain, nearest first (spec/http.md §6.10). Scopes are active state, in
//! memory: no store read, except on a shared store, where the database is
//! read through the writer.

use super::Authn;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::render::allocation_json;
use super::{ApiError, bearer, unavailable};
use crate::ledger::{MAX_AMOUNT, ScopeKey};
use crate::server::state::AppState;

pub(crate) async fn balances(
    State(state): State<AppState>,
    headers: Authn,
) -> Result<Response, ApiError> {
    let token = bearer(&state, &headers)?;
    let ids = token.block_ids();
    let budgets: Vec<_> = token.authority().budgets().iter().rev().collect();
    let keys: Vec<(ScopeKey, u64)> = budgets
        .iter()
        .map(|(block, b)| {
            (
                ScopeKey {
                    block: ids[*block],
                    unit: b.unit.clone(),
                    tools: b.tools.clone(),
                },
                b.ceiling.min(MAX_AMOUNT),
            )
        })
        .collect();
    let Some(counters) = state.ledger.scopes(keys.clone()).await else {
        return Err(unavailable());
    };
    // The unused part of active allocations set aside at each scope,
    // which `held` includes, and the allocations this token draws from,
    // one per unit at most: from memory, or on a shared store from the
    // database (a second committed read, after the counters').
    let tree = *ids.first().ok_or_else(unavailable)?;
    let (allocated, drawing): (Vec<u64>, Vec<Value>) = state
        .ledger
        .with_allocations(tree, |ledger| {
            let mut units: Vec<&crate::caveat::Unit> = keys.iter().map(|(k, _)| &k.unit).collect();
            units.sort_by_key(|u| u.as_str());
            units.dedup();
            (
                keys.iter().map(|(k, _)| ledger.allocated(k)).collect(),
                units
                    .into_iter()
                    .filter_map(|u| ledger.allocation_for(ids, u))
                    .map(allocation_json)
                    .collect(),
            )
        })
        .await
        .ok_or_else(unavailable)?;
    let scopes: Vec<Value> = budgets
        .iter()
        .zip(keys)
        .zip(counters)
        .zip(allocated)
        .map(|((((block, b), (key, _)), s), allocated)| {
            json!({ "block": block, "block_id": key.block.to_string(), "unit": key.unit.as_str(), "tools": b.tools.as_ref().map(|p| p.as_str()), "ceiling": s.ceiling, "spent": s.spent, "held": s.held, "allocated": allocated, "remaining": s.remaining() })
        })
        .collect();
    Ok(Json(json!({ "scopes": scopes, "allocations": drawing })).into_response())
}
