//! One owner per data directory, and key rotation against a running server
//! (spec/http.md §4.6, §5.5, §6.1.1), with the real binary.
//!
//! * A second `baton serve` on a directory a server owns exits non-zero at
//!   once, naming the holder's pid; after the holder is SIGKILLed a new
//!   server starts on the same directory (the stale `LOCK` file is fine).
//! * Offline `baton keys rotate --data` refuses a directory a server owns.
//! * `baton keys rotate --url` rotates the running server's key: the very
//!   next `GET /v1/keys` and `POST /v1/tokens` use the new key, tokens of
//!   the old key keep verifying, and a restart keeps the new key active.
#![cfg(feature = "server")]

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A test's temp directory: removed on drop after a pass.
struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("baton-owner-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the sandbox");
        Self { dir }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One `baton serve` process; killed on drop.
struct Server {
    child: Child,
    url: String,
    /// Kept open: the server's stdout must not turn into a broken pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_command(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton"));
    cmd.arg("serve")
        .arg("--data")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("BATON_DATA")
        .env_remove("BATON_LISTEN")
        .stdin(Stdio::null());
    cmd
}

/// Starts `baton serve` on `data` and waits for its `listening on` line.
fn start_server(data: &Path) -> Server {
    let mut child = serve_command(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn baton serve");
    let stdout = child.stdout.take().expect("stdout is piped");
    // read_line blocks; a thread and a timeout keep a hung start from
    // hanging the test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = reader.read_line(&mut line).map(|_| line);
        let _ = tx.send((read, reader));
    });
    let Ok((Ok(line), reader)) = rx.recv_timeout(Duration::from_secs(30)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("baton serve did not report its address");
    };
    let Some(url) = line.trim().strip_prefix("listening on ") else {
        let _ = child.kill();
        panic!("unexpected first line from baton serve: {line:?}");
    };
    Server {
        url: url.to_owned(),
        child,
        _stdout: reader,
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no drain, the lock file stays behind.
    fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }

    /// SIGTERM and a clean exit within 15 s.
    fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success());
        let exit = wait_bounded(&mut self.child, Duration::from_secs(15));
        assert!(
            exit.success(),
            "baton serve exited with {exit} after SIGTERM"
        );
    }
}

fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(exit) = child.try_wait().expect("poll the child") {
            return exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `baton ARGS` with `stdin` and `env`, bounded by 30 s.
fn baton(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton"));
    cmd.args(args)
        .env_remove("BATON_DATA")
        .env_remove("BATON_ADMIN_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn baton");
    let mut input = child.stdin.take().expect("stdin is piped");
    // A command that does not read stdin may close it first: ignore EPIPE.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    // Bounded: output is small, so waiting on the exit before reading the
    // pipes cannot deadlock.
    wait_bounded(&mut child, Duration::from_secs(30));
    child.wait_with_output().expect("collect output")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A blocking HTTP client over a small runtime.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Self { rt, client }
    }

    fn call(
        &self,
        method: reqwest::Method,
        url: String,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.rt.block_on(async {
            let mut req = self.client.request(method, url);
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.expect("the server answers");
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        })
    }

    fn get(&self, s: &Server, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, format!("{}{path}", s.url), None, None)
    }

    fn post(
        &self,
        s: &Server,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            format!("{}{path}", s.url),
            token,
            body,
        )
    }

    /// Mints a spending token through `POST /v1/tokens`.
    fn mint(&self, s: &Server, admin: &str) -> (String, String) {
        let (status, v) = self.post(
            s,
            "/v1/tokens",
            Some(admin),
            Some(json!({ "tools": ["tool.*"], "budgets": [{ "unit": "calls", "ceiling": 5 }] })),
        );
        assert_eq!(status, 201, "{v}");
        (
            v["token"].as_str().expect("token").to_owned(),
            v["kid"].as_str().expect("kid").to_owned(),
        )
    }

    /// The token may act: authorize, then reserve one call.
    fn assert_verifies(&self, s: &Server, token: &str, key: &str) {
        let (status, v) = self.post(
            s,
            "/v1/authorize",
            Some(token),
            Some(json!({ "action": "tool.run" })),
        );
        assert_eq!((status, &v["decision"]), (200, &json!("allow")), "{v}");
        let (status, v) = self.post(
            s,
            "/v1/reservations",
            Some(token),
            Some(json!({ "action": "tool.run", "unit": "calls", "amount": 1, "idempotency_key": key })),
        );
        assert_eq!(status, 201, "{v}");
    }

    /// `(kid, status)` of every key `GET /v1/keys` lists.
    fn keys(&self, s: &Server) -> (Vec<(String, String)>, Value) {
        let (status, v) = self.get(s, "/v1/keys");
        assert_eq!(status, 200);
        let list = v["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| {
                (
                    k["kid"].as_str().expect("kid").to_owned(),
                    k["status"].as_str().expect("status").to_owned(),
                )
            })
            .collect();
        (list, v["keys"].clone())
    }
}

