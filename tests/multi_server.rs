//! Several `baton serve` processes on one PostgreSQL database (issue 7):
//! the ledger's rules must hold across servers, through a `kill -9` of one
//! of them, and through an outage of the database.
//!
//! Opt-in: the tests run only with `BATON_TEST_POSTGRES` set (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`, a user that may create
//! databases); otherwise each prints a note and passes. Each test creates a
//! database of its own and drops it at the end, also on failure
//! (`common::TestDb`).
//!
//! The load: clients over a delegation tree (root → 4 children → 2
//! grandchildren each; every token spends, the root and the children too),
//! each client on a home server, doing with fresh idempotency keys
//! * reserve → commit (at most the hold), sometimes through another server;
//! * reserve → commit above the hold, and a release if that is refused;
//! * reserve → release through another server;
//! * spend; and spend sent to two servers at once with one key, whose two
//!   answers must be byte-identical (one applies, the other replays);
//! * reserve with a short TTL, abandoned: the sweepers of all servers race
//!   to expire it, and its hold must come back exactly once;
//! * a replay of its last acknowledged request through another server,
//!   which must be byte-identical.
//!
//! A request that fails in transport, or is answered 503 or 408, is retried
//! with the same body (so the same key) until it has a final answer, on the
//! next server when the connection failed. Every final answer is logged.
//! The budgets are small enough that the root's ceiling binds early, so
//! most of the run contends at the boundary.
//!
//! Afterwards, with the load stopped and the short holds expired, the
//! ledger is read through every server's `GET /v1/balances` and directly
//! from the database, and must agree with the client log exactly:
//! * every reservation a client was given exists once, in the final state
//!   it was acknowledged in (committed with the acknowledged charge,
//!   released, expired), and the database holds no other;
//! * at every scope, `spent` is the sum of the acknowledged charges of the
//!   reservations beneath it (so a parent's is its children's plus its
//!   own), `held` is 0, and `spent + held ≤ ceiling`;
//! * sampled during the load as well: `spent + held ≤ ceiling`, `held ≥ 0`,
//!   and, in one snapshot, the root's `held` equals the amounts of the active
//!   reservations (every reservation holds at the root).
#![cfg(feature = "server")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton::{Caveat, Unit, UnverifiedToken};
use common::{Proxy, Rng, Server, TestDb, WorkDir, parse, postgres_or_skip, ready, request};
use serde_json::{Value, json};

/// Holds that are meant to be committed or released outlive the test.
const TTL_MS: u64 = 300_000;
/// Holds that are meant to expire: short, so the sweepers take them mid-run.
const SHORT_TTL_MS: u64 = 300;
/// How long one request may go unanswered, retries included.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);
/// Replays checked after the load (the rest of the log is still checked
/// through the counters).
const REPLAYS: usize = 2_000;

const ROOT_CEILING: u64 = 3_000;
const CHILD_CEILING: u64 = 1_000;
const GRANDCHILD_CEILING: u64 = 300;

/// One load test at a time: each runs several servers and 32–64 clients,
/// and their bounds (work done, time to readiness) assume the machine is
/// not also running the others.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn seed(test: &str) -> u64 {
    let seed = std::env::var("BATON_MULTI_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: seed {seed} (BATON_MULTI_SEED={seed} replays the load's choices)");
    seed
}

/// A token that spends, with the block ids of its chain (root first).
struct Spender {
    name: String,
    auth: String,
    chain: Vec<String>,
}

impl Spender {
    fn new(name: String, t: &UnverifiedToken) -> Spender {
        Spender {
            name,
            auth: format!("Bearer {}", t.to_text()),
            chain: t.block_ids().iter().map(|b| b.to_string()).collect(),
        }
    }

    fn block(&self) -> &str {
        self.chain.last().expect("a token has a block")
    }
}

/// The delegation tree: spenders[0] is the root, 1..=4 the children,
/// 5..=12 the grandchildren (5 + 2k and 6 + 2k under child k).
struct Tree {
    spenders: Vec<Spender>,
    /// Index of each spender's parent spender (None for the root).
    parent: Vec<Option<usize>>,
    ceiling: Vec<u64>,
}

async fn mint_tree(http: &reqwest::Client, url: &str, admin: &str) -> Tree {
    let body = json!({ "budgets": [{ "unit": "calls", "ceiling": ROOT_CEILING }], "tools": ["tool.*"], "depth": 5 });
    let (status, text) = request(
        http,
        reqwest::Method::POST,
        &format!("{url}/v1/tokens"),
        Some(&format!("Bearer {admin}")),
        Some(&body),
    )
    .await
    .expect("minting the root");
    assert_eq!(status, 201, "minting the root: {text}");
    let root = UnverifiedToken::from_text(parse(&text)["token"].as_str().expect("a token"))
        .expect("the minted root parses");
    let budget = |t: &UnverifiedToken, ceiling| {
        t.attenuate(vec![Caveat::budget(Unit::Calls, ceiling)])
            .expect("attenuate")
    };
    let mut spenders = vec![Spender::new("root".into(), &root)];
    let mut parent = vec![None];
    let mut ceiling = vec![ROOT_CEILING];
    let kids: Vec<UnverifiedToken> = (0..4).map(|_| budget(&root, CHILD_CEILING)).collect();
    for (k, kid) in kids.iter().enumerate() {
        spenders.push(Spender::new(format!("child{k}"), kid));
        parent.push(Some(0));
        ceiling.push(CHILD_CEILING);
    }
    for (k, kid) in kids.iter().enumerate() {
        for g in 0..2 {
            spenders.push(Spender::new(
                format!("grandchild{k}.{g}"),
                &budget(kid, GRANDCHILD_CEILING),
            ));
            parent.push(Some(1 + k));
            ceiling.push(GRANDCHILD_CEILING);
        }
    }
    Tree {
        spenders,
        parent,
        ceiling,
    }
}

