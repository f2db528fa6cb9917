//! Harness for tests that run `baton serve` processes: the real binary
//! started and killed, a work directory kept after a failure, a seeded
//! generator; and for PostgreSQL, the opt-in switch, a database of the
//! test's own that is dropped whatever happens, and a TCP proxy that can cut
//! the servers off their database and restore them.
//!
//! The tests run only when `BATON_TEST_POSTGRES` names a PostgreSQL server
//! whose user may create databases, e.g.
//! `BATON_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test`; without it
//! they print a note and pass, so `cargo test` needs no database.
// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod store;

/// The environment variable that turns the PostgreSQL tests on.
pub const POSTGRES_ENV: &str = "BATON_TEST_POSTGRES";

/// How long a server may take from spawn to its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The URL of `BATON_TEST_POSTGRES`, or `None` after printing why `test`
/// is skipped.
pub fn postgres_or_skip(test: &str) -> Option<String> {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
        _ => {
            eprintln!(
                "skipped {test}: set {POSTGRES_ENV}=postgres://postgres@127.0.0.1:5432/test to run it"
            );
            None
        }
    }
}

/// A `postgres://` URL taken apart just enough to point it at another
/// database or another address (the proxy); the query (`?sslmode=…`) is kept.
#[derive(Debug, Clone)]
pub struct PgUrl {
    scheme: String,
    userinfo: Option<String>,
    host: String,
    port: u16,
    database: String,
    query: Option<String>,
}

impl PgUrl {
    /// Parses `postgres[ql]://[user[:password]@]host[:port][/database][?query]`.
    /// Only what the tests need: no socket directories, no multiple hosts.
    pub fn parse(url: &str) -> PgUrl {
        let (scheme, rest) = url
            .split_once("://")
            .unwrap_or_else(|| panic!("{POSTGRES_ENV}: {url:?} is not a postgres:// URL"));
        assert!(
            matches!(scheme, "postgres" | "postgresql"),
            "{POSTGRES_ENV}: {url:?} is not a postgres:// URL"
        );
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q.to_owned())),
            None => (rest, None),
        };
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_owned()), h),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse()
                    .unwrap_or_else(|_| panic!("{POSTGRES_ENV}: bad port in {url:?}")),
            ),
            None => (hostport.to_owned(), 5432),
        };
        assert!(
            !host.is_empty(),
            "{POSTGRES_ENV}: {url:?} names no host (socket directories are not supported here)"
        );
        PgUrl {
            scheme: scheme.to_owned(),
            userinfo,
            host,
            port,
            database: if database.is_empty() {
                "postgres".to_owned()
            } else {
                database.to_owned()
            },
            query,
        }
    }

    /// The same URL with another database.
    pub fn with_database(&self, database: &str) -> PgUrl {
        PgUrl {
            database: database.to_owned(),
            ..self.clone()
        }
    }

    /// The same URL through another address (the cuttable proxy).
    pub fn via(&self, addr: SocketAddr) -> PgUrl {
        PgUrl {
            host: addr.ip().to_string(),
            port: addr.port(),
            ..self.clone()
        }
    }

    /// Where the database server listens, for the proxy to forward to.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn database(&self) -> &str {
        &self.database
    }
}

impl std::fmt::Display for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://", self.scheme)?;
        if let Some(u) = &self.userinfo {
            write!(f, "{u}@")?;
        }
        write!(f, "{}:{}/{}", self.host, self.port, self.database)?;
        if let Some(q) = &self.query {
            write!(f, "?{q}")?;
        }
        Ok(())
    }
}

/// Connects with tokio-postgres; the connection's driver runs on the
/// current runtime.
pub async fn pg_connect(url: &PgUrl) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&url.to_string(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A database of the test's own, created empty and dropped when the guard
/// is, also when the test fails (a panic unwinds through the guard). The
/// drop forces out the connections of servers still running or killed.
pub struct TestDb {
    /// The database of `BATON_TEST_POSTGRES`, used to create and drop this one.
    admin: PgUrl,
    /// This database, reached directly.
    pub url: PgUrl,
}

impl TestDb {
    /// Creates `baton_<test>_<pid>_<nanos>` (lower case, so it needs no quoting).
    pub async fn create(base: &str, test: &str) -> TestDb {
        let admin = PgUrl::parse(base);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("baton_{test}_{}_{nanos}", std::process::id());
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "test database names need no quoting: {name}"
        );
        let client = pg_connect(&admin).await;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        eprintln!("test database {name} created (dropped at the end)");
        TestDb {
            url: admin.with_database(&name),
            admin,
        }
    }

    pub fn name(&self) -> &str {
        self.url.database()
    }

    /// A client on this database.
    pub async fn connect(&self) -> tokio_postgres::Client {
        pg_connect(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // For a post-mortem of a failure: BATON_TEST_KEEP_DB=1 keeps the
        // database of a failed test (drop it by hand afterwards).
        if std::thread::panicking() && std::env::var_os("BATON_TEST_KEEP_DB").is_some() {
            eprintln!(
                "test database {} kept (BATON_TEST_KEEP_DB): {}",
                self.name(),
                self.url
            );
            return;
        }
        // Drop runs inside the test's runtime, where blocking on another
        // future is not allowed: a thread with a runtime of its own does it.
        let admin = self.admin.clone();
        let name = self.name().to_owned();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let (client, connection) =
                    tokio_postgres::connect(&admin.to_string(), tokio_postgres::NoTls)
                        .await
                        .map_err(|e| e.to_string())?;
                tokio::spawn(connection);
                // WITH (FORCE): PostgreSQL 13+; servers killed with -9 may
                // leave connections the database has not noticed yet.
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.name()),
            Err(_) => eprintln!("could not drop test database {}: panicked", self.name()),
        }
    }
}

