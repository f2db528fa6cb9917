//! `baton mcp-proxy`: an MCP gateway that authorizes every tool call with a
//! Baton token and charges its cost to the ledger.
//!
//! The proxy is an MCP server to the agent (stdio) and an MCP client to one
//! downstream server (a spawned command, or a streamable HTTP URL), both on
//! the official Rust SDK, `rmcp`. For every `tools/call` it verifies the
//! token offline, maps the call to a [`Request`](crate::Request) with its
//! [`Policy`], authorizes it, and only then (after a ledger hold, for a
//! priced tool) forwards it. A refusal is an MCP tool error whose
//! `structuredContent` is the ledger's error body, `{"error": {"code",
//! "message"}}`, and the downstream server never sees the call.
//! `tools/list` shows only the tools whose action the token allows.
//! Keys taken from the ledger follow its rotations through a
//! [`crate::client::KeySource`]; with a feed token, a
//! [`crate::client::RevocationFeed`] makes revoked tokens fail offline, and
//! a stale feed refuses every call.
//!
//! The behaviour, the configuration file and the reason codes are specified
//! in `spec/mcp.md`.
//!
//! # Layout
//! * [`policy`]: the configuration file and the pure mapping of a call to
//!   a request and a cost.
//! * [`proxy`]: the MCP server handler that ties them together, and the
//!   transports. Ledger calls (reserve, commit, release) go through
//!   [`crate::client`], which retries them under one idempotency key.

use crate::error::{Denied, VerifyError};
use crate::verifier::AuthorizeError;

pub mod policy;
pub mod proxy;

pub use policy::{ConfigError, Policy};
pub use proxy::{Downstream, Proxy, ProxyError};

/// Why a `tools/call` was refused before reaching the downstream server.
/// Each is answered as an MCP tool error carrying [`Refusal::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No token was configured or presented.
    #[error("no token")]
    MissingToken,
    /// The token does not verify (its own code: `bad_signature`, `unknown_kid`, ...).
    #[error("invalid token: {0}")]
    Invalid(#[from] VerifyError),
    /// The token does not allow the call (its own code: `action_not_allowed`, ...).
    #[error("{0}")]
    Denied(AuthorizeError),
    /// A priced tool's amount argument is missing or not an integer in 1…2⁶³−1.
    #[error("argument {0} must be an integer from 1 to 2^63-1: it prices the call")]
    CostArg(String),
    /// The ledger refused the hold; `code` is the ledger's (`insufficient_budget`, ...).
    #[error("the ledger refused the hold: {message}")]
    Ledger {
        /// The ledger's reason code (spec/http.md §7).
        code: String,
        /// The ledger's message.
        message: String,
    },
    /// The ledger could not be reached or answered 5xx; the call is not made.
    #[error("the ledger is unavailable")]
    LedgerUnavailable,
    /// The revocation feed has not been read within its staleness bound:
    /// a revoked token could pass, so no call is made (fail closed).
    #[error("the revocation feed is stale")]
    RevocationsStale,
}

impl From<Denied> for Refusal {
    fn from(e: Denied) -> Self {
        Self::Denied(AuthorizeError::Denied(e))
    }
}

impl From<AuthorizeError> for Refusal {
    fn from(e: AuthorizeError) -> Self {
        match e {
            AuthorizeError::Invalid(e) => Self::Invalid(e),
            e => Self::Denied(e),
        }
    }
}

impl Refusal {
    /// The stable reason code (spec/mcp.md §4).
    pub fn code(&self) -> &str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Invalid(e) => e.code(),
            Self::Denied(e) => e.code(),
            Self::CostArg(_) => "cost_arg_invalid",
            Self::Ledger { code, .. } => code,
            Self::LedgerUnavailable => "ledger_unavailable",
            Self::RevocationsStale => "revocations_stale",
        }
    }
}
