//! Keys, keysets and tokens: everything that works offline.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

use baton::inspect::TokenJson;
use baton::{Audience, PublicKey, UnverifiedToken};
use pyo3::exceptions::{PyOSError, PyTypeError, PyUserWarning, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use zeroize::Zeroizing;

use crate::convert::{self, CaveatArgs};
use crate::errors;
use crate::verifier::build_request;

/// A secret key file is one short line; anything much larger is not one.
const MAX_KEY_FILE: u64 = 1024;
/// A keyset file may list many keys with comments, but not without bound.
const MAX_KEYSET_FILE: u64 = 1024 * 1024;

/// Reads a secret key file (at most 1 KiB), warning when other users may
/// read it, as the CLI does.
fn read_secret(py: Python<'_>, path: &PathBuf) -> PyResult<Zeroizing<String>> {
    let file = std::fs::File::open(path)
        .map_err(|e| PyOSError::new_err(format!("{}: {e}", path.display())))?;
    let meta = file
        .metadata()
        .map_err(|e| PyOSError::new_err(format!("{}: {e}", path.display())))?;
    if meta.mode() & 0o077 != 0 {
        PyErr::warn(
            py,
            &py.get_type::<PyUserWarning>(),
            &std::ffi::CString::new(format!(
                "key file {} is accessible by other users (mode {:o}); chmod 600 it",
                path.display(),
                meta.mode() & 0o777
            ))
            .unwrap_or_default(),
            1,
        )?;
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| PyOSError::new_err(format!("{}: {e}", path.display())))?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(PyValueError::new_err(format!(
            "{}: not a key file (larger than 1 KiB)",
            path.display()
        )));
    }
    Ok(text)
}

/// Writes a secret key file readable by its owner only; an existing file
/// is never overwritten.
fn write_secret(path: &PathBuf, text: &str) -> PyResult<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| PyOSError::new_err(format!("{}: {e}", path.display())))?;
    f.write_all(format!("{text}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| PyOSError::new_err(format!("{}: {e}", path.display())))
}

/// An issuer's root key: signs root tokens. Its text form and key files
/// are those of `baton keygen`.
#[pyclass(frozen, module = "baton")]
pub struct RootKey(pub baton::RootKey);

#[pymethods]
impl RootKey {
    /// A fresh key from the OS random generator.
    #[staticmethod]
    fn generate(py: Python<'_>) -> PyResult<Self> {
        baton::RootKey::generate()
            .map(Self)
            .map_err(|e| errors::key(py, &e))
    }

    /// Reads the secret text form, `baton_sk1_...`.
    #[staticmethod]
    fn from_text(py: Python<'_>, text: &str) -> PyResult<Self> {
        baton::RootKey::from_text(text.trim_end_matches('\n'))
            .map(Self)
            .map_err(|e| errors::key(py, &e))
    }

    /// Reads a key file written by `baton keygen --out FILE`.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let text = read_secret(py, &path)?;
        Self::from_text(py, &text)
    }

    /// Writes the key to a new file with mode 0600 (as `baton keygen`).
    fn save(&self, path: PathBuf) -> PyResult<()> {
        write_secret(&path, &self.0.to_text())
    }

    /// The secret text form. Keep it secret.
    fn to_text(&self) -> String {
        self.0.to_text().to_string()
    }

    /// The public key, `baton_pk1_...`.
    #[getter]
    fn public_key(&self) -> String {
        self.0.public().to_text()
    }

    /// The key id (16 hex characters).
    #[getter]
    fn kid(&self) -> String {
        self.0.kid().to_string()
    }

    fn __repr__(&self) -> String {
        format!("RootKey(kid={})", self.0.kid())
    }
}

/// A holder's key pair: a token bound to its public key is attenuated and
/// used only with its secret (spec/token.md §12).
#[pyclass(frozen, module = "baton")]
pub struct HolderKey(pub baton::HolderKey);

impl HolderKey {
    pub fn public(&self) -> baton::HolderPublicKey {
        self.0.public()
    }
}

#[pymethods]
impl HolderKey {
    /// A fresh key pair from the OS random generator.
    #[staticmethod]
    fn generate(py: Python<'_>) -> PyResult<Self> {
        baton::HolderKey::generate()
            .map(Self)
            .map_err(|e| errors::key(py, &e))
    }

