//! Effective authority: folding a chain's caveats together, refusing any
//! block that widens what came before, and authorizing requests
//! (spec/token.md §6).
//!
//! All caveats of all blocks apply together. Because every block must
//! narrow its parent, the last tools and resources sets are also the
//! effective ones; budgets and argument bounds accumulate.

use std::collections::{BTreeMap, BTreeSet};

use crate::caveat::{ArgConstraint, ArgValue, Budget, Caveat, CaveatKind, Unit};
use crate::error::{ChainError, Denied};
use crate::holder::HolderPublicKey;
use crate::keys::BlockId;
use crate::limits::MAX_REQUEST_ARGS;
use crate::pattern::{ActionName, ActionPattern, ResourceName, ResourcePattern};
use crate::proof::{HolderProof, MalformedProof};

/// A budget that a spend must debit: one budget caveat of one block.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BudgetScope {
    /// Index of the block declaring the budget.
    pub block: usize,
    /// Id of that block: the ledger's name for the scope.
    pub block_id: BlockId,
    /// The unit.
    pub unit: Unit,
    /// The ceiling, in minor units.
    pub ceiling: u64,
    /// The tools filter, if the budget is per-toolset.
    pub tools: Option<ActionPattern>,
}

impl BudgetScope {
    /// The budget of `ceiling` minor units of `unit` that block number
    /// `block`, whose id is `block_id`, declares, for the tools `tools`
    /// matches (`None`: every tool).
    pub fn new(
        block: usize,
        block_id: BlockId,
        unit: Unit,
        ceiling: u64,
        tools: Option<ActionPattern>,
    ) -> Self {
        Self {
            block,
            block_id,
            unit,
            ceiling,
            tools,
        }
    }
}

/// An authorization request: one action, optionally on a resource, with
/// arguments, at a point in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    action: ActionName,
    resource: Option<ResourceName>,
    args: BTreeMap<String, ArgValue>,
    time: u64,
    /// What the verifier executes, as the proof's request hash names it.
    operation: String,
    /// The digest of the raw request body ([`crate::proof::body_digest`]).
    body: [u8; 32],
    /// The holder's proof of possession, for a bound token, as parsed: a
    /// malformed header is kept so the verifier reports it in its order.
    proof: Option<Result<HolderProof, MalformedProof>>,
}

/// The longest operation name, in bytes.
pub const MAX_OPERATION: usize = 256;

impl Request {
    /// A request for `action` at Unix time `time` (seconds).
    pub fn new(action: &str, time: u64) -> Result<Self, Denied> {
        let action = ActionName::parse(action).map_err(|_| Denied::InvalidAction)?;
        Ok(Self {
            action,
            resource: None,
            args: BTreeMap::new(),
            time,
            operation: crate::proof::DEFAULT_OPERATION.to_owned(),
            body: crate::proof::body_digest(b""),
            proof: None,
        })
    }

