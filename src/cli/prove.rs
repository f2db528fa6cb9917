//! `baton prove`: sign a proof of possession for one request with a bound
//! token's holder key, and print the `Baton-Proof` header value.
//!
//! The request flags are `baton verify`'s, so the client and the verifier
//! build the request hash from the same description of the request; the
//! hash itself is never printed or sent.

use std::path::PathBuf;

use baton::Audience;

use super::verify::{RequestFlags, parse_audience};
use super::{CliError, Outcome, io, time};

/// Arguments of `baton prove`.
#[derive(Debug, clap::Args)]
pub struct ProveArgs {
    /// The holder secret key file (`baton keygen --holder`).
    #[arg(long, value_name = "FILE")]
    holder_key: PathBuf,
    /// The identity of the verifier the request goes to (a gateway's or the
    /// ledger's configured audience). A proof for one audience fails at any other.
    #[arg(long, value_name = "AUDIENCE", value_parser = parse_audience)]
    audience: Audience,
    #[command(flatten)]
    request: RequestFlags,
    /// The proof's time: unix seconds or RFC 3339 UTC. Default: now.
    /// Verifiers accept 60 seconds back and 10 ahead by default.
    #[arg(long, value_name = "TIME", value_parser = time::parse_time)]
    at: Option<u64>,
}

/// Prints the proof's header value.
pub fn run(args: ProveArgs) -> Result<Outcome, CliError> {
    let token = io::read_token()?;
    let at = match args.at {
        Some(t) => t,
        None => time::now()?,
    };
    let body = args.request.read_body()?;
    let request = args
        .request
        .to_request(at, &body)
        .map_err(|e| CliError::RequestFlags(format!("{}: {e}", e.code())))?;
    let key = io::read_holder_key(&args.holder_key)?;
    let proof = token
        .prove(&key, &args.audience, &request, at)
        .map_err(CliError::Proving)?;
    io::emit(&format!("{}\n", proof.to_header()))?;
    Ok(Outcome::Done)
}
