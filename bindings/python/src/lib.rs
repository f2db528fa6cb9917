//! `baton._baton`: the native half of the `baton` Python package, a thin
//! PyO3 layer over the Rust crate (one implementation of the format, the
//! verifier and the ledger client). The Python half (`python/baton/`)
//! adds the exception classes, the ledger's context managers and the
//! `guard` decorator.
//!
//! # Layout
//! * [`errors`]: Rust errors as `baton` exceptions carrying `.code`.
//! * [`convert`]: checked integers, times, caveat and request arguments.
//! * [`tokens`]: `RootKey`, `HolderKey`, `Keyset`, `Token`, `VerifiedToken`.
//! * [`verifier`]: `Verifier`, `BudgetScope`, `RevocationFeed`.
//! * [`ledger`]: `LedgerCore`, the ledger client (blocking and asyncio).
#![forbid(unsafe_code)]

use pyo3::prelude::*;

mod convert;
mod errors;
mod ledger;
mod tokens;
mod verifier;

#[pymodule]
fn _baton(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<tokens::RootKey>()?;
    m.add_class::<tokens::HolderKey>()?;
    m.add_class::<tokens::Keyset>()?;
    m.add_class::<tokens::Token>()?;
    m.add_class::<tokens::VerifiedToken>()?;
    m.add_class::<verifier::Verifier>()?;
    m.add_class::<verifier::BudgetScope>()?;
    m.add_class::<verifier::RevocationFeed>()?;
    m.add_class::<ledger::LedgerCore>()?;
    m.add("FORMAT_VERSION", baton::token::FORMAT_VERSION)?;
    Ok(())
}