    /// A request for `action` now, by the system clock; [`Request::new`]
    /// takes a chosen time. A clock set before 1970 cannot be trusted, so it
    /// reads as the end of time: every token with an expiry is then refused
    /// as expired (fail closed).
    pub fn now(action: &str) -> Result<Self, Denied> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(u64::MAX, |d| d.as_secs());
        Self::new(action, now)
    }

    /// Names the operation the verifier executes (default `call`): 1 to
    /// 256 bytes of printable ASCII, spaces allowed, such as
    /// `POST /v1/reservations`. A bound token's proof covers it.
    pub fn operation(mut self, operation: &str) -> Result<Self, Denied> {
        let ok = !operation.is_empty()
            && operation.len() <= MAX_OPERATION
            && operation.bytes().all(|b| (0x20..=0x7e).contains(&b));
        if !ok {
            return Err(Denied::InvalidOperation);
        }
        self.operation = operation.to_owned();
        Ok(self)
    }

    /// Sets the raw request body (default: empty). Only its digest is
    /// kept; a bound token's proof covers it.
    pub fn body(mut self, body: &[u8]) -> Self {
        self.body = crate::proof::body_digest(body);
        self
    }

    /// Sets the digest of the raw body directly, for a service that digested
    /// the body as it read it ([`crate::proof::body_digest`]).
    pub fn body_digest_of(mut self, digest: [u8; 32]) -> Self {
        self.body = digest;
        self
    }

    /// Attaches the holder's proof of possession. A bound token is refused
    /// without one; an unbound token ignores it.
    pub fn with_proof(mut self, proof: HolderProof) -> Self {
        self.proof = Some(Ok(proof));
        self
    }

    /// Attaches a proof in its header form (`Baton-Proof`). A malformed
    /// value is not an error here: the verifier reports `proof_malformed`
    /// after every token error, in the order of spec/token.md §12.4.
    pub fn with_proof_header(mut self, value: &str) -> Self {
        self.proof = Some(HolderProof::from_header(value));
        self
    }

    /// The proof attached, if any and well-formed.
    pub fn proof(&self) -> Option<&HolderProof> {
        self.proof.as_ref().and_then(|p| p.as_ref().ok())
    }

    pub(crate) fn proof_input(&self) -> Option<&Result<HolderProof, MalformedProof>> {
        self.proof.as_ref()
    }

    /// The request time, in Unix seconds.
    pub fn time(&self) -> u64 {
        self.time
    }

    pub(crate) fn operation_str(&self) -> &str {
        &self.operation
    }

    pub(crate) fn resource_name(&self) -> Option<&str> {
        self.resource.as_ref().map(|r| r.as_str())
    }

    pub(crate) fn args(&self) -> &BTreeMap<String, ArgValue> {
        &self.args
    }

    pub(crate) fn body_digest(&self) -> &[u8; 32] {
        &self.body
    }

    /// Sets the resource the action touches.
    pub fn resource(mut self, resource: &str) -> Result<Self, Denied> {
        self.resource =
            Some(ResourceName::parse(resource).map_err(|_| Denied::ResourceNotAllowed)?);
        Ok(self)
    }

    /// Adds an argument. A bad or repeated name, or too many arguments, is an error.
    pub fn arg(mut self, name: &str, value: ArgValue) -> Result<Self, Denied> {
        if self.args.len() >= MAX_REQUEST_ARGS
            || self.args.contains_key(name)
            || !crate::caveat::valid_arg_name(name)
        {
            return Err(Denied::InvalidArgs);
        }
        self.args.insert(name.to_owned(), value);
        Ok(self)
    }

    /// The action.
    pub fn action(&self) -> &ActionName {
        &self.action
    }
}

/// What a successful authorization returns: the budgets a spend on this
/// action must debit, nearest block first.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Authorization {
    /// Budget scopes, from the last block to the authority block.
    pub budgets: Vec<BudgetScope>,
}

/// The effective authority of a chain: every caveat of every block, folded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authority {
    pub(crate) tools: Option<BTreeSet<ActionPattern>>,
    pub(crate) resources: Option<BTreeSet<ResourcePattern>>,
    pub(crate) depth: Option<u32>,
    pub(crate) not_after: Option<u64>,
    pub(crate) not_before: Option<u64>,
    pub(crate) budgets: Vec<(usize, Budget)>,
    pub(crate) args: Vec<(usize, ArgConstraint)>,
    pub(crate) labels: Vec<(usize, String)>,
    /// The holder the last block declares; once set, every later block
    /// must declare one again.
    pub(crate) holder: Option<HolderPublicKey>,
    pub(crate) blocks: usize,
}

fn widen(block: usize, kind: CaveatKind, reason: &'static str) -> ChainError {
    ChainError::Widening {
        block,
        kind,
        reason,
    }
}

impl Authority {
    /// Checks that block number `self.blocks` with `caveats` narrows the
    /// authority folded so far, and folds it in. On error `self` is unchanged.
    pub(crate) fn push_block(&mut self, caveats: &[Caveat]) -> Result<(), ChainError> {
        let depth = self.check_block(caveats)?;
        self.apply(caveats, depth);
        Ok(())
    }

