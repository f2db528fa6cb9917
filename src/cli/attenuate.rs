//! `baton attenuate`: append a narrowing block to the token on stdin.
//!
//! No key is needed for a bearer token: the token's own proof secret signs
//! the new block. `--holder PK` binds the child to a delegate's holder key;
//! a token already bound is attenuated only with its holder's secret
//! (`--holder-key FILE`), and the child stays bound (to the same key unless
//! `--holder` names a new one). The parent's signatures are not checked
//! here (a holder may not have the issuer's public key); a verifier checks
//! the whole chain later.

use std::path::PathBuf;

use baton::{Caveat, HolderPublicKey};

use super::flags::CaveatFlags;
use super::{CliError, Outcome, io, time};

/// Arguments of `baton attenuate`.
#[derive(Debug, clap::Args)]
pub struct AttenuateArgs {
    #[command(flatten)]
    caveats: CaveatFlags,
    /// Bind the child to this holder public key (baton_hpk1_..., from
    /// `baton keygen --holder`): only the key's owner can then use it,
    /// attenuate it or seal it.
    #[arg(long, value_name = "PUBLIC_KEY", value_parser = parse_holder_key)]
    holder: Option<HolderPublicKey>,
    /// The holder secret key file of a bound token: signs the new block.
    #[arg(long, value_name = "FILE")]
    holder_key: Option<PathBuf>,
}

/// Parses a holder public key flag.
pub fn parse_holder_key(s: &str) -> Result<HolderPublicKey, String> {
    HolderPublicKey::from_text(s)
        .map_err(|e| format!("{}: {e} (expected baton_hpk1_...)", e.code()))
}

/// Prints the child token's text form.
pub fn run(args: AttenuateArgs) -> Result<Outcome, CliError> {
    let parent = io::read_token()?;
    let mut caveats = args
        .caveats
        .to_caveats(Some(parent.authority()), time::now)?;
    let child = match &args.holder_key {
        Some(path) => {
            let key = io::read_holder_key(path)?;
            // A bound child must declare a holder again; by default its own.
            caveats.push(Caveat::Holder(args.holder.unwrap_or_else(|| key.public())));
            parent.attenuate_as_holder(&key, caveats)
        }
        None => {
            if let Some(h) = args.holder {
                caveats.push(Caveat::Holder(h));
            }
            parent.attenuate(caveats)
        }
    }
    .map_err(CliError::Attenuating)?;
    io::emit(&format!("{}\n", child.to_text()))?;
    Ok(Outcome::Done)
}
