//! The `baton serve` and `baton keys rotate` commands, kept in the library
//! so the binary's `main` stays a thin dispatcher.

use std::io::{IsTerminal as _, Read as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

/// `baton serve`: run the ledger service on its embedded store, or on a
/// PostgreSQL database shared with other `baton serve` processes.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Data directory: the SQLite ledger and, after the first start, the
    /// admin token. With --store postgres://..., only the admin token.
    #[arg(long, env = "BATON_DATA", default_value = "baton-data")]
    pub data: PathBuf,
    /// The ledger store: `sqlite` (embedded, in --data; the default) or a
    /// PostgreSQL URL `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` shared by
    /// any number of servers (spec/http.md §4.8). Prefer the environment
    /// variable for a URL with a password: arguments are visible to every
    /// user in the process list.
    #[arg(
        long,
        env = "BATON_STORE",
        default_value = "sqlite",
        value_name = "sqlite|postgres://...",
        hide_env_values = true
    )]
    pub store: String,
    /// PostgreSQL: the schema holding the ledger's tables, created if
    /// missing (lower-case letters, digits and _).
    #[arg(long, env = "BATON_PG_SCHEMA", default_value = crate::store::postgres::DEFAULT_SCHEMA, value_parser = pg_schema)]
    pub pg_schema: String,
    /// PostgreSQL: most connections this server opens (one per writer
    /// carries its group transactions; the others start-up, sweeps and
    /// pruning).
    #[arg(long, env = "BATON_POOL_SIZE", value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub pool_size: u32,
    /// PostgreSQL: writer threads, each with its own connection and group
    /// transactions; one group commits while the next reads, and the
    /// database's row locks order their groups, as for several servers.
    /// Ignored by SQLite, which has one.
    #[arg(long, env = "BATON_WRITERS", value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub writers: u32,
    /// Most requests in one group commit (one transaction).
    #[arg(long, env = "BATON_BATCH_SIZE", value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub batch_size: u32,
    /// Address to listen on. Loopback by default; port 0 picks a free port.
    #[arg(long, env = "BATON_LISTEN", default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub json_logs: bool,
    /// This ledger's identity for proofs of possession: a holder-bound
    /// token's every request carries a Baton-Proof naming it (1-255
    /// bytes of visible ASCII; spec/http.md §2.3).
    #[arg(long, env = "BATON_AUDIENCE", default_value = super::DEFAULT_AUDIENCE, value_parser = parse_audience)]
    pub audience: crate::proof::Audience,
    /// Entries in each in-memory cache over the store (recent idempotency
    /// records, finalized reservations, holders). Memory is bounded by
    /// active state plus these caches; a miss costs one indexed read.
    #[arg(long, env = "BATON_CACHE", default_value_t = 100_000)]
    pub cache: usize,
    /// Drop finalized reservations and their idempotency records once they
    /// are this old (e.g. `24h`, `7days`). Unset: keep them forever. A
    /// replayed key older than this may be executed again (spec/http.md §3.6).
    #[arg(long, env = "BATON_RETAIN", value_parser = parse_retain)]
    pub retain: Option<std::time::Duration>,
    /// Longest a client may take to send a request head (from connecting,
    /// or from the first byte of a later request); then the connection is closed.
    #[arg(long, env = "BATON_HEADER_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
    pub header_timeout: Duration,
    /// Longest a kept-alive connection may stay idle between requests.
    /// Keep it above the idle timeout of a load balancer in front (60 s on many).
    #[arg(long, env = "BATON_IDLE_TIMEOUT", value_name = "DURATION", default_value = "75s", value_parser = positive_duration)]
    pub idle_timeout: Duration,
    /// Most connections open at once; beyond it new ones wait in the listen
    /// backlog until one closes. Keep it under the open-file limit (`ulimit -n`)
    /// with some room for the store.
    #[arg(long, env = "BATON_MAX_CONNECTIONS", value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// On shutdown, longest to wait for open requests to finish before closing their connections.
    #[arg(long, env = "BATON_DRAIN_TIMEOUT", value_name = "DURATION", default_value = "20s", value_parser = positive_duration)]
    pub drain_timeout: Duration,
}

