//! The spend ledger's client, over `baton::client`: one core class that the
//! Python `Ledger` (blocking) and `AsyncLedger` (asyncio) subclass.
//!
//! Each operation is parsed from Python values with the GIL held, then run
//! on the binding's tokio runtime without it. `baton::client` retries a
//! request that got no answer, or a `503`/`408`, with the same idempotency
//! key and body, so a lost answer never charges twice.

use std::time::Duration;

use baton::client::{
    Action, Allocate, Allocation, Balance, Bearer, Client, ClientError, IdempotencyKey,
    Reservation, Reserve, RetryPolicy, ScopeCounters,
};
use baton::ledger::{AllocId, ResId};
use baton::{BlockId, Unit};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use serde_json::{Value, json};

use crate::convert;
use crate::errors;
use crate::tokens::{Token, VerifiedToken};

/// The runtime every ledger call and background follower runs on.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// A bearer from a token's text, a `Token` or a `VerifiedToken`.
pub fn bearer_of(v: &Bound<'_, PyAny>) -> PyResult<Bearer> {
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Bearer::new(s.to_str()?.to_owned()));
    }
    if let Ok(t) = v.cast::<Token>() {
        return Ok(Bearer::new(t.get().0.to_text()));
    }
    if let Ok(t) = v.cast::<VerifiedToken>() {
        return Ok(Bearer::from(&t.get().0));
    }
    Err(PyTypeError::new_err(
        "a token is its text (str), a Token or a VerifiedToken",
    ))
}

/// One ledger operation, parsed.
enum Op {
    Reserve(Reserve),
    Spend(Reserve, Option<u64>),
    Commit(ResId, u64, IdempotencyKey),
    Release(ResId, IdempotencyKey),
    Extend(ResId, Duration, IdempotencyKey),
    Get(ResId),
    Balances,
    Revoke(BlockId, Option<Bearer>),
    Revocations(u64),
    Authorize(Action),
    Keys,
    Ready,
    Mint(Value),
    Allocate(Allocate),
    Allocation(AllocId),
    ReleaseAllocation(AllocId, IdempotencyKey),
    Allocations,
}

/// The parameters of one call, read by name.
struct Params<'a, 'py>(&'a Bound<'py, PyDict>);

