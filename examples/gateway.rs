//! A tool gateway in front of fake in-process tools, paid for through the
//! Baton spend ledger.
//!
//! ```text
//! cargo run -- serve --data ledger-data --listen 127.0.0.1:7878 &   # the ledger
//! cargo run --example gateway -- --ledger http://127.0.0.1:7878 --listen 127.0.0.1:0
//! # A token: POST /v1/tokens on the ledger with ledger-data/admin.token, e.g.
//! # {"budgets":[{"unit":"usd_microcents","ceiling":500000000}],"tools":["crm.*","refund.*"]}
//! curl -s http://127.0.0.1:PORT/tools/crm.read -H "authorization: Bearer $TOKEN" \
//!   -H 'content-type: application/json' \
//!   -d '{"resource":"customer:4821","estimated_cost":1000000,"unit":"usd_microcents"}'
//! ```
//!
//! `POST /tools/{name}` with `{"resource"?, "args"?, "estimated_cost", "unit"}`
//! goes through these steps, and stops at the first that fails:
//!
//! | step | done where | failure |
//! |------|-----------|---------|
//! | verify the bearer token with the issuer's public keys | offline, [`Caller`] extractor | 401 + reason code |
//! | authorize the call ([`baton::Verifier::authorize`]) | offline | 403 + reason code |
//! | find the tool, check the body and the tool's input | offline | 404 `unknown_tool`, 400 |
//! | hold `estimated_cost` at the ledger | `POST /v1/reservations` | 402 `insufficient_budget` + `remaining`, 403, 503 `ledger_unavailable` |
//! | run the tool | in process | 502 `tool_failed`, 504 `tool_timeout`: the hold is released |
//! | charge the actual cost | `POST /v1/reservations/{id}/commit` | the result is still returned (see [`commit`]) |
//!
//! Every error is `{"error": {"code", "message"}}`. A denied call never
//! reaches the ledger; only a call the token allows costs a round trip.
//!
//! Every response carries `x-request-id`, the client's or a fresh one. The
//! ledger idempotency keys derive from it, so a client that retries after a
//! lost answer, with the same id, is never charged twice; and if that call
//! has already finished, the retry gets 409 `request_id_reused` rather than
//! a second, unpaid run of the tool.
//!
//! Keys come from the ledger's `GET /v1/keys` at start and are cached: they
//! are refetched in the background once older than [`KeyPolicy::max_age`],
//! and at once when a token names an unknown key id (a rotation), but never
//! twice within [`KeyPolicy::min_interval`], so a flood of tokens with bogus
//! key ids cannot turn into a flood of fetches.
//!
//! `tests/gateway.rs` includes this file and runs it against an in-process
//! ledger; [`router`] is what it builds.

#[cfg(feature = "server")]
pub use app::*;

#[cfg(not(feature = "server"))]
fn main() -> std::process::ExitCode {
    eprintln!("the gateway example needs the server feature (on by default)");
    std::process::ExitCode::FAILURE
}

#[cfg(feature = "server")]
fn main() -> std::process::ExitCode {
    app::run()
}

