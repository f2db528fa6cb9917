//! The PostgreSQL store shared by several ledgers (spec/http.md §4.8):
//! several `Service`s in this process, each with its own store, writer and
//! pool, on one uniquely named schema (dropped at the end), as several
//! `baton serve` processes would run on one database.
//!
//! Opt-in: set `BATON_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test`
//! (any database the user may create schemas in). Without it every test
//! here returns at once, so `cargo test` passes on a machine without
//! PostgreSQL.
#![cfg(feature = "server")]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use baton::server::Service;
use baton::server::writer::{ManualClock, WriterConfig};
use baton::store::postgres::{PgOptions, PgStore, drop_schema};
use baton::{Caveat, Token, Unit};
use serde_json::{Value, json};
use tower::ServiceExt;

const T0: u64 = 1_800_000_000_000;

fn pg_url() -> Option<String> {
    std::env::var("BATON_TEST_POSTGRES").ok()
}

/// A unique schema, dropped when the cluster is.
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    fn new(url: &str, tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            url: url.to_owned(),
            name: format!("baton_pgtest_{tag}_{}_{nanos}", std::process::id()),
        }
    }

    fn options(&self) -> PgOptions {
        let mut o = PgOptions::new(&self.url);
        o.schema = self.name.clone();
        o.pool_size = 3;
        o
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Err(e) = drop_schema(&self.url, &self.name) {
            eprintln!("dropping schema {}: {e}", self.name);
        }
    }
}

/// `n` ledgers on one schema, sharing one manual clock.
struct Cluster {
    servers: Vec<Service>,
    clock: Arc<ManualClock>,
    /// Declared last: dropped after the servers.
    _schema: Schema,
}

impl Cluster {
    /// `n` ledgers started at the same time: their migrations and their
    /// root-key bootstrap race.
    fn start(url: &str, tag: &str, n: usize) -> Self {
        let schema = Schema::new(url, tag);
        let clock = Arc::new(ManualClock::new(T0));
        let servers = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|_| {
                    let opts = schema.options();
                    let clock = clock.clone();
                    s.spawn(move || {
                        let store = PgStore::connect(&opts).expect("store connects and migrates");
                        Service::start(
                            Box::new(store),
                            clock,
                            WriterConfig::default()
                                .grace_ms(1_000)
                                .max_batch(64)
                                // Two writers each: four on the schema.
                                .writers(2),
                        )
                        .expect("service starts")
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("start thread"))
                .collect()
        });
        Self {
            servers,
            clock,
            _schema: schema,
        }
    }

    async fn call(
        &self,
        server: usize,
        method: &str,
        path: &str,
        token: Option<&Token>,
        body: Option<Value>,
    ) -> (StatusCode, Value, Vec<u8>) {
        self.call_raw(
            server,
            method,
            path,
            token,
            body.map(|b| b.to_string()),
            None,
        )
        .await
    }

