//! The gateway side: verifying tokens against a keyset and authorizing
//! requests. Signature work runs with the GIL released.

use std::sync::Mutex;
use std::time::Duration;

use baton::client::{FeedPolicy, LiveVerifier};
use baton::{Audience, BlockId, Request};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::convert;
use crate::errors;
use crate::ledger::{LedgerCore, bearer_of, runtime};
use crate::tokens::{Keyset, VerifiedToken};

/// Builds a request. A bad action or resource name is a denial
/// (`invalid_action`, `resource_not_allowed`), as in the test vectors.
#[allow(clippy::too_many_arguments)]
pub fn build_request(
    py: Python<'_>,
    action: &str,
    resource: Option<&str>,
    args: Option<&Bound<'_, PyAny>>,
    at: u64,
    proof: Option<&str>,
    operation: Option<&str>,
    body: Option<&[u8]>,
) -> PyResult<Request> {
    let denied = |e: baton::Denied| errors::denied(py, &e);
    let mut req = Request::new(action, at).map_err(denied)?;
    if let Some(op) = operation {
        req = req.operation(op).map_err(denied)?;
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    if let Some(r) = resource {
        req = req.resource(r).map_err(denied)?;
    }
    if let Some(a) = args.filter(|a| !a.is_none()) {
        for (name, value) in convert::request_args(a)? {
            req = req.arg(&name, value).map_err(denied)?;
        }
    }
    if let Some(p) = proof {
        req = req.with_proof_header(p);
    }
    Ok(req)
}

/// One budget a spend must debit: a budget caveat of one block.
#[pyclass(frozen, module = "baton", eq)]
#[derive(PartialEq)]
pub struct BudgetScope {
    /// The declaring block's index.
    #[pyo3(get)]
    block: usize,
    /// The declaring block's id (hex).
    #[pyo3(get)]
    block_id: String,
    /// The unit.
    #[pyo3(get)]
    unit: String,
    /// The ceiling, in minor units.
    #[pyo3(get)]
    ceiling: u64,
    /// The tools filter, if any.
    #[pyo3(get)]
    tools: Option<String>,
}

#[pymethods]
impl BudgetScope {
    /// The scope as a dict, in the shape of the test vectors' `budgets`.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("block", self.block)?;
        d.set_item("block_id", &self.block_id)?;
        d.set_item("unit", &self.unit)?;
        d.set_item("ceiling", self.ceiling)?;
        d.set_item("tools", self.tools.as_deref())?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "BudgetScope(block={}, unit={:?}, ceiling={}, tools={:?})",
            self.block, self.unit, self.ceiling, self.tools
        )
    }
}

fn scopes(auth: &baton::Authorization) -> Vec<BudgetScope> {
    auth.budgets
        .iter()
        .map(|s| BudgetScope {
            block: s.block,
            block_id: s.block_id.to_string(),
            unit: s.unit.as_str().to_owned(),
            ceiling: s.ceiling,
            tools: s.tools.as_ref().map(|p| p.as_str().to_owned()),
        })
        .collect()
}

/// Verifies tokens against a keyset and authorizes requests. Thread-safe;
/// share one per process so its cache and replay store are shared too.
#[pyclass(frozen, module = "baton")]
pub struct Verifier {
    live: LiveVerifier,
}

#[pymethods]
impl Verifier {
    /// `keyset`: a `Keyset`, a `RootKey`, a public key text or a list of
    /// those. `cache`: how many verified chains to remember (0: none).
    /// `skew`: seconds of clock skew allowed on expiry. `audience`: this
    /// verifier's name in holder proofs. `require_holder`: refuse bearer
    /// (unbound) tokens. `proof_window`: (past, future) seconds a proof's
    /// time may be off.
    #[new]
    #[pyo3(signature = (keyset, *, cache=None, skew=None, audience=None, require_holder=false, proof_window=None))]
    fn new(
        py: Python<'_>,
        keyset: &Bound<'_, PyAny>,
        cache: Option<Bound<'_, PyAny>>,
        skew: Option<Bound<'_, PyAny>>,
        audience: Option<&str>,
        require_holder: bool,
        proof_window: Option<(Bound<'_, PyAny>, Bound<'_, PyAny>)>,
    ) -> PyResult<Self> {
        let keys = Keyset::coerce(keyset)?;
        let cache = match cache {
            Some(c) => convert::u64_of("cache", &c)?,
            None => 0,
        };
        let skew = match skew {
            Some(s) => convert::seconds_of("skew", &s)?,
            None => 0,
        };
        let cache =
            usize::try_from(cache).map_err(|_| PyValueError::new_err("cache is too large"))?;
        let mut v = baton::Verifier::new(keys)
            .with_skew(skew)
            .with_require_holder(require_holder);
        if cache > 0 {
            v = v.with_cache(cache);
        }
        if let Some(a) = audience {
            let a = Audience::new(a)
                .map_err(|e| errors::raise(py, "ProofError", e.code(), &e.to_string(), None))?;
            v = v.with_audience(a);
        }
        if let Some((past, future)) = proof_window {
            v = v.with_proof_window(
                convert::seconds_of("proof_window past", &past)?,
                convert::seconds_of("proof_window future", &future)?,
            );
        }
        Ok(Self {
            live: LiveVerifier::new(v),
        })
    }

    /// Parses and verifies a token (text `str` or binary `bytes`). Raises
    /// `InvalidToken` with the reason code.
    fn verify(&self, py: Python<'_>, token: &Bound<'_, PyAny>) -> PyResult<VerifiedToken> {
        let live = &self.live;
        let result = if let Ok(s) = token.cast::<PyString>() {
            let text = s.to_str()?;
            py.detach(|| live.verify_text(text))
        } else if let Ok(b) = token.cast::<PyBytes>() {
            let bytes = b.as_bytes();
            py.detach(|| live.read(|v| v.verify_bytes(bytes)))
        } else {
            return Err(PyTypeError::new_err(
                "a token is its text (str) or binary form (bytes)",
            ));
        };
        result
            .map(VerifiedToken)
            .map_err(|e| errors::invalid(py, &e))
    }

