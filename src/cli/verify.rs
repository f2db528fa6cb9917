//! `baton verify`: check a token's signatures against trusted public keys,
//! then decide one request with the library's [`Verifier`].
//!
//! An invalid token and a denied request are both decisions, printed on
//! stdout as `deny <reason_code>: <message>` with exit status 1. Only
//! problems on this side (unreadable files, bad flags) are errors.

use std::path::PathBuf;

use baton::verifier::AuthorizeError;
use baton::{
    ArgValue, Audience, Authorization, BlockId, PublicKey, Request, Verifier, VerifyError,
};
use serde::Serialize;

use super::flags::parse_int_literal;
use super::{CliError, Outcome, io, time};

/// Arguments of `baton verify`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("trusted").required(true).multiple(true).args(["keys", "keyset"])))]
pub struct VerifyArgs {
    /// A trusted root public key (baton_pk1_...). Repeatable; may be
    /// combined with --keyset.
    #[arg(long = "key", value_name = "PUBLIC_KEY", value_parser = parse_public_key)]
    keys: Vec<PublicKey>,
    /// A file of trusted public keys: one per line; blank lines and lines
    /// starting with # are ignored (`baton keygen` output is one).
    #[arg(long, value_name = "FILE")]
    keyset: Option<PathBuf>,
    #[command(flatten)]
    request: RequestFlags,
    /// The time of the request: unix seconds or RFC 3339 UTC. Default: now.
    #[arg(long, value_name = "TIME", value_parser = time::parse_time)]
    at: Option<u64>,
    /// The holder's proof of possession for a bound token: the
    /// `Baton-Proof` value `baton prove` printed.
    #[arg(long, value_name = "PROOF")]
    proof: Option<String>,
    /// This verifier's identity, which proofs must name (needed to accept
    /// a bound token).
    #[arg(long, value_name = "AUDIENCE", value_parser = parse_audience)]
    audience: Option<Audience>,
    /// Refuse bearer tokens: only holder-bound tokens are accepted.
    #[arg(long)]
    require_holder: bool,
    /// Clock skew allowance in seconds, applied to expiry and not-before
    /// [default: the library's, 30].
    #[arg(long, value_name = "SECONDS")]
    skew: Option<u64>,
    /// A revoked block id (64 hex characters, as `baton inspect` shows).
    /// Revoking a block revokes every token below it. Repeatable.
    #[arg(long = "revoked", value_name = "BLOCK_ID", value_parser = parse_block_id)]
    revoked: Vec<BlockId>,
    /// Print {"decision", "reason", "message", "budgets"} as JSON.
    #[arg(long)]
    json: bool,
}

/// The request a token is checked against (`verify`) or a proof is made
/// for (`prove`): the same flags build the same request hash on both sides.
#[derive(Debug, clap::Args)]
pub struct RequestFlags {
    /// The action requested, such as refund.issue.
    #[arg(long, value_name = "NAME")]
    action: String,
    /// The resource the action touches, such as customer:4821.
    #[arg(long, value_name = "NAME")]
    resource: Option<String>,
    /// A request argument. VALUE is an integer if it is an integer literal
    /// (optional leading -), otherwise a string. Integers are i64: a literal
    /// outside -9223372036854775808..=9223372036854775807 is a usage error
    /// (exit 2), never a string. Repeatable.
    #[arg(long = "arg", value_name = "NAME=VALUE", value_parser = parse_request_arg)]
    args: Vec<RequestArg>,
    /// The operation executed, as a bound token's proof names it
    /// [default: call].
    #[arg(long, value_name = "TEXT")]
    operation: Option<String>,
    /// A file holding the raw request body, which a bound token's proof
    /// covers [default: empty].
    #[arg(long, value_name = "FILE")]
    body: Option<PathBuf>,
}

/// The largest request body `--body` reads.
const MAX_BODY_FILE: u64 = 16 * 1024 * 1024;

impl RequestFlags {
    /// Reads the body file, if any (a local error if it cannot be read).
    pub fn read_body(&self) -> Result<Vec<u8>, CliError> {
        match &self.body {
            Some(path) => io::read_file_capped(path, MAX_BODY_FILE),
            None => Ok(Vec::new()),
        }
    }

    /// The request at time `at` with `body`; a malformed name is a denial.
    pub fn to_request(&self, at: u64, body: &[u8]) -> Result<Request, baton::Denied> {
        let mut request = Request::new(&self.action, at)?;
        if let Some(r) = &self.resource {
            request = request.resource(r)?;
        }
        for a in &self.args {
            request = request.arg(&a.name, a.value.clone())?;
        }
        if let Some(op) = &self.operation {
            request = request.operation(op)?;
        }
        Ok(request.body(body))
    }
}

/// Parses an `--audience` flag.
pub fn parse_audience(s: &str) -> Result<Audience, String> {
    Audience::new(s).map_err(|e| format!("{}: {e}", e.code()))
}

/// One `--arg NAME=VALUE` of the request.
#[derive(Debug, Clone)]
pub struct RequestArg {
    name: String,
    value: ArgValue,
}

