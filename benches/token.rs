//! Token costs, each beside its physical floor measured in the same run.
//!
//! A figure is what the library does; its floor is the Ed25519 work that no
//! implementation of format v1 can skip (key generation, signing, batch
//! verification over the very same messages). `benches/ratios.sh` prints
//! figure / floor from the stored medians. Names pair up:
//! `verify/cold/4` sits beside `verify/floor/4`.
//!
//! * `mint`: block 0 of a typical tenant token. Floor: derive the
//!   ephemeral public key from a seed, plus one signature over a message of
//!   the block's size (the root key is already expanded in a `RootKey`).
//! * `attenuate`: one block appended to a three-block token. Floor: the same
//!   keygen plus one signature. `attenuate` draws its seed from the OS;
//!   `attenuate_seeded` shows what that costs.
//! * `verify/{cold,warm,prefix}/n`: parse + verify + authorize from the text
//!   form. `cold`: no cache. `warm`: a cached verifier sees the same token
//!   again. `prefix`: a cached verifier that verified the `n - 1` block
//!   parent sees the child for the first time. Floors: the cofactored batch
//!   check of spec/token.md §7 over the token's own `n` signatures and
//!   messages with keys already decompressed (`[8]([S]B − R − [k]A) = 0`
//!   for one), plus deriving the proof secret's public key; for `prefix`,
//!   one cofactored check plus the derive. The floor is written here from
//!   the spec with curve25519-dalek, independently of the library.
//! * `holder/*/4`: the gateway path for a 4-block token, unbound against
//!   holder-bound (block 3 binds a holder key), side by side. `unbound_cold`
//!   is `verify/cold/4`; `bound_cold` is `Verifier::authorize_text` with a
//!   fresh proof of possession per call: parse, the 4 chain signatures and
//!   the proof in one batch, authorize, replay-store insert. Floors: the
//!   cofactored batch over the same 4 signatures plus the derive
//!   (`unbound_floor`), and over the 4 signatures plus the proof's
//!   (`bound_floor`: chain signatures + 1). `*_warm`: the chain is cached;
//!   the bound figure still checks the proof (floor: that one signature,
//!   `bound_warm_floor`) and the replay store.
//! * `parts`: pieces of the figures, to see where time above the floor goes.
//!   `torsion_check` is what the rejected alternative to the cofactored
//!   rule would add per point (a `next_key` or an `R`): `[L]P = 0`.

use std::hint::black_box;
use std::time::Duration;

use baton::proof::request_hash;
use baton::{
    Audience, Caveat, HolderKey, HolderProof, Keyset, Request, RootKey, Token, Unit,
    UnverifiedToken, Verifier,
};
use ciborium::Value;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Digest, Sha512, Signature, Signer, SigningKey, VerifyingKey};

const USD: u64 = 100_000_000;
const NOW: u64 = 1_800_000_000;
const MAX_BLOCKS: usize = 8;

/// Domain tags and version byte of signed messages (spec/token.md §5.2).
const TAG_ROOT: &[u8] = b"baton/v1/root\0";
const TAG_BLOCK: &[u8] = b"baton/v1/block\0";
const VERSION: u8 = 1;

fn root() -> RootKey {
    RootKey::from_seed(&[0x42; 32])
}

/// A typical tenant root: budget, three tool families, depth, expiry, label.
fn root_caveats() -> Vec<Caveat> {
    vec![
        Caveat::budget(Unit::UsdMicrocents, 500 * USD),
        Caveat::tools(["crm.*", "refund.*", "email.*"]).expect("valid patterns"),
        Caveat::Depth(10),
        Caveat::Expiry {
            not_after: NOW + 3600,
            not_before: None,
        },
        Caveat::Label("acme-support".into()),
    ]
}

/// A typical delegation block: a smaller budget, fewer tools, a label.
fn child_caveats(index: usize) -> Vec<Caveat> {
    vec![
        Caveat::budget(Unit::UsdMicrocents, (500 * USD) >> index),
        Caveat::tools(["crm.*", "refund.issue"]).expect("valid patterns"),
        Caveat::Label(format!("agent-{index}")),
    ]
}

