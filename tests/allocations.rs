//! Guaranteed sub-budgets over HTTP (spec/http.md §3.8, §6.16–6.19): the
//! life of an allocation through the router, the starvation test over a
//! real socket (sixteen greedy siblings against one allocated child), and
//! the exact accounting of every release.
//!
//! Like tests/http.rs, the suite runs on the backend `BATON_TEST_STORE`
//! names: `sqlite` (in memory, the default) or `postgres` (a schema of its
//! own on `BATON_TEST_POSTGRES`, dropped at the end, two writers).
#![cfg(feature = "server")]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use baton::server::Service;
use baton::server::writer::{ManualClock, WriterConfig};
use baton::{Caveat, Token, Unit};
use common::store::{SchemaGuard, pg_store, test_store, unique_schema};
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

fn harness() -> Harness {
    let clock = Arc::new(ManualClock::new(T0));
    let (store, schema) = test_store("alloc");
    let config = WriterConfig::default()
        .grace_ms(1_000)
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
        token: &Token,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", token.to_text()));
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.service.router().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Root 1000 calls → parent `parent_ceiling` → `n` children of up to 100 each.
    fn tree(&self, parent_ceiling: u64, n: usize) -> (Token, Token, Vec<Token>) {
        let root = self
            .service
            .mint(vec![
                Caveat::budget(Unit::Calls, 1_000),
                Caveat::tools(["tool.*"]).unwrap(),
                Caveat::Depth(5),
            ])
            .unwrap();
        let parent = root
            .attenuate(vec![Caveat::budget(Unit::Calls, parent_ceiling)])
            .unwrap();
        let children = (0..n)
            .map(|_| {
                parent
                    .attenuate(vec![Caveat::budget(Unit::Calls, parent_ceiling.min(100))])
                    .unwrap()
            })
            .collect();
        (root, parent, children)
    }

    /// The `remaining` of each scope of `token`'s chain, root first.
    async fn remaining(&self, token: &Token) -> Vec<u64> {
        let (s, v) = self.call("GET", "/v1/balances", token, None).await;
        assert_eq!(s, 200, "{v}");
        let mut out: Vec<(u64, u64)> = v["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["block"].as_u64().unwrap(),
                    s["remaining"].as_u64().unwrap(),
                )
            })
            .collect();
        out.sort();
        out.into_iter().map(|(_, r)| r).collect()
    }
}

fn allocate_body(child: &Token, amount: u64, overflow: &str, key: &str) -> Value {
    json!({ "child_token": child.to_text(), "unit": "calls", "amount": amount,
            "overflow": overflow, "idempotency_key": key })
}

