//! `baton::tower` (feature `tower`): Baton in front of any axum or tower
//! HTTP service, for tool gateways.
//!
//! [`GateLayer`] wraps a service. For every request it:
//! 1. takes the bearer token (`Authorization: Bearer baton_v1_...`, scheme
//!    in any case) and verifies it offline through a [`KeySource`]
//!    (`401` with the token's reason code, `403 revoked`);
//! 2. refuses with `503 revocations_stale` if a [`RevocationFeed`] is
//!    attached and has not synced within its bound;
//! 3. makes the [`Action`] (action, resource, arguments) from the request
//!    with the gate's [`ActionSource`] (a route table or a closure) and
//!    authorizes it offline (`403` with the reason code, `400` for a
//!    malformed action, resource or argument);
//! 4. if the gate has a [`Charge`] and it prices the request, holds the
//!    estimate at the ledger (`402 insufficient_budget` with `remaining`;
//!    `402 allocation_exhausted` with `allocation_id` and `remaining` for
//!    a child living within its allocation; `403`; `503
//!    ledger_unavailable`) before the handler runs;
//! 5. runs the handler, which finds the verified [`Caller`] (an axum
//!    extractor) in the request and may state the actual cost
//!    ([`Caller::set_cost`]);
//! 6. commits the actual cost (or the hold, if none was stated) when the
//!    handler answered `2xx`, and releases the hold otherwise.
//!
//! Every refusal has the ledger's error body (spec/http.md §2.1):
//! `{"error": {"code", "message", ...}}`. A refused request never reaches
//! the handler, and only an authorized, priced request costs a ledger
//! round trip.
//!
//! Idempotency: each request's ledger calls use keys derived from one base
//! key, random per request, or the client's `Idempotency-Key` header when
//! sent. A client that retries with the same header after a lost answer is
//! never charged twice: the reserve is replayed, and if that call already
//! finished the retry is answered `409 request_replayed` without running
//! the handler again.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::caveat::{ArgValue, Unit};
use crate::client::{
    Action, Bearer, Client, ClientError, IdempotencyKey, KeySource, Reservation, Reserve,
    RevocationFeed,
};
use crate::error::VerifyError;
use crate::ledger::ResState;
use crate::token::Token;
use crate::verifier::AuthorizeError;

/// The largest request body the gate reads to find resource and arguments.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// The client's idempotency header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// A refusal, rendered as the spec's error body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejection {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable reason code.
    pub code: String,
    /// A human-readable message.
    pub message: String,
    /// Extra fields beside `code` and `message` (e.g. `remaining`).
    pub extra: serde_json::Map<String, Value>,
}

impl Rejection {
    /// A refusal with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            extra: serde_json::Map::new(),
        }
    }

    /// `400` with `code`.
    pub fn bad_request(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn missing_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "expected Authorization: Bearer <token>",
        )
    }

    fn invalid(e: &VerifyError) -> Self {
        let status = if matches!(e, VerifyError::Revoked { .. }) {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        Self::new(status, e.code(), e.to_string())
    }

    fn denied(e: &AuthorizeError) -> Self {
        match e {
            AuthorizeError::Invalid(v) => Self::invalid(v),
            e if matches!(e.code(), "invalid_action" | "invalid_args") => {
                Self::bad_request(e.code(), e.to_string())
            }
            e => Self::new(StatusCode::FORBIDDEN, e.code(), e.to_string()),
        }
    }

    /// The ledger's refusal, passed on; a ledger that cannot be reached (or
    /// answers what no client mistake explains) is `503 ledger_unavailable`.
    fn ledger(e: &ClientError) -> Self {
        match e.api() {
            Some(api) if matches!(api.status, 400 | 401 | 402 | 403 | 409 | 410) => {
                let mut r = Self::new(
                    StatusCode::from_u16(api.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                    api.code.clone(),
                    api.message.clone(),
                );
                if let Some(rem) = api.remaining {
                    r.extra.insert("remaining".into(), rem.into());
                }
                // A child living within its allocation learns which one
                // ran out (`402 allocation_exhausted`).
                if let Some(id) = &api.allocation_id {
                    r.extra
                        .insert("allocation_id".into(), id.to_string().into());
                }
                r
            }
            _ => {
                tracing::warn!(error = %e, "ledger unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ledger_unavailable",
                    "the spend ledger is unavailable; retry later",
                )
            }
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut error = self.extra;
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.into());
        (self.status, axum::Json(json!({ "error": error }))).into_response()
    }
}

/// The request as the gate's closures see it: head and buffered body.
#[derive(Debug)]
pub struct RequestView<'a> {
    /// Method, URI, headers.
    pub parts: &'a Parts,
    /// The whole body (at most the gate's body limit).
    pub body: &'a Bytes,
}

