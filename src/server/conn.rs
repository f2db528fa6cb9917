//! Connections of `baton serve`: the accept loop and everything between the
//! socket and the router (spec/http.md §2.5).
//!
//! hyper parses HTTP/1.1; this module owns what a production server adds
//! around it:
//! * the connection cap: a slot of a semaphore is taken *before* `accept`;
//! * the header-read and idle timeouts ([`drive`]);
//! * the limits on the request target and the header section, checked
//!   before routing so they answer with the JSON error body ([`check_head`]);
//! * the request-smuggling rule: `Transfer-Encoding` is accepted only as a
//!   single `chunked` with no `Content-Length` beside it (RFC 9112 §6.3);
//! * JSON bodies on the answers hyper writes by itself, empty-bodied, for
//!   requests it cannot parse ([`canned_answer_at`]);
//! * graceful shutdown: stop accepting, let every connection finish its
//!   request, and cut what is left after the drain timeout.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Request, header};
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt as _;

use super::http::render::{Reply, error_reply};
use super::{MAX_HEADER_BYTES, MAX_HEADERS, MAX_URI_BYTES};

/// hyper's own ceiling on a request head (request line and headers). It is
/// set well above the service's limits so that an oversized request almost
/// always reaches [`check_head`], which answers with the reason; only a head
/// past this ceiling is refused by hyper itself (and still answered in JSON
/// by [`Io`], without the precise message).
const HYPER_MAX_HEAD_BYTES: usize = 2 * (MAX_URI_BYTES + MAX_HEADER_BYTES);

/// Per-connection settings of `baton serve` (spec/http.md §2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnLimits {
    /// Longest a client may take to send a complete request head: from the
    /// connection's acceptance for its first request, from the first byte
    /// for later ones. Past it the connection is closed without an answer.
    pub header_timeout: Duration,
    /// Longest a kept-alive connection may sit between requests (from the
    /// end of one answer to the first byte of the next) before it is closed.
    pub idle_timeout: Duration,
    /// Most connections open at once. At the cap the server stops accepting
    /// until one closes; the kernel's listen backlog queues the newcomers.
    pub max_connections: usize,
    /// Longest graceful shutdown waits for open connections to finish their
    /// requests before closing them.
    pub drain_timeout: Duration,
}

impl Default for ConnLimits {
    /// 10 s to send a head; 75 s idle keep-alive (longer than the 60 s idle
    /// timeout of common load balancers, so they, not we, close the pooled
    /// connections and never race a request against our close); 1000
    /// connections (under the common 1024 open-file soft limit, with room
    /// for the listener, the store and the runtime: the cap, not a failing
    /// `accept`, is what bites); 20 s drain (inside the usual 30 s a
    /// supervisor waits before killing).
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_connections: 1000,
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// What a connection is waiting for, for its timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// A request head, started at this instant.
    Head(Instant),
    /// The next request on a kept-alive connection, idle since this instant.
    Idle(Instant),
    /// The router's answer: the per-request timeout applies, not ours.
    Busy,
}

/// State one connection's task, its [`Io`] and its request service share.
struct Shared {
    /// Requests handed to the router and not yet answered.
    in_flight: AtomicUsize,
    /// Set once a request head on this connection broke the framing rule
    /// (see [`HeadScan`]); hyper hides the evidence from the router.
    bad_framing: AtomicBool,
    wait: Mutex<Wait>,
    /// Wakes the connection's task to re-arm its timer when `wait` moves
    /// to a new deadline.
    moved: Notify,
}

impl Shared {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            bad_framing: AtomicBool::new(false),
            // The first request's head is timed from the acceptance.
            wait: Mutex::new(Wait::Head(Instant::now())),
            moved: Notify::new(),
        }
    }

    fn wait(&self) -> std::sync::MutexGuard<'_, Wait> {
        // A plain value: a panic elsewhere cannot leave it half-written.
        self.wait.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes arrived: an idle connection starts a request head.
    fn on_bytes(&self) {
        let mut wait = self.wait();
        if let Wait::Idle(_) = *wait {
            *wait = Wait::Head(Instant::now());
            self.moved.notify_one();
        }
    }

    /// When the current wait ends, and whether it is the idle one.
    fn deadline(&self, limits: &ConnLimits) -> Option<(Instant, bool)> {
        match *self.wait() {
            Wait::Head(since) => Some((since + limits.header_timeout, false)),
            Wait::Idle(since) => Some((since + limits.idle_timeout, true)),
            Wait::Busy => None,
        }
    }
}

/// Counts a request as in flight until dropped.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        // No notification: the task re-reads the wait when its timer fires.
        *shared.wait() = Wait::Busy;
        Self(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            *self.0.wait() = Wait::Idle(Instant::now());
            self.0.moved.notify_one();
        }
    }
}

