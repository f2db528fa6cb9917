//! Feeds arbitrary input to the proof-of-possession parser and checker
//! (spec/token.md §12.3–§12.4).
//!
//! * The header parser: whatever parses re-encodes to exactly the input
//!   (one wire form per proof), and the binary form round-trips.
//! * The checker: an arbitrary proof presented with a fixed bound token and
//!   request never panics and is never accepted (the fuzzer does not hold
//!   the holder key); the genuine proof is accepted exactly once.
#![no_main]

use std::sync::LazyLock;

use baton::proof::{HolderProof, PROOF_BYTES};
use baton::{ArgValue, Audience, Caveat, HolderKey, Keyset, Request, RootKey, Token, Verifier};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_800_000_000;

struct Fixture {
    verifier: Verifier,
    token: Token,
    text: String,
    request: Request,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let root = RootKey::from_seed(&[0x42; 32]);
    let holder = HolderKey::from_seed(&[0x44; 32]);
    let token = Token::mint_with_seed(
        &root,
        vec![Caveat::tools(["refund.*"]).expect("valid pattern")],
        &[0x45; 32],
    )
    .and_then(|t| t.attenuate_with_seed(vec![Caveat::Holder(holder.public())], &[0x46; 32]))
    .expect("the fixture token is valid");
    let request = Request::new("refund.issue", NOW)
        .and_then(|r| r.arg("amount", ArgValue::Int(5)))
        .expect("the fixed request is valid")
        .body(b"{}");
    let audience = Audience::new("fuzz").expect("valid audience");
    let verifier = Verifier::new(Keyset::new().with(root.public()))
        .with_audience(audience.clone())
        .with_cache(16);
    // The genuine proof: accepted once, then replayed.
    let genuine = token
        .prove(&holder, &audience, &request, NOW)
        .expect("the holder proves");
    let req = request.clone().with_proof(genuine);
    assert!(verifier.authorize(&token, &req).is_ok());
    assert_eq!(
        verifier.authorize(&token, &req).map(drop).map_err(|e| e.code()),
        Err("proof_replayed")
    );
    let text = token.to_text();
    Fixture {
        verifier,
        token,
        text,
        request,
    }
});

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    if let Ok(s) = std::str::from_utf8(data) {
        let parsed = HolderProof::from_header(s);
        if let Ok(p) = &parsed {
            assert_eq!(p.to_header(), s, "a proof has one wire form");
        }
        let req = f.request.clone().with_proof_header(s);
        let got = f.verifier.authorize(&f.token, &req);
        assert!(got.is_err(), "accepted a proof the fuzzer made");
        if parsed.is_err() {
            assert_eq!(got.map(drop).map_err(|e| e.code()), Err("proof_malformed"));
        }
    }
    if let Ok(bytes) = <[u8; PROOF_BYTES]>::try_from(data) {
        let p = HolderProof::from_bytes(&bytes);
        assert_eq!(p.to_bytes(), bytes);
        assert_eq!(
            HolderProof::from_header(&p.to_header()).map(|q| q.to_bytes()),
            Ok(bytes)
        );
        // Batched with the chain and alone: the same refusal.
        let req = f.request.clone().with_proof(p);
        let alone = f.verifier.authorize(&f.token, &req).map(drop).map_err(|e| e.code());
        let batched = f
            .verifier
            .authorize_text(&f.text, &req)
            .map(drop)
            .map_err(|e| e.code());
        assert!(alone.is_err());
        assert_eq!(alone, batched, "batch and single disagree");
    }
});
