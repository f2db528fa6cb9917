//! The spend ledger's rules, with no I/O (spec/http.md §3).
//!
//! A budget scope is one budget caveat of one block. A reservation holds an
//! amount on every scope a token's authorization returned for the spending
//! unit: the spending block's own and every ancestor's. It either holds on
//! all of them or on none, so siblings under one parent can never spend more
//! than the parent's ceiling together.
//!
//! [`Ledger`] keeps the counters in memory. Every mutating call records the
//! rows it changed ([`Change`]) for the store to write in one transaction,
//! and an undo entry, so that a failed write can be rolled back in memory
//! before anyone is answered ([`Ledger::rollback`]).
//!
//! Invariant, at every scope at all times: `spent + held <= ceiling`, so
//! `remaining = ceiling - spent - held` never goes below zero.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::authority::BudgetScope;
use crate::keys::BlockId;

/// The largest amount or ceiling the ledger counts: `i64::MAX`, so that
/// every counter fits a signed 64-bit SQL integer. A larger ceiling in a
/// token is counted as this one (about $92 billion in usd_microcents).
pub const MAX_AMOUNT: u64 = i64::MAX as u64;

/// Names one budget scope: a block, a unit and the budget's tools filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeKey {
    /// The block declaring the budget.
    pub block: BlockId,
    /// The unit.
    pub unit: String,
    /// The tools filter, or the empty string for a budget on every action.
    pub tools: String,
}

impl ScopeKey {
    /// The key of a scope returned by authorization.
    pub fn of(scope: &BudgetScope) -> Self {
        Self {
            block: scope.block_id,
            unit: scope.unit.as_str().to_owned(),
            tools: scope
                .tools
                .as_ref()
                .map_or(String::new(), |p| p.as_str().to_owned()),
        }
    }
}

impl fmt::Display for ScopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.block, self.unit)?;
        if !self.tools.is_empty() {
            write!(f, "/{}", self.tools)?;
        }
        Ok(())
    }
}

/// The counters of one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeState {
    /// The ceiling, from the signed token.
    pub ceiling: u64,
    /// Committed spend.
    pub spent: u64,
    /// Amount held by active reservations.
    pub held: u64,
}

impl ScopeState {
    /// `ceiling - spent - held`; never negative by the ledger's invariant.
    pub fn remaining(&self) -> u64 {
        self.ceiling
            .saturating_sub(self.spent)
            .saturating_sub(self.held)
    }
}

/// Where a reservation is in its life. Active ends in exactly one of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResState {
    /// Holding its amount.
    Active,
    /// Charged; final.
    Committed,
    /// Returned by its holder; final.
    Released,
    /// Returned by the sweeper after its TTL; final.
    Expired,
}

impl ResState {
    /// The state's name in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Committed => "committed",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    /// Reads a state name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => Self::Active,
            "committed" => Self::Committed,
            "released" => Self::Released,
            "expired" => Self::Expired,
            _ => return None,
        })
    }
}

/// One reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Server-chosen id.
    pub id: String,
    /// The delegation tree (block 0's id) it belongs to.
    pub tree: BlockId,
    /// The chain of the token that made it, root first. Only that holder
    /// and its ancestors may see or finish the reservation.
    pub chain: Vec<BlockId>,
    /// The unit held.
    pub unit: String,
    /// Every scope held on, nearest first.
    pub scopes: Vec<ScopeKey>,
    /// The amount held while active.
    pub amount: u64,
    /// The amount charged, once committed.
    pub charged: Option<u64>,
    /// The state.
    pub state: ResState,
    /// When the hold lapses, in milliseconds since the Unix epoch.
    pub expires_at: u64,
}

