//! The embedded default store: SQLite in WAL mode with `synchronous=FULL`,
//! so every committed transaction survives `kill -9` and power loss.
//!
//! CHECK constraints restate the ledger's invariant (`spent + held <=
//! ceiling`, known states) as a backstop: a bug in the ledger makes the
//! transaction fail rather than overspend on disk.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Snapshot, Store, StoreError, StoredKey};
use crate::keys::BlockId;
use crate::ledger::{Change, IdemKey, IdemRecord, ResState, Reservation, ScopeKey, ScopeState};

/// The version of [`SCHEMA`], kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS scopes (
    block_id TEXT NOT NULL,
    unit TEXT NOT NULL,
    tools TEXT NOT NULL,
    ceiling BIGINT NOT NULL CHECK (ceiling >= 0),
    spent BIGINT NOT NULL CHECK (spent >= 0),
    held BIGINT NOT NULL CHECK (held >= 0),
    PRIMARY KEY (block_id, unit, tools),
    CHECK (spent + held <= ceiling)
) WITHOUT ROWID; -- small rows, read by key only
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    tree TEXT NOT NULL,
    chain BLOB NOT NULL CHECK (length(chain) > 0 AND length(chain) % 32 = 0),
    unit TEXT NOT NULL,
    scopes TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    charged BIGINT CHECK (charged IS NULL OR charged >= 0),
    state TEXT NOT NULL CHECK (state IN ('active', 'committed', 'released', 'expired')),
    expires_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS revocations (
    seq BIGINT PRIMARY KEY,
    tree TEXT NOT NULL,
    block_id TEXT NOT NULL UNIQUE
);
-- An append-only log: the ledger looks keys up in memory (loaded from here
-- at start) and never writes a key twice, so the table needs no index, and
-- every insert lands on the last page.
CREATE TABLE IF NOT EXISTS idempotency (
    tree TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    fingerprint BLOB NOT NULL CHECK (length(fingerprint) = 32),
    status INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS root_keys (
    kid TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'retired')),
    created_at BIGINT NOT NULL
);
";

/// SQLite, one connection, owned by the ledger's writer.
///
/// WAL checkpoints stay on this connection (SQLite's automatic checkpoint
/// at 1000 pages). Moving them to another thread was measured and refused:
/// under sustained load a passive checkpoint never catches up with the
/// writer, so the WAL is never restarted and grows without bound (1.3 GB in
/// 10 s at 6k pairs/s).
pub struct SqliteStore {
    conn: Connection,
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn block(s: &str) -> Result<BlockId, StoreError> {
    BlockId::from_hex(s).ok_or_else(|| corrupt("block id"))
}

fn amount(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| corrupt("negative amount"))
}