/// One attempt at a request, for the outage test's timeline.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    /// Milliseconds since the load began, when it was sent and answered.
    sent_ms: u64,
    done_ms: u64,
    /// The status, or 0 for a transport failure.
    status: u16,
    /// Whether this was a ledger change (not a read).
    change: bool,
}

/// A request with its final answer.
#[derive(Debug, Clone)]
struct Answered {
    client: usize,
    spender: usize,
    path: String,
    body: Value,
    status: u16,
    text: String,
    /// Servers tried, in order (more than one: it crossed a failure).
    servers: Vec<usize>,
}

/// What became of a reservation a client was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Committed(u64),
    Released,
    Expired,
}

#[derive(Debug, Clone, Copy)]
struct Grant {
    spender: usize,
    amount: u64,
    fate: Fate,
}

#[derive(Default)]
struct ClientLog {
    answered: Vec<Answered>,
    grants: Vec<(String, Grant)>,
    attempts: Vec<Attempt>,
    /// Same-key spends sent to two servers at once, and replays through
    /// another server, checked identical on the spot.
    twins: u64,
    replays: u64,
}

/// State shared by the clients and the test.
struct Shared {
    http: reqwest::Client,
    urls: Vec<String>,
    tree: Tree,
    stop: AtomicBool,
    began: Instant,
    /// 2xx answers to changes, by the server that gave them.
    acked_by: Vec<AtomicU64>,
    /// Final answers (any status but 408 and 503), by server.
    answered_by: Vec<AtomicU64>,
    refused: AtomicU64,
    /// 503 answers seen (retried).
    unavailable: AtomicU64,
    /// Requests whose answer came from another server than the first tried.
    crossed: AtomicUsize,
}

impl Shared {
    fn ms(&self) -> u64 {
        self.began.elapsed().as_millis() as u64
    }

    fn acked(&self) -> u64 {
        self.acked_by.iter().map(|a| a.load(Ordering::SeqCst)).sum()
    }

    /// Final answers from all servers: 2xx, and 402 once budgets run out
    /// (also decided on what the database holds).
    fn answered(&self) -> u64 {
        self.answered_by
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .sum()
    }
}

