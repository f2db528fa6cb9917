//! `baton mcp-proxy` end to end: an rmcp client drives the built `baton`
//! binary over stdio; the proxy forwards to the tools of
//! `examples/mcp_tools.rs`, served in-process over streamable HTTP so that
//! the test sees every call they receive; priced tools are held and
//! charged on a live ledger service on a loopback socket.
#![cfg(all(feature = "mcp", feature = "server"))]

#[allow(dead_code)]
#[path = "../examples/mcp_tools.rs"]
mod mcp_tools;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use baton::pattern::ActionPattern;
use baton::server::Service;
use baton::server::writer::{SystemClock, WriterConfig};
use baton::store::sqlite::SqliteStore;
use baton::{ArgBound, ArgConstraint, Caveat, RootKey, Token, Unit};
use mcp_tools::Tools;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The policy the tests run under (spec/mcp.md §2).
const CONFIG: &str = r#"{"server": "demo", "tools": {
    "read": {"resource_arg": "path", "resource_prefix": "file:"},
    "generate": {"cost": {"unit": "tokens", "amount_arg": "max_tokens", "actual_field": "used"}},
    "bill": {"cost": {"unit": "tokens", "amount": 5, "actual_field": "used"}},
    "fail": {"cost": {"unit": "calls", "amount": 1}}
}}"#;

/// The agent of most tests: every tool but `delete`, `add` bounded to 0..=100.
fn agent_caveats() -> Vec<Caveat> {
    vec![
        Caveat::tools([
            "demo.echo",
            "demo.add",
            "demo.read",
            "demo.generate",
            "demo.bill",
            "demo.fail",
        ])
        .unwrap(),
        Caveat::ArgBound(ArgConstraint::new(
            ActionPattern::parse("demo.add").unwrap(),
            "a",
            ArgBound::Range {
                min: Some(0),
                max: Some(100),
            },
        )),
    ]
}

struct Harness {
    ledger: String,
    agent: Token,
    /// All of `baton.admin.*` on the ledger (rotate, revoke, feed).
    admin: Option<Token>,
    tools: Tools,
    client: RunningService<RoleClient, ()>,
    _stops: Vec<oneshot::Sender<()>>,
    _config: TempFile,
}

