//! `baton::client` (feature `client`): a typed async client for the spend
//! ledger's HTTP API (spec/http.md), and the two background duties of a
//! gateway that verifies at the edge: following the ledger's keyset and
//! its revocation feed.
//!
//! ```no_run
//! # async fn demo() -> Result<(), baton::client::ClientError> {
//! use baton::client::{Action, Bearer, Client, IdempotencyKey, Reserve};
//! use baton::Unit;
//!
//! let ledger = Client::new("https://ledger.example")?;
//! let token = Bearer::new("baton_v1_...".to_owned());
//! let hold = ledger
//!     .reserve(&token, &Reserve::new(Action::new("crm.read"), Unit::Calls, 1))
//!     .await?;
//! // ... run the tool ...
//! ledger.commit(&token, &hold.id, 1, &IdempotencyKey::random()?).await?;
//! # Ok(()) }
//! ```
//!
//! * Every method is one endpoint of spec/http.md §6; answers are parsed
//!   into types, errors into [`ClientError`], whose [`ApiError`] carries the
//!   spec's status and reason code (§7).
//! * Ledger changes carry an [`IdempotencyKey`]. A request that got no
//!   answer (connection lost, timeout) or a `503`/`408` is retried with the
//!   **same** key and body, with exponential backoff ([`RetryPolicy`]), so
//!   a lost answer never charges twice (§3.6). Revocation is idempotent by
//!   itself and reads change nothing, so they retry too; minting and key
//!   rotation are not idempotent and are retried only when the request
//!   never left (a refused connection) or was answered `503`, which never
//!   means the change was applied (§2.4).
//! * HTTPS goes through rustls with the platform's root certificates.
//!
//! # Layout
//! * this file: [`Client`], its builder, credentials, errors, retries;
//! * [`types`]: the request and answer bodies;
//! * [`keys`]: [`LiveVerifier`] (a [`crate::Verifier`] shared by a
//!   gateway's requests) and [`KeySource`], which keeps its keyset current;
//! * [`feed`]: [`RevocationFeed`], which applies the revocation feed to a
//!   [`LiveVerifier`] within a stated staleness bound.

use std::fmt;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::keys::BlockId;
use crate::ledger::{AllocId, ResId};
use crate::token::Token;

pub mod feed;
pub mod keys;
pub mod types;

pub use feed::{FeedPolicy, FeedStatus, RevocationFeed};
pub use keys::{KeyPolicy, KeySource, LiveVerifier};
pub use types::{
    Action, Allocate, Allocation, AuthorizeAnswer, Balance, KeyInfo, Minted, Reservation, Reserve,
    RevocationPage, Revoked, Rotated, ScopeCounters, ScopeRef,
};

/// The largest answer body read, in bytes: a full revocation page (1 000
/// entries) is about 100 KiB.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// A bearer token, kept out of `Debug` output and wiped on drop: its text
/// holds the proof secret that lets its holder attenuate it.
#[derive(Clone)]
pub struct Bearer(Zeroizing<String>);

impl Bearer {
    /// Wraps a token's text form (`baton_v1_...`). It is not checked here:
    /// the ledger verifies it.
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text.trim().to_owned()))
    }

    /// The token text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn header(&self) -> Result<HeaderValue, ClientError> {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", self.expose()))
            .map_err(|_| ClientError::InvalidInput("the token is not visible ASCII"))?;
        v.set_sensitive(true);
        Ok(v)
    }
}

impl From<&Token> for Bearer {
    fn from(token: &Token) -> Self {
        Self(Zeroizing::new(token.to_text()))
    }
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bearer(<redacted>)")
    }
}

