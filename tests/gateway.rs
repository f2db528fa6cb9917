//! The tool gateway of `examples/gateway.rs`, end to end: a real ledger
//! service on a loopback socket, a recording proxy in front of it, and the
//! gateway's router served on a third socket.
//!
//! The proxy logs every request the gateway makes to the ledger, so each test
//! states exactly which ledger calls a tool call caused (none, for a denial).
//! Together these are the tests of `baton::tower` against a live ledger:
//! allow, 401, 402, 403, 503, reserve then commit, release on error, and
//! revocation through the feed.
#![cfg(all(feature = "server", feature = "tower"))]

#[allow(dead_code)]
#[path = "../examples/gateway.rs"]
mod gateway;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use baton::client::{Bearer, Client, FeedPolicy, KeyPolicy};
use baton::pattern::ActionPattern;
use baton::server::Service;
use baton::server::writer::{SystemClock, WriterConfig};
use baton::store::sqlite::SqliteStore;
use baton::{ArgBound, ArgConstraint, Caveat, RootKey, Token, Unit};
use gateway::USD;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const CUSTOMER: &str = "customer:4821";

/// Keys fetched once at start and never again: no test sees a refetch it
/// did not ask for.
fn quiet_keys() -> KeyPolicy {
    KeyPolicy::new(Duration::from_secs(3600), Duration::from_secs(3600))
}

/// A reverse proxy that records `METHOD /path` of every request (with
/// reservation ids shown as `{id}`), and can serve a replacement keyset.
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    log: Mutex<Vec<String>>,
    keys: Mutex<Option<Value>>,
}