/// A file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "baton-mcp-{}-{}.json",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Serves the tools over streamable HTTP; returns the endpoint URL.
async fn serve_tools(tools: Tools) -> (String, oneshot::Sender<()>) {
    let service = StreamableHttpService::new(
        move || Ok(tools.clone()),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default(),
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (url, stop)
}

impl Harness {
    /// A ledger whose root allows `demo.*` with 1000 tokens and 10 calls, an
    /// agent token with `agent` caveats below it, the tools, and the proxy.
    async fn start(agent: Vec<Caveat>) -> Self {
        let store = SqliteStore::in_memory().unwrap();
        let service = Service::start(
            Box::new(store),
            Arc::new(SystemClock),
            WriterConfig::default(),
        )
        .unwrap();
        let root = service
            .mint(vec![
                Caveat::budget(Unit::Tokens, 1000),
                Caveat::budget(Unit::Calls, 10),
                Caveat::tools(["demo.*"]).unwrap(),
            ])
            .unwrap();
        let agent = root.attenuate(agent).unwrap();
        let admin = service.mint_admin_token().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ledger = format!("http://{}", listener.local_addr().unwrap());
        let (ledger_stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(service.serve(listener, async move {
            let _ = stopped.await;
        }));
        let mut h = Self::with_proxy(ledger, ledger_stop, agent.to_text(), agent).await;
        h.admin = Some(admin);
        h
    }

    async fn with_proxy(
        ledger: String,
        ledger_stop: oneshot::Sender<()>,
        token_text: String,
        agent: Token,
    ) -> Self {
        let tools = Tools::default();
        let (tools_url, tools_stop) = serve_tools(tools.clone()).await;
        let config = TempFile::new(CONFIG);
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"));
        cmd.arg("mcp-proxy")
            .arg("--config")
            .arg(&config.0)
            .args(["--ledger", &ledger, "--downstream-url", &tools_url])
            .env("BATON_TOKEN", token_text);
        let client = ().serve(TokioChildProcess::new(cmd).unwrap()).await.unwrap();
        Self {
            ledger,
            agent,
            admin: None,
            tools,
            client,
            _stops: vec![ledger_stop, tools_stop],
            _config: config,
        }
    }

    async fn call(&self, tool: &str, args: Value) -> CallToolResult {
        let params = CallToolRequestParams::new(tool.to_owned())
            .with_arguments(args.as_object().unwrap().clone());
        self.client.call_tool(params).await.unwrap()
    }

    /// `spent` and `held` of the agent's own scope of `unit`.
    async fn balance(&self, unit: &str) -> (u64, u64) {
        let v: Value = reqwest::Client::new()
            .get(format!("{}/v1/balances", self.ledger))
            .bearer_auth(self.agent.to_text())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let scope = v["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["unit"] == unit)
            .unwrap_or_else(|| panic!("no {unit} scope in {v}"));
        (
            scope["spent"].as_u64().unwrap(),
            scope["held"].as_u64().unwrap(),
        )
    }
}

/// The text of a result's first content block.
fn text(r: &CallToolResult) -> String {
    r.content[0].as_text().unwrap().text.clone()
}

/// Asserts `r` is a refusal with reason `code`.
fn assert_refused(r: &CallToolResult, code: &str) {
    assert_eq!(r.is_error, Some(true), "{r:?}");
    let s = r.structured_content.as_ref().expect("structured error");
    assert_eq!(s["error"]["code"], code, "{s}");
    assert!(
        text(r).starts_with(&format!("denied {code}: ")),
        "{}",
        text(r)
    );
}

#[tokio::test]
async fn allowed_calls_pass_and_denials_never_reach_the_downstream() {
    let h = Harness::start(agent_caveats()).await;
    let r = h.call("echo", json!({"text": "hello"})).await;
    assert_eq!((r.is_error, text(&r)), (Some(false), "hello".to_owned()));
    let r = h.call("add", json!({"a": 40, "b": 2})).await;
    assert_eq!(text(&r), "42");

    assert_refused(
        &h.call("delete", json!({"path": "x"})).await,
        "action_not_allowed",
    );
    assert_refused(
        &h.call("add", json!({"a": 500, "b": 2})).await,
        "arg_out_of_bounds",
    );
    // A bound on `a` is not met by leaving it out, nor by a non-integer.
    assert_refused(&h.call("add", json!({"b": 2})).await, "arg_missing");
    assert_refused(
        &h.call("add", json!({"a": 1.5, "b": 2})).await,
        "arg_missing",
    );
    // A tool name that is not an action name is refused, not rewritten.
    assert_refused(
        &h.call("Echo", json!({"text": "x"})).await,
        "invalid_action",
    );

    assert_eq!(h.tools.calls(), ["echo", "add"]);
}

#[tokio::test]
async fn the_list_shows_only_the_tools_the_token_allows() {
    let h = Harness::start(agent_caveats()).await;
    let mut names: Vec<String> = h
        .client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["add", "bill", "echo", "fail", "generate", "read"]);
    // The downstream lists seven.
    assert_eq!(Tools::list().len(), 7);
}

#[tokio::test]
async fn the_resource_comes_from_the_configured_argument() {
    let mut caveats = agent_caveats();
    // Resource patterns match whole `:` segments: one file, exactly.
    caveats.push(Caveat::resources(["file:docs/a.txt"]).unwrap());
    let h = Harness::start(caveats).await;
    let r = h.call("read", json!({"path": "docs/a.txt"})).await;
    assert_eq!(text(&r), "contents of docs/a.txt");
    assert_refused(
        &h.call("read", json!({"path": "etc/passwd"})).await,
        "resource_not_allowed",
    );
    assert_refused(&h.call("read", json!({})).await, "resource_not_allowed");
    assert_eq!(h.tools.calls(), ["read"]);
}

#[tokio::test]
async fn a_priced_call_is_held_then_charged_its_actual_cost() {
    let h = Harness::start(agent_caveats()).await;
    // The prompt is 11 bytes: 11 tokens used of the 100 held.
    let r = h
        .call(
            "generate",
            json!({"prompt": "hello world", "max_tokens": 100}),
        )
        .await;
    assert_eq!(r.is_error, Some(false));
    assert_eq!(r.structured_content, Some(json!({"used": 11})));
    assert_eq!(h.balance("tokens").await, (11, 0));

    let r = h
        .call("generate", json!({"prompt": "abc", "max_tokens": 2}))
        .await;
    assert_eq!(r.structured_content, Some(json!({"used": 2})));
    assert_eq!(h.balance("tokens").await, (13, 0));
    assert_eq!(h.tools.calls(), ["generate", "generate"]);
}

#[tokio::test]
async fn an_actual_cost_over_the_hold_is_charged_if_there_is_room_else_the_hold() {
    let h = Harness::start(agent_caveats()).await;
    // Holds 5, reports 50: the ledger has room, 50 is charged.
    let r = h.call("bill", json!({"used": 50})).await;
    assert_eq!(r.structured_content, Some(json!({"used": 50})));
    assert_eq!(h.balance("tokens").await, (50, 0));
    // Holds 5, reports 5000 of the 950 left: the hold itself is charged.
    let r = h.call("bill", json!({"used": 5000})).await;
    assert_eq!(r.structured_content, Some(json!({"used": 5000})));
    assert_eq!(h.balance("tokens").await, (55, 0));
    assert_eq!(h.tools.calls(), ["bill", "bill"]);
}

#[tokio::test]
async fn over_budget_and_unpriceable_calls_never_reach_the_downstream() {
    let h = Harness::start(agent_caveats()).await;
    let r = h
        .call("generate", json!({"prompt": "x", "max_tokens": 5000}))
        .await;
    assert_refused(&r, "insufficient_budget");
    let r = h.call("generate", json!({"prompt": "x"})).await;
    assert_refused(&r, "cost_arg_invalid");
    assert_eq!(h.balance("tokens").await, (0, 0));
    assert!(h.tools.calls().is_empty());
}

#[tokio::test]
async fn a_downstream_error_releases_the_hold() {
    let h = Harness::start(agent_caveats()).await;
    let r = h.call("fail", json!({})).await;
    assert_eq!(
        (r.is_error, text(&r)),
        (Some(true), "the tool failed".to_owned())
    );
    assert!(
        r.structured_content.is_none(),
        "the tool's own error, not a refusal"
    );
    assert_eq!(h.balance("calls").await, (0, 0));
    assert_eq!(h.tools.calls(), ["fail"]);
}

#[tokio::test]
async fn a_token_of_another_issuer_sees_nothing_and_calls_nothing() {
    let h = Harness::start(agent_caveats()).await;
    let stranger = Token::mint(
        &RootKey::from_seed(&[9; 32]),
        vec![Caveat::tools(["demo.*"]).unwrap()],
    )
    .unwrap();
    // A second proxy, on the same ledger, holding the stranger's token.
    let (stop, _stopped) = oneshot::channel();
    let s = Harness::with_proxy(h.ledger.clone(), stop, stranger.to_text(), h.agent.clone()).await;
    assert!(s.client.list_all_tools().await.unwrap().is_empty());
    assert_refused(&s.call("echo", json!({"text": "x"})).await, "unknown_kid");
    assert!(s.tools.calls().is_empty());
}

#[test]
fn priced_tools_without_a_ledger_refuse_to_start() {
    let config = TempFile::new(CONFIG);
    let key = RootKey::from_seed(&[1; 32]).public().to_text();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("mcp-proxy")
        .arg("--config")
        .arg(&config.0)
        .args(["--key", &key, "--", "true"])
        .env("BATON_TOKEN", "baton_v1_x")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no ledger URL"), "{err}");
}

#[test]
fn a_missing_token_is_a_start_error_that_names_the_safe_sources() {
    let key = RootKey::from_seed(&[1; 32]).public().to_text();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["mcp-proxy", "--server", "demo", "--key", &key, "--", "true"])
        .env_remove("BATON_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token-file"), "{err}");
}

