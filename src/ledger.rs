//! The spend ledger's rules, with no I/O (spec/http.md §3).
//!
//! A budget scope is one budget caveat of one block. A reservation holds an
//! amount on every scope a token's authorization returned for the spending
//! unit: the spending block's own and every ancestor's. It either holds on
//! all of them or on none, so siblings under one parent can never spend more
//! than the parent's ceiling together.
//!
//! # What lives in memory
//! [`Ledger`] owns the *active* state only: every scope's counters, every
//! active reservation (with a time-ordered expiry index, so the sweep costs
//! what expires), the revocation set and feed, and bounded caches of
//! recently finalized reservations, idempotency records and interned
//! [`Holder`]s. History lives in the store. Before a group of commands is
//! applied, the writer asks [`Ledger::missing`] which records a command
//! needs that are not in memory, reads them from the store with point
//! look-ups, and hands them over with [`Ledger::supply`]. Memory is bounded
//! by active state plus the caches, never by history.
//!
//! # Changes and undo
//! Every mutating call records the rows it changed ([`Change`]) for the
//! store to write in one transaction, and an undo entry, so that a failed
//! write can be rolled back in memory before anyone is answered
//! ([`Ledger::rollback`]). Records made by the current group sit in
//! `pending` maps, never evicted, until [`Ledger::settle`] moves them into
//! the caches.
//!
//! # Idempotency
//! A [`Command`] may carry an idempotency key and a fingerprint of the
//! request. The first outcome is recorded as a typed [`Recorded`] value, not
//! a rendered reply: a replay returns the same [`Outcome`], which the HTTP
//! layer renders to the same bytes.
//!
//! # Shared mode
//! When several servers share one database ([`Ledger::shared`]), the
//! database and not this memory is the truth. The active state in memory is
//! then only the current group's working set: before a group is applied the
//! writer reads, under the database's row locks, the scopes, reservations
//! and revocations the group touches ([`Ledger::touches`]) and hands them
//! over ([`Ledger::supply`], [`Ledger::load`]); once the group is durable or
//! undone the working set is forgotten. Every rule below is the same code
//! in both modes. Finalized reservations, idempotency records, holders and
//! revocations never change once written, so their caches stay valid.
//!
//! # Allocations
//! An [`Allocation`] is a guaranteed sub-budget (spec/http.md §3.8): an
//! amount set aside for one child at every scope above it, represented as
//! a special hold. While it is active its unused part (`amount - charged -
//! drawn`) is counted in `held` at each of its scopes; reserves by the child
//! and its descendants draw from it there (what they drew is kept per
//! reservation, in `draws`), and ending it, once, takes the unused part out
//! of `held`. An allocation to a child whose parent draws from one is
//! carved from that one first, and gives back what it did not use when it
//! ends (`source`). Only active allocations are in memory.
//!
//! On a shared ledger the active allocations are working set too: the
//! writer locks and reads, after the group's scopes, the allocations its
//! commands can touch ([`Touched`]: by id, by child block, and those its
//! reservations draw from) and hands them over with
//! [`Ledger::load_allocations`]; every rule below then runs unchanged.
//! An allocation's scopes are always among the scopes of whatever changes
//! it (a reserve or allocate under it, a hold that drew from it, its own
//! end), so whoever locks an allocation row already holds its scopes.
//!
//! Invariant, at every scope at all times: `spent + held <= ceiling`, so
//! `remaining = ceiling - spent - held` never goes below zero; `held` is
//! exactly the active reservations' amounts plus the unused parts of the
//! active allocations over the scope ([`Ledger::check_invariant`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use crate::authority::BudgetScope;
use crate::caveat::Unit;
use crate::keys::BlockId;
use crate::pattern::ActionPattern;
use crate::proof::ProofId;

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
    pub unit: Unit,
    /// The tools filter, if the budget is per-toolset.
    pub tools: Option<ActionPattern>,
}

impl ScopeKey {
    /// The key of a scope returned by authorization.
    pub fn of(scope: &BudgetScope) -> Self {
        Self {
            block: scope.block_id,
            unit: scope.unit.clone(),
            tools: scope.tools.clone(),
        }
    }
}

impl fmt::Display for ScopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.block, self.unit.as_str())?;
        if let Some(t) = &self.tools {
            write!(f, "/{}", t.as_str())?;
        }
        Ok(())
    }
}

/// The counters of one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// The state's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Committed => "committed",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    /// The state's code in the store (spec/http.md §4).
    pub fn code(self) -> u8 {
        match self {
            Self::Active => 0,
            Self::Committed => 1,
            Self::Released => 2,
            Self::Expired => 3,
        }
    }

    /// Reads a stored state code.
    pub fn from_code(c: u64) -> Option<Self> {
        Some(match c {
            0 => Self::Active,
            1 => Self::Committed,
            2 => Self::Released,
            3 => Self::Expired,
            _ => return None,
        })
    }
}

/// A reservation id: 6 bytes of the server's millisecond clock, then 12
/// random bytes. Its text form is `rsv_` and 36 lower-case hex digits. The
/// time prefix makes ids arrive in order, so inserts into the store's
/// B-tree stay local; the 96 random bits keep ids unguessable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResId(pub [u8; 18]);

impl ResId {
    /// The id made at `now_ms` with `random` bytes.
    pub fn new(now_ms: u64, random: [u8; 12]) -> Self {
        let mut b = [0u8; 18];
        b[..6].copy_from_slice(&now_ms.to_be_bytes()[2..]);
        b[6..].copy_from_slice(&random);
        Self(b)
    }

    /// The smallest id made at `ms`: ids below it were made earlier.
    pub fn first_at(ms: u64) -> Self {
        Self::new(ms, [0; 12])
    }

    /// Reads the text form; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("rsv_")?;
        if hex.len() != 36 || hex.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut b = [0u8; 18];
        crate::hex::decode(hex, &mut b)?;
        Some(Self(b))
    }

    /// Reads the stored form.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.try_into().ok().map(Self)
    }
}

impl fmt::Display for ResId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("rsv_")?;
        f.write_str(crate::hex::encode(&self.0, &mut [0u8; 36]))
    }
}

impl fmt::Debug for ResId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a reservation holds on, shared by every reservation of one token,
/// unit and set of scopes. The store keeps it once (interned by `id`), so a
/// reservation row carries a number instead of the whole chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Holder {
    /// The store's id for this holder.
    pub id: u64,
    /// The chain of the token that made the reservation, root first. Only
    /// that holder and its ancestors may see or finish the reservation.
    pub chain: Vec<BlockId>,
    /// The unit held.
    pub unit: Unit,
    /// Every scope held on, nearest first.
    pub scopes: Vec<ScopeKey>,
}

impl Holder {
    /// The delegation tree (block 0's id).
    pub fn tree(&self) -> BlockId {
        self.chain[0]
    }
}

/// One reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Server-chosen id.
    pub id: ResId,
    /// The chain, unit and scopes it holds on.
    pub holder: Arc<Holder>,
    /// The amount held while active.
    pub amount: u64,
    /// The amount charged, once committed.
    pub charged: Option<u64>,
    /// The state.
    pub state: ResState,
    /// When the hold lapses, in milliseconds since the Unix epoch.
    pub expires_at: u64,
    /// When it reached its final state (ms since the epoch); `None` while active.
    pub finalized_at: Option<u64>,
}

/// An allocation id: the same shape as a [`ResId`] (6 bytes of the
/// server's millisecond clock, 12 random bytes); its text form is `alc_`
/// and 36 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocId(pub [u8; 18]);

impl AllocId {
    /// The id made at `now_ms` with `random` bytes.
    pub fn new(now_ms: u64, random: [u8; 12]) -> Self {
        Self(ResId::new(now_ms, random).0)
    }

    /// Reads the text form; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("alc_")?;
        ResId::parse(&format!("rsv_{hex}")).map(|r| Self(r.0))
    }

    /// Reads the stored form.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.try_into().ok().map(Self)
    }
}

impl fmt::Display for AllocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("alc_")?;
        f.write_str(crate::hex::encode(&self.0, &mut [0u8; 36]))
    }
}

impl fmt::Debug for AllocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a reserve under an allocation does when the allocation has less
/// unused than it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Overflow {
    /// Refuse with `allocation_exhausted`: the child lives within its allocation.
    Deny,
    /// Take what the allocation has left, the rest from the parent's pool.
    Shared,
}

impl Overflow {
    /// The policy's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Shared => "shared",
        }
    }

    /// Reads a policy name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "deny" => Some(Self::Deny),
            "shared" => Some(Self::Shared),
            _ => None,
        }
    }

    /// The policy's code in the store.
    pub fn code(self) -> u8 {
        match self {
            Self::Deny => 0,
            Self::Shared => 1,
        }
    }

    /// Reads a stored policy code.
    pub fn from_code(c: u64) -> Option<Self> {
        match c {
            0 => Some(Self::Deny),
            1 => Some(Self::Shared),
            _ => None,
        }
    }
}

/// Where an allocation is in its life. Active ends in exactly one of the
/// others, and only that transition returns the unused part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AllocState {
    /// Holding its unused part at the parent's scopes.
    Active,
    /// Released by the parent, an ancestor or the child; final.
    Released,
    /// Its TTL or the child token's expiry passed; final.
    Expired,
    /// A block of the child's chain was revoked; final.
    Revoked,
}

impl AllocState {
    /// The state's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Released => "released",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }

    /// The state's code in the store.
    pub fn code(self) -> u8 {
        match self {
            Self::Active => 0,
            Self::Released => 1,
            Self::Expired => 2,
            Self::Revoked => 3,
        }
    }

    /// Reads a stored state code.
    pub fn from_code(c: u64) -> Option<Self> {
        Some(match c {
            0 => Self::Active,
            1 => Self::Released,
            2 => Self::Expired,
            3 => Self::Revoked,
            _ => return None,
        })
    }
}

/// A guaranteed sub-budget: an amount a parent set aside for one child at
/// every scope above the child in one unit (spec/http.md §3.8).
///
/// While active, its unused part (`amount - charged - drawn`) is counted
/// in the `held` of each of its scopes, exactly like a reservation's hold,
/// so siblings cannot take it. The child's (and its descendants')
/// reservations draw from it at those scopes instead of from the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Server-chosen id.
    pub id: AllocId,
    /// The chain of the token that allocated, root first.
    pub parent: Vec<BlockId>,
    /// The child's chain, root first; `parent` is a strict prefix of it.
    pub child: Vec<BlockId>,
    /// The unit allocated.
    pub unit: Unit,
    /// The scopes held on: the budgets in `unit` that apply to every
    /// action of every block above the child, nearest first.
    pub scopes: Vec<ScopeKey>,
    /// The amount set aside.
    pub amount: u64,
    /// What the child's reservations under it have charged so far.
    pub charged: u64,
    /// What the child's active reservations under it hold now.
    pub drawn: u64,
    /// What happens when a reserve asks for more than is unused.
    pub overflow: Overflow,
    /// The state.
    pub state: AllocState,
    /// When it lapses (ms since the epoch): its TTL or the child token's
    /// expiry, whichever comes first.
    pub expires_at: u64,
    /// When it reached its final state; `None` while active.
    pub finalized_at: Option<u64>,
    /// The unused part returned when it ended (0 while active).
    pub returned: u64,
    /// The enclosing allocation it was carved from, if the block above the
    /// child itself draws from one, with the amount it drew from it: a
    /// nested allocation comes out of its parent's guarantee first.
    pub source: Option<(AllocId, u64)>,
}

impl Allocation {
    /// What is neither charged nor held by the child's reservations: what
    /// the child can still reserve from it, and what a release returns.
    pub fn unused(&self) -> u64 {
        self.amount
            .saturating_sub(self.charged)
            .saturating_sub(self.drawn)
    }
}

/// How much an allocation sets aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllocAmount {
    /// A fixed amount of the unit.
    Fixed(u64),
    /// A fraction of the parent's current remaining (the smallest over its
    /// scopes), in millionths, rounded down and capped at the child's ceiling.
    Fraction {
        /// Parts per million, 1 to 1 000 000.
        ppm: u32,
    },
}

/// What an allocate asks for, once both tokens have been verified and the
/// child found to descend from the parent by the caller.
#[derive(Debug, Clone)]
pub struct AllocateRequest {
    /// The id to give the allocation.
    pub id: AllocId,
    /// The allocating token's chain, root first.
    pub parent: Vec<BlockId>,
    /// The child token's chain, root first.
    pub child: Vec<BlockId>,
    /// The unit.
    pub unit: Unit,
    /// The budgets in `unit` that apply to every action of every block
    /// above the child (its parent's and their ancestors', the allocating
    /// token's among them), with their ceilings, nearest first. Holding on
    /// all of them is what makes the allocation a guarantee: a scope left
    /// out would be one siblings could still exhaust.
    pub scopes: Vec<(ScopeKey, u64)>,
    /// How much.
    pub amount: AllocAmount,
    /// The smallest ceiling in `unit` of the child's chain: an allocation
    /// never exceeds what the child could spend.
    pub child_ceiling: u64,
    /// The overflow policy.
    pub overflow: Overflow,
    /// How long it lasts, from when it is applied (ms).
    pub ttl_ms: u64,
    /// When the child token expires (ms since the epoch), if it does.
    pub not_after_ms: Option<u64>,
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
    /// A reserve under an allocation with the `deny` policy asked for more
    /// than the allocation has unused; nothing was held.
    #[error("allocation {id} has {remaining} unused")]
    AllocationExhausted {
        /// The allocation.
        id: AllocId,
        /// Its unused part.
        remaining: u64,
    },
    /// No such allocation visible to this token.
    #[error("allocation not found")]
    AllocationNotFound,
    /// The allocation already reached a final state.
    #[error("allocation is already {}", .0.as_str())]
    AllocationFinalized(AllocState),
    /// The child already has an active allocation in this unit.
    #[error("the child already has allocation {0} in this unit")]
    AllocationExists(AllocId),
    /// The amount asked for is more than the child's own ceiling.
    #[error("the child's ceiling is {ceiling}")]
    ExceedsChildBudget {
        /// The child's smallest ceiling in the unit.
        ceiling: u64,
    },
    /// The child token does not descend from the allocating token.
    #[error("the child token does not descend from this token")]
    NotDescendant,
    /// This store does not support allocations. No longer returned: every
    /// store keeps allocations. Kept so that a stored refusal, and the
    /// stable code, still read.
    #[error("allocations are not supported by this ledger's store")]
    AllocationsUnsupported,
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
            Self::AllocationExhausted { .. } => "allocation_exhausted",
            Self::AllocationNotFound => "allocation_not_found",
            Self::AllocationFinalized(_) => "allocation_finalized",
            Self::AllocationExists(_) => "allocation_exists",
            Self::ExceedsChildBudget { .. } => "allocation_exceeds_child_budget",
            Self::NotDescendant => "not_descendant",
            Self::AllocationsUnsupported => "allocations_unsupported",
        }
    }
}

