//! The `baton` command, run as a real process: exit statuses, reason codes
//! on stdout and stderr, the files it writes.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

/// A scratch directory under the system temp dir, removed on drop.
struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    fn new(test: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "baton-cli-{test}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover from a crashed run with the same pid would only confuse.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the sandbox directory");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes a root key and returns its public key text.
    fn keygen(&self, name: &str) -> String {
        let out = baton(
            &["keygen", "--out", path_str(&self.path(name)), "--json"],
            "",
        );
        assert_ok(&out);
        json(&out)["public_key"]
            .as_str()
            .expect("public_key is a string")
            .to_owned()
    }

    /// Mints with `key` and the given caveat flags; returns the token text.
    fn mint(&self, key: &str, flags: &[&str]) -> String {
        let key = self.path(key);
        let mut args = vec!["mint", "--key", path_str(&key)];
        args.extend_from_slice(flags);
        let out = baton(&args, "");
        assert_ok(&out);
        stdout(&out)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8 in tests")
}

/// Runs the binary with `stdin` piped in.
fn baton(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn baton");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for baton")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("stderr is UTF-8")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "baton failed ({:?}): {}",
        out.status.code(),
        stderr(out)
    );
}

fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

/// The support scenario's first two hops: an orchestrator and a refund agent.
fn scenario(s: &Sandbox) -> (String, String, String) {
    let pk = s.keygen("issuer.key");
    let orchestrator = s.mint(
        "issuer.key",
        &[
            "--budget",
            "usd=50",
            "--tools",
            "crm.*,refund.*,email.*",
            "--depth",
            "3",
            "--ttl",
            "8h",
            "--label",
            "orchestrator",
        ],
    );
    let out = baton(
        &[
            "attenuate",
            "--budget",
            "usd=5",
            "--tools",
            "crm.read",
            "--tools",
            "refund.issue",
            "--arg",
            "refund.issue:amount<=10000000000",
            "--resource",
            "customer:4821",
            "--depth",
            "1",
            "--label",
            "refund-agent",
        ],
        &orchestrator,
    );
    assert_ok(&out);
    (pk, orchestrator, stdout(&out))
}

#[test]
fn keygen_writes_a_0600_file_and_refuses_to_overwrite() {
    let s = Sandbox::new("keygen");
    let key = s.path("root.key");
    let out = baton(&["keygen", "--out", path_str(&key)], "");
    assert_ok(&out);
    let text = stdout(&out);
    assert!(text.starts_with("# kid "), "{text}");
    assert!(text.contains("\nbaton_pk1_"), "{text}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let secret = std::fs::read_to_string(&key).unwrap();
    assert!(secret.starts_with("baton_sk1_") && secret.ends_with('\n'));
    assert_eq!(secret.lines().count(), 1);

    let again = baton(&["keygen", "--out", path_str(&key)], "");
    assert_code(&again, 2);
    assert!(
        stderr(&again).contains("writing key file"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        secret,
        "key was touched"
    );

    // --force replaces it atomically and the new file is 0600 too, even
    // when the old one had a wider mode.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let forced = baton(
        &["keygen", "--out", path_str(&key), "--force", "--json"],
        "",
    );
    assert_ok(&forced);
    let doc = json(&forced);
    assert!(
        doc["public_key"]
            .as_str()
            .unwrap()
            .starts_with("baton_pk1_")
    );
    assert_eq!(doc["kid"].as_str().unwrap().len(), 16);
    assert_ne!(std::fs::read_to_string(&key).unwrap(), secret);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(&s.dir).unwrap().count(), 1);
}