/// Accepts connections on `listener` and serves `app` on them until
/// `shutdown` completes, then drains (spec/http.md §2.5).
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut http = http1::Builder::new();
    http.max_header_size(HYPER_MAX_HEAD_BYTES)
        // Both timeouts are ours ([`drive`]).
        .header_read_timeout(None)
        // One flat buffer per write, so [`Io`] sees hyper's own answers whole.
        .writev(false);
    // At the cap we stop accepting rather than accept and answer 503: the
    // kernel's backlog holds a burst at no cost and serves it in order as
    // slots free, with no retry logic in the clients; a 503 would spend the
    // very file descriptor the cap protects, and answering before reading
    // the request risks a reset that loses the answer, while reading it
    // holds a slot for up to the header timeout. Sustained overload then
    // shows as connect latency and listen-queue overflows, which load
    // balancers watch; overload *within* the cap is still answered
    // `503 overloaded` by the router's load shedding.
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    'accept: loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break 'accept,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_closed) => break 'accept, // never closed; stop if it is
            },
        };
        let (stream, peer) = loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break 'accept,
                accepted = listener.accept() => match accepted {
                    Ok(s) => break s,
                    // The peer gave up while queued: nothing to do.
                    Err(e) if is_connection_error(&e) => continue,
                    // Out of file descriptors or the like: wait, do not spin.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; retrying in 1 s");
                        tokio::select! {
                            () = &mut shutdown => break 'accept,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                },
            }
        };
        while let Some(done) = conns.try_join_next() {
            log_join(done);
        }
        // Answers are written whole; Nagle's delay only ever adds latency.
        let _ = stream.set_nodelay(true);
        let shared = Arc::new(Shared::new());
        let io = TokioIo::new(Io::new(stream, shared.clone()));
        let conn = http.serve_connection(io, request_service(app.clone(), shared.clone()));
        let stopped = stopped.clone();
        conns.spawn(async move {
            let _slot = permit;
            drive(conn, shared, limits, stopped, peer).await;
        });
    }
    // Close the listening socket first: new clients are refused at once
    // instead of waiting in a backlog nobody will serve.
    drop(listener);
    let _ = stop.send(true);
    let drain = async {
        while let Some(done) = conns.join_next().await {
            log_join(done);
        }
    };
    if tokio::time::timeout(limits.drain_timeout, drain)
        .await
        .is_err()
    {
        tracing::warn!(
            open = conns.len(),
            "drain timeout; closing the remaining connections"
        );
        conns.shutdown().await;
    }
    Ok(())
}

/// Runs one connection to its end: the header and idle timeouts, and
/// graceful shutdown on `stopped`.
///
/// The timers live here rather than in hyper: hyper's header timer starts
/// whenever it waits for a head, so on a kept-alive connection it would
/// also cut idle connections, at the (short) header timeout.
async fn drive<C>(
    conn: C,
    shared: Arc<Shared>,
    limits: ConnLimits,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) where
    C: Future<Output = hyper::Result<()>> + GracefulConnection,
{
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    let result = loop {
        let deadline = shared.deadline(&limits);
        let timer = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = stopped.changed(), if !closing => {
                // Closes an idle connection now, a busy one after its answer.
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = shared.moved.notified() => {}
            () = timer => {
                if shared.deadline(&limits) != deadline {
                    continue; // the wait moved on meanwhile
                }
                match deadline {
                    Some((_, true)) if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    Some((_, true)) => {}
                    // A head not received in time: close without an answer.
                    _ => {
                        tracing::debug!(%peer, "request head not received within the header timeout");
                        return;
                    }
                }
            }
        }
    };
    if let Err(e) = result {
        // Client trouble (resets, bad requests): not a server fault.
        tracing::debug!(%peer, error = %e, "connection closed with an error");
    }
}

/// A hyper connection that can be asked to finish its request and close.
trait GracefulConnection {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S> GracefulConnection for http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::Connection::graceful_shutdown(self);
    }
}

fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(error = %e, "a connection task panicked");
    }
}

/// Errors of one queued connection, not of the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The service hyper calls for each request of one connection: the head
/// checks, then the router.
fn request_service(
    app: Router,
    shared: Arc<Shared>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response,
    Error = Infallible,
    Future: Send + 'static,
> {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let in_flight = InFlight::new(&shared);
        let checked = check_head(&req, shared.bad_framing.load(Ordering::Relaxed));
        let app = app.clone();
        async move {
            let _in_flight = in_flight;
            let response = match checked {
                Err(refused) => refuse(refused),
                Ok(()) => match app.oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                },
            };
            Ok(response)
        }
    })
}

