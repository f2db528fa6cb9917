//! Durable storage for the ledger, behind a small trait (spec/http.md §4).
//!
//! The store is the ledger's source of truth; the process keeps only the
//! active state and bounded caches in memory ([`crate::ledger`]). A backend
//! stores rows, loads the active state at start, answers point look-ups of
//! idempotency records and reservations, and drops history older than the
//! retention window when asked. Every rule lives in [`crate::ledger`].
//!
//! Two backends implement it: [`sqlite`], embedded, owned by one process;
//! and [`postgres`], shared by any number of `baton serve` processes, where
//! the database is the truth and each group re-reads what it touches under
//! row locks ([`Store::shared`]). The compact encodings both share are in
//! [`codec`].

pub mod codec;
pub mod postgres;
pub mod sqlite;

/// Rows the stores' unit tests share.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::caveat::Unit;
    use crate::keys::BlockId;
    use crate::ledger::{AllocId, AllocState, Allocation, Overflow, ScopeKey};

    /// The unfiltered `calls` scope of block `[b; 32]`.
    pub(crate) fn key(b: u8) -> ScopeKey {
        ScopeKey {
            block: BlockId([b; 32]),
            unit: Unit::Calls,
            tools: None,
        }
    }

    /// An allocation of `ms` (its id's clock) from block 1 to block `n`,
    /// released at `finalized_at`, or active.
    pub(crate) fn allocation(ms: u64, n: u8, finalized_at: Option<u64>) -> Allocation {
        Allocation {
            id: AllocId::new(ms, [n; 12]),
            parent: vec![BlockId([0; 32]), BlockId([1; 32])],
            child: vec![BlockId([0; 32]), BlockId([1; 32]), BlockId([n; 32])],
            unit: Unit::Calls,
            scopes: vec![key(1), key(0)],
            amount: 4,
            charged: 1,
            drawn: 0,
            overflow: Overflow::Deny,
            state: if finalized_at.is_some() {
                AllocState::Released
            } else {
                AllocState::Active
            },
            expires_at: 10_000,
            finalized_at,
            returned: if finalized_at.is_some() { 3 } else { 0 },
            source: None,
        }
    }
}

use crate::caveat::Unit;
use crate::keys::BlockId;
use crate::ledger::{
    ActiveState, AllocId, Allocation, Change, IdemKey, IdemRecord, ResId, Reservation, ScopeKey,
    ScopeState,
};

/// The store could not read or write. The service answers 503 and reports
/// itself not ready; it never guesses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed (I/O, lock, constraint). The detail is for logs only.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored row does not parse: the store was changed by something else.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The store was written by another schema version and is not read.
    #[error("store schema version {found}; this build reads {expected}")]
    Version {
        /// The version found.
        found: i64,
        /// The version this build reads.
        expected: i64,
    },
    /// The transaction lost a race with another server's (a deadlock or a
    /// serialization failure) and was rolled back; trying again may succeed.
    #[error("transaction conflict: {0}")]
    Conflict(String),
    /// The backend cannot do this (a shared-store call on an exclusive store).
    #[error("not supported by this store: {0}")]
    Unsupported(&'static str),
}

/// What [`Store::lookup`] found: one answer per key, then one per id.
pub type Looked = (Vec<Option<IdemRecord>>, Vec<Option<Reservation>>);

/// What [`Store::lock_working_set`] read: the locked scopes, the revoked
/// blocks among those asked about, the feed's last position if locked,
/// and the allocations locked with what the group's reservations draw.
pub type WorkingSet = (
    Vec<(ScopeKey, ScopeState)>,
    Vec<(BlockId, u64)>,
    Option<u64>,
    LockedAllocations,
);

/// Shared stores: which allocation rows a group locks, after its scopes
/// ([`crate::ledger::Touched`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct AllocLocks<'a> {
    /// By id, whatever their state.
    pub ids: &'a [AllocId],
    /// The active ones made for a child block in a unit.
    pub children: &'a [(BlockId, Unit)],
    /// Those these reservations draw from; their draw rows are read too.
    pub draws: &'a [ResId],
}

impl AllocLocks<'_> {
    /// Whether nothing is to be locked or read.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.children.is_empty() && self.draws.is_empty()
    }
}

/// Shared stores: the allocation rows a group locked and the draw rows of
/// its reservations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LockedAllocations {
    /// The locked allocations, whatever their state, by id.
    pub allocations: Vec<Allocation>,
    /// `(reservation, allocation, drawn)` for every draw row read.
    pub draws: Vec<(ResId, AllocId, u64)>,
}

/// Whether a root key signs new tokens or only verifies old ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoredKeyStatus {
    /// The one key that signs.
    Active,
    /// Verifies tokens it signed before it was rotated out.
    Retired,
}

impl StoredKeyStatus {
    /// The status's name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Retired => "retired",
        }
    }

    /// Reads a stored status.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "retired" => Some(Self::Retired),
            _ => None,
        }
    }
}