/// Why the ledger refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// A scope lacks room; nothing was held. Names the first such scope, nearest first.
    #[error("scope {scope} has {remaining} remaining")]
    InsufficientBudget {
        /// The first scope without room.
        scope: ScopeKey,
        /// Its remaining amount.
        remaining: u64,
    },
    /// The token grants no budget in this unit for this action.
    #[error("no budget in this unit applies to this action")]
    NoBudget,
    /// The amount is zero or does not fit the arithmetic.
    #[error("invalid amount")]
    InvalidAmount,
    /// No such reservation in this tree.
    #[error("reservation not found")]
    NotFound,
    /// The reservation already reached a final state.
    #[error("reservation is already {}", .0.as_str())]
    Finalized(ResState),
    /// A block of the spending chain is revoked.
    #[error("block {0} is revoked")]
    Revoked(BlockId),
    /// A scope's ceiling disagrees with the one already recorded (cannot
    /// happen for tokens from one issuer key; refused rather than guessed).
    #[error("scope ceiling conflicts with the recorded one")]
    CeilingConflict,
}

impl LedgerError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InsufficientBudget { .. } => "insufficient_budget",
            Self::NoBudget => "no_budget",
            Self::InvalidAmount => "invalid_amount",
            Self::NotFound => "reservation_not_found",
            Self::Finalized(_) => "reservation_finalized",
            Self::Revoked(_) => "revoked",
            Self::CeilingConflict => "ceiling_conflict",
        }
    }
}

/// A row the store must write, as part of the current transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// Insert or update a scope's counters.
    Scope(ScopeKey, ScopeState),
    /// Insert or update a reservation.
    Reservation(Reservation),
    /// Record the outcome of an idempotent request.
    Idempotency(IdemKey, IdemRecord),
    /// Record a revoked block.
    Revoke {
        /// The tree the block belongs to.
        tree: BlockId,
        /// The revoked block.
        block: BlockId,
        /// Its position in the revocation feed.
        seq: u64,
    },
}

/// An idempotency key, scoped to one delegation tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdemKey {
    /// The tree (block 0's id).
    pub tree: BlockId,
    /// The caller's key.
    pub key: String,
}

/// The stored outcome of an idempotent request: replayed verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemRecord {
    /// A hash of the request, to tell a replay from a different request.
    pub fingerprint: [u8; 32],
    /// The HTTP status of the first answer.
    pub status: u16,
    /// The body of the first answer.
    pub body: String,
}

enum Undo {
    Idem(IdemKey),
    Scope(ScopeKey, Option<ScopeState>),
    Reservation(String, Option<Reservation>),
    Revoke(BlockId),
}

/// The outcome of a revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    /// The block's position in the revocation feed.
    pub seq: u64,
    /// Whether this call revoked it (false: it already was).
    pub new: bool,
}

/// What a reserve request asks for, once the token has been verified and
/// authorized by the caller.
#[derive(Debug, Clone)]
pub struct ReserveRequest {
    /// The id to give the reservation.
    pub id: String,
    /// The delegation tree.
    pub tree: BlockId,
    /// Every block id of the spending chain, for the revocation check.
    pub chain: Vec<BlockId>,
    /// The unit to hold.
    pub unit: String,
    /// The scopes authorization returned, nearest first (all units).
    pub scopes: Vec<BudgetScope>,
    /// The amount to hold.
    pub amount: u64,
    /// When the hold lapses (ms since the epoch).
    pub expires_at: u64,
}

/// The in-memory ledger: scopes, reservations, revocations.
#[derive(Default)]
pub struct Ledger {
    scopes: HashMap<ScopeKey, ScopeState>,
    reservations: HashMap<String, Reservation>,
    /// Revoked blocks with their feed position.
    revoked: HashMap<BlockId, u64>,
    feed: BTreeMap<u64, BlockId>,
    revoke_seq: u64,
    idem: HashMap<IdemKey, IdemRecord>,
    changes: Vec<Change>,
    undo: Vec<Undo>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores a ledger from stored rows.
    pub fn restore(
        scopes: impl IntoIterator<Item = (ScopeKey, ScopeState)>,
        reservations: impl IntoIterator<Item = Reservation>,
        revoked: impl IntoIterator<Item = (BlockId, u64)>,
        idem: impl IntoIterator<Item = (IdemKey, IdemRecord)>,
    ) -> Self {
        let mut l = Self::new();
        l.idem.extend(idem);
        l.scopes.extend(scopes);
        l.reservations
            .extend(reservations.into_iter().map(|r| (r.id.clone(), r)));
        for (b, seq) in revoked {
            l.revoked.insert(b, seq);
            l.feed.insert(seq, b);
            l.revoke_seq = l.revoke_seq.max(seq);
        }
        l
    }

