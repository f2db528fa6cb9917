//! `baton serve`: the spend ledger, key distribution and revocation over
//! HTTP (spec/http.md).
//!
//! Data flows one way: the HTTP layer (`http`) turns requests into typed
//! ledger commands and typed outcomes into responses; the [`writer`]
//! batches commands and makes them durable; the ledger
//! ([`crate::ledger`]) decides; the store ([`crate::store`]) persists.
//!
//! # Layout
//! * [`writer`]: the single ledger writer with group commit.
//! * `http`: the axum handlers, one module per resource, and the one place
//!   outcomes become statuses and JSON; `admin`: the administrative
//!   handlers that change the service itself (live key rotation).
//! * `conn`: the accept loop and per-connection limits ([`ConnLimits`]).
//! * `state`: what the handlers share.
//! * this module: router, limits, start-up (the data directory and its
//!   one-owner lock, or a shared PostgreSQL store; keys, the first admin
//!   token) and graceful shutdown.

mod conn;
mod http;
pub mod run;
mod state;
pub mod writer;

use std::fs::File;
use std::future::Future;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tower::ServiceBuilder;

pub use conn::ConnLimits;
pub use http::ADMIN_PREFIX;
use http::render::error_reply;
pub use state::AppState;
use state::Metrics;
use writer::{Clock, Polled, SystemClock, WriterConfig};

use crate::caveat::Caveat;
use crate::keys::{KeyStatus, Keyset, RootKey};
use crate::proof::Audience;
use crate::store::postgres::{PgOptions, PgStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError, StoredKey, StoredKeyStatus};
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
    /// Another process owns the data directory: it holds the exclusive
    /// lock on `DATA/LOCK` (a running `baton serve`, or an offline
    /// `baton keys rotate`). Two owners would each grant spends from the
    /// same budgets, so the second one refuses to start. `pid` is what the
    /// holder wrote in the file, if it could be read.
    #[error("data directory {path} is in use by another baton process ({}); only one process may own it", holder(*.pid))]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// The process id the holder wrote in `DATA/LOCK`.
        pid: Option<u32>,
    },
}

fn holder(pid: Option<u32>) -> String {
    pid.map_or_else(|| "pid unknown".to_owned(), |p| format!("pid {p}"))
}

/// The ledger's audience for proofs of possession unless `--audience` says otherwise.
pub const DEFAULT_AUDIENCE: &str = "baton-ledger";

/// A started ledger: the state for the router and the writer thread.
pub struct Service {
    /// The handlers' state.
    pub state: AppState,
    writers: Vec<std::thread::JoinHandle<()>>,
    /// The exclusive lock on `DATA/LOCK` when started by [`open`]; held
    /// until the writer has stopped, released by the OS on any exit.
    lock: Option<File>,
}

impl Service {
    /// Starts the writer over `store`, trusting every key it holds. Used by
    /// [`open`] and by tests (with an in-memory store and a manual clock).
    pub fn start(
        mut store: Box<dyn Store>,
        clock: Arc<dyn Clock>,
        config: WriterConfig,
    ) -> Result<Self, StartError> {
        let (mut keyset, signer) = parse_keys(&store.keys()?)?;
        let signer = match signer {
            Some(s) => s,
            None => {
                let key = RootKey::generate().map_err(|e| StartError::BadKey(e.to_string()))?;
                // Servers starting together on one shared store: the first
                // adds its key, the others load that one.
                if store.bootstrap_key(StoredKey::active(&key, clock.now_ms()))? {
                    keyset.insert(key.public(), KeyStatus::Active);
                    key
                } else {
                    let (ks, active) = parse_keys(&store.keys()?)?;
                    keyset = ks;
                    active.ok_or_else(|| StartError::BadKey("no active root key".into()))?
                }
            }
        };
        let (ledger, writers, revoked) = writer::start(store, clock, config)?;
        let (ledger_batches, ledger_retries) = (ledger.batches.clone(), ledger.retries.clone());
        // 10k tokens of at most 8 KiB bound the cache to about 80 MiB.
        let mut verifier = Verifier::new(keyset)
            .with_cache(10_000)
            .with_audience(Audience::new(DEFAULT_AUDIENCE).expect("the default audience is valid"));
        verifier.set_revoked(revoked);
        let state = AppState {
            ledger,
            verifier: Arc::new(RwLock::new(verifier)),
            signer: Arc::new(RwLock::new(signer)),
            metrics: Arc::new(Metrics::new(ledger_batches, ledger_retries)),
            rotation: Arc::new(tokio::sync::Mutex::new(())),
        };
        Ok(Self {
            state,
            writers,
            lock: None,
        })
    }