impl Proxy {
    fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

async fn forward(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path: Vec<&str> = parts
        .uri
        .path()
        .split('/')
        .map(|s| if s.starts_with("rsv_") { "{id}" } else { s })
        .collect();
    proxy
        .log
        .lock()
        .unwrap()
        .push(format!("{} {}", parts.method, path.join("/")));
    if parts.uri.path() == "/v1/keys"
        && let Some(keys) = proxy.keys.lock().unwrap().clone()
    {
        return axum::Json(keys).into_response();
    }
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let mut upstream = proxy
        .client
        .request(parts.method, format!("{}{}", proxy.upstream, parts.uri))
        .body(body);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(v) = parts.headers.get(&name) {
            upstream = upstream.header(name, v);
        }
    }
    match upstream.send().await {
        Ok(r) => {
            let status = r.status();
            (status, r.bytes().await.unwrap()).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// Serves `app` on a loopback port until the returned sender is dropped or fires.
async fn spawn_server(app: Router) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (url, stop, task)
}

struct Harness {
    /// The ledger itself, for reading balances without going through the proxy.
    ledger: String,
    proxy: Arc<Proxy>,
    proxy_url: String,
    proxy_stop: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    gateway: String,
    client: reqwest::Client,
    /// $10 budget, tools crm.*, refund.*, flaky.*, email.*, depth 3.
    root: Token,
    /// $5 budget, crm.read, refund.issue and flaky.fetch, on one customer,
    /// refunds up to $100.
    agent: Token,
    /// May read the revocation feed.
    admin: Token,
    _ledger_stop: oneshot::Sender<()>,
    _gateway_stop: oneshot::Sender<()>,
}

impl Harness {
    async fn start() -> Self {
        let store = SqliteStore::in_memory().expect("in-memory store");
        let service = Service::start(
            Box::new(store),
            Arc::new(SystemClock),
            WriterConfig::default(),
        )
        .expect("service starts");
        // Minted before `serve` takes the service.
        let root = service
            .mint(vec![
                Caveat::budget(Unit::UsdMicrocents, 10 * USD),
                Caveat::tools(["crm.*", "refund.*", "flaky.*", "email.*"]).unwrap(),
                Caveat::Depth(3),
            ])
            .unwrap();
        let agent = root
            .attenuate(vec![
                Caveat::budget(Unit::UsdMicrocents, 5 * USD),
                Caveat::tools(["crm.read", "refund.issue", "flaky.fetch"]).unwrap(),
                Caveat::resources([CUSTOMER]).unwrap(),
                Caveat::ArgBound(ArgConstraint::new(
                    ActionPattern::parse("refund.issue").unwrap(),
                    "amount",
                    ArgBound::Range {
                        min: Some(1),
                        max: Some(100 * USD as i64),
                    },
                )),
                Caveat::Label("refund-agent".into()),
            ])
            .unwrap();
        let admin = service.mint_admin_token().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ledger = format!("http://{}", listener.local_addr().unwrap());
        let (ledger_stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(service.serve(listener, async move {
            let _ = stopped.await;
        }));

        let client = reqwest::Client::new();
        let proxy = Arc::new(Proxy {
            upstream: ledger.clone(),
            client: client.clone(),
            log: Mutex::new(Vec::new()),
            keys: Mutex::new(None),
        });
        let (proxy_url, proxy_stop, proxy_task) = spawn_server(
            Router::new()
                .fallback(forward)
                .with_state(Arc::clone(&proxy)),
        )
        .await;
        let router = gateway::router(&proxy_url, quiet_keys(), None)
            .await
            .expect("gateway starts");
        let (gateway, gateway_stop, _) = spawn_server(router).await;
        assert_eq!(proxy.take_log(), ["GET /v1/keys"], "keys fetched at start");
        Self {
            ledger,
            proxy,
            proxy_url,
            proxy_stop: Some((proxy_stop, proxy_task)),
            gateway,
            client,
            root,
            agent,
            admin,
            _ledger_stop: ledger_stop,
            _gateway_stop: gateway_stop,
        }
    }

    /// Another gateway on the same proxy, with its own key policy.
    async fn second_gateway(&self, policy: KeyPolicy) -> (String, oneshot::Sender<()>) {
        let router = gateway::router(&self.proxy_url, policy, None)
            .await
            .expect("gateway starts");
        let (url, stop, _) = spawn_server(router).await;
        (url, stop)
    }

    /// Calls tool `name` through `gateway` with `token` (raw text) and `body`.
    async fn call_at(
        &self,
        gateway: &str,
        name: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .post(format!("{gateway}/tools/{name}"))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn call(&self, name: &str, token: &Token, body: Value) -> (StatusCode, Value) {
        self.call_at(&self.gateway, name, Some(&token.to_text()), body)
            .await
    }

    /// `(spent, held)` of the token's own (nearest) budget scope, read from the ledger.
    async fn balance(&self, token: &Token) -> (u64, u64) {
        let v: Value = self
            .client
            .get(format!("{}/v1/balances", self.ledger))
            .bearer_auth(token.to_text())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let s = &v["scopes"][0];
        (s["spent"].as_u64().unwrap(), s["held"].as_u64().unwrap())
    }
}

fn usd_call(estimate: u64) -> Value {
    json!({ "resource": CUSTOMER, "estimated_cost": estimate, "unit": "usd_microcents" })
}

fn refund(amount: u64, estimate: u64) -> Value {
    json!({ "resource": CUSTOMER, "args": { "amount": amount }, "estimated_cost": estimate, "unit": "usd_microcents" })
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn allowed_call_reserves_runs_and_commits() {
    let h = Harness::start().await;
    let amount = 40 * USD;
    let (s, v) = h.call("refund.issue", &h.agent, refund(amount, USD)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let actual = gateway::refund_cost(amount);
    assert_eq!(actual, 70_000_000, "30 cents plus 1% of $40");
    assert_eq!(v["result"]["status"], "issued");
    assert_eq!(v["cost"]["actual"], actual);
    assert_eq!(
        h.proxy.take_log(),
        ["POST /v1/reservations", "POST /v1/reservations/{id}/commit"]
    );
    assert_eq!(h.balance(&h.agent).await, (actual, 0), "spent == actual");
    assert_eq!(
        h.balance(&h.root).await,
        (actual, 0),
        "and at every ancestor"
    );

    let (s, v) = h.call("crm.read", &h.agent, usd_call(USD)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"]["id"], CUSTOMER);
    assert_eq!(
        h.balance(&h.agent).await,
        (actual + gateway::CRM_READ_COST, 0)
    );
}

#[tokio::test]
async fn a_cost_overrun_the_budget_cannot_cover_charges_the_hold() {
    let h = Harness::start().await;
    let small = h
        .agent
        .attenuate(vec![Caveat::budget(Unit::UsdMicrocents, USD / 2)])
        .unwrap();
    // The refund costs 70 cents; 40 were held and only 50 exist.
    let (s, v) = h
        .call("refund.issue", &small, refund(40 * USD, 40 * USD / 100))
        .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the tool ran, so its result is returned: {v}"
    );
    assert_eq!(v["cost"]["actual"].as_u64(), Some(70 * USD / 100));
    assert_eq!(
        h.proxy.take_log(),
        [
            "POST /v1/reservations",
            "POST /v1/reservations/{id}/commit",
            "POST /v1/reservations/{id}/commit"
        ]
    );
    assert_eq!(h.balance(&small).await, (40 * USD / 100, 0));
}

#[tokio::test]
async fn a_retried_request_id_is_charged_once_and_not_rerun() {
    let h = Harness::start().await;
    let send = |tool: &str, id: &str| {
        h.client
            .post(format!("{}/tools/{tool}", h.gateway))
            .bearer_auth(h.agent.to_text())
            .header("idempotency-key", id)
            .json(&usd_call(USD))
            .send()
    };
    let first = send("crm.read", "retry-1").await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    h.proxy.take_log();
    // The answer was "lost"; the client retries with the same id.
    let again: Value = send("crm.read", "retry-1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(code(&again), "request_replayed", "{again}");
    assert_eq!(
        h.proxy.take_log(),
        ["POST /v1/reservations", "GET /v1/reservations/{id}"],
        "the reservation was replayed, found committed, and the tool not run"
    );
    assert_eq!(h.balance(&h.agent).await, (gateway::CRM_READ_COST, 0));

    // Likewise after a failure: the hold was released, so a rerun would go unpaid.
    let failed = send("flaky.fetch", "retry-2").await.unwrap();
    assert_eq!(failed.status().as_u16(), 502);
    let again = send("flaky.fetch", "retry-2").await.unwrap();
    assert_eq!(again.status().as_u16(), 409);
    assert_eq!(h.balance(&h.agent).await, (gateway::CRM_READ_COST, 0));
}

#[tokio::test]
async fn failing_tool_releases_the_hold() {
    let h = Harness::start().await;
    let (s, v) = h.call("flaky.fetch", &h.agent, usd_call(2 * USD)).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_GATEWAY, "tool_failed"),
        "{v}"
    );
    assert_eq!(
        h.proxy.take_log(),
        [
            "POST /v1/reservations",
            "POST /v1/reservations/{id}/release"
        ]
    );
    assert_eq!(
        h.balance(&h.agent).await,
        (0, 0),
        "held back to 0, nothing spent"
    );
}

#[tokio::test]
async fn denied_calls_never_reach_the_ledger() {
    let h = Harness::start().await;
    let cases = [
        ("flaky.other", usd_call(USD), "action_not_allowed"),
        (
            "crm.read",
            json!({ "resource": "customer:9999", "estimated_cost": USD, "unit": "usd_microcents" }),
            "resource_not_allowed",
        ),
        ("refund.issue", refund(150 * USD, USD), "arg_out_of_bounds"),
        (
            "crm.read",
            json!({ "resource": CUSTOMER, "estimated_cost": 5, "unit": "tokens" }),
            "no_budget",
        ),
    ];
    for (tool, body, expected) in cases {
        let (s, v) = h.call(tool, &h.agent, body).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::FORBIDDEN, expected),
            "{tool}: {v}"
        );
        assert!(v["error"]["message"].is_string());
    }
    // The root token reaches email.*, but the gateway has no such tool.
    let (s, v) = h.call("email.send", &h.root, usd_call(USD)).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "unknown_tool"));
    // A refund without an amount: the agent's token requires one; the root
    // token does not, but the tool does.
    let (s, v) = h.call("refund.issue", &h.agent, usd_call(USD)).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "arg_missing"));
    assert_eq!(h.proxy.take_log(), Vec::<String>::new());
    // The tool refuses its input only once it runs: the hold is released.
    let (s, v) = h.call("refund.issue", &h.root, usd_call(USD)).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_tool_input"),
        "{v}"
    );
    assert_eq!(
        h.proxy.take_log(),
        [
            "POST /v1/reservations",
            "POST /v1/reservations/{id}/release"
        ]
    );
    assert_eq!(h.balance(&h.agent).await, (0, 0));
    assert_eq!(h.balance(&h.root).await, (0, 0));
}