/// One `baton serve` process. Dropping it kills the process if it still runs.
pub struct Server {
    child: Child,
    pub url: String,
    pub log: PathBuf,
    killed: bool,
}

impl Server {
    /// Spawns `baton serve --listen 127.0.0.1:0 ARGS…` with stderr to `log`
    /// and waits for its `listening on http://ADDR` line.
    pub fn spawn(args: &[String], log: &Path) -> Server {
        let log_file = std::fs::File::create(log).expect("create the server log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn baton serve");
        let stdout = child.stdout.take().expect("stdout is piped");
        // read_line blocks: a thread and a timeout keep a hung start from
        // hanging the test. The thread then drains stdout, so the server
        // never writes into a full or broken pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send(read);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut server = Server {
            child,
            url: String::new(),
            log: log.to_owned(),
            killed: false,
        };
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) => line,
            other => panic!(
                "baton serve did not report its address ({other:?}); log:\n{}",
                server.log_text()
            ),
        };
        match line.trim().strip_prefix("listening on ") {
            Some(url) => server.url = url.to_owned(),
            None => panic!(
                "unexpected first line from baton serve: {line:?}; log:\n{}",
                server.log_text()
            ),
        }
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no drain, no clean close of anything.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
        self.killed = true;
    }

    pub fn is_killed(&self) -> bool {
        self.killed
    }

    /// Whether the process is still running (it may have exited on its own).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then waits for the drain; panics on an unclean exit.
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed: {status}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.child.try_wait().expect("poll the server") {
                Some(exit) => {
                    assert!(
                        exit.success(),
                        "baton serve exited with {exit} after SIGTERM; log:\n{}",
                        self.log_text()
                    );
                    self.killed = true;
                    return;
                }
                None if Instant::now() > deadline => {
                    panic!("baton serve did not stop within 30 s of SIGTERM")
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// The server's log so far (its stderr).
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A small xorshift generator: a test's only randomness, from a seed the
/// test prints, so that a failing run can be replayed.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A temp directory for the servers' data and logs: removed after a pass,
/// kept (and named on stderr) after a failure.
pub struct WorkDir {
    pub path: PathBuf,
    pub passed: bool,
}

impl WorkDir {
    pub fn new(test: &str) -> WorkDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path =
            std::env::temp_dir().join(format!("baton-{test}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create the test directory");
        WorkDir {
            path,
            passed: false,
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.passed {
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            eprintln!("server data and logs kept in {}", self.path.display());
        }
    }
}

/// A TCP proxy on loopback in front of the database that the test can cut
/// (every open connection closed, new ones closed on accept) and restore.
/// Cutting here leaves the machine's database service alone.
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    accept: tokio::task::JoinHandle<()>,
}

struct ProxyState {
    open: AtomicBool,
    /// Bumped by every cut; each connection ends when it changes.
    cuts: tokio::sync::watch::Sender<u64>,
    live: AtomicUsize,
    accepted: AtomicUsize,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards each connection to `upstream`.
    pub async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let state = Arc::new(ProxyState {
            open: AtomicBool::new(true),
            cuts: tokio::sync::watch::Sender::new(0),
            live: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
        });
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                // Subscribe before looking at `open`: a cut after this
                // point is seen as a change, one before it as closed.
                let mut cut = shared.cuts.subscribe();
                if !shared.open.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let upstream = upstream.clone();
                let conn = shared.clone();
                tokio::spawn(async move {
                    conn.live.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {}
                        }
                    }
                    // Both sockets close here.
                    conn.live.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Proxy {
            addr,
            state,
            accept,
        }
    }

    /// Closes every open connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.state.open.store(false, Ordering::SeqCst);
        self.state.cuts.send_modify(|n| *n += 1);
    }

    /// Cuts, then waits until every forwarded connection is closed: from
    /// then on nothing reaches the database through the proxy.
    pub async fn cut_and_wait(&self) {
        self.cut();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.live() > 0 {
            assert!(
                Instant::now() < deadline,
                "{} proxied connections still open 5 s after the cut",
                self.live()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.state.open.store(true, Ordering::SeqCst);
    }

    /// Connections forwarding right now.
    pub fn live(&self) -> usize {
        self.state.live.load(Ordering::SeqCst)
    }

    /// Connections forwarded since the start.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// An HTTP client for loopback servers: no proxy from the environment, one
/// idle connection per client, a bounded wait per request.
pub fn http_client(clients: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(15))
        .build()
        .expect("HTTP client")
}

/// The status and body text of one request, or the transport error.
pub async fn request(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    auth: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, String), String> {
    let mut req = http.request(method, url);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.map_err(|e| format!("{e}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    Ok((status, text))
}

/// `GET /readyz`: `Some(true)` for 200, `Some(false)` for 503, `None` when
/// the server does not answer.
pub async fn ready(http: &reqwest::Client, server_url: &str) -> Option<bool> {
    match request(
        http,
        reqwest::Method::GET,
        &format!("{server_url}/readyz"),
        None,
        None,
    )
    .await
    {
        Ok((200, _)) => Some(true),
        Ok((503, _)) => Some(false),
        Ok((status, text)) => panic!("/readyz answered {status} {text}"),
        Err(_) => None,
    }
}

pub fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}
