//! `baton keygen`: create a root secret key file, or with `--holder` a
//! holder key pair, and show its public half.

use std::path::PathBuf;

use baton::{HolderKey, RootKey};
use serde::Serialize;

use super::{CliError, Outcome, io};

/// Arguments of `baton keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the secret key (created with mode 0600).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Replace the file if it exists (atomically, through a new 0600 file).
    #[arg(long)]
    force: bool,
    /// Make a holder key pair instead of a root key: the delegate keeps the
    /// secret (baton_hsk1_...) and hands out only the public key
    /// (baton_hpk1_...), which `baton attenuate --holder` binds a token to.
    #[arg(long)]
    holder: bool,
    /// Print {"kid": ..., "public_key": ...} instead of text (with
    /// --holder: {"holder_key": ...}).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct KeygenJson {
    kid: String,
    public_key: String,
}

#[derive(Serialize)]
struct HolderJson {
    holder_key: String,
}

/// Writes a fresh key and prints its kid and public key. The text output
/// is itself a valid keyset file (`baton keygen --out k > keys.txt`): the
/// kid is a `#` comment line, the public key the next line. With
/// `--holder` the output is the holder public key alone.
pub fn run(args: KeygenArgs) -> Result<Outcome, CliError> {
    if args.holder {
        let key = HolderKey::generate().map_err(CliError::GeneratingKey)?;
        io::write_secret_file(&args.out, &key.to_text(), args.force)?;
        let public = key.public().to_text();
        if args.json {
            io::emit_json(&HolderJson { holder_key: public })?;
        } else {
            io::emit(&format!("{public}\n"))?;
        }
        return Ok(Outcome::Done);
    }
    let key = RootKey::generate().map_err(CliError::GeneratingKey)?;
    io::write_secret_file(&args.out, &key.to_text(), args.force)?;
    let public = key.public();
    if args.json {
        io::emit_json(&KeygenJson {
            kid: public.kid().to_string(),
            public_key: public.to_text(),
        })?;
    } else {
        io::emit(&format!("# kid {}\n{}\n", public.kid(), public.to_text()))?;
    }
    Ok(Outcome::Done)
}
