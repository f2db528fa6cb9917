//! Python values in and out: checked integers, times, caveat keyword
//! arguments, request arguments, JSON documents.
//!
//! Integers are checked here, never truncated: an amount that does not fit
//! a u64 (negative, or 2^64 and above) is a `ValueError`, a value of the
//! wrong type (a str, a float, a bool) a `TypeError`, each naming the field.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use baton::caveat::valid_arg_name;
use baton::pattern::{ActionPattern, ResourcePattern};
use baton::{ArgBound, ArgConstraint, ArgValue, Budget, Caveat, HolderPublicKey, Unit};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyMapping, PyString};

use crate::errors;
use crate::tokens::HolderKey;

/// The Python type name of `v`, for messages.
fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// `v` as a Python int (bool refused: `True` is not an amount).
fn int<'py>(field: &str, v: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyInt>> {
    if v.is_instance_of::<PyBool>() || !v.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "{field} must be an int, not {}",
            type_name(v)
        )));
    }
    Ok(v.cast::<PyInt>()?.clone())
}

/// An unsigned integer field of at most `max`, checked.
fn bounded_u64(field: &str, v: &Bound<'_, PyAny>, max: u64, what: &str) -> PyResult<u64> {
    let i = int(field, v)?;
    // The common case first: one conversion, no comparisons.
    if let Ok(n) = i.extract::<u64>()
        && n <= max
    {
        return Ok(n);
    }
    if i.lt(0)? {
        return Err(PyValueError::new_err(format!(
            "{field} must not be negative (got {i})"
        )));
    }
    if i.gt(max)? {
        return Err(PyValueError::new_err(format!(
            "{field} {i} does not fit {what} (at most {max})"
        )));
    }
    i.extract::<u64>()
}

/// A u64: amounts, ceilings, unix seconds.
pub fn u64_of(field: &str, v: &Bound<'_, PyAny>) -> PyResult<u64> {
    bounded_u64(field, v, u64::MAX, "in 64 bits (u64)")
}

/// A u32: delegation depth.
pub fn u32_of(field: &str, v: &Bound<'_, PyAny>) -> PyResult<u32> {
    bounded_u64(field, v, u64::from(u32::MAX), "in 32 bits (u32)").map(|n| n as u32)
}

/// An i64: request arguments and argument bounds.
pub fn i64_of(field: &str, v: &Bound<'_, PyAny>) -> PyResult<i64> {
    let i = int(field, v)?;
    if let Ok(n) = i.extract::<i64>() {
        return Ok(n);
    }
    if i.lt(i64::MIN)? || i.gt(i64::MAX)? {
        return Err(PyValueError::new_err(format!(
            "{field} {i} does not fit in 64 bits (i64, {}..={})",
            i64::MIN,
            i64::MAX
        )));
    }
    i.extract::<i64>()
}

/// A str field.
pub fn str_of(field: &str, v: &Bound<'_, PyAny>) -> PyResult<String> {
    if !v.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(format!(
            "{field} must be a str, not {}",
            type_name(v)
        )));
    }
    v.extract::<String>()
}

/// The current Unix time in whole seconds.
pub fn now() -> PyResult<u64> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| PyValueError::new_err("the system clock is before 1970"))
}

/// A point in time: unix seconds (int) or a timezone-aware `datetime`.
pub fn time_of(field: &str, v: &Bound<'_, PyAny>) -> PyResult<u64> {
    if v.is_instance_of::<PyInt>() {
        return u64_of(field, v);
    }
    let py = v.py();
    let datetime = py.import("datetime")?.getattr("datetime")?;
    if v.is_instance(&datetime)? {
        if v.getattr("tzinfo")?.is_none() {
            return Err(PyValueError::new_err(format!(
                "{field}: a naive datetime is ambiguous; give one with a timezone (e.g. UTC)"
            )));
        }
        let ts: f64 = v.call_method0("timestamp")?.extract()?;
        if ts < 0.0 || ts.fract() != 0.0 {
            return Err(PyValueError::new_err(format!(
                "{field}: tokens count whole seconds since 1970 (got {ts})"
            )));
        }
        return u64_of(field, &ts.into_pyobject(py)?.call_method0("__int__")?);
    }
    u64_of(field, v)
}