#[tokio::test]
async fn over_budget_call_gets_402_with_remaining() {
    let h = Harness::start().await;
    let (s, _) = h.call("crm.read", &h.agent, usd_call(2 * USD)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h.call("crm.read", &h.agent, usd_call(5 * USD)).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::PAYMENT_REQUIRED, "insufficient_budget"),
        "{v}"
    );
    assert_eq!(v["error"]["remaining"], 5 * USD - gateway::CRM_READ_COST);
    let log = h.proxy.take_log();
    assert_eq!(
        log.last().map(String::as_str),
        Some("POST /v1/reservations"),
        "nothing ran"
    );
}

#[tokio::test]
async fn a_child_past_its_allocation_gets_402_naming_the_allocation() {
    let h = Harness::start().await;
    // The root carves $1 for the agent, with overflow `deny`: the agent
    // lives within it, whatever its own $5 cap says.
    let resp = h
        .client
        .post(format!("{}/v1/allocations", h.ledger))
        .bearer_auth(h.root.to_text())
        .json(&json!({
            "child_token": h.agent.to_text(),
            "unit": "usd_microcents",
            "amount": USD,
            "overflow": "deny",
            "idempotency_key": "carve-agent",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let alloc: Value = resp.json().await.unwrap();
    let id = alloc["allocation"]["id"].as_str().unwrap().to_owned();
    let (s, v) = h.call("crm.read", &h.agent, usd_call(2 * USD)).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::PAYMENT_REQUIRED, "allocation_exhausted"),
        "{v}"
    );
    assert_eq!(v["error"]["allocation_id"], id.as_str(), "{v}");
    assert_eq!(v["error"]["remaining"], USD, "{v}");
    // Within it, the call runs and is charged to it.
    let (s, v) = h.call("crm.read", &h.agent, usd_call(USD / 2)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn invalid_tokens_get_401() {
    let h = Harness::start().await;
    let text = h.agent.to_text();
    // Flip one character inside the signature-covered bytes.
    let mut tampered = text.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let foreign = Token::mint(
        &RootKey::generate().unwrap(),
        vec![Caveat::tools(["crm.read"]).unwrap()],
    )
    .unwrap()
    .to_text();
    let cases = [
        (None, "missing_token"),
        (Some("not-a-token"), "bad_prefix"),
        (Some(foreign.as_str()), "unknown_kid"),
    ];
    for (token, expected) in cases {
        let (s, v) = h
            .call_at(&h.gateway, "crm.read", token, usd_call(USD))
            .await;
        assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, expected), "{v}");
    }
    let (s, v) = h
        .call_at(&h.gateway, "crm.read", Some(&tampered), usd_call(USD))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "tampered: {v}");
    assert_eq!(h.proxy.take_log(), Vec::<String>::new());
}

