//! The caveat flags shared by `mint` and `attenuate`, and the parsers of
//! their values.
//!
//! Each flag value is parsed on its own by clap (so a bad value is a usage
//! error naming the flag, exit status 2); [`CaveatFlags::to_caveats`] then
//! combines them into one block's caveats. Whether the block narrows its
//! parent is left to the library, which names the caveat that widens.

use std::collections::BTreeMap;
use std::time::Duration;

use baton::authority::Authority;
use baton::caveat::valid_arg_name;
use baton::pattern::{ActionPattern, PatternError, ResourcePattern};
use baton::{ArgBound, ArgConstraint, Budget, Caveat, Unit};

use super::{CliError, time};

/// usd_microcents in one US dollar.
const MICROCENTS_PER_USD: u64 = 100_000_000;
/// Decimal places of a dollar amount that usd_microcents can hold.
const USD_DECIMALS: usize = 8;

/// Caveats for one block; every flag is optional and an empty block is valid
/// (it still uses up one level of delegation depth).
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Caveats")]
pub struct CaveatFlags {
    /// Spending ceiling, UNIT=AMOUNT in the unit's minor units
    /// (usd_microcents, tokens, risk_points, calls or a custom name).
    /// `usd=50.00` is dollars, converted exactly to usd_microcents. A suffix
    /// @TOOLS limits the budget to actions matching that pattern. Repeatable.
    #[arg(long = "budget", value_name = "UNIT=AMOUNT[@TOOLS]", value_parser = parse_budget)]
    pub budgets: Vec<Budget>,

    /// Allowed actions (`crm.*`, `refund.issue`, `*`). Comma separated or
    /// repeated; all go into one tools caveat.
    #[arg(long, value_name = "PATTERN,...", value_delimiter = ',', value_parser = parse_tools)]
    pub tools: Vec<ActionPattern>,

    /// How many more blocks may follow this one.
    #[arg(long, value_name = "N")]
    pub depth: Option<u32>,

    /// Valid for this long from now (1h, 30m, 2days). In `attenuate`, never
    /// beyond the parent's expiry: the shorter of the two is used.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "expires")]
    pub ttl: Option<Duration>,

    /// Last valid second: unix seconds or RFC 3339 UTC (2030-01-01T00:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = time::parse_time)]
    pub expires: Option<u64>,

    /// First valid second: unix seconds or RFC 3339 UTC. Without --ttl or
    /// --expires, `attenuate` keeps the parent's expiry.
    #[arg(long, value_name = "TIME", value_parser = time::parse_time)]
    pub not_before: Option<u64>,

    /// Allowed resources (`customer:4821`, `doc:*`). Comma separated or
    /// repeated; all go into one resources caveat.
    #[arg(long = "resource", value_name = "PATTERN,...", value_delimiter = ',', value_parser = parse_resource)]
    pub resources: Vec<ResourcePattern>,

    /// Argument bound: `ACTION:NAME<=N`, `ACTION:NAME>=N` (both may be given
    /// and make one range) or `ACTION:NAME=a|b|c` (one of these strings).
    /// ACTION is an action pattern. N is an i64; outside that range is a
    /// usage error (exit 2). Repeatable.
    #[arg(long = "arg", value_name = "ACTION:NAME<=N", value_parser = parse_arg_bound)]
    pub arg_bounds: Vec<ArgBoundFlag>,

    /// The delegate's name, for display.
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
}

/// One `--arg` bound flag, before flags on the same ACTION:NAME are merged.
#[derive(Debug, Clone)]
pub struct ArgBoundFlag {
    action: ActionPattern,
    name: String,
    op: BoundOp,
}

#[derive(Debug, Clone)]
enum BoundOp {
    AtMost(i64),
    AtLeast(i64),
    OneOf(Vec<String>),
}

/// A range or one-of being assembled from the flags on one ACTION:NAME.
#[derive(Default)]
struct MergedBound {
    min: Option<i64>,
    max: Option<i64>,
    one_of: Option<Vec<String>>,
}

