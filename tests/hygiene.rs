//! Connection hygiene of `baton serve` over a real loopback socket, with raw
//! bytes (spec/http.md §2.5): timeouts, the connection cap, the limits on
//! the request head, the framing rule and graceful shutdown. Timeouts are
//! set short so the suite is fast; each wait is bounded.
#![cfg(feature = "server")]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use baton::server::writer::{ManualClock, WriterConfig};
use baton::server::{ConnLimits, Service};
use baton::store::sqlite::SqliteStore;
use baton::{Caveat, Token, Unit};
use serde_json::Value;

const T0: u64 = 1_800_000_000_000;
/// Allowance for scheduling on a busy machine, past a deadline.
const SLACK: Duration = Duration::from_millis(1500);

/// A service on its own runtime thread, serving 127.0.0.1:0.
struct Server {
    addr: SocketAddr,
    token: Token,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: mpsc::Receiver<std::io::Result<()>>,
}

fn limits(f: impl FnOnce(&mut ConnLimits)) -> ConnLimits {
    let mut l = ConnLimits::default();
    l.drain_timeout = Duration::from_secs(3);
    f(&mut l);
    l
}

impl Server {
    fn start(limits: ConnLimits) -> Self {
        let store = SqliteStore::in_memory().expect("in-memory store");
        let config = WriterConfig::default().grace_ms(1_000).max_batch(256);
        let service = Service::start(Box::new(store), Arc::new(ManualClock::new(T0)), config)
            .expect("service starts");
        let token = service
            .mint(vec![
                Caveat::budget(Unit::Calls, 10),
                Caveat::tools(["tool.*"]).unwrap(),
            ])
            .unwrap();
        let (addr_tx, addr_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let result = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                service
                    .serve_with(listener, limits, async move {
                        let _ = stopped.await;
                    })
                    .await
            });
            let _ = done_tx.send(result);
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server listening");
        Self {
            addr,
            token,
            stop: Some(stop),
            done,
        }
    }

    /// Asks for shutdown without waiting.
    fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for `serve_with` to return, at most `within`.
    fn wait_stopped(&self, within: Duration) -> std::io::Result<()> {
        self.done
            .recv_timeout(within)
            .expect("the server stops in time")
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// One request on a fresh connection; its answer.
    fn exchange(&self, raw: &[u8]) -> Answer {
        let mut s = self.connect();
        s.write_all(raw).unwrap();
        read_answer(&mut s)
    }

    fn balances(&self) -> Value {
        let raw = format!(
            "GET /v1/balances HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            self.token.to_text()
        );
        let a = self.exchange(raw.as_bytes());
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.begin_stop();
        let _ = self.done.recv_timeout(Duration::from_secs(10));
    }
}

struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        format!("{}{}", self.head, String::from_utf8_lossy(&self.body))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    /// The error code, after checking the answer is the JSON error body.
    fn code(&self) -> String {
        assert!(
            self.head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{}",
            self.text()
        );
        let v = self.json();
        assert!(v["error"]["message"].is_string(), "{v}");
        v["error"]["code"].as_str().unwrap_or("<none>").to_owned()
    }

    fn closes(&self) -> bool {
        self.head
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n")
    }
}

/// Reads one answer (head and a Content-Length body).
fn read_answer(s: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).expect("an answer in time");
        assert!(
            n > 0,
            "closed before an answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let status = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).expect("the body in time");
        assert!(n > 0, "closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    Answer { status, head, body }
}

/// Waits until the server closes `s`; how long that took.
fn closed_after(s: &mut TcpStream, since: Instant) -> Duration {
    let mut chunk = [0u8; 1024];
    match s.read(&mut chunk) {
        Ok(0) => since.elapsed(),
        Ok(n) => panic!(
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&chunk[..n])
        ),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => since.elapsed(),
        Err(e) => panic!("not closed in time: {e}"),
    }
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";

fn reserve(token: &Token, framing: &str, key: &str) -> Vec<u8> {
    let body = format!(
        r#"{{"action":"tool.run","unit":"calls","amount":2,"idempotency_key":"{key}","ttl_ms":60000}}"#
    );
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let framing = framing.replace("{len}", &chunked.len().to_string());
    format!(
        "POST /v1/reservations HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n{framing}\r\n{chunked}",
        token.to_text()
    )
    .into_bytes()
}

#[test]
fn a_half_sent_head_is_cut_at_the_header_timeout() {
    let timeout = Duration::from_millis(400);
    let server = Server::start(limits(|l| l.header_timeout = timeout));
    // First request: the clock runs from the connection's acceptance.
    let start = Instant::now();
    let mut s = server.connect();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    let took = closed_after(&mut s, start);
    assert!(
        took >= timeout - Duration::from_millis(50) && took < timeout + SLACK,
        "{took:?}"
    );
    // A later request on a kept-alive connection: from its first byte.
    let mut s = server.connect();
    s.write_all(HEALTHZ).unwrap();
    assert_eq!(read_answer(&mut s).status, 200);
    std::thread::sleep(Duration::from_millis(200)); // idle, not timed as a head
    let start = Instant::now();
    s.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let took = closed_after(&mut s, start);
    assert!(
        took >= timeout - Duration::from_millis(50) && took < timeout + SLACK,
        "{took:?}"
    );
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    // An idle timeout longer than the header timeout: the two are apart.
    let idle = Duration::from_millis(1200);
    let server = Server::start(limits(|l| {
        l.header_timeout = Duration::from_millis(300);
        l.idle_timeout = idle;
    }));
    let mut s = server.connect();
    s.write_all(HEALTHZ).unwrap();
    let a = read_answer(&mut s);
    assert_eq!(a.status, 200);
    assert!(!a.closes(), "{}", a.text());
    let took = closed_after(&mut s, Instant::now());
    assert!(
        took >= idle - Duration::from_millis(100) && took < idle + SLACK,
        "{took:?}"
    );
}

#[test]
fn at_the_connection_cap_a_newcomer_waits_for_a_free_slot() {
    let server = Server::start(limits(|l| l.max_connections = 2));
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = server.connect();
        s.write_all(HEALTHZ).unwrap();
        assert_eq!(read_answer(&mut s).status, 200);
        held.push(s);
    }
    // The kernel completes the handshake (backlog), but nobody serves it.
    let mut third = server.connect();
    third.write_all(HEALTHZ).unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let err = third.read(&mut byte).expect_err("not served at the cap");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    // A slot frees: the queued connection is served.
    drop(held.pop());
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(read_answer(&mut third).status, 200);
}