    /// [`Cluster::call`] with the body as sent and a `Baton-Proof` header.
    async fn call_raw(
        &self,
        server: usize,
        method: &str,
        path: &str,
        token: Option<&Token>,
        body: Option<String>,
        proof: Option<&str>,
    ) -> (StatusCode, Value, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {}", t.to_text()));
        }
        if let Some(p) = proof {
            req = req.header("baton-proof", p);
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b)),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.servers[server].router().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value, bytes)
    }

    /// Root (100 calls) and a parent (10 calls) under it.
    fn tree(&self) -> (Token, Token) {
        let root = self.servers[0]
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

    async fn scope(&self, server: usize, token: &Token) -> (u64, u64) {
        let (s, v, _) = self
            .call(server, "GET", "/v1/balances", Some(token), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        (
            v["scopes"][0]["spent"].as_u64().unwrap(),
            v["scopes"][0]["held"].as_u64().unwrap(),
        )
    }
}

fn body(amount: u64, key: &str, ttl_ms: u64) -> Value {
    json!({ "action": "tool.run", "unit": "calls", "amount": amount, "idempotency_key": key, "ttl_ms": ttl_ms })
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_starting_together_migrate_once_and_share_one_root_key() {
    let Some(url) = pg_url() else { return };
    let c = Cluster::start(&url, "start", 4);
    let mut kids = Vec::new();
    for i in 0..4 {
        let (s, v, _) = c.call(i, "GET", "/v1/keys", None, None).await;
        assert_eq!(s, StatusCode::OK);
        let keys = v["keys"].as_array().unwrap().clone();
        assert_eq!(keys.len(), 1, "one key, made by one of them: {v}");
        kids.push(keys[0]["kid"].as_str().unwrap().to_owned());
    }
    assert!(kids.iter().all(|k| *k == kids[0]), "{kids:?}");
    // A fifth server on the migrated schema starts too, and a token minted
    // by one verifies on every other.
    let (_, parent) = c.tree();
    for i in 0..4 {
        let (s, v, _) = c.call(i, "GET", "/v1/balances", Some(&parent), None).await;
        assert_eq!(s, StatusCode::OK, "server {i}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_never_overspend_a_shared_scope() {
    let Some(url) = pg_url() else { return };
    let c = Arc::new(Cluster::start(&url, "overspend", 2));
    let (root, parent) = c.tree();
    let children: Vec<Token> = (0..4)
        .map(|_| {
            parent
                .attenuate(vec![Caveat::budget(Unit::Calls, 6)])
                .unwrap()
        })
        .collect();
    let mut tasks = Vec::new();
    for (i, child) in children.iter().enumerate() {
        for j in 0..12 {
            let c = c.clone();
            let child = child.clone();
            tasks.push(tokio::spawn(async move {
                c.call(
                    (i + j) % 2,
                    "POST",
                    "/v1/spend",
                    Some(&child),
                    Some(body(1, &format!("s-{i}-{j}"), 5_000)),
                )
                .await
            }));
        }
    }
    let mut ok = 0;
    for t in tasks {
        let (s, v, _) = t.await.unwrap();
        match s {
            StatusCode::CREATED => ok += 1,
            StatusCode::PAYMENT_REQUIRED => assert_eq!(code(&v), "insufficient_budget"),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(ok, 10, "exactly the parent's ceiling was spent");
    for server in 0..2 {
        assert_eq!(c.scope(server, &parent).await, (10, 0));
        assert_eq!(c.scope(server, &root).await, (10, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_key_sent_to_two_servers_at_once_applies_once_and_replays_byte_for_byte() {
    let Some(url) = pg_url() else { return };
    let c = Arc::new(Cluster::start(&url, "idem", 2));
    let (_, parent) = c.tree();
    let keys = 8;
    for k in 0..keys {
        let key = format!("twice-{k}");
        let (a, b) = tokio::join!(
            c.call(
                0,
                "POST",
                "/v1/spend",
                Some(&parent),
                Some(body(1, &key, 5_000))
            ),
            c.call(
                1,
                "POST",
                "/v1/spend",
                Some(&parent),
                Some(body(1, &key, 5_000))
            ),
        );
        assert_eq!(a.0, StatusCode::CREATED, "{}", a.1);
        assert_eq!(a.0, b.0);
        assert_eq!(a.2, b.2, "the second answer is the first one's replay");
        // The same key with another request is refused on either server.
        let (s, v, _) = c
            .call(
                k % 2,
                "POST",
                "/v1/spend",
                Some(&parent),
                Some(body(2, &key, 5_000)),
            )
            .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::CONFLICT, "idempotency_mismatch"),
            "{v}"
        );
    }
    assert_eq!(c.scope(0, &parent).await, (keys as u64, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_on_one_server_stops_spends_on_the_other_at_once() {
    let Some(url) = pg_url() else { return };
    let c = Cluster::start(&url, "revoke", 2);
    let (_, parent) = c.tree();
    let child = parent
        .attenuate(vec![Caveat::budget(Unit::Calls, 5)])
        .unwrap();
    // A hold made on server 1 before the revocation.
    let (s, v, _) = c
        .call(
            1,
            "POST",
            "/v1/reservations",
            Some(&child),
            Some(body(2, "before", 60_000)),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["reservation"]["id"].as_str().unwrap().to_owned();
    let block = child.block_ids()[child.len() - 1];
    let (s, v, _) = c
        .call(
            0,
            "POST",
            "/v1/revocations",
            Some(&child),
            Some(json!({ "block_id": block.to_string() })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Server 1's offline verifier has not polled yet: the ledger's check
    // inside the spend's transaction refuses.
    let (s, v, _) = c
        .call(
            1,
            "POST",
            "/v1/spend",
            Some(&child),
            Some(body(1, "after", 5_000)),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "revoked"), "{v}");
    let (s, v, _) = c
        .call(
            1,
            "POST",
            &format!("/v1/reservations/{id}/commit"),
            Some(&parent),
            Some(json!({ "actual": 1, "idempotency_key": "c" })),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "revoked"), "{v}");
    // The hold can still be returned.
    let (s, v, _) = c
        .call(
            1,
            "POST",
            &format!("/v1/reservations/{id}/release"),
            Some(&parent),
            Some(json!({ "idempotency_key": "r" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(c.scope(1, &parent).await, (0, 0));
    // After a sweep, server 1's verifier knows too, and the feed on either
    // server lists the revocation once.
    c.servers[1].sweep_now().await;
    let (s, v, _) = c.call(1, "GET", "/v1/balances", Some(&child), None).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "revoked"), "{v}");
    let admin = c.servers[0].mint_admin_token().unwrap();
    for server in 0..2 {
        let (s, v, _) = c
            .call(server, "GET", "/v1/revocations?after=0", Some(&admin), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["revocations"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v["revocations"][0]["seq"], 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_on_two_servers_releases_each_hold_exactly_once() {
    let Some(url) = pg_url() else { return };
    let c = Cluster::start(&url, "expiry", 2);
    let (_, parent) = c.tree();
    for k in 0..6 {
        let (s, v, _) = c
            .call(
                k % 2,
                "POST",
                "/v1/reservations",
                Some(&parent),
                Some(body(1, &format!("short-{k}"), 1_000)),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    // One hold that must survive the sweep.
    let (s, v, _) = c
        .call(
            0,
            "POST",
            "/v1/reservations",
            Some(&parent),
            Some(body(3, "long", 60_000)),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(c.scope(0, &parent).await, (0, 9));
    c.clock.advance(2_001);
    // Both servers sweep at the same time, twice.
    for _ in 0..2 {
        tokio::join!(c.servers[0].sweep_now(), c.servers[1].sweep_now());
    }
    assert_eq!(
        c.scope(1, &parent).await,
        (0, 3),
        "each short hold released once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_rotated_through_one_server_is_served_by_the_other_after_a_sweep() {
    let Some(url) = pg_url() else { return };
    let c = Cluster::start(&url, "rotate", 2);
    let admin = c.servers[0].mint_admin_token().unwrap();
    let (s, v, _) = c
        .call(0, "POST", "/v1/keys/rotate", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let kid = v["kid"].as_str().unwrap().to_owned();
    c.servers[1].sweep_now().await;
    let (_, v, _) = c.call(1, "GET", "/v1/keys", None, None).await;
    let active: Vec<&str> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["status"] == "active")
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(active, vec![kid.as_str()], "{v}");
    // Server 1 now signs with the new key, and server 0 verifies it.
    let token = c.servers[1]
        .mint(vec![
            Caveat::budget(Unit::Calls, 5),
            Caveat::tools(["tool.*"]).unwrap(),
        ])
        .unwrap();
    let (s, v, _) = c.call(0, "GET", "/v1/balances", Some(&token), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[test]
fn an_unreachable_database_is_an_error_not_a_hang() {
    // Port 1 on loopback: nothing listens, the connection is refused.
    let mut o = PgOptions::new("postgres://postgres@127.0.0.1:1/test");
    o.timeout = std::time::Duration::from_secs(2);
    let started = std::time::Instant::now();
    let err = PgStore::connect(&o).err().expect("no database there");
    assert!(
        matches!(err, baton::store::StoreError::Unavailable(_)),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // A schema name that would need quoting is refused before connecting.
    let mut o = PgOptions::new("postgres://postgres@127.0.0.1:1/test");
    o.schema = "Robert'); DROP TABLE x; --".into();
    assert!(PgStore::connect(&o).is_err());
}

/// A group stuck behind another's row lock fails within the store's
/// timeout, and the database cancels its statement too: the abandoned
/// backend does not wait on (or keep) row locks after the server gave up.
#[test]
fn a_group_stuck_on_a_lock_fails_in_time_and_leaves_no_waiting_statement() {
    use baton::keys::BlockId;
    use baton::ledger::ScopeKey;
    use baton::store::{Store, StoreError};
    let Some(url) = pg_url() else {
        return;
    };
    let app = format!("baton_stuck_{}", std::process::id());
    let sep = if url.contains('?') { '&' } else { '?' };
    let schema = Schema::new(&format!("{url}{sep}application_name={app}"), "stuck");
    let mut o = schema.options();
    o.timeout = std::time::Duration::from_millis(800);
    let mut a = PgStore::connect(&o).unwrap();
    let mut b = a.split().unwrap();
    let key = ScopeKey {
        block: BlockId([7; 32]),
        unit: Unit::Calls,
        tools: None,
    };
    // The row exists, then `a` holds its lock in an open group.
    a.begin().unwrap();
    a.lock_scopes(&[(key.clone(), 100)]).unwrap();
    a.write(&[]).unwrap();
    a.begin().unwrap();
    a.lock_scopes(&[(key.clone(), 100)]).unwrap();
    let started = std::time::Instant::now();
    b.begin().unwrap();
    let err = b.lock_scopes(&[(key.clone(), 100)]).unwrap_err();
    b.abort();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Past the statement timeout, no backend of ours waits on a lock.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let waiting: i64 = rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = $1 AND wait_event_type = 'Lock'",
            &[&app],
        )
        .await
        .unwrap()
        .get(0)
    });
    assert_eq!(waiting, 0, "a statement the server gave up on still waits");
    a.abort();
    // Both recover: the row can be locked and written again.
    b.begin().unwrap();
    b.lock_scopes(&[(key, 100)]).unwrap();
    b.write(&[]).unwrap();
}

/// Each server's replay store knows only its own proofs; the idempotency
/// record, shared through the database, names the proof and answers a
/// replay of it on any server (spec/http.md §1.2.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proof_replayed_to_another_server_meets_the_durable_answer() {
    use baton::proof::{HolderProof, ProofId};
    use baton::{Audience, HolderKey, Request as BatonRequest};
    let Some(url) = pg_url() else { return };
    let c = Cluster::start(&url, "proof", 2);
    let (_, parent) = c.tree();
    let agent = HolderKey::from_seed(&[5; 32]);
    let bound = parent
        .attenuate(vec![Caveat::Holder(agent.public())])
        .unwrap();
    let sent = body(3, "bound-1", 5_000).to_string();
    let now = T0 / 1000;
    let req = BatonRequest::new("baton.ledger.request", now)
        .unwrap()
        .operation("POST /v1/reservations")
        .unwrap()
        .body(sent.as_bytes());
    let ledger = Audience::new(baton::server::DEFAULT_AUDIENCE).unwrap();
    let proof = bound.prove(&agent, &ledger, &req, now).unwrap().to_header();
    let send = async |server: usize| {
        c.call_raw(
            server,
            "POST",
            "/v1/reservations",
            Some(&bound),
            Some(sent.clone()),
            Some(&proof),
        )
        .await
    };
    let (s, v, first) = send(0).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v, _) = send(0).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "proof_replayed"));
    // Server 1 never saw the proof: the shared record answers it.
    let (s, _, again) = send(1).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(again, first, "the recorded answer, byte for byte");
    assert_eq!(c.scope(1, &parent).await, (0, 3), "held once");
    // The record names the proof.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .query(
            &format!("SELECT proof FROM {}.idempotency", c._schema.name),
            &[],
        )
        .await
        .unwrap();
    let stored: Vec<Option<Vec<u8>>> = rows.iter().map(|r| r.get(0)).collect();
    let nonce = *HolderProof::from_header(&proof).unwrap().nonce();
    let id = ProofId::of(&agent.public(), &nonce);
    assert_eq!(stored, vec![Some(id.0.to_vec())]);
}

/// Root (1000 calls) → parent (`parent_ceiling`) → `n` children of up to
/// 100 each, minted through server 0.
fn alloc_tree(c: &Cluster, parent_ceiling: u64, n: usize) -> (Token, Token, Vec<Token>) {
    let root = c.servers[0]
        .mint(vec![
            Caveat::budget(Unit::Calls, 1_000),
            Caveat::tools(["tool.*"]).unwrap(),
            Caveat::Depth(5),
        ])
        .unwrap();
    let parent = root
        .attenuate(vec![Caveat::budget(Unit::Calls, parent_ceiling)])
        .unwrap();
    let kids = (0..n)
        .map(|_| {
            parent
                .attenuate(vec![Caveat::budget(Unit::Calls, 100)])
                .unwrap()
        })
        .collect();
    (root, parent, kids)
}

fn allocate(child: &Token, amount: u64, key: &str, ttl_ms: u64) -> Value {
    json!({ "child_token": child.to_text(), "unit": "calls", "amount": amount,
            "overflow": "deny", "idempotency_key": key, "ttl_ms": ttl_ms })
}

/// `(spent, held, allocated)` of `token`'s scope at chain position `block`.
async fn counters(c: &Cluster, server: usize, token: &Token, block: u64) -> (u64, u64, u64) {
    let (s, v, _) = c
        .call(server, "GET", "/v1/balances", Some(token), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let scope = v["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["block"] == block)
        .unwrap_or_else(|| panic!("no scope {block}: {v}"));
    let n = |f: &str| scope[f].as_u64().unwrap();
    assert!(n("spent") + n("held") <= n("ceiling"), "{v}");
    (n("spent"), n("held"), n("allocated"))
}

/// Sixteen greedy siblings hammer one parent through both servers while
/// the seventeenth, given an allocation through server 0, reserves all of
/// it through server 1: it always gets it, the siblings get exactly the
/// rest, and afterwards every scope's `held` is exactly the live holds
/// plus the allocation's unused part, which its release returns, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_sixteen_greedy_siblings_never_take_an_allocated_childs_budget() {
    const ROUNDS: usize = 3;
    const SIBLINGS: usize = 16;
    const X: u64 = 20;
    let Some(url) = pg_url() else { return };
    let c = Arc::new(Cluster::start(&url, "starve", 2));
    for round in 0..ROUNDS {
        let (root, parent, kids) = alloc_tree(&c, 100, SIBLINGS + 1);
        let (s, v, _) = c
            .call(
                0,
                "POST",
                "/v1/allocations",
                Some(&parent),
                Some(allocate(&kids[0], X, "guarantee", 600_000)),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "round {round}: {v}");
        let id = v["allocation"]["id"].as_str().unwrap().to_owned();
        let mut tasks = Vec::new();
        for (s, sib) in kids[1..].iter().enumerate() {
            let sib = sib.clone();
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                // (spent, held) by this sibling.
                let (mut spent, mut held) = (0u64, 0u64);
                let mut refused = 0;
                let mut n = 0u64;
                while refused < 8 {
                    n += 1;
                    let amount = 1 + (n % 7);
                    let path = if n.is_multiple_of(2) {
                        "/v1/spend"
                    } else {
                        "/v1/reservations"
                    };
                    let (st, v, _) = c
                        .call(
                            (s + n as usize) % 2,
                            "POST",
                            path,
                            Some(&sib),
                            Some(body(amount, &format!("g{s}-{n}"), 600_000)),
                        )
                        .await;
                    match st {
                        StatusCode::CREATED if n.is_multiple_of(2) => spent += amount,
                        StatusCode::CREATED => held += amount,
                        StatusCode::PAYMENT_REQUIRED => {
                            assert_eq!(code(&v), "insufficient_budget", "{v}");
                            refused += 1;
                        }
                        other => panic!("sibling {s}: {other} {v}"),
                    }
                }
                (spent, held)
            }));
        }
        // The allocated child reserves its whole allocation through the
        // other server, in four holds, in the middle of the storm.
        let mut holds = Vec::new();
        for i in 0..4 {
            let (s, v, _) = c
                .call(
                    1,
                    "POST",
                    "/v1/reservations",
                    Some(&kids[0]),
                    Some(body(X / 4, &format!("child-{i}"), 600_000)),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "round {round}, hold {i}: {v}");
            holds.push(v["reservation"]["id"].as_str().unwrap().to_owned());
        }
        let (mut spent, mut held) = (0, 0);
        for t in tasks {
            let (s, h) = t.await.unwrap();
            spent += s;
            held += h;
        }
        assert_eq!(
            spent + held,
            100 - X,
            "round {round}: the siblings got the rest"
        );
        // Every scope above the child: exactly the live holds, the spends,
        // and the allocation (all drawn: nothing unused), on both servers.
        for server in 0..2 {
            for (token, block) in [(&parent, 1), (&root, 0)] {
                assert_eq!(
                    counters(&c, server, token, block).await,
                    (spent, held + X, 0),
                    "round {round}, server {server}, block {block}"
                );
            }
        }
        // The child charges 2 of one hold and releases another: 3 + 5 go
        // back to the allocation, still set aside for it.
        let (s, v, _) = c
            .call(
                0,
                "POST",
                &format!("/v1/reservations/{}/commit", holds[0]),
                Some(&kids[0]),
                Some(json!({ "actual": 2, "idempotency_key": "commit" })),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (s, v, _) = c
            .call(
                1,
                "POST",
                &format!("/v1/reservations/{}/release", holds[1]),
                Some(&kids[0]),
                Some(json!({ "idempotency_key": "release" })),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            counters(&c, 1, &parent, 1).await,
            (spent + 2, held + X - 2, 8)
        );
        // Released through server 1: exactly the unused 8, once.
        let (s, v, _) = c
            .call(
                1,
                "POST",
                &format!("/v1/allocations/{id}/release"),
                Some(&parent),
                Some(json!({ "idempotency_key": "end" })),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["allocation"]["returned"], 8, "{v}");
        let (s, v, _) = c
            .call(
                0,
                "POST",
                &format!("/v1/allocations/{id}/release"),
                Some(&kids[0]),
                Some(json!({ "idempotency_key": "end-again" })),
            )
            .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::CONFLICT, "allocation_finalized"),
            "{v}"
        );
        for server in 0..2 {
            assert_eq!(
                counters(&c, server, &root, 0).await,
                (spent + 2, held + X - 10, 0),
                "round {round}: the two holds still live, nothing set aside"
            );
        }
    }
}

/// Both servers' sweepers find the same lapsed allocations at once, twice:
/// each allocation's unused part comes back exactly once, and a hold that
/// drew from one keeps its money.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sweepers_expire_each_allocation_exactly_once() {
    const KIDS: usize = 8;
    let Some(url) = pg_url() else { return };
    let c = Cluster::start(&url, "allocsweep", 2);
    let (_, parent, kids) = alloc_tree(&c, 100, KIDS + 1);
    let mut ids = Vec::new();
    for (i, k) in kids[..KIDS].iter().enumerate() {
        let (s, v, _) = c
            .call(
                i % 2,
                "POST",
                "/v1/allocations",
                Some(&parent),
                Some(allocate(k, 5, &format!("a{i}"), 10_000)),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        ids.push(v["allocation"]["id"].as_str().unwrap().to_owned());
    }
    // The first child holds 2 of its 5, for longer than the allocation
    // lasts; an unallocated sibling holds 7 of the pool.
    for (k, amount, key) in [(&kids[0], 2, "drawn"), (&kids[KIDS], 7, "pool")] {
        let (s, v, _) = c
            .call(
                1,
                "POST",
                "/v1/reservations",
                Some(k),
                Some(body(amount, key, 600_000)),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    assert_eq!(counters(&c, 0, &parent, 1).await, (0, 5 * 8 + 7, 38));
    c.clock.advance(10_001);
    for _ in 0..2 {
        tokio::join!(
            c.servers[0].sweep_now(),
            c.servers[1].sweep_now(),
            c.servers[0].sweep_now(),
            c.servers[1].sweep_now()
        );
    }
    // Returned once: 3 for the first, 5 for each other; the two holds stay.
    assert_eq!(counters(&c, 1, &parent, 1).await, (0, 2 + 7, 0));
    for (i, id) in ids.iter().enumerate() {
        let (s, v, _) = c
            .call(
                i % 2,
                "GET",
                &format!("/v1/allocations/{id}"),
                Some(&parent),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["allocation"]["state"], "expired", "{v}");
        assert_eq!(v["allocation"]["returned"], if i == 0 { 3 } else { 5 });
    }
    // The child's hold now ends into the pool, not into the ended allocation.
    let (s, v, _) = c
        .call(
            0,
            "POST",
            "/v1/spend",
            Some(&kids[1]),
            Some(body(91, "all", 5_000)),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "the rest of the pool: {v}");
    assert_eq!(counters(&c, 0, &parent, 1).await, (91, 9, 0));
}

/// The database closes every connection of a running server (a restart, a
/// fail-over, `pg_terminate_backend`): the next requests are served, not
/// answered 503. Each writer finds its connection closed on its group's
/// first call, which carried no COMMIT, and runs the group again on a new
/// connection (spec/http.md §4.8, database down).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_that_closed_every_connection_costs_no_request_a_503() {
    let Some(url) = pg_url() else { return };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let app = format!("baton_pgtest_closed_{}_{nanos}", std::process::id());
    let sep = if url.contains('?') { '&' } else { '?' };
    let c = Cluster::start(&format!("{url}{sep}application_name={app}"), "closed", 1);
    let (root, _) = c.tree();
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let ours = "SELECT pid FROM pg_stat_activity WHERE application_name = $1";
    let mut spent = 0;
    for round in 0..3 {
        // Every writer has a connection: a few groups in a row, over both.
        for i in 0..4 {
            let key = format!("before-{round}-{i}");
            let (s, v, _) = c
                .call(
                    0,
                    "POST",
                    "/v1/spend",
                    Some(&root),
                    Some(body(1, &key, 5_000)),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
            spent += 1;
        }
        let killed = admin
            .query(
                &format!("SELECT pg_terminate_backend(pid) FROM ({ours}) p"),
                &[&app],
            )
            .await
            .unwrap();
        assert!(!killed.is_empty(), "the server had connections");
        while admin
            .query_one(&format!("SELECT count(*) FROM ({ours}) p"), &[&app])
            .await
            .unwrap()
            .get::<_, i64>(0)
            > 0
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // Two requests at once, twice: both writers meet a closed connection.
        for i in 0..2 {
            let (a, b) = tokio::join!(
                c.call(
                    0,
                    "POST",
                    "/v1/spend",
                    Some(&root),
                    Some(body(1, &format!("after-{round}-{i}-a"), 5_000))
                ),
                c.call(
                    0,
                    "POST",
                    "/v1/spend",
                    Some(&root),
                    Some(body(1, &format!("after-{round}-{i}-b"), 5_000))
                )
            );
            for (s, v, _) in [a, b] {
                assert_eq!(s, StatusCode::CREATED, "round {round}: {v}");
                spent += 1;
            }
        }
    }
    let (s, v, _) = c.call(0, "GET", "/v1/balances", Some(&root), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["scopes"][0]["spent"].as_u64(), Some(spent), "{v}");
}
