//! The ledger over its store with tiny caches: replies that were pushed out
//! of memory, or outlived a restart, are rebuilt from the store byte for
//! byte, and what memory holds stays bounded by the caches.
#![cfg(feature = "server")]

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use baton::ledger::CacheSizes;
use baton::server::Service;
use baton::server::writer::{ManualClock, WriterConfig};
use baton::store::sqlite::SqliteStore;
use baton::{Caveat, Token, Unit};
use serde_json::{Value, json};
use tower::ServiceExt;

const T0: u64 = 1_800_000_000_000;

fn temp_dir() -> PathBuf {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("random");
    let dir = std::env::temp_dir().join(format!("baton-bounded-{}", u64::from_le_bytes(b)));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn start(dir: &std::path::Path, clock: Arc<ManualClock>) -> Service {
    let store = SqliteStore::open(&dir.join("ledger.db")).expect("store");
    let config = WriterConfig::default().cache(CacheSizes::all(2));
    Service::start(Box::new(store), clock, config).expect("service starts")
}

/// Status and the exact bytes of the body.
async fn call(service: &Service, path: &str, token: &Token, body: Value) -> (u16, Vec<u8>) {
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .header("authorization", format!("Bearer {}", token.to_text()))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = service.router().oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, bytes.to_vec())
}

async fn metric(service: &Service, kind: &str) -> u64 {
    let req = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .expect("request");
    let resp = service.router().oneshot(req).await.expect("infallible");
    let text = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    let text = String::from_utf8(text.to_vec()).expect("utf-8");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("baton_ledger_memory_records{{kind=\"{kind}\"}}")))
        .unwrap_or_else(|| panic!("no {kind} in {text}"));
    line.rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a number")
}

type Answer = (u16, Vec<u8>);

/// A root token with 1 000 calls on `tool.*`, room to delegate.
fn root_token(service: &Service) -> Token {
    service
        .mint(vec![
            Caveat::budget(Unit::Calls, 1_000),
            Caveat::tools(["tool.*"]).expect("pattern"),
            Caveat::Depth(5),
        ])
        .expect("mint")
}

/// The reserve, commit and refusal of the first test, sent again.
async fn replays(service: &Service, child: &Token, commit_path: &str) -> (Answer, Answer, Answer) {
    (
        call(service, "/v1/reservations", child, reserve(7, "r1")).await,
        call(
            service,
            commit_path,
            child,
            json!({"actual": 5, "idempotency_key": "c1"}),
        )
        .await,
        call(service, "/v1/reservations", child, reserve(500, "big")).await,
    )
}

fn reserve(amount: u64, key: &str) -> Value {
    json!({"action": "tool.run", "unit": "calls", "amount": amount, "idempotency_key": key})
}