impl<'py> Params<'_, 'py> {
    fn get(&self, k: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(self.0.get_item(k)?.filter(|v| !v.is_none()))
    }

    fn need(&self, k: &str) -> PyResult<Bound<'py, PyAny>> {
        self.get(k)?
            .ok_or_else(|| PyTypeError::new_err(format!("{k} is required")))
    }

    fn string(&self, k: &str) -> PyResult<Option<String>> {
        self.get(k)?.map(|v| convert::str_of(k, &v)).transpose()
    }

    fn key(&self, py: Python<'_>) -> PyResult<IdempotencyKey> {
        let key = match self.string("idempotency_key")? {
            Some(k) => IdempotencyKey::new(k),
            None => IdempotencyKey::random(),
        };
        key.map_err(|e| errors::client(py, &e))
    }

    fn res_id(&self) -> PyResult<ResId> {
        let s = convert::str_of("reservation", &self.need("reservation")?)?;
        ResId::parse(&s).ok_or_else(|| {
            PyValueError::new_err(format!("{s:?} is not a reservation id (rsv_...)"))
        })
    }

    fn alloc_id(&self) -> PyResult<AllocId> {
        let s = convert::str_of("allocation", &self.need("allocation")?)?;
        AllocId::parse(&s).ok_or_else(|| {
            PyValueError::new_err(format!("{s:?} is not an allocation id (alc_...)"))
        })
    }

    /// `POST /v1/allocations`: the child's token, the unit, exactly one of
    /// `amount` (an int) and `fraction` (a float in (0, 1]), `overflow`
    /// (`"deny"` or `"shared"`), `ttl` (seconds) and the key.
    fn allocate(&self, py: Python<'_>) -> PyResult<Allocate> {
        let child = bearer_of(&self.need("child")?)?;
        let unit = convert::str_of("unit", &self.need("unit")?)?;
        let unit =
            Unit::parse(&unit).map_err(|e| PyValueError::new_err(format!("unit {unit:?}: {e}")))?;
        let mut a = match (self.get("amount")?, self.get("fraction")?) {
            (Some(amount), None) => {
                Allocate::amount(&child, unit, convert::u64_of("amount", &amount)?)
            }
            (None, Some(fraction)) => {
                if !fraction.is_instance_of::<pyo3::types::PyFloat>() {
                    return Err(PyTypeError::new_err("fraction must be a float in (0, 1]"));
                }
                let f: f64 = fraction.extract()?;
                // The server checks it too; a NaN or an out-of-range value
                // never leaves the process.
                if !(f > 0.0 && f <= 1.0) {
                    return Err(PyValueError::new_err(format!(
                        "fraction {f} is not in (0, 1]"
                    )));
                }
                Allocate::fraction(&child, unit, f)
            }
            _ => {
                return Err(PyValueError::new_err(
                    "give exactly one of amount and fraction",
                ));
            }
        };
        match self.string("overflow")?.as_deref() {
            None | Some("deny") => {}
            Some("shared") => a = a.shared(),
            Some(other) => {
                return Err(PyValueError::new_err(format!(
                    "overflow {other:?}: expected \"deny\" or \"shared\""
                )));
            }
        }
        if let Some(ttl) = self.get("ttl")? {
            a = a.ttl(Duration::from_secs(convert::seconds_of("ttl", &ttl)?));
        }
        Ok(a.key(&self.key(py)?))
    }

    fn action(&self) -> PyResult<Action> {
        let mut a = Action::new(convert::str_of("action", &self.need("action")?)?);
        if let Some(r) = self.string("resource")? {
            a = a.resource(r);
        }
        if let Some(args) = self.get("args")? {
            for (name, value) in convert::request_args(&args)? {
                a = a.arg(name, value);
            }
        }
        Ok(a)
    }

    fn reserve(&self, py: Python<'_>) -> PyResult<Reserve> {
        let unit = convert::str_of("unit", &self.need("unit")?)?;
        let unit =
            Unit::parse(&unit).map_err(|e| PyValueError::new_err(format!("unit {unit:?}: {e}")))?;
        let amount = convert::u64_of("amount", &self.need("amount")?)?;
        let mut r = Reserve::new(self.action()?, unit, amount).key(&self.key(py)?);
        if let Some(ttl) = self.get("ttl")? {
            r = r.ttl(Duration::from_secs(convert::seconds_of("ttl", &ttl)?));
        }
        Ok(r)
    }
}

fn parse(py: Python<'_>, op: &str, p: &Params<'_, '_>) -> PyResult<Op> {
    Ok(match op {
        "reserve" => Op::Reserve(p.reserve(py)?),
        "spend" => {
            let actual = p
                .get("actual")?
                .map(|a| convert::u64_of("actual", &a))
                .transpose()?;
            Op::Spend(p.reserve(py)?, actual)
        }
        "commit" => Op::Commit(
            p.res_id()?,
            convert::u64_of("actual", &p.need("actual")?)?,
            p.key(py)?,
        ),
        "release" => Op::Release(p.res_id()?, p.key(py)?),
        "extend" => Op::Extend(
            p.res_id()?,
            Duration::from_secs(convert::seconds_of("ttl", &p.need("ttl")?)?),
            p.key(py)?,
        ),
        "reservation" => Op::Get(p.res_id()?),
        "balances" => Op::Balances,
        "revoke" => {
            let s = convert::str_of("block_id", &p.need("block_id")?)?;
            let id = BlockId::from_hex(&s).ok_or_else(|| {
                PyValueError::new_err(format!("{s:?} is not a block id (64 hex characters)"))
            })?;
            Op::Revoke(id, p.get("target")?.map(|t| bearer_of(&t)).transpose()?)
        }
        "revocations" => Op::Revocations(match p.get("after")? {
            Some(a) => convert::u64_of("after", &a)?,
            None => 0,
        }),
        "authorize" => Op::Authorize(p.action()?),
        "keys" => Op::Keys,
        "ready" => Op::Ready,
        "mint" => {
            let body = p.need("body")?;
            let text: String = py
                .import("json")?
                .call_method1("dumps", (body,))?
                .extract()?;
            Op::Mint(serde_json::from_str(&text).map_err(|e| PyValueError::new_err(e.to_string()))?)
        }
        "allocate" => Op::Allocate(p.allocate(py)?),
        "allocation" => Op::Allocation(p.alloc_id()?),
        "release_allocation" => Op::ReleaseAllocation(p.alloc_id()?, p.key(py)?),
        "allocations" => Op::Allocations,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown ledger operation {other:?}"
            )));
        }
    })
}

