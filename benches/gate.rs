//! What `baton::tower`'s gate adds to a request, beside the verify floor
//! measured in the same run.
//!
//! Every figure drives an axum router in process (`oneshot`, no socket)
//! with `POST /tools/crm.read`, a bearer token of three blocks and a small
//! JSON body, on a current-thread runtime; nothing is charged (no ledger
//! round trip), so the figures are the gate's own work.
//!
//! * `gate/bare`: the handler alone, without the layer.
//! * `gate/layer/{cached,cold}`: the same router behind the gate, whose
//!   verifier has a verified-chain cache (`cached`: the token was seen
//!   before) or none (`cold`: every request checks every signature).
//! * `gate/floor/{cached,cold}`: `Verifier::verify_text` + `authorize` on
//!   the same token, called directly: what any gateway must do.
//!
//! Added cost of the layer = `layer/x` − `bare`; its overhead over the
//! verify floor = `layer/x` − `bare` − `floor/x`.

use std::hint::black_box;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::post;
use baton::client::{Client, KeyPolicy, KeySource};
use baton::server::Service;
use baton::server::writer::{SystemClock, WriterConfig};
use baton::store::sqlite::SqliteStore;
use baton::tower::{ActionSource, Gate, RequestView};
use baton::{Caveat, Unit, Verifier};
use criterion::{Criterion, criterion_group, criterion_main};
use tower::ServiceExt as _;

const BODY: &str = r#"{"resource":"customer:4821","args":{"limit":10}}"#;

async fn handler() -> &'static str {
    "ok"
}

fn request(token: &str) -> Request<Body> {
    Request::post("/tools/crm.read")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(BODY))
        .expect("a valid request")
}

fn action(req: &RequestView<'_>) -> Result<baton::client::Action, baton::tower::Rejection> {
    let name = req.parts.uri.path().trim_start_matches("/tools/");
    req.action_from_json(name)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let service = Service::start(
        Box::new(SqliteStore::in_memory().expect("store")),
        Arc::new(SystemClock),
        WriterConfig::default(),
    )
    .expect("service");
    let root = service
        .mint(vec![
            Caveat::budget(Unit::UsdMicrocents, 500 * 100_000_000),
            Caveat::tools(["crm.*", "refund.*"]).expect("patterns"),
            Caveat::resources(["customer:*"]).expect("patterns"),
        ])
        .expect("mint");
    let token = root
        .attenuate(vec![Caveat::tools(["crm.*"]).expect("patterns")])
        .and_then(|t| t.attenuate(vec![Caveat::tools(["crm.read"]).expect("patterns")]))
        .expect("attenuate")
        .to_text();
    let (ledger, _stop) = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(service.serve(l, async move {
            let _ = stopped.await;
        }));
        (url, stop)
    });
    let client = Client::new(&ledger).expect("client");
    let gated = |cache: bool| {
        let keys = rt
            .block_on(KeySource::start(
                client.clone(),
                KeyPolicy::default(),
                |k| {
                    let v = Verifier::new(k);
                    if cache { v.with_cache(1024) } else { v }
                },
            ))
            .expect("keys");
        let floor = keys.verifier().clone();
        let gate = Gate::new(keys, ActionSource::from_fn(action));
        let app = Router::new()
            .route("/tools/{name}", post(handler))
            .layer(gate.layer());
        (app, floor)
    };
    let bare = Router::new().route("/tools/{name}", post(handler));

    let mut g = c.benchmark_group("gate");
    g.bench_function("bare", |b| {
        b.iter(|| {
            let r = rt.block_on(bare.clone().oneshot(request(&token)));
            assert!(r.expect("infallible").status().is_success());
        })
    });
    for (name, cache) in [("cached", true), ("cold", false)] {
        let (app, floor) = gated(cache);
        g.bench_function(format!("layer/{name}"), |b| {
            b.iter(|| {
                let r = rt.block_on(app.clone().oneshot(request(&token)));
                assert!(r.expect("infallible").status().is_success());
            })
        });
        let now = baton::Request::now("crm.read")
            .and_then(|r| r.resource("customer:4821"))
            .and_then(|r| r.arg("limit", baton::ArgValue::Int(10)))
            .expect("request");
        g.bench_function(format!("floor/{name}"), |b| {
            b.iter(|| {
                let t = floor.verify_text(black_box(&token)).expect("verifies");
                floor.authorize(&t, black_box(&now)).expect("allowed")
            })
        });
        // The same floor inside a spawned task on the runtime, as the layer
        // runs it: separates the runtime's share from the layer's.
        g.bench_function(format!("floor_in_task/{name}"), |b| {
            b.iter(|| {
                let (f, t, n) = (floor.clone(), token.clone(), now.clone());
                rt.block_on(async move {
                    tokio::spawn(async move {
                        let v = f.verify_text(&t).expect("verifies");
                        f.authorize(&v, &n).expect("allowed").budgets.len()
                    })
                    .await
                    .expect("task")
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