    /// Sets the identity that holders' proofs must name (`--audience`).
    pub fn set_audience(&self, audience: Audience) {
        let mut verifier = self
            .state
            .verifier
            .write()
            .unwrap_or_else(|p| p.into_inner());
        verifier.set_audience(audience);
    }

    /// Releases expired holds now, as the once-a-second sweeper does (and
    /// on a shared store learns other servers' keys and revocations).
    pub async fn sweep_now(&self) {
        if let Some(polled) = self.state.ledger.tick().await {
            learn(&self.state, polled);
        }
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
        let sweeper = tokio::spawn(sweep(self.state.clone()));
        let app = self.router();
        let result = conn::serve(listener, app, limits, shutdown).await;
        sweeper.abort();
        let _ = sweeper.await;
        // Every handle to the writer is gone once the router and the sweeper
        // are: it answers what is queued, then its loop ends.
        drop(self.state);
        let writers = self.writers;
        let _ = tokio::task::spawn_blocking(move || {
            for w in writers {
                let _ = w.join();
            }
        })
        .await;
        // Only now, with the store closed, may another process own the
        // directory.
        drop(self.lock);
        result
    }
}

/// The keyset of stored keys, and the active key if there is one.
fn parse_keys(stored: &[StoredKey]) -> Result<(Keyset, Option<RootKey>), StartError> {
    let mut keyset = Keyset::new();
    let mut signer = None;
    for k in stored {
        let key = RootKey::from_text(&k.secret).map_err(|_| StartError::BadKey(k.kid.clone()))?;
        let status = match k.status {
            StoredKeyStatus::Active => KeyStatus::Active,
            _ => KeyStatus::Retired,
        };
        keyset.insert(key.public(), status);
        if status == KeyStatus::Active {
            signer = Some(key);
        }
    }
    Ok((keyset, signer))
}

/// How often the sweeper runs: expiry, and on a shared store the poll of
/// keys and revocations other servers made (the bound in spec/http.md §4.8).
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(1000);

/// Releases expired holds, once a second, through the writer like any
/// change; on a shared store, learns what other servers changed.
async fn sweep(state: AppState) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        if let Some(polled) = state.ledger.tick().await {
            learn(&state, polled);
        }
    }
}

/// Applies what a tick polled from a shared store: revocations to the
/// offline verifier; root keys, if they changed, to the verifier and the
/// signer (a rotation through another server).
fn learn(state: &AppState, polled: Polled) {
    if !polled.revoked.is_empty() {
        let mut v = state.verifier.write().unwrap_or_else(|p| p.into_inner());
        for b in polled.revoked {
            v.revoke(b);
        }
    }
    let Some(stored) = polled.keys else {
        return;
    };
    let (keyset, active) = match parse_keys(&stored) {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "stored root keys do not parse; keeping the current ones");
            return;
        }
    };
    let Some(active) = active else {
        return;
    };
    let same = {
        let v = state.verifier.read().unwrap_or_else(|p| p.into_inner());
        let mut now: Vec<_> = v.keyset().iter().map(|(k, s)| (k.kid(), s)).collect();
        let mut then: Vec<_> = keyset.iter().map(|(k, s)| (k.kid(), s)).collect();
        now.sort_by_key(|(k, _)| k.to_string());
        then.sort_by_key(|(k, _)| k.to_string());
        now == then
    };
    if same {
        return;
    }
    // The verifier first, so every token the new signer mints verifies.
    {
        let mut v = state.verifier.write().unwrap_or_else(|p| p.into_inner());
        for (k, s) in keyset.iter() {
            v.keyset_mut().insert(*k, s);
        }
    }
    tracing::info!(kid = %active.kid(), "learned a root key rotated through another server");
    *state.signer.write().unwrap_or_else(|p| p.into_inner()) = active;
}

