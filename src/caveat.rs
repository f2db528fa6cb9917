//! The typed caveats a block can declare, and their CBOR form
//! (spec/token.md §4).
//!
//! A [`Caveat`] is always valid on its own: patterns parse, sets are
//! non-empty, ranges are ordered. Whether it narrows its parent is the
//! business of [`crate::authority`].

use std::collections::BTreeSet;
use std::fmt;

use ciborium::Value;

use crate::cbor::{self, Reader};
pub use crate::error::CaveatKind;
use crate::error::ParseError;
use crate::holder::HolderPublicKey;
use crate::limits::{MAX_SET_ENTRIES, MAX_STRING_BYTES};
use crate::pattern::{ActionPattern, Namespace, Pattern, PatternError, ResourcePattern};

/// The unit a budget is counted in. Amounts are integers in the unit's
/// minor denomination; there is no conversion between units.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Unit {
    /// US dollars in millionths of a cent ($1 = 100,000,000).
    UsdMicrocents,
    /// Model tokens.
    Tokens,
    /// Abstract risk points.
    RiskPoints,
    /// Tool calls.
    Calls,
    /// Any other unit: 1 to 32 bytes of `[a-z0-9_]`, not a built-in name.
    Custom(String),
}

const BUILTIN_UNITS: [&str; 4] = ["usd_microcents", "tokens", "risk_points", "calls"];

impl Unit {
    /// Parses a unit name: a built-in name or a custom one.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        Ok(match s {
            "usd_microcents" => Self::UsdMicrocents,
            "tokens" => Self::Tokens,
            "risk_points" => Self::RiskPoints,
            "calls" => Self::Calls,
            _ => Self::Custom(custom_unit(s)?.to_owned()),
        })
    }

    /// The unit's name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::UsdMicrocents => BUILTIN_UNITS[0],
            Self::Tokens => BUILTIN_UNITS[1],
            Self::RiskPoints => BUILTIN_UNITS[2],
            Self::Calls => BUILTIN_UNITS[3],
            Self::Custom(s) => s,
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Self::UsdMicrocents => cbor::u64_value(0),
            Self::Tokens => cbor::u64_value(1),
            Self::RiskPoints => cbor::u64_value(2),
            Self::Calls => cbor::u64_value(3),
            Self::Custom(s) => Value::Text(s.clone()),
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, UnitError> {
        // A unit is a built-in code or a custom name; peek at the major type.
        if r.peek_major() == Some(3) {
            let s = r.text("unit name is not text").map_err(UnitError::Parse)?;
            // A built-in name spelled as text would be a second encoding of the same unit.
            return Ok(Self::Custom(
                custom_unit(s).map_err(UnitError::Invalid)?.to_owned(),
            ));
        }
        match r
            .uint("unit is neither a code nor a name")
            .map_err(UnitError::Parse)?
        {
            0 => Ok(Self::UsdMicrocents),
            1 => Ok(Self::Tokens),
            2 => Ok(Self::RiskPoints),
            3 => Ok(Self::Calls),
            _ => Err(UnitError::Invalid("unknown built-in unit code")),
        }
    }
}

enum UnitError {
    Parse(ParseError),
    Invalid(&'static str),
}

fn custom_unit(s: &str) -> Result<&str, &'static str> {
    if BUILTIN_UNITS.contains(&s) {
        return Err("built-in unit written as a custom name");
    }
    // Reserved: tools read `usd=` as dollars converted to usd_microcents.
    if s == "usd" {
        return Err("unit name usd is reserved; use usd_microcents");
    }
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(s)
    } else {
        Err("unit name must be 1-32 bytes of [a-z0-9_]")
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A spending ceiling in one unit, optionally only for actions matching a pattern.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub struct Budget {
    /// The unit counted.
    pub unit: Unit,
    /// The most that may be spent in this block's scope, in minor units.
    pub ceiling: u64,
    /// If set, the budget applies only to actions this pattern matches.
    pub tools: Option<ActionPattern>,
}

impl Budget {
    /// A budget of `ceiling` in `unit`, for the actions `tools` matches (all
    /// actions if `None`).
    pub fn new(unit: Unit, ceiling: u64, tools: Option<ActionPattern>) -> Self {
        Self {
            unit,
            ceiling,
            tools,
        }
    }

    /// Whether a spend on `action` debits this budget.
    pub fn applies_to(&self, action: &crate::pattern::ActionName) -> bool {
        self.tools.as_ref().is_none_or(|p| p.matches(action))
    }
}

/// A bound on one request argument.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ArgBound {
    /// An integer argument within `[min, max]`; at least one side is set.
    Range {
        /// Inclusive lower bound.
        min: Option<i64>,
        /// Inclusive upper bound.
        max: Option<i64>,
    },
    /// A string argument equal to one of these.
    OneOf(BTreeSet<String>),
}

