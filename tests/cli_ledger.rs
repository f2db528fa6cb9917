//! `baton ledger ...` and `baton completions` against a live in-process
//! ledger, and the refusal of tokens given as arguments.
#![cfg(all(feature = "server", feature = "cli"))]

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use baton::server::Service;
use baton::server::writer::{SystemClock, WriterConfig};
use baton::store::sqlite::SqliteStore;
use baton::{Caveat, Unit};
use serde_json::Value;
use tokio::net::TcpListener;

fn baton(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .env_remove("BATON_TOKEN")
        .env_remove("BATON_LEDGER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_read_balances_revoke_follow_the_feed_and_finish_holds() {
    let service = Service::start(
        Box::new(SqliteStore::in_memory().unwrap()),
        Arc::new(SystemClock),
        WriterConfig::default(),
    )
    .unwrap();
    let token = service
        .mint(vec![
            Caveat::budget(Unit::Calls, 10),
            Caveat::tools(["tool.*"]).unwrap(),
        ])
        .unwrap();
    let admin = service.mint_admin_token().unwrap().to_text();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(service.serve(l, async move {
        let _ = stopped.await;
    }));
    let text = token.to_text();
    let run = |args: Vec<String>, stdin: String| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            baton(&args, &stdin)
        })
    };
    let base = |more: &[&str]| {
        let mut v: Vec<String> = ["ledger", "--url", &url].map(String::from).to_vec();
        v.extend(more.iter().map(|s| s.to_string()));
        v
    };

    // A hold made through the library, finished through the CLI.
    let client = baton::client::Client::new(&url).unwrap();
    let bearer = baton::client::Bearer::from(&token);
    let hold = client
        .reserve(
            &bearer,
            &baton::client::Reserve::new(baton::client::Action::new("tool.run"), Unit::Calls, 3),
        )
        .await
        .unwrap();
    let id = hold.id.to_string();
    let got = json(
        &run(base(&["--json", "reservation", "get", &id]), text.clone())
            .await
            .unwrap(),
    );
    assert_eq!(got["reservation"]["state"], "active");
    let done = run(
        base(&["reservation", "commit", &id, "--actual", "2"]),
        text.clone(),
    )
    .await
    .unwrap();
    assert!(done.status.success());
    let human = String::from_utf8(done.stdout).unwrap();
    assert!(
        human.starts_with(&format!("{id} committed calls amount 3 charged 2")),
        "{human}"
    );
    let again = run(base(&["reservation", "release", &id]), text.clone())
        .await
        .unwrap();
    assert_eq!(again.status.code(), Some(1), "the ledger refused: exit 1");
    assert!(String::from_utf8_lossy(&again.stderr).contains("409 reservation_finalized"));

    let b = json(
        &run(base(&["--json", "balances"]), text.clone())
            .await
            .unwrap(),
    );
    assert_eq!(
        (
            b["scopes"][0]["spent"].as_u64(),
            b["scopes"][0]["remaining"].as_u64()
        ),
        (Some(2), Some(8))
    );
    let human = run(base(&["balances"]), text.clone()).await.unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains("calls"));

    // Revoke the token's own block, then read the feed as an administrator.
    let block = token.block_ids()[0].to_string();
    let r = json(
        &run(base(&["--json", "revoke", &block]), text.clone())
            .await
            .unwrap(),
    );
    assert_eq!(
        (r["new"].as_bool(), r["seq"].as_u64()),
        (Some(true), Some(1))
    );
    let feed = run(base(&["feed"]), admin.clone()).await.unwrap();
    assert_eq!(
        String::from_utf8(feed.stdout).unwrap(),
        format!("1 {block}\nnext 1\n")
    );
    let feed = json(
        &run(base(&["--json", "feed", "--after", "1"]), admin)
            .await
            .unwrap(),
    );
    assert_eq!(feed, serde_json::json!({"revocations": [], "next": 1}));
    let refused = run(base(&["feed"]), text.clone()).await.unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("403 revoked"));
}

#[test]
fn a_token_given_as_an_argument_is_refused_and_never_echoed() {
    let secret =
        "baton_v1_gwGCWDuDSKQW_7iDR7nIWCAEjEMjmlN0g6wtIx5gF79glTp4yxofQ30qaDD9SLdoVoKCAYFmdG9vbC4q";
    for args in [
        vec!["inspect", secret],
        vec!["verify", "--action", "x", secret],
        vec!["attenuate", secret],
        vec!["seal", secret],
        vec!["ledger", "--url", "http://127.0.0.1:1", "balances", secret],
        vec![
            "ledger",
            "--url",
            "http://127.0.0.1:1",
            &format!("--token={secret}"),
            "balances",
        ],
        vec!["keys", "rotate", "--url", "http://127.0.0.1:1", secret],
    ] {
        let out = baton(&args, "");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(&secret[9..]), "echoed: {all}");
        assert!(all.contains("stdin"), "hint: {all}");
    }
}

#[test]
fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = baton(&["completions", shell], "");
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("ledger") && script.contains("attenuate"),
            "{shell}"
        );
    }
}

/// `baton ledger allocate` carves a guaranteed sub-budget for a child;
/// `baton ledger release-allocation` returns its unused part, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_allocate_and_release_allocations() {
    let service = Service::start(
        Box::new(SqliteStore::in_memory().unwrap()),
        Arc::new(SystemClock),
        WriterConfig::default(),
    )
    .unwrap();
    let parent = service
        .mint(vec![
            Caveat::budget(Unit::Calls, 10),
            Caveat::tools(["tool.*"]).unwrap(),
        ])
        .unwrap();
    let child = parent
        .attenuate(vec![Caveat::budget(Unit::Calls, 6)])
        .unwrap();
    let dir = std::env::temp_dir().join(format!("baton-cli-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let child_file = dir.join("child.tok");
    std::fs::write(&child_file, child.to_text()).unwrap();
    let child_file = child_file.to_str().unwrap().to_owned();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(service.serve(l, async move {
        let _ = stopped.await;
    }));
    let p = parent.to_text();
    let run = |args: Vec<String>, stdin: String| {
        tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            baton(&a, &stdin)
        })
    };
    let base = |rest: &[&str]| -> Vec<String> {
        ["ledger", "--url", &url, "--json"]
            .iter()
            .chain(rest)
            .map(|s| (*s).to_owned())
            .collect()
    };
    // More than the child's own ceiling is refused with the ledger's code.
    let out = run(
        base(&[
            "allocate",
            "--child-token-file",
            &child_file,
            "--unit",
            "calls",
            "--amount",
            "7",
        ]),
        p.clone(),
    )
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("allocation_exceeds_child_budget"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        base(&[
            "allocate",
            "--child-token-file",
            &child_file,
            "--unit",
            "calls",
            "--amount",
            "4",
            "--key",
            "carve",
        ]),
        p.clone(),
    )
    .await
    .unwrap();
    let v = json(&out);
    assert_eq!(v["allocation"]["unused"], 4);
    let id = v["allocation"]["id"].as_str().unwrap().to_owned();
    // The child releases it: the whole 4 come back.
    let out = run(base(&["release-allocation", &id]), child.to_text())
        .await
        .unwrap();
    let v = json(&out);
    assert_eq!(v["allocation"]["state"], "released");
    assert_eq!(v["allocation"]["returned"], 4);
    let out = run(base(&["allocation", &id]), p.clone()).await.unwrap();
    assert_eq!(json(&out)["allocation"]["state"], "released");
    let _ = std::fs::remove_dir_all(&dir);
}
