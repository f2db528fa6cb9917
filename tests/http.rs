//! End-to-end tests of the ledger service over HTTP: in-process through the
//! router, and over a real loopback socket. Expiry runs on a manual clock,
//! so no test sleeps.
#![cfg(feature = "server")]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use baton::server::Service;
use baton::server::writer::{ManualClock, WriterConfig};
use baton::store::sqlite::SqliteStore;
use baton::{Caveat, Token, Unit};
use common::store::{SchemaGuard, test_store, unique};
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;

const T0: u64 = 1_800_000_000_000;

struct Harness {
    service: Service,
    clock: Arc<ManualClock>,
    /// Declared last: dropped after the service.
    _schema: Option<SchemaGuard>,
}

/// The backend under test: the ledger suite below is written once against
/// the `Store` trait, and each backend runs all of it
/// (`common::store::test_store`).
fn new_store() -> (Box<dyn baton::store::Store>, Option<SchemaGuard>) {
    test_store("test")
}

fn harness() -> Harness {
    let clock = Arc::new(ManualClock::new(T0));
    let (store, schema) = new_store();
    let config = WriterConfig::default()
        .grace_ms(1_000)
        .max_batch(256)
        // BATON_TEST_CACHE=1 runs the suite with one-entry caches, so that
        // replays and finished reservations are read back from the store.
        .cache(
            std::env::var("BATON_TEST_CACHE")
                .ok()
                .and_then(|n| n.parse().ok())
                .map_or_else(Default::default, baton::ledger::CacheSizes::all),
        )
        // On a shared store, two writers, as `baton serve` runs by default.
        .writers(2);
    let service = Service::start(store, clock.clone(), config).expect("service starts");
    Harness {
        service,
        clock,
        _schema: schema,
    }
}

impl Harness {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&Token>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.raw(
            method,
            path,
            token.map(|t| t.to_text()),
            body.map(|b| b.to_string()),
        )
        .await
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<String>,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b)),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.service.router().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    /// A tree: root $100 (tools *), parent $10, and the given children under the parent.
    fn tree(&self) -> (Token, Token) {
        let root = self
            .service
            .mint(vec![
                Caveat::budget(Unit::Calls, 100),
                Caveat::tools(["tool.*"]).unwrap(),
                Caveat::Depth(5),
            ])
            .unwrap();
        let parent = root
            .attenuate(vec![Caveat::budget(Unit::Calls, 10)])
            .unwrap();
        (root, parent)
    }
}

