//! Ed25519 checks with `verify_strict` semantics, batched (spec/token.md §7).
//!
//! `verify_strict` rejects, beyond plain RFC 8032 verification: a
//! non-canonical `s`, an `R` that is not the canonical encoding of a point,
//! a small-order `R`, and a small-order public key `A`. Batch verification
//! alone checks only the first. So before batching, every `R` and `A` is
//! checked here on its bytes, which costs a few comparisons instead of a
//! point decompression:
//!
//! * a canonical encoding has `y < p` (the sign bit aside);
//! * every small-order point has `y` in {0, 1, p-1, y8, p-y8}, whatever the
//!   sign bit, so comparing the masked `y` against that set finds them all,
//!   including the non-canonical "negative zero" encodings of `y = ±1`.
//!
//! One case remains where batching and `verify_strict` can differ: a
//! signature whose cofactorless equation fails by a nonzero small-order
//! point, which needs a mixed-order `R` or `A`. `verify_strict` always
//! rejects it; the batch equation rejects it unless its random coefficients
//! cancel the small-order residue. Only the holder of the signing key can
//! make such a signature, and it carries no authority the holder could not
//! sign honestly. spec/token.md §7 states this and the tests pin the rest.

use ed25519_dalek::{Signature, VerifyingKey};

/// `p = 2^255 - 19`, little-endian.
const P: [u8; 32] = {
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
};

/// The `y` coordinates (little-endian, sign bit clear) of the eight
/// small-order points of edwards25519.
const SMALL_ORDER_Y: [[u8; 32]; 5] = [
    // y = 0: the two points of order 4.
    [0; 32],
    // y = 1: the identity.
    {
        let mut y = [0; 32];
        y[0] = 1;
        y
    },
    // y = p - 1: the point of order 2.
    {
        let mut y = P;
        y[0] = 0xec;
        y
    },
    // The four points of order 8.
    hex32("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    hex32("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
];

const fn hex32(s: &str) -> [u8; 32] {
    let b = s.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("not a hex digit"),
    }
}

fn masked_y(bytes: &[u8; 32]) -> [u8; 32] {
    let mut y = *bytes;
    y[31] &= 0x7f;
    y
}

/// Whether the `y` of an encoded point is below `p`.
fn canonical_y(y: &[u8; 32]) -> bool {
    // Compare as little-endian integers, most significant byte first.
    for i in (0..32).rev() {
        if y[i] != P[i] {
            return y[i] < P[i];
        }
    }
    false
}

/// Whether `bytes` is a canonical encoding whose `y` is not that of a
/// small-order point. Decompression may still fail (not on the curve).
fn acceptable_point(bytes: &[u8; 32]) -> bool {
    let y = masked_y(bytes);
    canonical_y(&y) && !SMALL_ORDER_Y.contains(&y)
}

/// Whether `bytes` can name a public key: a canonical encoding that is not
/// a small-order point. Whether it lies on the curve at all is only known
/// once [`decompress_key`] runs.
pub(crate) fn acceptable_key_bytes(bytes: &[u8; 32]) -> bool {
    acceptable_point(bytes)
}

/// Decompresses a key whose bytes passed [`acceptable_key_bytes`]. `None`
/// if it is not a curve point.
pub(crate) fn decompress_key(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    let key = VerifyingKey::from_bytes(bytes).ok()?;
    // Redundant with the byte check (see the table test), and cheap.
    (!key.is_weak()).then_some(key)
}

/// Reads a public key as `verify_strict` would accept it, and additionally
/// in canonical form. Returns `None` for a weak or invalid key.
pub(crate) fn parse_key(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    if !acceptable_point(bytes) {
        return None;
    }
    decompress_key(bytes)
}

/// Whether the `R` half of a signature passes `verify_strict`'s checks.
fn acceptable_r(sig: &Signature) -> bool {
    acceptable_point(sig.r_bytes())
}

