//! The embedded default store: SQLite in WAL mode with `synchronous=FULL`,
//! so every committed transaction survives `kill -9` and power loss.
//!
//! CHECK constraints restate the ledger's invariant (`spent + held <=
//! ceiling`, known states, a final state exactly when it has a final time)
//! as a backstop: a bug in the ledger makes the transaction fail rather
//! than overspend on disk.
//!
//! Layout (spec/http.md §4): history tables are written in time order
//! (reservation ids start with the clock; idempotency records are a rowid
//! log), so inserts land on the last pages. The only scattered writes are
//! the 16-byte idempotency-hash index entries. Start reads the scopes, the
//! revocations and the active reservations through a partial index, never
//! the history.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::codec::{
    RESERVATION_COLUMNS, RawReservation, amount, block_column, corrupt, decode_allocation,
    decode_outcome, encode_allocation, encode_chain, encode_outcome, encode_scopes, idem_hash,
    proof_column, scope_key, scope_state, sql_int, tools_column,
};
use super::{Pruned, Store, StoreError, StoredKey, StoredKeyStatus};
use crate::ledger::{
    ActiveState, AllocId, Allocation, Change, IdemKey, IdemRecord, ResId, Reservation,
};

/// The version of [`SCHEMA`] plus [`MIGRATIONS`], kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 5;

/// The version [`SCHEMA`] alone creates; [`MIGRATIONS`] take it on from there.
const BASE_VERSION: i64 = 3;

/// Each step after [`BASE_VERSION`], as (version it makes, SQL), in order.
/// A database at any earlier version from the base on is brought up to
/// date in one transaction per step.
const MIGRATIONS: &[(i64, &str)] = &[(4, PROOFS), (5, ALLOCATIONS)];

/// 4: the proof of possession behind an idempotency record (spec/http.md
/// §1.2.1): the proof id of a holder-bound request, NULL for a bearer one.
const PROOFS: &str =
    "ALTER TABLE idempotency ADD COLUMN proof BLOB CHECK (proof IS NULL OR length(proof) = 32);";

/// 5: guaranteed sub-budgets (spec/http.md §3.8, §4.3). An allocation row
/// keeps its state, times and its CBOR body (`codec::encode_allocation`);
/// only active ones are read at start, through the partial index. A draw
/// row exists exactly while a reservation drawing from an allocation is
/// active, written in the same transaction as the reservation and the
/// allocation, so a crash never separates them.
const ALLOCATIONS: &str = "
CREATE TABLE allocations (
    id BLOB PRIMARY KEY CHECK (length(id) = 18),
    state SMALLINT NOT NULL CHECK (state IN (0, 1, 2, 3)),
    expires_at BIGINT NOT NULL,
    finalized_at BIGINT,
    body BLOB NOT NULL,
    CHECK ((state = 0) = (finalized_at IS NULL))
) WITHOUT ROWID;
CREATE INDEX allocations_active ON allocations (state) WHERE state = 0;
CREATE TABLE allocation_draws (
    res_id BLOB PRIMARY KEY CHECK (length(res_id) = 18),
    alloc_id BLOB NOT NULL CHECK (length(alloc_id) = 18),
    drawn BIGINT NOT NULL CHECK (drawn > 0)
) WITHOUT ROWID;
";