    /// Decides one request and returns the budget scopes a spend must
    /// debit, nearest block first. `token` is a `VerifiedToken`, or the
    /// token's text, which is then verified in the same call (the gateway
    /// path). `at` defaults to now; `proof` is the `Baton-Proof` header of
    /// a holder-bound token. Raises `InvalidToken`, `ProofError` or
    /// `Denied`, each with its reason code.
    #[pyo3(signature = (token, action, resource=None, args=None, at=None, proof=None, *, operation=None, body=None))]
    #[allow(clippy::too_many_arguments)]
    fn authorize(
        &self,
        py: Python<'_>,
        token: &Bound<'_, PyAny>,
        action: &str,
        resource: Option<&str>,
        args: Option<Bound<'_, PyAny>>,
        at: Option<Bound<'_, PyAny>>,
        proof: Option<&str>,
        operation: Option<&str>,
        body: Option<&[u8]>,
    ) -> PyResult<Vec<BudgetScope>> {
        let at = match at {
            Some(a) if !a.is_none() => convert::time_of("at", &a)?,
            _ => convert::now()?,
        };
        let live = &self.live;
        if let Ok(t) = token.cast::<VerifiedToken>() {
            let req = build_request(
                py,
                action,
                resource,
                args.as_ref(),
                at,
                proof,
                operation,
                body,
            )?;
            let t = &t.get().0;
            // Only a proof needs a signature check here.
            let result = if proof.is_some() {
                py.detach(|| live.authorize(t, &req))
            } else {
                live.authorize(t, &req)
            };
            return result
                .map(|a| scopes(&a))
                .map_err(|e| errors::authorize(py, &e));
        }
        if let Ok(s) = token.cast::<PyString>() {
            let text = s.to_str()?;
            // Token errors come before request errors (spec/token.md §6.1):
            // a request that cannot be built is decided after the token
            // has verified.
            let req = match build_request(
                py,
                action,
                resource,
                args.as_ref(),
                at,
                proof,
                operation,
                body,
            ) {
                Ok(r) => r,
                Err(e) => {
                    if let Err(v) = py.detach(|| live.verify_text(text)) {
                        return Err(errors::invalid(py, &v));
                    }
                    return Err(e);
                }
            };
            let result = py.detach(|| live.read(|v| v.authorize_text(text, &req)));
            return result
                .map(|(_, a)| scopes(&a))
                .map_err(|e| errors::authorize(py, &e));
        }
        Err(PyTypeError::new_err(
            "authorize takes a VerifiedToken (from Verifier.verify) or the token's text; an unverified Token must be verified first",
        ))
    }

    /// Refuses every token containing `block_id` (hex) from now on.
    fn revoke(&self, block_id: &str) -> PyResult<()> {
        let id = BlockId::from_hex(block_id).ok_or_else(|| {
            PyValueError::new_err(format!(
                "{block_id:?} is not a block id (64 hex characters)"
            ))
        })?;
        self.live.update(|v| v.revoke(id));
        Ok(())
    }

    /// Follows the ledger's revocation feed in the background (every
    /// `interval` seconds), applying each revocation to this verifier.
    /// Reads the whole feed once first and raises `LedgerError` if it
    /// cannot. `admin` needs `baton.admin.revocations.read`.
    #[pyo3(signature = (ledger, admin, *, interval=1.0, max_staleness=30.0))]
    fn follow_revocations(
        &self,
        py: Python<'_>,
        ledger: PyRef<'_, LedgerCore>,
        admin: &Bound<'_, PyAny>,
        interval: f64,
        max_staleness: f64,
    ) -> PyResult<RevocationFeed> {
        let secs = |name: &str, s: f64| {
            Duration::try_from_secs_f64(s).map_err(|_| {
                PyValueError::new_err(format!("{name} must be a non-negative number of seconds"))
            })
        };
        let policy = FeedPolicy::new(
            secs("interval", interval)?,
            secs("max_staleness", max_staleness)?,
        );
        let admin = bearer_of(admin)?;
        let client = ledger.client.clone();
        let live = self.live.clone();
        let feed = py.detach(|| {
            runtime().block_on(baton::client::RevocationFeed::start(
                client, admin, live, policy,
            ))
        });
        feed.map(|f| RevocationFeed(Mutex::new(Some(f))))
            .map_err(|e| errors::client(py, &e))
    }
}

/// A background follower of the revocation feed; `stop()` (or dropping
/// it) ends it.
#[pyclass(frozen, module = "baton")]
pub struct RevocationFeed(Mutex<Option<baton::client::RevocationFeed>>);

impl RevocationFeed {
    fn with<R>(&self, f: impl FnOnce(&baton::client::RevocationFeed) -> R) -> Option<R> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(f)
    }
}

#[pymethods]
impl RevocationFeed {
    /// Whether the last successful poll is within `max_staleness`.
    #[getter]
    fn fresh(&self) -> bool {
        self.with(|f| f.is_fresh()).unwrap_or(false)
    }

    /// The feed position the next poll asks after.
    #[getter]
    fn next(&self) -> Option<u64> {
        self.with(|f| f.status().next)
    }

    /// The last poll's error, if it failed.
    #[getter]
    fn last_error(&self) -> Option<String> {
        self.with(|f| f.status().last_error).flatten()
    }

    /// Stops following.
    fn stop(&self) {
        let feed = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(feed);
    }
}