    /// The changes made since the last [`Self::settle`] or [`Self::rollback`],
    /// for the store to write in one transaction.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// [`Self::changes`] with only the last write of each scope and each
    /// reservation kept, in first-write order. A group of requests all
    /// debiting the root scope then writes that row once, which is what
    /// keeps the hot root counter cheap.
    pub fn coalesced_changes(&self) -> Vec<&Change> {
        let mut last_scope: HashMap<&ScopeKey, usize> = HashMap::new();
        let mut last_res: HashMap<&str, usize> = HashMap::new();
        for (i, c) in self.changes.iter().enumerate() {
            match c {
                Change::Scope(k, _) => {
                    last_scope.insert(k, i);
                }
                Change::Reservation(r) => {
                    last_res.insert(&r.id, i);
                }
                _ => {}
            }
        }
        self.changes
            .iter()
            .enumerate()
            .filter(|(i, c)| match c {
                Change::Scope(k, _) => last_scope.get(k) == Some(i),
                Change::Reservation(r) => last_res.get(r.id.as_str()) == Some(i),
                _ => true,
            })
            .map(|(_, c)| c)
            .collect()
    }

    /// The store has made [`Self::changes`] durable: forget them and their undo.
    pub fn settle(&mut self) {
        self.undo.clear();
        self.changes.clear();
    }