    /// Reads the secret text form, `baton_hsk1_...`.
    #[staticmethod]
    fn from_text(py: Python<'_>, text: &str) -> PyResult<Self> {
        baton::HolderKey::from_text(text.trim_end_matches('\n'))
            .map(Self)
            .map_err(|e| errors::key(py, &e))
    }

    /// Reads a key file written by `baton keygen --holder --out FILE`.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let text = read_secret(py, &path)?;
        Self::from_text(py, &text)
    }

    /// Writes the secret to a new file with mode 0600.
    fn save(&self, path: PathBuf) -> PyResult<()> {
        write_secret(&path, &self.0.to_text())
    }

    /// The secret text form. Keep it secret.
    fn to_text(&self) -> String {
        self.0.to_text().to_string()
    }

    /// The public key, `baton_hpk1_...`: what `holder=` binds a token to.
    #[getter]
    fn public_key(&self) -> String {
        self.0.public().to_text()
    }

    fn __repr__(&self) -> String {
        format!("HolderKey(public_key={})", self.0.public().to_text())
    }
}

/// The root public keys a verifier trusts.
#[pyclass(module = "baton")]
#[derive(Clone, Default)]
pub struct Keyset(pub baton::Keyset);

impl Keyset {
    /// A keyset from what a `Verifier` accepts: a `Keyset`, a `RootKey`, one
    /// public key text, or an iterable of those.
    pub fn coerce(v: &Bound<'_, PyAny>) -> PyResult<baton::Keyset> {
        if let Ok(k) = v.cast::<Keyset>() {
            return Ok(k.borrow().0.clone());
        }
        let mut set = Keyset::default();
        set.add(v)?;
        Ok(set.0)
    }
}

#[pymethods]
impl Keyset {
    /// A keyset of `keys`: public key texts (`baton_pk1_...`) or `RootKey`s.
    #[new]
    #[pyo3(signature = (keys = None))]
    fn new(keys: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let mut set = Self::default();
        if let Some(k) = keys {
            set.add(k)?;
        }
        Ok(set)
    }

    /// Parses a keyset file's text: one `baton_pk1_...` per line, `#`
    /// comments and blank lines ignored (the output of `baton keygen`).
    #[staticmethod]
    fn from_text(py: Python<'_>, text: &str) -> PyResult<Self> {
        let mut set = baton::Keyset::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            set = set.with(PublicKey::from_text(line).map_err(|e| errors::key(py, &e))?);
        }
        Ok(Self(set))
    }

    /// Reads a keyset file (`baton verify --keyset FILE`).
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let mut text = String::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_KEYSET_FILE + 1).read_to_string(&mut text))
            .map_err(|e| PyOSError::new_err(format!("{}: {e}", path.display())))?;
        if text.len() as u64 > MAX_KEYSET_FILE {
            return Err(PyValueError::new_err(format!(
                "{}: larger than 1 MiB",
                path.display()
            )));
        }
        Self::from_text(py, &text)
    }

    /// Adds a key (text or `RootKey`), or every key of an iterable.
    fn add(&mut self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = key.py();
        if let Ok(r) = key.cast::<RootKey>() {
            self.0
                .insert(r.get().0.public(), baton::keys::KeyStatus::Active);
        } else if key.is_instance_of::<PyString>() {
            let text: String = key.extract()?;
            let k = PublicKey::from_text(text.trim()).map_err(|e| errors::key(py, &e))?;
            self.0.insert(k, baton::keys::KeyStatus::Active);
        } else if let Ok(other) = key.cast::<Keyset>() {
            for (k, status) in other.borrow().0.iter() {
                self.0.insert(*k, status);
            }
        } else {
            let items = key.try_iter().map_err(|_| {
                PyTypeError::new_err(
                    "a key is a baton_pk1_ str, a RootKey, a Keyset or an iterable of those",
                )
            })?;
            for item in items {
                let item = item?;
                if !item.is_instance_of::<PyString>() && item.cast::<RootKey>().is_err() {
                    return Err(PyTypeError::new_err(
                        "a key is a baton_pk1_ str or a RootKey",
                    ));
                }
                self.add(&item)?;
            }
        }
        Ok(())
    }

    /// The key ids, in order.
    #[getter]
    fn kids(&self) -> Vec<String> {
        self.0.iter().map(|(k, _)| k.kid().to_string()).collect()
    }

    /// The public keys, in order.
    #[getter]
    fn public_keys(&self) -> Vec<String> {
        self.0.iter().map(|(k, _)| k.to_text()).collect()
    }

    fn __len__(&self) -> usize {
        self.0.iter().count()
    }

    fn __repr__(&self) -> String {
        format!("Keyset(kids={:?})", self.kids())
    }
}