/// The proxy in front of a downstream *command*: here a second proxy, so
/// the test needs no binary but `baton`. The inner one reads the token
/// from a file and forwards to the tools over HTTP.
#[tokio::test]
async fn a_spawned_downstream_command_serves_allowed_calls() {
    let h = Harness::start(agent_caveats()).await;
    let token_file = TempFile::new(&format!("{}\n", h.agent.to_text()));
    let (tools_url, _stop) = serve_tools(h.tools.clone()).await;
    let baton = env!("CARGO_BIN_EXE_baton");
    let mut cmd = tokio::process::Command::new(baton);
    cmd.args(["mcp-proxy", "--server", "demo", "--ledger", &h.ledger, "--"])
        .args([
            baton,
            "mcp-proxy",
            "--server",
            "demo",
            "--ledger",
            &h.ledger,
        ])
        .arg("--token-file")
        .arg(&token_file.0)
        .args(["--downstream-url", &tools_url])
        .env("BATON_TOKEN", h.agent.to_text());
    let outer = ().serve(TokioChildProcess::new(cmd).unwrap()).await.unwrap();
    let params = CallToolRequestParams::new("echo")
        .with_arguments(json!({"text": "via two"}).as_object().unwrap().clone());
    let r = outer.call_tool(params).await.unwrap();
    assert_eq!(text(&r), "via two");
    let params = CallToolRequestParams::new("delete")
        .with_arguments(json!({"path": "x"}).as_object().unwrap().clone());
    assert_refused(
        &outer.call_tool(params).await.unwrap(),
        "action_not_allowed",
    );
    assert_eq!(h.tools.calls(), ["echo"]);
}