    /// Every monotonicity rule of spec/token.md §6.3, against the parent
    /// authority `self`. Returns the remaining depth after the block.
    fn check_block(&self, caveats: &[Caveat]) -> Result<Option<u32>, ChainError> {
        let block = self.blocks;
        let mut depth = match (block, self.depth) {
            (0, _) | (_, None) => None,
            (_, Some(0)) => return Err(ChainError::DepthExceeded { block }),
            (_, Some(r)) => Some(r - 1),
        };
        // A bound chain stays bound: a block that declares no holder would
        // hand the next signing key back to whoever holds the token text.
        if self.holder.is_some() && !caveats.iter().any(|c| matches!(c, Caveat::Holder(_))) {
            return Err(ChainError::HolderUnbound { block });
        }
        for c in caveats {
            match c {
                Caveat::Depth(d) => {
                    if depth.is_some_and(|r| *d > r) {
                        return Err(widen(
                            block,
                            CaveatKind::Depth,
                            "declares more remaining depth than its parent allows",
                        ));
                    }
                    depth = Some(*d);
                }
                Caveat::Tools(set) => {
                    // A chain with no tools caveat allows no action, so a
                    // later block cannot introduce one: that would widen.
                    if block > 0 && self.tools.is_none() {
                        return Err(widen(
                            block,
                            CaveatKind::Tools,
                            "the parent allows no actions",
                        ));
                    }
                    if let Some(eff) = &self.tools
                        && !set.iter().all(|q| eff.iter().any(|p| p.covers(q)))
                    {
                        return Err(widen(
                            block,
                            CaveatKind::Tools,
                            "a pattern is not covered by the parent's tools",
                        ));
                    }
                }
                Caveat::Resources(set) => {
                    if let Some(eff) = &self.resources
                        && !set.iter().all(|q| eff.iter().any(|p| p.covers(q)))
                    {
                        return Err(widen(
                            block,
                            CaveatKind::Resources,
                            "a pattern is not covered by the parent's resources",
                        ));
                    }
                }
                Caveat::Expiry {
                    not_after,
                    not_before,
                } => {
                    if self.not_after.is_some_and(|na| *not_after > na) {
                        return Err(widen(
                            block,
                            CaveatKind::Expiry,
                            "not_after is later than the parent's",
                        ));
                    }
                    if let (Some(nb), Some(parent)) = (not_before, self.not_before)
                        && *nb < parent
                    {
                        return Err(widen(
                            block,
                            CaveatKind::Expiry,
                            "not_before is earlier than the parent's",
                        ));
                    }
                }
                Caveat::Budget(b) => {
                    if block > 0 {
                        check_budget(block, b, &self.budgets)?;
                    }
                }
                Caveat::ArgBound(c) => {
                    let conflicts = self.args.iter().any(|(_, p)| {
                        p.arg == c.arg && p.action.overlaps(&c.action) && !c.bound.within(&p.bound)
                    });
                    if conflicts {
                        return Err(widen(
                            block,
                            CaveatKind::ArgBound,
                            "bound is not within the parent's bound on the same argument",
                        ));
                    }
                }
                // Binding narrows whoever can use the token; re-declaring the
                // same key or a child's key keeps it bound.
                Caveat::Label(_) | Caveat::Holder(_) => {}
            }
        }
        Ok(depth)
    }

    /// Folds a checked block in.
    fn apply(&mut self, caveats: &[Caveat], depth: Option<u32>) {
        let block = self.blocks;
        self.blocks += 1;
        self.depth = depth;
        for c in caveats {
            match c {
                Caveat::Depth(_) => {}
                Caveat::Tools(set) => self.tools = Some(set.clone()),
                Caveat::Resources(set) => self.resources = Some(set.clone()),
                Caveat::Expiry {
                    not_after,
                    not_before,
                } => {
                    self.not_after = Some(*not_after);
                    if not_before.is_some() {
                        self.not_before = *not_before;
                    }
                }
                Caveat::Budget(b) => self.budgets.push((block, b.clone())),
                Caveat::ArgBound(c) => self.args.push((block, c.clone())),
                Caveat::Label(l) => self.labels.push((block, l.clone())),
                Caveat::Holder(k) => self.holder = Some(*k),
            }
        }
    }

    /// Decides `req` against this authority. `skew` widens the validity
    /// window on both sides, for clocks that disagree a little.
    pub fn authorize(
        &self,
        req: &Request,
        skew: u64,
        ids: &[BlockId],
    ) -> Result<Authorization, Denied> {
        if self
            .not_after
            .is_some_and(|na| req.time > na.saturating_add(skew))
        {
            return Err(Denied::Expired);
        }
        if self
            .not_before
            .is_some_and(|nb| req.time < nb.saturating_sub(skew))
        {
            return Err(Denied::NotYetValid);
        }
        // No tools caveat anywhere means no action is allowed: authority is granted, never assumed.
        let tools_ok = self
            .tools
            .as_ref()
            .is_some_and(|t| t.iter().any(|p| p.matches(&req.action)));
        if !tools_ok {
            return Err(Denied::ActionNotAllowed);
        }
        if let Some(set) = &self.resources {
            let ok = req
                .resource
                .as_ref()
                .is_some_and(|r| set.iter().any(|p| p.matches(r)));
            if !ok {
                return Err(Denied::ResourceNotAllowed);
            }
        }
        for (_, c) in &self.args {
            if !c.action.matches(&req.action) {
                continue;
            }
            match req.args.get(&c.arg) {
                None => return Err(Denied::ArgMissing(c.arg.clone())),
                Some(v) if !c.bound.allows(v) => return Err(Denied::ArgOutOfBounds(c.arg.clone())),
                Some(_) => {}
            }
        }
        let budgets = self
            .budgets
            .iter()
            .rev()
            .filter(|(_, b)| b.applies_to(&req.action))
            .map(|(block, b)| BudgetScope {
                block: *block,
                block_id: ids[*block],
                unit: b.unit.clone(),
                ceiling: b.ceiling,
                tools: b.tools.clone(),
            })
            .collect();
        Ok(Authorization { budgets })
    }

