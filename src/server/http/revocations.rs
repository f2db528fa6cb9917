//! `POST /v1/revocations` and the revocation feed `GET /v1/revocations`
//! (spec/http.md §3.7, §6.11, §6.12).

use super::Authn;
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, bearer, json_body, require_admin, unavailable};
use crate::keys::BlockId;
use crate::server::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeBody {
    block_id: String,
    /// A descendant token naming the block, when a holder revokes below itself.
    #[serde(default)]
    target_token: Option<String>,
}

pub(crate) async fn revoke(
    State(state): State<AppState>,
    headers: Authn,
    body: Result<Json<RevokeBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let token = bearer(&state, &headers)?;
    let b = json_body(body)?;
    let block = BlockId::from_hex(&b.block_id).ok_or_else(|| {
        ApiError::new(
            400,
            "invalid_block_id",
            "block_id must be 64 lower-case hex characters",
        )
    })?;
    let tree = token.block_ids()[0];
    let mine = token.len() - 1;
    let allowed = if require_admin(&state, &token, "baton.admin.revoke").is_ok()
        || token.block_ids()[mine] == block
    {
        true
    } else if let Some(target) = &b.target_token {
        // The target must descend from the caller's last block, and the
        // revoked block must be at or below it.
        let verifier = state.verifier.read().unwrap_or_else(|p| p.into_inner());
        let t = verifier
            .verify_text(target)
            .map_err(|e| ApiError::new(400, e.code(), &e.to_string()))?;
        let ids = t.block_ids();
        ids.len() > mine && ids[..=mine] == token.block_ids()[..] && ids[mine..].contains(&block)
    } else {
        false
    };
    if !allowed {
        return Err(ApiError::new(
            403,
            "revoke_forbidden",
            "a holder may revoke only its own block or blocks below it",
        ));
    }
    let Some(r) = state.ledger.revoke(tree, block).await else {
        state.metrics.count("revoke", 503);
        return Err(unavailable());
    };
    // Durable: now the offline verifier refuses the chain too.
    state
        .verifier
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .revoke(block);
    state.metrics.count("revoke", 200);
    Ok(
        Json(json!({ "block_id": block.to_string(), "revoked": true, "seq": r.seq, "new": r.new }))
            .into_response(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeedQuery {
    #[serde(default)]
    after: u64,
}

pub(crate) async fn revocation_feed(
    State(state): State<AppState>,
    headers: Authn,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let token = bearer(&state, &headers)?;
    require_admin(&state, &token, "baton.admin.revocations.read")?;
    let Query(q) = query
        .map_err(|_| ApiError::new(400, "invalid_request", "after must be an unsigned integer"))?;
    let Some(feed) = state.ledger.feed(q.after, 1000).await else {
        return Err(unavailable());
    };
    let entries: Vec<Value> = feed
        .into_iter()
        .map(|(seq, b)| json!({ "seq": seq, "block_id": b.to_string() }))
        .collect();
    let next = entries
        .last()
        .and_then(|e| e["seq"].as_u64())
        .unwrap_or(q.after);
    Ok(Json(json!({ "revocations": entries, "next": next })).into_response())
}