fn parse_public_key(s: &str) -> Result<PublicKey, String> {
    PublicKey::from_text(s).map_err(|e| format!("{}: {e} (expected baton_pk1_...)", e.code()))
}

fn parse_block_id(s: &str) -> Result<BlockId, String> {
    BlockId::from_hex(s).ok_or_else(|| "expected a block id: 64 lower-case hex characters".into())
}

fn parse_request_arg(s: &str) -> Result<RequestArg, String> {
    let (name, value) = s.split_once('=').ok_or("expected NAME=VALUE")?;
    let value = match parse_int_literal(value) {
        Some(n) => ArgValue::Int(n?),
        None => ArgValue::Str(value.to_owned()),
    };
    Ok(RequestArg {
        name: name.to_owned(),
        value,
    })
}

/// A refusal: the token is invalid or the request is denied.
struct Deny {
    code: &'static str,
    message: String,
}

/// The `--json` document.
#[derive(Serialize)]
struct DecisionJson {
    decision: &'static str,
    reason: Option<&'static str>,
    message: Option<String>,
    budgets: Vec<ScopeJson>,
}

/// A budget scope a spend on this action must debit.
#[derive(Serialize)]
struct ScopeJson {
    block: usize,
    block_id: String,
    unit: String,
    ceiling: u64,
    tools: Option<String>,
}

/// Verifies the token on stdin and prints the decision.
pub fn run(args: VerifyArgs) -> Result<Outcome, CliError> {
    let text = io::read_token_text()?;
    let keys = io::read_keyset(&args.keys, args.keyset.as_deref())?;
    let mut verifier = Verifier::new(keys);
    if let Some(s) = args.skew {
        verifier = verifier.with_skew(s);
    }
    verifier.set_revoked(args.revoked.iter().copied());
    let at = match args.at {
        Some(t) => t,
        None => time::now()?,
    };
    if let Some(a) = &args.audience {
        verifier = verifier.with_audience(a.clone());
    }
    verifier = verifier.with_require_holder(args.require_holder);
    let body = args.request.read_body()?;
    let decision = decide(&verifier, &text, &args, at, &body);
    let outcome = if decision.is_ok() {
        Outcome::Done
    } else {
        Outcome::Refused
    };
    if args.json {
        io::emit_json(&to_json(decision))?;
    } else {
        io::emit(&to_text(decision))?;
    }
    Ok(outcome)
}

/// Verification first, so that an invalid token is reported as such even
/// when the request is malformed too; then the holder's proof, then the
/// request (spec/token.md §12.4). A bound token's proof is checked in the
/// same signature batch as its chain.
fn decide(
    verifier: &Verifier,
    text: &str,
    args: &VerifyArgs,
    at: u64,
    body: &[u8],
) -> Result<Authorization, Deny> {
    let invalid = |e: VerifyError| Deny {
        code: e.code(),
        message: format!("invalid token: {e}"),
    };
    let request = match args.request.to_request(at, body) {
        Ok(r) => r,
        Err(e) => {
            verifier.verify_text(text).map_err(invalid)?;
            return Err(Deny {
                code: e.code(),
                message: e.to_string(),
            });
        }
    };
    let request = match &args.proof {
        Some(p) => request.with_proof_header(p),
        None => request,
    };
    match verifier.authorize_text(text, &request) {
        Ok((_, auth)) => Ok(auth),
        Err(AuthorizeError::Invalid(e)) => Err(invalid(e)),
        Err(e) => Err(Deny {
            code: e.code(),
            message: e.to_string(),
        }),
    }
}

fn scopes(auth: &Authorization) -> Vec<ScopeJson> {
    auth.budgets
        .iter()
        .map(|s| ScopeJson {
            block: s.block,
            block_id: s.block_id.to_string(),
            unit: s.unit.to_string(),
            ceiling: s.ceiling,
            tools: s.tools.as_ref().map(ToString::to_string),
        })
        .collect()
}

fn to_json(decision: Result<Authorization, Deny>) -> DecisionJson {
    match decision {
        Ok(auth) => DecisionJson {
            decision: "allow",
            reason: None,
            message: None,
            budgets: scopes(&auth),
        },
        Err(d) => DecisionJson {
            decision: "deny",
            reason: Some(d.code),
            message: Some(d.message),
            budgets: Vec::new(),
        },
    }
}

/// `allow` and one `budget ...` line per scope, nearest block first; or
/// one `deny <code>: <message>` line.
fn to_text(decision: Result<Authorization, Deny>) -> String {
    match decision {
        Ok(auth) => {
            let mut out = String::from("allow\n");
            for s in scopes(&auth) {
                out.push_str(&format!(
                    "budget block={} id={} unit={} ceiling={}",
                    s.block, s.block_id, s.unit, s.ceiling
                ));
                if let Some(t) = s.tools {
                    out.push_str(&format!(" tools={t}"));
                }
                out.push('\n');
            }
            out
        }
        Err(d) => format!("deny {}: {}\n", d.code, d.message),
    }
}