#[tokio::test]
async fn ledger_unavailable_gives_503() {
    let mut h = Harness::start().await;
    let (stop, task) = h.proxy_stop.take().unwrap();
    stop.send(()).unwrap();
    task.await.unwrap();
    let (s, v) = h.call("crm.read", &h.agent, usd_call(USD)).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "ledger_unavailable"),
        "{v}"
    );
    assert_eq!(h.balance(&h.agent).await, (0, 0));
}

/// The ledger's keys, plus `extra` as the new active key and the old ones retired.
fn rotated_keys(current: &Value, extra: &RootKey) -> Value {
    let mut keys: Vec<Value> = current["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| json!({ "kid": k["kid"], "public_key": k["public_key"], "status": "retired" }))
        .collect();
    keys.push(json!({ "kid": extra.kid().to_string(), "public_key": extra.public().to_text(), "status": "active" }));
    json!({ "keys": keys })
}

#[tokio::test]
async fn key_rotation_is_picked_up_without_hammering_the_ledger() {
    let h = Harness::start().await;
    // Gateway `eager` may refetch on any unknown kid; the harness gateway
    // fetched at start and may not fetch again within the hour.
    let (eager, _stop) = h
        .second_gateway(KeyPolicy::new(Duration::from_secs(3600), Duration::ZERO))
        .await;
    assert_eq!(h.proxy.take_log(), ["GET /v1/keys"]);

    // The issuer rotates to a new key; the ledger now publishes it.
    let new_key = RootKey::generate().unwrap();
    let current: Value = h
        .client
        .get(format!("{}/v1/keys", h.ledger))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    *h.proxy.keys.lock().unwrap() = Some(rotated_keys(&current, &new_key));
    let fresh = Token::mint(
        &new_key,
        vec![
            Caveat::budget(Unit::UsdMicrocents, USD),
            Caveat::tools(["crm.read"]).unwrap(),
        ],
    )
    .unwrap()
    .to_text();

    // A denied action shows the token verified, without a reservation.
    for _ in 0..3 {
        let (s, v) = h
            .call_at(&h.gateway, "flaky.other", Some(&fresh), usd_call(USD))
            .await;
        assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unknown_kid"));
    }
    assert_eq!(
        h.proxy.take_log(),
        Vec::<String>::new(),
        "within min_interval: no refetch, however many unknown kids"
    );

    for _ in 0..3 {
        let (s, v) = h
            .call_at(&eager, "flaky.other", Some(&fresh), usd_call(USD))
            .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::FORBIDDEN, "action_not_allowed"),
            "{v}"
        );
    }
    assert_eq!(
        h.proxy.take_log(),
        ["GET /v1/keys"],
        "one refetch, then the kid is known"
    );
    // Tokens under the retired key still verify.
    let (s, v) = h
        .call_at(
            &eager,
            "flaky.other",
            Some(&h.agent.to_text()),
            usd_call(USD),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::FORBIDDEN, "action_not_allowed"),
        "{v}"
    );
    // An unknown kid after that fetches once more (min_interval is zero
    // here) and is still refused.
    let stranger = Token::mint(
        &RootKey::generate().unwrap(),
        vec![Caveat::tools(["crm.read"]).unwrap()],
    )
    .unwrap()
    .to_text();
    let (s, v) = h
        .call_at(&eager, "crm.read", Some(&stranger), usd_call(USD))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unknown_kid"));
    assert_eq!(h.proxy.take_log(), ["GET /v1/keys"]);
}

