//! `baton mint`: a root token from a root secret key and caveat flags.

use std::path::PathBuf;

use baton::Token;

use super::flags::CaveatFlags;
use super::{CliError, Outcome, io, time};

/// Arguments of `baton mint`.
#[derive(Debug, clap::Args)]
pub struct MintArgs {
    /// The root secret key file written by `baton keygen`.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    #[command(flatten)]
    caveats: CaveatFlags,
}

/// Prints the new root token's text form.
pub fn run(args: MintArgs) -> Result<Outcome, CliError> {
    // Flags first: a typo should not need the secret key to be read.
    let caveats = args.caveats.to_caveats(None, time::now)?;
    let root = io::read_root_key(&args.key)?;
    let token = Token::mint(&root, caveats).map_err(CliError::Minting)?;
    io::emit(&format!("{}\n", token.to_text()))?;
    Ok(Outcome::Done)
}
