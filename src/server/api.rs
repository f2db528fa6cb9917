//! The HTTP handlers (spec/http.md). Each one verifies the bearer token,
//! authorizes, and for ledger changes queues one operation on the writer.
//!
//! Every error is JSON `{"error": {"code", "message", ...}}` with a stable
//! code; client mistakes are 4xx, store trouble is 503, and no internal
//! detail reaches the client.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::writer::{Op, Reply, error_reply, reservation_json};
use crate::authority::Request;
use crate::caveat::{ArgBound, ArgConstraint, ArgValue, Budget, Caveat, Unit};
use crate::keys::{BlockId, KeyStatus};
use crate::ledger::{IdemKey, ReserveRequest};
use crate::pattern::ActionPattern;
use crate::token::Token;

/// The reserved action namespace for administration (spec/http.md §5).
pub const ADMIN_PREFIX: &str = "baton.admin.";

/// An error response.
pub(crate) struct ApiError(Reply);

impl ApiError {
    fn new(status: u16, code: &str, message: &str) -> Self {
        Self(error_reply(status, code, message, None))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        reply(self.0)
    }
}

pub(crate) fn reply(r: Reply) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], r.body).into_response()
}

pub(crate) fn unavailable() -> ApiError {
    ApiError::new(
        503,
        "store_unavailable",
        "the ledger store is unavailable; retry later",
    )
}

/// Maps axum's JSON rejections to our error body.
fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
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

/// The verified bearer token of a request.
pub(crate) fn bearer(state: &AppState, headers: &HeaderMap) -> Result<Token, ApiError> {
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
    verifier.verify_text(value.trim()).map_err(|e| {
        let status = if e.code() == "revoked" { 403 } else { 401 };
        ApiError::new(status, e.code(), &e.to_string())
    })
}

/// An action request as JSON.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionBody {
    action: String,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    args: BTreeMap<String, Value>,
}

