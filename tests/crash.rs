//! Crash safety of `baton serve`, with the real binary and `kill -9`.
//!
//! Sixteen clients reserve, commit and spend over a delegation tree while
//! the test SIGKILLs the server at arbitrary moments and restarts it on the
//! same data directory, four times; the last kill comes once some budget has
//! run out. A client whose request dies with the connection retries it, with
//! the same idempotency key, against the new server until it gets an answer.
//! Afterwards, with the load stopped:
//! * every reservation a client was ever given (201) exists, is committed,
//!   and was charged exactly what its acknowledged commit or spend said;
//! * replaying any acknowledged request with its key returns the identical
//!   status and body, and changes nothing;
//! * at every scope of the tree, `spent` is the sum of the charges of the
//!   reservations beneath it, nothing is held but the unused part of the
//!   allocation, and `spent + held <= ceiling`: no acknowledged change was
//!   lost and no retried one was applied twice;
//! * child1 spends under an allocation (overflow `shared`) made before the
//!   first kill: afterwards it is still active with nothing drawn,
//!   `charged + unused = amount`, that `unused` is exactly what its scopes
//!   hold, a replay of its creation is identical, and releasing it returns
//!   exactly the unused part.
//!
//! The moments of the kills come from a seed printed at the start; set
//! `BATON_CRASH_SEED` to replay a run.
#![cfg(feature = "server")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use baton::{Caveat, Unit, UnverifiedToken};
use common::{Rng, Server, WorkDir};
use serde_json::{Value, json};

const CLIENTS: usize = 16;
const KILLS: usize = 4;
/// Longer than the test runs, so no hold expires under it.
const TTL_MS: u64 = 300_000;
/// How long one request may go unanswered, retries included, before the
/// test gives up: a restart takes well under a second.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// A token that spends, with the block ids of its chain (authority first).
struct Spender {
    name: &'static str,
    auth: String,
    chain: Vec<String>,
}

fn spender(name: &'static str, t: &UnverifiedToken) -> Spender {
    Spender {
        name,
        auth: format!("Bearer {}", t.to_text()),
        chain: t.block_ids().iter().map(|b| b.to_string()).collect(),
    }
}

/// What a client was told, for one request that got a final answer.
#[derive(Debug, Clone)]
struct Answered {
    client: usize,
    spender: usize,
    path: String,
    body: Value,
    status: u16,
    text: String,
    /// Attempts before the answer: more than one means it crossed a crash.
    attempts: u32,
}

/// A reservation a client was given, and what its commit was acknowledged as.
#[derive(Debug, Clone)]
struct Granted {
    spender: usize,
    amount: u64,
    charged: u64,
}

/// A client's answered requests and the reservations it was granted.
type ClientLog = (Vec<Answered>, Vec<(String, Granted)>);

/// State shared by the clients and the killer.
struct Shared {
    url: RwLock<String>,
    stop: AtomicBool,
    /// Acknowledged commits and spends.
    acked: AtomicU64,
    /// 402 answers: budget ran out somewhere.
    refused: AtomicU64,
    /// Clients that have been refused three times in a row: their budget is spent.
    exhausted: AtomicU64,
}