impl CaveatFlags {
    /// The caveats of the new block. `parent` is the authority of the token
    /// being attenuated (`None` when minting); `now` is read only if
    /// `--ttl` is given.
    pub fn to_caveats(
        &self,
        parent: Option<&Authority>,
        now: impl FnOnce() -> Result<u64, CliError>,
    ) -> Result<Vec<Caveat>, CliError> {
        let mut caveats: Vec<Caveat> = self.budgets.iter().cloned().map(Caveat::Budget).collect();
        if !self.tools.is_empty() {
            caveats.push(Caveat::Tools(self.tools.iter().cloned().collect()));
        }
        if let Some(d) = self.depth {
            caveats.push(Caveat::Depth(d));
        }
        if let Some(expiry) = self.expiry(parent, now)? {
            caveats.push(expiry);
        }
        if !self.resources.is_empty() {
            caveats.push(Caveat::Resources(self.resources.iter().cloned().collect()));
        }
        caveats.extend(merge_arg_bounds(&self.arg_bounds)?);
        if let Some(l) = &self.label {
            caveats.push(Caveat::Label(l.clone()));
        }
        Ok(caveats)
    }

    fn expiry(
        &self,
        parent: Option<&Authority>,
        now: impl FnOnce() -> Result<u64, CliError>,
    ) -> Result<Option<Caveat>, CliError> {
        let parent_end = parent.and_then(Authority::not_after);
        let not_after = match (self.ttl, self.expires) {
            (Some(ttl), _) => {
                let end = now()?
                    .checked_add(ttl.as_secs())
                    .ok_or_else(|| CliError::CaveatFlags("--ttl is too long".to_owned()))?;
                // A ttl says "at most this long"; past the parent's expiry
                // it would only make attenuation fail as widening.
                Some(parent_end.map_or(end, |p| end.min(p)))
            }
            (None, Some(t)) => Some(t),
            (None, None) if self.not_before.is_some() => Some(parent_end.ok_or_else(|| {
                CliError::CaveatFlags(
                    "--not-before needs --ttl or --expires: an expiry caveat always has an end"
                        .to_owned(),
                )
            })?),
            (None, None) => None,
        };
        Ok(not_after.map(|not_after| Caveat::Expiry {
            not_after,
            not_before: self.not_before,
        }))
    }
}

/// Merges `--arg` flags by ACTION:NAME: `<=` and `>=` make one range, `=`
/// stands alone. A repeated operator or a mix of range and one-of is an
/// error rather than a silent choice.
fn merge_arg_bounds(flags: &[ArgBoundFlag]) -> Result<Vec<Caveat>, CliError> {
    let mut merged: BTreeMap<(ActionPattern, String), MergedBound> = BTreeMap::new();
    for f in flags {
        let key = (f.action.clone(), f.name.clone());
        let m = merged.entry(key).or_default();
        let twice = || {
            CliError::CaveatFlags(format!(
                "--arg {}:{}: the same bound is given twice",
                f.action, f.name
            ))
        };
        match &f.op {
            BoundOp::AtMost(n) => {
                if m.max.replace(*n).is_some() {
                    return Err(twice());
                }
            }
            BoundOp::AtLeast(n) => {
                if m.min.replace(*n).is_some() {
                    return Err(twice());
                }
            }
            BoundOp::OneOf(v) => {
                if m.one_of.replace(v.clone()).is_some() {
                    return Err(twice());
                }
            }
        }
        if m.one_of.is_some() && (m.min.is_some() || m.max.is_some()) {
            return Err(CliError::CaveatFlags(format!(
                "--arg {}:{}: a bound is either a range (<=, >=) or a list (=), not both",
                f.action, f.name
            )));
        }
    }
    Ok(merged
        .into_iter()
        .map(|((action, arg), m)| {
            let bound = match m.one_of {
                Some(values) => ArgBound::OneOf(values.into_iter().collect()),
                None => ArgBound::Range {
                    min: m.min,
                    max: m.max,
                },
            };
            Caveat::ArgBound(ArgConstraint::new(action, arg, bound))
        })
        .collect())
}

