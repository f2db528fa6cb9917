//! The JSON description of a token (feature `inspect`): the document of
//! `baton inspect --json`, shared with the language bindings so that every
//! front end shows a token in one shape.
//!
//! Its `authority` object is the effective authority in the schema of
//! spec/token.md §10.1, the same object as a test vector's `authority`.
//! Nothing here does I/O: the caller serializes [`TokenJson`] (serde).

use serde::Serialize;

use crate::token::FORMAT_VERSION;
use crate::{ArgBound, Caveat, Token, UnverifiedToken};

/// The description of a token: the document `baton inspect --json` prints
/// and the Python SDK's `inspect()` returns. Field names and shapes are
/// stable; new fields may be added. Serialize it with any serde format.
#[derive(Debug, Clone, Serialize)]
pub struct TokenJson {
    /// False for [`TokenJson::of`] (inspecting checks no signature), true
    /// for [`TokenJson::of_verified`].
    signatures_verified: bool,
    format_version: u64,
    /// Size of the binary form.
    size_bytes: usize,
    /// Length of the text form.
    text_length: usize,
    sealed: bool,
    root_kid: String,
    blocks: Vec<BlockJson>,
    authority: AuthorityJson,
}

#[derive(Debug, Clone, Serialize)]
struct BlockJson {
    index: usize,
    id: String,
    /// Only block 0 names a root key.
    kid: Option<String>,
    caveats: Vec<CaveatJson>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum CaveatJson {
    Budget {
        unit: String,
        ceiling: u64,
        tools: Option<String>,
    },
    Tools {
        patterns: Vec<String>,
    },
    Depth {
        depth: u32,
    },
    Expiry {
        not_after: TimeJson,
        not_before: Option<TimeJson>,
    },
    Resources {
        patterns: Vec<String>,
    },
    ArgBound {
        action: String,
        arg: String,
        bound: BoundJson,
    },
    Label {
        label: String,
    },
    Holder {
        holder: String,
    },
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum BoundJson {
    Range { min: Option<i64>, max: Option<i64> },
    OneOf { values: Vec<String> },
}

#[derive(Debug, Clone, Serialize)]
struct TimeJson {
    unix: u64,
    /// `None` beyond year 9999.
    rfc3339: Option<String>,
}

/// The effective authority, in the schema of spec/token.md §10.1: the same
/// object as a test vector's `authority`, so the two cannot drift apart.
#[derive(Debug, Clone, Serialize)]
struct AuthorityJson {
    kid: String,
    sealed: bool,
    block_ids: Vec<String>,
    /// `None`: no tools caveat, so no action is allowed.
    tools: Option<Vec<String>>,
    /// `None`: no resources caveat, so any resource.
    resources: Option<Vec<String>>,
    /// `None`: unlimited.
    remaining_depth: Option<u32>,
    /// Unix seconds; each block's expiry caveat shows RFC 3339 too.
    not_before: Option<u64>,
    not_after: Option<u64>,
    /// Every declared budget, in fold order.
    budgets: Vec<BudgetJson>,
    /// The tightest ceiling for each (unit, tools filter) (spec §6.2).
    effective_budgets: Vec<EffectiveBudgetJson>,
    arg_bounds: Vec<ArgBoundJson>,
    labels: Vec<LabelJson>,
    /// The holder key of a bound token (spec §12); absent when unbound.
    #[serde(skip_serializing_if = "Option::is_none")]
    holder: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct BudgetJson {
    block: usize,
    unit: String,
    ceiling: u64,
    tools: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct EffectiveBudgetJson {
    unit: String,
    tools: Option<String>,
    ceiling: u64,
}

#[derive(Debug, Clone, Serialize)]
struct ArgBoundJson {
    block: usize,
    action: String,
    arg: String,
    bound: BoundJson,
}

#[derive(Debug, Clone, Serialize)]
struct LabelJson {
    block: usize,
    label: String,
}

fn time_json(unix: u64) -> TimeJson {
    TimeJson {
        unix,
        rfc3339: rfc3339(unix),
    }
}

fn strings<T: ToString>(items: impl IntoIterator<Item = T>) -> Vec<String> {
    items.into_iter().map(|i| i.to_string()).collect()
}

fn bound_json(b: &ArgBound) -> BoundJson {
    match b {
        ArgBound::Range { min, max } => BoundJson::Range {
            min: *min,
            max: *max,
        },
        ArgBound::OneOf(v) => BoundJson::OneOf {
            values: v.iter().cloned().collect(),
        },
    }
}

fn caveat_json(c: &Caveat) -> CaveatJson {
    match c {
        Caveat::Budget(b) => CaveatJson::Budget {
            unit: b.unit.to_string(),
            ceiling: b.ceiling,
            tools: b.tools.as_ref().map(ToString::to_string),
        },
        Caveat::Tools(s) => CaveatJson::Tools {
            patterns: strings(s),
        },
        Caveat::Depth(d) => CaveatJson::Depth { depth: *d },
        Caveat::Expiry {
            not_after,
            not_before,
        } => CaveatJson::Expiry {
            not_after: time_json(*not_after),
            not_before: not_before.map(time_json),
        },
        Caveat::Resources(s) => CaveatJson::Resources {
            patterns: strings(s),
        },
        Caveat::ArgBound(c) => CaveatJson::ArgBound {
            action: c.action.to_string(),
            arg: c.arg.clone(),
            bound: bound_json(&c.bound),
        },
        Caveat::Label(l) => CaveatJson::Label { label: l.clone() },
        Caveat::Holder(k) => CaveatJson::Holder {
            holder: k.to_text(),
        },
    }
}

impl TokenJson {
    /// The description of `token`, whose signatures are not checked
    /// (`signatures_verified` is false).
    pub fn of(token: &UnverifiedToken) -> Self {
        let blocks = token
            .block_ids()
            .iter()
            .zip(token.block_caveats())
            .enumerate()
            .map(|(index, (id, caveats))| BlockJson {
                index,
                id: id.to_string(),
                kid: (index == 0).then(|| token.root_kid().to_string()),
                caveats: caveats.iter().map(caveat_json).collect(),
            })
            .collect();
        let a = token.authority();
        Self {
            signatures_verified: false,
            format_version: FORMAT_VERSION,
            size_bytes: token.to_bytes().len(),
            text_length: token.to_text().len(),
            sealed: token.is_sealed(),
            root_kid: token.root_kid().to_string(),
            blocks,
            authority: AuthorityJson {
                kid: token.root_kid().to_string(),
                sealed: token.is_sealed(),
                block_ids: strings(token.block_ids()),
                tools: a.tools().map(strings),
                resources: a.resources().map(strings),
                remaining_depth: a.remaining_depth(),
                not_before: a.not_before(),
                not_after: a.not_after(),
                budgets: a
                    .budgets()
                    .iter()
                    .map(|(block, b)| BudgetJson {
                        block: *block,
                        unit: b.unit.to_string(),
                        ceiling: b.ceiling,
                        tools: b.tools.as_ref().map(ToString::to_string),
                    })
                    .collect(),
                effective_budgets: a
                    .effective_budgets()
                    .into_iter()
                    .map(|(unit, tools, ceiling)| EffectiveBudgetJson {
                        unit: unit.to_string(),
                        tools: tools.map(|t| t.to_string()),
                        ceiling,
                    })
                    .collect(),
                arg_bounds: a
                    .arg_bounds()
                    .iter()
                    .map(|(block, c)| ArgBoundJson {
                        block: *block,
                        action: c.action.to_string(),
                        arg: c.arg.clone(),
                        bound: bound_json(&c.bound),
                    })
                    .collect(),
                labels: a
                    .labels()
                    .iter()
                    .map(|(block, l)| LabelJson {
                        block: *block,
                        label: l.clone(),
                    })
                    .collect(),
                holder: a.holder().map(|h| h.to_text()),
            },
        }
    }

    /// The description of a token a [`crate::Verifier`] accepted
    /// (`signatures_verified` is true).
    pub fn of_verified(token: &Token) -> Self {
        Self {
            signatures_verified: true,
            ..Self::of(&token.to_unverified())
        }
    }

    /// Whether the signatures were checked.
    pub fn signatures_verified(&self) -> bool {
        self.signatures_verified
    }
}

/// The last second with a four-digit year (9999-12-31T23:59:59Z).
pub const MAX_RFC3339: u64 = 253_402_300_799;

/// `secs` as RFC 3339 UTC in whole seconds (`2030-01-01T00:00:00Z`), or
/// `None` beyond year 9999 (token times are any u64; RFC 3339 years have
/// four digits).
pub fn rfc3339(secs: u64) -> Option<String> {
    if secs > MAX_RFC3339 {
        return None;
    }
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    Some(format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

/// The proleptic Gregorian date of `days` after 1970-01-01 (H. Hinnant's
/// `civil_from_days`, for non-negative days; no overflow below year 10000).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_every_u64() {
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(
            rfc3339(1_893_456_000).as_deref(),
            Some("2030-01-01T00:00:00Z")
        );
        assert_eq!(
            rfc3339(1_800_003_600).as_deref(),
            Some("2027-01-15T09:00:00Z")
        );
        // A leap day and the day after.
        assert_eq!(
            rfc3339(951_782_400).as_deref(),
            Some("2000-02-29T00:00:00Z")
        );
        assert_eq!(
            rfc3339(951_868_799).as_deref(),
            Some("2000-02-29T23:59:59Z")
        );
        assert_eq!(
            rfc3339(MAX_RFC3339).as_deref(),
            Some("9999-12-31T23:59:59Z")
        );
        assert_eq!(rfc3339(MAX_RFC3339 + 1), None);
        assert_eq!(rfc3339(u64::MAX), None);
    }

    #[test]
    fn describes_a_token() {
        let root = crate::RootKey::from_seed(&[1; 32]);
        let token = Token::mint(
            &root,
            vec![
                Caveat::budget(crate::Unit::Calls, 5),
                Caveat::tools(["crm.*"]).unwrap(),
                Caveat::Expiry {
                    not_after: 1_893_456_000,
                    not_before: None,
                },
            ],
        )
        .unwrap();
        let v = serde_json::to_value(TokenJson::of(&token.to_unverified())).unwrap();
        assert_eq!(v["signatures_verified"], false);
        let caveats = v["blocks"][0]["caveats"].as_array().unwrap();
        let of_type = |t: &str| caveats.iter().find(|c| c["type"] == t).unwrap();
        assert_eq!(of_type("budget")["ceiling"], 5);
        assert_eq!(of_type("budget")["unit"], "calls");
        assert_eq!(
            of_type("expiry")["not_after"]["rfc3339"],
            "2030-01-01T00:00:00Z"
        );
        assert_eq!(v["authority"]["tools"][0], "crm.*");
        assert!(v["authority"].get("holder").is_none());
        let v = serde_json::to_value(TokenJson::of_verified(&token)).unwrap();
        assert_eq!(v["signatures_verified"], true);
    }
}