impl RequestView<'_> {
    /// `action` with the resource and arguments of a JSON body's optional
    /// top-level `resource` (a string) and `args` (an object of strings and
    /// integers). A body that is empty or not a JSON object adds nothing;
    /// a `resource` or argument of another type is `400 invalid_request`.
    pub fn action_from_json(&self, action: &str) -> Result<Action, Rejection> {
        let mut a = Action::new(action);
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(self.body) else {
            return Ok(a);
        };
        let bad = |m: String| Rejection::bad_request("invalid_request", m);
        match body.get("resource") {
            None | Some(Value::Null) => {}
            Some(Value::String(r)) => a = a.resource(r.clone()),
            Some(_) => return Err(bad("resource must be a string".into())),
        }
        match body.get("args") {
            None | Some(Value::Null) => {}
            Some(Value::Object(args)) => {
                for (name, v) in args {
                    let value = match v {
                        Value::String(s) => ArgValue::Str(s.clone()),
                        Value::Number(n) => n.as_i64().map(ArgValue::Int).ok_or_else(|| {
                            bad(format!("argument {name} is not a 64-bit integer"))
                        })?,
                        _ => {
                            return Err(bad(format!("argument {name} is not a string or integer")));
                        }
                    };
                    a = a.arg(name.clone(), value);
                }
            }
            Some(_) => return Err(bad("args must be an object".into())),
        }
        Ok(a)
    }
}