impl ServeArgs {
    /// The connection settings these flags ask for.
    pub fn conn_limits(&self) -> super::ConnLimits {
        super::ConnLimits {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections as usize,
            drain_timeout: self.drain_timeout,
        }
    }
}

fn parse_audience(s: &str) -> Result<crate::proof::Audience, String> {
    crate::proof::Audience::new(s).map_err(|e| format!("{}: {e}", e.code()))
}

/// A duration of at least a millisecond: a zero timeout would close every connection at once.
fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(1) {
        return Err("must be at least 1ms".into());
    }
    Ok(d)
}

/// A schema name that needs no quoting in SQL.
fn pg_schema(s: &str) -> Result<String, String> {
    if crate::store::postgres::valid_schema(s) {
        Ok(s.to_owned())
    } else {
        Err("use 1 to 63 lower-case letters, digits and _, not starting with a digit".into())
    }
}

/// At least two minutes. A shorter window would forget keys that clients
/// are still retrying, and it must outlive every proof of possession the
/// record answers for: a proof is accepted at most 70 s after its first
/// use (60 s back, 10 s ahead), and a replay of it to a process whose
/// replay store never saw it is stopped only by the record (spec/http.md
/// §1.2.1). Two minutes leave 50 s for clock differences between servers.
fn parse_retain(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < MIN_RETAIN {
        return Err("the retention window must be at least 2 minutes".into());
    }
    Ok(d)
}

/// The shortest `--retain` window: see [`parse_retain`].
pub const MIN_RETAIN: std::time::Duration = std::time::Duration::from_secs(120);

impl ServeArgs {
    /// The writer's configuration from these flags.
    pub fn writer_config(&self) -> super::writer::WriterConfig {
        super::writer::WriterConfig::default()
            .cache(crate::ledger::CacheSizes::all(self.cache.max(1)))
            .retain(self.retain.map(|d| {
                super::writer::Retention::new(
                    u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                    50_000,
                )
            }))
            .max_batch(self.batch_size as usize)
            .writers(self.writers as usize)
    }

    /// The PostgreSQL store these flags name, if `--store` is a URL.
    pub fn postgres(&self) -> Option<crate::store::postgres::PgOptions> {
        let url = &self.store;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return None;
        }
        let mut o = crate::store::postgres::PgOptions::new(url);
        o.schema = self.pg_schema.clone();
        // Each writer keeps a connection of its own; start-up, sweeps and
        // pruning share the rest, at least one.
        let writers = self.writers as usize;
        o.pool_size = (self.pool_size as usize).max(writers + 1) - writers;
        Some(o)
    }
}

/// `baton keys rotate`: offline on a data directory no server owns
/// (`--data`), or live through a running server (`--url`).
#[derive(Debug, Clone, clap::Args)]
pub struct RotateArgs {
    /// Data directory of a stopped service [env: BATON_DATA; default:
    /// baton-data]. Refused while a server owns it: use --url then.
    // BATON_DATA is read in `rotate`, not by clap: clap would count it as
    // given and refuse it with --url in a shell that exports it for serve.
    #[arg(long, conflicts_with = "url")]
    pub data: Option<PathBuf>,
    /// Rotate through the running server at this address (http:// only),
    /// with an admin token from --admin-token-file, the BATON_ADMIN_TOKEN
    /// environment variable, or stdin.
    #[arg(long, value_name = "http://HOST:PORT")]
    pub url: Option<String>,
    /// File holding the admin token (such as DATA/admin.token), for --url.
    #[arg(long, value_name = "FILE", requires = "url")]
    pub admin_token_file: Option<PathBuf>,
}

/// The environment variable `baton keys rotate --url` reads the admin token
/// from when no `--admin-token-file` is given. The token is never taken as
/// an argument: arguments are visible to every user in the process list.
pub const ADMIN_TOKEN_ENV: &str = "BATON_ADMIN_TOKEN";

