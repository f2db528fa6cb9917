//! The compact column encodings every backend shares (spec/http.md §4.3).
//!
//! History is what fills the disk, so its rows are small: a reservation row
//! names its chain, unit and scopes through an interned holder id; an
//! idempotency record is a 16-byte key hash, a 16-byte fingerprint and the
//! typed outcome as a short CBOR array (not the rendered reply, which is
//! rebuilt byte for byte from it). Decoding is strict: anything unexpected
//! is [`StoreError::Corrupt`], never a guess.

use std::sync::Arc;

use ciborium::Value;

use super::StoreError;
use crate::caveat::Unit;
use crate::keys::BlockId;
use crate::ledger::{
    AllocId, AllocState, Allocation, Holder, IdemKey, LedgerError, Overflow, Recorded, ResId,
    ResState, Reservation, ScopeKey, ScopeState, Snapshot,
};
use crate::pattern::ActionPattern;
use crate::proof::ProofId;

/// A row that does not decode: the store was damaged or written by
/// something else. Never guessed around.
pub fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// An amount, count or time column. SQL integers are signed; a negative
/// one was not written by Baton.
pub fn amount(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| corrupt("negative amount"))
}

/// The SQL integer for an amount or time. Amounts are below `i64::MAX` by
/// the ledger's `MAX_AMOUNT`; times are clamped rather than wrapped.
pub fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A 32-byte block id column.
pub fn block_column(b: &[u8]) -> Result<BlockId, StoreError> {
    <[u8; 32]>::try_from(b)
        .map(BlockId)
        .map_err(|_| corrupt("block id"))
}

/// The `tools` column of a scope row: the toolset filter's text, or the
/// empty string for an unfiltered budget. The empty string rather than
/// NULL keeps the column usable in a primary key on every engine.
pub fn tools_column(t: &Option<ActionPattern>) -> &str {
    t.as_ref().map_or("", |p| p.as_str())
}

/// The `proof` column of an idempotency record: NULL, or a 32-byte
/// [`ProofId`].
pub fn proof_column(b: Option<&[u8]>) -> Result<Option<ProofId>, StoreError> {
    b.map(|b| {
        <[u8; 32]>::try_from(b)
            .map(ProofId)
            .map_err(|_| corrupt("proof id"))
    })
    .transpose()
}

/// A scope's key from its (block_id, unit, tools) columns.
pub fn scope_key(b: &[u8], unit: &str, tools: &str) -> Result<ScopeKey, StoreError> {
    Ok(ScopeKey {
        block: block_column(b)?,
        unit: Unit::parse(unit).map_err(|_| corrupt("unit"))?,
        tools: match tools {
            "" => None,
            t => Some(ActionPattern::parse(t).map_err(|_| corrupt("tools"))?),
        },
    })
}

/// A scope's counters from its (ceiling, spent, held) columns.
pub fn scope_state(ceiling: i64, spent: i64, held: i64) -> Result<ScopeState, StoreError> {
    Ok(ScopeState {
        ceiling: amount(ceiling)?,
        spent: amount(spent)?,
        held: amount(held)?,
    })
}

/// The columns every store selects for a reservation joined with its
/// interned holder, in this order.
pub const RESERVATION_COLUMNS: &str = "r.id, r.amount, r.charged, r.state, r.expires_at, r.finalized_at, h.id, h.chain, h.unit, h.scopes";

/// A reservation row as read, before its columns are checked: each store
/// fills one from [`RESERVATION_COLUMNS`], and [`RawReservation::parse`]
/// is the one place that decides what a valid row is.
pub struct RawReservation {
    /// `r.id`: the 20-byte reservation id.
    pub id: Vec<u8>,
    /// `r.amount`.
    pub amount: i64,
    /// `r.charged`, set once committed.
    pub charged: Option<i64>,
    /// `r.state`: a [`ResState`] code.
    pub state: i64,
    /// `r.expires_at`, ms.
    pub expires_at: i64,
    /// `r.finalized_at`, ms, set once final.
    pub finalized_at: Option<i64>,
    /// `h.id`: the interned holder's id.
    pub holder: i64,
    /// `h.chain`: [`encode_chain`]'s bytes.
    pub chain: Vec<u8>,
    /// `h.unit`.
    pub unit: String,
    /// `h.scopes`: [`encode_scopes`]'s bytes.
    pub scopes: Vec<u8>,
}