type ActionFn = dyn Fn(&RequestView<'_>) -> Result<Action, Rejection> + Send + Sync;
type ChargeFn =
    dyn Fn(&RequestView<'_>, &Action) -> Result<Option<(Unit, u64)>, Rejection> + Send + Sync;

/// Where a request's action comes from.
#[derive(Clone)]
pub enum ActionSource {
    /// `METHOD PATH` (exact) → action name; resource and arguments from the
    /// JSON body ([`RequestView::action_from_json`]). Other routes are
    /// `404 not_found`.
    Routes(Arc<HashMap<(Method, String), String>>),
    /// A closure.
    Fn(Arc<ActionFn>),
}

impl ActionSource {
    /// A route table from `(method, path, action)` triples.
    pub fn routes<'a>(routes: impl IntoIterator<Item = (Method, &'a str, &'a str)>) -> Self {
        Self::Routes(Arc::new(
            routes
                .into_iter()
                .map(|(m, p, a)| ((m, p.to_owned()), a.to_owned()))
                .collect(),
        ))
    }

    /// A closure.
    pub fn from_fn(
        f: impl Fn(&RequestView<'_>) -> Result<Action, Rejection> + Send + Sync + 'static,
    ) -> Self {
        Self::Fn(Arc::new(f))
    }

    fn action(&self, view: &RequestView<'_>) -> Result<Action, Rejection> {
        match self {
            Self::Routes(map) => {
                let key = (view.parts.method.clone(), view.parts.uri.path().to_owned());
                let action = map.get(&key).ok_or_else(|| {
                    Rejection::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
                })?;
                view.action_from_json(action)
            }
            Self::Fn(f) => f(view),
        }
    }
}

/// How a request is priced: the unit and estimated amount to hold before
/// the handler runs, or `None` to run it without a hold.
#[derive(Clone)]
pub struct Charge {
    client: Client,
    price: Arc<ChargeFn>,
    ttl: std::time::Duration,
}

impl Charge {
    /// Holds at the ledger behind `client` what `price` says.
    pub fn new(
        client: Client,
        price: impl Fn(&RequestView<'_>, &Action) -> Result<Option<(Unit, u64)>, Rejection>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Self {
            client,
            price: Arc::new(price),
            ttl: std::time::Duration::from_secs(60),
        }
    }

    /// How long the ledger keeps a hold (default 60 s): longer than the
    /// handler runs.
    pub fn hold_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.ttl = ttl;
        self
    }
}

/// The gate's configuration, shared by every request.
#[derive(Clone)]
pub struct Gate {
    keys: Arc<KeySource>,
    actions: ActionSource,
    charge: Option<Charge>,
    feed: Option<Arc<RevocationFeed>>,
    max_body: usize,
}

impl Gate {
    /// Verifies with `keys` and takes actions from `actions`; no charging.
    pub fn new(keys: Arc<KeySource>, actions: ActionSource) -> Self {
        Self {
            keys,
            actions,
            charge: None,
            feed: None,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// Holds and charges requests at the ledger.
    pub fn charge(mut self, charge: Charge) -> Self {
        self.charge = Some(charge);
        self
    }

    /// Refuses every request (`503 revocations_stale`) while `feed` is not
    /// fresh ([`RevocationFeed::is_fresh`]): fail closed.
    pub fn revocations(mut self, feed: Arc<RevocationFeed>) -> Self {
        self.feed = Some(feed);
        self
    }

    /// The largest body read (default [`DEFAULT_MAX_BODY`]); larger is
    /// `413 body_too_large`.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The layer applying this gate.
    pub fn layer(self) -> GateLayer {
        GateLayer(Arc::new(self))
    }

    async fn verify(&self, parts: &Parts) -> Result<(Token, Bearer), Rejection> {
        let text = bearer(parts).ok_or_else(Rejection::missing_token)?;
        let token = self
            .keys
            .verify_text(text)
            .await
            .map_err(|e| Rejection::invalid(&e))?;
        Ok((token, Bearer::new(text.to_owned())))
    }
}

/// The bearer token text of `Authorization`, per spec/http.md §1.2.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_at_checked(7)?;
    (scheme.eq_ignore_ascii_case("bearer ")).then(|| rest.trim())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the gate learned about a request, for the handler.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The verified token.
    pub token: Token,
    /// The token as sent, to call the ledger on the caller's behalf.
    pub bearer: Bearer,
    /// The authorized action.
    pub action: Action,
    /// The hold made before the handler, if the request was priced.
    pub hold: Option<Reservation>,
    cost: Arc<Mutex<Option<u64>>>,
}

impl Caller {
    /// States the actual cost to commit (in the hold's unit). Without it, a
    /// `2xx` answer commits the held amount.
    pub fn set_cost(&self, amount: u64) {
        *self.cost.lock().unwrap_or_else(|p| p.into_inner()) = Some(amount);
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Rejection;

    /// What the [`GateLayer`] put in the request. Without the layer on the
    /// route this is a server misconfiguration: `500 gate_missing`.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            Rejection::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "gate_missing",
                "this route is not behind the Baton gate",
            )
        })
    }
}

/// An axum extractor for routes without the layer: the bearer token,
/// verified offline with the state's [`Gate`] (`401`/`403` otherwise). It
/// decides no action and holds nothing: authorize with
/// [`crate::client::LiveVerifier::authorize`] as needed.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The verified token.
    pub token: Token,
    /// The token as sent.
    pub bearer: Bearer,
}

impl<S> FromRequestParts<S> for Verified
where
    S: Send + Sync,
    Gate: axum::extract::FromRef<S>,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Rejection> {
        let gate = <Gate as axum::extract::FromRef<S>>::from_ref(state);
        let (token, bearer) = gate.verify(parts).await?;
        Ok(Self { token, bearer })
    }
}

/// The tower layer of a [`Gate`].
#[derive(Clone)]
pub struct GateLayer(Arc<Gate>);

impl<S> ::tower::Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            gate: Arc::clone(&self.0),
            inner,
        }
    }
}

/// The service made by [`GateLayer`].
#[derive(Clone)]
pub struct GateService<S> {
    gate: Arc<Gate>,
    inner: S,
}