/// An idempotency key (spec/http.md §3.6): 1–128 printable ASCII
/// characters without space. Reuse it, and only it, to retry one operation.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Checks `key` against the spec's form.
    pub fn new(key: impl Into<String>) -> Result<Self, ClientError> {
        let key = key.into();
        if (1..=128).contains(&key.len()) && key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            Ok(Self(key))
        } else {
            Err(ClientError::InvalidInput(
                "an idempotency key is 1-128 printable ASCII characters without space",
            ))
        }
    }

    /// A fresh key of 128 random bits from the OS generator.
    pub fn random() -> Result<Self, ClientError> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(|_| ClientError::Rng)?;
        let mut hex = [0u8; 32];
        Ok(Self(format!("k-{}", crate::hex::encode(&b, &mut hex))))
    }

    /// A key for one step of a larger operation: `{self}:{step}`, e.g. the
    /// reserve and the commit of one tool call (keys are shared by all
    /// operations of a tree, so each step needs its own).
    pub fn derive(&self, step: &str) -> Result<Self, ClientError> {
        Self::new(format!("{}:{step}", self.0))
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({})", self.0)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An error answer of the ledger (spec/http.md §2.1): the status, the
/// stable reason code, and the extra fields some codes carry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The reason code (spec/http.md §7); branch on it and `status` only.
    pub code: String,
    /// Human-readable; not stable.
    pub message: String,
    /// `insufficient_budget`: the scope that lacked room.
    pub scope: Option<ScopeRef>,
    /// `insufficient_budget`: what that scope had left.
    pub remaining: Option<u64>,
    /// `reservation_finalized`: the reservation's state.
    pub state: Option<String>,
    /// `revoked`, when the ledger detected it: the revoked block.
    pub block_id: Option<BlockId>,
    /// `allocation_exhausted` (with `remaining`, its unused part) and
    /// `allocation_exists`: the allocation (spec/http.md §3.8).
    pub allocation_id: Option<AllocId>,
}

impl ApiError {
    /// Whether the same request may succeed later: the service was
    /// overloaded, timed out, or its store failed; nothing was applied.
    pub fn is_retryable(&self) -> bool {
        matches!(self.status, 408 | 503)
    }

    fn from_body(status: u16, body: &Value) -> Self {
        let e = &body["error"];
        let text = |k: &str| e[k].as_str().map(str::to_owned);
        Self {
            status,
            // An answer without the spec's body (a proxy's error page) still
            // gets a code, so callers can branch on every error the same way.
            code: text("code").unwrap_or_else(|| format!("http_{status}")),
            message: text("message").unwrap_or_default(),
            scope: serde_json::from_value(e["scope"].clone()).ok(),
            remaining: e["remaining"].as_u64(),
            state: text("state"),
            block_id: e["block_id"].as_str().and_then(BlockId::from_hex),
            allocation_id: e["allocation_id"].as_str().and_then(AllocId::parse),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the ledger answered {} {}", self.status, self.code)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// Why a ledger call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The ledger answered with an error (spec/http.md §2): status and code.
    #[error("{0}")]
    Api(Box<ApiError>),
    /// No answer after every retry: connection refused or lost, timeout.
    #[error("the ledger is unreachable: {0}")]
    Unreachable(String),
    /// An answer that is not what the spec says (not JSON, a missing field,
    /// too large). The ledger may be another service or another version.
    #[error("unexpected answer from the ledger: {0}")]
    Protocol(String),
    /// The base URL is not an absolute `http://` or `https://` URL without
    /// query or fragment.
    #[error("ledger URL {0:?} is not an http(s) base URL")]
    Url(String),
    /// A value given to the client is not of the spec's form.
    #[error("{0}")]
    InvalidInput(&'static str),
    /// The HTTP client could not be built (TLS setup).
    #[error("building the HTTP client: {0}")]
    Setup(String),
    /// The OS random generator failed (a fresh idempotency key).
    #[error("the OS random generator failed")]
    Rng,
}

impl ClientError {
    /// The reason code: the ledger's for [`ClientError::Api`], else a
    /// local one (`ledger_unreachable`, `ledger_protocol`, ...).
    pub fn code(&self) -> &str {
        match self {
            Self::Api(e) => &e.code,
            Self::Unreachable(_) => "ledger_unreachable",
            Self::Protocol(_) => "ledger_protocol",
            Self::Url(_) => "invalid_url",
            Self::InvalidInput(_) => "invalid_input",
            Self::Setup(_) => "client_setup",
            Self::Rng => "rng_failed",
        }
    }

    /// The ledger's error answer, if it gave one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Api(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the ledger could not be reached or asked to retry later
    /// (`503`, `408`): the outcome is unknown or nothing was applied.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Api(e) => e.is_retryable(),
            Self::Unreachable(_) => true,
            _ => false,
        }
    }
}

/// How failed requests are retried: `attempts` tries in all, waiting
/// `base`, `2·base`, `4·base`, ... (at most `max`) between them, each wait
/// shortened by a random part of up to half, so that many clients do not
/// retry in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Tries in all, the first included; 1 means no retry.
    pub attempts: u32,
    /// The first wait.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl RetryPolicy {
    /// `attempts` tries with waits from `base` up to `max`.
    pub fn new(attempts: u32, base: Duration, max: Duration) -> Self {
        Self {
            attempts: attempts.max(1),
            base,
            max,
        }
    }