fn reserve_body(amount: u64, key: &str) -> Value {
    json!({ "action": "tool.run", "unit": "calls", "amount": amount, "idempotency_key": key, "ttl_ms": 60_000 })
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn an_allocation_is_created_drawn_from_read_listed_and_released_once() {
    let h = harness();
    let (root, parent, kids) = h.tree(20, 3);
    let (a, b, c) = (&kids[0], &kids[1], &kids[2]);
    let (s, v) = h
        .call(
            "POST",
            "/v1/allocations",
            &parent,
            Some(allocate_body(a, 8, "deny", "alloc-a")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["allocation"]["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("alc_"));
    assert_eq!(v["allocation"]["unused"], 8);
    assert_eq!(v["allocation"]["state"], "active");
    // Idempotent: the same answer, byte for byte, and nothing held twice.
    let (s2, v2) = h
        .call(
            "POST",
            "/v1/allocations",
            &parent,
            Some(allocate_body(a, 8, "deny", "alloc-a")),
        )
        .await;
    assert_eq!((s2, &v2), (s, &v));
    assert_eq!(h.remaining(&parent).await, vec![992, 12]);
    // The same key for another request is refused.
    let (s, v) = h
        .call(
            "POST",
            "/v1/allocations",
            &parent,
            Some(allocate_body(a, 7, "deny", "alloc-a")),
        )
        .await;
    assert_eq!((s.as_u16(), code(&v)), (409, "idempotency_mismatch"));
    // A second allocation to the same child and unit is refused.
    let (s, v) = h
        .call(
            "POST",
            "/v1/allocations",
            &parent,
            Some(allocate_body(a, 1, "deny", "alloc-a2")),
        )
        .await;
    assert_eq!((s.as_u16(), code(&v)), (409, "allocation_exists"));
    // A sibling cannot take the allocation: 12 of the parent's 20 are left.
    let (s, v) = h
        .call("POST", "/v1/reservations", b, Some(reserve_body(13, "b1")))
        .await;
    assert_eq!((s.as_u16(), code(&v)), (402, "insufficient_budget"));
    let (s, _) = h
        .call("POST", "/v1/spend", b, Some(reserve_body(12, "b2")))
        .await;
    assert_eq!(s, 201);
    // The child has its 8, and not one more (deny).
    let (s, v) = h
        .call("POST", "/v1/reservations", a, Some(reserve_body(9, "a0")))
        .await;
    assert_eq!((s.as_u16(), code(&v)), (402, "allocation_exhausted"));
    assert_eq!(v["error"]["allocation_id"], id.as_str());
    assert_eq!(v["error"]["remaining"], 8);
    let (s, v) = h
        .call("POST", "/v1/reservations", a, Some(reserve_body(5, "a1")))
        .await;
    assert_eq!(s, 201, "{v}");
    let rsv = v["reservation"]["id"].as_str().unwrap().to_owned();
    let (s, _) = h
        .call(
            "POST",
            &format!("/v1/reservations/{rsv}/commit"),
            a,
            Some(json!({ "idempotency_key": "a1c", "actual": 3 })),
        )
        .await;
    assert_eq!(s, 200);
    // Read by the child, the parent and the root; not by a sibling.
    for t in [a, &parent, &root] {
        let (s, v) = h
            .call("GET", &format!("/v1/allocations/{id}"), t, None)
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            (
                &v["allocation"]["charged"],
                &v["allocation"]["drawn"],
                &v["allocation"]["unused"]
            ),
            (&json!(3), &json!(0), &json!(5))
        );
    }
    let (s, v) = h
        .call("GET", &format!("/v1/allocations/{id}"), c, None)
        .await;
    assert_eq!((s.as_u16(), code(&v)), (404, "allocation_not_found"));
    // Listed for the parent and the root; the child draws from it.
    for t in [&parent, &root] {
        let (_, v) = h.call("GET", "/v1/allocations", t, None).await;
        assert_eq!(v["allocations"][0]["id"], id.as_str(), "{v}");
    }
    let (_, v) = h.call("GET", "/v1/allocations", a, None).await;
    assert_eq!(v["allocations"], json!([]));
    let (_, v) = h.call("GET", "/v1/balances", a, None).await;
    assert_eq!(v["allocations"][0]["id"], id.as_str());
    // Spent 12 + 3, and the allocation's unused 5 held at both scopes.
    assert_eq!(h.remaining(&parent).await, vec![980, 0]);
    // The child releases: exactly the unused 5 come back, once.
    let rel = json!({ "idempotency_key": "rel" });
    let (s, v) = h
        .call(
            "POST",
            &format!("/v1/allocations/{id}/release"),
            a,
            Some(rel.clone()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["allocation"]["state"], "released");
    assert_eq!(v["allocation"]["returned"], 5);
    assert_eq!(h.remaining(&parent).await, vec![985, 5]);
    let (s2, v2) = h
        .call(
            "POST",
            &format!("/v1/allocations/{id}/release"),
            a,
            Some(rel),
        )
        .await;
    assert_eq!((s2, &v2), (s, &v), "a replay is identical");
    let (s, v) = h
        .call(
            "POST",
            &format!("/v1/allocations/{id}/release"),
            &parent,
            Some(json!({ "idempotency_key": "rel2" })),
        )
        .await;
    assert_eq!((s.as_u16(), code(&v)), (409, "allocation_finalized"));
    assert_eq!(h.remaining(&parent).await, vec![985, 5]);
}

#[tokio::test]
async fn only_an_ancestor_allocates_to_a_verified_descendant_within_its_ceiling() {
    let h = harness();
    let (_, parent, kids) = h.tree(20, 2);
    // A sibling is not a descendant.
    let (s, v) = h
        .call(
            "POST",
            "/v1/allocations",
            &kids[0],
            Some(allocate_body(&kids[1], 1, "deny", "x1")),
        )
        .await;
    assert_eq!((s.as_u16(), code(&v)), (403, "not_descendant"));
    // Nor is the parent of the caller.
    let (s, v) = h
        .call(
            "POST",
            "/v1/allocations",
            &kids[0],
            Some(allocate_body(&parent, 1, "deny", "x2")),
        )
        .await;
    assert_eq!((s.as_u16(), code(&v)), (403, "not_descendant"));
    // A child token that does not verify.
    let mut body = allocate_body(&kids[0], 1, "deny", "x3");
    body["child_token"] = json!("baton_v1_garbage");
    let (s, v) = h.call("POST", "/v1/allocations", &parent, Some(body)).await;
    assert_eq!((s.as_u16(), code(&v)), (400, "invalid_child_token"));
    // More than the child could ever spend.
    let (s, v) = h
        .call(
            "POST",
            "/v1/allocations",
            &parent,
            Some(allocate_body(&kids[0], 101, "deny", "x4")),
        )
        .await;
    assert_eq!(
        (s.as_u16(), code(&v)),
        (400, "allocation_exceeds_child_budget")
    );
    // More than the parent has left once it spent 5 itself.
    let (s, _) = h
        .call("POST", "/v1/spend", &parent, Some(reserve_body(5, "p5")))
        .await;
    assert_eq!(s, 201);
    let (s, v) = h
        .call(
            "POST",
            "/v1/allocations",
            &parent,
            Some(allocate_body(&kids[0], 16, "deny", "x5")),
        )
        .await;
    assert_eq!((s.as_u16(), code(&v)), (402, "insufficient_budget"));
    // Both or neither of amount and fraction.
    let mut both = allocate_body(&kids[0], 1, "deny", "x6");
    both["fraction"] = json!(0.5);
    let (s, v) = h.call("POST", "/v1/allocations", &parent, Some(both)).await;
    assert_eq!((s.as_u16(), code(&v)), (400, "invalid_amount"));
    // A fraction of the parent's remaining: half of 15, rounded down.
    let body = json!({ "child_token": kids[1].to_text(), "unit": "calls", "fraction": 0.5,
                       "idempotency_key": "x7" });
    let (s, v) = h.call("POST", "/v1/allocations", &parent, Some(body)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["allocation"]["amount"], 7);
    assert_eq!(v["allocation"]["overflow"], "deny");
}

#[tokio::test]
async fn an_allocation_ends_on_its_ttl_and_on_revocation() {
    let h = harness();
    let (_, parent, kids) = h.tree(20, 2);
    let mut body = allocate_body(&kids[0], 6, "shared", "t1");
    body["ttl_ms"] = json!(10_000);
    let (s, v) = h.call("POST", "/v1/allocations", &parent, Some(body)).await;
    assert_eq!(s, 201, "{v}");
    let first = v["allocation"]["id"].as_str().unwrap().to_owned();
    let (s, v) = h
        .call(
            "POST",
            "/v1/allocations",
            &parent,
            Some(allocate_body(&kids[1], 4, "deny", "t2")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let second = v["allocation"]["id"].as_str().unwrap().to_owned();
    assert_eq!(h.remaining(&parent).await, vec![990, 10]);
    h.clock.advance(10_001);
    h.service.sweep_now().await;
    let (_, v) = h
        .call("GET", &format!("/v1/allocations/{first}"), &parent, None)
        .await;
    assert_eq!(v["allocation"]["state"], "expired", "{v}");
    assert_eq!(v["allocation"]["returned"], 6);
    assert_eq!(h.remaining(&parent).await, vec![996, 16]);
    // The second child revokes its own block.
    let block = kids[1].block_ids()[2].to_string();
    let (s, v) = h
        .call(
            "POST",
            "/v1/revocations",
            &kids[1],
            Some(json!({ "block_id": block })),
        )
        .await;
    assert!(s.is_success(), "{v}");
    let (_, v) = h
        .call("GET", &format!("/v1/allocations/{second}"), &parent, None)
        .await;
    assert_eq!(v["allocation"]["state"], "revoked", "{v}");
    assert_eq!(h.remaining(&parent).await, vec![1000, 20]);
}

/// After each release, the parent's remaining is exactly its ceiling minus
/// what was charged, what is held, and the unused part of the allocations
/// still active: computed here independently of the server.
#[tokio::test]
async fn after_each_release_the_parents_remaining_is_exact() {
    let h = harness();
    let (_, parent, kids) = h.tree(100, 6);
    let mut ids = Vec::new();
    let mut unused = Vec::new();
    let mut spent = 0u64;
    for (i, k) in kids.iter().enumerate() {
        let amount = 5 + 3 * i as u64;
        let (s, v) = h
            .call(
                "POST",
                "/v1/allocations",
                &parent,
                Some(allocate_body(k, amount, "deny", &format!("a{i}"))),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        ids.push(v["allocation"]["id"].as_str().unwrap().to_owned());
        // Each child spends part of its allocation.
        let part = (amount * (i as u64 % 3)) / 3;
        if part > 0 {
            let (s, v) = h
                .call(
                    "POST",
                    "/v1/spend",
                    k,
                    Some(reserve_body(part, &format!("s{i}"))),
                )
                .await;
            assert_eq!(s, 201, "{v}");
        }
        spent += part;
        unused.push(amount - part);
    }
    let total: u64 = unused.iter().sum();
    assert_eq!(h.remaining(&parent).await[1], 100 - spent - total);
    let mut still = total;
    for (i, (id, k)) in ids.iter().zip(&kids).enumerate() {
        // Alternately the parent and the child release.
        let who = if i % 2 == 0 { &parent } else { k };
        let (s, v) = h
            .call(
                "POST",
                &format!("/v1/allocations/{id}/release"),
                who,
                Some(json!({ "idempotency_key": format!("r{i}") })),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["allocation"]["returned"], unused[i]);
        still -= unused[i];
        assert_eq!(
            h.remaining(&parent).await[1],
            100 - spent - still,
            "after release {i}"
        );
    }
}

/// Sixteen greedy siblings hammer the parent with reserves and spends
/// while one allocated child reserves its whole allocation, over a real
/// socket, round after round: the child always gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn starvation_sixteen_greedy_siblings_never_take_an_allocated_childs_budget() {
    const ROUNDS: usize = 6;
    const SIBLINGS: usize = 16;
    const X: u64 = 20;
    let h = harness();
    let trees: Vec<_> = (0..ROUNDS).map(|_| h.tree(100, SIBLINGS + 1)).collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(h.service.serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let post = |path: &str, t: &Token, body: Value| {
        client
            .post(format!("http://{addr}{path}"))
            .bearer_auth(t.to_text())
            .json(&body)
            .send()
    };
    for (round, (_, parent, kids)) in trees.iter().enumerate() {
        let r = post(
            "/v1/allocations",
            parent,
            allocate_body(&kids[0], X, "deny", "guarantee"),
        )
        .await
        .unwrap();
        assert_eq!(r.status().as_u16(), 201, "round {round}");
        let mut tasks = Vec::new();
        for (s, sib) in kids[1..].iter().enumerate() {
            let sib = sib.clone();
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = 0u64;
                let mut refused = 0;
                let mut n = 0;
                // Until the pool is clearly dry for this sibling.
                while refused < 8 {
                    n += 1;
                    let path = if n % 2 == 0 {
                        "/v1/spend"
                    } else {
                        "/v1/reservations"
                    };
                    let r = client
                        .post(format!("http://{addr}{path}"))
                        .bearer_auth(sib.to_text())
                        .json(&reserve_body(1 + (n % 7), &format!("g{s}-{n}")))
                        .send()
                        .await
                        .unwrap();
                    match r.status().as_u16() {
                        201 => got += 1 + (n % 7),
                        402 => refused += 1,
                        other => panic!("sibling {s}: {other}"),
                    }
                }
                got
            }));
        }
        // The allocated child reserves its whole allocation, in four holds,
        // in the middle of the storm.
        let mut child_got = 0;
        for i in 0..4 {
            let r = post(
                "/v1/reservations",
                &kids[0],
                reserve_body(X / 4, &format!("child-{i}")),
            )
            .await
            .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            assert_eq!(status, 201, "round {round}, hold {i}: {body}");
            child_got += X / 4;
        }
        let mut siblings_got = 0;
        for t in tasks {
            siblings_got += t.await.unwrap();
        }
        assert_eq!(child_got, X);
        // The siblings took everything else the parent had, and no more.
        assert_eq!(siblings_got, 100 - X, "round {round}");
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// The typed client: allocate, spend under it, read, list and release.
#[cfg(feature = "client")]
#[tokio::test]
async fn the_typed_client_allocates_and_releases() {
    use baton::client::{Action, Allocate, Bearer, Client, ClientError, IdempotencyKey, Reserve};
    use baton::ledger::AllocState;
    let h = harness();
    let (_, parent, kids) = h.tree(50, 2);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(h.service.serve(listener, async move {
        let _ = stopped.await;
    }));
    let c = Client::new(&format!("http://{addr}")).unwrap();
    let (p, k) = (Bearer::from(&parent), Bearer::from(&kids[0]));
    let a = c
        .allocate(&p, &Allocate::amount(&k, Unit::Calls, 10))
        .await
        .unwrap();
    assert_eq!((a.amount, a.unused, a.state), (10, 10, AllocState::Active));
    assert_eq!(a.child_block_id, kids[0].block_ids()[2]);
    let spend = Reserve::new(Action::new("tool.run"), Unit::Calls, 4);
    c.spend(&k, &spend, None).await.unwrap();
    let over = Reserve::new(Action::new("tool.run"), Unit::Calls, 7);
    let err = c.reserve(&k, &over).await.unwrap_err();
    assert_eq!(err.code(), "allocation_exhausted");
    assert!(matches!(err, ClientError::Api(_)));
    assert_eq!(c.allocation(&k, &a.id).await.unwrap().unused, 6);
    assert_eq!(c.allocations(&p).await.unwrap()[0].id, a.id);
    let done = c
        .release_allocation(&k, &a.id, &IdempotencyKey::new("done").unwrap())
        .await
        .unwrap();
    assert_eq!((done.state, done.returned), (AllocState::Released, 6));
    let frac = c
        .allocate(
            &p,
            &Allocate::fraction(&Bearer::from(&kids[1]), Unit::Calls, 0.1).shared(),
        )
        .await
        .unwrap();
    // 10% of the parent's remaining 46.
    assert_eq!((frac.amount, frac.overflow.as_str()), (4, "shared"));
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// On a shared PostgreSQL store an allocation is a row every server
/// reads under lock (spec/http.md §4.8): made through one ledger, it is
/// listed, read, drawn from and released through another, its create
/// replays byte for byte on the other, and the balances of both agree.
/// Opt-in: `BATON_TEST_POSTGRES=postgres://…`.
#[tokio::test]
async fn an_allocation_made_on_one_shared_postgres_ledger_is_kept_by_another() {
    if std::env::var("BATON_TEST_POSTGRES").is_err() {
        eprintln!("skipped: BATON_TEST_POSTGRES is not set");
        return;
    }
    let schema = unique_schema("two");
    let guard = SchemaGuard(schema.clone());
    let clock = Arc::new(ManualClock::new(T0));
    let start = |clock: Arc<ManualClock>| Harness {
        service: Service::start(
            pg_store(&schema),
            clock.clone(),
            WriterConfig::default().grace_ms(1_000).writers(2),
        )
        .expect("start"),
        clock,
        _schema: None,
    };
    let a = start(clock.clone());
    let b = start(clock.clone());
    let (_, parent, kids) = a.tree(20, 2);
    let body = allocate_body(&kids[0], 8, "deny", "pg");
    let (s, v) = a
        .call("POST", "/v1/allocations", &parent, Some(body.clone()))
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["allocation"]["id"].as_str().unwrap().to_owned();
    // The same key on the other ledger: the recorded answer, not a second one.
    let (s2, v2) = b.call("POST", "/v1/allocations", &parent, Some(body)).await;
    assert_eq!((s2, &v2), (s, &v));
    let (s, v) = b.call("GET", "/v1/allocations", &parent, None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["allocations"][0]["id"], id.as_str(), "{v}");
    assert_eq!(a.remaining(&parent).await, vec![992, 12]);
    // A sibling on either ledger finds only the rest of the pool.
    let (s, v) = b
        .call("POST", "/v1/spend", &kids[1], Some(reserve_body(13, "sib")))
        .await;
    assert_eq!((s.as_u16(), code(&v)), (402, "insufficient_budget"), "{v}");
    let (s, v) = b
        .call(
            "POST",
            "/v1/spend",
            &kids[1],
            Some(reserve_body(12, "sib2")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    // The child draws its allocation through the other ledger, the pool dry.
    let (s, v) = b
        .call(
            "POST",
            "/v1/reservations",
            &kids[0],
            Some(reserve_body(5, "c1")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let rid = v["reservation"]["id"].as_str().unwrap().to_owned();
    let (_, v) = a.call("GET", "/v1/balances", &kids[0], None).await;
    assert_eq!(v["allocations"][0]["drawn"], 5, "{v}");
    let (s, v) = a
        .call(
            "POST",
            "/v1/reservations",
            &kids[0],
            Some(reserve_body(4, "c2")),
        )
        .await;
    assert_eq!((s.as_u16(), code(&v)), (402, "allocation_exhausted"), "{v}");
    // Commit 2 of the 5 through the first ledger: 3 go back to the allocation.
    let (s, v) = a
        .call(
            "POST",
            &format!("/v1/reservations/{rid}/commit"),
            &kids[0],
            Some(json!({ "actual": 2, "idempotency_key": "c1-commit" })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = b
        .call("GET", &format!("/v1/allocations/{id}"), &kids[0], None)
        .await;
    assert_eq!(
        (&v["allocation"]["charged"], &v["allocation"]["unused"]),
        (&json!(2), &json!(6)),
        "{v}"
    );
    // Released through the second ledger: exactly the unused part, once.
    let (s, v) = b
        .call(
            "POST",
            &format!("/v1/allocations/{id}/release"),
            &parent,
            Some(json!({ "idempotency_key": "rel" })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["allocation"]["returned"], 6);
    let (s, v) = a
        .call(
            "POST",
            &format!("/v1/allocations/{id}/release"),
            &parent,
            Some(json!({ "idempotency_key": "rel-again" })),
        )
        .await;
    assert_eq!((s.as_u16(), code(&v)), (409, "allocation_finalized"), "{v}");
    // 20 - 12 (sibling) - 2 (child): nothing set aside any more.
    assert_eq!(a.remaining(&parent).await, vec![986, 6]);
    assert_eq!(b.remaining(&parent).await, vec![986, 6]);
    let (_, v) = b.call("GET", "/v1/allocations", &parent, None).await;
    assert_eq!(v["allocations"], json!([]));
    drop((a, b));
    drop(guard);
}