fn counters_json(c: &ScopeCounters) -> Value {
    json!({
        "block_id": c.scope.block_id.to_string(),
        "unit": c.scope.unit.as_str(),
        "tools": c.scope.tools,
        "ceiling": c.ceiling,
        "spent": c.spent,
        "held": c.held,
        "remaining": c.remaining,
    })
}

fn reservation_json(r: &Reservation) -> Value {
    json!({
        "id": r.id.to_string(),
        "state": r.state.as_str(),
        "unit": r.unit.as_str(),
        "amount": r.amount,
        "charged": r.charged,
        "expires_at_ms": r.expires_at_ms,
        "block_id": r.block_id.to_string(),
        "scopes": r.scopes.iter().map(counters_json).collect::<Vec<_>>(),
    })
}

fn allocation_json(a: &Allocation) -> Value {
    json!({
        "id": a.id.to_string(),
        "state": a.state.as_str(),
        "unit": a.unit.as_str(),
        "amount": a.amount,
        "charged": a.charged,
        "drawn": a.drawn,
        "unused": a.unused,
        "returned": a.returned,
        "overflow": a.overflow,
        "expires_at_ms": a.expires_at_ms,
        "finalized_at_ms": a.finalized_at_ms,
        "parent_block_id": a.parent_block_id.to_string(),
        "child_block_id": a.child_block_id.to_string(),
    })
}

fn balance_json(b: &Balance) -> Value {
    let mut v = counters_json(&b.counters);
    v["block"] = json!(b.block);
    v
}

fn need(bearer: Option<Bearer>) -> Result<Bearer, ClientError> {
    bearer.ok_or(ClientError::InvalidInput("this operation needs a token"))
}

async fn run(client: Client, bearer: Option<Bearer>, op: Op) -> Result<Value, ClientError> {
    Ok(match op {
        Op::Reserve(r) => reservation_json(&client.reserve(&need(bearer)?, &r).await?),
        Op::Spend(r, actual) => reservation_json(&client.spend(&need(bearer)?, &r, actual).await?),
        Op::Commit(id, actual, key) => {
            reservation_json(&client.commit(&need(bearer)?, &id, actual, &key).await?)
        }
        Op::Release(id, key) => reservation_json(&client.release(&need(bearer)?, &id, &key).await?),
        Op::Extend(id, ttl, key) => {
            reservation_json(&client.extend(&need(bearer)?, &id, ttl, &key).await?)
        }
        Op::Get(id) => reservation_json(&client.reservation(&need(bearer)?, &id).await?),
        Op::Balances => Value::Array(
            client
                .balances(&need(bearer)?)
                .await?
                .iter()
                .map(balance_json)
                .collect(),
        ),
        Op::Revoke(id, target) => {
            let r = client.revoke(&need(bearer)?, &id, target.as_ref()).await?;
            json!({"block_id": r.block_id.to_string(), "seq": r.seq, "new": r.new})
        }
        Op::Revocations(after) => {
            let page = client.revocations(&need(bearer)?, after).await?;
            json!({
                "revocations": page.revocations.iter().map(|e| json!({"seq": e.seq, "block_id": e.block_id.to_string()})).collect::<Vec<_>>(),
                "next": page.next,
            })
        }
        Op::Authorize(action) => {
            let a = client.authorize(&need(bearer)?, &action).await?;
            Value::Array(
                a.budgets
                    .iter()
                    .map(|b| {
                        json!({"block": b.block, "block_id": b.block_id.to_string(), "unit": b.unit.as_str(), "ceiling": b.ceiling, "tools": b.tools})
                    })
                    .collect(),
            )
        }
        Op::Keys => Value::Array(
            client
                .keys()
                .await?
                .iter()
                .map(|k| json!({"kid": k.kid, "public_key": k.public_key, "status": k.status}))
                .collect(),
        ),
        Op::Ready => Value::Bool(client.ready().await?),
        Op::Mint(body) => {
            let m = client.mint(&need(bearer)?, &body).await?;
            json!({"token": m.token, "block_id": m.block_id.to_string(), "kid": m.kid})
        }
        Op::Allocate(a) => allocation_json(&client.allocate(&need(bearer)?, &a).await?),
        Op::Allocation(id) => allocation_json(&client.allocation(&need(bearer)?, &id).await?),
        Op::ReleaseAllocation(id, key) => {
            allocation_json(&client.release_allocation(&need(bearer)?, &id, &key).await?)
        }
        Op::Allocations => Value::Array(
            client
                .allocations(&need(bearer)?)
                .await?
                .iter()
                .map(allocation_json)
                .collect(),
        ),
    })
}

