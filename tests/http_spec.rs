//! Keeps spec/http.md true: its endpoint list against the router (both
//! directions), its error-code list against the source (both directions),
//! and its `example:` request/response pairs against the real service.
#![cfg(feature = "server")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use baton::server::Service;
use baton::server::writer::{ManualClock, WriterConfig};
use baton::store::sqlite::SqliteStore;
use baton::{Caveat, Token, Unit};
use serde_json::Value;
use tower::ServiceExt;

/// The server clock of the examples (spec/http.md §6.0).
const T0: u64 = 1_800_000_000_000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn spec() -> String {
    std::fs::read_to_string(root().join("spec/http.md")).expect("spec/http.md")
}

/// Fenced blocks as (info string, body).
fn fences(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in doc.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some(rest)) if rest.trim().is_empty() => out.extend(current.take()),
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(current.is_none(), "unterminated code block in spec/http.md");
    out
}

fn block_lines(doc: &str, tag: &str) -> Vec<String> {
    let blocks: Vec<_> = fences(doc).into_iter().filter(|(i, _)| i == tag).collect();
    assert_eq!(blocks.len(), 1, "spec/http.md must have one `{tag}` block");
    blocks[0]
        .1
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn documented_endpoints(doc: &str) -> BTreeSet<(String, String)> {
    block_lines(doc, "endpoints")
        .iter()
        .map(|l| {
            let (m, p) = l.split_once(' ').expect("METHOD PATH");
            (m.to_owned(), p.trim().to_owned())
        })
        .collect()
}

fn documented_codes(doc: &str) -> BTreeSet<(u16, String)> {
    block_lines(doc, "error-codes")
        .iter()
        .map(|l| {
            let (s, c) = l.split_once(' ').expect("STATUS CODE");
            (s.parse().expect("numeric status"), c.trim().to_owned())
        })
        .collect()
}

/// The example blocks: name → (status if a response, JSON).
fn examples(doc: &str) -> BTreeMap<String, (Option<u16>, Value)> {
    let mut out = BTreeMap::new();
    for (info, body) in fences(doc) {
        let mut words = info.split_whitespace();
        if words.next() != Some("json") {
            continue;
        }
        let mut name = None;
        let mut status = None;
        for w in words {
            if let Some(n) = w.strip_prefix("example:") {
                name = Some(n.to_owned());
            } else if let Some(s) = w.strip_prefix("status:") {
                status = Some(s.parse::<u16>().expect("numeric status"));
            }
        }
        if let Some(n) = name {
            let v: Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("example {n} is not JSON: {e}"));
            assert!(
                out.insert(n.clone(), (status, v)).is_none(),
                "duplicate {n}"
            );
        }
    }
    out
}

fn rust_sources(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("readable source");
            out.push((path, text));
        }
    }
}

