//! The ledger's single writer: group commit with no added delay.
//!
//! Handlers verify tokens in parallel, then queue typed ledger commands
//! here. One thread drains whatever is queued, reads from the store the
//! records the group needs that are not in memory (point look-ups), applies
//! the group to the in-memory [`Ledger`] under its lock, writes all the
//! resulting rows in one durable transaction, and only then answers every
//! request in the group with its typed [`Outcome`]. If the write fails, the
//! group is undone in memory and everyone is told the store is unavailable:
//! a success always means "on disk".
//!
//! Readers take the same lock, so they never see a change before it is
//! durable. This module knows nothing of HTTP: rendering is the HTTP
//! layer's job (`server::http`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::keys::BlockId;
use crate::ledger::{CacheSizes, Command, Ledger, Missing, Outcome, Revocation};
use crate::store::{Store, StoreError, StoredKey};

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

/// What the writer is asked to do.
#[derive(Debug)]
enum Request {
    /// A ledger command on reservations.
    Command(Command),
    /// Revoke a block.
    Revoke { tree: BlockId, block: BlockId },
    /// The sweeper's tick: expire due holds, prune old history.
    Tick,
    /// Store a new active root key.
    RotateKey(StoredKey),
}

/// The writer's answer to a [`Request`].
#[derive(Debug)]
enum Answer {
    Outcome(Outcome),
    Revoked(Revocation),
    Ticked,
    Rotated,
}

struct Job {
    request: Request,
    /// `None`: the store was unavailable and nothing was done.
    reply: oneshot::Sender<Option<Answer>>,
}

/// How long history is kept, and how much of it one prune removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finalized reservations and idempotency records older than this (ms)
    /// are dropped (spec/http.md §3.6).
    pub keep_ms: u64,
    /// The most rows of each kind one sweeper tick removes.
    pub batch: usize,
}

/// Tunables of the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// How long past its expiry a hold still accepts commit, release and extend.
    pub grace_ms: u64,
    /// The most requests in one transaction.
    pub max_batch: usize,
    /// The in-memory caches over the store.
    pub cache: CacheSizes,
    /// `None`: history is kept forever (the default).
    pub retain: Option<Retention>,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            grace_ms: 2_000,
            max_batch: 1024,
            cache: CacheSizes::default(),
            retain: None,
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
    async fn submit(&self, request: Request) -> Option<Answer> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { request, reply }).await.ok()?;
        rx.await.ok().flatten()
    }

    /// Applies a command and waits for its durable outcome. `None` means
    /// the store is unavailable (nothing was done).
    pub(crate) async fn command(&self, cmd: Command) -> Option<Outcome> {
        match self.submit(Request::Command(cmd)).await? {
            Answer::Outcome(o) => Some(o),
            _ => None,
        }
    }

    /// Revokes a block, durably.
    pub(crate) async fn revoke(&self, tree: BlockId, block: BlockId) -> Option<Revocation> {
        match self.submit(Request::Revoke { tree, block }).await? {
            Answer::Revoked(r) => Some(r),
            _ => None,
        }
    }

    /// Expires due holds (and prunes old history) now.
    pub(crate) async fn tick(&self) -> bool {
        matches!(self.submit(Request::Tick).await, Some(Answer::Ticked))
    }

    /// Stores a new active root key, retiring the others.
    pub(crate) async fn rotate_key(&self, key: StoredKey) -> bool {
        matches!(
            self.submit(Request::RotateKey(key)).await,
            Some(Answer::Rotated)
        )
    }

    /// Locks the ledger for a read. The writer holds the lock while it makes
    /// a group durable, so a reader never sees a change before it is on
    /// disk; an async lock keeps that wait off the runtime's threads.
    pub(crate) async fn read(&self) -> tokio::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().await
    }
}

/// Starts the writer thread over `store`, whose active state seeds the
/// ledger. Returns the handle, the thread and the revoked blocks.
pub(crate) fn start(
    mut store: Box<dyn Store>,
    clock: Arc<dyn Clock>,
    config: WriterConfig,
) -> Result<(LedgerHandle, std::thread::JoinHandle<()>, Vec<BlockId>), StoreError> {
    let state = store.load_active()?;
    let revoked: Vec<BlockId> = state.revoked.iter().map(|(b, _)| *b).collect();
    let ledger = Arc::new(Mutex::new(Ledger::restore(state, config.cache)));
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
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    Ok((handle, thread, revoked))
}

struct Shared {
    ledger: Arc<Mutex<Ledger>>,
    ready: Arc<AtomicBool>,
    clock: Arc<dyn Clock>,
    batches: prometheus_client::metrics::counter::Counter,
}