/// An idempotency key, scoped to one delegation tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdemKey {
    /// The tree (block 0's id).
    pub tree: BlockId,
    /// The caller's key.
    pub key: String,
}

/// A hash of a request, to tell a replay from a different request under
/// the same key (128 bits: a second preimage is out of reach).
pub type Fingerprint = [u8; 16];

/// A reservation's counters as one answer saw them: what a replay must
/// show again, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The reservation.
    pub id: ResId,
    /// Its state after the operation.
    pub state: ResState,
    /// The amount it held.
    pub amount: u64,
    /// The amount charged, if committed.
    pub charged: Option<u64>,
    /// Its expiry after the operation.
    pub expires_at: u64,
    /// The counters of each of its scopes after the operation, nearest first.
    pub counters: Vec<ScopeState>,
}

/// The recorded outcome of an idempotent command, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recorded {
    /// The operation succeeded on a reservation.
    Done {
        /// Whether it made the reservation (reserve, spend).
        created: bool,
        /// What the answer showed.
        snapshot: Snapshot,
    },
    /// The ledger refused it.
    Refused(LedgerError),
    /// The operation succeeded on an allocation: the allocation as the
    /// answer showed it (self-contained, so a replay needs no look-up).
    Allocation {
        /// Whether it made the allocation.
        created: bool,
        /// The allocation after the operation.
        alloc: Allocation,
    },
}

/// The stored outcome of an idempotent request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemRecord {
    /// The request's fingerprint.
    pub fingerprint: Fingerprint,
    /// When it was recorded (ms since the epoch): retention counts from here.
    pub at: u64,
    /// The outcome.
    pub outcome: Recorded,
    /// The proof of possession of the request that made the record, for a
    /// holder-bound token: [`Command::proof`].
    pub proof: Option<ProofId>,
}

/// A row the store must write, as part of the current transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// Insert or update a scope's counters.
    Scope(ScopeKey, ScopeState),
    /// Insert a holder (interned chain, unit and scopes).
    Holder(Arc<Holder>),
    /// Insert or update a reservation.
    Reservation(Reservation),
    /// Record the outcome of an idempotent request.
    Idempotency(IdemKey, IdemRecord),
    /// Insert or update an allocation.
    Allocation(Allocation),
    /// Record what an active reservation draws from an allocation
    /// (`Some`), or forget it once the reservation has ended (`None`).
    Draw(ResId, Option<(AllocId, u64)>),
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

/// What a reserve asks for, once the token has been verified and
/// authorized by the caller.
#[derive(Debug, Clone)]
pub struct ReserveRequest {
    /// The id to give the reservation.
    pub id: ResId,
    /// Every block id of the spending chain, root first.
    pub chain: Vec<BlockId>,
    /// The unit to hold.
    pub unit: Unit,
    /// The scopes authorization returned, nearest first (all units).
    pub scopes: Vec<BudgetScope>,
    /// The amount to hold.
    pub amount: u64,
    /// How long the hold lasts, in milliseconds from when it is applied.
    pub ttl_ms: u64,
}

/// One ledger operation on reservations, its token already verified and
/// authorized by the caller.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Operation {
    /// Hold an amount; with `actual`, charge it at once (spend).
    Reserve {
        /// What to hold.
        req: ReserveRequest,
        /// For a spend: the amount to charge.
        actual: Option<u64>,
    },
    /// Charge a hold.
    Commit {
        /// The caller's chain.
        chain: Vec<BlockId>,
        /// The reservation.
        id: ResId,
        /// The amount to charge.
        actual: u64,
    },
    /// Return a hold.
    Release {
        /// The caller's chain.
        chain: Vec<BlockId>,
        /// The reservation.
        id: ResId,
    },
    /// Lengthen a hold.
    Extend {
        /// The caller's chain.
        chain: Vec<BlockId>,
        /// The reservation.
        id: ResId,
        /// The new TTL, from now.
        ttl_ms: u64,
    },
    /// Read a reservation.
    Get {
        /// The caller's chain.
        chain: Vec<BlockId>,
        /// The reservation.
        id: ResId,
    },
    /// Only answer from the idempotency record, if there is one: for a
    /// request whose token no longer authorizes it (expired since).
    Replay,
    /// Set an amount aside for a child.
    Allocate {
        /// What to allocate.
        req: AllocateRequest,
    },
    /// Return an allocation's unused part.
    ReleaseAllocation {
        /// The caller's chain.
        chain: Vec<BlockId>,
        /// The allocation.
        id: AllocId,
    },
    /// Read an allocation.
    GetAllocation {
        /// The caller's chain.
        chain: Vec<BlockId>,
        /// The allocation.
        id: AllocId,
    },
}

impl Operation {
    /// The reservation the operation names, if any.
    fn target(&self) -> Option<ResId> {
        match self {
            Self::Commit { id, .. }
            | Self::Release { id, .. }
            | Self::Extend { id, .. }
            | Self::Get { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// The allocation the operation names, if any.
    fn alloc_target(&self) -> Option<AllocId> {
        match self {
            Self::ReleaseAllocation { id, .. } | Self::GetAllocation { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// An operation with its optional idempotency key and request fingerprint.
#[derive(Debug, Clone)]
pub struct Command {
    /// The operation.
    pub op: Operation,
    /// The idempotency key and the request's fingerprint.
    pub idem: Option<(IdemKey, Fingerprint)>,
    /// The id of the holder's proof of possession that authenticated the
    /// request, for a holder-bound token. Kept in the idempotency record,
    /// so that a proof replayed to another process, or after a restart
    /// emptied the per-process replay store, meets this durable answer
    /// (spec/http.md §1.2.1).
    pub proof: Option<ProofId>,
}

/// A reservation and its scopes' counters, as one answer shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The chain, unit and scopes.
    pub holder: Arc<Holder>,
    /// The reservation's state and counters.
    pub snapshot: Snapshot,
}

/// The ledger's typed answer to a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Done; `created` for a new reservation.
    Done {
        /// Whether the reservation was made by this command.
        created: bool,
        /// The reservation afterwards.
        view: View,
    },
    /// The ledger refused it.
    Refused(LedgerError),
    /// The idempotency key was used before for a different request.
    KeyReused,
    /// [`Operation::Replay`] found no record for the key.
    NotRecorded,
    /// Done on an allocation; `created` for a new one.
    Allocation {
        /// Whether the allocation was made by this command.
        created: bool,
        /// The allocation afterwards.
        alloc: Allocation,
    },
}

/// Records a command needs that are not in memory: the writer reads them
/// from the store and hands them over with [`Ledger::supply`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Missing {
    /// Idempotency records to look up.
    pub idem: Vec<IdemKey>,
    /// Reservations to look up.
    pub reservations: Vec<ResId>,
    /// Allocations to look up (finalized ones: active ones are in memory).
    pub allocations: Vec<AllocId>,
}

impl Missing {
    /// Whether nothing is missing.
    pub fn is_empty(&self) -> bool {
        self.idem.is_empty() && self.reservations.is_empty() && self.allocations.is_empty()
    }
}

/// In shared mode, the rows a group touches beyond its records: the writer
/// locks and reads them in the group's transaction and hands them over
/// with [`Ledger::load`] and [`Ledger::load_allocations`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Touched {
    /// Scopes, each with the ceiling to create it with if it is new.
    pub scopes: Vec<(ScopeKey, u64)>,
    /// Blocks whose revocation must be checked.
    pub blocks: Vec<BlockId>,
    /// Allocations to lock by id, whatever their state (one to release or
    /// end, and the enclosing one it was carved from).
    pub allocations: Vec<AllocId>,
    /// The active allocations to lock for a child block in a unit: every
    /// block of a reserving or allocating chain, for the nearest one.
    pub alloc_children: Vec<(BlockId, Unit)>,
    /// Reservations whose draw rows to read, and whose allocations to lock.
    pub draws: Vec<ResId>,
}

impl Touched {
    /// Whether no allocation needs looking up.
    pub fn no_allocations(&self) -> bool {
        self.allocations.is_empty() && self.alloc_children.is_empty() && self.draws.is_empty()
    }
}

/// The outcome of a revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    /// The block's position in the revocation feed.
    pub seq: u64,
    /// Whether this call revoked it (false: it already was).
    pub new: bool,
}

/// The active state, as the store loads it at start.
#[derive(Debug, Default)]
pub struct ActiveState {
    /// Every scope's counters.
    pub scopes: Vec<(ScopeKey, ScopeState)>,
    /// Every active reservation.
    pub reservations: Vec<Reservation>,
    /// Every revoked block with its feed position.
    pub revoked: Vec<(BlockId, u64)>,
    /// The next free holder id.
    pub next_holder: u64,
    /// Every active allocation.
    pub allocations: Vec<Allocation>,
    /// What active reservations draw from active allocations.
    pub draws: Vec<(ResId, AllocId, u64)>,
}

/// The sizes of the in-memory caches, in entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSizes {
    /// Recently used idempotency records.
    pub idempotency: usize,
    /// Recently finalized reservations.
    pub finalized: usize,
    /// Interned holders.
    pub holders: usize,
}

impl CacheSizes {
    /// Every cache with `n` entries.
    pub fn all(n: usize) -> Self {
        Self {
            idempotency: n,
            finalized: n,
            holders: n,
        }
    }
}

impl Default for CacheSizes {
    fn default() -> Self {
        Self::all(100_000)
    }
}

/// How many records the ledger holds in memory, by kind: what the bounded
/// memory test and the metrics watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Population {
    /// Scopes.
    pub scopes: usize,
    /// Active reservations.
    pub active: usize,
    /// Entries in the expiry index.
    pub expiry: usize,
    /// Cached finalized reservations.
    pub finalized: usize,
    /// Cached idempotency records.
    pub idempotency: usize,
    /// Cached holders.
    pub holders: usize,
    /// Revoked blocks.
    pub revoked: usize,
    /// Active allocations.
    pub allocations: usize,
}

/// What a holder holds on, borrowed: how the holder cache is searched
/// without building (or cloning) a key on every reserve.
#[derive(PartialEq, Eq, Hash)]
struct HolderRef<'a> {
    chain: &'a [BlockId],
    unit: &'a Unit,
    scopes: &'a [ScopeKey],
}

impl<'a> HolderRef<'a> {
    fn of(h: &'a Holder) -> Self {
        Self {
            chain: &h.chain,
            unit: &h.unit,
            scopes: &h.scopes,
        }
    }
}

/// A holder as the cache's key: equal, and hashed, by what it holds on,
/// not by its id, exactly as a [`HolderRef`] to it.
#[derive(Clone)]
struct Interned(Arc<Holder>);

impl PartialEq for Interned {
    fn eq(&self, other: &Self) -> bool {
        HolderRef::of(&self.0) == HolderRef::of(&other.0)
    }
}

impl Eq for Interned {}

impl std::hash::Hash for Interned {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        HolderRef::of(&self.0).hash(state);
    }
}

impl quick_cache::Equivalent<Interned> for HolderRef<'_> {
    fn equivalent(&self, key: &Interned) -> bool {
        *self == HolderRef::of(&key.0)
    }
}

enum Undo {
    Scope(ScopeKey, Option<ScopeState>),
    Active(ResId, Option<Reservation>),
    Revoke(BlockId),
    Alloc(AllocId, Option<Allocation>),
    Draw(ResId, Option<(AllocId, u64)>),
}

fn cache<K: Eq + std::hash::Hash + Clone, V: Clone>(n: usize) -> quick_cache::unsync::Cache<K, V> {
    quick_cache::unsync::Cache::new(n.max(1))
}

/// The in-memory ledger: active state and bounded caches over the store.
pub struct Ledger {
    scopes: HashMap<ScopeKey, ScopeState>,
    active: HashMap<ResId, Reservation>,
    /// Active reservations by expiry, for a sweep that costs what expires.
    expiry: BTreeSet<(u64, ResId)>,
    /// Revoked blocks with their feed position.
    revoked: HashMap<BlockId, u64>,
    feed: BTreeMap<u64, BlockId>,
    revoke_seq: u64,
    next_holder: u64,
    /// Keyed by the holder itself (by content); the value is the same Arc.
    holders: quick_cache::unsync::Cache<Interned, Arc<Holder>>,
    finalized: quick_cache::unsync::Cache<ResId, Reservation>,
    idem: quick_cache::unsync::Cache<IdemKey, IdemRecord>,
    /// Made by the current group: never evicted before [`Self::settle`].
    pending_idem: HashMap<IdemKey, IdemRecord>,
    pending_final: HashMap<ResId, Reservation>,
    pending_holders: Vec<Arc<Holder>>,
    /// Read from the store for the current group (`None`: not there).
    fetched_idem: HashMap<IdemKey, Option<IdemRecord>>,
    fetched_res: HashMap<ResId, Option<Reservation>>,
    changes: Vec<Change>,
    undo: Vec<Undo>,
    /// Several servers share the store: active state is a per-group working set.
    shared: bool,
    /// Holder ids below this are ours to give (shared mode takes ranges
    /// from the store; otherwise unbounded).
    holder_end: u64,
    /// Active allocations, with their expiry index and the child block and
    /// unit each is for (one active allocation per child and unit).
    allocs: HashMap<AllocId, Allocation>,
    alloc_expiry: BTreeSet<(u64, AllocId)>,
    alloc_by_child: HashMap<(BlockId, Unit), AllocId>,
    /// What each active reservation under an allocation drew from it.
    draws: HashMap<ResId, (AllocId, u64)>,
    /// Recently finalized allocations; this group's, never evicted before
    /// [`Self::settle`]; what the store returned for this group.
    alloc_final: quick_cache::unsync::Cache<AllocId, Allocation>,
    pending_alloc_final: HashMap<AllocId, Allocation>,
    fetched_alloc: HashMap<AllocId, Option<Allocation>>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new(CacheSizes::default())
    }
}

impl Ledger {
    /// An empty ledger with caches of the given sizes.
    pub fn new(sizes: CacheSizes) -> Self {
        Self {
            scopes: HashMap::new(),
            active: HashMap::new(),
            expiry: BTreeSet::new(),
            revoked: HashMap::new(),
            feed: BTreeMap::new(),
            revoke_seq: 0,
            next_holder: 1,
            holders: cache(sizes.holders),
            finalized: cache(sizes.finalized),
            idem: cache(sizes.idempotency),
            pending_idem: HashMap::new(),
            pending_final: HashMap::new(),
            pending_holders: Vec::new(),
            fetched_idem: HashMap::new(),
            fetched_res: HashMap::new(),
            changes: Vec::new(),
            undo: Vec::new(),
            shared: false,
            holder_end: u64::MAX,
            allocs: HashMap::new(),
            alloc_expiry: BTreeSet::new(),
            alloc_by_child: HashMap::new(),
            draws: HashMap::new(),
            alloc_final: cache(sizes.finalized),
            pending_alloc_final: HashMap::new(),
            fetched_alloc: HashMap::new(),
        }
    }

