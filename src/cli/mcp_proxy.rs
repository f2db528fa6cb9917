//! `baton mcp-proxy`: read the flags, files and token, then hand over to
//! [`baton::mcp::Proxy`] on stdio.
//!
//! The agent's token is never a command-line argument (it would show in
//! `ps` and shell history, and clap would echo it in errors): it comes from
//! `--token-file` or an environment variable, and that variable is removed
//! from the downstream command's environment.

use std::ffi::OsString;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use std::time::Duration;

use baton::client::{Bearer, Client, FeedPolicy, KeyPolicy, KeySource, RevocationFeed};
use baton::limits::MAX_TOKEN_TEXT;
use baton::mcp::proxy::Settings;
use baton::mcp::{Downstream, Policy, Proxy, ProxyError};
use baton::{PublicKey, Verifier};
use zeroize::Zeroizing;

use super::{CliError, Outcome, io};

/// Verified chains kept in the verifier's cache: one agent presents one
/// token, so a handful is plenty.
const VERIFIER_CACHE: usize = 64;

/// Arguments of `baton mcp-proxy`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("downstream").required(true).args(["downstream_url", "command"])))]
pub struct McpProxyArgs {
    /// The server's name: tool T is action NAME.T unless the configuration
    /// maps it. Overrides the configuration's `server`.
    #[arg(long, value_name = "NAME")]
    server: Option<String>,
    /// The policy file (JSON, spec/mcp.md §2): actions, resources and costs per tool.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A trusted root public key (baton_pk1_...). Repeatable. Without
    /// --key and --keyset, the keys are fetched from --ledger.
    #[arg(long = "key", value_name = "PUBLIC_KEY", value_parser = parse_public_key)]
    keys: Vec<PublicKey>,
    /// A file of trusted public keys, one per line (as for `baton verify`).
    #[arg(long, value_name = "FILE")]
    keyset: Option<PathBuf>,
    /// The ledger's base URL: priced tools are held and charged there, and
    /// the keys are fetched from it when none are given.
    #[arg(long, value_name = "URL")]
    ledger: Option<String>,
    /// Keys fetched from --ledger are refetched when a token names an
    /// unknown key id (a rotation), but at most once per this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    keys_min_interval: u64,
    /// A file holding a token with the right `baton.admin.revocations.read`:
    /// the proxy then follows the ledger's revocation feed, so that revoked
    /// tokens are refused offline, free tools included. Needs --ledger.
    #[arg(long, value_name = "FILE", requires = "ledger")]
    feed_token_file: Option<PathBuf>,
    /// Seconds between two polls of the revocation feed.
    #[arg(long, value_name = "SECONDS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    feed_interval: u64,
    /// Seconds without a successful poll after which every call is refused
    /// `revocations_stale`.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    feed_max_staleness: u64,
    /// Serve agents over streamable HTTP at http://ADDR/mcp instead of
    /// stdio; each call's token is its `Authorization: Bearer` header.
    /// Prints the bound address on stdout. Stops on Ctrl-C or SIGTERM.
    #[arg(long, value_name = "ADDR", conflicts_with = "token_file")]
    listen: Option<std::net::SocketAddr>,
    /// A file holding the agent's token. Default: the variable of --token-env.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The environment variable holding the agent's token; it is not passed
    /// on to the downstream command.
    #[arg(long, value_name = "VAR", default_value = "BATON_TOKEN")]
    token_env: String,
    /// The downstream server's streamable HTTP URL.
    #[arg(long, value_name = "URL")]
    downstream_url: Option<String>,
    /// The downstream server's command and arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

fn parse_public_key(s: &str) -> Result<PublicKey, String> {
    PublicKey::from_text(s).map_err(|e| format!("{}: {e} (expected baton_pk1_...)", e.code()))
}

/// Runs the proxy until the agent closes stdin.
pub fn run(args: McpProxyArgs) -> Result<Outcome, CliError> {
    // Logs go to stderr: stdout carries the MCP session.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BATON_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rmcp=error")),
        )
        .try_init();
    let policy = read_policy(args.config.as_deref(), args.server.as_deref())?;
    let token = match args.listen {
        Some(_) => None,
        None => Some(read_token(args.token_file.as_deref(), &args.token_env)?),
    };
    let downstream = match (args.downstream_url, args.command.split_first()) {
        (Some(url), _) => Downstream::Url(url),
        (None, Some((program, rest))) => Downstream::Command {
            program: program.clone(),
            args: rest.to_vec(),
            env_remove: vec![OsString::from(&args.token_env)],
        },
        // clap's group requires one of them.
        (None, None) => return Err(CliError::ProxyToken("no downstream server given")),
    };
    let feed_token = match &args.feed_token_file {
        Some(path) => Some(read_token(Some(path), "")?),
        None => None,
    };
    let local_keys = if args.keys.is_empty() && args.keyset.is_none() {
        None
    } else {
        Some(io::read_keyset(&args.keys, args.keyset.as_deref())?)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Proxying(ProxyError::Agent(e.to_string())))?;
    runtime
        .block_on(async move {
            let ledger = match &args.ledger {
                Some(url) => Some(Client::new(url)?),
                None => None,
            };
            let mut settings = match (local_keys, &ledger) {
                (Some(k), _) => {
                    Settings::new(policy, Verifier::new(k).with_cache(VERIFIER_CACHE), token)
                }
                (None, Some(l)) => {
                    let keys = KeySource::start(
                        l.clone(),
                        KeyPolicy::new(
                            KeyPolicy::default().max_age,
                            Duration::from_secs(args.keys_min_interval),
                        ),
                        |k| Verifier::new(k).with_cache(VERIFIER_CACHE),
                    )
                    .await?;
                    Settings::with_key_source(policy, keys, token)
                }
                (None, None) => return Ok(None),
            };
            if let (Some(admin), Some(l)) = (feed_token, &ledger) {
                let feed = RevocationFeed::start(
                    l.clone(),
                    Bearer::new(admin.to_string()),
                    settings.verifier.clone(),
                    FeedPolicy::new(
                        Duration::from_secs(args.feed_interval),
                        Duration::from_secs(args.feed_max_staleness),
                    ),
                )
                .await?;
                settings = settings.with_feed(feed);
            }
            if let Some(l) = ledger {
                settings = settings.with_ledger(l);
            }
            let Some(addr) = args.listen else {
                let proxy = Proxy::connect(settings, &downstream).await?;
                return proxy.serve_stdio().await.map(Some);
            };
            let proxy = Proxy::connect(settings.bearer_header(), &downstream).await?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| ProxyError::Agent(format!("binding {addr}: {e}")))?;
            let bound = listener
                .local_addr()
                .map_err(|e| ProxyError::Agent(e.to_string()))?;
            // Ignored: nobody reading stdout does not stop the service.
            let _ = io::emit(&format!("listening on http://{bound}/mcp\n"));
            proxy
                .serve_http(listener, shutdown_signal())
                .await
                .map(Some)
        })
        .map_err(CliError::Proxying)?
        .ok_or(CliError::NoKeys)?;
    Ok(Outcome::Done)
}

