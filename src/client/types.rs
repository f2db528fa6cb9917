//! The bodies of the ledger API (spec/http.md §6), as types.
//!
//! Answers are parsed strictly where a value matters (ids, units, states,
//! amounts) and leniently about what is added later: unknown fields in an
//! answer are ignored, so a newer ledger with more fields still works.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ClientError;
use crate::caveat::{ArgValue, Unit};
use crate::keys::{BlockId, KeyStatus, Keyset, PublicKey};
use crate::ledger::{AllocId, AllocState, ResId, ResState};

/// An action object (spec/http.md §6.3): an action, optionally on a
/// resource, with arguments. Also the head of a reserve or spend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Action {
    /// The action name, e.g. `crm.read`.
    pub action: String,
    /// The resource name, e.g. `customer:4821`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Arguments: integers and strings.
    #[serde(
        serialize_with = "ser_args",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub args: BTreeMap<String, ArgValue>,
}

impl Action {
    /// `action` with no resource and no arguments.
    pub fn new(action: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            resource: None,
            args: BTreeMap::new(),
        }
    }

    /// Sets the resource.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// Adds (or replaces) an argument.
    pub fn arg(mut self, name: impl Into<String>, value: ArgValue) -> Self {
        self.args.insert(name.into(), value);
        self
    }

    /// The same action as an authorization [`crate::Request`] at Unix time
    /// `now` (seconds), for the offline [`crate::Verifier`].
    pub fn to_request(&self, now: u64) -> Result<crate::Request, crate::Denied> {
        let mut r = crate::Request::new(&self.action, now)?;
        if let Some(res) = &self.resource {
            r = r.resource(res)?;
        }
        for (name, v) in &self.args {
            r = r.arg(name, v.clone())?;
        }
        Ok(r)
    }
}

fn ser_args<S: Serializer>(args: &BTreeMap<String, ArgValue>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(args.len()))?;
    for (k, v) in args {
        match v {
            ArgValue::Int(i) => m.serialize_entry(k, i)?,
            ArgValue::Str(t) => m.serialize_entry(k, t)?,
        }
    }
    m.end()
}

fn ser_unit<S: Serializer>(u: &Unit, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(u.as_str())
}

/// A reserve (spec/http.md §6.4), also the body of a spend (§6.9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Reserve {
    /// What the hold is for; it must be authorized now.
    #[serde(flatten)]
    pub action: Action,
    /// The unit to hold.
    #[serde(serialize_with = "ser_unit")]
    pub unit: Unit,
    /// The amount, 1…2⁶³−1.
    pub amount: u64,
    /// How long the ledger keeps the hold, in ms (default 60 000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// The key; retries of this reserve reuse it.
    pub idempotency_key: String,
}

impl Reserve {
    /// A reserve of `amount` `unit` for `action`, with a fresh random
    /// idempotency key (or the empty key, refused by the ledger, should the
    /// OS generator fail; set one with [`Reserve::key`]).
    pub fn new(action: Action, unit: Unit, amount: u64) -> Self {
        Self {
            action,
            unit,
            amount,
            ttl_ms: None,
            idempotency_key: super::IdempotencyKey::random()
                .map(|k| k.0)
                .unwrap_or_default(),
        }
    }

    /// Sets the idempotency key.
    pub fn key(mut self, key: &super::IdempotencyKey) -> Self {
        self.idempotency_key = key.as_str().to_owned();
        self
    }