    /// No retries.
    pub fn none() -> Self {
        Self::new(1, Duration::ZERO, Duration::ZERO)
    }

    /// The wait before try `n + 1` (after `n` failed tries, `n ≥ 1`).
    fn delay(&self, n: u32) -> Duration {
        let full = self
            .base
            .saturating_mul(1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX))
            .min(self.max);
        let mut r = [0u8; 4];
        // Without randomness the wait is just not shortened.
        let jitter = getrandom::fill(&mut r).map_or(0.0, |()| {
            f64::from(u32::from_le_bytes(r)) / f64::from(u32::MAX) / 2.0
        });
        full.mul_f64(1.0 - jitter)
    }
}

impl Default for RetryPolicy {
    /// 4 tries, waiting about 100 ms, 200 ms, 400 ms.
    fn default() -> Self {
        Self::new(4, Duration::from_millis(100), Duration::from_secs(2))
    }
}

/// Builds a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    base: String,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    http: Option<reqwest::Client>,
}

impl ClientBuilder {
    /// The longest one try may take, answer included (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest a connection may take to open (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How failed requests are retried.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Uses this `reqwest` client (its pool, proxy and TLS settings);
    /// the connect timeout above is then the client's own.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Checks the URL and builds the client. Makes no request.
    pub fn build(self) -> Result<Client, ClientError> {
        let url = reqwest::Url::parse(&self.base)
            .ok()
            .filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.has_host()
                    && u.query().is_none()
                    && u.fragment().is_none()
            })
            .ok_or_else(|| ClientError::Url(self.base.clone()))?;
        let http = match self.http {
            Some(h) => h,
            None => reqwest::Client::builder()
                .connect_timeout(self.connect_timeout)
                .build()
                .map_err(|e| ClientError::Setup(e.to_string()))?,
        };
        Ok(Client {
            base: url.as_str().trim_end_matches('/').to_owned(),
            http,
            timeout: self.timeout,
            retry: self.retry,
        })
    }
}

/// Whether a request may be sent again after an unknown outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replay {
    /// Idempotent: reads, keyed ledger changes, revocation.
    Safe,
    /// Not idempotent (mint, key rotation): retried only when it surely
    /// was not applied (no connection, or a 503).
    Unsafe,
}

/// A client of one ledger service. Cheap to clone: clones share the
/// connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    timeout: Duration,
    retry: RetryPolicy,
}