impl<S> ::tower::Service<Request<Body>> for GateService<S>
where
    S: ::tower::Service<Request<Body>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let gate = Arc::clone(&self.gate);
        Box::pin(async move {
            Ok(gated(&gate, inner, req)
                .await
                .unwrap_or_else(IntoResponse::into_response))
        })
    }
}

async fn gated<S>(gate: &Gate, mut inner: S, req: Request<Body>) -> Result<Response, Rejection>
where
    S: ::tower::Service<Request<Body>, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    let (mut parts, body) = req.into_parts();
    let (token, bearer) = gate.verify(&parts).await?;
    if let Some(feed) = &gate.feed
        && !feed.is_fresh()
    {
        return Err(Rejection::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "revocations_stale",
            "the gateway's revocation list is out of date; retry later",
        ));
    }
    let body = axum::body::to_bytes(body, gate.max_body)
        .await
        .map_err(|_| {
            Rejection::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body over {} bytes", gate.max_body),
            )
        })?;
    let view = RequestView {
        parts: &parts,
        body: &body,
    };
    let action = gate.actions.action(&view)?;
    let request = action.to_request(now_secs()).map_err(|e| {
        let r = Rejection::denied(&AuthorizeError::from(e));
        if r.code == "resource_not_allowed" && action.resource.is_some() {
            // `Request::resource` reports a malformed name this way; a
            // resource the token does not allow is found by `authorize`.
            Rejection::bad_request(
                "invalid_resource",
                "the resource is not a valid resource name",
            )
        } else {
            r
        }
    })?;
    let auth = gate
        .keys
        .verifier()
        .authorize(&token, &request)
        .map_err(|e| Rejection::denied(&e))?;
    let priced = match &gate.charge {
        Some(c) => (c.price)(&view, &action)?.map(|p| (c, p)),
        None => None,
    };
    let base = base_key(&parts)?;
    let mut hold = None;
    if let Some((charge, (unit, amount))) = &priced {
        if !auth.budgets.iter().any(|b| &b.unit == unit) {
            return Err(Rejection::new(
                StatusCode::FORBIDDEN,
                "no_budget",
                format!("the token has no budget in {}", unit.as_str()),
            ));
        }
        let reserve = Reserve::new(action.clone(), unit.clone(), *amount)
            .key(&derive(&base.0, "reserve")?)
            .ttl(charge.ttl);
        let r = charge
            .client
            .reserve(&bearer, &reserve)
            .await
            .map_err(|e| Rejection::ledger(&e))?;
        if base.1 {
            // The client chose the key: this may be a retry of a call that
            // already finished (the reserve answer is replayed as it was).
            let now = charge
                .client
                .reservation(&bearer, &r.id)
                .await
                .map_err(|e| Rejection::ledger(&e))?;
            if now.state != ResState::Active {
                return Err(Rejection::new(
                    StatusCode::CONFLICT,
                    "request_replayed",
                    format!(
                        "a call with this Idempotency-Key already finished ({}); use a new key to call again",
                        now.state.as_str()
                    ),
                ));
            }
        }
        hold = Some(r);
    }
    let cost = Arc::new(Mutex::new(None));
    parts.extensions.insert(Caller {
        token,
        bearer: bearer.clone(),
        action,
        hold: hold.clone(),
        cost: Arc::clone(&cost),
    });
    // The handler runs in its own task, so that a panic in it still ends
    // with the hold released.
    let fut = inner.call(Request::from_parts(parts, Body::from(body)));
    let answer = tokio::spawn(fut).await;
    let (Some((charge, _)), Some(hold)) = (priced, hold) else {
        return answer.map(|Ok(r)| r).map_err(|_| handler_failed());
    };
    let success = matches!(&answer, Ok(Ok(r)) if r.status().is_success());
    if success {
        let actual = cost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(hold.amount);
        commit(&charge.client, &bearer, &hold, actual, &base.0).await;
    } else {
        let key = derive(&base.0, "release")?;
        if let Err(e) = charge.client.release(&bearer, &hold.id, &key).await {
            tracing::error!(reservation = %hold.id, error = %e, "release failed; the hold lapses at expiry");
        }
    }
    answer.map(|Ok(r)| r).map_err(|_| handler_failed())
}

