//! One answer per token, whatever the path: single and batch verification
//! and every state of the verified-chain cache agree (spec/token.md §7.2,
//! §7.3), on tokens whose keys and signatures carry small-order components.
//!
//! Each token is root block 0, a block 1 whose `next_key` may be
//! mixed-order (`[a]B + T`), and a block 2 signed by that key. Either
//! signature may have a mixed-order `R` (`[r]B + T'`) and may be off by one
//! in `S`. Under the cofactored rule the small-order parts never matter and
//! an `S` off by one always does, so the expected answer is known by
//! construction: valid exactly when neither `S` is off.
//!
//! The paths compared, for the same bytes:
//! * cold: a verifier without a cache (blocks 0–2 in one batch of three);
//! * a cached verifier that has verified nothing yet (the same batch);
//! * root cached: the one-block root token verified first, so blocks 1–2
//!   form a batch of two;
//! * parent cached: the two-block parent, sealed by block 1's key, verified
//!   first, so block 2 is checked alone;
//! * full chain cached: the same verifier asked again.

use baton::forge;
use baton::{Caveat, Keyset, RootKey, Token, Verifier};
use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::hazmat::ExpandedSecretKey;
use ed25519_dalek::{Digest, Sha512};
use proptest::prelude::*;

const SEED0: [u8; 32] = [0x10; 32];
const SEED1: [u8; 32] = [0x11; 32];
const SEED2: [u8; 32] = [0x12; 32];

fn root() -> RootKey {
    RootKey::from_seed(&[0x0f; 32])
}

/// The eight small-order points: multiples of a point of order 8.
fn torsion() -> Vec<EdwardsPoint> {
    let mut y8 = [0u8; 32];
    hex::decode_to_slice(
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        &mut y8,
    )
    .expect("32 bytes of hex");
    let t = CompressedEdwardsY(y8).decompress().expect("a curve point");
    let mut out = vec![EdwardsPoint::default()];
    for _ in 1..8 {
        out.push(out[out.len() - 1] + t);
    }
    out
}

fn scalar_of(seed: &[u8; 32]) -> Scalar {
    ExpandedSecretKey::from(seed).scalar
}

/// A signature by scalar `a` whose key is encoded `key`, with nonce point
/// `[nonce]B + r_torsion` and `S` increased by `s_delta`.
fn sign(
    a: &Scalar,
    key: &[u8; 32],
    msg: &[u8],
    nonce: u64,
    r_torsion: &EdwardsPoint,
    s_delta: u64,
) -> [u8; 64] {
    let nonce = Scalar::from(nonce) + Scalar::from_bytes_mod_order(*key);
    let r = (nonce * ED25519_BASEPOINT_POINT + r_torsion).compress();
    let k = Scalar::from_hash(
        Sha512::new()
            .chain_update(r.as_bytes())
            .chain_update(key)
            .chain_update(msg),
    );
    let s = nonce + k * a + Scalar::from(s_delta);
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(r.as_bytes());
    out[32..].copy_from_slice(s.as_bytes());
    out
}

/// Where the small-order components go and which `S` is off.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Torsion index added to block 1's `next_key`.
    key1: usize,
    /// Torsion index added to the `R` of block 1's and block 2's signatures.
    r1: usize,
    r2: usize,
    /// Whether `S` of block 1's, block 2's signature is off by one.
    off1: bool,
    off2: bool,
    nonce: u64,
}

struct Tokens {
    root: Vec<u8>,
    /// Blocks 0–1 sealed by block 1's (possibly mixed-order) key.
    parent_sealed: Vec<u8>,
    /// Blocks 0–1 with the proof secret of block 1's prime-order part.
    parent_unsealed: Vec<u8>,
    child: Vec<u8>,
}

fn build(p: &Plan) -> Tokens {
    let t = torsion();
    let root_token = Token::mint_with_seed(&root(), vec![Caveat::Label("root".into())], &SEED0)
        .expect("a valid root");
    let a0 = scalar_of(&SEED0);
    let key0 = forge::public_of(&SEED0);
    let a1 = scalar_of(&SEED1);
    let key1 = (a1 * ED25519_BASEPOINT_POINT + t[p.key1])
        .compress()
        .to_bytes();
    let payload1 = forge::raw_payload(None, &key1, &[Caveat::Label("one".into())]);
    let unsealed = forge::append_signed_with(
        root_token.to_bytes(),
        payload1,
        |m| sign(&a0, &key0, m, p.nonce, &t[p.r1], u64::from(p.off1)),
        &SEED1,
    )
    .expect("a token");
    let sealed = forge::seal_with(&unsealed, |m| sign(&a1, &key1, m, p.nonce + 1, &t[0], 0))
        .expect("a token");
    let payload2 = forge::raw_payload(
        None,
        &forge::public_of(&SEED2),
        &[Caveat::Label("two".into())],
    );
    let child = forge::append_signed_with(
        &unsealed,
        payload2,
        |m| sign(&a1, &key1, m, p.nonce + 2, &t[p.r2], u64::from(p.off2)),
        &SEED2,
    )
    .expect("a token");
    Tokens {
        root: root_token.to_bytes().to_vec(),
        parent_sealed: sealed,
        parent_unsealed: unsealed,
        child,
    }
}