impl ArgBound {
    /// Whether every value this bound allows, `outer` allows too.
    pub fn within(&self, outer: &ArgBound) -> bool {
        match (self, outer) {
            (
                Self::Range { min, max },
                Self::Range {
                    min: omin,
                    max: omax,
                },
            ) => {
                let lower_ok = match (min, omin) {
                    (_, None) => true,
                    (Some(a), Some(b)) => a >= b,
                    (None, Some(_)) => false,
                };
                let upper_ok = match (max, omax) {
                    (_, None) => true,
                    (Some(a), Some(b)) => a <= b,
                    (None, Some(_)) => false,
                };
                lower_ok && upper_ok
            }
            (Self::OneOf(a), Self::OneOf(b)) => a.is_subset(b),
            _ => false,
        }
    }

    /// Whether `value` satisfies this bound.
    pub fn allows(&self, value: &ArgValue) -> bool {
        match (self, value) {
            (Self::Range { min, max }, ArgValue::Int(v)) => {
                min.is_none_or(|m| *v >= m) && max.is_none_or(|m| *v <= m)
            }
            (Self::OneOf(set), ArgValue::Str(s)) => set.contains(s),
            _ => false,
        }
    }
}

impl fmt::Display for ArgBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Range {
                min: Some(a),
                max: Some(b),
            } => write!(f, "{a}..={b}"),
            Self::Range {
                min: Some(a),
                max: None,
            } => write!(f, ">= {a}"),
            Self::Range {
                min: None,
                max: Some(b),
            } => write!(f, "<= {b}"),
            Self::Range {
                min: None,
                max: None,
            } => f.write_str("any"),
            Self::OneOf(s) => {
                let v: Vec<&str> = s.iter().map(String::as_str).collect();
                write!(f, "one of {}", v.join("|"))
            }
        }
    }
}

/// The value of a request argument.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ArgValue {
    /// An integer.
    Int(i64),
    /// A string.
    Str(String),
}

/// A bound on argument `arg` of the actions matching `action`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub struct ArgConstraint {
    /// The actions the bound applies to.
    pub action: ActionPattern,
    /// The argument name: 1 to 64 bytes of `[a-z0-9_]`.
    pub arg: String,
    /// The bound.
    pub bound: ArgBound,
}

impl ArgConstraint {
    /// A bound on argument `arg` of the actions matching `action`. The
    /// name is checked when the caveat is minted or attenuated.
    pub fn new(action: ActionPattern, arg: impl Into<String>, bound: ArgBound) -> Self {
        Self {
            action,
            arg: arg.into(),
            bound,
        }
    }
}

/// Whether `s` is a valid argument name.
pub fn valid_arg_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Whether `s` is free of control characters (so `inspect` cannot be used
/// to inject terminal escapes) and within [`MAX_STRING_BYTES`].
pub(crate) fn printable(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_STRING_BYTES && !s.chars().any(char::is_control)
}

/// One restriction declared by a block.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Caveat {
    /// A spending ceiling (type 0).
    Budget(Budget),
    /// The allowed actions (type 1). Never empty.
    Tools(BTreeSet<ActionPattern>),
    /// How many more blocks may follow this one (type 2).
    Depth(u32),
    /// The validity window in Unix seconds (type 3).
    Expiry {
        /// The last second at which the token is valid.
        not_after: u64,
        /// The first second at which the token is valid.
        not_before: Option<u64>,
    },
    /// The allowed resources (type 4). Never empty.
    Resources(BTreeSet<ResourcePattern>),
    /// A bound on a request argument (type 5).
    ArgBound(ArgConstraint),
    /// The delegate's name, for display (type 6).
    Label(String),
    /// Binds the token to a holder key (type 7): the declaring block's
    /// `next_key` is this key, every later block is signed with it and
    /// declares a holder again, and every request carries a proof of
    /// possession signed with it (spec/token.md §12).
    Holder(HolderPublicKey),
}

