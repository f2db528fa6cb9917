//! `baton attenuate`: append a narrowing block to the token on stdin.
//!
//! No key is needed: the token's own proof secret signs the new block. The
//! parent's signatures are not checked here (a holder may not have the
//! issuer's public key); a verifier checks the whole chain later.

use super::flags::CaveatFlags;
use super::{CliError, Outcome, io, time};

/// Arguments of `baton attenuate`.
#[derive(Debug, clap::Args)]
pub struct AttenuateArgs {
    #[command(flatten)]
    caveats: CaveatFlags,
}

/// Prints the child token's text form.
pub fn run(args: AttenuateArgs) -> Result<Outcome, CliError> {
    let parent = io::read_token()?;
    let caveats = args
        .caveats
        .to_caveats(Some(parent.authority()), time::now)?;
    let child = parent.attenuate(caveats).map_err(CliError::Attenuating)?;
    io::emit(&format!("{}\n", child.to_text()))?;
    Ok(Outcome::Done)
}
