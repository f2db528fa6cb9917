//! Baton: delegation tokens whose authority shrinks at every hop.
//!
//! An issuer mints a root [`Token`] with its [`RootKey`]. Any holder appends
//! a signed, narrowing block offline ([`Token::attenuate`]) and hands the
//! child down. A gateway checks the whole chain with the issuer's public keys
//! alone ([`Verifier`]) and then decides a [`Request`]: every block's caveats
//! apply, and no block may widen what came before it.
//!
//! ```
//! use baton::{ArgValue, Caveat, Keyset, Request, RootKey, Token, Unit, Verifier};
//!
//! let root = RootKey::generate()?;
//! // The issuer mints an orchestrator token: $50, three tool families, depth 3.
//! let orchestrator = Token::mint(&root, vec![
//!     Caveat::budget(Unit::UsdMicrocents, 5_000_000_000),
//!     Caveat::tools(["crm.*", "refund.*", "email.*"])?,
//!     Caveat::Depth(3),
//! ])?;
//! // Offline, with no round trip: a $5 refund agent that can only read the CRM and refund.
//! let refund_agent = orchestrator.attenuate(vec![
//!     Caveat::budget(Unit::UsdMicrocents, 500_000_000),
//!     Caveat::tools(["crm.read", "refund.issue"])?,
//! ])?;
//!
//! // At the gateway: public keys only.
//! let verifier = Verifier::new(Keyset::new().with(root.public()));
//! let token = verifier.verify_text(&refund_agent.to_text())?;
//! let now = 1_800_000_000;
//! assert!(verifier.authorize(&token, &Request::new("crm.read", now)?).is_ok());
//! let denied = verifier.authorize(&token, &Request::new("email.send", now)?).unwrap_err();
//! assert_eq!(denied.code(), "action_not_allowed");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Which API to use
//! * Issuers: [`RootKey`], [`Token::mint`].
//! * Holders delegating: [`UnverifiedToken::from_text`] then
//!   [`UnverifiedToken::attenuate`]; no key is needed.
//! * Gateways: [`Verifier::verify_text`] then [`Verifier::authorize`]. Turn
//!   on [`Verifier::with_cache`] when the same tokens or parents recur.
//!   HTTP gateways in front of axum or tower services: `baton::tower`
//!   (feature `tower`) does bearer extraction, verification, authorization
//!   and the ledger's hold, commit and release around a handler.
//! * Talking to the spend ledger: `baton::client` (feature `client`), a
//!   typed client with retries, a keyset source and a revocation-feed
//!   follower.
//!
//! # Features
//! * none (`default-features = false`): the core, enough to mint, verify,
//!   attenuate and authorize. No async runtime, HTTP, CLI or logging crate.
//! * `client`: `baton::client` (tokio, reqwest with rustls).
//! * `inspect`: `baton::inspect`, the JSON description of a token (serde).
//! * `tower`: `baton::tower` (axum, tower; implies `client`).
//! * `server`: the ledger service, `baton::server` and `baton::store`.
//! * `cli`: the `baton` binary (clap; implies `client`).
//! * `mcp`: the MCP gateway.
//! * `forge`: helpers that build tokens from fixed seeds or invalid on
//!   purpose (`Token::mint_with_seed`, test vectors, fuzzing).
//!
//! `default` is `cli` + `server`.
//! * Holder binding: a delegate makes a [`HolderKey`]; the delegator binds
//!   a token to its public key with [`Caveat::Holder`]. The holder then
//!   attenuates with [`Token::attenuate_as_holder`] and proves possession
//!   per request ([`Token::prove`], [`Request::with_proof`]); a gateway sets
//!   [`Verifier::with_audience`] and calls [`Verifier::authorize_text`],
//!   which checks the proof in the same batch as the chain.
//!
//! # Layout
//! * [`token`]: the format v1 wire form, blocks, proof, attenuation.
//! * [`caveat`]: the typed caveats and their encoding.
//! * [`authority`]: folding caveats, monotonicity, authorization.
//! * [`verifier`]: signature checks against a keyset, revocation, cache.
//! * [`keys`]: root keys, key ids, keysets, block ids.
//! * [`holder`]: holder key pairs, which a `holder` caveat binds a token to.
//! * [`proof`]: the per-request proof of possession of a bound token.
//! * [`replay`]: the bounded store of accepted proofs.
//! * [`pattern`]: action and resource names and patterns.
//! * [`error`]: every rejection, with its stable reason code.
//! * [`limits`]: the size caps applied before any crypto.
//! * `client` (feature `client`): the ledger's HTTP API as typed calls.
//! * `inspect` (feature `inspect`): a token described as JSON.
//! * `tower` (feature `tower`): the gate layer and its extractors.
//! * `mcp` (feature `mcp`): the MCP gateway behind `baton mcp-proxy`.
//! * `server`, `store` (feature `server`): the ledger service.
//!
//! The normative format is in `spec/token.md`, with test vectors in
//! `spec/vectors/`. Nothing in this crate's core does I/O.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod authority;
pub mod caveat;
mod cbor;
#[cfg(feature = "client")]
pub mod client;
pub mod error;
#[cfg(feature = "forge")]
#[doc(hidden)]
pub mod forge;
mod hex;
pub mod holder;
#[cfg(feature = "inspect")]
pub mod inspect;
pub mod keys;
pub mod ledger;
pub mod limits;
#[cfg(feature = "mcp")]
pub mod mcp;
pub mod pattern;
pub mod proof;
pub mod replay;
#[cfg(feature = "server")]
pub mod server;
mod sig;
#[cfg(feature = "server")]
pub mod store;
pub mod token;
#[cfg(feature = "tower")]
pub mod tower;
pub mod verifier;

/// The README's Rust examples, compiled and run as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use authority::{Authority, Authorization, BudgetScope, Request};
pub use caveat::{ArgBound, ArgConstraint, ArgValue, Budget, Caveat, CaveatKind, Unit};
pub use error::{AttenuateError, ChainError, Denied, ParseError, ProofError, VerifyError};
pub use holder::{HolderKey, HolderPublicKey};
pub use keys::{BlockId, Keyset, Kid, PublicKey, RootKey};
pub use proof::{Audience, HolderProof};
pub use token::{Token, UnverifiedToken};
pub use verifier::{AuthorizeError, Verifier};