    /// A ledger over a store several servers share: it trusts only what the
    /// current group read from the store (module docs, "Shared mode").
    /// `revoked` seeds the cache of revoked blocks (a revocation is never
    /// undone, so a cached one is true). Holder ids come in ranges from
    /// [`Self::grant_holder_ids`].
    pub fn shared(revoked: Vec<(BlockId, u64)>, sizes: CacheSizes) -> Self {
        let mut l = Self::restore(
            ActiveState {
                revoked,
                ..ActiveState::default()
            },
            sizes,
        );
        l.shared = true;
        l.next_holder = 0;
        l.holder_end = 0;
        l
    }

    /// Whether this ledger is in shared mode.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// How many holder ids are left to give before another range is needed.
    pub fn holder_ids_left(&self) -> u64 {
        self.holder_end.saturating_sub(self.next_holder)
    }

    /// Gives the ledger the holder ids `start..end`, allocated to this
    /// server by the store (shared mode).
    pub fn grant_holder_ids(&mut self, start: u64, end: u64) {
        self.next_holder = start;
        self.holder_end = end;
    }

    /// Shared mode: the scopes and blocks `cmd` touches, given the records
    /// supplied so far. Call it for every command of a group after the
    /// records are supplied, and [`Self::load`] what the store read.
    pub fn touches(&self, cmd: &Command, out: &mut Touched) {
        let add_res = |id: &ResId, out: &mut Touched| {
            if let Some(r) = self.lookup(id) {
                // Existing scopes: the ceiling is already recorded.
                out.scopes
                    .extend(r.holder.scopes.iter().map(|k| (k.clone(), 0)));
                out.blocks.extend(r.holder.chain.iter().copied());
            }
        };
        if let Some((key, _)) = &cmd.idem
            && let Some(IdemRecord {
                outcome: Recorded::Done { snapshot, .. },
                ..
            }) = self.idem_lookup(key)
        {
            add_res(&snapshot.id, out);
        }
        match &cmd.op {
            Operation::Reserve { req, .. } => {
                out.scopes.extend(
                    req.scopes
                        .iter()
                        .filter(|s| s.unit == req.unit)
                        .map(|s| (ScopeKey::of(s), s.ceiling.min(MAX_AMOUNT))),
                );
                out.blocks.extend(req.chain.iter().copied());
                // The nearest allocation of the chain, if any, is among
                // those made for one of its blocks.
                out.alloc_children
                    .extend(req.chain.iter().map(|b| (*b, req.unit.clone())));
            }
            Operation::Allocate { req } => {
                out.scopes.extend(req.scopes.iter().cloned());
                out.blocks.extend(req.child.iter().copied());
                // The child's own (one per child and unit) and the one its
                // parent draws from (the new one is carved from it).
                out.alloc_children
                    .extend(req.child.iter().map(|b| (*b, req.unit.clone())));
            }
            Operation::ReleaseAllocation { id, .. } => {
                if let Some(a) = self.alloc_lookup(id) {
                    self.touches_allocation(a, out);
                }
            }
            op => {
                if let Some(id) = op.target() {
                    add_res(&id, out);
                    // Every reservation in the working set, not only one
                    // this command finishes: a tick in the same group may
                    // expire it, and what it drew must go back.
                    out.draws.push(id);
                }
            }
        }
    }

    /// Shared mode: what ending the allocation `a` (release, expiry,
    /// revocation) touches, as read before any lock: its scopes, its row
    /// and the enclosing allocation's. An allocation that has already
    /// ended touches nothing; one that ends while the group waits for its
    /// locks is found ended when read again under them.
    pub fn touches_allocation(&self, a: &Allocation, out: &mut Touched) {
        if a.state != AllocState::Active {
            return;
        }
        out.scopes.extend(a.scopes.iter().map(|k| (k.clone(), 0)));
        out.allocations.push(a.id);
        if let Some((e, _)) = a.source {
            out.allocations.push(e);
        }
    }

    /// Shared mode: the allocations and draw rows the store locked and
    /// read for [`Touched`], after the scopes. Active ones join the
    /// working set (replacing any copy read before the locks); final ones
    /// are what a look-up of them answers.
    pub fn load_allocations(
        &mut self,
        allocations: impl IntoIterator<Item = Allocation>,
        draws: impl IntoIterator<Item = (ResId, AllocId, u64)>,
    ) {
        for a in allocations {
            self.take_alloc(&a.id);
            if a.state == AllocState::Active {
                self.fetched_alloc.remove(&a.id);
                self.put_alloc(a);
            } else {
                self.fetched_alloc.insert(a.id, Some(a));
            }
        }
        for (r, a, d) in draws {
            self.draws.insert(r, (a, d));
        }
    }

    /// Shared mode: the touched scopes' counters and the touched blocks'
    /// revocations as the store read them under lock, and, when the group
    /// revokes, the revocation feed's last position. Replaces whatever
    /// memory held for them.
    pub fn load(
        &mut self,
        scopes: impl IntoIterator<Item = (ScopeKey, ScopeState)>,
        revoked: impl IntoIterator<Item = (BlockId, u64)>,
        feed_end: Option<u64>,
    ) {
        self.scopes.extend(scopes);
        for (b, seq) in revoked {
            self.revoked.insert(b, seq);
            self.feed.insert(seq, b);
        }
        if let Some(end) = feed_end {
            self.revoke_seq = end;
        }
    }

    /// Shared mode: forgets the working set (scopes, active reservations,
    /// active allocations and draws); the next group reads it again under
    /// lock.
    fn forget_working_set(&mut self) {
        if self.shared {
            self.scopes.clear();
            self.active.clear();
            self.expiry.clear();
            self.allocs.clear();
            self.alloc_expiry.clear();
            self.alloc_by_child.clear();
            self.draws.clear();
        }
    }

    /// Restores a ledger from the store's active state.
    pub fn restore(state: ActiveState, sizes: CacheSizes) -> Self {
        let mut l = Self::new(sizes);
        l.scopes.extend(state.scopes);
        for r in state.reservations {
            if r.state == ResState::Active {
                l.expiry.insert((r.expires_at, r.id));
                l.holders
                    .insert(Interned(r.holder.clone()), r.holder.clone());
                l.active.insert(r.id, r);
            }
        }
        for (b, seq) in state.revoked {
            l.revoked.insert(b, seq);
            l.feed.insert(seq, b);
            l.revoke_seq = l.revoke_seq.max(seq);
        }
        l.next_holder = state.next_holder.max(1);
        for a in state.allocations {
            if a.state == AllocState::Active {
                l.put_alloc(a);
            }
        }
        for (r, a, d) in state.draws {
            if l.active.contains_key(&r) {
                l.draws.insert(r, (a, d));
            }
        }
        l
    }

    /// How many records are in memory, by kind.
    pub fn population(&self) -> Population {
        Population {
            scopes: self.scopes.len(),
            active: self.active.len(),
            expiry: self.expiry.len(),
            finalized: self.finalized.len(),
            idempotency: self.idem.len(),
            holders: self.holders.len(),
            revoked: self.revoked.len(),
            allocations: self.allocs.len(),
        }
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
        let mut last_res: HashMap<ResId, usize> = HashMap::new();
        let mut last_alloc: HashMap<AllocId, usize> = HashMap::new();
        let mut last_draw: HashMap<ResId, usize> = HashMap::new();
        // Draws recorded in this group: a draw row exists only from its
        // reserve to its end, so one both made and ended in this group
        // (a spend) never needs writing at all.
        let mut drawn_here: BTreeSet<ResId> = BTreeSet::new();
        for (i, c) in self.changes.iter().enumerate() {
            match c {
                Change::Allocation(a) => {
                    last_alloc.insert(a.id, i);
                }
                Change::Draw(r, d) => {
                    last_draw.insert(*r, i);
                    if d.is_some() {
                        drawn_here.insert(*r);
                    }
                }
                Change::Scope(k, _) => {
                    last_scope.insert(k, i);
                }
                Change::Reservation(r) => {
                    last_res.insert(r.id, i);
                }
                _ => {}
            }
        }
        self.changes
            .iter()
            .enumerate()
            .filter(|(i, c)| match c {
                Change::Scope(k, _) => last_scope.get(k) == Some(i),
                Change::Reservation(r) => last_res.get(&r.id) == Some(i),
                Change::Allocation(a) => last_alloc.get(&a.id) == Some(i),
                Change::Draw(r, None) if drawn_here.contains(r) => false,
                Change::Draw(r, _) => last_draw.get(r) == Some(i),
                _ => true,
            })
            .map(|(_, c)| c)
            .collect()
    }