#[test]
fn mint_attenuate_verify_allows() {
    let s = Sandbox::new("allow");
    let (pk, _, refund) = scenario(&s);
    let out = baton(
        &[
            "verify",
            "--key",
            &pk,
            "--action",
            "refund.issue",
            "--resource",
            "customer:4821",
            "--arg",
            "amount=4000000000",
        ],
        &refund,
    );
    assert_ok(&out);
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("allow"));
    // Nearest block first: the refund agent's $5, then the orchestrator's $50.
    let budgets: Vec<&str> = lines.collect();
    assert_eq!(budgets.len(), 2, "{text}");
    assert!(budgets[0].starts_with("budget block=1 "), "{text}");
    assert!(
        budgets[0].ends_with("unit=usd_microcents ceiling=500000000"),
        "{text}"
    );
    assert!(budgets[1].ends_with("ceiling=5000000000"), "{text}");

    let out = baton(
        &[
            "verify",
            "--key",
            &pk,
            "--action",
            "refund.issue",
            "--resource",
            "customer:4821",
            "--arg",
            "amount=4000000000",
            "--json",
        ],
        &refund,
    );
    assert_ok(&out);
    let doc = json(&out);
    assert_eq!(doc["decision"], "allow");
    assert_eq!(doc["reason"], Value::Null);
    assert_eq!(doc["budgets"][0]["block"], 1);
    assert_eq!(doc["budgets"][0]["ceiling"], 500_000_000u64);
    assert_eq!(doc["budgets"][0]["block_id"].as_str().unwrap().len(), 64);

    // Above the argument bound.
    let out = baton(
        &[
            "verify",
            "--key",
            &pk,
            "--action",
            "refund.issue",
            "--resource",
            "customer:4821",
            "--arg",
            "amount=15000000000",
        ],
        &refund,
    );
    assert_code(&out, 1);
    assert!(stdout(&out).starts_with("deny arg_out_of_bounds: "));
}

#[test]
fn email_send_is_denied_with_action_not_allowed() {
    let s = Sandbox::new("deny");
    let (pk, _, refund) = scenario(&s);
    let out = baton(
        &["verify", "--key", &pk, "--action", "email.send", "--json"],
        &refund,
    );
    assert_code(&out, 1);
    let doc = json(&out);
    assert_eq!(doc["decision"], "deny");
    assert_eq!(doc["reason"], "action_not_allowed");
    assert_eq!(doc["budgets"], Value::Array(vec![]));
}

#[test]
fn widening_attenuation_fails() {
    let s = Sandbox::new("widen");
    let (_, _, refund) = scenario(&s);
    let out = baton(
        &["attenuate", "--budget", "usd=2", "--tools", "crm.*"],
        &refund,
    );
    assert_code(&out, 1);
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(
        err.contains("error: attenuating: widening_tools: "),
        "{err}"
    );

    let out = baton(&["attenuate", "--budget", "usd=6"], &refund);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("widening_budget"), "{}", stderr(&out));
}

#[test]
fn sealed_tokens_cannot_be_attenuated() {
    let s = Sandbox::new("seal");
    let (pk, _, refund) = scenario(&s);
    let out = baton(&["seal"], &refund);
    assert_ok(&out);
    let sealed = stdout(&out);
    let out = baton(&["attenuate", "--depth", "0"], &sealed);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("error: attenuating: sealed: "),
        "{}",
        stderr(&out)
    );
    // A sealed token still verifies.
    let out = baton(
        &[
            "verify",
            "--key",
            &pk,
            "--action",
            "crm.read",
            "--resource",
            "customer:4821",
        ],
        &sealed,
    );
    assert_ok(&out);
    let out = baton(&["inspect", "--json"], &sealed);
    assert_ok(&out);
    assert_eq!(json(&out)["sealed"], true);
}