    /// Undoes every change since the last [`Self::settle`]: the store could
    /// not make them durable, so nobody may see them.
    pub fn rollback(&mut self) {
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Scope(k, Some(s)) => {
                    self.scopes.insert(k, s);
                }
                Undo::Scope(k, None) => {
                    self.scopes.remove(&k);
                }
                Undo::Reservation(id, Some(r)) => {
                    self.reservations.insert(id, r);
                }
                Undo::Reservation(id, None) => {
                    self.reservations.remove(&id);
                }
                Undo::Idem(k) => {
                    self.idem.remove(&k);
                }
                Undo::Revoke(b) => {
                    self.revoked.remove(&b);
                    self.feed.remove(&self.revoke_seq);
                    self.revoke_seq -= 1;
                }
            }
        }
        self.changes.clear();
    }

    fn set_scope(&mut self, k: &ScopeKey, s: ScopeState) {
        let old = self.scopes.insert(k.clone(), s);
        self.undo.push(Undo::Scope(k.clone(), old));
        self.changes.push(Change::Scope(k.clone(), s));
    }

    fn set_reservation(&mut self, r: Reservation) {
        let old = self.reservations.insert(r.id.clone(), r.clone());
        self.undo.push(Undo::Reservation(r.id.clone(), old));
        self.changes.push(Change::Reservation(r));
    }

    /// A scope's counters; an unseen scope has spent and held nothing.
    pub fn scope(&self, key: &ScopeKey, ceiling: u64) -> ScopeState {
        self.scopes.get(key).copied().unwrap_or(ScopeState {
            ceiling,
            spent: 0,
            held: 0,
        })
    }

    /// A reservation as seen by the holder of `chain` (a token's block ids,
    /// root first): visible only to the token that made it and to its
    /// ancestors, whose chains are prefixes of the maker's. A descendant must
    /// not finish it: committing more than the hold would spend the
    /// ancestor's budget past the descendant's own ceiling. Anything else is
    /// invisible, not forbidden, so ids leak nothing across trees.
    pub fn reservation(&self, chain: &[BlockId], id: &str) -> Option<&Reservation> {
        self.reservations
            .get(id)
            .filter(|r| !chain.is_empty() && r.chain.starts_with(chain))
    }

    /// The recorded outcome for an idempotency key.
    pub fn idempotent(&self, key: &IdemKey) -> Option<&IdemRecord> {
        self.idem.get(key)
    }

    /// Records the outcome for an idempotency key. Keys are kept for as
    /// long as the ledger: they never lapse while their reservation matters.
    pub fn record_idempotent(&mut self, key: IdemKey, record: IdemRecord) {
        self.undo.push(Undo::Idem(key.clone()));
        self.idem.insert(key.clone(), record.clone());
        self.changes.push(Change::Idempotency(key, record));
    }

    /// Up to `limit` revocations with a feed position above `after`, in order.
    pub fn revocations_after(&self, after: u64, limit: usize) -> Vec<(u64, BlockId)> {
        self.feed
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(s, b)| (*s, *b))
            .collect()
    }

    /// Every revoked block.
    pub fn revoked(&self) -> impl Iterator<Item = &BlockId> {
        self.revoked.keys()
    }

    /// Whether a block is revoked.
    pub fn is_revoked(&self, block: &BlockId) -> bool {
        self.revoked.contains_key(block)
    }

    /// Holds `amount` on every scope for `unit`, or on none.
    pub fn reserve(&mut self, req: ReserveRequest) -> Result<Reservation, LedgerError> {
        if req.chain.first() != Some(&req.tree) {
            return Err(LedgerError::NoBudget);
        }
        if let Some(b) = req.chain.iter().find(|b| self.revoked.contains_key(b)) {
            return Err(LedgerError::Revoked(*b));
        }
        if req.amount == 0 || req.amount > MAX_AMOUNT {
            return Err(LedgerError::InvalidAmount);
        }
        let scopes: Vec<(ScopeKey, u64)> = req
            .scopes
            .iter()
            .filter(|s| s.unit.as_str() == req.unit)
            .map(|s| (ScopeKey::of(s), s.ceiling.min(MAX_AMOUNT)))
            .collect();
        if scopes.is_empty() {
            return Err(LedgerError::NoBudget);
        }
        // Check every scope before touching any: all or nothing.
        let mut updated = Vec::with_capacity(scopes.len());
        for (key, ceiling) in &scopes {
            let s = self.scope(key, *ceiling);
            if s.ceiling != *ceiling {
                return Err(LedgerError::CeilingConflict);
            }
            if s.remaining() < req.amount {
                return Err(LedgerError::InsufficientBudget {
                    scope: key.clone(),
                    remaining: s.remaining(),
                });
            }
            let held = s
                .held
                .checked_add(req.amount)
                .ok_or(LedgerError::InvalidAmount)?;
            updated.push((key.clone(), ScopeState { held, ..s }));
        }
        for (k, s) in &updated {
            self.set_scope(k, *s);
        }
        let r = Reservation {
            id: req.id,
            tree: req.tree,
            chain: req.chain,
            unit: req.unit,
            scopes: scopes.into_iter().map(|(k, _)| k).collect(),
            amount: req.amount,
            charged: None,
            state: ResState::Active,
            expires_at: req.expires_at,
        };
        self.set_reservation(r.clone());
        Ok(r)
    }

    fn active(
        &self,
        chain: &[BlockId],
        id: &str,
        now: u64,
        grace: u64,
    ) -> Result<Reservation, LedgerError> {
        let r = self.reservation(chain, id).ok_or(LedgerError::NotFound)?;
        match r.state {
            ResState::Active if now > r.expires_at.saturating_add(grace) => {
                Err(LedgerError::Finalized(ResState::Expired))
            }
            ResState::Active => Ok(r.clone()),
            s => Err(LedgerError::Finalized(s)),
        }
    }

    /// Charges `actual` and returns the rest of the hold. `actual` may exceed
    /// the hold only if every scope has room for the difference; otherwise
    /// nothing changes and the hold stays.
    pub fn commit(
        &mut self,
        chain: &[BlockId],
        id: &str,
        actual: u64,
        now: u64,
        grace: u64,
    ) -> Result<Reservation, LedgerError> {
        if actual > MAX_AMOUNT {
            return Err(LedgerError::InvalidAmount);
        }
        let mut r = self.active(chain, id, now, grace)?;
        self.check_chain_not_revoked(&r)?;
        let extra = actual.saturating_sub(r.amount);
        let mut updated = Vec::with_capacity(r.scopes.len());
        for key in &r.scopes {
            let s = self.scopes.get(key).copied().ok_or(LedgerError::NotFound)?;
            if s.remaining() < extra {
                return Err(LedgerError::InsufficientBudget {
                    scope: key.clone(),
                    remaining: s.remaining(),
                });
            }
            let held = s
                .held
                .checked_sub(r.amount)
                .ok_or(LedgerError::InvalidAmount)?;
            let spent = s
                .spent
                .checked_add(actual)
                .ok_or(LedgerError::InvalidAmount)?;
            updated.push((key.clone(), ScopeState { held, spent, ..s }));
        }
        for (k, s) in &updated {
            self.set_scope(k, *s);
        }
        r.state = ResState::Committed;
        r.charged = Some(actual);
        self.set_reservation(r.clone());
        Ok(r)
    }

    /// Spending or extending on a reservation whose maker's chain has been
    /// revoked since is refused, even for an unrevoked ancestor; releasing
    /// it is always allowed.
    fn check_chain_not_revoked(&self, r: &Reservation) -> Result<(), LedgerError> {
        match r.chain.iter().find(|b| self.revoked.contains_key(b)) {
            Some(b) => Err(LedgerError::Revoked(*b)),
            None => Ok(()),
        }
    }

    /// Returns the hold.
    pub fn release(
        &mut self,
        chain: &[BlockId],
        id: &str,
        now: u64,
        grace: u64,
    ) -> Result<Reservation, LedgerError> {
        let r = self.active(chain, id, now, grace)?;
        Ok(self.finish(r, ResState::Released))
    }

    fn finish(&mut self, mut r: Reservation, state: ResState) -> Reservation {
        for key in &r.scopes {
            if let Some(s) = self.scopes.get(key).copied() {
                // held >= amount by the invariant; saturate rather than panic.
                self.set_scope(
                    key,
                    ScopeState {
                        held: s.held.saturating_sub(r.amount),
                        ..s
                    },
                );
            }
        }
        r.state = state;
        self.set_reservation(r.clone());
        r
    }

    /// Lengthens the hold to `expires_at`, while it is active.
    pub fn extend(
        &mut self,
        chain: &[BlockId],
        id: &str,
        expires_at: u64,
        now: u64,
        grace: u64,
    ) -> Result<Reservation, LedgerError> {
        let mut r = self.active(chain, id, now, grace)?;
        self.check_chain_not_revoked(&r)?;
        r.expires_at = r.expires_at.max(expires_at);
        self.set_reservation(r.clone());
        Ok(r)
    }

    /// Releases every active hold whose expiry plus `grace` is before `now`,
    /// each exactly once. Returns their ids.
    pub fn expire(&mut self, now: u64, grace: u64) -> Vec<String> {
        let due: Vec<Reservation> = self
            .reservations
            .values()
            .filter(|r| r.state == ResState::Active && now > r.expires_at.saturating_add(grace))
            .cloned()
            .collect();
        due.into_iter()
            .map(|r| self.finish(r, ResState::Expired).id)
            .collect()
    }

    /// Revokes `block` of `tree`. Revoking twice changes nothing and
    /// reports the first revocation's feed position.
    pub fn revoke(&mut self, tree: BlockId, block: BlockId) -> Revocation {
        if let Some(seq) = self.revoked.get(&block) {
            return Revocation {
                seq: *seq,
                new: false,
            };
        }
        self.revoke_seq += 1;
        self.revoked.insert(block, self.revoke_seq);
        self.feed.insert(self.revoke_seq, block);
        self.undo.push(Undo::Revoke(block));
        self.changes.push(Change::Revoke {
            tree,
            block,
            seq: self.revoke_seq,
        });
        Revocation {
            seq: self.revoke_seq,
            new: true,
        }
    }

    /// Checks the invariant everywhere; for tests and the crash-recovery check.
    pub fn check_invariant(&self) -> Result<(), ScopeKey> {
        for (k, s) in &self.scopes {
            if s.spent
                .checked_add(s.held)
                .is_none_or(|used| used > s.ceiling)
            {
                return Err(k.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caveat::Unit;

    fn scope(block: u8, ceiling: u64) -> BudgetScope {
        BudgetScope {
            block: block as usize,
            block_id: BlockId([block; 32]),
            unit: Unit::Calls,
            ceiling,
            tools: None,
        }
    }

    fn req(id: &str, leaf: u8, amount: u64) -> ReserveRequest {
        // A chain 0 -> 1 -> leaf; scopes nearest first.
        let mut scopes = vec![scope(leaf, 5)];
        if leaf != 1 {
            scopes.push(scope(1, 8));
        }
        scopes.push(scope(0, 100));
        ReserveRequest {
            id: id.into(),
            tree: BlockId([0; 32]),
            chain: vec![BlockId([0; 32]), BlockId([1; 32]), BlockId([leaf; 32])],
            unit: "calls".into(),
            scopes,
            amount,
            expires_at: 1_000,
        }
    }

    #[test]
    fn siblings_cannot_overspend_their_parent() {
        let mut l = Ledger::new();
        l.reserve(req("a", 2, 5)).unwrap();
        // Sibling 3 has its own 5 but the parent (8) has only 3 left.
        let err = l.reserve(req("b", 3, 4)).unwrap_err();
        assert_eq!(
            err,
            LedgerError::InsufficientBudget {
                scope: ScopeKey {
                    block: BlockId([1; 32]),
                    unit: "calls".into(),
                    tools: String::new()
                },
                remaining: 3
            }
        );
        // Nothing was held on the sibling's own scope by the failed attempt.
        assert_eq!(l.scope(&ScopeKey::of(&scope(3, 5)), 5).held, 0);
        l.reserve(req("c", 3, 3)).unwrap();
        l.check_invariant().unwrap();
    }

    #[test]
    fn commit_release_and_finality() {
        let mut l = Ledger::new();
        let tree = [BlockId([0; 32]), BlockId([1; 32]), BlockId([2; 32])];
        l.reserve(req("a", 2, 4)).unwrap();
        let r = l.commit(&tree, "a", 3, 10, 0).unwrap();
        assert_eq!(r.charged, Some(3));
        assert_eq!(
            l.scope(&ScopeKey::of(&scope(2, 5)), 5),
            ScopeState {
                ceiling: 5,
                spent: 3,
                held: 0
            }
        );
        assert_eq!(
            l.release(&tree, "a", 10, 0),
            Err(LedgerError::Finalized(ResState::Committed))
        );
        assert_eq!(
            l.commit(&tree, "a", 3, 10, 0),
            Err(LedgerError::Finalized(ResState::Committed))
        );
        // Another tree cannot see it.
        assert_eq!(
            l.release(&[BlockId([9; 32]), BlockId([2; 32])], "a", 10, 0),
            Err(LedgerError::NotFound)
        );
        // Nor can a sibling in the same tree.
        assert_eq!(
            l.release(
                &[BlockId([0; 32]), BlockId([1; 32]), BlockId([3; 32])],
                "a",
                10,
                0
            ),
            Err(LedgerError::NotFound)
        );
        // An ancestor of the maker sees it (finalized here); a descendant does not.
        assert_eq!(
            l.release(&[BlockId([0; 32]), BlockId([1; 32])], "a", 10, 0),
            Err(LedgerError::Finalized(ResState::Committed))
        );
        let descendant = [
            BlockId([0; 32]),
            BlockId([1; 32]),
            BlockId([2; 32]),
            BlockId([7; 32]),
        ];
        assert_eq!(
            l.release(&descendant, "a", 10, 0),
            Err(LedgerError::NotFound)
        );
    }

    #[test]
    fn commit_above_hold_needs_room_everywhere() {
        let mut l = Ledger::new();
        let tree = [BlockId([0; 32]), BlockId([1; 32]), BlockId([2; 32])];
        l.reserve(req("a", 2, 2)).unwrap();
        // Leaf ceiling 5: 2 held, commit of 6 needs 4 more but only 3 remain.
        assert!(matches!(
            l.commit(&tree, "a", 6, 10, 0),
            Err(LedgerError::InsufficientBudget { .. })
        ));
        assert_eq!(l.reservation(&tree, "a").unwrap().state, ResState::Active);
        assert_eq!(l.commit(&tree, "a", 5, 10, 0).unwrap().charged, Some(5));
        l.check_invariant().unwrap();
    }

    #[test]
    fn expiry_is_decided_by_the_clock_and_happens_once() {
        let mut l = Ledger::new();
        let tree = [BlockId([0; 32]), BlockId([1; 32]), BlockId([2; 32])];
        l.reserve(req("a", 2, 4)).unwrap();
        assert!(l.expire(1_000, 100).is_empty());
        assert_eq!(
            l.extend(&tree, "a", 2_000, 1_050, 100).unwrap().expires_at,
            2_000
        );
        assert_eq!(l.expire(2_101, 100), vec!["a".to_owned()]);
        assert!(l.expire(5_000, 100).is_empty());
        assert_eq!(
            l.commit(&tree, "a", 1, 5_000, 100),
            Err(LedgerError::Finalized(ResState::Expired))
        );
        assert_eq!(l.scope(&ScopeKey::of(&scope(2, 5)), 5).held, 0);
    }

    #[test]
    fn rollback_restores_everything() {
        let mut l = Ledger::new();
        l.reserve(req("a", 2, 4)).unwrap();
        l.settle();
        l.reserve(req("b", 3, 1)).unwrap();
        l.revoke(BlockId([0; 32]), BlockId([3; 32]));
        l.rollback();
        assert!(
            l.reservation(&[BlockId([0; 32]), BlockId([1; 32]), BlockId([3; 32])], "b")
                .is_none()
        );
        assert!(!l.is_revoked(&BlockId([3; 32])));
        assert_eq!(l.scope(&ScopeKey::of(&scope(1, 8)), 8).held, 4);
    }

    #[test]
    fn coalescing_keeps_the_last_write_of_each_row() {
        let mut l = Ledger::new();
        let tree = [BlockId([0; 32]), BlockId([1; 32]), BlockId([2; 32])];
        l.reserve(req("a", 2, 1)).unwrap();
        l.reserve(req("b", 3, 1)).unwrap();
        l.commit(&tree, "a", 1, 10, 0).unwrap();
        let all = l.changes().len();
        let kept = l.coalesced_changes();
        // Scopes 0, 1, 2, 3 and reservations a, b: one row each.
        assert_eq!(kept.len(), 6, "from {all}");
        assert!(kept.iter().any(
            |c| matches!(c, Change::Reservation(r) if r.id == "a" && r.state == ResState::Committed)
        ));
        let root = ScopeKey::of(&scope(0, 100));
        assert!(kept.iter().any(
            |c| matches!(c, Change::Scope(k, s) if *k == root && s.held == 1 && s.spent == 1)
        ));
    }

    #[test]
    fn a_revoked_makers_hold_can_be_released_but_not_charged() {
        let mut l = Ledger::new();
        l.reserve(req("a", 2, 1)).unwrap();
        l.revoke(BlockId([0; 32]), BlockId([2; 32]));
        let ancestor = [BlockId([0; 32]), BlockId([1; 32])];
        assert_eq!(
            l.commit(&ancestor, "a", 1, 10, 0),
            Err(LedgerError::Revoked(BlockId([2; 32])))
        );
        assert_eq!(
            l.extend(&ancestor, "a", 500, 10, 0),
            Err(LedgerError::Revoked(BlockId([2; 32])))
        );
        assert_eq!(
            l.release(&ancestor, "a", 10, 0).unwrap().state,
            ResState::Released
        );
    }

    #[test]
    fn revoked_chain_cannot_spend() {
        let mut l = Ledger::new();
        l.revoke(BlockId([0; 32]), BlockId([1; 32]));
        assert_eq!(
            l.reserve(req("a", 2, 1)),
            Err(LedgerError::Revoked(BlockId([1; 32])))
        );
        assert_eq!(
            l.revoke(BlockId([0; 32]), BlockId([1; 32])),
            Revocation { seq: 1, new: false }
        );
    }
}