impl Caveat {
    /// The kind of this caveat.
    pub fn kind(&self) -> CaveatKind {
        match self {
            Self::Budget(_) => CaveatKind::Budget,
            Self::Tools(_) => CaveatKind::Tools,
            Self::Depth(_) => CaveatKind::Depth,
            Self::Expiry { .. } => CaveatKind::Expiry,
            Self::Resources(_) => CaveatKind::Resources,
            Self::ArgBound(_) => CaveatKind::ArgBound,
            Self::Label(_) => CaveatKind::Label,
            Self::Holder(_) => CaveatKind::Holder,
        }
    }

    /// A budget caveat applying to every action.
    pub fn budget(unit: Unit, ceiling: u64) -> Self {
        Self::Budget(Budget {
            unit,
            ceiling,
            tools: None,
        })
    }

    /// A tools caveat from pattern strings.
    pub fn tools<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, PatternError> {
        Ok(Self::Tools(parse_set(patterns)?))
    }

    /// A resources caveat from pattern strings.
    pub fn resources<'a>(
        patterns: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, PatternError> {
        Ok(Self::Resources(parse_set(patterns)?))
    }

    /// Checks the rules that do not depend on other caveats. `block` is only
    /// used to label the error.
    pub(crate) fn validate(&self, block: usize) -> Result<(), ParseError> {
        let invalid = |reason| ParseError::InvalidCaveat {
            block,
            kind: self.kind(),
            reason,
        };
        match self {
            Self::Budget(b) => {
                if let Unit::Custom(s) = &b.unit {
                    custom_unit(s).map_err(invalid)?;
                }
            }
            Self::Tools(s) => check_set_len(s.len()).map_err(|e| e.at(block, self.kind()))?,
            Self::Resources(s) => check_set_len(s.len()).map_err(|e| e.at(block, self.kind()))?,
            Self::Depth(_) => {}
            Self::Expiry {
                not_after,
                not_before,
            } => {
                if not_before.is_some_and(|nb| nb > *not_after) {
                    return Err(invalid("not_before is after not_after"));
                }
            }
            Self::ArgBound(c) => {
                if !valid_arg_name(&c.arg) {
                    return Err(invalid("argument name must be 1-64 bytes of [a-z0-9_]"));
                }
                match &c.bound {
                    ArgBound::Range {
                        min: None,
                        max: None,
                    } => return Err(invalid("range without min or max")),
                    ArgBound::Range {
                        min: Some(a),
                        max: Some(b),
                    } if a > b => {
                        return Err(invalid("range min is above max"));
                    }
                    ArgBound::Range { .. } => {}
                    ArgBound::OneOf(s) => {
                        check_set_len(s.len()).map_err(|e| e.at(block, self.kind()))?;
                        if s.iter().any(|v| v.len() > MAX_STRING_BYTES) {
                            return Err(ParseError::TooLong);
                        }
                        if s.iter().any(|v| v.chars().any(char::is_control)) {
                            return Err(invalid("one_of value too long or has control characters"));
                        }
                    }
                }
            }
            // Canonical and not small-order, as every next_key must be; the
            // key is checked on its curve point where it signs.
            Self::Holder(k) => {
                if !crate::sig::acceptable_key_bytes(k.as_bytes()) {
                    return Err(ParseError::BadKey { block });
                }
            }
            Self::Label(s) => {
                if s.len() > MAX_STRING_BYTES {
                    return Err(ParseError::TooLong);
                }
                if !printable(s) {
                    return Err(invalid(
                        "label must be 1-128 bytes without control characters",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The canonical CBOR form.
    pub(crate) fn to_value(&self) -> Value {
        let mut a = vec![];
        match self {
            Self::Budget(b) => {
                a.extend([
                    cbor::u64_value(0),
                    b.unit.to_value(),
                    cbor::u64_value(b.ceiling),
                ]);
                if let Some(p) = &b.tools {
                    a.push(Value::Text(p.as_str().to_owned()));
                }
            }
            Self::Tools(s) => a.extend([cbor::u64_value(1), set_value(s)]),
            Self::Depth(d) => a.extend([cbor::u64_value(2), cbor::u64_value(u64::from(*d))]),
            Self::Expiry {
                not_after,
                not_before,
            } => {
                a.extend([cbor::u64_value(3), cbor::u64_value(*not_after)]);
                if let Some(nb) = not_before {
                    a.push(cbor::u64_value(*nb));
                }
            }
            Self::Resources(s) => a.extend([cbor::u64_value(4), set_value(s)]),
            Self::ArgBound(c) => {
                let bound = match &c.bound {
                    ArgBound::Range { min, max } => {
                        let side =
                            |x: &Option<i64>| x.map_or(Value::Null, |v| Value::Integer(v.into()));
                        Value::Array(vec![cbor::u64_value(0), side(min), side(max)])
                    }
                    ArgBound::OneOf(s) => Value::Array(vec![
                        cbor::u64_value(1),
                        Value::Array(s.iter().map(|v| Value::Text(v.clone())).collect()),
                    ]),
                };
                a.extend([
                    cbor::u64_value(5),
                    Value::Text(c.action.as_str().to_owned()),
                    Value::Text(c.arg.clone()),
                    bound,
                ]);
            }
            Self::Label(s) => a.extend([cbor::u64_value(6), Value::Text(s.clone())]),
            Self::Holder(k) => a.extend([cbor::u64_value(7), Value::Bytes(k.0.to_vec())]),
        }
        Value::Array(a)
    }

    /// Reads one caveat (spec/token.md §4) and validates it. Sets must be
    /// strictly ascending, which rules out reordering and duplicates.
    pub(crate) fn read(r: &mut Reader<'_>, block: usize) -> Result<Self, ParseError> {
        let len = r.array("caveat is not an array")?;
        if len == 0 {
            return Err(ParseError::Malformed("empty caveat"));
        }
        let code = r.uint("caveat type is not an unsigned integer")?;
        let fields = len - 1;
        let arity = |lo: usize, hi: usize| {
            if (lo..=hi).contains(&fields) {
                Ok(())
            } else {
                Err(ParseError::Malformed(
                    "caveat has the wrong number of fields",
                ))
            }
        };
        let caveat = match code {
            0 => {
                arity(2, 3)?;
                let unit = Unit::read(r).map_err(|e| match e {
                    UnitError::Parse(e) => e,
                    UnitError::Invalid(reason) => ParseError::InvalidCaveat {
                        block,
                        kind: CaveatKind::Budget,
                        reason,
                    },
                })?;
                let ceiling = r.uint("budget ceiling is not an unsigned integer")?;
                let tools = if fields == 3 {
                    Some(read_pattern(r, block, CaveatKind::Budget)?)
                } else {
                    None
                };
                Self::Budget(Budget {
                    unit,
                    ceiling,
                    tools,
                })
            }
            1 => {
                arity(1, 1)?;
                Self::Tools(read_set(r, block, CaveatKind::Tools)?)
            }
            2 => {
                arity(1, 1)?;
                let d = r.uint("depth is not an unsigned integer")?;
                Self::Depth(
                    u32::try_from(d).map_err(|_| ParseError::Malformed("depth exceeds u32"))?,
                )
            }
            3 => {
                arity(1, 2)?;
                let not_after = r.uint("not_after is not an unsigned integer")?;
                let not_before = if fields == 2 {
                    Some(r.uint("not_before is not an unsigned integer")?)
                } else {
                    None
                };
                Self::Expiry {
                    not_after,
                    not_before,
                }
            }
            4 => {
                arity(1, 1)?;
                Self::Resources(read_set(r, block, CaveatKind::Resources)?)
            }
            5 => {
                arity(3, 3)?;
                let action = read_pattern(r, block, CaveatKind::ArgBound)?;
                let arg = r.text("argument name is not text")?.to_owned();
                let blen = r.array("argument bound is not an array")?;
                let bcode = if blen == 0 {
                    None
                } else {
                    Some(r.uint("bound type is not an unsigned integer")?)
                };
                let bound = match (bcode, blen) {
                    (Some(0), 3) => {
                        let mut side = || {
                            if r.null() {
                                Ok(None)
                            } else {
                                r.int("range bound is not an i64").map(Some)
                            }
                        };
                        let min = side()?;
                        let max = side()?;
                        ArgBound::Range { min, max }
                    }
                    (Some(1), 2) => {
                        let n = r.array("one_of is not an array")?;
                        if n > MAX_SET_ENTRIES {
                            return Err(ParseError::TooLong);
                        }
                        let mut set = BTreeSet::new();
                        let mut last: Option<&str> = None;
                        for _ in 0..n {
                            let v = r.text("one_of value is not text")?;
                            if last.is_some_and(|l| l >= v) {
                                return Err(ParseError::NonCanonical);
                            }
                            last = Some(v);
                            set.insert(v.to_owned());
                        }
                        ArgBound::OneOf(set)
                    }
                    (Some(0 | 1), _) => {
                        return Err(ParseError::Malformed(
                            "argument bound has the wrong number of fields",
                        ));
                    }
                    (None, _) => return Err(ParseError::Malformed("empty argument bound")),
                    _ => return Err(ParseError::Malformed("unknown argument bound type")),
                };
                Self::ArgBound(ArgConstraint { action, arg, bound })
            }
            6 => {
                arity(1, 1)?;
                Self::Label(r.text("label is not text")?.to_owned())
            }
            7 => {
                arity(1, 1)?;
                Self::Holder(HolderPublicKey(
                    r.bytes_n::<32>("holder key is not 32 bytes")?,
                ))
            }
            code => return Err(ParseError::UnknownCaveat { block, code }),
        };
        caveat.validate(block)?;
        Ok(caveat)
    }

    /// The key under which a block may declare this caveat at most once.
    pub(crate) fn dedup_key(&self) -> (CaveatKind, String) {
        match self {
            Self::Budget(b) => (
                CaveatKind::Budget,
                format!(
                    "{}\0{}",
                    b.unit,
                    b.tools.as_ref().map_or("", |p| p.as_str())
                ),
            ),
            Self::ArgBound(c) => (CaveatKind::ArgBound, format!("{}\0{}", c.action, c.arg)),
            other => (other.kind(), String::new()),
        }
    }
}

struct SetLen;
impl SetLen {
    fn at(self, block: usize, kind: CaveatKind) -> ParseError {
        ParseError::InvalidCaveat {
            block,
            kind,
            reason: "set must have 1-32 entries",
        }
    }
}

fn check_set_len(n: usize) -> Result<(), SetLen> {
    if (1..=MAX_SET_ENTRIES).contains(&n) {
        Ok(())
    } else {
        Err(SetLen)
    }
}

fn parse_set<'a, N: Namespace>(
    patterns: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeSet<Pattern<N>>, PatternError> {
    patterns.into_iter().map(Pattern::parse).collect()
}

fn set_value<N: Namespace>(s: &BTreeSet<Pattern<N>>) -> Value {
    Value::Array(
        s.iter()
            .map(|p| Value::Text(p.as_str().to_owned()))
            .collect(),
    )
}

fn read_pattern<N: Namespace>(
    r: &mut Reader<'_>,
    block: usize,
    kind: CaveatKind,
) -> Result<Pattern<N>, ParseError> {
    let s = r.text("pattern is not text")?;
    Pattern::parse(s).map_err(|e| ParseError::InvalidCaveat {
        block,
        kind,
        reason: e.reason(),
    })
}

fn read_set<N: Namespace>(
    r: &mut Reader<'_>,
    block: usize,
    kind: CaveatKind,
) -> Result<BTreeSet<Pattern<N>>, ParseError> {
    let n = r.array("pattern set is not an array")?;
    if n > MAX_SET_ENTRIES {
        return Err(ParseError::TooLong);
    }
    let mut set = BTreeSet::new();
    let mut last: Option<&str> = None;
    for _ in 0..n {
        let s = r.text("pattern is not text")?;
        // Strictly ascending: the one canonical order, and no duplicates.
        if last.is_some_and(|l| l >= s) {
            return Err(ParseError::NonCanonical);
        }
        last = Some(s);
        set.insert(Pattern::parse(s).map_err(|e| ParseError::InvalidCaveat {
            block,
            kind,
            reason: e.reason(),
        })?);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(c: &Caveat) {
        let v = c.to_value();
        let bytes = cbor::encode(&v);
        let back = Caveat::read(&mut Reader::new(&bytes), 0).unwrap();
        assert_eq!(&back, c);
        assert_eq!(cbor::encode(&back.to_value()), bytes);
    }

    #[test]
    fn every_kind_round_trips() {
        round_trip(&Caveat::budget(Unit::UsdMicrocents, 5_000_000_000));
        round_trip(&Caveat::Budget(Budget {
            unit: Unit::Custom("gpu_seconds".into()),
            ceiling: u64::MAX,
            tools: Some(ActionPattern::parse("crm.*").unwrap()),
        }));
        round_trip(&Caveat::tools(["crm.*", "refund.issue"]).unwrap());
        round_trip(&Caveat::Depth(3));
        round_trip(&Caveat::Expiry {
            not_after: 1_900_000_000,
            not_before: Some(1_800_000_000),
        });
        round_trip(&Caveat::resources(["customer:4821"]).unwrap());
        round_trip(&Caveat::ArgBound(ArgConstraint {
            action: ActionPattern::parse("refund.issue").unwrap(),
            arg: "amount".into(),
            bound: ArgBound::Range {
                min: Some(-5),
                max: Some(10_000_000_000),
            },
        }));
        round_trip(&Caveat::ArgBound(ArgConstraint {
            action: ActionPattern::any(),
            arg: "currency".into(),
            bound: ArgBound::OneOf(["eur".to_owned(), "usd".to_owned()].into()),
        }));
        round_trip(&Caveat::Label("refund-agent".into()));
        round_trip(&Caveat::Holder(
            crate::holder::HolderKey::from_seed(&[4; 32]).public(),
        ));
    }

    #[test]
    fn unknown_type_fails_closed() {
        let v = Value::Array(vec![cbor::u64_value(99), cbor::u64_value(1)]);
        assert_eq!(
            Caveat::read(&mut Reader::new(&cbor::encode(&v)), 2),
            Err(ParseError::UnknownCaveat { block: 2, code: 99 })
        );
    }

    #[test]
    fn invalid_values_are_rejected() {
        let empty_tools = Value::Array(vec![cbor::u64_value(1), Value::Array(vec![])]);
        assert!(matches!(
            Caveat::read(&mut Reader::new(&cbor::encode(&empty_tools)), 0),
            Err(ParseError::InvalidCaveat { .. })
        ));
        let builtin_as_text = Value::Array(vec![
            cbor::u64_value(0),
            Value::Text("tokens".into()),
            cbor::u64_value(1),
        ]);
        assert!(matches!(
            Caveat::read(&mut Reader::new(&cbor::encode(&builtin_as_text)), 0),
            Err(ParseError::InvalidCaveat { .. })
        ));
        let negative = Value::Array(vec![
            cbor::u64_value(0),
            cbor::u64_value(0),
            Value::Integer((-1).into()),
        ]);
        assert!(matches!(
            Caveat::read(&mut Reader::new(&cbor::encode(&negative)), 0),
            Err(ParseError::Malformed(_))
        ));
        let label = Caveat::Label("evil\u{1b}[2J".into());
        assert!(label.validate(0).is_err());
    }

    #[test]
    fn bounds_nest() {
        let r = |min, max| ArgBound::Range { min, max };
        assert!(r(Some(0), Some(10)).within(&r(None, Some(100))));
        assert!(!r(None, Some(10)).within(&r(Some(0), Some(100))));
        assert!(!r(Some(0), Some(200)).within(&r(Some(0), Some(100))));
        assert!(!r(Some(0), Some(1)).within(&ArgBound::OneOf(["a".to_owned()].into())));
        assert!(r(Some(0), Some(10)).allows(&ArgValue::Int(10)));
        assert!(!r(Some(0), Some(10)).allows(&ArgValue::Int(11)));
        assert!(!r(Some(0), Some(10)).allows(&ArgValue::Str("5".into())));
    }
}
