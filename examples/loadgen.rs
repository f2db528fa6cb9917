//! Load generator for the spend ledger: concurrent reserve → commit pairs.
//!
//! ```text
//! cargo run --release --example loadgen -- [--clients 64] [--seconds 10] [--direct]
//! cargo run --release --example loadgen -- --url http://127.0.0.1:PORT \
//!     --admin-token-file DIR/admin.token [--clients 64] [--seconds 10]
//! cargo run --release --example loadgen -- --url http://HOST:PORT1 --url http://HOST:PORT2 \
//!     --admin-token-file DIR/admin.token [--clients 64] [--seconds 10]
//! cargo build --release && cargo run --release --example loadgen -- --spawn N \
//!     [--store postgres://USER@HOST/DB] [--baton-bin target/release/baton] \
//!     [--server-arg=--batch-size=1024 ...] [--clients 64] [--seconds 10]
//! cargo build --release && cargo run --release --example loadgen -- --soak \
//!     [--pairs 5000000 | --seconds 600] [--report-every 10] [--idle-secs 10] \
//!     [--baton-bin target/release/baton] [--data DIR [--reuse]] [--keep] \
//!     [--server-arg=--some-flag ...] [--json]
//! ```
//!
//! Without `--url` it opens a fresh data directory under the system temp
//! directory and serves it in this process (its own runtime, on
//! `127.0.0.1:0`), so one command measures client and server together. With
//! `--url` the server runs elsewhere, e.g. `baton serve` in another process.
//!
//! It mints a root token through the admin API, then builds the tree
//! locally, as holders do: a parent, `--children` siblings under it and a
//! grandchild under each child. Clients are spread over the children and
//! grandchildren, so every pair holds and charges three or four scopes and
//! every request contends on the parent's and the root's counters. Budgets
//! are far larger than a run can spend.
//!
//! Each client loops: reserve, then commit what it reserved, every request
//! with a fresh idempotency key. Nothing is counted during the warm-up
//! (connections open, caches fill). The report gives pairs per second,
//! p50/p99/max latency of a pair and of each call, errors by code, the number
//! of durable write groups (from `/metrics`) and the machine's CPU use.
//!
//! With several `--url`s (servers sharing one PostgreSQL store) the tree is
//! minted through the first and the clients are spread over all of them
//! round-robin: every pair still charges the same root and parent scopes,
//! so on PostgreSQL those two rows are hot for every server at once.
//!
//! `--spawn N` runs the servers itself, as separate `baton serve`
//! processes (`--baton-bin`, plus any `--server-arg`), each with a data
//! directory of its own under the system temp directory, started one after
//! the other and polled until `/readyz` answers; it reads the first one's
//! admin token and runs the same load over all of them. With `--store
//! postgres://…` they share that database, in a schema made for the run
//! (`loadgen_PID_NANOS`, passed as `--pg-schema`) and dropped at the end;
//! without it `--spawn 1` serves the embedded SQLite store. So the three
//! cases of issue 7's benchmark run side by side, each server in its own
//! process, with one command each (64 clients, 10 s measured):
//!
//! ```text
//! cargo build --release --examples && B=target/release/examples/loadgen
//! $B --spawn 1 --clients 64 --seconds 10                         # embedded SQLite, 1 server
//! $B --spawn 1 --clients 64 --seconds 10 \
//!     --store postgres://postgres@127.0.0.1:5432/test             # PostgreSQL, 1 server
//! $B --spawn 2 --clients 64 --seconds 10 \
//!     --store postgres://postgres@127.0.0.1:5432/test             # PostgreSQL, 2 servers, hot root
//! ```
//!
//! The PostgreSQL user must be allowed to create a schema in that
//! database. Run them one after the other in one sitting, on an otherwise
//! idle machine, and compare ratios as well as absolute figures: the
//! database shares the machine's cores with the servers and the clients.
//!
//! `--direct` also measures, without any socket:
//! * the in-memory [`baton::ledger::Ledger`]: reserve + commit + settle, one thread;
//! * token verification and authorization as a handler does it (cached verifier);
//! * the SQLite store alone: a durable transaction per group of pairs, at
//!   several group sizes (the fsync cost that group commit amortises);
//! * the whole service through its router ([`baton::server::Service::router`])
//!   with `tower::ServiceExt::oneshot`: every handler, the writer thread
//!   and the durable store, but no TCP and no HTTP/1 framing. The writer's
//!   queue is not public, so this is the closest public way to submit ledger
//!   operations without HTTP.
//!
//! `--soak` checks what must not grow with history, from outside the server
//! as an operator sees it: RSS, disk per pair, idle CPU, shutdown and
//! restart time. It runs `baton serve --data DIR --listen 127.0.0.1:0`
//! (plus any `--server-arg`) as a child process, reads its `listening on`
//! line and `DIR/admin.token`, builds the same token tree and drives the same
//! client loop until `--pairs` pairs completed (in-flight pairs finish, so a
//! few more) or `--seconds` passed. Every `--report-every` seconds it prints
//! one line: elapsed, pairs, pairs/s and p50/p99 pair latency over the
//! interval, the server's RSS (`VmRSS`), the data directory's size (regular
//! files, recursively), bytes per pair so far, the server's CPU over the
//! interval and errors by code so far. Then, without load: the server's CPU
//! over `--idle-secs` (utime + stime from `/proc/PID/stat`) in ms per second;
//! SIGTERM and the time to a clean exit; a restart on the same directory and
//! the time from spawn to `GET /readyz` answering 200 (polled every 5 ms);
//! its RSS then; SIGTERM again. The summary gives overall pairs/s, final and
//! peak (`VmHWM`) RSS, RSS growth from the first report after `--warmup-ms`
//! to the last (absolute and per million pairs: "flat" means near 0), disk
//! per pair at the end of the load and after the clean stop, and the idle,
//! stop and restart figures; `--json` adds them, with every report line, as
//! one JSON object on the last line. A server that dies, fails to start or
//! exits uncleanly ends the run with its last log lines and a non-zero exit
//! status; the child is killed on every error path. Linux only (`/proc`).
//! Without `--data` the directory is a fresh one under the system temp
//! directory, removed at the end unless `--keep`; a non-empty `--data` is
//! refused unless `--reuse`.

#[cfg(not(feature = "server"))]
fn main() -> std::process::ExitCode {
    eprintln!("the load generator needs the server feature (on by default)");
    std::process::ExitCode::FAILURE
}

#[cfg(feature = "server")]
fn main() -> std::process::ExitCode {
    use clap::Parser as _;
    let args = imp::Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the client runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(imp::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "server")]
mod imp {
    use std::collections::BTreeMap;
    use std::error::Error;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use baton::ledger::{Command, IdemKey, Ledger, Operation, Outcome, ResId, ReserveRequest};
    use baton::server::Service;
    use baton::server::writer::{SystemClock, WriterConfig};
    use baton::store::Store as _;
    use baton::store::sqlite::SqliteStore;
    use baton::{Caveat, Keyset, Request, RootKey, Token, Unit, UnverifiedToken, Verifier};
    use serde_json::{Value, json};

    type BoxError = Box<dyn Error + Send + Sync>;