/// Why a pattern is bad, in words a user can act on.
fn pattern_reason(e: PatternError) -> &'static str {
    match e {
        PatternError::Length => "empty or longer than 128 bytes or 16 segments",
        PatternError::Segment => "a segment is empty or has a character outside the grammar",
        PatternError::Wildcard => "`*` may only be the whole pattern or its last segment",
        _ => "not a valid pattern",
    }
}

/// Parses an action pattern (`--tools`, and the filters of `--budget` and `--arg`).
pub fn parse_tools(s: &str) -> Result<ActionPattern, String> {
    ActionPattern::parse(s).map_err(|e| {
        format!(
            "{}; actions are lower-case a-z 0-9 _ - segments joined by `.`, like crm.* or refund.issue",
            pattern_reason(e)
        )
    })
}

/// Parses a resource pattern (`--resource`).
pub fn parse_resource(s: &str) -> Result<ResourcePattern, String> {
    ResourcePattern::parse(s).map_err(|e| {
        format!(
            "{}; resources are segments of A-Z a-z 0-9 _ - . @ + / = joined by `:`, like customer:4821",
            pattern_reason(e)
        )
    })
}

/// Parses `UNIT=AMOUNT[@TOOLS]`, with `usd=DOLLARS` as a shorthand.
pub fn parse_budget(s: &str) -> Result<Budget, String> {
    let (unit, rest) = s
        .split_once('=')
        .ok_or("expected UNIT=AMOUNT, like usd_microcents=5000000000 or usd=50.00")?;
    // Action patterns never contain `@`, so the first one starts the filter.
    let (amount, tools) = match rest.split_once('@') {
        Some((a, t)) => (a, Some(parse_tools(t)?)),
        None => (rest, None),
    };
    let (unit, ceiling) = if unit == "usd" {
        (Unit::UsdMicrocents, parse_usd(amount)?)
    } else {
        let unit = Unit::parse(unit).map_err(|e| format!("unit {unit:?}: {e}"))?;
        (unit, parse_u64(amount)?)
    };
    Ok(Budget::new(unit, ceiling, tools))
}

/// A non-negative integer amount: ASCII digits only (no sign, no separators).
fn parse_u64(s: &str) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("amount {s:?} is not a whole number of minor units"));
    }
    s.parse()
        .map_err(|_| format!("amount {s:?} is larger than {}", u64::MAX))
}

/// Dollars (`50`, `50.5`, `0.00000001`) to usd_microcents, exactly: decimal
/// string arithmetic, no floats, overflow checked.
pub fn parse_usd(s: &str) -> Result<u64, String> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) || (s.contains('.') && frac.is_empty()) {
        return Err(format!("{s:?} is not a dollar amount like 50 or 12.34"));
    }
    if frac.len() > USD_DECIMALS {
        return Err(format!(
            "{s:?} has more than {USD_DECIMALS} decimal places (1 usd_microcent is $0.00000001)"
        ));
    }
    let too_large = || format!("{s:?} dollars do not fit in usd_microcents");
    let whole: u64 = whole.parse().map_err(|_| too_large())?;
    // Right-pad the fraction to exactly 8 digits: "5" is 50_000_000.
    let frac: u64 = format!("{frac:0<USD_DECIMALS$}")
        .parse()
        .map_err(|_| too_large())?;
    whole
        .checked_mul(MICROCENTS_PER_USD)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(too_large)
}

/// An integer literal: an optional `-` and ASCII digits. `None` if `s` is
/// not one; an error if it is one but does not fit in an i64.
pub fn parse_int_literal(s: &str) -> Option<Result<i64, String>> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        s.parse::<i64>()
            .map_err(|_| format!("integer {s} does not fit in 64 bits")),
    )
}