/// Sends until the server gives a final answer. Connection failures, 503
/// (store unavailable, overloaded) and 408 are retried with the same body,
/// hence the same idempotency key, against whichever server is current.
async fn call(
    http: &reqwest::Client,
    shared: &Shared,
    method: reqwest::Method,
    path: &str,
    auth: &str,
    body: Option<&Value>,
) -> (u16, String, u32) {
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let url = format!("{}{path}", shared.url.read().expect("url lock").as_str());
        let mut req = http
            .request(method.clone(), &url)
            .header("authorization", auth);
        if let Some(b) = body {
            req = req.json(b);
        }
        let outcome = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.text().await {
                    Ok(text) if !matches!(status, 408 | 503) => return (status, text, attempts),
                    Ok(text) => format!("{status} {text}"),
                    Err(e) => format!("reading the body: {e}"),
                }
            }
            Err(e) => format!("{e}"),
        };
        assert!(
            started.elapsed() < ANSWER_WITHIN,
            "{method} {path} {body:?}: no answer after {attempts} attempts; last: {outcome}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// Counts a 402. The third in a row marks the client's budget as spent,
/// once per client: a smaller amount may still fit afterwards.
fn refused(shared: &Shared, in_a_row: &mut u32) {
    shared.refused.fetch_add(1, Ordering::SeqCst);
    *in_a_row += 1;
    if *in_a_row == 3 {
        shared.exhausted.fetch_add(1, Ordering::SeqCst);
    }
}

/// A grant breaks a run of refusals, unless the client already counted as spent.
fn granted_once_more(in_a_row: &mut u32) {
    if *in_a_row < 3 {
        *in_a_row = 0;
    }
}

/// One client: reserve + commit, and every fourth operation a spend, until
/// told to stop. It stops only between operations, so every request it
/// sent has its final answer.
async fn client(
    id: usize,
    http: reqwest::Client,
    shared: Arc<Shared>,
    spenders: Arc<Vec<Spender>>,
    seed: u64,
) -> ClientLog {
    let mut rng = Rng(seed | 1);
    // Six of the sixteen clients spend through parent2, the others share
    // parent's four children and the grandchild: both branches run dry.
    let who = if id < 10 { id % 5 } else { 5 };
    let auth = spenders[who].auth.as_str();
    let mut answered = Vec::new();
    let mut granted = Vec::new();
    let mut n = 0u64;
    let mut in_a_row = 0u32;
    while !shared.stop.load(Ordering::SeqCst) {
        n += 1;
        let amount = 1 + rng.below(5);
        let actual = amount - rng.below(amount / 2 + 1);
        let key = format!("crash-{id}-{n}");
        let context = |a: &Answered| {
            format!(
                "client {id} ({}), {} {}: {} {}",
                spenders[who].name, a.path, a.body, a.status, a.text
            )
        };
        let post = reqwest::Method::POST;
        if n.is_multiple_of(4) {
            let body = json!({ "action": "tool.run", "unit": "calls", "amount": amount, "actual": actual, "idempotency_key": format!("{key}-s"), "ttl_ms": TTL_MS });
            let (status, text, attempts) =
                call(&http, &shared, post, "/v1/spend", auth, Some(&body)).await;
            let a = Answered {
                client: id,
                spender: who,
                path: "/v1/spend".into(),
                body,
                status,
                text,
                attempts,
            };
            match status {
                201 => {
                    granted_once_more(&mut in_a_row);
                    let v = parse(&a.text);
                    let r = &v["reservation"];
                    assert_eq!(r["state"], "committed", "{}", context(&a));
                    assert_eq!(r["charged"], actual, "{}", context(&a));
                    let rid = r["id"].as_str().expect("a reservation id").to_owned();
                    granted.push((
                        rid,
                        Granted {
                            spender: who,
                            amount,
                            charged: actual,
                        },
                    ));
                    shared.acked.fetch_add(1, Ordering::SeqCst);
                    answered.push(a);
                }
                402 => refused(&shared, &mut in_a_row),
                _ => panic!("unexpected answer to a spend: {}", context(&a)),
            }
            continue;
        }
        let body = json!({ "action": "tool.run", "unit": "calls", "amount": amount, "idempotency_key": format!("{key}-r"), "ttl_ms": TTL_MS });
        let (status, text, attempts) = call(
            &http,
            &shared,
            post.clone(),
            "/v1/reservations",
            auth,
            Some(&body),
        )
        .await;
        let a = Answered {
            client: id,
            spender: who,
            path: "/v1/reservations".into(),
            body,
            status,
            text,
            attempts,
        };
        match status {
            201 => granted_once_more(&mut in_a_row),
            402 => {
                refused(&shared, &mut in_a_row);
                continue;
            }
            _ => panic!("unexpected answer to a reserve: {}", context(&a)),
        }
        let v = parse(&a.text);
        assert_eq!(v["reservation"]["state"], "active", "{}", context(&a));
        let rid = v["reservation"]["id"]
            .as_str()
            .expect("a reservation id")
            .to_owned();
        answered.push(a);
        let path = format!("/v1/reservations/{rid}/commit");
        let body = json!({ "actual": actual, "idempotency_key": format!("{key}-c") });
        let (status, text, attempts) = call(&http, &shared, post, &path, auth, Some(&body)).await;
        let a = Answered {
            client: id,
            spender: who,
            path,
            body,
            status,
            text,
            attempts,
        };
        // A commit within the hold cannot be refused; after a crash its
        // retry must find either the hold or the recorded answer.
        assert_eq!(status, 200, "{}", context(&a));
        let v = parse(&a.text);
        assert_eq!(v["reservation"]["state"], "committed", "{}", context(&a));
        assert_eq!(v["reservation"]["charged"], actual, "{}", context(&a));
        granted.push((
            rid,
            Granted {
                spender: who,
                amount,
                charged: actual,
            },
        ));
        shared.acked.fetch_add(1, Ordering::SeqCst);
        answered.push(a);
    }
    (answered, granted)
}

/// Waits until `done` holds, a client task ends early (it panicked), or
/// `within` passes. Returns whether `done` held.
async fn wait_for(
    tasks: &[tokio::task::JoinHandle<ClientLog>],
    within: Duration,
    done: impl Fn() -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        if tasks.iter().any(|t| t.is_finished()) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_spend_survives_kill_9_and_retries_apply_once() {
    let began = Instant::now();
    let seed = std::env::var("BATON_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("crash test seed: {seed} (BATON_CRASH_SEED={seed} replays it)");
    let mut rng = Rng(seed | 1);

    // Declared before the server, so dropped after it: a server left
    // running by a failed assertion is killed before the directory is kept.
    let mut work = WorkDir::new("crash");
    let data = work.path.join("data");
    let logs = work.path.clone();
    let mut starts = 0usize;
    let mut start = || {
        starts += 1;
        let log = logs.join(format!("server-{starts}.log"));
        tokio::task::block_in_place(|| {
            Server::spawn(&["--data".to_owned(), data.display().to_string()], &log)
        })
    };
    let mut server = Some(start());

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    let shared = Arc::new(Shared {
        url: RwLock::new(server.as_ref().expect("started").url.clone()),
        stop: AtomicBool::new(false),
        acked: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        exhausted: AtomicU64::new(0),
    });

    // The tree: root 4000 → parent 2000 → four children of 800, one with a
    // grandchild of 300; and parent2 3500 beside parent, so the root's
    // ceiling binds too (2000 + 3500 > 4000).
    let admin = std::fs::read_to_string(data.join("admin.token")).expect("admin token");
    let (status, text, _) = call(
        &http,
        &shared,
        reqwest::Method::POST,
        "/v1/tokens",
        &format!("Bearer {}", admin.trim()),
        Some(&json!({ "budgets": [{ "unit": "calls", "ceiling": 4_000 }], "tools": ["tool.*"], "depth": 5 })),
    )
    .await;
    assert_eq!(status, 201, "minting the root: {text}");
    let root = UnverifiedToken::from_text(parse(&text)["token"].as_str().expect("a token"))
        .expect("the minted root parses");
    let budget = |t: &UnverifiedToken, ceiling| {
        t.attenuate(vec![Caveat::budget(Unit::Calls, ceiling)])
            .expect("attenuate")
    };
    let parent = budget(&root, 2_000);
    let parent2 = budget(&root, 3_500);
    let kids: Vec<UnverifiedToken> = (0..4).map(|_| budget(&parent, 800)).collect();
    let grandchild = budget(&kids[0], 300);
    let names = ["child0", "child1", "child2", "child3"];
    let mut spenders: Vec<Spender> = kids
        .iter()
        .zip(names)
        .map(|(k, name)| spender(name, k))
        .collect();
    spenders.push(spender("grandchild", &grandchild));
    spenders.push(spender("parent2", &parent2));
    let spenders = Arc::new(spenders);
    let viewers = [spender("root", &root), spender("parent", &parent)];

    // The parent carves 500 for child1, before any kill: child1's spends
    // draw from it, then (overflow shared) from the pool like the others.
    const ALLOCATED: u64 = 500;
    let allocate = json!({ "child_token": kids[1].to_text(), "unit": "calls", "amount": ALLOCATED,
                           "overflow": "shared", "ttl_ms": 86_400_000, "idempotency_key": "crash-alloc" });
    let (status, alloc_text, _) = call(
        &http,
        &shared,
        reqwest::Method::POST,
        "/v1/allocations",
        &viewers[1].auth,
        Some(&allocate),
    )
    .await;
    assert_eq!(status, 201, "allocating to child1: {alloc_text}");
    let alloc_id = parse(&alloc_text)["allocation"]["id"]
        .as_str()
        .expect("an allocation id")
        .to_owned();
    // And 100 for a fifth child that never spends: it must come through
    // every kill whole, held at the parent and the root all along.
    const IDLE: u64 = 100;
    let idle_child = budget(&parent, 200);
    let (status, text, _) = call(
        &http,
        &shared,
        reqwest::Method::POST,
        "/v1/allocations",
        &viewers[1].auth,
        Some(
            &json!({ "child_token": idle_child.to_text(), "unit": "calls", "amount": IDLE,
                      "ttl_ms": 86_400_000, "idempotency_key": "crash-idle" }),
        ),
    )
    .await;
    assert_eq!(status, 201, "allocating to the idle child: {text}");
    let idle_id = parse(&text)["allocation"]["id"]
        .as_str()
        .expect("an allocation id")
        .to_owned();

    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(client(
                i,
                http.clone(),
                shared.clone(),
                spenders.clone(),
                rng.next(),
            ))
        })
        .collect();

    // Kill at arbitrary points: after a random number of new acknowledged
    // commits, plus a few milliseconds so requests are in flight; the last
    // time once budget has started to run out.
    let mut log = Vec::new();
    for kill in 0..KILLS {
        let last = kill + 1 == KILLS;
        let target = shared.acked.load(Ordering::SeqCst) + 30 + rng.below(150);
        let reached = wait_for(&tasks, Duration::from_secs(15), || {
            if last {
                shared.refused.load(Ordering::SeqCst) > 0
            } else {
                shared.acked.load(Ordering::SeqCst) >= target
            }
        })
        .await;
        if tasks.iter().any(|t| t.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(15))).await;
        let acked = shared.acked.load(Ordering::SeqCst);
        server.take().expect("a running server").kill_9();
        log.push(format!(
            "kill {}: {acked} acknowledged, {} refused{}",
            kill + 1,
            shared.refused.load(Ordering::SeqCst),
            if reached { "" } else { " (waited out)" }
        ));
        let next = start();
        *shared.url.write().expect("url lock") = next.url.clone();
        server = Some(next);
    }

    // After the last restart: work on until every client's budget is spent
    // or fifteen seconds pass.
    wait_for(&tasks, Duration::from_secs(15), || {
        shared.exhausted.load(Ordering::SeqCst) == CLIENTS as u64
    })
    .await;
    shared.stop.store(true, Ordering::SeqCst);
    let mut answered = Vec::new();
    let mut granted: HashMap<String, Granted> = HashMap::new();
    for t in tasks {
        let (a, g) = t.await.expect("a client failed (see its panic above)");
        answered.extend(a);
        for (rid, grant) in g {
            let dup = granted.insert(rid.clone(), grant);
            assert!(dup.is_none(), "reservation id {rid} was handed out twice");
        }
    }
    let crossed = answered.iter().filter(|a| a.attempts > 1).count();
    eprintln!(
        "crash test: {} kills, {} reservations granted, {} refused (402), {} answers crossed a crash; {}",
        log.len(),
        granted.len(),
        shared.refused.load(Ordering::SeqCst),
        crossed,
        log.join("; ")
    );
    assert_eq!(log.len(), KILLS, "every kill happened");
    assert!(
        granted.len() > 100,
        "too little work to mean anything: {} reservations",
        granted.len()
    );

    let get = reqwest::Method::GET;

    // The allocation survived every kill, consistent with the spends.
    let (status, text, _) = call(
        &http,
        &shared,
        get.clone(),
        &format!("/v1/allocations/{alloc_id}"),
        &viewers[1].auth,
        None,
    )
    .await;
    assert_eq!(status, 200, "GET allocation: {text}");
    let a = parse(&text)["allocation"].clone();
    let field = |f: &str| a[f].as_u64().unwrap_or_else(|| panic!("{f} in {a}"));
    assert_eq!(a["state"], "active", "{a}");
    assert_eq!(field("drawn"), 0, "no hold is active: {a}");
    assert_eq!(field("charged") + field("unused"), ALLOCATED, "{a}");
    let child1_charged: u64 = granted
        .values()
        .filter(|g| g.spender == 1)
        .map(|g| g.charged)
        .sum();
    assert!(
        field("charged") <= child1_charged,
        "{a}: child1 charged {child1_charged}"
    );
    let unused = field("unused");
    let (status, text, _) = call(
        &http,
        &shared,
        reqwest::Method::POST,
        "/v1/allocations",
        &viewers[1].auth,
        Some(&allocate),
    )
    .await;
    assert_eq!(
        (status, &text),
        (201, &alloc_text),
        "replay of the allocation"
    );

    // Every granted reservation is there, committed, charged as acknowledged.
    for (rid, g) in &granted {
        let (status, text, _) = call(
            &http,
            &shared,
            get.clone(),
            &format!("/v1/reservations/{rid}"),
            &spenders[g.spender].auth,
            None,
        )
        .await;
        assert_eq!(status, 200, "GET reservation {rid} ({g:?}): {text}");
        let r = &parse(&text)["reservation"];
        assert_eq!(r["state"], "committed", "{rid} ({g:?}): {text}");
        assert_eq!(r["charged"], g.charged, "{rid} ({g:?}): {text}");
        assert_eq!(r["amount"], g.amount, "{rid} ({g:?}): {text}");
    }

    // Replays get the identical answer and change nothing (checked by the
    // balances below, which must still match the charges exactly).
    for a in &answered {
        let (status, text, _) = call(
            &http,
            &shared,
            reqwest::Method::POST,
            &a.path,
            &spenders[a.spender].auth,
            Some(&a.body),
        )
        .await;
        assert_eq!(
            (status, &text),
            (a.status, &a.text),
            "replay of client {}'s {} {} (first answered after {} attempts)",
            a.client,
            a.path,
            a.body,
            a.attempts
        );
    }

    // What every scope must show: the charges of everything beneath it.
    let mut expected: HashMap<&str, u64> = HashMap::new();
    for g in granted.values() {
        for block in &spenders[g.spender].chain {
            *expected.entry(block.as_str()).or_default() += g.charged;
        }
    }
    let mut seen: BTreeMap<String, (String, u64, u64)> = BTreeMap::new();
    for s in spenders.iter().chain(&viewers) {
        let (status, text, _) =
            call(&http, &shared, get.clone(), "/v1/balances", &s.auth, None).await;
        assert_eq!(status, 200, "balances of {}: {text}", s.name);
        let scopes = parse(&text)["scopes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            scopes.len(),
            s.chain.len(),
            "{}: one scope per block: {text}",
            s.name
        );
        // Nearest first.
        for (scope, block) in scopes.iter().zip(s.chain.iter().rev()) {
            let n = |f: &str| {
                scope[f]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{}: {f} in {scope}", s.name))
            };
            let (ceiling, spent, held, remaining) =
                (n("ceiling"), n("spent"), n("held"), n("remaining"));
            assert_eq!(scope["block_id"], block.as_str(), "{}: {text}", s.name);
            assert!(
                spent + held <= ceiling,
                "{}: over the ceiling at {scope}",
                s.name
            );
            assert_eq!(remaining, ceiling - spent - held, "{}: {scope}", s.name);
            // At the parent and the root, the allocations' unused parts are
            // held; nothing else anywhere.
            let allocated = if kids[1].block_ids()[..2]
                .iter()
                .any(|b| b.to_string() == *block)
            {
                unused + IDLE
            } else {
                0
            };
            assert_eq!(n("allocated"), allocated, "{}: {scope}", s.name);
            assert_eq!(
                held, allocated,
                "{}: a hold nobody was given at {scope}",
                s.name
            );
            let want = expected.get(block.as_str()).copied().unwrap_or(0);
            assert_eq!(
                spent, want,
                "{}: spent at block {block} is not the sum of the acknowledged charges beneath it",
                s.name
            );
            seen.insert(block.clone(), (s.name.to_owned(), spent, ceiling));
        }
    }
    let spent_of = |t: &UnverifiedToken| {
        let id = t.block_ids().last().expect("a block").to_string();
        seen.get(&id).map(|(_, spent, _)| *spent).expect("seen")
    };
    let kids_spent: u64 = kids.iter().map(spent_of).sum();
    assert_eq!(spent_of(&parent), kids_spent, "parent = its children");
    assert_eq!(
        spent_of(&root),
        spent_of(&parent) + spent_of(&parent2),
        "root = parent + parent2"
    );
    assert!(
        spent_of(&grandchild) <= spent_of(&kids[0]),
        "a grandchild's spend is part of its parent's"
    );
    eprintln!(
        "crash test: spent/ceiling: root {}/4000, parent {}/2000, parent2 {}/3500, children {:?}/800, grandchild {}/300",
        spent_of(&root),
        spent_of(&parent),
        spent_of(&parent2),
        kids.iter().map(spent_of).collect::<Vec<_>>(),
        spent_of(&grandchild)
    );

    // Releasing returns exactly the unused part to the parent, once each.
    let parent_remaining = |text: &str| {
        parse(text)["scopes"][0]["remaining"]
            .as_u64()
            .expect("remaining")
    };
    let (_, before, _) = call(
        &http,
        &shared,
        get.clone(),
        "/v1/balances",
        &viewers[1].auth,
        None,
    )
    .await;
    let (status, text, _) = call(
        &http,
        &shared,
        reqwest::Method::POST,
        &format!("/v1/allocations/{alloc_id}/release"),
        &spenders[1].auth,
        Some(&json!({ "idempotency_key": "crash-release" })),
    )
    .await;
    assert_eq!(status, 200, "release: {text}");
    assert_eq!(parse(&text)["allocation"]["returned"], unused, "{text}");
    let (status, text, _) = call(
        &http,
        &shared,
        reqwest::Method::POST,
        &format!("/v1/allocations/{idle_id}/release"),
        &viewers[1].auth,
        Some(&json!({ "idempotency_key": "crash-release-idle" })),
    )
    .await;
    assert_eq!(status, 200, "release: {text}");
    assert_eq!(parse(&text)["allocation"]["returned"], IDLE, "{text}");
    let (_, after, _) = call(
        &http,
        &shared,
        get.clone(),
        "/v1/balances",
        &viewers[1].auth,
        None,
    )
    .await;
    assert_eq!(
        parent_remaining(&after),
        parent_remaining(&before) + unused + IDLE
    );
    assert_eq!(parse(&after)["scopes"][0]["held"], 0, "{after}");
    eprintln!("crash test: allocation {ALLOCATED}: {a}");

    server.take().expect("a running server").terminate();
    work.passed = true;
    eprintln!("crash test: done in {:.1} s", began.elapsed().as_secs_f64());
}