    /// Command-line options.
    #[derive(clap::Parser, Debug)]
    #[command(about = "Load generator for the baton spend ledger")]
    pub struct Args {
        /// Base URL of a running `baton serve`; without it, a server is
        /// started in-process. Repeat it for several servers on one shared
        /// store: clients are spread over them round-robin.
        #[arg(long, conflicts_with = "spawn")]
        url: Vec<String>,
        /// The admin token file of the servers at --url (DIR/admin.token).
        #[arg(long, requires = "url")]
        admin_token_file: Option<PathBuf>,
        /// Run this many `baton serve` processes (--baton-bin) and spread
        /// the clients over them round-robin. More than one needs --store.
        #[arg(long, value_name = "N", conflicts_with = "soak")]
        spawn: Option<usize>,
        /// With --spawn: the servers' shared PostgreSQL store
        /// (`postgres://…`); each run uses a fresh schema, dropped at the
        /// end. Without it, --spawn 1 runs on the embedded SQLite store.
        #[arg(long, requires = "spawn", value_name = "postgres://...")]
        store: Option<String>,
        /// Concurrent clients, each with one request in flight.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Measured duration, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Unmeasured warm-up before it, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        warmup_ms: u64,
        /// Sibling tokens under the parent (each with one grandchild).
        #[arg(long, default_value_t = 8)]
        children: usize,
        /// Also measure the ledger, the store and the router without sockets.
        #[arg(long, conflicts_with = "soak")]
        direct: bool,
        /// Run the load twice, side by side on the same servers: on a tree
        /// without allocations, then on a fresh tree where the parent has
        /// allocated a guaranteed sub-budget (overflow shared) to each child
        /// (spec/http.md §3.8).
        #[arg(long, conflicts_with = "soak")]
        allocations: bool,

        /// Soak: run `baton serve` as a child process and watch its RSS, disk,
        /// idle CPU, SIGTERM and restart time (see the module docs).
        #[arg(long, conflicts_with_all = ["url", "admin_token_file"])]
        soak: bool,
        /// Soak and --spawn: the `baton` binary to run.
        #[arg(long, default_value = "target/release/baton")]
        baton_bin: PathBuf,
        /// Soak: data directory [default: a fresh one under the system temp directory].
        #[arg(long, requires = "soak")]
        data: Option<PathBuf>,
        /// Soak: accept a non-empty --data directory (continue its history).
        #[arg(long, requires = "data")]
        reuse: bool,
        /// Soak: keep the default temp data directory instead of removing it.
        #[arg(long, requires = "soak")]
        keep: bool,
        /// Soak: stop after this many completed pairs; 0 = run for --seconds.
        #[arg(long, requires = "soak", default_value_t = 0)]
        pairs: u64,
        /// Soak: seconds between report lines.
        #[arg(long, requires = "soak", default_value_t = 10)]
        report_every: u64,
        /// Soak: seconds without load over which the server's idle CPU is measured.
        #[arg(long, requires = "soak", default_value_t = 10)]
        idle_secs: u64,
        /// Soak: print a final JSON object on the last line.
        #[arg(long, requires = "soak")]
        json: bool,
        /// Soak and --spawn: one extra argument for `baton serve`
        /// (repeatable), e.g. `--server-arg=--cache=100000`.
        #[arg(long = "server-arg", allow_hyphen_values = true)]
        server_args: Vec<String>,
    }

    /// Budgets far above what a run can spend: runs measure throughput, not 402s.
    const ROOT_CEILING: u64 = 1_000_000_000_000_000;
    const PARENT_CEILING: u64 = 100_000_000_000_000;
    const CHILD_CEILING: u64 = 10_000_000_000_000;
    const GRANDCHILD_CEILING: u64 = 1_000_000_000_000;

    /// Runs the HTTP load and, with `--direct`, the socket-free measurements.
    pub async fn run(args: Args) -> Result<(), BoxError> {
        if args.clients == 0 || args.children == 0 {
            return Err("--clients and --children must be at least 1".into());
        }
        if args.soak {
            return soak::run(&args).await;
        }
        if let Some(n) = args.spawn {
            return spawned::run(&args, n).await;
        }
        let mut local = None;
        let (urls, admin) = match (args.url.as_slice(), &args.admin_token_file) {
            ([], _) => {
                let server = LocalServer::start()?;
                let pair = (vec![server.url.clone()], server.admin.clone());
                local = Some(server);
                pair
            }
            (urls, Some(file)) => (
                urls.iter()
                    .map(|u| u.trim_end_matches('/').to_owned())
                    .collect(),
                read_token(file).map_err(|e| format!("{}: {e}", file.display()))?,
            ),
            (_, None) => return Err("--url needs --admin-token-file".into()),
        };
        let where_ = if local.is_some() {
            format!("server in-process at {}", urls[0])
        } else {
            format!("servers {}", urls.join(" "))
        };
        load(&args, &urls, &admin, &where_).await?;
        if let Some(server) = local {
            server.stop();
        }
        Ok(())
    }

    /// Mints the tree through the first server, then drives the HTTP load
    /// over all of them and prints the report; with `--direct`, the
    /// socket-free measurements follow.
    async fn load(args: &Args, urls: &[String], admin: &str, where_: &str) -> Result<(), BoxError> {
        let http = http_client(args.clients)?;
        if args.allocations {
            for allocate in [false, true] {
                let tokens = tree(&http, &urls[0], admin, args.children, allocate).await?;
                println!(
                    "baton loadgen: {} clients, {} s measured after {} ms warm-up, {where_}; \
                     {} children → 1 grandchild each, {}",
                    args.clients,
                    args.seconds,
                    args.warmup_ms,
                    args.children,
                    if allocate {
                        "WITH a per-child allocation (overflow shared)"
                    } else {
                        "without allocations"
                    }
                );
                http_load(&http, urls, &tokens, args).await?.print();
                println!();
            }
            return Ok(());
        }
        let tokens = tree(&http, &urls[0], admin, args.children, false).await?;
        println!(
            "baton loadgen: {} clients, {} s measured after {} ms warm-up, {where_}",
            args.clients, args.seconds, args.warmup_ms,
        );
        if urls.len() > 1 {
            println!(
                "clients spread round-robin over {} servers on one store",
                urls.len()
            );
        }
        println!(
            "tree: root → parent → {} children → 1 grandchild each; clients spread over all {} leaf tokens",
            args.children,
            tokens.len()
        );
        let report = http_load(&http, urls, &tokens, args).await?;
        report.print();

        if args.direct {
            println!();
            direct(args.clients, Duration::from_secs(args.seconds.clamp(1, 3))).await?;
        }
        Ok(())
    }