#[test]
fn inspect_json_reports_effective_budgets_and_depth() {
    let s = Sandbox::new("inspect");
    let (_, _, refund) = scenario(&s);
    let out = baton(&["inspect", "--json"], &refund);
    assert_ok(&out);
    let doc = json(&out);
    assert_eq!(doc["signatures_verified"], false);
    assert_eq!(doc["sealed"], false);
    assert_eq!(doc["blocks"].as_array().unwrap().len(), 2);
    assert_eq!(doc["blocks"][0]["kid"], doc["root_kid"]);
    assert_eq!(doc["blocks"][1]["kid"], Value::Null);
    let a = &doc["authority"];
    assert_eq!(a["remaining_depth"], 1);
    assert_eq!(
        a["effective_budgets"],
        serde_json::json!([{"unit": "usd_microcents", "tools": null, "ceiling": 500_000_000u64}])
    );
    assert_eq!(a["budgets"].as_array().unwrap().len(), 2);
    assert_eq!(a["block_ids"].as_array().unwrap().len(), 2);
    assert_eq!(a["kid"], doc["root_kid"]);
    assert_eq!(a["tools"], serde_json::json!(["crm.read", "refund.issue"]));
    assert_eq!(a["resources"], serde_json::json!(["customer:4821"]));
    assert_eq!(a["arg_bounds"][0]["bound"]["max"], 10_000_000_000u64);
    assert_eq!(a["labels"][1]["label"], "refund-agent");
    assert!(a["not_after"].as_u64().is_some());
    assert!(
        doc["blocks"][0]["caveats"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["not_after"]["rfc3339"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')))
    );
    assert!(doc["size_bytes"].as_u64().unwrap() > 0);

    let out = baton(&["inspect"], &refund);
    assert_ok(&out);
    let text = stdout(&out);
    assert!(text.contains("signatures NOT verified"), "{text}");
    assert!(text.contains("remaining depth: 1"), "{text}");
    assert!(
        text.contains("usd_microcents for all actions: 500000000 ($5.00)"),
        "{text}"
    );
}

#[test]
fn inspect_of_garbage_names_the_failed_step() {
    let out = baton(&["inspect"], "not a token\n");
    assert_code(&out, 1);
    assert!(out.stdout.is_empty());
    assert_eq!(
        stderr(&out),
        "error: parsing token: bad_prefix: token text does not start with the baton_v1_ prefix\n"
    );
    let out = baton(&["inspect"], "baton_v1_!!!!");
    assert_code(&out, 1);
    assert!(stderr(&out).starts_with("error: parsing token: base64_invalid: "));
    let out = baton(&["inspect"], "");
    assert_code(&out, 2);
    assert!(stderr(&out).starts_with("error: reading token from stdin: "));
}

#[test]
fn only_one_trailing_newline_is_trimmed() {
    let s = Sandbox::new("newline");
    s.keygen("k");
    let token = s.mint("k", &["--tools", "*"]);
    assert!(token.ends_with('\n'));
    assert_ok(&baton(&["inspect"], token.trim_end()));
    assert_ok(&baton(&["inspect"], &token));
    let out = baton(&["inspect"], &format!("{token}\n"));
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("base64_whitespace"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn wrong_public_key_gives_unknown_kid() {
    let s = Sandbox::new("kid");
    let (_, _, refund) = scenario(&s);
    let other = s.keygen("other.key");
    let out = baton(
        &["verify", "--key", &other, "--action", "crm.read", "--json"],
        &refund,
    );
    assert_code(&out, 1);
    assert_eq!(json(&out)["reason"], "unknown_kid");

    // The same through a keyset file holding keygen's text output.
    let out = baton(&["keygen", "--out", path_str(&s.path("third.key"))], "");
    assert_ok(&out);
    let keyset = s.path("keys.txt");
    std::fs::write(&keyset, format!("\n# comment\n{}", stdout(&out))).unwrap();
    let out = baton(
        &[
            "verify",
            "--keyset",
            path_str(&keyset),
            "--action",
            "crm.read",
        ],
        &refund,
    );
    assert_code(&out, 1);
    assert!(stdout(&out).starts_with("deny unknown_kid: "));
}

#[test]
fn keyset_file_verifies_and_bad_lines_are_reported() {
    let s = Sandbox::new("keyset");
    let (pk, _, refund) = scenario(&s);
    let keyset = s.path("keys.txt");
    std::fs::write(&keyset, format!("# issuer\n\n  {pk}  \n")).unwrap();
    let args = [
        "verify",
        "--keyset",
        path_str(&keyset),
        "--action",
        "crm.read",
        "--resource",
        "customer:4821",
    ];
    assert_ok(&baton(&args, &refund));
    std::fs::write(&keyset, format!("{pk}\nbaton_pk1_nope\n")).unwrap();
    let out = baton(&args, &refund);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.starts_with("error: reading keyset file ") && err.contains("line 2: key_encoding"),
        "{err}"
    );
}

#[test]
fn expired_tokens_are_denied() {
    let s = Sandbox::new("expired");
    let pk = s.keygen("k");
    let token = s.mint("k", &["--tools", "*", "--expires", "2001-09-09T01:46:40Z"]);
    let verify = |at: &str| {
        baton(
            &[
                "verify", "--key", &pk, "--action", "crm.read", "--at", at, "--skew", "0", "--json",
            ],
            &token,
        )
    };
    let out = verify("1000000001");
    assert_code(&out, 1);
    assert_eq!(json(&out)["reason"], "expired");
    assert_ok(&verify("1000000000"));
    // Default time is now, long after 2001.
    let out = baton(&["verify", "--key", &pk, "--action", "crm.read"], &token);
    assert_code(&out, 1);
    assert_eq!(stdout(&out), "deny expired: token has expired\n");
}

#[test]
fn revoked_blocks_are_denied() {
    let s = Sandbox::new("revoked");
    let (pk, orchestrator, refund) = scenario(&s);
    let out = baton(&["inspect", "--json"], &orchestrator);
    let root_id = json(&out)["blocks"][0]["id"].as_str().unwrap().to_owned();
    let out = baton(
        &[
            "verify",
            "--key",
            &pk,
            "--action",
            "crm.read",
            "--resource",
            "customer:4821",
            "--revoked",
            &root_id,
        ],
        &refund,
    );
    assert_code(&out, 1);
    assert!(stdout(&out).starts_with("deny revoked: "));
}

#[test]
fn usd_shorthand_equals_microcents() {
    let s = Sandbox::new("usd");
    s.keygen("k");
    // The budget caveat of the minted block, as inspect --json shows it.
    let budget = |flag: &str| {
        let token = s.mint("k", &["--tools", "*", "--budget", flag]);
        let out = baton(&["inspect", "--json"], &token);
        assert_ok(&out);
        let caveats = json(&out)["blocks"][0]["caveats"].clone();
        caveats
            .as_array()
            .expect("caveats is an array")
            .iter()
            .find(|c| c["type"] == "budget")
            .cloned()
            .expect("a budget caveat")
    };
    let microcents = budget("usd_microcents=5000000000");
    assert_eq!(microcents["ceiling"], 5_000_000_000u64);
    assert_eq!(budget("usd=50"), microcents);
    assert_eq!(budget("usd=50.00"), microcents);
    let tiny = budget("usd=0.00000001@crm.*");
    assert_eq!(tiny["ceiling"], 1);
    assert_eq!(tiny["unit"], "usd_microcents");
    assert_eq!(tiny["tools"], "crm.*");

    // More than 8 decimal places is a usage error, not a rounding.
    let out = baton(
        &[
            "mint",
            "--key",
            path_str(&s.path("k")),
            "--budget",
            "usd=0.000000001",
        ],
        "",
    );
    assert_code(&out, 2);
    assert!(stderr(&out).contains("--budget"), "{}", stderr(&out));
}

#[test]
fn caveat_flags_combine() {
    let s = Sandbox::new("flags");
    let pk = s.keygen("k");
    let token = s.mint(
        "k",
        &[
            "--tools",
            "refund.*",
            "--budget",
            "calls=10",
            "--budget",
            "usd=5@refund.issue",
            "--arg",
            "refund.*:amount<=100",
            "--arg",
            "refund.*:amount>=1",
            "--arg",
            "refund.*:currency=eur|usd",
            "--not-before",
            "1000",
            "--expires",
            "2000",
        ],
    );
    let out = baton(&["inspect", "--json"], &token);
    let a = json(&out)["authority"].clone();
    assert_eq!(a["not_before"], 1000);
    assert_eq!(a["not_after"], 2000);
    let bounds = a["arg_bounds"].as_array().unwrap();
    assert_eq!(bounds.len(), 2);
    assert!(bounds.contains(&serde_json::json!({
        "block": 0, "action": "refund.*", "arg": "amount",
        "bound": {"kind": "range", "min": 1, "max": 100}
    })));
    assert!(bounds.contains(&serde_json::json!({
        "block": 0, "action": "refund.*", "arg": "currency",
        "bound": {"kind": "one_of", "values": ["eur", "usd"]}
    })));
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            "--key",
            &pk,
            "--action",
            "refund.issue",
            "--at",
            "1500",
            "--json",
        ];
        args.extend_from_slice(extra);
        json(&baton(&args, &token))
    };
    let ok = verify(&["--arg", "amount=100", "--arg", "currency=eur"]);
    assert_eq!(ok["decision"], "allow");
    // calls, then the per-toolset usd budget, both from block 0.
    assert_eq!(ok["budgets"].as_array().unwrap().len(), 2);
    assert_eq!(
        verify(&["--arg", "amount=0", "--arg", "currency=eur"])["reason"],
        "arg_out_of_bounds"
    );
    assert_eq!(
        verify(&["--arg", "amount=5", "--arg", "currency=gbp"])["reason"],
        "arg_out_of_bounds"
    );
    // A string where an integer is bounded.
    assert_eq!(
        verify(&["--arg", "amount=five", "--arg", "currency=eur"])["reason"],
        "arg_out_of_bounds"
    );
    assert_eq!(verify(&["--arg", "amount=5"])["reason"], "arg_missing");

    // The same bound twice is refused before any key is read.
    let out = baton(
        &[
            "mint",
            "--key",
            "/nonexistent",
            "--arg",
            "a:x<=1",
            "--arg",
            "a:x<=2",
        ],
        "",
    );
    assert_code(&out, 2);
    assert!(stderr(&out).starts_with("error: reading caveat flags: "));
}

#[test]
fn ttl_in_attenuate_stays_within_the_parent() {
    let s = Sandbox::new("ttl");
    s.keygen("k");
    let parent = s.mint("k", &["--tools", "*", "--ttl", "1h"]);
    let out = baton(&["attenuate", "--ttl", "10h"], &parent);
    assert_ok(&out);
    let expiry =
        |token: &str| json(&baton(&["inspect", "--json"], token))["authority"]["not_after"].clone();
    assert_eq!(expiry(&stdout(&out)), expiry(&parent));
    // An explicit --expires past the parent's is a widening, not clamped.
    let out = baton(&["attenuate", "--expires", "9999999999"], &parent);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("widening_expiry"), "{}", stderr(&out));
}