/// How long `baton keys rotate --url` waits for the server.
const ROTATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why `baton keys rotate` failed, named after the step that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RotateError {
    /// Offline rotation could not open or change the data directory.
    #[error("{0}{hint}", hint = locked_hint(.0))]
    Offline(super::StartError),
    /// `--url` is not an `http://` or `https://` URL of a host.
    #[error("reading --url {url}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No admin token was given, or it could not be read.
    #[error("reading the admin token from {from}: {reason}")]
    AdminToken {
        /// Where it was read from.
        from: String,
        /// Why it could not be used.
        reason: String,
    },
    /// The async runtime or the HTTP client could not start.
    #[error("starting the HTTP client: {0}")]
    Client(String),
    /// The server could not be reached or did not answer in time.
    #[error("calling {url}: {reason}")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// The transport failure.
        reason: String,
    },
    /// The server refused: its status and error code.
    #[error("the server answered {status} {code}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The `error.code` of the body (`not_admin`, `store_unavailable`...).
        code: String,
        /// The `error.message` of the body.
        message: String,
    },
    /// A 2xx answer without a `kid`.
    #[error("the server answered {status} without a kid")]
    BadAnswer {
        /// The HTTP status.
        status: u16,
    },
}

/// Why `baton serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Opening the data directory, store or keys failed.
    #[error("starting the ledger: {0}")]
    Start(#[from] super::StartError),
    /// Binding or serving failed.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The failure.
        source: std::io::Error,
    },
    /// The async runtime could not start.
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
    /// `--store` is neither `sqlite` nor a `postgres://` URL.
    #[error("--store must be sqlite or a postgres:// URL")]
    BadStore,
}

/// Runs the service until SIGTERM or Ctrl-C, then drains in-flight requests
/// and stops with the store consistent. Prints `listening on http://ADDR`
/// on stdout once ready, so scripts and tests can find a port-0 address.
pub fn serve(args: ServeArgs) -> Result<(), ServeError> {
    init_logs(args.json_logs);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(async move {
        let (service, admin) = match args.postgres() {
            Some(pg) => {
                tracing::info!(schema = %pg.schema, pool = pg.pool_size, "ledger store: PostgreSQL (shared)");
                super::open_postgres(&args.data, &pg, args.writer_config())?
            }
            None if args.store == "sqlite" => super::open(&args.data, args.writer_config())?,
            None => return Err(ServeError::BadStore),
        };
        service.set_audience(args.audience.clone());
        if let Some(path) = admin {
            // The token itself never goes to the logs: only where it is.
            tracing::info!(path = %path.display(), "wrote an admin token (mode 0600): first start, or the file was missing");
        }
        let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|source| ServeError::Listen { addr: args.listen, source })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Listen { addr: args.listen, source })?;
        tracing::info!(%addr, data = %args.data.display(), "baton ledger listening");
        println!("listening on http://{addr}");
        service.serve_with(listener, args.conn_limits(), shutdown_signal()).await.map_err(|source| ServeError::Listen { addr, source })?;
        tracing::info!("drained and stopped");
        Ok(())
    })
}

/// Adds a new active root key, offline or through a running server, and
/// returns its kid.
pub fn rotate(args: RotateArgs) -> Result<String, RotateError> {
    match &args.url {
        None => {
            let data = args
                .data
                .clone()
                .or_else(|| std::env::var_os("BATON_DATA").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("baton-data"));
            super::rotate_key(&data).map_err(RotateError::Offline)
        }
        Some(url) => rotate_live(url, &admin_token(&args)?),
    }
}

/// Offline rotation found a server owning the directory: point at the way
/// that works.
fn locked_hint(e: &super::StartError) -> &'static str {
    if matches!(e, super::StartError::Locked { .. }) {
        "; to rotate a running server's key, use `baton keys rotate --url http://HOST:PORT`"
    } else {
        ""
    }
}

/// An admin token is one line of base64url; a larger input is not one.
const MAX_ADMIN_TOKEN: u64 = crate::limits::MAX_TOKEN_TEXT as u64 + 2;

