//! A tool gateway in front of fake in-process tools, paid for through the
//! Baton spend ledger, built on `baton::tower`.
//!
//! ```text
//! cargo run -- serve --data ledger-data --listen 127.0.0.1:7878 &   # the ledger
//! cargo run --example gateway --features tower -- --ledger http://127.0.0.1:7878
//! # A token: POST /v1/tokens on the ledger with ledger-data/admin.token, e.g.
//! # {"budgets":[{"unit":"usd_microcents","ceiling":500000000}],"tools":["crm.*","refund.*"]}
//! curl -s http://127.0.0.1:8787/tools/crm.read -H "authorization: Bearer $TOKEN" \
//!   -H 'content-type: application/json' \
//!   -d '{"resource":"customer:4821","estimated_cost":1000000,"unit":"usd_microcents"}'
//! ```
//!
//! `POST /tools/{name}` with `{"resource"?, "args"?, "estimated_cost",
//! "unit"}`: the gate ([`baton::tower`]) verifies the bearer token offline,
//! authorizes `{name}` with the body's resource and arguments, holds
//! `estimated_cost` at the ledger, runs the tool, and commits its metered
//! cost (or releases the hold if the tool fails). With
//! `BATON_FEED_TOKEN` set (a token with `baton.admin.revocations.read`),
//! the gateway follows the ledger's revocation feed and refuses revoked
//! tokens itself, failing closed (503) when the feed is stale.
//!
//! `tests/gateway.rs` includes this file and runs it against an in-process
//! ledger; [`router`] is what it builds.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use baton::Unit;
use baton::client::{
    Bearer, Client, ClientError, FeedPolicy, KeyPolicy, KeySource, RevocationFeed,
};
use baton::tower::{ActionSource, Caller, Charge, Gate, Rejection, RequestView};
use serde_json::{Value, json};

/// $1 in usd_microcents.
pub const USD: u64 = 100_000_000;
/// What a CRM read costs.
pub const CRM_READ_COST: u64 = USD / 100;
/// A refund's fixed fee; 1% of the amount comes on top.
pub const REFUND_FIXED_FEE: u64 = 30 * USD / 100;

/// What issuing a refund of `amount` costs.
pub fn refund_cost(amount: u64) -> u64 {
    REFUND_FIXED_FEE.saturating_add(amount / 100)
}

/// The gateway's tools: `crm.read`, `refund.issue`, and `flaky.*`, which
/// always fails (to show a hold being released).
fn known_tool(name: &str) -> bool {
    matches!(name, "crm.read" | "refund.issue") || name.starts_with("flaky.")
}

/// The action of `POST /tools/{name}`: `{name}`, with the body's resource
/// and arguments. An unknown tool is refused before anything else.
fn action(req: &RequestView<'_>) -> Result<baton::client::Action, Rejection> {
    let name = req
        .parts
        .uri
        .path()
        .strip_prefix("/tools/")
        .unwrap_or_default();
    if !known_tool(name) {
        return Err(Rejection::new(
            StatusCode::NOT_FOUND,
            "unknown_tool",
            "no such tool",
        ));
    }
    req.action_from_json(name)
}

/// The hold of a call: the body's `estimated_cost` in its `unit`.
fn price(
    req: &RequestView<'_>,
    _: &baton::client::Action,
) -> Result<Option<(Unit, u64)>, Rejection> {
    let body: Value = serde_json::from_slice(req.body)
        .map_err(|_| Rejection::bad_request("invalid_json", "the body is not JSON"))?;
    let unit = body["unit"]
        .as_str()
        .ok_or_else(|| Rejection::bad_request("invalid_request", "missing field `unit`"))?;
    let unit = Unit::parse(unit).map_err(|m| Rejection::bad_request("invalid_unit", m))?;
    match body["estimated_cost"].as_u64() {
        Some(n @ 1..=baton::ledger::MAX_AMOUNT) => Ok(Some((unit, n))),
        _ => Err(Rejection::bad_request(
            "invalid_amount",
            "estimated_cost must be an integer from 1 to 2^63-1",
        )),
    }
}