/// The text of the call starting at `open` (the index just past its `(`),
/// up to the matching `)`.
fn call_args(src: &str, open: usize) -> &str {
    let mut depth = 1;
    for (i, c) in src[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &src[open..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced call");
}

/// Leading string literal of `s` (after whitespace), if any.
fn leading_literal(s: &str) -> Option<&str> {
    let s = s.trim_start().strip_prefix('"')?;
    Some(&s[..s.find('"')?])
}

/// Routes of src/server/mod.rs: every `.route("PATH", get(..).post(..))`.
fn registered_routes() -> BTreeSet<(String, String)> {
    let src = std::fs::read_to_string(root().join("src/server/mod.rs")).expect("mod.rs");
    let mut routes = BTreeSet::new();
    for (at, _) in src.match_indices(".route(") {
        let args = call_args(&src, at + ".route(".len());
        let path = leading_literal(args).expect("route path literal");
        let handlers = &args[args.find(',').expect("route handler")..];
        let mut found = false;
        for method in ["get", "post", "put", "patch", "delete", "head", "options"] {
            let needle = format!("{method}(");
            let used = handlers.match_indices(&needle).any(|(i, _)| {
                i == 0
                    || !handlers[..i]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            });
            if used {
                routes.insert((method.to_uppercase(), path.to_owned()));
                found = true;
            }
        }
        assert!(found, "no method found for route {path}");
    }
    assert!(
        routes.len() >= 10,
        "route parsing found too little: {routes:?}"
    );
    routes
}

/// (status, code) literals of the HTTP layer: `ApiError::new(STATUS, "code", ..)`
/// and `error_reply(STATUS, "code", ..)` in src/server/*.rs.
fn http_layer_codes() -> BTreeSet<(u16, String)> {
    let mut files = Vec::new();
    rust_sources(&root().join("src/server"), &mut files);
    let mut out = BTreeSet::new();
    for (path, src) in &files {
        for call in ["ApiError::new(", "error_reply("] {
            for (at, _) in src.match_indices(call) {
                let args = call_args(src, at + call.len());
                let Some((status, rest)) = args.split_once(',') else {
                    continue;
                };
                let (Ok(status), Some(code)) =
                    (status.trim().parse::<u16>(), leading_literal(rest))
                else {
                    continue; // a definition, or a dynamic code (token errors)
                };
                assert!(
                    code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "odd code {code:?} in {}",
                    path.display()
                );
                out.insert((status, code.to_owned()));
            }
        }
    }
    assert!(out.len() >= 15, "code parsing found too little: {out:?}");
    out
}

/// The `=> "code"` literals inside `fn NAME(` of `src`.
fn match_arm_literals(src: &str, fn_name: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in src.match_indices(&format!("fn {fn_name}(")) {
        let body_start = at + src[at..].find('{').expect("fn body");
        let mut depth = 0;
        let mut end = body_start;
        for (i, c) in src[body_start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = body_start + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let body = &src[body_start..end];
        for (i, _) in body.match_indices("=>") {
            if let Some(code) = leading_literal(&body[i + 2..]) {
                out.insert(code.to_owned());
            }
        }
    }
    out
}

/// The variants of `Denied` in src/error.rs (authorization denials: 403).
const DENIED: [&str; 8] = [
    "Expired",
    "NotYetValid",
    "InvalidAction",
    "ActionNotAllowed",
    "ResourceNotAllowed",
    "InvalidArgs",
    "ArgMissing",
    "ArgOutOfBounds",
];

/// Denial codes of a request that cannot be formed (`Request::new`,
/// `Request::arg`): answered 400 by the HTTP layer (spec/http.md §7.2).
const MALFORMED: [&str; 2] = ["invalid_action", "invalid_args"];

/// (variant, code) pairs of the `Self::Variant ... => "code"` arms in
/// every `fn NAME(` of `src`.
fn variant_literals(src: &str, fn_name: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (at, _) in src.match_indices(&format!("fn {fn_name}(")) {
        let body = &src[at..];
        let body = &body[..body.find("\n    }\n").unwrap_or(body.len())];
        for (i, _) in body.match_indices("Self::") {
            let rest = &body[i + "Self::".len()..];
            let variant: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let Some(arrow) = rest.find("=>") else {
                continue;
            };
            if let Some(code) = leading_literal(&rest[arrow + 2..]) {
                out.push((variant, code.to_owned()));
            }
        }
    }
    out
}

/// LedgerError variant → the HTTP statuses `ledger_error_reply` gives it.
fn ledger_statuses(writer: &str) -> BTreeMap<String, BTreeSet<u16>> {
    let at = writer
        .find("fn ledger_error_reply(")
        .expect("ledger_error_reply in http/render.rs");
    let body = &writer[at..];
    let mut out: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for (i, _) in body.match_indices("LedgerError::") {
        let rest = &body[i + "LedgerError::".len()..];
        let variant: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let Some(arrow) = rest.find("=>") else {
            continue;
        };
        // The arm's pattern must not span another arm.
        if rest[..arrow].contains("LedgerError::") {
            continue;
        }
        let digits: String = rest[arrow + 2..]
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(status) = digits.parse() {
            out.entry(variant).or_default().insert(status);
        }
    }
    assert!(out.len() >= 5, "status parsing found too little: {out:?}");
    out
}

struct Harness {
    service: Service,
}

fn harness() -> Harness {
    let store = SqliteStore::in_memory().expect("in-memory store");
    let config = WriterConfig::default().grace_ms(1_000).max_batch(64);
    let service = Service::start(Box::new(store), Arc::new(ManualClock::new(T0)), config)
        .expect("service starts");
    Harness { service }
}

impl Harness {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&Token>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {}", t.to_text()));
        }
        self.send(req, body).await
    }

    /// As `call`, with the `Authorization` header given verbatim.
    async fn call_auth(
        &self,
        method: &str,
        path: &str,
        authorization: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", authorization);
        self.send(req, body).await
    }

    async fn send(&self, req: axum::http::request::Builder, body: Option<&Value>) -> (u16, Value) {
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .expect("request");
        let resp = self
            .service
            .router()
            .oneshot(req)
            .await
            .expect("infallible");
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

#[tokio::test]
async fn every_documented_endpoint_is_routed() {
    let h = harness();
    let endpoints = documented_endpoints(&spec());
    assert!(!endpoints.is_empty());
    for (method, path) in &endpoints {
        let uri = path.replace("{id}", "rsv_000000000000000000000000000000000000");
        let body = (method == "POST").then(|| serde_json::json!({}));
        let (status, v) = h.call(method, &uri, None, body.as_ref()).await;
        assert_ne!(status, 405, "{method} {path}: method not routed");
        assert!(
            !(status == 404 && v["error"]["code"] == "not_found"),
            "{method} {path}: no such route"
        );
    }
}

#[test]
fn every_route_is_documented_and_nothing_else() {
    let documented = documented_endpoints(&spec());
    let registered = registered_routes();
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from spec/http.md: {undocumented:?}"
    );
    assert!(stale.is_empty(), "documented but not routed: {stale:?}");
}

#[test]
fn error_codes_match_the_source() {
    let doc = spec();
    let documented = documented_codes(&doc);
    let documented_names: BTreeSet<&str> = documented.iter().map(|(_, c)| c.as_str()).collect();

    // Every documented code exists in src/.
    let mut files = Vec::new();
    rust_sources(&root().join("src"), &mut files);
    for (status, code) in &documented {
        assert!(
            (100..600).contains(status),
            "bad status {status} for {code}"
        );
        let quoted = format!("\"{code}\"");
        assert!(
            files.iter().any(|(_, src)| src.contains(&quoted)),
            "documented code {code} does not occur in src/"
        );
    }

    // Every literal of the HTTP layer is documented with its status.
    for (status, code) in http_layer_codes() {
        assert!(
            documented.contains(&(status, code.clone())),
            "`{status} {code}` (src/server) missing from the error-codes block"
        );
    }

    // Every ledger code is documented with every status writer.rs maps it to.
    let ledger = std::fs::read_to_string(root().join("src/ledger.rs")).expect("ledger.rs");
    let ledger_codes = match_arm_literals(&ledger, "code");
    assert!(ledger_codes.len() >= 5, "{ledger_codes:?}");
    let variant_codes = variant_literals(&ledger, "code");
    let render =
        std::fs::read_to_string(root().join("src/server/http/render.rs")).expect("http/render.rs");
    let statuses = ledger_statuses(&render);
    for (variant, code) in &variant_codes {
        let mapped = statuses.get(variant).unwrap_or_else(|| {
            panic!("LedgerError::{variant} has no status in ledger_error_reply")
        });
        for status in mapped {
            assert!(
                documented.contains(&(*status, code.clone())),
                "`{status} {code}` (ledger) missing from the error-codes block"
            );
        }
    }

    // Every token reason code reachable over HTTP is documented.
    let errors = std::fs::read_to_string(root().join("src/error.rs")).expect("error.rs");
    let mut token_codes = match_arm_literals(&errors, "code");
    // `CaveatKind::widening_code`, in error.rs beside the errors it names.
    token_codes.extend(match_arm_literals(&errors, "widening_code"));
    // Never produced over HTTP (spec/http.md §7.2).
    let not_over_http = [
        "sealed",
        "widening_label",
        "holder_required",
        "invalid_operation",
    ];
    for code in &token_codes {
        if not_over_http.contains(&code.as_str()) {
            continue;
        }
        assert!(
            documented_names.contains(code.as_str()),
            "token code {code} missing from the error-codes block"
        );
    }
    assert!(token_codes.contains("widening_tools") && token_codes.contains("arg_missing"));
    // Statuses (spec/http.md §1.2, §7.2): an invalid bearer token is 401,
    // a denial 403, a revoked chain 403; a request the token library cannot
    // form (malformed action name or arguments) is 400.
    let denied: BTreeSet<String> = variant_literals(&errors, "code")
        .into_iter()
        .filter(|(v, _)| DENIED.contains(&v.as_str()))
        .map(|(_, c)| c)
        .collect();
    assert_eq!(
        denied.len(),
        DENIED.len(),
        "Denied variants changed: {denied:?}"
    );
    for code in &token_codes {
        if not_over_http.contains(&code.as_str())
            || ["rng_failed", "revoked"].contains(&code.as_str())
        {
            continue;
        }
        let status = if MALFORMED.contains(&code.as_str()) {
            400
        } else if code == "proof_unavailable" {
            // A full replay store: retry later (spec/http.md §1.2.1).
            503
        } else if denied.contains(code) {
            403
        } else {
            401
        };
        assert!(
            documented.contains(&(status, code.clone())),
            "`{status} {code}` missing from the error-codes block"
        );
    }
    assert!(documented.contains(&(403, "revoked".to_owned())));

    // The human table of §7.1 lists every service code of the block.
    let table = &doc[doc.find("### 7.1").expect("§7.1")..doc.find("### 7.2").expect("§7.2")];
    for (_, code) in http_layer_codes() {
        assert!(
            table.contains(&format!("| `{code}` |")),
            "{code} missing from the §7.1 table"
        );
    }
    for code in &ledger_codes {
        assert!(
            table.contains(&format!("| `{code}` |")),
            "{code} missing from the §7.1 table"
        );
    }
}

/// `doc` (from the spec) describes `actual`: same shape, same values, except
/// that ids, tokens and keys only need the same form, and `message` is free.
fn conforms(doc: &Value, actual: &Value, at: &str) {
    match (doc, actual) {
        (Value::Object(d), Value::Object(a)) => {
            let dk: BTreeSet<_> = d.keys().collect();
            let ak: BTreeSet<_> = a.keys().collect();
            assert_eq!(dk, ak, "keys differ at {at}: doc vs service\n{actual}");
            for (k, dv) in d {
                if k == "message" {
                    assert!(a[k].is_string(), "{at}.message is not a string");
                    continue;
                }
                conforms(dv, &a[k], &format!("{at}.{k}"));
            }
        }
        (Value::Array(d), Value::Array(a)) => {
            assert_eq!(d.len(), a.len(), "array length differs at {at}\n{actual}");
            for (i, (dv, av)) in d.iter().zip(a).enumerate() {
                conforms(dv, av, &format!("{at}[{i}]"));
            }
        }
        (Value::String(d), Value::String(a)) => {
            let hex = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            };
            if d.len() >= 16 && hex(d) {
                assert!(
                    a.len() == d.len() && hex(a),
                    "{at}: {a:?} is not like {d:?}"
                );
            } else if let Some(prefix) = ["rsv_", "baton_v1_", "baton_pk1_"]
                .into_iter()
                .find(|p| d.starts_with(p))
            {
                assert!(a.starts_with(prefix), "{at}: {a:?} is not a {prefix}...");
                if prefix == "rsv_" {
                    assert!(a.len() == d.len() && hex(&a[4..]), "{at}: {a:?}");
                }
            } else {
                assert_eq!(d, a, "value differs at {at}");
            }
        }
        _ => assert_eq!(doc, actual, "value differs at {at}"),
    }
}

#[tokio::test]
async fn examples_match_the_service() {
    let doc = spec();
    let ex = examples(&doc);
    let get = |name: &str| -> &(Option<u16>, Value) {
        ex.get(name)
            .unwrap_or_else(|| panic!("spec/http.md lacks example:{name}"))
    };
    let check = |name: &str, (status, v): &(u16, Value)| {
        let (want_status, want) = get(name);
        assert_eq!(
            Some(*status),
            *want_status,
            "example:{name}: status differs\n{v}"
        );
        conforms(want, v, name);
    };
    // The §6.0 flow: root (calls 100, tool.*, depth 5) → parent (10) → child (4).
    let h = harness();
    let root = h
        .service
        .mint(vec![
            Caveat::budget(Unit::Calls, 100),
            Caveat::tools(["tool.*"]).unwrap(),
            Caveat::Depth(5),
        ])
        .unwrap();
    let parent = root
        .attenuate(vec![Caveat::budget(Unit::Calls, 10)])
        .unwrap();
    let child = parent
        .attenuate(vec![Caveat::budget(Unit::Calls, 4)])
        .unwrap();
    let admin = h.service.mint_admin_token().unwrap();
    // The doc's block ids stand for these.
    let ids = |s: &str| {
        s.replace(
            "3d9441c193e7b2243b622f0a05841cb26f8fa347aa407ed044bc19bbcb05971e",
            &child.block_ids()[2].to_string(),
        )
    };
    let request = |name: &str| -> Value {
        let (status, v) = get(name);
        assert!(status.is_none(), "example:{name} is a request");
        serde_json::from_str(&ids(&v.to_string())).unwrap()
    };

    check(
        "keys-response",
        &h.call("GET", "/v1/keys", None, None).await,
    );
    check(
        "mint-response",
        &h.call(
            "POST",
            "/v1/tokens",
            Some(&admin),
            Some(&request("mint-request")),
        )
        .await,
    );
    check(
        "authorize-response",
        &h.call(
            "POST",
            "/v1/authorize",
            Some(&child),
            Some(&request("authorize-request")),
        )
        .await,
    );

    let reserve = request("reserve-request");
    let first = h
        .call("POST", "/v1/reservations", Some(&child), Some(&reserve))
        .await;
    check("reserve-response", &first);
    // The block ids of the reservation are the flow's, nearest first.
    let scope_ids: Vec<_> = first.1["reservation"]["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["block_id"].as_str().unwrap().to_owned())
        .collect();
    let chain: Vec<_> = child
        .block_ids()
        .iter()
        .rev()
        .map(|b| b.to_string())
        .collect();
    assert_eq!(scope_ids, chain);
    // §3.6: a replay is the identical response.
    let again = h
        .call("POST", "/v1/reservations", Some(&child), Some(&reserve))
        .await;
    assert_eq!(first, again);

    let id = first.1["reservation"]["id"].as_str().unwrap().to_owned();
    // §1.3: the maker's ancestors see it (with the maker's block id); its
    // descendants and siblings do not.
    let path = format!("/v1/reservations/{id}");
    let (s, v) = h.call("GET", &path, Some(&parent), None).await;
    assert_eq!(s, 200);
    assert_eq!(
        v,
        serde_json::json!({ "reservation": first.1["reservation"] })
    );
    let grandchild = child
        .attenuate(vec![Caveat::budget(Unit::Calls, 1)])
        .unwrap();
    let sibling = parent
        .attenuate(vec![Caveat::budget(Unit::Calls, 4)])
        .unwrap();
    for other in [&grandchild, &sibling] {
        let (s, v) = h.call("GET", &path, Some(other), None).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (404, Some("reservation_not_found"))
        );
    }
    check(
        "commit-response",
        &h.call(
            "POST",
            &format!("/v1/reservations/{id}/commit"),
            Some(&child),
            Some(&request("commit-request")),
        )
        .await,
    );
    check(
        "reserve-insufficient-response",
        &h.call(
            "POST",
            "/v1/reservations",
            Some(&child),
            Some(&request("reserve-insufficient-request")),
        )
        .await,
    );
    check(
        "balances-response",
        &h.call("GET", "/v1/balances", Some(&child), None).await,
    );
    check(
        "revoke-response",
        &h.call(
            "POST",
            "/v1/revocations",
            Some(&child),
            Some(&request("revoke-request")),
        )
        .await,
    );
    check(
        "revoked-response",
        &h.call("GET", "/v1/balances", Some(&child), None).await,
    );
    let feed = h
        .call("GET", "/v1/revocations?after=0", Some(&admin), None)
        .await;
    check("feed-response", &feed);
    assert_eq!(
        feed.1["revocations"][0]["block_id"],
        child.block_ids()[2].to_string()
    );

    // Every example was used.
    let used = [
        "keys-response",
        "mint-request",
        "mint-response",
        "authorize-request",
        "authorize-response",
        "reserve-request",
        "reserve-response",
        "commit-request",
        "commit-response",
        "reserve-insufficient-request",
        "reserve-insufficient-response",
        "balances-response",
        "revoke-request",
        "revoke-response",
        "revoked-response",
        "feed-response",
    ];
    let unused: Vec<_> = ex.keys().filter(|k| !used.contains(&k.as_str())).collect();
    assert!(unused.is_empty(), "examples not checked: {unused:?}");
}

#[tokio::test]
async fn documented_error_statuses_hold() {
    // A few rows of §7 checked end to end, beyond the examples.
    let h = harness();
    let star = h
        .service
        .mint(vec![
            Caveat::tools(["*"]).unwrap(),
            Caveat::budget(Unit::Calls, 10),
        ])
        .unwrap();
    // `*` never grants administration (§5.2).
    let (s, v) = h
        .call(
            "POST",
            "/v1/tokens",
            Some(&star),
            Some(&serde_json::json!({ "tools": ["a"] })),
        )
        .await;
    assert_eq!((s, v["error"]["code"].as_str()), (403, Some("not_admin")));
    // Unknown path: 404 not_found; known path, wrong method: 405.
    let (s, v) = h.call("GET", "/v1/nothing", None, None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, v) = h.call("GET", "/v1/spend", None, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    // The scheme name is case-insensitive (§1.2).
    let (s, _) = h
        .call_auth(
            "GET",
            "/v1/balances",
            &format!("bEARER {}", star.to_text()),
            None,
        )
        .await;
    assert_eq!(s, 200);
    // Malformed names are 400, a disallowed well-formed resource 403 (§6.0).
    for (body, status, code) in [
        (
            serde_json::json!({ "action": "Not An Action" }),
            400,
            "invalid_action",
        ),
        (
            serde_json::json!({ "action": "a", "resource": "" }),
            400,
            "invalid_resource",
        ),
        (
            serde_json::json!({ "action": "a", "args": { "Bad-Name": 1 } }),
            400,
            "invalid_args",
        ),
        // `*` never grants an admin action, even on /v1/authorize (§6.3).
        (
            serde_json::json!({ "action": "baton.admin.mint" }),
            403,
            "not_admin",
        ),
    ] {
        let (s, v) = h
            .call("POST", "/v1/authorize", Some(&star), Some(&body))
            .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    let narrow = h
        .service
        .mint(vec![
            Caveat::tools(["a"]).unwrap(),
            Caveat::resources(["doc:1"]).unwrap(),
        ])
        .unwrap();
    let (s, v) = h
        .call(
            "POST",
            "/v1/authorize",
            Some(&narrow),
            Some(&serde_json::json!({ "action": "a", "resource": "doc:2" })),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("resource_not_allowed"))
    );
    // Minting refuses every tools pattern overlapping the admin namespace,
    // and the reserved unit `usd` (§5.3, §1.4).
    let admin = h.service.mint_admin_token().unwrap();
    for body in [
        serde_json::json!({ "tools": ["*"] }),
        serde_json::json!({ "tools": ["baton.*"] }),
        serde_json::json!({ "tools": ["baton.admin.*"] }),
        serde_json::json!({ "tools": ["a", "baton.admin.mint"] }),
        serde_json::json!({ "tools": ["a"], "budgets": [{ "unit": "usd", "ceiling": 1 }] }),
    ] {
        let (s, v) = h
            .call("POST", "/v1/tokens", Some(&admin), Some(&body))
            .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("invalid_caveat")),
            "{body}"
        );
    }
    // Amount 0 is refused before the ledger (§6.4).
    let (s, v) = h
        .call(
            "POST",
            "/v1/reservations",
            Some(&star),
            Some(&serde_json::json!({ "action": "a", "unit": "calls", "amount": 0, "idempotency_key": "k" })),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_amount"))
    );
    // Reusing a key for a different request: 409 idempotency_mismatch (§3.6).
    let body = |amount: u64| serde_json::json!({ "action": "a", "unit": "calls", "amount": amount, "idempotency_key": "same" });
    let (s, _) = h
        .call("POST", "/v1/spend", Some(&star), Some(&body(1)))
        .await;
    assert_eq!(s, 201);
    let (s, v) = h
        .call("POST", "/v1/spend", Some(&star), Some(&body(2)))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("idempotency_mismatch"))
    );
    // Metrics are OpenMetrics text (§6.15).
    let resp = h
        .service
        .router()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&text);
    for series in [
        "baton_ledger_requests_total{op=\"spend\",status=\"201\"} 1",
        "baton_ledger_batches_total ",
        "baton_ledger_group_retries_total 0",
        "baton_ready 1",
    ] {
        assert!(text.contains(series), "{series} missing from\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Readiness and health bodies (§6.13, §6.14).
    assert_eq!(
        h.call("GET", "/healthz", None, None).await,
        (200, serde_json::json!({ "status": "ok" }))
    );
    assert_eq!(
        h.call("GET", "/readyz", None, None).await,
        (200, serde_json::json!({ "ready": true }))
    );
}
