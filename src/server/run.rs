//! The `baton serve` and `baton keys rotate` commands, kept in the library
//! so the binary's `main` stays a thin dispatcher.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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

/// A duration of at least a millisecond: a zero timeout would close every connection at once.
fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(1) {
        return Err("must be at least 1ms".into());
    }
    Ok(d)
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
        let (service, admin) = super::open(&args.data)?;
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