/// The service's own limits on a request head and the framing rule, before
/// routing (spec/http.md §2.5). Each refusal closes the connection.
fn check_head<B>(req: &Request<B>, bad_framing: bool) -> Result<(), Reply> {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    if target > MAX_URI_BYTES {
        return Err(error_reply(
            414,
            "uri_too_long",
            "the request target exceeds 8 KiB",
            None,
        ));
    }
    let headers = req.headers();
    // Wire size: name, ": ", value, CRLF.
    let bytes: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return Err(error_reply(
            431,
            "headers_too_large",
            "the header section exceeds 32 KiB or 64 fields",
            None,
        ));
    }
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(first) = te.next() {
        // hyper drops a Content-Length sent beside Transfer-Encoding and
        // decodes the body as chunked; `bad_framing` (seen on the wire)
        // catches that case, the header checks the rest.
        let chunked_only = first
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked")
            && te.next().is_none()
            && !headers.contains_key(header::CONTENT_LENGTH);
        if bad_framing || !chunked_only {
            return Err(framing_reply());
        }
    }
    Ok(())
}

fn framing_reply() -> Reply {
    error_reply(
        400,
        "invalid_framing",
        "Transfer-Encoding must be exactly `chunked`, without Content-Length",
        None,
    )
}

/// The JSON error answer, closing the connection: whoever sent such a
/// request is not to be trusted with the next one on the same stream.
fn refuse(reply: Reply) -> Response {
    let mut response = axum::response::IntoResponse::into_response(reply);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The socket as hyper sees it. Reading, it marks the start of request
/// heads for the header timeout and watches them for the framing rule
/// ([`HeadScan`]); writing, it swaps hyper's empty-bodied automatic answers
/// for JSON ones.
struct Io {
    inner: TcpStream,
    shared: Arc<Shared>,
    scan: HeadScan,
    /// Our replacement for hyper's automatic answer, and how much of it is written.
    answer: Option<(Vec<u8>, usize)>,
}

impl Io {
    fn new(inner: TcpStream, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            shared,
            scan: HeadScan::default(),
            answer: None,
        }
    }

    /// Writes what is left of the replacement answer.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some((bytes, written)) = &mut self.answer {
            while *written < bytes.len() {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            this.shared.on_bytes();
            if this.scan.feed(new) {
                this.shared.bad_framing.store(true, Ordering::Relaxed);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.answer.is_some() {
            // After its automatic answer hyper only closes; swallow anything
            // else rather than send it after our replacement.
            ready!(this.poll_answer(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        match canned_answer_at(buf) {
            None => Pin::new(&mut this.inner).poll_write(cx, buf),
            // Whatever precedes it goes out first, as it is.
            Some(at) if at > 0 => Pin::new(&mut this.inner).poll_write(cx, &buf[..at]),
            Some(_) => {
                let bad_framing = this.shared.bad_framing.load(Ordering::Relaxed);
                this.answer = Some((json_answer(buf, bad_framing), 0));
                Poll::Ready(Ok(buf.len()))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_answer(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_answer(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Where hyper's automatic answer to an unparseable request starts in `buf`,
/// if `buf` ends with one.
///
/// hyper answers a request it cannot parse with a bare head (400, 414 or
/// 431, `content-length: 0`) and then closes, so that head is the last
/// thing written on the connection. None of the service's own answers can
/// be mistaken for it: every non-2xx answer of the router has a JSON body,
/// and no body contains a raw CR LF CR LF.
fn canned_answer_at(buf: &[u8]) -> Option<usize> {
    if !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let start = buf.windows(7).rposition(|w| w == b"HTTP/1.")?;
    let head = &buf[start..];
    let status = head.get(8..13)?;
    let empty = head
        .windows(21)
        .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
    let ends_once = head.windows(4).position(|w| w == b"\r\n\r\n") == Some(head.len() - 4);
    let canned = matches!(status, b" 400 " | b" 414 " | b" 431 ");
    (canned && empty && ends_once).then_some(start)
}

/// The JSON answer standing in for hyper's automatic `head`.
fn json_answer(head: &[u8], bad_framing: bool) -> Vec<u8> {
    let reply = match head.get(9..12) {
        Some(b"414") => error_reply(414, "uri_too_long", "the request target is too long", None),
        Some(b"431") => error_reply(
            431,
            "headers_too_large",
            "the request head is too large",
            None,
        ),
        _ if bad_framing => framing_reply(),
        _ => error_reply(
            400,
            "malformed_request",
            "the request line or a header field is not valid HTTP/1.1 \
             (e.g. a control character in a header value)",
            None,
        ),
    };
    let version = head.get(..8).unwrap_or(b"HTTP/1.1");
    let reason = axum::http::StatusCode::from_u16(reply.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = Vec::with_capacity(160 + reply.body.len());
    out.extend_from_slice(version);
    out.extend_from_slice(
        format!(
            " {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            reply.status,
            reply.body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(reply.body.as_bytes());
    out
}

/// Watches the bytes of a connection for request heads that break the
/// framing rule: `Transfer-Encoding` twice, other than exactly `chunked`, or
/// beside `Content-Length`. hyper accepts a head with both (it drops
/// Content-Length and decodes chunked, as RFC 9112 allows) and hides that
/// from the router, so the evidence is taken here, before hyper parses.
///
/// It does not know where bodies end, so it reads every line of the stream
/// as if it were a header line, and a blank line ends a "head". A head is
/// never missed: its lines are contiguous and end with a blank line, which
/// is all this needs. A body can only add false alarms, and only if it has
/// lines starting with those header names, which no JSON body does; an
/// alarm refuses later `Transfer-Encoding` requests of that connection.
#[derive(Default)]
struct HeadScan {
    /// The current line's first bytes: enough for the header names and a
    /// `chunked` value with a little whitespace.
    line: [u8; 32],
    len: usize,
    /// The current line is longer than `line`.
    long: bool,
    /// `Transfer-Encoding` lines in the current head.
    te: u32,
    /// Every one of them was exactly `chunked`.
    te_chunked: bool,
    /// A `Content-Length` line in the current head.
    cl: bool,
}

impl HeadScan {
    /// Takes the next bytes of the stream; true if a head ended that breaks
    /// the framing rule.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut bad = false;
        for &b in bytes {
            if b == b'\n' {
                bad |= self.end_line();
            } else if self.len < self.line.len() {
                self.line[self.len] = b;
                self.len += 1;
            } else {
                self.long = true;
            }
        }
        bad
    }

    fn end_line(&mut self) -> bool {
        let full = &self.line[..self.len];
        let line = full.strip_suffix(b"\r").unwrap_or(full);
        let mut bad = false;
        if line.is_empty() && !self.long {
            bad = self.te > 1 || (self.te == 1 && (self.cl || !self.te_chunked));
            self.te = 0;
            self.cl = false;
        } else if let Some(value) = strip_name(line, b"transfer-encoding:") {
            self.te_chunked = (self.te == 0 || self.te_chunked)
                && !self.long
                && value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            self.te += 1;
        } else if strip_name(line, b"content-length:").is_some() {
            self.cl = true;
        }
        self.len = 0;
        self.long = false;
        bad
    }
}

/// The rest of `line` after the header `name` (lower case, with its colon).
fn strip_name<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let head = line.get(..name.len())?;
    head.eq_ignore_ascii_case(name).then(|| &line[name.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> bool {
        let mut s = HeadScan::default();
        chunks.iter().fold(false, |bad, c| s.feed(c) | bad)
    }

    #[test]
    fn the_scan_flags_te_with_cl_in_either_order_and_split_reads() {
        assert!(scan(&[
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        assert!(scan(&[
            b"POST / HTTP/1.1\r\nTRANSFER-ENCODING: chunked\r\ncontent-le",
            b"ngth: 3\r",
            b"\n\r",
            b"\n0\r\n\r\n",
        ]));
        // Bare LF line ends, as httparse accepts them.
        assert!(scan(&[
            b"POST / HTTP/1.1\nTransfer-Encoding: chunked\nContent-Length: 3\n\n"
        ]));
    }

    #[test]
    fn the_scan_flags_te_other_than_a_single_chunked() {
        assert!(scan(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        ]));
        assert!(scan(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        let padded = format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: {}chunked\r\n\r\n",
            " ".repeat(60)
        );
        assert!(scan(&[padded.as_bytes()]));
    }

    #[test]
    fn the_scan_passes_plain_framing() {
        assert!(!scan(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding:  chunked \r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
            b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ]));
    }

    #[test]
    fn hyper_answers_are_recognised_only_at_the_end() {
        let canned = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n";
        assert_eq!(canned_answer_at(canned), Some(0));
        let ours = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        let both = [&ours[..], &canned[..]].concat();
        assert_eq!(canned_answer_at(&both), Some(ours.len()));
        assert_eq!(canned_answer_at(ours), None);
        let json_400 =
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}";
        assert_eq!(canned_answer_at(json_400), None);
        // Only hyper's error statuses qualify.
        let not_head = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(canned_answer_at(not_head), None);
    }

    #[test]
    fn the_json_answer_keeps_the_status_and_closes() {
        let out = json_answer(b"HTTP/1.1 431 Request Header Fields Too Large\r\n", false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(text.contains("\r\nconnection: close\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "headers_too_large");
        let out = json_answer(b"HTTP/1.1 400 Bad Request\r\n", true);
        assert!(String::from_utf8(out).unwrap().contains("invalid_framing"));
    }
}