    /// The holder key the token is bound to, if any block binds it.
    pub fn holder(&self) -> Option<&HolderPublicKey> {
        self.holder.as_ref()
    }

    /// The effective tools set, if any block declared one.
    pub fn tools(&self) -> Option<&BTreeSet<ActionPattern>> {
        self.tools.as_ref()
    }
    /// The effective resources set, if any block declared one.
    pub fn resources(&self) -> Option<&BTreeSet<ResourcePattern>> {
        self.resources.as_ref()
    }
    /// How many more blocks may be appended; `None` means unlimited.
    pub fn remaining_depth(&self) -> Option<u32> {
        self.depth
    }
    /// The effective `not_after`, in Unix seconds.
    pub fn not_after(&self) -> Option<u64> {
        self.not_after
    }
    /// The effective `not_before`, in Unix seconds.
    pub fn not_before(&self) -> Option<u64> {
        self.not_before
    }
    /// Every budget caveat with the index of its block.
    pub fn budgets(&self) -> &[(usize, Budget)] {
        &self.budgets
    }
    /// Every argument bound with the index of its block.
    pub fn arg_bounds(&self) -> &[(usize, ArgConstraint)] {
        &self.args
    }
    /// Every label with the index of its block.
    pub fn labels(&self) -> &[(usize, String)] {
        &self.labels
    }

    /// The effective ceiling for each distinct (unit, tools filter) declared
    /// in the chain: the smallest ceiling among budgets that cover it.
    pub fn effective_budgets(&self) -> Vec<(Unit, Option<ActionPattern>, u64)> {
        let mut keys: Vec<(Unit, Option<ActionPattern>)> = self
            .budgets
            .iter()
            .map(|(_, b)| (b.unit.clone(), b.tools.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .map(|(unit, filter)| {
                let ceiling = self
                    .budgets
                    .iter()
                    .filter(|(_, b)| b.unit == unit && covers_filter(&b.tools, &filter))
                    .map(|(_, b)| b.ceiling)
                    .min()
                    .unwrap_or(0);
                (unit, filter, ceiling)
            })
            .collect()
    }
}

/// Whether a budget filtered by `outer` applies to every action `inner` applies to.
fn covers_filter(outer: &Option<ActionPattern>, inner: &Option<ActionPattern>) -> bool {
    match (outer, inner) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(o), Some(i)) => o.covers(i),
    }
}

fn overlaps_filter(a: &Option<ActionPattern>, b: &Option<ActionPattern>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(a), Some(b)) => a.overlaps(b),
    }
}

