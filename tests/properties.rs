//! Property tests over random caveat sets and attenuation chains.
//!
//! Everything is drawn from a deliberately small alphabet (two-letter action
//! and resource segments, two budget units, ceilings and times below ~20) so
//! that patterns cover and overlap each other, and ceilings and windows
//! collide, far more often than real data would.
//!
//! Chains are built the way a holder builds them: each step's caveats are
//! partly derived from the parent's authority (narrowing by construction) and
//! partly random, and a caveat is kept only if [`Token::attenuate`] accepts
//! the block. The properties then check the verifier against a reference
//! checker written here, which reads every block's caveats independently
//! and shares no code with `baton::authority`.
//!
//! Signatures are slow in debug builds, so the case counts are small and the
//! expensive properties (byte mutation, forging) run fewer cases.

use std::collections::BTreeSet;

use baton::pattern::{ActionPattern, ResourcePattern};
use baton::{
    ArgBound, ArgConstraint, ArgValue, AttenuateError, Audience, Authority, Budget, Caveat,
    CaveatKind, ChainError, HolderKey, HolderProof, Keyset, Request, RootKey, Token, Unit,
    UnverifiedToken, Verifier, VerifyError,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// The alphabet.

const ACTIONS: &[&str] = &["a", "b", "a.a", "a.b", "b.a", "a.a.b", "ab"];
const ACTION_PATTERNS: &[&str] = &[
    "*", "a", "b", "a.a", "a.b", "b.a", "ab", "a.*", "b.*", "a.a.*", "a.b.*",
];
const RESOURCES: &[&str] = &["x", "y", "x:x", "x:y", "y:x", "x:x:y"];
const RESOURCE_PATTERNS: &[&str] = &["*", "x", "y", "x:x", "x:y", "x:*", "y:*", "x:x:*"];
const ARG_NAMES: &[&str] = &["n", "s"];
const STR_VALUES: &[&str] = &["u", "v", "w"];
/// Expiry times and request times both live in `0..=MAX_TIME`.
const MAX_TIME: u64 = 20;

const ROOT_SEED: [u8; 32] = [7; 32];

fn root_key() -> RootKey {
    RootKey::from_seed(&ROOT_SEED)
}

fn verifier(skew: u64) -> Verifier {
    Verifier::new(Keyset::new().with(root_key().public())).with_skew(skew)
}

/// A deterministic ephemeral seed, so a failing case replays exactly.
fn eph_seed(tag: u64, i: u64) -> [u8; 32] {
    let mut s = [0x5a; 32];
    s[..8].copy_from_slice(&tag.to_le_bytes());
    s[8..16].copy_from_slice(&i.to_le_bytes());
    s
}

fn ap(s: &str) -> ActionPattern {
    ActionPattern::parse(s).expect("alphabet patterns are valid")
}

fn rp(s: &str) -> ResourcePattern {
    ResourcePattern::parse(s).expect("alphabet patterns are valid")
}

// ---------------------------------------------------------------------------
// The reference checker: string matching written from the spec's grammar,
// applied to every block's own caveats.

/// `*` matches everything, `p<sep>*` every name with `p<sep>` as a strict
/// prefix, anything else only itself.
fn ref_matches(pattern: &str, name: &str, sep: char) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => {
            debug_assert!(prefix.ends_with(sep));
            name.len() > prefix.len() && name.starts_with(prefix)
        }
        None => pattern == name,
    }
}

fn ref_bound_allows(bound: &ArgBound, value: &ArgValue) -> bool {
    match (bound, value) {
        (ArgBound::Range { min, max }, ArgValue::Int(v)) => {
            min.is_none_or(|m| *v >= m) && max.is_none_or(|m| *v <= m)
        }
        (ArgBound::OneOf(set), ArgValue::Str(s)) => set.contains(s),
        _ => false,
    }
}

/// A request in plain data, so that it prints and shrinks.
#[derive(Debug, Clone)]
struct Req {
    action: &'static str,
    resource: Option<&'static str>,
    args: Vec<(&'static str, ArgValue)>,
    time: u64,
}

impl Req {
    fn to_request(&self) -> Request {
        let mut r = Request::new(self.action, self.time).expect("alphabet actions are valid");
        if let Some(res) = self.resource {
            r = r.resource(res).expect("alphabet resources are valid");
        }
        for (name, v) in &self.args {
            r = r.arg(name, v.clone()).expect("argument names are distinct");
        }
        r
    }