/// A duration in whole seconds: an int or a `timedelta`.
pub fn seconds_of(field: &str, v: &Bound<'_, PyAny>) -> PyResult<u64> {
    if v.is_instance_of::<PyInt>() {
        return u64_of(field, v);
    }
    let py = v.py();
    let timedelta = py.import("datetime")?.getattr("timedelta")?;
    if v.is_instance(&timedelta)? {
        let secs = v.call_method0("total_seconds")?;
        let f: f64 = secs.extract()?;
        if f < 0.0 {
            return Err(PyValueError::new_err(format!(
                "{field} must not be negative"
            )));
        }
        return u64_of(field, &secs.call_method0("__int__")?);
    }
    if v.is_instance_of::<PyFloat>() {
        return Err(PyTypeError::new_err(format!(
            "{field} must be an int number of seconds or a timedelta, not float"
        )));
    }
    u64_of(field, v)
}

/// A list of patterns: one str (comma separated, like the CLI's flags) or
/// an iterable of str. Empty is refused: an empty set would not narrow.
fn pattern_strings(py: Python<'_>, field: &str, v: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let items: Vec<String> = if v.is_instance_of::<PyString>() {
        v.extract::<String>()?
            .split(',')
            .map(str::to_owned)
            .collect()
    } else {
        let mut out = vec![];
        for item in v.try_iter().map_err(|_| {
            PyTypeError::new_err(format!(
                "{field} must be a str or an iterable of str, not {}",
                type_name(v)
            ))
        })? {
            out.push(str_of(field, &item?)?);
        }
        out
    };
    if items.is_empty() {
        return Err(errors::caveat(
            py,
            format!(
                "{field}: give at least one pattern (an empty set allows nothing and cannot be encoded)"
            ),
        ));
    }
    Ok(items)
}

fn action_pattern(py: Python<'_>, field: &str, s: &str) -> PyResult<ActionPattern> {
    ActionPattern::parse(s).map_err(|e| {
        errors::caveat(
            py,
            format!(
                "{field}: {s:?} is not an action pattern ({e}); actions are lower-case a-z 0-9 _ - segments joined by `.`, like crm.* or refund.issue"
            ),
        )
    })
}

fn resource_pattern(py: Python<'_>, s: &str) -> PyResult<ResourcePattern> {
    ResourcePattern::parse(s).map_err(|e| {
        errors::caveat(
            py,
            format!(
                "resources: {s:?} is not a resource pattern ({e}); resources are segments of A-Z a-z 0-9 _ - . @ + / = joined by `:`, like customer:4821"
            ),
        )
    })
}

fn unit_of(py: Python<'_>, s: &str) -> PyResult<Unit> {
    if s == "usd" {
        return Err(errors::caveat(
            py,
            "budget unit \"usd\": amounts are integers in usd_microcents; baton.usd(\"5.00\") converts dollars exactly",
        ));
    }
    Unit::parse(s).map_err(|e| errors::caveat(py, format!("budget unit {s:?}: {e}")))
}

