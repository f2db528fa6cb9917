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
//!
//! On a store several servers share ([`Store::shared`]) the group is one
//! database transaction that first reads its idempotency records, locks the
//! reservations it names, then reads the scopes it touches (locked in one
//! global order, or optimistically, checked at the write: see
//! `store::postgres`) and the revocations of the chains involved; the
//! ledger then applies the group to exactly that working set. A group that
//! lost a race with another server's (deadlock, serialization failure, a
//! scope or key changed since its read) is undone and run again, up to
//! [`MAX_ATTEMPTS`] times. Readers of scopes and of the
//! revocation feed go through the writer too, since memory is not the
//! truth; each sweeper tick also polls the root keys and the revocations
//! other servers made, for the offline verifier. Since the database
//! serializes groups by its row locks, one process may run several writers
//! on a shared store ([`WriterConfig::writers`]), each with its own
//! connection and working set, exactly as several servers would. They take
//! turns at the one queue ([`Intake`]): while one group waits for its
//! commit, the next one is already reading.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::keys::BlockId;
use crate::ledger::{
    ActiveState, Allocation, CacheSizes, Command, Ledger, Missing, Outcome, Revocation, ScopeKey,
    ScopeState, Touched,
};
use crate::store::{AllocLocks, Store, StoreError, StoredKey};

/// How many times a group that lost a race on a shared store is tried.
pub const MAX_ATTEMPTS: usize = 8;

/// How long a group that lost races is retried for: past this it is
/// answered 503 rather than retried, so that every request has its answer
/// well within the 10 s of spec/http.md §2.4 (each try is itself bounded by
/// the store's call timeout).
pub const RETRY_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// The most expired holds one sweeper tick releases on a shared store.
const DUE_PER_TICK: usize = 4096;

/// The most lapsed allocations one sweeper tick ends on a shared store.
const DUE_ALLOCATIONS_PER_TICK: usize = 256;

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
    Command(Box<Command>),
    /// Revoke a block.
    Revoke { tree: BlockId, block: BlockId },
    /// The sweeper's tick: expire due holds, prune old history.
    Tick,
    /// Store a new active root key.
    RotateKey(StoredKey),
    /// Read scopes' counters (shared store: from the database).
    Scopes(Vec<(ScopeKey, u64)>),
    /// Read the revocation feed (shared store: from the database).
    Feed { after: u64, limit: usize },
    /// Read the active allocations of one delegation tree (shared store).
    Allocations(BlockId),
}

/// The writer's answer to a [`Request`].
#[derive(Debug)]
enum Answer {
    Outcome(Outcome),
    Revoked(Revocation),
    Ticked(Polled),
    Rotated,
    Scopes(Vec<ScopeState>),
    Feed(Vec<(u64, BlockId)>),
    Allocations(Vec<Allocation>),
}

/// What a sweeper tick on a shared store learned from the other servers:
/// for the offline verifier and the signer.
#[derive(Debug, Default, Clone)]
pub(crate) struct Polled {
    /// Every root key, when polled (shared stores only).
    pub(crate) keys: Option<Vec<StoredKey>>,
    /// Blocks revoked since the last poll, by any server.
    pub(crate) revoked: Vec<BlockId>,
    /// The feed position read up to.
    feed_end: u64,
}

struct Job {
    request: Request,
    /// `None`: the store was unavailable and nothing was done.
    reply: oneshot::Sender<Option<Answer>>,
}

/// How long history is kept, and how much of it one prune removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Finalized reservations and idempotency records older than this (ms)
    /// are dropped (spec/http.md §3.6).
    pub keep_ms: u64,
    /// The most rows of each kind one sweeper tick removes.
    pub batch: usize,
}

impl Retention {
    /// Keeps history for `keep_ms` ms, removing at most `batch` rows of each
    /// kind per sweeper tick.
    pub fn new(keep_ms: u64, batch: usize) -> Self {
        Self { keep_ms, batch }
    }
}