/// The router with its limits: body size, concurrency (shed beyond it),
/// and a per-request timeout.
pub fn router(state: AppState) -> Router {
    let limits = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|err: tower::BoxError| async move {
            if err.is::<tower::timeout::error::Elapsed>() {
                error_reply(408, "timeout", "request took too long", None).into_response()
            } else {
                error_reply(503, "overloaded", "server is overloaded; retry later", None)
                    .into_response()
            }
        }))
        .load_shed()
        .concurrency_limit(MAX_CONCURRENCY)
        .timeout(REQUEST_TIMEOUT);
    Router::new()
        .route("/v1/keys", get(http::keys::keys))
        .route("/v1/keys/rotate", post(http::admin::rotate))
        .route("/v1/tokens", post(http::tokens::mint))
        .route("/v1/authorize", post(http::tokens::authorize_handler))
        .route("/v1/reservations", post(http::reservations::reserve))
        .route(
            "/v1/reservations/{id}",
            get(http::reservations::get_reservation),
        )
        .route(
            "/v1/reservations/{id}/commit",
            post(http::reservations::commit),
        )
        .route(
            "/v1/reservations/{id}/release",
            post(http::reservations::release),
        )
        .route(
            "/v1/reservations/{id}/extend",
            post(http::reservations::extend),
        )
        .route("/v1/spend", post(http::reservations::spend))
        .route(
            "/v1/allocations",
            post(http::allocations::allocate).get(http::allocations::list_allocations),
        )
        .route(
            "/v1/allocations/{id}",
            get(http::allocations::get_allocation),
        )
        .route(
            "/v1/allocations/{id}/release",
            post(http::allocations::release_allocation),
        )
        .route("/v1/balances", get(http::balances::balances))
        .route(
            "/v1/revocations",
            post(http::revocations::revoke).get(http::revocations::revocation_feed),
        )
        .route("/healthz", get(http::health::healthz))
        .route("/readyz", get(http::health::readyz))
        .route("/metrics", get(http::health::metrics))
        .fallback(http::health::not_found)
        .method_not_allowed_fallback(http::health::method_not_allowed)
        .layer(axum::middleware::from_fn(http::proof_context))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(limits)
        .with_state(state)
}

/// The lock file of a data directory (spec/http.md §4.6).
pub const LOCK_FILE: &str = "LOCK";

/// Takes the exclusive OS lock on `DATA/LOCK` (created mode 0600), which
/// makes this process the directory's one owner, and writes our pid in it
/// for whoever finds the lock taken. The OS drops the lock when the file is
/// closed or the process exits, however it exits: a `LOCK` file left by a
/// crash is harmless, the lock and not the file decides.
fn lock_data_dir(data_dir: &Path) -> Result<File, StartError> {
    let path = data_dir.join(LOCK_FILE);
    let io = |source| StartError::Io {
        path: path.clone(),
        source,
    };
    // Not truncated on open: until we hold the lock, the pid in it is the
    // holder's.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            // The holder may not have written its pid yet: then unknown.
            let mut text = String::new();
            let pid = (&file)
                .take(32)
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse::<u32>().ok());
            return Err(StartError::Locked {
                path: data_dir.to_owned(),
                pid,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(file)
}

/// Opens `DATA/ledger.db`, creating it mode 0600 first: it holds the root
/// secret keys (SQLite's -wal and -shm files copy the database's mode).
fn open_store(data_dir: &Path) -> Result<SqliteStore, StartError> {
    let db = data_dir.join("ledger.db");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&db)
        .map_err(|source| StartError::Io {
            path: db.clone(),
            source,
        })?;
    Ok(SqliteStore::open(&db)?)
}

