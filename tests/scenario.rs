//! The support-refund scenario of `examples/support_refund.rs`: its
//! four-block token must stay small, and the example must run to the end.
//!
//! The example file is included as a module, so the token measured here is
//! byte for byte the one the example builds and prints.

#[allow(dead_code)]
#[path = "../examples/support_refund.rs"]
mod support_refund;

use baton::{Keyset, Verifier};

/// The exact size of the four-block token. Every input is fixed (keys,
/// seeds, caveats) and the encoding is canonical, so it is deterministic; a
/// change here is a format or scenario change and must be deliberate.
const FOUR_BLOCK_BYTES: usize = 685;
/// The budget for the scenario token, from the project's size goal.
const MAX_FOUR_BLOCK_BYTES: usize = 700;

#[test]
fn four_block_token_size() {
    let chain = support_refund::build_chain().expect("the scenario chain is valid");
    let token = &chain.lookup_agent;
    let bytes = token.to_bytes().len();
    println!(
        "support scenario: {} blocks, {bytes} bytes binary, {} characters text",
        token.len(),
        token.to_text().len()
    );
    assert_eq!(token.len(), 4);
    assert!(
        bytes <= MAX_FOUR_BLOCK_BYTES,
        "{bytes} bytes exceeds {MAX_FOUR_BLOCK_BYTES}"
    );
    assert_eq!(bytes, FOUR_BLOCK_BYTES, "the scenario token's size changed");
}

#[test]
fn four_block_token_verifies() {
    let chain = support_refund::build_chain().expect("the scenario chain is valid");
    let verifier = Verifier::new(Keyset::new().with(chain.root.public()));
    let token = verifier
        .verify_bytes(chain.lookup_agent.to_bytes())
        .expect("the issuer's key verifies the scenario chain");
    assert_eq!(token.to_bytes(), chain.lookup_agent.to_bytes());
}

#[test]
fn example_runs_to_the_end() {
    support_refund::main().expect("every step of the example succeeds");
}