    /// Sets the hold's lifetime.
    pub fn ttl(mut self, ttl: std::time::Duration) -> Self {
        self.ttl_ms = Some(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        self
    }
}

fn de_block_id<'de, D: Deserializer<'de>>(d: D) -> Result<BlockId, D::Error> {
    let s = String::deserialize(d)?;
    BlockId::from_hex(&s).ok_or_else(|| serde::de::Error::custom("not a block id"))
}

fn de_unit<'de, D: Deserializer<'de>>(d: D) -> Result<Unit, D::Error> {
    let s = String::deserialize(d)?;
    Unit::parse(&s).map_err(serde::de::Error::custom)
}

fn de_res_id<'de, D: Deserializer<'de>>(d: D) -> Result<ResId, D::Error> {
    let s = String::deserialize(d)?;
    ResId::parse(&s).ok_or_else(|| serde::de::Error::custom("not a reservation id"))
}

fn de_state<'de, D: Deserializer<'de>>(d: D) -> Result<ResState, D::Error> {
    let s = String::deserialize(d)?;
    [
        ResState::Active,
        ResState::Committed,
        ResState::Released,
        ResState::Expired,
    ]
    .into_iter()
    .find(|st| st.as_str() == s)
    .ok_or_else(|| serde::de::Error::custom("unknown reservation state"))
}

/// A budget scope's name (spec/http.md §3.1).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct ScopeRef {
    /// The declaring block.
    #[serde(deserialize_with = "de_block_id")]
    pub block_id: BlockId,
    /// The unit.
    #[serde(deserialize_with = "de_unit")]
    pub unit: Unit,
    /// The budget's tools filter, if any.
    pub tools: Option<String>,
}

/// A scope with its counters, as a reservation shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct ScopeCounters {
    /// Which scope.
    #[serde(flatten)]
    pub scope: ScopeRef,
    /// Its ceiling (capped at 2⁶³−1).
    pub ceiling: u64,
    /// Committed charges.
    pub spent: u64,
    /// Active holds.
    pub held: u64,
    /// `ceiling − spent − held`.
    pub remaining: u64,
}

/// One scope of `GET /v1/balances` (§6.10).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Balance {
    /// The declaring block's index in the chain.
    pub block: usize,
    /// The scope and its counters.
    #[serde(flatten)]
    pub counters: ScopeCounters,
}

/// A reservation (spec/http.md §6.4).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Reservation {
    /// Its id.
    #[serde(deserialize_with = "de_res_id")]
    pub id: ResId,
    /// Where it is in its life.
    #[serde(deserialize_with = "de_state")]
    pub state: ResState,
    /// The unit held.
    #[serde(deserialize_with = "de_unit")]
    pub unit: Unit,
    /// The amount held while active.
    pub amount: u64,
    /// The charge, once committed.
    pub charged: Option<u64>,
    /// When the hold lapses (server clock, ms), before grace.
    pub expires_at_ms: u64,
    /// The maker's last block.
    #[serde(deserialize_with = "de_block_id")]
    pub block_id: BlockId,
    /// Every scope held on, nearest first, with counters as of the answer.
    pub scopes: Vec<ScopeCounters>,
}

#[derive(Deserialize)]
pub(super) struct ReservationAnswer {
    pub(super) reservation: Reservation,
}

#[derive(Deserialize)]
pub(super) struct BalancesAnswer {
    pub(super) scopes: Vec<Balance>,
}

/// One root key of `GET /v1/keys` (§6.1).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct KeyInfo {
    /// The key id (16 hex characters).
    pub kid: String,
    /// `baton_pk1_...`.
    pub public_key: String,
    /// `active` or `retired`.
    pub status: String,
}

#[derive(Deserialize)]
pub(super) struct KeysAnswer {
    pub(super) keys: Vec<KeyInfo>,
}

/// A keyset from `GET /v1/keys`: every key must parse, its kid must match
/// its key, and its status must be known; anything else refuses the whole
/// answer (a verifier must not run on half a keyset).
pub(crate) fn keyset(keys: &[KeyInfo]) -> Result<Keyset, ClientError> {
    let mut set = Keyset::new();
    for k in keys {
        let public = PublicKey::from_text(&k.public_key)
            .map_err(|_| ClientError::Protocol(format!("key {} does not parse", k.kid)))?;
        if public.kid().to_string() != k.kid {
            return Err(ClientError::Protocol(format!(
                "key {} names another kid",
                k.kid
            )));
        }
        let status = match k.status.as_str() {
            "active" => KeyStatus::Active,
            "retired" => KeyStatus::Retired,
            _ => {
                return Err(ClientError::Protocol(format!(
                    "key {}: unknown status",
                    k.kid
                )));
            }
        };
        set.insert(public, status);
    }
    Ok(set)
}

