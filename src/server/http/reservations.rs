//! Reservations: reserve, spend, read, commit, release, extend
//! (spec/http.md §6.4–6.9). Each handler verifies and authorizes, turns
//! the request into a typed [`Command`], and renders the typed outcome.

use super::Authn;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ActionBody, ApiError, DEFAULT_TTL_MS, amount, authorize, bearer, bearer_with_proof,
    fingerprint, idem_key, json_body, now_secs, respond, run, ttl, unavailable,
};
use crate::caveat::Unit;
use crate::ledger::{Command, Operation, Outcome, ResId, ReserveRequest};
use crate::server::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReserveBody {
    #[serde(flatten)]
    action: ActionBody,
    unit: String,
    amount: Value,
    idempotency_key: String,
    #[serde(default)]
    ttl_ms: Option<Value>,
    /// Only for spend: the amount to charge (defaults to `amount`).
    #[serde(default)]
    actual: Option<Value>,
}

/// Reserve and spend: one holds, the other holds and charges at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Reserve,
    Spend,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::Spend => "spend",
        }
    }
}

fn new_reservation_id(now_ms: u64) -> Result<ResId, ApiError> {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).map_err(|_| unavailable())?;
    Ok(ResId::new(now_ms, b))
}

async fn reserve_like(
    state: AppState,
    headers: Authn,
    body: Result<Json<ReserveBody>, JsonRejection>,
    kind: Kind,
) -> Result<Response, ApiError> {
    let (token, proof) = bearer_with_proof(&state, &headers)?;
    let b = json_body(body)?;
    let amt = amount(&b.amount, "amount")?;
    if amt == 0 {
        return Err(ApiError::new(
            400,
            "invalid_amount",
            "amount must be at least 1",
        ));
    }
    let actual = match (kind, &b.actual) {
        (Kind::Spend, Some(v)) => Some(amount(v, "actual")?),
        (Kind::Spend, None) => Some(amt),
        (Kind::Reserve, Some(_)) => {
            return Err(ApiError::new(
                400,
                "invalid_request",
                "actual is only for spend",
            ));
        }
        (Kind::Reserve, None) => None,
    };
    let ttl_ms = ttl(b.ttl_ms.as_ref())?.unwrap_or(DEFAULT_TTL_MS);
    let unit = Unit::parse(&b.unit)
        .map_err(|_| ApiError::new(400, "invalid_request", "unit is not a valid unit name"))?;
    let idem = idem_key(&token, &b.idempotency_key)?;
    let fp = fingerprint(
        kind.name(),
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
            // expired since; only this slow path asks for it.
            let cmd = Command {
                op: Operation::Replay,
                idem: Some((idem, fp)),
                proof,
            };
            return match run(&state, cmd, kind.name()).await? {
                o @ (Outcome::Done { .. } | Outcome::Refused(_)) => {
                    Ok(respond(&state, &o, kind.name()))
                }
                _ => Err(denied),
            };
        }
    };
    let req = ReserveRequest {
        id: new_reservation_id(state.ledger.clock.now_ms())?,
        chain: token.block_ids().to_vec(),
        unit,
        scopes: auth.budgets,
        amount: amt,
        ttl_ms,
    };
    let cmd = Command {
        op: Operation::Reserve { req, actual },
        idem: Some((idem, fp)),
        proof,
    };
    let outcome = run(&state, cmd, kind.name()).await?;
    Ok(respond(&state, &outcome, kind.name()))
}

pub(crate) async fn reserve(
    State(state): State<AppState>,
    headers: Authn,
    body: Result<Json<ReserveBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    reserve_like(state, headers, body, Kind::Reserve).await
}

pub(crate) async fn spend(
    State(state): State<AppState>,
    headers: Authn,
    body: Result<Json<ReserveBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    reserve_like(state, headers, body, Kind::Spend).await
}

/// A reservation id from the path. One that is not valid UTF-8 or not of
/// the `rsv_` form names no reservation this token can see: 404, after
/// authentication, like any other invisible id.
fn reservation_id(path: Result<Path<String>, PathRejection>) -> Result<ResId, ApiError> {
    path.ok()
        .and_then(|Path(id)| ResId::parse(&id))
        .ok_or_else(|| ApiError::new(404, "reservation_not_found", "no such reservation"))
}

pub(crate) async fn get_reservation(
    State(state): State<AppState>,
    headers: Authn,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let token = bearer(&state, &headers)?;
    let id = reservation_id(path)?;
    let cmd = Command {
        op: Operation::Get {
            chain: token.block_ids().to_vec(),
            id,
        },
        idem: None,
        proof: None,
    };
    let outcome = run(&state, cmd, "get").await?;
    Ok(respond(&state, &outcome, "get"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FinishBody {
    idempotency_key: String,
    #[serde(default)]
    actual: Option<Value>,
    #[serde(default)]
    ttl_ms: Option<Value>,
}

/// The three ways to act on an existing hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    Commit,
    Release,
    Extend,
}

impl Finish {
    fn name(self) -> &'static str {
        match self {
            Self::Commit => "commit",
            Self::Release => "release",
            Self::Extend => "extend",
        }
    }
}

async fn finish(
    state: AppState,
    headers: Authn,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<FinishBody>, JsonRejection>,
    kind: Finish,
) -> Result<Response, ApiError> {
    let (token, proof) = bearer_with_proof(&state, &headers)?;
    let b = json_body(body)?;
    let idem = idem_key(&token, &b.idempotency_key)?;
    let chain = token.block_ids().to_vec();
    // Validate the fields before the id, so a bad request is a 400
    // whatever the path says (spec/http.md §2.3).
    let actual = match kind {
        Finish::Commit => Some(amount(
            b.actual
                .as_ref()
                .ok_or_else(|| ApiError::new(400, "invalid_amount", "commit needs actual"))?,
            "actual",
        )?),
        _ => None,
    };
    let ttl_ms = match kind {
        Finish::Extend => {
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
            Some(ttl(b.ttl_ms.as_ref())?.ok_or_else(|| {
                ApiError::new(400, "invalid_ttl", "ttl_ms must be between 1 and 86400000")
            })?)
        }
        _ => None,
    };
    let id = reservation_id(path)?;
    let op = match (kind, actual, ttl_ms) {
        (Finish::Commit, Some(actual), _) => Operation::Commit { chain, id, actual },
        (Finish::Extend, _, Some(ttl_ms)) => Operation::Extend { chain, id, ttl_ms },
        _ => Operation::Release { chain, id },
    };
    // Whether this token may see the reservation is the ledger's call
    // (same tree, made by a block of this chain), decided in the writer.
    // Ids parse only in their one lower-case form, so printing the parsed
    // id gives back the text that was sent.
    let fp = fingerprint(
        kind.name(),
        &token,
        &json!([id.to_string(), b.actual, b.ttl_ms]),
    );
    let cmd = Command {
        op,
        idem: Some((idem, fp)),
        proof,
    };
    let outcome = run(&state, cmd, kind.name()).await?;
    Ok(respond(&state, &outcome, kind.name()))
}

pub(crate) async fn commit(
    State(state): State<AppState>,
    headers: Authn,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<FinishBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    finish(state, headers, path, body, Finish::Commit).await
}

pub(crate) async fn release(
    State(state): State<AppState>,
    headers: Authn,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<FinishBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    finish(state, headers, path, body, Finish::Release).await
}

pub(crate) async fn extend(
    State(state): State<AppState>,
    headers: Authn,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<FinishBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    finish(state, headers, path, body, Finish::Extend).await
}