/// The token text from a `str` (the text form) or `bytes` (the binary form).
fn parse_any(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<UnverifiedToken> {
    if let Ok(s) = v.cast::<PyString>() {
        let s = s.to_str()?;
        return UnverifiedToken::from_text(s).map_err(|e| errors::invalid(py, &e));
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return UnverifiedToken::from_bytes(b.as_bytes()).map_err(|e| errors::invalid(py, &e));
    }
    Err(PyTypeError::new_err(
        "a token is its text (str) or binary form (bytes)",
    ))
}

macro_rules! common_methods {
    ($ty:ident, $unverified:expr) => {
        #[pymethods]
        impl $ty {
            /// The text form, `baton_v1_...`. It carries the proof secret
            /// that lets its holder attenuate: hand it only to the delegate.
            fn to_text(&self) -> String {
                self.0.to_text()
            }

            /// The binary form.
            fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
                PyBytes::new(py, self.0.to_bytes())
            }

            /// A dict in the shape of `baton inspect --json`.
            fn inspect(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
                let v = serde_json::to_value(Self::describe(&self.0))
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                convert::json_to_py(py, &v)
            }

            /// The block ids (hex), authority block first.
            #[getter]
            fn block_ids(&self) -> Vec<String> {
                self.0.block_ids().iter().map(ToString::to_string).collect()
            }

            /// The id of the last block: what the ledger and revocation name.
            #[getter]
            fn block_id(&self) -> String {
                self.0.block_ids().last().map(ToString::to_string).unwrap_or_default()
            }

            /// The root key id named by block 0.
            #[getter]
            fn root_kid(&self) -> String {
                self.0.root_kid().to_string()
            }

            /// Whether no block may be appended.
            #[getter]
            fn sealed(&self) -> bool {
                self.0.is_sealed()
            }

            /// The holder key (`baton_hpk1_...`) of a bound token, else None.
            #[getter]
            fn holder(&self) -> Option<String> {
                self.0.holder().map(|h| h.to_text())
            }

            fn __len__(&self) -> usize {
                self.0.len()
            }

            fn __repr__(&self) -> String {
                format!(
                    "{}(blocks={}, kid={}, sealed={})",
                    stringify!($ty),
                    self.0.len(),
                    self.0.root_kid(),
                    if self.0.is_sealed() { "True" } else { "False" }
                )
            }

            /// Appends a narrowing block (offline, no key needed) and
            /// returns the child token. Keywords mirror `baton attenuate`'s
            /// flags; `as_holder` signs a bound token's block with the
            /// holder's key.
            #[pyo3(signature = (*, budget=None, tools=None, depth=None, ttl=None, expires=None, not_before=None, resources=None, args=None, label=None, holder=None, as_holder=None))]
            #[allow(clippy::too_many_arguments)]
            fn attenuate<'py>(
                &self,
                py: Python<'py>,
                budget: Option<Bound<'py, PyAny>>,
                tools: Option<Bound<'py, PyAny>>,
                depth: Option<Bound<'py, PyAny>>,
                ttl: Option<Bound<'py, PyAny>>,
                expires: Option<Bound<'py, PyAny>>,
                not_before: Option<Bound<'py, PyAny>>,
                resources: Option<Bound<'py, PyAny>>,
                args: Option<Bound<'py, PyAny>>,
                label: Option<Bound<'py, PyAny>>,
                holder: Option<Bound<'py, PyAny>>,
                as_holder: Option<PyRef<'py, HolderKey>>,
            ) -> PyResult<Token> {
                let caveats = CaveatArgs { budget, tools, depth, ttl, expires, not_before, resources, args, label, holder }
                    .to_caveats(py, self.0.authority().not_after())?;
                let parent: UnverifiedToken = ($unverified)(&self.0);
                let child = match &as_holder {
                    Some(h) => parent.attenuate_as_holder(&h.0, caveats),
                    None => parent.attenuate(caveats),
                };
                child.map(Token).map_err(|e| errors::attenuate(py, &e))
            }

            /// Seals the token: no block can follow. `as_holder` for a bound
            /// token.
            #[pyo3(signature = (*, as_holder=None))]
            fn seal(&self, py: Python<'_>, as_holder: Option<PyRef<'_, HolderKey>>) -> PyResult<Token> {
                let t: UnverifiedToken = ($unverified)(&self.0);
                let sealed = match &as_holder {
                    Some(h) => t.seal_as_holder(&h.0),
                    None => t.seal(),
                };
                sealed.map(Token).map_err(|e| errors::attenuate(py, &e))
            }

            /// A proof of possession (the `Baton-Proof` header value) for one
            /// request to the verifier named `audience`, signed with the
            /// holder's secret key, at `at` (default now).
            #[pyo3(signature = (holder, audience, action, *, resource=None, args=None, operation=None, body=None, at=None))]
            #[allow(clippy::too_many_arguments)]
            fn prove(
                &self,
                py: Python<'_>,
                holder: PyRef<'_, HolderKey>,
                audience: &str,
                action: &str,
                resource: Option<&str>,
                args: Option<Bound<'_, PyAny>>,
                operation: Option<&str>,
                body: Option<&[u8]>,
                at: Option<Bound<'_, PyAny>>,
            ) -> PyResult<String> {
                let ts = match at {
                    Some(a) if !a.is_none() => convert::time_of("at", &a)?,
                    _ => convert::now()?,
                };
                let audience = Audience::new(audience).map_err(|e| {
                    errors::raise(py, "ProofError", e.code(), &e.to_string(), None)
                })?;
                let req = build_request(py, action, resource, args.as_ref(), ts, None, operation, body)?;
                self.0
                    .prove(&holder.0, &audience, &req, ts)
                    .map(|p| p.to_header())
                    .map_err(|e| errors::raise(py, "ProofError", e.code(), &e.to_string(), None))
            }
        }
    };
}

