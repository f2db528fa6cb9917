//! A small downstream MCP server for `baton mcp-proxy`: a few tools, one of
//! which reports its actual cost and one of which always fails. It records
//! every call it receives, so tests can show that a denied call never
//! reaches it. `tests/mcp.rs` serves it in-process over streamable HTTP;
//! run alone, it speaks MCP on stdio:
//!
//! ```text
//! cargo build --release --features mcp --example mcp_tools
//! BATON_TOKEN=$(cat agent.token) baton mcp-proxy --server demo --key baton_pk1_... \
//!     -- target/release/examples/mcp_tools
//! ```
//!
//! Tools: `echo {text}`, `add {a, b}`, `read {path}`, `generate
//! {prompt, max_tokens}` (its `structuredContent.used` is the tokens it
//! used: the prompt's length, at most `max_tokens`), `bill {used}` (reports
//! `used` as its cost, whatever was held), `fail {}` (a tool error) and
//! `delete {path}`.

use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Value, json};

/// The tools, and the log of the calls they received.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    calls: Arc<Mutex<Vec<String>>>,
}

impl Tools {
    /// The names of the tools called so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Every tool, with its input schema.
    pub fn list() -> Vec<Tool> {
        let schema = |props: Value| -> Arc<JsonObject> {
            let mut o = JsonObject::new();
            o.insert("type".into(), json!("object"));
            o.insert("properties".into(), props);
            Arc::new(o)
        };
        let s = json!({"type": "string"});
        let i = json!({"type": "integer"});
        vec![
            Tool::new("echo", "Echo the text", schema(json!({"text": s}))),
            Tool::new("add", "Add two integers", schema(json!({"a": i, "b": i}))),
            Tool::new("read", "Read a file", schema(json!({"path": s}))),
            Tool::new(
                "generate",
                "Generate text; reports the tokens used",
                schema(json!({"prompt": s, "max_tokens": i})),
            ),
            Tool::new(
                "bill",
                "Reports the cost it is given",
                schema(json!({"used": i})),
            ),
            Tool::new("fail", "Always fails", schema(json!({}))),
            Tool::new("delete", "Delete a file", schema(json!({"path": s}))),
        ]
    }
}

fn text_arg<'a>(args: &'a JsonObject, name: &str) -> &'a str {
    args.get(name).and_then(Value::as_str).unwrap_or("")
}

fn int_arg(args: &JsonObject, name: &str) -> i64 {
    args.get(name).and_then(Value::as_i64).unwrap_or(0)
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mcp-tools", "0.1.0"))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(Self::list()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(request.name.to_string());
        }
        let args = request.arguments.unwrap_or_default();
        let text = |t: String| CallToolResult::success(vec![ContentBlock::text(t)]);
        let result = match &*request.name {
            "echo" => text(text_arg(&args, "text").to_owned()),
            "add" => {
                let sum = int_arg(&args, "a").checked_add(int_arg(&args, "b"));
                match sum {
                    Some(s) => text(s.to_string()),
                    None => CallToolResult::error(vec![ContentBlock::text("overflow")]),
                }
            }
            "read" => text(format!("contents of {}", text_arg(&args, "path"))),
            "generate" => {
                let max = u64::try_from(int_arg(&args, "max_tokens")).unwrap_or(0);
                let used = (text_arg(&args, "prompt").len() as u64).min(max);
                CallToolResult::structured(json!({"used": used}))
            }
            "bill" => CallToolResult::structured(json!({"used": int_arg(&args, "used")})),
            "fail" => CallToolResult::error(vec![ContentBlock::text("the tool failed")]),
            "delete" => text(format!("deleted {}", text_arg(&args, "path"))),
            other => {
                return Err(McpError::invalid_params(format!("no tool {other}"), None));
            }
        };
        Ok(result.into())
    }
}

#[tokio::main(flavor = "current_thread")]
#[allow(dead_code)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    use rmcp::ServiceExt as _;
    Tools::default()
        .serve(rmcp::transport::stdio())
        .await?
        .waiting()
        .await?;
    Ok(())
}
