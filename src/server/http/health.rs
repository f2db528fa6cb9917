//! Liveness, readiness, metrics and the fallbacks for unknown paths and
//! methods (spec/http.md §6.13–6.15, §2.1).

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ApiError;
use crate::server::state::AppState;

pub(crate) async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    if state.ledger.ready.load(Ordering::SeqCst) {
        Json(json!({ "ready": true })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false })),
        )
            .into_response()
    }
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let population = state.ledger.read().await.population();
    let body = state
        .metrics
        .render(state.ledger.ready.load(Ordering::SeqCst), population);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

pub(crate) async fn not_found() -> Response {
    ApiError::new(404, "not_found", "no such endpoint").into_response()
}

pub(crate) async fn method_not_allowed() -> Response {
    ApiError::new(
        405,
        "method_not_allowed",
        "this endpoint does not take this method",
    )
    .into_response()
}