/// The answer of `POST /v1/keys/rotate` (§6.1.1).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Rotated {
    /// The new active key's id.
    pub kid: String,
    /// The new active key.
    pub public_key: String,
    /// Every key after the rotation.
    pub keys: Vec<KeyInfo>,
}

/// The answer of `POST /v1/tokens` (§6.2).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Minted {
    /// The new root token's text.
    pub token: String,
    /// Its block 0 id: the new tree's id.
    #[serde(deserialize_with = "de_block_id")]
    pub block_id: BlockId,
    /// The signing key's id.
    pub kid: String,
}

/// One applicable budget of `POST /v1/authorize` (§6.3).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct AuthorizedBudget {
    /// The declaring block's index.
    pub block: usize,
    /// The declaring block.
    #[serde(deserialize_with = "de_block_id")]
    pub block_id: BlockId,
    /// The unit.
    #[serde(deserialize_with = "de_unit")]
    pub unit: Unit,
    /// The ceiling as in the token (not capped).
    pub ceiling: u64,
    /// The tools filter, if any.
    pub tools: Option<String>,
}

/// The answer of `POST /v1/authorize` (§6.3); a denial is an error.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct AuthorizeAnswer {
    /// Every applicable budget scope, nearest first.
    pub budgets: Vec<AuthorizedBudget>,
}

/// The answer of `POST /v1/revocations` (§6.11).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Revoked {
    /// The revoked block.
    #[serde(deserialize_with = "de_block_id")]
    pub block_id: BlockId,
    /// Its position in the feed.
    pub seq: u64,
    /// `false` if it was revoked already.
    pub new: bool,
}

/// One entry of the revocation feed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct FeedEntry {
    /// Its position (1, 2, ...).
    pub seq: u64,
    /// The revoked block.
    #[serde(deserialize_with = "de_block_id")]
    pub block_id: BlockId,
}

/// One page of `GET /v1/revocations` (§6.12).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct RevocationPage {
    /// At most 1 000 entries, ascending `seq`.
    pub revocations: Vec<FeedEntry>,
    /// Poll again with `after = next`.
    pub next: u64,
}

impl RevocationPage {
    /// The most entries the ledger puts in one page: a full page means
    /// more may follow at once.
    pub const MAX: usize = 1000;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_bodies_are_the_spec_shape() {
        let r = Reserve::new(
            Action::new("tool.run")
                .resource("doc:1")
                .arg("n", ArgValue::Int(3))
                .arg("mode", ArgValue::Str("fast".into())),
            Unit::Calls,
            2,
        )
        .key(&super::super::IdempotencyKey::new("req-1").unwrap());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"action": "tool.run", "resource": "doc:1",
                "args": {"mode": "fast", "n": 3}, "unit": "calls", "amount": 2,
                "idempotency_key": "req-1"})
        );
    }

    #[test]
    fn a_keyset_with_a_wrong_kid_or_status_is_refused_whole() {
        let root = crate::RootKey::from_seed(&[1; 32]);
        let good = KeyInfo {
            kid: root.kid().to_string(),
            public_key: root.public().to_text(),
            status: "active".into(),
        };
        assert_eq!(
            keyset(std::slice::from_ref(&good)).unwrap().iter().count(),
            1
        );
        let mut wrong_kid = good.clone();
        wrong_kid.kid = "0000000000000000".into();
        assert!(keyset(&[good.clone(), wrong_kid]).is_err());
        let mut odd = good;
        odd.status = "pending".into();
        assert!(keyset(&[odd]).is_err());
    }
}

/// An allocation request (spec/http.md §6.16): set part of the caller's
/// pool aside for a child, named by its token. `Debug` does not show the
/// child's token.
#[derive(Clone, Serialize)]
#[non_exhaustive]
pub struct Allocate {
    /// The child's token.
    #[serde(serialize_with = "ser_bearer")]
    pub child_token: super::Bearer,
    /// The unit.
    #[serde(serialize_with = "ser_unit")]
    pub unit: Unit,
    /// A fixed amount (exactly one of `amount` and `fraction`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<u64>,
    /// A fraction of the parent's remaining, in (0, 1].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// `"deny"` (default) or `"shared"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overflow: Option<&'static str>,
    /// How long it lasts, in ms (default 3 600 000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// The key; retries of this allocation reuse it.
    pub idempotency_key: String,
}

