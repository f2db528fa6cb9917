//! `baton inspect`: show a token's blocks and effective authority.
//!
//! Works on an [`UnverifiedToken`]: the structure, canonical encoding,
//! limits and monotonicity are checked, the signatures are NOT. Both
//! outputs say so, since a forged token inspects just as well as a real one.
//!
//! Every string shown comes from a parsed caveat, and the library refuses
//! control characters in labels and one-of values, so a token cannot
//! smuggle terminal escapes into this output.

use std::fmt::Write as _;

use baton::authority::Authority;
use baton::token::FORMAT_VERSION;
use baton::{ArgBound, Caveat, Unit, UnverifiedToken};
use serde::Serialize;

use super::{CliError, Outcome, io, time};

/// Arguments of `baton inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Print a JSON document instead of text.
    #[arg(long)]
    json: bool,
}

/// Reads the token on stdin and describes it.
pub fn run(args: InspectArgs) -> Result<Outcome, CliError> {
    let token = io::read_token()?;
    if args.json {
        io::emit_json(&TokenJson::of(&token))?;
    } else {
        io::emit(&describe(&token))?;
    }
    Ok(Outcome::Done)
}

/// The `--json` document. Field names and shapes are stable; new fields may
/// be added.
#[derive(Serialize)]
struct TokenJson {
    /// Always false: inspect never checks signatures.
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

#[derive(Serialize)]
struct BlockJson {
    index: usize,
    id: String,
    /// Only block 0 names a root key.
    kid: Option<String>,
    caveats: Vec<CaveatJson>,
}

#[derive(Serialize)]
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
    /// A caveat kind newer than this CLI (the library would have refused
    /// one it cannot read, so this is only reachable after a library upgrade).
    Unknown,
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum BoundJson {
    Range {
        min: Option<i64>,
        max: Option<i64>,
    },
    OneOf {
        values: Vec<String>,
    },
    /// A bound of a newer library than this CLI knows how to show.
    Other,
}

#[derive(Serialize)]
struct TimeJson {
    unix: u64,
    /// `None` beyond year 9999.
    rfc3339: Option<String>,
}

/// The effective authority, in the schema of spec/token.md §10.1: the same
/// object as a test vector's `authority`, so the two cannot drift apart.
#[derive(Serialize)]
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

#[derive(Serialize)]
struct BudgetJson {
    block: usize,
    unit: String,
    ceiling: u64,
    tools: Option<String>,
}

#[derive(Serialize)]
struct EffectiveBudgetJson {
    unit: String,
    tools: Option<String>,
    ceiling: u64,
}

#[derive(Serialize)]
struct ArgBoundJson {
    block: usize,
    action: String,
    arg: String,
    bound: BoundJson,
}

#[derive(Serialize)]
struct LabelJson {
    block: usize,
    label: String,
}

fn time_json(unix: u64) -> TimeJson {
    TimeJson {
        unix,
        rfc3339: time::rfc3339(unix),
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
        _ => BoundJson::Other,
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
        _ => CaveatJson::Unknown,
    }
}

impl TokenJson {
    fn of(token: &UnverifiedToken) -> Self {
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
}

/// usd_microcents as dollars, exactly: `$50.00`, `$0.00000001`.
fn dollars(microcents: u64) -> String {
    let frac = format!("{:08}", microcents % 100_000_000);
    let frac = frac.trim_end_matches('0');
    format!("${}.{frac:0<2}", microcents / 100_000_000)
}

fn amount(unit: &Unit, ceiling: u64) -> String {
    match unit {
        Unit::UsdMicrocents => format!("{ceiling} ({})", dollars(ceiling)),
        _ => ceiling.to_string(),
    }
}

fn join<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    strings(items).join(", ")
}

/// One caveat in human form.
fn caveat_line(c: &Caveat) -> String {
    match c {
        Caveat::Budget(b) => {
            let scope = b
                .tools
                .as_ref()
                .map_or_else(|| "all actions".to_owned(), |t| format!("actions {t}"));
            format!(
                "budget {} <= {} for {scope}",
                b.unit,
                amount(&b.unit, b.ceiling)
            )
        }
        Caveat::Tools(s) => format!("tools {}", join(s)),
        Caveat::Depth(d) => format!("depth {d} (blocks that may follow this one)"),
        Caveat::Expiry {
            not_after,
            not_before,
        } => {
            let mut line = format!("expires {}", time::human(*not_after));
            if let Some(nb) = not_before {
                let _ = write!(line, ", not before {}", time::human(*nb));
            }
            line
        }
        Caveat::Resources(s) => format!("resources {}", join(s)),
        Caveat::ArgBound(c) => format!("arg {}:{} {}", c.action, c.arg, c.bound),
        Caveat::Label(l) => format!("label {l:?}"),
        Caveat::Holder(k) => format!("holder {k} (bound: each use needs this key's proof)"),
        _ => "unknown caveat kind (upgrade baton)".to_owned(),
    }
}

fn authority_lines(a: &Authority, out: &mut String) {
    let tools = a
        .tools()
        .map_or_else(|| "none (no action is allowed)".to_owned(), join);
    let resources = a.resources().map_or_else(|| "any".to_owned(), join);
    let depth = a
        .remaining_depth()
        .map_or_else(|| "unlimited".to_owned(), |d| d.to_string());
    let not_after = a
        .not_after()
        .map_or_else(|| "never".to_owned(), time::human);
    let not_before = a
        .not_before()
        .map_or_else(|| "none".to_owned(), time::human);
    let _ = writeln!(out, "effective authority (every block applies):");
    let _ = writeln!(out, "  tools:           {tools}");
    let _ = writeln!(out, "  resources:       {resources}");
    let _ = writeln!(out, "  remaining depth: {depth}");
    let _ = writeln!(out, "  expires:         {not_after}");
    let _ = writeln!(out, "  not before:      {not_before}");
    if let Some(h) = a.holder() {
        let _ = writeln!(out, "  holder:          {h} (bound: use needs its proof)");
    }
    let budgets = a.effective_budgets();
    if budgets.is_empty() {
        let _ = writeln!(out, "  budgets:         none");
    } else {
        let _ = writeln!(
            out,
            "  budgets (tightest ceiling per unit and tools filter):"
        );
        for (unit, tools, ceiling) in budgets {
            let scope = tools.map_or_else(|| "all actions".to_owned(), |t| format!("actions {t}"));
            let _ = writeln!(out, "    {unit} for {scope}: {}", amount(&unit, ceiling));
        }
    }
    if a.arg_bounds().is_empty() {
        let _ = writeln!(out, "  arg bounds:      none");
    } else {
        let _ = writeln!(out, "  arg bounds (all apply):");
        for (block, c) in a.arg_bounds() {
            let _ = writeln!(
                out,
                "    {}:{} {} (block {block})",
                c.action, c.arg, c.bound
            );
        }
    }
    if a.labels().is_empty() {
        let _ = writeln!(out, "  labels:          none");
    } else {
        let _ = writeln!(out, "  labels:");
        for (block, l) in a.labels() {
            let _ = writeln!(out, "    block {block}: {l:?}");
        }
    }
}

/// The text report.
fn describe(token: &UnverifiedToken) -> String {
    // Writing to a String cannot fail; the results are ignored for that reason.
    let mut out = String::new();
    let _ = writeln!(
        out,
        "baton token, format v{FORMAT_VERSION}: signatures NOT verified \
         (inspect needs no key and checks structure only; use `baton verify`)"
    );
    let _ = writeln!(
        out,
        "size: {} bytes ({} characters of text)",
        token.to_bytes().len(),
        token.to_text().len()
    );
    let _ = writeln!(
        out,
        "sealed: {}",
        if token.is_sealed() {
            "yes (no block can be appended)"
        } else {
            "no"
        }
    );
    let _ = writeln!(out, "blocks: {}", token.len());
    for (index, (id, caveats)) in token
        .block_ids()
        .iter()
        .zip(token.block_caveats())
        .enumerate()
    {
        let _ = writeln!(out, "\nblock {index}  id {id}");
        if index == 0 {
            let _ = writeln!(out, "  root kid {}", token.root_kid());
        }
        if caveats.is_empty() {
            let _ = writeln!(out, "  (no caveats)");
        }
        for c in caveats {
            let _ = writeln!(out, "  {}", caveat_line(c));
        }
    }
    out.push('\n');
    authority_lines(token.authority(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::dollars;

    #[test]
    fn dollars_are_exact() {
        assert_eq!(dollars(5_000_000_000), "$50.00");
        assert_eq!(dollars(1), "$0.00000001");
        assert_eq!(dollars(150_000_000), "$1.50");
        assert_eq!(dollars(0), "$0.00");
        assert_eq!(dollars(u64::MAX), "$184467440737.09551615");
    }
}