#[test]
fn local_errors_exit_2_and_name_the_step() {
    let s = Sandbox::new("local");
    let out = baton(&["mint", "--key", path_str(&s.path("missing.key"))], "");
    assert_code(&out, 2);
    assert!(
        stderr(&out).starts_with(&format!(
            "error: reading key file {}: ",
            s.path("missing.key").display()
        )),
        "{}",
        stderr(&out)
    );
    let out = baton(&["verify", "--key", "baton_pk1_x", "--action", "a"], "");
    assert_code(&out, 2);
    let out = baton(&["verify", "--action", "a"], "");
    assert_code(&out, 2);
    let out = baton(&["mint", "--key", "k", "--ttl", "1h", "--expires", "5"], "");
    assert_code(&out, 2);
}

/// `inspect --json` prints the effective authority in the schema of the
/// test vectors (spec/token.md §10.1): for every valid vector, the same
/// object, bounds and budget lists included.
#[test]
fn inspect_json_authority_is_the_vector_schema() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/vectors");
    let mut checked = 0;
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("spec/vectors exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    for path in names {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("readable"))
            .expect("a vector is JSON");
        if v["expected"]["result"] != "valid" {
            continue;
        }
        let out = baton(
            &["inspect", "--json"],
            v["token"].as_str().expect("a token"),
        );
        assert_ok(&out);
        assert_eq!(
            json(&out)["authority"],
            v["authority"],
            "{}: inspect and the vector disagree",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} valid vectors");
}