/// A JSON answer on its way to Python.
struct Json(Value);

impl<'py> IntoPyObject<'py> for Json {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(convert::json_to_py(py, &self.0)?.into_bound(py))
    }
}

/// The ledger client shared by `baton.Ledger` and `baton.AsyncLedger`.
#[pyclass(subclass, frozen, module = "baton._baton")]
pub struct LedgerCore {
    pub client: Client,
}

#[pymethods]
impl LedgerCore {
    /// A client of the ledger at `url` (`http://127.0.0.1:7878`).
    /// `timeout`: seconds one try may take; `retries`: tries in all for a
    /// request that got no answer or a 503/408 (same idempotency key).
    #[new]
    #[pyo3(signature = (url, *, timeout=5.0, connect_timeout=2.0, retries=4))]
    fn new(
        py: Python<'_>,
        url: &str,
        timeout: f64,
        connect_timeout: f64,
        retries: u32,
    ) -> PyResult<Self> {
        let secs = |name: &str, s: f64| {
            Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    PyValueError::new_err(format!("{name} must be a positive number of seconds"))
                })
        };
        let default = RetryPolicy::default();
        let retry = RetryPolicy::new(retries.max(1), default.base, default.max);
        // reqwest's connector needs a runtime's context when it is built.
        let _guard = runtime().enter();
        let client = Client::builder(url)
            .timeout(secs("timeout", timeout)?)
            .connect_timeout(secs("connect_timeout", connect_timeout)?)
            .retry(retry)
            .build()
            .map_err(|e| errors::client(py, &e))?;
        Ok(Self { client })
    }

    /// The ledger's base URL.
    #[getter]
    fn url(&self) -> &str {
        self.client.base_url()
    }

    /// Runs `op` and waits for its answer (GIL released meanwhile).
    #[pyo3(signature = (op, token, params))]
    fn _call(
        &self,
        py: Python<'_>,
        op: &str,
        token: Option<Bound<'_, PyAny>>,
        params: &Bound<'_, PyDict>,
    ) -> PyResult<Py<PyAny>> {
        let op = parse(py, op, &Params(params))?;
        let bearer = token
            .filter(|t| !t.is_none())
            .map(|t| bearer_of(&t))
            .transpose()?;
        let client = self.client.clone();
        let result = py.detach(|| runtime().block_on(run(client, bearer, op)));
        match result {
            Ok(v) => convert::json_to_py(py, &v),
            Err(e) => Err(errors::client(py, &e)),
        }
    }

    /// Runs `op` as an asyncio awaitable.
    #[pyo3(signature = (op, token, params))]
    fn _acall<'py>(
        &self,
        py: Python<'py>,
        op: &str,
        token: Option<Bound<'py, PyAny>>,
        params: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let op = parse(py, op, &Params(params))?;
        let bearer = token
            .filter(|t| !t.is_none())
            .map(|t| bearer_of(&t))
            .transpose()?;
        let client = self.client.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            match run(client, bearer, op).await {
                Ok(v) => Ok(Json(v)),
                Err(e) => Err(Python::attach(|py| errors::client(py, &e))),
            }
        })
    }
}