/// Sends until a server gives a final answer: a transport failure moves to
/// the next server, 503 and 408 are retried after a pause, always with the
/// same body (so the same idempotency key). `home` follows the move.
async fn call(
    sh: &Shared,
    log: &mut ClientLog,
    home: &mut usize,
    method: reqwest::Method,
    path: &str,
    auth: &str,
    body: Option<&Value>,
) -> (u16, String, Vec<usize>) {
    let started = Instant::now();
    let mut servers = Vec::new();
    let change = method == reqwest::Method::POST;
    loop {
        let server = *home;
        servers.push(server);
        let sent_ms = sh.ms();
        let url = format!("{}{path}", sh.urls[server]);
        let answer = request(&sh.http, method.clone(), &url, Some(auth), body).await;
        let status = answer.as_ref().map_or(0, |(s, _)| *s);
        log.attempts.push(Attempt {
            sent_ms,
            done_ms: sh.ms(),
            status,
            change,
        });
        let last = match answer {
            Ok((status, text)) if !matches!(status, 408 | 503) => {
                sh.answered_by[server].fetch_add(1, Ordering::SeqCst);
                if change && (200..300).contains(&status) {
                    sh.acked_by[server].fetch_add(1, Ordering::SeqCst);
                }
                if servers.iter().any(|s| *s != server) {
                    sh.crossed.fetch_add(1, Ordering::SeqCst);
                }
                return (status, text, servers);
            }
            Ok((status, text)) => {
                if status == 503 {
                    sh.unavailable.fetch_add(1, Ordering::SeqCst);
                }
                format!("{status} {text}")
            }
            Err(e) => {
                *home = (*home + 1) % sh.urls.len();
                e
            }
        };
        assert!(
            started.elapsed() < ANSWER_WITHIN,
            "{method} {path} {body:?}: no final answer after {} attempts (servers {servers:?}); last: {last}",
            servers.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The same request sent to two servers at once; each is retried to a
/// final answer as [`call`] does.
async fn call_twice(
    sh: &Shared,
    log: &mut ClientLog,
    homes: (usize, usize),
    path: &str,
    auth: &str,
    body: &Value,
) -> ((u16, String), (u16, String)) {
    let (mut a_home, mut b_home) = homes;
    let mut a_log = ClientLog::default();
    let mut b_log = ClientLog::default();
    let post = reqwest::Method::POST;
    let (a, b) = tokio::join!(
        call(
            sh,
            &mut a_log,
            &mut a_home,
            post.clone(),
            path,
            auth,
            Some(body)
        ),
        call(sh, &mut b_log, &mut b_home, post, path, auth, Some(body)),
    );
    log.attempts.extend(a_log.attempts);
    log.attempts.extend(b_log.attempts);
    ((a.0, a.1), (b.0, b.1))
}

fn reservation(text: &str) -> Value {
    parse(text)["reservation"].clone()
}

/// One client, until told to stop; it stops only between operations, so
/// every request it sent has its final answer and no hold it was meant to
/// finish is left active.
async fn client(id: usize, sh: Arc<Shared>, seed: u64) -> ClientLog {
    let mut rng = Rng(seed | 1);
    let n_servers = sh.urls.len();
    let mut home = id % n_servers;
    let who = id % sh.tree.spenders.len();
    let auth = sh.tree.spenders[who].auth.clone();
    let mut log = ClientLog::default();
    let mut last_acked: Option<Answered> = None;
    let post = reqwest::Method::POST;
    let mut n = 0u64;
    while !sh.stop.load(Ordering::SeqCst) {
        n += 1;
        let key = format!("ms-{id}-{n}");
        let amount = 1 + rng.below(5);
        let kind = rng.below(20);
        let other = |home: usize| (home + 1) % n_servers;
        let context = |a: &Answered| {
            format!(
                "client {id} ({}), {} {} via servers {:?}: {} {}",
                sh.tree.spenders[who].name, a.path, a.body, a.servers, a.status, a.text
            )
        };
        let answered = |path: &str, body: &Value, (status, text, servers)| Answered {
            client: id,
            spender: who,
            path: path.to_owned(),
            body: body.clone(),
            status,
            text,
            servers,
        };

        // A replay of the last acknowledged request, through another server.
        if kind == 19 {
            if let Some(a) = last_acked.take() {
                let mut via = other(home);
                let (status, text, servers) = call(
                    &sh,
                    &mut log,
                    &mut via,
                    post.clone(),
                    &a.path,
                    &auth,
                    Some(&a.body),
                )
                .await;
                assert_eq!(
                    (status, &text),
                    (a.status, &a.text),
                    "replay via servers {servers:?} of {}",
                    context(&a)
                );
                log.replays += 1;
            }
            continue;
        }

        // Spend, sometimes sent to two servers at once with one key.
        if kind >= 16 {
            let actual = amount - rng.below(amount / 2 + 1);
            let body = json!({ "action": "tool.run", "unit": "calls", "amount": amount, "actual": actual, "idempotency_key": format!("{key}-s"), "ttl_ms": TTL_MS });
            let a = if kind == 18 {
                let (one, two) = call_twice(
                    &sh,
                    &mut log,
                    (home, other(home)),
                    "/v1/spend",
                    &auth,
                    &body,
                )
                .await;
                assert_eq!(
                    one, two,
                    "client {id}: one spend key sent to two servers got two different answers: {body}"
                );
                log.twins += 1;
                answered("/v1/spend", &body, (one.0, one.1, vec![home, other(home)]))
            } else {
                let r = call(
                    &sh,
                    &mut log,
                    &mut home,
                    post.clone(),
                    "/v1/spend",
                    &auth,
                    Some(&body),
                )
                .await;
                answered("/v1/spend", &body, r)
            };
            match a.status {
                201 => {
                    let r = reservation(&a.text);
                    assert_eq!(r["state"], "committed", "{}", context(&a));
                    assert_eq!(r["charged"], actual, "{}", context(&a));
                    let rid = r["id"].as_str().expect("a reservation id").to_owned();
                    log.grants.push((
                        rid,
                        Grant {
                            spender: who,
                            amount,
                            fate: Fate::Committed(actual),
                        },
                    ));
                    last_acked = Some(a.clone());
                    log.answered.push(a);
                }
                402 => {
                    sh.refused.fetch_add(1, Ordering::SeqCst);
                }
                _ => panic!("unexpected answer to a spend: {}", context(&a)),
            }
            continue;
        }

        // Reserve, then finish the hold in one of several ways.
        let short = kind == 15;
        let ttl = if short { SHORT_TTL_MS } else { TTL_MS };
        let body = json!({ "action": "tool.run", "unit": "calls", "amount": amount, "idempotency_key": format!("{key}-r"), "ttl_ms": ttl });
        let r = call(
            &sh,
            &mut log,
            &mut home,
            post.clone(),
            "/v1/reservations",
            &auth,
            Some(&body),
        )
        .await;
        let a = answered("/v1/reservations", &body, r);
        match a.status {
            201 => {}
            402 => {
                sh.refused.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            _ => panic!("unexpected answer to a reserve: {}", context(&a)),
        }
        let r = reservation(&a.text);
        assert_eq!(r["state"], "active", "{}", context(&a));
        let rid = r["id"].as_str().expect("a reservation id").to_owned();
        last_acked = Some(a.clone());
        log.answered.push(a);
        if short {
            // Abandoned: only the sweepers finish it.
            log.grants.push((
                rid,
                Grant {
                    spender: who,
                    amount,
                    fate: Fate::Expired,
                },
            ));
            continue;
        }
        let release = || {
            let path = format!("/v1/reservations/{rid}/release");
            let body = json!({ "idempotency_key": format!("{key}-l") });
            (path, body)
        };
        let (path, body, via, fate) = match kind {
            // Release through another server.
            12..=14 => {
                let (path, body) = release();
                (path, body, other(home), Fate::Released)
            }
            // Commit above the hold: refused when the scopes lack room.
            10 | 11 => {
                let actual = amount + 3;
                let path = format!("/v1/reservations/{rid}/commit");
                let body = json!({ "actual": actual, "idempotency_key": format!("{key}-o") });
                (path, body, home, Fate::Committed(actual))
            }
            // Commit within the hold, a third of them through another server.
            _ => {
                let actual = amount - rng.below(amount / 2 + 1);
                let path = format!("/v1/reservations/{rid}/commit");
                let body = json!({ "actual": actual, "idempotency_key": format!("{key}-c") });
                let via = if kind.is_multiple_of(3) {
                    other(home)
                } else {
                    home
                };
                (path, body, via, Fate::Committed(actual))
            }
        };
        let mut via = via;
        let r = call(
            &sh,
            &mut log,
            &mut via,
            post.clone(),
            &path,
            &auth,
            Some(&body),
        )
        .await;
        let a = answered(&path, &body, r);
        let fate = match (a.status, fate) {
            (200, _) => {
                let r = reservation(&a.text);
                match fate {
                    Fate::Committed(c) => {
                        assert_eq!(r["state"], "committed", "{}", context(&a));
                        assert_eq!(r["charged"], c, "{}", context(&a));
                    }
                    _ => assert_eq!(r["state"], "released", "{}", context(&a)),
                }
                last_acked = Some(a.clone());
                log.answered.push(a);
                fate
            }
            // Above the hold without room: the hold stays active; give it back.
            (402, Fate::Committed(c)) if c > amount => {
                sh.refused.fetch_add(1, Ordering::SeqCst);
                let (path, body) = release();
                let r = call(
                    &sh,
                    &mut log,
                    &mut home,
                    post.clone(),
                    &path,
                    &auth,
                    Some(&body),
                )
                .await;
                let a = answered(&path, &body, r);
                assert_eq!(
                    a.status,
                    200,
                    "release after a refused commit: {}",
                    context(&a)
                );
                assert_eq!(reservation(&a.text)["state"], "released", "{}", context(&a));
                last_acked = Some(a.clone());
                log.answered.push(a);
                Fate::Released
            }
            _ => panic!("unexpected answer: {}", context(&a)),
        };
        log.grants.push((
            rid,
            Grant {
                spender: who,
                amount,
                fate,
            },
        ));
    }
    log
}

/// What the database says, in the ledger's tables.
struct DbView {
    /// Block id (hex) → (ceiling, spent, held), for the `calls` scopes.
    scopes: HashMap<String, (u64, u64, u64)>,
    /// Reservation id → (state, amount, charged).
    reservations: HashMap<String, (String, u64, Option<u64>)>,
}

async fn db_view(db: &tokio_postgres::Client) -> DbView {
    let mut scopes = HashMap::new();
    for row in db
        .query(SCOPES_SQL, &[])
        .await
        .unwrap_or_else(|e| panic!("{SCOPES_SQL}: {e}"))
    {
        let block: String = row.get(0);
        let n = |i: usize| u64::try_from(row.get::<_, i64>(i)).expect("non-negative counters");
        let prev = scopes.insert(block.clone(), (n(1), n(2), n(3)));
        assert!(prev.is_none(), "two scope rows for block {block}");
    }
    let mut reservations = HashMap::new();
    for row in db
        .query(RESERVATIONS_SQL, &[])
        .await
        .unwrap_or_else(|e| panic!("{RESERVATIONS_SQL}: {e}"))
    {
        let id: String = row.get(0);
        let state: String = row.get(1);
        let amount = u64::try_from(row.get::<_, i64>(2)).expect("a positive amount");
        let charged = row
            .get::<_, Option<i64>>(3)
            .map(|c| u64::try_from(c).expect("a non-negative charge"));
        let prev = reservations.insert(id.clone(), (state, amount, charged));
        assert!(prev.is_none(), "reservation {id} is stored twice");
    }
    DbView {
        scopes,
        reservations,
    }
}

/// The servers' schema (`baton serve --pg-schema`, default `baton`).
const SCHEMA: &str = "baton";
/// The `calls` scopes (the tree has no others): (block id hex, ceiling,
/// spent, held), from the tables of spec/http.md §4.8.
const SCOPES_SQL: &str =
    "SELECT encode(block_id, 'hex'), ceiling, spent, held FROM baton.scopes WHERE unit = 'calls'";
/// Every reservation: (id as the API writes it, state, amount, charged or NULL).
const RESERVATIONS_SQL: &str = "SELECT 'rsv_' || encode(id, 'hex'), \
     CASE state WHEN 0 THEN 'active' WHEN 1 THEN 'committed' WHEN 2 THEN 'released' WHEN 3 THEN 'expired' ELSE 'unknown' END, \
     amount, charged FROM baton.reservations";

/// In one snapshot: the root scope's `held` and the amounts of every
/// active reservation. Every reservation of the tree holds at the root, so
/// the two are equal at every moment, mid-load too: a scope counter that
/// disagrees with the reservations (a leaked hold) shows at once.
const ROOT_HELD_SQL: &str = "SELECT \
     (SELECT held FROM baton.scopes WHERE unit = 'calls' AND encode(block_id, 'hex') = $1), \
     (SELECT coalesce(sum(amount), 0)::int8 FROM baton.reservations WHERE state = 0)";

/// Reads the database every 200 ms while the load runs and checks the
/// bounds at every scope, and that the root's `held` is the sum of the
/// active holds; returns how many samples it took.
async fn monitor(db: TestDbClient, stop: Arc<AtomicBool>, root: String) -> u64 {
    let mut samples = 0;
    while !stop.load(Ordering::SeqCst) {
        if let Ok(row) = db.0.query_one(ROOT_HELD_SQL, &[&root]).await {
            let held: i64 = row.get::<_, Option<i64>>(0).unwrap_or(0);
            let active: i64 = row.get(1);
            assert_eq!(
                held, active,
                "mid-load, the root holds {held} but the active reservations amount to {active}"
            );
        }
        if let Ok(rows) = db.0.query(SCOPES_SQL, &[]).await {
            for row in rows {
                let block: String = row.get(0);
                let (ceiling, spent, held): (i64, i64, i64) = (row.get(1), row.get(2), row.get(3));
                assert!(
                    spent >= 0
                        && held >= 0
                        && spent.checked_add(held).is_some_and(|s| s <= ceiling),
                    "mid-load, scope {block}: spent {spent} + held {held} vs ceiling {ceiling}"
                );
            }
            samples += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    samples
}

/// A client on the database that the monitor owns (it may be cut off by
/// nothing: it connects directly, not through the proxy).
struct TestDbClient(tokio_postgres::Client);

/// Runs `clients` clients over `sh`; `during` drives the scenario (kill,
/// cut, or just wait) and returns when the load should stop.
async fn run_load<F>(sh: &Arc<Shared>, clients: usize, seed: u64, during: F) -> Vec<ClientLog>
where
    F: std::future::Future<Output = ()>,
{
    let mut rng = Rng(seed | 1);
    let tasks: Vec<_> = (0..clients)
        .map(|i| tokio::spawn(client(i, sh.clone(), rng.next())))
        .collect();
    during.await;
    sh.stop.store(true, Ordering::SeqCst);
    let mut logs = Vec::new();
    for t in tasks {
        logs.push(t.await.expect("a client failed (see its panic above)"));
    }
    logs
}

/// Everything the clients were told, merged: reservation id → grant.
fn merge(logs: &[ClientLog]) -> HashMap<String, Grant> {
    let mut grants = HashMap::new();
    for log in logs {
        for (rid, g) in &log.grants {
            let dup = grants.insert(rid.clone(), *g);
            assert!(dup.is_none(), "reservation id {rid} was handed out twice");
        }
    }
    grants
}

/// After the load: waits until no hold is active, then checks the log
/// against the database and against every live server's balances, and
/// replays a sample of acknowledged requests through other servers.
async fn verify(
    test: &'static str,
    sh: &Shared,
    db: &tokio_postgres::Client,
    logs: &[ClientLog],
    live: &[usize],
) {
    let grants = merge(logs);
    let tree = &sh.tree;

    // The short holds expire by the sweepers (TTL + 2 s grace + a tick).
    let deadline = Instant::now() + Duration::from_secs(30);
    let view = loop {
        let view = db_view(db).await;
        let active = view
            .reservations
            .values()
            .filter(|(state, _, _)| state == "active")
            .count();
        if active == 0 {
            break view;
        }
        assert!(
            Instant::now() < deadline,
            "{test}: {active} holds still active 30 s after the load"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Every reservation a client was given, once, as acknowledged; no other.
    for (rid, g) in &grants {
        let Some((state, amount, charged)) = view.reservations.get(rid) else {
            panic!("{test}: acknowledged reservation {rid} ({g:?}) is not in the database");
        };
        assert_eq!(*amount, g.amount, "{test}: amount of {rid} ({g:?})");
        let want = match g.fate {
            Fate::Committed(c) => ("committed", Some(c)),
            Fate::Released => ("released", None),
            Fate::Expired => ("expired", None),
        };
        assert_eq!(
            (state.as_str(), *charged),
            want,
            "{test}: reservation {rid} ({g:?}) is stored as {state} charged {charged:?}"
        );
    }
    let unknown: Vec<&String> = view
        .reservations
        .keys()
        .filter(|rid| !grants.contains_key(*rid))
        .collect();
    assert!(
        unknown.is_empty(),
        "{test}: {} reservations in the database that no client was given, e.g. {:?}",
        unknown.len(),
        unknown.iter().take(5).collect::<Vec<_>>()
    );

    // Counters: the acknowledged charges beneath each scope, nothing held.
    let n = tree.spenders.len();
    let mut own = vec![0u64; n];
    for g in grants.values() {
        if let Fate::Committed(c) = g.fate {
            own[g.spender] += c;
        }
    }
    let mut expected = vec![0u64; n];
    for (i, charge) in own.iter().enumerate() {
        let mut at = Some(i);
        while let Some(s) = at {
            expected[s] += charge;
            at = tree.parent[s];
        }
    }
    let mut spent_db = vec![0u64; n];
    for (i, s) in tree.spenders.iter().enumerate() {
        let (ceiling, spent, held) =
            view.scopes
                .get(s.block())
                .copied()
                .unwrap_or((tree.ceiling[i], 0, 0));
        assert_eq!(ceiling, tree.ceiling[i], "{test}: ceiling of {}", s.name);
        assert_eq!(held, 0, "{test}: {} still holds {held}", s.name);
        assert!(
            spent + held <= ceiling,
            "{test}: {} is over its ceiling",
            s.name
        );
        assert_eq!(
            spent, expected[i],
            "{test}: {} spent {spent} in the database, the acknowledged charges beneath it sum to {}",
            s.name, expected[i]
        );
        spent_db[i] = spent;
    }
    for i in 0..n {
        let children: u64 = (0..n)
            .filter(|c| tree.parent[*c] == Some(i))
            .map(|c| spent_db[c])
            .sum();
        assert_eq!(
            spent_db[i],
            children + own[i],
            "{test}: {} spent is not its children's plus its own",
            tree.spenders[i].name
        );
    }

    // The same through every live server's API.
    for &server in live {
        for s in &tree.spenders {
            let (status, text) = request(
                &sh.http,
                reqwest::Method::GET,
                &format!("{}/v1/balances", sh.urls[server]),
                Some(&s.auth),
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("{test}: balances of {} on server {server}: {e}", s.name));
            assert_eq!(status, 200, "{test}: balances of {}: {text}", s.name);
            let scopes = parse(&text)["scopes"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert_eq!(scopes.len(), s.chain.len(), "{test}: {}: {text}", s.name);
            // Nearest first.
            for (scope, block) in scopes.iter().zip(s.chain.iter().rev()) {
                let i = tree
                    .spenders
                    .iter()
                    .position(|x| x.block() == block)
                    .expect("every block of a chain is a spender's");
                let f = |k: &str| {
                    scope[k]
                        .as_u64()
                        .unwrap_or_else(|| panic!("{k} in {scope}"))
                };
                assert_eq!(scope["block_id"], block.as_str(), "{test}: {text}");
                assert_eq!(
                    (f("ceiling"), f("spent"), f("held"), f("remaining")),
                    (
                        tree.ceiling[i],
                        spent_db[i],
                        0,
                        tree.ceiling[i] - spent_db[i]
                    ),
                    "{test}: server {server}'s balances for {} at {}'s scope disagree with the database",
                    s.name,
                    tree.spenders[i].name
                );
            }
        }
    }

    // Replays through another live server, 32 at a time: identical, and
    // (counters re-read below) changing nothing.
    let all: Vec<&Answered> = logs.iter().flat_map(|l| &l.answered).collect();
    let stride = (all.len() / REPLAYS).max(1);
    let picked: Vec<(String, String, Answered)> = all
        .iter()
        .enumerate()
        .filter(|(k, a)| k % stride == 0 || a.servers.windows(2).any(|w| w[0] != w[1]))
        .map(|(k, a)| {
            let server = live[k % live.len()];
            (
                format!("{}{}", sh.urls[server], a.path),
                tree.spenders[a.spender].auth.clone(),
                (*a).clone(),
            )
        })
        .collect();
    let replayed = picked.len();
    let mut lanes: Vec<Vec<(String, String, Answered)>> = (0..32).map(|_| Vec::new()).collect();
    for (k, p) in picked.into_iter().enumerate() {
        lanes[k % 32].push(p);
    }
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|lane| {
            let http = sh.http.clone();
            tokio::spawn(async move {
                let mut retried = 0u64;
                for (url, auth, a) in lane {
                    // 503 and 408 mean "retry with the same key" (§2.4),
                    // as the clients did during the load.
                    let started = Instant::now();
                    let (status, text) = loop {
                        let answer =
                            request(&http, reqwest::Method::POST, &url, Some(&auth), Some(&a.body))
                                .await;
                        let last = match answer {
                            Ok((status, text)) if !matches!(status, 408 | 503) => {
                                break (status, text);
                            }
                            Ok((status, text)) => format!("{status} {text}"),
                            // A live server answers within its 10 s
                            // request timeout (408): silence is a failure.
                            Err(e) => panic!("{test}: replay at {url} of {}: {e}", a.body),
                        };
                        retried += 1;
                        assert!(
                            started.elapsed() < ANSWER_WITHIN,
                            "{test}: replay at {url} of {}: no final answer; last: {last}",
                            a.body
                        );
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    };
                    assert_eq!(
                        (status, &text),
                        (a.status, &a.text),
                        "{test}: replay at {url} of client {}'s {} (first answered via servers {:?})",
                        a.client,
                        a.body,
                        a.servers
                    );
                }
                retried
            })
        })
        .collect();
    let mut retried = 0;
    for t in tasks {
        retried += t.await.expect("a replay failed (see its panic)");
    }
    let after = db_view(db).await;
    for (i, s) in tree.spenders.iter().enumerate() {
        let spent = after.scopes.get(s.block()).map_or(0, |v| v.1);
        assert_eq!(
            spent, spent_db[i],
            "{test}: a replay changed {}'s spend",
            s.name
        );
    }
    assert_eq!(
        after.reservations.len(),
        view.reservations.len(),
        "{test}: a replay made a reservation"
    );

    let committed = grants
        .values()
        .filter(|g| matches!(g.fate, Fate::Committed(_)))
        .count();
    eprintln!(
        "{test}: verified {} reservations ({committed} committed), spent root {}/{ROOT_CEILING}, children {:?}, grandchildren {:?}; {replayed} replays identical ({retried} attempts answered 503/408 and retried)",
        grants.len(),
        spent_db[0],
        &spent_db[1..5],
        &spent_db[5..],
    );
}

/// The servers' command-line arguments for a store URL and data directory.
fn serve_args(store: &str, data: &std::path::Path) -> Vec<String> {
    vec![
        "--store".into(),
        store.into(),
        "--pg-schema".into(),
        SCHEMA.into(),
        "--data".into(),
        data.display().to_string(),
    ]
}

/// The admin token the first server wrote.
fn admin_token(data: &std::path::Path) -> String {
    std::fs::read_to_string(data.join("admin.token"))
        .expect("the admin token file")
        .trim()
        .to_owned()
}

/// Starts `n` servers on `store` at once: on an empty database they race
/// to migrate and to create the root key, which must come out as one
/// schema and one key.
fn start_servers(work: &WorkDir, store: &str, n: usize) -> (Vec<Server>, String) {
    let servers: Vec<Server> = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let starting: Vec<_> = (0..n)
                .map(|i| {
                    let args = serve_args(store, &work.path.join(format!("data-{i}")));
                    let log = work.path.join(format!("server-{i}.log"));
                    scope.spawn(move || Server::spawn(&args, &log))
                })
                .collect();
            starting
                .into_iter()
                .map(|t| t.join().expect("a server failed to start (see its panic)"))
                .collect()
        })
    });
    let admin = admin_token(&work.path.join("data-0"));
    // Every server wrote an admin token signed by the one shared root key.
    let kid = |t: &str| {
        UnverifiedToken::from_text(t)
            .expect("an admin token parses")
            .root_kid()
    };
    for i in 1..n {
        let other = admin_token(&work.path.join(format!("data-{i}")));
        assert_eq!(
            kid(&other),
            kid(&admin),
            "servers 0 and {i} signed their admin tokens with different root keys"
        );
    }
    (servers, admin)
}

fn shared(http: reqwest::Client, urls: Vec<String>, tree: Tree) -> Arc<Shared> {
    let n = urls.len();
    Arc::new(Shared {
        http,
        urls,
        tree,
        stop: AtomicBool::new(false),
        began: Instant::now(),
        acked_by: (0..n).map(|_| AtomicU64::new(0)).collect(),
        answered_by: (0..n).map(|_| AtomicU64::new(0)).collect(),
        refused: AtomicU64::new(0),
        unavailable: AtomicU64::new(0),
        crossed: AtomicUsize::new(0),
    })
}

fn summary(test: &str, sh: &Shared, logs: &[ClientLog], began: Instant) {
    let twins: u64 = logs.iter().map(|l| l.twins).sum();
    let replays: u64 = logs.iter().map(|l| l.replays).sum();
    let attempts: usize = logs.iter().map(|l| l.attempts.len()).sum();
    eprintln!(
        "{test}: {} acknowledged changes by server {:?}, {} refused (402), {} answered 503 and retried, {} answers crossed servers, {twins} same-key pairs identical, {replays} cross-server replays identical, {attempts} attempts in {:.1} s",
        sh.acked(),
        sh.acked_by
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .collect::<Vec<_>>(),
        sh.refused.load(Ordering::SeqCst),
        sh.unavailable.load(Ordering::SeqCst),
        sh.crossed.load(Ordering::SeqCst),
        began.elapsed().as_secs_f64()
    );
}

/// One load test's world: its own database, `n` servers on it (through a
/// cuttable proxy if asked), a minted tree and the clients' shared state.
struct LoadTest {
    test: &'static str,
    began: Instant,
    seed: u64,
    db: TestDb,
    proxy: Option<Proxy>,
    work: WorkDir,
    servers: Arc<Mutex<Vec<Server>>>,
    sh: Arc<Shared>,
    clients: usize,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl LoadTest {
    /// `None` when PostgreSQL is not configured (the test then passes).
    async fn start(
        test: &'static str,
        servers: usize,
        clients: usize,
        via_proxy: bool,
    ) -> Option<Self> {
        let base = postgres_or_skip(test)?;
        let serial = ONE_AT_A_TIME.lock().await;
        let began = Instant::now();
        let db = TestDb::create(&base, test).await;
        let proxy = match via_proxy {
            true => Some(Proxy::start(db.url.addr()).await),
            false => None,
        };
        let store = match &proxy {
            Some(p) => db.url.via(p.addr).to_string(),
            None => db.url.to_string(),
        };
        let work = WorkDir::new(&format!("multi-{test}"));
        let (servers, admin) = start_servers(&work, &store, servers);
        let http = common::http_client(clients);
        let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
        let tree = mint_tree(&http, &urls[0], &admin).await;
        Some(Self {
            test,
            began,
            seed: seed(test),
            db,
            proxy,
            work,
            servers: Arc::new(Mutex::new(servers)),
            sh: shared(http, urls, tree),
            clients,
            _serial: serial,
        })
    }

    /// Runs the load with the database monitor beside it until `during`
    /// ends; returns the clients' logs and how often the monitor read the
    /// scopes.
    async fn run<F>(&self, during: F) -> (Vec<ClientLog>, u64)
    where
        F: std::future::Future<Output = ()>,
    {
        let stop_monitor = Arc::new(AtomicBool::new(false));
        let monitor = tokio::spawn(monitor(
            TestDbClient(self.db.connect().await),
            stop_monitor.clone(),
            self.sh.tree.spenders[0].block().to_owned(),
        ));
        let logs = run_load(&self.sh, self.clients, self.seed, during).await;
        stop_monitor.store(true, Ordering::SeqCst);
        let samples = monitor.await.expect("the monitor failed (see its panic)");
        summary(self.test, &self.sh, &logs, self.began);
        (logs, samples)
    }

    /// Checks the log against the database and the servers `live`, then
    /// stops them.
    async fn finish(mut self, logs: &[ClientLog], live: &[usize]) {
        let client = self.db.connect().await;
        verify(self.test, &self.sh, &client, logs, live).await;
        let mut servers = self.servers.lock().expect("servers");
        for &i in live {
            servers[i].terminate();
        }
        drop(servers);
        self.work.passed = true;
        eprintln!(
            "{}: done in {:.1} s",
            self.test,
            self.began.elapsed().as_secs_f64()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_keep_every_rule_under_load() {
    let Some(t) = LoadTest::start("three_servers", 3, 64, false).await else {
        return;
    };
    let (logs, samples) = t.run(tokio::time::sleep(Duration::from_secs(20))).await;
    assert!(
        samples > 10,
        "the monitor read the scopes only {samples} times"
    );
    let sh = &t.sh;
    assert!(sh.acked() > 1000, "too little work to mean anything");
    for (i, a) in sh.acked_by.iter().enumerate() {
        assert!(a.load(Ordering::SeqCst) > 100, "server {i} did little work");
    }
    assert!(
        sh.refused.load(Ordering::SeqCst) > 0,
        "no budget ran out: the ceilings were never tested"
    );
    t.finish(&logs, &[0, 1, 2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_one_server_loses_and_doubles_nothing() {
    const TEST: &str = "kill_9";
    let Some(t) = LoadTest::start(TEST, 3, 48, false).await else {
        return;
    };
    let killed_at = Arc::new(AtomicU64::new(0));
    let acked_at_kill = Arc::new(AtomicU64::new(0));
    let scenario = {
        let sh = t.sh.clone();
        let servers = t.servers.clone();
        let seed = t.seed;
        let killed_at = killed_at.clone();
        let acked_at_kill = acked_at_kill.clone();
        async move {
            // Kill server 2 once the load is well under way, at a moment
            // the seed picks, with requests in flight.
            let mut rng = Rng(seed.rotate_left(17) | 1);
            let target = 800 + rng.below(800);
            let deadline = Instant::now() + Duration::from_secs(20);
            while sh.acked() < target && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
            acked_at_kill.store(sh.acked_by[2].load(Ordering::SeqCst), Ordering::SeqCst);
            servers.lock().expect("servers")[2].kill_9();
            killed_at.store(sh.ms(), Ordering::SeqCst);
            eprintln!("{TEST}: server 2 killed at {} ms", sh.ms());
            // The others go on answering (2xx, or 402 once budgets run out).
            let survivors = || -> u64 {
                sh.answered_by[..2]
                    .iter()
                    .map(|a| a.load(Ordering::SeqCst))
                    .sum()
            };
            let after = survivors();
            tokio::time::sleep(Duration::from_secs(8)).await;
            assert!(
                survivors() > after + 500,
                "the surviving servers answered little after the kill: {after} → {}",
                survivors()
            );
        }
    };
    let (logs, _) = t.run(scenario).await;
    let sh = &t.sh;
    let killed_at = killed_at.load(Ordering::SeqCst);
    assert!(killed_at > 0, "the kill happened");
    // Nothing was acknowledged by the dead server after its death (a 2xx
    // counted after the kill is at most one it sent as it died).
    let dead_acks = sh.acked_by[2].load(Ordering::SeqCst) - acked_at_kill.load(Ordering::SeqCst);
    assert!(
        dead_acks <= 48,
        "{dead_acks} acknowledgements by a dead server"
    );
    assert!(
        sh.crossed.load(Ordering::SeqCst) > 0,
        "no request crossed the kill: nothing was in flight on the killed server"
    );
    // The survivors are ready.
    for (i, url) in sh.urls.iter().enumerate().take(2) {
        assert_eq!(
            ready(&sh.http, url).await,
            Some(true),
            "server {i} is not ready"
        );
    }
    t.finish(&logs, &[0, 1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_outage_answers_503_then_recovers() {
    const TEST: &str = "outage";
    let Some(t) = LoadTest::start(TEST, 2, 32, true).await else {
        return;
    };
    let window = Arc::new(Mutex::new((0u64, 0u64)));
    let scenario = {
        let sh = t.sh.clone();
        let window = window.clone();
        let proxy = t.proxy.as_ref().expect("started with a proxy");
        async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let before = sh.acked();
            assert!(before > 100, "too little work before the cut: {before}");
            proxy.cut_and_wait().await;
            let cut_ms = sh.ms();
            eprintln!("{TEST}: database cut at {cut_ms} ms ({before} acknowledged)");
            // Both servers report not ready, within a bound.
            for (i, url) in sh.urls.iter().enumerate() {
                let deadline = Instant::now() + Duration::from_secs(10);
                while ready(&sh.http, url).await != Some(false) {
                    assert!(
                        Instant::now() < deadline,
                        "server {i} still ready 10 s into the outage"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                eprintln!(
                    "{TEST}: server {i} not ready {} ms after the cut",
                    sh.ms() - cut_ms
                );
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let restore_ms = sh.ms();
            *window.lock().expect("window") = (cut_ms, restore_ms);
            proxy.restore();
            eprintln!("{TEST}: database restored at {restore_ms} ms");
            for (i, url) in sh.urls.iter().enumerate() {
                let deadline = Instant::now() + Duration::from_secs(20);
                while ready(&sh.http, url).await != Some(true) {
                    assert!(
                        Instant::now() < deadline,
                        "server {i} not ready 20 s after the database returned"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                eprintln!(
                    "{TEST}: server {i} ready again {} ms after the restore",
                    sh.ms() - restore_ms
                );
            }
            let recovered = sh.answered();
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert!(
                sh.answered() > recovered + 100,
                "few answers after the recovery: {recovered} → {}",
                sh.answered()
            );
        }
    };
    let (logs, _) = t.run(scenario).await;
    let (cut_ms, restore_ms) = *window.lock().expect("window");
    // No change sent while the database was cut off was acknowledged: the
    // server had nowhere to commit it.
    let mut during: BTreeMap<u16, u64> = BTreeMap::new();
    for a in logs.iter().flat_map(|l| &l.attempts) {
        if a.change && a.sent_ms > cut_ms && a.done_ms < restore_ms {
            *during.entry(a.status).or_default() += 1;
        }
    }
    eprintln!("{TEST}: answers to changes sent during the outage, by status: {during:?}");
    assert!(
        during.keys().all(|s| !(200..300).contains(s)),
        "2xx answers to changes sent while the database was unreachable: {during:?}"
    );
    assert!(
        during.get(&503).copied().unwrap_or(0) > 0,
        "no 503 during the outage: {during:?}"
    );
    t.finish(&logs, &[0, 1]).await;
}

/// The harness itself: the proxy forwards, cuts every open connection and
/// refuses new ones, then forwards again; the test database is gone once
/// its guard is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_proxy_cuts_and_restores_and_the_database_is_dropped() {
    const TEST: &str = "harness";
    let Some(base) = postgres_or_skip(TEST) else {
        return;
    };
    let db = TestDb::create(&base, "harness").await;
    let name = db.name().to_owned();
    let proxy = Proxy::start(db.url.addr()).await;
    let via = db.url.via(proxy.addr);
    let one = |c: tokio_postgres::Client| async move {
        c.query_one("SELECT 1::int4", &[])
            .await
            .map(|r| r.get::<_, i32>(0))
    };
    let client = common::pg_connect(&via).await;
    assert_eq!(one(client).await.expect("a query through the proxy"), 1);
    let open = common::pg_connect(&via).await;
    assert_eq!(proxy.accepted(), 2, "two connections forwarded");
    assert!(proxy.live() >= 1, "the open connection is forwarding");
    proxy.cut_and_wait().await;
    assert_eq!(proxy.live(), 0);
    assert!(
        one(open).await.is_err(),
        "an open connection survived the cut"
    );
    assert!(
        tokio_postgres::connect(&via.to_string(), tokio_postgres::NoTls)
            .await
            .is_err(),
        "a new connection was forwarded during the cut"
    );
    proxy.restore();
    let client = common::pg_connect(&via).await;
    assert_eq!(one(client).await.expect("a query after the restore"), 1);
    drop(proxy);
    drop(db);
    let admin = common::pg_connect(&common::PgUrl::parse(&base)).await;
    let left = admin
        .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .expect("read pg_database");
    assert!(left.is_empty(), "the test database {name} was not dropped");
}