/// Tunables of the writer.
///
/// Built from [`WriterConfig::default`] and the chainable setters, e.g.
/// `WriterConfig::default().grace_ms(1_000).max_batch(64)`; the fields
/// stay public for reading.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct WriterConfig {
    /// How long past its expiry a hold still accepts commit, release and extend.
    pub grace_ms: u64,
    /// The most requests in one transaction.
    pub max_batch: usize,
    /// The in-memory caches over the store.
    pub cache: CacheSizes,
    /// `None`: history is kept forever (the default).
    pub retain: Option<Retention>,
    /// Writers on a shared store (each a thread with its own connection);
    /// an exclusive store always has one.
    pub writers: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            grace_ms: 2_000,
            max_batch: 1024,
            cache: CacheSizes::default(),
            retain: None,
            writers: 1,
        }
    }
}

impl WriterConfig {
    /// Sets [`grace_ms`](Self#structfield.grace_ms): how long past its
    /// expiry a hold still accepts commit, release and extend.
    #[must_use]
    pub fn grace_ms(mut self, grace_ms: u64) -> Self {
        self.grace_ms = grace_ms;
        self
    }

    /// Sets [`max_batch`](Self#structfield.max_batch): the most requests
    /// in one transaction.
    #[must_use]
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch;
        self
    }

    /// Sets [`cache`](Self#structfield.cache): the in-memory caches over
    /// the store.
    #[must_use]
    pub fn cache(mut self, cache: CacheSizes) -> Self {
        self.cache = cache;
        self
    }

    /// Sets [`retain`](Self#structfield.retain): how long history is kept;
    /// `None` keeps it forever.
    #[must_use]
    pub fn retain(mut self, retain: Option<Retention>) -> Self {
        self.retain = retain;
        self
    }

    /// Sets [`writers`](Self#structfield.writers): the writers on a shared
    /// store (an exclusive store always has one).
    #[must_use]
    pub fn writers(mut self, writers: usize) -> Self {
        self.writers = writers;
        self
    }
}

/// The handle handlers use to reach the writer.
#[derive(Clone)]
pub(crate) struct LedgerHandle {
    /// The one queue every writer takes its groups from (see [`Intake`]).
    tx: mpsc::Sender<Job>,
    pub(crate) ledger: Arc<Mutex<Ledger>>,
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) batches: prometheus_client::metrics::counter::Counter,
    /// Groups run again after losing a race on a shared store.
    pub(crate) retries: prometheus_client::metrics::counter::Counter,
    /// The store is shared by several servers: memory is not the truth.
    pub(crate) shared: bool,
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
        match self.submit(Request::Command(Box::new(cmd))).await? {
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

    /// Expires due holds (and prunes old history) now. On a shared store,
    /// also returns what other servers changed; `None`: store unavailable.
    pub(crate) async fn tick(&self) -> Option<Polled> {
        match self.submit(Request::Tick).await? {
            Answer::Ticked(p) => Some(p),
            _ => None,
        }
    }

    /// Scopes' counters, each with the ceiling an unseen scope has. `None`:
    /// the store is unavailable.
    pub(crate) async fn scopes(&self, keys: Vec<(ScopeKey, u64)>) -> Option<Vec<ScopeState>> {
        if !self.shared {
            let ledger = self.read().await;
            return Some(keys.iter().map(|(k, c)| ledger.scope(k, *c)).collect());
        }
        match self.submit(Request::Scopes(keys)).await? {
            Answer::Scopes(s) => Some(s),
            _ => None,
        }
    }

    /// Up to `limit` revocations after feed position `after`, in order.
    pub(crate) async fn feed(&self, after: u64, limit: usize) -> Option<Vec<(u64, BlockId)>> {
        if !self.shared {
            return Some(self.read().await.revocations_after(after, limit));
        }
        match self.submit(Request::Feed { after, limit }).await? {
            Answer::Feed(f) => Some(f),
            _ => None,
        }
    }

    /// Runs `f` over a ledger holding every active allocation of the
    /// delegation tree whose root block is `tree`: the ledger itself on an
    /// exclusive store; on a shared one, a ledger made of what the
    /// database holds (read through the writer, without locks: a
    /// committed state). `None`: the store is unavailable.
    pub(crate) async fn with_allocations<T>(
        &self,
        tree: BlockId,
        f: impl FnOnce(&Ledger) -> T,
    ) -> Option<T> {
        if !self.shared {
            return Some(f(&*self.read().await));
        }
        match self.submit(Request::Allocations(tree)).await? {
            Answer::Allocations(allocations) => {
                let view = Ledger::restore(
                    ActiveState {
                        allocations,
                        ..ActiveState::default()
                    },
                    CacheSizes::all(1),
                );
                Some(f(&view))
            }
            _ => None,
        }
    }

    /// Stores a new active root key, retiring the others.
    pub(crate) async fn rotate_key(&self, key: StoredKey) -> bool {
        matches!(
            self.submit(Request::RotateKey(key)).await,
            Some(Answer::Rotated)
        )
    }

    /// Locks the (first writer's) ledger for a read. The writer holds the lock while it makes
    /// a group durable, so a reader never sees a change before it is on
    /// disk; an async lock keeps that wait off the runtime's threads.
    pub(crate) async fn read(&self) -> tokio::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().await
    }
}

