//! The HTTP layer (spec/http.md): requests become typed ledger commands,
//! typed outcomes become responses, and nothing below this module knows
//! about HTTP.
//!
//! # Layout
//! * this module: what every endpoint shares — the error type, bearer
//!   extraction and verification, authorization (with the admin rule),
//!   body decoding, idempotency keys and fingerprints;
//! * [`render`]: outcomes and errors to statuses and JSON bodies;
//! * one module per resource: [`keys`], [`admin`] (live key rotation),
//!   [`tokens`] (mint, authorize),
//!   [`reservations`] (reserve, spend, read, commit, release, extend),
//!   [`allocations`] (guaranteed sub-budgets: create, read, release, list),
//!   [`balances`], [`revocations`], [`health`] (liveness, readiness,
//!   metrics, the fallbacks).
//!
//! Every error is JSON `{"error": {"code", "message", ...}}` with a stable
//! code; client mistakes are 4xx, store trouble is 503, and no internal
//! detail reaches the client.

pub(crate) mod admin;
pub(crate) mod allocations;
pub(crate) mod balances;
pub(crate) mod health;
pub(crate) mod keys;
pub(crate) mod render;
pub(crate) mod reservations;
pub(crate) mod revocations;
pub(crate) mod tokens;

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::state::AppState;
use crate::authority::Request;
use crate::caveat::ArgValue;
use crate::ledger::{Command, Fingerprint, IdemKey, Outcome};
use crate::pattern::ActionPattern;
use crate::token::Token;
use render::{Reply, error_reply, outcome_reply};

/// The reserved action namespace for administration (spec/http.md §5).
pub const ADMIN_PREFIX: &str = "baton.admin.";

/// An error response.
pub(crate) struct ApiError(pub(crate) Reply);

impl ApiError {
    pub(crate) fn new(status: u16, code: &str, message: &str) -> Self {
        Self(error_reply(status, code, message, None))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

pub(crate) fn unavailable() -> ApiError {
    ApiError::new(
        503,
        "store_unavailable",
        "the ledger store is unavailable; retry later",
    )
}

/// Maps axum's JSON rejections to our error body.
pub(crate) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match body {
        Ok(Json(v)) => Ok(v),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
            413,
            "body_too_large",
            "request body exceeds the limit",
        )),
        Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
            415,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        )),
        Err(JsonRejection::JsonDataError(e)) => {
            Err(ApiError::new(400, "invalid_request", &e.body_text()))
        }
        Err(_) => Err(ApiError::new(
            400,
            "invalid_json",
            "request body is not valid JSON",
        )),
    }
}

/// The action a holder's proof names at the ledger. Every endpoint's proof
/// covers the method and request target as the operation and the raw body
/// (which carries the action, resource, arguments, amounts and idempotency
/// key) as the body digest, so one fixed action suffices (spec/http.md §2.3).
pub const LEDGER_PROOF_ACTION: &str = "baton.ledger.request";

/// What a proof of possession covers that only the raw request shows: the
/// operation (method and request target) and the digest of the body as
/// received. Computed by [`proof_context`] before any handler runs.
#[derive(Clone, Debug)]
pub(crate) struct ProofContext {
    operation: String,
    /// `None` when the body is over the limit.
    body: Option<[u8; 32]>,
}

/// Middleware: reads the body (up to the body limit), digests it, and
/// passes the request on with its [`ProofContext`] and the same bytes.
/// A body over the limit is passed on as one byte over the limit, so the
/// handler refuses it at its usual place in the order of checks (§2.3).
pub(crate) async fn proof_context(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let (bytes, digest) = match axum::body::to_bytes(body, super::MAX_BODY_BYTES).await {
        Ok(b) => {
            let d = crate::proof::body_digest(&b);
            (b, Some(d))
        }
        Err(_) => (
            axum::body::Bytes::from(vec![b' '; super::MAX_BODY_BYTES + 1]),
            None,
        ),
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |p| p.as_str());
    parts.extensions.insert(ProofContext {
        operation: format!("{} {target}", parts.method),
        body: digest,
    });
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

/// What authenticating a request needs: its headers and its
/// [`ProofContext`] (absent only if the middleware did not run, and then a
/// bound token is refused with `proof_unavailable`).
pub(crate) struct Authn {
    headers: HeaderMap,
    ctx: Option<ProofContext>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Authn {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            headers: parts.headers.clone(),
            ctx: parts.extensions.get::<ProofContext>().cloned(),
        })
    }
}

