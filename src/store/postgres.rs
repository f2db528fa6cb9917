//! The shared store: PostgreSQL, for any number of `baton serve` processes
//! on one database (spec/http.md §4.8).
//!
//! The database, not any process's memory, is the ledger's truth. One
//! writer group is one transaction on the writer's connection: it reads its
//! idempotency records, locks the reservations it names, reads the scopes
//! it touches and the revocations of the chains involved, and only then
//! runs the ledger's rules over exactly what it read.
//!
//! The scopes are read **optimistically**, without a lock: the write
//! locks them in one global order (`ORDER BY key FOR UPDATE`) and adds the
//! group's changes to what they hold then, only where that still fits
//! (`W_SCOPES`), so a hot scope is locked for one round trip, not for
//! the whole group. A group that revokes or involves an allocation, or
//! that lost such a race, reads **locked** instead: the scopes in the
//! global order, then the allocations those scopes carry that its
//! commands can change (an allocation's scopes are always among them, so
//! these locks never wait; see `server::writer::working_set`).
//! Idempotency records are inserted at the write, last: a key another
//! group recorded in between makes the insert wait for it, then fail this
//! group, whose retry replays the record.
//!
//! Writes are set-based (`unnest` arrays, pipelined on the connection
//! with the `COMMIT`) and CHECK constraints restate the invariant as a
//! backstop. Lost races (deadlock, serialization failure, a count check)
//! come back as [`StoreError::Conflict`] and the writer retries the group.
//!
//! The SQL keeps to what PostgreSQL-wire distributed engines (CockroachDB,
//! YugabyteDB) also accept where there is a choice: row locks, `ON
//! CONFLICT`, `unnest`, partial indexes, `SKIP LOCKED`. The one
//! PostgreSQL-only call is the session advisory lock around migrations.
//!
//! The client is async (`tokio-postgres`); the [`Store`] trait is called
//! from the writer's thread, so the store blocks on a runtime, with a
//! deadline on every call: a database that stops answering makes the call
//! fail (503, not ready), never hang the writer. A writer's thread keeps a
//! connection of its own, driven by a current-thread runtime of its own
//! ([`GroupConn::Own`]); the pool and its small runtime serve start-up,
//! single statements and the background vacuum.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{
    ClientWrapper, Hook, HookError, Manager, ManagerConfig, Object, Pool, RecyclingMethod,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

use super::codec::{
    RESERVATION_COLUMNS, RawReservation, amount, block_column, corrupt, decode_allocation,
    decode_outcome, encode_allocation, encode_chain, encode_outcome, encode_scopes, idem_hash,
    proof_column, scope_key, scope_state, sql_int, tools_column,
};
use super::{
    AllocLocks, LockedAllocations, Looked, Pruned, Store, StoreError, StoredKey, StoredKeyStatus,
    WorkingSet,
};
use crate::keys::BlockId;
use crate::ledger::{
    ActiveState, AllocId, Allocation, Change, IdemKey, IdemRecord, ResId, Reservation, ScopeKey,
    ScopeState,
};

/// The migrations, in order: the schema at version `i + 1` is the first
/// `i + 1` of them. Never edit one that has shipped; add another.
const MIGRATIONS: &[&str] = &[
    // 1: the ledger.
    "
CREATE TABLE scopes (
    block_id BYTEA NOT NULL CHECK (length(block_id) = 32),
    unit TEXT NOT NULL,
    tools TEXT NOT NULL,
    ceiling BIGINT NOT NULL CHECK (ceiling >= 0),
    spent BIGINT NOT NULL CHECK (spent >= 0),
    held BIGINT NOT NULL CHECK (held >= 0),
    PRIMARY KEY (block_id, unit, tools),
    CHECK (spent + held <= ceiling)
);
CREATE TABLE holders (
    id BIGINT PRIMARY KEY,
    chain BYTEA NOT NULL CHECK (length(chain) > 0 AND length(chain) % 32 = 0),
    unit TEXT NOT NULL,
    scopes BYTEA NOT NULL
);
CREATE TABLE reservations (
    id BYTEA PRIMARY KEY CHECK (length(id) = 18),
    holder BIGINT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    charged BIGINT CHECK (charged IS NULL OR charged >= 0),
    state SMALLINT NOT NULL CHECK (state IN (0, 1, 2, 3)),
    expires_at BIGINT NOT NULL,
    finalized_at BIGINT,
    CHECK ((state = 0) = (finalized_at IS NULL)),
    CHECK ((state = 1) = (charged IS NOT NULL))
);
CREATE INDEX reservations_due ON reservations (expires_at) WHERE state = 0;
CREATE TABLE revocations (
    seq BIGINT PRIMARY KEY CHECK (seq > 0),
    tree BYTEA NOT NULL CHECK (length(tree) = 32),
    block_id BYTEA NOT NULL UNIQUE CHECK (length(block_id) = 32)
);
CREATE TABLE idempotency (
    h BYTEA PRIMARY KEY CHECK (length(h) = 16),
    at BIGINT NOT NULL,
    fingerprint BYTEA NOT NULL CHECK (length(fingerprint) = 16),
    outcome BYTEA NOT NULL
);
CREATE INDEX idempotency_at ON idempotency (at);
CREATE TABLE root_keys (
    kid TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'retired')),
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX root_keys_one_active ON root_keys (status) WHERE status = 'active';
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL CHECK (value >= 0)
);
INSERT INTO counters (name, value) VALUES ('holders', 0), ('revocations', 0), ('keys', 0);
",
    // 2: the proof of possession behind an idempotency record (nullable, no
    // default: a catalogue change only, on every engine).
    "
ALTER TABLE idempotency ADD COLUMN proof BYTEA CHECK (proof IS NULL OR length(proof) = 32);
",
    // 3: guaranteed sub-budgets (spec/http.md §3.8, §4.8). An allocation
    // row keeps, besides its CBOR body (`codec::encode_allocation`), the
    // columns its look-ups need, each behind a partial index over the
    // active rows only, so their cost never grows with history: by child
    // block and unit (a reserve's or allocate's chain), by tree (a
    // revocation, a list, balances) and by expiry (the sweep). A draw row
    // exists exactly while a reservation that drew from an allocation is
    // active; its index by allocation keeps pruning from removing an
    // allocation still drawn from. No unique index on (child_block, unit):
    // one active allocation per child and unit is the ledger's rule, kept
    // under the scope locks every allocate of that child takes.
    "
CREATE TABLE allocations (
    id BYTEA PRIMARY KEY CHECK (length(id) = 18),
    tree BYTEA NOT NULL CHECK (length(tree) = 32),
    child_block BYTEA NOT NULL CHECK (length(child_block) = 32),
    unit TEXT NOT NULL,
    state SMALLINT NOT NULL CHECK (state IN (0, 1, 2, 3)),
    expires_at BIGINT NOT NULL,
    finalized_at BIGINT,
    body BYTEA NOT NULL,
    CHECK ((state = 0) = (finalized_at IS NULL))
);
CREATE INDEX allocations_child ON allocations (child_block, unit) WHERE state = 0;
CREATE INDEX allocations_tree ON allocations (tree) WHERE state = 0;
CREATE INDEX allocations_due ON allocations (expires_at) WHERE state = 0;
CREATE TABLE allocation_draws (
    res_id BYTEA PRIMARY KEY CHECK (length(res_id) = 18),
    alloc_id BYTEA NOT NULL CHECK (length(alloc_id) = 18),
    drawn BIGINT NOT NULL CHECK (drawn > 0)
);
CREATE INDEX allocation_draws_alloc ON allocation_draws (alloc_id);
",
];

/// The schema version this build reads: the number of [`MIGRATIONS`].
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The session advisory lock migrations run under ("baton" in ASCII):
/// servers starting together migrate one at a time.
const MIGRATION_LOCK: i64 = 0x0062_6174_6f6e;

