//! `baton seal`: replace the token's proof secret with a seal, so that no
//! holder can append a block to it any more.

use super::{CliError, Outcome, io};

/// Prints the sealed token's text form.
pub fn run() -> Result<Outcome, CliError> {
    let token = io::read_token()?;
    let sealed = token.seal().map_err(CliError::Sealing)?;
    io::emit(&format!("{}\n", sealed.to_text()))?;
    Ok(Outcome::Done)
}
