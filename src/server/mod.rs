//! `baton serve`: the spend ledger, key distribution and revocation over
//! HTTP (spec/http.md).
//!
//! # Layout
//! * [`writer`]: the single ledger writer with group commit.
//! * `api`: the axum handlers, their JSON and their error mapping.
//! * `conn`: the accept loop and per-connection limits ([`ConnLimits`]).
//! * this module: state, router, limits, start-up (data directory, keys,
//!   the first admin token) and graceful shutdown.

mod api;
mod conn;
pub mod run;
pub mod writer;

use std::future::Future;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tower::ServiceBuilder;

pub use api::ADMIN_PREFIX;
pub use conn::ConnLimits;
use writer::{Clock, LedgerHandle, Op, SystemClock, WriterConfig};

use crate::caveat::Caveat;
use crate::keys::{KeyStatus, Keyset, RootKey};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError, StoredKey};
use crate::token::Token;
use crate::verifier::Verifier;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most requests handled at once; more are shed with 503.
pub const MAX_CONCURRENCY: usize = 4096;
/// Longest a request may take before it is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request target (path and query) accepted, in bytes; longer is 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest header section accepted, in bytes (names, values, separators);
/// larger is 431. Room for the largest token (about 11 KiB of text) twice.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most header fields accepted in one request; more is 431.
pub const MAX_HEADERS: usize = 64;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory or a file in it could not be created or read.
    #[error("data directory {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored root key does not parse.
    #[error("stored root key {0} is invalid")]
    BadKey(String),
}

/// Prometheus metrics, in the OpenMetrics text format.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<Vec<(String, String)>, Counter>,
    ready: Gauge,
}

impl Metrics {
    fn new(batches: Counter) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "baton_ledger_requests",
            "Ledger requests by operation and HTTP status",
            requests.clone(),
        );
        registry.register(
            "baton_ledger_batches",
            "Durable write transactions (group commits)",
            batches,
        );
        let ready = Gauge::default();
        registry.register(
            "baton_ready",
            "Whether the store is available (1) or not (0)",
            ready.clone(),
        );
        Self {
            registry,
            requests,
            ready,
        }
    }

    pub(crate) fn count(&self, op: &str, status: u16) {
        self.requests
            .get_or_create(&vec![
                ("op".into(), op.into()),
                ("status".into(), status.to_string()),
            ])
            .inc();
    }

    pub(crate) fn render(&self, ready: bool) -> String {
        self.ready.set(i64::from(ready));
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub(crate) ledger: LedgerHandle,
    pub(crate) verifier: Arc<RwLock<Verifier>>,
    pub(crate) signer: Arc<RwLock<RootKey>>,
    pub(crate) metrics: Arc<Metrics>,
}

/// A started ledger: the state for the router and the writer thread.
pub struct Service {
    /// The handlers' state.
    pub state: AppState,
    writer: std::thread::JoinHandle<()>,
}

impl Service {
    /// Starts the writer over `store`, trusting every key it holds. Used by
    /// [`open`] and by tests (with an in-memory store and a manual clock).
    pub fn start(
        mut store: Box<dyn Store>,
        clock: Arc<dyn Clock>,
        config: WriterConfig,
    ) -> Result<Self, StartError> {
        let stored = store.keys()?;
        let mut keyset = Keyset::new();
        let mut signer = None;
        for k in &stored {
            let key =
                RootKey::from_text(&k.secret).map_err(|_| StartError::BadKey(k.kid.clone()))?;
            let status = if k.status == "active" {
                KeyStatus::Active
            } else {
                KeyStatus::Retired
            };
            keyset.insert(key.public(), status);
            if status == KeyStatus::Active {
                signer = Some(key);
            }
        }
        let signer = match signer {
            Some(s) => s,
            None => {
                let key = RootKey::generate().map_err(|e| StartError::BadKey(e.to_string()))?;
                store.rotate_key(stored_key(&key, clock.now_ms()))?;
                keyset.insert(key.public(), KeyStatus::Active);
                key
            }
        };
        let (ledger, writer, revoked) = writer::start(store, clock, config)?;
        let ledger_batches = ledger.batches.clone();
        // 10k tokens of at most 8 KiB bound the cache to about 80 MiB.
        let mut verifier = Verifier::new(keyset).with_cache(10_000);
        verifier.set_revoked(revoked);
        let state = AppState {
            ledger,
            verifier: Arc::new(RwLock::new(verifier)),
            signer: Arc::new(RwLock::new(signer)),
            metrics: Arc::new(Metrics::new(ledger_batches)),
        };
        Ok(Self { state, writer })
    }

    /// Releases expired holds now, as the once-a-second sweeper does.
    pub async fn sweep_now(&self) {
        let _ = self.state.ledger.submit(Op::Expire, None).await;
    }

    /// Mints a root token with this service's active key: for tests and
    /// for the first admin token.
    pub fn mint(&self, caveats: Vec<Caveat>) -> Result<Token, crate::error::AttenuateError> {
        let signer = self.state.signer.read().unwrap_or_else(|p| p.into_inner());
        Token::mint(&signer, caveats)
    }