fn keyset() -> Keyset {
    Keyset::new().with(root().public())
}

fn code(v: &Verifier, bytes: &[u8]) -> Result<(), &'static str> {
    v.verify_bytes(bytes).map(drop).map_err(|e| e.code())
}

/// Checks every path against the answer stated by construction.
fn check(p: &Plan) -> Result<(), TestCaseError> {
    let tokens = build(p);
    let child_expected: Result<(), &str> = if p.off1 || p.off2 {
        Err("bad_signature")
    } else {
        Ok(())
    };
    let parent_expected: Result<(), &str> = if p.off1 { Err("bad_signature") } else { Ok(()) };
    // The unsealed parent's secret derives [a1]B, which is block 1's key
    // only without a torsion part; the proof is checked before signatures.
    let unsealed_expected = if p.key1 != 0 {
        Err("bad_proof")
    } else {
        parent_expected
    };

    let cold = Verifier::new(keyset());
    prop_assert_eq!(code(&cold, &tokens.child), child_expected, "cold");
    prop_assert_eq!(
        code(&cold, &tokens.parent_sealed),
        parent_expected,
        "cold parent"
    );
    prop_assert_eq!(
        code(&cold, &tokens.parent_unsealed),
        unsealed_expected,
        "cold unsealed parent"
    );

    let empty = Verifier::new(keyset()).with_cache(16);
    prop_assert_eq!(code(&empty, &tokens.child), child_expected, "empty cache");
    prop_assert_eq!(
        code(&empty, &tokens.child),
        child_expected,
        "full chain cached"
    );

    let root_cached = Verifier::new(keyset()).with_cache(16);
    prop_assert_eq!(code(&root_cached, &tokens.root), Ok(()), "root");
    prop_assert_eq!(
        code(&root_cached, &tokens.child),
        child_expected,
        "root cached"
    );
    prop_assert_eq!(
        code(&root_cached, &tokens.parent_unsealed),
        unsealed_expected,
        "root cached, unsealed parent (block 1 alone)"
    );

    let parent_cached = Verifier::new(keyset()).with_cache(16);
    prop_assert_eq!(
        code(&parent_cached, &tokens.parent_sealed),
        parent_expected,
        "sealed parent"
    );
    prop_assert_eq!(
        code(&parent_cached, &tokens.child),
        child_expected,
        "parent cached (block 2 alone)"
    );
    prop_assert_eq!(
        code(&parent_cached, &tokens.child),
        child_expected,
        "parent cached, then full chain cached"
    );
    Ok(())
}

/// Every small-order component in each position, alone, with exact and
/// with defective `S`.
#[test]
fn fixed_cases_every_torsion_point_in_every_position() {
    for i in 0..8 {
        let (off1, off2) = (false, false);
        let mut plans = vec![
            Plan {
                key1: i,
                r1: 0,
                r2: 0,
                off1,
                off2,
                nonce: 1,
            },
            Plan {
                key1: 0,
                r1: i,
                r2: 0,
                off1,
                off2,
                nonce: 2,
            },
            Plan {
                key1: 0,
                r1: 0,
                r2: i,
                off1,
                off2,
                nonce: 3,
            },
        ];
        // Defects with a prime-order part, beside small-order ones everywhere.
        for (off1, off2) in [(false, false), (true, false), (false, true)] {
            plans.push(Plan {
                key1: i,
                r1: 7 - i,
                r2: (i + 3) % 8,
                off1,
                off2,
                nonce: 4,
            });
        }
        for plan in plans {
            check(&plan).unwrap_or_else(|e| panic!("{plan:?}: {e}"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Random placements of small-order components and defects.
    #[test]
    fn every_path_gives_the_stated_answer(
        key1 in 0usize..8,
        r1 in 0usize..8,
        r2 in 0usize..8,
        off1 in proptest::bool::weighted(0.25),
        off2 in proptest::bool::weighted(0.25),
        nonce in any::<u32>(),
    ) {
        check(&Plan { key1, r1, r2, off1, off2, nonce: u64::from(nonce) })?;
    }
}
