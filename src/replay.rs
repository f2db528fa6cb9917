//! The replay store: which proofs of possession this process has accepted
//! and that could still be accepted (spec/token.md §12.5).
//!
//! Entries are keyed on (holder, nonce) through [`ProofId`], never on
//! signature bytes, and live until the proof's time has left the window.
//! The store never evicts a live entry: when it is full, or one holder has
//! used up its share, new proofs are refused with `proof_unavailable`
//! until entries expire. Failing closed is the point; a store that made
//! room by forgetting a live proof would let that proof be replayed.
//!
//! The check and the insert happen under one lock, so of any number of
//! concurrent presentations of one proof exactly one is accepted. The
//! store is per process: replicas do not share it (see spec/http.md for
//! how the ledger's durable idempotency records cover that gap).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use crate::error::ProofError;
use crate::holder::HolderPublicKey;
use crate::proof::ProofId;

/// The default total capacity, in proofs.
pub const DEFAULT_CAPACITY: usize = 65_536;
/// The default share of one holder, in proofs.
pub const DEFAULT_PER_HOLDER: usize = 4_096;

/// A bounded set of accepted proofs. See the module docs.
pub struct ReplayStore {
    capacity: usize,
    per_holder: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Live entries: proof id to (last second it is needed, holder).
    live: HashMap<ProofId, (u64, HolderPublicKey)>,
    /// The same entries by expiry, so purging takes only the due ones.
    by_expiry: BTreeSet<(u64, ProofId)>,
    /// Live entries per holder, for the per-holder share.
    holders: HashMap<HolderPublicKey, usize>,
}

impl Inner {
    /// Drops every entry whose proof can no longer be accepted at `now`.
    fn purge(&mut self, now: u64) {
        while let Some(&(expires, id)) = self.by_expiry.first() {
            if expires >= now {
                break;
            }
            self.by_expiry.pop_first();
            if let Some((_, holder)) = self.live.remove(&id)
                && let Some(n) = self.holders.get_mut(&holder)
            {
                *n -= 1;
                if *n == 0 {
                    self.holders.remove(&holder);
                }
            }
        }
    }
}

impl ReplayStore {
    /// A store for at most `capacity` live proofs, at most `per_holder` of
    /// them from one holder. Both are at least 1.
    pub fn new(capacity: usize, per_holder: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            per_holder: per_holder.clamp(1, capacity),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Records the proof `nonce` by `holder`, needed until second
    /// `expires`, at time `now`. Fails with [`ProofError::Replayed`] if it
    /// is already recorded and [`ProofError::Unavailable`] if there is no
    /// room for it. Atomic: check and insert happen under one lock.
    pub fn insert(
        &self,
        holder: &HolderPublicKey,
        nonce: &[u8; 16],
        expires: u64,
        now: u64,
    ) -> Result<(), ProofError> {
        let id = ProofId::of(holder, nonce);
        // A poisoned lock only means another thread panicked between two
        // consistent states: every mutation below completes or does not start.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.purge(now);
        if inner.live.contains_key(&id) {
            return Err(ProofError::Replayed);
        }
        let used = inner.holders.get(holder).copied().unwrap_or(0);
        if inner.live.len() >= self.capacity || used >= self.per_holder {
            return Err(ProofError::Unavailable);
        }
        inner.live.insert(id, (expires, *holder));
        inner.by_expiry.insert((expires, id));
        *inner.holders.entry(*holder).or_insert(0) += 1;
        Ok(())
    }

    /// The number of live entries (after the last purge).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .live
            .len()
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for ReplayStore {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, DEFAULT_PER_HOLDER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::holder::HolderKey;

    fn holder(seed: u8) -> HolderPublicKey {
        HolderKey::from_seed(&[seed; 32]).public()
    }

    #[test]
    fn a_nonce_is_accepted_once_until_it_expires() {
        let s = ReplayStore::new(8, 8);
        let h = holder(1);
        assert_eq!(s.insert(&h, &[1; 16], 100, 40), Ok(()));
        assert_eq!(s.insert(&h, &[1; 16], 100, 41), Err(ProofError::Replayed));
        // Another holder with the same nonce is another proof.
        assert_eq!(s.insert(&holder(2), &[1; 16], 100, 41), Ok(()));
        // Still live at its last second; purged after it.
        assert_eq!(s.insert(&h, &[1; 16], 100, 100), Err(ProofError::Replayed));
        assert_eq!(s.insert(&h, &[1; 16], 200, 101), Ok(()));
    }

    #[test]
    fn full_store_fails_closed_and_never_evicts_a_live_entry() {
        let s = ReplayStore::new(3, 2);
        let (a, b) = (holder(1), holder(2));
        assert_eq!(s.insert(&a, &[1; 16], 100, 0), Ok(()));
        assert_eq!(s.insert(&a, &[2; 16], 100, 0), Ok(()));
        // Holder a has used its share; b still has room in the store.
        assert_eq!(s.insert(&a, &[3; 16], 100, 0), Err(ProofError::Unavailable));
        assert_eq!(s.insert(&b, &[1; 16], 100, 0), Ok(()));
        assert_eq!(s.insert(&b, &[2; 16], 100, 0), Err(ProofError::Unavailable));
        // Nothing live was evicted to make room.
        assert_eq!(s.insert(&a, &[1; 16], 100, 50), Err(ProofError::Replayed));
        assert_eq!(s.len(), 3);
        // Once the entries expire there is room again.
        assert_eq!(s.insert(&a, &[3; 16], 200, 101), Ok(()));
        assert_eq!(s.len(), 1);
    }
}