fn handler_failed() -> Rejection {
    Rejection::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "handler_failed",
        "the handler failed; nothing was charged",
    )
}

/// The request's base idempotency key, and whether the client chose it.
fn base_key(parts: &Parts) -> Result<(IdempotencyKey, bool), Rejection> {
    match parts.headers.get(&IDEMPOTENCY_KEY) {
        Some(v) => v
            .to_str()
            .ok()
            .filter(|s| s.len() <= 64)
            .and_then(|s| IdempotencyKey::new(format!("gw:{s}")).ok())
            .map(|k| (k, true))
            .ok_or_else(|| {
                Rejection::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1-64 printable ASCII characters without space",
                )
            }),
        None => IdempotencyKey::random().map(|k| (k, false)).map_err(|_| {
            Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "rng_failed",
                "no randomness",
            )
        }),
    }
}

fn derive(base: &IdempotencyKey, step: &str) -> Result<IdempotencyKey, Rejection> {
    base.derive(step)
        .map_err(|_| Rejection::bad_request("invalid_idempotency_key", "key too long"))
}

/// Commits `actual`. If the cost overran the hold and the budget cannot
/// cover the difference, charges the hold instead: the work is done and
/// its result is returned either way; a failed commit is logged, and the
/// hold lapses at expiry uncharged.
async fn commit(
    client: &Client,
    bearer: &Bearer,
    hold: &Reservation,
    actual: u64,
    base: &IdempotencyKey,
) {
    let Ok(key) = base.derive("commit") else {
        return;
    };
    match client.commit(bearer, &hold.id, actual, &key).await {
        Ok(_) => return,
        Err(e) if e.code() == "insufficient_budget" && actual > hold.amount => {
            tracing::warn!(reservation = %hold.id, actual, "cost overran the hold and the budget; charging the hold");
        }
        Err(e) => {
            tracing::error!(reservation = %hold.id, error = %e, "commit failed; the call goes uncharged");
            return;
        }
    }
    let Ok(key) = base.derive("commit-hold") else {
        return;
    };
    if let Err(e) = client.commit(bearer, &hold.id, hold.amount, &key).await {
        tracing::error!(reservation = %hold.id, error = %e, "commit failed; the call goes uncharged");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(auth: Option<&str>, body: &str) -> (Parts, Bytes) {
        let mut b = Request::builder().method(Method::POST).uri("/tools/x");
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        (
            b.body(()).unwrap().into_parts().0,
            Bytes::from(body.to_owned()),
        )
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_one_space() {
        for (h, want) in [
            ("Bearer abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            ("BEARER abc", Some("abc")),
            ("Bearerabc", None),
            ("Basic abc", None),
            ("Bear", None),
        ] {
            let (p, _) = parts(Some(h), "");
            assert_eq!(bearer(&p), want, "{h}");
        }
        assert_eq!(bearer(&parts(None, "").0), None);
    }

    #[test]
    fn json_bodies_give_resource_and_args() {
        let (p, b) = parts(
            None,
            r#"{"resource":"doc:1","args":{"n":3,"s":"x"},"other":true}"#,
        );
        let v = RequestView {
            parts: &p,
            body: &b,
        };
        let a = v.action_from_json("tool.run").unwrap();
        assert_eq!(a.resource.as_deref(), Some("doc:1"));
        assert_eq!(a.args["n"], ArgValue::Int(3));
        assert_eq!(a.args["s"], ArgValue::Str("x".into()));
        for bad in [
            r#"{"resource":1}"#,
            r#"{"args":{"f":1.5}}"#,
            r#"{"args":[1]}"#,
        ] {
            let (p, b) = parts(None, bad);
            let v = RequestView {
                parts: &p,
                body: &b,
            };
            assert_eq!(
                v.action_from_json("t").unwrap_err().code,
                "invalid_request",
                "{bad}"
            );
        }
        let (p, b) = parts(None, "not json");
        let v = RequestView {
            parts: &p,
            body: &b,
        };
        assert_eq!(v.action_from_json("t").unwrap(), Action::new("t"));
    }
}
