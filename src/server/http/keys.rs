//! `GET /v1/keys`: the issuer's public keys, for gateways (spec/http.md §6.1).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::keys::KeyStatus;
use crate::server::state::AppState;

pub(crate) async fn keys(State(state): State<AppState>) -> Response {
    let verifier = state.verifier.read().unwrap_or_else(|p| p.into_inner());
    let keys: Vec<Value> = verifier
        .keyset()
        .iter()
        .map(|(k, s)| {
            json!({ "kid": k.kid().to_string(), "public_key": k.to_text(), "status": if s == KeyStatus::Active { "active" } else { "retired" } })
        })
        .collect();
    Json(json!({ "keys": keys })).into_response()
}