/// Parses `ACTION:NAME<=N`, `ACTION:NAME>=N` or `ACTION:NAME=a|b|c`.
pub fn parse_arg_bound(s: &str) -> Result<ArgBoundFlag, String> {
    const USAGE: &str = "expected ACTION:NAME<=N, ACTION:NAME>=N or ACTION:NAME=a|b|c";
    // Action patterns never contain `:`, so the first one ends the action.
    let (action, rest) = s.split_once(':').ok_or(USAGE)?;
    let action = parse_tools(action)?;
    let at = rest.find(['<', '>', '=']).ok_or(USAGE)?;
    let (name, op) = rest.split_at(at);
    if !valid_arg_name(name) {
        return Err(format!(
            "argument name {name:?} must be 1-64 bytes of a-z 0-9 _"
        ));
    }
    let int = |v: &str| {
        parse_int_literal(v).unwrap_or_else(|| Err(format!("bound {v:?} is not an integer")))
    };
    let op = if let Some(v) = op.strip_prefix("<=") {
        BoundOp::AtMost(int(v)?)
    } else if let Some(v) = op.strip_prefix(">=") {
        BoundOp::AtLeast(int(v)?)
    } else if let Some(v) = op.strip_prefix('=') {
        let values: Vec<String> = v.split('|').map(str::to_owned).collect();
        if values.iter().any(String::is_empty) {
            return Err("a one-of list has an empty value".to_owned());
        }
        BoundOp::OneOf(values)
    } else {
        return Err(format!("{USAGE}; strict < and > are not supported"));
    };
    Ok(ArgBoundFlag {
        action,
        name: name.to_owned(),
        op,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_convert_exactly() {
        assert_eq!(parse_usd("50"), Ok(5_000_000_000));
        assert_eq!(parse_usd("50.00"), Ok(5_000_000_000));
        assert_eq!(parse_usd("0.5"), Ok(50_000_000));
        assert_eq!(parse_usd("0.00000001"), Ok(1));
        assert_eq!(parse_usd("184467440737.09551615"), Ok(u64::MAX));
        for bad in [
            "",
            ".5",
            "5.",
            "-1",
            "+1",
            "1e3",
            "0.000000001",
            "1,5",
            "184467440737.09551616",
            "99999999999999999999",
        ] {
            assert!(parse_usd(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn budgets() {
        let b = parse_budget("usd=5@crm.*").unwrap();
        assert_eq!(b.unit, Unit::UsdMicrocents);
        assert_eq!(b.ceiling, 500_000_000);
        assert_eq!(b.tools.as_ref().map(|p| p.as_str()), Some("crm.*"));
        let b = parse_budget("gpu_seconds=10").unwrap();
        assert_eq!(b.unit, Unit::Custom("gpu_seconds".into()));
        assert!(parse_budget("calls=-1").is_err());
        assert!(parse_budget("calls").is_err());
        assert!(parse_budget("Calls=1").is_err());
        assert!(parse_budget("calls=1@").is_err());
    }

    #[test]
    fn arg_bounds_merge() {
        let flags: Vec<ArgBoundFlag> = ["refund.*:amount<=10", "refund.*:amount>=-3"]
            .into_iter()
            .map(|s| parse_arg_bound(s).unwrap())
            .collect();
        let caveats = merge_arg_bounds(&flags).unwrap();
        assert_eq!(caveats.len(), 1);
        let Caveat::ArgBound(c) = &caveats[0] else {
            panic!("not an arg bound: {caveats:?}");
        };
        assert_eq!(
            c.bound,
            ArgBound::Range {
                min: Some(-3),
                max: Some(10)
            }
        );
        let twice: Vec<ArgBoundFlag> = ["a:x<=1", "a:x<=2"]
            .into_iter()
            .map(|s| parse_arg_bound(s).unwrap())
            .collect();
        assert!(merge_arg_bounds(&twice).is_err());
        let mixed: Vec<ArgBoundFlag> = ["a:x<=1", "a:x=q"]
            .into_iter()
            .map(|s| parse_arg_bound(s).unwrap())
            .collect();
        assert!(merge_arg_bounds(&mixed).is_err());
        for bad in [
            "amount<=1",
            "a:amount<1",
            "a:Amount<=1",
            "a:x<=1.5",
            "a:x=",
            "A:x=1",
        ] {
            assert!(parse_arg_bound(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn int_literals() {
        assert_eq!(parse_int_literal("-5"), Some(Ok(-5)));
        assert_eq!(parse_int_literal("abc"), None);
        assert_eq!(parse_int_literal("-"), None);
        assert_eq!(parse_int_literal("1.5"), None);
        assert!(matches!(
            parse_int_literal("99999999999999999999"),
            Some(Err(_))
        ));
    }
}