/// A token whose signatures have not been checked: what a holder keeps,
/// inspects and attenuates. A `Verifier` turns it into a `VerifiedToken`.
#[pyclass(frozen, module = "baton")]
pub struct Token(pub UnverifiedToken);

impl Token {
    fn describe(t: &UnverifiedToken) -> TokenJson {
        TokenJson::of(t)
    }
}

common_methods!(Token, |t: &UnverifiedToken| t.clone());

#[pymethods]
impl Token {
    /// A root token signed with `root`. Keywords mirror `baton mint`'s
    /// flags.
    #[staticmethod]
    #[pyo3(signature = (root, *, budget=None, tools=None, depth=None, ttl=None, expires=None, not_before=None, resources=None, args=None, label=None, holder=None))]
    #[allow(clippy::too_many_arguments)]
    fn mint<'py>(
        py: Python<'py>,
        root: PyRef<'py, RootKey>,
        budget: Option<Bound<'py, PyAny>>,
        tools: Option<Bound<'py, PyAny>>,
        depth: Option<Bound<'py, PyAny>>,
        ttl: Option<Bound<'py, PyAny>>,
        expires: Option<Bound<'py, PyAny>>,
        not_before: Option<Bound<'py, PyAny>>,
        resources: Option<Bound<'py, PyAny>>,
        args: Option<Bound<'py, PyAny>>,
        label: Option<Bound<'py, PyAny>>,
        holder: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Self> {
        let caveats = CaveatArgs {
            budget,
            tools,
            depth,
            ttl,
            expires,
            not_before,
            resources,
            args,
            label,
            holder,
        }
        .to_caveats(py, None)?;
        baton::Token::mint(&root.0, caveats)
            .map(|t| Self(t.to_unverified()))
            .map_err(|e| errors::attenuate(py, &e))
    }

    /// Parses a token (text `str` or binary `bytes`), checking everything
    /// but its signatures. Raises `InvalidToken` with the reason code.
    #[staticmethod]
    fn from_text(py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<Self> {
        parse_any(py, text).map(Self)
    }
}

/// A token a `Verifier` accepted: every signature checked against its
/// keyset. Only this kind is authorized.
#[pyclass(frozen, module = "baton")]
pub struct VerifiedToken(pub baton::Token);

impl VerifiedToken {
    fn describe(t: &baton::Token) -> TokenJson {
        TokenJson::of_verified(t)
    }
}

common_methods!(VerifiedToken, |t: &baton::Token| t.to_unverified());