/// What [`start`] returns: the handle, the writer threads, the revoked blocks.
pub(crate) type Started = (LedgerHandle, Vec<std::thread::JoinHandle<()>>, Vec<BlockId>);

/// Starts the writer thread over `store`, whose active state seeds the
/// ledger (on a shared store, `config.writers` threads, each on its own
/// handle of the store). Returns the handle, the threads and the revoked
/// blocks.
pub(crate) fn start(
    mut store: Box<dyn Store>,
    clock: Arc<dyn Clock>,
    config: WriterConfig,
) -> Result<Started, StoreError> {
    let state = store.load_active()?;
    let revoked: Vec<BlockId> = state.revoked.iter().map(|(b, _)| *b).collect();
    let shared_store = store.shared();
    let feed_end = state.revoked.iter().map(|(_, s)| *s).max().unwrap_or(0);
    let mut stores = vec![store];
    let mut ledgers = Vec::new();
    if shared_store {
        for _ in 1..config.writers.max(1) {
            let more = stores[0].split()?;
            stores.push(more);
        }
        for _ in &stores {
            ledgers.push(Ledger::shared(state.revoked.clone(), config.cache));
        }
    } else {
        ledgers.push(Ledger::restore(state, config.cache));
    }
    let ledgers: Vec<Arc<Mutex<Ledger>>> = ledgers
        .into_iter()
        .map(|l| Arc::new(Mutex::new(l)))
        .collect();
    let (tx, rx) = mpsc::channel::<Job>(16 * 1024);
    let intake: Intake = Arc::new(std::sync::Mutex::new(rx));
    let handle = LedgerHandle {
        tx,
        ledger: ledgers[0].clone(),
        ready: Arc::new(AtomicBool::new(true)),
        clock: clock.clone(),
        batches: prometheus_client::metrics::counter::Counter::default(),
        retries: prometheus_client::metrics::counter::Counter::default(),
        shared: shared_store,
    };
    let mut threads = Vec::new();
    for (i, (store, ledger)) in stores.into_iter().zip(ledgers).enumerate() {
        let rx = intake.clone();
        // The thread gets the shared parts but no sender: once every handle
        // is dropped the channel closes and the thread ends.
        let shared = Shared {
            ledger,
            ready: handle.ready.clone(),
            clock: clock.clone(),
            batches: handle.batches.clone(),
            retries: handle.retries.clone(),
        };
        let name = if i == 0 {
            "baton-ledger-writer".to_owned()
        } else {
            format!("baton-ledger-writer-{i}")
        };
        threads.push(
            std::thread::Builder::new()
                .name(name)
                .spawn(move || run(rx, store, shared, config, feed_end))
                .map_err(|e| StoreError::Unavailable(e.to_string()))?,
        );
    }
    Ok((handle, threads, revoked))
}

