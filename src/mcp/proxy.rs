//! The MCP server handler of the proxy and its transports.
//!
//! Over stdio, one [`Proxy`] serves one agent with the token given at
//! start. Over streamable HTTP it serves any number of agents, each call
//! with the token of its own `Authorization: Bearer` header. The downstream
//! connection is opened once and shared by every call.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RunningService, ServiceError};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ErrorData as McpError, Peer, RoleClient, RoleServer, ServerHandler, ServiceExt};
use serde_json::json;
use zeroize::Zeroizing;

use crate::token::Token;
use crate::verifier::Verifier;

use crate::client::{
    Action, Bearer, Client, ClientError, IdempotencyKey, KeySource, LiveVerifier, Reserve,
    RevocationFeed,
};

use super::Refusal;
use super::policy::{Charge, MappedCall, Policy, actual_cost};

/// How long a hold lasts if the proxy never finishes it (a crash, a
/// cancelled call): the ledger then returns it by itself (spec/http.md §3.5).
const HOLD_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// The downstream MCP server the proxy forwards allowed calls to.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Downstream {
    /// A command to spawn, speaking MCP on its stdin and stdout.
    Command {
        /// The program.
        program: OsString,
        /// Its arguments.
        args: Vec<OsString>,
        /// Environment variables the child must not inherit, such as the
        /// one holding the agent's token: the downstream server is given
        /// calls, never the authority behind them.
        env_remove: Vec<OsString>,
    },
    /// A streamable HTTP endpoint, such as `http://127.0.0.1:8000/mcp`.
    Url(String),
}