/// Token errors come before request errors (spec/token.md §6.4): a garbage
/// token with an invalid action is reported as a bad token.
#[test]
fn an_invalid_token_is_reported_before_an_invalid_request() {
    let s = Sandbox::new("precedence");
    let pk = s.keygen("k");
    let token = s.mint("k", &["--tools", "*"]);
    let verify =
        |action: &str, stdin: &str| baton(&["verify", "--key", &pk, "--action", action], stdin);

    let out = verify("BAD!", "garbage\n");
    assert_code(&out, 1);
    assert!(
        stdout(&out).starts_with("deny bad_prefix: "),
        "{}",
        stdout(&out)
    );
    // A well-formed token with a bad signature: still the token's code.
    let mut forged = token.trim_end().to_owned();
    let last = forged.pop().expect("a token is not empty");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let out = verify("BAD!", &forged);
    assert_code(&out, 1);
    assert!(
        !stdout(&out).starts_with("deny invalid_action"),
        "{}",
        stdout(&out)
    );
    // Only a valid token's request is judged.
    let out = verify("BAD!", &token);
    assert_code(&out, 1);
    assert!(
        stdout(&out).starts_with("deny invalid_action: "),
        "{}",
        stdout(&out)
    );
}

/// stdin: exactly one trailing `\n` is removed; `\r\n` leaves a `\r`, which
/// the library refuses like any other whitespace (README, "CLI input").
#[test]
fn crlf_on_stdin_is_refused() {
    let s = Sandbox::new("crlf");
    let pk = s.keygen("k");
    let token = s.mint("k", &["--tools", "*"]);
    let crlf = format!("{}\r\n", token.trim_end());
    let out = baton(&["inspect"], &crlf);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("base64_whitespace"),
        "{}",
        stderr(&out)
    );
    let out = baton(&["verify", "--key", &pk, "--action", "a"], &crlf);
    assert_code(&out, 1);
    assert!(
        stdout(&out).starts_with("deny base64_whitespace: "),
        "{}",
        stdout(&out)
    );
    let out = baton(&["verify", "--key", &pk, "--action", "a"], &token);
    assert_ok(&out);
}