impl Client {
    /// A client with the default settings for the ledger at `base_url`
    /// (e.g. `http://127.0.0.1:7878`).
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::builder(base_url).build()
    }

    /// A builder for the ledger at `base_url`.
    pub fn builder(base_url: &str) -> ClientBuilder {
        ClientBuilder {
            base: base_url.to_owned(),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            retry: RetryPolicy::default(),
            http: None,
        }
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    // ---- endpoints (spec/http.md §6) ----

    /// `GET /v1/keys` (§6.1): the issuer's public keys.
    pub async fn keys(&self) -> Result<Vec<KeyInfo>, ClientError> {
        let v: types::KeysAnswer = self
            .call(
                reqwest::Method::GET,
                "/v1/keys",
                None,
                None::<&()>,
                Replay::Safe,
            )
            .await?;
        Ok(v.keys)
    }

    /// `GET /v1/keys` as a [`crate::Keyset`] for a verifier.
    pub async fn keyset(&self) -> Result<crate::Keyset, ClientError> {
        types::keyset(&self.keys().await?)
    }

    /// `POST /v1/keys/rotate` (§6.1.1): a new active root key.
    pub async fn rotate_key(&self, admin: &Bearer) -> Result<Rotated, ClientError> {
        self.call(
            reqwest::Method::POST,
            "/v1/keys/rotate",
            Some(admin),
            None::<&()>,
            Replay::Unsafe,
        )
        .await
    }

    /// `POST /v1/tokens` (§6.2): mint a root token. `request` is the body
    /// of §6.2 as JSON.
    pub async fn mint(&self, admin: &Bearer, request: &Value) -> Result<Minted, ClientError> {
        self.call(
            reqwest::Method::POST,
            "/v1/tokens",
            Some(admin),
            Some(request),
            Replay::Unsafe,
        )
        .await
    }

    /// `POST /v1/authorize` (§6.3): whether `token` allows `action` now.
    pub async fn authorize(
        &self,
        token: &Bearer,
        action: &Action,
    ) -> Result<AuthorizeAnswer, ClientError> {
        self.call(
            reqwest::Method::POST,
            "/v1/authorize",
            Some(token),
            Some(action),
            Replay::Safe,
        )
        .await
    }

    /// `POST /v1/reservations` (§6.4): hold an amount.
    pub async fn reserve(
        &self,
        token: &Bearer,
        reserve: &Reserve,
    ) -> Result<Reservation, ClientError> {
        let v: types::ReservationAnswer = self
            .call(
                reqwest::Method::POST,
                "/v1/reservations",
                Some(token),
                Some(reserve),
                Replay::Safe,
            )
            .await?;
        Ok(v.reservation)
    }

    /// `GET /v1/reservations/{id}` (§6.5).
    pub async fn reservation(
        &self,
        token: &Bearer,
        id: &ResId,
    ) -> Result<Reservation, ClientError> {
        let path = format!("/v1/reservations/{id}");
        let v: types::ReservationAnswer = self
            .call(
                reqwest::Method::GET,
                &path,
                Some(token),
                None::<&()>,
                Replay::Safe,
            )
            .await?;
        Ok(v.reservation)
    }

    /// `POST /v1/reservations/{id}/commit` (§6.6): charge `actual`.
    pub async fn commit(
        &self,
        token: &Bearer,
        id: &ResId,
        actual: u64,
        key: &IdempotencyKey,
    ) -> Result<Reservation, ClientError> {
        let body = serde_json::json!({ "actual": actual, "idempotency_key": key.as_str() });
        self.finish(token, id, "commit", &body).await
    }

    /// `POST /v1/reservations/{id}/release` (§6.7): return the hold.
    pub async fn release(
        &self,
        token: &Bearer,
        id: &ResId,
        key: &IdempotencyKey,
    ) -> Result<Reservation, ClientError> {
        let body = serde_json::json!({ "idempotency_key": key.as_str() });
        self.finish(token, id, "release", &body).await
    }

    /// `POST /v1/reservations/{id}/extend` (§6.8): hold until at least
    /// `ttl` from now.
    pub async fn extend(
        &self,
        token: &Bearer,
        id: &ResId,
        ttl: Duration,
        key: &IdempotencyKey,
    ) -> Result<Reservation, ClientError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let body = serde_json::json!({ "ttl_ms": ttl_ms, "idempotency_key": key.as_str() });
        self.finish(token, id, "extend", &body).await
    }

    async fn finish(
        &self,
        token: &Bearer,
        id: &ResId,
        op: &str,
        body: &Value,
    ) -> Result<Reservation, ClientError> {
        let path = format!("/v1/reservations/{id}/{op}");
        let v: types::ReservationAnswer = self
            .call(
                reqwest::Method::POST,
                &path,
                Some(token),
                Some(body),
                Replay::Safe,
            )
            .await?;
        Ok(v.reservation)
    }

    /// `POST /v1/spend` (§6.9): reserve and commit in one step; `actual`
    /// defaults to the amount.
    pub async fn spend(
        &self,
        token: &Bearer,
        reserve: &Reserve,
        actual: Option<u64>,
    ) -> Result<Reservation, ClientError> {
        let mut body =
            serde_json::to_value(reserve).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if let (Some(a), Some(obj)) = (actual, body.as_object_mut()) {
            obj.insert("actual".into(), a.into());
        }
        let v: types::ReservationAnswer = self
            .call(
                reqwest::Method::POST,
                "/v1/spend",
                Some(token),
                Some(&body),
                Replay::Safe,
            )
            .await?;
        Ok(v.reservation)
    }

    /// `POST /v1/allocations` (§6.16): set part of this token's pool aside
    /// for a descendant, named by its token.
    pub async fn allocate(
        &self,
        token: &Bearer,
        allocate: &Allocate,
    ) -> Result<Allocation, ClientError> {
        let v: types::AllocationAnswer = self
            .call(
                reqwest::Method::POST,
                "/v1/allocations",
                Some(token),
                Some(allocate),
                Replay::Safe,
            )
            .await?;
        Ok(v.allocation)
    }

    /// `GET /v1/allocations/{id}` (§6.18).
    pub async fn allocation(
        &self,
        token: &Bearer,
        id: &AllocId,
    ) -> Result<Allocation, ClientError> {
        let path = format!("/v1/allocations/{id}");
        let v: types::AllocationAnswer = self
            .call(
                reqwest::Method::GET,
                &path,
                Some(token),
                None::<&()>,
                Replay::Safe,
            )
            .await?;
        Ok(v.allocation)
    }

    /// `POST /v1/allocations/{id}/release` (§6.19): return the unused
    /// part, once. The child, its parent or an ancestor may.
    pub async fn release_allocation(
        &self,
        token: &Bearer,
        id: &AllocId,
        key: &IdempotencyKey,
    ) -> Result<Allocation, ClientError> {
        let path = format!("/v1/allocations/{id}/release");
        let body = serde_json::json!({ "idempotency_key": key.as_str() });
        let v: types::AllocationAnswer = self
            .call(
                reqwest::Method::POST,
                &path,
                Some(token),
                Some(&body),
                Replay::Safe,
            )
            .await?;
        Ok(v.allocation)
    }

    /// `GET /v1/allocations` (§6.17): the active allocations to this
    /// token's descendants.
    pub async fn allocations(&self, token: &Bearer) -> Result<Vec<Allocation>, ClientError> {
        let v: types::AllocationsAnswer = self
            .call(
                reqwest::Method::GET,
                "/v1/allocations",
                Some(token),
                None::<&()>,
                Replay::Safe,
            )
            .await?;
        Ok(v.allocations)
    }

    /// `GET /v1/balances` (§6.10): the token's scopes, nearest first.
    pub async fn balances(&self, token: &Bearer) -> Result<Vec<Balance>, ClientError> {
        let v: types::BalancesAnswer = self
            .call(
                reqwest::Method::GET,
                "/v1/balances",
                Some(token),
                None::<&()>,
                Replay::Safe,
            )
            .await?;
        Ok(v.scopes)
    }

    /// `POST /v1/revocations` (§6.11): revoke `block`; `target` is the
    /// descendant token naming it, when revoking below one's own block.
    pub async fn revoke(
        &self,
        token: &Bearer,
        block: &BlockId,
        target: Option<&Bearer>,
    ) -> Result<Revoked, ClientError> {
        let mut body = serde_json::json!({ "block_id": block.to_string() });
        if let Some(t) = target {
            body["target_token"] = Value::String(t.expose().to_owned());
        }
        self.call(
            reqwest::Method::POST,
            "/v1/revocations",
            Some(token),
            Some(&body),
            Replay::Safe,
        )
        .await
    }

    /// `GET /v1/revocations?after=N` (§6.12): one page of the feed (at most
    /// 1 000 entries after `after`).
    pub async fn revocations(
        &self,
        admin: &Bearer,
        after: u64,
    ) -> Result<RevocationPage, ClientError> {
        let path = format!("/v1/revocations?after={after}");
        self.call(
            reqwest::Method::GET,
            &path,
            Some(admin),
            None::<&()>,
            Replay::Safe,
        )
        .await
    }

    /// `GET /readyz` (§6.14): whether the ledger's store answers.
    pub async fn ready(&self) -> Result<bool, ClientError> {
        match self
            .call::<Value>(
                reqwest::Method::GET,
                "/readyz",
                None,
                None::<&()>,
                Replay::Safe,
            )
            .await
        {
            Ok(v) => Ok(v["ready"] == Value::Bool(true)),
            Err(ClientError::Api(e)) if e.status == 503 => Ok(false),
            Err(e) => Err(e),
        }
    }

    // ---- transport ----

    /// Sends one request, retrying as [`RetryPolicy`] says with the very
    /// same body (so the same idempotency key), and parses the answer.
    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&Bearer>,
        body: Option<&(impl Serialize + ?Sized)>,
        replay: Replay,
    ) -> Result<T, ClientError> {
        let auth = token.map(Bearer::header).transpose()?;
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let url = format!("{}{path}", self.base);
        let mut tries = 0u32;
        loop {
            tries += 1;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .timeout(self.timeout);
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a.clone());
            }
            if let Some(b) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            let outcome = match req.send().await {
                Ok(resp) => read_answer(resp).await,
                Err(e) => Err(Attempt::Transport {
                    sent: !e.is_connect(),
                    detail: e.to_string(),
                }),
            };
            let err = match outcome {
                Ok((status, v)) if (200..300).contains(&status) => {
                    return serde_json::from_value(v)
                        .map_err(|e| ClientError::Protocol(format!("{path}: {e}")));
                }
                Ok((status, v)) => ClientError::Api(Box::new(ApiError::from_body(status, &v))),
                Err(Attempt::Transport { sent, detail }) => {
                    let e = ClientError::Unreachable(detail);
                    if sent && replay == Replay::Unsafe {
                        return Err(e);
                    }
                    e
                }
                Err(Attempt::Invalid(detail)) => return Err(ClientError::Protocol(detail)),
            };
            if !err.is_unavailable() || tries >= self.retry.attempts {
                return Err(err);
            }
            tracing::debug!(path, tries, error = %err, "retrying ledger request");
            tokio::time::sleep(self.retry.delay(tries)).await;
        }
    }
}