/// Why the proxy could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The downstream command could not be spawned.
    #[error("spawning the downstream server: {0}")]
    Spawn(#[source] std::io::Error),
    /// The MCP handshake with the downstream server failed.
    #[error("connecting to the downstream server: {0}")]
    Downstream(String),
    /// The MCP handshake with the agent failed, or the session broke.
    #[error("serving the agent: {0}")]
    Agent(String),
    /// A tool has a cost but no ledger was given.
    #[error("the configuration prices tools but no ledger URL was given")]
    NoLedger,
    /// The ledger could not be used at start (its keyset).
    #[error("the ledger: {0}")]
    Ledger(#[from] ClientError),
}

/// What the proxy needs besides the downstream connection.
#[non_exhaustive]
pub struct Settings {
    /// How tools map to actions, resources, arguments and costs.
    pub policy: Policy,
    /// The trusted keys (and revocations), shared with the key source and
    /// the revocation feed that keep them current.
    pub verifier: LiveVerifier,
    /// Keeps the keys equal to the ledger's: a token naming an unknown key
    /// id triggers a rate-limited refetch (spec/mcp.md §1). Without one the
    /// keys are fixed.
    pub keys: Option<Arc<KeySource>>,
    /// Follows the ledger's revocation feed into the verifier; while it is
    /// stale every call is refused `revocations_stale` (spec/mcp.md §3).
    pub feed: Option<Arc<RevocationFeed>>,
    /// The agent's token. Without one (and without
    /// [`Settings::bearer_header`]) every call is refused `missing_token`.
    pub token: Option<Zeroizing<String>>,
    /// Each call's token comes from its HTTP `Authorization: Bearer`
    /// header instead (streamable HTTP only).
    pub from_header: bool,
    /// The ledger, for priced tools.
    pub ledger: Option<Client>,
}

impl Settings {
    /// Settings for `policy`, `verifier` and `token`, without a ledger.
    pub fn new(policy: Policy, verifier: Verifier, token: Option<Zeroizing<String>>) -> Self {
        Self {
            policy,
            verifier: LiveVerifier::new(verifier),
            keys: None,
            feed: None,
            token,
            from_header: false,
            ledger: None,
        }
    }

    /// Settings whose keys follow the ledger through `keys`.
    pub fn with_key_source(
        policy: Policy,
        keys: Arc<KeySource>,
        token: Option<Zeroizing<String>>,
    ) -> Self {
        Self {
            policy,
            verifier: keys.verifier().clone(),
            keys: Some(keys),
            feed: None,
            token,
            from_header: false,
            ledger: None,
        }
    }

    /// Follows the revocation feed: `feed` must update [`Settings::verifier`].
    pub fn with_feed(mut self, feed: RevocationFeed) -> Self {
        self.feed = Some(Arc::new(feed));
        self
    }

    /// Takes each call's token from its HTTP bearer header (for
    /// [`Proxy::serve_http`]); a token given at start is dropped.
    pub fn bearer_header(mut self) -> Self {
        self.token = None;
        self.from_header = true;
        self
    }

    /// Adds a ledger for priced tools.
    pub fn with_ledger(mut self, ledger: Client) -> Self {
        self.ledger = Some(ledger);
        self
    }
}

/// The MCP gateway: an MCP server handler forwarding allowed tool calls.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    downstream: Peer<RoleClient>,
    /// Keeps the downstream session (and child process) alive.
    _session: RunningService<RoleClient, ()>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("policy", &self.inner.settings.policy)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Connects to `downstream` and returns the proxy, ready to serve.
    pub async fn connect(settings: Settings, downstream: &Downstream) -> Result<Self, ProxyError> {
        if settings.policy.has_costs() && settings.ledger.is_none() {
            return Err(ProxyError::NoLedger);
        }
        let session = match downstream {
            Downstream::Command {
                program,
                args,
                env_remove,
            } => {
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(args);
                for var in env_remove {
                    cmd.env_remove(var);
                }
                let transport = TokioChildProcess::new(cmd).map_err(ProxyError::Spawn)?;
                ().serve(transport).await
            }
            Downstream::Url(url) => {
                ().serve(StreamableHttpClientTransport::from_uri(url.as_str()))
                    .await
            }
        }
        .map_err(|e| ProxyError::Downstream(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                downstream: session.peer().clone(),
                _session: session,
            }),
        })
    }

    /// Serves one agent on this process's stdin and stdout until it leaves.
    pub async fn serve_stdio(self) -> Result<(), ProxyError> {
        let running = self
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| ProxyError::Agent(e.to_string()))?;
        running
            .waiting()
            .await
            .map_err(|e| ProxyError::Agent(e.to_string()))?;
        Ok(())
    }

    /// Serves agents over streamable HTTP at `/mcp` on `listener` until
    /// `shutdown` completes. Only loopback `Host` headers are accepted
    /// (rmcp's DNS-rebinding guard): put a reverse proxy in front of it to
    /// serve other hosts.
    pub async fn serve_http(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ProxyError> {
        use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
        use rmcp::transport::streamable_http_server::{
            StreamableHttpServerConfig, StreamableHttpService,
        };
        let service = StreamableHttpService::new(
            move || Ok(self.clone()),
            LocalSessionManager::default().into(),
            StreamableHttpServerConfig::default(),
        );
        let router = axum::Router::new().nest_service("/mcp", service);
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| ProxyError::Agent(e.to_string()))
    }

    /// The token of this call: the one given at start, or the bearer token
    /// of the HTTP request (spec/http.md §1.2 rules).
    fn token<'a>(&'a self, ctx: &'a RequestContext<RoleServer>) -> Result<&'a str, Refusal> {
        let s = &self.inner.settings;
        if !s.from_header {
            return s
                .token
                .as_deref()
                .map(String::as_str)
                .ok_or(Refusal::MissingToken);
        }
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.headers.get(axum::http::header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .ok_or(Refusal::MissingToken)
    }

    /// Verifies a token offline, first refusing every token while the
    /// revocation feed is stale. Only an unknown key id leaves the process:
    /// it may refetch the keyset (rate-limited by the key source).
    async fn verify(&self, token: &str) -> Result<Token, Refusal> {
        let s = &self.inner.settings;
        if s.feed.as_ref().is_some_and(|f| !f.is_fresh()) {
            return Err(Refusal::RevocationsStale);
        }
        Ok(match &s.keys {
            Some(keys) => keys.verify_text(token).await?,
            None => s.verifier.verify_text(token)?,
        })
    }

    /// Verifies, maps and authorizes one call; only a key refetch leaves
    /// the process.
    async fn admit(
        &self,
        token: &str,
        params: &CallToolRequestParams,
        now: u64,
    ) -> Result<MappedCall, Refusal> {
        let s = &self.inner.settings;
        let token = self.verify(token).await?;
        let call = s
            .policy
            .map_call(&params.name, params.arguments.as_ref(), now)?;
        s.verifier.authorize(&token, &call.request)?;
        Ok(call)
    }

    /// Admits the call, holds its cost, forwards it, and charges or
    /// releases the hold by the outcome.
    async fn forward(
        &self,
        token: Result<&str, Refusal>,
        params: CallToolRequestParams,
    ) -> Result<CallToolResponse, McpError> {
        let token = match token {
            Ok(t) => t,
            Err(r) => return Ok(refused(&r).into()),
        };
        let call = match self.admit(token, &params, now()).await {
            Ok(c) => c,
            Err(r) => return Ok(refused(&r).into()),
        };
        let (Some(charge), Some(ledger)) = (&call.charge, &self.inner.settings.ledger) else {
            return self.call_downstream(params).await;
        };
        let bearer = Bearer::new(token.to_owned());
        let key = match IdempotencyKey::random() {
            Ok(k) => k,
            Err(_) => return Ok(refused(&Refusal::LedgerUnavailable).into()),
        };
        let id = match ledger
            .reserve(&bearer, &reserve_of(&call, charge, &key))
            .await
        {
            Ok(r) => r.id,
            Err(e) => return Ok(refused(&ledger_refusal(e)).into()),
        };
        let outcome = self.call_downstream(params).await;
        let actual = match &outcome {
            Ok(CallToolResponse::Complete(r)) if r.is_error != Some(true) => {
                Some(actual_cost(charge, r.structured_content.as_ref()))
            }
            // Work was started and will finish: the estimate is charged.
            Ok(CallToolResponse::Task(_)) => Some(charge.amount),
            // A tool error, a protocol error, or a request for more input
            // (the retry is a new call): nothing is charged.
            _ => None,
        };
        let finished = match actual {
            Some(actual) => {
                let done = match key.derive("commit") {
                    Ok(k) => ledger.commit(&bearer, &id, actual, &k).await,
                    Err(e) => Err(e),
                };
                match done {
                    // Over the hold without room: charge at least the hold.
                    Err(e) if actual > charge.amount && e.code() == "insufficient_budget" => {
                        match key.derive("commit-hold") {
                            Ok(k) => ledger.commit(&bearer, &id, charge.amount, &k).await,
                            Err(e) => Err(e),
                        }
                    }
                    other => other,
                }
            }
            None => match key.derive("release") {
                Ok(k) => ledger.release(&bearer, &id, &k).await,
                Err(e) => Err(e),
            },
        };
        if let Err(e) = finished {
            // The call has run; its answer still goes back. The hold lapses
            // by itself at its expiry (spec/http.md §3.5).
            tracing::error!(reservation = %id, error = %e, "finishing the reservation failed");
        }
        outcome
    }

    async fn call_downstream(
        &self,
        params: CallToolRequestParams,
    ) -> Result<CallToolResponse, McpError> {
        self.inner
            .downstream
            .call_tool_once(params)
            .await
            .map_err(downstream_error)
    }
}