/// The verified bearer token of a request. A holder-bound token also needs
/// its holder's `Baton-Proof` for this very request, checked here for
/// every endpoint and recorded in the replay store.
pub(crate) fn bearer(state: &AppState, authn: &Authn) -> Result<Token, ApiError> {
    bearer_with_proof(state, authn).map(|(token, _)| token)
}

/// [`bearer`], with the id of the holder's proof when the token is bound:
/// the idempotent endpoints keep it in their durable record.
pub(crate) fn bearer_with_proof(
    state: &AppState,
    authn: &Authn,
) -> Result<(Token, Option<crate::proof::ProofId>), ApiError> {
    let headers = &authn.headers;
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme name is case-insensitive (RFC 9110 §11.1).
        .and_then(|v| {
            v.get(..7)
                .filter(|s| s.eq_ignore_ascii_case("bearer "))
                .map(|_| &v[7..])
        })
        .ok_or_else(|| {
            ApiError::new(
                401,
                "missing_token",
                "expected Authorization: Bearer <token>",
            )
        })?;
    let verifier = state.verifier.read().unwrap_or_else(|p| p.into_inner());
    let token = verifier.verify_text(value.trim()).map_err(|e| {
        let status = if matches!(e, crate::VerifyError::Revoked { .. }) {
            403
        } else {
            401
        };
        ApiError::new(status, e.code(), &e.to_string())
    })?;
    let proof = if token.holder().is_some() {
        check_proof(state, &verifier, &token, authn)?
    } else {
        None
    };
    Ok((token, proof))
}

/// Checks a bound token's proof for this request (spec/http.md §2.3).
fn check_proof(
    state: &AppState,
    verifier: &crate::Verifier,
    token: &Token,
    authn: &Authn,
) -> Result<Option<crate::proof::ProofId>, ApiError> {
    let proof_error = |e: crate::ProofError| {
        let status = if e == crate::ProofError::Unavailable {
            503
        } else {
            401
        };
        ApiError::new(status, e.code(), &e.to_string())
    };
    let ctx = authn
        .ctx
        .as_ref()
        .ok_or_else(|| proof_error(crate::ProofError::Unavailable))?;
    // A proof cannot cover a body the service will not read.
    let body = ctx
        .body
        .ok_or_else(|| ApiError::new(413, "body_too_large", "request body exceeds the limit"))?;
    let request = Request::new(LEDGER_PROOF_ACTION, now_secs(state))
        .and_then(|r| r.operation(&ctx.operation))
        .map_err(|_| {
            ApiError::new(
                400,
                "invalid_request",
                "the request target is too long or not printable ASCII",
            )
        })?
        .body_digest_of(body);
    let mut values = authn.headers.get_all(crate::proof::PROOF_HEADER).iter();
    let request = match (values.next(), values.next()) {
        (None, _) => request,
        // One header, visible ASCII; anything else is malformed.
        (Some(v), None) => request.with_proof_header(v.to_str().unwrap_or("")),
        (Some(_), Some(_)) => request.with_proof_header(""),
    };
    verifier.check_proof(token, &request).map_err(|e| match e {
        crate::AuthorizeError::Proof(p) => proof_error(p),
        crate::AuthorizeError::Invalid(crate::VerifyError::Revoked { .. }) => {
            ApiError::new(403, e.code(), &e.to_string())
        }
        _ => ApiError::new(401, e.code(), &e.to_string()),
    })
}

/// An action request as JSON.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionBody {
    pub(crate) action: String,
    #[serde(default)]
    pub(crate) resource: Option<String>,
    #[serde(default)]
    pub(crate) args: BTreeMap<String, Value>,
}

pub(crate) fn now_secs(state: &AppState) -> u64 {
    state.ledger.clock.now_ms() / 1000
}

fn build_request(state: &AppState, a: &ActionBody) -> Result<Request, ApiError> {
    // A malformed name is a client mistake (400), not a denial.
    let deny = |e: crate::error::Denied| ApiError::new(400, e.code(), &e.to_string());
    let mut req = Request::new(&a.action, now_secs(state)).map_err(deny)?;
    if let Some(r) = &a.resource {
        req = req.resource(r).map_err(|_| {
            ApiError::new(
                400,
                "invalid_resource",
                "resource is not a valid resource name",
            )
        })?;
    }
    for (name, v) in &a.args {
        let value = match v {
            Value::String(s) => ArgValue::Str(s.clone()),
            Value::Number(n) => ArgValue::Int(n.as_i64().ok_or_else(|| {
                ApiError::new(400, "invalid_request", "argument is not a 64-bit integer")
            })?),
            _ => {
                return Err(ApiError::new(
                    400,
                    "invalid_request",
                    "arguments are strings or integers",
                ));
            }
        };
        req = req.arg(name, value).map_err(deny)?;
    }
    Ok(req)
}

