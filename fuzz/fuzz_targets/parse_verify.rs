//! Feeds arbitrary bytes to the parser and the verifier, as binary and (when
//! the bytes are UTF-8) as text.
//!
//! Beyond "no panic", it checks the canonical round trip: whatever parses
//! re-encodes to exactly the input, so no token has two encodings.
#![no_main]

use std::sync::LazyLock;

use baton::{ArgValue, Keyset, Request, RootKey, UnverifiedToken, Verifier};
use libfuzzer_sys::fuzz_target;

/// The root key the seed corpus is minted under (see `src/gen_corpus.rs`).
const ROOT_SEED: [u8; 32] = [0x42; 32];
/// The ephemeral seed used when the target attenuates a parsed token.
const CHILD_SEED: [u8; 32] = [0x43; 32];

fn keyset() -> Keyset {
    Keyset::new().with(RootKey::from_seed(&ROOT_SEED).public())
}

static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| Verifier::new(keyset()));
static CACHED: LazyLock<Verifier> = LazyLock::new(|| Verifier::new(keyset()).with_cache(64));
static REQUEST: LazyLock<Request> = LazyLock::new(|| {
    Request::new("crm.read", 1_800_000_000)
        .and_then(|r| r.resource("customer:4821"))
        .and_then(|r| r.arg("amount", ArgValue::Int(5)))
        .and_then(|r| r.arg("currency", ArgValue::Str("usd".into())))
        .expect("the fixed request is valid")
});

fn check_bytes(data: &[u8]) {
    let parsed = UnverifiedToken::from_bytes(data);
    let verified = VERIFIER.verify_bytes(data);
    match (&parsed, &verified) {
        (Err(p), Err(v)) => {
            // A token that does not parse fails verification for the same reason.
            assert_eq!(
                p, v,
                "parse and verify disagree on why the input is invalid"
            );
        }
        (Err(p), Ok(_)) => panic!("verified a token that does not parse: {p}"),
        (Ok(_), _) => {}
    }
    let Ok(token) = parsed else { return };
    assert_eq!(token.to_bytes(), data, "parsed a non-canonical encoding");
    let text = token.to_text();
    let back = UnverifiedToken::from_text(&text).expect("a token's own text form parses");
    assert_eq!(back.to_bytes(), data, "text form does not round-trip");

    if let Ok(t) = &verified {
        assert_eq!(t.to_bytes(), data);
        // Authorization decides; it must never panic, whatever the caveats.
        let by_verifier = VERIFIER.authorize(t, &REQUEST);
        let by_token = t.authorize(&REQUEST);
        if by_token.is_ok() {
            // The token applies no skew, the verifier some: it allows at least as much.
            assert!(by_verifier.is_ok(), "skew narrowed authority");
        }
    }
    // The cached verifier decides exactly as the plain one, twice in a row.
    for _ in 0..2 {
        let cached = CACHED.verify_bytes(data);
        assert_eq!(
            cached.as_ref().map(|t| t.to_bytes()).map_err(Clone::clone),
            verified
                .as_ref()
                .map(|t| t.to_bytes())
                .map_err(Clone::clone),
            "the cache changed a verification result"
        );
    }

    // An empty block narrows nothing: appending it either works or is refused
    // for a chain-level reason, and the child parses (and verifies if the parent did).
    if let Ok(child) = token.attenuate_with_seed(vec![], &CHILD_SEED) {
        let reparsed =
            UnverifiedToken::from_bytes(child.to_bytes()).expect("an attenuated token parses");
        assert_eq!(reparsed.to_bytes(), child.to_bytes());
        if verified.is_ok() {
            VERIFIER
                .verify_bytes(child.to_bytes())
                .expect("attenuating a valid token yields a valid token");
        }
    }
}

fn check_text(text: &str) {
    let parsed = UnverifiedToken::from_text(text);
    let verified = VERIFIER.verify_text(text);
    if let (Err(p), Err(v)) = (&parsed, &verified) {
        assert_eq!(p, v, "parse and verify disagree on why the text is invalid");
    }
    assert!(
        parsed.is_ok() || verified.is_err(),
        "verified text that does not parse"
    );
    if let Ok(token) = parsed {
        // One token, one text form: padding, whitespace and trailing bits are refused.
        assert_eq!(token.to_text(), text, "parsed a non-canonical text form");
    }
    if let Ok(t) = verified {
        let _ = VERIFIER.authorize(&t, &REQUEST);
    }
}

fuzz_target!(|data: &[u8]| {
    check_bytes(data);
    if let Ok(text) = std::str::from_utf8(data) {
        check_text(text);
    }
});