/// One budget from `(unit, amount)` or `(unit, amount, tools)`.
fn budget_item(py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<Budget> {
    let parts: Vec<Bound<'_, PyAny>> = item
        .try_iter()
        .map_err(|_| {
            PyTypeError::new_err("each budget is a (unit, amount) or (unit, amount, tools) tuple")
        })?
        .collect::<PyResult<_>>()?;
    if item.is_instance_of::<PyString>() || !(2..=3).contains(&parts.len()) {
        return Err(PyTypeError::new_err(
            "each budget is a (unit, amount) or (unit, amount, tools) tuple",
        ));
    }
    let unit = unit_of(py, &str_of("budget unit", &parts[0])?)?;
    let ceiling = u64_of("budget amount", &parts[1])?;
    let tools = match parts.get(2) {
        Some(t) if !t.is_none() => Some(action_pattern(
            py,
            "budget tools",
            &str_of("budget tools", t)?,
        )?),
        _ => None,
    };
    Ok(Budget::new(unit, ceiling, tools))
}

/// `budget=`: `{"usd_microcents": 500}`, `{"calls": (10, "crm.*")}`, or an
/// iterable of `(unit, amount[, tools])`.
fn budgets(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<Vec<Budget>> {
    let mut out = vec![];
    if let Ok(map) = v.cast::<PyMapping>() {
        for item in map.items()?.iter() {
            let (unit, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
            let unit = str_of("budget unit", &unit)?;
            let tuple = if value.is_instance_of::<PyInt>()
                || value.is_instance_of::<PyBool>()
                || value.is_instance_of::<PyString>()
                || value.is_instance_of::<PyFloat>()
            {
                (unit, value, py.None().into_bound(py))
                    .into_pyobject(py)?
                    .into_any()
            } else {
                let parts: Vec<Bound<'_, PyAny>> = value
                    .try_iter()
                    .map_err(|_| {
                        PyTypeError::new_err(format!(
                            "budget {unit:?}: give an int amount or an (amount, tools) tuple"
                        ))
                    })?
                    .collect::<PyResult<_>>()?;
                if parts.len() != 2 {
                    return Err(PyTypeError::new_err(format!(
                        "budget {unit:?}: give an int amount or an (amount, tools) tuple"
                    )));
                }
                (unit, parts[0].clone(), parts[1].clone())
                    .into_pyobject(py)?
                    .into_any()
            };
            out.push(budget_item(py, &tuple)?);
        }
    } else {
        for item in v.try_iter().map_err(|_| {
            PyTypeError::new_err(format!(
                "budget must be a dict of unit to amount or an iterable of (unit, amount[, tools]), not {}",
                type_name(v)
            ))
        })? {
            out.push(budget_item(py, &item?)?);
        }
    }
    Ok(out)
}

/// `args=`: `{"ACTION:NAME": bound}` where a bound is `{"min": n, "max": m}`
/// (either may be left out) or a list/tuple/set of str (one of them).
fn arg_bounds(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<Vec<Caveat>> {
    let map = v.cast::<PyMapping>().map_err(|_| {
        PyTypeError::new_err(format!(
            "args must be a dict of \"ACTION:NAME\" to a bound, not {}",
            type_name(v)
        ))
    })?;
    let mut out = vec![];
    for item in map.items()?.iter() {
        let (key, bound): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
        let key = str_of("args key", &key)?;
        let (action, name) = key.split_once(':').ok_or_else(|| {
            errors::caveat(
                py,
                format!("args key {key:?}: expected \"ACTION:NAME\", like \"refund.issue:amount\""),
            )
        })?;
        let action = action_pattern(py, "args", action)?;
        if !valid_arg_name(name) {
            return Err(errors::caveat(
                py,
                format!("argument name {name:?} must be 1-64 bytes of a-z 0-9 _"),
            ));
        }
        let bound = if let Ok(d) = bound.cast::<PyDict>() {
            let mut min = None;
            let mut max = None;
            for (k, val) in d.iter() {
                let k = str_of("bound key", &k)?;
                let n = if val.is_none() {
                    None
                } else {
                    Some(i64_of(&format!("{key} {k}"), &val)?)
                };
                match k.as_str() {
                    "min" => min = n,
                    "max" => max = n,
                    other => {
                        return Err(errors::caveat(
                            py,
                            format!("{key}: a range bound has \"min\" and \"max\", not {other:?}"),
                        ));
                    }
                }
            }
            ArgBound::Range { min, max }
        } else if bound.is_instance_of::<PyString>() {
            return Err(PyTypeError::new_err(format!(
                "{key}: a one-of bound is a list of str, not a str"
            )));
        } else {
            let mut values = BTreeSet::new();
            for v in bound.try_iter().map_err(|_| {
                PyTypeError::new_err(format!(
                    "{key}: a bound is {{\"min\": n, \"max\": m}} or a list of str, not {}",
                    type_name(&bound)
                ))
            })? {
                values.insert(str_of(&format!("{key} value"), &v?)?);
            }
            ArgBound::OneOf(values)
        };
        out.push(Caveat::ArgBound(ArgConstraint::new(action, name, bound)));
    }
    Ok(out)
}

/// The caveat keyword arguments of `mint` and `attenuate`, mirroring the
/// CLI's flags (`--budget`, `--tools`, `--depth`, `--ttl`, `--expires`,
/// `--not-before`, `--resource`, `--arg`, `--label`, `--holder`).
#[derive(Default)]
pub struct CaveatArgs<'py> {
    pub budget: Option<Bound<'py, PyAny>>,
    pub tools: Option<Bound<'py, PyAny>>,
    pub depth: Option<Bound<'py, PyAny>>,
    pub ttl: Option<Bound<'py, PyAny>>,
    pub expires: Option<Bound<'py, PyAny>>,
    pub not_before: Option<Bound<'py, PyAny>>,
    pub resources: Option<Bound<'py, PyAny>>,
    pub args: Option<Bound<'py, PyAny>>,
    pub label: Option<Bound<'py, PyAny>>,
    pub holder: Option<Bound<'py, PyAny>>,
}

/// The value of an optional keyword, `None` counting as absent.
fn some<'py>(o: &Option<Bound<'py, PyAny>>) -> Option<Bound<'py, PyAny>> {
    o.as_ref().filter(|v| !v.is_none()).cloned()
}

impl CaveatArgs<'_> {
    /// The caveats of one block, in the CLI's order. `parent_end` is the
    /// parent's expiry: a `ttl` never reaches past it (it says "at most
    /// this long"), and `not_before` alone keeps it.
    pub fn to_caveats(&self, py: Python<'_>, parent_end: Option<u64>) -> PyResult<Vec<Caveat>> {
        let mut caveats: Vec<Caveat> = vec![];
        if let Some(b) = some(&self.budget) {
            caveats.extend(budgets(py, &b)?.into_iter().map(Caveat::Budget));
        }
        if let Some(t) = some(&self.tools) {
            let set = pattern_strings(py, "tools", &t)?
                .iter()
                .map(|s| action_pattern(py, "tools", s))
                .collect::<PyResult<BTreeSet<_>>>()?;
            caveats.push(Caveat::Tools(set));
        }
        if let Some(d) = some(&self.depth) {
            caveats.push(Caveat::Depth(u32_of("depth", &d)?));
        }
        let not_before = some(&self.not_before)
            .map(|v| time_of("not_before", &v))
            .transpose()?;
        let not_after = match (some(&self.ttl), some(&self.expires)) {
            (Some(_), Some(_)) => {
                return Err(PyValueError::new_err("give ttl or expires, not both"));
            }
            (Some(ttl), None) => {
                let end = now()?
                    .checked_add(seconds_of("ttl", &ttl)?)
                    .ok_or_else(|| PyValueError::new_err("ttl is too long"))?;
                Some(parent_end.map_or(end, |p| end.min(p)))
            }
            (None, Some(e)) => Some(time_of("expires", &e)?),
            (None, None) if not_before.is_some() => Some(parent_end.ok_or_else(|| {
                PyValueError::new_err(
                    "not_before needs ttl or expires: an expiry caveat always has an end",
                )
            })?),
            (None, None) => None,
        };
        if let Some(not_after) = not_after {
            caveats.push(Caveat::Expiry {
                not_after,
                not_before,
            });
        }
        if let Some(r) = some(&self.resources) {
            let set = pattern_strings(py, "resources", &r)?
                .iter()
                .map(|s| resource_pattern(py, s))
                .collect::<PyResult<BTreeSet<_>>>()?;
            caveats.push(Caveat::Resources(set));
        }
        if let Some(a) = some(&self.args) {
            caveats.extend(arg_bounds(py, &a)?);
        }
        if let Some(l) = some(&self.label) {
            caveats.push(Caveat::Label(str_of("label", &l)?));
        }
        if let Some(h) = some(&self.holder) {
            let key = if let Ok(k) = h.cast::<HolderKey>() {
                k.get().public()
            } else {
                let text = str_of("holder", &h)?;
                HolderPublicKey::from_text(&text).map_err(|e| errors::key(py, &e))?
            };
            caveats.push(Caveat::Holder(key));
        }
        Ok(caveats)
    }
}

