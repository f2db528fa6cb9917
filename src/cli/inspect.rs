//! `baton inspect`: show a token's blocks and effective authority.
//!
//! Works on an [`UnverifiedToken`]: the structure, canonical encoding,
//! limits and monotonicity are checked, the signatures are NOT. Both
//! outputs say so, since a forged token inspects just as well as a real one.
//!
//! The `--json` document is [`baton::inspect::TokenJson`], shared with the
//! language bindings.
//!
//! Every string shown comes from a parsed caveat, and the library refuses
//! control characters in labels and one-of values, so a token cannot
//! smuggle terminal escapes into this output.

use std::fmt::Write as _;

use baton::authority::Authority;
use baton::inspect::TokenJson;
use baton::token::FORMAT_VERSION;
use baton::{Caveat, Unit, UnverifiedToken};

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
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
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
