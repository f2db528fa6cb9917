//! Root keys, key ids, keysets and block ids (spec/token.md §5).
//!
//! A verifier trusts only the public keys in its own [`Keyset`]. Block 0 of a
//! token names its root key by [`Kid`]; the key itself is never read from the
//! token.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::sig;

/// Text prefix of a root secret key.
pub const SECRET_KEY_PREFIX: &str = "baton_sk1_";
/// Text prefix of a root public key.
pub const PUBLIC_KEY_PREFIX: &str = "baton_pk1_";

/// A key could not be read or generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text lacks the expected prefix or is not 32 bytes of base64url.
    #[error("not a baton key in text form")]
    Encoding,
    /// The public key is not a canonical encoding of a prime-order curve point.
    #[error("public key is not a canonical prime-order point")]
    WeakKey,
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Rng,
}

impl KeyError {
    /// The stable reason code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Encoding => "key_encoding",
            Self::WeakKey => "weak_key",
            Self::Rng => "rng_failed",
        }
    }
}

/// An 8-byte key id: the first 8 bytes of BLAKE3 in derive-key mode with
/// context `baton/v1 kid` over the 32-byte public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kid(pub [u8; 8]);

impl Kid {
    /// The key id of `public`.
    pub fn of(public: &[u8; 32]) -> Self {
        let h = blake3::Hasher::new_derive_key("baton/v1 kid")
            .update(public)
            .finalize();
        let mut kid = [0; 8];
        kid.copy_from_slice(&h.as_bytes()[..8]);
        Self(kid)
    }
}

impl fmt::Display for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::hex::encode(&self.0, &mut [0u8; 16]))
    }
}
impl fmt::Debug for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kid({self})")
    }
}

/// A block's stable id: BLAKE3 derive-key `baton/v1 block id` over the
/// previous block's id (32 zero bytes for block 0) and the block's signature.
/// It names the block's budget scope in the ledger and is what revocation
/// targets.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockId(pub [u8; 32]);

impl BlockId {
    pub(crate) fn derive(prev: Option<&BlockId>, signature: &[u8; 64]) -> Self {
        let mut h = blake3::Hasher::new_derive_key("baton/v1 block id");
        h.update(prev.map_or(&[0u8; 32], |p| &p.0));
        h.update(signature);
        Self(*h.finalize().as_bytes())
    }

    /// Parses the 64-character lower-case hex form.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0; 32];
        (s.len() == 64 && !s.bytes().any(|b| b.is_ascii_uppercase()))
            .then(|| crate::hex::decode(s, &mut out))
            .flatten()
            .map(|()| Self(out))
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Into a stack buffer: block ids are printed on the ledger's hot path.
        f.write_str(crate::hex::encode(&self.0, &mut [0u8; 64]))
    }
}
impl fmt::Debug for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockId({self})")
    }
}

/// A root public key: a canonical, prime-order Ed25519 point.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    pub(crate) key: VerifyingKey,
}

impl PublicKey {
    /// Reads a public key from its 32 bytes. Root keys are configuration,
    /// checked once, so this also requires the point to be torsion-free.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = sig::parse_key(bytes).ok_or(KeyError::WeakKey)?;
        if !key.to_edwards().is_torsion_free() {
            return Err(KeyError::WeakKey);
        }
        Ok(Self { key })
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The key id.
    pub fn kid(&self) -> Kid {
        Kid::of(self.key.as_bytes())
    }

    /// The text form, `baton_pk1_` followed by base64url.
    pub fn to_text(&self) -> String {
        format!(
            "{PUBLIC_KEY_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(self.key.as_bytes())
        )
    }

    /// Reads the text form.
    pub fn from_text(s: &str) -> Result<Self, KeyError> {
        Self::from_bytes(&decode_key_text(s, PUBLIC_KEY_PREFIX)?)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_text())
    }
}

