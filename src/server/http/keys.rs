//! `GET /v1/keys`: the issuer's public keys, for gateways (spec/http.md §6.1).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::keys::{KeyStatus, Keyset};
use crate::server::state::AppState;

/// The keys as `GET /v1/keys` lists them (also in the rotation answer).
pub(crate) fn keys_json(keyset: &Keyset) -> Vec<Value> {
    keyset
        .iter()
        .map(|(k, s)| {
            json!({ "kid": k.kid().to_string(), "public_key": k.to_text(), "status": if s == KeyStatus::Active { "active" } else { "retired" } })
        })
        .collect()
}

pub(crate) async fn keys(State(state): State<AppState>) -> Response {
    let verifier = state.verifier.read().unwrap_or_else(|p| p.into_inner());
    Json(json!({ "keys": keys_json(verifier.keyset()) })).into_response()
}
