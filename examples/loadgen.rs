//! Load generator for the spend ledger: concurrent reserve → commit pairs.
//!
//! ```text
//! cargo run --release --example loadgen -- [--clients 64] [--seconds 10] [--direct]
//! cargo run --release --example loadgen -- --url http://127.0.0.1:PORT \
//!     --admin-token-file DIR/admin.token [--clients 64] [--seconds 10]
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
        /// Base URL of a running `baton serve`; without it, a server is started in-process.
        #[arg(long)]
        url: Option<String>,
        /// The admin token file of the server at --url (DIR/admin.token).
        #[arg(long, requires = "url")]
        admin_token_file: Option<PathBuf>,
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
        #[arg(long)]
        direct: bool,
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
        let mut local = None;
        let (url, admin) = match (&args.url, &args.admin_token_file) {
            (Some(url), Some(file)) => (
                url.trim_end_matches('/').to_owned(),
                read_token(file).map_err(|e| format!("{}: {e}", file.display()))?,
            ),
            (Some(_), None) => return Err("--url needs --admin-token-file".into()),
            (None, _) => {
                let server = LocalServer::start()?;
                let pair = (server.url.clone(), server.admin.clone());
                local = Some(server);
                pair
            }
        };
        let http = reqwest::Client::builder()
            // One idle connection per client, so no request waits for a connect.
            .pool_max_idle_per_host(args.clients)
            // Loopback only: an HTTP_PROXY in the environment must not apply.
            .no_proxy()
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()?;

        let tokens = tree(&http, &url, &admin, args.children).await?;
        println!(
            "baton loadgen: {} clients, {} s measured after {} ms warm-up, server {}",
            args.clients,
            args.seconds,
            args.warmup_ms,
            if local.is_some() {
                format!("in-process at {url}")
            } else {
                url.clone()
            }
        );
        println!(
            "tree: root → parent → {} children → 1 grandchild each; clients spread over all {} leaf tokens",
            args.children,
            tokens.len()
        );
        let report = http_load(&http, &url, &tokens, &args).await?;
        report.print();

        if args.direct {
            println!();
            direct(args.clients, Duration::from_secs(args.seconds.clamp(1, 3))).await?;
        }
        if let Some(server) = local {
            server.stop();
        }
        Ok(())
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
        /// Counts an error by its label, if it happened in the measured window.
        fn error(&mut self, counted: bool, label: String) {
            if counted {
                *self.errors.entry(label).or_default() += 1;
            }
        }
    }

    fn micros(d: Duration) -> u32 {
        u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
    }

    async fn client(
        http: reqwest::Client,
        url: String,
        auth: String,
        id: usize,
        run: u128,
        measure_from: Instant,
        until: Instant,
    ) -> ClientStats {
        let mut s = ClientStats::default();
        let reserve_url = format!("{url}/v1/reservations");
        let mut n: u64 = 0;
        loop {
            let t0 = Instant::now();
            if t0 >= until {
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
                    s.error(counted, format!("reserve: {}", error_code(status, &v)));
                    continue;
                }
                Err(e) => {
                    s.error(counted, format!("reserve: transport ({})", kind(&e)));
                    // Do not spin on a server that is down.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            };
            let t1 = Instant::now();
            let Some(rid) = granted else {
                s.error(counted, "reserve: 201 without an id".into());
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
                    s.error(counted, format!("commit: {}", error_code(status, &v)));
                    false
                }
                Err(e) => {
                    s.error(counted, format!("commit: transport ({})", kind(&e)));
                    false
                }
            };
            let t2 = Instant::now();
            if counted && ok {
                s.pairs += 1;
                s.reserve.push(micros(t1 - t0));
                s.commit.push(micros(t2 - t1));
                s.pair.push(micros(t2 - t0));
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

    /// The counter of durable write groups, from `/metrics`.
    async fn batches(http: &reqwest::Client, url: &str) -> Option<u64> {
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
        url: &str,
        tokens: &[String],
        args: &Args,
    ) -> Result<Report, BoxError> {
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let start = Instant::now();
        let measure_from = start + Duration::from_millis(args.warmup_ms);
        let until = measure_from + Duration::from_secs(args.seconds);
        let tasks: Vec<_> = (0..args.clients)
            .map(|i| {
                tokio::spawn(client(
                    http.clone(),
                    url.to_owned(),
                    tokens[i % tokens.len()].clone(),
                    i,
                    run,
                    measure_from,
                    until,
                ))
            })
            .collect();
        tokio::time::sleep_until(measure_from.into()).await;
        let groups_before = batches(http, url).await;
        let cpu_before = cpu_ticks();
        tokio::time::sleep_until(until.into()).await;
        let groups_after = batches(http, url).await;
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
        };
        let commit = Command {
            op: Operation::Commit {
                chain: leaf.block_ids().to_vec(),
                id,
                actual: 1,
            },
            idem: key("c"),
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
}