    fn http_client(clients: usize) -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            // One idle connection per client, so no request waits for a connect.
            .pool_max_idle_per_host(clients)
            // Loopback only: an HTTP_PROXY in the environment must not apply.
            .no_proxy()
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()
    }

    fn read_token(path: &Path) -> std::io::Result<String> {
        Ok(std::fs::read_to_string(path)?.trim().to_owned())
    }

    /// A fresh directory under the system temp directory.
    fn temp_dir(prefix: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()))
    }

    /// `baton serve` in this process, on its own runtime as the binary has it,
    /// so client tasks and handlers are scheduled independently.
    struct LocalServer {
        url: String,
        admin: String,
        dir: PathBuf,
        shutdown: tokio::sync::oneshot::Sender<()>,
        thread: std::thread::JoinHandle<()>,
    }

    impl LocalServer {
        fn start() -> Result<Self, BoxError> {
            let dir = temp_dir("baton-loadgen");
            let (service, admin_path) = baton::server::open(&dir, WriterConfig::default())?;
            let admin_path = admin_path.ok_or("a fresh data directory gave no admin token")?;
            let admin = read_token(&admin_path)?;
            // Bound here so the address is known at once; the server's own
            // runtime, built on its thread, takes the socket over.
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            let url = format!("http://{}", listener.local_addr()?);
            let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name("loadgen-server".into())
                .spawn(move || {
                    let served = tokio::runtime::Builder::new_multi_thread()
                        .enable_all()
                        .build()
                        .and_then(|runtime| {
                            runtime.block_on(async move {
                                let listener = tokio::net::TcpListener::from_std(listener)?;
                                service
                                    .serve(listener, async {
                                        let _ = stop.await;
                                    })
                                    .await
                            })
                        });
                    if let Err(e) = served {
                        eprintln!("in-process server: {e}");
                    }
                })?;
            Ok(Self {
                url,
                admin,
                dir,
                shutdown,
                thread,
            })
        }

        /// Drains, stops and removes the data directory.
        fn stop(self) {
            let _ = self.shutdown.send(());
            let _ = self.thread.join();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Sends one JSON request; the answer's status and body (`null` if not JSON).
    async fn send(
        http: &reqwest::Client,
        method: reqwest::Method,
        url: &str,
        auth: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut req = http.request(method, url).header("authorization", auth);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    fn error_code(status: u16, body: &Value) -> String {
        let code = body["error"]["code"].as_str().unwrap_or("?");
        format!("{status} {code}")
    }

    /// Mints the root through the admin API and attenuates locally. Returns
    /// the leaf tokens' `Authorization` header values: children, then grandchildren.
    async fn tree(
        http: &reqwest::Client,
        url: &str,
        admin: &str,
        children: usize,
        allocate: bool,
    ) -> Result<Vec<String>, BoxError> {
        let (status, body) = send(
            http,
            reqwest::Method::POST,
            &format!("{url}/v1/tokens"),
            &format!("Bearer {admin}"),
            Some(&json!({
                "budgets": [{ "unit": "calls", "ceiling": ROOT_CEILING }],
                "tools": ["tool.*"],
                "depth": 5,
            })),
        )
        .await?;
        let root = match (status, body["token"].as_str()) {
            (201, Some(t)) => UnverifiedToken::from_text(t)?,
            _ => return Err(format!("minting the root: {status} {body}").into()),
        };
        let parent = root.attenuate(vec![Caveat::budget(Unit::Calls, PARENT_CEILING)])?;
        let mut kids = Vec::with_capacity(children);
        for _ in 0..children {
            kids.push(parent.attenuate(vec![Caveat::budget(Unit::Calls, CHILD_CEILING)])?);
        }
        if allocate {
            // Half of each child's ceiling, far more than a run spends, so
            // every pair draws from its child's allocation.
            for (i, k) in kids.iter().enumerate() {
                let (status, body) = send(
                    http,
                    reqwest::Method::POST,
                    &format!("{url}/v1/allocations"),
                    &format!("Bearer {}", parent.to_text()),
                    Some(&json!({
                        "child_token": k.to_text(),
                        "unit": "calls",
                        "amount": CHILD_CEILING / 2,
                        "overflow": "shared",
                        "ttl_ms": 86_400_000,
                        "idempotency_key": format!("loadgen-alloc-{i}"),
                    })),
                )
                .await?;
                if status != 201 {
                    return Err(format!("allocating to child {i}: {status} {body}").into());
                }
            }
        }
        let mut leaves: Vec<String> = kids.iter().map(|k| k.to_text()).collect();
        for k in &kids {
            leaves.push(
                k.attenuate(vec![Caveat::budget(Unit::Calls, GRANDCHILD_CEILING)])?
                    .to_text(),
            );
        }
        Ok(leaves.into_iter().map(|t| format!("Bearer {t}")).collect())
    }

    /// What one client saw during the measured window.
    #[derive(Default)]
    struct ClientStats {
        pairs: u64,
        /// Latencies in microseconds.
        pair: Vec<u32>,
        reserve: Vec<u32>,
        commit: Vec<u32>,
        errors: BTreeMap<String, u64>,
    }

    impl ClientStats {
        /// Counts an error by its label, if it happened in the measured
        /// window: in the live soak counters if there are any, else here.
        fn error(&mut self, counted: bool, live: Option<&soak::Live>, label: String) {
            match (counted, live) {
                (false, _) => {}
                (true, Some(l)) => l.error(label),
                (true, None) => *self.errors.entry(label).or_default() += 1,
            }
        }
    }

    /// When a client counts and stops, shared by all clients of a run.
    #[derive(Clone)]
    struct Schedule {
        /// Makes idempotency keys unique across runs on one data directory.
        run: u128,
        measure_from: Instant,
        until: Instant,
        /// Soak: pairs and errors go here as they happen (reported per
        /// interval, never kept whole), and the run stops when it says so.
        live: Option<Arc<soak::Live>>,
    }

    fn micros(d: Duration) -> u32 {
        u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
    }

    async fn client(
        http: reqwest::Client,
        url: String,
        auth: String,
        id: usize,
        schedule: Schedule,
    ) -> ClientStats {
        let Schedule {
            run,
            measure_from,
            until,
            live,
        } = schedule;
        let live = live.as_deref();
        let mut s = ClientStats::default();
        let reserve_url = format!("{url}/v1/reservations");
        let mut n: u64 = 0;
        loop {
            let t0 = Instant::now();
            if t0 >= until || live.is_some_and(soak::Live::stopped) {
                break;
            }
            let counted = t0 >= measure_from;
            n += 1;
            let amount = 1 + n % 5;
            let body = json!({
                "action": "tool.run", "unit": "calls", "amount": amount,
                "idempotency_key": format!("lg{run}-{id}-{n}-r"), "ttl_ms": 60_000,
            });
            let granted = match send(
                &http,
                reqwest::Method::POST,
                &reserve_url,
                &auth,
                Some(&body),
            )
            .await
            {
                Ok((201, v)) => v["reservation"]["id"].as_str().map(str::to_owned),
                Ok((status, v)) => {
                    s.error(
                        counted,
                        live,
                        format!("reserve: {}", error_code(status, &v)),
                    );
                    continue;
                }
                Err(e) => {
                    s.error(counted, live, format!("reserve: transport ({})", kind(&e)));
                    // Do not spin on a server that is down.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            };
            let t1 = Instant::now();
            let Some(rid) = granted else {
                s.error(counted, live, "reserve: 201 without an id".into());
                continue;
            };
            let body =
                json!({ "actual": amount, "idempotency_key": format!("lg{run}-{id}-{n}-c") });
            let commit_url = format!("{url}/v1/reservations/{rid}/commit");
            let ok = match send(
                &http,
                reqwest::Method::POST,
                &commit_url,
                &auth,
                Some(&body),
            )
            .await
            {
                Ok((200, _)) => true,
                Ok((status, v)) => {
                    s.error(counted, live, format!("commit: {}", error_code(status, &v)));
                    false
                }
                Err(e) => {
                    s.error(counted, live, format!("commit: transport ({})", kind(&e)));
                    false
                }
            };
            let t2 = Instant::now();
            if counted && ok {
                if let Some(l) = live {
                    l.pair(micros(t2 - t0));
                } else {
                    s.pairs += 1;
                    s.reserve.push(micros(t1 - t0));
                    s.commit.push(micros(t2 - t1));
                    s.pair.push(micros(t2 - t0));
                }
            }
        }
        s
    }

    fn kind(e: &reqwest::Error) -> &'static str {
        if e.is_connect() {
            "connect"
        } else if e.is_timeout() {
            "timeout"
        } else if e.is_body() || e.is_decode() {
            "body"
        } else {
            "request"
        }
    }

    /// The durable write groups of all servers, from their `/metrics`.
    async fn batches(http: &reqwest::Client, urls: &[String]) -> Option<u64> {
        let mut sum = 0;
        for url in urls {
            sum += batches_of(http, url).await?;
        }
        Some(sum)
    }

    /// The counter of durable write groups of one server, from `/metrics`.
    async fn batches_of(http: &reqwest::Client, url: &str) -> Option<u64> {
        let text = http
            .get(format!("{url}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("baton_ledger_batches_total "))
            .and_then(|n| n.trim().parse().ok())
    }

    /// Whole-machine CPU counters from `/proc/stat`: (busy, iowait, total) ticks.
    fn cpu_ticks() -> Option<(u64, u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let total: u64 = v.iter().take(8).sum();
        let idle = *v.get(3)?;
        let iowait = *v.get(4)?;
        Some((total - idle - iowait, iowait, total))
    }

    struct Report {
        seconds: f64,
        stats: ClientStats,
        groups: Option<u64>,
        cpu: Option<(f64, f64)>,
        cores: usize,
    }

    async fn http_load(
        http: &reqwest::Client,
        urls: &[String],
        tokens: &[String],
        args: &Args,
    ) -> Result<Report, BoxError> {
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let start = Instant::now();
        let measure_from = start + Duration::from_millis(args.warmup_ms);
        let until = measure_from + Duration::from_secs(args.seconds);
        let schedule = Schedule {
            run,
            measure_from,
            until,
            live: None,
        };
        let tasks = spawn_clients(http, urls, tokens, args.clients, &schedule);
        tokio::time::sleep_until(measure_from.into()).await;
        let groups_before = batches(http, urls).await;
        let cpu_before = cpu_ticks();
        tokio::time::sleep_until(until.into()).await;
        let groups_after = batches(http, urls).await;
        let cpu_after = cpu_ticks();
        let mut all = ClientStats::default();
        for t in tasks {
            let s = t.await?;
            all.pairs += s.pairs;
            all.pair.extend(s.pair);
            all.reserve.extend(s.reserve);
            all.commit.extend(s.commit);
            for (k, v) in s.errors {
                *all.errors.entry(k).or_default() += v;
            }
        }
        let cpu = match (cpu_before, cpu_after) {
            (Some((b0, w0, t0)), Some((b1, w1, t1))) if t1 > t0 => {
                let dt = (t1 - t0) as f64;
                Some(((b1 - b0) as f64 / dt, (w1 - w0) as f64 / dt))
            }
            _ => None,
        };
        Ok(Report {
            seconds: args.seconds as f64,
            stats: all,
            groups: groups_after.zip(groups_before).map(|(a, b)| a - b),
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    }

    /// Starts `clients` client tasks, spread over the leaf tokens and,
    /// round-robin, over the servers.
    fn spawn_clients(
        http: &reqwest::Client,
        urls: &[String],
        tokens: &[String],
        clients: usize,
        schedule: &Schedule,
    ) -> Vec<tokio::task::JoinHandle<ClientStats>> {
        (0..clients)
            .map(|i| {
                tokio::spawn(client(
                    http.clone(),
                    urls[i % urls.len()].clone(),
                    tokens[i % tokens.len()].clone(),
                    i,
                    schedule.clone(),
                ))
            })
            .collect()
    }

    /// The value at quantile `q` of sorted samples (nearest rank).
    fn quantile(sorted: &[u32], q: f64) -> u32 {
        if sorted.is_empty() {
            return 0;
        }
        let rank = (q * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    fn latency_row(name: &str, samples: &mut [u32]) {
        samples.sort_unstable();
        let ms = |us: u32| f64::from(us) / 1000.0;
        println!(
            "  {name:<8} {:>9} {:>9.2} {:>9.2} {:>9.2}",
            samples.len(),
            ms(quantile(samples, 0.50)),
            ms(quantile(samples, 0.99)),
            ms(samples.last().copied().unwrap_or(0)),
        );
    }

    impl Report {
        fn print(mut self) {
            let s = &mut self.stats;
            let rate = s.pairs as f64 / self.seconds;
            println!();
            println!(
                "HTTP  pairs/s {rate:>10.0}   ({} pairs, {:.0} requests/s)",
                s.pairs,
                2.0 * rate
            );
            if let Some(g) = self.groups {
                // The sweeper adds one (empty) group a second; negligible here.
                println!(
                    "      durable write groups {g} ({:.0}/s, {:.1} requests per group)",
                    g as f64 / self.seconds,
                    if g == 0 {
                        0.0
                    } else {
                        2.0 * s.pairs as f64 / g as f64
                    }
                );
            }
            println!("  latency     count    p50 ms    p99 ms    max ms");
            latency_row("pair", &mut s.pair);
            latency_row("reserve", &mut s.reserve);
            latency_row("commit", &mut s.commit);
            if s.errors.is_empty() {
                println!("  errors: none");
            } else {
                println!("  errors:");
                for (k, v) in &s.errors {
                    println!("    {k}: {v}");
                }
            }
            if let Some((busy, iowait)) = self.cpu {
                println!(
                    "  machine CPU during the run: {:.0}% busy of {} cores, {:.0}% iowait (includes other processes)",
                    busy * 100.0,
                    self.cores,
                    iowait * 100.0
                );
            }
        }
    }

    // ---- --direct: no sockets ----

    async fn direct(clients: usize, window: Duration) -> Result<(), BoxError> {
        println!(
            "direct (no sockets), {:.0} s per measurement",
            window.as_secs_f64()
        );
        let root = RootKey::generate()?;
        let top = Token::mint(
            &root,
            vec![
                Caveat::budget(Unit::Calls, ROOT_CEILING),
                Caveat::tools(["tool.*"])?,
                Caveat::Depth(5),
            ],
        )?;
        let leaf = top
            .attenuate(vec![Caveat::budget(Unit::Calls, PARENT_CEILING)])?
            .attenuate(vec![Caveat::budget(Unit::Calls, CHILD_CEILING)])?;

        // The in-memory ledger, as the writer drives it minus idempotency records.
        let now_s = now_secs();
        let auth = leaf.authorize(&Request::new("tool.run", now_s)?)?;
        let mut ledger = Ledger::default();
        let start = Instant::now();
        let mut pairs = 0u64;
        while start.elapsed() < window {
            for _ in 0..1000 {
                pair(&mut ledger, &leaf, &auth.budgets, pairs)?;
                ledger.settle();
                pairs += 1;
            }
        }
        let rate = pairs as f64 / start.elapsed().as_secs_f64();
        println!("  in-memory Ledger reserve+commit+settle, 1 thread   {rate:>12.0} pairs/s");

        // What each handler does before queueing: verify (cached) and authorize.
        let verifier = Verifier::new(Keyset::new().with(root.public())).with_cache(1000);
        let text = leaf.to_text();
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < window {
            for _ in 0..1000 {
                let t = verifier.verify_text(&text)?;
                verifier.authorize(&t, &Request::new("tool.run", now_s)?)?;
                n += 1;
            }
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        println!("  verify_text (cached) + authorize, 1 thread         {rate:>12.0} per s");

        // The durable store alone: one transaction per group of pairs, with
        // the two idempotency rows per pair that the writer also writes.
        let dir = temp_dir("baton-loadgen-direct");
        std::fs::create_dir_all(&dir)?;
        let measured = store_groups(&dir, &leaf, &auth.budgets, window);
        let served = router_load(&dir, clients, window).await;
        let _ = std::fs::remove_dir_all(&dir);
        measured?;
        served?;
        Ok(())
    }

    fn now_secs() -> u64 {
        use baton::server::writer::Clock as _;
        SystemClock.now_ms() / 1000
    }

    fn pair(
        ledger: &mut Ledger,
        leaf: &Token,
        budgets: &[baton::BudgetScope],
        n: u64,
    ) -> Result<(), BoxError> {
        let mut random = [0u8; 12];
        random[4..].copy_from_slice(&n.to_be_bytes());
        let id = ResId::new(1, random);
        let tree = leaf.block_ids()[0];
        let key = |suffix: &str| {
            Some((
                IdemKey {
                    tree,
                    key: format!("k{n}-{suffix}"),
                },
                [7; 16],
            ))
        };
        let reserve = Command {
            op: Operation::Reserve {
                req: ReserveRequest {
                    id,
                    chain: leaf.block_ids().to_vec(),
                    unit: Unit::Calls,
                    scopes: budgets.to_vec(),
                    amount: 1,
                    ttl_ms: 60_000,
                },
                actual: None,
            },
            idem: key("r"),
            proof: None,
        };
        let commit = Command {
            op: Operation::Commit {
                chain: leaf.block_ids().to_vec(),
                id,
                actual: 1,
            },
            idem: key("c"),
            proof: None,
        };
        for cmd in [reserve, commit] {
            match ledger.apply(&cmd, 10, 0) {
                Outcome::Done { .. } => {}
                other => return Err(format!("{other:?}").into()),
            }
        }
        Ok(())
    }

    fn store_groups(
        dir: &Path,
        leaf: &Token,
        budgets: &[baton::BudgetScope],
        window: Duration,
    ) -> Result<(), BoxError> {
        let mut store = SqliteStore::open(&dir.join("store-only.db"))?;
        let mut ledger = Ledger::default();
        let mut n = 0u64;
        for group in [1usize, 8, 64] {
            let start = Instant::now();
            let mut txs = 0u64;
            let mut pairs = 0u64;
            while start.elapsed() < window {
                for _ in 0..group {
                    // A pair with its two idempotency records, as the writer makes it.
                    pair(&mut ledger, leaf, budgets, n)?;
                    n += 1;
                    pairs += 1;
                }
                // Coalesced per group, as the writer does.
                store.write(&ledger.coalesced_changes())?;
                ledger.settle();
                txs += 1;
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "  SQLite store, {group:>2} pairs per durable tx           {:>12.0} pairs/s ({:.0} tx/s, {:.2} ms per tx)",
                pairs as f64 / secs,
                txs as f64 / secs,
                secs * 1000.0 / txs as f64
            );
        }
        Ok(())
    }

    /// The full service (handlers, writer, SQLite with fsync) through its
    /// router, `clients` concurrent tasks, no sockets.
    async fn router_load(dir: &Path, clients: usize, window: Duration) -> Result<(), BoxError> {
        use axum::body::Body;
        use tower::ServiceExt as _;

        let store = SqliteStore::open(&dir.join("router.db"))?;
        let service = Service::start(
            Box::new(store),
            Arc::new(SystemClock),
            WriterConfig::default(),
        )?;
        let top = service.mint(vec![
            Caveat::budget(Unit::Calls, ROOT_CEILING),
            Caveat::tools(["tool.*"])?,
            Caveat::Depth(5),
        ])?;
        let parent = top.attenuate(vec![Caveat::budget(Unit::Calls, PARENT_CEILING)])?;
        let leaves: Vec<String> = (0..8)
            .map(|_| {
                parent
                    .attenuate(vec![Caveat::budget(Unit::Calls, CHILD_CEILING)])
                    .map(|t| format!("Bearer {}", t.to_text()))
            })
            .collect::<Result<_, _>>()?;
        let router = service.router();
        let until = Instant::now() + window;
        let call = |router: axum::Router, auth: String, uri: String, body: Value| async move {
            let req = axum::http::Request::builder()
                .method("POST")
                .uri(uri)
                .header("authorization", auth)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))?;
            let resp = router.oneshot(req).await?;
            let status = resp.status().as_u16();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await?;
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            Ok::<_, BoxError>((status, v))
        };
        let start = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|i| {
                let router = router.clone();
                let auth = leaves[i % leaves.len()].clone();
                tokio::spawn(async move {
                    let mut pairs = 0u64;
                    let mut failed = 0u64;
                    while Instant::now() < until {
                        let key = format!("d-{i}-{pairs}-{failed}");
                        let (s, v) = call(
                            router.clone(),
                            auth.clone(),
                            "/v1/reservations".into(),
                            json!({ "action": "tool.run", "unit": "calls", "amount": 1, "idempotency_key": format!("{key}-r") }),
                        )
                        .await?;
                        let Some(id) = v["reservation"]["id"].as_str().filter(|_| s == 201) else {
                            failed += 1;
                            continue;
                        };
                        let (s, _) = call(
                            router.clone(),
                            auth.clone(),
                            format!("/v1/reservations/{id}/commit"),
                            json!({ "actual": 1, "idempotency_key": format!("{key}-c") }),
                        )
                        .await?;
                        if s == 200 {
                            pairs += 1;
                        } else {
                            failed += 1;
                        }
                    }
                    Ok::<_, BoxError>((pairs, failed))
                })
            })
            .collect();
        let (mut pairs, mut failed) = (0, 0);
        for t in tasks {
            let (p, f) = t.await??;
            pairs += p;
            failed += f;
        }
        let rate = pairs as f64 / start.elapsed().as_secs_f64();
        println!(
            "  service via router (handlers+writer+SQLite), {clients} tasks {rate:>9.0} pairs/s ({failed} failed)"
        );
        Ok(())
    }

    // ---- --spawn: several `baton serve` processes, one store ----

    /// `--spawn N`: the servers as child processes, as an operator runs
    /// them, each with a data directory of its own (for its admin token;
    /// with --store the ledger is in PostgreSQL, in a schema of this run's).
    mod spawned {
        use std::time::Instant;

        use super::soak::Server;
        use super::{Args, BoxError, load, read_token, temp_dir};

        pub async fn run(args: &Args, n: usize) -> Result<(), BoxError> {
            if n == 0 {
                return Err("--spawn needs at least 1 server".into());
            }
            if n > 1 && args.store.is_none() {
                return Err(
                    "--spawn with more than one server needs --store postgres://… (servers on \
                     the embedded store do not share a ledger)"
                        .into(),
                );
            }
            let work = temp_dir("baton-loadgen-spawn");
            std::fs::create_dir_all(&work)?;
            // A fresh schema per run: runs never see each other's history.
            let schema = args.store.as_ref().map(|_| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                format!("loadgen_{}_{nanos}", std::process::id())
            });
            let result = servers(args, n, &work, schema.as_deref()).await;
            if let (Some(url), Some(schema)) = (&args.store, &schema)
                && let Err(e) = baton::store::postgres::drop_schema(url, schema)
            {
                eprintln!("warning: could not drop schema {schema}: {e}");
            }
            let _ = std::fs::remove_dir_all(&work);
            result
        }

        async fn servers(
            args: &Args,
            n: usize,
            work: &std::path::Path,
            schema: Option<&str>,
        ) -> Result<(), BoxError> {
            let mut extra = args.server_args.clone();
            if let (Some(url), Some(schema)) = (&args.store, schema) {
                extra.push(format!("--store={url}"));
                extra.push(format!("--pg-schema={schema}"));
            }
            let http = super::http_client(4)?;
            // One after the other: the first creates the schema and the
            // root key, the others find them.
            let mut servers: Vec<Server> = Vec::with_capacity(n);
            for i in 0..n {
                let started = Instant::now();
                let mut server =
                    Server::spawn(&args.baton_bin, &work.join(format!("data-{i}")), &extra).await?;
                server.wait_ready(&http, started).await?;
                servers.push(server);
            }
            let admin = read_token(&work.join("data-0").join("admin.token"))?;
            let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
            let where_ = format!(
                "{n} `baton serve` process(es) on {}{}",
                match schema {
                    Some(s) => format!("PostgreSQL (schema {s})"),
                    None => "the embedded SQLite store".to_owned(),
                },
                if args.server_args.is_empty() {
                    String::new()
                } else {
                    format!(", extra args {:?}", args.server_args)
                }
            );
            let result = load(args, &urls, &admin, &where_).await;
            for s in &mut servers {
                s.terminate().await?;
            }
            result
        }
    }

    // ---- --soak: `baton serve` as a child process, watched from outside ----

    /// The soak mode: memory, disk, idle CPU, shutdown and restart of a real
    /// `baton serve` process under a long reserve → commit load, measured as
    /// an operator sees them (`/proc`, the data directory, `/readyz`).
    mod soak {
        use std::collections::{BTreeMap, VecDeque};
        use std::io::{BufRead as _, BufReader, Read};
        use std::path::{Path, PathBuf};
        use std::process::{Child, Command, ExitStatus, Stdio};
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
        use std::time::{Duration, Instant};

        use serde_json::{Value, json};

        use super::{
            Args, BoxError, Schedule, http_client, quantile, read_token, spawn_clients, temp_dir,
            tree,
        };

        /// How long a start may take, spawn to ready. Generous: the soak
        /// exists to measure slow restarts, not to cut them short.
        const READY_TIMEOUT: Duration = Duration::from_secs(600);
        /// How long the server may drain after SIGTERM.
        const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
        /// How often the load loop checks that the server is alive.
        const TICK: Duration = Duration::from_millis(100);
        /// How often `/readyz` is polled during a start.
        const READY_POLL: Duration = Duration::from_millis(5);
        /// Lines of the server's stderr kept to explain a failure.
        const LOG_TAIL: usize = 40;
        const MIB: f64 = 1024.0 * 1024.0;

        /// Counters shared by the clients of a soak: pairs as they complete,
        /// latencies of the current report interval only (so a long run
        /// keeps no history here either), errors by code.
        pub struct Live {
            /// Stop once this many pairs completed; 0 = no limit.
            limit: u64,
            pairs: AtomicU64,
            stop: AtomicBool,
            counters: Mutex<Counters>,
        }

        #[derive(Default)]
        struct Counters {
            /// Pair latencies (µs) since the last report.
            latencies: Vec<u32>,
            /// Since the start.
            errors: BTreeMap<String, u64>,
        }

        impl Live {
            fn new(limit: u64) -> Self {
                Self {
                    limit,
                    pairs: AtomicU64::new(0),
                    stop: AtomicBool::new(false),
                    counters: Mutex::default(),
                }
            }

            /// Whether clients should stop starting pairs.
            pub fn stopped(&self) -> bool {
                self.stop.load(Ordering::Relaxed)
            }

            fn stop(&self) {
                self.stop.store(true, Ordering::Relaxed);
            }

            /// A completed pair and its latency in microseconds.
            pub fn pair(&self, micros: u32) {
                self.lock().latencies.push(micros);
                let n = self.pairs.fetch_add(1, Ordering::Relaxed) + 1;
                if self.limit > 0 && n >= self.limit {
                    self.stop();
                }
            }

            pub fn error(&self, label: String) {
                *self.lock().errors.entry(label).or_default() += 1;
            }

            fn pairs(&self) -> u64 {
                self.pairs.load(Ordering::Relaxed)
            }

            fn take_latencies(&self) -> Vec<u32> {
                std::mem::take(&mut self.lock().latencies)
            }

            fn errors(&self) -> BTreeMap<String, u64> {
                self.lock().errors.clone()
            }

            fn lock(&self) -> MutexGuard<'_, Counters> {
                // Counters stay meaningful even if a client panicked holding them.
                self.counters.lock().unwrap_or_else(PoisonError::into_inner)
            }
        }

        /// One `baton serve` child process. Dropping it kills the process if
        /// it still runs, so no error path leaves a server behind.
        pub(super) struct Server {
            child: Child,
            pub(super) pid: u32,
            pub(super) url: String,
            /// The last lines of its stderr (its logs).
            log: Arc<Mutex<VecDeque<String>>>,
        }

        impl Server {
            /// Spawns `BIN serve --data DIR --listen 127.0.0.1:0 EXTRA…` and
            /// waits for its `listening on http://ADDR` line.
            pub(super) async fn spawn(
                bin: &Path,
                dir: &Path,
                extra: &[String],
            ) -> Result<Self, BoxError> {
                let mut child = Command::new(bin)
                    .arg("serve")
                    .arg("--data")
                    .arg(dir)
                    .args(["--listen", "127.0.0.1:0"])
                    .args(extra)
                    // Its log tail may end up in an error message: plain text.
                    .env("NO_COLOR", "1")
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| format!("starting {}: {e}", bin.display()))?;
                let stdout = child.stdout.take();
                let stderr = child.stderr.take();
                let log = Arc::new(Mutex::new(VecDeque::new()));
                // The guard exists before anything can fail.
                let mut server = Self {
                    pid: child.id(),
                    child,
                    url: String::new(),
                    log: log.clone(),
                };
                if let Some(stderr) = stderr {
                    std::thread::spawn(move || keep_tail(stderr, &log));
                }
                let stdout = stdout.ok_or("the server's stdout is not piped")?;
                let (tx, rx) = tokio::sync::oneshot::channel();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stdout);
                    let mut line = String::new();
                    let _ = tx.send(reader.read_line(&mut line).map(|_| line));
                    // Keep reading: the server must never block on a full
                    // pipe nor see a broken one.
                    let _ = std::io::copy(&mut reader, &mut std::io::sink());
                });
                let line = match tokio::time::timeout(READY_TIMEOUT, rx).await {
                    Ok(Ok(Ok(line))) => line,
                    Ok(Ok(Err(e))) => {
                        return Err(server.failure(&format!("reading its stdout: {e}")));
                    }
                    Ok(Err(_)) => return Err(server.failure("its stdout reader stopped")),
                    Err(_) => {
                        return Err(server.failure(&format!(
                            "no `listening on` line within {} s",
                            READY_TIMEOUT.as_secs()
                        )));
                    }
                };
                if line.is_empty() {
                    return Err(server.failure("closed its stdout without a `listening on` line"));
                }
                let Some(url) = line.trim().strip_prefix("listening on ") else {
                    return Err(server.failure(&format!("unexpected first line {line:?}")));
                };
                server.url = url.to_owned();
                Ok(server)
            }

            fn exited(&mut self) -> Option<ExitStatus> {
                self.child.try_wait().ok().flatten()
            }

            /// An error naming what went wrong, how the process ended (the
            /// guard kills it if it has not) and the last lines of its log.
            fn failure(&mut self, what: &str) -> BoxError {
                // Error path only: let a dying process finish its last log lines.
                std::thread::sleep(Duration::from_millis(200));
                let status = match self.exited() {
                    Some(s) => format!("it exited with {s}"),
                    None => "it was still running and is killed".to_owned(),
                };
                let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
                let tail: Vec<&str> = log.iter().map(String::as_str).collect();
                format!(
                    "baton serve (pid {}): {what}; {status}; its last log lines:\n    {}",
                    self.pid,
                    tail.join("\n    ")
                )
                .into()
            }

            /// Polls `GET /readyz` every 5 ms until it answers 200; the time since `since`.
            pub(super) async fn wait_ready(
                &mut self,
                http: &reqwest::Client,
                since: Instant,
            ) -> Result<Duration, BoxError> {
                let url = format!("{}/readyz", self.url);
                loop {
                    let answer = http.get(&url).send().await;
                    if answer.is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
                        return Ok(since.elapsed());
                    }
                    if self.exited().is_some() {
                        return Err(self.failure("exited before it was ready"));
                    }
                    if since.elapsed() > READY_TIMEOUT {
                        return Err(self.failure("not ready in time"));
                    }
                    tokio::time::sleep(READY_POLL).await;
                }
            }

            /// SIGTERM, then the time until the process has exited. An
            /// unclean exit is an error.
            ///
            /// The signal is sent by the `kill` command, not a syscall: the
            /// project forbids `unsafe` (so no libc), and one process spawn
            /// per run is not worth a dependency. The time includes running
            /// `kill` (about a millisecond).
            pub(super) async fn terminate(&mut self) -> Result<Duration, BoxError> {
                let start = Instant::now();
                let sent = Command::new("kill")
                    .args(["-TERM", &self.pid.to_string()])
                    .stdin(Stdio::null())
                    .status()
                    .map_err(|e| format!("running kill -TERM: {e}"))?;
                if !sent.success() {
                    return Err(self.failure(&format!("kill -TERM failed ({sent})")));
                }
                loop {
                    if let Some(exit) = self.exited() {
                        let took = start.elapsed();
                        if exit.success() {
                            return Ok(took);
                        }
                        return Err(self.failure("unclean exit after SIGTERM"));
                    }
                    if start.elapsed() > EXIT_TIMEOUT {
                        return Err(self.failure(&format!(
                            "still running {} s after SIGTERM",
                            EXIT_TIMEOUT.as_secs()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }

            fn rss(&self) -> Option<u64> {
                proc_status_bytes(self.pid, "VmRSS")
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

        /// Reads lines to the end, keeping the last [`LOG_TAIL`].
        fn keep_tail(from: impl Read, log: &Mutex<VecDeque<String>>) {
            for line in BufReader::new(from).lines() {
                let Ok(line) = line else { break };
                let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                if log.len() == LOG_TAIL {
                    log.pop_front();
                }
                log.push_back(line);
            }
        }

        /// A `/proc/PID/status` field given in kB (VmRSS, VmHWM), in bytes.
        fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let kib: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(kib * 1024)
        }

        /// utime + stime of a process, in clock ticks: fields 14 and 15 of
        /// `/proc/PID/stat`. The command name (field 2) is in parentheses
        /// and may hold spaces, so fields are counted after its last `)`.
        fn cpu_ticks(pid: u32) -> Option<u64> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
            // fields[0] is field 3 (state).
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        }

        /// Clock ticks per second, from `getconf CLK_TCK`; 100 (what Linux
        /// reports on every common platform) if that cannot run.
        fn clock_ticks() -> (f64, &'static str) {
            let asked = Command::new("getconf")
                .arg("CLK_TCK")
                .stdin(Stdio::null())
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .and_then(|s| s.trim().parse::<u32>().ok())
                .filter(|&t| t > 0);
            match asked {
                Some(t) => (f64::from(t), "getconf CLK_TCK"),
                None => (100.0, "assumed: getconf CLK_TCK failed"),
            }
        }

        /// Sum of the sizes of the regular files under `dir`, recursively.
        /// Files may vanish during the walk (a WAL being removed): skipped.
        fn dir_bytes(dir: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .filter_map(Result::ok)
                .map(|e| match e.path().symlink_metadata() {
                    Ok(m) if m.is_file() => m.len(),
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    _ => 0,
                })
                .sum()
        }

        /// One report line's figures.
        struct Sample {
            elapsed: f64,
            pairs: u64,
            rate: f64,
            p50_ms: f64,
            p99_ms: f64,
            rss: Option<u64>,
            data: u64,
            /// Server CPU over the interval, in cores.
            cpu: Option<f64>,
        }

        impl Sample {
            fn json(&self) -> Value {
                json!({
                    "elapsed_s": self.elapsed, "pairs": self.pairs, "pairs_per_s": self.rate,
                    "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "rss_bytes": self.rss,
                    "data_bytes": self.data, "cpu_cores": self.cpu,
                })
            }
        }

        /// Takes report lines: each one covers the time since the previous.
        struct Reporter<'a> {
            live: &'a Live,
            pid: u32,
            dir: &'a Path,
            ticks_per_s: f64,
            start: Instant,
            last: (Instant, u64, Option<u64>),
            samples: Vec<Sample>,
        }

        impl Reporter<'_> {
            fn header() {
                println!(
                    "{:>8} {:>10} {:>9} {:>7} {:>7} {:>8} {:>9} {:>7} {:>6}  errors (total)",
                    "elapsed",
                    "pairs",
                    "pairs/s",
                    "p50 ms",
                    "p99 ms",
                    "RSS MiB",
                    "data MiB",
                    "B/pair",
                    "CPU"
                );
            }

            fn report(&mut self) {
                let now = Instant::now();
                let pairs = self.live.pairs();
                let ticks = cpu_ticks(self.pid);
                let (then, then_pairs, then_ticks) = self.last;
                let dt = (now - then).as_secs_f64().max(1e-9);
                let mut lat = self.live.take_latencies();
                lat.sort_unstable();
                let ms = |us: u32| f64::from(us) / 1000.0;
                let s = Sample {
                    elapsed: (now - self.start).as_secs_f64(),
                    pairs,
                    rate: (pairs - then_pairs) as f64 / dt,
                    p50_ms: ms(quantile(&lat, 0.50)),
                    p99_ms: ms(quantile(&lat, 0.99)),
                    rss: proc_status_bytes(self.pid, "VmRSS"),
                    data: dir_bytes(self.dir),
                    cpu: ticks
                        .zip(then_ticks)
                        .map(|(a, b)| a.saturating_sub(b) as f64 / self.ticks_per_s / dt),
                };
                let errors = self.live.errors();
                println!(
                    "{:>8.1} {:>10} {:>9.0} {:>7.2} {:>7.2} {:>8} {:>9.1} {:>7} {:>6}  {}",
                    s.elapsed,
                    s.pairs,
                    s.rate,
                    s.p50_ms,
                    s.p99_ms,
                    s.rss
                        .map_or("?".into(), |r| format!("{:.1}", r as f64 / MIB)),
                    s.data as f64 / MIB,
                    per_pair(s.data, s.pairs).map_or("-".into(), |b| format!("{b:.0}")),
                    s.cpu.map_or("?".into(), |c| format!("{:.0}%", c * 100.0)),
                    if errors.is_empty() {
                        "none".to_owned()
                    } else {
                        errors
                            .iter()
                            .map(|(k, v)| format!("{k} ×{v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                );
                self.last = (now, pairs, ticks);
                self.samples.push(s);
            }
        }

        fn per_pair(bytes: u64, pairs: u64) -> Option<f64> {
            (pairs > 0).then(|| bytes as f64 / pairs as f64)
        }

        /// Runs the soak; removes a data directory it created unless `--keep`.
        pub async fn run(args: &Args) -> Result<(), BoxError> {
            if args.report_every == 0 {
                return Err("--report-every must be at least 1".into());
            }
            if args.pairs == 0 && args.seconds == 0 {
                return Err("give --pairs or a non-zero --seconds".into());
            }
            let (dir, created) = match &args.data {
                Some(dir) => {
                    let non_empty = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
                    if non_empty && !args.reuse {
                        return Err(format!(
                            "{} is not empty; pass --reuse to continue its history",
                            dir.display()
                        )
                        .into());
                    }
                    (dir.clone(), false)
                }
                None => (temp_dir("baton-soak"), true),
            };
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let result = soak(args, &dir).await;
            // The header named the directory; nothing more is printed, so
            // that the JSON object stays the last line.
            if created && !args.keep {
                let _ = std::fs::remove_dir_all(&dir);
            }
            result
        }

        async fn soak(args: &Args, dir: &Path) -> Result<(), BoxError> {
            let (ticks_per_s, ticks_from) = clock_ticks();
            let http = http_client(args.clients)?;
            let bin: &PathBuf = &args.baton_bin;
            let started = Instant::now();
            let mut server = Server::spawn(bin, dir, &args.server_args).await?;
            let start_to_ready = server.wait_ready(&http, started).await?;
            let admin = read_token(&dir.join("admin.token"))
                .map_err(|e| format!("{}/admin.token: {e}", dir.display()))?;
            let tokens = tree(&http, &server.url, &admin, args.children, false).await?;
            println!(
                "baton loadgen soak: {} serve (pid {}) at {} on {}{}",
                bin.display(),
                server.pid,
                server.url,
                dir.display(),
                if args.server_args.is_empty() {
                    String::new()
                } else {
                    format!(", extra args {:?}", args.server_args)
                }
            );
            println!(
                "{} clients over {} leaf tokens, {}, a line every {} s; ready {:.0} ms after spawn; clock ticks {ticks_per_s}/s ({ticks_from})",
                args.clients,
                tokens.len(),
                if args.pairs > 0 {
                    format!("until {} pairs", args.pairs)
                } else {
                    format!("for {} s", args.seconds)
                },
                args.report_every,
                start_to_ready.as_secs_f64() * 1000.0
            );

            // ---- load ----
            let live = Arc::new(Live::new(args.pairs));
            let start = Instant::now();
            let until = if args.pairs > 0 {
                // Far enough: the pair count ends the run.
                start + Duration::from_secs(100 * 365 * 24 * 3600)
            } else {
                start + Duration::from_secs(args.seconds)
            };
            let schedule = Schedule {
                run: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_nanos(),
                measure_from: start,
                until,
                live: Some(live.clone()),
            };
            let tasks = spawn_clients(
                &http,
                std::slice::from_ref(&server.url),
                &tokens,
                args.clients,
                &schedule,
            );
            let mut reporter = Reporter {
                live: &live,
                pid: server.pid,
                dir,
                ticks_per_s,
                start,
                last: (start, 0, cpu_ticks(server.pid)),
                samples: Vec::new(),
            };
            Reporter::header();
            let every = Duration::from_secs(args.report_every);
            loop {
                tokio::time::sleep(TICK).await;
                if server.exited().is_some() {
                    live.stop();
                    for t in &tasks {
                        t.abort();
                    }
                    return Err(server.failure(&format!(
                        "died during the load, after {} pairs",
                        live.pairs()
                    )));
                }
                if live.stopped() || Instant::now() >= until {
                    break;
                }
                if reporter.last.0.elapsed() >= every {
                    reporter.report();
                }
            }
            // In-flight pairs finish (bounded by the client timeout).
            live.stop();
            for t in tasks {
                t.await?;
            }
            let load_secs = start.elapsed().as_secs_f64();
            reporter.report();
            let samples = reporter.samples;
            let pairs = live.pairs();
            let Some(last) = samples.last() else {
                return Err("no report was taken".into());
            };
            let warm = args.warmup_ms as f64 / 1000.0;
            let base = samples.iter().find(|s| s.elapsed >= warm).unwrap_or(last);

            // ---- idle ----
            let idle_ms_per_s = if args.idle_secs > 0 {
                let (t0, c0) = (Instant::now(), cpu_ticks(server.pid));
                tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
                if server.exited().is_some() {
                    return Err(server.failure("died while idle"));
                }
                let c1 = cpu_ticks(server.pid);
                c1.zip(c0).map(|(b, a)| {
                    b.saturating_sub(a) as f64 * 1000.0 / ticks_per_s / t0.elapsed().as_secs_f64()
                })
            } else {
                None
            };
            let hwm = proc_status_bytes(server.pid, "VmHWM");
            let max_rss = hwm.or_else(|| samples.iter().filter_map(|s| s.rss).max());

            // ---- SIGTERM, restart, SIGTERM ----
            let term_to_exit = server.terminate().await?;
            drop(server);
            let data_after_stop = dir_bytes(dir);
            let restarted = Instant::now();
            let mut server = Server::spawn(bin, dir, &args.server_args).await?;
            let restart_to_ready = server.wait_ready(&http, restarted).await?;
            let rss_after_restart = server.rss();
            let term_to_exit_2 = server.terminate().await?;
            drop(server);

            // ---- summary ----
            let errors = live.errors();
            let rss_growth = last.rss.zip(base.rss).map(|(b, a)| b as i64 - a as i64);
            let growth_per_m = rss_growth.and_then(|g| {
                (last.pairs > base.pairs).then(|| g as f64 * 1e6 / (last.pairs - base.pairs) as f64)
            });
            let mib =
                |b: Option<u64>| b.map_or("?".into(), |b| format!("{:.1} MiB", b as f64 / MIB));
            let b_per_pair =
                |b: u64| per_pair(b, pairs).map_or("-".into(), |x| format!("{x:.0} B/pair"));
            println!();
            println!(
                "soak  pairs {pairs} in {load_secs:.1} s = {:.0} pairs/s; errors: {}",
                pairs as f64 / load_secs,
                if errors.is_empty() {
                    "none".to_owned()
                } else {
                    format!("{errors:?}")
                }
            );
            println!(
                "      RSS final {}, max {} (VmHWM), growth {} from the first report after warm-up ({:.1} s, {} pairs) to the last{}",
                mib(last.rss),
                mib(max_rss),
                rss_growth.map_or("?".into(), |g| format!("{:+.1} MiB", g as f64 / MIB)),
                base.elapsed,
                base.pairs,
                growth_per_m.map_or(String::new(), |g| format!(
                    " ({:+.1} MiB per million pairs)",
                    g / MIB
                )),
            );
            println!(
                "      data dir {:.1} MiB at end of load ({}), {:.1} MiB after clean stop ({})",
                last.data as f64 / MIB,
                b_per_pair(last.data),
                data_after_stop as f64 / MIB,
                b_per_pair(data_after_stop)
            );
            println!(
                "      idle CPU {} over {} s; SIGTERM→exit {:.0} ms; restart→ready {:.0} ms; RSS after restart {}; 2nd SIGTERM→exit {:.0} ms",
                idle_ms_per_s.map_or("-".into(), |c| format!("{c:.1} ms/s")),
                args.idle_secs,
                term_to_exit.as_secs_f64() * 1000.0,
                restart_to_ready.as_secs_f64() * 1000.0,
                mib(rss_after_restart),
                term_to_exit_2.as_secs_f64() * 1000.0,
            );
            if args.json {
                let summary = json!({
                    "pairs": pairs,
                    "load_seconds": load_secs,
                    "pairs_per_s": pairs as f64 / load_secs,
                    "clients": args.clients,
                    "server_args": args.server_args,
                    "errors": errors,
                    "start_to_ready_ms": start_to_ready.as_secs_f64() * 1000.0,
                    "rss_final_bytes": last.rss,
                    "rss_max_bytes": max_rss,
                    "rss_baseline_bytes": base.rss,
                    "rss_baseline_pairs": base.pairs,
                    "rss_growth_bytes": rss_growth,
                    "rss_growth_bytes_per_million_pairs": growth_per_m,
                    "data_bytes": last.data,
                    "bytes_per_pair": per_pair(last.data, pairs),
                    "data_bytes_after_stop": data_after_stop,
                    "bytes_per_pair_after_stop": per_pair(data_after_stop, pairs),
                    "idle_seconds": args.idle_secs,
                    "idle_cpu_ms_per_s": idle_ms_per_s,
                    "sigterm_to_exit_ms": term_to_exit.as_secs_f64() * 1000.0,
                    "restart_to_ready_ms": restart_to_ready.as_secs_f64() * 1000.0,
                    "rss_after_restart_bytes": rss_after_restart,
                    "restart_sigterm_to_exit_ms": term_to_exit_2.as_secs_f64() * 1000.0,
                    "reports": samples.iter().map(Sample::json).collect::<Vec<_>>(),
                });
                println!("{summary}");
            }
            Ok(())
        }
    }
}