/// Reads from the store what the group's commands need and is not in
/// memory: one pass over the group, then the reservations that any
/// replayed record names (which only the record could tell).
fn fetch(ledger: &mut Ledger, store: &mut dyn Store, batch: &[Job]) -> Result<(), StoreError> {
    let mut missing = Missing::default();
    for job in batch {
        if let Request::Command(cmd) = &job.request {
            ledger.missing(cmd, &mut missing);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    missing
        .idem
        .sort_by(|a, b| (a.tree, &a.key).cmp(&(b.tree, &b.key)));
    missing.idem.dedup();
    missing.reservations.sort();
    missing.reservations.dedup();
    let idem = store.idempotency(&missing.idem)?;
    let res = store.reservations(&missing.reservations)?;
    let mut next = ledger.supply(
        missing.idem.into_iter().zip(idem),
        missing.reservations.into_iter().zip(res),
    );
    if !next.reservations.is_empty() {
        next.reservations.sort();
        next.reservations.dedup();
        let res = store.reservations(&next.reservations)?;
        ledger.supply([], next.reservations.into_iter().zip(res));
    }
    Ok(())
}

fn run(
    mut rx: mpsc::Receiver<Job>,
    mut store: Box<dyn Store>,
    shared: Shared,
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
        let mut ledger = shared.ledger.blocking_lock();
        let now = shared.clock.now_ms();
        // One transaction for the whole group: its look-ups, any key
        // rotation and its writes commit or roll back together.
        let mut ok = match store
            .begin()
            .and_then(|()| fetch(&mut ledger, store.as_mut(), &batch))
        {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "ledger read failed; group refused");
                store.abort();
                false
            }
        };
        let mut answers: Vec<Option<Answer>> = Vec::with_capacity(batch.len());
        let mut ticked = false;
        for job in &batch {
            if !ok {
                answers.push(None);
                continue;
            }
            let answer = match &job.request {
                Request::Command(cmd) => {
                    Some(Answer::Outcome(ledger.apply(cmd, now, config.grace_ms)))
                }
                Request::Revoke { tree, block } => {
                    Some(Answer::Revoked(ledger.revoke(*tree, *block)))
                }
                Request::Tick => {
                    ledger.expire(now, config.grace_ms);
                    ticked = true;
                    Some(Answer::Ticked)
                }
                // Joins the group's transaction: durable with its write.
                // If it fails, the transaction is in doubt: the whole group
                // is undone, as for a failed write.
                Request::RotateKey(key) => match store.rotate_key(key.clone()) {
                    Ok(()) => Some(Answer::Rotated),
                    Err(e) => {
                        tracing::error!(error = %e, "storing a rotated key failed; group undone");
                        store.abort();
                        ok = false;
                        None
                    }
                },
            };
            answers.push(answer);
        }
        if ok {
            let changes = ledger.coalesced_changes();
            // A group that changed nothing (a quiet sweeper tick) still
            // probes the store, so readiness tracks it in both directions.
            let durable = if changes.is_empty() {
                store.write(&[]).and_then(|()| store.ping())
            } else {
                store.write(&changes)
            };
            if let Err(e) = durable {
                tracing::error!(error = %e, "ledger write failed; group undone");
                ok = false;
            }
        }
        if ok {
            ledger.settle();
        } else {
            ledger.rollback();
        }
        drop(ledger);
        if ok
            && ticked
            && let Some(retain) = config.retain
        {
            prune(store.as_mut(), now, retain);
        }
        shared.ready.store(ok, Ordering::SeqCst);
        shared.batches.inc();
        for (job, answer) in batch.drain(..).zip(answers) {
            // A client that went away no longer needs its answer.
            let _ = job.reply.send(if ok { answer } else { None });
        }
    }
}

/// Drops history older than the retention window, a bounded amount per
/// tick so the writer is never held up for long. Outside the ledger lock:
/// it touches only finalized rows, which memory does not depend on.
fn prune(store: &mut dyn Store, now: u64, retain: Retention) {
    let cutoff = now.saturating_sub(retain.keep_ms);
    // A few batches a tick keep up with a busy ledger (up to 4 batches of
    // each kind per second) without holding the writer for long.
    for _ in 0..4 {
        match store.prune(cutoff, retain.batch) {
            Ok(p) => {
                if p.reservations + p.idempotency > 0 {
                    tracing::debug!(
                        reservations = p.reservations,
                        idempotency = p.idempotency,
                        "pruned history"
                    );
                }
                if !p.more(retain.batch) {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "pruning history failed; will retry");
                return;
            }
        }
    }
}