/// How one try ended, short of an answer to parse.
enum Attempt {
    /// No (complete) answer. `sent`: the request may have reached the ledger.
    Transport { sent: bool, detail: String },
    /// An answer that is not JSON, or too large.
    Invalid(String),
}

/// Reads an answer's status and JSON body, at most [`MAX_ANSWER_BYTES`].
async fn read_answer(mut resp: reqwest::Response) -> Result<(u16, Value), Attempt> {
    let status = resp.status().as_u16();
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(Attempt::Invalid(format!(
                        "answer over {MAX_ANSWER_BYTES} bytes"
                    )));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            // The answer was cut: as good as lost.
            Err(e) => {
                return Err(Attempt::Transport {
                    sent: true,
                    detail: e.to_string(),
                });
            }
        }
    }
    match serde_json::from_slice(&buf) {
        Ok(v) => Ok((status, v)),
        // A non-JSON 5xx (a proxy's page) is still a status to act on.
        Err(_) if status >= 500 || status == 408 => Ok((status, Value::Null)),
        Err(_) => Err(Attempt::Invalid(format!(
            "status {status}, body is not JSON"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_follow_the_spec_form() {
        assert!(IdempotencyKey::new("req-0001").is_ok());
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new("has space").is_err());
        assert!(IdempotencyKey::new("x".repeat(129)).is_err());
        assert!(IdempotencyKey::new("x".repeat(128)).is_ok());
        let k = IdempotencyKey::random().unwrap();
        assert_eq!(k.as_str().len(), 34);
        assert_ne!(k, IdempotencyKey::random().unwrap());
        assert_eq!(k.derive("commit").unwrap().as_str(), format!("{k}:commit"));
    }

    #[test]
    fn bearer_debug_hides_the_token() {
        let b = Bearer::new("baton_v1_secret".into());
        assert!(!format!("{b:?}").contains("secret"));
        assert_eq!(b.expose(), "baton_v1_secret");
    }

    #[test]
    fn only_http_base_urls_are_accepted() {
        for bad in [
            "ftp://x",
            "not a url",
            "http://x/?q=1",
            "http://x/#f",
            "unix:/tmp/s",
        ] {
            assert!(
                matches!(Client::new(bad), Err(ClientError::Url(_))),
                "{bad}"
            );
        }
        let c = Client::new("https://ledger.example/").unwrap();
        assert_eq!(c.base_url(), "https://ledger.example");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_at_most_half_jitter() {
        let p = RetryPolicy::new(10, Duration::from_millis(100), Duration::from_millis(350));
        for (n, full) in [(1, 100), (2, 200), (3, 350), (9, 350)] {
            let d = p.delay(n).as_millis();
            assert!(d <= full && d >= full / 2, "try {n}: {d} ms");
        }
    }

    #[test]
    fn error_bodies_keep_their_code_and_extra_fields() {
        let body = serde_json::json!({"error": {"code": "insufficient_budget", "message": "m",
            "scope": {"block_id": "ab".repeat(32), "unit": "calls", "tools": null}, "remaining": 2}});
        let e = ApiError::from_body(402, &body);
        assert_eq!(
            (e.status, e.code.as_str(), e.remaining),
            (402, "insufficient_budget", Some(2))
        );
        assert_eq!(e.scope.unwrap().unit, crate::Unit::Calls);
        let e = ApiError::from_body(502, &Value::Null);
        assert_eq!(e.code, "http_502");
    }
}