const SCHEMA: &str = "
CREATE TABLE scopes (
    block_id BLOB NOT NULL CHECK (length(block_id) = 32),
    unit TEXT NOT NULL,
    tools TEXT NOT NULL, -- '' for a budget on every action
    ceiling BIGINT NOT NULL CHECK (ceiling >= 0),
    spent BIGINT NOT NULL CHECK (spent >= 0),
    held BIGINT NOT NULL CHECK (held >= 0),
    PRIMARY KEY (block_id, unit, tools),
    CHECK (spent + held <= ceiling)
) WITHOUT ROWID;
CREATE TABLE holders (
    id INTEGER PRIMARY KEY,
    chain BLOB NOT NULL CHECK (length(chain) > 0 AND length(chain) % 32 = 0),
    unit TEXT NOT NULL,
    scopes BLOB NOT NULL
);
CREATE TABLE reservations (
    id BLOB PRIMARY KEY CHECK (length(id) = 18),
    holder BIGINT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    charged BIGINT CHECK (charged IS NULL OR charged >= 0),
    state SMALLINT NOT NULL CHECK (state IN (0, 1, 2, 3)),
    expires_at BIGINT NOT NULL,
    finalized_at BIGINT,
    CHECK ((state = 0) = (finalized_at IS NULL)),
    CHECK ((state = 1) = (charged IS NOT NULL))
) WITHOUT ROWID;
-- Only active reservations: what start loads, whatever the history.
CREATE INDEX reservations_active ON reservations (state) WHERE state = 0;
CREATE TABLE revocations (
    seq BIGINT PRIMARY KEY,
    tree BLOB NOT NULL CHECK (length(tree) = 32),
    block_id BLOB NOT NULL UNIQUE CHECK (length(block_id) = 32)
);
-- A rowid log in time order (pruned from the front), with one small
-- unique index for the point look-ups.
CREATE TABLE idempotency (
    h BLOB NOT NULL UNIQUE CHECK (length(h) = 16),
    at BIGINT NOT NULL,
    fingerprint BLOB NOT NULL CHECK (length(fingerprint) = 16),
    outcome BLOB NOT NULL
);
CREATE TABLE root_keys (
    kid TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'retired')),
    created_at BIGINT NOT NULL
);
";

/// SQLite, one connection, owned by the ledger's writer.
///
/// WAL checkpoints stay on this connection (SQLite's automatic checkpoint).
/// Moving them to another thread was measured and refused: under sustained
/// load a passive checkpoint never catches up with the writer, so the WAL
/// is never restarted and grows without bound (1.3 GB in 10 s at 6k pairs/s).
pub struct SqliteStore {
    conn: Connection,
    /// A group's transaction is open: look-ups began it, its write or
    /// [`Store::abort`] ends it.
    in_group: bool,
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn reservation_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawReservation> {
    Ok(RawReservation {
        id: r.get(0)?,
        amount: r.get(1)?,
        charged: r.get(2)?,
        state: r.get(3)?,
        expires_at: r.get(4)?,
        finalized_at: r.get(5)?,
        holder: r.get(6)?,
        chain: r.get(7)?,
        unit: r.get(8)?,
        scopes: r.get(9)?,
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::init(Connection::open(path).map_err(unavailable)?)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(unavailable)?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        // WAL + FULL: a commit is durable once it returns (fsync of the WAL).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(unavailable)?;
        // 64 MiB of page cache: the hot index pages stay in memory.
        conn.pragma_update(None, "cache_size", -65536)
            .map_err(unavailable)?;
        // Checkpoint every 4000 pages (16 MiB) rather than SQLite's 1000: hot
        // pages (the scope rows, the last page of each log) are copied once
        // per checkpoint however often they were rewritten.
        conn.pragma_update(None, "wal_autocheckpoint", 4000)
            .map_err(unavailable)?;
        // After a checkpoint, truncate a WAL that grew past 64 MiB.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
            .map_err(unavailable)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(unavailable)?;
        // The schema's version lives in SQLite's user_version; a database
        // written by another version is refused rather than misread.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(unavailable)?;
        match version {
            0 => {
                let tx = conn.unchecked_transaction().map_err(unavailable)?;
                tx.execute_batch(SCHEMA).map_err(unavailable)?;
                for (_, sql) in MIGRATIONS {
                    tx.execute_batch(sql).map_err(unavailable)?;
                }
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                    .map_err(unavailable)?;
                tx.commit().map_err(unavailable)?;
            }
            SCHEMA_VERSION => {}
            found if (BASE_VERSION..SCHEMA_VERSION).contains(&found) => {
                for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
                    let tx = conn.unchecked_transaction().map_err(unavailable)?;
                    tx.execute_batch(sql).map_err(unavailable)?;
                    tx.pragma_update(None, "user_version", version)
                        .map_err(unavailable)?;
                    tx.commit().map_err(unavailable)?;
                }
            }
            found => {
                return Err(StoreError::Version {
                    found,
                    expected: SCHEMA_VERSION,
                });
            }
        }
        Ok(Self {
            conn,
            in_group: false,
        })
    }

    fn reservation(&self, id: &ResId) -> Result<Option<Reservation>, StoreError> {
        let mut q = self
            .conn
            .prepare_cached(&format!(
                "SELECT {RESERVATION_COLUMNS} FROM reservations r JOIN holders h ON h.id = r.holder WHERE r.id = ?1"
            ))
            .map_err(unavailable)?;
        q.query_row([id.0.as_slice()], reservation_row)
            .optional()
            .map_err(unavailable)?
            .map(RawReservation::parse)
            .transpose()
    }

    fn idem(&self, key: &IdemKey) -> Result<Option<IdemRecord>, StoreError> {
        let mut q = self
            .conn
            .prepare_cached("SELECT at, fingerprint, outcome, proof FROM idempotency WHERE h = ?1")
            .map_err(unavailable)?;
        let row = q
            .query_row([idem_hash(key).as_slice()], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Option<Vec<u8>>>(3)?,
                ))
            })
            .optional()
            .map_err(unavailable)?;
        row.map(|(at, fp, outcome, proof)| {
            Ok(IdemRecord {
                at: amount(at)?,
                fingerprint: fp
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt("fingerprint"))?,
                outcome: decode_outcome(&outcome)?,
                proof: proof_column(proof.as_deref())?,
            })
        })
        .transpose()
    }
}

