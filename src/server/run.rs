//! The `baton serve` and `baton keys rotate` commands, kept in the library
//! so the binary's `main` stays a thin dispatcher.

use std::net::SocketAddr;
use std::path::PathBuf;

/// `baton serve`: run the ledger service on its embedded store.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Data directory: the SQLite ledger and, after the first start, the admin token.
    #[arg(long, env = "BATON_DATA", default_value = "baton-data")]
    pub data: PathBuf,
    /// Address to listen on. Loopback by default; port 0 picks a free port.
    #[arg(long, env = "BATON_LISTEN", default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub json_logs: bool,
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
}

/// At least a minute: a shorter window would forget keys that clients
/// are still retrying.
fn parse_retain(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < std::time::Duration::from_secs(60) {
        return Err("the retention window must be at least 1 minute".into());
    }
    Ok(d)
}

impl ServeArgs {
    /// The writer's configuration from these flags.
    pub fn writer_config(&self) -> super::writer::WriterConfig {
        super::writer::WriterConfig {
            cache: crate::ledger::CacheSizes::all(self.cache.max(1)),
            retain: self.retain.map(|d| super::writer::Retention {
                keep_ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                batch: 50_000,
            }),
            ..Default::default()
        }
    }
}

/// `baton keys rotate`.
#[derive(Debug, Clone, clap::Args)]
pub struct RotateArgs {
    /// Data directory of the service.
    #[arg(long, env = "BATON_DATA", default_value = "baton-data")]
    pub data: PathBuf,
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
        let (service, admin) = super::open(&args.data, args.writer_config())?;
        if let Some(path) = admin {
            // The token itself never goes to the logs: only where it is.
            tracing::info!(path = %path.display(), "wrote an admin token (mode 0600): first start, or the file was missing");
        }
        let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|source| ServeError::Listen { addr: args.listen, source })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Listen { addr: args.listen, source })?;
        tracing::info!(%addr, data = %args.data.display(), "baton ledger listening");
        println!("listening on http://{addr}");
        service.serve(listener, shutdown_signal()).await.map_err(|source| ServeError::Listen { addr, source })?;
        tracing::info!("drained and stopped");
        Ok(())
    })
}

/// Adds a new active root key; prints its kid.
pub fn rotate(args: RotateArgs) -> Result<String, super::StartError> {
    super::rotate_key(&args.data)
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
