//! The ledger's single writer: group commit with no added delay.
//!
//! Handlers verify tokens in parallel, then queue ledger operations here.
//! One thread drains whatever is queued, applies it to the in-memory
//! [`Ledger`] under its lock, writes all the resulting rows in one durable
//! transaction, and only then answers every request in the group. If the
//! write fails, the group is undone in memory and everyone gets 503: a 2xx
//! always means "on disk".
//!
//! Readers take the same lock, so they never see a change before it is
//! durable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Mutex;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::keys::BlockId;
use crate::ledger::{IdemKey, IdemRecord, Ledger, LedgerError, Reservation, ReserveRequest};
use crate::store::Store;

/// Milliseconds since the Unix epoch, from the server's clock only.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now_ms(&self) -> u64;
}

/// The system clock.
pub struct SystemClock;
impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told: for tests of expiry without sleeping.
#[derive(Default)]
pub struct ManualClock(AtomicU64);
impl ManualClock {
    /// A clock at `ms`.
    pub fn new(ms: u64) -> Self {
        Self(AtomicU64::new(ms))
    }
    /// Moves the clock forward.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}
impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// One ledger operation, its token already verified and authorized.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Reserve; with `actual`, commit at once (spend).
    Reserve {
        req: ReserveRequest,
        ttl_ms: u64,
        actual: Option<u64>,
    },
    Commit {
        chain: Vec<BlockId>,
        id: String,
        actual: u64,
    },
    Release {
        chain: Vec<BlockId>,
        id: String,
    },
    Extend {
        chain: Vec<BlockId>,
        id: String,
        ttl_ms: u64,
    },
    Revoke {
        tree: BlockId,
        block: BlockId,
    },
    /// The sweeper's tick.
    Expire,
    /// Store a new active root key, retiring the others, in its own
    /// transaction (`POST /v1/keys/rotate`). Answered `200` once durable.
    RotateKey(crate::store::StoredKey),
}

/// An answer: HTTP status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: String,
}

struct Job {
    op: Op,
    idem: Option<(IdemKey, [u8; 32])>,
    reply: oneshot::Sender<Option<Reply>>,
}

/// Tunables of the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// How long past its expiry a hold still accepts commit, release and extend.
    pub grace_ms: u64,
    /// The most requests in one transaction.
    pub max_batch: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            grace_ms: 2_000,
            max_batch: 1024,
        }
    }
}

/// The handle handlers use to reach the writer.
#[derive(Clone)]
pub(crate) struct LedgerHandle {
    tx: mpsc::Sender<Job>,
    pub(crate) ledger: Arc<Mutex<Ledger>>,
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) batches: prometheus_client::metrics::counter::Counter,
}

impl LedgerHandle {
    /// Queues `op` and waits for its durable answer. `None` means the store
    /// is unavailable (503).
    pub(crate) async fn submit(&self, op: Op, idem: Option<(IdemKey, [u8; 32])>) -> Option<Reply> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { op, idem, reply }).await.ok()?;
        rx.await.ok().flatten()
    }

    /// Locks the ledger for a read. The writer holds the lock while it makes
    /// a group durable, so a reader never sees a change before it is on
    /// disk; an async lock keeps that wait off the runtime's threads.
    pub(crate) async fn read(&self) -> tokio::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().await
    }
}

