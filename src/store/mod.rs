//! Durable storage for the ledger, behind a small trait (spec/http.md §4).
//!
//! The ledger keeps its counters in memory and writes through: each group
//! of requests becomes one [`Store::write`] call, one durable transaction.
//! A backend only stores rows and loads them back; every rule lives in
//! [`crate::ledger`]. SQL is kept portable so that a PostgreSQL backend can
//! implement the same trait and run the same test suite.

pub mod sqlite;

use crate::keys::BlockId;
use crate::ledger::{Change, IdemKey, IdemRecord, Reservation, ScopeKey, ScopeState};

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
}

/// A root key as stored: the secret in its text form.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The key id, hex.
    pub kid: String,
    /// `baton_sk1_...`.
    pub secret: String,
    /// `active` or `retired`.
    pub status: String,
    /// When it was created, in ms since the epoch.
    pub created_at: u64,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredKey({}, {})", self.kid, self.status)
    }
}

/// Everything the ledger needs at start-up.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every scope's counters.
    pub scopes: Vec<(ScopeKey, ScopeState)>,
    /// Every reservation.
    pub reservations: Vec<Reservation>,
    /// Every revoked block with its feed position.
    pub revoked: Vec<(BlockId, u64)>,
    /// Every idempotency record.
    pub idem: Vec<(IdemKey, IdemRecord)>,
}

/// A durable home for ledger rows.
pub trait Store: Send + 'static {
    /// Loads every row.
    fn load(&mut self) -> Result<Snapshot, StoreError>;
    /// Writes `changes` in one durable transaction: all or nothing, on disk
    /// before this returns `Ok`.
    fn write(&mut self, changes: &[&Change]) -> Result<(), StoreError>;
    /// Every root key, oldest first.
    fn keys(&mut self) -> Result<Vec<StoredKey>, StoreError>;
    /// Adds a root key and marks every other key retired.
    fn rotate_key(&mut self, key: StoredKey) -> Result<(), StoreError>;
    /// Whether the store answers.
    fn ping(&mut self) -> Result<(), StoreError>;
}