impl SqliteStore {
    /// Opens the group's transaction if it is not open yet. IMMEDIATE
    /// takes the write lock up front, so the commit cannot fail on an
    /// upgrade; the group's look-ups and its writes share one transaction
    /// (a read transaction per look-up batch measured slower).
    fn begin_group(&mut self) -> Result<(), StoreError> {
        if !self.in_group {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(unavailable)?;
            self.in_group = true;
        }
        Ok(())
    }

    fn commit_group(&mut self) -> Result<(), StoreError> {
        self.in_group = false;
        self.conn.execute_batch("COMMIT").map_err(|e| {
            // A failed COMMIT may leave the transaction open.
            let _ = self.conn.execute_batch("ROLLBACK");
            unavailable(e)
        })
    }

    fn write_rows(&self, changes: &[&Change]) -> Result<(), StoreError> {
        {
            let mut scope = self.conn
                .prepare_cached(
                    "INSERT INTO scopes (block_id, unit, tools, ceiling, spent, held) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (block_id, unit, tools) DO UPDATE SET spent = excluded.spent, held = excluded.held",
                )
                .map_err(unavailable)?;
            let mut holder = self
                .conn
                .prepare_cached(
                    "INSERT INTO holders (id, chain, unit, scopes) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(unavailable)?;
            let mut res = self.conn
                .prepare_cached(
                    "INSERT INTO reservations (id, holder, amount, charged, state, expires_at, finalized_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (id) DO UPDATE SET charged = excluded.charged, state = excluded.state,
                         expires_at = excluded.expires_at, finalized_at = excluded.finalized_at",
                )
                .map_err(unavailable)?;
            // A key whose record was pruned may be recorded again; the
            // upsert keeps that from failing a whole group.
            let mut idem = self.conn
                .prepare_cached(
                    "INSERT INTO idempotency (h, at, fingerprint, outcome, proof) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (h) DO UPDATE SET at = excluded.at, fingerprint = excluded.fingerprint,
                         outcome = excluded.outcome, proof = excluded.proof",
                )
                .map_err(unavailable)?;
            let mut revoke = self
                .conn
                .prepare_cached("INSERT INTO revocations (seq, tree, block_id) VALUES (?1, ?2, ?3)")
                .map_err(unavailable)?;
            let mut alloc = self.conn
                .prepare_cached(
                    "INSERT INTO allocations (id, state, expires_at, finalized_at, body) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (id) DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at,
                         finalized_at = excluded.finalized_at, body = excluded.body",
                )
                .map_err(unavailable)?;
            let mut draw = self.conn
                .prepare_cached(
                    "INSERT INTO allocation_draws (res_id, alloc_id, drawn) VALUES (?1, ?2, ?3)
                     ON CONFLICT (res_id) DO UPDATE SET alloc_id = excluded.alloc_id, drawn = excluded.drawn",
                )
                .map_err(unavailable)?;
            let mut undraw = self
                .conn
                .prepare_cached("DELETE FROM allocation_draws WHERE res_id = ?1")
                .map_err(unavailable)?;
            for change in changes {
                match *change {
                    Change::Scope(k, s) => scope
                        .execute(params![
                            k.block.0.as_slice(),
                            k.unit.as_str(),
                            tools_column(&k.tools),
                            sql_int(s.ceiling),
                            sql_int(s.spent),
                            sql_int(s.held)
                        ])
                        .map(drop)
                        .map_err(unavailable),
                    Change::Holder(h) => {
                        let scopes = encode_scopes(&h.scopes, &h.chain)?;
                        holder
                            .execute(params![
                                sql_int(h.id),
                                encode_chain(&h.chain),
                                h.unit.as_str(),
                                scopes
                            ])
                            .map(drop)
                            .map_err(unavailable)
                    }
                    Change::Reservation(r) => res
                        .execute(params![
                            r.id.0.as_slice(),
                            sql_int(r.holder.id),
                            sql_int(r.amount),
                            r.charged.map(sql_int),
                            r.state.code(),
                            sql_int(r.expires_at),
                            r.finalized_at.map(sql_int)
                        ])
                        .map(drop)
                        .map_err(unavailable),
                    Change::Idempotency(k, rec) => idem
                        .execute(params![
                            idem_hash(k).as_slice(),
                            sql_int(rec.at),
                            rec.fingerprint.as_slice(),
                            encode_outcome(&rec.outcome),
                            rec.proof.as_ref().map(|p| p.0.as_slice())
                        ])
                        .map(drop)
                        .map_err(unavailable),
                    Change::Allocation(a) => alloc
                        .execute(params![
                            a.id.0.as_slice(),
                            a.state.code(),
                            sql_int(a.expires_at),
                            a.finalized_at.map(sql_int),
                            encode_allocation(a)
                        ])
                        .map(drop)
                        .map_err(unavailable),
                    Change::Draw(r, Some((a, d))) => draw
                        .execute(params![r.0.as_slice(), a.0.as_slice(), sql_int(*d)])
                        .map(drop)
                        .map_err(unavailable),
                    Change::Draw(r, None) => undraw
                        .execute(params![r.0.as_slice()])
                        .map(drop)
                        .map_err(unavailable),
                    Change::Revoke { tree, block, seq } => revoke
                        .execute(params![
                            sql_int(*seq),
                            tree.0.as_slice(),
                            block.0.as_slice()
                        ])
                        .map(drop)
                        .map_err(unavailable),
                }?;
            }
        }
        Ok(())
    }
}

impl Store for SqliteStore {
    fn load_active(&mut self) -> Result<ActiveState, StoreError> {
        let mut state = ActiveState::default();
        let c = &self.conn;
        let mut q = c
            .prepare("SELECT block_id, unit, tools, ceiling, spent, held FROM scopes")
            .map_err(unavailable)?;
        let rows = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .map_err(unavailable)?;
        for row in rows {
            let (b, unit, tools, ceiling, spent, held) = row.map_err(unavailable)?;
            state.scopes.push((
                scope_key(&b, &unit, &tools)?,
                scope_state(ceiling, spent, held)?,
            ));
        }
        // Through the partial index: only the active rows are read.
        let mut q = c
            .prepare(&format!(
                "SELECT {RESERVATION_COLUMNS} FROM reservations r JOIN holders h ON h.id = r.holder WHERE r.state = 0"
            ))
            .map_err(unavailable)?;
        let rows = q.query_map([], reservation_row).map_err(unavailable)?;
        for row in rows {
            state.reservations.push(row.map_err(unavailable)?.parse()?);
        }
        let mut q = c
            .prepare("SELECT block_id, seq FROM revocations")
            .map_err(unavailable)?;
        let rows = q
            .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))
            .map_err(unavailable)?;
        for row in rows {
            let (b, seq) = row.map_err(unavailable)?;
            state.revoked.push((block_column(&b)?, amount(seq)?));
        }
        let max: i64 = c
            .query_row("SELECT coalesce(max(id), 0) FROM holders", [], |r| r.get(0))
            .map_err(unavailable)?;
        state.next_holder = amount(max)?.saturating_add(1);
        // Active allocations only, through the partial index, and what the
        // active reservations draw from them.
        let mut q = c
            .prepare("SELECT body FROM allocations WHERE state = 0")
            .map_err(unavailable)?;
        let rows = q
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(unavailable)?;
        for row in rows {
            state
                .allocations
                .push(decode_allocation(&row.map_err(unavailable)?)?);
        }
        let mut q = c
            .prepare("SELECT res_id, alloc_id, drawn FROM allocation_draws")
            .map_err(unavailable)?;
        let rows = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(unavailable)?;
        for row in rows {
            let (r, a, d) = row.map_err(unavailable)?;
            state.draws.push((
                ResId::from_slice(&r).ok_or_else(|| corrupt("draw reservation"))?,
                AllocId::from_slice(&a).ok_or_else(|| corrupt("draw allocation"))?,
                amount(d)?,
            ));
        }
        Ok(state)
    }

    fn allocations(&mut self, ids: &[AllocId]) -> Result<Vec<Option<Allocation>>, StoreError> {
        self.begin_group()?;
        let mut q = self
            .conn
            .prepare_cached("SELECT body FROM allocations WHERE id = ?1")
            .map_err(unavailable)?;
        ids.iter()
            .map(|id| {
                q.query_row([id.0.as_slice()], |r| r.get::<_, Vec<u8>>(0))
                    .optional()
                    .map_err(unavailable)?
                    .map(|b| decode_allocation(&b))
                    .transpose()
            })
            .collect()
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        self.begin_group()
    }

    fn idempotency(&mut self, keys: &[IdemKey]) -> Result<Vec<Option<IdemRecord>>, StoreError> {
        self.begin_group()?;
        keys.iter().map(|k| self.idem(k)).collect()
    }

    fn reservations(&mut self, ids: &[ResId]) -> Result<Vec<Option<Reservation>>, StoreError> {
        self.begin_group()?;
        ids.iter().map(|id| self.reservation(id)).collect()
    }

    fn abort(&mut self) {
        if std::mem::take(&mut self.in_group) {
            // Nothing was written; a failed rollback leaves nothing either.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    fn write(&mut self, changes: &[&Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            // Commit, not roll back: a key rotation may have joined the group.
            return if self.in_group {
                self.commit_group()
            } else {
                Ok(())
            };
        }
        self.begin_group()?;
        match self.write_rows(changes) {
            Ok(()) => self.commit_group(),
            Err(e) => {
                self.abort();
                Err(e)
            }
        }
    }

    fn prune(&mut self, cutoff_ms: u64, limit: usize) -> Result<Pruned, StoreError> {
        let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
        // Its own transaction, after whatever group was open.
        self.write(&[])?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        // Reservations made before the cutoff (ids start with the clock),
        // finalized before it: a range scan of the oldest ids.
        let reservations = tx
            .execute(
                "DELETE FROM reservations WHERE id IN (
                     SELECT id FROM reservations
                     WHERE id < ?1 AND state <> 0 AND finalized_at < ?2 LIMIT ?3)",
                params![
                    ResId::first_at(cutoff_ms).0.as_slice(),
                    sql_int(cutoff_ms),
                    limit_sql
                ],
            )
            .map_err(unavailable)?;
        // The log is in time order: find the last old row among the first
        // `limit`, stopping at the first young one, and cut the front.
        let last: Option<i64> = {
            let mut q = tx
                .prepare_cached("SELECT rowid, at FROM idempotency ORDER BY rowid LIMIT ?1")
                .map_err(unavailable)?;
            let mut rows = q.query([limit_sql]).map_err(unavailable)?;
            let mut last = None;
            while let Some(row) = rows.next().map_err(unavailable)? {
                let (rowid, at): (i64, i64) = (
                    row.get(0).map_err(unavailable)?,
                    row.get(1).map_err(unavailable)?,
                );
                if at >= sql_int(cutoff_ms) {
                    break;
                }
                last = Some(rowid);
            }
            last
        };
        let idempotency = match last {
            Some(rowid) => tx
                .execute("DELETE FROM idempotency WHERE rowid <= ?1", [rowid])
                .map_err(unavailable)?,
            None => 0,
        };
        // Finished allocations, by a range of the oldest ids like
        // reservations, but never one an active hold still draws from (its
        // draw row goes when the hold ends). The draw table holds only
        // active holds' rows: the `NOT IN` list is read once.
        let allocations = tx
            .execute(
                "DELETE FROM allocations WHERE id IN (
                     SELECT id FROM allocations
                     WHERE id < ?1 AND state <> 0 AND finalized_at < ?2
                         AND id NOT IN (SELECT alloc_id FROM allocation_draws)
                     LIMIT ?3)",
                params![
                    ResId::first_at(cutoff_ms).0.as_slice(),
                    sql_int(cutoff_ms),
                    limit_sql
                ],
            )
            .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        Ok(Pruned {
            reservations,
            idempotency,
            allocations,
        })
    }

    fn keys(&mut self) -> Result<Vec<StoredKey>, StoreError> {
        let mut q = self
            .conn
            .prepare(
                "SELECT kid, secret, status, created_at FROM root_keys ORDER BY created_at, kid",
            )
            .map_err(unavailable)?;
        let rows = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(unavailable)?;
        rows.map(|row| {
            let (kid, secret, status, created_at) = row.map_err(unavailable)?;
            Ok(StoredKey {
                kid,
                secret,
                status: StoredKeyStatus::parse(&status).ok_or_else(|| corrupt("key status"))?,
                created_at: amount(created_at)?,
            })
        })
        .collect()
    }

    fn rotate_key(&mut self, key: StoredKey) -> Result<(), StoreError> {
        // Inside an open group, the key commits with the group's rows.
        let own = !self.in_group;
        self.begin_group()?;
        let done = self
            .conn
            .execute("UPDATE root_keys SET status = 'retired'", [])
            .and_then(|_| {
                self.conn.execute(
                    "INSERT INTO root_keys (kid, secret, status, created_at) VALUES (?1, ?2, 'active', ?3)",
                    params![key.kid, key.secret, sql_int(key.created_at)],
                )
            })
            .map_err(unavailable);
        match (done, own) {
            (Ok(_), true) => self.commit_group(),
            (Ok(_), false) => Ok(()),
            (Err(e), true) => {
                self.abort();
                Err(e)
            }
            // The group's owner decides what happens to its transaction.
            (Err(e), false) => Err(e),
        }
    }

    fn ping(&mut self) -> Result<(), StoreError> {
        self.conn
            .query_row("SELECT 1", [], |_| Ok(()))
            .optional()
            .map(drop)
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::caveat::Unit;
    use crate::keys::BlockId;
    use crate::ledger::{Holder, Recorded, ResState, ScopeState, Snapshot};
    use crate::proof::ProofId;
    use crate::store::fixtures::{allocation, key};

    fn write(s: &mut SqliteStore, changes: &[Change]) -> Result<(), StoreError> {
        s.write(&changes.iter().collect::<Vec<_>>())
    }

    fn holder() -> Arc<Holder> {
        Arc::new(Holder {
            id: 1,
            chain: vec![BlockId([0; 32]), BlockId([1; 32])],
            unit: Unit::Calls,
            scopes: vec![key(1), key(0)],
        })
    }

    fn res(ms: u64, state: ResState, finalized_at: Option<u64>) -> Reservation {
        Reservation {
            id: ResId::new(ms, [1; 12]),
            holder: holder(),
            amount: 3,
            charged: (state == ResState::Committed).then_some(2),
            state,
            expires_at: 1_000,
            finalized_at,
        }
    }

    fn idem(key: &str, at: u64) -> (IdemKey, IdemRecord) {
        (
            IdemKey {
                tree: BlockId([0; 32]),
                key: key.into(),
            },
            IdemRecord {
                fingerprint: [7; 16],
                at,
                outcome: Recorded::Done {
                    created: true,
                    snapshot: Snapshot {
                        id: ResId::new(10, [1; 12]),
                        state: ResState::Active,
                        amount: 3,
                        charged: None,
                        expires_at: 1_000,
                        counters: vec![ScopeState {
                            ceiling: 0, // not stored: the ledger restores it
                            spent: 0,
                            held: 3,
                        }],
                    },
                },
                // One record with a proof id, one without: both read back.
                proof: (key == "k1").then_some(ProofId([9; 32])),
            },
        )
    }

    fn scope_rows() -> [Change; 2] {
        [
            Change::Scope(
                key(0),
                ScopeState {
                    ceiling: 10,
                    spent: 0,
                    held: 3,
                },
            ),
            Change::Scope(
                key(1),
                ScopeState {
                    ceiling: 5,
                    spent: 0,
                    held: 3,
                },
            ),
        ]
    }

    #[test]
    fn rows_round_trip_and_start_loads_only_active_state() {
        let mut s = SqliteStore::in_memory().unwrap();
        let (k, rec) = idem("k1", 10);
        let [a, b] = scope_rows();
        write(
            &mut s,
            &[
                a,
                b,
                Change::Holder(holder()),
                Change::Reservation(res(10, ResState::Active, None)),
                Change::Reservation(res(11, ResState::Active, None)),
                Change::Idempotency(k.clone(), rec.clone()),
                Change::Revoke {
                    tree: BlockId([0; 32]),
                    block: BlockId([9; 32]),
                    seq: 1,
                },
            ],
        )
        .unwrap();
        let committed = res(11, ResState::Committed, Some(20));
        write(&mut s, &[Change::Reservation(committed.clone())]).unwrap();
        let state = s.load_active().unwrap();
        assert_eq!(state.scopes.len(), 2);
        assert_eq!(state.reservations, vec![res(10, ResState::Active, None)]);
        assert_eq!(state.revoked, vec![(BlockId([9; 32]), 1)]);
        assert_eq!(state.next_holder, 2);
        // History is read on demand, by key.
        assert_eq!(
            s.reservations(&[committed.id, ResId::new(99, [0; 12])])
                .unwrap(),
            vec![Some(committed), None]
        );
        let other = idem("nope", 0).0;
        assert_eq!(s.idempotency(&[k, other]).unwrap(), vec![Some(rec), None]);
    }

    #[test]
    fn a_version_3_database_is_upgraded_in_place() {
        let dir = std::env::temp_dir().join(format!("baton-v3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.db");
        let _ = std::fs::remove_file(&path);
        let (old_key, old_rec) = idem("old", 10);
        {
            // What version 3 was: the base schema, a record without a
            // proof column, written as that version wrote it.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA).unwrap();
            c.pragma_update(None, "user_version", BASE_VERSION).unwrap();
            c.execute(
                "INSERT INTO idempotency (h, at, fingerprint, outcome) VALUES (?1, ?2, ?3, ?4)",
                params![
                    idem_hash(&old_key).as_slice(),
                    sql_int(old_rec.at),
                    old_rec.fingerprint.as_slice(),
                    encode_outcome(&old_rec.outcome)
                ],
            )
            .unwrap();
        }
        let mut s = SqliteStore::open(&path).unwrap();
        let version: i64 = s
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let (k, rec) = idem("k1", 20);
        write(&mut s, &[Change::Idempotency(k.clone(), rec.clone())]).unwrap();
        assert_eq!(
            s.idempotency(&[old_key, k]).unwrap(),
            vec![
                Some(IdemRecord {
                    proof: None,
                    ..old_rec
                }),
                Some(rec)
            ]
        );
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn check_constraint_refuses_overspend_and_the_whole_transaction() {
        let mut s = SqliteStore::in_memory().unwrap();
        let err = write(
            &mut s,
            &[
                Change::Holder(holder()),
                Change::Reservation(res(10, ResState::Active, None)),
                Change::Scope(
                    key(0),
                    ScopeState {
                        ceiling: 10,
                        spent: 8,
                        held: 3,
                    },
                ),
            ],
        );
        assert!(matches!(err, Err(StoreError::Unavailable(_))));
        let state = s.load_active().unwrap();
        assert!(
            state.scopes.is_empty() && state.reservations.is_empty(),
            "a failed transaction left rows behind"
        );
        // A final state needs its final time.
        let bad = Reservation {
            finalized_at: None,
            ..res(10, ResState::Released, None)
        };
        assert!(write(&mut s, &[Change::Reservation(bad)]).is_err());
    }

    #[test]
    fn prune_drops_old_history_only() {
        let mut s = SqliteStore::in_memory().unwrap();
        let [a, b] = scope_rows();
        let old = res(100, ResState::Released, Some(150));
        let late = res(120, ResState::Committed, Some(900));
        let active = res(130, ResState::Active, None);
        let young = res(600, ResState::Expired, Some(700));
        write(
            &mut s,
            &[
                a,
                b,
                Change::Holder(holder()),
                Change::Reservation(old.clone()),
                Change::Reservation(late.clone()),
                Change::Reservation(active.clone()),
                Change::Reservation(young.clone()),
                Change::Idempotency(idem("a", 100).0, idem("a", 100).1),
                Change::Idempotency(idem("b", 200).0, idem("b", 200).1),
                Change::Idempotency(idem("c", 600).0, idem("c", 600).1),
            ],
        )
        .unwrap();
        let pruned = s.prune(500, 1000).unwrap();
        assert_eq!(
            pruned,
            Pruned {
                reservations: 1,
                idempotency: 2,
                allocations: 0
            }
        );
        let ids = [old.id, late.id, active.id, young.id];
        assert_eq!(
            s.reservations(&ids).unwrap(),
            vec![None, Some(late), Some(active), Some(young)]
        );
        let keys = [idem("a", 0).0, idem("b", 0).0, idem("c", 0).0];
        let got = s.idempotency(&keys).unwrap();
        assert!(got[0].is_none() && got[1].is_none() && got[2].is_some());
        // The limit bounds one call; nothing left is due.
        assert_eq!(s.prune(500, 1000).unwrap(), Pruned::default());
        // A pruned key may be recorded again.
        let (k, rec) = idem("a", 800);
        write(&mut s, &[Change::Idempotency(k.clone(), rec.clone())]).unwrap();
        assert_eq!(s.idempotency(&[k]).unwrap(), vec![Some(rec)]);
    }

    #[test]
    fn prune_drops_finished_allocations_no_hold_draws_from() {
        let mut s = SqliteStore::in_memory().unwrap();
        let old = allocation(100, 2, Some(150));
        let drawn = allocation(100, 3, Some(150));
        let active = allocation(100, 4, None);
        let late = allocation(120, 5, Some(900));
        let young = allocation(600, 6, Some(700));
        let hold = res(130, ResState::Active, None);
        let (k, mut rec) = idem("alloc", 100);
        rec.outcome = Recorded::Allocation {
            created: true,
            alloc: old.clone(),
        };
        let [a, b] = scope_rows();
        write(
            &mut s,
            &[
                a,
                b,
                Change::Holder(holder()),
                Change::Reservation(hold.clone()),
                Change::Allocation(old.clone()),
                Change::Allocation(drawn.clone()),
                Change::Allocation(active.clone()),
                Change::Allocation(late.clone()),
                Change::Allocation(young.clone()),
                // An active hold still draws from an allocation that ended.
                Change::Draw(hold.id, Some((drawn.id, 1))),
                Change::Idempotency(k.clone(), rec),
            ],
        )
        .unwrap();
        assert_eq!(
            s.prune(500, 1000).unwrap(),
            Pruned {
                reservations: 0,
                idempotency: 1,
                allocations: 1
            }
        );
        let ids = [old.id, drawn.id, active.id, late.id, young.id];
        assert_eq!(
            s.allocations(&ids).unwrap(),
            vec![
                None,
                Some(drawn.clone()),
                Some(active),
                Some(late),
                Some(young)
            ]
        );
        assert_eq!(s.idempotency(&[k]).unwrap(), vec![None]);
        // Once the hold has ended (its draw row with it), the allocation goes.
        write(&mut s, &[Change::Draw(hold.id, None)]).unwrap();
        assert_eq!(s.prune(500, 1000).unwrap().allocations, 1);
        assert_eq!(s.allocations(&[drawn.id]).unwrap(), vec![None]);
        assert_eq!(s.prune(500, 1000).unwrap(), Pruned::default());
    }

    #[test]
    fn key_rotation_retires_the_old_key() {
        let mut s = SqliteStore::in_memory().unwrap();
        let k = |kid: &str, at| StoredKey {
            kid: kid.into(),
            secret: format!("secret-{kid}"),
            status: StoredKeyStatus::Active,
            created_at: at,
        };
        s.rotate_key(k("a", 1)).unwrap();
        s.rotate_key(k("b", 2)).unwrap();
        let keys = s.keys().unwrap();
        assert_eq!(
            keys.iter()
                .map(|k| (k.kid.as_str(), k.status))
                .collect::<Vec<_>>(),
            vec![
                ("a", StoredKeyStatus::Retired),
                ("b", StoredKeyStatus::Active)
            ]
        );
    }

    #[test]
    fn a_version_3_database_is_migrated_in_place() {
        let dir = std::env::temp_dir().join(format!("baton-m-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.db");
        let _ = std::fs::remove_file(&path);
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA).unwrap();
            c.pragma_update(None, "user_version", BASE_VERSION).unwrap();
        }
        let mut s = SqliteStore::open(&path).unwrap();
        let v: i64 = s
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        assert!(s.load_active().unwrap().allocations.is_empty());
        assert_eq!(
            s.allocations(&[AllocId::new(1, [0; 12])]).unwrap(),
            vec![None]
        );
        s.abort();
        drop(s);
        // Opening again finds it current.
        SqliteStore::open(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_database_of_another_version_is_refused() {
        let dir = std::env::temp_dir().join(format!("baton-v-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.db");
        let _ = std::fs::remove_file(&path);
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 2).unwrap();
        }
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::Version {
                found: 2,
                expected: SCHEMA_VERSION
            })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