/// Scopes of a reservation as one text column, one `block|unit|tools` line
/// each. A scope's block is always one of the reservation's chain, so it is
/// written as its position in the chain (`#2`), not 64 hex digits: rows
/// stay small, and the store writes fewer pages per group.
fn encode_scopes(scopes: &[ScopeKey], chain: &[BlockId]) -> String {
    scopes
        .iter()
        .map(|k| match chain.iter().position(|b| *b == k.block) {
            Some(i) => format!("#{i}|{}|{}", k.unit, k.tools),
            None => format!("{}|{}|{}", k.block, k.unit, k.tools),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn decode_scopes(s: &str, chain: &[BlockId]) -> Result<Vec<ScopeKey>, StoreError> {
    s.lines()
        .map(|line| {
            let mut parts = line.splitn(3, '|');
            let (Some(b), Some(u), Some(t)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(corrupt("reservation scopes"));
            };
            let block = match b.strip_prefix('#') {
                Some(i) => *i
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| chain.get(i))
                    .ok_or_else(|| corrupt("reservation scope position"))?,
                None => block(b)?,
            };
            Ok(ScopeKey {
                block,
                unit: u.to_owned(),
                tools: t.to_owned(),
            })
        })
        .collect()
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
        // pages (the root scope, the last page of each log table) are copied
        // once per checkpoint however often they were rewritten.
        conn.pragma_update(None, "wal_autocheckpoint", 4000)
            .map_err(unavailable)?;
        // After a checkpoint, truncate a WAL that grew past 64 MiB.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
            .map_err(unavailable)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        // The schema's version lives in SQLite's user_version; a database
        // written by another version is refused rather than misread.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(unavailable)?;
        match version {
            0 => conn
                .pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(unavailable)?,
            SCHEMA_VERSION => {}
            other => {
                return Err(StoreError::Corrupt(format!(
                    "schema version {other}; this build reads {SCHEMA_VERSION}"
                )));
            }
        }
        Ok(Self { conn })
    }
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let mut snap = Snapshot::default();
        let c = &self.conn;
        let mut q = c
            .prepare("SELECT block_id, unit, tools, ceiling, spent, held FROM scopes")
            .map_err(unavailable)?;
        let rows = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
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
            let key = ScopeKey {
                block: block(&b)?,
                unit,
                tools,
            };
            snap.scopes.push((
                key,
                ScopeState {
                    ceiling: amount(ceiling)?,
                    spent: amount(spent)?,
                    held: amount(held)?,
                },
            ));
        }
        let mut q = c
            .prepare("SELECT id, tree, chain, unit, scopes, amount, charged, state, expires_at FROM reservations")
            .map_err(unavailable)?;
        let rows = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, i64>(8)?,
                ))
            })
            .map_err(unavailable)?;
        for row in rows {
            let (id, tree, chain, unit, scopes, amt, charged, state, expires_at) =
                row.map_err(unavailable)?;
            // The chain's block ids, 32 bytes each, root first.
            let chain: Vec<BlockId> = chain
                .chunks_exact(32)
                .map(|c| {
                    c.try_into()
                        .map(BlockId)
                        .map_err(|_| corrupt("reservation chain"))
                })
                .collect::<Result<_, _>>()?;
            snap.reservations.push(Reservation {
                id,
                tree: block(&tree)?,
                scopes: decode_scopes(&scopes, &chain)?,
                chain,
                unit,
                amount: amount(amt)?,
                charged: charged.map(amount).transpose()?,
                state: ResState::parse(&state).ok_or_else(|| corrupt("reservation state"))?,
                expires_at: amount(expires_at)?,
            });
        }
        let mut q = c
            .prepare("SELECT block_id, seq FROM revocations")
            .map_err(unavailable)?;
        let rows = q
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(unavailable)?;
        for row in rows {
            let (b, seq) = row.map_err(unavailable)?;
            snap.revoked.push((block(&b)?, amount(seq)?));
        }
        let mut q = c
            .prepare("SELECT tree, idem_key, fingerprint, status, body FROM idempotency")
            .map_err(unavailable)?;
        let rows = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(unavailable)?;
        for row in rows {
            let (tree, key, fp, status, body) = row.map_err(unavailable)?;
            let fingerprint: [u8; 32] = fp
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("fingerprint"))?;
            let status = u16::try_from(status).map_err(|_| corrupt("status"))?;
            snap.idem.push((
                IdemKey {
                    tree: block(&tree)?,
                    key,
                },
                IdemRecord {
                    fingerprint,
                    status,
                    body,
                },
            ));
        }
        Ok(snap)
    }

    fn write(&mut self, changes: &[&Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        // IMMEDIATE takes the write lock up front, so the commit cannot fail on an upgrade.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        {
            let mut scope = tx
                .prepare_cached(
                    "INSERT INTO scopes (block_id, unit, tools, ceiling, spent, held) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (block_id, unit, tools) DO UPDATE SET spent = excluded.spent, held = excluded.held",
                )
                .map_err(unavailable)?;
            let mut res = tx
                .prepare_cached(
                    "INSERT INTO reservations (id, tree, chain, unit, scopes, amount, charged, state, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (id) DO UPDATE SET charged = excluded.charged, state = excluded.state, expires_at = excluded.expires_at",
                )
                .map_err(unavailable)?;
            let mut idem = tx
                .prepare_cached("INSERT INTO idempotency (tree, idem_key, fingerprint, status, body) VALUES (?1, ?2, ?3, ?4, ?5)")
                .map_err(unavailable)?;
            let mut revoke = tx
                .prepare_cached("INSERT INTO revocations (seq, tree, block_id) VALUES (?1, ?2, ?3)")
                .map_err(unavailable)?;
            // Amounts are below i64::MAX by the ledger's MAX_AMOUNT, so the casts are exact.
            for change in changes {
                match *change {
                    Change::Scope(k, s) => scope
                        .execute(params![
                            k.block.to_string(),
                            k.unit,
                            k.tools,
                            s.ceiling as i64,
                            s.spent as i64,
                            s.held as i64
                        ])
                        .map(drop),
                    Change::Reservation(r) => res
                        .execute(params![
                            r.id,
                            r.tree.to_string(),
                            r.chain.iter().flat_map(|b| b.0).collect::<Vec<u8>>(),
                            r.unit,
                            encode_scopes(&r.scopes, &r.chain),
                            r.amount as i64,
                            r.charged.map(|c| c as i64),
                            r.state.as_str(),
                            r.expires_at.min(i64::MAX as u64) as i64
                        ])
                        .map(drop),
                    Change::Idempotency(k, rec) => idem
                        .execute(params![
                            k.tree.to_string(),
                            k.key,
                            rec.fingerprint.as_slice(),
                            i64::from(rec.status),
                            rec.body
                        ])
                        .map(drop),
                    Change::Revoke { tree, block, seq } => revoke
                        .execute(params![*seq as i64, tree.to_string(), block.to_string()])
                        .map(drop),
                }
                .map_err(unavailable)?;
            }
        }
        tx.commit().map_err(unavailable)
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
                status,
                created_at: amount(created_at)?,
            })
        })
        .collect()
    }

    fn rotate_key(&mut self, key: StoredKey) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        tx.execute("UPDATE root_keys SET status = 'retired'", [])
            .map_err(unavailable)?;
        tx.execute(
            "INSERT INTO root_keys (kid, secret, status, created_at) VALUES (?1, ?2, 'active', ?3)",
            params![
                key.kid,
                key.secret,
                key.created_at.min(i64::MAX as u64) as i64
            ],
        )
        .map_err(unavailable)?;
        tx.commit().map_err(unavailable)
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

    fn write(s: &mut SqliteStore, changes: &[Change]) -> Result<(), StoreError> {
        s.write(&changes.iter().collect::<Vec<_>>())
    }

    fn key(b: u8) -> ScopeKey {
        ScopeKey {
            block: BlockId([b; 32]),
            unit: "calls".into(),
            tools: String::new(),
        }
    }

    fn res(id: &str, state: ResState) -> Reservation {
        Reservation {
            id: id.into(),
            tree: BlockId([0; 32]),
            chain: vec![BlockId([0; 32]), BlockId([1; 32])],
            unit: "calls".into(),
            scopes: vec![key(1), key(0)],
            amount: 3,
            charged: None,
            state,
            expires_at: 1_000,
        }
    }

    #[test]
    fn rows_round_trip() {
        let mut s = SqliteStore::in_memory().unwrap();
        let idem = (
            IdemKey {
                tree: BlockId([0; 32]),
                key: "k1".into(),
            },
            IdemRecord {
                fingerprint: [7; 32],
                status: 201,
                body: "{}".into(),
            },
        );
        write(
            &mut s,
            &[
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
                Change::Reservation(res("r1", ResState::Active)),
                Change::Idempotency(idem.0.clone(), idem.1.clone()),
                Change::Revoke {
                    tree: BlockId([0; 32]),
                    block: BlockId([9; 32]),
                    seq: 1,
                },
            ],
        )
        .unwrap();
        write(
            &mut s,
            &[Change::Reservation(Reservation {
                charged: Some(2),
                state: ResState::Committed,
                ..res("r1", ResState::Active)
            })],
        )
        .unwrap();
        let snap = s.load().unwrap();
        assert_eq!(snap.scopes.len(), 2);
        assert_eq!(
            snap.reservations,
            vec![Reservation {
                charged: Some(2),
                state: ResState::Committed,
                ..res("r1", ResState::Active)
            }]
        );
        assert_eq!(snap.idem, vec![idem]);
        assert_eq!(snap.revoked, vec![(BlockId([9; 32]), 1)]);
    }

    #[test]
    fn check_constraint_refuses_overspend_and_the_whole_transaction() {
        let mut s = SqliteStore::in_memory().unwrap();
        let err = write(
            &mut s,
            &[
                Change::Reservation(res("r1", ResState::Active)),
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
        let snap = s.load().unwrap();
        assert!(
            snap.scopes.is_empty() && snap.reservations.is_empty(),
            "a failed transaction left rows behind"
        );
    }

    #[test]
    fn key_rotation_retires_the_old_key() {
        let mut s = SqliteStore::in_memory().unwrap();
        let k = |kid: &str, at| StoredKey {
            kid: kid.into(),
            secret: format!("secret-{kid}"),
            status: "active".into(),
            created_at: at,
        };
        s.rotate_key(k("a", 1)).unwrap();
        s.rotate_key(k("b", 2)).unwrap();
        let keys = s.keys().unwrap();
        assert_eq!(
            keys.iter()
                .map(|k| (k.kid.as_str(), k.status.as_str()))
                .collect::<Vec<_>>(),
            vec![("a", "retired"), ("b", "active")]
        );
    }
}