/// The token's variable is not inherited by the downstream command: a
/// downstream that looks for it finds nothing (here, a second proxy that
/// then refuses to start, so the first cannot connect).
#[tokio::test]
async fn the_downstream_command_does_not_inherit_the_token() {
    let h = Harness::start(agent_caveats()).await;
    let baton = env!("CARGO_BIN_EXE_baton");
    let out = tokio::process::Command::new(baton)
        .args(["mcp-proxy", "--server", "demo", "--ledger", &h.ledger, "--"])
        .args([
            baton,
            "mcp-proxy",
            "--server",
            "demo",
            "--ledger",
            &h.ledger,
        ])
        .args(["--downstream-url", "http://127.0.0.1:9/mcp"])
        .env("BATON_TOKEN", h.agent.to_text())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    // The inner proxy's complaint, then the outer's.
    assert!(err.contains("reading the agent's token: no token"), "{err}");
    assert!(err.contains("connecting to the downstream server"), "{err}");
}

/// Over streamable HTTP, each agent's calls are judged by the token of
/// its own bearer header; no header sees and calls nothing.
#[tokio::test]
async fn over_http_each_agent_is_judged_by_its_bearer_token() {
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    use tokio::io::AsyncBufReadExt as _;

    let h = Harness::start(agent_caveats()).await;
    let (tools_url, _stop) = serve_tools(h.tools.clone()).await;
    let config = TempFile::new(CONFIG);
    let mut proxy = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["mcp-proxy", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config.0)
        .args(["--ledger", &h.ledger, "--downstream-url", &tools_url])
        .env_remove("BATON_TOKEN")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(proxy.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    let url = line.strip_prefix("listening on ").unwrap().to_owned();

    let connect = |token: Option<String>| {
        let mut config = StreamableHttpClientTransportConfig::with_uri(url.clone());
        if let Some(t) = token {
            config = config.auth_header(t);
        }
        ().serve(StreamableHttpClientTransport::from_config(config))
    };
    let names = |tools: Vec<rmcp::model::Tool>| {
        let mut n: Vec<String> = tools.into_iter().map(|t| t.name.to_string()).collect();
        n.sort();
        n
    };
    let call = |tool: &str, args: Value| {
        CallToolRequestParams::new(tool.to_owned())
            .with_arguments(args.as_object().unwrap().clone())
    };

    let full = connect(Some(h.agent.to_text())).await.unwrap();
    let echo_only = h
        .agent
        .attenuate(vec![Caveat::tools(["demo.echo"]).unwrap()])
        .unwrap();
    let narrow = connect(Some(echo_only.to_text())).await.unwrap();
    let anonymous = connect(None).await.unwrap();

    assert_eq!(
        names(full.list_all_tools().await.unwrap()),
        ["add", "bill", "echo", "fail", "generate", "read"]
    );
    assert_eq!(names(narrow.list_all_tools().await.unwrap()), ["echo"]);
    assert!(anonymous.list_all_tools().await.unwrap().is_empty());

    let r = full
        .call_tool(call("add", json!({"a": 1, "b": 2})))
        .await
        .unwrap();
    assert_eq!(text(&r), "3");
    let r = narrow
        .call_tool(call("add", json!({"a": 1, "b": 2})))
        .await
        .unwrap();
    assert_refused(&r, "action_not_allowed");
    let r = narrow
        .call_tool(call("echo", json!({"text": "n"})))
        .await
        .unwrap();
    assert_eq!(text(&r), "n");
    let r = anonymous
        .call_tool(call("echo", json!({"text": "a"})))
        .await
        .unwrap();
    assert_refused(&r, "missing_token");
    // Priced, over HTTP: held and charged as the header's token.
    let r = full
        .call_tool(call(
            "generate",
            json!({"prompt": "four", "max_tokens": 10}),
        ))
        .await
        .unwrap();
    assert_eq!(r.structured_content, Some(json!({"used": 4})));
    assert_eq!(h.balance("tokens").await, (4, 0));

    assert_eq!(h.tools.calls(), ["add", "echo", "generate"]);
}

/// Starts `baton mcp-proxy --listen` on the harness's ledger and tools,
/// keys from the ledger, with `extra` flags; returns it and its URL.
async fn http_proxy(h: &Harness, extra: &[&str]) -> (tokio::process::Child, String, TempFile) {
    use tokio::io::AsyncBufReadExt as _;
    let (tools_url, stop) = serve_tools(h.tools.clone()).await;
    // The tools serve as long as the test runs.
    std::mem::forget(stop);
    let config = TempFile::new(CONFIG);
    let mut proxy = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["mcp-proxy", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config.0)
        .args(["--ledger", &h.ledger, "--downstream-url", &tools_url])
        .args(extra)
        .env_remove("BATON_TOKEN")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(proxy.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    let url = line.strip_prefix("listening on ").unwrap().to_owned();
    (proxy, url, config)
}

/// One call over streamable HTTP as `token`.
async fn http_call(url: &str, token: &str, tool: &str, args: Value) -> CallToolResult {
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let config =
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token.to_owned());
    let client = ().serve(StreamableHttpClientTransport::from_config(config)).await.unwrap();
    let params = CallToolRequestParams::new(tool.to_owned())
        .with_arguments(args.as_object().unwrap().clone());
    client.call_tool(params).await.unwrap()
}

/// Keys from the ledger follow a rotation: a token under the new key
/// makes the proxy refetch the keyset once, and is then allowed.
#[tokio::test]
async fn a_token_under_a_rotated_key_refetches_the_keys() {
    use baton::client::{Bearer, Client};
    let h = Harness::start(agent_caveats()).await;
    let (_proxy, url, _config) = http_proxy(&h, &["--keys-min-interval", "0"]).await;
    let admin = Bearer::new(h.admin.as_ref().unwrap().to_text());
    let ledger = Client::new(&h.ledger).unwrap();
    let rotated = ledger.rotate_key(&admin).await.unwrap();
    let minted = ledger
        .mint(
            &admin,
            &json!({"tools": ["demo.*"], "budgets": [{"unit": "calls", "ceiling": 5}]}),
        )
        .await
        .unwrap();
    assert_eq!(minted.kid, rotated.kid);
    let r = http_call(&url, &minted.token, "echo", json!({"text": "new key"})).await;
    assert_eq!((r.is_error, text(&r)), (Some(false), "new key".to_owned()));
    // The old key still verifies, and a stranger's key is still unknown.
    let r = http_call(&url, &h.agent.to_text(), "echo", json!({"text": "old"})).await;
    assert_eq!(text(&r), "old");
    let stranger = Token::mint(
        &RootKey::from_seed(&[9; 32]),
        vec![Caveat::tools(["demo.*"]).unwrap()],
    )
    .unwrap();
    let r = http_call(&url, &stranger.to_text(), "echo", json!({"text": "x"})).await;
    assert_refused(&r, "unknown_kid");
    assert_eq!(h.tools.calls(), ["echo", "echo"]);
}

/// A feed token file: the harness admin narrowed to reading the feed.
fn feed_token_file(h: &Harness) -> TempFile {
    let reader = h
        .admin
        .as_ref()
        .unwrap()
        .attenuate(vec![
            Caveat::tools(["baton.admin.revocations.read"]).unwrap(),
        ])
        .unwrap();
    TempFile::new(&reader.to_text())
}

/// With `--feed-token-file`, a revoked token is refused offline within
/// the feed's bound (interval + one poll), free tools included.
#[tokio::test]
async fn a_revoked_token_is_refused_for_free_tools_within_the_feed_bound() {
    use baton::client::{Bearer, Client};
    let h = Harness::start(agent_caveats()).await;
    let feed = feed_token_file(&h);
    let path = feed.0.to_str().unwrap().to_owned();
    let (_proxy, url, _config) =
        http_proxy(&h, &["--feed-token-file", &path, "--feed-interval", "1"]).await;
    let agent = h.agent.to_text();
    let r = http_call(&url, &agent, "echo", json!({"text": "before"})).await;
    assert_eq!(text(&r), "before");

    let admin = Bearer::new(h.admin.as_ref().unwrap().to_text());
    let block = *h.agent.block_ids().last().unwrap();
    let revoked_at = std::time::Instant::now();
    Client::new(&h.ledger)
        .unwrap()
        .revoke(&admin, &block, None)
        .await
        .unwrap();
    // The bound: one interval (1 s) plus one poll; 5 s leaves room for a
    // loaded machine while still catching a proxy that never follows.
    let r = loop {
        let r = http_call(&url, &agent, "echo", json!({"text": "after"})).await;
        if r.is_error == Some(true) || revoked_at.elapsed() > std::time::Duration::from_secs(5) {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_refused(&r, "revoked");
    // Calls before the feed caught up may have passed; none after.
    let passed = h.tools.calls().len();
    let r = http_call(&url, &agent, "echo", json!({"text": "later"})).await;
    assert_refused(&r, "revoked");
    assert_eq!(h.tools.calls().len(), passed);
}

/// When the feed cannot be read for longer than its bound, every call is
/// refused `revocations_stale`: the proxy fails closed.
#[tokio::test]
async fn a_stale_feed_refuses_every_call() {
    let mut h = Harness::start(agent_caveats()).await;
    let feed = feed_token_file(&h);
    let path = feed.0.to_str().unwrap().to_owned();
    let (_proxy, url, _config) = http_proxy(
        &h,
        &[
            "--feed-token-file",
            &path,
            "--feed-interval",
            "1",
            "--feed-max-staleness",
            "2",
        ],
    )
    .await;
    let agent = h.agent.to_text();
    let r = http_call(&url, &agent, "echo", json!({"text": "fresh"})).await;
    assert_eq!(text(&r), "fresh");
    // Stop the ledger: the feed can no longer be read.
    let _ = h._stops.remove(0).send(());
    let start = std::time::Instant::now();
    let r = loop {
        let r = http_call(&url, &agent, "echo", json!({"text": "stale"})).await;
        if r.is_error == Some(true) || start.elapsed() > std::time::Duration::from_secs(15) {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_refused(&r, "revocations_stale");
    let passed = h.tools.calls().len();
    let r = http_call(&url, &agent, "echo", json!({"text": "still"})).await;
    assert_refused(&r, "revocations_stale");
    assert_eq!(h.tools.calls().len(), passed);
}
