//! The `baton` command. Argument definitions and every command live in
//! [`cli`] (a module of this binary, not of the library); `main` only
//! parses, runs and turns the result into an exit status.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

mod cli;

fn main() -> ExitCode {
    if let Err(e) = cli::refuse_secret_arguments(std::env::args_os()) {
        let _ = writeln!(std::io::stderr(), "error: {e}");
        return e.exit_code();
    }
    // Usage errors exit through clap, with status 2.
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(outcome) => outcome.exit_code(),
        Err(e) => {
            // Ignored: if stderr is gone there is nowhere left to report to.
            let _ = writeln!(std::io::stderr(), "error: {e}");
            e.exit_code()
        }
    }
}
