//! [`CliError`]: every way a `baton` command can fail, named after the step
//! that failed (the convention of rage's CLI errors).
//!
//! Library errors keep their stable reason code in the message
//! (`parsing token: non_canonical: ...`) so that scripts can match on it.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use baton::keys::KeyError;
use baton::proof::ProveError;
use baton::{AttenuateError, VerifyError};

use super::{EXIT_LOCAL, EXIT_REFUSED};

/// A `baton` command failed. Printed as `error: <step>: <detail>`.
#[derive(Debug)]
pub enum CliError {
    /// Reading stdin failed.
    ReadingStdin(std::io::Error),
    /// Stdin is a terminal: the command would wait forever for a token.
    StdinIsTerminal,
    /// Stdin held nothing (or a lone newline).
    EmptyStdin,
    /// The token on stdin is not a valid token.
    ParsingToken(VerifyError),
    /// The root secret key file could not be read.
    ReadingKeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The root secret key file is too large to be a key.
    KeyFileTooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The root secret key file does not hold a secret key.
    ParsingKeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: KeyError,
    },
    /// The holder secret key file does not hold a holder secret key.
    ParsingHolderKeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: KeyError,
    },
    /// A file given on the command line (a request body) could not be read.
    ReadingFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The request flags of `prove` do not make a valid request.
    RequestFlags(String),
    /// The library refused to sign a proof of possession.
    Proving(ProveError),
    /// The operating system could not provide randomness for a new key.
    GeneratingKey(KeyError),
    /// `keygen` would overwrite a file and `--force` was not given.
    KeyFileExists {
        /// The file.
        path: PathBuf,
    },
    /// Writing the new secret key file failed.
    WritingKeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The keyset file could not be read.
    ReadingKeyset {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of the keyset file is not a public key.
    ParsingKeyset {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why.
        source: KeyError,
    },
    /// `verify` was given no public key at all (an empty keyset file).
    NoKeys,
    /// The system clock is before 1970 or beyond what a token can hold.
    ReadingClock,
    /// The caveat flags are valid one by one but not together.
    CaveatFlags(String),
    /// The library refused to mint the root token.
    Minting(AttenuateError),
    /// The library refused to append the block.
    Attenuating(AttenuateError),
    /// The library refused to seal the token.
    Sealing(AttenuateError),
    /// Writing to stdout failed.
    WritingOutput(std::io::Error),
    /// A token was given as a command-line argument: refused, never echoed.
    TokenArgument,
    /// The async runtime for a ledger call could not start.
    Runtime(std::io::Error),
    /// A token file could not be read.
    ReadingTokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A `baton ledger` argument is not of the API's form.
    LedgerInput(&'static str),
    /// The ledger refused the request (exit 1) or could not be reached.
    Ledger(baton::client::ClientError),
    /// `baton serve` stopped with an error.
    #[cfg(feature = "server")]
    Serving(baton::server::run::ServeError),
    /// `baton keys rotate` failed: offline, or the server refused (exit 1).
    #[cfg(feature = "server")]
    RotatingKeys(baton::server::run::RotateError),
    /// `mcp-proxy`: a file it was given (config, token) could not be read.
    #[cfg(feature = "mcp")]
    ReadingProxyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `mcp-proxy`: the configuration file was refused.
    #[cfg(feature = "mcp")]
    ParsingProxyConfig(baton::mcp::ConfigError),
    /// `mcp-proxy`: no usable token (none given, empty, too large).
    #[cfg(feature = "mcp")]
    ProxyToken(&'static str),
    /// `mcp-proxy` could not start, or stopped with an error.
    #[cfg(feature = "mcp")]
    Proxying(baton::mcp::ProxyError),
}

impl CliError {
    /// The exit status: 1 when the library refused the token or block (or
    /// the server refused a live key rotation), 2 for local and usage errors.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::ParsingToken(_)
            | Self::Minting(_)
            | Self::Attenuating(_)
            | Self::Sealing(_)
            | Self::Proving(_) => ExitCode::from(EXIT_REFUSED),
            Self::Ledger(baton::client::ClientError::Api(_)) => ExitCode::from(EXIT_REFUSED),
            #[cfg(feature = "server")]
            Self::RotatingKeys(baton::server::run::RotateError::Refused { .. }) => {
                ExitCode::from(EXIT_REFUSED)
            }
            _ => ExitCode::from(EXIT_LOCAL),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReadingStdin(e) => write!(f, "reading token from stdin: {e}"),
            Self::StdinIsTerminal => f.write_str(
                "reading token from stdin: stdin is a terminal; pipe a token in \
                 (for example `baton inspect < token.txt`)",
            ),
            Self::EmptyStdin => f.write_str("reading token from stdin: no token on stdin"),
            Self::ParsingToken(e) => write!(f, "parsing token: {}: {e}", e.code()),
            Self::ReadingKeyFile { path, source } => {
                write!(f, "reading key file {}: {source}", path.display())
            }
            Self::KeyFileTooLarge { path } => write!(
                f,
                "reading key file {}: too large to be a baton secret key",
                path.display()
            ),
            Self::ParsingKeyFile { path, source } => write!(
                f,
                "reading key file {}: {}: {source} (expected a baton_sk1_ secret key)",
                path.display(),
                source.code()
            ),
            Self::ParsingHolderKeyFile { path, source } => write!(
                f,
                "reading holder key file {}: {}: {source} (expected a baton_hsk1_ holder secret key)",
                path.display(),
                source.code()
            ),
            Self::ReadingFile { path, source } => {
                write!(f, "reading file {}: {source}", path.display())
            }
            Self::RequestFlags(msg) => write!(f, "reading request flags: {msg}"),
            Self::Proving(e) => write!(f, "proving: {}: {e}", e.code()),
            Self::GeneratingKey(e) => write!(f, "generating key: {}: {e}", e.code()),
            Self::KeyFileExists { path } => write!(
                f,
                "writing key file {}: the file exists; pass --force to replace it",
                path.display()
            ),
            Self::WritingKeyFile { path, source } => {
                write!(f, "writing key file {}: {source}", path.display())
            }
            Self::ReadingKeyset { path, source } => {
                write!(f, "reading keyset file {}: {source}", path.display())
            }
            Self::ParsingKeyset { path, line, source } => write!(
                f,
                "reading keyset file {}: line {line}: {}: {source} (expected a baton_pk1_ public key)",
                path.display(),
                source.code()
            ),
            Self::NoKeys => {
                f.write_str("reading public keys: no public key given (the keyset file has none)")
            }
            Self::ReadingClock => f.write_str("reading the system clock: time is out of range"),
            Self::CaveatFlags(msg) => write!(f, "reading caveat flags: {msg}"),
            Self::Minting(e) => write!(f, "minting: {}: {e}", e.code()),
            Self::Attenuating(e) => write!(f, "attenuating: {}: {e}", e.code()),
            Self::Sealing(e) => write!(f, "sealing: {}: {e}", e.code()),
            Self::WritingOutput(e) => write!(f, "writing to stdout: {e}"),
            Self::TokenArgument => f.write_str(
                "a token was given as an argument, where the process list and shell history \
                 would show it; it was not used. Pipe it on stdin instead (for example \
                 `baton inspect < token.txt`), or for `baton ledger` use --token-file FILE \
                 or BATON_TOKEN",
            ),
            Self::Runtime(e) => write!(f, "starting the async runtime: {e}"),
            Self::ReadingTokenFile { path, source } => {
                write!(f, "reading token file {}: {source}", path.display())
            }
            Self::LedgerInput(m) => write!(f, "reading arguments: {m}"),
            Self::Ledger(e) => write!(f, "ledger: {e}"),
            #[cfg(feature = "server")]
            Self::Serving(e) => write!(f, "serving: {e}"),
            #[cfg(feature = "server")]
            Self::RotatingKeys(e) => write!(f, "rotating keys: {e}"),
            #[cfg(feature = "mcp")]
            Self::ReadingProxyFile { path, source } => {
                write!(f, "reading {}: {source}", path.display())
            }
            #[cfg(feature = "mcp")]
            Self::ParsingProxyConfig(e) => write!(f, "reading the proxy configuration: {e}"),
            #[cfg(feature = "mcp")]
            Self::ProxyToken(why) => write!(f, "reading the agent's token: {why}"),
            #[cfg(feature = "mcp")]
            Self::Proxying(e) => write!(f, "proxying: {e}"),
        }
    }
}

impl std::error::Error for CliError {}
