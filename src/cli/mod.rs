//! The `baton` command line: argument definitions and dispatch.
//!
//! This module tree belongs to the binary, not the library. It owns
//! everything that touches the outside world on the token side (files,
//! stdin, stdout, the clock) and leaves every decision about tokens to the
//! library: the CLI parses flags into [`baton::Caveat`]s and requests,
//! calls the library, and prints what it said, reason codes included.
//!
//! # Layout
//! * [`flags`]: the caveat flags shared by `mint` and `attenuate`, and the
//!   parsers of their values (budgets, dollars, argument bounds, patterns).
//! * [`time`]: reading `RFC 3339 | unix seconds`, the clock, formatting.
//! * [`io`]: stdin tokens, key files, keyset files and stdout.
//! * [`keygen`], [`mint`], [`attenuate`], [`seal`], [`inspect`],
//!   [`verify`], [`prove`], `mcp_proxy`: one file per subcommand.
//! * [`error`]: [`CliError`], one variant per step that can fail.
//!
//! # Exit status
//! * `0`: success (for `verify`: the request is allowed).
//! * `1`: the token was refused: `verify` denied the request or found the
//!   token invalid, or the library refused to parse, mint, attenuate or
//!   seal, or the server refused `keys rotate --url`. The reason code is
//!   printed.
//! * `2`: a usage error (clap's default) or a local error: an unreadable
//!   file, a key that does not parse, stdout closed.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod attenuate;
mod error;
mod flags;
mod inspect;
mod io;
mod keygen;
mod ledger;
#[cfg(feature = "mcp")]
mod mcp_proxy;
mod mint;
mod prove;
mod seal;
mod time;
mod verify;

pub use error::CliError;

/// Exit status after a refusal: a denied request or an invalid token.
const EXIT_REFUSED: u8 = 1;
/// Exit status after a usage or local error; clap uses it for usage errors too.
const EXIT_LOCAL: u8 = 2;

/// Delegation tokens whose authority shrinks at every hop.
#[derive(Debug, Parser)]
#[command(
    name = "baton",
    version,
    after_help = "Token input: commands that read a token take its text on stdin; exactly one \
                  trailing \\n is removed and nothing else is trimmed, so CRLF line ends (a \
                  trailing \\r) are refused as base64_whitespace.\n\
                  Exit status: 0 on success (verify: allowed); 1 when the token or request \
                  was refused, with its reason code; 2 on usage or local errors."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a root secret key (file mode 0600); print its kid and public
    /// key. With --holder, a holder key pair for a delegate.
    Keygen(keygen::KeygenArgs),
    /// Mint a root token with a root secret key; print it on stdout.
    Mint(mint::MintArgs),
    /// Read a token on stdin, append a narrowing block, print the child.
    /// Needs no key, except the holder's for a holder-bound token.
    Attenuate(attenuate::AttenuateArgs),
    /// Read a token on stdin and seal it so no block can follow.
    Seal(seal::SealArgs),
    /// Show a token's blocks and effective authority. Does NOT verify signatures.
    Inspect(inspect::InspectArgs),
    /// Verify a token (stdin) with public keys and decide one request.
    Verify(verify::VerifyArgs),
    /// Talk to a running ledger: balances, revocation, the revocation feed,
    /// reservations. The token comes from --token-file, BATON_TOKEN or stdin.
    Ledger(ledger::LedgerArgs),
    /// Print a shell completion script for `baton`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Sign a proof of possession for one request with a bound token's
    /// (stdin) holder key; print the Baton-Proof header value.
    Prove(prove::ProveArgs),
    /// Run the spend ledger service on its embedded store.
    #[cfg(feature = "server")]
    Serve(baton::server::run::ServeArgs),
    /// Manage the ledger service's root keys.
    #[cfg(feature = "server")]
    #[command(subcommand)]
    Keys(Keys),
    /// Run an MCP gateway: serve MCP to an agent on stdio, authorize every
    /// tool call with the agent's token, forward it to a downstream MCP
    /// server, and charge priced tools to the ledger.
    #[cfg(feature = "mcp")]
    McpProxy(mcp_proxy::McpProxyArgs),
}

#[cfg(feature = "server")]
#[derive(Debug, Subcommand)]
enum Keys {
    /// Add a new active root key; older keys keep verifying. Offline on a
    /// stopped server's data directory (--data), or live through a running
    /// server (--url, with an admin token from --admin-token-file,
    /// BATON_ADMIN_TOKEN or stdin). Prints the new kid.
    Rotate(baton::server::run::RotateArgs),
}

/// How a command that ran to completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did what was asked (for `verify`: allowed).
    Done,
    /// `verify` denied the request or found the token invalid; the decision
    /// has already been printed.
    Refused,
}

impl Outcome {
    /// The process exit status for this outcome.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Self::Done => ExitCode::SUCCESS,
            Self::Refused => ExitCode::from(EXIT_REFUSED),
        }
    }
}

/// Refuses a command line holding a token or secret key before clap sees
/// it: clap would echo an unexpected argument whole, proof secret
/// included. Nothing of the argument is printed.
pub fn refuse_secret_arguments(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<(), CliError> {
    let secret = |a: &std::ffi::OsString| {
        let a = a.to_string_lossy();
        a.contains("baton_v1_") || a.contains("baton_sk1_")
    };
    if args.into_iter().skip(1).any(|a| secret(&a)) {
        return Err(CliError::TokenArgument);
    }
    Ok(())
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<Outcome, CliError> {
    match cli.command {
        Command::Keygen(args) => keygen::run(args),
        Command::Mint(args) => mint::run(args),
        Command::Attenuate(args) => attenuate::run(args),
        Command::Seal(args) => seal::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Ledger(args) => ledger::run(args),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "baton", &mut out);
            io::emit(&String::from_utf8_lossy(&out))?;
            Ok(Outcome::Done)
        }
        Command::Prove(args) => prove::run(args),
        #[cfg(feature = "server")]
        Command::Serve(args) => {
            baton::server::run::serve(args).map_err(CliError::Serving)?;
            Ok(Outcome::Done)
        }
        #[cfg(feature = "server")]
        Command::Keys(Keys::Rotate(args)) => {
            let kid = baton::server::run::rotate(args).map_err(CliError::RotatingKeys)?;
            io::emit(&format!("{kid}\n"))?;
            Ok(Outcome::Done)
        }
        #[cfg(feature = "mcp")]
        Command::McpProxy(args) => mcp_proxy::run(args),
    }
}