#[tokio::test]
async fn replies_are_rebuilt_byte_for_byte_after_eviction_and_restart() {
    let dir = temp_dir();
    let clock = Arc::new(ManualClock::new(T0));
    let service = start(&dir, clock.clone());
    let root = root_token(&service);
    let child = root
        .attenuate(vec![Caveat::budget(Unit::Calls, 100)])
        .expect("attenuate");

    // The answers to remember: a reserve, its commit, a refusal.
    let reserved = call(&service, "/v1/reservations", &child, reserve(7, "r1")).await;
    assert_eq!(reserved.0, 201, "{}", String::from_utf8_lossy(&reserved.1));
    let id = serde_json::from_slice::<Value>(&reserved.1).expect("json")["reservation"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let commit_path = format!("/v1/reservations/{id}/commit");
    let committed = call(
        &service,
        &commit_path,
        &child,
        json!({"actual": 5, "idempotency_key": "c1"}),
    )
    .await;
    assert_eq!(committed.0, 200);
    let refused = call(&service, "/v1/reservations", &child, reserve(500, "big")).await;
    assert_eq!(refused.0, 402);

    // Push all of it out of the two-entry caches, moving the counters on.
    for n in 0..20 {
        clock.advance(10);
        let (s, _) = call(&service, "/v1/spend", &child, reserve(1, &format!("s{n}"))).await;
        assert_eq!(s, 201);
    }
    assert!(metric(&service, "idempotency_cache").await <= 2);
    assert!(metric(&service, "finalized_cache").await <= 2);
    assert_eq!(metric(&service, "active_reservations").await, 0);

    let (r, c, b) = replays(&service, &child, &commit_path).await;
    assert_eq!(r, reserved, "reserve replayed from the store");
    assert_eq!(c, committed, "commit replayed from the store");
    assert_eq!(b, refused, "refusal replayed from the store");
    // The same key for another request is still a mismatch, nothing applied.
    let (s, body) = call(&service, "/v1/reservations", &child, reserve(8, "r1")).await;
    assert_eq!(s, 409, "{}", String::from_utf8_lossy(&body));

    // A restart loads active state only, and the history is still there.
    drop(service);
    let service = start(&dir, clock.clone());
    assert_eq!(metric(&service, "idempotency_cache").await, 0);
    assert_eq!(metric(&service, "finalized_cache").await, 0);
    let (r, c, b) = replays(&service, &child, &commit_path).await;
    assert_eq!(r, reserved, "reserve replayed after restart");
    assert_eq!(c, committed, "commit replayed after restart");
    assert_eq!(b, refused, "refusal replayed after restart");
    // Finishing the finalized reservation again is refused from the store.
    let (s, body) = call(
        &service,
        &format!("/v1/reservations/{id}/release"),
        &child,
        json!({"idempotency_key": "rel"}),
    )
    .await;
    assert_eq!(s, 409, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("\"state\":\"committed\""));
    drop(service);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn holds_survive_a_restart_and_expire_in_order() {
    let dir = temp_dir();
    let clock = Arc::new(ManualClock::new(T0));
    let service = start(&dir, clock.clone());
    let root = root_token(&service);
    for (n, ttl) in [(0, 5_000), (1, 1_000), (2, 60_000)] {
        let mut body = reserve(10, &format!("h{n}"));
        body["ttl_ms"] = json!(ttl);
        assert_eq!(call(&service, "/v1/reservations", &root, body).await.0, 201);
    }
    drop(service);
    let service = start(&dir, clock.clone());
    assert_eq!(metric(&service, "active_reservations").await, 3);
    assert_eq!(metric(&service, "expiry_index").await, 3);
    // Past the grace of the first two only.
    clock.advance(8_000);
    service.sweep_now().await;
    assert_eq!(metric(&service, "active_reservations").await, 1);
    let req = Request::builder()
        .uri("/v1/balances")
        .header("authorization", format!("Bearer {}", root.to_text()))
        .body(Body::empty())
        .expect("request");
    let resp = service.router().oneshot(req).await.expect("infallible");
    let v: Value = serde_json::from_slice(
        &axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body"),
    )
    .expect("json");
    assert_eq!(v["scopes"][0]["held"], 10);
    drop(service);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--retain`: within the window a key replays; once its records are
/// pruned (and pushed out of memory), the same request is executed as new,
/// as spec/http.md §3.6 says.
#[tokio::test]
async fn a_key_replays_within_the_retention_window_and_is_new_after_it() {
    use baton::server::writer::Retention;
    let dir = temp_dir();
    let clock = Arc::new(ManualClock::new(T0));
    let store = SqliteStore::open(&dir.join("ledger.db")).expect("store");
    let config = WriterConfig::default()
        .cache(CacheSizes::all(1))
        .retain(Some(Retention::new(60_000, 1_000)));
    let service = Service::start(Box::new(store), clock.clone(), config).expect("starts");
    let root = root_token(&service);
    let first = call(&service, "/v1/spend", &root, reserve(3, "once")).await;
    assert_eq!(first.0, 201);
    // Inside the window, after eviction: the identical answer, nothing spent.
    clock.advance(30_000);
    call(&service, "/v1/spend", &root, reserve(1, "other-1")).await;
    call(&service, "/v1/spend", &root, reserve(1, "other-2")).await;
    service.sweep_now().await;
    assert_eq!(
        call(&service, "/v1/spend", &root, reserve(3, "once")).await,
        first
    );
    // Past the window: pruned by the sweeper, then pushed out of memory.
    clock.advance(40_000);
    service.sweep_now().await;
    call(&service, "/v1/spend", &root, reserve(1, "other-3")).await;
    call(&service, "/v1/spend", &root, reserve(1, "other-4")).await;
    let again = call(&service, "/v1/spend", &root, reserve(3, "once")).await;
    assert_eq!(again.0, 201);
    assert_ne!(again.1, first.1, "executed as a new request");
    let spent = |b: &[u8]| {
        serde_json::from_slice::<Value>(b).expect("json")["reservation"]["scopes"][0]["spent"]
            .as_u64()
            .expect("spent")
    };
    assert_eq!(spent(&again.1), 3 + 1 + 1 + 1 + 1 + 3);
    drop(service);
    let _ = std::fs::remove_dir_all(&dir);
}