/// The admin token: from `--admin-token-file`, else `BATON_ADMIN_TOKEN`,
/// else stdin (unless it is a terminal). Surrounding whitespace is trimmed.
fn admin_token(args: &RotateArgs) -> Result<Zeroizing<String>, RotateError> {
    let fail = |from: &str, reason: String| RotateError::AdminToken {
        from: from.to_owned(),
        reason,
    };
    let mut text = Zeroizing::new(String::new());
    let from = if let Some(path) = &args.admin_token_file {
        let from = path.display().to_string();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_ADMIN_TOKEN + 1).read_to_string(&mut text))
            .map_err(|e| fail(&from, e.to_string()))?;
        from
    } else if let Some(v) = std::env::var_os(ADMIN_TOKEN_ENV) {
        let v = v
            .into_string()
            .map_err(|_| fail(ADMIN_TOKEN_ENV, "not UTF-8".into()))?;
        *text = v;
        ADMIN_TOKEN_ENV.to_owned()
    } else {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            return Err(fail(
                "stdin",
                format!(
                    "stdin is a terminal; pass --admin-token-file FILE, set {ADMIN_TOKEN_ENV}, or pipe the token in"
                ),
            ));
        }
        stdin
            .lock()
            .take(MAX_ADMIN_TOKEN + 1)
            .read_to_string(&mut text)
            .map_err(|e| fail("stdin", e.to_string()))?;
        "stdin".to_owned()
    };
    if text.len() as u64 > MAX_ADMIN_TOKEN {
        return Err(fail(&from, "too large to be a token".into()));
    }
    let token = text.trim();
    if token.is_empty() {
        return Err(fail(&from, "empty".into()));
    }
    Ok(Zeroizing::new(token.to_owned()))
}

/// `POST URL/v1/keys/rotate` with the admin token; the new kid.
fn rotate_live(url: &str, token: &str) -> Result<String, RotateError> {
    let bad = |reason| RotateError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| bad("not a URL"))?;
    // https goes through reqwest's rustls client, with the platform's
    // trust roots; the admin token never travels over anything else
    // than what the operator named.
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("expected http://HOST:PORT or https://HOST[:PORT]"));
    }
    if parsed.host().is_none() || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("expected http://HOST:PORT or https://HOST[:PORT]"));
    }
    let endpoint = format!("{}/v1/keys/rotate", parsed.as_str().trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RotateError::Client(e.to_string()))?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(ROTATE_TIMEOUT)
            .build()
            .map_err(|e| RotateError::Client(e.to_string()))?;
        let unreachable = |e: reqwest::Error| RotateError::Unreachable {
            url: endpoint.clone(),
            reason: e.to_string(),
        };
        let resp = client
            .post(&endpoint)
            .header(reqwest::header::AUTHORIZATION, format!("Bearer {token}"))
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            let field = |name: &str| {
                body["error"][name]
                    .as_str()
                    .unwrap_or("(no error body)")
                    .to_owned()
            };
            return Err(RotateError::Refused {
                status,
                code: field("code"),
                message: field("message"),
            });
        }
        body["kid"]
            .as_str()
            .map(str::to_owned)
            .ok_or(RotateError::BadAnswer { status })
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; draining");
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless; ignore it.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retention_window_outlives_every_proof() {
        // A proof lives at most 70 s after its first use; the window must
        // be longer, whatever the spelling.
        for short in ["1m", "60s", "119s", "1s"] {
            assert!(parse_retain(short).is_err(), "{short}");
        }
        assert_eq!(parse_retain("2m"), Ok(MIN_RETAIN));
        assert_eq!(
            parse_retain("24h"),
            Ok(std::time::Duration::from_secs(86_400))
        );
        assert!(parse_retain("soon").is_err());
    }

    #[test]
    fn live_rotation_takes_http_and_https_urls_only() {
        for url in [
            "ftp://127.0.0.1:1",
            "127.0.0.1:1",
            "http://127.0.0.1:1/?x=1",
        ] {
            assert!(
                matches!(rotate_live(url, "t"), Err(RotateError::BadUrl { .. })),
                "{url}"
            );
        }
        // Both schemes are tried: nothing listens on port 1.
        for url in ["http://127.0.0.1:1", "https://127.0.0.1:1"] {
            assert!(
                matches!(rotate_live(url, "t"), Err(RotateError::Unreachable { .. })),
                "{url}"
            );
        }
    }
}