/// Starts the writer thread over `store`, whose rows seed the ledger.
pub(crate) fn start(
    mut store: Box<dyn Store>,
    clock: Arc<dyn Clock>,
    config: WriterConfig,
) -> Result<(LedgerHandle, std::thread::JoinHandle<()>, Vec<BlockId>), crate::store::StoreError> {
    let snap = store.load()?;
    let revoked: Vec<BlockId> = snap.revoked.iter().map(|(b, _)| *b).collect();
    let ledger = Arc::new(Mutex::new(Ledger::restore(
        snap.scopes,
        snap.reservations,
        snap.revoked,
        snap.idem,
    )));
    let (tx, rx) = mpsc::channel::<Job>(16 * 1024);
    let handle = LedgerHandle {
        tx,
        ledger: ledger.clone(),
        ready: Arc::new(AtomicBool::new(true)),
        clock: clock.clone(),
        batches: prometheus_client::metrics::counter::Counter::default(),
    };
    // The thread gets the shared parts but no sender: once every handle is
    // dropped the channel closes and the thread ends.
    let shared = Shared {
        ledger,
        ready: handle.ready.clone(),
        clock,
        batches: handle.batches.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("baton-ledger-writer".into())
        .spawn(move || run(rx, store, shared, config))
        .map_err(|e| crate::store::StoreError::Unavailable(e.to_string()))?;
    Ok((handle, thread, revoked))
}

struct Shared {
    ledger: Arc<Mutex<Ledger>>,
    ready: Arc<AtomicBool>,
    clock: Arc<dyn Clock>,
    batches: prometheus_client::metrics::counter::Counter,
}

fn run(
    mut rx: mpsc::Receiver<Job>,
    mut store: Box<dyn Store>,
    handle: Shared,
    config: WriterConfig,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(config.max_batch);
    // The loop ends when every sender is gone: the server has shut down and
    // drained, so every queued job has been answered.
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < config.max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Key rotations touch no ledger row: each is its own transaction,
        // answered before the group.
        if batch.iter().any(|j| matches!(j.op, Op::RotateKey(_))) {
            for job in std::mem::take(&mut batch) {
                match job.op {
                    Op::RotateKey(key) => {
                        let done = store.rotate_key(key).inspect_err(|e| {
                            tracing::error!(error = %e, "storing a rotated root key failed");
                        });
                        let ok = Reply {
                            status: 200,
                            body: "{}".into(),
                        };
                        let _ = job.reply.send(done.is_ok().then_some(ok));
                    }
                    _ => batch.push(job),
                }
            }
            if batch.is_empty() {
                continue;
            }
        }
        let mut ledger = handle.ledger.blocking_lock();
        let now = handle.clock.now_ms();
        let replies: Vec<Reply> = batch
            .iter()
            .map(|job| apply(&mut ledger, job, now, config.grace_ms))
            .collect();
        let durable = {
            let changes = ledger.coalesced_changes();
            // A group that changed nothing (a quiet sweeper tick) still
            // probes the store, so readiness tracks it in both directions.
            if changes.is_empty() {
                store.ping()
            } else {
                store.write(&changes)
            }
        };
        let ok = match durable {
            Ok(()) => {
                ledger.settle();
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "ledger write failed; group undone");
                ledger.rollback();
                false
            }
        };
        drop(ledger);
        handle.ready.store(ok, Ordering::SeqCst);
        handle.batches.inc();
        for (job, reply) in batch.drain(..).zip(replies) {
            // A client that went away no longer needs its answer.
            let _ = job.reply.send(ok.then_some(reply));
        }
    }
}

fn apply(ledger: &mut Ledger, job: &Job, now: u64, grace: u64) -> Reply {
    if let Some((key, fingerprint)) = &job.idem
        && let Some(rec) = ledger.idempotent(key)
    {
        return if &rec.fingerprint == fingerprint {
            Reply {
                status: rec.status,
                body: rec.body.clone(),
            }
        } else {
            error_reply(
                409,
                "idempotency_mismatch",
                "this idempotency key was used for a different request",
                None,
            )
        };
    }
    let reply = execute(ledger, &job.op, now, grace);
    if let Some((key, fingerprint)) = &job.idem {
        ledger.record_idempotent(
            key.clone(),
            IdemRecord {
                fingerprint: *fingerprint,
                status: reply.status,
                body: reply.body.clone(),
            },
        );
    }
    reply
}

fn execute(ledger: &mut Ledger, op: &Op, now: u64, grace: u64) -> Reply {
    let result = match op {
        Op::Reserve {
            req,
            ttl_ms,
            actual,
        } => {
            let req = ReserveRequest {
                expires_at: now.saturating_add(*ttl_ms),
                ..req.clone()
            };
            let chain = req.chain.clone();
            match (ledger.reserve(req), actual) {
                (Ok(r), None) => Ok((201, r)),
                (Ok(r), Some(actual)) => match ledger.commit(&chain, &r.id, *actual, now, grace) {
                    Ok(r) => Ok((201, r)),
                    Err(e) => {
                        // A spend is one step: undo the hold rather than leave it.
                        let _ = ledger.release(&chain, &r.id, now, grace);
                        Err(e)
                    }
                },
                (Err(e), _) => Err(e),
            }
        }
        Op::Commit { chain, id, actual } => ledger
            .commit(chain, id, *actual, now, grace)
            .map(|r| (200, r)),
        Op::Release { chain, id } => ledger.release(chain, id, now, grace).map(|r| (200, r)),
        Op::Extend { chain, id, ttl_ms } => ledger
            .extend(chain, id, now.saturating_add(*ttl_ms), now, grace)
            .map(|r| (200, r)),
        Op::Revoke { tree, block } => {
            let r = ledger.revoke(*tree, *block);
            return Reply {
                status: 200,
                body: json!({ "block_id": block.to_string(), "revoked": true, "seq": r.seq, "new": r.new }).to_string(),
            };
        }
        Op::Expire => {
            let n = ledger.expire(now, grace).len();
            return Reply {
                status: 200,
                body: json!({ "expired": n }).to_string(),
            };
        }
        // Taken out of the group by `run` before it gets here.
        Op::RotateKey(_) => {
            return error_reply(
                503,
                "store_unavailable",
                "key rotation is not a ledger change",
                None,
            );
        }
    };
    match result {
        Ok((status, r)) => Reply {
            status,
            body: reservation_body(ledger, &r),
        },
        Err(e) => ledger_error_reply(&e),
    }
}

