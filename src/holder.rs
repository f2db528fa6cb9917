//! Holder keys: the delegate's own Ed25519 key pair that a `holder` caveat
//! binds a token to (spec/token.md §12).
//!
//! A delegate makes its key pair itself ([`HolderKey::generate`], `baton
//! keygen --holder`) and hands out only the public half. The delegator
//! appends a block declaring [`crate::Caveat::Holder`] with that public key,
//! and the block's `next_key` is the same key, so every later block, seal
//! and per-request proof ([`crate::proof::HolderProof`]) is signed with the
//! holder's secret, which never travels. A bound token carries no proof
//! secret: whoever reads its text holds nothing they can sign with.
//!
//! Holder keys have their own text prefixes, so a holder key can never be
//! mistaken for a root key or the other way round.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::keys::{self, KeyError};
use crate::sig;

/// Text prefix of a holder secret key.
pub const HOLDER_SECRET_PREFIX: &str = "baton_hsk1_";
/// Text prefix of a holder public key.
pub const HOLDER_PUBLIC_PREFIX: &str = "baton_hpk1_";

/// A holder's public key: a canonical, prime-order Ed25519 point. As a
/// caveat it is carried as its 32 bytes; as configuration it is read from
/// `baton_hpk1_…` text.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HolderPublicKey(pub(crate) [u8; 32]);

impl HolderPublicKey {
    /// Reads a holder public key from its 32 bytes: a canonical encoding of
    /// a prime-order point (no small-order or mixed-order key).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = sig::parse_key(bytes).ok_or(KeyError::WeakKey)?;
        if !key.to_edwards().is_torsion_free() {
            return Err(KeyError::WeakKey);
        }
        Ok(Self(*bytes))
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The 32-byte encoding, borrowed.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The text form, `baton_hpk1_` followed by base64url.
    pub fn to_text(&self) -> String {
        format!("{HOLDER_PUBLIC_PREFIX}{}", URL_SAFE_NO_PAD.encode(self.0))
    }

    /// Reads the text form.
    pub fn from_text(s: &str) -> Result<Self, KeyError> {
        Self::from_bytes(&keys::decode_key_text(s, HOLDER_PUBLIC_PREFIX)?)
    }

    /// The key for checking signatures; `None` if the bytes are not a
    /// curve point (only possible for bytes read from a token caveat).
    pub(crate) fn verifying_key(&self) -> Option<VerifyingKey> {
        sig::decompress_key(&self.0)
    }
}

impl fmt::Debug for HolderPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HolderPublicKey({})", self.to_text())
    }
}

impl fmt::Display for HolderPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// A holder's secret key. Signs the blocks that follow its binding, the
/// seal, and every proof of possession. Wiped from memory on drop.
pub struct HolderKey {
    pub(crate) key: SigningKey,
}

impl HolderKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<Self, KeyError> {
        let seed = keys::random_seed()?;
        Ok(Self::from_seed(&seed))
    }

    /// The key with this 32-byte seed (RFC 8032 secret key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The public half.
    pub fn public(&self) -> HolderPublicKey {
        // A key derived from a seed is [a]B with a clamped scalar: canonical and prime-order.
        HolderPublicKey(self.key.verifying_key().to_bytes())
    }

    /// The text form, `baton_hsk1_` followed by base64url of the seed. The
    /// returned string is wiped on drop.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{HOLDER_SECRET_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(self.key.to_bytes())
        ))
    }

    /// Reads the text form.
    pub fn from_text(s: &str) -> Result<Self, KeyError> {
        let seed = Zeroizing::new(keys::decode_key_text(s, HOLDER_SECRET_PREFIX)?);
        Ok(Self::from_seed(&seed))
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Signature {
        self.key.sign(message)
    }
}

impl fmt::Debug for HolderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HolderKey(public={})", self.public().to_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip_and_do_not_mix_with_root_keys() {
        let k = HolderKey::from_seed(&[9; 32]);
        let back = HolderKey::from_text(&k.to_text()).unwrap();
        assert_eq!(back.public(), k.public());
        assert_eq!(
            HolderPublicKey::from_text(&k.public().to_text()).unwrap(),
            k.public()
        );
        let root = crate::RootKey::from_seed(&[9; 32]);
        assert_eq!(
            HolderKey::from_text(&root.to_text()).map(|_| ()),
            Err(KeyError::Encoding)
        );
        assert_eq!(
            HolderPublicKey::from_text(&root.public().to_text()),
            Err(KeyError::Encoding)
        );
    }

    #[test]
    fn weak_and_mixed_order_keys_are_refused() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            HolderPublicKey::from_bytes(&identity),
            Err(KeyError::WeakKey)
        );
        // A prime-order key plus the point of order 2: canonical, not small, not torsion-free.
        let good = HolderKey::from_seed(&[3; 32]).public();
        let p = curve25519_dalek::edwards::CompressedEdwardsY(good.0)
            .decompress()
            .unwrap();
        let mut t = [0u8; 32];
        t[..32].copy_from_slice(&{
            let mut y = [0xff; 32];
            y[0] = 0xec;
            y[31] = 0x7f;
            y
        });
        let order2 = curve25519_dalek::edwards::CompressedEdwardsY(t)
            .decompress()
            .unwrap();
        let mixed = (p + order2).compress().to_bytes();
        assert_eq!(HolderPublicKey::from_bytes(&mixed), Err(KeyError::WeakKey));
    }
}