#[tokio::test]
async fn bad_requests_get_400_and_a_code() {
    let h = Harness::start().await;
    let cases = [
        (
            json!({ "resource": CUSTOMER, "estimated_cost": USD }),
            "invalid_request",
        ),
        (
            json!({ "resource": CUSTOMER, "estimated_cost": 0, "unit": "usd_microcents" }),
            "invalid_amount",
        ),
        (
            json!({ "resource": CUSTOMER, "estimated_cost": -1, "unit": "usd_microcents" }),
            "invalid_amount",
        ),
        (
            json!({ "resource": CUSTOMER, "estimated_cost": 1, "unit": "US Dollars" }),
            "invalid_unit",
        ),
        (
            json!({ "resource": CUSTOMER, "args": { "amount": 1.5 }, "estimated_cost": 1, "unit": "usd_microcents" }),
            "invalid_request",
        ),
        (json!({ "resource": 7 }), "invalid_request"),
    ];
    for (body, expected) in cases {
        let (s, v) = h.call("crm.read", &h.agent, body.clone()).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, expected),
            "{body}: {v}"
        );
    }
    let resp = h
        .client
        .post(format!("{}/tools/crm.read", h.gateway))
        .bearer_auth(h.agent.to_text())
        .header("idempotency-key", "not valid!")
        .json(&usd_call(USD))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(h.proxy.take_log(), Vec::<String>::new());
}

