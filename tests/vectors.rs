//! The format v1 test vectors of `spec/vectors/` (spec/token.md §10).
//!
//! * Every `*.json` file is checked against the library as another
//!   implementation would run it: a verifier built from the file's keys,
//!   the token verified, then every request authorized.
//! * The generator (`tests/vectors_gen/mod.rs`) is run in memory and must
//!   reproduce every file byte for byte, README included, so a format change
//!   that forgets to regenerate the vectors fails here.
//! * The set must cover every reason code the vectors are meant to pin.

#[path = "vectors_gen/mod.rs"]
mod vectors_gen;

use std::collections::BTreeSet;

use baton::UnverifiedToken;
use vectors_gen::{Decision, Expected, REGENERATE, Vector};

/// The reason codes the vector set must cover, each at least once, as a
/// verification result or a request denial.
pub const REQUIRED_CODES: &[&str] = &[
    // Text form.
    "bad_prefix",
    "base64_invalid",
    "base64_padding",
    "base64_standard_alphabet",
    "base64_whitespace",
    "too_large",
    // Binary form and structure.
    "non_canonical",
    "cbor_malformed",
    "trailing_bytes",
    "unsupported_version",
    "malformed",
    "no_blocks",
    "unknown_caveat",
    "duplicate_caveat",
    "kid_placement",
    "bad_key",
    // Chain.
    "widening_budget",
    "widening_tools",
    "widening_depth",
    "widening_expiry",
    "widening_resources",
    "widening_arg_bound",
    "depth_exceeded",
    // Keys and signatures.
    "unknown_kid",
    "bad_signature",
    "bad_proof",
    // Authorization.
    "expired",
    "not_yet_valid",
    "invalid_action",
    "action_not_allowed",
    "resource_not_allowed",
    "arg_missing",
    "arg_out_of_bounds",
    // Holder binding and proof of possession (spec/token.md §12).
    "holder_mismatch",
    "holder_unbound",
    "proof_missing",
    "proof_malformed",
    "proof_expired",
    "proof_invalid",
    "proof_replayed",
];

/// Every vector file on disk, by file name, in name order.
fn load() -> Vec<(String, Vector)> {
    let dir = vectors_gen::vectors_dir();
    let mut out: Vec<(String, Vector)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run `{REGENERATE}`", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .expect("vector file names are UTF-8")
                .to_owned();
            let text = std::fs::read_to_string(&p).expect("readable vector file");
            let v: Vector =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: not a vector: {e}"));
            (name, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no vectors in {}", dir.display());
    out
}

/// Checks one vector against the library; returns what differs.
fn check(v: &Vector) -> Result<(), String> {
    let verifier = vectors_gen::verifier(&v.root_public_keys, v.clock_skew_seconds)?;
    let verifier = vectors_gen::with_audience(verifier, v.audience.as_deref())?;
    let result = verifier.verify_text(&v.token);
    if let Some(hex) = &v.token_hex {
        // The binary form and the text form must be the same token and be
        // judged the same way.
        let bytes = hex::decode(hex).map_err(|e| format!("token_hex: {e}"))?;
        let text = format!(
            "{}{}",
            baton::token::TEXT_PREFIX,
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &bytes)
        );
        if text != v.token {
            return Err("token is not the text form of token_hex".into());
        }
        let from_bytes = verifier.verify_bytes(&bytes).err().map(|e| e.code());
        if from_bytes != result.as_ref().err().map(|e| e.code()) {
            return Err(format!(
                "binary and text forms disagree: {from_bytes:?} from token_hex"
            ));
        }
    }
    match (&v.expected, result) {
        (Expected::Invalid { code }, Err(e)) if e.code() == code => {
            // A rejection that needs a key must come after a successful
            // parse, or the vector is testing an earlier check than it names.
            let parsed = UnverifiedToken::from_text(&v.token).err().map(|e| e.code());
            match code.as_str() {
                "unknown_kid" | "bad_signature" | "bad_proof" if parsed.is_some() => Err(format!(
                    "expected {code}, but it does not even parse: {parsed:?}"
                )),
                _ => Ok(()),
            }
        }
        (Expected::Invalid { code }, Err(e)) => {
            Err(format!("expected {code}, library gives {}", e.code()))
        }
        (Expected::Invalid { code }, Ok(_)) => Err(format!("expected {code}, token verifies")),
        (Expected::Valid, Err(e)) => Err(format!("expected valid, library gives {}", e.code())),
        (Expected::Valid, Ok(token)) => {
            let authority = vectors_gen::authority_json(&token);
            if v.authority.as_ref() != Some(&authority) {
                return Err(format!(
                    "authority differs:\n  file:    {:?}\n  library: {authority:?}",
                    v.authority
                ));
            }
            if v.requests.is_empty() {
                return Err("a valid vector must have requests".into());
            }
            for r in &v.requests {
                let got = vectors_gen::decide(&verifier, &token, r);
                if got != r.expected {
                    return Err(format!(
                        "request {:?}: file says {:?}, library decides {got:?}",
                        r.note, r.expected
                    ));
                }
            }
            Ok(())
        }
    }
}

#[test]
fn every_vector_matches_the_library() {
    let failures: Vec<String> = load()
        .iter()
        .filter_map(|(file, v)| check(v).err().map(|e| format!("{file}: {e}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} vector(s) disagree with the library:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn files_match_the_generator() {
    let dir = vectors_gen::vectors_dir();
    let generated = vectors_gen::render(&vectors_gen::vectors());
    let mut stale = vec![];
    for (name, contents) in &generated {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(on_disk) if &on_disk == contents => {}
            Ok(_) => stale.push(format!("{name} differs")),
            Err(_) => stale.push(format!("{name} is missing")),
        }
    }
    let names: BTreeSet<&str> = generated.iter().map(|(n, _)| n.as_str()).collect();
    // Listed by name only, so a file that no longer parses is reported as
    // drift here rather than aborting the comparison.
    for entry in std::fs::read_dir(&dir).expect("spec/vectors/ exists") {
        let path = entry.expect("readable directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".json") && !names.contains(name) {
            stale.push(format!("{name} is no longer generated"));
        }
    }
    assert!(
        stale.is_empty(),
        "spec/vectors/ is out of date with tests/vectors_gen/mod.rs:\n  {}\n\
         Run `{REGENERATE}`, review the diff and commit it.",
        stale.join("\n  ")
    );
}

#[test]
fn vectors_cover_every_reason_code() {
    let vectors = load();
    let mut codes = BTreeSet::new();
    for (_, v) in &vectors {
        if let Expected::Invalid { code } = &v.expected {
            codes.insert(code.clone());
        }
        for r in &v.requests {
            if let Decision::Deny { code } = &r.expected {
                codes.insert(code.clone());
            }
        }
    }
    let missing: Vec<&&str> = REQUIRED_CODES
        .iter()
        .filter(|c| !codes.contains(**c))
        .collect();
    assert!(missing.is_empty(), "no vector covers {missing:?}");

    let valid: Vec<&Vector> = vectors
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v.expected == Expected::Valid)
        .collect();
    let authority = |v: &&Vector| v.authority.clone().expect("valid vectors have one");
    assert!(
        valid.iter().any(|v| authority(v).block_ids.len() == 1),
        "a valid one-block vector"
    );
    assert!(
        valid.iter().any(|v| authority(v).block_ids.len() >= 3),
        "a valid multi-block vector"
    );
    assert!(
        valid.iter().any(|v| authority(v).sealed),
        "a valid sealed vector"
    );
}