struct Shared {
    ledger: Arc<Mutex<Ledger>>,
    ready: Arc<AtomicBool>,
    clock: Arc<dyn Clock>,
    batches: prometheus_client::metrics::counter::Counter,
    retries: prometheus_client::metrics::counter::Counter,
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
    let (idem, res) = store.lookup(&missing.idem, &missing.reservations)?;
    let mut next = ledger.supply(
        missing.idem.into_iter().zip(idem),
        missing.reservations.into_iter().zip(res),
    );
    if !next.reservations.is_empty() {
        next.reservations.sort();
        next.reservations.dedup();
        let res = store.read_reservations(&next.reservations)?;
        ledger.supply_replayed(next.reservations.into_iter().zip(res));
    }
    if !missing.allocations.is_empty() {
        missing.allocations.sort();
        missing.allocations.dedup();
        let found = store.allocations(&missing.allocations)?;
        ledger.supply_allocations(missing.allocations.into_iter().zip(found));
    }
    Ok(())
}

/// The writers' one queue, held by the writer forming the next group.
///
/// A writer takes it, waits for the first job, drains what else is
/// queued, and keeps it through its group's reads and decisions; it lets
/// it go just before its write and commit. So a group's commit round trip
/// overlaps the next group's reads on another writer, while each group is
/// still everything that arrived since the last one was formed: splitting
/// arrivals between writers would halve the groups and double the
/// database's work per request.
type Intake = Arc<std::sync::Mutex<mpsc::Receiver<Job>>>;

