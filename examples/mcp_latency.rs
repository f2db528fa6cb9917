//! The latency `baton mcp-proxy` adds to one `tools/call`, measured in one
//! run: an rmcp client calls `echo` of `examples/mcp_tools.rs` directly
//! (a child process on stdio) and through the proxy (which spawns its own
//! copy of the same server), alternating call by call so that both see
//! the same machine noise. Prints p50 and p99 of each path and of the
//! difference, beside the floor: the proxy's own token work (verify from
//! the cache and authorize) timed in-process.
//!
//! ```text
//! cargo build --release --features mcp --bin baton --example mcp_tools --example mcp_latency
//! target/release/examples/mcp_latency [CALLS]
//! ```
//!
//! The two binaries are looked up next to this one (`../baton`,
//! `./mcp_tools`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use baton::{Caveat, Keyset, Request, RootKey, Token, Verifier};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::json;

type Client = RunningService<RoleClient, ()>;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

async fn echo(client: &Client) -> Duration {
    let params = CallToolRequestParams::new("echo").with_arguments(
        json!({"text": "ping"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    let start = Instant::now();
    let r = client.call_tool(params).await;
    let took = start.elapsed();
    match r {
        Ok(r) if r.is_error != Some(true) => took,
        other => panic!("echo failed: {other:?}"),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let calls: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5000);
    let here = std::env::current_exe()?;
    let dir = here.parent().ok_or("no directory")?;
    let tools: PathBuf = dir.join("mcp_tools");
    let baton: PathBuf = dir.parent().ok_or("no directory")?.join("baton");

    let root = RootKey::from_seed(&[42; 32]);
    let token = Token::mint(
        &root,
        vec![
            Caveat::tools(["demo.*"])?,
            Caveat::budget(baton::Unit::Calls, 1_000_000),
        ],
    )?
    .attenuate(vec![Caveat::tools(["demo.echo", "demo.add"])?])?;

    let direct: Client = ()
        .serve(TokioChildProcess::new(tokio::process::Command::new(
            &tools,
        ))?)
        .await?;
    let mut cmd = tokio::process::Command::new(&baton);
    cmd.args(["mcp-proxy", "--server", "demo", "--key"])
        .arg(root.public().to_text())
        .arg("--")
        .arg(&tools)
        .env("BATON_TOKEN", token.to_text());
    let proxied: Client = ().serve(TokioChildProcess::new(cmd)?).await?;

    for _ in 0..200 {
        echo(&direct).await;
        echo(&proxied).await;
    }
    let mut d = Vec::with_capacity(calls);
    let mut p = Vec::with_capacity(calls);
    let mut diff = Vec::with_capacity(calls);
    for i in 0..calls {
        // Alternate which goes first, so neither always follows the other.
        let (a, b) = if i % 2 == 0 {
            let a = echo(&direct).await;
            (a, echo(&proxied).await)
        } else {
            let b = echo(&proxied).await;
            (echo(&direct).await, b)
        };
        d.push(a);
        p.push(b);
        diff.push(b.saturating_sub(a));
    }
    d.sort();
    p.sort();
    diff.sort();

    // The floor: the proxy's own token work per call, in-process.
    let verifier = Verifier::new(Keyset::new().with(root.public())).with_cache(64);
    let text = token.to_text();
    let now = 1_800_000_000;
    let mut floor = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        let t = verifier.verify_text(&text)?;
        verifier.authorize(&t, &Request::new("demo.echo", now)?)?;
        floor.push(start.elapsed());
    }
    floor.sort();

    println!("tools/call echo, {calls} calls per path, alternating, one run");
    println!("{:<28} {:>12} {:>12}", "", "p50", "p99");
    for (name, v) in [
        ("direct (client -> tools)", &d),
        ("via baton mcp-proxy", &p),
        ("added (per-call pairs)", &diff),
        ("floor: verify+authorize", &floor),
    ] {
        println!(
            "{name:<28} {:>12} {:>12}",
            us(percentile(v, 0.5)),
            us(percentile(v, 0.99))
        );
    }
    println!(
        "added at p50 (p50 proxied - p50 direct): {}",
        us(percentile(&p, 0.5).saturating_sub(percentile(&d, 0.5)))
    );
    proxied.cancel().await?;
    direct.cancel().await?;
    Ok(())
}