/// A child budget must sit under a parent budget of the same unit that
/// covers all its actions, and must not exceed any parent budget of that
/// unit that applies to any of its actions.
fn check_budget(block: usize, b: &Budget, parents: &[(usize, Budget)]) -> Result<(), ChainError> {
    let same_unit = || parents.iter().map(|(_, p)| p).filter(|p| p.unit == b.unit);
    if !same_unit().any(|p| covers_filter(&p.tools, &b.tools)) {
        return Err(widen(
            block,
            CaveatKind::Budget,
            "no parent budget in this unit covers its actions",
        ));
    }
    if same_unit().any(|p| overlaps_filter(&p.tools, &b.tools) && b.ceiling > p.ceiling) {
        return Err(widen(
            block,
            CaveatKind::Budget,
            "ceiling is above a parent budget's",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caveat::ArgBound;

    fn fold(blocks: &[Vec<Caveat>]) -> Result<Authority, ChainError> {
        let mut a = Authority::default();
        for b in blocks {
            a.push_block(b)?;
        }
        Ok(a)
    }

    fn usd(n: u64) -> Caveat {
        Caveat::budget(Unit::UsdMicrocents, n)
    }

    #[test]
    fn depth_counts_down_and_stops() {
        let a = fold(&[vec![Caveat::Depth(1)], vec![]]).unwrap();
        assert_eq!(a.remaining_depth(), Some(0));
        assert_eq!(
            fold(&[vec![Caveat::Depth(1)], vec![], vec![]]),
            Err(ChainError::DepthExceeded { block: 2 })
        );
        assert!(matches!(
            fold(&[vec![Caveat::Depth(2)], vec![Caveat::Depth(2)]]),
            Err(ChainError::Widening {
                block: 1,
                kind: CaveatKind::Depth,
                ..
            })
        ));
    }

    #[test]
    fn budgets_only_shrink() {
        assert!(fold(&[vec![usd(100)], vec![usd(50)]]).is_ok());
        assert!(matches!(
            fold(&[vec![usd(100)], vec![usd(101)]]),
            Err(ChainError::Widening {
                kind: CaveatKind::Budget,
                ..
            })
        ));
        // A unit the parent never granted cannot appear below it.
        assert!(matches!(
            fold(&[vec![usd(100)], vec![Caveat::budget(Unit::Tokens, 1)]]),
            Err(ChainError::Widening {
                kind: CaveatKind::Budget,
                ..
            })
        ));
        // A per-toolset parent budget caps a child's general one.
        let crm = Caveat::Budget(Budget {
            unit: Unit::UsdMicrocents,
            ceiling: 10,
            tools: Some(ActionPattern::parse("crm.*").unwrap()),
        });
        assert!(matches!(
            fold(&[vec![usd(100), crm], vec![usd(50)]]),
            Err(ChainError::Widening {
                kind: CaveatKind::Budget,
                ..
            })
        ));
    }

    #[test]
    fn tools_and_args() {
        let t = |p: &[&str]| Caveat::tools(p.iter().copied()).unwrap();
        assert!(fold(&[vec![t(&["crm.*"])], vec![t(&["crm.read"])]]).is_ok());
        assert!(fold(&[vec![t(&["crm.read"])], vec![t(&["crm.*"])]]).is_err());
        // No tools caveat means no action: a child cannot grant one.
        assert!(matches!(
            fold(&[vec![], vec![t(&["*"])]]),
            Err(ChainError::Widening {
                block: 1,
                kind: CaveatKind::Tools,
                ..
            })
        ));
        let bound = |max| {
            Caveat::ArgBound(ArgConstraint {
                action: ActionPattern::parse("refund.*").unwrap(),
                arg: "amount".into(),
                bound: ArgBound::Range {
                    min: None,
                    max: Some(max),
                },
            })
        };
        assert!(fold(&[vec![bound(100)], vec![bound(50)]]).is_ok());
        assert!(fold(&[vec![bound(100)], vec![bound(150)]]).is_err());
    }

    #[test]
    fn authorize_applies_everything() {
        let bound = Caveat::ArgBound(ArgConstraint {
            action: ActionPattern::parse("refund.issue").unwrap(),
            arg: "amount".into(),
            bound: ArgBound::Range {
                min: Some(0),
                max: Some(100),
            },
        });
        let a = fold(&[
            vec![
                Caveat::tools(["crm.*", "refund.*"]).unwrap(),
                usd(1000),
                Caveat::Expiry {
                    not_after: 100,
                    not_before: None,
                },
            ],
            vec![Caveat::tools(["refund.issue"]).unwrap(), bound, usd(10)],
        ])
        .unwrap();
        let ids = [BlockId([0; 32]), BlockId([1; 32])];
        let ok = Request::new("refund.issue", 50)
            .unwrap()
            .arg("amount", ArgValue::Int(100))
            .unwrap();
        let auth = a.authorize(&ok, 0, &ids).unwrap();
        assert_eq!(
            auth.budgets.iter().map(|s| s.ceiling).collect::<Vec<_>>(),
            vec![10, 1000]
        );
        let too_much = Request::new("refund.issue", 50)
            .unwrap()
            .arg("amount", ArgValue::Int(101))
            .unwrap();
        assert_eq!(
            a.authorize(&too_much, 0, &ids),
            Err(Denied::ArgOutOfBounds("amount".into()))
        );
        let missing = Request::new("refund.issue", 50).unwrap();
        assert_eq!(
            a.authorize(&missing, 0, &ids),
            Err(Denied::ArgMissing("amount".into()))
        );
        let other = Request::new("crm.read", 50).unwrap();
        assert_eq!(a.authorize(&other, 0, &ids), Err(Denied::ActionNotAllowed));
        assert_eq!(a.authorize(&ok.clone(), 0, &ids).map(|_| ()), Ok(()));
        let late = Request::new("refund.issue", 101)
            .unwrap()
            .arg("amount", ArgValue::Int(1))
            .unwrap();
        assert_eq!(a.authorize(&late, 0, &ids), Err(Denied::Expired));
        assert!(a.authorize(&late, 1, &ids).is_ok());
    }
}