    fn arg(&self, name: &str) -> Option<&ArgValue> {
        self.args.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// Whether one block's caveats, on their own, allow `req`. Tools are
/// checked separately: a chain with no tools caveat at all allows nothing.
fn ref_block_allows(caveats: &[Caveat], req: &Req, skew: u64) -> bool {
    caveats.iter().all(|c| match c {
        Caveat::Tools(set) => set.iter().any(|p| ref_matches(p.as_str(), req.action, '.')),
        Caveat::Resources(set) => req
            .resource
            .is_some_and(|r| set.iter().any(|p| ref_matches(p.as_str(), r, ':'))),
        Caveat::ArgBound(c) => {
            !ref_matches(c.action.as_str(), req.action, '.')
                || req
                    .arg(&c.arg)
                    .is_some_and(|v| ref_bound_allows(&c.bound, v))
        }
        Caveat::Expiry {
            not_after,
            not_before,
        } => req.time <= not_after + skew && not_before.is_none_or(|nb| req.time + skew >= nb),
        _ => true,
    })
}

fn ref_allows(blocks: &[Vec<Caveat>], req: &Req, skew: u64) -> bool {
    let has_tools = blocks
        .iter()
        .flatten()
        .any(|c| matches!(c, Caveat::Tools(_)));
    has_tools && blocks.iter().all(|b| ref_block_allows(b, req, skew))
}

/// The budgets a spend must debit, as `(block, budget)`, sorted within each
/// block so that the comparison does not depend on the in-block order.
fn ref_budgets(blocks: &[Vec<Caveat>], action: &str) -> Vec<(usize, Budget)> {
    let mut out = vec![];
    for (i, caveats) in blocks.iter().enumerate().rev() {
        let mut here: Vec<(usize, Budget)> = caveats
            .iter()
            .filter_map(|c| match c {
                Caveat::Budget(b)
                    if b.tools
                        .as_ref()
                        .is_none_or(|p| ref_matches(p.as_str(), action, '.')) =>
                {
                    Some((i, b.clone()))
                }
                _ => None,
            })
            .collect();
        here.sort();
        out.extend(here);
    }
    out
}

fn blocks_of(t: &Token) -> Vec<Vec<Caveat>> {
    t.block_caveats().map(<[Caveat]>::to_vec).collect()
}

// ---------------------------------------------------------------------------
// Strategies for caveats.

fn action_pattern() -> impl Strategy<Value = ActionPattern> {
    prop::sample::select(ACTION_PATTERNS).prop_map(ap)
}

fn resource_pattern() -> impl Strategy<Value = ResourcePattern> {
    prop::sample::select(RESOURCE_PATTERNS).prop_map(rp)
}

fn unit() -> impl Strategy<Value = Unit> {
    prop_oneof![Just(Unit::Calls), Just(Unit::Tokens)]
}

fn budget() -> impl Strategy<Value = Caveat> {
    (
        unit(),
        0u64..=20,
        prop::option::weighted(0.4, action_pattern()),
    )
        .prop_map(|(unit, ceiling, tools)| Caveat::Budget(Budget::new(unit, ceiling, tools)))
}

fn arg_bound() -> impl Strategy<Value = ArgBound> {
    prop_oneof![
        (-3i64..=3, -3i64..=3, 0u8..3).prop_map(|(a, b, sides)| {
            let (lo, hi) = (a.min(b), a.max(b));
            match sides {
                0 => ArgBound::Range {
                    min: Some(lo),
                    max: Some(hi),
                },
                1 => ArgBound::Range {
                    min: Some(lo),
                    max: None,
                },
                _ => ArgBound::Range {
                    min: None,
                    max: Some(hi),
                },
            }
        }),
        prop::sample::subsequence(STR_VALUES, 1..=STR_VALUES.len())
            .prop_map(|v| { ArgBound::OneOf(v.into_iter().map(str::to_owned).collect()) }),
    ]
}

fn arg_constraint() -> impl Strategy<Value = Caveat> {
    (
        action_pattern(),
        prop::sample::select(ARG_NAMES),
        arg_bound(),
    )
        .prop_map(|(action, arg, bound)| Caveat::ArgBound(ArgConstraint::new(action, arg, bound)))
}

fn expiry() -> impl Strategy<Value = Caveat> {
    (0..=MAX_TIME, 0..=MAX_TIME, any::<bool>()).prop_map(|(a, b, with_nb)| Caveat::Expiry {
        not_after: a.max(b),
        not_before: with_nb.then_some(a.min(b)),
    })
}

fn tools() -> impl Strategy<Value = Caveat> {
    prop::collection::btree_set(action_pattern(), 1..=3).prop_map(Caveat::Tools)
}

fn resources() -> impl Strategy<Value = Caveat> {
    prop::collection::btree_set(resource_pattern(), 1..=3).prop_map(Caveat::Resources)
}

fn label() -> impl Strategy<Value = Caveat> {
    prop::sample::select(&["l1", "l2"][..]).prop_map(|s| Caveat::Label(s.to_owned()))
}

/// A block may declare each caveat once (budgets per unit and filter,
/// argument bounds per action and argument).
fn dedup_key(c: &Caveat) -> String {
    match c {
        Caveat::Budget(b) => format!("budget/{}/{:?}", b.unit, b.tools),
        Caveat::ArgBound(a) => format!("arg/{}/{}", a.action, a.arg),
        other => format!("{:?}", other.kind()),
    }
}

fn dedup(caveats: Vec<Caveat>) -> Vec<Caveat> {
    let mut seen = BTreeSet::new();
    caveats
        .into_iter()
        .filter(|c| seen.insert(dedup_key(c)))
        .collect()
}

/// A caveat set; `p` is the chance of each single-valued kind appearing.
fn caveat_set(p: f64, tools_p: f64) -> impl Strategy<Value = Vec<Caveat>> {
    (
        prop::option::weighted(tools_p, tools()),
        prop::option::weighted(p, resources()),
        prop::option::weighted(p, (0u32..=4).prop_map(Caveat::Depth)),
        prop::option::weighted(p, expiry()),
        prop::option::weighted(p / 2.0, label()),
        prop::collection::vec(budget(), 0..=2),
        prop::collection::vec(arg_constraint(), 0..=2),
    )
        .prop_map(|(t, r, d, e, l, budgets, args)| {
            let singles = [t, r, d, e, l].into_iter().flatten();
            dedup(singles.chain(budgets).chain(args).collect())
        })
}

// ---------------------------------------------------------------------------
// Chains.

/// How a step derives a narrowing caveat from its parent's authority.
#[derive(Debug, Clone)]
enum Derive {
    /// Keep the parent's tools picked by the mask, each possibly replaced by
    /// an alphabet pattern it covers (chosen by the index).
    Tools(u8, usize),
    /// The same for resources.
    Resources(u8, usize),
    /// Take the parent's budget at the index, lower the ceiling, maybe
    /// narrow its filter.
    Budget(usize, u64, usize),
    /// Declare this much less remaining depth than allowed.
    Depth(u32),
    /// Move `not_after` earlier, and maybe `not_before` later.
    Expiry(u64, Option<u64>),
    /// Tighten the parent's argument bound at the index.
    Arg(usize, i64, u8),
}

fn derive() -> impl Strategy<Value = Derive> {
    prop_oneof![
        (any::<u8>(), any::<usize>()).prop_map(|(m, i)| Derive::Tools(m, i)),
        (any::<u8>(), any::<usize>()).prop_map(|(m, i)| Derive::Resources(m, i)),
        (any::<usize>(), 0u64..=5, any::<usize>()).prop_map(|(i, d, f)| Derive::Budget(i, d, f)),
        (0u32..=2).prop_map(Derive::Depth),
        (0u64..=5, prop::option::of(0u64..=5)).prop_map(|(a, b)| Derive::Expiry(a, b)),
        (any::<usize>(), 0i64..=2, any::<u8>()).prop_map(|(i, t, m)| Derive::Arg(i, t, m)),
    ]
}

#[derive(Debug, Clone)]
struct Step {
    derived: Vec<Derive>,
    random: Vec<Caveat>,
}

fn step() -> impl Strategy<Value = Step> {
    (prop::collection::vec(derive(), 0..=4), caveat_set(0.2, 0.3))
        .prop_map(|(derived, random)| Step { derived, random })
}

#[derive(Debug, Clone)]
struct ChainSpec {
    root: Vec<Caveat>,
    steps: Vec<Step>,
    tag: u64,
}

fn chain_spec(max_steps: usize) -> impl Strategy<Value = ChainSpec> {
    (
        caveat_set(0.5, 0.9),
        prop::collection::vec(step(), 0..=max_steps),
        any::<u64>(),
    )
        .prop_map(|(root, steps, tag)| ChainSpec { root, steps, tag })
}

fn pick<T: Clone>(items: &[T], i: usize) -> Option<T> {
    (!items.is_empty()).then(|| items[i % items.len()].clone())
}

/// Patterns of the alphabet that `parent` covers, per the spec's grammar
/// (computed with the reference matcher over the patterns' own shapes).
fn covered_by(parent: &str, alphabet: &[&'static str], sep: char) -> Vec<&'static str> {
    alphabet
        .iter()
        .copied()
        .filter(|q| {
            parent == "*"
                || (*q != "*"
                    && (*q == parent
                        || ref_matches(parent, q.strip_suffix('*').unwrap_or(q), sep)
                            && (!q.ends_with('*') || parent.ends_with('*'))))
        })
        .collect()
}

fn derive_set<T: Ord + Clone>(
    parent: &BTreeSet<T>,
    mask: u8,
    i: usize,
    text: impl Fn(&T) -> &str,
    alphabet: &[&'static str],
    sep: char,
    parse: impl Fn(&str) -> T,
) -> BTreeSet<T> {
    let kept: Vec<&T> = parent
        .iter()
        .enumerate()
        .filter(|(k, _)| mask & (1 << (k % 8)) != 0)
        .map(|(_, p)| p)
        .collect();
    let kept = if kept.is_empty() {
        parent.iter().take(1).collect()
    } else {
        kept
    };
    kept.into_iter()
        .enumerate()
        .map(|(k, p)| {
            let choices = covered_by(text(p), alphabet, sep);
            // Index 0 of the rotation keeps the parent's own pattern.
            match (i.wrapping_add(k)) % (choices.len() + 1) {
                0 => p.clone(),
                j => parse(choices[j - 1]),
            }
        })
        .collect()
}

fn derive_caveat(d: &Derive, a: &Authority) -> Option<Caveat> {
    Some(match d {
        Derive::Tools(mask, i) => Caveat::Tools(match a.tools() {
            Some(set) => derive_set(
                set,
                *mask,
                *i,
                ActionPattern::as_str,
                ACTION_PATTERNS,
                '.',
                ap,
            ),
            // No tools means no action: a child may not introduce any.
            None => return None,
        }),
        Derive::Resources(mask, i) => Caveat::Resources(match a.resources() {
            Some(set) => derive_set(
                set,
                *mask,
                *i,
                ResourcePattern::as_str,
                RESOURCE_PATTERNS,
                ':',
                rp,
            ),
            None => [rp(RESOURCE_PATTERNS[i % RESOURCE_PATTERNS.len()])].into(),
        }),
        Derive::Budget(i, less, f) => {
            let parents: Vec<Budget> = a.budgets().iter().map(|(_, b)| b.clone()).collect();
            let b = pick(&parents, *i)?;
            // Below every parent budget of the unit, whatever its filter.
            let ceiling = parents
                .iter()
                .filter(|p| p.unit == b.unit)
                .map(|p| p.ceiling)
                .min()?
                .saturating_sub(*less);
            let tools = match &b.tools {
                None if f % 3 == 0 => Some(ap(ACTION_PATTERNS[f % ACTION_PATTERNS.len()])),
                None => None,
                Some(p) => {
                    let choices = covered_by(p.as_str(), ACTION_PATTERNS, '.');
                    pick(&choices, *f).map(ap).or_else(|| Some(p.clone()))
                }
            };
            Caveat::Budget(Budget::new(b.unit, ceiling, tools))
        }
        Derive::Depth(less) => {
            let allowed = match a.remaining_depth() {
                Some(r) => r.checked_sub(1)?,
                None => 4,
            };
            Caveat::Depth(allowed.saturating_sub(*less))
        }
        Derive::Expiry(earlier, later) => {
            let not_after = a.not_after().unwrap_or(MAX_TIME).saturating_sub(*earlier);
            let not_before = later
                .map(|l| a.not_before().unwrap_or(0) + l)
                .filter(|nb| *nb <= not_after);
            Caveat::Expiry {
                not_after,
                not_before,
            }
        }
        Derive::Arg(i, t, mask) => {
            let parents: Vec<ArgConstraint> =
                a.arg_bounds().iter().map(|(_, c)| c.clone()).collect();
            let c = pick(&parents, *i)?;
            let bound = match &c.bound {
                ArgBound::Range { min, max } => {
                    let lo = min.map(|m| m + t).or((mask & 1 != 0).then_some(-3));
                    let hi = max.map(|m| m - t).or((mask & 2 != 0).then_some(3));
                    match (lo, hi) {
                        (Some(l), Some(h)) if l > h => c.bound.clone(),
                        _ => ArgBound::Range { min: lo, max: hi },
                    }
                }
                ArgBound::OneOf(set) => {
                    let kept: BTreeSet<String> = set
                        .iter()
                        .enumerate()
                        .filter(|(k, _)| mask & (1 << k) != 0)
                        .map(|(_, v)| v.clone())
                        .collect();
                    ArgBound::OneOf(if kept.is_empty() { set.clone() } else { kept })
                }
                // A kind of bound this test does not know how to narrow.
                _ => return None,
            };
            Caveat::ArgBound(ArgConstraint::new(c.action, c.arg, bound))
        }
    })
}

/// Attenuates `parent` with the step's caveats, dropping every caveat of a
/// kind that `attenuate` refuses as widening until it accepts the rest.
/// `None` when the depth is exhausted (the chain ends there).
fn apply_step(parent: &Token, step: &Step, seed: &[u8; 32]) -> Option<Token> {
    let a = parent.authority();
    let derived: Vec<Caveat> = step
        .derived
        .iter()
        .filter_map(|d| derive_caveat(d, a))
        .collect();
    let mut caveats = dedup(derived.into_iter().chain(step.random.clone()).collect());
    loop {
        match parent.attenuate_with_seed(caveats.clone(), seed) {
            Ok(child) => return Some(child),
            Err(AttenuateError::Chain(ChainError::DepthExceeded { .. })) => return None,
            Err(AttenuateError::Chain(ChainError::Widening { kind, block, .. })) => {
                assert_eq!(block, parent.len(), "widening blamed on the wrong block");
                let before = caveats.len();
                caveats.retain(|c| c.kind() != kind);
                assert!(caveats.len() < before, "refused a kind the block lacks");
            }
            Err(e) => panic!("attenuate refused {caveats:?}: {e}"),
        }
    }
}

/// Mints the root and applies every step; returns every token of the chain,
/// root first.
fn build_chain(spec: &ChainSpec) -> Vec<Token> {
    let root = Token::mint_with_seed(&root_key(), spec.root.clone(), &eph_seed(spec.tag, 0))
        .expect("a deduplicated root caveat set mints");
    let mut chain = vec![root];
    for (i, step) in spec.steps.iter().enumerate() {
        let last = chain.last().expect("the chain has a root");
        match apply_step(last, step, &eph_seed(spec.tag, i as u64 + 1)) {
            Some(child) => chain.push(child),
            None => break,
        }
    }
    chain
}

// ---------------------------------------------------------------------------
// Requests.

fn arg_value() -> impl Strategy<Value = ArgValue> {
    prop_oneof![
        (-4i64..=4).prop_map(ArgValue::Int),
        prop::sample::select(STR_VALUES).prop_map(|s| ArgValue::Str(s.to_owned())),
    ]
}

fn request() -> impl Strategy<Value = Req> {
    (
        prop::sample::select(ACTIONS),
        prop::option::weighted(0.8, prop::sample::select(RESOURCES)),
        prop::option::weighted(0.8, arg_value()),
        prop::option::weighted(0.8, arg_value()),
        0..=MAX_TIME + 2,
    )
        .prop_map(|(action, resource, n, s, time)| Req {
            action,
            resource,
            args: [("n", n), ("s", s)]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect(),
            time,
        })
}

fn pick_k<T: Clone>(choice: usize, items: Vec<T>, k: usize) -> Option<T> {
    pick(&items, choice.wrapping_add(k))
}

/// Moves `req` towards what the chain allows: each field is replaced by an
/// alphabet value that every block accepts for it, where one exists. Most
/// random requests are denied by some block; these mostly are not, so the
/// allow path and its budget scopes get exercised too.
fn repair(req: &Req, blocks: &[Vec<Caveat>], skew: u64, choice: usize) -> Req {
    let all = || blocks.iter().flatten();
    let action = pick_k(
        choice,
        ACTIONS
            .iter()
            .copied()
            .filter(|a| {
                all().all(|c| match c {
                    Caveat::Tools(set) => set.iter().any(|p| ref_matches(p.as_str(), a, '.')),
                    _ => true,
                })
            })
            .collect(),
        0,
    )
    .unwrap_or(req.action);
    let resource = pick_k(
        choice,
        RESOURCES
            .iter()
            .copied()
            .filter(|r| {
                all().all(|c| match c {
                    Caveat::Resources(set) => set.iter().any(|p| ref_matches(p.as_str(), r, ':')),
                    _ => true,
                })
            })
            .collect(),
        1,
    )
    .or(req.resource);
    let time = pick_k(
        choice,
        (0..=MAX_TIME + 2)
            .filter(|t| {
                all().all(|c| match c {
                    Caveat::Expiry {
                        not_after,
                        not_before,
                    } => *t <= not_after + skew && not_before.is_none_or(|nb| t + skew >= nb),
                    _ => true,
                })
            })
            .collect(),
        2,
    )
    .unwrap_or(req.time);
    let values: Vec<ArgValue> = (-4..=4)
        .map(ArgValue::Int)
        .chain(STR_VALUES.iter().map(|s| ArgValue::Str((*s).to_owned())))
        .collect();
    let args = ARG_NAMES
        .iter()
        .enumerate()
        .filter_map(|(k, name)| {
            let ok: Vec<ArgValue> = values
                .iter()
                .filter(|v| {
                    all().all(|c| match c {
                        Caveat::ArgBound(b) if b.arg == *name => {
                            !ref_matches(b.action.as_str(), action, '.')
                                || ref_bound_allows(&b.bound, v)
                        }
                        _ => true,
                    })
                })
                .cloned()
                .collect();
            pick_k(choice, ok, 3 + k)
                .or_else(|| req.arg(name).cloned())
                .map(|v| (*name, v))
        })
        .collect();
    Req {
        action,
        resource,
        args,
        time,
    }
}

/// Random requests, about half of them repaired towards the chain.
fn requests(n: usize) -> impl Strategy<Value = Vec<(Req, Option<usize>)>> {
    prop::collection::vec((request(), prop::option::of(any::<usize>())), n)
}

fn concrete(reqs: &[(Req, Option<usize>)], blocks: &[Vec<Caveat>], skew: u64) -> Vec<Req> {
    reqs.iter()
        .map(|(r, c)| match c {
            Some(c) => repair(r, blocks, skew, *c),
            None => r.clone(),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Forging.

/// Which dimension a forged block widens; the index varies the choice.
#[derive(Debug, Clone, Copy)]
enum Widen {
    Budget(usize),
    Tools(usize),
    Depth,
    NotAfter(u64),
    NotBefore(u64),
    Resources(usize),
    Arg(usize),
}

fn widen() -> impl Strategy<Value = Widen> {
    prop_oneof![
        any::<usize>().prop_map(Widen::Budget),
        any::<usize>().prop_map(Widen::Tools),
        Just(Widen::Depth),
        (1u64..=5).prop_map(Widen::NotAfter),
        (1u64..=5).prop_map(Widen::NotBefore),
        any::<usize>().prop_map(Widen::Resources),
        any::<usize>().prop_map(Widen::Arg),
    ]
}

/// A caveat that widens `a` in the chosen dimension, with its kind; `None`
/// when that dimension cannot be widened (unrestricted, or already `*`).
fn widening_caveat(w: Widen, a: &Authority) -> Option<(CaveatKind, Caveat)> {
    let uncovered = |alphabet: &[&'static str], parent: Vec<&str>, sep, i: usize| {
        let free: Vec<&'static str> = alphabet
            .iter()
            .copied()
            .filter(|q| {
                parent
                    .iter()
                    .all(|p| !covered_by(p, alphabet, sep).contains(q))
            })
            .collect();
        pick(&free, i)
    };
    Some(match w {
        Widen::Budget(i) => {
            let parents: Vec<Budget> = a.budgets().iter().map(|(_, b)| b.clone()).collect();
            let b = match pick(&parents, i) {
                // One more than the parent's ceiling, same unit and filter.
                Some(b) => Budget::new(b.unit, b.ceiling + 1, b.tools),
                // A budget in a unit no parent granted.
                None => Budget::new(Unit::Calls, 0, None),
            };
            (CaveatKind::Budget, Caveat::Budget(b))
        }
        Widen::Tools(i) => {
            // Under a chain without tools (no action allowed), any tools caveat widens.
            let q = match a.tools() {
                Some(set) => uncovered(
                    ACTION_PATTERNS,
                    set.iter().map(ActionPattern::as_str).collect(),
                    '.',
                    i,
                )?,
                None => ACTION_PATTERNS[i % ACTION_PATTERNS.len()],
            };
            (CaveatKind::Tools, Caveat::Tools([ap(q)].into()))
        }
        Widen::Resources(i) => {
            let parent = a.resources()?.iter().map(ResourcePattern::as_str).collect();
            let q = uncovered(RESOURCE_PATTERNS, parent, ':', i)?;
            (CaveatKind::Resources, Caveat::Resources([rp(q)].into()))
        }
        // After this block the remaining depth is r - 1; declaring r widens it.
        Widen::Depth => (CaveatKind::Depth, Caveat::Depth(a.remaining_depth()?)),
        Widen::NotAfter(later) => (
            CaveatKind::Expiry,
            Caveat::Expiry {
                not_after: a.not_after()? + later,
                not_before: None,
            },
        ),
        Widen::NotBefore(earlier) => {
            let nb = a.not_before()?.checked_sub(earlier)?;
            let not_after = a.not_after().unwrap_or(u64::MAX).min(nb);
            (
                CaveatKind::Expiry,
                Caveat::Expiry {
                    not_after,
                    not_before: Some(not_after.min(nb)),
                },
            )
        }
        Widen::Arg(i) => {
            let parents: Vec<ArgConstraint> =
                a.arg_bounds().iter().map(|(_, c)| c.clone()).collect();
            let c = pick(&parents, i)?;
            let bound = match &c.bound {
                ArgBound::Range { min, max: Some(m) } => ArgBound::Range {
                    min: *min,
                    max: Some(m + 1),
                },
                ArgBound::Range { min: Some(m), max } => ArgBound::Range {
                    min: Some(m - 1),
                    max: *max,
                },
                ArgBound::Range { .. } => unreachable!("a valid range has a side"),
                ArgBound::OneOf(set) => {
                    let mut wider = set.clone();
                    wider.insert("zz".to_owned());
                    ArgBound::OneOf(wider)
                }
                // A kind of bound this test does not know how to widen.
                _ => return None,
            };
            (
                CaveatKind::ArgBound,
                Caveat::ArgBound(ArgConstraint::new(c.action, c.arg, bound)),
            )
        }
    })
}

const ALL_WIDEN: [fn(usize) -> Widen; 7] = [
    Widen::Budget,
    Widen::Tools,
    |_| Widen::Depth,
    |_| Widen::NotAfter(1),
    |_| Widen::NotBefore(1),
    Widen::Resources,
    Widen::Arg,
];

// ---------------------------------------------------------------------------
// The properties.

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A chain built by `attenuate` verifies, and the verifier allows a
    /// request exactly when every block's own caveats allow it; the budget
    /// scopes are exactly the matching budget caveats, nearest block first.
    #[test]
    fn chain_authority_is_the_intersection_of_its_blocks(
        spec in chain_spec(5),
        reqs in requests(48),
        skew in 0u64..=2,
    ) {
        let chain = build_chain(&spec);
        let last = chain.last().expect("the chain has a root");
        let v = verifier(skew);
        let token = v.verify_bytes(last.to_bytes()).expect("an attenuated chain verifies");
        prop_assert_eq!(token.to_bytes(), last.to_bytes());
        let blocks = blocks_of(&token);
        prop_assert_eq!(blocks.len(), chain.len());
        for req in &concrete(&reqs, &blocks, skew) {
            let got = v.authorize(&token, &req.to_request());
            let want = ref_allows(&blocks, req, skew);
            prop_assert_eq!(got.is_ok(), want, "request {:?} on blocks {:?}: {:?}", req, blocks, got);
            if let Ok(auth) = got {
                prop_assert!(auth.budgets.windows(2).all(|w| w[0].block >= w[1].block),
                    "budgets not nearest block first: {:?}", auth.budgets);
                for s in &auth.budgets {
                    prop_assert_eq!(s.block_id, token.block_ids()[s.block]);
                }
                let mut scopes: Vec<(usize, Budget)> = auth
                    .budgets
                    .iter()
                    .map(|s| (s.block, Budget::new(s.unit.clone(), s.ceiling, s.tools.clone())))
                    .collect();
                // Sorted within each block, as ref_budgets is.
                scopes.sort_by(|x, y| y.0.cmp(&x.0).then_with(|| x.1.cmp(&y.1)));
                prop_assert_eq!(scopes, ref_budgets(&blocks, req.action));
            }
        }
    }

    /// Whatever a child allows, its parent allows, at every step.
    #[test]
    fn a_child_never_allows_more_than_its_parent(
        spec in chain_spec(5),
        reqs in requests(48),
    ) {
        let chain = build_chain(&spec);
        let v = verifier(0);
        for pair in chain.windows(2) {
            let (parent, child) = (&pair[0], &pair[1]);
            for req in &concrete(&reqs, &blocks_of(child), 0) {
                let r = req.to_request();
                if v.authorize(child, &r).is_ok() {
                    prop_assert!(v.authorize(parent, &r).is_ok(),
                        "child {:?} allows {:?}, parent {:?} does not",
                        blocks_of(child), req, blocks_of(parent));
                }
            }
        }
    }

    /// Text form round-trips, for verified and unverified tokens, sealed or not.
    #[test]
    fn text_form_round_trips(spec in chain_spec(3), seal in any::<bool>()) {
        let chain = build_chain(&spec);
        let mut t = chain.last().expect("the chain has a root").clone();
        if seal {
            t = t.seal().expect("an unsealed token seals");
        }
        let text = t.to_text();
        prop_assert!(text.starts_with("baton_v1_"));
        let u = UnverifiedToken::from_text(&text).expect("own text parses");
        prop_assert_eq!(u.to_bytes(), t.to_bytes());
        prop_assert_eq!(u.to_text(), text.clone());
        prop_assert_eq!(UnverifiedToken::from_bytes(t.to_bytes()).expect("own bytes parse").to_text(), text.clone());
        let v = verifier(0).verify_text(&text).expect("own text verifies");
        prop_assert_eq!(v.to_bytes(), t.to_bytes());
        prop_assert_eq!(v.is_sealed(), seal);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// A block that widens one dimension, correctly signed with the holder's
    /// own ephemeral key, is refused by the verifier with that widening, and
    /// `attenuate` refuses the same caveats with the same error.
    #[test]
    fn forged_widening_blocks_are_rejected(
        spec in chain_spec(3),
        w in widen(),
        seed in any::<[u8; 32]>(),
    ) {
        let chain = build_chain(&spec);
        let t = chain.last().expect("the chain has a root");
        let a = t.authority();
        let n = t.len();
        let v = verifier(0);

        // Control: the forge signs correctly, so an empty block verifies
        // whenever the depth allows one more block.
        let plain = baton::forge::append_unchecked(t.to_bytes(), &[], &seed)
            .expect("an unsealed token can be forged on");
        match v.verify_bytes(&plain) {
            Ok(_) => prop_assert_ne!(a.remaining_depth(), Some(0)),
            Err(e) => prop_assert_eq!(e, VerifyError::Chain(ChainError::DepthExceeded { block: n })),
        }

        // The chosen dimension, or the next one that can be widened (a
        // budget always can).
        let start = ALL_WIDEN.iter().position(|f| std::mem::discriminant(&f(0)) == std::mem::discriminant(&w)).expect("every Widen is listed");
        let (kind, caveat) = (0..ALL_WIDEN.len())
            .find_map(|k| {
                let choice = if k == 0 { w } else { ALL_WIDEN[(start + k) % ALL_WIDEN.len()](k) };
                widening_caveat(choice, a)
            })
            .expect("a budget can always be widened");

        let forged = baton::forge::append_unchecked(t.to_bytes(), std::slice::from_ref(&caveat), &seed)
            .expect("an unsealed token can be forged on");
        let err = match v.verify_bytes(&forged) {
            Ok(_) => return Err(TestCaseError::fail(format!("forged {caveat:?} on {:?} verified", blocks_of(t)))),
            Err(VerifyError::Chain(e)) => e,
            Err(e) => return Err(TestCaseError::fail(format!("forged {caveat:?}: wrong error {e}"))),
        };
        if a.remaining_depth() == Some(0) {
            prop_assert_eq!(&err, &ChainError::DepthExceeded { block: n });
        } else {
            prop_assert!(
                matches!(err, ChainError::Widening { kind: k, block, .. } if k == kind && block == n),
                "forged {:?} on {:?}: got {:?}, want widening {:?} at block {}",
                caveat, blocks_of(t), err, kind, n
            );
        }
        prop_assert_eq!(
            t.attenuate_with_seed(vec![caveat], &seed).map(|_| ()),
            Err(AttenuateError::Chain(err))
        );
    }
}

proptest! {
    // A debug-build verification costs ~10 ms and nearly every byte of a
    // token is key, signature or secret material that only verification
    // rejects, so each case runs some hundreds of verifications.
    #![proptest_config(ProptestConfig { cases: 3, ..ProptestConfig::default() })]

    /// Every single-byte change to a three-block token (sealed or not) is
    /// refused by the verifier; whatever still parses re-encodes to the
    /// mutated bytes, so no token has a second encoding.
    #[test]
    fn single_byte_mutations_are_rejected(
        spec in chain_spec(0),
        steps in prop::collection::vec(step(), 2),
        parse_xors in prop::collection::vec(1u8..=255, 3),
        verify_xors in prop::collection::vec(1u8..=255, 64),
        seal in any::<bool>(),
    ) {
        // Without any depth caveat both steps always succeed.
        let no_depth = |cs: Vec<Caveat>| -> Vec<Caveat> {
            cs.into_iter().filter(|c| c.kind() != CaveatKind::Depth).collect()
        };
        let steps = steps
            .into_iter()
            .map(|s| Step {
                derived: s.derived.into_iter().filter(|d| !matches!(d, Derive::Depth(_))).collect(),
                random: no_depth(s.random),
            })
            .collect();
        let spec = ChainSpec {
            root: no_depth(spec.root),
            steps,
            tag: spec.tag,
        };
        let chain = build_chain(&spec);
        let mut t = chain.last().expect("the chain has a root").clone();
        prop_assert_eq!(t.len(), 3);
        if seal {
            t = t.seal().expect("an unsealed token seals");
        }
        let original = t.to_bytes().to_vec();
        let plain = verifier(0);
        // The cache holds the original's prefixes, so only the blocks from
        // the mutated one on are re-verified: this is also what checks that
        // cached prefixes are keyed on every byte they vouch for.
        let cached = verifier(0).with_cache(16);
        cached.verify_bytes(&original).expect("the original verifies");
        let mut mutated = original.clone();
        for i in 0..original.len() {
            for &x in &parse_xors {
                mutated[i] = original[i] ^ x;
                if let Ok(u) = UnverifiedToken::from_bytes(&mutated) {
                    prop_assert_eq!(u.to_bytes(), &mutated[..]);
                }
            }
            let x = verify_xors[i % verify_xors.len()];
            mutated[i] = original[i] ^ x;
            prop_assert!(cached.verify_bytes(&mutated).is_err(), "byte {} ^ {:#04x} verified (cached)", i, x);
            if i % 32 == 0 {
                prop_assert!(plain.verify_bytes(&mutated).is_err(), "byte {} ^ {:#04x} verified", i, x);
            }
            mutated[i] = original[i];
        }
    }
}

// ---------------------------------------------------------------------------
// Holder binding: a bound token's text without the holder's secret grants
// nothing (spec/token.md §12).

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Bind the last token of a random chain to a holder key. Then, for
    /// random requests and random thief keys, nonces and times: no proof, a
    /// proof by another key, arbitrary proof bytes, a holder proof made for
    /// another request, and blocks appended without the holder key are all
    /// refused, batched or not, cached or not. The holder's own proof is
    /// accepted exactly when the reference allows the request, so the
    /// property is not vacuous.
    #[test]
    fn a_bound_token_without_the_holder_secret_grants_nothing(
        spec in chain_spec(2),
        reqs in requests(6),
        holder_seed in any::<[u8; 32]>(),
        thief_seed in any::<[u8; 32]>(),
        junk in prop::collection::vec(any::<u8>(), 88),
        nonce in any::<[u8; 16]>(),
    ) {
        prop_assume!(holder_seed != thief_seed);
        let chain = build_chain(&spec);
        let last = chain.last().expect("a chain has a root");
        let holder = HolderKey::from_seed(&holder_seed);
        let thief = HolderKey::from_seed(&thief_seed);
        let Ok(bound) = last.attenuate_with_seed(vec![Caveat::Holder(holder.public())], &eph_seed(spec.tag, 99)) else {
            // Depth exhausted: nothing to bind.
            return Ok(());
        };
        let audience = Audience::new("gw").expect("valid audience");
        let blocks = blocks_of(&bound);
        let text = bound.to_text();
        let stolen = UnverifiedToken::from_text(&text).expect("parses");
        // Delegating without the key.
        prop_assert_eq!(stolen.attenuate(vec![]).map(drop).map_err(|e| e.code()), Err("holder_mismatch"));
        prop_assert_eq!(
            stolen.attenuate_as_holder(&thief, vec![Caveat::Holder(thief.public())]).map(drop).map_err(|e| e.code()),
            Err("holder_mismatch")
        );
        let forged = baton::forge::append_signed_by(
            bound.to_bytes(),
            baton::forge::raw_payload(None, thief.public().as_bytes(), &[Caveat::Holder(thief.public())]),
            &thief_seed,
            &[],
        ).expect("a token");
        // Refused for its signature (or, when no depth is left, for its place).
        let got = verifier(0).verify_bytes(&forged).map(drop).map_err(|e| e.code());
        prop_assert!(matches!(got, Err("bad_signature" | "depth_exceeded")), "{:?}", got);
        let last_id = *bound.block_ids().last().expect("blocks");
        for (i, r) in concrete(&reqs, &blocks, 0).iter().enumerate() {
            let request = r.to_request();
            let time = r.time;
            let other = Request::new(r.action, time).expect("valid").operation("other").expect("valid");
            let attempts: Vec<Request> = vec![
                request.clone(),
                request.clone().with_proof(HolderProof::sign_with_nonce(&thief, &audience, &last_id, &request, time, nonce)),
                request.clone().with_proof(HolderProof::from_bytes(&junk.clone().try_into().expect("88 bytes"))),
                request.clone().with_proof(HolderProof::sign_with_nonce(&holder, &audience, &last_id, &other, time, nonce)),
            ];
            for v in [verifier(0).with_audience(audience.clone()), verifier(0).with_audience(audience.clone()).with_cache(8)] {
                for a in &attempts {
                    prop_assert!(v.authorize_text(&text, a).is_err(), "request {} granted without the holder key", i);
                    let t = v.verify_text(&text).expect("the bound token verifies");
                    prop_assert!(v.authorize(&t, a).is_err());
                }
                let mut n = nonce;
                n[0] ^= 0x80 | i as u8;
                let good = request.clone().with_proof(HolderProof::sign_with_nonce(&holder, &audience, &last_id, &request, time, n));
                let allowed = ref_allows(&blocks, r, 0);
                prop_assert_eq!(v.authorize_text(&text, &good).is_ok(), allowed);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Ledger allocations (spec/http.md §3.8): random operations by the root,
// the parent, four children and one grandchild, with the invariants
// checked after every step.

mod allocations {
    use baton::Unit;
    use baton::authority::BudgetScope;
    use baton::keys::BlockId;
    use baton::ledger::{
        AllocAmount, AllocId, AllocState, AllocateRequest, Ledger, LedgerError, Overflow, ResId,
        ReserveRequest, ScopeKey,
    };
    use proptest::prelude::*;

    /// Root 0 (40) → parent 1 (20) → children 2..=5 (8 each); grandchild
    /// 6 (4) under child 2.
    fn chain(b: u8) -> Vec<BlockId> {
        let ids = match b {
            0 => vec![0],
            1 => vec![0, 1],
            6 => vec![0, 1, 2, 6],
            c => vec![0, 1, c],
        };
        ids.into_iter().map(|i| BlockId([i; 32])).collect()
    }

    fn ceiling(b: u8) -> u64 {
        match b {
            0 => 40,
            1 => 20,
            6 => 4,
            _ => 8,
        }
    }

    fn key(b: u8) -> ScopeKey {
        ScopeKey {
            block: BlockId([b; 32]),
            unit: Unit::Calls,
            tools: None,
        }
    }

    fn scopes(b: u8) -> Vec<BudgetScope> {
        chain(b)
            .iter()
            .enumerate()
            .rev()
            .map(|(i, id)| BudgetScope::new(i, *id, Unit::Calls, ceiling(id.0[0]), None))
            .collect()
    }

    fn res_id(n: u64) -> ResId {
        ResId::new(1, {
            let mut r = [0u8; 12];
            r[4..].copy_from_slice(&n.to_be_bytes());
            r
        })
    }

    fn reserve(l: &mut Ledger, n: u64, b: u8, amount: u64, now: u64) -> Result<(), LedgerError> {
        l.reserve(
            &ReserveRequest {
                id: res_id(n),
                chain: chain(b),
                unit: Unit::Calls,
                scopes: scopes(b),
                amount,
                ttl_ms: 50,
            },
            now,
        )
        .map(drop)
    }

    /// The parent (1) or the root (0) allocates to child `c`.
    fn allocate(
        l: &mut Ledger,
        n: u64,
        by: u8,
        c: u8,
        amount: u64,
        overflow: Overflow,
        now: u64,
    ) -> Result<(), LedgerError> {
        let parent = chain(by);
        l.allocate(
            &AllocateRequest {
                id: AllocId(res_id(n).0),
                // Every scope above the child: its parent's and their ancestors'.
                scopes: chain(c)[..chain(c).len() - 1]
                    .iter()
                    .rev()
                    .map(|b| (key(b.0[0]), ceiling(b.0[0])))
                    .collect(),
                parent,
                child: chain(c),
                unit: Unit::Calls,
                amount: AllocAmount::Fixed(amount),
                child_ceiling: chain(c).iter().map(|b| ceiling(b.0[0])).min().unwrap_or(0),
                overflow,
                ttl_ms: 80,
                not_after_ms: None,
            },
            now,
        )
        .map(drop)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Reserve {
            b: u8,
            amount: u64,
        },
        Commit {
            pick: usize,
            actual: u64,
        },
        Release {
            pick: usize,
        },
        Allocate {
            by_root: bool,
            c: u8,
            amount: u64,
            deny: bool,
        },
        ReleaseAllocation {
            pick: usize,
            by_child: bool,
        },
        Tick {
            ms: u64,
        },
        Revoke {
            b: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..=6, 1u64..=9).prop_map(|(b, amount)| Op::Reserve { b, amount }),
            2 => (any::<usize>(), 0u64..=10).prop_map(|(pick, actual)| Op::Commit { pick, actual }),
            2 => any::<usize>().prop_map(|pick| Op::Release { pick }),
            2 => (any::<bool>(), 2u8..=6, 1u64..=8, any::<bool>())
                .prop_map(|(by_root, c, amount, deny)| Op::Allocate { by_root, c, amount, deny }),
            1 => (any::<usize>(), any::<bool>())
                .prop_map(|(pick, by_child)| Op::ReleaseAllocation { pick, by_child }),
            1 => (1u64..=40).prop_map(|ms| Op::Tick { ms }),
            1 => prop_oneof![Just(5u8), Just(6u8)].prop_map(|b| Op::Revoke { b }),
        ]
    }

    /// Remaining at a scope.
    fn remaining(l: &Ledger, b: u8) -> u64 {
        l.scope(&key(b), ceiling(b)).remaining()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever happens: at every scope spent + held ≤ ceiling, where
        /// held is exactly the active holds plus the unused part of the
        /// active allocations over it; a release returns exactly the
        /// unused part at every scope, and only once.
        #[test]
        fn allocations_keep_the_ledger_invariant_and_release_exactly(ops in prop::collection::vec(op(), 1..60)) {
            let mut l = Ledger::default();
            let mut now = 1_000u64;
            let mut made: Vec<(u8, ResId)> = Vec::new();
            let mut allocs: Vec<(u8, AllocId)> = Vec::new();
            for (n, op) in ops.iter().enumerate() {
                let n = n as u64;
                match op {
                    Op::Reserve { b, amount } => {
                        made.extend(reserve(&mut l, n, *b, *amount, now).ok().map(|()| (*b, res_id(n))));
                    }
                    Op::Commit { pick, actual } if !made.is_empty() => {
                        let (b, id) = made[pick % made.len()];
                        let _ = l.commit(&chain(b), &id, *actual, now, 0);
                    }
                    Op::Release { pick } if !made.is_empty() => {
                        let (b, id) = made[pick % made.len()];
                        let _ = l.release(&chain(b), &id, now, 0);
                    }
                    Op::Allocate { by_root, c, amount, deny } => {
                        let by = if *by_root { 0 } else { 1 };
                        let overflow = if *deny { Overflow::Deny } else { Overflow::Shared };
                        let made = allocate(&mut l, n, by, *c, *amount, overflow, now).ok();
                        allocs.extend(made.map(|()| (*c, AllocId(res_id(n).0))));
                    }
                    Op::ReleaseAllocation { pick, by_child } if !allocs.is_empty() => {
                        let (c, id) = allocs[pick % allocs.len()];
                        let who = if *by_child { chain(c) } else { chain(1) };
                        let before: Vec<u64> = [0u8, 1].iter().map(|b| remaining(&l, *b)).collect();
                        // A nested allocation gives what it took from an
                        // enclosing one and did not use back to it, not to
                        // the pool: that part stays held at its scopes.
                        let unused = l.allocation_for(&chain(c), &Unit::Calls)
                            .filter(|a| a.id == id)
                            .map(|a| {
                                let kept = a.source
                                    .and_then(|(e, d)| {
                                        let e = l.allocation_for(&chain(c)[..chain(c).len() - 1], &Unit::Calls)
                                            .filter(|x| x.id == e)?;
                                        Some((e.scopes.clone(), d - (a.amount - a.unused()).min(d)))
                                    });
                                (a.unused(), a.scopes.clone(), kept)
                            });
                        match l.release_allocation(&who, &id, now) {
                            Ok(a) => {
                                let (u, sc, kept) = unused.expect("an active allocation was released");
                                prop_assert_eq!(a.returned, u);
                                prop_assert_eq!(a.state, AllocState::Released);
                                for (i, b) in [0u8, 1].iter().enumerate() {
                                    let gained = remaining(&l, *b) - before[i];
                                    let back = match &kept {
                                        Some((esc, back)) if esc.contains(&key(*b)) => *back,
                                        _ => 0,
                                    };
                                    let expect = if sc.contains(&key(*b)) { u - back } else { 0 };
                                    prop_assert_eq!(gained, expect, "scope {}", b);
                                }
                                // Once: a second release changes nothing.
                                let again = l.release_allocation(&who, &id, now);
                                prop_assert_eq!(again, Err(LedgerError::AllocationFinalized(AllocState::Released)));
                            }
                            Err(e) => prop_assert!(unused.is_none() || matches!(e, LedgerError::AllocationNotFound), "{:?}", e),
                        }
                    }
                    Op::Tick { ms } => {
                        now += ms;
                        l.expire(now, 0);
                    }
                    Op::Revoke { b } => {
                        l.revoke(BlockId([0; 32]), BlockId([*b; 32]), now);
                    }
                    _ => {}
                }
                prop_assert!(l.check_invariant().is_ok(), "after {:?}: {:?}", op, l.check_invariant());
                l.settle();
            }
        }

        /// A child allocated X can reserve X whatever its siblings, its
        /// parent and the root did in between.
        #[test]
        fn an_allocated_child_can_always_reserve_its_allocation(
            x in 1u64..=8,
            deny in any::<bool>(),
            by_root in any::<bool>(),
            greedy in prop::collection::vec((prop_oneof![Just(0u8), Just(1u8), Just(3u8), Just(4u8), Just(5u8)], 1u64..=9, any::<bool>()), 0..40),
        ) {
            let mut l = Ledger::default();
            let overflow = if deny { Overflow::Deny } else { Overflow::Shared };
            allocate(&mut l, 0, if by_root { 0 } else { 1 }, 2, x, overflow, 0).expect("room for it");
            for (i, (b, amount, commit)) in greedy.iter().enumerate() {
                let n = i as u64 + 1;
                if reserve(&mut l, n, *b, *amount, 0).is_ok() && *commit {
                    l.commit(&chain(*b), &res_id(n), *amount, 0, 0).expect("commit of the hold");
                }
            }
            prop_assert_eq!(reserve(&mut l, 999, 2, x, 0), Ok(()));
            prop_assert!(l.check_invariant().is_ok());
        }
    }
}