impl RawReservation {
    /// Checks every column and builds the reservation.
    pub fn parse(self) -> Result<Reservation, StoreError> {
        let chain = decode_chain(&self.chain)?;
        let scopes = decode_scopes(&self.scopes, &chain)?;
        Ok(Reservation {
            id: ResId::from_slice(&self.id).ok_or_else(|| corrupt("reservation id"))?,
            holder: Arc::new(Holder {
                id: amount(self.holder)?,
                chain,
                unit: Unit::parse(&self.unit).map_err(|_| corrupt("unit"))?,
                scopes,
            }),
            amount: amount(self.amount)?,
            charged: self.charged.map(amount).transpose()?,
            state: ResState::from_code(amount(self.state)?)
                .ok_or_else(|| corrupt("reservation state"))?,
            expires_at: amount(self.expires_at)?,
            finalized_at: self.finalized_at.map(amount).transpose()?,
        })
    }
}

/// The stored key of an idempotency record: the first 16 bytes of BLAKE3
/// in derive-key mode over the tree's block id and the caller's key. Fixed
/// size whatever the key's length, and a collision needs a 128-bit second
/// preimage.
pub fn idem_hash(key: &IdemKey) -> [u8; 16] {
    let mut h = blake3::Hasher::new_derive_key("baton/v1 idempotency key");
    h.update(&key.tree.0);
    h.update(key.key.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// A chain as its block ids, 32 bytes each, root first.
pub fn encode_chain(chain: &[BlockId]) -> Vec<u8> {
    chain.iter().flat_map(|b| b.0).collect()
}

/// Reads [`encode_chain`]'s output.
pub fn decode_chain(b: &[u8]) -> Result<Vec<BlockId>, StoreError> {
    if b.is_empty() || !b.len().is_multiple_of(32) {
        return Err(corrupt("chain length"));
    }
    b.chunks_exact(32)
        .map(|c| c.try_into().map(BlockId).map_err(|_| corrupt("chain")))
        .collect()
}

fn to_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // Writing a Value into a Vec cannot fail.
    let _ = ciborium::into_writer(v, &mut out);
    out
}

fn from_bytes(b: &[u8], what: &str) -> Result<Vec<Value>, StoreError> {
    match ciborium::from_reader::<Value, _>(b) {
        Ok(Value::Array(a)) => Ok(a),
        _ => Err(corrupt(what)),
    }
}

fn uint(v: Option<&Value>, what: &str) -> Result<u64, StoreError> {
    v.and_then(|v| v.as_integer())
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| corrupt(what))
}

fn text<'a>(v: Option<&'a Value>, what: &str) -> Result<&'a str, StoreError> {
    v.and_then(Value::as_text).ok_or_else(|| corrupt(what))
}

fn unit(v: Option<&Value>) -> Result<Unit, StoreError> {
    Unit::parse(text(v, "unit")?).map_err(|_| corrupt("unit"))
}

fn tools(v: Option<&Value>) -> Result<Option<ActionPattern>, StoreError> {
    match v {
        Some(Value::Null) => Ok(None),
        Some(Value::Text(t)) => ActionPattern::parse(t)
            .map(Some)
            .map_err(|_| corrupt("tools")),
        _ => Err(corrupt("tools")),
    }
}

fn tools_value(t: &Option<ActionPattern>) -> Value {
    t.as_ref()
        .map_or(Value::Null, |p| Value::Text(p.as_str().to_owned()))
}

