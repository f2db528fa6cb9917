//! `baton seal`: replace the token's proof secret with a seal, so that no
//! holder can append a block to it any more. A holder-bound token is
//! sealed with its holder's secret key (`--holder-key`).

use std::path::PathBuf;

use super::{CliError, Outcome, io};

/// Arguments of `baton seal`.
#[derive(Debug, clap::Args)]
pub struct SealArgs {
    /// The holder secret key file of a bound token: signs the seal.
    #[arg(long, value_name = "FILE")]
    holder_key: Option<PathBuf>,
}

/// Prints the sealed token's text form.
pub fn run(args: SealArgs) -> Result<Outcome, CliError> {
    let token = io::read_token()?;
    let sealed = match &args.holder_key {
        Some(path) => token.seal_as_holder(&io::read_holder_key(path)?),
        None => token.seal(),
    }
    .map_err(CliError::Sealing)?;
    io::emit(&format!("{}\n", sealed.to_text()))?;
    Ok(Outcome::Done)
}
