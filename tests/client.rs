//! `baton::client` against a live in-process ledger: typed answers and
//! errors, and retries that keep one charge when an answer is lost.
#![cfg(all(feature = "server", feature = "client"))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use baton::client::{Action, Bearer, Client, ClientError, IdempotencyKey, Reserve, RetryPolicy};
use baton::ledger::ResState;
use baton::server::Service;
use baton::server::writer::{SystemClock, WriterConfig};
use baton::store::sqlite::SqliteStore;
use baton::{Caveat, Token, Unit};
use tokio::net::TcpListener;

/// A proxy that forwards to the ledger, but keeps the answer to the first
/// `lose` requests on `path` until long after the client gave up: the
/// ledger applied them, the client never heard.
struct Lossy {
    upstream: String,
    http: reqwest::Client,
    path: &'static str,
    lose: AtomicUsize,
    seen: Mutex<Vec<String>>,
}

async fn lossy(State(p): State<Arc<Lossy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    p.seen
        .lock()
        .unwrap()
        .push(format!("{} {path}", parts.method));
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let mut up = p
        .http
        .request(parts.method, format!("{}{}", p.upstream, parts.uri))
        .body(body);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(v) = parts.headers.get(&name) {
            up = up.header(name, v);
        }
    }
    let Ok(r) = up.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = r.status();
    let bytes = r.bytes().await.unwrap();
    if path == p.path
        && p.lose
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    (status, bytes).into_response()
}

struct Harness {
    ledger: String,
    proxy: Arc<Lossy>,
    proxy_url: String,
    token: Token,
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

async fn serve(app: Router) -> (String, tokio::sync::oneshot::Sender<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(l, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    (url, stop)
}

async fn start(path: &'static str, lose: usize) -> Harness {
    let service = Service::start(
        Box::new(SqliteStore::in_memory().unwrap()),
        Arc::new(SystemClock),
        WriterConfig::default(),
    )
    .unwrap();
    let token = service
        .mint(vec![
            Caveat::budget(Unit::Calls, 10),
            Caveat::tools(["tool.*"]).unwrap(),
        ])
        .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ledger = format!("http://{}", l.local_addr().unwrap());
    let (ledger_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(service.serve(l, async move {
        let _ = stopped.await;
    }));
    let proxy = Arc::new(Lossy {
        upstream: ledger.clone(),
        http: reqwest::Client::new(),
        path,
        lose: AtomicUsize::new(lose),
        seen: Mutex::new(Vec::new()),
    });
    let (proxy_url, proxy_stop) =
        serve(Router::new().fallback(lossy).with_state(Arc::clone(&proxy))).await;
    Harness {
        ledger,
        proxy,
        proxy_url,
        token,
        _stops: vec![ledger_stop, proxy_stop],
    }
}

fn impatient(url: &str, attempts: u32) -> Client {
    Client::builder(url)
        .timeout(Duration::from_millis(400))
        .retry(RetryPolicy::new(
            attempts,
            Duration::from_millis(20),
            Duration::from_millis(100),
        ))
        .build()
        .unwrap()
}

async fn spent(h: &Harness) -> u64 {
    let b = Client::new(&h.ledger)
        .unwrap()
        .balances(&Bearer::from(&h.token))
        .await
        .unwrap();
    assert_eq!(b[0].counters.held, 0);
    b[0].counters.spent
}

#[tokio::test]
async fn a_lost_answer_is_retried_under_the_same_key_and_charged_once() {
    let h = start("/v1/spend", 1).await;
    let client = impatient(&h.proxy_url, 3);
    let token = Bearer::from(&h.token);
    let spend = Reserve::new(Action::new("tool.run"), Unit::Calls, 3);
    let r = client
        .spend(&token, &spend, None)
        .await
        .expect("the retry gets the answer");
    assert_eq!((r.state, r.charged), (ResState::Committed, Some(3)));
    assert_eq!(
        *h.proxy.seen.lock().unwrap(),
        ["POST /v1/spend", "POST /v1/spend"],
        "sent twice"
    );
    assert_eq!(spent(&h).await, 3, "charged once");
}

#[tokio::test]
async fn without_retries_the_caller_can_replay_the_key_itself() {
    let h = start("/v1/reservations", 1).await;
    let client = impatient(&h.proxy_url, 1);
    let token = Bearer::from(&h.token);
    let key = IdempotencyKey::new("job-7").unwrap();
    let reserve = Reserve::new(Action::new("tool.run"), Unit::Calls, 4).key(&key);
    let lost = client.reserve(&token, &reserve).await.unwrap_err();
    assert!(matches!(lost, ClientError::Unreachable(_)), "{lost}");
    assert!(lost.is_unavailable());
    let hold = client.reserve(&token, &reserve).await.unwrap();
    assert_eq!(hold.state, ResState::Active);
    let done = client
        .commit(&token, &hold.id, 2, &key.derive("commit").unwrap())
        .await
        .unwrap();
    assert_eq!(done.charged, Some(2));
    assert_eq!(spent(&h).await, 2, "one hold, one charge");
}

#[tokio::test]
async fn ledger_refusals_are_typed_with_the_spec_codes() {
    let h = start("/none", 0).await;
    let client = Client::new(&h.proxy_url).unwrap();
    let token = Bearer::from(&h.token);
    let too_much = Reserve::new(Action::new("tool.run"), Unit::Calls, 11);
    let e = client.reserve(&token, &too_much).await.unwrap_err();
    let api = e.api().expect("an API error");
    assert_eq!(
        (api.status, api.code.as_str()),
        (402, "insufficient_budget")
    );
    assert_eq!(api.remaining, Some(10));
    assert_eq!(api.scope.as_ref().map(|s| &s.unit), Some(&Unit::Calls));

    let denied = Reserve::new(Action::new("other.run"), Unit::Calls, 1);
    let e = client.reserve(&token, &denied).await.unwrap_err();
    assert_eq!(e.code(), "action_not_allowed");
    let e = client
        .balances(&Bearer::new("baton_v1_x".into()))
        .await
        .unwrap_err();
    assert_eq!(e.api().map(|a| a.status), Some(401));

    let hold = client
        .reserve(
            &token,
            &Reserve::new(Action::new("tool.run"), Unit::Calls, 2),
        )
        .await
        .unwrap();
    let got = client.reservation(&token, &hold.id).await.unwrap();
    assert_eq!(got, hold);
    let ext = client
        .extend(
            &token,
            &hold.id,
            Duration::from_secs(120),
            &IdempotencyKey::random().unwrap(),
        )
        .await
        .unwrap();
    assert!(ext.expires_at_ms >= hold.expires_at_ms);
    let rel = client
        .release(&token, &hold.id, &IdempotencyKey::random().unwrap())
        .await
        .unwrap();
    assert_eq!(rel.state, ResState::Released);
    let e = client
        .commit(&token, &hold.id, 1, &IdempotencyKey::random().unwrap())
        .await
        .unwrap_err();
    let api = e.api().unwrap();
    assert_eq!(
        (api.status, api.code.as_str(), api.state.as_deref()),
        (409, "reservation_finalized", Some("released"))
    );
    assert_eq!(spent(&h).await, 0);
    let keys = client.keyset().await.unwrap();
    assert_eq!(keys.iter().count(), 1);
    assert!(client.ready().await.unwrap());
}