fn alloc_id(v: Option<&Value>) -> Result<AllocId, StoreError> {
    v.and_then(Value::as_bytes)
        .and_then(|b| AllocId::from_slice(b))
        .ok_or_else(|| corrupt("allocation id"))
}

fn block(v: Option<&Value>) -> Result<BlockId, StoreError> {
    v.and_then(Value::as_bytes)
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .map(BlockId)
        .ok_or_else(|| corrupt("block id"))
}

/// A holder's scopes: `[[position in chain, unit, tools or null], ...]`. A
/// scope's block is always one of the chain's, so it is written as its
/// position, not 32 bytes.
pub fn encode_scopes(scopes: &[ScopeKey], chain: &[BlockId]) -> Result<Vec<u8>, StoreError> {
    let items = scopes
        .iter()
        .map(|k| {
            let pos = chain
                .iter()
                .position(|b| *b == k.block)
                .ok_or_else(|| corrupt("scope outside its chain"))?;
            Ok(Value::Array(vec![
                Value::Integer(pos.into()),
                Value::Text(k.unit.as_str().to_owned()),
                tools_value(&k.tools),
            ]))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(to_bytes(&Value::Array(items)))
}

/// Reads [`encode_scopes`]'s output against its chain.
pub fn decode_scopes(b: &[u8], chain: &[BlockId]) -> Result<Vec<ScopeKey>, StoreError> {
    from_bytes(b, "scopes")?
        .iter()
        .map(|item| {
            let Value::Array(f) = item else {
                return Err(corrupt("scope"));
            };
            if f.len() != 3 {
                return Err(corrupt("scope"));
            }
            let pos = usize::try_from(uint(f.first(), "scope position")?)
                .map_err(|_| corrupt("scope position"))?;
            Ok(ScopeKey {
                block: *chain.get(pos).ok_or_else(|| corrupt("scope position"))?,
                unit: unit(f.get(1))?,
                tools: tools(f.get(2))?,
            })
        })
        .collect()
}

const DONE: u64 = 0;
const REFUSED: u64 = 1;
const ALLOCATION: u64 = 2;

/// An allocation as one CBOR value: `[id, parent chain, child chain, unit,
/// [[block, unit, tools or null], ...], amount, charged, drawn, overflow,
/// state, expires_at, finalized_at or null, returned, [source id, drawn]
/// or null]`. Self-contained (the
/// scopes carry their block ids), so it serves both the store's rows and
/// idempotency records.
fn allocation_value(a: &Allocation) -> Value {
    let n = |x: u64| Value::Integer(x.into());
    Value::Array(vec![
        Value::Bytes(a.id.0.to_vec()),
        Value::Bytes(encode_chain(&a.parent)),
        Value::Bytes(encode_chain(&a.child)),
        Value::Text(a.unit.as_str().to_owned()),
        Value::Array(
            a.scopes
                .iter()
                .map(|k| {
                    Value::Array(vec![
                        Value::Bytes(k.block.0.to_vec()),
                        Value::Text(k.unit.as_str().to_owned()),
                        tools_value(&k.tools),
                    ])
                })
                .collect(),
        ),
        n(a.amount),
        n(a.charged),
        n(a.drawn),
        n(a.overflow.code().into()),
        n(a.state.code().into()),
        n(a.expires_at),
        a.finalized_at.map_or(Value::Null, n),
        n(a.returned),
        a.source.map_or(Value::Null, |(id, d)| {
            Value::Array(vec![Value::Bytes(id.0.to_vec()), n(d)])
        }),
    ])
}

/// Reads [`allocation_value`]'s output, checking what a valid allocation is.
fn allocation_from(a: &[Value]) -> Result<Allocation, StoreError> {
    if a.len() != 14 {
        return Err(corrupt("allocation length"));
    }
    let bytes = |v: &Value, what| v.as_bytes().cloned().ok_or_else(|| corrupt(what));
    let id = AllocId::from_slice(&bytes(&a[0], "allocation id")?)
        .ok_or_else(|| corrupt("allocation id"))?;
    let parent = decode_chain(&bytes(&a[1], "parent chain")?)?;
    let child = decode_chain(&bytes(&a[2], "child chain")?)?;
    let Value::Array(sc) = &a[4] else {
        return Err(corrupt("allocation scopes"));
    };
    let scopes = sc
        .iter()
        .map(|item| match item {
            Value::Array(f) if f.len() == 3 => Ok(ScopeKey {
                block: block(f.first())?,
                unit: unit(f.get(1))?,
                tools: tools(f.get(2))?,
            }),
            _ => Err(corrupt("allocation scope")),
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let finalized_at = match &a[11] {
        Value::Null => None,
        v => Some(uint(Some(v), "finalized_at")?),
    };
    let alloc = Allocation {
        id,
        parent,
        child,
        unit: unit(a.get(3))?,
        scopes,
        amount: uint(a.get(5), "amount")?,
        charged: uint(a.get(6), "charged")?,
        drawn: uint(a.get(7), "drawn")?,
        overflow: Overflow::from_code(uint(a.get(8), "overflow")?)
            .ok_or_else(|| corrupt("overflow"))?,
        state: AllocState::from_code(uint(a.get(9), "state")?)
            .ok_or_else(|| corrupt("allocation state"))?,
        expires_at: uint(a.get(10), "expires_at")?,
        finalized_at,
        returned: uint(a.get(12), "returned")?,
        source: match &a[13] {
            Value::Null => None,
            Value::Array(s) if s.len() == 2 => {
                Some((alloc_id(s.first())?, uint(s.get(1), "source drawn")?))
            }
            _ => return Err(corrupt("allocation source")),
        },
    };
    let sane = alloc.child.len() > alloc.parent.len()
        && alloc.child.starts_with(&alloc.parent)
        && alloc
            .charged
            .checked_add(alloc.drawn)
            .is_some_and(|u| u <= alloc.amount)
        && (alloc.state == AllocState::Active) == alloc.finalized_at.is_none();
    if !sane {
        return Err(corrupt("allocation"));
    }
    Ok(alloc)
}

/// An allocation row's body.
pub fn encode_allocation(a: &Allocation) -> Vec<u8> {
    to_bytes(&allocation_value(a))
}

/// Reads [`encode_allocation`]'s output.
pub fn decode_allocation(b: &[u8]) -> Result<Allocation, StoreError> {
    allocation_from(&from_bytes(b, "allocation")?)
}

/// A recorded outcome as a CBOR array (spec/http.md §4.3):
/// `[0, created, id, state, amount, charged|null, expires_at, [spent,
/// held, ...]]` or `[1, error kind, detail...]`. A scope's ceiling is not
/// stored: it is fixed by the token and kept in the scope's row.
pub fn encode_outcome(rec: &Recorded) -> Vec<u8> {
    let n = |x: u64| Value::Integer(x.into());
    let v = match rec {
        Recorded::Done { created, snapshot } => Value::Array(vec![
            n(DONE),
            Value::Bool(*created),
            Value::Bytes(snapshot.id.0.to_vec()),
            n(snapshot.state.code().into()),
            n(snapshot.amount),
            snapshot.charged.map_or(Value::Null, n),
            n(snapshot.expires_at),
            Value::Array(
                snapshot
                    .counters
                    .iter()
                    .flat_map(|c| [n(c.spent), n(c.held)])
                    .collect(),
            ),
        ]),
        Recorded::Allocation { created, alloc } => Value::Array(vec![
            n(ALLOCATION),
            Value::Bool(*created),
            allocation_value(alloc),
        ]),
        Recorded::Refused(e) => {
            let mut a = vec![n(REFUSED)];
            match e {
                LedgerError::InsufficientBudget { scope, remaining } => a.extend([
                    n(0),
                    Value::Bytes(scope.block.0.to_vec()),
                    Value::Text(scope.unit.as_str().to_owned()),
                    tools_value(&scope.tools),
                    n(*remaining),
                ]),
                LedgerError::NoBudget => a.push(n(1)),
                LedgerError::InvalidAmount => a.push(n(2)),
                LedgerError::NotFound => a.push(n(3)),
                LedgerError::Finalized(s) => a.extend([n(4), n(s.code().into())]),
                LedgerError::Revoked(b) => a.extend([n(5), Value::Bytes(b.0.to_vec())]),
                LedgerError::CeilingConflict => a.push(n(6)),
                LedgerError::AllocationExhausted { id, remaining } => {
                    a.extend([n(7), Value::Bytes(id.0.to_vec()), n(*remaining)]);
                }
                LedgerError::AllocationNotFound => a.push(n(8)),
                LedgerError::AllocationFinalized(s) => a.extend([n(9), n(s.code().into())]),
                LedgerError::AllocationExists(id) => {
                    a.extend([n(10), Value::Bytes(id.0.to_vec())]);
                }
                LedgerError::ExceedsChildBudget { ceiling } => a.extend([n(11), n(*ceiling)]),
                LedgerError::NotDescendant => a.push(n(12)),
                LedgerError::AllocationsUnsupported => a.push(n(13)),
            }
            Value::Array(a)
        }
    };
    to_bytes(&v)
}

/// Reads [`encode_outcome`]'s output.
pub fn decode_outcome(b: &[u8]) -> Result<Recorded, StoreError> {
    let a = from_bytes(b, "outcome")?;
    let exact = |len: usize| {
        if a.len() == len {
            Ok(())
        } else {
            Err(corrupt("outcome length"))
        }
    };
    let state =
        |v: Option<&Value>| ResState::from_code(uint(v, "state")?).ok_or_else(|| corrupt("state"));
    match uint(a.first(), "outcome kind")? {
        DONE => {
            exact(8)?;
            let created = a[1].as_bool().ok_or_else(|| corrupt("created"))?;
            let id = a[2]
                .as_bytes()
                .and_then(|b| ResId::from_slice(b))
                .ok_or_else(|| corrupt("reservation id"))?;
            let charged = match &a[5] {
                Value::Null => None,
                v => Some(uint(Some(v), "charged")?),
            };
            let Value::Array(c) = &a[7] else {
                return Err(corrupt("counters"));
            };
            if !c.len().is_multiple_of(2) {
                return Err(corrupt("counters"));
            }
            // Ceilings are not stored: they never change for a scope, and
            // the ledger restores them from its scope rows on replay.
            let counters = c
                .chunks_exact(2)
                .map(|t| {
                    Ok(ScopeState {
                        ceiling: 0,
                        spent: uint(t.first(), "spent")?,
                        held: uint(t.get(1), "held")?,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            Ok(Recorded::Done {
                created,
                snapshot: Snapshot {
                    id,
                    state: state(a.get(3))?,
                    amount: uint(a.get(4), "amount")?,
                    charged,
                    expires_at: uint(a.get(6), "expires_at")?,
                    counters,
                },
            })
        }
        REFUSED => {
            let e = match uint(a.get(1), "error kind")? {
                0 => {
                    exact(6)?;
                    LedgerError::InsufficientBudget {
                        scope: ScopeKey {
                            block: block(a.get(2))?,
                            unit: unit(a.get(3))?,
                            tools: tools(a.get(4))?,
                        },
                        remaining: uint(a.get(5), "remaining")?,
                    }
                }
                1 => exact(2).map(|()| LedgerError::NoBudget)?,
                2 => exact(2).map(|()| LedgerError::InvalidAmount)?,
                3 => exact(2).map(|()| LedgerError::NotFound)?,
                4 => {
                    exact(3)?;
                    LedgerError::Finalized(state(a.get(2))?)
                }
                5 => {
                    exact(3)?;
                    LedgerError::Revoked(block(a.get(2))?)
                }
                6 => exact(2).map(|()| LedgerError::CeilingConflict)?,
                7 => {
                    exact(4)?;
                    LedgerError::AllocationExhausted {
                        id: alloc_id(a.get(2))?,
                        remaining: uint(a.get(3), "remaining")?,
                    }
                }
                8 => exact(2).map(|()| LedgerError::AllocationNotFound)?,
                9 => {
                    exact(3)?;
                    LedgerError::AllocationFinalized(
                        AllocState::from_code(uint(a.get(2), "state")?)
                            .ok_or_else(|| corrupt("allocation state"))?,
                    )
                }
                10 => {
                    exact(3)?;
                    LedgerError::AllocationExists(alloc_id(a.get(2))?)
                }
                11 => {
                    exact(3)?;
                    LedgerError::ExceedsChildBudget {
                        ceiling: uint(a.get(2), "ceiling")?,
                    }
                }
                12 => exact(2).map(|()| LedgerError::NotDescendant)?,
                13 => exact(2).map(|()| LedgerError::AllocationsUnsupported)?,
                _ => return Err(corrupt("error kind")),
            };
            Ok(Recorded::Refused(e))
        }
        ALLOCATION => {
            exact(3)?;
            let created = a[1].as_bool().ok_or_else(|| corrupt("created"))?;
            let Value::Array(v) = &a[2] else {
                return Err(corrupt("allocation"));
            };
            Ok(Recorded::Allocation {
                created,
                alloc: allocation_from(v)?,
            })
        }
        _ => Err(corrupt("outcome kind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(b: u8, tools: Option<&str>) -> ScopeKey {
        ScopeKey {
            block: BlockId([b; 32]),
            unit: Unit::Custom("gpu_seconds".into()),
            tools: tools.map(|t| ActionPattern::parse(t).unwrap()),
        }
    }

    fn allocation(state: AllocState, finalized_at: Option<u64>) -> Allocation {
        let chain = vec![BlockId([0; 32]), BlockId([1; 32]), BlockId([2; 32])];
        Allocation {
            id: AllocId::new(9, [1; 12]),
            parent: chain[..2].to_vec(),
            child: chain,
            unit: Unit::Custom("gpu_seconds".into()),
            scopes: vec![scope(1, None), scope(0, Some("crm.*"))],
            amount: 10,
            charged: 3,
            drawn: 2,
            overflow: Overflow::Shared,
            state,
            expires_at: 1_000,
            finalized_at,
            returned: 5,
            source: Some((AllocId::new(8, [3; 12]), 4)),
        }
    }

    #[test]
    fn allocation_rows_round_trip_and_bad_ones_are_refused() {
        let a = allocation(AllocState::Released, Some(5));
        assert_eq!(decode_allocation(&encode_allocation(&a)).unwrap(), a);
        // Charged and drawn above the amount: corrupt, not guessed.
        let over = Allocation {
            drawn: 8,
            ..a.clone()
        };
        assert!(decode_allocation(&encode_allocation(&over)).is_err());
        // A final state without its time.
        let open = Allocation {
            finalized_at: None,
            ..a
        };
        assert!(decode_allocation(&encode_allocation(&open)).is_err());
    }

    #[test]
    fn outcomes_round_trip() {
        let all = [
            Recorded::Done {
                created: true,
                snapshot: Snapshot {
                    id: ResId::new(1_700_000_000_000, [7; 12]),
                    state: ResState::Committed,
                    amount: 5,
                    charged: Some(u64::MAX >> 1),
                    expires_at: 9,
                    counters: vec![
                        ScopeState {
                            ceiling: 10,
                            spent: 5,
                            held: 0,
                        },
                        ScopeState {
                            ceiling: 100,
                            spent: 50,
                            held: 3,
                        },
                    ],
                },
            },
            Recorded::Refused(LedgerError::InsufficientBudget {
                scope: scope(3, Some("crm.*")),
                remaining: 2,
            }),
            Recorded::Refused(LedgerError::InsufficientBudget {
                scope: scope(3, None),
                remaining: 0,
            }),
            Recorded::Refused(LedgerError::NoBudget),
            Recorded::Refused(LedgerError::InvalidAmount),
            Recorded::Refused(LedgerError::NotFound),
            Recorded::Refused(LedgerError::Finalized(ResState::Expired)),
            Recorded::Refused(LedgerError::Revoked(BlockId([9; 32]))),
            Recorded::Refused(LedgerError::CeilingConflict),
            Recorded::Refused(LedgerError::AllocationExhausted {
                id: AllocId::new(3, [4; 12]),
                remaining: 7,
            }),
            Recorded::Refused(LedgerError::AllocationNotFound),
            Recorded::Refused(LedgerError::AllocationFinalized(AllocState::Revoked)),
            Recorded::Refused(LedgerError::AllocationExists(AllocId::new(3, [5; 12]))),
            Recorded::Refused(LedgerError::ExceedsChildBudget { ceiling: 9 }),
            Recorded::Refused(LedgerError::NotDescendant),
            Recorded::Refused(LedgerError::AllocationsUnsupported),
            Recorded::Allocation {
                created: true,
                alloc: allocation(AllocState::Active, None),
            },
            Recorded::Allocation {
                created: false,
                alloc: allocation(AllocState::Expired, Some(77)),
            },
        ];
        for mut rec in all {
            let b = encode_outcome(&rec);
            // Ceilings come back as 0: the ledger restores them from its scopes.
            if let Recorded::Done { snapshot, .. } = &mut rec {
                snapshot.counters.iter_mut().for_each(|c| c.ceiling = 0);
            }
            assert_eq!(decode_outcome(&b).unwrap(), rec, "{b:02x?}");
        }
    }

    #[test]
    fn a_committed_pair_outcome_is_small() {
        let rec = Recorded::Done {
            created: false,
            snapshot: Snapshot {
                id: ResId::new(1_700_000_000_000, [7; 12]),
                state: ResState::Committed,
                amount: 1_000,
                charged: Some(1_000),
                expires_at: 1_700_000_060_000,
                counters: vec![
                    ScopeState {
                        ceiling: 1_000_000_000_000,
                        spent: 123_456_789,
                        held: 12_000,
                    };
                    4
                ],
            },
        };
        // Four scopes: the whole outcome stays under 160 bytes.
        assert!(
            encode_outcome(&rec).len() < 160,
            "{}",
            encode_outcome(&rec).len()
        );
    }

    #[test]
    fn corrupt_outcomes_are_refused_not_guessed() {
        for bad in [
            &[][..],
            &[0x80],                   // empty array
            &[0x82, 0x01, 0x07],       // unknown error kind
            &[0x82, 0x02, 0x00],       // unknown outcome kind
            &[0x83, 0x01, 0x04, 0x09], // unknown state
            &[0x81, 0x00],             // truncated Done
            &[0xa0],                   // a map
        ] {
            assert!(
                matches!(decode_outcome(bad), Err(StoreError::Corrupt(_))),
                "{bad:02x?}"
            );
        }
    }

    #[test]
    fn scopes_round_trip_through_chain_positions() {
        let chain = [BlockId([1; 32]), BlockId([2; 32]), BlockId([3; 32])];
        let scopes = vec![scope(3, Some("crm.read")), scope(1, None)];
        let b = encode_scopes(&scopes, &chain).unwrap();
        assert_eq!(decode_scopes(&b, &chain).unwrap(), scopes);
        assert!(decode_scopes(&b, &chain[..1]).is_err());
        assert!(encode_scopes(&[scope(9, None)], &chain).is_err());
    }

    #[test]
    fn idem_hash_separates_trees_and_keys() {
        let k = |t: u8, key: &str| IdemKey {
            tree: BlockId([t; 32]),
            key: key.into(),
        };
        assert_ne!(idem_hash(&k(1, "a")), idem_hash(&k(2, "a")));
        assert_ne!(idem_hash(&k(1, "a")), idem_hash(&k(1, "b")));
        assert_eq!(idem_hash(&k(1, "a")), idem_hash(&k(1, "a")));
    }
}