/// Request arguments: a dict of str to int (i64) or str.
pub fn request_args(v: &Bound<'_, PyAny>) -> PyResult<Vec<(String, ArgValue)>> {
    // A dict is read in place; another mapping through its items().
    let pairs: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)> = if let Ok(d) = v.cast::<PyDict>() {
        d.iter().collect()
    } else {
        let map = v.cast::<PyMapping>().map_err(|_| {
            PyTypeError::new_err(format!(
                "args must be a dict of str to int or str, not {}",
                type_name(v)
            ))
        })?;
        map.items()?
            .iter()
            .map(|item| item.extract())
            .collect::<PyResult<_>>()?
    };
    let mut out = Vec::with_capacity(pairs.len());
    for (k, val) in pairs {
        let name = str_of("argument name", &k)?;
        let value = if val.is_instance_of::<PyString>() {
            ArgValue::Str(val.extract()?)
        } else if val.is_instance_of::<PyInt>() && !val.is_instance_of::<PyBool>() {
            ArgValue::Int(i64_of(&format!("argument {name}"), &val)?)
        } else {
            return Err(PyTypeError::new_err(format!(
                "argument {name} must be an int or a str, not {}",
                type_name(&val)
            )));
        };
        out.push((name, value));
    }
    Ok(out)
}

/// A JSON value as Python objects (dict, list, str, int, float, bool, None).
pub fn json_to_py(py: Python<'_>, v: &serde_json::Value) -> PyResult<Py<PyAny>> {
    use serde_json::Value;
    Ok(match v {
        Value::Null => py.None(),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any().unbind()
            } else if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any().unbind()
            } else {
                n.as_f64()
                    .unwrap_or(f64::NAN)
                    .into_pyobject(py)?
                    .into_any()
                    .unbind()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any().unbind(),
        Value::Array(a) => {
            let list = PyList::empty(py);
            for item in a {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any().unbind()
        }
        Value::Object(o) => {
            let d = PyDict::new(py);
            for (k, item) in o {
                d.set_item(k, json_to_py(py, item)?)?;
            }
            d.into_any().unbind()
        }
    })
}