fn ser_bearer<S: Serializer>(b: &super::Bearer, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(b.expose())
}

impl std::fmt::Debug for Allocate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allocate")
            .field("unit", &self.unit)
            .field("amount", &self.amount)
            .field("fraction", &self.fraction)
            .field("overflow", &self.overflow)
            .field("ttl_ms", &self.ttl_ms)
            .field("idempotency_key", &self.idempotency_key)
            .finish_non_exhaustive()
    }
}

impl Allocate {
    /// `amount` of `unit` for the child, overflow `deny`, with a fresh
    /// random idempotency key (set one with [`Allocate::key`]).
    pub fn amount(child: &super::Bearer, unit: Unit, amount: u64) -> Self {
        Self {
            child_token: child.clone(),
            unit,
            amount: Some(amount),
            fraction: None,
            overflow: None,
            ttl_ms: None,
            idempotency_key: super::IdempotencyKey::random()
                .map(|k| k.0)
                .unwrap_or_default(),
        }
    }

    /// A `fraction` (in (0, 1]) of the parent's current remaining.
    pub fn fraction(child: &super::Bearer, unit: Unit, fraction: f64) -> Self {
        Self {
            amount: None,
            fraction: Some(fraction),
            ..Self::amount(child, unit, 0)
        }
    }

    /// Past the allocation, the child's reserves take from the parent's
    /// pool instead of being refused.
    pub fn shared(mut self) -> Self {
        self.overflow = Some("shared");
        self
    }

    /// Sets the idempotency key.
    pub fn key(mut self, key: &super::IdempotencyKey) -> Self {
        self.idempotency_key = key.as_str().to_owned();
        self
    }

    /// Sets the allocation's lifetime.
    pub fn ttl(mut self, ttl: std::time::Duration) -> Self {
        self.ttl_ms = Some(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        self
    }
}

fn de_alloc_id<'de, D: Deserializer<'de>>(d: D) -> Result<AllocId, D::Error> {
    let s = String::deserialize(d)?;
    AllocId::parse(&s).ok_or_else(|| serde::de::Error::custom("not an allocation id"))
}

fn de_alloc_state<'de, D: Deserializer<'de>>(d: D) -> Result<AllocState, D::Error> {
    let s = String::deserialize(d)?;
    [
        AllocState::Active,
        AllocState::Released,
        AllocState::Expired,
        AllocState::Revoked,
    ]
    .into_iter()
    .find(|st| st.as_str() == s)
    .ok_or_else(|| serde::de::Error::custom("unknown allocation state"))
}

/// An allocation (spec/http.md §6.16).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Allocation {
    /// Its id.
    #[serde(deserialize_with = "de_alloc_id")]
    pub id: AllocId,
    /// Where it is in its life.
    #[serde(deserialize_with = "de_alloc_state")]
    pub state: AllocState,
    /// The unit.
    #[serde(deserialize_with = "de_unit")]
    pub unit: Unit,
    /// The amount set aside.
    pub amount: u64,
    /// What the child's reservations charged against it.
    pub charged: u64,
    /// What the child's active reservations hold from it.
    pub drawn: u64,
    /// What the child can still reserve from it.
    pub unused: u64,
    /// What its end returned to the pool (0 while active).
    pub returned: u64,
    /// `deny` or `shared`.
    pub overflow: String,
    /// When it lapses (server clock, ms).
    pub expires_at_ms: u64,
    /// When it ended, if it did.
    pub finalized_at_ms: Option<u64>,
    /// The allocating token's last block.
    #[serde(deserialize_with = "de_block_id")]
    pub parent_block_id: BlockId,
    /// The child's last block.
    #[serde(deserialize_with = "de_block_id")]
    pub child_block_id: BlockId,
}

#[derive(Deserialize)]
pub(super) struct AllocationAnswer {
    pub(super) allocation: Allocation,
}

#[derive(Deserialize)]
pub(super) struct AllocationsAnswer {
    pub(super) allocations: Vec<Allocation>,
}