fn now_secs(state: &AppState) -> u64 {
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
fn authorize(
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
    verifier.authorize(token, &req).map_err(|e| {
        let status = if matches!(e, crate::AuthorizeError::Denied(_)) || e.code() == "revoked" {
            403
        } else {
            401
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

fn idem_key(token: &Token, key: &str) -> Result<IdemKey, ApiError> {
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
/// presenting block, and every parameter.
fn fingerprint(op: &str, token: &Token, params: &Value) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("baton/v1 idempotency fingerprint");
    h.update(op.as_bytes());
    h.update(&token.block_ids()[token.len() - 1].0);
    h.update(params.to_string().as_bytes());
    *h.finalize().as_bytes()
}

fn amount(v: &Value, what: &str) -> Result<u64, ApiError> {
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

/// `rsv_` + 12 hex digits of the server's millisecond clock + 24 random hex
/// digits. The time prefix makes ids (the reservations table's key) arrive
/// in order, so each group of inserts touches a few B-tree pages instead of
/// one random page per row; the 96 random bits keep ids unguessable.
fn new_reservation_id(now_ms: u64) -> Result<String, ApiError> {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).map_err(|_| unavailable())?;
    Ok(format!(
        "rsv_{:012x}{}",
        now_ms & 0xffff_ffff_ffff,
        hex::encode(b)
    ))
}

async fn submit(
    state: &AppState,
    op: Op,
    idem: Option<(IdemKey, [u8; 32])>,
    name: &str,
) -> Response {
    match state.ledger.submit(op, idem).await {
        Some(r) => {
            state.metrics.count(name, r.status);
            reply(r)
        }
        None => {
            state.metrics.count(name, 503);
            unavailable().into_response()
        }
    }
}

// ---- keys, health, metrics ----

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
    let body = state
        .metrics
        .render(state.ledger.ready.load(Ordering::SeqCst));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

// ---- minting (admin) ----

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
    headers: HeaderMap,
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

// ---- authorize ----

pub(crate) async fn authorize_handler(
    State(state): State<AppState>,
    headers: HeaderMap,
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

// ---- reservations ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReserveBody {
    #[serde(flatten)]
    action: ActionBody,
    unit: String,
    amount: Value,
    idempotency_key: String,
    #[serde(default)]
    ttl_ms: Option<u64>,
    /// Only for spend: the amount to charge (defaults to `amount`).
    #[serde(default)]
    actual: Option<Value>,
}

const DEFAULT_TTL_MS: u64 = 60_000;
const MAX_TTL_MS: u64 = 24 * 3600 * 1000;

async fn reserve_like(
    state: AppState,
    headers: HeaderMap,
    body: Result<Json<ReserveBody>, JsonRejection>,
    spend: bool,
) -> Result<Response, ApiError> {
    let token = bearer(&state, &headers)?;
    let b = json_body(body)?;
    let amt = amount(&b.amount, "amount")?;
    if amt == 0 {
        return Err(ApiError::new(
            400,
            "invalid_amount",
            "amount must be at least 1",
        ));
    }
    let actual = match (spend, &b.actual) {
        (true, Some(v)) => Some(amount(v, "actual")?),
        (true, None) => Some(amt),
        (false, Some(_)) => {
            return Err(ApiError::new(
                400,
                "invalid_request",
                "actual is only for spend",
            ));
        }
        (false, None) => None,
    };
    let ttl_ms = b.ttl_ms.unwrap_or(DEFAULT_TTL_MS);
    if ttl_ms == 0 || ttl_ms > MAX_TTL_MS {
        return Err(ApiError::new(
            400,
            "invalid_ttl",
            "ttl_ms must be between 1 and 86400000",
        ));
    }
    let idem = idem_key(&token, &b.idempotency_key)?;
    let fp = fingerprint(
        if spend { "spend" } else { "reserve" },
        &token,
        &json!([
            b.action.action,
            b.action.resource,
            b.action.args,
            b.unit,
            amt,
            ttl_ms,
            actual
        ]),
    );
    let auth = match authorize(&state, &token, &b.action) {
        Ok(auth) => auth,
        Err(denied) => {
            // A replay is answered from its record even if the token has
            // expired since; only this slow path reads the ledger here.
            let ledger = state.ledger.read().await;
            return match ledger.idempotent(&idem) {
                Some(rec) if rec.fingerprint == fp => Ok(reply(Reply {
                    status: rec.status,
                    body: rec.body.clone(),
                })),
                _ => Err(denied),
            };
        }
    };
    let req = ReserveRequest {
        id: new_reservation_id(state.ledger.clock.now_ms())?,
        tree: token.block_ids()[0],
        chain: token.block_ids().to_vec(),
        unit: b.unit,
        scopes: auth.budgets,
        amount: amt,
        expires_at: 0,
    };
    let name = if spend { "spend" } else { "reserve" };
    Ok(submit(
        &state,
        Op::Reserve {
            req,
            ttl_ms,
            actual,
        },
        Some((idem, fp)),
        name,
    )
    .await)
}

pub(crate) async fn reserve(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ReserveBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    reserve_like(state, headers, body, false).await
}

pub(crate) async fn spend(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ReserveBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    reserve_like(state, headers, body, true).await
}

pub(crate) async fn get_reservation(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let token = bearer(&state, &headers)?;
    let ledger = state.ledger.read().await;
    let r = ledger
        .reservation(token.block_ids(), &id)
        .ok_or_else(|| ApiError::new(404, "reservation_not_found", "no such reservation"))?;
    Ok(Json(json!({ "reservation": reservation_json(&ledger, r) })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FinishBody {
    idempotency_key: String,
    #[serde(default)]
    actual: Option<Value>,
    #[serde(default)]
    ttl_ms: Option<u64>,
}

async fn finish(
    state: AppState,
    headers: HeaderMap,
    id: String,
    body: Result<Json<FinishBody>, JsonRejection>,
    kind: &'static str,
) -> Result<Response, ApiError> {
    let token = bearer(&state, &headers)?;
    let b = json_body(body)?;
    let idem = idem_key(&token, &b.idempotency_key)?;
    let chain = token.block_ids().to_vec();
    let op = match kind {
        "commit" => {
            let actual = amount(
                b.actual
                    .as_ref()
                    .ok_or_else(|| ApiError::new(400, "invalid_amount", "commit needs actual"))?,
                "actual",
            )?;
            Op::Commit {
                chain,
                id: id.clone(),
                actual,
            }
        }
        "extend" => {
            // Lengthening a hold is new authority over time: an expired
            // token may still commit or release what it holds, not extend it.
            let skew = state
                .verifier
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .skew();
            if token
                .authority()
                .not_after()
                .is_some_and(|na| now_secs(&state) > na.saturating_add(skew))
            {
                let e = crate::error::Denied::Expired;
                return Err(ApiError::new(403, e.code(), &e.to_string()));
            }
            let ttl_ms = b
                .ttl_ms
                .filter(|t| (1..=MAX_TTL_MS).contains(t))
                .ok_or_else(|| {
                    ApiError::new(400, "invalid_ttl", "ttl_ms must be between 1 and 86400000")
                })?;
            Op::Extend {
                chain,
                id: id.clone(),
                ttl_ms,
            }
        }
        _ => Op::Release {
            chain,
            id: id.clone(),
        },
    };
    // Whether this token may see the reservation is the ledger's call
    // (same tree, made by a block of this chain), decided in the writer.
    let fp = fingerprint(kind, &token, &json!([id, b.actual, b.ttl_ms]));
    Ok(submit(&state, op, Some((idem, fp)), kind).await)
}

pub(crate) async fn commit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<FinishBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    finish(state, headers, id, body, "commit").await
}

pub(crate) async fn release(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<FinishBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    finish(state, headers, id, body, "release").await
}

pub(crate) async fn extend(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<FinishBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    finish(state, headers, id, body, "extend").await
}

// ---- balances ----

pub(crate) async fn balances(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = bearer(&state, &headers)?;
    let ledger = state.ledger.read().await;
    let ids = token.block_ids();
    let scopes: Vec<Value> = token
        .authority()
        .budgets()
        .iter()
        .rev()
        .map(|(block, b)| {
            let key = crate::ledger::ScopeKey { block: ids[*block], unit: b.unit.as_str().to_owned(), tools: b.tools.as_ref().map_or(String::new(), |p| p.as_str().to_owned()) };
            let s = ledger.scope(&key, b.ceiling.min(crate::ledger::MAX_AMOUNT));
            json!({ "block": block, "block_id": key.block.to_string(), "unit": key.unit, "tools": b.tools.as_ref().map(|p| p.as_str()), "ceiling": s.ceiling, "spent": s.spent, "held": s.held, "remaining": s.remaining() })
        })
        .collect();
    Ok(Json(json!({ "scopes": scopes })).into_response())
}

// ---- revocation ----

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
    headers: HeaderMap,
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
    let response = state
        .ledger
        .submit(Op::Revoke { tree, block }, None)
        .await
        .ok_or_else(unavailable)?;
    if response.status == 200 {
        state
            .verifier
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .revoke(block);
    }
    state.metrics.count("revoke", response.status);
    Ok(reply(response))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeedQuery {
    #[serde(default)]
    after: u64,
}

pub(crate) async fn revocation_feed(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let token = bearer(&state, &headers)?;
    require_admin(&state, &token, "baton.admin.revocations.read")?;
    let Query(q) = query
        .map_err(|_| ApiError::new(400, "invalid_request", "after must be an unsigned integer"))?;
    let ledger = state.ledger.read().await;
    let entries: Vec<Value> = ledger
        .revocations_after(q.after, 1000)
        .into_iter()
        .map(|(seq, b)| json!({ "seq": seq, "block_id": b.to_string() }))
        .collect();
    let next = entries
        .last()
        .and_then(|e| e["seq"].as_u64())
        .unwrap_or(q.after);
    Ok(Json(json!({ "revocations": entries, "next": next })).into_response())
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(404, "not_found", "no such endpoint")
}