#[cfg(feature = "server")]
mod app {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::ops::DerefMut;
    use std::process::ExitCode;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, RwLock};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use axum::error_handling::HandleErrorLayer;
    use axum::extract::rejection::JsonRejection;
    use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
    use axum::http::request::Parts;
    use axum::http::{HeaderName, HeaderValue, StatusCode, header};
    use axum::middleware::{self, Next};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use axum::{Extension, Json, Router};
    use baton::keys::KeyStatus;
    use baton::{ArgValue, AuthorizeError, Keyset, PublicKey, Token, Unit, VerifyError};
    use serde::Deserialize;
    use serde_json::{Value, json};
    use tower::ServiceBuilder;

    /// Largest request body accepted, in bytes.
    pub const MAX_BODY_BYTES: usize = 16 * 1024;
    /// Largest ledger response read, in bytes.
    const MAX_LEDGER_BODY_BYTES: usize = 256 * 1024;
    /// Most requests handled at once; more are shed with 503.
    pub const MAX_CONCURRENCY: usize = 1024;
    /// Longest a request may take before it is answered 408. Longer than a
    /// tool run plus its ledger calls, so it only fires when something hangs;
    /// the call still finishes its ledger bookkeeping (see `call_tool`).
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// Longest one tool run may take.
    pub const TOOL_TIMEOUT: Duration = Duration::from_secs(10);
    /// Longest one ledger call may take.
    const LEDGER_TIMEOUT: Duration = Duration::from_secs(5);
    /// How long the ledger keeps a hold. It must outlive the tool run and the
    /// commit retries, or the commit would find the hold expired.
    const HOLD_TTL: Duration = Duration::from_secs(60);
    /// Attempts at a commit or release while the ledger is unreachable. Both
    /// carry an idempotency key, so a retry can never charge twice.
    const FINISH_ATTEMPTS: u32 = 3;
    /// The request id header: read from the client if present, else made up,
    /// and echoed on every response.
    pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

    // ---- start-up ----

    /// How the cached keyset follows the ledger's.
    #[derive(Debug, Clone, Copy)]
    pub struct KeyPolicy {
        /// Keys older than this are refetched in the background; requests
        /// go on with the old keys meanwhile, and keep them if the ledger
        /// cannot be reached.
        pub max_age: Duration,
        /// Two fetches are never closer together than this, whatever
        /// prompted them (age, or a token naming an unknown key id).
        pub min_interval: Duration,
    }

    impl Default for KeyPolicy {
        fn default() -> Self {
            Self {
                max_age: Duration::from_secs(300),
                min_interval: Duration::from_secs(10),
            }
        }
    }

    /// Why the gateway could not start.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum StartError {
        /// The ledger base URL is not an absolute `http(s)://` URL.
        #[error("ledger URL {0:?} is not an http(s) base URL")]
        LedgerUrl(String),
        /// The first keyset could not be fetched.
        #[error("fetching keys from the ledger: {0}")]
        Keys(#[from] KeysError),
        /// The operating system's random number generator failed.
        #[error("random number generator failed")]
        Rng,
    }

    /// The gateway's router, with default key caching: fetches the keyset
    /// from the ledger at `ledger` (e.g. `http://127.0.0.1:7878`) first.
    pub async fn router(ledger: &str, client: reqwest::Client) -> Result<Router, StartError> {
        router_with(ledger, client, KeyPolicy::default()).await
    }

    /// [`router`] with a chosen key caching policy.
    pub async fn router_with(
        ledger: &str,
        client: reqwest::Client,
        policy: KeyPolicy,
    ) -> Result<Router, StartError> {
        let url = reqwest::Url::parse(ledger)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.query().is_none())
            .ok_or_else(|| StartError::LedgerUrl(ledger.to_owned()))?;
        let ledger = Ledger {
            base: url.as_str().trim_end_matches('/').to_owned(),
            client,
        };
        let keys = Keys::start(ledger.clone(), policy).await?;
        let mut nonce = [0u8; 6];
        getrandom::fill(&mut nonce).map_err(|_| StartError::Rng)?;
        let state = AppState {
            keys,
            ledger,
            ids: Arc::new(IdSource {
                prefix: hex::encode(nonce),
                next: AtomicU64::new(0),
            }),
        };
        Ok(app(state))
    }

    /// The routes and their limits: body size, concurrency (shed beyond it)
    /// and a per-request timeout.
    fn app(state: AppState) -> Router {
        let limits = ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|err: tower::BoxError| async move {
                if err.is::<tower::timeout::error::Elapsed>() {
                    GatewayError::Timeout
                } else {
                    GatewayError::Overloaded
                }
            }))
            .load_shed()
            .concurrency_limit(MAX_CONCURRENCY)
            .timeout(REQUEST_TIMEOUT);
        Router::new()
            .route("/tools/{name}", post(call_tool))
            .route(
                "/healthz",
                get(|| async { Json(json!({ "status": "ok" })) }),
            )
            .fallback(|| async { GatewayError::NotFound })
            .layer(middleware::from_fn_with_state(state.clone(), request_id))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(limits)
            .with_state(state)
    }

    /// Serves `router` on `listener` until `shutdown` completes, then drains
    /// in-flight requests (each bounded by [`REQUEST_TIMEOUT`]).
    pub async fn serve(
        listener: tokio::net::TcpListener,
        router: Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Command-line arguments.
    #[derive(Debug, clap::Parser)]
    #[command(name = "gateway", about = "A Baton tool gateway with fake tools")]
    struct Args {
        /// Base URL of the Baton ledger (`baton serve`).
        #[arg(long, env = "BATON_LEDGER")]
        ledger: String,
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: SocketAddr,
        /// Refetch the ledger's keys once they are this old, in seconds.
        #[arg(long, default_value_t = 300)]
        key_max_age: u64,
        /// Never fetch keys twice within this many seconds.
        #[arg(long, default_value_t = 10)]
        key_min_interval: u64,
    }

    /// Parses the arguments, fetches the keys, binds, prints
    /// `listening on http://ADDR` and serves until SIGTERM or Ctrl-C.
    pub fn run() -> ExitCode {
        let args = <Args as clap::Parser>::parse();
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => return fail("starting the runtime", e),
        };
        runtime.block_on(async move {
            let client = match reqwest::Client::builder().build() {
                Ok(c) => c,
                Err(e) => return fail("building the HTTP client", e),
            };
            let policy = KeyPolicy {
                max_age: Duration::from_secs(args.key_max_age),
                min_interval: Duration::from_secs(args.key_min_interval),
            };
            let router = match router_with(&args.ledger, client, policy).await {
                Ok(r) => r,
                Err(e) => return fail("starting the gateway", e),
            };
            let listener = match tokio::net::TcpListener::bind(args.listen).await {
                Ok(l) => l,
                Err(e) => return fail(&format!("listening on {}", args.listen), e),
            };
            match listener.local_addr() {
                Ok(addr) => {
                    tracing::info!(%addr, ledger = %args.ledger, "gateway listening");
                    println!("listening on http://{addr}");
                }
                Err(e) => return fail("reading the bound address", e),
            }
            match serve(listener, router, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail("serving", e),
            }
        })
    }

    fn fail(step: &str, e: impl std::fmt::Display) -> ExitCode {
        eprintln!("error: {step}: {e}");
        ExitCode::from(2)
    }

    async fn shutdown_signal() {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            () = term => {},
        }
        tracing::info!("shutdown requested; draining");
    }

    // ---- state and request ids ----

    #[derive(Clone)]
    struct AppState {
        keys: Arc<Keys>,
        ledger: Ledger,
        ids: Arc<IdSource>,
    }

    /// Makes request ids unique to this process without a syscall per
    /// request: a random prefix drawn at start, then a counter.
    struct IdSource {
        prefix: String,
        next: AtomicU64,
    }

    /// The request's id; the ledger idempotency keys derive from it, so a
    /// client retrying with the same `x-request-id` is charged once.
    #[derive(Debug, Clone)]
    struct RequestId {
        id: String,
        /// Whether the client chose it, and so may have sent it before.
        from_client: bool,
    }

    fn valid_request_id(s: &str) -> bool {
        (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    }

    /// Takes the client's `x-request-id` (or makes one up), hands it to the
    /// handler and echoes it on the response, errors included.
    async fn request_id(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
        let (id, from_client) = match req.headers().get(&REQUEST_ID) {
            Some(v) => match v.to_str() {
                Ok(s) if valid_request_id(s) => (s.to_owned(), true),
                _ => {
                    return GatewayError::BadRequest {
                        code: "invalid_request_id",
                        message: "x-request-id must be 1-64 characters of [A-Za-z0-9._-]".into(),
                    }
                    .into_response();
                }
            },
            None => (
                format!(
                    "gw-{}-{}",
                    state.ids.prefix,
                    state.ids.next.fetch_add(1, Ordering::Relaxed)
                ),
                false,
            ),
        };
        req.extensions_mut().insert(RequestId {
            id: id.clone(),
            from_client,
        });
        let mut resp = next.run(req).await;
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        resp
    }

    // ---- errors ----

    /// Every way a call can fail, each with its status and reason code.
    /// Messages are for the client: no internal detail goes into them.
    #[derive(Debug)]
    #[non_exhaustive]
    pub enum GatewayError {
        /// No `Authorization: Bearer` header.
        MissingToken,
        /// The token failed offline verification (401; `revoked` is 403).
        InvalidToken(VerifyError),
        /// The request is malformed: body, unit, amount, tool input.
        BadRequest {
            /// The reason code.
            code: &'static str,
            /// What to fix.
            message: String,
        },
        /// No such tool.
        UnknownTool,
        /// No such route.
        NotFound,
        /// The token does not allow this call.
        Denied {
            /// The reason code, e.g. `action_not_allowed` or `no_budget`.
            code: &'static str,
            /// The reason.
            message: String,
        },
        /// The ledger refused the call (402 `insufficient_budget`, 403
        /// `revoked`, 409 `idempotency_mismatch`...): its status and code
        /// are passed on.
        Ledger {
            /// The ledger's status.
            status: StatusCode,
            /// The ledger's reason code.
            code: String,
            /// The ledger's message, which is written for clients.
            message: String,
            /// For `insufficient_budget`: what the tightest scope has left.
            remaining: Option<u64>,
        },
        /// The client's request id belongs to a call that already finished;
        /// the tool is not run again.
        RequestIdReused {
            /// The finished reservation's state, e.g. `committed`.
            state: String,
        },
        /// The ledger could not be reached or answered 5xx; nothing was run.
        LedgerUnavailable,
        /// The tool failed; its hold was released and nothing was charged.
        ToolFailed,
        /// The tool took longer than [`TOOL_TIMEOUT`]; its hold was released.
        ToolTimeout,
        /// Too many requests in flight.
        Overloaded,
        /// The request took longer than [`REQUEST_TIMEOUT`].
        Timeout,
        /// A bug; details are in the log.
        Internal,
    }

    impl GatewayError {
        fn status(&self) -> StatusCode {
            match self {
                Self::MissingToken => StatusCode::UNAUTHORIZED,
                Self::InvalidToken(VerifyError::Revoked { .. }) => StatusCode::FORBIDDEN,
                Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
                Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
                Self::UnknownTool | Self::NotFound => StatusCode::NOT_FOUND,
                Self::Denied { .. } => StatusCode::FORBIDDEN,
                Self::Ledger { status, .. } => *status,
                Self::RequestIdReused { .. } => StatusCode::CONFLICT,
                Self::LedgerUnavailable | Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
                Self::ToolFailed => StatusCode::BAD_GATEWAY,
                Self::ToolTimeout => StatusCode::GATEWAY_TIMEOUT,
                Self::Timeout => StatusCode::REQUEST_TIMEOUT,
                Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            }
        }

        /// The stable reason code.
        pub fn code(&self) -> &str {
            match self {
                Self::MissingToken => "missing_token",
                Self::InvalidToken(e) => e.code(),
                Self::BadRequest { code, .. } | Self::Denied { code, .. } => code,
                Self::UnknownTool => "unknown_tool",
                Self::NotFound => "not_found",
                Self::Ledger { code, .. } => code,
                Self::RequestIdReused { .. } => "request_id_reused",
                Self::LedgerUnavailable => "ledger_unavailable",
                Self::ToolFailed => "tool_failed",
                Self::ToolTimeout => "tool_timeout",
                Self::Overloaded => "overloaded",
                Self::Timeout => "timeout",
                Self::Internal => "internal",
            }
        }

        fn message(&self) -> String {
            match self {
                Self::MissingToken => "expected Authorization: Bearer <token>".into(),
                Self::InvalidToken(e) => e.to_string(),
                Self::BadRequest { message, .. }
                | Self::Denied { message, .. }
                | Self::Ledger { message, .. } => message.clone(),
                Self::UnknownTool => "no such tool".into(),
                Self::NotFound => "no such endpoint".into(),
                Self::RequestIdReused { state } => format!(
                    "a call with this x-request-id already finished ({state}); use a new id to call again"
                ),
                Self::LedgerUnavailable => "the spend ledger is unavailable; retry later".into(),
                Self::ToolFailed => "the tool failed; nothing was charged".into(),
                Self::ToolTimeout => "the tool timed out; nothing was charged".into(),
                Self::Overloaded => "the gateway is overloaded; retry later".into(),
                Self::Timeout => "request took too long".into(),
                Self::Internal => "internal error".into(),
            }
        }
    }

    impl From<AuthorizeError> for GatewayError {
        fn from(e: AuthorizeError) -> Self {
            match e {
                AuthorizeError::Invalid(e) => Self::InvalidToken(e),
                e => Self::Denied {
                    code: e.code(),
                    message: e.to_string(),
                },
            }
        }
    }

    impl From<LedgerError> for GatewayError {
        fn from(e: LedgerError) -> Self {
            match e {
                LedgerError::Unavailable(detail) => {
                    tracing::warn!(%detail, "ledger unavailable");
                    Self::LedgerUnavailable
                }
                LedgerError::Rejected {
                    status,
                    code,
                    message,
                    remaining,
                } => match status {
                    // What a client can cause: its token, its budget, its
                    // request id. Anything else is the gateway's own bug.
                    400 | 401 | 402 | 403 | 409 => Self::Ledger {
                        status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                        code,
                        message,
                        remaining,
                    },
                    _ => {
                        tracing::error!(status, %code, %message, "unexpected ledger rejection");
                        Self::Internal
                    }
                },
            }
        }
    }

    impl IntoResponse for GatewayError {
        fn into_response(self) -> Response {
            let status = self.status();
            let mut error = json!({ "code": self.code(), "message": self.message() });
            if let Self::Ledger {
                remaining: Some(r), ..
            } = self
            {
                error["remaining"] = json!(r);
            }
            (status, Json(json!({ "error": error }))).into_response()
        }
    }

    // ---- the bearer token ----

    /// The caller, authenticated: its token verified offline against the
    /// issuer's keys, and the token text to forward to the ledger.
    pub struct Caller {
        /// The verified token.
        pub token: Token,
        bearer: String,
    }

    impl FromRequestParts<AppState> for Caller {
        type Rejection = GatewayError;

        async fn from_request_parts(
            parts: &mut Parts,
            state: &AppState,
        ) -> Result<Self, GatewayError> {
            let value = parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .ok_or(GatewayError::MissingToken)?;
            // The auth scheme is case-insensitive (RFC 9110 §11.1).
            let bearer = match value.split_once(' ') {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
                _ => return Err(GatewayError::MissingToken),
            };
            let token = state
                .keys
                .verify(bearer)
                .await
                .map_err(GatewayError::InvalidToken)?;
            Ok(Self {
                token,
                bearer: bearer.to_owned(),
            })
        }
    }

    // ---- keys ----

    /// Why the keyset could not be fetched.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum KeysError {
        /// The ledger could not be reached or did not answer 200.
        #[error("ledger unavailable: {0}")]
        Unavailable(String),
        /// The ledger's answer is not a usable keyset.
        #[error("invalid keyset: {0}")]
        Invalid(&'static str),
    }

    /// The cached keyset, and the verifier built on it.
    struct Keys {
        ledger: Ledger,
        policy: KeyPolicy,
        current: RwLock<Arc<Current>>,
        /// Held while fetching, so one fetch runs at a time; holds the time
        /// of the last attempt, successful or not.
        fetching: Arc<tokio::sync::Mutex<Instant>>,
    }

    struct Current {
        verifier: Arc<baton::Verifier>,
        /// The keys and statuses the verifier trusts, to tell whether a fetch
        /// changed anything.
        keys: Vec<([u8; 32], KeyStatus)>,
        fetched_at: Instant,
        /// Counts successful fetches.
        generation: u64,
    }

    /// Room in the verified-chain cache.
    const CHAIN_CACHE: usize = 10_000;

    fn key_list(keyset: &Keyset) -> Vec<([u8; 32], KeyStatus)> {
        keyset.iter().map(|(k, s)| (k.to_bytes(), s)).collect()
    }

    impl Keys {
        async fn start(ledger: Ledger, policy: KeyPolicy) -> Result<Arc<Self>, KeysError> {
            let keyset = ledger.keys().await?;
            let now = Instant::now();
            Ok(Arc::new(Self {
                ledger,
                policy,
                current: RwLock::new(Arc::new(Current {
                    keys: key_list(&keyset),
                    verifier: Arc::new(baton::Verifier::new(keyset).with_cache(CHAIN_CACHE)),
                    fetched_at: now,
                    generation: 0,
                })),
                fetching: Arc::new(tokio::sync::Mutex::new(now)),
            }))
        }

        fn current(&self) -> Arc<Current> {
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        }

        /// Verifies `text`, refetching the keys first if it names a key id
        /// the cache does not hold and the policy allows a fetch. Stale keys
        /// are refetched in the background.
        async fn verify(self: &Arc<Self>, text: &str) -> Result<Token, VerifyError> {
            let current = self.current();
            if current.fetched_at.elapsed() >= self.policy.max_age
                && let Ok(last_attempt) = Arc::clone(&self.fetching).try_lock_owned()
                && last_attempt.elapsed() >= self.policy.min_interval
            {
                // In the background: this request goes on with the keys it has.
                let keys = Arc::clone(self);
                let seen = current.generation;
                tokio::spawn(async move { keys.refresh_locked(last_attempt, seen).await });
            }
            match current.verifier.verify_text(text) {
                Err(VerifyError::UnknownKid) if self.refresh(current.generation).await => {
                    self.current().verifier.verify_text(text)
                }
                other => other,
            }
        }

        /// Fetches the keys unless the policy forbids it; returns whether the
        /// cache now holds a newer keyset than generation `seen`.
        async fn refresh(&self, seen: u64) -> bool {
            let last_attempt = self.fetching.lock().await;
            self.refresh_locked(last_attempt, seen).await
        }

        async fn refresh_locked(
            &self,
            mut last_attempt: impl DerefMut<Target = Instant>,
            seen: u64,
        ) -> bool {
            // Callers that waited for the lock while another fetched use
            // that fetch instead of making their own.
            if self.current().generation != seen {
                return true;
            }
            if last_attempt.elapsed() < self.policy.min_interval {
                return false;
            }
            *last_attempt = Instant::now();
            let keyset = match self.ledger.keys().await {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(error = %e, "key refresh failed; keeping the cached keys");
                    return false;
                }
            };
            let mut slot = self.current.write().unwrap_or_else(|p| p.into_inner());
            let keys = key_list(&keyset);
            // An unchanged keyset keeps its verifier, and so its warm cache.
            let verifier = if keys == slot.keys {
                Arc::clone(&slot.verifier)
            } else {
                tracing::info!(keys = keys.len(), "keyset changed");
                Arc::new(baton::Verifier::new(keyset).with_cache(CHAIN_CACHE))
            };
            *slot = Arc::new(Current {
                verifier,
                keys,
                fetched_at: Instant::now(),
                generation: slot.generation + 1,
            });
            true
        }
    }

    // ---- the ledger client ----

    /// Why a ledger call failed.
    #[derive(Debug)]
    enum LedgerError {
        /// Unreachable, timed out, 5xx, or an unreadable answer. The detail
        /// is for the log only.
        Unavailable(String),
        /// A 4xx with the ledger's error body.
        Rejected {
            status: u16,
            code: String,
            message: String,
            remaining: Option<u64>,
        },
    }

    impl LedgerError {
        fn is_unavailable(&self) -> bool {
            matches!(self, Self::Unavailable(_))
        }
    }

    #[derive(Clone)]
    struct Ledger {
        /// The base URL, without a trailing slash.
        base: String,
        client: reqwest::Client,
    }

    #[derive(Deserialize)]
    struct KeysBody {
        keys: Vec<KeyEntry>,
    }

    #[derive(Deserialize)]
    struct KeyEntry {
        kid: String,
        public_key: String,
        status: String,
    }

    impl Ledger {
        async fn keys(&self) -> Result<Keyset, KeysError> {
            let resp = self
                .client
                .get(format!("{}/v1/keys", self.base))
                .timeout(LEDGER_TIMEOUT)
                .send()
                .await
                .map_err(|e| KeysError::Unavailable(e.to_string()))?;
            let (status, body) = read_json(resp)
                .await
                .map_err(|e| KeysError::Unavailable(format!("{e:?}")))?;
            if status != 200 {
                return Err(KeysError::Unavailable(format!("status {status}")));
            }
            let body: KeysBody =
                serde_json::from_value(body).map_err(|_| KeysError::Invalid("unexpected JSON"))?;
            let mut keyset = Keyset::new();
            for k in body.keys {
                let key = PublicKey::from_text(&k.public_key)
                    .map_err(|_| KeysError::Invalid("a public key does not parse"))?;
                if key.kid().to_string() != k.kid {
                    return Err(KeysError::Invalid("a kid does not match its key"));
                }
                let status = match k.status.as_str() {
                    "active" => KeyStatus::Active,
                    "retired" => KeyStatus::Retired,
                    // A status this gateway does not know earns no trust.
                    _ => continue,
                };
                keyset.insert(key, status);
            }
            if keyset.iter().next().is_none() {
                return Err(KeysError::Invalid("no keys"));
            }
            Ok(keyset)
        }

        /// Sends `body` as `bearer`; returns the 2xx body.
        async fn post(&self, path: &str, bearer: &str, body: &Value) -> Result<Value, LedgerError> {
            let resp = self
                .client
                .post(format!("{}{path}", self.base))
                .bearer_auth(bearer)
                .json(body)
                .timeout(LEDGER_TIMEOUT)
                .send()
                .await
                .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
            let (status, body) = read_json(resp).await?;
            match status {
                200..=299 => Ok(body),
                400..=499 => {
                    let e = &body["error"];
                    Err(LedgerError::Rejected {
                        status,
                        code: e["code"].as_str().unwrap_or("ledger_rejected").to_owned(),
                        message: e["message"]
                            .as_str()
                            .unwrap_or("the ledger refused the request")
                            .to_owned(),
                        remaining: e["remaining"].as_u64(),
                    })
                }
                _ => Err(LedgerError::Unavailable(format!("status {status}"))),
            }
        }

        /// Holds the call's estimated cost; returns the reservation id.
        async fn reserve(&self, call: &Call) -> Result<String, LedgerError> {
            let mut body = json!({
                "action": call.action,
                "args": call.body.args,
                "unit": call.unit.as_str(),
                "amount": call.body.estimated_cost,
                "idempotency_key": call.idempotency_key("reserve"),
                "ttl_ms": HOLD_TTL.as_millis() as u64,
            });
            if let Some(r) = &call.body.resource {
                body["resource"] = json!(r);
            }
            let v = self.post("/v1/reservations", &call.bearer, &body).await?;
            // The id goes into later URLs: accept only what the ledger makes.
            v["reservation"]["id"]
                .as_str()
                .filter(|id| {
                    !id.is_empty()
                        && id.len() <= 64
                        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                })
                .map(str::to_owned)
                .ok_or_else(|| LedgerError::Unavailable("reservation without a valid id".into()))
        }

        /// The state of reservation `id`: `active`, `committed`, `released`...
        async fn reservation_state(&self, call: &Call, id: &str) -> Result<String, LedgerError> {
            let resp = self
                .client
                .get(format!("{}/v1/reservations/{id}", self.base))
                .bearer_auth(&call.bearer)
                .timeout(LEDGER_TIMEOUT)
                .send()
                .await
                .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
            match read_json(resp).await? {
                (200, v) => v["reservation"]["state"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| LedgerError::Unavailable("reservation without a state".into())),
                (status, _) => Err(LedgerError::Unavailable(format!(
                    "reservation lookup: status {status}"
                ))),
            }
        }

        /// POSTs a commit or release, retrying while the ledger is unreachable.
        async fn finish(
            &self,
            call: &Call,
            id: &str,
            op: &str,
            body: Value,
        ) -> Result<(), LedgerError> {
            let path = format!("/v1/reservations/{id}/{op}");
            let mut delay = Duration::from_millis(100);
            let mut attempt = 1;
            loop {
                match self.post(&path, &call.bearer, &body).await {
                    Err(e) if e.is_unavailable() && attempt < FINISH_ATTEMPTS => {
                        tracing::warn!(request_id = %call.request_id, op, error = ?e, "retrying");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                        attempt += 1;
                    }
                    other => return other.map(drop),
                }
            }
        }

        async fn commit(
            &self,
            call: &Call,
            id: &str,
            actual: u64,
            key: &str,
        ) -> Result<(), LedgerError> {
            let body = json!({ "actual": actual, "idempotency_key": call.idempotency_key(key) });
            self.finish(call, id, "commit", body).await
        }

        async fn release(&self, call: &Call, id: &str) -> Result<(), LedgerError> {
            let body = json!({ "idempotency_key": call.idempotency_key("release") });
            self.finish(call, id, "release", body).await
        }
    }

    /// Reads a JSON body of at most [`MAX_LEDGER_BODY_BYTES`].
    async fn read_json(mut resp: reqwest::Response) -> Result<(u16, Value), LedgerError> {
        let status = resp.status().as_u16();
        let mut buf = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?
        {
            if buf.len() + chunk.len() > MAX_LEDGER_BODY_BYTES {
                return Err(LedgerError::Unavailable("response too large".into()));
            }
            buf.extend_from_slice(&chunk);
        }
        let body = serde_json::from_slice(&buf)
            .map_err(|_| LedgerError::Unavailable(format!("status {status}, body is not JSON")))?;
        Ok((status, body))
    }

    // ---- the tools ----

    /// One US dollar in `usd_microcents`.
    pub const USD: u64 = 100_000_000;
    /// What a CRM read costs.
    pub const CRM_READ_COST: u64 = USD / 100;
    /// The refund provider's fixed fee; it also takes 1% of the refund.
    pub const REFUND_FIXED_FEE: u64 = 30 * USD / 100;

    /// The actual cost of refunding `amount` (usd_microcents).
    pub fn refund_cost(amount: u64) -> u64 {
        REFUND_FIXED_FEE.saturating_add(amount / 100)
    }

    /// The fake tools, standing in for real APIs.
    #[derive(Debug, Clone, Copy)]
    enum Tool {
        /// Returns a canned customer record.
        CrmRead,
        /// "Issues" a refund; costs a fee plus a share of the amount.
        RefundIssue,
        /// Any `flaky.*` tool: always fails.
        Flaky,
    }

    /// What a tool run produced.
    struct ToolOutput {
        result: Value,
        /// The metered cost, in usd_microcents.
        cost: u64,
    }

    impl Tool {
        fn lookup(name: &str) -> Option<Self> {
            match name {
                "crm.read" => Some(Self::CrmRead),
                "refund.issue" => Some(Self::RefundIssue),
                n if n.starts_with("flaky.") => Some(Self::Flaky),
                _ => None,
            }
        }

        /// The tool's own input checks, made before any money is held.
        fn check(self, call: &ToolCall) -> Result<(), GatewayError> {
            let bad = |message: &str| GatewayError::BadRequest {
                code: "invalid_tool_input",
                message: message.into(),
            };
            let needs_resource = matches!(self, Self::CrmRead | Self::RefundIssue);
            if needs_resource && call.resource.is_none() {
                return Err(bad("this tool needs a resource (customer:ID)"));
            }
            let amount = call.args.get("amount").and_then(Value::as_u64);
            if matches!(self, Self::RefundIssue) && amount.is_none_or(|n| n == 0) {
                return Err(bad(
                    "refund.issue needs a positive integer amount (usd_microcents)",
                ));
            }
            Ok(())
        }

        /// Runs the tool. A real tool would take `request_id` as its own
        /// idempotency key, since a retried request runs the tool again.
        async fn run(self, request_id: &str, call: &ToolCall) -> Result<ToolOutput, &'static str> {
            let resource = call.resource.as_deref().unwrap_or_default();
            match self {
                Self::CrmRead => Ok(ToolOutput {
                    result: json!({ "id": resource, "name": "Ada Lovelace", "plan": "pro", "open_tickets": 1 }),
                    cost: CRM_READ_COST,
                }),
                Self::RefundIssue => {
                    let amount = call.args.get("amount").and_then(Value::as_u64).unwrap_or(0);
                    Ok(ToolOutput {
                        result: json!({ "refund_id": format!("rf_{request_id}"), "customer": resource, "amount": amount, "status": "issued" }),
                        cost: refund_cost(amount),
                    })
                }
                Self::Flaky => Err("upstream connection reset"),
            }
        }
    }

    // ---- the call ----

    /// The body of `POST /tools/{name}`.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ToolCall {
        /// The resource the tool touches, e.g. `customer:4821`.
        #[serde(default)]
        pub resource: Option<String>,
        /// Tool arguments: strings or integers; authorized against the
        /// token's argument bounds.
        #[serde(default)]
        pub args: BTreeMap<String, Value>,
        /// The most the caller expects the call to cost; held before the
        /// tool runs.
        pub estimated_cost: u64,
        /// The budget unit, e.g. `usd_microcents`.
        pub unit: String,
    }

    /// A call that passed every offline check, ready to be paid for and run.
    struct Call {
        action: String,
        tool: Tool,
        body: ToolCall,
        unit: Unit,
        bearer: String,
        request_id: String,
        /// The request id came from the client, so the reservation may be
        /// an idempotent replay of one that has already finished.
        replayable: bool,
    }

    impl Call {
        /// Idempotency keys derive from the request id, one per ledger step.
        fn idempotency_key(&self, step: &str) -> String {
            format!("gw:{}:{step}", self.request_id)
        }
    }

    fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, GatewayError> {
        let bad = |code, message: &str| GatewayError::BadRequest {
            code,
            message: message.into(),
        };
        match body {
            Ok(Json(v)) => Ok(v),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(bad("body_too_large", "request body exceeds the limit"))
            }
            Err(JsonRejection::MissingJsonContentType(_)) => Err(bad(
                "unsupported_media_type",
                "expected Content-Type: application/json",
            )),
            Err(JsonRejection::JsonDataError(e)) => Err(bad("invalid_request", &e.body_text())),
            Err(_) => Err(bad("invalid_json", "request body is not valid JSON")),
        }
    }

    /// The authorization request for a call, at the gateway's clock.
    fn authz_request(action: &str, call: &ToolCall) -> Result<baton::Request, GatewayError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let deny = |e: baton::Denied| GatewayError::Denied {
            code: e.code(),
            message: e.to_string(),
        };
        let mut req = baton::Request::new(action, now).map_err(deny)?;
        if let Some(r) = &call.resource {
            req = req.resource(r).map_err(deny)?;
        }
        for (name, v) in &call.args {
            let value = match v {
                Value::String(s) => Some(ArgValue::Str(s.clone())),
                Value::Number(n) => n.as_i64().map(ArgValue::Int),
                _ => None,
            }
            .ok_or_else(|| GatewayError::BadRequest {
                code: "invalid_request",
                message: format!("argument {name} is not a string or a 64-bit integer"),
            })?;
            req = req.arg(name, value).map_err(deny)?;
        }
        Ok(req)
    }

    /// `POST /tools/{name}`: every offline check, then [`execute`].
    async fn call_tool(
        State(state): State<AppState>,
        Extension(request_id): Extension<RequestId>,
        Path(action): Path<String>,
        caller: Caller,
        body: Result<Json<ToolCall>, JsonRejection>,
    ) -> Result<Response, GatewayError> {
        let body = json_body(body)?;
        // Authorization comes before the catalog, so that a caller learns
        // nothing about tools its token does not reach.
        let request = authz_request(&action, &body)?;
        let auth = state
            .keys
            .current()
            .verifier
            .authorize(&caller.token, &request)?;
        let tool = Tool::lookup(&action).ok_or(GatewayError::UnknownTool)?;
        let unit = Unit::parse(&body.unit).map_err(|m| GatewayError::BadRequest {
            code: "invalid_unit",
            message: m.into(),
        })?;
        if body.estimated_cost == 0 || body.estimated_cost > baton::ledger::MAX_AMOUNT {
            return Err(GatewayError::BadRequest {
                code: "invalid_amount",
                message: "estimated_cost must be an integer from 1 to 2^63-1".into(),
            });
        }
        tool.check(&body)?;
        // The ledger would say the same, but saying it here spares a round trip.
        if !auth.budgets.iter().any(|b| b.unit == unit) {
            return Err(GatewayError::Denied {
                code: "no_budget",
                message: format!("the token has no budget in {}", unit.as_str()),
            });
        }
        let call = Call {
            action,
            tool,
            body,
            unit,
            bearer: caller.bearer,
            request_id: request_id.id,
            replayable: request_id.from_client,
        };
        // Once money is held, the call must reach a commit or a release even
        // if the client hangs up or the request times out: hyper drops the
        // handler's future then, but not a spawned task.
        tokio::spawn(execute(state.ledger, call))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "tool call task failed");
                Err(GatewayError::Internal)
            })
    }

    /// Holds the estimate, runs the tool, then charges or releases.
    async fn execute(ledger: Ledger, call: Call) -> Result<Response, GatewayError> {
        let id = ledger.reserve(&call).await?;
        // A replayed reservation looks new. If its call already finished
        // (committed, released), running the tool again would go unpaid.
        if call.replayable {
            let state = ledger.reservation_state(&call, &id).await?;
            if state != "active" {
                return Err(GatewayError::RequestIdReused { state });
            }
        }
        let failure = match tokio::time::timeout(
            TOOL_TIMEOUT,
            call.tool.run(&call.request_id, &call.body),
        )
        .await
        {
            Ok(Ok(output)) => return Ok(charge(&ledger, &call, &id, output).await),
            Ok(Err(why)) => {
                tracing::warn!(request_id = %call.request_id, tool = %call.action, why, "tool failed");
                GatewayError::ToolFailed
            }
            Err(_) => GatewayError::ToolTimeout,
        };
        if let Err(e) = ledger.release(&call, &id).await {
            // Nothing more to do: the hold expires on its own after HOLD_TTL.
            tracing::error!(request_id = %call.request_id, reservation = %id, error = ?e, "release failed");
        }
        Err(failure)
    }

    /// Charges a successful run and builds its response.
    async fn charge(ledger: &Ledger, call: &Call, id: &str, output: ToolOutput) -> Response {
        let actual = actual_cost(call, output.cost);
        let charged = commit(ledger, call, id, actual).await;
        tracing::info!(request_id = %call.request_id, tool = %call.action, reservation = %id, actual, charged, "tool call done");
        Json(json!({
            "request_id": call.request_id,
            "tool": call.action,
            "result": output.result,
            "cost": {
                "unit": call.unit.as_str(),
                "estimated": call.body.estimated_cost,
                "actual": actual,
                "charged": charged,
                "reservation_id": id,
            },
        }))
        .into_response()
    }

    /// The tools meter in usd_microcents; in any other unit the gateway
    /// cannot measure, so the caller's estimate is the price.
    fn actual_cost(call: &Call, metered_usd: u64) -> u64 {
        if call.unit == Unit::UsdMicrocents {
            metered_usd
        } else {
            call.body.estimated_cost
        }
    }

    /// Commits the actual cost and returns what was charged.
    ///
    /// The tool has already run, so its result goes back to the client
    /// whatever happens here: failing the call now would invite a retry that
    /// runs the tool again. If the actual cost overran the hold and the
    /// budget cannot cover the difference, the hold itself is charged, as
    /// that is what the caller agreed to. If the ledger cannot be reached,
    /// nothing is charged (`None`) and the hold expires; that is logged as
    /// an error for the operator.
    async fn commit(ledger: &Ledger, call: &Call, id: &str, actual: u64) -> Option<u64> {
        match ledger.commit(call, id, actual, "commit").await {
            Ok(()) => return Some(actual),
            Err(LedgerError::Rejected { code, .. })
                if code == "insufficient_budget" && actual > call.body.estimated_cost =>
            {
                tracing::warn!(request_id = %call.request_id, actual, "cost overran the hold and the budget; charging the hold");
            }
            Err(e) => {
                tracing::error!(request_id = %call.request_id, reservation = %id, error = ?e, "commit failed; the call goes uncharged");
                return None;
            }
        }
        let capped = call.body.estimated_cost;
        match ledger.commit(call, id, capped, "commit-capped").await {
            Ok(()) => Some(capped),
            Err(e) => {
                tracing::error!(request_id = %call.request_id, reservation = %id, error = ?e, "commit failed; the call goes uncharged");
                None
            }
        }
    }
}