#[tokio::test]
async fn a_revocation_reaches_the_gateway_through_the_feed_within_its_bound() {
    let mut h = Harness::start().await;
    let interval = Duration::from_millis(100);
    let policy = FeedPolicy::new(interval, Duration::from_millis(600));
    let router = gateway::router(
        &h.proxy_url,
        quiet_keys(),
        Some((Bearer::from(&h.admin), policy)),
    )
    .await
    .expect("gateway starts");
    let (gw, _stop, _) = spawn_server(router).await;
    let (s, v) = h
        .call_at(&gw, "crm.read", Some(&h.agent.to_text()), usd_call(USD))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // The agent revokes its own block at the ledger, not at the gateway.
    let ledger = Client::new(&h.ledger).unwrap();
    let agent = Bearer::from(&h.agent);
    let revoked = ledger
        .revoke(&agent, &h.agent.block_ids()[1], None)
        .await
        .unwrap();
    assert!(revoked.new);
    let at = std::time::Instant::now();
    h.proxy.take_log();
    // The bound (baton::client::feed): interval + one poll. The poll is a
    // loopback round trip here, so a second of slack is plenty.
    let refused = loop {
        let (s, v) = h
            .call_at(&gw, "flaky.other", Some(&h.agent.to_text()), usd_call(USD))
            .await;
        if s == StatusCode::FORBIDDEN && code(&v) == "revoked" {
            break at.elapsed();
        }
        assert_eq!(code(&v), "action_not_allowed", "{v}");
        assert!(
            at.elapsed() < interval + Duration::from_secs(1),
            "not refused in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(refused <= interval + Duration::from_secs(1), "{refused:?}");
    let log = h.proxy.take_log();
    assert!(
        log.iter().all(|l| l.starts_with("GET /v1/revocations")),
        "the gateway refused on its own: {log:?}"
    );

    // The ledger goes away: once the feed is older than its bound, the
    // gateway fails closed for every token.
    let (stop, task) = h.proxy_stop.take().unwrap();
    stop.send(()).unwrap();
    task.await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (s, v) = h
        .call_at(&gw, "crm.read", Some(&h.root.to_text()), usd_call(USD))
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "revocations_stale"),
        "{v}"
    );
}

#[test]
fn a_bad_ledger_url_is_refused_before_any_request() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(gateway::router("ftp://ledger", quiet_keys(), None))
        .expect_err("an ftp URL is refused");
    assert!(matches!(err, baton::client::ClientError::Url(_)), "{err}");
}

#[tokio::test]
async fn the_verified_extractor_works_without_the_layer() {
    use axum::extract::FromRef;
    use baton::client::KeySource;
    use baton::tower::{ActionSource, Gate, Verified};

    #[derive(Clone)]
    struct AppState(Gate);
    impl FromRef<AppState> for Gate {
        fn from_ref(s: &AppState) -> Gate {
            s.0.clone()
        }
    }
    let h = Harness::start().await;
    let keys = KeySource::start(
        Client::new(&h.ledger).unwrap(),
        quiet_keys(),
        baton::Verifier::new,
    )
    .await
    .unwrap();
    let state = AppState(Gate::new(keys, ActionSource::routes([])));
    let app = Router::new()
        .route(
            "/whoami",
            axum::routing::get(|v: Verified| async move { v.token.block_ids().len().to_string() }),
        )
        .with_state(state);
    let (url, _stop, _) = spawn_server(app).await;
    let ok = h
        .client
        .get(format!("{url}/whoami"))
        .bearer_auth(h.agent.to_text())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(ok.text().await.unwrap(), "2");
    let none: Value = h
        .client
        .get(format!("{url}/whoami"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(code(&none), "missing_token");
}