impl ServerHandler for Proxy {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "baton-mcp-proxy",
                env!("CARGO_PKG_VERSION"),
            ));
        if let Some(i) = self
            .inner
            .downstream
            .peer_info()
            .and_then(|p| p.instructions.clone())
        {
            info = info.with_instructions(i);
        }
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let s = &self.inner.settings;
        // An absent or invalid token (or a stale feed) sees no tool.
        let token = match self.token(&context) {
            Ok(t) => self.verify(t).await.ok(),
            Err(_) => None,
        };
        let Some(token) = token else {
            return Ok(ListToolsResult::with_all_items(Vec::new()));
        };
        let tools = self
            .inner
            .downstream
            .list_all_tools()
            .await
            .map_err(downstream_error)?;
        let now = now();
        let visible = tools
            .into_iter()
            .filter(|t| {
                s.verifier
                    .read(|v| s.policy.visible(v, &token, &t.name, now))
            })
            .collect();
        Ok(ListToolsResult::with_all_items(visible))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        self.forward(self.token(&context), request).await
    }
}

/// A refusal as an MCP tool error: the ledger's error body as structured
/// content, and `denied <code>: <message>` as text.
pub fn refused(r: &Refusal) -> CallToolResult {
    let mut result = CallToolResult::structured_error(json!({
        "error": {"code": r.code(), "message": r.to_string()}
    }));
    result.content = vec![ContentBlock::text(format!("denied {}: {r}", r.code()))];
    result
}