    /// The store has made [`Self::changes`] durable: forget them and their
    /// undo, and move this group's records into the caches.
    pub fn settle(&mut self) {
        self.undo.clear();
        self.changes.clear();
        for (k, v) in self.pending_idem.drain() {
            self.idem.insert(k, v);
        }
        for (k, v) in self.pending_final.drain() {
            self.finalized.insert(k, v);
        }
        for h in self.pending_holders.drain(..) {
            self.holders.insert(Interned(h.clone()), h);
        }
        // What was read from the store is durable too: keep it warm.
        for (k, v) in self.fetched_idem.drain() {
            if let Some(v) = v {
                self.idem.insert(k, v);
            }
        }
        for (k, v) in self.fetched_res.drain() {
            // Only a final state may be cached across groups: an active
            // reservation read for a replay is another server's to change.
            if let Some(v) = v
                && v.state != ResState::Active
            {
                self.finalized.insert(k, v);
            }
        }
        for (k, v) in self.pending_alloc_final.drain() {
            self.alloc_final.insert(k, v);
        }
        for (k, v) in self.fetched_alloc.drain() {
            // A shared store's active allocation, read for this group, is
            // another server's to change: only a final one is kept.
            if let Some(v) = v
                && v.state != AllocState::Active
            {
                self.alloc_final.insert(k, v);
            }
        }
        self.forget_working_set();
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
                Undo::Active(id, before) => {
                    if let Some(now) = self.active.remove(&id) {
                        self.expiry.remove(&(now.expires_at, id));
                    }
                    if let Some(r) = before {
                        self.expiry.insert((r.expires_at, id));
                        self.active.insert(id, r);
                    }
                }
                Undo::Revoke(b) => {
                    self.revoked.remove(&b);
                    self.feed.remove(&self.revoke_seq);
                    self.revoke_seq -= 1;
                }
                Undo::Alloc(id, before) => {
                    self.take_alloc(&id);
                    if let Some(a) = before {
                        self.put_alloc(a);
                    }
                }
                Undo::Draw(r, Some(d)) => {
                    self.draws.insert(r, d);
                }
                Undo::Draw(r, None) => {
                    self.draws.remove(&r);
                }
            }
        }
        self.changes.clear();
        self.pending_idem.clear();
        self.pending_final.clear();
        self.pending_holders.clear();
        self.fetched_idem.clear();
        self.fetched_res.clear();
        self.pending_alloc_final.clear();
        self.fetched_alloc.clear();
        self.forget_working_set();
    }

    /// Adds an active allocation to the map and its indexes.
    fn put_alloc(&mut self, a: Allocation) {
        self.alloc_expiry.insert((a.expires_at, a.id));
        if let Some(last) = a.child.last() {
            self.alloc_by_child.insert((*last, a.unit.clone()), a.id);
        }
        self.allocs.insert(a.id, a);
    }

    /// Removes an active allocation from the map and its indexes.
    fn take_alloc(&mut self, id: &AllocId) -> Option<Allocation> {
        let a = self.allocs.remove(id)?;
        self.alloc_expiry.remove(&(a.expires_at, a.id));
        if let Some(last) = a.child.last() {
            let k = (*last, a.unit.clone());
            if self.alloc_by_child.get(&k) == Some(id) {
                self.alloc_by_child.remove(&k);
            }
        }
        Some(a)
    }

    /// Writes an allocation: active ones live in memory with their
    /// indexes, final ones move to this group's pending map.
    fn set_alloc(&mut self, a: Allocation) {
        let before = self.take_alloc(&a.id);
        self.undo.push(Undo::Alloc(a.id, before));
        if a.state == AllocState::Active {
            self.put_alloc(a.clone());
        } else {
            self.pending_alloc_final.insert(a.id, a.clone());
        }
        self.changes.push(Change::Allocation(a));
    }

    /// Records (or forgets) what a reservation drew from an allocation.
    fn set_draw(&mut self, r: ResId, d: Option<(AllocId, u64)>) {
        let before = match d {
            Some(d) => self.draws.insert(r, d),
            None => self.draws.remove(&r),
        };
        self.undo.push(Undo::Draw(r, before));
        self.changes.push(Change::Draw(r, d));
    }

    fn set_scope(&mut self, k: &ScopeKey, s: ScopeState) {
        // An unchanged row is not written: a reserve drawn wholly from an
        // allocation leaves the parent's and ancestors' rows as they were,
        // which is what takes the hot rows out of a child's reserve.
        if self.scopes.get(k) == Some(&s) {
            return;
        }
        let old = self.scopes.insert(k.clone(), s);
        self.undo.push(Undo::Scope(k.clone(), old));
        self.changes.push(Change::Scope(k.clone(), s));
    }

    /// Writes a reservation: active ones live in the active map and the
    /// expiry index, final ones move to this group's pending map.
    fn set_reservation(&mut self, r: Reservation) {
        let before = self.active.remove(&r.id);
        if let Some(b) = &before {
            self.expiry.remove(&(b.expires_at, b.id));
        }
        self.undo.push(Undo::Active(r.id, before));
        if r.state == ResState::Active {
            self.expiry.insert((r.expires_at, r.id));
            self.active.insert(r.id, r.clone());
        } else {
            self.pending_final.insert(r.id, r.clone());
        }
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

    /// A reservation from memory or from what the store supplied.
    fn lookup(&self, id: &ResId) -> Option<&Reservation> {
        self.active
            .get(id)
            .or_else(|| self.pending_final.get(id))
            .or_else(|| self.finalized.peek(id))
            .or_else(|| self.fetched_res.get(id).and_then(Option::as_ref))
    }

    fn in_memory(&self, id: &ResId) -> bool {
        self.active.contains_key(id)
            || self.pending_final.contains_key(id)
            || self.finalized.peek(id).is_some()
            || self.fetched_res.contains_key(id)
    }

    fn idem_lookup(&self, key: &IdemKey) -> Option<&IdemRecord> {
        self.pending_idem
            .get(key)
            .or_else(|| self.idem.peek(key))
            .or_else(|| self.fetched_idem.get(key).and_then(Option::as_ref))
    }

    /// A reservation as seen by the holder of `chain` (a token's block ids,
    /// root first): visible only to the token that made it and to its
    /// ancestors, whose chains are prefixes of the maker's. A descendant must
    /// not finish it: committing more than the hold would spend the
    /// ancestor's budget past the descendant's own ceiling. Anything else is
    /// invisible, not forbidden, so ids leak nothing across trees.
    fn visible(&self, chain: &[BlockId], id: &ResId) -> Option<&Reservation> {
        self.lookup(id)
            .filter(|r| !chain.is_empty() && r.holder.chain.starts_with(chain))
    }

    /// The records `cmd` needs that are neither in memory nor already
    /// supplied. Call it for every command of a group before applying any.
    pub fn missing(&self, cmd: &Command, out: &mut Missing) {
        if let Some((key, _)) = &cmd.idem {
            match self.idem_lookup(key) {
                None if !self.fetched_idem.contains_key(key) => out.idem.push(key.clone()),
                // A replay needs the reservation its answer showed.
                Some(IdemRecord {
                    outcome: Recorded::Done { snapshot, .. },
                    ..
                }) if !self.in_memory(&snapshot.id) => out.reservations.push(snapshot.id),
                _ => {}
            }
        }
        if let Some(id) = cmd.op.target()
            && !self.in_memory(&id)
        {
            out.reservations.push(id);
        }
        if let Some(id) = cmd.op.alloc_target()
            && self.alloc_lookup(&id).is_none()
            && !self.fetched_alloc.contains_key(&id)
        {
            out.allocations.push(id);
        }
    }

    /// Hands over the allocations the store returned for [`Self::missing`]
    /// (on an exclusive store only finalized ones can be missing: active
    /// ones are in memory). On a shared store an active one is read
    /// without a lock, to learn what ending it touches
    /// ([`Self::touches`]); it is read again under lock before any rule
    /// changes it, and only shown as read to a `GetAllocation`.
    pub fn supply_allocations(
        &mut self,
        allocs: impl IntoIterator<Item = (AllocId, Option<Allocation>)>,
    ) {
        for (id, a) in allocs {
            // An exclusive ledger holds every active row: one not in
            // memory cannot be; never let it shadow the truth.
            let a = a.filter(|a| self.shared || a.state != AllocState::Active);
            self.fetched_alloc.insert(id, a);
        }
    }

    /// An allocation from memory or from what the store supplied.
    fn alloc_lookup(&self, id: &AllocId) -> Option<&Allocation> {
        self.allocs
            .get(id)
            .or_else(|| self.pending_alloc_final.get(id))
            .or_else(|| self.alloc_final.peek(id))
            .or_else(|| self.fetched_alloc.get(id).and_then(Option::as_ref))
    }

    /// An allocation as seen by the holder of `chain`: the child and its
    /// ancestors (the parent among them) see it; nobody else, in or out
    /// of the tree, learns that it exists.
    fn alloc_visible(&self, chain: &[BlockId], id: &AllocId) -> Option<&Allocation> {
        self.alloc_lookup(id)
            .filter(|a| !chain.is_empty() && a.child.starts_with(chain))
    }

    /// The active allocations to descendants of the token whose chain is
    /// `parent` (made by it or by one of its ancestors), by id.
    pub fn allocations_of(&self, parent: &[BlockId]) -> Vec<Allocation> {
        let mut v: Vec<Allocation> = self
            .allocs
            .values()
            .filter(|a| {
                !parent.is_empty() && a.child.len() > parent.len() && a.child.starts_with(parent)
            })
            .cloned()
            .collect();
        v.sort_by_key(|a| a.id);
        v
    }

    /// The active allocation a reservation by `chain` in `unit` draws
    /// from: the nearest one, made for the deepest block of the chain
    /// that has one.
    pub fn allocation_for(&self, chain: &[BlockId], unit: &Unit) -> Option<&Allocation> {
        // Every reserve asks: with no allocation at all (the common case)
        // it costs nothing, not a hash and a unit clone per block.
        if self.allocs.is_empty() {
            return None;
        }
        chain.iter().enumerate().rev().find_map(|(i, b)| {
            let id = self.alloc_by_child.get(&(*b, unit.clone()))?;
            self.allocs.get(id).filter(|a| a.child == chain[..=i])
        })
    }

    /// The unused part of active allocations counted in a scope's `held`.
    /// Costs the number of active allocations.
    pub fn allocated(&self, key: &ScopeKey) -> u64 {
        self.allocs
            .values()
            .filter(|a| a.scopes.contains(key))
            .fold(0u64, |t, a| t.saturating_add(a.unused()))
    }

    /// Hands over what the store returned for [`Self::missing`]. Returns
    /// what the supplied records need in turn: the reservations that
    /// recorded answers showed and that are not in memory (a replay is
    /// rebuilt from its reservation). Supply those too; they need nothing.
    pub fn supply(
        &mut self,
        idem: impl IntoIterator<Item = (IdemKey, Option<IdemRecord>)>,
        reservations: impl IntoIterator<Item = (ResId, Option<Reservation>)>,
    ) -> Missing {
        for (id, r) in reservations {
            match r {
                // Only a shared store supplies an active reservation (an
                // exclusive ledger holds them all): it joins the working
                // set, read under lock, replacing any older copy.
                Some(r) if r.state == ResState::Active => {
                    if let Some(old) = self.active.remove(&id) {
                        self.expiry.remove(&(old.expires_at, id));
                    }
                    self.expiry.insert((r.expires_at, id));
                    self.active.insert(id, r);
                }
                r => {
                    self.fetched_res.insert(id, r);
                }
            }
        }
        let mut next = Missing::default();
        for (key, rec) in idem {
            if let Some(IdemRecord {
                outcome: Recorded::Done { snapshot, .. },
                ..
            }) = &rec
                && !self.in_memory(&snapshot.id)
            {
                next.reservations.push(snapshot.id);
            }
            self.fetched_idem.insert(key, rec);
        }
        next
    }

    /// Supplies the reservations that replayed records name, as
    /// [`Self::supply`] returned them in [`Missing::reservations`]. They are
    /// read, not locked, on a shared store (`Store::read_reservations`), so
    /// they never join the working set, even when active: a replay only
    /// shows them, and nothing in the group may change them.
    pub fn supply_replayed(
        &mut self,
        reservations: impl IntoIterator<Item = (ResId, Option<Reservation>)>,
    ) {
        for (id, r) in reservations {
            self.fetched_res.insert(id, r);
        }
    }

    /// Applies one command at `now` (ms), with `grace` ms past a hold's
    /// expiry in which it may still be finished.
    ///
    /// Call [`Self::missing`] for the group first and [`Self::supply`] what
    /// the store returned: a record neither in memory nor supplied is taken
    /// to be absent, so skipping the look-up could apply a key twice.
    pub fn apply(&mut self, cmd: &Command, now: u64, grace: u64) -> Outcome {
        if let Some((key, fingerprint)) = &cmd.idem
            && let Some(rec) = self.idem_lookup(key)
        {
            if !bool::from(subtle_eq(&rec.fingerprint, fingerprint)) {
                return Outcome::KeyReused;
            }
            // A record whose reservation is gone (dropped by retention) is
            // gone too: the request is new again (spec/http.md §3.6).
            if let Some(out) = self.replay(&rec.outcome.clone()) {
                return out;
            }
        }
        let out = match &cmd.op {
            Operation::Replay => return Outcome::NotRecorded,
            Operation::Get { chain, id } => {
                return match self.visible(chain, id) {
                    Some(r) => Outcome::Done {
                        created: false,
                        view: self.view(&r.clone()),
                    },
                    None => Outcome::Refused(LedgerError::NotFound),
                };
            }
            Operation::Reserve { req, actual } => self.reserve_op(req, *actual, now, grace),
            Operation::Commit { chain, id, actual } => self
                .commit(chain, id, *actual, now, grace)
                .map(|r| (false, r)),
            Operation::Release { chain, id } => {
                self.release(chain, id, now, grace).map(|r| (false, r))
            }
            Operation::Extend { chain, id, ttl_ms } => self
                .extend(chain, id, now.saturating_add(*ttl_ms), now, grace)
                .map(|r| (false, r)),
            Operation::GetAllocation { chain, id } => {
                return match self.alloc_visible(chain, id) {
                    Some(a) => Outcome::Allocation {
                        created: false,
                        alloc: a.clone(),
                    },
                    None => Outcome::Refused(LedgerError::AllocationNotFound),
                };
            }
            Operation::Allocate { req } => {
                let out = self.allocate(req, now).map(|a| (true, a));
                return self.record_alloc(cmd, out, now);
            }
            Operation::ReleaseAllocation { chain, id } => {
                let out = self.release_allocation(chain, id, now).map(|a| (false, a));
                return self.record_alloc(cmd, out, now);
            }
        };
        let (outcome, recorded) = match out {
            Ok((created, r)) => {
                let view = self.view(&r);
                let rec = Recorded::Done {
                    created,
                    snapshot: view.snapshot.clone(),
                };
                (Outcome::Done { created, view }, rec)
            }
            Err(e) => (Outcome::Refused(e.clone()), Recorded::Refused(e)),
        };
        if let Some((key, fingerprint)) = &cmd.idem {
            let rec = IdemRecord {
                fingerprint: *fingerprint,
                at: now,
                outcome: recorded,
                proof: cmd.proof,
            };
            self.pending_idem.insert(key.clone(), rec.clone());
            self.changes.push(Change::Idempotency(key.clone(), rec));
        }
        outcome
    }

    /// Records (if keyed) and returns the outcome of an allocation command.
    fn record_alloc(
        &mut self,
        cmd: &Command,
        out: Result<(bool, Allocation), LedgerError>,
        now: u64,
    ) -> Outcome {
        let (outcome, recorded) = match out {
            Ok((created, alloc)) => (
                Outcome::Allocation {
                    created,
                    alloc: alloc.clone(),
                },
                Recorded::Allocation { created, alloc },
            ),
            Err(e) => (Outcome::Refused(e.clone()), Recorded::Refused(e)),
        };
        if let Some((key, fingerprint)) = &cmd.idem {
            let rec = IdemRecord {
                fingerprint: *fingerprint,
                at: now,
                outcome: recorded,
                proof: cmd.proof,
            };
            self.pending_idem.insert(key.clone(), rec.clone());
            self.changes.push(Change::Idempotency(key.clone(), rec));
        }
        outcome
    }

    fn replay(&self, rec: &Recorded) -> Option<Outcome> {
        Some(match rec {
            Recorded::Refused(e) => Outcome::Refused(e.clone()),
            Recorded::Allocation { created, alloc } => Outcome::Allocation {
                created: *created,
                alloc: alloc.clone(),
            },
            Recorded::Done { created, snapshot } => {
                let holder = self.lookup(&snapshot.id)?.holder.clone();
                let mut snapshot = snapshot.clone();
                // The store keeps no ceilings (they never change for a
                // scope); scope rows are never deleted, so they are here.
                for (c, k) in snapshot.counters.iter_mut().zip(&holder.scopes) {
                    c.ceiling = self.scope(k, 0).ceiling;
                }
                Outcome::Done {
                    created: *created,
                    view: View { holder, snapshot },
                }
            }
        })
    }

    fn view(&self, r: &Reservation) -> View {
        View {
            holder: r.holder.clone(),
            snapshot: Snapshot {
                id: r.id,
                state: r.state,
                amount: r.amount,
                charged: r.charged,
                expires_at: r.expires_at,
                counters: r.holder.scopes.iter().map(|k| self.scope(k, 0)).collect(),
            },
        }
    }

    fn reserve_op(
        &mut self,
        req: &ReserveRequest,
        actual: Option<u64>,
        now: u64,
        grace: u64,
    ) -> Result<(bool, Reservation), LedgerError> {
        let r = self.reserve(req, now)?;
        let Some(actual) = actual else {
            return Ok((true, r));
        };
        let chain = r.holder.chain.clone();
        match self.commit(&chain, &r.id, actual, now, grace) {
            Ok(r) => Ok((true, r)),
            Err(e) => {
                // A spend is one step: undo the hold rather than leave it.
                let _ = self.release(&chain, &r.id, now, grace);
                Err(e)
            }
        }
    }

    /// The interned holder for a chain, unit and scopes: from the cache, or
    /// a new one (a new row for the store).
    fn holder(&mut self, chain: &[BlockId], unit: &Unit, scopes: Vec<ScopeKey>) -> Arc<Holder> {
        let wanted = HolderRef {
            chain,
            unit,
            scopes: &scopes,
        };
        if let Some(h) = self.holders.get(&wanted) {
            return h.clone();
        }
        if let Some(h) = self
            .pending_holders
            .iter()
            .find(|h| HolderRef::of(h) == wanted)
        {
            return h.clone();
        }
        // A holder evicted from the cache is interned again under a new id:
        // the store may hold duplicates, which cost a row and change nothing.
        let h = Arc::new(Holder {
            id: self.next_holder,
            chain: chain.to_vec(),
            unit: unit.clone(),
            scopes,
        });
        // A holder id is never given back, not even by a rollback: a group
        // whose commit was in doubt may have written this holder row after
        // all, and reusing its id would make every later group that interns
        // a holder fail on the primary key (shared store: forever).
        self.next_holder += 1;
        self.changes.push(Change::Holder(h.clone()));
        self.pending_holders.push(h.clone());
        h
    }

    /// Holds `amount` on every scope for `unit`, or on none.
    pub fn reserve(&mut self, req: &ReserveRequest, now: u64) -> Result<Reservation, LedgerError> {
        if req.chain.is_empty() {
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
            .filter(|s| s.unit == req.unit)
            .map(|s| (ScopeKey::of(s), s.ceiling.min(MAX_AMOUNT)))
            .collect();
        if scopes.is_empty() {
            return Err(LedgerError::NoBudget);
        }
        // The allocation this chain draws from, if it covers scopes this
        // reserve holds on (budgets that apply to every action always are).
        let mut alloc = self
            .allocation_for(&req.chain, &req.unit)
            .filter(|a| {
                now <= a.expires_at && a.scopes.iter().all(|k| scopes.iter().any(|(s, _)| s == k))
            })
            .cloned();
        let drawn = match &alloc {
            Some(a) if a.overflow == Overflow::Deny && req.amount > a.unused() => {
                return Err(LedgerError::AllocationExhausted {
                    id: a.id,
                    remaining: a.unused(),
                });
            }
            Some(a) => req.amount.min(a.unused()),
            None => 0,
        };
        // Check every scope before touching any: all or nothing. At the
        // allocation's scopes, the drawn part is already in `held` (as the
        // allocation's unused part): only the rest comes from the pool.
        let mut updated = Vec::with_capacity(scopes.len());
        for (key, ceiling) in &scopes {
            let s = self.scope(key, *ceiling);
            if s.ceiling != *ceiling {
                return Err(LedgerError::CeilingConflict);
            }
            let covered = drawn > 0 && alloc.as_ref().is_some_and(|a| a.scopes.contains(key));
            let need = if covered {
                req.amount - drawn
            } else {
                req.amount
            };
            if s.remaining() < need {
                return Err(LedgerError::InsufficientBudget {
                    scope: key.clone(),
                    remaining: s.remaining(),
                });
            }
            let held = s.held.checked_add(need).ok_or(LedgerError::InvalidAmount)?;
            updated.push((key.clone(), ScopeState { held, ..s }));
        }
        for (k, s) in &updated {
            self.set_scope(k, *s);
        }
        if drawn > 0
            && let Some(mut a) = alloc.take()
        {
            a.drawn = a.drawn.saturating_add(drawn);
            self.set_draw(req.id, Some((a.id, drawn)));
            self.set_alloc(a);
        }
        let holder = self.holder(
            &req.chain,
            &req.unit,
            scopes.into_iter().map(|(k, _)| k).collect(),
        );
        let r = Reservation {
            id: req.id,
            holder,
            amount: req.amount,
            charged: None,
            state: ResState::Active,
            expires_at: now.saturating_add(req.ttl_ms),
            finalized_at: None,
        };
        self.set_reservation(r.clone());
        Ok(r)
    }

    fn active(
        &self,
        chain: &[BlockId],
        id: &ResId,
        now: u64,
        grace: u64,
    ) -> Result<Reservation, LedgerError> {
        let r = self.visible(chain, id).ok_or(LedgerError::NotFound)?;
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
        id: &ResId,
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
        // Under an allocation still active: the charge is taken from what
        // the hold drew first; what it drew and did not charge goes back
        // to the allocation; a charge above the hold draws from the
        // allocation's unused part before the pool.
        let draw = self.draws.get(id).copied();
        let mut alloc = draw.and_then(|(a, _)| self.allocs.get(&a).cloned());
        let d = match (&alloc, draw) {
            (Some(_), Some((_, d))) => d,
            _ => 0,
        };
        let extra_drawn = match &alloc {
            Some(a) if extra > 0 => {
                if a.overflow == Overflow::Deny && extra > a.unused() {
                    return Err(LedgerError::AllocationExhausted {
                        id: a.id,
                        remaining: a.unused(),
                    });
                }
                extra.min(a.unused())
            }
            _ => 0,
        };
        let back = d - actual.min(d);
        let mut updated = Vec::with_capacity(r.holder.scopes.len());
        for key in &r.holder.scopes {
            let s = self.scopes.get(key).copied().ok_or(LedgerError::NotFound)?;
            let covered = alloc.as_ref().is_some_and(|a| a.scopes.contains(key));
            let (need, back, taken) = if covered {
                (extra - extra_drawn, back, extra_drawn)
            } else {
                (extra, 0, 0)
            };
            if s.remaining() < need {
                return Err(LedgerError::InsufficientBudget {
                    scope: key.clone(),
                    remaining: s.remaining(),
                });
            }
            let held = s
                .held
                .checked_sub(r.amount)
                .and_then(|h| h.checked_add(back))
                .and_then(|h| h.checked_sub(taken))
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
        if let Some(mut a) = alloc.take() {
            // drawn >= d by the invariant; saturate rather than panic.
            a.drawn = a.drawn.saturating_sub(d);
            a.charged = a
                .charged
                .saturating_add(actual.min(d))
                .saturating_add(extra_drawn);
            self.set_alloc(a);
        }
        if draw.is_some() {
            self.set_draw(*id, None);
        }
        r.state = ResState::Committed;
        r.charged = Some(actual);
        r.finalized_at = Some(now);
        self.set_reservation(r.clone());
        Ok(r)
    }

    /// Spending or extending on a reservation whose maker's chain has been
    /// revoked since is refused, even for an unrevoked ancestor; releasing
    /// it is always allowed.
    fn check_chain_not_revoked(&self, r: &Reservation) -> Result<(), LedgerError> {
        match r.holder.chain.iter().find(|b| self.revoked.contains_key(b)) {
            Some(b) => Err(LedgerError::Revoked(*b)),
            None => Ok(()),
        }
    }

    /// Returns the hold.
    pub fn release(
        &mut self,
        chain: &[BlockId],
        id: &ResId,
        now: u64,
        grace: u64,
    ) -> Result<Reservation, LedgerError> {
        let r = self.active(chain, id, now, grace)?;
        Ok(self.finish(r, ResState::Released, now))
    }

    fn finish(&mut self, mut r: Reservation, state: ResState, now: u64) -> Reservation {
        // What the hold drew from an allocation still active goes back to
        // it (and stays held for the child); otherwise to the pool.
        let draw = self.draws.get(&r.id).copied();
        let alloc = draw.and_then(|(a, _)| self.allocs.get(&a).cloned());
        let back = match (&alloc, draw) {
            (Some(_), Some((_, d))) => d,
            _ => 0,
        };
        for key in &r.holder.scopes {
            if let Some(s) = self.scopes.get(key).copied() {
                let back = if alloc.as_ref().is_some_and(|a| a.scopes.contains(key)) {
                    back
                } else {
                    0
                };
                // held >= amount by the invariant; saturate rather than panic.
                self.set_scope(
                    key,
                    ScopeState {
                        held: s.held.saturating_sub(r.amount).saturating_add(back),
                        ..s
                    },
                );
            }
        }
        if let Some(mut a) = alloc {
            a.drawn = a.drawn.saturating_sub(back);
            self.set_alloc(a);
        }
        if draw.is_some() {
            self.set_draw(r.id, None);
        }
        r.state = state;
        r.finalized_at = Some(now);
        self.set_reservation(r.clone());
        r
    }

    /// Lengthens the hold to `expires_at`, while it is active.
    pub fn extend(
        &mut self,
        chain: &[BlockId],
        id: &ResId,
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
    /// each exactly once, taking them in expiry order: the cost is what
    /// expires, not how many holds exist. Returns their ids.
    pub fn expire(&mut self, now: u64, grace: u64) -> Vec<ResId> {
        let mut due = Vec::new();
        for (at, id) in &self.expiry {
            if now <= at.saturating_add(grace) {
                break;
            }
            due.push(*id);
        }
        let expired = due
            .into_iter()
            .filter_map(|id| {
                let r = self.active.get(&id)?.clone();
                Some(self.finish(r, ResState::Expired, now).id)
            })
            .collect();
        // Allocations lapse at their own time, with no grace: nothing
        // finishes an allocation late, it only stops guaranteeing.
        let due: Vec<AllocId> = self
            .alloc_expiry
            .iter()
            .take_while(|(at, _)| now > *at)
            .map(|(_, id)| *id)
            .collect();
        for id in due {
            if let Some(a) = self.allocs.get(&id).cloned() {
                self.end_allocation(a, AllocState::Expired, now);
            }
        }
        expired
    }

    /// Sets an amount aside for a child at every scope of the parent's
    /// chain, or at none, exactly as a reserve of that amount would hold.
    pub fn allocate(&mut self, req: &AllocateRequest, now: u64) -> Result<Allocation, LedgerError> {
        if req.parent.is_empty()
            || req.child.len() <= req.parent.len()
            || !req.child.starts_with(&req.parent)
        {
            return Err(LedgerError::NotDescendant);
        }
        if let Some(b) = req.child.iter().find(|b| self.revoked.contains_key(b)) {
            return Err(LedgerError::Revoked(*b));
        }
        if let Some(last) = req.child.last()
            && let Some(id) = self.alloc_by_child.get(&(*last, req.unit.clone()))
        {
            return Err(LedgerError::AllocationExists(*id));
        }
        if req.scopes.is_empty() {
            return Err(LedgerError::NoBudget);
        }
        let mut states = Vec::with_capacity(req.scopes.len());
        for (key, ceiling) in &req.scopes {
            let ceiling = (*ceiling).min(MAX_AMOUNT);
            let s = self.scope(key, ceiling);
            if s.ceiling != ceiling {
                return Err(LedgerError::CeilingConflict);
            }
            states.push((key, s));
        }
        // The allocation the child's parent draws from, if any: the new
        // one is carved from it first, at the scopes it covers, exactly as
        // a reserve by the parent would draw from it.
        let above = &req.child[..req.child.len() - 1];
        let mut source = self
            .allocation_for(above, &req.unit)
            .filter(|e| {
                now <= e.expires_at
                    && e.scopes
                        .iter()
                        .all(|k| req.scopes.iter().any(|(s, _)| s == k))
            })
            .cloned();
        let covered = |k: &ScopeKey| source.as_ref().is_some_and(|e| e.scopes.contains(k));
        let source_unused = source.as_ref().map_or(0, Allocation::unused);
        let child_ceiling = req.child_ceiling.min(MAX_AMOUNT);
        let amount = match req.amount {
            AllocAmount::Fixed(x) => {
                if x == 0 || x > MAX_AMOUNT {
                    return Err(LedgerError::InvalidAmount);
                }
                if x > child_ceiling {
                    return Err(LedgerError::ExceedsChildBudget {
                        ceiling: child_ceiling,
                    });
                }
                x
            }
            AllocAmount::Fraction { ppm } => {
                if ppm == 0 || ppm > 1_000_000 {
                    return Err(LedgerError::InvalidAmount);
                }
                // What the parent could reserve: the pool, plus its own
                // allocation where that covers the scope.
                let least = states
                    .iter()
                    .map(|(k, s)| {
                        let own = if covered(k) { source_unused } else { 0 };
                        s.remaining().saturating_add(own)
                    })
                    .min()
                    .unwrap_or(0);
                let part = u128::from(least) * u128::from(ppm) / 1_000_000;
                u64::try_from(part).unwrap_or(MAX_AMOUNT).min(child_ceiling)
            }
        };
        if amount == 0 {
            let (key, s) = states
                .iter()
                .min_by_key(|(_, s)| s.remaining())
                .ok_or(LedgerError::NoBudget)?;
            return Err(LedgerError::InsufficientBudget {
                scope: (*key).clone(),
                remaining: s.remaining(),
            });
        }
        let drawn = match &source {
            Some(e) if e.overflow == Overflow::Deny && amount > source_unused => {
                return Err(LedgerError::AllocationExhausted {
                    id: e.id,
                    remaining: source_unused,
                });
            }
            Some(_) => amount.min(source_unused),
            None => 0,
        };
        let mut updated = Vec::with_capacity(states.len());
        for (key, s) in &states {
            let need = if covered(key) { amount - drawn } else { amount };
            if s.remaining() < need {
                return Err(LedgerError::InsufficientBudget {
                    scope: (*key).clone(),
                    remaining: s.remaining(),
                });
            }
            let held = s.held.checked_add(need).ok_or(LedgerError::InvalidAmount)?;
            updated.push(((*key).clone(), ScopeState { held, ..*s }));
        }
        for (k, s) in &updated {
            self.set_scope(k, *s);
        }
        let source = match source.take() {
            Some(mut e) if drawn > 0 => {
                e.drawn = e.drawn.saturating_add(drawn);
                let id = e.id;
                self.set_alloc(e);
                Some((id, drawn))
            }
            _ => None,
        };
        let a = Allocation {
            id: req.id,
            parent: req.parent.clone(),
            child: req.child.clone(),
            unit: req.unit.clone(),
            scopes: req.scopes.iter().map(|(k, _)| k.clone()).collect(),
            amount,
            charged: 0,
            drawn: 0,
            overflow: req.overflow,
            state: AllocState::Active,
            expires_at: now
                .saturating_add(req.ttl_ms)
                .min(req.not_after_ms.unwrap_or(u64::MAX)),
            finalized_at: None,
            returned: 0,
            source,
        };
        self.set_alloc(a.clone());
        Ok(a)
    }

    /// Returns an allocation's unused part, once. Holds still active under
    /// it keep their money until they end; then it goes to the pool.
    pub fn release_allocation(
        &mut self,
        chain: &[BlockId],
        id: &AllocId,
        now: u64,
    ) -> Result<Allocation, LedgerError> {
        let a = self
            .alloc_visible(chain, id)
            .ok_or(LedgerError::AllocationNotFound)?
            .clone();
        if a.state != AllocState::Active {
            return Err(LedgerError::AllocationFinalized(a.state));
        }
        Ok(self.end_allocation(a, AllocState::Released, now))
    }

    /// Ends an active allocation: its unused part leaves `held` at every
    /// one of its scopes. Only called on an active one, so it happens once.
    fn end_allocation(&mut self, mut a: Allocation, state: AllocState, now: u64) -> Allocation {
        let unused = a.unused();
        for key in &a.scopes {
            if let Some(s) = self.scopes.get(key).copied() {
                self.set_scope(
                    key,
                    ScopeState {
                        held: s.held.saturating_sub(unused),
                        ..s
                    },
                );
            }
        }
        a.returned = unused;
        a.state = state;
        a.finalized_at = Some(now);
        self.set_alloc(a.clone());
        // Carved from an enclosing allocation still active: what it took
        // from it and did not use goes back to it (and stays held for its
        // child); what it used counts as charged there.
        if let Some((eid, d)) = a.source
            && let Some(mut e) = self.allocs.get(&eid).cloned()
        {
            let used = a.amount.saturating_sub(unused).min(d);
            let back = d - used;
            for key in &e.scopes {
                if let Some(s) = self.scopes.get(key).copied() {
                    self.set_scope(
                        key,
                        ScopeState {
                            held: s.held.saturating_add(back),
                            ..s
                        },
                    );
                }
            }
            e.drawn = e.drawn.saturating_sub(d);
            e.charged = e.charged.saturating_add(used);
            self.set_alloc(e);
        }
        a
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

    /// Revokes `block` of `tree`. Revoking twice changes nothing and
    /// reports the first revocation's feed position.
    /// Revoking a block ends, at `now`, every active allocation whose
    /// child's chain contains it.
    pub fn revoke(&mut self, tree: BlockId, block: BlockId, now: u64) -> Revocation {
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
        let mut hit: Vec<Allocation> = self
            .allocs
            .values()
            .filter(|a| a.child.contains(&block))
            .cloned()
            .collect();
        hit.sort_by_key(|a| a.id);
        for a in hit {
            self.end_allocation(a, AllocState::Revoked, now);
        }
        Revocation {
            seq: self.revoke_seq,
            new: true,
        }
    }

    /// Checks the invariant everywhere, and that every scope's `held` is
    /// exactly what its active reservations hold; for tests and the
    /// crash-recovery check.
    pub fn check_invariant(&self) -> Result<(), ScopeKey> {
        let mut held: HashMap<&ScopeKey, u64> = HashMap::new();
        for r in self.active.values() {
            for k in &r.holder.scopes {
                let h = held.entry(k).or_default();
                *h = h.saturating_add(r.amount);
            }
        }
        // An active allocation's unused part is held at each of its scopes,
        // and what it says is drawn is what its active holds drew.
        let mut drawn: HashMap<AllocId, u64> = HashMap::new();
        for (r, (a, d)) in &self.draws {
            if self.active.contains_key(r) {
                *drawn.entry(*a).or_default() += d;
            }
        }
        for (e, d) in self.allocs.values().filter_map(|a| a.source) {
            *drawn.entry(e).or_default() += d;
        }
        for a in self.allocs.values() {
            let consistent = drawn.get(&a.id).copied().unwrap_or(0) == a.drawn
                && a.charged
                    .checked_add(a.drawn)
                    .is_some_and(|u| u <= a.amount);
            if !consistent {
                return Err(a.scopes.first().cloned().unwrap_or(ScopeKey {
                    block: a.parent.last().copied().unwrap_or(BlockId([0; 32])),
                    unit: a.unit.clone(),
                    tools: None,
                }));
            }
            for k in &a.scopes {
                let h = held.entry(k).or_default();
                *h = h.saturating_add(a.unused());
            }
        }
        for (k, s) in &self.scopes {
            let over = s
                .spent
                .checked_add(s.held)
                .is_none_or(|used| used > s.ceiling);
            if over || held.get(k).copied().unwrap_or(0) != s.held {
                return Err(k.clone());
            }
        }
        Ok(())
    }
}

/// Constant-time equality of fingerprints: a mismatch answer must not tell
/// an attacker how much of a guessed request matched.
fn subtle_eq(a: &Fingerprint, b: &Fingerprint) -> subtle::Choice {
    use subtle::ConstantTimeEq as _;
    a.ct_eq(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(block: u8, ceiling: u64) -> BudgetScope {
        BudgetScope {
            block: block as usize,
            block_id: BlockId([block; 32]),
            unit: Unit::Calls,
            ceiling,
            tools: None,
        }
    }

    fn key(block: u8) -> ScopeKey {
        ScopeKey::of(&scope(block, 0))
    }

    fn chain(leaf: u8) -> Vec<BlockId> {
        vec![BlockId([0; 32]), BlockId([1; 32]), BlockId([leaf; 32])]
    }

    fn id(n: u64) -> ResId {
        let mut r = [0u8; 12];
        r[4..].copy_from_slice(&n.to_be_bytes());
        ResId::new(1, r)
    }

    fn req(n: u64, leaf: u8, amount: u64) -> ReserveRequest {
        // A chain 0 -> 1 -> leaf; scopes nearest first.
        let mut scopes = vec![scope(leaf, 5)];
        if leaf != 1 {
            scopes.push(scope(1, 8));
        }
        scopes.push(scope(0, 100));
        ReserveRequest {
            id: id(n),
            chain: chain(leaf),
            unit: Unit::Calls,
            scopes,
            amount,
            ttl_ms: 1_000,
        }
    }

    fn cmd(op: Operation, idem: Option<&str>) -> Command {
        Command {
            op,
            idem: idem.map(|k| {
                (
                    IdemKey {
                        tree: BlockId([0; 32]),
                        key: k.into(),
                    },
                    [k.len() as u8; 16],
                )
            }),
            proof: None,
        }
    }

    fn reserve(n: u64, leaf: u8, amount: u64) -> Operation {
        Operation::Reserve {
            req: req(n, leaf, amount),
            actual: None,
        }
    }

    #[test]
    fn siblings_cannot_overspend_their_parent() {
        let mut l = Ledger::default();
        l.reserve(&req(1, 2, 5), 0).unwrap();
        // Sibling 3 has its own 5 but the parent (8) has only 3 left.
        let err = l.reserve(&req(2, 3, 4), 0).unwrap_err();
        assert_eq!(
            err,
            LedgerError::InsufficientBudget {
                scope: key(1),
                remaining: 3
            }
        );
        // Nothing was held on the sibling's own scope by the failed attempt.
        assert_eq!(l.scope(&key(3), 5).held, 0);
        l.reserve(&req(3, 3, 3), 0).unwrap();
        l.check_invariant().unwrap();
    }

    #[test]
    fn commit_release_and_finality() {
        let mut l = Ledger::default();
        let c = chain(2);
        l.reserve(&req(1, 2, 4), 0).unwrap();
        let r = l.commit(&c, &id(1), 3, 10, 0).unwrap();
        assert_eq!((r.charged, r.finalized_at), (Some(3), Some(10)));
        assert_eq!(
            l.scope(&key(2), 5),
            ScopeState {
                ceiling: 5,
                spent: 3,
                held: 0
            }
        );
        let finalized = Err(LedgerError::Finalized(ResState::Committed));
        assert_eq!(l.release(&c, &id(1), 10, 0), finalized);
        assert_eq!(l.commit(&c, &id(1), 3, 10, 0), finalized);
        // Another tree cannot see it, nor a sibling in the same tree.
        let not_found = Err(LedgerError::NotFound);
        assert_eq!(
            l.release(&[BlockId([9; 32]), BlockId([2; 32])], &id(1), 10, 0),
            not_found
        );
        assert_eq!(l.release(&chain(3), &id(1), 10, 0), not_found);
        // An ancestor of the maker sees it (finalized here); a descendant does not.
        assert_eq!(l.release(&c[..2], &id(1), 10, 0), finalized);
        let mut descendant = c.clone();
        descendant.push(BlockId([7; 32]));
        assert_eq!(l.release(&descendant, &id(1), 10, 0), not_found);
    }

    #[test]
    fn commit_above_hold_needs_room_everywhere() {
        let mut l = Ledger::default();
        let c = chain(2);
        l.reserve(&req(1, 2, 2), 0).unwrap();
        // Leaf ceiling 5: 2 held, commit of 6 needs 4 more but only 3 remain.
        assert!(matches!(
            l.commit(&c, &id(1), 6, 10, 0),
            Err(LedgerError::InsufficientBudget { .. })
        ));
        assert_eq!(l.lookup(&id(1)).unwrap().state, ResState::Active);
        assert_eq!(l.commit(&c, &id(1), 5, 10, 0).unwrap().charged, Some(5));
        l.check_invariant().unwrap();
    }

    #[test]
    fn expiry_is_decided_by_the_clock_happens_once_and_follows_extend() {
        let mut l = Ledger::default();
        let c = chain(2);
        l.reserve(&req(1, 2, 4), 0).unwrap(); // expires at 1 000
        l.reserve(&req(2, 3, 1), 500).unwrap(); // expires at 1 500
        assert!(l.expire(1_000, 100).is_empty());
        assert_eq!(
            l.extend(&c, &id(1), 2_000, 1_050, 100).unwrap().expires_at,
            2_000
        );
        // The index follows the extension: only the other hold is due.
        assert_eq!(l.expire(1_601, 100), vec![id(2)]);
        assert_eq!(l.expire(2_101, 100), vec![id(1)]);
        assert!(l.expire(5_000, 100).is_empty());
        assert_eq!(l.population().expiry, 0);
        assert_eq!(
            l.commit(&c, &id(1), 1, 5_000, 100),
            Err(LedgerError::Finalized(ResState::Expired))
        );
        assert_eq!(l.scope(&key(2), 5).held, 0);
        l.check_invariant().unwrap();
    }

    #[test]
    fn holder_ids_are_never_given_back() {
        // A group whose commit was in doubt may have stored its holder: the
        // next group must not reuse that id for another holder.
        let mut l = Ledger::shared(Vec::new(), CacheSizes::default());
        l.grant_holder_ids(10, 20);
        let s = |k: u8, ceiling| {
            (
                key(k),
                ScopeState {
                    ceiling,
                    spent: 0,
                    held: 0,
                },
            )
        };
        l.load([s(0, 100), s(1, 8), s(2, 5), s(3, 5)], [], None);
        let first = l.reserve(&req(1, 2, 1), 0).unwrap().holder.id;
        l.rollback();
        l.load([s(0, 100), s(1, 8), s(2, 5), s(3, 5)], [], None);
        let second = l.reserve(&req(2, 3, 1), 0).unwrap().holder.id;
        assert_eq!(first, 10);
        assert_ne!(first, second, "a rolled-back holder id was reused");
    }

    #[test]
    fn rollback_restores_everything() {
        let mut l = Ledger::default();
        l.reserve(&req(1, 2, 4), 0).unwrap();
        l.settle();
        let before = l.population();
        l.reserve(&req(2, 3, 1), 0).unwrap();
        l.commit(&chain(2), &id(1), 4, 10, 0).unwrap();
        l.revoke(BlockId([0; 32]), BlockId([3; 32]), 0);
        l.apply(&cmd(reserve(3, 2, 1), Some("k")), 0, 0);
        l.rollback();
        assert!(l.lookup(&id(2)).is_none());
        assert_eq!(l.lookup(&id(1)).unwrap().state, ResState::Active);
        assert!(!l.is_revoked(&BlockId([3; 32])));
        assert_eq!(l.scope(&key(1), 8).held, 4);
        assert_eq!(l.population(), before);
        assert!(
            l.idem_lookup(&cmd(Operation::Replay, Some("k")).idem.unwrap().0)
                .is_none()
        );
        l.check_invariant().unwrap();
    }

    #[test]
    fn coalescing_keeps_the_last_write_of_each_row() {
        let mut l = Ledger::default();
        l.reserve(&req(1, 2, 1), 0).unwrap();
        l.reserve(&req(2, 3, 1), 0).unwrap();
        l.commit(&chain(2), &id(1), 1, 10, 0).unwrap();
        let all = l.changes().len();
        let kept = l.coalesced_changes();
        // Scopes 0, 1, 2, 3, two holders and reservations 1, 2: one row each.
        assert_eq!(kept.len(), 8, "from {all}");
        assert!(kept.iter().any(|c| matches!(c,
            Change::Reservation(r) if r.id == id(1) && r.state == ResState::Committed)));
        assert!(kept.iter().any(|c| matches!(c,
            Change::Scope(k, s) if *k == key(0) && s.held == 1 && s.spent == 1)));
    }

    #[test]
    fn holders_are_interned_by_what_they_hold_on() {
        let mut l = Ledger::new(CacheSizes::all(4));
        let a = l.reserve(&req(1, 2, 1), 0).unwrap();
        let b = l.reserve(&req(2, 2, 1), 0).unwrap();
        // In the same group: from the pending list.
        assert!(Arc::ptr_eq(&a.holder, &b.holder));
        l.settle();
        // In a later group: from the cache, no new row.
        let c = l.reserve(&req(3, 2, 1), 0).unwrap();
        assert!(Arc::ptr_eq(&a.holder, &c.holder));
        assert!(!l.changes().iter().any(|c| matches!(c, Change::Holder(_))));
        // Another chain is another holder.
        let d = l.reserve(&req(4, 3, 1), 0).unwrap();
        assert_ne!(d.holder.id, a.holder.id);
    }

    #[test]
    fn a_revoked_makers_hold_can_be_released_but_not_charged() {
        let mut l = Ledger::default();
        l.reserve(&req(1, 2, 1), 0).unwrap();
        l.revoke(BlockId([0; 32]), BlockId([2; 32]), 0);
        let ancestor = &chain(2)[..2];
        let revoked = Err(LedgerError::Revoked(BlockId([2; 32])));
        assert_eq!(l.commit(ancestor, &id(1), 1, 10, 0), revoked);
        assert_eq!(l.extend(ancestor, &id(1), 500, 10, 0), revoked);
        assert_eq!(
            l.release(ancestor, &id(1), 10, 0).unwrap().state,
            ResState::Released
        );
        assert_eq!(l.reserve(&req(2, 2, 1), 0), revoked);
        assert_eq!(
            l.revoke(BlockId([0; 32]), BlockId([2; 32]), 0),
            Revocation { seq: 1, new: false }
        );
    }

    #[test]
    fn replays_are_identical_and_mismatches_change_nothing() {
        let mut l = Ledger::default();
        let first = l.apply(&cmd(reserve(1, 2, 2), Some("a")), 0, 0);
        assert!(matches!(first, Outcome::Done { created: true, .. }));
        l.settle();
        // Same key, same fingerprint: the same outcome, nothing held twice.
        assert_eq!(l.apply(&cmd(reserve(9, 2, 2), Some("a")), 5, 0), first);
        assert_eq!(l.scope(&key(2), 5).held, 2);
        // Same key, another fingerprint: refused, nothing recorded.
        let mut other = cmd(reserve(10, 2, 1), Some("a"));
        other.idem.as_mut().unwrap().1 = [0xee; 16];
        assert_eq!(l.apply(&other, 5, 0), Outcome::KeyReused);
        assert!(l.changes().is_empty());
        // A refusal is recorded and replayed as the same refusal.
        let big = l.apply(&cmd(reserve(11, 2, 50), Some("bb")), 5, 0);
        assert!(matches!(
            big,
            Outcome::Refused(LedgerError::InsufficientBudget { .. })
        ));
        assert_eq!(l.apply(&cmd(reserve(12, 2, 50), Some("bb")), 6, 0), big);
        // Replay-only finds records and reports their absence.
        assert_eq!(l.apply(&cmd(Operation::Replay, Some("a")), 7, 0), first);
        assert_eq!(
            l.apply(&cmd(Operation::Replay, Some("zzz")), 7, 0),
            Outcome::NotRecorded
        );
    }

    #[test]
    fn evicted_records_are_asked_for_and_replayed_from_what_the_store_returns() {
        let mut l = Ledger::new(CacheSizes::all(1));
        let first = l.apply(&cmd(reserve(1, 2, 1), Some("a")), 0, 0);
        let commit = cmd(
            Operation::Commit {
                chain: chain(2),
                id: id(1),
                actual: 1,
            },
            Some("c"),
        );
        let committed = l.apply(&commit, 1, 0);
        // What the store would hold: the records and the finalized reservation.
        let stored: Vec<Change> = l.changes().to_vec();
        l.settle();
        // Push both out of the one-entry caches.
        for n in 2..6 {
            let spend = Operation::Reserve {
                req: req(n, 3, 1),
                actual: Some(1),
            };
            l.apply(&cmd(spend, Some(&format!("k{n}"))), 2, 0);
            l.settle();
        }
        let mut missing = Missing::default();
        l.missing(&commit, &mut missing);
        assert_eq!(missing.idem.len(), 1, "{missing:?}");
        assert_eq!(missing.reservations, vec![id(1)]);
        let rec = stored.iter().find_map(|c| match c {
            Change::Idempotency(k, r) if k.key == "c" => Some(r.clone()),
            _ => None,
        });
        let res = stored.iter().rev().find_map(|c| match c {
            Change::Reservation(r) if r.id == id(1) => Some(r.clone()),
            _ => None,
        });
        // The store keeps no ceilings; the replay restores them.
        let rec = rec.map(|mut r| {
            if let Recorded::Done { snapshot, .. } = &mut r.outcome {
                snapshot.counters.iter_mut().for_each(|c| c.ceiling = 0);
            }
            r
        });
        let next = l.supply([(missing.idem[0].clone(), rec)], [(id(1), res)]);
        assert!(next.is_empty(), "the reservation came with the record");
        let mut again = Missing::default();
        l.missing(&commit, &mut again);
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(l.apply(&commit, 50, 0), committed);
        assert!(l.changes().is_empty(), "a replay writes nothing");
        // The first reserve's record is gone from memory: without a supply
        // the writer must ask for it, never treat it as new on its own.
        let mut m = Missing::default();
        l.missing(&cmd(reserve(1, 2, 1), Some("a")), &mut m);
        assert_eq!(m.idem.len(), 1);
        drop(first);
    }

    #[test]
    fn memory_stays_bounded_by_active_state_and_the_caches() {
        // 200k finalized pairs through a ledger with 1 000-entry caches, in
        // groups as the writer makes them: what memory holds never grows
        // with history.
        let mut l = Ledger::new(CacheSizes::all(1_000));
        let c = chain(2);
        let big = |b: u8| BudgetScope {
            ceiling: u64::MAX,
            ..scope(b, 0)
        };
        let mut peak = l.population();
        for n in 0..200_000u64 {
            let req = ReserveRequest {
                scopes: vec![big(2), big(1), big(0)],
                ..req(n, 2, 1)
            };
            let a = l.apply(
                &cmd(
                    Operation::Reserve { req, actual: None },
                    Some(&format!("r{n}")),
                ),
                n,
                0,
            );
            assert!(matches!(a, Outcome::Done { .. }), "{a:?}");
            let commit = Operation::Commit {
                chain: c.clone(),
                id: id(n),
                actual: 1,
            };
            let b = l.apply(&cmd(commit, Some(&format!("c{n}"))), n, 0);
            assert!(matches!(b, Outcome::Done { .. }), "{b:?}");
            if n % 256 == 255 {
                l.settle();
                let p = l.population();
                peak = Population {
                    finalized: peak.finalized.max(p.finalized),
                    idempotency: peak.idempotency.max(p.idempotency),
                    holders: peak.holders.max(p.holders),
                    active: peak.active.max(p.active),
                    expiry: peak.expiry.max(p.expiry),
                    scopes: peak.scopes.max(p.scopes),
                    revoked: 0,
                    allocations: 0,
                };
            }
        }
        l.settle();
        assert!(peak.idempotency <= 1_000, "{peak:?}");
        assert!(peak.finalized <= 1_000, "{peak:?}");
        assert!(peak.holders <= 1_000, "{peak:?}");
        assert_eq!(
            (peak.active, peak.expiry, peak.scopes),
            (0, 0, 3),
            "{peak:?}"
        );
        assert_eq!(l.scope(&key(0), 0).spent, 200_000);
        assert!(l.pending_idem.is_empty() && l.pending_final.is_empty());
        l.check_invariant().unwrap();
    }

    #[test]
    fn a_reservation_read_for_a_replay_is_never_changed_or_kept_while_active() {
        // Two reservations as another server left them: one active and
        // long due, one committed.
        let mut other = Ledger::default();
        for (n, key) in [(1, "a"), (2, "b")] {
            let out = other.apply(&cmd(reserve(n, 2, 1), Some(key)), 0, 0);
            assert!(matches!(out, Outcome::Done { created: true, .. }));
        }
        other.settle();
        let active = other.active[&id(1)].clone();
        let mut committed = other.active[&id(2)].clone();
        committed.state = ResState::Committed;
        committed.charged = Some(1);
        committed.finalized_at = Some(5);

        let mut l = Ledger::shared(vec![], CacheSizes::all(8));
        l.supply_replayed([
            (active.id, Some(active.clone())),
            (committed.id, Some(committed.clone())),
        ]);
        assert_eq!(l.lookup(&active.id), Some(&active), "shown to the replay");
        // Read without a lock: a tick in the same group must not expire it.
        assert!(l.expire(u64::MAX / 2, 0).is_empty());
        assert!(l.changes.is_empty());
        l.settle();
        // After the group only the final state is kept warm.
        assert!(!l.in_memory(&active.id));
        assert_eq!(l.lookup(&committed.id), Some(&committed));
    }

    #[test]
    fn a_shared_ledger_decides_on_what_was_loaded_and_then_forgets_it() {
        let mut l = Ledger::shared(vec![], CacheSizes::all(8));
        l.grant_holder_ids(100, 102);
        let c = cmd(reserve(1, 2, 2), Some("a"));
        let mut t = Touched::default();
        l.touches(&c, &mut t);
        assert_eq!(
            t.scopes.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            vec![key(2), key(1), key(0)]
        );
        assert_eq!(t.blocks, chain(2));
        // Another server spent 7 of the parent's 8 since: only 1 is left.
        l.supply([(c.idem.clone().unwrap().0, None)], []);
        l.load(
            [
                (
                    key(2),
                    ScopeState {
                        ceiling: 5,
                        spent: 0,
                        held: 0,
                    },
                ),
                (
                    key(1),
                    ScopeState {
                        ceiling: 8,
                        spent: 7,
                        held: 0,
                    },
                ),
                (
                    key(0),
                    ScopeState {
                        ceiling: 100,
                        spent: 7,
                        held: 0,
                    },
                ),
            ],
            [],
            None,
        );
        let out = l.apply(&c, 0, 0);
        assert!(
            matches!(&out, Outcome::Refused(LedgerError::InsufficientBudget { scope, remaining: 1 }) if *scope == key(1)),
            "{out:?}"
        );
        // A revocation read from the store refuses the chain.
        let c2 = cmd(reserve(2, 3, 1), None);
        l.load(
            [(
                key(3),
                ScopeState {
                    ceiling: 5,
                    spent: 0,
                    held: 0,
                },
            )],
            [(BlockId([3; 32]), 4)],
            None,
        );
        assert_eq!(
            l.apply(&c2, 0, 0),
            Outcome::Refused(LedgerError::Revoked(BlockId([3; 32])))
        );
        let c3 = cmd(reserve(3, 2, 1), None);
        assert!(matches!(
            l.apply(&c3, 0, 0),
            Outcome::Done { created: true, .. }
        ));
        assert_eq!(
            l.holder_ids_left(),
            1,
            "the holder took an id of the granted range"
        );
        l.settle();
        let p = l.population();
        assert_eq!(
            (p.scopes, p.active, p.expiry),
            (0, 0, 0),
            "working set forgotten"
        );
        assert!(
            l.is_revoked(&BlockId([3; 32])),
            "revocations are kept: they never end"
        );
    }

    #[test]
    fn a_spend_that_cannot_be_charged_leaves_no_hold() {
        let mut l = Ledger::default();
        let out = l.apply(
            &cmd(
                Operation::Reserve {
                    req: req(1, 2, 2),
                    actual: Some(7),
                },
                Some("s"),
            ),
            0,
            0,
        );
        assert!(matches!(
            out,
            Outcome::Refused(LedgerError::InsufficientBudget { .. })
        ));
        assert_eq!(l.scope(&key(2), 5).held, 0);
        assert_eq!(l.population().active, 0);
        l.check_invariant().unwrap();
    }

    fn aid(n: u64) -> AllocId {
        AllocId(id(n).0)
    }

    /// Parent [0, 1] (ceilings 100 and 8) allocates to child [0, 1, leaf] (5).
    fn alloc_req(n: u64, leaf: u8, amount: u64, overflow: Overflow) -> AllocateRequest {
        AllocateRequest {
            id: aid(n),
            parent: chain(leaf)[..2].to_vec(),
            child: chain(leaf),
            unit: Unit::Calls,
            scopes: vec![(key(1), 8), (key(0), 100)],
            amount: AllocAmount::Fixed(amount),
            child_ceiling: 5,
            overflow,
            ttl_ms: 10_000,
            not_after_ms: None,
        }
    }

    #[test]
    fn an_allocation_is_held_like_a_reserve_and_guarantees_the_child() {
        let mut l = Ledger::default();
        let a = l.allocate(&alloc_req(1, 2, 4, Overflow::Deny), 0).unwrap();
        assert_eq!((a.amount, a.unused(), a.state), (4, 4, AllocState::Active));
        assert_eq!(l.scope(&key(1), 8).held, 4);
        assert_eq!(l.scope(&key(0), 100).held, 4);
        assert_eq!(
            l.scope(&key(2), 5).held,
            0,
            "not held at the child's own scope"
        );
        assert_eq!(l.allocated(&key(1)), 4);
        // A sibling finds only the rest of the parent's pool.
        assert_eq!(
            l.reserve(&req(10, 3, 5), 0),
            Err(LedgerError::InsufficientBudget {
                scope: key(1),
                remaining: 4
            })
        );
        l.reserve(&req(11, 3, 4), 0).unwrap();
        // The child still gets its whole allocation.
        l.reserve(&req(12, 2, 4), 0).unwrap();
        assert_eq!(l.scope(&key(1), 8).held, 8);
        assert_eq!(l.scope(&key(2), 5).held, 4);
        assert_eq!(l.allocation_for(&chain(2), &Unit::Calls).unwrap().drawn, 4);
        l.check_invariant().unwrap();
    }

    #[test]
    fn overflow_deny_refuses_naming_the_allocation_and_shared_takes_the_pool() {
        let mut l = Ledger::default();
        l.allocate(&alloc_req(1, 2, 3, Overflow::Deny), 0).unwrap();
        assert_eq!(
            l.reserve(&req(10, 2, 4), 0),
            Err(LedgerError::AllocationExhausted {
                id: aid(1),
                remaining: 3
            })
        );
        assert_eq!(l.scope(&key(2), 5).held, 0, "nothing held by the refusal");
        l.allocate(&alloc_req(2, 3, 3, Overflow::Shared), 0)
            .unwrap();
        l.reserve(&req(11, 3, 4), 0).unwrap();
        // 3 from the allocation, 1 from the pool: held 3 (alloc 1) + 4 (res).
        assert_eq!(l.scope(&key(1), 8).held, 7);
        assert_eq!(
            l.allocation_for(&chain(3), &Unit::Calls).unwrap().unused(),
            0
        );
        l.check_invariant().unwrap();
    }

    #[test]
    fn commit_charges_the_allocation_and_release_returns_the_unused_part_once() {
        let mut l = Ledger::default();
        let c = chain(2);
        l.allocate(&alloc_req(1, 2, 4, Overflow::Deny), 0).unwrap();
        l.reserve(&req(10, 2, 3), 0).unwrap();
        l.commit(&c, &id(10), 2, 1, 0).unwrap();
        let a = l.allocation_for(&c, &Unit::Calls).unwrap().clone();
        assert_eq!((a.charged, a.drawn, a.unused()), (2, 0, 2));
        let s = l.scope(&key(1), 8);
        assert_eq!((s.spent, s.held, s.remaining()), (2, 2, 4));
        // The parent releases: exactly the unused 2 come back, once.
        let r = l.release_allocation(&c[..2], &aid(1), 5).unwrap();
        assert_eq!(
            (r.state, r.returned, r.finalized_at),
            (AllocState::Released, 2, Some(5))
        );
        let s = l.scope(&key(1), 8);
        assert_eq!((s.spent, s.held, s.remaining()), (2, 0, 6));
        assert_eq!(
            l.release_allocation(&c, &aid(1), 6),
            Err(LedgerError::AllocationFinalized(AllocState::Released))
        );
        assert_eq!(l.scope(&key(1), 8).remaining(), 6);
        // The child is an ordinary child again.
        assert!(l.allocation_for(&c, &Unit::Calls).is_none());
        l.check_invariant().unwrap();
    }

    #[test]
    fn holds_active_at_release_keep_their_money_until_they_end() {
        let mut l = Ledger::default();
        let c = chain(2);
        l.allocate(&alloc_req(1, 2, 4, Overflow::Deny), 0).unwrap();
        l.reserve(&req(10, 2, 3), 0).unwrap();
        l.reserve(&req(11, 2, 1), 0).unwrap();
        let r = l.release_allocation(&c, &aid(1), 1).unwrap();
        assert_eq!(r.returned, 0, "everything was drawn");
        assert_eq!(l.scope(&key(1), 8).held, 4);
        // Ending a hold now returns its money to the pool, not the allocation.
        l.release(&c, &id(10), 2, 0).unwrap();
        assert_eq!(l.scope(&key(1), 8).held, 1);
        l.commit(&c, &id(11), 1, 2, 0).unwrap();
        let s = l.scope(&key(1), 8);
        assert_eq!((s.spent, s.held, s.remaining()), (1, 0, 7));
        l.check_invariant().unwrap();
    }

    #[test]
    fn a_released_hold_returns_to_the_allocation_and_a_larger_commit_draws_from_it() {
        let mut l = Ledger::default();
        let c = chain(2);
        l.allocate(&alloc_req(1, 2, 4, Overflow::Shared), 0)
            .unwrap();
        l.reserve(&req(10, 2, 2), 0).unwrap();
        l.release(&c, &id(10), 1, 0).unwrap();
        assert_eq!(l.allocation_for(&c, &Unit::Calls).unwrap().unused(), 4);
        assert_eq!(l.scope(&key(1), 8).held, 4);
        l.reserve(&req(11, 2, 1), 0).unwrap();
        l.commit(&c, &id(11), 3, 2, 0).unwrap();
        let a = l.allocation_for(&c, &Unit::Calls).unwrap().clone();
        assert_eq!((a.charged, a.drawn, a.unused()), (3, 0, 1));
        let s = l.scope(&key(1), 8);
        assert_eq!((s.spent, s.held), (3, 1));
        l.check_invariant().unwrap();
    }

    #[test]
    fn allocations_end_on_their_ttl_on_the_child_expiry_and_on_revocation() {
        let mut l = Ledger::default();
        let mut short = alloc_req(1, 2, 2, Overflow::Deny);
        short.not_after_ms = Some(500);
        assert_eq!(l.allocate(&short, 0).unwrap().expires_at, 500);
        l.allocate(&alloc_req(2, 3, 3, Overflow::Deny), 0).unwrap();
        assert_eq!(l.scope(&key(1), 8).held, 5);
        l.expire(500, 0);
        assert_eq!(l.population().allocations, 2, "not before its time");
        l.expire(501, 0);
        assert_eq!(l.population().allocations, 1);
        assert_eq!(l.scope(&key(1), 8).held, 3);
        l.revoke(BlockId([0; 32]), BlockId([3; 32]), 600);
        assert_eq!(l.population().allocations, 0);
        assert_eq!(l.scope(&key(1), 8).held, 0);
        let c = chain(3);
        assert_eq!(
            l.apply(
                &cmd(
                    Operation::GetAllocation {
                        chain: c[..2].to_vec(),
                        id: aid(2)
                    },
                    None
                ),
                601,
                0
            ),
            Outcome::Allocation {
                created: false,
                alloc: Allocation {
                    state: AllocState::Revoked,
                    finalized_at: Some(600),
                    returned: 3,
                    ..l.alloc_lookup(&aid(2)).unwrap().clone()
                }
            }
        );
        l.check_invariant().unwrap();
    }

    #[test]
    fn who_may_allocate_see_and_release() {
        let mut l = Ledger::default();
        let mut bad = alloc_req(1, 2, 2, Overflow::Deny);
        bad.child = vec![BlockId([0; 32]), BlockId([9; 32]), BlockId([2; 32])];
        assert_eq!(l.allocate(&bad, 0), Err(LedgerError::NotDescendant));
        bad.child = chain(2)[..2].to_vec();
        assert_eq!(l.allocate(&bad, 0), Err(LedgerError::NotDescendant));
        assert_eq!(
            l.allocate(&alloc_req(1, 2, 6, Overflow::Deny), 0),
            Err(LedgerError::ExceedsChildBudget { ceiling: 5 })
        );
        l.allocate(&alloc_req(1, 2, 2, Overflow::Deny), 0).unwrap();
        assert_eq!(
            l.allocate(&alloc_req(2, 2, 1, Overflow::Deny), 0),
            Err(LedgerError::AllocationExists(aid(1)))
        );
        // A sibling and a descendant of the child do not see it.
        let mut below = chain(2);
        below.push(BlockId([7; 32]));
        for c in [chain(3), below] {
            assert_eq!(
                l.release_allocation(&c, &aid(1), 1),
                Err(LedgerError::AllocationNotFound)
            );
        }
        // The root (an ancestor of the parent) does.
        l.release_allocation(&chain(2)[..1], &aid(1), 1).unwrap();
        l.check_invariant().unwrap();
    }

    #[test]
    fn a_fraction_of_the_remaining_is_capped_at_the_child_ceiling() {
        let mut l = Ledger::default();
        l.reserve(&req(10, 3, 2), 0).unwrap(); // parent remaining 6
        let mut half = alloc_req(1, 2, 0, Overflow::Deny);
        half.amount = AllocAmount::Fraction { ppm: 500_000 };
        assert_eq!(l.allocate(&half, 0).unwrap().amount, 3);
        let mut all = alloc_req(2, 4, 0, Overflow::Deny);
        all.amount = AllocAmount::Fraction { ppm: 1_000_000 };
        all.child_ceiling = 2;
        assert_eq!(l.allocate(&all, 0).unwrap().amount, 2);
        let mut none = alloc_req(3, 5, 0, Overflow::Deny);
        none.amount = AllocAmount::Fraction { ppm: 1 };
        assert!(matches!(
            l.allocate(&none, 0),
            Err(LedgerError::InsufficientBudget { .. })
        ));
        l.check_invariant().unwrap();
    }

    #[test]
    fn allocate_is_idempotent_and_rolls_back() {
        let mut l = Ledger::default();
        let c = cmd(
            Operation::Allocate {
                req: alloc_req(1, 2, 3, Overflow::Deny),
            },
            Some("a"),
        );
        let first = l.apply(&c, 0, 0);
        assert!(matches!(first, Outcome::Allocation { created: true, .. }));
        l.settle();
        assert_eq!(l.apply(&c, 1, 0), first);
        assert_eq!(l.scope(&key(1), 8).held, 3, "held once");
        l.reserve(&req(10, 2, 1), 0).unwrap();
        l.release_allocation(&chain(2), &aid(1), 1).unwrap();
        l.rollback();
        let a = l.allocation_for(&chain(2), &Unit::Calls).unwrap();
        assert_eq!((a.drawn, a.state), (0, AllocState::Active));
        assert_eq!(l.scope(&key(1), 8).held, 3);
        assert!(l.lookup(&id(10)).is_none());
        l.check_invariant().unwrap();
    }

    #[test]
    fn a_restored_ledger_has_the_same_allocations_and_draws() {
        let mut l = Ledger::default();
        l.allocate(&alloc_req(1, 2, 4, Overflow::Deny), 0).unwrap();
        l.reserve(&req(10, 2, 3), 0).unwrap();
        let mut state = ActiveState::default();
        for c in l.coalesced_changes() {
            match c {
                Change::Scope(k, s) => state.scopes.push((k.clone(), *s)),
                Change::Reservation(r) => state.reservations.push(r.clone()),
                Change::Allocation(a) => state.allocations.push(a.clone()),
                Change::Draw(r, Some((a, d))) => state.draws.push((*r, *a, *d)),
                _ => {}
            }
        }
        let mut r = Ledger::restore(state, CacheSizes::default());
        r.check_invariant().unwrap();
        r.release(&chain(2), &id(10), 1, 0).unwrap();
        assert_eq!(
            r.allocation_for(&chain(2), &Unit::Calls).unwrap().unused(),
            4
        );
        assert_eq!(r.scope(&key(1), 8).held, 4);
        r.check_invariant().unwrap();
    }

    #[test]
    fn a_nested_allocation_is_carved_from_its_parents_allocation_and_given_back() {
        let mut l = Ledger::default();
        // The root allocates 5 to child 2; child 2 then allocates 3 to its
        // own child 7: carved from the 5, not from the parent's pool.
        let mut outer = alloc_req(1, 2, 5, Overflow::Deny);
        outer.parent = chain(2)[..1].to_vec();
        l.allocate(&outer, 0).unwrap();
        let mut grand = chain(2);
        grand.push(BlockId([7; 32]));
        let inner = AllocateRequest {
            id: aid(2),
            parent: chain(2),
            child: grand.clone(),
            scopes: vec![(key(2), 5), (key(1), 8), (key(0), 100)],
            ..alloc_req(2, 2, 3, Overflow::Deny)
        };
        let n = l.allocate(&inner, 0).unwrap();
        assert_eq!(n.source, Some((aid(1), 3)));
        assert_eq!(l.scope(&key(1), 8).held, 5, "nothing more from the pool");
        assert_eq!(l.scope(&key(2), 5).held, 3, "held at the child's own scope");
        assert_eq!(
            l.allocation_for(&chain(2), &Unit::Calls).unwrap().unused(),
            2
        );
        // A sibling of child 2 still finds only 3 in the parent's pool.
        assert!(l.reserve(&req(9, 3, 4), 0).is_err());
        l.check_invariant().unwrap();
        // The grandchild spends 1 and is done: 2 go back to child 2's
        // allocation, not to the pool.
        let spend = ReserveRequest {
            id: id(10),
            chain: grand.clone(),
            unit: Unit::Calls,
            scopes: vec![scope(7, 4), scope(2, 5), scope(1, 8), scope(0, 100)],
            amount: 1,
            ttl_ms: 1_000,
        };
        l.reserve(&spend, 0).unwrap();
        l.commit(&grand, &id(10), 1, 0, 0).unwrap();
        let r = l.release_allocation(&chain(2), &aid(2), 1).unwrap();
        assert_eq!(r.returned, 2);
        let outer = l.allocation_for(&chain(2), &Unit::Calls).unwrap().clone();
        assert_eq!((outer.charged, outer.drawn, outer.unused()), (1, 0, 4));
        let s = l.scope(&key(1), 8);
        assert_eq!((s.spent, s.held, s.remaining()), (1, 4, 3));
        l.check_invariant().unwrap();
        // Releasing the outer one returns its 4 to the pool.
        l.release_allocation(&chain(2), &aid(1), 2).unwrap();
        assert_eq!(l.scope(&key(1), 8).remaining(), 7);
        l.check_invariant().unwrap();
    }

    #[test]
    fn a_draw_made_and_ended_in_one_group_writes_no_row() {
        let mut l = Ledger::default();
        l.allocate(&alloc_req(1, 2, 4, Overflow::Deny), 0).unwrap();
        l.settle();
        let spend = Operation::Reserve {
            req: req(10, 2, 2),
            actual: Some(2),
        };
        l.apply(&cmd(spend, None), 0, 0);
        l.reserve(&req(11, 2, 1), 0).unwrap();
        let draws: Vec<&Change> = l
            .coalesced_changes()
            .into_iter()
            .filter(|c| matches!(c, Change::Draw(..)))
            .collect();
        assert_eq!(
            draws,
            vec![&Change::Draw(id(11), Some((aid(1), 1)))],
            "only the hold still active has a draw row"
        );
        l.settle();
        l.release(&chain(2), &id(11), 1, 0).unwrap();
        assert_eq!(
            l.coalesced_changes()
                .into_iter()
                .filter(|c| matches!(c, Change::Draw(..)))
                .collect::<Vec<_>>(),
            vec![&Change::Draw(id(11), None)],
            "a row from an earlier group is deleted"
        );
    }

    /// A shared ledger keeps allocations only as each group's working set:
    /// it says what to lock, runs the same rules over what was loaded, and
    /// forgets it all when the group settles.
    #[test]
    fn a_shared_ledger_applies_allocations_to_what_each_group_loaded() {
        let mut l = Ledger::shared(vec![], CacheSizes::all(8));
        l.grant_holder_ids(1, 100);
        let parent = ScopeState {
            ceiling: 8,
            spent: 0,
            held: 0,
        };
        let root = ScopeState {
            ceiling: 100,
            ..parent
        };
        // Group 1: allocate 4 to child 2.
        let alloc = cmd(
            Operation::Allocate {
                req: alloc_req(1, 2, 4, Overflow::Deny),
            },
            None,
        );
        let mut t = Touched::default();
        l.touches(&alloc, &mut t);
        assert_eq!(t.scopes, vec![(key(1), 8), (key(0), 100)]);
        assert!(t.alloc_children.contains(&(BlockId([2; 32]), Unit::Calls)));
        l.load([(key(1), parent), (key(0), root)], [], None);
        l.load_allocations([], []);
        let Outcome::Allocation { alloc: a, .. } = l.apply(&alloc, 0, 0) else {
            panic!("not allocated");
        };
        l.settle();
        assert_eq!(l.population().allocations, 0, "forgotten after the group");
        // Group 2, as another server would run it: the reserve asks for the
        // allocations of its chain, gets the row, and draws from it.
        let held = ScopeState { held: 4, ..parent };
        let r = cmd(reserve(10, 2, 3), None);
        let mut t = Touched::default();
        l.touches(&r, &mut t);
        assert!(t.alloc_children.contains(&(BlockId([2; 32]), Unit::Calls)));
        l.load(
            [
                (
                    key(2),
                    ScopeState {
                        ceiling: 5,
                        ..parent
                    },
                ),
                (key(1), held),
                (key(0), ScopeState { held: 4, ..root }),
            ],
            [],
            None,
        );
        l.load_allocations([a.clone()], []);
        assert!(matches!(l.apply(&r, 0, 0), Outcome::Done { .. }));
        assert_eq!(
            l.scope(&key(1), 8).held,
            4,
            "drawn, not taken from the pool"
        );
        assert!(l.changes().contains(&Change::Draw(id(10), Some((a.id, 3)))));
        l.check_invariant().unwrap();
        l.settle();
        // Group 3: releasing it reads it first (unlocked), then touches its
        // scopes and its row.
        let rel = cmd(
            Operation::ReleaseAllocation {
                chain: chain(2)[..2].to_vec(),
                id: a.id,
            },
            None,
        );
        let mut m = Missing::default();
        l.missing(&rel, &mut m);
        assert_eq!(m.allocations, vec![a.id]);
        let drawn = Allocation {
            drawn: 3,
            ..a.clone()
        };
        l.supply_allocations([(a.id, Some(drawn.clone()))]);
        let mut t = Touched::default();
        l.touches(&rel, &mut t);
        assert_eq!(t.allocations, vec![a.id]);
        assert_eq!(t.scopes, vec![(key(1), 0), (key(0), 0)]);
        l.load(
            [(key(1), held), (key(0), ScopeState { held: 4, ..root })],
            [],
            None,
        );
        l.load_allocations([drawn], []);
        let Outcome::Allocation { alloc: done, .. } = l.apply(&rel, 1, 0) else {
            panic!("not released");
        };
        assert_eq!((done.state, done.returned), (AllocState::Released, 1));
        assert_eq!(l.scope(&key(1), 8).held, 3);
        l.settle();
        // Final: cached, and a second release is refused without a read.
        let mut m = Missing::default();
        l.missing(&rel, &mut m);
        assert!(m.is_empty());
        assert_eq!(
            l.apply(&rel, 2, 0),
            Outcome::Refused(LedgerError::AllocationFinalized(AllocState::Released))
        );
    }

    #[test]
    fn allocation_ids_round_trip() {
        let a = AllocId::new(0x0102_0304_0506, [0xab; 12]);
        assert_eq!(a.to_string(), "alc_010203040506abababababababababababab");
        assert_eq!(AllocId::parse(&a.to_string()), Some(a));
        assert_eq!(
            AllocId::parse("rsv_010203040506abababababababababababab"),
            None
        );
        assert_eq!(AllocId::parse("alc_"), None);
    }

    #[test]
    fn reservation_ids_round_trip_and_reject_other_forms() {
        let r = ResId::new(0x0102_0304_0506, [0xab; 12]);
        let text = r.to_string();
        assert_eq!(text, "rsv_010203040506abababababababababababab");
        assert_eq!(ResId::parse(&text), Some(r));
        for bad in [
            "",
            "rsv_",
            "rsv_010203040506ABABABABABABABABABABABAB",
            "rsv_010203040506abababababababababababa",
            "rsv_010203040506ababababababababababababab",
            "res_010203040506abababababababababababab",
            "rsv_0102030405zzabababababababababababab",
        ] {
            assert_eq!(ResId::parse(bad), None, "{bad}");
        }
        assert!(ResId::first_at(5) < ResId::new(5, [0; 12]).max(ResId::new(6, [0; 12])));
        assert!(ResId::new(5, [0xff; 12]) < ResId::first_at(6));
    }
}