fn admin_token(data: &Path) -> String {
    std::fs::read_to_string(data.join("admin.token"))
        .expect("admin.token")
        .trim()
        .to_owned()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

#[test]
fn second_server_refuses_a_locked_directory_and_a_kill_9_frees_it() {
    let sb = Sandbox::new("second");
    let data = sb.data();
    let first = start_server(&data);
    let lock = std::fs::read_to_string(data.join("LOCK")).expect("LOCK");
    assert_eq!(lock.trim(), first.pid().to_string());

    let mut second = serve_command(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the second server");
    let exit = wait_bounded(&mut second, Duration::from_secs(10));
    let out = second.wait_with_output().expect("stderr");
    let err = stderr(&out);
    assert_eq!(exit.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("(pid {})", first.pid())),
        "stderr does not name the holder's pid {}: {err}",
        first.pid()
    );
    assert!(err.contains(path_str(&data)), "names the directory: {err}");
    assert!(err.contains("in use by another baton process"), "{err}");
    // The refused start left the holder's pid in place.
    let lock = std::fs::read_to_string(data.join("LOCK")).expect("LOCK");
    assert_eq!(lock.trim(), first.pid().to_string());

    first.kill_9();
    assert!(data.join("LOCK").exists(), "a stale LOCK file stays");
    let next = start_server(&data);
    let lock = std::fs::read_to_string(data.join("LOCK")).expect("LOCK");
    assert_eq!(lock.trim(), next.pid().to_string());
    let http = Http::new();
    assert_eq!(http.get(&next, "/healthz").0, 200);
    next.terminate();
}

#[test]
fn offline_rotation_refuses_a_locked_directory() {
    let sb = Sandbox::new("offline");
    let data = sb.data();
    let server = start_server(&data);
    let out = baton(&["keys", "rotate", "--data", path_str(&data)], "", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: rotating keys: data directory "),
        "{err}"
    );
    assert!(err.contains(&format!("(pid {})", server.pid())), "{err}");
    assert!(err.contains("baton keys rotate --url"), "{err}");
    // Nothing changed: still the one first key.
    let http = Http::new();
    assert_eq!(http.keys(&server).0.len(), 1);
    server.terminate();

    // Stopped, the directory is free again: offline rotation works.
    let out = baton(&["keys", "rotate", "--data", path_str(&data)], "", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let kid = stdout(&out);
    assert_eq!(kid.trim().len(), 16, "{kid}");
}

#[test]
fn live_rotation_switches_keys_at_once_and_old_tokens_keep_verifying() {
    let sb = Sandbox::new("live");
    let data = sb.data();
    let server = start_server(&data);
    let http = Http::new();
    let admin = admin_token(&data);
    let (before, _) = http.keys(&server);
    assert_eq!(before.len(), 1);
    let old_kid = before[0].0.clone();
    let (old_token, kid) = http.mint(&server, &admin);
    assert_eq!(kid, old_kid);

    // A non-admin token, and an admin token narrowed to minting, are refused.
    let (status, v) = http.post(&server, "/v1/keys/rotate", Some(&old_token), None);
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("not_admin"))
    );
    let mint_only = baton::UnverifiedToken::from_text(&admin)
        .expect("admin token parses")
        .attenuate(vec![
            baton::Caveat::tools(["baton.admin.mint"]).expect("pattern"),
        ])
        .expect("attenuate")
        .to_text();
    let (status, v) = http.post(&server, "/v1/keys/rotate", Some(&mint_only), None);
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("not_admin"))
    );
    let (status, v) = http.post(&server, "/v1/keys/rotate", None, None);
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("missing_token"))
    );
    // The CLI prints the server's code and exits 1.
    let out = baton(
        &["keys", "rotate", "--url", &server.url],
        &format!("{old_token}\n"),
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("403 not_admin"), "{}", stderr(&out));
    assert_eq!(http.keys(&server).0.len(), 1, "refusals rotate nothing");

    // Rotate through the CLI, the token from the admin token file.
    let token_file = data.join("admin.token");
    let out = baton(
        &[
            "keys",
            "rotate",
            "--url",
            &server.url,
            "--admin-token-file",
            path_str(&token_file),
        ],
        "",
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let new_kid = stdout(&out).trim().to_owned();
    assert_eq!(new_kid.len(), 16);
    assert_ne!(new_kid, old_kid);

    // Immediately: listed as the one active key, the old one retired.
    let (mut keys, _) = http.keys(&server);
    keys.sort();
    let mut want = vec![
        (old_kid.clone(), "retired".to_owned()),
        (new_kid.clone(), "active".to_owned()),
    ];
    want.sort();
    assert_eq!(keys, want);
    // Minting uses it, and its tokens verify.
    let (new_token, kid) = http.mint(&server, &admin);
    assert_eq!(kid, new_kid);
    http.assert_verifies(&server, &new_token, "new-1");
    // A token of the retired key still verifies.
    http.assert_verifies(&server, &old_token, "old-1");

    // The endpoint itself: the new kid, its key, and the list as GET shows it.
    let (status, v) = http.post(&server, "/v1/keys/rotate", Some(&admin), None);
    assert_eq!(status, 200, "{v}");
    let third = v["kid"].as_str().expect("kid").to_owned();
    assert!(
        v["public_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("baton_pk1_"))
    );
    let (keys, listed) = http.keys(&server);
    assert_eq!(v["keys"], listed);
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|(k, s)| (s == "active") == (*k == third)));

    // The token from the environment, then from stdin.
    let out = baton(
        &["keys", "rotate", "--url", &server.url],
        "",
        &[("BATON_ADMIN_TOKEN", &admin)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = baton(
        &["keys", "rotate", "--url", &server.url],
        &format!("{admin}\n"),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let last = stdout(&out).trim().to_owned();

    // The store had each key before it was used: a restart keeps them.
    server.terminate();
    let server = start_server(&data);
    let (keys, _) = http.keys(&server);
    assert_eq!(keys.len(), 5);
    assert!(keys.iter().all(|(k, s)| (s == "active") == (*k == last)));
    http.assert_verifies(&server, &new_token, "new-2");
    http.assert_verifies(&server, &old_token, "old-2");
    server.terminate();
}

#[test]
fn rotate_flags_are_checked_before_any_request() {
    let sb = Sandbox::new("flags");
    let data = sb.data();
    // --url and --data exclude each other: a usage error.
    let out = baton(
        &[
            "keys",
            "rotate",
            "--url",
            "http://127.0.0.1:9",
            "--data",
            path_str(&data),
        ],
        "",
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
    // BATON_DATA, exported for `serve`, does not conflict with --url.
    let out = baton(
        &["keys", "rotate", "--url", "https://127.0.0.1:9"],
        "x\n",
        &[("BATON_DATA", path_str(&data))],
    );
    // https is spoken (rustls): nothing listens there, so the call fails
    // in transport, a local failure, after the URL was accepted.
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("calling https://127.0.0.1:9/v1/keys/rotate"),
        "{}",
        stderr(&out)
    );
    let out = baton(
        &["keys", "rotate", "--url", "ftp://127.0.0.1:9"],
        "x\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("expected http://HOST:PORT or https://"),
        "{}",
        stderr(&out)
    );
    // No token on stdin.
    let out = baton(&["keys", "rotate", "--url", "http://127.0.0.1:9"], "", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("reading the admin token from stdin: empty"),
        "{}",
        stderr(&out)
    );
    // The token is never an argument.
    let out = baton(
        &[
            "keys",
            "rotate",
            "--url",
            "http://127.0.0.1:9",
            "--admin-token",
            "x",
        ],
        "",
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn open_twice_in_one_process_is_refused_with_our_pid() {
    let sb = Sandbox::new("inproc");
    let data = sb.data();
    let (service, admin) = baton::server::open(&data, Default::default()).expect("first open");
    assert!(admin.is_some());
    match baton::server::open(&data, Default::default()) {
        Err(baton::server::StartError::Locked { path, pid }) => {
            assert_eq!(path, data);
            assert_eq!(pid, Some(std::process::id()));
        }
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("a second owner of the directory was allowed"),
    }
    match baton::server::rotate_key(&data) {
        Err(baton::server::StartError::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(service);
    // Dropping the service releases the lock.
    let (_again, admin) =
        baton::server::open(&data, Default::default()).expect("reopen after drop");
    assert!(admin.is_none());
}