/// The JSON view of a scope. Fields are in alphabetical order, the order
/// `serde_json::Value` maps print in, so bodies stay byte-identical.
#[derive(serde::Serialize)]
struct ScopeView<'a> {
    block_id: String,
    ceiling: u64,
    held: u64,
    remaining: u64,
    spent: u64,
    tools: Option<&'a str>,
    unit: &'a str,
}

/// The JSON view of a reservation (alphabetical fields, as above).
#[derive(serde::Serialize)]
struct ReservationView<'a> {
    amount: u64,
    block_id: Option<String>,
    charged: Option<u64>,
    expires_at_ms: u64,
    id: &'a str,
    scopes: Vec<ScopeView<'a>>,
    state: &'static str,
    unit: &'a str,
}

#[derive(serde::Serialize)]
struct Wrapped<'a> {
    reservation: ReservationView<'a>,
}

fn view<'a>(ledger: &Ledger, r: &'a Reservation) -> ReservationView<'a> {
    ReservationView {
        amount: r.amount,
        block_id: r.chain.last().map(ToString::to_string),
        charged: r.charged,
        expires_at_ms: r.expires_at,
        id: &r.id,
        scopes: r
            .scopes
            .iter()
            .map(|k| {
                let s = ledger.scope(k, 0);
                ScopeView {
                    block_id: k.block.to_string(),
                    ceiling: s.ceiling,
                    held: s.held,
                    remaining: s.remaining(),
                    spent: s.spent,
                    tools: (!k.tools.is_empty()).then_some(k.tools.as_str()),
                    unit: &k.unit,
                }
            })
            .collect(),
        state: r.state.as_str(),
        unit: &r.unit,
    }
}

/// The JSON view of a reservation with the current counters of its scopes.
pub(crate) fn reservation_json(ledger: &Ledger, r: &Reservation) -> Value {
    serde_json::to_value(view(ledger, r)).unwrap_or(Value::Null)
}

/// `{"reservation": ...}` as a string, without building a `Value` tree:
/// this runs in the writer, under the ledger lock, once per request.
fn reservation_body(ledger: &Ledger, r: &Reservation) -> String {
    serde_json::to_string(&Wrapped {
        reservation: view(ledger, r),
    })
    .unwrap_or_default()
}

pub(crate) fn error_reply(status: u16, code: &str, message: &str, detail: Option<Value>) -> Reply {
    let mut err = json!({ "code": code, "message": message });
    if let (Some(Value::Object(d)), Some(obj)) = (detail, err.as_object_mut()) {
        obj.extend(d);
    }
    Reply {
        status,
        body: json!({ "error": err }).to_string(),
    }
}

pub(crate) fn ledger_error_reply(e: &LedgerError) -> Reply {
    let (status, detail) = match e {
        LedgerError::InsufficientBudget { scope, remaining } => (
            402,
            Some(
                json!({ "scope": { "block_id": scope.block.to_string(), "unit": scope.unit, "tools": scope.tools }, "remaining": remaining }),
            ),
        ),
        LedgerError::NoBudget => (403, None),
        LedgerError::InvalidAmount => (400, None),
        LedgerError::NotFound => (404, None),
        LedgerError::Finalized(crate::ledger::ResState::Expired) => {
            (410, Some(json!({ "state": "expired" })))
        }
        LedgerError::Finalized(s) => (409, Some(json!({ "state": s.as_str() }))),
        LedgerError::Revoked(b) => (403, Some(json!({ "block_id": b.to_string() }))),
        // Unreachable for tokens of one issuer; a conflict, not a server fault.
        LedgerError::CeilingConflict => (409, None),
    };
    error_reply(status, e.code(), &e.to_string(), detail)
}