pub(crate) fn decode_key_text(s: &str, prefix: &str) -> Result<[u8; 32], KeyError> {
    let body = s
        .trim_end_matches(['\n', '\r'])
        .strip_prefix(prefix)
        .ok_or(KeyError::Encoding)?;
    let bytes = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| KeyError::Encoding)?,
    );
    bytes.as_slice().try_into().map_err(|_| KeyError::Encoding)
}

/// Fills a fresh 32-byte seed from the operating system.
pub(crate) fn random_seed() -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|_| KeyError::Rng)?;
    Ok(seed)
}

/// A root secret key, which mints authority blocks. Wiped from memory on drop.
pub struct RootKey {
    pub(crate) key: SigningKey,
}

impl RootKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<Self, KeyError> {
        let seed = random_seed()?;
        Ok(Self::from_seed(&seed))
    }

    /// The key with this 32-byte seed (RFC 8032 secret key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: self.key.verifying_key(),
        }
    }

    /// The key id.
    pub fn kid(&self) -> Kid {
        self.public().kid()
    }

    /// The text form, `baton_sk1_` followed by base64url of the seed. The
    /// returned string is wiped on drop.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{SECRET_KEY_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(self.key.to_bytes())
        ))
    }

    /// Reads the text form.
    pub fn from_text(s: &str) -> Result<Self, KeyError> {
        let seed = Zeroizing::new(decode_key_text(s, SECRET_KEY_PREFIX)?);
        Ok(Self::from_seed(&seed))
    }
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootKey(kid={})", self.kid())
    }
}

/// Whether a key may still verify tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyStatus {
    /// Mints new tokens and verifies old ones.
    Active,
    /// Verifies outstanding tokens only; kept during rotation.
    Retired,
}

/// The root public keys a verifier trusts, by key id. Holding several
/// lets a verifier accept tokens from the old and new key during rotation.
#[derive(Debug, Clone, Default)]
pub struct Keyset {
    keys: BTreeMap<Kid, (PublicKey, KeyStatus)>,
}

impl Keyset {
    /// An empty keyset, which trusts nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an active key.
    pub fn with(mut self, key: PublicKey) -> Self {
        self.insert(key, KeyStatus::Active);
        self
    }

    /// Adds or replaces a key.
    pub fn insert(&mut self, key: PublicKey, status: KeyStatus) {
        self.keys.insert(key.kid(), (key, status));
    }

    /// Removes a key; tokens under it stop verifying.
    pub fn remove(&mut self, kid: &Kid) {
        self.keys.remove(kid);
    }

    /// The key with this id.
    pub fn get(&self, kid: &Kid) -> Option<&PublicKey> {
        self.keys.get(kid).map(|(k, _)| k)
    }

    /// Every key with its status.
    pub fn iter(&self) -> impl Iterator<Item = (&PublicKey, KeyStatus)> {
        self.keys.values().map(|(k, s)| (k, *s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_round_trips() {
        let k = RootKey::from_seed(&[7; 32]);
        let back = RootKey::from_text(&k.to_text()).unwrap();
        assert_eq!(back.public(), k.public());
        assert_eq!(
            PublicKey::from_text(&k.public().to_text()).unwrap(),
            k.public()
        );
        assert_eq!(
            PublicKey::from_text("baton_pk1_AAAA"),
            Err(KeyError::Encoding)
        );
        assert_eq!(
            RootKey::from_text(&k.public().to_text()).map(|_| ()),
            Err(KeyError::Encoding)
        );
    }

    #[test]
    fn small_order_root_key_is_refused() {
        let identity = {
            let mut b = [0u8; 32];
            b[0] = 1;
            b
        };
        assert_eq!(PublicKey::from_bytes(&identity), Err(KeyError::WeakKey));
    }

    #[test]
    fn block_id_hex() {
        let id = BlockId([0xab; 32]);
        assert_eq!(BlockId::from_hex(&id.to_string()), Some(id));
        assert_eq!(BlockId::from_hex(&id.to_string().to_uppercase()), None);
        assert_eq!(BlockId::from_hex("ab"), None);
    }
}