    /// Mints an admin token: all of the reserved `baton.admin.*` namespace.
    pub fn mint_admin_token(&self) -> Result<Token, crate::error::AttenuateError> {
        let signer = self.state.signer.read().unwrap_or_else(|p| p.into_inner());
        Token::mint(
            &signer,
            vec![
                Caveat::tools(["baton.admin.*"]).expect("valid literal pattern"),
                Caveat::Label("admin".into()),
            ],
        )
    }

    /// The router over this service.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves on `listener` with the default [`ConnLimits`] until
    /// `shutdown` completes, then drains in-flight requests, lets the writer
    /// finish its last group and stops.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.serve_with(listener, ConnLimits::default(), shutdown)
            .await
    }

    /// [`Service::serve`] with these connection limits.
    pub async fn serve_with(
        self,
        listener: tokio::net::TcpListener,
        limits: ConnLimits,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let sweeper = tokio::spawn(sweep(self.state.ledger.clone()));
        let app = self.router();
        let result = conn::serve(listener, app, limits, shutdown).await;
        sweeper.abort();
        let _ = sweeper.await;
        // Every handle to the writer is gone once the router and the sweeper
        // are: it answers what is queued, then its loop ends.
        drop(self.state);
        let writer = self.writer;
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        result
    }
}

fn stored_key(key: &RootKey, now_ms: u64) -> StoredKey {
    StoredKey {
        kid: key.kid().to_string(),
        secret: key.to_text().to_string(),
        status: "active".into(),
        created_at: now_ms,
    }
}

/// Releases expired holds, once a second, through the writer like any change.
async fn sweep(ledger: LedgerHandle) {
    let mut tick = tokio::time::interval(Duration::from_millis(1000));
    loop {
        tick.tick().await;
        let _ = ledger.submit(Op::Expire, None).await;
    }
}

/// The router with its limits: body size, concurrency (shed beyond it),
/// and a per-request timeout.
pub fn router(state: AppState) -> Router {
    let limits = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|err: tower::BoxError| async move {
            if err.is::<tower::timeout::error::Elapsed>() {
                api::reply(writer::error_reply(
                    408,
                    "timeout",
                    "request took too long",
                    None,
                ))
            } else {
                api::reply(writer::error_reply(
                    503,
                    "overloaded",
                    "server is overloaded; retry later",
                    None,
                ))
            }
        }))
        .load_shed()
        .concurrency_limit(MAX_CONCURRENCY)
        .timeout(REQUEST_TIMEOUT);
    Router::new()
        .route("/v1/keys", get(api::keys))
        .route("/v1/tokens", post(api::mint))
        .route("/v1/authorize", post(api::authorize_handler))
        .route("/v1/reservations", post(api::reserve))
        .route("/v1/reservations/{id}", get(api::get_reservation))
        .route("/v1/reservations/{id}/commit", post(api::commit))
        .route("/v1/reservations/{id}/release", post(api::release))
        .route("/v1/reservations/{id}/extend", post(api::extend))
        .route("/v1/spend", post(api::spend))
        .route("/v1/balances", get(api::balances))
        .route(
            "/v1/revocations",
            post(api::revoke).get(api::revocation_feed),
        )
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .fallback(|| async { api::not_found().await.into_response() })
        .method_not_allowed_fallback(|| async {
            api::reply(writer::error_reply(
                405,
                "method_not_allowed",
                "this endpoint does not take this method",
                None,
            ))
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(limits)
        .with_state(state)
}

/// Opens the data directory (creating it 0700), the SQLite store in it and,
/// on first start, a root key and an admin token written to `admin.token`
/// (mode 0600; never logged). Returns the service and, on first start, the
/// admin token's path.
pub fn open(data_dir: &Path) -> Result<(Service, Option<PathBuf>), StartError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StartError::Io { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(io(data_dir))?;
    let db = data_dir.join("ledger.db");
    // The database holds the root secret keys: create it 0600 before SQLite
    // does (its -wal and -shm files copy the database's mode).
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&db)
        .map_err(io(&db))?;
    let store = SqliteStore::open(&db)?;
    let service = Service::start(
        Box::new(store),
        Arc::new(SystemClock),
        WriterConfig::default(),
    )?;
    // Write an admin token whenever there is none: on first start, and after
    // a crash between creating the key and writing the file. Whoever can
    // delete the file can read the key store beside it, so this grants
    // nothing new.
    let path = data_dir.join("admin.token");
    if path.exists() {
        return Ok((service, None));
    }
    let admin = service
        .mint_admin_token()
        .map_err(|e| StartError::BadKey(e.to_string()))?;
    // Write a temporary file and rename it, so the token file is never
    // seen half-written.
    let tmp = data_dir.join("admin.token.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(format!("{}\n", admin.to_text()).as_bytes())
        .map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok((service, Some(path)))
}

/// `baton keys rotate`: adds a new active root key to the store in
/// `data_dir` and retires the others, which keep verifying outstanding
/// tokens. A running server picks the new key up when restarted.
pub fn rotate_key(data_dir: &Path) -> Result<String, StartError> {
    let mut store = SqliteStore::open(&data_dir.join("ledger.db"))?;
    let key = RootKey::generate().map_err(|e| StartError::BadKey(e.to_string()))?;
    store.rotate_key(stored_key(&key, SystemClock.now_ms()))?;
    Ok(key.kid().to_string())
}
