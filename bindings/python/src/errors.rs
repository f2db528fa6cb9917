//! Rust errors as the Python exceptions of `baton._errors`.
//!
//! The exception classes are defined in Python (so they are ordinary,
//! picklable classes with a readable hierarchy) and looked up here when an
//! error is raised. Every one carries the spec's stable reason `code`.

use baton::client::ClientError;
use baton::keys::KeyError;
use baton::{AttenuateError, AuthorizeError, Denied, ProofError, VerifyError};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// A `baton._errors.<class>(message, code)` exception, with `extra`
/// attributes set on it.
pub fn raise(
    py: Python<'_>,
    class: &str,
    code: &str,
    message: &str,
    extra: Option<&Bound<'_, PyDict>>,
) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let cls = py.import("baton._errors")?.getattr(class)?;
        let exc = cls.call1((message, code))?;
        if let Some(extra) = extra {
            for (k, v) in extra.iter() {
                exc.setattr(k.extract::<String>()?.as_str(), v)?;
            }
        }
        Ok(PyErr::from_value(exc))
    };
    // The lookup fails only if the package is broken; say so rather than
    // losing the original error.
    build().unwrap_or_else(|e| {
        PyRuntimeError::new_err(format!("{code}: {message} (raising {class} failed: {e})"))
    })
}

/// `VerifyError` → `InvalidToken`.
pub fn invalid(py: Python<'_>, e: &VerifyError) -> PyErr {
    raise(py, "InvalidToken", e.code(), &e.to_string(), None)
}

/// `Denied` → `Denied`.
pub fn denied(py: Python<'_>, e: &Denied) -> PyErr {
    raise(py, "Denied", e.code(), &e.to_string(), None)
}

/// `ProofError` → `ProofError`.
pub fn proof(py: Python<'_>, e: &ProofError) -> PyErr {
    raise(py, "ProofError", e.code(), &e.to_string(), None)
}

/// `AuthorizeError` → `InvalidToken`, `ProofError` or `Denied`.
pub fn authorize(py: Python<'_>, e: &AuthorizeError) -> PyErr {
    match e {
        AuthorizeError::Invalid(v) => invalid(py, v),
        AuthorizeError::Proof(p) => proof(py, p),
        AuthorizeError::Denied(d) => denied(py, d),
        other => raise(py, "BatonError", other.code(), &other.to_string(), None),
    }
}

/// `AttenuateError` → `InvalidCaveat` for a caveat the format refuses,
/// `AttenuationError` for everything else (sealed, widening, depth).
pub fn attenuate(py: Python<'_>, e: &AttenuateError) -> PyErr {
    let class = match e {
        AttenuateError::Invalid(_) => "InvalidCaveat",
        _ => "AttenuationError",
    };
    raise(py, class, e.code(), &e.to_string(), None)
}

/// `KeyError` → `InvalidKey`.
pub fn key(py: Python<'_>, e: &KeyError) -> PyErr {
    raise(py, "InvalidKey", e.code(), &e.to_string(), None)
}

/// A caveat keyword argument the format cannot hold (a bad pattern, unit,
/// argument name): `InvalidCaveat`, a `ValueError`.
pub fn caveat(py: Python<'_>, message: impl AsRef<str>) -> PyErr {
    raise(
        py,
        "InvalidCaveat",
        "invalid_caveat",
        message.as_ref(),
        None,
    )
}

/// `ClientError` → `LedgerError` or one of its subclasses, with the
/// answer's `status`, `remaining`, `scope`, `state`, `block_id` and
/// `allocation_id`.
pub fn client(py: Python<'_>, e: &ClientError) -> PyErr {
    let extra = PyDict::new(py);
    let mut class = "LedgerError";
    let fill = || -> PyResult<()> {
        if let Some(api) = e.api() {
            extra.set_item("status", api.status)?;
            extra.set_item("remaining", api.remaining)?;
            extra.set_item("state", api.state.as_deref())?;
            extra.set_item("block_id", api.block_id.map(|b| b.to_string()))?;
            extra.set_item(
                "allocation_id",
                api.allocation_id.as_ref().map(ToString::to_string),
            )?;
            let scope = match &api.scope {
                Some(s) => {
                    let d = PyDict::new(py);
                    d.set_item("block_id", s.block_id.to_string())?;
                    d.set_item("unit", s.unit.as_str())?;
                    d.set_item("tools", s.tools.as_deref())?;
                    Some(d)
                }
                None => None,
            };
            extra.set_item("scope", scope)?;
        }
        Ok(())
    };
    if let Err(err) = fill() {
        return err;
    }
    if e.code() == "insufficient_budget" {
        class = "InsufficientBudget";
    } else if e.is_unavailable() {
        class = "LedgerUnavailable";
    }
    raise(py, class, e.code(), &e.to_string(), Some(&extra))
}