/// Ctrl-C or SIGTERM; if a handler cannot be installed, only the other.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            if r.is_err() {
                std::future::pending::<()>().await;
            }
        }
        () = term => {}
    }
}

fn read_policy(path: Option<&Path>, server: Option<&str>) -> Result<Policy, CliError> {
    let Some(path) = path else {
        return Policy::new(server.unwrap_or_default()).map_err(CliError::ParsingProxyConfig);
    };
    let reading = |source| CliError::ReadingProxyFile {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(baton::mcp::policy::MAX_CONFIG_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(reading)?;
    Policy::from_json(&bytes, server).map_err(CliError::ParsingProxyConfig)
}

/// The agent's token from `file`, or else from the variable `var`; one
/// trailing newline is dropped. The text is checked only when used, so
/// that a bad token is refused per call with its reason code.
fn read_token(file: Option<&Path>, var: &str) -> Result<Zeroizing<String>, CliError> {
    let mut text = Zeroizing::new(String::new());
    match file {
        Some(path) => {
            std::fs::File::open(path)
                .and_then(|f| f.take(MAX_TOKEN_TEXT as u64 + 2).read_to_string(&mut text))
                .map_err(|source| CliError::ReadingProxyFile {
                    path: path.to_owned(),
                    source,
                })?;
        }
        None => match std::env::var(var) {
            Ok(v) => text.push_str(&v),
            Err(_) => {
                return Err(CliError::ProxyToken(
                    "no token: pass --token-file FILE or set BATON_TOKEN (or the --token-env variable)",
                ));
            }
        },
    }
    if text.ends_with('\n') {
        text.pop();
    }
    if text.is_empty() {
        return Err(CliError::ProxyToken("the token is empty"));
    }
    if text.len() > MAX_TOKEN_TEXT {
        return Err(CliError::ProxyToken("the token is too large"));
    }
    Ok(text)
}