/// Opens the data directory (creating it 0700), takes its one-owner lock
/// (`DATA/LOCK`; [`StartError::Locked`] if another process holds it), the
/// SQLite store in it and, on first start, a root key and an admin token written to `admin.token`
/// (mode 0600; never logged). Returns the service and, on first start, the
/// admin token's path.
pub fn open(
    data_dir: &Path,
    config: WriterConfig,
) -> Result<(Service, Option<PathBuf>), StartError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StartError::Io { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(io(data_dir))?;
    // Before anything else: a second owner would grant from the same budgets.
    let lock = lock_data_dir(data_dir)?;
    let store = open_store(data_dir)?;
    let mut service = Service::start(Box::new(store), Arc::new(SystemClock), config)?;
    service.lock = Some(lock);
    // Write an admin token whenever there is none: on first start, and after
    // a crash between creating the key and writing the file. Whoever can
    // delete the file can read the key store beside it, so this grants
    // nothing new.
    let written = write_admin_token(data_dir, &service, "admin.token.tmp")?;
    Ok((service, written))
}

/// Writes `DATA/admin.token` (mode 0600, through a temporary file and a
/// rename) unless it exists; returns its path when written.
/// `tmp` is the temporary file's name in `data_dir`.
fn write_admin_token(
    data_dir: &Path,
    service: &Service,
    tmp: &str,
) -> Result<Option<PathBuf>, StartError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StartError::Io { path, source }
    };
    let path = data_dir.join("admin.token");
    if path.exists() {
        return Ok(None);
    }
    let admin = service
        .mint_admin_token()
        .map_err(|e| StartError::BadKey(e.to_string()))?;
    // Write a temporary file and rename it, so the token file is never
    // seen half-written.
    let tmp = data_dir.join(tmp);
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
    Ok(Some(path))
}

/// Starts on a PostgreSQL store several servers share (spec/http.md §4.8):
/// connects, migrates (one server at a time), loads or creates the root key
/// (one server creates it, the others load it). No data-directory lock:
/// several processes are the point. `data_dir` is used only for the admin
/// token file, written (mode 0600) when it is missing, as in [`open`]; any
/// server can mint one from the shared key. Returns the service and, when
/// written, the admin token's path.
pub fn open_postgres(
    data_dir: &Path,
    pg: &PgOptions,
    config: WriterConfig,
) -> Result<(Service, Option<PathBuf>), StartError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|source| StartError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
    let store = PgStore::connect(pg)?;
    let service = Service::start(Box::new(store), Arc::new(SystemClock), config)?;
    // Servers sharing a data directory (no lock in this mode) each write
    // their own temporary file; the renames are atomic.
    let tmp = format!("admin.token.{}.tmp", std::process::id());
    let written = write_admin_token(data_dir, &service, &tmp)?;
    Ok((service, written))
}

/// `baton keys rotate --data`: adds a new active root key to the store in
/// `data_dir` and retires the others, which keep verifying outstanding
/// tokens. Takes the directory's lock first, so it refuses
/// ([`StartError::Locked`]) while a server owns the directory: rotate a
/// running server through `POST /v1/keys/rotate` instead.
pub fn rotate_key(data_dir: &Path) -> Result<String, StartError> {
    let _lock = lock_data_dir(data_dir)?;
    let mut store = open_store(data_dir)?;
    let key = RootKey::generate().map_err(|e| StartError::BadKey(e.to_string()))?;
    store.rotate_key(StoredKey::active(&key, SystemClock.now_ms()))?;
    Ok(key.kid().to_string())
}