/// `chain[k]` has `k + 1` blocks; each extends the one before.
fn chain(root: &RootKey) -> Vec<Token> {
    let mut out = vec![
        Token::mint_with_seed(root, root_caveats(), &[0; 32]).expect("root caveats are valid"),
    ];
    for i in 1..MAX_BLOCKS {
        let seed = [u8::try_from(i).expect("fewer than 256 blocks"); 32];
        let child = out[i - 1]
            .attenuate_with_seed(child_caveats(i), &seed)
            .expect("child caveats narrow their parent");
        out.push(child);
    }
    out
}

/// What a verifier must check for one token: every block's key, message
/// and signature, and the proof secret. Rebuilt here from the binary form
/// and the spec, independently of the library.
struct SignedParts {
    keys: Vec<VerifyingKey>,
    messages: Vec<Vec<u8>>,
    sigs: Vec<Signature>,
    secret: [u8; 32],
}

fn bytes(v: &Value) -> &[u8] {
    v.as_bytes().expect("a byte string")
}

fn array(v: &Value) -> &[Value] {
    v.as_array().expect("an array")
}

fn signed_parts(token: &Token, root: &VerifyingKey) -> SignedParts {
    // Format v1: [version, [payload, signature, payload, signature, ...], proof].
    let top: Value = ciborium::de::from_reader(token.to_bytes()).expect("a token is CBOR");
    let top = array(&top);
    let mut parts = SignedParts {
        keys: vec![*root],
        messages: vec![],
        sigs: vec![],
        // A holder-bound token's proof field is empty: no secret to derive
        // (the `holder` floors never read this field).
        secret: bytes(&top[2]).try_into().unwrap_or([0; 32]),
    };
    for block in array(&top[1]).chunks(2) {
        let [payload, sig] = block else {
            panic!("blocks alternate payload and signature")
        };
        let (payload, sig) = (bytes(payload), bytes(sig));
        let mut m = Vec::new();
        match parts.sigs.last() {
            None => m.extend_from_slice(TAG_ROOT),
            Some(_) => m.extend_from_slice(TAG_BLOCK),
        }
        m.push(VERSION);
        if let Some(prev) = parts.sigs.last() {
            m.extend_from_slice(&prev.to_bytes());
        }
        m.extend_from_slice(payload);
        parts.messages.push(m);
        parts
            .sigs
            .push(Signature::from_slice(sig).expect("signatures are 64 bytes"));
        // A body is [kid, next_key, caveats] in block 0, [next_key, caveats] after.
        let body: Value = ciborium::de::from_reader(payload).expect("a payload is CBOR");
        let body = array(&body);
        let next: [u8; 32] = bytes(&body[body.len() - 2])
            .try_into()
            .expect("next_key is 32 bytes");
        parts
            .keys
            .push(VerifyingKey::from_bytes(&next).expect("next_key is a point"));
    }
    // The last next_key verifies the proof, not a block.
    parts.keys.pop();
    let refs: Vec<&[u8]> = parts.messages.iter().map(Vec::as_slice).collect();
    assert!(
        floor_verify(&parts.keys, &refs, &parts.sigs),
        "the floor checks the same signatures the library does"
    );
    parts
}

/// `S`, `R` decompressed and `k = SHA-512(R || A || M) mod L`.
fn floor_prepare(
    key: &VerifyingKey,
    msg: &[u8],
    sig: &Signature,
) -> (Scalar, EdwardsPoint, Scalar) {
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(*sig.s_bytes())).expect("S < L");
    let r = CompressedEdwardsY(*sig.r_bytes())
        .decompress()
        .expect("R is a point");
    let k = Scalar::from_hash(
        Sha512::new()
            .chain_update(sig.r_bytes())
            .chain_update(key.as_bytes())
            .chain_update(msg),
    );
    (s, r, k)
}