/// The default schema the tables live in.
pub const DEFAULT_SCHEMA: &str = "baton";

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user[:password]@host[:port]/db[?...]` (libpq URL form).
    pub url: String,
    /// The schema (namespace) holding the tables, created if absent:
    /// lower-case letters, digits and `_`, not starting with a digit.
    pub schema: String,
    /// Most connections the pool opens: for start-up, sweeps, pruning and
    /// single statements. A writer's thread opens one more of its own.
    pub pool_size: usize,
    /// Longest any one store call may take before it fails.
    pub timeout: Duration,
}

impl PgOptions {
    /// The defaults for `url`: schema `baton`, 8 connections, 5 s deadline.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: 8,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Whether `s` is a schema name we accept: it is put in SQL text, so only
/// a plain identifier that needs no quoting.
pub fn valid_schema(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// Drops `schema` and everything in it: for tests, which each make a
/// uniquely named schema. Refuses a name [`valid_schema`] refuses.
pub fn drop_schema(url: &str, schema: &str) -> Result<(), StoreError> {
    if !valid_schema(schema) {
        return Err(unavailable("invalid schema name"));
    }
    let config: tokio_postgres::Config = url.parse().map_err(unavailable)?;
    let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    let work = async move {
        let (client, conn) = config.connect(NoTls).await.map_err(pg)?;
        let driver = tokio::spawn(conn);
        let out = client.batch_execute(&sql).await.map_err(pg);
        drop(client);
        let _ = driver.await;
        out
    };
    let run = move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(unavailable)?
            .block_on(work)
    };
    // From inside a runtime (an async test), on a thread of its own.
    std::thread::spawn(run)
        .join()
        .unwrap_or_else(|_| Err(unavailable("drop_schema thread failed")))
}

/// The store's runtime, shared by every handle ([`Store::split`]); shut
/// down without waiting when the last is dropped (it may be dropped on an
/// async thread, where waiting is not allowed).
struct Rt(Option<tokio::runtime::Runtime>);

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// PostgreSQL through a connection pool; see the module docs.
pub struct PgStore {
    rt: Arc<Rt>,
    pool: Pool,
    /// The writer's connection, kept between groups.
    conn: Option<GroupConn>,
    /// The runtime driving [`GroupConn::Own`]: a current-thread runtime
    /// the writer's thread blocks on, made on its first group. Declared
    /// after `conn`, which is dropped first.
    local: Option<Rt>,
    /// How to open a connection of the handle's own.
    config: Arc<tokio_postgres::Config>,
    /// Vacuuming the pruned tables when the database will not.
    vacuum: Arc<Vacuum>,
    /// A group's transaction is open on `conn`.
    in_tx: bool,
    /// Its `BEGIN` is not sent yet: it goes out with the group's first
    /// statement, pipelined, saving a round trip per group.
    begin_pending: bool,
    /// Scopes known to have a row (rows are never deleted): their first
    /// reserve's insert is skipped. Forgotten when a group is undone, as
    /// it may have inserted rows that were rolled back.
    known_scopes: std::collections::HashSet<ScopeKey>,
    /// What this group read of each scope it touches, and whether the
    /// row existed: its writes are deltas from these, applied only if the
    /// row still has room (spec/http.md §4.8).
    base: HashMap<ScopeKey, Base>,
    /// The last try lost a race (an optimistic write found a scope or a
    /// key changed, or a deadlock): the next try locks its scopes before
    /// deciding, so it cannot lose a scope race again.
    lock_next: bool,
    /// Idempotency keys this group found a record for.
    found: std::collections::HashSet<Vec<u8>>,
    timeout: Duration,
    /// When the open group must be done: all its calls together get one
    /// `timeout`, not one each, so a stuck group fails (503) in time.
    deadline: Option<std::time::Instant>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    let text = describe(&e);
    match e.code() {
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            StoreError::Conflict(text)
        }
        _ => StoreError::Unavailable(text),
    }
}

/// An error as the log should show it. tokio-postgres displays a server
/// error as just "db error": this adds its SQLSTATE, message, constraint
/// and detail. A detail that dumps a whole row ("Failing row contains …")
/// is left out, as the row may be a root key's secret.
fn describe(e: &tokio_postgres::Error) -> String {
    let Some(d) = e.as_db_error() else {
        return e.to_string();
    };
    let mut text = format!("{} {}: {}", d.severity(), d.code().code(), d.message());
    if let Some(c) = d.constraint() {
        text.push_str(&format!(" (constraint {c})"));
    }
    if let Some(detail) = d.detail()
        && !detail.starts_with("Failing row contains")
    {
        text.push_str(&format!("; {detail}"));
    }
    text
}

/// A scope row (block_id, unit, tools, ceiling, spent, held).
fn scope_row(r: &Row) -> Result<(ScopeKey, ScopeState), StoreError> {
    let key = scope_key(
        r.try_get(0).map_err(pg)?,
        r.try_get(1).map_err(pg)?,
        r.try_get(2).map_err(pg)?,
    )?;
    Ok((
        key,
        scope_state(
            r.try_get(3).map_err(pg)?,
            r.try_get(4).map_err(pg)?,
            r.try_get(5).map_err(pg)?,
        )?,
    ))
}

fn reservation_row(r: &Row) -> Result<Reservation, StoreError> {
    RawReservation {
        id: r.try_get(0).map_err(pg)?,
        amount: r.try_get(1).map_err(pg)?,
        charged: r.try_get(2).map_err(pg)?,
        state: i64::from(r.try_get::<_, i16>(3).map_err(pg)?),
        expires_at: r.try_get(4).map_err(pg)?,
        finalized_at: r.try_get(5).map_err(pg)?,
        holder: r.try_get(6).map_err(pg)?,
        chain: r.try_get(7).map_err(pg)?,
        unit: r.try_get(8).map_err(pg)?,
        scopes: r.try_get(9).map_err(pg)?,
    }
    .parse()
}

/// Runs a statement on the group's connection with a cached prepared
/// statement.
async fn query(
    c: &ClientWrapper,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    let st = c.prepare_cached(sql).await.map_err(pg)?;
    c.query(&st, params).await.map_err(pg)
}

async fn execute(
    c: &ClientWrapper,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, StoreError> {
    let st = c.prepare_cached(sql).await.map_err(pg)?;
    c.execute(&st, params).await.map_err(pg)
}

/// Every statement of the ledger is a look-up by key: plan it as index
/// look-ups, always. A cached generic plan is made once per connection,
/// often while the tables are still empty, and could stay a scan of a
/// table that then grows to millions of rows (measured: 18 M rows read in
/// 2 000 look-ups, half the throughput). An engine without one of these
/// settings keeps its own planning.
async fn plan_as_lookups(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    for set in [
        "SET enable_seqscan = off",
        "SET enable_hashjoin = off",
        "SET enable_mergejoin = off",
    ] {
        match client.batch_execute(set).await {
            Err(e) if e.code() != Some(&SqlState::UNDEFINED_OBJECT) => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The connection a handle's groups run on.
enum GroupConn {
    /// From the pool, driven by the store's runtime: for a handle used
    /// from inside an async runtime (start-up, tests).
    Pooled(Object),
    /// The writer thread's own, driven by that thread's own runtime
    /// ([`PgStore::local`]): a reply wakes the writer directly, with no
    /// hand-off through another thread on each of a group's round trips.
    Own(ClientWrapper),
}

impl std::ops::Deref for GroupConn {
    type Target = ClientWrapper;

    fn deref(&self) -> &ClientWrapper {
        match self {
            Self::Pooled(o) => o,
            Self::Own(c) => c,
        }
    }
}

/// Space for what pruning deletes is reused only once the table is
/// vacuumed. PostgreSQL's autovacuum does it; where it is turned off
/// (measured on a server with `autovacuum = off`: the schema grew by
/// 2 MiB/s at 3 400 pairs/s with row counts flat under `--retain`), the
/// pruner vacuums its tables itself, at most once per [`VACUUM_EVERY`],
/// in the background on a pooled connection.
#[derive(Default)]
struct Vacuum {
    /// The database's autovacuum is off (checked at start).
    needed: AtomicBool,
    /// A vacuum is running: never two at once from one process.
    running: AtomicBool,
    /// When the last one started.
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How often the pruner vacuums when the database does not.
const VACUUM_EVERY: Duration = Duration::from_secs(60);

/// The tables pruning deletes from or whose rows are replaced. `SKIP_LOCKED`:
/// a table another server is vacuuming is left to it.
const VACUUM: &str =
    "VACUUM (SKIP_LOCKED, ANALYZE) reservations, idempotency, allocations, allocation_draws";

impl PgStore {
    /// Connects, creates the schema if needed and runs the migrations this
    /// build knows, under an advisory lock so that servers starting
    /// together migrate one at a time. A database at a newer version than
    /// this build reads is refused ([`StoreError::Version`]).
    pub fn connect(opts: &PgOptions) -> Result<Self, StoreError> {
        if !valid_schema(&opts.schema) {
            return Err(unavailable(format!(
                "schema name {:?}: use lower-case letters, digits and _",
                opts.schema
            )));
        }
        let mut config: tokio_postgres::Config = opts
            .url
            .parse()
            .map_err(|e| unavailable(format!("--store URL: {e}")))?;
        // Every connection finds the tables in our schema first.
        // A statement the database runs longer than we wait is cancelled
        // by the database itself, so that an abandoned group never keeps
        // its row locks (spec/http.md §2.4: an answer within 10 s).
        let limits = format!(
            "-c search_path={} -c statement_timeout={}",
            opts.schema,
            opts.timeout.as_millis().max(1)
        );
        let options = match config.get_options() {
            Some(o) => format!("{o} {limits}"),
            None => limits,
        };
        config.options(&options);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(opts.timeout);
        }
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        if config.get_application_name().is_none() {
            config.application_name("baton");
        }
        let own_config = Arc::new(config.clone());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("baton-postgres")
            .enable_all()
            .build()
            .map_err(unavailable)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // A connection that broke is found closed and replaced.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = {
            let _enter = rt.enter();
            Pool::builder(manager)
                .post_create(Hook::async_fn(|client: &mut ClientWrapper, _| {
                    Box::pin(
                        async move { plan_as_lookups(client).await.map_err(HookError::Backend) },
                    )
                }))
                .max_size(opts.pool_size.max(1))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(opts.timeout))
                .create_timeout(Some(opts.timeout))
                .build()
                .map_err(unavailable)?
        };
        let store = Self {
            rt: Arc::new(Rt(Some(rt))),
            pool,
            conn: None,
            local: None,
            config: own_config,
            vacuum: Arc::new(Vacuum::default()),
            in_tx: false,
            begin_pending: false,
            known_scopes: std::collections::HashSet::new(),
            base: HashMap::new(),
            lock_next: false,
            found: std::collections::HashSet::new(),
            timeout: opts.timeout,
            deadline: None,
        };
        store.migrate(&opts.schema)?;
        store.check_autovacuum();
        Ok(store)
    }

    /// Blocks on `f` on the store's runtime, with the call deadline. From
    /// inside another runtime (start-up runs in one) it blocks on a helper
    /// thread instead, which tokio requires.
    fn run<T: Send>(
        &self,
        timeout: Duration,
        f: impl Future<Output = Result<T, StoreError>> + Send,
    ) -> Result<T, StoreError> {
        let rt = self
            .rt
            .0
            .as_ref()
            .ok_or_else(|| unavailable("store closed"))?;
        let fut = async move {
            tokio::time::timeout(timeout, f)
                .await
                .unwrap_or_else(|_| Err(unavailable("database did not answer in time")))
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(|| rt.block_on(fut))
                    .join()
                    .unwrap_or_else(|_| Err(unavailable("store thread failed")))
            })
        } else {
            rt.block_on(fut)
        }
    }

    fn migrate(&self, schema: &str) -> Result<(), StoreError> {
        let pool = self.pool.clone();
        // Waiting for another server's migration may take longer than one call.
        self.run(self.timeout * 12, async move {
            let c = pool.get().await.map_err(unavailable)?;
            // Waiting for another server's migration is not a stuck statement.
            c.batch_execute("SET statement_timeout = 0")
                .await
                .map_err(pg)?;
            c.query("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(pg)?;
            let done = migrate_locked(&c, schema).await;
            let unlocked = c
                .query("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(pg);
            let reset = c.batch_execute("RESET statement_timeout").await.map_err(pg);
            done.and(unlocked.map(drop)).and(reset)
        })
    }

    /// Opens the group's transaction on the writer's connection (opened or
    /// taken once and kept, so a group costs no checkout): its own on a
    /// writer's thread, a pooled one inside an async runtime.
    fn group(&mut self) -> Result<(), StoreError> {
        if !matches!(self.conn, Some(GroupConn::Own(_))) {
            let plain_thread = tokio::runtime::Handle::try_current().is_err();
            if plain_thread && !self.in_tx && self.conn.is_some() {
                // Start-up used this handle inside a runtime; now a writer's
                // thread has it: back to the pool, and a connection of its own.
                self.conn = None;
            }
            if self.conn.is_none() {
                let c = if plain_thread {
                    self.own_connection()?
                } else {
                    let pool = self.pool.clone();
                    GroupConn::Pooled(self.run(self.timeout, async move {
                        pool.get().await.map_err(unavailable)
                    })?)
                };
                self.conn = Some(c);
                self.in_tx = false;
            }
        }
        if !self.in_tx {
            self.base.clear();
            self.found.clear();
            self.in_tx = true;
            self.begin_pending = true;
            self.deadline = Some(std::time::Instant::now() + self.timeout);
        }
        Ok(())
    }

    /// How long the open group's next call may take: what is left of its
    /// deadline (at least a millisecond, so that it fails rather than
    /// panics), never more than one call's timeout.
    fn left(&self) -> Duration {
        self.deadline
            .map_or(self.timeout, |d| {
                d.saturating_duration_since(std::time::Instant::now())
            })
            .min(self.timeout)
            .max(Duration::from_millis(1))
    }

    /// After pruning: starts a vacuum in the background if the database
    /// does not run its own and none ran within [`VACUUM_EVERY`].
    fn vacuum_if_due(&self) {
        if !self.vacuum.needed.load(Ordering::Relaxed) {
            return;
        }
        let Some(rt) = self.rt.0.as_ref() else { return };
        {
            let mut last = self
                .vacuum
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < VACUUM_EVERY) {
                return;
            }
            if self.vacuum.running.swap(true, Ordering::AcqRel) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        let pool = self.pool.clone();
        let vacuum = self.vacuum.clone();
        rt.spawn(async move {
            let started = std::time::Instant::now();
            let out = async {
                let c = pool.get().await.map_err(unavailable)?;
                // A vacuum of a big table may well take longer than a
                // statement of a group may: no limit for it alone. Each a
                // statement of its own: VACUUM runs in no transaction.
                c.batch_execute("SET statement_timeout = 0")
                    .await
                    .map_err(pg)?;
                let done = c.batch_execute(VACUUM).await.map_err(pg);
                let reset = c.batch_execute("RESET statement_timeout").await.map_err(pg);
                done.and(reset)
            }
            .await;
            match out {
                Ok(()) => tracing::debug!(ms = started.elapsed().as_millis() as u64, "vacuumed"),
                Err(e) => tracing::warn!(error = %e, "vacuum failed"),
            }
            vacuum.running.store(false, Ordering::Release);
        });
    }

    /// Opens this thread's own connection, on a current-thread runtime of
    /// its own (made once), so that the writer's thread itself drives the
    /// socket: measured, each round trip through the shared runtime's
    /// thread cost two cross-thread wake-ups.
    fn own_connection(&mut self) -> Result<GroupConn, StoreError> {
        if self.local.is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(unavailable)?;
            self.local = Some(Rt(Some(rt)));
        }
        let config = self.config.clone();
        self.run_group(self.timeout, async move {
            let (client, connection) = config.connect(NoTls).await.map_err(pg)?;
            // Spawned on the current runtime: this thread's own.
            let driver = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "writer connection ended");
                }
            });
            plan_as_lookups(&client).await.map_err(pg)?;
            Ok(GroupConn::Own(ClientWrapper::new(client, driver)))
        })
    }

    /// Like [`Self::run`], for a call on the group's connection: on the
    /// runtime that drives it.
    fn run_group<T: Send>(
        &self,
        timeout: Duration,
        f: impl Future<Output = Result<T, StoreError>> + Send,
    ) -> Result<T, StoreError> {
        let Some(rt) = self.local.as_ref().and_then(|l| l.0.as_ref()) else {
            return self.run(timeout, f);
        };
        if !matches!(self.conn, None | Some(GroupConn::Own(_))) {
            return self.run(timeout, f);
        }
        rt.block_on(async move {
            tokio::time::timeout(timeout, f)
                .await
                .unwrap_or_else(|_| Err(unavailable("database did not answer in time")))
        })
    }

    /// Closes the writer's connection instead of returning it to the pool:
    /// its state is in doubt.
    fn discard(&mut self) {
        self.in_tx = false;
        self.begin_pending = false;
        self.known_scopes.clear();
        match self.conn.take() {
            Some(GroupConn::Pooled(c)) => drop(Object::take(c)),
            Some(GroupConn::Own(c)) => drop(c),
            None => {}
        }
    }

    fn commit_group(&mut self) -> Result<(), StoreError> {
        if !self.in_tx {
            return Ok(());
        }
        self.base.clear();
        self.found.clear();
        if std::mem::take(&mut self.begin_pending) {
            // Nothing was sent: nothing to commit.
            self.in_tx = false;
            return Ok(());
        }
        let out = match self.conn.as_ref() {
            Some(c) => self.run_group(self.left(), async {
                c.batch_execute("COMMIT").await.map_err(pg)
            }),
            None => Err(unavailable("no connection")),
        };
        self.in_tx = false;
        if out.is_err() {
            // Unknown whether it committed: never reuse this connection.
            self.discard();
        }
        out
    }
}

/// Runs an async block on the group's connection `c`, inside the group's
/// transaction (opened if needed); on failure the group is rolled back.
macro_rules! group_call {
    ($self:ident, $c:ident => $body:expr) => {
        group_call!(@ $self, true, $c => $body)
    };
    // A call that sends the COMMIT: if its connection is lost, whether the
    // group committed is in doubt, and it must not be run again.
    ($self:ident, commits, $c:ident => $body:expr) => {
        group_call!(@ $self, false, $c => $body)
    };
    (@ $self:ident, $retry_lost:expr, $c:ident => $body:expr) => {{
        match $self.group() {
            Err(e) => Err(e),
            Ok(()) => {
                let begin = std::mem::take(&mut $self.begin_pending);
                let left = $self.left();
                let out = match $self.conn.as_ref() {
                    Some($c) => $self.run_group(left, async {
                        let body = $body;
                        if begin {
                            // Sent first, in order, on the one connection.
                            let (b, out) = tokio::join!($c.batch_execute("BEGIN"), body);
                            b.map_err(pg)?;
                            out
                        } else {
                            body.await
                        }
                    }),
                    None => Err(unavailable("no connection")),
                };
                match out {
                    Ok(v) => Ok(v),
                    Err(e) => {
                        // The connection closed under a call with no COMMIT
                        // in it: the database rolled the transaction back
                        // with it, so nothing of the group happened. The
                        // group is run again on a new connection, as after
                        // a lost race, rather than answered 503: a writer's
                        // connection that the database closed while it was
                        // idle (a restart, a fail-over, an idle timeout)
                        // costs its next group nothing. While the database
                        // is down the new connection fails, and that is
                        // answered 503.
                        let lost = $retry_lost && $self.conn.as_ref().is_some_and(|c| c.is_closed());
                        $self.abort();
                        if lost {
                            Err(StoreError::Conflict(format!(
                                "the connection closed; the group runs again on a new one ({e})"
                            )))
                        } else {
                            Err(e)
                        }
                    }
                }
            }
        }
    }};
}

/// Runs an async block on a pooled connection `c`, outside any group.
macro_rules! once {
    ($self:ident, $c:ident => $body:expr) => {{
        let pool = $self.pool.clone();
        $self.run($self.timeout, async {
            let conn = pool.get().await.map_err(unavailable)?;
            let $c = &conn;
            $body.await
        })
    }};
}

async fn migrate_locked(c: &ClientWrapper, schema: &str) -> Result<(), StoreError> {
    // `schema` is a checked plain identifier (valid_schema).
    c.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.baton_migrations (
             version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    ))
    .await
    .map_err(pg)?;
    let found: i64 = c
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {schema}.baton_migrations"),
            &[],
        )
        .await
        .map_err(pg)?
        .try_get(0)
        .map_err(pg)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Version {
            found,
            expected: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as i64 + 1;
        c.batch_execute(&format!(
            "BEGIN; SET LOCAL search_path TO {schema}; {sql}
             INSERT INTO baton_migrations (version) VALUES ({version}); COMMIT;"
        ))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, version, "migration failed");
            pg(e)
        })?;
        tracing::info!(version, schema, "applied a ledger schema migration");
    }
    Ok(())
}

/// Per-kind column arrays of a group's writes, for set-based statements.
#[derive(Default)]
struct Rows<'a> {
    /// Scopes whose row the group read: what it changed, as deltas.
    scope_block: Vec<&'a [u8]>,
    scope_unit: Vec<&'a str>,
    scope_tools: Vec<&'a str>,
    scope_spent: Vec<i64>,
    scope_held: Vec<i64>,
    /// Scopes that had no row when the group read them: whole rows.
    new_block: Vec<&'a [u8]>,
    new_unit: Vec<&'a str>,
    new_tools: Vec<&'a str>,
    new_ceiling: Vec<i64>,
    new_spent: Vec<i64>,
    new_held: Vec<i64>,
    holder_id: Vec<i64>,
    holder_chain: Vec<Vec<u8>>,
    holder_unit: Vec<&'a str>,
    holder_scopes: Vec<Vec<u8>>,
    res_id: Vec<&'a [u8]>,
    res_holder: Vec<i64>,
    res_amount: Vec<i64>,
    res_charged: Vec<Option<i64>>,
    res_state: Vec<i16>,
    res_expires: Vec<i64>,
    res_final: Vec<Option<i64>>,
    idem_h: Vec<Vec<u8>>,
    idem_at: Vec<i64>,
    idem_fp: Vec<&'a [u8]>,
    idem_outcome: Vec<Vec<u8>>,
    idem_proof: Vec<Option<&'a [u8]>>,
    /// Records the group read and now replaces (their reservation was
    /// dropped by retention, so the request ran again): deleted first.
    idem_replaced: Vec<Vec<u8>>,
    rev_seq: Vec<i64>,
    rev_tree: Vec<&'a [u8]>,
    rev_block: Vec<&'a [u8]>,
    alloc_id: Vec<&'a [u8]>,
    alloc_tree: Vec<&'a [u8]>,
    alloc_child: Vec<&'a [u8]>,
    alloc_unit: Vec<&'a str>,
    alloc_state: Vec<i16>,
    alloc_expires: Vec<i64>,
    alloc_final: Vec<Option<i64>>,
    alloc_body: Vec<Vec<u8>>,
    draw_res: Vec<&'a [u8]>,
    draw_alloc: Vec<&'a [u8]>,
    draw_amount: Vec<i64>,
    undraw_res: Vec<&'a [u8]>,
}

/// What a group read of one scope.
#[derive(Debug, Clone, Copy)]
struct Base {
    state: ScopeState,
    /// The row existed (else `state` is the zero the ledger started from).
    existed: bool,
}

impl<'a> Rows<'a> {
    /// The rows of `changes`; scopes as changes from what the group read
    /// (`base`), where a scope that did not change is left out; records
    /// whose key the group found (`found`) replace the old one.
    fn of(
        changes: &[&'a Change],
        base: &HashMap<ScopeKey, Base>,
        found: &std::collections::HashSet<Vec<u8>>,
    ) -> Result<Self, StoreError> {
        let mut r = Self::default();
        for change in changes {
            match *change {
                Change::Allocation(a) => {
                    let (Some(tree), Some(child)) = (a.child.first(), a.child.last()) else {
                        return Err(corrupt("allocation without a child chain"));
                    };
                    r.alloc_id.push(&a.id.0);
                    r.alloc_tree.push(&tree.0);
                    r.alloc_child.push(&child.0);
                    r.alloc_unit.push(a.unit.as_str());
                    r.alloc_state.push(i16::from(a.state.code()));
                    r.alloc_expires.push(sql_int(a.expires_at));
                    r.alloc_final.push(a.finalized_at.map(sql_int));
                    r.alloc_body.push(encode_allocation(a));
                }
                Change::Draw(res, Some((a, d))) => {
                    r.draw_res.push(&res.0);
                    r.draw_alloc.push(&a.0);
                    r.draw_amount.push(sql_int(*d));
                }
                Change::Draw(res, None) => r.undraw_res.push(&res.0),
                Change::Scope(k, s) => {
                    // The ledger changes only scopes the group read.
                    let b = base
                        .get(k)
                        .ok_or_else(|| unavailable("a scope was written but not read"))?;
                    let delta = |new: u64, old: u64| {
                        sql_int(new)
                            .checked_sub(sql_int(old))
                            .ok_or_else(|| corrupt("scope counter"))
                    };
                    let (spent, held) =
                        (delta(s.spent, b.state.spent)?, delta(s.held, b.state.held)?);
                    if spent == 0 && held == 0 {
                        continue;
                    }
                    if b.existed {
                        r.scope_block.push(&k.block.0);
                        r.scope_unit.push(k.unit.as_str());
                        r.scope_tools.push(tools_column(&k.tools));
                        r.scope_spent.push(spent);
                        r.scope_held.push(held);
                    } else {
                        r.new_block.push(&k.block.0);
                        r.new_unit.push(k.unit.as_str());
                        r.new_tools.push(tools_column(&k.tools));
                        r.new_ceiling.push(sql_int(s.ceiling));
                        r.new_spent.push(sql_int(s.spent));
                        r.new_held.push(sql_int(s.held));
                    }
                }
                Change::Holder(h) => {
                    r.holder_id.push(sql_int(h.id));
                    r.holder_chain.push(encode_chain(&h.chain));
                    r.holder_unit.push(h.unit.as_str());
                    r.holder_scopes.push(encode_scopes(&h.scopes, &h.chain)?);
                }
                Change::Reservation(x) => {
                    r.res_id.push(&x.id.0);
                    r.res_holder.push(sql_int(x.holder.id));
                    r.res_amount.push(sql_int(x.amount));
                    r.res_charged.push(x.charged.map(sql_int));
                    r.res_state.push(i16::from(x.state.code()));
                    r.res_expires.push(sql_int(x.expires_at));
                    r.res_final.push(x.finalized_at.map(sql_int));
                }
                Change::Idempotency(k, rec) => {
                    let h = idem_hash(k).to_vec();
                    if found.contains(&h) {
                        r.idem_replaced.push(h.clone());
                    }
                    r.idem_h.push(h);
                    r.idem_at.push(sql_int(rec.at));
                    r.idem_fp.push(&rec.fingerprint);
                    r.idem_outcome.push(encode_outcome(&rec.outcome));
                    r.idem_proof
                        .push(rec.proof.as_ref().map(|p| p.0.as_slice()));
                }
                Change::Revoke { tree, block, seq } => {
                    r.rev_seq.push(sql_int(*seq));
                    r.rev_tree.push(&tree.0);
                    r.rev_block.push(&block.0);
                }
            }
        }
        Ok(r)
    }

    fn is_empty(&self) -> bool {
        self.scope_block.is_empty()
            && self.new_block.is_empty()
            && self.holder_id.is_empty()
            && self.res_id.is_empty()
            && self.idem_h.is_empty()
            && self.rev_seq.is_empty()
            && self.alloc_id.is_empty()
            && self.draw_res.is_empty()
            && self.undraw_res.is_empty()
    }
}

// The statements of a group's writes, in the order they run. A statement
// that must change every row it is given checks its own count: a count
// that differs divides by zero (SQLSTATE 22012), which fails the
// statement, hence the transaction, in the database itself (the COMMIT is
// already on its way); the group is then retried ([`count_check`]).
//
// The group read its scopes without locking them. Here it inserts the
// ones that had no row, then locks the ones that had, in the global order
// (`SCOPE_LOCK`, as `lock_scope_rows` does), then adds its changes to whatever they
// hold now, only where that still fits: a row another group changed in
// between is fine as long as the sum stays within the ceiling; otherwise
// the group is retried, locking first (`lock_next`).
const W_SCOPES: &str = "WITH u AS (
                 UPDATE scopes s SET spent = s.spent + v.spent, held = s.held + v.held
                 FROM unnest($1::bytea[], $2::text[], $3::text[], $4::int8[], $5::int8[])
                     AS v(block_id, unit, tools, spent, held)
                 WHERE s.block_id = v.block_id AND s.unit = v.unit AND s.tools = v.tools
                     AND s.spent + v.spent >= 0 AND s.held + v.held >= 0
                     AND s.spent + v.spent + s.held + v.held <= s.ceiling
                 RETURNING 1)
             SELECT 1 / (CASE WHEN (SELECT count(*) FROM u) = cardinality($1::bytea[]) THEN 1 ELSE 0 END)";
// A scope created by another group since this one read it: retried.
const W_NEW_SCOPES: &str = "WITH i AS (
                 INSERT INTO scopes (block_id, unit, tools, ceiling, spent, held)
                 SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::int8[])
                     AS v(block_id, unit, tools, ceiling, spent, held)
                 ORDER BY block_id, unit, tools
                 ON CONFLICT DO NOTHING RETURNING 1)
             SELECT 1 / (CASE WHEN (SELECT count(*) FROM i) = cardinality($1::bytea[]) THEN 1 ELSE 0 END)";
const W_HOLDERS: &str = "INSERT INTO holders (id, chain, unit, scopes)
             SELECT * FROM unnest($1::int8[], $2::bytea[], $3::text[], $4::bytea[])";
const W_RESERVATIONS: &str = "INSERT INTO reservations (id, holder, amount, charged, state, expires_at, finalized_at)
             SELECT * FROM unnest($1::bytea[], $2::int8[], $3::int8[], $4::int8[], $5::int2[], $6::int8[], $7::int8[])
             ON CONFLICT (id) DO UPDATE SET charged = excluded.charged, state = excluded.state,
                 expires_at = excluded.expires_at, finalized_at = excluded.finalized_at";
// A key another group recorded since this one looked (the same key sent
// to two servers at once) makes the insert wait for that group, then
// insert nothing: this group is retried and replays the record.
const W_IDEMPOTENCY: &str = "WITH i AS (
                 INSERT INTO idempotency (h, at, fingerprint, outcome, proof)
                 SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[], $4::bytea[], $5::bytea[])
                     AS v(h, at, fingerprint, outcome, proof)
                 ORDER BY h
                 ON CONFLICT (h) DO NOTHING RETURNING 1)
             SELECT 1 / (CASE WHEN (SELECT count(*) FROM i) = cardinality($1::bytea[]) THEN 1 ELSE 0 END)";
const W_REPLACED: &str = "DELETE FROM idempotency WHERE h = ANY($1)";
const W_REVOCATIONS: &str = "INSERT INTO revocations (seq, tree, block_id)
             SELECT * FROM unnest($1::int8[], $2::bytea[], $3::bytea[])";
// Only state, final time and body change: the indexed columns never do.
const W_ALLOCATIONS: &str = "INSERT INTO allocations (id, tree, child_block, unit, state, expires_at, finalized_at, body)
             SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::text[], $5::int2[], $6::int8[], $7::int8[], $8::bytea[])
             ON CONFLICT (id) DO UPDATE SET state = excluded.state,
                 finalized_at = excluded.finalized_at, body = excluded.body";
const W_DRAWS: &str = "INSERT INTO allocation_draws (res_id, alloc_id, drawn)
             SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::int8[])
             ON CONFLICT (res_id) DO UPDATE SET alloc_id = excluded.alloc_id, drawn = excluded.drawn";
const W_UNDRAWS: &str = "DELETE FROM allocation_draws WHERE res_id = ANY($1)";
const WRITES: [&str; 11] = [
    W_NEW_SCOPES,
    SCOPE_LOCK,
    W_SCOPES,
    W_HOLDERS,
    W_RESERVATIONS,
    W_REPLACED,
    W_IDEMPOTENCY,
    W_REVOCATIONS,
    W_ALLOCATIONS,
    W_DRAWS,
    W_UNDRAWS,
];

/// Prepares (once per connection) every write statement, so that each
/// statement of [`write_rows`] is sent as soon as it is first polled: then
/// a `COMMIT` polled after them is sent after them, which the pipelined
/// commit relies on.
async fn prepare_writes(c: &ClientWrapper) -> Result<(), StoreError> {
    for sql in WRITES {
        c.prepare_cached(sql).await.map_err(pg)?;
    }
    Ok(())
}

/// Runs a statement that checks its own count: a count that differs
/// (division by zero) means another group got there first, a
/// [`StoreError::Conflict`] the writer retries.
async fn count_check(
    c: &ClientWrapper,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    race: &str,
) -> Result<(), StoreError> {
    let st = c.prepare_cached(sql).await.map_err(pg)?;
    match c.execute(&st, params).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::DIVISION_BY_ZERO) => {
            Err(StoreError::Conflict(race.to_string()))
        }
        Err(e) => Err(pg(e)),
    }
}

/// Writes a group's rows with one statement per kind, pipelined on the
/// connection in lock order: new scopes are inserted before existing ones
/// are locked, as [`lock_scope_rows`] does (a group inserting a row waits
/// only for another's insert of it, never while holding a scope lock
/// that group might wait for), then records. Every result is checked.
async fn write_rows(c: &ClientWrapper, r: &Rows<'_>) -> Result<(), StoreError> {
    let lock = async {
        if r.scope_block.is_empty() {
            return Ok(());
        }
        execute(
            c,
            SCOPE_LOCK,
            &[&r.scope_block, &r.scope_unit, &r.scope_tools],
        )
        .await
        .map(drop)
    };
    let scopes = async {
        if r.scope_block.is_empty() {
            return Ok(());
        }
        count_check(
            c,
            W_SCOPES,
            &[
                &r.scope_block,
                &r.scope_unit,
                &r.scope_tools,
                &r.scope_spent,
                &r.scope_held,
            ],
            "a scope changed since the group read it and has no room left",
        )
        .await
    };
    let new_scopes = async {
        if r.new_block.is_empty() {
            return Ok(());
        }
        count_check(
            c,
            W_NEW_SCOPES,
            &[
                &r.new_block,
                &r.new_unit,
                &r.new_tools,
                &r.new_ceiling,
                &r.new_spent,
                &r.new_held,
            ],
            "a scope was created since the group read it",
        )
        .await
    };
    let holders = async {
        if r.holder_id.is_empty() {
            return Ok(());
        }
        execute(
            c,
            W_HOLDERS,
            &[
                &r.holder_id,
                &r.holder_chain,
                &r.holder_unit,
                &r.holder_scopes,
            ],
        )
        .await
        .map(drop)
    };
    let reservations = async {
        if r.res_id.is_empty() {
            return Ok(());
        }
        execute(
            c,
            W_RESERVATIONS,
            &[
                &r.res_id,
                &r.res_holder,
                &r.res_amount,
                &r.res_charged,
                &r.res_state,
                &r.res_expires,
                &r.res_final,
            ],
        )
        .await
        .map(drop)
    };
    let replaced = async {
        if r.idem_replaced.is_empty() {
            return Ok(());
        }
        execute(c, W_REPLACED, &[&r.idem_replaced]).await.map(drop)
    };
    let idem = async {
        if r.idem_h.is_empty() {
            return Ok(());
        }
        count_check(
            c,
            W_IDEMPOTENCY,
            &[
                &r.idem_h,
                &r.idem_at,
                &r.idem_fp,
                &r.idem_outcome,
                &r.idem_proof,
            ],
            "an idempotency key was recorded since the group looked",
        )
        .await
    };
    let revocations = async {
        if r.rev_seq.is_empty() {
            return Ok(());
        }
        execute(c, W_REVOCATIONS, &[&r.rev_seq, &r.rev_tree, &r.rev_block])
            .await
            .map(drop)
    };
    let allocations = async {
        if r.alloc_id.is_empty() {
            return Ok(());
        }
        execute(
            c,
            W_ALLOCATIONS,
            &[
                &r.alloc_id,
                &r.alloc_tree,
                &r.alloc_child,
                &r.alloc_unit,
                &r.alloc_state,
                &r.alloc_expires,
                &r.alloc_final,
                &r.alloc_body,
            ],
        )
        .await
        .map(drop)
    };
    // A reservation's draw row is either written or deleted in one group,
    // never both (`Ledger::coalesced_changes` keeps its last change).
    let draws = async {
        if r.draw_res.is_empty() {
            return Ok(());
        }
        execute(c, W_DRAWS, &[&r.draw_res, &r.draw_alloc, &r.draw_amount])
            .await
            .map(drop)
    };
    let undraws = async {
        if r.undraw_res.is_empty() {
            return Ok(());
        }
        execute(c, W_UNDRAWS, &[&r.undraw_res]).await.map(drop)
    };
    // All of them run to the end (none is dropped half-sent), then the
    // first failure, in statement order, fails the group: the later ones
    // only report the aborted transaction. One join: every statement is
    // sent on the first poll, before the COMMIT polled after this future.
    let (a, b, d, e, f, g, h, i, j, k, l) = tokio::join!(
        new_scopes,
        lock,
        scopes,
        holders,
        reservations,
        replaced,
        idem,
        revocations,
        allocations,
        draws,
        undraws
    );
    a.and(b)
        .and(d)
        .and(e)
        .and(f)
        .and(g)
        .and(h)
        .and(i)
        .and(j)
        .and(k)
        .and(l)
}

/// The columns of the scopes a group locks, and which of them may be new.
struct ScopeCols<'a> {
    blocks: Vec<&'a [u8]>,
    units: Vec<&'a str>,
    tools: Vec<&'a str>,
    ceilings: Vec<i64>,
    unknown: Vec<usize>,
}

impl<'a> ScopeCols<'a> {
    fn of(keys: &'a [(ScopeKey, u64)], known: &std::collections::HashSet<ScopeKey>) -> Self {
        Self {
            blocks: keys.iter().map(|(k, _)| k.block.0.as_slice()).collect(),
            units: keys.iter().map(|(k, _)| k.unit.as_str()).collect(),
            tools: keys.iter().map(|(k, _)| tools_column(&k.tools)).collect(),
            ceilings: keys.iter().map(|(_, c)| sql_int(*c)).collect(),
            unknown: (0..keys.len())
                .filter(|i| !known.contains(&keys[*i].0))
                .collect(),
        }
    }
}

/// Locks the scopes in one statement, in one global order. Scopes that may
/// be new are created first, at zero, before any scope is locked (a
/// concurrent creator of the same row makes this wait, then do nothing; an
/// existing row is not locked).
async fn lock_scope_rows(
    c: &ClientWrapper,
    k: &ScopeCols<'_>,
) -> Result<Vec<(ScopeKey, ScopeState)>, StoreError> {
    if k.blocks.is_empty() {
        return Ok(Vec::new());
    }
    if !k.unknown.is_empty() {
        let b: Vec<&[u8]> = k.unknown.iter().map(|i| k.blocks[*i]).collect();
        let u: Vec<&str> = k.unknown.iter().map(|i| k.units[*i]).collect();
        let t: Vec<&str> = k.unknown.iter().map(|i| k.tools[*i]).collect();
        let cl: Vec<i64> = k.unknown.iter().map(|i| k.ceilings[*i]).collect();
        execute(c, SCOPE_CREATE, &[&b, &u, &t, &cl]).await?;
    }
    let mut got: Vec<(ScopeKey, ScopeState)> =
        query(c, SCOPE_LOCK, &[&k.blocks, &k.units, &k.tools])
            .await?
            .iter()
            .map(scope_row)
            .collect::<Result<_, _>>()?;
    if got.len() < k.blocks.len() {
        // A scope believed to exist does not: create and lock again.
        execute(
            c,
            SCOPE_CREATE,
            &[&k.blocks, &k.units, &k.tools, &k.ceilings],
        )
        .await?;
        got = query(c, SCOPE_LOCK, &[&k.blocks, &k.units, &k.tools])
            .await?
            .iter()
            .map(scope_row)
            .collect::<Result<_, _>>()?;
    }
    Ok(got)
}

/// Reads the scopes that have a row, without locking them.
async fn read_scope_rows(
    c: &ClientWrapper,
    k: &ScopeCols<'_>,
) -> Result<Vec<(ScopeKey, ScopeState)>, StoreError> {
    if k.blocks.is_empty() {
        return Ok(Vec::new());
    }
    query(c, SCOPE_READ, &[&k.blocks, &k.units, &k.tools])
        .await?
        .iter()
        .map(scope_row)
        .collect()
}

const SCOPE_CREATE: &str = "INSERT INTO scopes (block_id, unit, tools, ceiling, spent, held)
         SELECT b, u, t, c, 0, 0 FROM unnest($1::bytea[], $2::text[], $3::text[], $4::int8[]) AS v(b, u, t, c)
         ORDER BY b, u, t ON CONFLICT DO NOTHING";
/// The scopes named by three arrays (block ids, units, tools columns).
macro_rules! scope_select {
    () => {
        "SELECT block_id, unit, tools, ceiling, spent, held FROM scopes
         WHERE (block_id, unit, tools) IN (SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[]))"
    };
}
/// Scopes as last committed, without a lock.
const SCOPE_READ: &str = scope_select!();
/// Scopes locked in the one global order.
const SCOPE_LOCK: &str = concat!(
    scope_select!(),
    " ORDER BY block_id, unit, tools FOR UPDATE"
);

// The allocations a group locks, after its scopes, in id order: those its
// reservations draw from, those named by id, and the active ones made for
// a block of its chains (each through an index: the draws' primary key,
// the allocations' primary key, the partial index of active ones by child).
const ALLOC_LOCK: &str = "SELECT body FROM allocations WHERE id IN (
             SELECT alloc_id FROM allocation_draws WHERE res_id = ANY($1::bytea[])
             UNION ALL SELECT unnest($2::bytea[])
             UNION ALL SELECT id FROM allocations WHERE state = 0
                 AND (child_block, unit) IN (SELECT * FROM unnest($3::bytea[], $4::text[])))
         ORDER BY id FOR UPDATE";
// Draw rows change only with their reservation, which the group locked.
const DRAWS: &str = "SELECT res_id, alloc_id, drawn FROM allocation_draws WHERE res_id = ANY($1)";

/// The columns of a group's allocation look-up.
struct AllocCols<'a> {
    draws: Vec<&'a [u8]>,
    ids: Vec<&'a [u8]>,
    blocks: Vec<&'a [u8]>,
    units: Vec<&'a str>,
}

impl<'a> AllocCols<'a> {
    fn of(l: &AllocLocks<'a>) -> Self {
        Self {
            draws: l.draws.iter().map(|r| r.0.as_slice()).collect(),
            ids: l.ids.iter().map(|a| a.0.as_slice()).collect(),
            blocks: l.children.iter().map(|(b, _)| b.0.as_slice()).collect(),
            units: l.children.iter().map(|(_, u)| u.as_str()).collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.draws.is_empty() && self.ids.is_empty() && self.blocks.is_empty()
    }
}

/// Allocation bodies, decoded.
fn allocation_rows(rows: &[Row]) -> Result<Vec<Allocation>, StoreError> {
    rows.iter()
        .map(|r| decode_allocation(r.try_get(0).map_err(pg)?))
        .collect()
}

/// Locks and reads a group's allocations, and reads its draw rows. Run
/// only once the group's scope locks are granted (module docs).
async fn lock_allocation_rows(
    c: &ClientWrapper,
    k: &AllocCols<'_>,
) -> Result<LockedAllocations, StoreError> {
    if k.is_empty() {
        return Ok(LockedAllocations::default());
    }
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&k.draws, &k.ids, &k.blocks, &k.units];
    let locked = query(c, ALLOC_LOCK, &params);
    let draws = async {
        if k.draws.is_empty() {
            return Ok(Vec::new());
        }
        query(c, DRAWS, &[&k.draws]).await
    };
    let (locked, draws) = tokio::join!(locked, draws);
    let draws = draws?
        .iter()
        .map(|r| {
            let res: &[u8] = r.try_get(0).map_err(pg)?;
            let alloc: &[u8] = r.try_get(1).map_err(pg)?;
            Ok((
                ResId::from_slice(res).ok_or_else(|| corrupt("draw reservation"))?,
                AllocId::from_slice(alloc).ok_or_else(|| corrupt("draw allocation"))?,
                amount(r.try_get(2).map_err(pg)?)?,
            ))
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(LockedAllocations {
        allocations: allocation_rows(&locked?)?,
        draws,
    })
}

/// Whether any allocation is involved in a group that names none: an
/// active one made for a child block of its chains, or a draw by one of
/// the reservations it ends. No row is locked; a group that finds one
/// reads its working set again under locks.
async fn allocations_involved(c: &ClientWrapper, k: &AllocCols<'_>) -> Result<bool, StoreError> {
    if k.draws.is_empty() && k.blocks.is_empty() {
        return Ok(false);
    }
    let rows = query(
        c,
        "SELECT 1 FROM allocation_draws WHERE res_id = ANY($1::bytea[])
         UNION ALL SELECT 1 FROM allocations WHERE state = 0
             AND (child_block, unit) IN (SELECT * FROM unnest($2::bytea[], $3::text[]))
         LIMIT 1",
        &[&k.draws, &k.blocks, &k.units],
    )
    .await?;
    Ok(!rows.is_empty())
}

/// Prepares (once per connection) the statements of a group's locks, so
/// that each is sent when first polled, in the order they are polled: the
/// allocation look-up must reach the database after the scope lock.
async fn prepare_locks(c: &ClientWrapper) -> Result<(), StoreError> {
    for sql in [SCOPE_LOCK, ALLOC_LOCK, DRAWS] {
        c.prepare_cached(sql).await.map_err(pg)?;
    }
    Ok(())
}

/// Takes the revocation feed's lock row and reads its last position.
async fn lock_feed(c: &ClientWrapper) -> Result<u64, StoreError> {
    query(
        c,
        "SELECT value FROM counters WHERE name = 'revocations' FOR UPDATE",
        &[],
    )
    .await?;
    let rows = query(c, "SELECT coalesce(max(seq), 0) FROM revocations", &[]).await?;
    let row = rows.first().ok_or_else(|| corrupt("revocations"))?;
    amount(row.try_get(0).map_err(pg)?)
}

/// Which of the blocks are revoked, with their feed positions.
async fn revoked_rows(c: &ClientWrapper, raw: &[&[u8]]) -> Result<Vec<(BlockId, u64)>, StoreError> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    query(
        c,
        "SELECT block_id, seq FROM revocations WHERE block_id = ANY($1)",
        &[&raw],
    )
    .await?
    .iter()
    .map(|r| {
        Ok((
            block_column(r.try_get(0).map_err(pg)?)?,
            amount(r.try_get(1).map_err(pg)?)?,
        ))
    })
    .collect()
}

/// Reads the idempotency records of the keys that have one. No row is
/// claimed or locked: a key another group is recording at the same time
/// is found at write time, where the insert waits for that group and then
/// fails this one with a conflict, and the retry reads the record
/// ([`W_IDEMPOTENCY`]).
async fn records(
    c: &ClientWrapper,
    hashes: &[Vec<u8>],
) -> Result<Vec<(Vec<u8>, IdemRecord)>, StoreError> {
    if hashes.is_empty() {
        return Ok(Vec::new());
    }
    query(
        c,
        "SELECT h, at, fingerprint, outcome, proof FROM idempotency WHERE h = ANY($1)",
        &[&hashes],
    )
    .await?
    .iter()
    .map(|r| {
        let h: Vec<u8> = r.try_get(0).map_err(pg)?;
        let fp: &[u8] = r.try_get(2).map_err(pg)?;
        let rec = IdemRecord {
            at: amount(r.try_get(1).map_err(pg)?)?,
            fingerprint: fp.try_into().map_err(|_| corrupt("fingerprint"))?,
            outcome: decode_outcome(r.try_get(3).map_err(pg)?)?,
            proof: proof_column(r.try_get(4).map_err(pg)?)?,
        };
        Ok((h, rec))
    })
    .collect()
}

/// Reads and locks reservations with their holders, in id order.
async fn lock_reservations(
    c: &ClientWrapper,
    raw: &[&[u8]],
) -> Result<Vec<Reservation>, StoreError> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    query(
        c,
        &format!(
            "SELECT {RESERVATION_COLUMNS} FROM reservations r JOIN holders h ON h.id = r.holder
             WHERE r.id = ANY($1) ORDER BY r.id FOR UPDATE OF r"
        ),
        &[&raw],
    )
    .await?
    .iter()
    .map(reservation_row)
    .collect()
}

impl PgStore {
    /// Learns whether the database vacuums by itself. An engine that does
    /// not know the setting (CockroachDB collects its own garbage) is left
    /// alone.
    fn check_autovacuum(&self) {
        let off = once!(self, c => async {
            let rows = c.simple_query("SHOW autovacuum").await.map_err(pg)?;
            Ok(rows.iter().any(|m| {
                matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("off"))
            }))
        });
        if matches!(off, Ok(true)) {
            tracing::warn!(
                every_secs = VACUUM_EVERY.as_secs(),
                "the database's autovacuum is off: with --retain, baton vacuums its pruned tables itself"
            );
            self.vacuum.needed.store(true, Ordering::Relaxed);
        }
    }

    /// Reads a group's working set: its scopes, the revocations of
    /// `blocks` (after the feed's lock if the group `revokes`) and the
    /// allocations it touches. Records what it read of each scope as the
    /// base of the group's scope writes.
    ///
    /// Optimistic unless `lock`: a group that revokes, names an allocation
    /// or finds one involved (an active allocation for a child in its
    /// chains, or a draw by a reservation it ends) takes the scope locks
    /// first, in the global order, then the allocation rows (module docs);
    /// any other reads its scopes as last committed, without a lock, and
    /// its write checks they still have room ([`W_SCOPES`]).
    fn working_set(
        &mut self,
        keys: &[(ScopeKey, u64)],
        blocks: &[BlockId],
        revokes: bool,
        allocs: AllocLocks<'_>,
        lock: bool,
    ) -> Result<WorkingSet, StoreError> {
        let scope_cols = ScopeCols::of(keys, &self.known_scopes);
        let raw: Vec<&[u8]> = blocks.iter().map(|b| b.0.as_slice()).collect();
        let alloc_cols = AllocCols::of(&allocs);
        if !lock && !revokes && alloc_cols.ids.is_empty() {
            // One round trip: the scopes, the revocations, and whether any
            // allocation is involved.
            let (found, revoked, involved) = group_call!(self, c => async {
                let (a, d, p) = tokio::join!(
                    read_scope_rows(c, &scope_cols),
                    revoked_rows(c, &raw),
                    allocations_involved(c, &alloc_cols)
                );
                Ok((a?, d?, p?))
            })?;
            if !involved {
                return Ok(self.based(keys, found, revoked, None, LockedAllocations::default()));
            }
        }
        // Sent together: one round trip. The revocation reads must run
        // after the feed lock when the group revokes (to see every
        // revocation committed before it), so they wait for it then.
        let (found, revoked, feed, allocations) = group_call!(self, c => async {
            // The allocations are locked after the scopes (module docs):
            // pipelined right behind the scope lock when that is one
            // statement, after its answer when scopes must be created first.
            let scopes_then_allocations = async {
                if alloc_cols.is_empty() {
                    return Ok((lock_scope_rows(c, &scope_cols).await?, LockedAllocations::default()));
                }
                prepare_locks(c).await?;
                if scope_cols.unknown.is_empty() {
                    let (s, a) = tokio::join!(
                        lock_scope_rows(c, &scope_cols),
                        lock_allocation_rows(c, &alloc_cols)
                    );
                    Ok((s?, a?))
                } else {
                    let s = lock_scope_rows(c, &scope_cols).await?;
                    Ok((s, lock_allocation_rows(c, &alloc_cols).await?))
                }
            };
            if revokes {
                let (a, b) = tokio::join!(scopes_then_allocations, lock_feed(c));
                let d = revoked_rows(c, &raw).await;
                let (a, l) = a?;
                Ok((a, d?, Some(b?), l))
            } else {
                let (a, d) = tokio::join!(scopes_then_allocations, revoked_rows(c, &raw));
                let (a, l) = a?;
                Ok((a, d?, None, l))
            }
        })?;
        Ok(self.based(keys, found, revoked, feed, allocations))
    }

    /// The working set as the ledger loads it, with every scope of `keys`:
    /// a scope with no row starts at zero with the token's ceiling, exactly
    /// as a locking read would have created it. Records each as the base of
    /// the group's scope writes.
    fn based(
        &mut self,
        keys: &[(ScopeKey, u64)],
        found: Vec<(ScopeKey, ScopeState)>,
        revoked: Vec<(BlockId, u64)>,
        feed: Option<u64>,
        allocations: LockedAllocations,
    ) -> WorkingSet {
        let found: HashMap<ScopeKey, ScopeState> = found.into_iter().collect();
        if self.known_scopes.len() > 1_000_000 {
            self.known_scopes.clear();
        }
        self.known_scopes.extend(found.keys().cloned());
        let mut scopes = Vec::with_capacity(keys.len());
        for (k, ceiling) in keys {
            let b = match found.get(k) {
                Some(s) => Base {
                    state: *s,
                    existed: true,
                },
                None => Base {
                    state: ScopeState {
                        ceiling: *ceiling,
                        spent: 0,
                        held: 0,
                    },
                    existed: false,
                },
            };
            self.base.insert(k.clone(), b);
            scopes.push((k.clone(), b.state));
        }
        (scopes, revoked, feed, allocations)
    }
}

impl Store for PgStore {
    fn load_active(&mut self) -> Result<ActiveState, StoreError> {
        // The database is the truth: only the revoked blocks are loaded, to
        // seed the offline verifier and the ledger's cache of them.
        let revoked = once!(self, c => async {
                let rows = query(c, "SELECT block_id, seq FROM revocations ORDER BY seq", &[]).await?;
                rows.iter()
                    .map(|r| {
                        Ok((
                            block_column(r.try_get(0).map_err(pg)?)?,
                            amount(r.try_get(1).map_err(pg)?)?,
                        ))
                    })
                    .collect()
        })?;
        Ok(ActiveState {
            revoked,
            ..ActiveState::default()
        })
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        self.group().map(drop)
    }

    fn idempotency(&mut self, keys: &[IdemKey]) -> Result<Vec<Option<IdemRecord>>, StoreError> {
        self.lookup(keys, &[]).map(|(i, _)| i)
    }

    fn reservations(&mut self, ids: &[ResId]) -> Result<Vec<Option<Reservation>>, StoreError> {
        self.lookup(&[], ids).map(|(_, r)| r)
    }

    fn read_reservations(&mut self, ids: &[ResId]) -> Result<Vec<Option<Reservation>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<&[u8]> = ids.iter().map(|i| i.0.as_slice()).collect();
        // No FOR UPDATE: a replay only shows the reservation's holder, which
        // never changes; taking row locks here, after the look-up's, would
        // lock reservations out of id order and deadlock with another
        // server's group (PostgreSQL breaks it after deadlock_timeout).
        let found: Vec<Reservation> = group_call!(self, c => async {
            query(
                c,
                &format!(
                    "SELECT {RESERVATION_COLUMNS} FROM reservations r JOIN holders h ON h.id = r.holder
                     WHERE r.id = ANY($1)"
                ),
                &[&raw],
            )
            .await?
            .iter()
            .map(reservation_row)
            .collect::<Result<Vec<_>, _>>()
        })?;
        let mut found: HashMap<ResId, Reservation> = found.into_iter().map(|r| (r.id, r)).collect();
        Ok(ids.iter().map(|id| found.remove(id)).collect())
    }

    fn lookup(&mut self, keys: &[IdemKey], ids: &[ResId]) -> Result<Looked, StoreError> {
        if keys.is_empty() && ids.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let hashes: Vec<Vec<u8>> = keys.iter().map(|k| idem_hash(k).to_vec()).collect();
        let raw: Vec<&[u8]> = ids.iter().map(|i| i.0.as_slice()).collect();
        // Both statements go out at once: one round trip.
        let (found, locked) = group_call!(self, c => async {
            let (a, b) = tokio::join!(records(c, &hashes), lock_reservations(c, &raw));
            Ok((a?, b?))
        })?;
        self.found.extend(found.iter().map(|(h, _)| h.clone()));
        let mut found: HashMap<Vec<u8>, IdemRecord> = found.into_iter().collect();
        let mut locked: HashMap<ResId, Reservation> =
            locked.into_iter().map(|r| (r.id, r)).collect();
        Ok((
            hashes.iter().map(|h| found.remove(h)).collect(),
            ids.iter().map(|id| locked.remove(id)).collect(),
        ))
    }

    fn write(&mut self, changes: &[&Change]) -> Result<(), StoreError> {
        if !self.in_tx && changes.is_empty() {
            return Ok(());
        }
        let rows = match Rows::of(changes, &self.base, &self.found) {
            Ok(rows) => rows,
            Err(e) => {
                self.abort();
                return Err(e);
            }
        };
        if rows.is_empty() {
            return self.commit_group();
        }
        // The writes and the COMMIT go out together: one round trip. If a
        // write fails the transaction is aborted and the COMMIT only ends
        // it (PostgreSQL answers ROLLBACK); the write's error fails the
        // group. A COMMIT that fails is in doubt: the connection is closed.
        let out = group_call!(self, commits, c => async {
            prepare_writes(c).await?;
            let (w, commit) = tokio::join!(
                write_rows(c, &rows),
                c.batch_execute("COMMIT")
            );
            w?;
            commit.map_err(pg)
        });
        self.base.clear();
        self.found.clear();
        match &out {
            Ok(()) => {
                self.in_tx = false;
                self.lock_next = false;
            }
            // Lost a race: the retry locks its scopes before deciding.
            Err(StoreError::Conflict(_)) => self.lock_next = true,
            Err(_) => {}
        }
        out
    }

    fn abort(&mut self) {
        self.base.clear();
        self.found.clear();
        self.known_scopes.clear();
        if !self.in_tx {
            return;
        }
        self.in_tx = false;
        if std::mem::take(&mut self.begin_pending) {
            return;
        }
        // A ROLLBACK stuck behind an abandoned statement is not waited
        // for long: the connection is closed instead.
        let bound = self.timeout.min(Duration::from_secs(1));
        let rolled_back = match self.conn.as_ref() {
            Some(c) => self
                .run_group(bound, async {
                    c.batch_execute("ROLLBACK").await.map_err(pg)
                })
                .is_ok(),
            None => false,
        };
        if !rolled_back {
            self.discard();
        }
    }

    fn prune(&mut self, cutoff_ms: u64, limit: usize) -> Result<Pruned, StoreError> {
        self.write(&[])?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let first = ResId::first_at(cutoff_ms).0.to_vec();
        let cutoff = sql_int(cutoff_ms);
        let (reservations, idempotency, allocations) = once!(self, c => async {
                let r = execute(
                    c,
                    "DELETE FROM reservations WHERE id IN (
                         SELECT id FROM reservations
                         WHERE id < $1 AND state <> 0 AND finalized_at < $2 ORDER BY id LIMIT $3)",
                    &[&first, &cutoff, &limit],
                )
                .await?;
                let i = execute(
                    c,
                    "DELETE FROM idempotency WHERE h IN (
                         SELECT h FROM idempotency WHERE at < $1 ORDER BY at LIMIT $2)",
                    &[&cutoff, &limit],
                )
                .await?;
                // Finished allocations, by a range of the oldest ids like
                // reservations, but never one an active hold still draws
                // from (its draw row goes when the hold ends).
                let a = execute(
                    c,
                    "DELETE FROM allocations WHERE id IN (
                         SELECT a.id FROM allocations a
                         WHERE a.id < $1 AND a.state <> 0 AND a.finalized_at < $2
                             AND NOT EXISTS (SELECT 1 FROM allocation_draws d WHERE d.alloc_id = a.id)
                         ORDER BY a.id LIMIT $3)",
                    &[&first, &cutoff, &limit],
                )
                .await?;
                Ok((r, i, a))
        })?;
        if reservations + idempotency + allocations > 0 {
            self.vacuum_if_due();
        }
        Ok(Pruned {
            reservations: usize::try_from(reservations).unwrap_or(usize::MAX),
            idempotency: usize::try_from(idempotency).unwrap_or(usize::MAX),
            allocations: usize::try_from(allocations).unwrap_or(usize::MAX),
        })
    }

    fn keys(&mut self) -> Result<Vec<StoredKey>, StoreError> {
        once!(self, c => async {
                let rows = query(
                    c,
                    "SELECT kid, secret, status, created_at FROM root_keys ORDER BY created_at, kid",
                    &[],
                )
                .await?;
                rows.iter()
                    .map(|r| {
                        let status: &str = r.try_get(2).map_err(pg)?;
                        Ok(StoredKey {
                            kid: r.try_get(0).map_err(pg)?,
                            secret: r.try_get(1).map_err(pg)?,
                            status: StoredKeyStatus::parse(status)
                                .ok_or_else(|| corrupt("key status"))?,
                            created_at: amount(r.try_get(3).map_err(pg)?)?,
                        })
                    })
                    .collect()
        })
    }

    fn rotate_key(&mut self, key: StoredKey) -> Result<(), StoreError> {
        let own = !self.in_tx;
        group_call!(self, c => async {
                // Rotations on several servers take turns, so each retires
                // the key the one before made active.
                query(c, "SELECT value FROM counters WHERE name = 'keys' FOR UPDATE", &[]).await?;
                execute(c, "UPDATE root_keys SET status = 'retired' WHERE status = 'active'", &[])
                    .await?;
                execute(
                    c,
                    "INSERT INTO root_keys (kid, secret, status, created_at) VALUES ($1, $2, 'active', $3)",
                    &[&key.kid, &key.secret, &sql_int(key.created_at)],
                )
                .await
                .map(drop)
        })?;
        if own { self.commit_group() } else { Ok(()) }
    }

    fn bootstrap_key(&mut self, key: StoredKey) -> Result<bool, StoreError> {
        self.write(&[])?;
        let added = group_call!(self, c => async {
                // Servers starting together take turns: the first adds the
                // key, the others find it.
                query(c, "SELECT value FROM counters WHERE name = 'keys' FOR UPDATE", &[]).await?;
                let active = query(c, "SELECT kid FROM root_keys WHERE status = 'active'", &[]).await?;
                if !active.is_empty() {
                    return Ok(false);
                }
                execute(
                    c,
                    "INSERT INTO root_keys (kid, secret, status, created_at) VALUES ($1, $2, 'active', $3)",
                    &[&key.kid, &key.secret, &sql_int(key.created_at)],
                )
                .await?;
                Ok(true)
        })?;
        self.commit_group()?;
        Ok(added)
    }

    fn ping(&mut self) -> Result<(), StoreError> {
        once!(self, c => async { c.simple_query("SELECT 1").await.map(drop).map_err(pg) })
    }

    fn shared(&self) -> bool {
        true
    }

    fn split(&mut self) -> Result<Box<dyn Store>, StoreError> {
        Ok(Box::new(Self {
            rt: self.rt.clone(),
            pool: self.pool.clone(),
            conn: None,
            local: None,
            config: self.config.clone(),
            vacuum: self.vacuum.clone(),
            in_tx: false,
            begin_pending: false,
            known_scopes: std::collections::HashSet::new(),
            base: HashMap::new(),
            lock_next: false,
            found: std::collections::HashSet::new(),
            timeout: self.timeout,
            deadline: None,
        }))
    }

    fn lock_scopes(
        &mut self,
        keys: &[(ScopeKey, u64)],
    ) -> Result<Vec<(ScopeKey, ScopeState)>, StoreError> {
        self.working_set(keys, &[], false, AllocLocks::default(), true)
            .map(|(s, ..)| s)
    }

    fn lock_working_set(
        &mut self,
        keys: &[(ScopeKey, u64)],
        blocks: &[BlockId],
        revokes: bool,
        allocs: AllocLocks<'_>,
    ) -> Result<WorkingSet, StoreError> {
        // Scopes are read without a lock unless the last try lost a race
        // for one: the write locks them and checks they still have room
        // (spec/http.md §4.8), so a hot scope is locked only from the
        // write to the commit, not while the group is decided.
        self.working_set(keys, blocks, revokes, allocs, self.lock_next)
    }

    fn read_scopes(&mut self, keys: &[ScopeKey]) -> Result<Vec<Option<ScopeState>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let blocks: Vec<&[u8]> = keys.iter().map(|k| k.block.0.as_slice()).collect();
        let units: Vec<&str> = keys.iter().map(|k| k.unit.as_str()).collect();
        let tools: Vec<&str> = keys.iter().map(|k| tools_column(&k.tools)).collect();
        let got: Vec<(ScopeKey, ScopeState)> = group_call!(self, c => async {
                query(c, SCOPE_READ, &[&blocks, &units, &tools])
                .await?
                .iter()
                .map(scope_row)
                .collect()
        })?;
        Ok(keys
            .iter()
            .map(|k| got.iter().find(|(g, _)| g == k).map(|(_, s)| *s))
            .collect())
    }

    fn revoked_among(&mut self, blocks: &[BlockId]) -> Result<Vec<(BlockId, u64)>, StoreError> {
        self.lock_working_set(&[], blocks, false, AllocLocks::default())
            .map(|(_, r, ..)| r)
    }

    fn lock_revocations(&mut self) -> Result<u64, StoreError> {
        self.lock_working_set(&[], &[], true, AllocLocks::default())
            .and_then(|(_, _, f, _)| f.ok_or_else(|| corrupt("revocations")))
    }

    fn lock_allocations(&mut self, locks: AllocLocks<'_>) -> Result<LockedAllocations, StoreError> {
        if locks.is_empty() {
            return Ok(LockedAllocations::default());
        }
        self.lock_working_set(&[], &[], false, locks)
            .map(|(.., a)| a)
    }

    fn allocations(&mut self, ids: &[AllocId]) -> Result<Vec<Option<Allocation>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<&[u8]> = ids.iter().map(|i| i.0.as_slice()).collect();
        // No lock: the rows are locked after the scopes, once the group
        // knows them (`lock_working_set`).
        let found = group_call!(self, c => async {
            allocation_rows(&query(c, "SELECT body FROM allocations WHERE id = ANY($1)", &[&raw]).await?)
        })?;
        let mut found: HashMap<AllocId, Allocation> =
            found.into_iter().map(|a| (a.id, a)).collect();
        Ok(ids.iter().map(|id| found.remove(id)).collect())
    }

    fn due_allocations(
        &mut self,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<Allocation>, StoreError> {
        let before = sql_int(before_ms);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        group_call!(self, c => async {
            allocation_rows(
                &query(
                    c,
                    "SELECT body FROM allocations WHERE state = 0 AND expires_at < $1
                     ORDER BY expires_at LIMIT $2",
                    &[&before, &limit],
                )
                .await?,
            )
        })
    }

    fn active_allocations(&mut self, tree: &BlockId) -> Result<Vec<Allocation>, StoreError> {
        let tree = tree.0.as_slice();
        group_call!(self, c => async {
            allocation_rows(
                &query(
                    c,
                    "SELECT body FROM allocations WHERE state = 0 AND tree = $1 ORDER BY id",
                    &[&tree],
                )
                .await?,
            )
        })
    }

    fn revocations_after(
        &mut self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, BlockId)>, StoreError> {
        let after = sql_int(after);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        group_call!(self, c => async {
                query(
                    c,
                    "SELECT seq, block_id FROM revocations WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&after, &limit],
                )
                .await?
                .iter()
                .map(|r| {
                    Ok((
                        amount(r.try_get(0).map_err(pg)?)?,
                        block_column(r.try_get(1).map_err(pg)?)?,
                    ))
                })
                .collect()
        })
    }

    fn due(&mut self, before_ms: u64, limit: usize) -> Result<Vec<Reservation>, StoreError> {
        let before = sql_int(before_ms);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        group_call!(self, c => async {
                query(
                    c,
                    &format!(
                        "SELECT {RESERVATION_COLUMNS} FROM reservations r JOIN holders h ON h.id = r.holder
                         WHERE r.state = 0 AND r.expires_at < $1
                         ORDER BY r.expires_at LIMIT $2 FOR UPDATE OF r SKIP LOCKED"
                    ),
                    &[&before, &limit],
                )
                .await?
                .iter()
                .map(reservation_row)
                .collect()
        })
    }

    fn holder_ids(&mut self, n: u64) -> Result<u64, StoreError> {
        let n = sql_int(n);
        let last = once!(self, c => async {
                let rows = query(
                    c,
                    "UPDATE counters SET value = value + $1 WHERE name = 'holders' RETURNING value",
                    &[&n],
                )
                .await?;
                rows.first()
                    .ok_or_else(|| corrupt("holder counter"))?
                    .try_get(0)
                    .map_err(pg)
        })?;
        // Ids start at 1: this server owns last - n + 1 ..= last.
        Ok(amount(last)?.saturating_sub(amount(n)?).saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caveat::Unit;
    use crate::ledger::{Holder, Recorded, ResState};
    use crate::store::fixtures::{allocation, key};

    /// A store on a schema of its own, dropped by the guard (opt-in:
    /// `BATON_TEST_POSTGRES`).
    struct TestSchema(String, String);

    impl Drop for TestSchema {
        fn drop(&mut self) {
            let _ = drop_schema(&self.0, &self.1);
        }
    }

    fn store(tag: &str) -> Option<(PgStore, TestSchema)> {
        let url = std::env::var("BATON_TEST_POSTGRES").ok()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let schema = format!("baton_unit_{tag}_{}_{nanos}", std::process::id());
        let guard = TestSchema(url.clone(), schema.clone());
        let mut opts = PgOptions::new(&url);
        opts.schema = schema;
        opts.pool_size = 2;
        Some((PgStore::connect(&opts).unwrap(), guard))
    }

    fn hold(ms: u64) -> Reservation {
        Reservation {
            id: ResId::new(ms, [1; 12]),
            holder: Arc::new(Holder {
                id: 1,
                chain: vec![BlockId([0; 32]), BlockId([1; 32]), BlockId([3; 32])],
                unit: Unit::Calls,
                scopes: vec![key(1), key(0)],
            }),
            amount: 1,
            charged: None,
            state: ResState::Active,
            expires_at: 50_000,
            finalized_at: None,
        }
    }

    /// Allocation rows are written, found by what each look-up asks for
    /// (child block and unit for the active ones, id whatever the state,
    /// the allocations a hold draws from, with its draw row), and only the
    /// finished ones no hold draws from are pruned.
    #[test]
    fn allocations_are_locked_by_child_id_and_draw_and_pruned_when_done() {
        let Some((mut s, _guard)) = store("alloc") else {
            return;
        };
        let old = allocation(100, 2, Some(150));
        let drawn = allocation(100, 3, Some(150));
        let active = allocation(100, 4, None);
        let young = allocation(600, 5, Some(700));
        let h = hold(130);
        let mut changes = vec![
            Change::Holder(h.holder.clone()),
            Change::Reservation(h.clone()),
            Change::Draw(h.id, Some((drawn.id, 1))),
        ];
        for a in [&old, &drawn, &active, &young] {
            changes.push(Change::Allocation(a.clone()));
        }
        s.write(&changes.iter().collect::<Vec<_>>()).unwrap();
        s.begin().unwrap();
        let children = [
            (BlockId([2; 32]), Unit::Calls),
            (BlockId([4; 32]), Unit::Calls),
            (BlockId([4; 32]), Unit::UsdMicrocents),
        ];
        let got = s
            .lock_allocations(AllocLocks {
                ids: &[young.id],
                children: &children,
                draws: &[h.id],
            })
            .unwrap();
        s.write(&[]).unwrap();
        // By id: `drawn` (drawn from), `active` (by child), `young` (by id);
        // not `old`: its child's allocation has ended.
        assert_eq!(
            got.allocations,
            vec![drawn.clone(), active.clone(), young.clone()]
        );
        assert_eq!(got.draws, vec![(h.id, drawn.id, 1)]);
        s.begin().unwrap();
        assert_eq!(s.due_allocations(10_001, 10).unwrap(), vec![active.clone()]);
        assert_eq!(s.due_allocations(10_000, 10).unwrap(), vec![]);
        assert_eq!(
            s.active_allocations(&BlockId([0; 32])).unwrap(),
            vec![active.clone()]
        );
        s.write(&[]).unwrap();
        let pruned = s.prune(500, 1000).unwrap();
        assert_eq!((pruned.allocations, pruned.reservations), (1, 0));
        s.begin().unwrap();
        let ids = [old.id, drawn.id, active.id, young.id];
        assert_eq!(
            s.allocations(&ids).unwrap(),
            vec![None, Some(drawn.clone()), Some(active), Some(young)]
        );
        s.write(&[]).unwrap();
        // Once the hold has ended, with its draw row, the allocation goes.
        s.write(&[&Change::Draw(h.id, None)]).unwrap();
        assert_eq!(s.prune(500, 1000).unwrap().allocations, 1);
        assert_eq!(s.prune(500, 1000).unwrap(), Pruned::default());
    }

    /// Two groups read the same scope without locks; the first writes it
    /// to its ceiling and commits. The second's write, made from what it
    /// read, no longer fits: it fails as a conflict and changes nothing;
    /// its retry reads locked, sees the new counters, and a change that
    /// fits is applied on top of the first (deltas, not overwrites).
    #[test]
    fn an_optimistic_scope_write_that_no_longer_fits_is_a_conflict() {
        let Some((mut a, _guard)) = store("optimistic") else {
            return;
        };
        let mut b = a.split().unwrap();
        let k = key(9);
        let state = |held| ScopeState {
            ceiling: 10,
            spent: 0,
            held,
        };
        // The row exists at zero.
        a.begin().unwrap();
        a.lock_working_set(&[(k.clone(), 10)], &[], false, AllocLocks::default())
            .unwrap();
        a.write(&[&Change::Scope(k.clone(), state(1))]).unwrap();
        // Both read held = 1, unlocked.
        a.begin().unwrap();
        let (ra, ..) = a
            .lock_working_set(&[(k.clone(), 10)], &[], false, AllocLocks::default())
            .unwrap();
        b.begin().unwrap();
        let (rb, ..) = b
            .lock_working_set(&[(k.clone(), 10)], &[], false, AllocLocks::default())
            .unwrap();
        assert_eq!((ra[0].1, rb[0].1), (state(1), state(1)));
        // `a` takes the rest; `b`, deciding on held = 1, wants 5 more.
        a.write(&[&Change::Scope(k.clone(), state(10))]).unwrap();
        let err = b.write(&[&Change::Scope(k.clone(), state(6))]).unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        b.abort();
        // The retry locks, sees held = 10, and its smaller change (a
        // release of 4) is applied to that, not to the stale 1.
        b.begin().unwrap();
        let (rb, ..) = b
            .lock_working_set(&[(k.clone(), 10)], &[], false, AllocLocks::default())
            .unwrap();
        assert_eq!(rb[0].1, state(10));
        b.write(&[&Change::Scope(k.clone(), state(6))]).unwrap();
        // A concurrent unlocked read and a change that still fits are
        // added to what is there: 6 + (7 - 6) from one, 6 - 2 from another.
        a.begin().unwrap();
        a.lock_working_set(&[(k.clone(), 10)], &[], false, AllocLocks::default())
            .unwrap();
        b.begin().unwrap();
        b.lock_working_set(&[(k.clone(), 10)], &[], false, AllocLocks::default())
            .unwrap();
        a.write(&[&Change::Scope(k.clone(), state(7))]).unwrap();
        b.write(&[&Change::Scope(k.clone(), state(4))]).unwrap();
        b.begin().unwrap();
        assert_eq!(b.read_scopes(&[k]).unwrap(), vec![Some(state(5))]);
        b.write(&[]).unwrap();
    }

    /// Two groups look up the same idempotency key and find nothing; the
    /// first records it. The second's insert of the same key waits for
    /// the first, then fails the group as a conflict (nothing of it is
    /// written), and its retry finds the first's record.
    #[test]
    fn a_key_recorded_by_another_group_since_the_look_up_is_a_conflict() {
        let Some((mut a, _guard)) = store("idem") else {
            return;
        };
        let mut b = a.split().unwrap();
        let k = IdemKey {
            tree: BlockId([1; 32]),
            key: "pay-1".into(),
        };
        let rec = |n: u8| IdemRecord {
            at: 1_000,
            fingerprint: [n; 16],
            outcome: Recorded::Refused(crate::ledger::LedgerError::NotFound),
            proof: None,
        };
        a.begin().unwrap();
        assert_eq!(a.idempotency(std::slice::from_ref(&k)).unwrap(), vec![None]);
        b.begin().unwrap();
        assert_eq!(b.idempotency(std::slice::from_ref(&k)).unwrap(), vec![None]);
        // `b` also changes a scope: it must not survive the conflict.
        b.lock_working_set(&[(key(3), 10)], &[], false, AllocLocks::default())
            .unwrap();
        a.write(&[&Change::Idempotency(k.clone(), rec(1))]).unwrap();
        let changed = ScopeState {
            ceiling: 10,
            spent: 2,
            held: 0,
        };
        let err = b
            .write(&[
                &Change::Scope(key(3), changed),
                &Change::Idempotency(k.clone(), rec(2)),
            ])
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        b.abort();
        b.begin().unwrap();
        assert_eq!(
            b.idempotency(std::slice::from_ref(&k)).unwrap(),
            vec![Some(rec(1))]
        );
        assert_eq!(b.read_scopes(&[key(3)]).unwrap(), vec![None]);
        b.write(&[]).unwrap();
    }

    /// The database closes a writer's idle connection (a restart, a
    /// fail-over, an idle timeout). The next group's first call finds it
    /// closed: a conflict, so the writer runs the group again, and the
    /// retry opens a new connection and succeeds. A write that carries the
    /// COMMIT is never made a conflict: had the connection closed after
    /// the COMMIT reached the database, the group would be in doubt.
    #[test]
    fn a_connection_the_database_closed_costs_the_next_group_a_retry_not_a_503() {
        let Ok(url) = std::env::var("BATON_TEST_POSTGRES") else {
            return;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("baton_unit_lost_{}_{nanos}", std::process::id());
        let _guard = TestSchema(url.clone(), name.clone());
        let sep = if url.contains('?') { '&' } else { '?' };
        let mut opts = PgOptions::new(&format!("{url}{sep}application_name={name}"));
        opts.schema = name.clone();
        opts.pool_size = 2;
        let mut a = PgStore::connect(&opts).unwrap();
        let terminate = || {
            let (url, name) = (url.clone(), name.clone());
            let work = async move {
                let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
                tokio::spawn(conn);
                let ours = "SELECT pid FROM pg_stat_activity WHERE application_name = $1";
                let sql = format!("SELECT pg_terminate_backend(pid) FROM ({ours}) p");
                client.query(&sql, &[&name]).await.unwrap();
                let sql = format!("SELECT count(*) FROM ({ours}) p");
                while client
                    .query_one(&sql, &[&name])
                    .await
                    .unwrap()
                    .get::<_, i64>(0)
                    > 0
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(work);
        };
        let k = IdemKey {
            tree: BlockId([1; 32]),
            key: "after-restart".into(),
        };
        a.begin().unwrap();
        assert_eq!(a.idempotency(std::slice::from_ref(&k)).unwrap(), vec![None]);
        a.write(&[]).unwrap();
        terminate();
        a.begin().unwrap();
        let err = a.idempotency(std::slice::from_ref(&k)).unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        a.abort();
        // The retry: a new connection, and the group goes through.
        a.begin().unwrap();
        assert_eq!(a.idempotency(std::slice::from_ref(&k)).unwrap(), vec![None]);
        let held = ScopeState {
            ceiling: 10,
            spent: 0,
            held: 1,
        };
        a.lock_working_set(&[(key(4), 10)], &[], false, AllocLocks::default())
            .unwrap();
        a.write(&[&Change::Scope(key(4), held)]).unwrap();
        // A write-only group whose connection is gone: 503, not retried.
        terminate();
        let rec = IdemRecord {
            at: 1_000,
            fingerprint: [7; 16],
            outcome: Recorded::Refused(crate::ledger::LedgerError::NotFound),
            proof: None,
        };
        a.begin().unwrap();
        let err = a
            .write(&[&Change::Idempotency(k.clone(), rec)])
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        a.abort();
        // The next group has a new connection and sees what was committed.
        a.begin().unwrap();
        assert_eq!(a.read_scopes(&[key(4)]).unwrap(), vec![Some(held)]);
        assert_eq!(a.idempotency(std::slice::from_ref(&k)).unwrap(), vec![None]);
        a.write(&[]).unwrap();
    }

    /// Where the database does not vacuum, the pruner's vacuum runs in the
    /// background, at most once per `VACUUM_EVERY`, and is visible in the
    /// database's statistics of the pruned tables.
    #[test]
    fn the_pruner_vacuums_once_per_interval_when_the_database_does_not() {
        let Some((s, guard)) = store("vacuum") else {
            return;
        };
        let counts = || {
            let schema = guard.1.clone();
            once!(s, c => async move {
                let row = c
                    .query_one(
                        "SELECT coalesce(sum(vacuum_count), 0)::int8, count(last_analyze)
                         FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'reservations'",
                        &[&schema],
                    )
                    .await
                    .map_err(pg)?;
                Ok((row.get::<_, i64>(0), row.get::<_, i64>(1)))
            })
            .unwrap()
        };
        assert_eq!(counts(), (0, 0));
        // Off: nothing runs.
        s.vacuum.needed.store(false, Ordering::Relaxed);
        s.vacuum_if_due();
        // On (as where autovacuum is off): one vacuum, however often asked.
        s.vacuum.needed.store(true, Ordering::Relaxed);
        for _ in 0..5 {
            s.vacuum_if_due();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // The statistics collector reports with a delay.
        while (counts() != (1, 1) || s.vacuum.running.load(Ordering::Acquire))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(counts(), (1, 1), "vacuumed and analyzed once");
        assert!(!s.vacuum.running.load(Ordering::Acquire), "done");
        s.vacuum_if_due();
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(counts(), (1, 1), "not again within the interval");
    }

    /// A server error shows its SQLSTATE and message, not just "db error"
    /// (opt-in: needs `BATON_TEST_POSTGRES`).
    #[tokio::test]
    async fn server_errors_are_described() {
        let Ok(url) = std::env::var("BATON_TEST_POSTGRES") else {
            return;
        };
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let e = client.simple_query("SELECT 1 / 0").await.unwrap_err();
        assert_eq!(e.to_string(), "db error");
        let StoreError::Unavailable(text) = pg(e) else {
            panic!("not unavailable");
        };
        assert!(text.contains("22012"), "{text}");
        assert!(text.contains("division by zero"), "{text}");
    }
}