/// The downstream server's own protocol error is passed on; a broken
/// connection is an internal error without detail.
fn downstream_error(e: ServiceError) -> McpError {
    match e {
        ServiceError::McpError(e) => e,
        e => {
            tracing::warn!(error = %e, "downstream call failed");
            McpError::internal_error("the downstream server did not answer", None)
        }
    }
}

/// The token of an `Authorization` header value: the scheme `Bearer`
/// (any case), one space, then the token, trimmed (spec/http.md §1.2).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case("bearer ") {
        return None;
    }
    Some(rest.trim()).filter(|t| !t.is_empty())
}

/// The reserve of one priced call: the same action, resource and
/// arguments the token was checked against offline.
fn reserve_of(call: &MappedCall, charge: &Charge, key: &IdempotencyKey) -> Reserve {
    let mut action = Action::new(call.action.clone());
    action.resource = call.resource.clone();
    action.args = call.args.clone();
    Reserve::new(action, charge.unit.clone(), charge.amount)
        .key(key)
        .ttl(HOLD_TTL)
}

/// A failed reserve as a refusal: the ledger's own code for its 4xx
/// answers, `ledger_unavailable` for everything else.
fn ledger_refusal(e: ClientError) -> Refusal {
    match e.api() {
        Some(api) if (400..500).contains(&api.status) && !api.is_retryable() => {
            // The code is passed on to the agent: only one of the spec's
            // shape is.
            let code = if !api.code.is_empty()
                && api.code.len() <= 64
                && api
                    .code
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                api.code.clone()
            } else {
                "ledger_rejected".to_owned()
            };
            Refusal::Ledger {
                code,
                message: api.message.chars().take(512).collect(),
            }
        }
        _ => {
            tracing::warn!(error = %e, "reserve failed");
            Refusal::LedgerUnavailable
        }
    }
}

/// Unix seconds. A clock before 1970 reads as 0, where no token with an
/// expiry validates.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_follows_the_ledger_rules() {
        assert_eq!(bearer("Bearer baton_v1_x"), Some("baton_v1_x"));
        assert_eq!(bearer("bEaReR  baton_v1_x "), Some("baton_v1_x"));
        for bad in [
            "Bearer",
            "Bearer ",
            "Bearer\tbaton_v1_x",
            "Basic abc",
            "",
            "Bearerbaton_v1_x",
        ] {
            assert_eq!(bearer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn refusals_carry_the_code_in_text_and_structure() {
        let r = refused(&Refusal::CostArg("max_tokens".into()));
        assert_eq!(r.is_error, Some(true));
        let s = r.structured_content.unwrap();
        assert_eq!(s["error"]["code"], "cost_arg_invalid");
        let text = r.content[0].as_text().unwrap().text.clone();
        assert!(
            text.starts_with("denied cost_arg_invalid: argument max_tokens"),
            "{text}"
        );
    }
}