#[test]
fn an_overlong_target_is_414_in_json() {
    let server = Server::start(ConnLimits::default());
    let raw = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000));
    let a = server.exchange(raw.as_bytes());
    assert_eq!((a.status, a.code().as_str()), (414, "uri_too_long"));
    assert!(a.closes());
    // Just under the limit is routed as usual.
    let raw = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(8000));
    let a = server.exchange(raw.as_bytes());
    assert_eq!((a.status, a.code().as_str()), (404, "not_found"));
}

#[test]
fn oversized_headers_are_431_in_json() {
    let server = Server::start(ConnLimits::default());
    // Too many bytes, checked by the service.
    let raw = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(33 * 1024)
    );
    let a = server.exchange(raw.as_bytes());
    assert_eq!((a.status, a.code().as_str()), (431, "headers_too_large"));
    assert!(a.closes());
    // Too many fields, checked by the service (65) and by hyper (over 100):
    // both answer in JSON.
    for n in [65, 120] {
        let fields: String = (0..n).map(|i| format!("X-F{i}: v\r\n")).collect();
        let raw = format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{fields}\r\n");
        let a = server.exchange(raw.as_bytes());
        assert_eq!(
            (a.status, a.code().as_str()),
            (431, "headers_too_large"),
            "{n} fields"
        );
        assert!(a.closes());
    }
    // A large token's worth of header is fine.
    let raw = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(12 * 1024)
    );
    assert_eq!(server.exchange(raw.as_bytes()).status, 200);
}

#[test]
fn transfer_encoding_beside_content_length_is_refused_unprocessed() {
    let server = Server::start(ConnLimits::default());
    for (i, framing) in [
        "Content-Length: {len}\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: {len}\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        // Refused by hyper itself (chunked is not last); still our JSON.
        "Transfer-Encoding: gzip\r\nContent-Length: {len}\r\n",
    ]
    .into_iter()
    .enumerate()
    {
        let a = server.exchange(&reserve(&server.token, framing, &format!("k{i}")));
        assert_eq!(
            (a.status, a.code().as_str()),
            (400, "invalid_framing"),
            "{framing}"
        );
        assert!(a.closes(), "{framing}");
    }
    // None of the bodies was processed: nothing is held.
    let v = server.balances();
    assert_eq!(v["scopes"][0]["held"], 0, "{v}");
    // Plain chunked framing is accepted.
    let a = server.exchange(&reserve(
        &server.token,
        "Transfer-Encoding: chunked\r\n",
        "ok",
    ));
    assert_eq!(a.status, 201, "{}", a.text());
    assert_eq!(server.balances()["scopes"][0]["held"], 2);
}

#[test]
fn a_control_character_in_authorization_is_answered_in_json() {
    let server = Server::start(ConnLimits::default());
    let a = server.exchange(
        b"GET /v1/balances HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer ab\x01cd\r\n\r\n",
    );
    // hyper refuses the head before any router code runs: the generic code.
    assert_eq!((a.status, a.code().as_str()), (400, "malformed_request"));
    assert!(a.closes());
    // A bare CR inside a value, likewise.
    let a = server.exchange(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n");
    assert_eq!((a.status, a.code().as_str()), (400, "malformed_request"));
}

#[test]
fn graceful_shutdown_drains_an_in_flight_request() {
    let mut server = Server::start(ConnLimits::default());
    let raw = reserve(&server.token, "Transfer-Encoding: chunked\r\n", "drain");
    // The head and half the body: the request is in the handler, reading.
    let (first, rest) = raw.split_at(raw.len() - 20);
    let mut s = server.connect();
    s.write_all(first).unwrap();
    // Ordering only (the handler has the request), not an assertion.
    std::thread::sleep(Duration::from_millis(200));
    server.begin_stop();
    std::thread::sleep(Duration::from_millis(200));
    // New connections are refused while the old ones drain.
    assert!(TcpStream::connect(server.addr).is_err());
    s.write_all(rest).unwrap();
    let a = read_answer(&mut s);
    assert_eq!(a.status, 201, "{}", a.text());
    assert!(a.closes(), "{}", a.text());
    server
        .wait_stopped(Duration::from_secs(5))
        .expect("clean stop");
}

#[test]
fn the_drain_timeout_bounds_shutdown() {
    let drain = Duration::from_millis(300);
    let mut server = Server::start(limits(|l| l.drain_timeout = drain));
    let raw = reserve(&server.token, "Transfer-Encoding: chunked\r\n", "stuck");
    let mut s = server.connect();
    // A body that never completes.
    s.write_all(&raw[..raw.len() - 20]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    server.begin_stop();
    server.wait_stopped(drain + SLACK).expect("clean stop");
    assert!(start.elapsed() >= drain - Duration::from_millis(50));
    closed_after(&mut s, start);
}