/// The cofactored rule: one signature alone, two or more as one random
/// linear combination with 128-bit coefficients drawn from a hash of the inputs.
fn floor_verify(keys: &[VerifyingKey], msgs: &[&[u8]], sigs: &[Signature]) -> bool {
    if sigs.len() == 1 {
        let (s, r, k) = floor_prepare(&keys[0], msgs[0], &sigs[0]);
        let a = keys[0].to_edwards();
        let p = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &-a, &s) - r;
        return p.mul_by_cofactor().is_identity();
    }
    let prepared: Vec<_> = (0..sigs.len())
        .map(|i| floor_prepare(&keys[i], msgs[i], &sigs[i]))
        .collect();
    let mut t = blake3::Hasher::new();
    for (s, _, k) in &prepared {
        t.update(k.as_bytes());
        t.update(s.as_bytes());
    }
    let mut xof = t.finalize_xof();
    let zs: Vec<Scalar> = prepared
        .iter()
        .map(|_| {
            let mut z = [0u8; 16];
            xof.fill(&mut z);
            Scalar::from(u128::from_le_bytes(z))
        })
        .collect();
    let b: Scalar = prepared.iter().zip(&zs).map(|((s, _, _), z)| z * s).sum();
    let scalars = std::iter::once(-b)
        .chain(zs.iter().copied())
        .chain(prepared.iter().zip(&zs).map(|((_, _, k), z)| z * k));
    let points = std::iter::once(ED25519_BASEPOINT_POINT)
        .chain(prepared.iter().map(|(_, r, _)| *r))
        .chain(keys.iter().map(VerifyingKey::to_edwards));
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

fn derive(secret: &[u8; 32]) -> VerifyingKey {
    SigningKey::from_bytes(secret).verifying_key()
}

