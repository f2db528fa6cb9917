//! `baton ledger ...`: an operator's view of a running ledger through
//! [`baton::client`]: balances, revocation, the revocation feed,
//! reservations, and allocations (guaranteed sub-budgets). Human output by default, the ledger's data as JSON with
//! `--json`.
//!
//! The bearer token comes from `--token-file FILE`, else the environment
//! variable `BATON_TOKEN`, else stdin; never from an argument.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use baton::client::{Allocate, Allocation, Balance, Bearer, Client, IdempotencyKey, Reservation};
use baton::keys::BlockId;
use baton::ledger::{AllocId, ResId};
use serde_json::{Value, json};

use super::{CliError, Outcome, io};

/// The environment variable holding the bearer token.
const TOKEN_ENV: &str = "BATON_TOKEN";

/// `baton ledger`'s flags.
#[derive(Debug, clap::Args)]
pub struct LedgerArgs {
    /// The ledger's base URL (`http://` or `https://`).
    #[arg(long, env = "BATON_LEDGER", value_name = "URL")]
    url: String,
    /// Print the ledger's answer as JSON.
    #[arg(long)]
    json: bool,
    /// Read the bearer token from FILE (else BATON_TOKEN, else stdin).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: LedgerCommand,
}

#[derive(Debug, clap::Subcommand)]
enum LedgerCommand {
    /// The budget scopes of the token's chain, nearest first.
    Balances,
    /// Revoke a block: the token's own last block, or (with
    /// --target-token-file) a block of a descendant, or any block for an
    /// administrator.
    Revoke {
        /// The block id (64 lower-case hex characters).
        block_id: String,
        /// A descendant token naming the block, read from FILE.
        #[arg(long, value_name = "FILE")]
        target_token_file: Option<PathBuf>,
    },
    /// The revocation feed after position N (needs baton.admin.revocations.read).
    Feed {
        /// Show revocations with a feed position above N.
        #[arg(long, value_name = "N", default_value_t = 0)]
        after: u64,
    },
    /// Read, commit or release a reservation.
    #[command(subcommand)]
    Reservation(ReservationCommand),
    /// Set part of the token's pool aside for a descendant (a guaranteed
    /// sub-budget), named by the descendant's token.
    #[command(group(clap::ArgGroup::new("how").required(true).args(["amount", "fraction"])))]
    Allocate {
        /// The child's token, read from FILE.
        #[arg(long, value_name = "FILE")]
        child_token_file: PathBuf,
        /// The unit (e.g. usd_microcents, calls).
        #[arg(long)]
        unit: String,
        /// A fixed amount of the unit.
        #[arg(long)]
        amount: Option<u64>,
        /// A fraction of the current remaining, in (0, 1].
        #[arg(long)]
        fraction: Option<f64>,
        /// Past the allocation, take from the parent's pool instead of refusing.
        #[arg(long)]
        shared: bool,
        /// How long it lasts, in ms (default 3600000; the child token's expiry also ends it).
        #[arg(long, value_name = "MS")]
        ttl_ms: Option<u64>,
        /// The idempotency key (default: a fresh one). Reuse it to retry.
        #[arg(long)]
        key: Option<String>,
    },
    /// Return an allocation's unused part to the pool (the child, its parent or an ancestor).
    ReleaseAllocation {
        /// The allocation id (alc_...).
        id: String,
        /// The idempotency key (default: a fresh one). Reuse it to retry.
        #[arg(long)]
        key: Option<String>,
    },
    /// Show an allocation.
    Allocation {
        /// The allocation id (alc_...).
        id: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum ReservationCommand {
    /// Show a reservation.
    Get {
        /// The reservation id (rsv_...).
        id: String,
    },
    /// Charge ACTUAL and return the hold.
    Commit {
        /// The reservation id (rsv_...).
        id: String,
        /// The amount to charge.
        #[arg(long)]
        actual: u64,
        /// The idempotency key (default: a fresh one). Reuse it to retry.
        #[arg(long)]
        key: Option<String>,
    },
    /// Return the hold without charging.
    Release {
        /// The reservation id (rsv_...).
        id: String,
        /// The idempotency key (default: a fresh one). Reuse it to retry.
        #[arg(long)]
        key: Option<String>,
    },
}

/// Runs `baton ledger`.
pub fn run(args: LedgerArgs) -> Result<Outcome, CliError> {
    let client = Client::new(&args.url).map_err(CliError::Ledger)?;
    let token = bearer(args.token_file.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let json = args.json;
    runtime.block_on(async move {
        match args.command {
            LedgerCommand::Balances => {
                let scopes = client.balances(&token).await.map_err(CliError::Ledger)?;
                show(json, &json!({ "scopes": scopes.iter().map(balance_json).collect::<Vec<_>>() }), || {
                    let mut out = format!(
                        "{:<5} {:<16} {:<14} {:>20} {:>20} {:>20} {:>20}\n",
                        "BLOCK", "UNIT", "TOOLS", "CEILING", "SPENT", "HELD", "REMAINING"
                    );
                    for b in &scopes {
                        let c = &b.counters;
                        out += &format!(
                            "{:<5} {:<16} {:<14} {:>20} {:>20} {:>20} {:>20}\n",
                            b.block,
                            c.scope.unit.as_str(),
                            c.scope.tools.as_deref().unwrap_or("-"),
                            c.ceiling,
                            c.spent,
                            c.held,
                            c.remaining
                        );
                    }
                    out
                })
            }
            LedgerCommand::Revoke {
                block_id,
                target_token_file,
            } => {
                let block = BlockId::from_hex(&block_id).ok_or(CliError::LedgerInput(
                    "a block id is 64 lower-case hex characters",
                ))?;
                let target = target_token_file
                    .as_deref()
                    .map(token_file)
                    .transpose()?;
                let r = client
                    .revoke(&token, &block, target.as_ref())
                    .await
                    .map_err(CliError::Ledger)?;
                let v = json!({ "block_id": r.block_id.to_string(), "revoked": true, "seq": r.seq, "new": r.new });
                show(json, &v, || {
                    let was = if r.new { "revoked" } else { "already revoked" };
                    format!("{was} {} (feed position {})\n", r.block_id, r.seq)
                })
            }
            LedgerCommand::Feed { after } => {
                let page = client
                    .revocations(&token, after)
                    .await
                    .map_err(CliError::Ledger)?;
                let entries: Vec<Value> = page
                    .revocations
                    .iter()
                    .map(|e| json!({ "seq": e.seq, "block_id": e.block_id.to_string() }))
                    .collect();
                show(json, &json!({ "revocations": entries, "next": page.next }), || {
                    let mut out = String::new();
                    for e in &page.revocations {
                        out += &format!("{} {}\n", e.seq, e.block_id);
                    }
                    out + &format!("next {}\n", page.next)
                })
            }
            LedgerCommand::Allocate {
                child_token_file,
                unit,
                amount,
                fraction,
                shared,
                ttl_ms,
                key,
            } => {
                let child = token_file(&child_token_file)?;
                let unit = baton::Unit::parse(&unit)
                    .map_err(|_| CliError::LedgerInput("not a valid unit name"))?;
                let mut req = match (amount, fraction) {
                    (Some(a), None) => Allocate::amount(&child, unit, a),
                    (None, Some(f)) => Allocate::fraction(&child, unit, f),
                    _ => {
                        return Err(CliError::LedgerInput(
                            "give exactly one of --amount and --fraction",
                        ));
                    }
                }
                .key(&key_or_fresh(key)?);
                if shared {
                    req = req.shared();
                }
                if let Some(ms) = ttl_ms {
                    req = req.ttl(std::time::Duration::from_millis(ms));
                }
                let a = client.allocate(&token, &req).await.map_err(CliError::Ledger)?;
                show_allocation(json, &a)
            }
            LedgerCommand::ReleaseAllocation { id, key } => {
                let a = client
                    .release_allocation(&token, &alloc_id(&id)?, &key_or_fresh(key)?)
                    .await
                    .map_err(CliError::Ledger)?;
                show_allocation(json, &a)
            }
            LedgerCommand::Allocation { id } => {
                let a = client
                    .allocation(&token, &alloc_id(&id)?)
                    .await
                    .map_err(CliError::Ledger)?;
                show_allocation(json, &a)
            }
            LedgerCommand::Reservation(cmd) => {
                let r = match cmd {
                    ReservationCommand::Get { id } => client.reservation(&token, &res_id(&id)?).await,
                    ReservationCommand::Commit { id, actual, key } => {
                        client.commit(&token, &res_id(&id)?, actual, &key_or_fresh(key)?).await
                    }
                    ReservationCommand::Release { id, key } => {
                        client.release(&token, &res_id(&id)?, &key_or_fresh(key)?).await
                    }
                }
                .map_err(CliError::Ledger)?;
                show(json, &json!({ "reservation": reservation_json(&r) }), || {
                    let charged = r.charged.map_or("-".to_owned(), |c| c.to_string());
                    format!(
                        "{} {} {} amount {} charged {} expires_at_ms {}\n",
                        r.id,
                        r.state.as_str(),
                        r.unit.as_str(),
                        r.amount,
                        charged,
                        r.expires_at_ms
                    )
                })
            }
        }
    })
}

fn show(json: bool, value: &Value, human: impl FnOnce() -> String) -> Result<Outcome, CliError> {
    if json {
        io::emit_json(value)?;
    } else {
        io::emit(&human())?;
    }
    Ok(Outcome::Done)
}

fn show_allocation(json: bool, a: &Allocation) -> Result<Outcome, CliError> {
    let v = json!({ "allocation": {
        "id": a.id.to_string(), "state": a.state.as_str(), "unit": a.unit.as_str(),
        "amount": a.amount, "charged": a.charged, "drawn": a.drawn, "unused": a.unused,
        "returned": a.returned, "overflow": a.overflow, "expires_at_ms": a.expires_at_ms,
        "finalized_at_ms": a.finalized_at_ms, "parent_block_id": a.parent_block_id.to_string(),
        "child_block_id": a.child_block_id.to_string(),
    }});
    show(json, &v, || {
        format!(
            "{} {} {} amount {} charged {} drawn {} unused {} returned {}\n",
            a.id,
            a.state.as_str(),
            a.unit.as_str(),
            a.amount,
            a.charged,
            a.drawn,
            a.unused,
            a.returned
        )
    })
}

fn alloc_id(s: &str) -> Result<AllocId, CliError> {
    AllocId::parse(s).ok_or(CliError::LedgerInput(
        "an allocation id is alc_ followed by 36 lower-case hex characters",
    ))
}

fn res_id(s: &str) -> Result<ResId, CliError> {
    ResId::parse(s).ok_or(CliError::LedgerInput(
        "a reservation id is rsv_ followed by 36 lower-case hex characters",
    ))
}

fn key_or_fresh(key: Option<String>) -> Result<IdempotencyKey, CliError> {
    match key {
        Some(k) => IdempotencyKey::new(k).map_err(CliError::Ledger),
        None => IdempotencyKey::random().map_err(CliError::Ledger),
    }
}

fn scope_json(c: &baton::client::ScopeCounters) -> Value {
    json!({
        "block_id": c.scope.block_id.to_string(), "unit": c.scope.unit.as_str(),
        "tools": c.scope.tools, "ceiling": c.ceiling, "spent": c.spent,
        "held": c.held, "remaining": c.remaining,
    })
}

fn balance_json(b: &Balance) -> Value {
    let mut v = scope_json(&b.counters);
    v["block"] = b.block.into();
    v
}

fn reservation_json(r: &Reservation) -> Value {
    json!({
        "id": r.id.to_string(), "state": r.state.as_str(), "unit": r.unit.as_str(),
        "amount": r.amount, "charged": r.charged, "expires_at_ms": r.expires_at_ms,
        "block_id": r.block_id.to_string(),
        "scopes": r.scopes.iter().map(scope_json).collect::<Vec<_>>(),
    })
}

/// The bearer token: `--token-file`, else `BATON_TOKEN`, else stdin.
fn bearer(file: Option<&Path>) -> Result<Bearer, CliError> {
    if let Some(p) = file {
        return token_file(p);
    }
    if let Ok(t) = std::env::var(TOKEN_ENV)
        && !t.trim().is_empty()
    {
        return Ok(Bearer::new(t));
    }
    if std::io::stdin().is_terminal() {
        return Err(CliError::StdinIsTerminal);
    }
    io::read_token_text().map(Bearer::new)
}

fn token_file(path: &Path) -> Result<Bearer, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::ReadingTokenFile {
        path: path.to_owned(),
        source,
    })?;
    Ok(Bearer::new(text))
}