fn reserve_body(amount: Value, key: &str) -> Value {
    json!({ "action": "tool.run", "unit": "calls", "amount": amount, "idempotency_key": key, "ttl_ms": 5_000 })
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn reserve_commit_and_balances() {
    let h = harness();
    let (_, parent) = h.tree();
    let child = parent
        .attenuate(vec![Caveat::budget(Unit::Calls, 4)])
        .unwrap();
    let (s, v) = h
        .call(
            "POST",
            "/v1/reservations",
            Some(&child),
            Some(reserve_body(json!(3), "k1")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let scopes = v["reservation"]["scopes"].as_array().unwrap();
    assert_eq!(
        scopes.len(),
        3,
        "held at the child, the parent and the root"
    );
    assert_eq!(
        scopes
            .iter()
            .map(|s| s["held"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![3, 3, 3]
    );
    let id = v["reservation"]["id"].as_str().unwrap().to_owned();

    let (s, v) = h
        .call(
            "POST",
            &format!("/v1/reservations/{id}/commit"),
            Some(&child),
            Some(json!({ "actual": 2, "idempotency_key": "c1" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["reservation"]["state"], "committed");

    let (s, v) = h.call("GET", "/v1/balances", Some(&child), None).await;
    assert_eq!(s, StatusCode::OK);
    let remaining: Vec<u64> = v["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["remaining"].as_u64().unwrap())
        .collect();
    assert_eq!(remaining, vec![2, 8, 98]);
}

#[tokio::test]
async fn siblings_never_overspend_their_parent_under_concurrency() {
    let h = Arc::new(harness());
    let (root, parent) = h.tree();
    let children: Vec<Token> = (0..4)
        .map(|_| {
            parent
                .attenuate(vec![Caveat::budget(Unit::Calls, 6)])
                .unwrap()
        })
        .collect();
    let mut tasks = Vec::new();
    for (i, child) in children.iter().enumerate() {
        for j in 0..10 {
            let h = h.clone();
            let child = child.clone();
            tasks.push(tokio::spawn(async move {
                let (s, v) = h
                    .call(
                        "POST",
                        "/v1/spend",
                        Some(&child),
                        Some(reserve_body(json!(1), &format!("s-{i}-{j}"))),
                    )
                    .await;
                (s, v)
            }));
        }
    }
    let mut ok = 0;
    for t in tasks {
        let (s, v) = t.await.unwrap();
        match s {
            StatusCode::CREATED => ok += 1,
            StatusCode::PAYMENT_REQUIRED => assert_eq!(code(&v), "insufficient_budget"),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(ok, 10, "exactly the parent's ceiling was spent");
    let (_, v) = h.call("GET", "/v1/balances", Some(&parent), None).await;
    let parent_scope = &v["scopes"][0];
    assert_eq!(
        (
            parent_scope["spent"].as_u64(),
            parent_scope["held"].as_u64()
        ),
        (Some(10), Some(0))
    );
    let (_, v) = h.call("GET", "/v1/balances", Some(&root), None).await;
    assert_eq!(v["scopes"][0]["spent"].as_u64(), Some(10));
}

#[tokio::test]
async fn idempotent_replay_and_mismatch() {
    let h = harness();
    let (_, parent) = h.tree();
    let first = h
        .call(
            "POST",
            "/v1/reservations",
            Some(&parent),
            Some(reserve_body(json!(2), "same")),
        )
        .await;
    let again = h
        .call(
            "POST",
            "/v1/reservations",
            Some(&parent),
            Some(reserve_body(json!(2), "same")),
        )
        .await;
    assert_eq!(first, again, "a replay returns the identical response");
    let (_, v) = h.call("GET", "/v1/balances", Some(&parent), None).await;
    assert_eq!(
        v["scopes"][0]["held"].as_u64(),
        Some(2),
        "the ledger changed once"
    );
    let (s, v) = h
        .call(
            "POST",
            "/v1/reservations",
            Some(&parent),
            Some(reserve_body(json!(3), "same")),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "idempotency_mismatch")
    );
    // A failure is replayed as the same failure.
    let fail = h
        .call(
            "POST",
            "/v1/reservations",
            Some(&parent),
            Some(reserve_body(json!(50), "big")),
        )
        .await;
    assert_eq!(fail.0, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(
        h.call(
            "POST",
            "/v1/reservations",
            Some(&parent),
            Some(reserve_body(json!(50), "big"))
        )
        .await,
        fail
    );
}

#[tokio::test]
async fn commit_release_race_has_one_winner() {
    let h = Arc::new(harness());
    let (_, parent) = h.tree();
    for round in 0..10 {
        let (_, v) = h
            .call(
                "POST",
                "/v1/reservations",
                Some(&parent),
                Some(reserve_body(json!(1), &format!("r{round}"))),
            )
            .await;
        let id = v["reservation"]["id"].as_str().unwrap().to_owned();
        let (h1, h2, p1, p2) = (h.clone(), h.clone(), parent.clone(), parent.clone());
        let (i1, i2) = (id.clone(), id.clone());
        let commit = tokio::spawn(async move {
            h1.call(
                "POST",
                &format!("/v1/reservations/{i1}/commit"),
                Some(&p1),
                Some(json!({ "actual": 1, "idempotency_key": format!("c{i1}") })),
            )
            .await
        });
        let release = tokio::spawn(async move {
            h2.call(
                "POST",
                &format!("/v1/reservations/{i2}/release"),
                Some(&p2),
                Some(json!({ "idempotency_key": format!("x{i2}") })),
            )
            .await
        });
        let (c, r) = (commit.await.unwrap(), release.await.unwrap());
        let winners = [c.0, r.0].iter().filter(|s| **s == StatusCode::OK).count();
        assert_eq!(winners, 1, "round {round}: {c:?} {r:?}");
        let loser = if c.0 == StatusCode::OK { r } else { c };
        assert_eq!(
            (loser.0, code(&loser.1)),
            (StatusCode::CONFLICT, "reservation_finalized")
        );
    }
    let (_, v) = h.call("GET", "/v1/balances", Some(&parent), None).await;
    assert_eq!(v["scopes"][0]["held"].as_u64(), Some(0));
}

#[tokio::test]
async fn expiry_follows_the_server_clock() {
    let h = harness();
    let (_, parent) = h.tree();
    let (_, v) = h
        .call(
            "POST",
            "/v1/reservations",
            Some(&parent),
            Some(reserve_body(json!(4), "e1")),
        )
        .await;
    let id = v["reservation"]["id"].as_str().unwrap().to_owned();
    // Within TTL: extend works.
    h.clock.advance(4_000);
    let (s, v) = h
        .call(
            "POST",
            &format!("/v1/reservations/{id}/extend"),
            Some(&parent),
            Some(json!({ "ttl_ms": 5_000, "idempotency_key": "x1" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Past TTL and grace: the sweeper releases the hold exactly once.
    h.clock.advance(7_000);
    h.service.sweep_now().await;
    h.service.sweep_now().await;
    let (s, v) = h
        .call(
            "GET",
            &format!("/v1/reservations/{id}"),
            Some(&parent),
            None,
        )
        .await;
    assert_eq!(
        (s, v["reservation"]["state"].as_str()),
        (StatusCode::OK, Some("expired"))
    );
    let (_, b) = h.call("GET", "/v1/balances", Some(&parent), None).await;
    assert_eq!(
        (
            b["scopes"][0]["held"].as_u64(),
            b["scopes"][0]["spent"].as_u64()
        ),
        (Some(0), Some(0))
    );
    let (s, v) = h
        .call(
            "POST",
            &format!("/v1/reservations/{id}/commit"),
            Some(&parent),
            Some(json!({ "actual": 1, "idempotency_key": "c1" })),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::GONE, "reservation_finalized"));
    let (s, _) = h
        .call(
            "POST",
            &format!("/v1/reservations/{id}/extend"),
            Some(&parent),
            Some(json!({ "ttl_ms": 5_000, "idempotency_key": "x2" })),
        )
        .await;
    assert_eq!(s, StatusCode::GONE);
}

#[tokio::test]
async fn revoked_chain_and_cross_tree() {
    let h = harness();
    let (_, parent) = h.tree();
    let child = parent
        .attenuate(vec![Caveat::budget(Unit::Calls, 4)])
        .unwrap();
    let (_, v) = h
        .call(
            "POST",
            "/v1/reservations",
            Some(&child),
            Some(reserve_body(json!(1), "a")),
        )
        .await;
    let id = v["reservation"]["id"].as_str().unwrap().to_owned();

    // Another tree cannot see, commit or release it.
    let (_, other) = h.tree();
    let (s, v) = h
        .call("GET", &format!("/v1/reservations/{id}"), Some(&other), None)
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::NOT_FOUND, "reservation_not_found")
    );
    let (s, _) = h
        .call(
            "POST",
            &format!("/v1/reservations/{id}/release"),
            Some(&other),
            Some(json!({ "idempotency_key": "z" })),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A child may not revoke its parent; the parent revokes itself, and the child is revoked with it.
    let parent_id = parent.block_ids()[1].to_string();
    let (s, v) = h
        .call(
            "POST",
            "/v1/revocations",
            Some(&child),
            Some(json!({ "block_id": parent_id })),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "revoke_forbidden"));
    let (s, v) = h
        .call(
            "POST",
            "/v1/revocations",
            Some(&parent),
            Some(json!({ "block_id": parent_id })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = h
        .call(
            "POST",
            "/v1/spend",
            Some(&child),
            Some(reserve_body(json!(1), "b")),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "revoked"));
}

#[tokio::test]
async fn bad_input_gets_4xx_and_a_code() {
    let h = harness();
    let (_, parent) = h.tree();
    let t = Some(parent.to_text());
    // (method, path, token, body, expected status, expected code)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<String>,
        Option<String>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("POST", "/v1/reservations", t.clone(), Some("{not json".into()), 400, "invalid_json"),
        ("POST", "/v1/reservations", t.clone(), Some(format!("{{\"pad\":\"{}\"}}", "x".repeat(100_000))), 413, "body_too_large"),
        ("POST", "/v1/reservations", Some("baton_v1_AAAA".into()), Some(reserve_body(json!(1), "k").to_string()), 401, "malformed"),
        ("POST", "/v1/reservations", None, Some(reserve_body(json!(1), "k").to_string()), 401, "missing_token"),
        ("POST", "/v1/reservations", t.clone(), Some(reserve_body(json!(-1), "k").to_string()), 400, "invalid_amount"),
        ("POST", "/v1/reservations", t.clone(), Some(reserve_body(json!(1), "k").to_string().replace("\"amount\":1", "\"amount\":18446744073709551616")), 400, "invalid_amount"),
        ("POST", "/v1/reservations", t.clone(), Some(reserve_body(json!(1.5), "k").to_string()), 400, "invalid_amount"),
        ("POST", "/v1/reservations", t.clone(), Some(reserve_body(json!(0), "k").to_string()), 400, "invalid_amount"),
        ("POST", "/v1/reservations", t.clone(), Some(json!({ "action": "tool.run", "unit": "calls", "amount": 1, "idempotency_key": "k", "extra": 1 }).to_string()), 400, "invalid_request"),
        ("POST", "/v1/reservations", t.clone(), Some(json!({ "action": "nope.run", "unit": "calls", "amount": 1, "idempotency_key": "k" }).to_string()), 403, "action_not_allowed"),
        ("POST", "/v1/reservations", t.clone(), Some(json!({ "action": "tool.run", "unit": "tokens", "amount": 1, "idempotency_key": "k2" }).to_string()), 403, "no_budget"),
        ("GET", "/v1/reservations/rsv_nope", t.clone(), None, 404, "reservation_not_found"),
        ("POST", "/v1/reservations/rsv_nope/commit", t.clone(), Some(json!({ "actual": 1, "idempotency_key": "k-commit" }).to_string()), 404, "reservation_not_found"),
        ("POST", "/v1/revocations", t.clone(), Some(json!({ "block_id": "xyz" }).to_string()), 400, "invalid_block_id"),
        ("GET", "/v1/nothing", None, None, 404, "not_found"),
        ("POST", "/v1/tokens", t.clone(), Some(json!({ "tools": ["a"] }).to_string()), 403, "not_admin"),
    ];
    for (method, path, token, body, status, expected) in cases {
        let (s, v) = h.raw(method, path, token, body).await;
        assert_eq!(
            (s.as_u16(), code(&v)),
            (status, expected),
            "{method} {path}: {v}"
        );
    }
}

#[tokio::test]
async fn admin_mints_and_reads_the_revocation_feed() {
    let h = harness();
    let admin = h.service.mint_admin_token().unwrap();
    let (s, v) = h.call("POST", "/v1/tokens", Some(&admin), Some(json!({ "budgets": [{ "unit": "calls", "ceiling": 5 }], "tools": ["tool.*"], "label": "team" }))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Minted tokens can never carry admin rights, not even through `*`.
    let (s, v) = h
        .call(
            "POST",
            "/v1/tokens",
            Some(&admin),
            Some(json!({ "tools": ["*"] })),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_caveat"));
    // An admin can delegate just the feed to a gateway.
    let feed_only = admin
        .attenuate(vec![
            Caveat::tools(["baton.admin.revocations.read"]).unwrap(),
        ])
        .unwrap();
    let (s, v) = h
        .call(
            "POST",
            "/v1/tokens",
            Some(&feed_only),
            Some(json!({ "tools": ["a"] })),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "not_admin"), "{v}");
    let (_, parent) = h.tree();
    h.call(
        "POST",
        "/v1/revocations",
        Some(&parent),
        Some(json!({ "block_id": parent.block_ids()[1].to_string() })),
    )
    .await;
    let (s, v) = h
        .call("GET", "/v1/revocations?after=0", Some(&feed_only), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["revocations"][0]["block_id"],
        parent.block_ids()[1].to_string()
    );
    let (_, v) = h.call("GET", "/v1/keys", None, None).await;
    assert_eq!(v["keys"][0]["status"], "active");
}

#[tokio::test]
async fn over_a_real_socket() {
    let h = harness();
    let (_, parent) = h.tree();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(h.service.serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://{addr}/v1/spend"))
        .bearer_auth(parent.to_text())
        .json(&reserve_body(json!(2), "sock"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["reservation"]["state"], "committed");
    let ready = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let metrics = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("baton_ledger_requests_total"), "{metrics}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_expired_token_may_finish_its_hold_but_not_extend_it() {
    let h = harness();
    let not_after = T0 / 1000 + 10;
    let token = h
        .service
        .mint(vec![
            Caveat::budget(Unit::Calls, 10),
            Caveat::tools(["tool.*"]).unwrap(),
            Caveat::Expiry {
                not_after,
                not_before: None,
            },
        ])
        .unwrap();
    let body = json!({ "action": "tool.run", "unit": "calls", "amount": 2, "idempotency_key": "r", "ttl_ms": 120_000 });
    let (s, v) = h
        .call("POST", "/v1/reservations", Some(&token), Some(body))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["reservation"]["id"].as_str().unwrap().to_owned();
    // Past not_after and the 30 s skew, but well inside the hold's TTL.
    h.clock.advance(50_000);
    let (s, v) = h
        .call(
            "POST",
            &format!("/v1/reservations/{id}/extend"),
            Some(&token),
            Some(json!({ "ttl_ms": 60_000, "idempotency_key": "x" })),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "expired"));
    let (s, v) = h
        .call(
            "POST",
            &format!("/v1/reservations/{id}/commit"),
            Some(&token),
            Some(json!({ "actual": 1, "idempotency_key": "c" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A new reservation is refused: authorization checks expiry.
    let body =
        json!({ "action": "tool.run", "unit": "calls", "amount": 1, "idempotency_key": "r2" });
    let (s, v) = h
        .call("POST", "/v1/reservations", Some(&token), Some(body))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "expired"));
}

/// Two answers a review found off spec/http.md: an id that is not UTF-8
/// got a plain-text 400 before authentication, and a negative `ttl_ms`
/// got `invalid_request` instead of `invalid_ttl`.
#[tokio::test]
async fn review_deviations_answer_as_the_spec_says() {
    let h = harness();
    let (_, parent) = h.tree();
    let token = Some(parent.to_text());
    for path in [
        "/v1/reservations/%FF",
        "/v1/reservations/%FF/commit",
        "/v1/reservations/rsv_nothex",
    ] {
        // Authentication comes first: no token is 401, in JSON.
        let (s, v) = h.raw("GET", path, None, None).await;
        if path.ends_with("commit") {
            assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{path}: {v}");
            continue;
        }
        assert_eq!(
            (s, code(&v)),
            (StatusCode::UNAUTHORIZED, "missing_token"),
            "{path}"
        );
        let (s, v) = h.raw("GET", path, token.clone(), None).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::NOT_FOUND, "reservation_not_found"),
            "{path}"
        );
    }
    let body = r#"{"actual": 1, "idempotency_key": "k-ff"}"#.to_owned();
    let (s, v) = h
        .raw(
            "POST",
            "/v1/reservations/%FF/commit",
            token.clone(),
            Some(body),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::NOT_FOUND, "reservation_not_found")
    );
    for ttl in ["-1", "0", "1.5", "\"60\"", "86400001"] {
        let body = format!(
            r#"{{"action": "tool.run", "unit": "calls", "amount": 1, "idempotency_key": "t{}", "ttl_ms": {ttl}}}"#,
            ttl.len()
        );
        let (s, v) = h
            .raw("POST", "/v1/reservations", token.clone(), Some(body))
            .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_ttl"),
            "ttl_ms {ttl}"
        );
    }
    let (s, v) = h
        .raw(
            "POST",
            "/v1/reservations",
            token.clone(),
            Some(
                r#"{"action": "tool.run", "unit": "USD", "amount": 1, "idempotency_key": "u"}"#
                    .into(),
            ),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_request"));
}

/// Sends `body` to `path` with a bound token and, if given, a proof header.
async fn with_proof(
    h: &Harness,
    method: &str,
    path: &str,
    token: &Token,
    proof: Option<String>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {}", token.to_text()));
    if let Some(p) = proof {
        req = req.header("baton-proof", p);
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_owned())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = h.service.router().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_bound_token_needs_a_fresh_proof_on_every_endpoint() {
    use baton::{Audience, HolderKey, Request as BatonRequest};
    let h = harness();
    let (_, parent) = h.tree();
    let agent = HolderKey::from_seed(&[42; 32]);
    let bound = parent
        .attenuate(vec![Caveat::Holder(agent.public())])
        .unwrap();
    let now = T0 / 1000;
    let ledger = Audience::new(baton::server::DEFAULT_AUDIENCE).unwrap();
    let prove = |aud: &Audience, op: &str, body: &[u8], ts: u64| {
        let req = BatonRequest::new("baton.ledger.request", ts)
            .unwrap()
            .operation(op)
            .unwrap()
            .body(body);
        bound.prove(&agent, aud, &req, ts).unwrap().to_header()
    };
    let body = reserve_body(json!(1), "bound-1").to_string();
    // The token text alone: refused on every endpoint.
    let (s, v) = with_proof(&h, "POST", "/v1/reservations", &bound, None, Some(&body)).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "proof_missing"));
    let (s, v) = with_proof(&h, "GET", "/v1/balances", &bound, None, None).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "proof_missing"));
    let p = "baton_proof_v1_garbage".to_owned();
    let (s, v) = with_proof(&h, "GET", "/v1/balances", &bound, Some(p), None).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "proof_malformed"));
    // A proof for another audience, another endpoint, another body, too old.
    let gateway = Audience::new("gateway-a").unwrap();
    for (p, what) in [
        (
            prove(&gateway, "POST /v1/reservations", body.as_bytes(), now),
            "audience",
        ),
        (
            prove(&ledger, "POST /v1/spend", body.as_bytes(), now),
            "operation",
        ),
        (prove(&ledger, "POST /v1/reservations", b"{}", now), "body"),
    ] {
        let (s, v) = with_proof(&h, "POST", "/v1/reservations", &bound, Some(p), Some(&body)).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::UNAUTHORIZED, "proof_invalid"),
            "{what}"
        );
    }
    let old = prove(&ledger, "POST /v1/reservations", body.as_bytes(), now - 61);
    let (s, v) = with_proof(
        &h,
        "POST",
        "/v1/reservations",
        &bound,
        Some(old),
        Some(&body),
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "proof_expired"));
    // The right proof: accepted once.
    let p = prove(&ledger, "POST /v1/reservations", body.as_bytes(), now);
    let (s, v) = with_proof(
        &h,
        "POST",
        "/v1/reservations",
        &bound,
        Some(p.clone()),
        Some(&body),
    )
    .await;
    assert!(s.is_success(), "{s} {v}");
    let (s, v) = with_proof(&h, "POST", "/v1/reservations", &bound, Some(p), Some(&body)).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "proof_replayed"));
    // Reads need their own proof too.
    let p = prove(&ledger, "GET /v1/balances", b"", now);
    let (s, v) = with_proof(&h, "GET", "/v1/balances", &bound, Some(p), None).await;
    assert!(s.is_success(), "{s} {v}");
    // Bearer tokens are unaffected.
    let (s, v) = h
        .call(
            "POST",
            "/v1/reservations",
            Some(&parent),
            Some(reserve_body(json!(1), "bearer-1")),
        )
        .await;
    assert!(s.is_success(), "{s} {v}");
}

/// The replay store is per process; the idempotency record is durable and
/// names the proof. A proof replayed to a process that never saw it (here
/// the ledger restarted on the same database, as good as another server)
/// meets the recorded answer: nothing is held twice.
#[tokio::test]
async fn a_proof_replayed_to_a_fresh_process_meets_the_durable_answer() {
    use baton::proof::{HolderProof, ProofId};
    use baton::{Audience, HolderKey, Request as BatonRequest};
    let dir = std::env::temp_dir().join(format!(
        "baton-durable-proof-{}-{}",
        std::process::id(),
        unique()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ledger.db");
    let clock = Arc::new(ManualClock::new(T0));
    let start = || Harness {
        service: Service::start(
            Box::new(SqliteStore::open(&path).unwrap()),
            clock.clone(),
            WriterConfig::default(),
        )
        .unwrap(),
        clock: clock.clone(),
        _schema: None,
    };
    let first = start();
    let (root, parent) = first.tree();
    let agent = HolderKey::from_seed(&[7; 32]);
    let bound = parent
        .attenuate(vec![Caveat::Holder(agent.public())])
        .unwrap();
    let body = reserve_body(json!(3), "durable-1").to_string();
    let now = T0 / 1000;
    let ledger = Audience::new(baton::server::DEFAULT_AUDIENCE).unwrap();
    let req = BatonRequest::new("baton.ledger.request", now)
        .unwrap()
        .operation("POST /v1/reservations")
        .unwrap()
        .body(body.as_bytes());
    let proof = bound.prove(&agent, &ledger, &req, now).unwrap().to_header();
    let send = async |h: &Harness| {
        with_proof(
            h,
            "POST",
            "/v1/reservations",
            &bound,
            Some(proof.clone()),
            Some(&body),
        )
        .await
    };
    let (s, answer) = send(&first).await;
    assert_eq!(s, StatusCode::CREATED, "{answer}");
    // In the same process the replay store refuses it outright.
    let (s, v) = send(&first).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "proof_replayed"));
    // Stop: serving with a finished shutdown future drains and joins the
    // writer, so the database is closed.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    first.service.serve(listener, async {}).await.unwrap();

    // The record names the proof: BLAKE3 of the holder key and the nonce.
    let stored: Vec<Option<Vec<u8>>> = {
        let c = rusqlite::Connection::open(&path).unwrap();
        let mut q = c.prepare("SELECT proof FROM idempotency").unwrap();
        q.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let nonce = *HolderProof::from_header(&proof).unwrap().nonce();
    let id = ProofId::of(&agent.public(), &nonce);
    assert_eq!(stored, vec![Some(id.0.to_vec())]);

    // A fresh process has an empty replay store: the same proof passes it,
    // and the idempotency record answers, byte for byte, holding nothing new.
    let second = start();
    let (s, v) = send(&second).await;
    assert_eq!((s, &v), (StatusCode::CREATED, &answer));
    let (_, v) = second.call("GET", "/v1/balances", Some(&root), None).await;
    assert_eq!(v["scopes"][0]["held"].as_u64(), Some(3), "{v}");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    second.service.serve(listener, async {}).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