fn mint(c: &mut Criterion) {
    let root = root();
    let token = Token::mint_with_seed(&root, root_caveats(), &[0; 32]).expect("valid root");
    let parts = signed_parts(&token, &root_pub(&root));
    let message = parts.messages[0].clone();
    let signer = SigningKey::from_bytes(&[0x42; 32]);

    let mut g = c.benchmark_group("mint");
    g.bench_function("figure", |b| {
        b.iter_batched(
            root_caveats,
            |cav| Token::mint(black_box(&root), cav).expect("valid root"),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("figure_seeded", |b| {
        b.iter_batched(
            root_caveats,
            |cav| Token::mint_with_seed(black_box(&root), cav, &[7; 32]).expect("valid root"),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("floor", |b| {
        b.iter(|| {
            let next = derive(black_box(&[7; 32]));
            (next, signer.sign(black_box(&message)))
        })
    });
    g.finish();
}

fn attenuate(c: &mut Criterion) {
    let root = root();
    let tokens = chain(&root);
    let parent = &tokens[2];
    let child = &tokens[3];
    let parts = signed_parts(child, &root_pub(&root));
    let message = parts.messages[3].clone();
    let signer = SigningKey::from_bytes(&parts.secret);

    let mut g = c.benchmark_group("attenuate");
    g.bench_function("figure", |b| {
        b.iter_batched(
            || child_caveats(3),
            |cav| black_box(parent).attenuate(cav).expect("narrows"),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("figure_seeded", |b| {
        b.iter_batched(
            || child_caveats(3),
            |cav| {
                black_box(parent)
                    .attenuate_with_seed(cav, &[9; 32])
                    .expect("narrows")
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("floor", |b| {
        b.iter(|| {
            let next = derive(black_box(&[9; 32]));
            (next, signer.sign(black_box(&message)))
        })
    });
    g.finish();
}

fn verify(c: &mut Criterion) {
    let root = root();
    let root_pub = root_pub(&root);
    let keyset = Keyset::new().with(root.public());
    let tokens = chain(&root);
    let texts: Vec<String> = tokens.iter().map(Token::to_text).collect();
    let request = Request::new("crm.read", NOW).expect("valid action");
    // A verifier without a cache keeps no state between calls, so reusing
    // one is the same as building a fresh one each time.
    let cold = Verifier::new(keyset.clone());

    let mut g = c.benchmark_group("verify");
    for n in 1..=MAX_BLOCKS {
        let text = &texts[n - 1];
        let parts = signed_parts(&tokens[n - 1], &root_pub);
        let refs: Vec<&[u8]> = parts.messages.iter().map(Vec::as_slice).collect();

        g.bench_function(format!("cold/{n}"), |b| {
            b.iter(|| {
                let t = cold.verify_text(black_box(text)).expect("valid");
                cold.authorize(&t, &request).expect("allowed")
            })
        });
        g.bench_function(format!("floor/{n}"), |b| {
            b.iter(|| {
                let ok = floor_verify(&parts.keys, black_box(&refs), &parts.sigs);
                (ok, derive(black_box(&parts.secret)))
            })
        });

        let warm = Verifier::new(keyset.clone()).with_cache(64);
        warm.verify_text(text).expect("valid");
        g.bench_function(format!("warm/{n}"), |b| {
            b.iter(|| {
                let t = warm.verify_text(black_box(text)).expect("valid");
                warm.authorize(&t, &request).expect("allowed")
            })
        });

        if n >= 2 {
            let parent = &texts[n - 2];
            g.bench_function(format!("prefix/{n}"), |b| {
                b.iter_batched(
                    || {
                        let v = Verifier::new(keyset.clone()).with_cache(64);
                        v.verify_text(parent).expect("valid");
                        v
                    },
                    |v| {
                        let t = v.verify_text(black_box(text)).expect("valid");
                        let a = v.authorize(&t, &request).expect("allowed");
                        // Returned so that dropping the cache is not timed.
                        (v, t, a)
                    },
                    BatchSize::SmallInput,
                )
            });
            let last = n - 1;
            g.bench_function(format!("prefix_floor/{n}"), |b| {
                b.iter(|| {
                    let ok = floor_verify(
                        &parts.keys[last..],
                        black_box(&refs[last..]),
                        &parts.sigs[last..],
                    );
                    (ok, derive(black_box(&parts.secret)))
                })
            });
        }
    }
    g.finish();
}

/// The proof message of spec/token.md §12.3, written from the spec.
fn proof_message(
    audience: &str,
    block: &[u8; 32],
    proof: &HolderProof,
    hash: &[u8; 32],
) -> Vec<u8> {
    let mut m = b"baton/v1/proof\0".to_vec();
    m.push(VERSION);
    m.extend_from_slice(
        blake3::Hasher::new_derive_key("baton/v1 proof audience")
            .update(audience.as_bytes())
            .finalize()
            .as_bytes(),
    );
    m.extend_from_slice(block);
    m.extend_from_slice(&proof.ts().to_be_bytes());
    m.extend_from_slice(proof.nonce());
    m.extend_from_slice(hash);
    m
}

/// Unbound against holder-bound, 4 blocks, cold and cached.
fn holder(c: &mut Criterion) {
    const N: usize = 4;
    const AUDIENCE: &str = "gateway.example";
    let root = root();
    let root_pub = root_pub(&root);
    let keyset = Keyset::new().with(root.public());
    let tokens = chain(&root);
    let unbound = &tokens[N - 1];
    let agent = HolderKey::from_seed(&[0x77; 32]);
    let mut caveats = child_caveats(N - 1);
    caveats.push(Caveat::Holder(agent.public()));
    let bound = tokens[N - 2]
        .attenuate_with_seed(caveats, &[0x78; 32])
        .expect("the bound block narrows its parent");
    let audience = Audience::new(AUDIENCE).expect("valid audience");
    let request = Request::new("crm.read", NOW).expect("valid action");
    let (unbound_text, bound_text) = (unbound.to_text(), bound.to_text());
    // Room for every proof the run makes: they all share one second.
    let fresh = || {
        Verifier::new(keyset.clone())
            .with_audience(audience.clone())
            .with_replay_capacity(1 << 23, 1 << 23)
    };
    let proved = || {
        let p = bound
            .prove(&agent, &audience, &request, NOW)
            .expect("the holder proves");
        request.clone().with_proof(p)
    };

    // Floors, from the spec.
    let parts = signed_parts(unbound, &root_pub);
    let refs: Vec<&[u8]> = parts.messages.iter().map(Vec::as_slice).collect();
    let bparts = signed_parts(&bound, &root_pub);
    let sample = bound
        .prove(&agent, &audience, &request, NOW)
        .expect("the holder proves");
    let last = bound.block_ids()[N - 1].0;
    let pmsg = proof_message(AUDIENCE, &last, &sample, &request_hash(&request));
    let psig = Signature::from_bytes(
        sample.to_bytes()[24..]
            .try_into()
            .expect("the signature is the last 64 bytes"),
    );
    let hkey = VerifyingKey::from_bytes(agent.public().as_bytes()).expect("a point");
    let mut bkeys = bparts.keys.clone();
    bkeys.push(hkey);
    let mut bmsgs: Vec<&[u8]> = bparts.messages.iter().map(Vec::as_slice).collect();
    bmsgs.push(&pmsg);
    let mut bsigs = bparts.sigs.clone();
    bsigs.push(psig);
    assert!(
        floor_verify(&bkeys, &bmsgs, &bsigs),
        "the floor checks the same proof the library does"
    );

    let mut g = c.benchmark_group("holder");
    let cold = fresh();
    g.bench_function(format!("unbound_cold/{N}"), |b| {
        b.iter(|| {
            cold.authorize_text(black_box(&unbound_text), &request)
                .expect("allowed")
        })
    });
    g.bench_function(format!("unbound_floor/{N}"), |b| {
        b.iter(|| {
            let ok = floor_verify(&parts.keys, black_box(&refs), &parts.sigs);
            (ok, derive(black_box(&parts.secret)))
        })
    });
    g.bench_function(format!("bound_cold/{N}"), |b| {
        b.iter_batched(
            proved,
            |r| {
                cold.authorize_text(black_box(&bound_text), &r)
                    .expect("allowed")
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function(format!("bound_floor/{N}"), |b| {
        b.iter(|| floor_verify(&bkeys, black_box(&bmsgs), &bsigs))
    });
    let warm = fresh().with_cache(64);
    warm.verify_text(&unbound_text).expect("valid");
    warm.verify_text(&bound_text).expect("valid");
    g.bench_function(format!("unbound_warm/{N}"), |b| {
        b.iter(|| {
            warm.authorize_text(black_box(&unbound_text), &request)
                .expect("allowed")
        })
    });
    g.bench_function(format!("bound_warm/{N}"), |b| {
        b.iter_batched(
            proved,
            |r| {
                warm.authorize_text(black_box(&bound_text), &r)
                    .expect("allowed")
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function(format!("bound_warm_floor/{N}"), |b| {
        b.iter(|| floor_verify(&[hkey], black_box(&[pmsg.as_slice()]), &[psig]))
    });
    g.finish();
}

/// Pieces of the figures above, to attribute time beyond the floor.
fn parts(c: &mut Criterion) {
    let root = root();
    let tokens = chain(&root);
    let next_key = *derive(&[9; 32]).as_bytes();

    let mut g = c.benchmark_group("parts");
    for n in [1, 4, 8] {
        let text = tokens[n - 1].to_text();
        g.bench_function(format!("parse/{n}"), |b| {
            b.iter(|| UnverifiedToken::from_text(black_box(&text)).expect("valid"))
        });
    }
    g.bench_function("keygen", |b| b.iter(|| derive(black_box(&[9; 32]))));
    g.bench_function("decompress", |b| {
        b.iter(|| VerifyingKey::from_bytes(black_box(&next_key)).expect("a point"))
    });
    let point = CompressedEdwardsY(next_key).decompress().expect("a point");
    g.bench_function("torsion_check", |b| {
        b.iter(|| black_box(&point).is_torsion_free())
    });
    g.bench_function("getrandom", |b| {
        b.iter(|| {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).expect("OS randomness");
            seed
        })
    });
    g.finish();
}

/// The root's public key as the floors use it: already decompressed.
fn root_pub(root: &RootKey) -> VerifyingKey {
    VerifyingKey::from_bytes(&root.public().to_bytes()).expect("a root key is a point")
}

criterion_group! {
    name = token;
    // Moderate times: the whole run takes a few minutes on two cores.
    config = Criterion::default()
        .sample_size(40)
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(3));
    targets = mint, attenuate, verify, holder, parts
}
criterion_main!(token);