fn run(
    rx: Intake,
    mut store: Box<dyn Store>,
    shared: Shared,
    config: WriterConfig,
    mut feed_end: u64,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(config.max_batch);
    // The loop ends when every sender is gone: the server has shut down and
    // drained, so every queued job has been answered.
    loop {
        // A writer that panicked while holding the queue poisoned it; the
        // queue itself is intact.
        let mut queue = rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(first) = queue.blocking_recv() else {
            break;
        };
        batch.push(first);
        while batch.len() < config.max_batch {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut turn = Some(queue);
        let mut ledger = shared.ledger.blocking_lock();
        let now = shared.clock.now_ms();
        let mut result = Err(StoreError::Unavailable("not tried".into()));
        let started = std::time::Instant::now();
        for attempt in 1..=MAX_ATTEMPTS {
            result = group(
                &mut ledger,
                store.as_mut(),
                &batch,
                now,
                &config,
                feed_end,
                &mut turn,
            );
            match &result {
                Ok(_) => {
                    ledger.settle();
                    break;
                }
                Err(e) => {
                    // Nothing of the group may stay, in the store or in memory.
                    store.abort();
                    ledger.rollback();
                    if !matches!(e, StoreError::Conflict(_)) || started.elapsed() > RETRY_BUDGET {
                        tracing::error!(error = %e, attempt, "ledger group failed; undone, answered 503");
                        break;
                    }
                    tracing::debug!(error = %e, attempt, "ledger group lost a race; retrying");
                    shared.retries.inc();
                }
            }
        }
        drop(turn);
        drop(ledger);
        let ok = result.is_ok();
        let (answers, ticked) = result.unwrap_or_default();
        for a in answers.iter().flatten() {
            if let Answer::Ticked(p) = a {
                feed_end = feed_end.max(p.feed_end);
            }
        }
        if ok
            && ticked
            && let Some(retain) = config.retain
        {
            prune(store.as_mut(), now, retain);
        }
        shared.ready.store(ok, Ordering::SeqCst);
        shared.batches.inc();
        let mut answers = answers.into_iter();
        for job in batch.drain(..) {
            // A client that went away no longer needs its answer.
            let _ = job.reply.send(answers.next().flatten());
        }
    }
}

/// One try at a group: its transaction from look-ups to commit. On `Ok`
/// everything is durable and the answers (one per job, in order) may be
/// sent, with whether the group ticked; on `Err` the caller undoes it.
fn group(
    ledger: &mut Ledger,
    store: &mut dyn Store,
    batch: &[Job],
    now: u64,
    config: &WriterConfig,
    feed_end: u64,
    turn: &mut Option<std::sync::MutexGuard<'_, mpsc::Receiver<Job>>>,
) -> Result<(Vec<Option<Answer>>, bool), StoreError> {
    let shared = ledger.is_shared();
    if shared && ledger.holder_ids_left() < batch.len() as u64 {
        // Each command interns at most one holder.
        let n = (batch.len() as u64).max(1024);
        let start = store.holder_ids(n)?;
        ledger.grant_holder_ids(start, start.saturating_add(n));
    }
    // One transaction for the whole group: its look-ups, any key
    // rotation and its writes commit or roll back together.
    store.begin()?;
    fetch(ledger, store, batch)?;
    if shared {
        working_set(ledger, store, batch, now, config.grace_ms)?;
    }
    let mut answers: Vec<Option<Answer>> = Vec::with_capacity(batch.len());
    let mut ticked = false;
    for job in batch {
        let answer = match &job.request {
            Request::Command(cmd) => Answer::Outcome(ledger.apply(cmd, now, config.grace_ms)),
            Request::Revoke { tree, block } => Answer::Revoked(ledger.revoke(*tree, *block, now)),
            Request::Tick => {
                ledger.expire(now, config.grace_ms);
                ticked = true;
                let mut polled = Polled {
                    feed_end,
                    ..Polled::default()
                };
                if shared {
                    // What other servers did: new keys, new revocations.
                    polled.keys = Some(store.keys()?);
                    let feed = store.revocations_after(feed_end, 10_000)?;
                    polled.feed_end = feed.last().map_or(feed_end, |(s, _)| *s);
                    polled.revoked = feed.into_iter().map(|(_, b)| b).collect();
                }
                Answer::Ticked(polled)
            }
            // Joins the group's transaction: durable with its write. If it
            // fails, the transaction is in doubt: the whole group is undone,
            // as for a failed write.
            Request::RotateKey(key) => {
                store.rotate_key(key.clone())?;
                Answer::Rotated
            }
            Request::Scopes(keys) => {
                let ks: Vec<ScopeKey> = keys.iter().map(|(k, _)| k.clone()).collect();
                let got = store.read_scopes(&ks)?;
                Answer::Scopes(
                    keys.iter()
                        .zip(got)
                        .map(|((k, c), s)| s.unwrap_or_else(|| ledger.scope(k, *c)))
                        .collect(),
                )
            }
            Request::Feed { after, limit } => {
                Answer::Feed(store.revocations_after(*after, *limit)?)
            }
            Request::Allocations(tree) => Answer::Allocations(store.active_allocations(tree)?),
        };
        answers.push(Some(answer));
    }
    let changes = ledger.coalesced_changes();
    // Decided: the next group may form and read while this one commits.
    drop(turn.take());
    // A group that changed nothing (a quiet sweeper tick) still probes the
    // store, so readiness tracks it in both directions.
    if changes.is_empty() {
        store.write(&[]).and_then(|()| store.ping())?;
    } else {
        store.write(&changes)?;
    }
    Ok((answers, ticked))
}

/// Shared store: locks and reads what the group touches beyond its
/// records (hold that expired, for a tick; the scopes of every command and
/// hold; the allocations they can change; the revocations of every chain)
/// and loads it into the ledger. Locks are taken in one order in every
/// group: reservations (by [`fetch`]), expired holds, scopes by key,
/// allocations by id, the revocation feed, then idempotency keys (by the
/// write, which inserts the records). A store may read the scopes here
/// without locking them and lock them at the write instead, in the same
/// place in that order (`store::postgres`).
///
/// Allocation rows come after the scopes because an allocation's scopes
/// are always among the scopes of whatever changes it: a reserve or
/// allocate under it (its scopes are the unfiltered budgets above the
/// child, which apply to every action of the child's chain), a hold that
/// drew from it (checked at the draw), its own end (its scopes are
/// touched). So a group that locks an allocation row already holds every
/// scope of it, and no other group can be holding that row: the lock
/// never waits, and the look-up, a statement that starts after the scope
/// locks are granted, sees every allocation committed before them. An
/// allocation that must end (release, lapse, revocation) is first read
/// without a lock to learn its scopes (in [`fetch`], or here for ticks
/// and revocations), then read again under its lock: one that another
/// server's group ended meanwhile is found ended and left alone, so each
/// ends exactly once.
fn working_set(
    ledger: &mut Ledger,
    store: &mut dyn Store,
    batch: &[Job],
    now: u64,
    grace: u64,
) -> Result<(), StoreError> {
    let mut touched = Touched::default();
    let mut revokes = false;
    for job in batch {
        match &job.request {
            Request::Command(cmd) => ledger.touches(cmd, &mut touched),
            Request::Tick => {
                let due = store.due(now.saturating_sub(grace), DUE_PER_TICK)?;
                for r in &due {
                    touched
                        .scopes
                        .extend(r.holder.scopes.iter().map(|k| (k.clone(), 0)));
                    // A hold that drew from an allocation gives it back.
                    touched.draws.push(r.id);
                }
                ledger.supply([], due.into_iter().map(|r| (r.id, Some(r))));
                // Allocations lapse with no grace (as Ledger::expire).
                for a in store.due_allocations(now, DUE_ALLOCATIONS_PER_TICK)? {
                    ledger.touches_allocation(&a, &mut touched);
                }
            }
            Request::Revoke { tree, block } => {
                revokes = true;
                touched.blocks.push(*block);
                // Revoking ends the allocations to chains through the block.
                if !ledger.is_revoked(block) {
                    for a in store.active_allocations(tree)? {
                        if a.child.contains(block) {
                            ledger.touches_allocation(&a, &mut touched);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    // One global order; for a scope named twice, the larger ceiling (a new
    // scope's is the token's; an existing one's is already recorded).
    touched
        .scopes
        .sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    touched.scopes.dedup_by(|a, b| a.0 == b.0);
    // A block known revoked stays revoked: only the others are asked about.
    touched.blocks.retain(|b| !ledger.is_revoked(b));
    touched.blocks.sort();
    touched.blocks.dedup();
    touched.allocations.sort();
    touched.allocations.dedup();
    touched.alloc_children.sort();
    touched.alloc_children.dedup();
    touched.draws.sort();
    touched.draws.dedup();
    let locks = AllocLocks {
        ids: &touched.allocations,
        children: &touched.alloc_children,
        draws: &touched.draws,
    };
    let (scopes, revoked, feed_end, allocs) =
        store.lock_working_set(&touched.scopes, &touched.blocks, revokes, locks)?;
    ledger.load(scopes, revoked, feed_end);
    ledger.load_allocations(allocs.allocations, allocs.draws);
    Ok(())
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
                if p.reservations + p.idempotency + p.allocations > 0 {
                    tracing::debug!(
                        reservations = p.reservations,
                        idempotency = p.idempotency,
                        allocations = p.allocations,
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

#[cfg(test)]
mod tests {
    use std::sync::Condvar;

    use super::*;
    use crate::ledger::{Change, IdemKey, IdemRecord, Operation, ResId, Reservation};
    use crate::store::{LockedAllocations, Pruned};

    /// What the handles of a [`GatedStore`] share: the size of every
    /// group's look-up, in order, and a gate the first look-up waits at.
    #[derive(Default)]
    struct Gate {
        groups: std::sync::Mutex<Vec<usize>>,
        /// (the first look-up is waiting, the test let it go)
        state: std::sync::Mutex<(bool, bool)>,
        changed: Condvar,
    }

    /// A shared store that holds nothing: every reservation is absent. Its
    /// first look-up waits until the test opens the gate.
    struct GatedStore(Arc<Gate>);

    impl Store for GatedStore {
        fn load_active(&mut self) -> Result<ActiveState, StoreError> {
            Ok(ActiveState::default())
        }
        fn begin(&mut self) -> Result<(), StoreError> {
            Ok(())
        }
        fn idempotency(&mut self, keys: &[IdemKey]) -> Result<Vec<Option<IdemRecord>>, StoreError> {
            Ok(vec![None; keys.len()])
        }
        fn reservations(&mut self, ids: &[ResId]) -> Result<Vec<Option<Reservation>>, StoreError> {
            let first = {
                let mut g = self.0.groups.lock().unwrap();
                g.push(ids.len());
                g.len() == 1
            };
            if first {
                let mut s = self.0.state.lock().unwrap();
                s.0 = true;
                self.0.changed.notify_all();
                while !s.1 {
                    s = self.0.changed.wait(s).unwrap();
                }
            }
            Ok(vec![None; ids.len()])
        }
        fn write(&mut self, _changes: &[&Change]) -> Result<(), StoreError> {
            Ok(())
        }
        fn abort(&mut self) {}
        fn prune(&mut self, _cutoff_ms: u64, _limit: usize) -> Result<Pruned, StoreError> {
            Ok(Pruned::default())
        }
        fn keys(&mut self) -> Result<Vec<StoredKey>, StoreError> {
            Ok(Vec::new())
        }
        fn rotate_key(&mut self, _key: StoredKey) -> Result<(), StoreError> {
            Ok(())
        }
        fn ping(&mut self) -> Result<(), StoreError> {
            Ok(())
        }
        fn split(&mut self) -> Result<Box<dyn Store>, StoreError> {
            Ok(Box::new(Self(self.0.clone())))
        }
        fn shared(&self) -> bool {
            true
        }
        fn lock_scopes(
            &mut self,
            keys: &[(ScopeKey, u64)],
        ) -> Result<Vec<(ScopeKey, ScopeState)>, StoreError> {
            assert!(keys.is_empty(), "a read touches no scope");
            Ok(Vec::new())
        }
        fn lock_allocations(
            &mut self,
            _locks: AllocLocks<'_>,
        ) -> Result<LockedAllocations, StoreError> {
            Ok(LockedAllocations::default())
        }
        fn revoked_among(
            &mut self,
            _blocks: &[BlockId],
        ) -> Result<Vec<(BlockId, u64)>, StoreError> {
            Ok(Vec::new())
        }
        fn holder_ids(&mut self, _n: u64) -> Result<u64, StoreError> {
            Ok(1)
        }
    }

    fn get(i: u8) -> Command {
        Command {
            op: Operation::Get {
                chain: vec![BlockId([7; 32])],
                id: ResId::new(1_000, [i; 12]),
            },
            idem: None,
            proof: None,
        }
    }

    /// Two writers on a shared store take turns at one queue: what arrives
    /// while one group is being read and decided is the next group, whole,
    /// on the other writer. (With a queue per writer, round-robin, the ten
    /// below were split between the two writers.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_queues_while_one_writer_decides_is_the_next_group_whole() {
        let gate = Arc::new(Gate::default());
        let (handle, threads, _) = start(
            Box::new(GatedStore(gate.clone())),
            Arc::new(ManualClock::new(1_000)),
            WriterConfig::default().writers(2),
        )
        .unwrap();
        let first = {
            let h = handle.clone();
            tokio::spawn(async move { h.command(get(0)).await })
        };
        // The first group is at its look-up, holding the queue.
        {
            let gate = gate.clone();
            tokio::task::spawn_blocking(move || {
                let mut s = gate.state.lock().unwrap();
                while !s.0 {
                    s = gate.changed.wait(s).unwrap();
                }
            })
            .await
            .unwrap();
        }
        let rest: Vec<_> = (1..=10)
            .map(|i| {
                let h = handle.clone();
                tokio::spawn(async move { h.command(get(i)).await })
            })
            .collect();
        while handle.tx.max_capacity() - handle.tx.capacity() < 10 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        {
            let mut s = gate.state.lock().unwrap();
            s.1 = true;
            gate.changed.notify_all();
        }
        assert!(matches!(first.await.unwrap(), Some(Outcome::Refused(_))));
        for r in rest {
            assert!(matches!(r.await.unwrap(), Some(Outcome::Refused(_))));
        }
        assert_eq!(*gate.groups.lock().unwrap(), vec![1, 10]);
        drop(handle);
        for t in threads {
            t.join().unwrap();
        }
    }
}