/// Authorizes an action for a token. Every endpoint goes through here, so
/// admin actions get the same answer everywhere: an action in the admin
/// namespace needs a tools pattern that itself starts with `baton.admin.`
/// and covers it; `*` and `baton.*` never grant administration.
pub(crate) fn authorize(
    state: &AppState,
    token: &Token,
    a: &ActionBody,
) -> Result<crate::Authorization, ApiError> {
    if a.action.starts_with(ADMIN_PREFIX) {
        let explicit = token.authority().tools().is_some_and(|set| {
            set.iter().any(|p| {
                p.as_str().starts_with(ADMIN_PREFIX)
                    && ActionPattern::parse(&a.action).is_ok_and(|act| p.covers(&act))
            })
        });
        if !explicit {
            return Err(ApiError::new(
                403,
                "not_admin",
                "this token does not grant this administrative action",
            ));
        }
    }
    let req = build_request(state, a)?;
    let verifier = state.verifier.read().unwrap_or_else(|p| p.into_inner());
    // bearer() has checked a bound token's proof for this request.
    verifier.authorize_after_proof(token, &req).map_err(|e| {
        let status = match e {
            crate::AuthorizeError::Denied(_)
            | crate::AuthorizeError::Invalid(crate::VerifyError::Revoked { .. }) => 403,
            _ => 401,
        };
        ApiError::new(status, e.code(), &e.to_string())
    })
}

/// Admin rights for an administrative endpoint: see [`authorize`].
pub(crate) fn require_admin(state: &AppState, token: &Token, action: &str) -> Result<(), ApiError> {
    let body = ActionBody {
        action: action.to_owned(),
        resource: None,
        args: BTreeMap::new(),
    };
    authorize(state, token, &body).map(drop)
}

pub(crate) fn idem_key(token: &Token, key: &str) -> Result<IdemKey, ApiError> {
    let ok = !key.is_empty() && key.len() <= 128 && key.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(ApiError::new(
            400,
            "invalid_idempotency_key",
            "idempotency_key must be 1-128 printable ASCII characters",
        ));
    }
    Ok(IdemKey {
        tree: token.block_ids()[0],
        key: key.to_owned(),
    })
}

/// What makes two requests "the same" for idempotency: the operation, the
/// presenting block, and every parameter (spec/http.md §3.6).
pub(crate) fn fingerprint(op: &str, token: &Token, params: &Value) -> Fingerprint {
    let mut h = blake3::Hasher::new_derive_key("baton/v1 idempotency fingerprint");
    h.update(op.as_bytes());
    h.update(&token.block_ids()[token.len() - 1].0);
    h.update(params.to_string().as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// An amount field: an integer from 0 to 2^63-1.
pub(crate) fn amount(v: &Value, what: &str) -> Result<u64, ApiError> {
    v.as_u64()
        .filter(|n| *n <= crate::ledger::MAX_AMOUNT)
        .ok_or_else(|| {
            ApiError::new(
                400,
                "invalid_amount",
                &format!("{what} must be an integer from 0 to 2^63-1"),
            )
        })
}

/// The longest hold, and the default one.
pub(crate) const MAX_TTL_MS: u64 = 24 * 3600 * 1000;
pub(crate) const DEFAULT_TTL_MS: u64 = 60_000;

/// A `ttl_ms` field: any JSON value that is not an integer in
/// 1..=86 400 000 — negative, fractional, a string — is `invalid_ttl`.
pub(crate) fn ttl(v: Option<&Value>) -> Result<Option<u64>, ApiError> {
    match v {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|t| (1..=MAX_TTL_MS).contains(t))
            .map(Some)
            .ok_or_else(|| {
                ApiError::new(400, "invalid_ttl", "ttl_ms must be between 1 and 86400000")
            }),
    }
}

/// Runs a command through the writer and renders its outcome, counting it
/// under `name`.
pub(crate) async fn run(state: &AppState, cmd: Command, name: &str) -> Result<Outcome, ApiError> {
    match state.ledger.command(cmd).await {
        Some(outcome) => Ok(outcome),
        None => {
            state.metrics.count(name, 503);
            Err(unavailable())
        }
    }
}

/// The reply to an outcome, counted under `name`.
pub(crate) fn respond(state: &AppState, outcome: &Outcome, name: &str) -> Response {
    let reply = outcome_reply(outcome);
    state.metrics.count(name, reply.status);
    reply.into_response()
}
