//! The `baton` command (temporary: serve and keys only, until the CLI lands).
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "baton", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the spend ledger service on its embedded store.
    Serve(baton::server::run::ServeArgs),
    /// Manage root keys.
    #[command(subcommand)]
    Keys(Keys),
}

#[derive(Subcommand)]
enum Keys {
    /// Add a new active root key; older keys keep verifying.
    Rotate(baton::server::run::RotateArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => match baton::server::run::serve(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Keys(Keys::Rotate(args)) => match baton::server::run::rotate(args) {
            Ok(kid) => {
                println!("{kid}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: rotating keys: {e}");
                ExitCode::from(2)
            }
        },
    }
}