/// Runs tool `name`; the metered cost is committed in usd_microcents, any
/// other unit is charged the estimate (the hold).
async fn call_tool(Path(name): Path<String>, caller: Caller, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let resource = body["resource"].as_str().unwrap_or_default();
    let bad = |m: &str| Rejection::bad_request("invalid_tool_input", m).into_response();
    let (result, cost) = match name.as_str() {
        "crm.read" if !resource.is_empty() => (
            json!({ "id": resource, "name": "Ada Lovelace", "plan": "pro" }),
            CRM_READ_COST,
        ),
        "refund.issue" => match body["args"]["amount"].as_u64() {
            Some(amount @ 1..) if !resource.is_empty() => (
                json!({ "customer": resource, "amount": amount, "status": "issued" }),
                refund_cost(amount),
            ),
            _ => return bad("refund.issue needs a resource and a positive amount"),
        },
        "crm.read" => return bad("crm.read needs a resource (customer:ID)"),
        _ => {
            let e = Rejection::new(
                StatusCode::BAD_GATEWAY,
                "tool_failed",
                "the tool failed; nothing was charged",
            );
            return e.into_response();
        }
    };
    let hold = caller.hold.as_ref();
    let usd = hold.is_some_and(|h| h.unit == Unit::UsdMicrocents);
    if usd {
        caller.set_cost(cost);
    }
    let charged = if usd {
        Some(cost)
    } else {
        hold.map(|h| h.amount)
    };
    axum::Json(json!({
        "tool": name,
        "result": result,
        "cost": { "actual": charged, "reservation_id": hold.map(|h| h.id.to_string()) },
    }))
    .into_response()
}

/// The gateway for the ledger at `ledger`: fetches its keys first, and with
/// `feed`, its revocations.
pub async fn router(
    ledger: &str,
    keys: KeyPolicy,
    feed: Option<(Bearer, FeedPolicy)>,
) -> Result<Router, ClientError> {
    let client = Client::builder(ledger)
        .timeout(Duration::from_secs(5))
        .build()?;
    let source = KeySource::start(client.clone(), keys, |k| {
        baton::Verifier::new(k).with_cache(10_000)
    })
    .await?;
    let mut gate = Gate::new(Arc::clone(&source), ActionSource::from_fn(action))
        .charge(Charge::new(client.clone(), price))
        .max_body(16 * 1024);
    if let Some((admin, policy)) = feed {
        let follower =
            RevocationFeed::start(client, admin, source.verifier().clone(), policy).await?;
        gate = gate.revocations(Arc::new(follower));
    }
    Ok(Router::new()
        .route("/tools/{name}", post(call_tool))
        .layer(gate.layer())
        .route(
            "/healthz",
            axum::routing::get(|| async { axum::Json(json!({ "status": "ok" })) }),
        ))
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut ledger, mut listen) = (None, "127.0.0.1:8787".to_owned());
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--ledger", Some(v)) => ledger = Some(v),
            ("--listen", Some(v)) => listen = v,
            _ => {
                eprintln!("usage: gateway --ledger URL [--listen ADDR]");
                return ExitCode::from(2);
            }
        }
    }
    let Some(ledger) = ledger.or_else(|| std::env::var("BATON_LEDGER").ok()) else {
        eprintln!("usage: gateway --ledger URL [--listen ADDR]");
        return ExitCode::from(2);
    };
    let feed = std::env::var("BATON_FEED_TOKEN")
        .ok()
        .map(|t| (Bearer::new(t), FeedPolicy::default()));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail("starting the runtime", e),
    };
    runtime.block_on(async move {
        let app = match router(&ledger, KeyPolicy::default(), feed).await {
            Ok(a) => a,
            Err(e) => return fail("starting the gateway", e),
        };
        let listener = match tokio::net::TcpListener::bind(&listen).await {
            Ok(l) => l,
            Err(e) => return fail(&format!("listening on {listen}"), e),
        };
        println!("listening on http://{listen}");
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        match axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail("serving", e),
        }
    })
}

fn fail(step: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {step}: {e}");
    ExitCode::from(2)
}