/// `--arg` integers are i64: one past either end is a usage error (exit 2,
/// nothing on stdout), not a string and not a decision.
#[test]
fn arg_integers_outside_i64_are_usage_errors() {
    let s = Sandbox::new("argrange");
    let pk = s.keygen("k");
    let token = s.mint("k", &["--tools", "*", "--arg", "a:n<=5"]);
    let verify = |arg: &str| {
        baton(
            &["verify", "--key", &pk, "--action", "a", "--arg", arg],
            &token,
        )
    };
    for too_big in [
        "n=9223372036854775808",
        "n=-9223372036854775809",
        "n=99999999999999999999",
    ] {
        let out = verify(too_big);
        assert_code(&out, 2);
        assert!(out.stdout.is_empty());
        assert!(
            stderr(&out).contains("does not fit in 64 bits"),
            "{}",
            stderr(&out)
        );
    }
    // The ends of i64 are integers, judged by the bound.
    let out = verify("n=9223372036854775807");
    assert_code(&out, 1);
    assert!(
        stdout(&out).starts_with("deny arg_out_of_bounds"),
        "{}",
        stdout(&out)
    );
    let out = verify("n=-9223372036854775808");
    assert_ok(&out);
}

#[test]
fn holder_binding_prove_and_verify() {
    let s = Sandbox::new("holder");
    let (pk, orchestrator, _) = scenario(&s);
    let hsk = s.path("agent.hsk");
    let out = baton(&["keygen", "--holder", "--out", path_str(&hsk)], "");
    assert_ok(&out);
    let holder = stdout(&out).trim().to_owned();
    assert!(holder.starts_with("baton_hpk1_"), "{holder}");
    let out = baton(
        &["attenuate", "--tools", "refund.issue", "--holder", &holder],
        &orchestrator,
    );
    assert_ok(&out);
    let bound = stdout(&out);
    let body = s.path("body.json");
    std::fs::write(&body, br#"{"amount":40}"#).unwrap();
    let request = [
        "--action",
        "refund.issue",
        "--resource",
        "customer:4821",
        "--arg",
        "amount=40",
        "--body",
        path_str(&body),
    ];
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "--key", &pk, "--audience", "gw-a"];
        args.extend_from_slice(&request);
        args.extend_from_slice(extra);
        baton(&args, &bound)
    };
    // Without the key the token text grants nothing.
    let out = verify(&[]);
    assert_code(&out, 1);
    assert!(
        stdout(&out).starts_with("deny proof_missing"),
        "{}",
        stdout(&out)
    );
    let out = baton(&["attenuate", "--depth", "0"], &bound);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("holder_mismatch"), "{}", stderr(&out));
    // With it: prove, then verify once.
    let mut args = vec![
        "prove",
        "--holder-key",
        path_str(&hsk),
        "--audience",
        "gw-a",
    ];
    args.extend_from_slice(&request);
    let out = baton(&args, &bound);
    assert_ok(&out);
    let proof = stdout(&out).trim().to_owned();
    let out = verify(&["--proof", &proof]);
    assert_ok(&out);
    assert!(stdout(&out).starts_with("allow"));
    // Another audience, another body, a mangled proof.
    let mut args = vec![
        "verify",
        "--key",
        &pk,
        "--audience",
        "gw-b",
        "--proof",
        &proof,
    ];
    args.extend_from_slice(&request);
    let out = baton(&args, &bound);
    assert!(
        stdout(&out).starts_with("deny proof_invalid"),
        "{}",
        stdout(&out)
    );
    std::fs::write(&body, br#"{"amount":4000}"#).unwrap();
    let out = verify(&["--proof", &proof]);
    assert!(
        stdout(&out).starts_with("deny proof_invalid"),
        "{}",
        stdout(&out)
    );
    let out = verify(&["--proof", "baton_proof_v1_x"]);
    assert!(
        stdout(&out).starts_with("deny proof_malformed"),
        "{}",
        stdout(&out)
    );
    // A bearer token where a bound one is required.
    let mut args = vec![
        "verify",
        "--key",
        &pk,
        "--require-holder",
        "--action",
        "crm.read",
    ];
    args.push("--resource");
    args.push("customer:4821");
    let out = baton(&args, &orchestrator);
    assert!(
        stdout(&out).starts_with("deny holder_required"),
        "{}",
        stdout(&out)
    );
    // The holder narrows its own token with its key; the child stays bound.
    let out = baton(
        &["attenuate", "--holder-key", path_str(&hsk), "--depth", "0"],
        &bound,
    );
    assert_ok(&out);
    let out = baton(&["inspect", "--json"], &stdout(&out));
    assert_ok(&out);
    assert!(stdout(&out).contains(&holder));
}