/// A root key as stored: the secret in its text form.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredKey {
    /// The key id, hex.
    pub kid: String,
    /// `baton_sk1_...`.
    pub secret: String,
    /// Active or retired.
    pub status: StoredKeyStatus,
    /// When it was created, in ms since the epoch.
    pub created_at: u64,
}

impl StoredKey {
    /// A new root key as the active one, created at `now_ms`.
    pub fn active(key: &crate::keys::RootKey, now_ms: u64) -> Self {
        Self {
            kid: key.kid().to_string(),
            secret: key.to_text().to_string(),
            status: StoredKeyStatus::Active,
            created_at: now_ms,
        }
    }
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredKey({}, {})", self.kid, self.status.as_str())
    }
}

/// How much a call to [`Store::prune`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pruned {
    /// Finalized reservations removed.
    pub reservations: usize,
    /// Idempotency records removed.
    pub idempotency: usize,
    /// Finished allocations removed.
    pub allocations: usize,
}

impl Pruned {
    /// Whether the call hit its limit on any table: more may be due.
    pub fn more(&self, limit: usize) -> bool {
        self.reservations >= limit || self.idempotency >= limit || self.allocations >= limit
    }
}

/// A durable home for ledger rows, and the ledger's source of truth.
pub trait Store: Send + 'static {
    /// Loads the active state: every scope's counters, every active
    /// reservation, every revocation. Its cost depends on active state,
    /// never on history.
    fn load_active(&mut self) -> Result<ActiveState, StoreError>;
    /// Opens a group's transaction: the writer's look-ups, key rotations and
    /// writes of one group are one transaction, ended by [`Store::write`]
    /// (commit) or [`Store::abort`] (roll back).
    fn begin(&mut self) -> Result<(), StoreError>;
    /// Point look-ups of idempotency records, one answer per key, in order.
    /// Inside the group's transaction if one is open.
    fn idempotency(&mut self, keys: &[IdemKey]) -> Result<Vec<Option<IdemRecord>>, StoreError>;
    /// Point look-ups of reservations, one answer per id, in order. Inside
    /// the group's transaction if one is open.
    fn reservations(&mut self, ids: &[ResId]) -> Result<Vec<Option<Reservation>>, StoreError>;
    /// Writes `changes` in one durable transaction (the group's, if
    /// look-ups opened it): all or nothing, on disk before this returns
    /// `Ok`. With no changes it only ends the group.
    fn write(&mut self, changes: &[&Change]) -> Result<(), StoreError>;
    /// Ends the group's transaction, if open, without writing anything.
    fn abort(&mut self);
    /// Removes up to `limit` finalized reservations finalized before
    /// `cutoff_ms`, up to `limit` idempotency records recorded before it,
    /// and up to `limit` finished allocations finished before it that no
    /// active reservation draws from, oldest first, in one transaction.
    fn prune(&mut self, cutoff_ms: u64, limit: usize) -> Result<Pruned, StoreError>;
    /// Every root key, oldest first.
    fn keys(&mut self) -> Result<Vec<StoredKey>, StoreError>;
    /// Adds a root key and marks every other key retired: inside the
    /// group's transaction if one is open (durable with the group's
    /// write), in its own otherwise.
    fn rotate_key(&mut self, key: StoredKey) -> Result<(), StoreError>;
    /// Whether the store answers.
    fn ping(&mut self) -> Result<(), StoreError>;

    /// Reservations read only to answer replays (their idempotency records
    /// name them), inside the group's transaction. A shared store need not
    /// lock them: the group changes none of them (every reservation a
    /// command targets was read by [`Store::lookup`]), and locking them
    /// after that look-up would break the one lock order. By default,
    /// [`Store::reservations`].
    fn read_reservations(&mut self, ids: &[ResId]) -> Result<Vec<Option<Reservation>>, StoreError> {
        self.reservations(ids)
    }

    /// Point look-ups of allocations, one answer per id, in order. Inside
    /// the group's transaction if one is open; a shared store does not
    /// lock them here (they are locked after the scopes,
    /// [`Store::lock_working_set`]).
    fn allocations(&mut self, _ids: &[AllocId]) -> Result<Vec<Option<Allocation>>, StoreError> {
        Err(StoreError::Unsupported("allocations"))
    }

    /// [`Store::idempotency`] and [`Store::reservations`] together, in that
    /// order: a backend may send both at once.
    fn lookup(&mut self, keys: &[IdemKey], ids: &[ResId]) -> Result<Looked, StoreError> {
        Ok((self.idempotency(keys)?, self.reservations(ids)?))
    }

    /// Shared stores: another handle on the same database, for another
    /// writer of this process (its own connection, the same pool).
    fn split(&mut self) -> Result<Box<dyn Store>, StoreError> {
        Err(StoreError::Unsupported("split"))
    }

    /// Whether several servers may share this store. Then the ledger trusts
    /// only what a group reads inside its transaction: [`Store::reservations`]
    /// locks the rows it reads, [`Store::write`] fails with
    /// [`StoreError::Conflict`] when another group recorded a key or took
    /// the room of a scope since this one read them (the writer retries),
    /// and the calls below are used.
    fn shared(&self) -> bool {
        false
    }
    /// Shared stores: locks, in one global order, and reads the scopes
    /// named, creating absent ones with the given ceiling and no spend.
    fn lock_scopes(
        &mut self,
        _keys: &[(ScopeKey, u64)],
    ) -> Result<Vec<(ScopeKey, ScopeState)>, StoreError> {
        Err(StoreError::Unsupported("lock_scopes"))
    }
    /// Shared stores: [`Store::lock_scopes`], then
    /// [`Store::lock_allocations`], then, if `revokes`,
    /// [`Store::lock_revocations`], then [`Store::revoked_among`], in this
    /// order: a backend may send them at once.
    fn lock_working_set(
        &mut self,
        scopes: &[(ScopeKey, u64)],
        blocks: &[BlockId],
        revokes: bool,
        allocs: AllocLocks<'_>,
    ) -> Result<WorkingSet, StoreError> {
        let s = self.lock_scopes(scopes)?;
        let a = self.lock_allocations(allocs)?;
        let f = if revokes {
            Some(self.lock_revocations()?)
        } else {
            None
        };
        Ok((s, self.revoked_among(blocks)?, f, a))
    }
    /// Shared stores: locks, in id order, and reads the allocations named
    /// by `locks`, and reads the draw rows of its reservations. Called
    /// after the group's scopes are locked: every allocation's scopes are
    /// among them, so it never waits for a row another group holds.
    fn lock_allocations(&mut self, locks: AllocLocks<'_>) -> Result<LockedAllocations, StoreError> {
        if locks.is_empty() {
            return Ok(LockedAllocations::default());
        }
        Err(StoreError::Unsupported("lock_allocations"))
    }
    /// Shared stores: up to `limit` active allocations that lapsed before
    /// `before_ms`, oldest first, read without a lock (their scopes are
    /// locked next, then the rows, [`Store::lock_allocations`]).
    fn due_allocations(
        &mut self,
        _before_ms: u64,
        _limit: usize,
    ) -> Result<Vec<Allocation>, StoreError> {
        Err(StoreError::Unsupported("due_allocations"))
    }
    /// Shared stores: every active allocation in the delegation tree whose
    /// root block is `tree`, read without a lock.
    fn active_allocations(&mut self, _tree: &BlockId) -> Result<Vec<Allocation>, StoreError> {
        Err(StoreError::Unsupported("active_allocations"))
    }
    /// Shared stores: reads scopes without locking; absent ones are `None`.
    fn read_scopes(&mut self, _keys: &[ScopeKey]) -> Result<Vec<Option<ScopeState>>, StoreError> {
        Err(StoreError::Unsupported("read_scopes"))
    }
    /// Shared stores: which of `blocks` are revoked, with their feed positions.
    fn revoked_among(&mut self, _blocks: &[BlockId]) -> Result<Vec<(BlockId, u64)>, StoreError> {
        Err(StoreError::Unsupported("revoked_among"))
    }
    /// Shared stores: serializes revocations (until the group ends) and
    /// returns the feed's last position, so feed positions commit in order.
    fn lock_revocations(&mut self) -> Result<u64, StoreError> {
        Err(StoreError::Unsupported("lock_revocations"))
    }
    /// Shared stores: up to `limit` revocations after feed position `after`.
    fn revocations_after(
        &mut self,
        _after: u64,
        _limit: usize,
    ) -> Result<Vec<(u64, BlockId)>, StoreError> {
        Err(StoreError::Unsupported("revocations_after"))
    }
    /// Shared stores: up to `limit` active reservations that expired before
    /// `before_ms`, locked for this group and skipping rows another
    /// server's group holds, so each hold is released exactly once.
    fn due(&mut self, _before_ms: u64, _limit: usize) -> Result<Vec<Reservation>, StoreError> {
        Err(StoreError::Unsupported("due"))
    }
    /// Shared stores: allocates `n` holder ids to this server, outside any
    /// group; returns the first.
    fn holder_ids(&mut self, _n: u64) -> Result<u64, StoreError> {
        Err(StoreError::Unsupported("holder_ids"))
    }
    /// Adds `key` as the active key unless there already is one, race-free
    /// between servers starting together. Returns whether it was added.
    fn bootstrap_key(&mut self, key: StoredKey) -> Result<bool, StoreError> {
        if self
            .keys()?
            .iter()
            .any(|k| k.status == StoredKeyStatus::Active)
        {
            return Ok(false);
        }
        self.rotate_key(key).map(|()| true)
    }
}