/// Verifies every `(key, message, signature)` with `verify_strict`
/// semantics. Keys must come from [`parse_key`] or be trusted root keys.
pub(crate) fn verify_all(keys: &[VerifyingKey], messages: &[&[u8]], sigs: &[Signature]) -> bool {
    if !sigs.iter().all(acceptable_r) {
        return false;
    }
    match sigs.len() {
        0 => true,
        1 => keys[0].verify_strict(messages[0], &sigs[0]).is_ok(),
        _ => ed25519_dalek::verify_batch(messages, sigs, keys).is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;
    use curve25519_dalek::traits::{Identity, IsIdentity};
    use ed25519_dalek::{Signer, SigningKey};

    /// The eight small-order points, found from an order-8 point.
    fn small_order_points() -> Vec<EdwardsPoint> {
        let t = CompressedEdwardsY(SMALL_ORDER_Y[4]).decompress().unwrap();
        assert!(t.is_small_order() && !(t + t + t + t).is_identity());
        let mut pts = vec![EdwardsPoint::identity()];
        for _ in 1..8 {
            let last = *pts.last().unwrap();
            pts.push(last + t);
        }
        pts
    }

    #[test]
    fn small_order_table_is_exactly_the_torsion_subgroup() {
        let pts = small_order_points();
        let mut ys: Vec<[u8; 32]> = pts
            .iter()
            .map(|p| masked_y(&p.compress().to_bytes()))
            .collect();
        ys.sort();
        ys.dedup();
        let mut table = SMALL_ORDER_Y.to_vec();
        table.sort();
        assert_eq!(ys, table);
    }

    /// Every encoding `verify_strict` refuses for reasons of `R` or `A`,
    /// the batch path refuses too, and a valid signature passes both.
    #[test]
    fn batch_path_agrees_with_verify_strict() {
        let sk = SigningKey::from_bytes(&[3; 32]);
        let other = SigningKey::from_bytes(&[4; 32]);
        let msg: &[u8] = b"baton";
        let good = sk.sign(msg);
        let good2 = other.sign(msg);
        let vk = sk.verifying_key();

        let mut cases: Vec<(VerifyingKey, Signature)> = vec![(vk, good)];
        // Every small-order R, canonical and with the sign bit flipped.
        for p in small_order_points() {
            for flip in [false, true] {
                let mut b = good.to_bytes();
                let mut r = p.compress().to_bytes();
                if flip {
                    r[31] ^= 0x80;
                }
                b[..32].copy_from_slice(&r);
                cases.push((vk, Signature::from_bytes(&b)));
            }
        }
        // Non-canonical R: y + p for small y, and the same point as good's R but y >= p where possible.
        for small in 0u8..19 {
            let mut r = P;
            r[0] = 0xed + small;
            let mut b = good.to_bytes();
            b[..32].copy_from_slice(&r);
            cases.push((vk, Signature::from_bytes(&b)));
        }
        // Non-canonical s: s + l.
        {
            let l = Scalar::ZERO - Scalar::ONE; // l - 1
            let s = Scalar::from_canonical_bytes(good.s_bytes().to_owned()).unwrap();
            let mut s_plus_l = [0u8; 32];
            // (s - 1) + (l - 1) + 2 = s + l, computed as integers without reduction.
            let a = (s - Scalar::ONE).to_bytes();
            let b = l.to_bytes();
            let mut carry = 2u16;
            for i in 0..32 {
                let v = u16::from(a[i]) + u16::from(b[i]) + carry;
                s_plus_l[i] = v as u8;
                carry = v >> 8;
            }
            let mut sig = good.to_bytes();
            sig[32..].copy_from_slice(&s_plus_l);
            cases.push((vk, Signature::from_bytes(&sig)));
        }
        // A signature under a small-order public key that satisfies the equation:
        // A = identity, R = [s]B, so [s]B = R + [k]A holds for any k.
        {
            let s = Scalar::from(12345u64);
            let r = (s * ED25519_BASEPOINT_POINT).compress().to_bytes();
            let mut b = [0u8; 64];
            b[..32].copy_from_slice(&r);
            b[32..].copy_from_slice(&s.to_bytes());
            let weak =
                VerifyingKey::from_bytes(&EdwardsPoint::identity().compress().to_bytes()).unwrap();
            cases.push((weak, Signature::from_bytes(&b)));
        }

        for (i, (key, sig)) in cases.iter().enumerate() {
            let strict = key.verify_strict(msg, sig).is_ok();
            // Our parse refuses weak keys outright, as verify_strict does.
            let key_ok = parse_key(key.as_bytes()).is_some();
            // Batched: pair the case with a valid signature so the batch path is used.
            let batched =
                key_ok && verify_all(&[*key, other.verifying_key()], &[msg, msg], &[*sig, good2]);
            let single = key_ok && verify_all(&[*key], &[msg], &[*sig]);
            assert_eq!(
                batched, strict,
                "case {i}: batch disagrees with verify_strict"
            );
            assert_eq!(
                single, strict,
                "case {i}: single disagrees with verify_strict"
            );
        }
        assert!(cases.len() > 30);
    }

    #[test]
    fn key_parsing_rejects_non_canonical_and_weak() {
        for p in small_order_points() {
            assert!(parse_key(&p.compress().to_bytes()).is_none());
        }
        let mut non_canonical = P;
        non_canonical[0] = 0xee; // y = p + 1, an alias of the identity
        assert!(parse_key(&non_canonical).is_none());
        assert!(parse_key(SigningKey::from_bytes(&[1; 32]).verifying_key().as_bytes()).is_some());
    }
}
