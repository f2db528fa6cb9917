//! The format v1 test vectors of `spec/vectors/`: how each one is built,
//! and the JSON it is written as (spec/token.md §10).
//!
//! Shared by the generator (`examples/vectors.rs`, which writes the files)
//! and the test (`tests/vectors.rs`, which checks the files against the
//! library and regenerates them in memory to catch drift). Everything is
//! deterministic: root keys and ephemeral keys come from fixed seeds,
//! Ed25519 signatures are deterministic (RFC 8032), requests carry fixed
//! times, and the JSON has a fixed field order.
//!
//! Every vector states its expected result here, in the source: the code an
//! invalid token must be rejected with, and the decision (allow, or the
//! denial code) of every request. The generator checks the library against
//! those statements before writing anything, so a file never records a
//! result nobody asked for. Only the details of an accepted token (block ids,
//! budget scopes, the folded authority) are taken from the library, and the
//! test pins them from then on.
//!
//! Invalid tokens are built the way an attacker would: by editing the bytes
//! of a real token, or by signing a bad block with the holder's own proof
//! secret (`baton::forge`). A vector rejected at signature level (`bad_*`,
//! `unknown_kid`) is first checked to parse, so it really tests the check it
//! names and not an earlier one.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use baton::forge;
use baton::pattern::ActionPattern;
use baton::token::TEXT_PREFIX;
use baton::{
    ArgBound, ArgConstraint, ArgValue, Budget, Caveat, Keyset, PublicKey, Request, RootKey, Token,
    Unit, UnverifiedToken, Verifier, VerifyError,
};
use ciborium::Value;
use serde::{Deserialize, Serialize};

/// The command that rewrites `spec/vectors/` from this module.
pub const REGENERATE: &str = "cargo run --features forge --example vectors -- --write";

/// The directory the vectors live in.
pub fn vectors_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/vectors")
}

/// When every token is issued (Unix seconds, 2027-01-15T08:00:00Z).
pub const ISSUED_AT: u64 = 1_800_000_000;
/// When the gateway sees most requests: ten minutes after issue.
pub const NOW: u64 = ISSUED_AT + 600;
/// The verifier's clock skew allowance: the reference default (spec §6.4).
pub const CLOCK_SKEW: u64 = 30;
/// One US dollar in `usd_microcents`.
const USD: u64 = 100_000_000;

/// The issuer's root key seed. Every token is minted under this key unless a
/// vector says otherwise.
const ISSUER: [u8; 32] = [0x01; 32];
/// A second issuer: a keyset that trusts only this key knows no other.
const OTHER_ISSUER: [u8; 32] = [0x02; 32];

// Ephemeral seeds, one per block, never reused across roles. The first
// byte names the family, so a reader of a vector's `seeds` sees where a
// key comes from.
/// The one-block token.
const SIMPLE_0: [u8; 32] = [0x30; 32];
/// Support scenario: orchestrator (block 0), refund agent (1), ticket agent (2).
const SUPPORT: [[u8; 32]; 3] = [[0x10; 32], [0x11; 32], [0x12; 32]];
/// A second support-like token, minted separately, whose block 1 is spliced.
const TWIN: [[u8; 32]; 2] = [[0x20; 32], [0x21; 32]];
/// A three-block chain of label-only hops, for reordering.
const HOPS: [[u8; 32]; 3] = [[0x50; 32], [0x51; 32], [0x52; 32]];
/// The token with a validity window.
const WINDOW_0: [u8; 32] = [0x60; 32];
/// The ephemeral key of a forged block.
const FORGED: [u8; 32] = [0xf0; 32];
/// The ephemeral key of a second forged block.
const FORGED_2: [u8; 32] = [0xf1; 32];

/// One vector file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vector {
    /// The vector's name; the file is `NNN_<name>.json`.
    pub name: String,
    /// What it tests and how it was built.
    pub description: String,
    /// The result of verification.
    pub expected: Expected,
    /// The keyset, in text form: the only keys the verifier trusts.
    pub root_public_keys: Vec<String>,
    /// The verifier's clock skew allowance, in seconds.
    pub clock_skew_seconds: u64,
    /// The verifier's audience for holders' proofs of possession (spec
    /// §12.4); absent when the vector needs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// The token in text form, exactly as a verifier receives it (for text
    /// vectors, mangled on purpose).
    pub token: String,
    /// The binary form in hex, for vectors built at the byte level. The text
    /// form is always `baton_v1_` and its base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_hex: Option<String>,
    /// For a valid token: its effective authority after verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<AuthorityJson>,
    /// For a valid token: requests to authorize, with their decisions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<RequestCase>,
    /// Every 32-byte seed used, so another implementation can rebuild the
    /// token: root keys (RFC 8032 secret keys) and block ephemeral keys.
    pub seeds: Vec<Seed>,
}

/// The expected result of verifying a vector's token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum Expected {
    /// The token verifies.
    Valid,
    /// The token is rejected with this reason code (spec/token.md §9).
    Invalid {
        /// The reason code.
        code: String,
    },
}

/// A seed and what it was used for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// Which key this seed makes.
    pub role: String,
    /// The 32-byte seed, hex.
    pub hex: String,
}

/// The effective authority of a verified token (spec/token.md §6.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorityJson {
    /// Block 0's key id, hex.
    pub kid: String,
    /// Whether the proof is a seal.
    pub sealed: bool,
    /// Every block id, block 0 first, hex.
    pub block_ids: Vec<String>,
    /// The effective tools set; `null` when no block declares one.
    pub tools: Option<Vec<String>>,
    /// The effective resources set; `null` when no block declares one.
    pub resources: Option<Vec<String>>,
    /// Blocks that may still be appended; `null` means unlimited.
    pub remaining_depth: Option<u32>,
    /// The effective not_before, Unix seconds.
    pub not_before: Option<u64>,
    /// The effective not_after, Unix seconds.
    pub not_after: Option<u64>,
    /// Every budget caveat of every block, in fold order.
    pub budgets: Vec<BudgetJson>,
    /// For each distinct declared (unit, filter), the smallest ceiling of
    /// a same-unit budget whose filter covers it; ordered by unit, then
    /// filter (spec/token.md §6.2).
    pub effective_budgets: Vec<EffectiveBudgetJson>,
    /// Every argument bound, in fold order.
    pub arg_bounds: Vec<ArgBoundJson>,
    /// Every label, in fold order.
    pub labels: Vec<LabelJson>,
    /// The holder key the token is bound to (`baton_hpk1_...`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

/// One declared budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetJson {
    /// Index of the declaring block.
    pub block: usize,
    /// Unit name.
    pub unit: String,
    /// Ceiling in minor units.
    pub ceiling: u64,
    /// Tools filter, if any.
    pub tools: Option<String>,
}

/// One effective budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EffectiveBudgetJson {
    /// Unit name.
    pub unit: String,
    /// Tools filter, if any.
    pub tools: Option<String>,
    /// The effective ceiling.
    pub ceiling: u64,
}

/// One argument bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgBoundJson {
    /// Index of the declaring block.
    pub block: usize,
    /// The action pattern it applies to.
    pub action: String,
    /// The argument name.
    pub arg: String,
    /// The bound.
    pub bound: BoundJson,
}

/// An argument bound's value (spec/token.md §10.1): `{"kind": "range",
/// "min", "max"}` or `{"kind": "one_of", "values"}`, the shape
/// `baton inspect --json` prints too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BoundJson {
    /// Inclusive integer range; `null` sides are unbounded.
    Range {
        /// Lower bound.
        min: Option<i64>,
        /// Upper bound.
        max: Option<i64>,
    },
    /// Allowed strings, in ascending bytewise order.
    OneOf {
        /// The strings.
        values: Vec<String>,
    },
}

/// One label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelJson {
    /// Index of the declaring block.
    pub block: usize,
    /// The label.
    pub label: String,
}

/// A request to authorize against a valid token, and its decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestCase {
    /// Why this request is here.
    pub note: String,
    /// The action name.
    pub action: String,
    /// The resource name, if the request names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Arguments: integers or strings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, ArgJson>,
    /// The request time, Unix seconds.
    pub time: u64,
    /// The operation a bound token's proof covers (spec §12.3); `call`
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// The raw request body in hex, which a bound token's proof covers;
    /// empty when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_hex: Option<String>,
    /// The `Baton-Proof` value sent with the request, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// The decision.
    pub expected: Decision,
}

/// A request argument value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ArgJson {
    /// An integer (i64).
    Int(i64),
    /// A string.
    Str(String),
}

/// The decision on a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case", deny_unknown_fields)]
pub enum Decision {
    /// Allowed; a spend must debit these budget scopes, nearest block first.
    Allow {
        /// The budget scopes.
        budgets: Vec<ScopeJson>,
    },
    /// Denied with this reason code.
    Deny {
        /// The reason code.
        code: String,
    },
}

/// A budget scope of an allowed request (spec/token.md §6.4 step 7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeJson {
    /// Index of the declaring block.
    pub block: usize,
    /// Its block id, hex: the ledger's name for the scope.
    pub block_id: String,
    /// Unit name.
    pub unit: String,
    /// Ceiling in minor units.
    pub ceiling: u64,
    /// Tools filter, if any.
    pub tools: Option<String>,
}

// ---------------------------------------------------------------------------
// Reading vectors back: shared by the generator's self-check and the test.

/// A verifier trusting exactly `keys` (text form), with `skew`.
pub fn verifier(keys: &[String], skew: u64) -> Result<Verifier, String> {
    let mut set = Keyset::new();
    for k in keys {
        let key = PublicKey::from_text(k).map_err(|e| format!("root key {k}: {e}"))?;
        set = set.with(key);
    }
    Ok(Verifier::new(set).with_skew(skew))
}

/// `verifier` with the audience a vector names, if any.
pub fn with_audience(v: Verifier, audience: Option<&str>) -> Result<Verifier, String> {
    match audience {
        None => Ok(v),
        Some(a) => Ok(
            v.with_audience(baton::Audience::new(a).map_err(|e| format!("audience {a:?}: {e}"))?)
        ),
    }
}

/// The effective authority of `token`, as written in a vector.
pub fn authority_json(token: &Token) -> AuthorityJson {
    let a = token.authority();
    let patterns = |s: Option<&std::collections::BTreeSet<_>>| {
        s.map(|s: &std::collections::BTreeSet<ActionPattern>| {
            s.iter().map(|p| p.as_str().to_owned()).collect()
        })
    };
    AuthorityJson {
        kid: token.root_kid().to_string(),
        sealed: token.is_sealed(),
        block_ids: token.block_ids().iter().map(ToString::to_string).collect(),
        tools: patterns(a.tools()),
        resources: a
            .resources()
            .map(|s| s.iter().map(|p| p.as_str().to_owned()).collect()),
        remaining_depth: a.remaining_depth(),
        not_before: a.not_before(),
        not_after: a.not_after(),
        budgets: a
            .budgets()
            .iter()
            .map(|(block, b)| BudgetJson {
                block: *block,
                unit: b.unit.to_string(),
                ceiling: b.ceiling,
                tools: b.tools.as_ref().map(|p| p.as_str().to_owned()),
            })
            .collect(),
        effective_budgets: a
            .effective_budgets()
            .into_iter()
            .map(|(unit, tools, ceiling)| EffectiveBudgetJson {
                unit: unit.to_string(),
                tools: tools.map(|p| p.as_str().to_owned()),
                ceiling,
            })
            .collect(),
        arg_bounds: a
            .arg_bounds()
            .iter()
            .map(|(block, c)| ArgBoundJson {
                block: *block,
                action: c.action.as_str().to_owned(),
                arg: c.arg.clone(),
                bound: match &c.bound {
                    ArgBound::Range { min, max } => BoundJson::Range {
                        min: *min,
                        max: *max,
                    },
                    ArgBound::OneOf(s) => BoundJson::OneOf {
                        values: s.iter().cloned().collect(),
                    },
                    _ => unreachable!("the generator only mints ranges and one_of sets"),
                },
            })
            .collect(),
        labels: a
            .labels()
            .iter()
            .map(|(block, l)| LabelJson {
                block: *block,
                label: l.clone(),
            })
            .collect(),
        holder: token.holder().map(|h| h.to_text()),
    }
}

/// Builds the library request for `case`. A request the library refuses to
/// build (bad action or resource name, repeated argument) is a denial too.
pub fn request(case: &RequestCase) -> Result<Request, baton::Denied> {
    let mut req = request_unproved(case)?;
    if let Some(p) = &case.proof {
        req = req.with_proof_header(p);
    }
    Ok(req)
}

/// The request of `case` without its proof: what a proof is signed over.
pub fn request_unproved(case: &RequestCase) -> Result<Request, baton::Denied> {
    let mut req = Request::new(&case.action, case.time)?;
    if let Some(op) = &case.operation {
        req = req.operation(op)?;
    }
    if let Some(b) = &case.body_hex {
        req = req.body(&hex::decode(b).map_err(|_| baton::Denied::InvalidArgs)?);
    }
    if let Some(r) = &case.resource {
        req = req.resource(r)?;
    }
    for (name, value) in &case.args {
        let value = match value {
            ArgJson::Int(i) => ArgValue::Int(*i),
            ArgJson::Str(s) => ArgValue::Str(s.clone()),
        };
        req = req.arg(name, value)?;
    }
    Ok(req)
}

/// What the library decides on `case`.
pub fn decide(verifier: &Verifier, token: &Token, case: &RequestCase) -> Decision {
    let req = match request(case) {
        Ok(r) => r,
        Err(e) => {
            return Decision::Deny {
                code: e.code().to_owned(),
            };
        }
    };
    match verifier.authorize(token, &req) {
        Ok(auth) => Decision::Allow {
            budgets: auth
                .budgets
                .iter()
                .map(|s| ScopeJson {
                    block: s.block,
                    block_id: s.block_id.to_string(),
                    unit: s.unit.to_string(),
                    ceiling: s.ceiling,
                    tools: s.tools.as_ref().map(|p| p.as_str().to_owned()),
                })
                .collect(),
        },
        Err(e) => Decision::Deny {
            code: e.code().to_owned(),
        },
    }
}

// ---------------------------------------------------------------------------
// Writing: files and README.

/// Every file of `spec/vectors/`, by name, with its exact contents.
pub fn render(vectors: &[Vector]) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let json = serde_json::to_string_pretty(v).expect("a vector always serializes");
            (file_name(i, v, vectors), json + "\n")
        })
        .collect();
    files.push(("README.md".to_owned(), readme(vectors)));
    files
}

/// The first file number of the holder-binding vectors (spec §12); the
/// numbers before it are the format's core vectors.
pub const HOLDER_FIRST: usize = 100;

/// Whether a vector belongs to the holder-binding family, numbered from
/// [`HOLDER_FIRST`].
fn holder_family(v: &Vector) -> bool {
    v.name.starts_with("holder_") || v.name.starts_with("proof_")
}

fn file_name(index: usize, v: &Vector, vectors: &[Vector]) -> String {
    let number = match vectors.iter().position(holder_family) {
        Some(first) if index >= first => HOLDER_FIRST + index - first,
        _ => index + 1,
    };
    format!("{number:03}_{}.json", v.name)
}

fn readme(vectors: &[Vector]) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "# Baton format v1 test vectors

Generated by `{REGENERATE}`
from `tests/vectors_gen/mod.rs`; do not edit by hand.
`cargo test --features forge --test vectors` checks every file against
the reference implementation and fails if regenerating would change a byte.
The format is specified in `../token.md`; the reason codes are its §9.

## Running a vector

1. Build a verifier that trusts exactly the keys in `root_public_keys` (text
   form `baton_pk1_...`, spec §5.1), with a clock skew allowance of
   `clock_skew_seconds` (spec §6.4), no revocations and no cache.
2. Verify `token`, which is the text form exactly as received (spec §2 and
   §6.1). When `token_hex` is present it is the binary form, and `token` is
   `baton_v1_` followed by its unpadded base64url.
3. `expected` is `{{\"result\": \"valid\"}}` or `{{\"result\": \"invalid\",
   \"code\": ...}}`: the reason code of the first failing check, in the order
   of spec §6.1.
4. For a valid token, `authority` is its effective authority (spec §6.2)
   in the JSON schema of spec §10.1 (which `baton inspect --json` prints
   too): key id, block ids (hex), tools, resources, remaining depth (`null` =
   unlimited), validity window, every declared budget, the effective ceiling
   per (unit, tools filter) in the order of spec §6.2, argument bounds
   (`{{\"kind\": \"range\", \"min\", \"max\"}}` or
   `{{\"kind\": \"one_of\", \"values\"}}`) and
   labels.
5. Then authorize each of `requests` (spec §6.4): action, optional resource,
   arguments (JSON integers are i64, strings are strings) and time in Unix
   seconds. `expected` is `{{\"decision\": \"allow\", \"budgets\": [...]}}` with
   the budget scopes a spend must debit, nearest block first, or
   `{{\"decision\": \"deny\", \"code\": ...}}`. A request whose action or
   resource is not a valid name is denied when it is built
   (`invalid_action`, `resource_not_allowed`).
6. Holder-bound tokens (spec §12, vectors 100 and up): the verifier's
   `audience` is given, `authority.holder` names the holder key, and a
   request may carry `operation` (default `call`), `body_hex` (the raw body;
   default empty) and `proof` (the `Baton-Proof` value). Decide the requests
   in order with one verifier and one replay store, with the default proof
   window of 60 s back and 10 s ahead of the request time.

`seeds` lists every 32-byte seed used (root keys and block ephemeral keys),
so another implementation can rebuild the valid tokens byte for byte:
Ed25519 signatures are deterministic. Invalid tokens were then edited as
each description says. All tokens are issued at {ISSUED_AT} (Unix seconds);
most requests are made at {NOW}.

## Vectors

| File | What it tests | Expected |
|---|---|---|
"
    ));
    for (i, v) in vectors.iter().enumerate() {
        let expected = match &v.expected {
            Expected::Invalid { code } => format!("invalid: `{code}`"),
            Expected::Valid => {
                let decisions: Vec<String> = v
                    .requests
                    .iter()
                    .map(|r| match &r.expected {
                        Decision::Allow { .. } => "allow".to_owned(),
                        Decision::Deny { code } => format!("deny `{code}`"),
                    })
                    .collect();
                format!("valid; requests: {}", decisions.join(", "))
            }
        };
        s.push_str(&format!(
            "| [{file}]({file}) | {desc} | {expected} |\n",
            file = file_name(i, v, vectors),
            desc = v.description.replace('|', "\\|").replace('\n', " "),
        ));
    }
    s
}

// ---------------------------------------------------------------------------
// Building blocks.

fn hex32(s: &[u8; 32]) -> String {
    hex::encode(s)
}

fn seed(role: &str, s: &[u8; 32]) -> Seed {
    Seed {
        role: role.to_owned(),
        hex: hex32(s),
    }
}

fn text_of(bytes: &[u8]) -> String {
    format!("{TEXT_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn issuer() -> RootKey {
    RootKey::from_seed(&ISSUER)
}

fn other_issuer() -> RootKey {
    RootKey::from_seed(&OTHER_ISSUER)
}

fn pattern(s: &str) -> ActionPattern {
    ActionPattern::parse(s).expect("the generator's patterns are valid")
}

fn tools(p: &[&str]) -> Caveat {
    Caveat::tools(p.iter().copied()).expect("the generator's patterns are valid")
}

fn resources(p: &[&str]) -> Caveat {
    Caveat::resources(p.iter().copied()).expect("the generator's patterns are valid")
}

fn amount_at_most(max: i64) -> Caveat {
    Caveat::ArgBound(ArgConstraint::new(
        pattern("refund.issue"),
        "amount",
        ArgBound::Range {
            min: None,
            max: Some(max),
        },
    ))
}

/// The token's binary form split into its three items (spec §3.1):
/// version, the flat list of payload and signature byte strings, the proof.
struct Parts {
    version: Value,
    items: Vec<Vec<u8>>,
    proof: Vec<u8>,
}

impl Parts {
    fn of(bytes: &[u8]) -> Self {
        let v: Value = ciborium::de::from_reader(bytes).expect("the generator edits real tokens");
        let Value::Array(mut top) = v else {
            panic!("a token is an array")
        };
        let take_bytes = |v: Value| match v {
            Value::Bytes(b) => b,
            other => panic!("expected a byte string, found {other:?}"),
        };
        let proof = take_bytes(top.pop().expect("three items"));
        let Some(Value::Array(items)) = top.pop() else {
            panic!("blocks is an array")
        };
        let version = top.pop().expect("three items");
        Self {
            version,
            items: items.into_iter().map(take_bytes).collect(),
            proof,
        }
    }

    fn payload(&self, block: usize) -> &[u8] {
        &self.items[2 * block]
    }

    fn signature_mut(&mut self, block: usize) -> &mut Vec<u8> {
        &mut self.items[2 * block + 1]
    }

    /// Removes block `block`, returning its payload and signature.
    fn remove_block(&mut self, block: usize) -> (Vec<u8>, Vec<u8>) {
        let payload = self.items.remove(2 * block);
        let signature = self.items.remove(2 * block);
        (payload, signature)
    }

    fn push_block(&mut self, (payload, signature): (Vec<u8>, Vec<u8>)) {
        self.items.push(payload);
        self.items.push(signature);
    }

    fn encode(&self) -> Vec<u8> {
        cbor(&Value::Array(vec![
            self.version.clone(),
            Value::Array(self.items.iter().cloned().map(Value::Bytes).collect()),
            Value::Bytes(self.proof.clone()),
        ]))
    }
}

/// Canonical CBOR of `v`: ciborium writes shortest-form heads and definite lengths.
fn cbor(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).expect("writing to a Vec cannot fail");
    out
}

fn uint(n: u64) -> Value {
    Value::Integer(n.into())
}

/// A forged child block declaring `caveats` (raw CBOR values, in the given
/// order), signed with the holder's proof secret, whose next key is
/// [`FORGED`]'s.
fn forge_values(token: &[u8], caveats: Vec<Value>) -> Vec<u8> {
    let payload = forge::raw_payload_values(None, &forge::public_of(&FORGED), caveats);
    forge::append_raw(token, payload, &FORGED).expect("the base token is unsealed")
}

/// A forged child block declaring `caveats` as given, skipping every check
/// `attenuate` applies.
fn forge_caveats(token: &[u8], caveats: &[Caveat]) -> Vec<u8> {
    forge::append_unchecked(token, caveats, &FORGED).expect("the base token is unsealed")
}

/// `s + L` in place on a 64-byte signature: the same scalar mod L, in a
/// non-reduced encoding that strict verification refuses (spec §7.1 rule 1).
fn add_group_order(signature: &mut [u8]) {
    // L = 2^252 + 27742317777372353535851937790883648493, little-endian.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let s = &mut signature[32..64];
    let mut carry = 0u16;
    for (b, l) in s.iter_mut().zip(L) {
        let v = u16::from(*b) + u16::from(l) + carry;
        *b = v as u8;
        carry = v >> 8;
    }
    // s < L < 2^253, so s + L < 2^254 fits in 32 bytes.
    assert_eq!(carry, 0);
}

/// The smallest `y` ≥ 2 whose encoding passes the byte checks of spec §7.1
/// but is not the `y` of any curve point.
fn off_curve_key() -> [u8; 32] {
    (2u8..=255)
        .map(|y| {
            let mut k = [0; 32];
            k[0] = y;
            k
        })
        .find(|k| ed25519_dalek::VerifyingKey::from_bytes(k).is_err())
        .expect("about half of all y are off the curve")
}

/// A point of order 8 (spec §7.1 table, `p - y8`).
const ORDER_8_POINT: &str = "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a";

// ---------------------------------------------------------------------------
// The base tokens.

/// The one-block token: `crm.read` only, 100 calls.
fn simple() -> Token {
    Token::mint_with_seed(
        &issuer(),
        vec![tools(&["crm.read"]), Caveat::budget(Unit::Calls, 100)],
        &SIMPLE_0,
    )
    .expect("valid caveats")
}

fn simple_seeds() -> Vec<Seed> {
    vec![
        seed("root key (issuer)", &ISSUER),
        seed("block 0 ephemeral key", &SIMPLE_0),
    ]
}

/// Block 0 of the support scenario: the orchestrator's $50 token.
fn orchestrator_caveats() -> Vec<Caveat> {
    vec![
        Caveat::budget(Unit::UsdMicrocents, 50 * USD),
        tools(&["crm.*", "refund.*", "email.*"]),
        Caveat::Depth(3),
        Caveat::Expiry {
            not_after: ISSUED_AT + 3600,
            not_before: None,
        },
        Caveat::Label("orchestrator".to_owned()),
    ]
}

/// Block 1: the $5 refund agent, one customer, refunds of at most $100.
fn refund_agent_caveats() -> Vec<Caveat> {
    vec![
        Caveat::budget(Unit::UsdMicrocents, 5 * USD),
        tools(&["crm.read", "refund.issue"]),
        amount_at_most(100 * USD as i64),
        resources(&["customer:4821"]),
        Caveat::Depth(1),
        Caveat::Label("refund-agent".to_owned()),
    ]
}

/// Block 2: a $2 ticket agent under the refund agent.
fn ticket_agent_caveats() -> Vec<Caveat> {
    vec![
        Caveat::budget(Unit::UsdMicrocents, 2 * USD),
        Caveat::Label("ticket-4821".to_owned()),
    ]
}

/// The support chain: `[orchestrator, refund agent, ticket agent]`, each
/// token one block longer than the previous.
fn support() -> [Token; 3] {
    let orchestrator = Token::mint_with_seed(&issuer(), orchestrator_caveats(), &SUPPORT[0])
        .expect("valid caveats");
    let refund = orchestrator
        .attenuate_with_seed(refund_agent_caveats(), &SUPPORT[1])
        .expect("the refund agent narrows the orchestrator");
    let ticket = refund
        .attenuate_with_seed(ticket_agent_caveats(), &SUPPORT[2])
        .expect("the ticket agent narrows the refund agent");
    [orchestrator, refund, ticket]
}

/// The seeds of the first `blocks` blocks of the support chain.
fn support_seeds(blocks: usize) -> Vec<Seed> {
    let roles = ["orchestrator", "refund agent", "ticket agent"];
    let mut s = vec![seed("root key (issuer)", &ISSUER)];
    for (i, (role, sd)) in roles.iter().zip(SUPPORT).take(blocks).enumerate() {
        s.push(seed(&format!("block {i} ephemeral key ({role})"), &sd));
    }
    s
}

fn with(mut seeds: Vec<Seed>, more: &[(&str, &[u8; 32])]) -> Vec<Seed> {
    seeds.extend(more.iter().map(|(r, s)| seed(r, s)));
    seeds
}

fn forged_seed() -> (&'static str, &'static [u8; 32]) {
    ("forged block ephemeral key (the new proof secret)", &FORGED)
}

// ---------------------------------------------------------------------------
// Vector builders: each states its expected result and checks it.

/// The input of an invalid vector.
enum Input {
    /// Text exactly as given (text-level vectors).
    Text(String),
    /// A binary form; the text is its canonical text form.
    Bytes(Vec<u8>),
}

/// A request and its stated decision; the generator fills in the details.
struct Req {
    case: RequestCase,
    /// `None`: allow. `Some(code)`: deny with `code`.
    deny: Option<&'static str>,
}

fn req(note: &str, action: &str, time: u64) -> Req {
    Req {
        case: RequestCase {
            note: note.to_owned(),
            action: action.to_owned(),
            resource: None,
            args: BTreeMap::new(),
            time,
            operation: None,
            body_hex: None,
            proof: None,
            expected: Decision::Deny {
                code: String::new(),
            },
        },
        deny: None,
    }
}

impl Req {
    fn on(mut self, resource: &str) -> Self {
        self.case.resource = Some(resource.to_owned());
        self
    }

    fn arg(mut self, name: &str, value: ArgJson) -> Self {
        self.case.args.insert(name.to_owned(), value);
        self
    }

    fn deny(mut self, code: &'static str) -> Self {
        self.deny = Some(code);
        self
    }
}

/// A valid vector: the token must verify under `keys`, and each request must
/// get its stated decision.
fn valid(
    name: &str,
    description: &str,
    keys: &[&RootKey],
    token: &Token,
    seeds: Vec<Seed>,
    requests: Vec<Req>,
) -> Vector {
    valid_for(name, description, keys, token, seeds, requests, None)
}

/// [`valid`], with the verifier's audience for holders' proofs.
fn valid_for(
    name: &str,
    description: &str,
    keys: &[&RootKey],
    token: &Token,
    seeds: Vec<Seed>,
    requests: Vec<Req>,
    audience: Option<&str>,
) -> Vector {
    let root_public_keys: Vec<String> = keys.iter().map(|k| k.public().to_text()).collect();
    let v = verifier(&root_public_keys, CLOCK_SKEW).expect("the generator's keys are valid");
    let v = with_audience(v, audience).expect("valid audience");
    let text = token.to_text();
    let verified = v
        .verify_text(&text)
        .unwrap_or_else(|e| panic!("vector {name}: should verify, library says {}", e.code()));
    let requests = requests
        .into_iter()
        .map(|r| {
            let mut case = r.case;
            let got = decide(&v, &verified, &case);
            match (&got, r.deny) {
                (Decision::Allow { .. }, None) => {}
                (Decision::Deny { code }, Some(want)) if code == want => {}
                _ => panic!(
                    "vector {name}, request {:?}: stated {:?}, library decides {got:?}",
                    case.note, r.deny
                ),
            }
            case.expected = got;
            case
        })
        .collect();
    Vector {
        name: name.to_owned(),
        description: description.to_owned(),
        expected: Expected::Valid,
        root_public_keys,
        clock_skew_seconds: CLOCK_SKEW,
        audience: audience.map(str::to_owned),
        token: text,
        token_hex: None,
        authority: Some(authority_json(&verified)),
        requests,
        seeds,
    }
}

/// An invalid vector: verification under `keys` must fail with `code`.
fn invalid(
    name: &str,
    description: &str,
    keys: &[&RootKey],
    input: Input,
    code: &str,
    seeds: Vec<Seed>,
) -> Vector {
    let root_public_keys: Vec<String> = keys.iter().map(|k| k.public().to_text()).collect();
    let v = verifier(&root_public_keys, CLOCK_SKEW).expect("the generator's keys are valid");
    let (token, token_hex) = match input {
        Input::Text(t) => (t, None),
        Input::Bytes(b) => (text_of(&b), Some(hex::encode(&b))),
    };
    let got = v.verify_text(&token).err().map(|e| e.code());
    assert_eq!(
        got,
        Some(code),
        "vector {name}: stated {code}, library gives {got:?}"
    );
    Vector {
        name: name.to_owned(),
        description: description.to_owned(),
        expected: Expected::Invalid {
            code: code.to_owned(),
        },
        root_public_keys,
        clock_skew_seconds: CLOCK_SKEW,
        audience: None,
        token,
        token_hex,
        authority: None,
        requests: vec![],
        seeds,
    }
}

/// Checks that a parse-level error really comes from parsing.
fn parse_code(token: &str) -> Option<&'static str> {
    UnverifiedToken::from_text(token)
        .err()
        .map(|e: VerifyError| e.code())
}

// ---------------------------------------------------------------------------
// The vectors.

/// Every vector, in file order.
pub fn vectors() -> Vec<Vector> {
    let mut out = vec![];
    out.extend(valid_vectors());
    out.extend(text_vectors());
    out.extend(encoding_vectors());
    out.extend(structure_vectors());
    out.extend(chain_vectors());
    out.extend(signature_vectors());
    out.extend(hardening_vectors());
    out.extend(holder_vectors());
    // A vector rejected for a keyed reason must get past parsing, or it tests
    // the wrong check; one rejected while parsing must fail the same way
    // without a key.
    for v in &out {
        if let Expected::Invalid { code } = &v.expected {
            let parsed = parse_code(&v.token);
            if matches!(code.as_str(), "unknown_kid" | "bad_signature" | "bad_proof") {
                assert_eq!(parsed, None, "vector {}: must parse", v.name);
            } else if parsed.is_some() {
                assert_eq!(parsed, Some(code.as_str()), "vector {}", v.name);
            }
        }
    }
    out
}

fn valid_vectors() -> Vec<Vector> {
    let simple = simple();
    let [_, refund, ticket] = support();
    let sealed = refund.seal().expect("the refund agent token is unsealed");
    let window = Token::mint_with_seed(
        &issuer(),
        vec![
            tools(&["crm.read"]),
            Caveat::Expiry {
                not_after: ISSUED_AT + 300,
                not_before: Some(ISSUED_AT),
            },
        ],
        &WINDOW_0,
    )
    .expect("valid caveats");

    let ticket_vector = valid(
        "valid_support_chain",
        "The support scenario, three blocks: the orchestrator ($50 = 5000000000 usd_microcents, \
         tools crm.*, refund.*, email.*, depth 3, expires an hour after issue) delegates to a \
         refund agent ($5, tools crm.read and refund.issue, refund.issue amount <= $100, \
         resource customer:4821, depth 1), which delegates to a ticket agent ($2, no further \
         delegation left). Budgets accumulate; the last tools and resources sets apply.",
        &[&issuer()],
        &ticket,
        support_seeds(3),
        vec![
            req("read the ticket's customer", "crm.read", NOW).on("customer:4821"),
            req("a $50 refund: within the $100 bound", "refund.issue", NOW)
                .on("customer:4821")
                .arg("amount", ArgJson::Int(50 * USD as i64)),
            req(
                "a refund of exactly $100: the bound is inclusive",
                "refund.issue",
                NOW,
            )
            .on("customer:4821")
            .arg("amount", ArgJson::Int(100 * USD as i64)),
            req(
                "a $150 refund: above the refund agent's bound",
                "refund.issue",
                NOW,
            )
            .on("customer:4821")
            .arg("amount", ArgJson::Int(150 * USD as i64))
            .deny("arg_out_of_bounds"),
            req("a refund without an amount", "refund.issue", NOW)
                .on("customer:4821")
                .deny("arg_missing"),
            req(
                "an amount of the wrong type: a string where the bound is a range",
                "refund.issue",
                NOW,
            )
            .on("customer:4821")
            .arg("amount", ArgJson::Str("100".to_owned()))
            .deny("arg_out_of_bounds"),
            req(
                "email.send: granted to the orchestrator, narrowed away by the refund agent",
                "email.send",
                NOW,
            )
            .on("customer:4821")
            .deny("action_not_allowed"),
            req("another customer", "crm.read", NOW)
                .on("customer:9999")
                .deny("resource_not_allowed"),
            req(
                "no resource while resources are restricted",
                "crm.read",
                NOW,
            )
            .deny("resource_not_allowed"),
            req(
                "the last second of validity, allowed by the 30 s skew",
                "crm.read",
                ISSUED_AT + 3600 + CLOCK_SKEW,
            )
            .on("customer:4821"),
            req(
                "one second past not_after plus skew",
                "crm.read",
                ISSUED_AT + 3600 + CLOCK_SKEW + 1,
            )
            .on("customer:4821")
            .deny("expired"),
            req("an action that is not a valid name", "CRM.Read", NOW)
                .on("customer:4821")
                .deny("invalid_action"),
        ],
    );
    let ticket_auth = ticket_vector
        .authority
        .as_ref()
        .expect("valid vectors have an authority");
    // The scenario's facts, stated independently of the fold.
    assert_eq!(ticket_auth.remaining_depth, Some(0));
    assert_eq!(
        ticket_auth.tools.as_deref(),
        Some(&["crm.read".to_owned(), "refund.issue".to_owned()][..])
    );
    assert_eq!(ticket_auth.effective_budgets[0].ceiling, 2 * USD);

    vec![
        valid(
            "valid_one_block",
            "A root token of one block: tools crm.read, a budget of 100 calls. The request's \
             budget scope is block 0's.",
            &[&issuer()],
            &simple,
            simple_seeds(),
            vec![
                req("the one allowed action", "crm.read", NOW),
                req("an action outside the tools set", "crm.write", NOW).deny("action_not_allowed"),
                req(
                    "no expiry: any time is fine, even far in the future",
                    "crm.read",
                    u64::from(u32::MAX),
                ),
            ],
        ),
        ticket_vector,
        valid(
            "valid_sealed",
            "The refund agent's two-block token, sealed: the proof is a 64-byte seal by the \
             last block's key instead of the 32-byte secret, so no block can follow.",
            &[&issuer()],
            &sealed,
            support_seeds(2),
            vec![
                req("a $5 refund", "refund.issue", NOW)
                    .on("customer:4821")
                    .arg("amount", ArgJson::Int(5 * USD as i64)),
                req("crm.write was never granted", "crm.write", NOW)
                    .on("customer:4821")
                    .deny("action_not_allowed"),
            ],
        ),
        valid(
            "valid_but_expired",
            "Valid signatures and a validity window [issue, issue + 300 s]: the token verifies \
             (expiry is not part of verification) and requests outside the window, skew \
             included, are denied.",
            &[&issuer()],
            &window,
            vec![
                seed("root key (issuer)", &ISSUER),
                seed("block 0 ephemeral key", &WINDOW_0),
            ],
            vec![
                req("one minute after issue", "crm.read", ISSUED_AT + 60),
                req("ten minutes after issue: expired", "crm.read", NOW).deny("expired"),
                req(
                    "31 s before not_before, beyond the skew",
                    "crm.read",
                    ISSUED_AT - CLOCK_SKEW - 1,
                )
                .deny("not_yet_valid"),
                req(
                    "30 s before not_before, within the skew",
                    "crm.read",
                    ISSUED_AT - CLOCK_SKEW,
                ),
            ],
        ),
    ]
}

fn text_vectors() -> Vec<Vector> {
    let simple = simple();
    let text = simple.to_text();
    let body = &text[TEXT_PREFIX.len()..];
    let keys = [&issuer()];

    let padded = URL_SAFE.encode(simple.to_bytes());
    assert!(
        padded.ends_with('='),
        "the one-block token's length must not be a multiple of 3 for the padding vector"
    );
    let standard = STANDARD_NO_PAD.encode(simple.to_bytes());
    assert!(
        standard.contains(['+', '/']),
        "the standard alphabet vector needs a token whose base64 has + or /"
    );
    let mut bad_char = body.to_owned();
    bad_char.replace_range(10..11, "!");
    let wrapped: Vec<&str> = text
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();

    vec![
        invalid(
            "text_bad_prefix",
            "The one-block token without its baton_v1_ prefix (only the base64url body).",
            &keys,
            Input::Text(body.to_owned()),
            "bad_prefix",
            simple_seeds(),
        ),
        invalid(
            "text_prefix_wrong_case",
            "The one-block token with the prefix in upper case: the prefix is case-sensitive.",
            &keys,
            Input::Text(format!("BATON_V1_{body}")),
            "bad_prefix",
            simple_seeds(),
        ),
        invalid(
            "text_base64_invalid_char",
            "The one-block token with its 11th base64 character replaced by '!', which is in \
             no base64 alphabet.",
            &keys,
            Input::Text(format!("{TEXT_PREFIX}{bad_char}")),
            "base64_invalid",
            simple_seeds(),
        ),
        invalid(
            "text_base64_bad_length",
            "The one-block token's base64 truncated to a length of 1 mod 4 (the fewest \
             characters dropped), which no byte string encodes to.",
            &keys,
            // Dropping (len + 3) mod 4 characters leaves a length of 1 mod 4.
            Input::Text(format!(
                "{TEXT_PREFIX}{}",
                &body[..body.len() - (body.len() + 3) % 4]
            )),
            "base64_invalid",
            simple_seeds(),
        ),
        invalid(
            "text_base64_padding",
            "The one-block token encoded with '=' padding (base64url with padding).",
            &keys,
            Input::Text(format!("{TEXT_PREFIX}{padded}")),
            "base64_padding",
            simple_seeds(),
        ),
        invalid(
            "text_base64_standard_alphabet",
            "The one-block token encoded with the standard base64 alphabet ('+' and '/') \
             instead of base64url.",
            &keys,
            Input::Text(format!("{TEXT_PREFIX}{standard}")),
            "base64_standard_alphabet",
            simple_seeds(),
        ),
        invalid(
            "text_base64_line_wrapped",
            "The one-block token wrapped at 76 characters with line feeds, as a mail client or \
             PEM tool would.",
            &keys,
            Input::Text(wrapped.join("\n")),
            "base64_whitespace",
            simple_seeds(),
        ),
        invalid(
            "text_base64_trailing_newline",
            "The one-block token followed by a line feed, as read from a file: verifiers do not \
             trim.",
            &keys,
            Input::Text(format!("{text}\n")),
            "base64_whitespace",
            simple_seeds(),
        ),
    ]
}

fn encoding_vectors() -> Vec<Vector> {
    let simple = simple();
    let bytes = simple.to_bytes();
    let [orchestrator, ..] = support();
    let keys = [&issuer()];
    let forged = || with(support_seeds(1), &[forged_seed()]);

    // Outer array: the version 1 as 0x18 0x01 instead of 0x01.
    assert_eq!(&bytes[..2], &[0x83, 0x01]);
    let mut long_version = vec![0x83, 0x18, 0x01];
    long_version.extend_from_slice(&bytes[2..]);

    let mut indefinite = vec![0x9f];
    indefinite.extend_from_slice(&bytes[1..]);
    indefinite.push(0xff);

    // A child body [next_key, [[2, 0]]] with the depth 0 written as 0x18 0x00.
    let mut long_depth = vec![0x82, 0x58, 0x20];
    long_depth.extend_from_slice(&forge::public_of(&FORGED));
    long_depth.extend_from_slice(&[0x81, 0x82, 0x02, 0x18, 0x00]);
    let long_in_block =
        forge::append_raw(orchestrator.to_bytes(), long_depth, &FORGED).expect("unsealed");

    let text_set =
        |items: &[&str]| Value::Array(items.iter().map(|s| Value::Text((*s).to_owned())).collect());

    let mut trailing = bytes.to_vec();
    trailing.push(0x00);

    let mut too_large = bytes.to_vec();
    too_large.resize(baton::limits::MAX_TOKEN_BYTES + 1, 0);

    vec![
        invalid(
            "noncanonical_long_int",
            "The one-block token with its version 1 encoded as 0x18 0x01 (a one-byte argument) \
             instead of 0x01: not the shortest form.",
            &keys,
            Input::Bytes(long_version),
            "non_canonical",
            simple_seeds(),
        ),
        invalid(
            "noncanonical_indefinite_array",
            "The one-block token with its outer array written with indefinite length \
             (0x9f ... 0xff) instead of 0x83.",
            &keys,
            Input::Bytes(indefinite),
            "non_canonical",
            simple_seeds(),
        ),
        invalid(
            "noncanonical_long_int_in_block",
            "A forged block after the orchestrator, properly signed with the holder's proof \
             secret, whose payload writes depth 0 as 0x18 0x00. Canonical form is checked \
             inside signed payloads too.",
            &keys,
            Input::Bytes(long_in_block),
            "non_canonical",
            forged(),
        ),
        invalid(
            "noncanonical_caveat_order",
            "A forged block after the orchestrator declaring depth 0 then tools [crm.read]: \
             caveats must be in ascending order of their encodings (tools 0x82 0x01 before \
             depth 0x82 0x02).",
            &keys,
            Input::Bytes(forge_caveats(
                orchestrator.to_bytes(),
                &[Caveat::Depth(0), tools(&["crm.read"])],
            )),
            "non_canonical",
            forged(),
        ),
        invalid(
            "noncanonical_set_order",
            "A forged block after the orchestrator declaring tools [refund.issue, crm.read]: \
             set entries must be in ascending bytewise order.",
            &keys,
            Input::Bytes(forge_values(
                orchestrator.to_bytes(),
                vec![Value::Array(vec![
                    uint(1),
                    text_set(&["refund.issue", "crm.read"]),
                ])],
            )),
            "non_canonical",
            forged(),
        ),
        invalid(
            "noncanonical_set_duplicate",
            "A forged block after the orchestrator declaring tools [crm.read, crm.read]: set \
             entries must be strictly ascending, so a repeat is not canonical.",
            &keys,
            Input::Bytes(forge_values(
                orchestrator.to_bytes(),
                vec![Value::Array(vec![
                    uint(1),
                    text_set(&["crm.read", "crm.read"]),
                ])],
            )),
            "non_canonical",
            forged(),
        ),
        invalid(
            "trailing_bytes",
            "The one-block token followed by one 0x00 byte.",
            &keys,
            Input::Bytes(trailing),
            "trailing_bytes",
            simple_seeds(),
        ),
        invalid(
            "too_large",
            "The one-block token followed by zero bytes up to 8193 bytes, one over the binary \
             limit. The size cap comes before parsing, so this is too_large, not \
             trailing_bytes. (The text, 10933 bytes, is within the text limit.)",
            &keys,
            Input::Text(text_of(&too_large)),
            "too_large",
            simple_seeds(),
        ),
        invalid(
            "too_large_text",
            "A text of 10934 bytes, one over the text limit: the prefix followed by 'A's. The \
             text limit is checked before anything else.",
            &keys,
            Input::Text(format!(
                "{TEXT_PREFIX}{}",
                "A".repeat(baton::limits::MAX_TOKEN_TEXT + 1 - TEXT_PREFIX.len())
            )),
            "too_large",
            vec![],
        ),
    ]
}

fn structure_vectors() -> Vec<Vector> {
    let simple = simple();
    let [orchestrator, refund, _] = support();
    let keys = [&issuer()];
    let forged = || with(support_seeds(1), &[forged_seed()]);

    let mut v2 = Parts::of(simple.to_bytes());
    v2.version = uint(2);

    let mut no_blocks = Parts::of(simple.to_bytes());
    no_blocks.items.clear();

    let kid_in_child = forge::append_raw(
        orchestrator.to_bytes(),
        forge::raw_payload(
            Some(orchestrator.root_kid().0),
            &forge::public_of(&FORGED),
            &[],
        ),
        &FORGED,
    )
    .expect("unsealed");

    let order_8: [u8; 32] = hex::decode(ORDER_8_POINT)
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let small_order = forge::append_raw(
        orchestrator.to_bytes(),
        forge::raw_payload(None, &order_8, &[]),
        &FORGED,
    )
    .expect("unsealed");

    let budget = |ceiling: Value| Value::Array(vec![uint(0), uint(0), ceiling]);
    // 2^64 as a CBOR bignum: tag 2 over the bytes 01 00 00 00 00 00 00 00 00.
    let mut two_64 = vec![0u8; 9];
    two_64[0] = 1;
    let bignum = Value::Tag(2, Box::new(Value::Bytes(two_64)));

    vec![
        invalid(
            "unsupported_version",
            "The one-block token with version 2 in place of 1. The version is read before the \
             rest, so a future format fails as such.",
            &keys,
            Input::Bytes(v2.encode()),
            "unsupported_version",
            simple_seeds(),
        ),
        invalid(
            "no_blocks",
            "The one-block token with its block list emptied: [1, [], secret].",
            &keys,
            Input::Bytes(no_blocks.encode()),
            "no_blocks",
            simple_seeds(),
        ),
        invalid(
            "unknown_caveat",
            "A forged block after the orchestrator declaring a caveat of type 99: [99, 1]. \
             Unknown means deny: the whole token is rejected.",
            &keys,
            Input::Bytes(forge_values(
                orchestrator.to_bytes(),
                vec![Value::Array(vec![uint(99), uint(1)])],
            )),
            "unknown_caveat",
            forged(),
        ),
        invalid(
            "duplicate_caveat",
            "A forged block after the orchestrator declaring two usd_microcents budgets \
             ($1 and $2) without a tools filter: which ceiling would apply is ambiguous, so a \
             block may declare one budget per (unit, filter).",
            &keys,
            Input::Bytes(forge_caveats(
                orchestrator.to_bytes(),
                &[
                    Caveat::budget(Unit::UsdMicrocents, USD),
                    Caveat::budget(Unit::UsdMicrocents, 2 * USD),
                ],
            )),
            "duplicate_caveat",
            forged(),
        ),
        invalid(
            "duplicate_caveat_identical",
            "A forged block after the orchestrator declaring depth 0 twice: identical caveat \
             encodings.",
            &keys,
            Input::Bytes(forge_caveats(
                orchestrator.to_bytes(),
                &[Caveat::Depth(0), Caveat::Depth(0)],
            )),
            "duplicate_caveat",
            forged(),
        ),
        invalid(
            "kid_in_later_block",
            "A forged block 1 whose body carries a kid ([kid, next_key, caveats]): only block 0 \
             names the root key.",
            &keys,
            Input::Bytes(kid_in_child),
            "kid_placement",
            forged(),
        ),
        invalid(
            "budget_ceiling_bignum",
            "A forged block after the orchestrator with a usd_microcents budget whose ceiling \
             is 2^64, encoded as a CBOR bignum (tag 2). Ceilings are u64 and tags are not \
             allowed, so the library rejects the wrong CBOR type for the field: malformed \
             (spec §3.3 C5), not an overflow.",
            &keys,
            Input::Bytes(forge_values(orchestrator.to_bytes(), vec![budget(bignum)])),
            "malformed",
            forged(),
        ),
        invalid(
            "budget_ceiling_negative",
            "A forged block after the orchestrator with a usd_microcents budget of ceiling -1 \
             (CBOR major type 1). A ceiling is an unsigned integer: malformed (spec §3.3 C5).",
            &keys,
            Input::Bytes(forge_values(
                orchestrator.to_bytes(),
                vec![budget(Value::Integer((-1).into()))],
            )),
            "malformed",
            forged(),
        ),
        invalid(
            "small_order_next_key",
            "A forged block after the orchestrator whose next_key is a point of order 8 \
             (c7176a70...037a): anyone can make signatures that verify under a small-order key, \
             so it is refused on its bytes while parsing.",
            &keys,
            Input::Bytes(small_order),
            "bad_key",
            forged(),
        ),
        invalid(
            "malformed_proof_length",
            "The refund agent's two-block token with a 33-byte proof: a proof is a 32-byte \
             secret or a 64-byte seal, told apart by length.",
            &keys,
            Input::Bytes({
                let mut p = Parts::of(refund.to_bytes());
                p.proof.push(0);
                p.encode()
            }),
            "malformed",
            support_seeds(2),
        ),
    ]
}

fn chain_vectors() -> Vec<Vector> {
    let [orchestrator, refund, ticket] = support();
    let keys = [&issuer()];
    let on_orchestrator = || with(support_seeds(1), &[forged_seed()]);
    let on_refund = || with(support_seeds(2), &[forged_seed()]);
    let o = orchestrator.to_bytes();
    let r = refund.to_bytes();

    vec![
        invalid(
            "widening_budget_ceiling",
            "A forged block after the orchestrator ($50) declaring a $60 budget, signed with the \
             holder's own ephemeral key: valid signatures, but a child may not raise a ceiling.",
            &keys,
            Input::Bytes(forge_caveats(
                o,
                &[Caveat::budget(Unit::UsdMicrocents, 60 * USD)],
            )),
            "widening_budget",
            on_orchestrator(),
        ),
        invalid(
            "widening_budget_new_unit",
            "A forged block after the orchestrator declaring a budget of 1000 tokens: no \
             ancestor grants that unit, so a child cannot introduce it.",
            &keys,
            Input::Bytes(forge_caveats(o, &[Caveat::budget(Unit::Tokens, 1000)])),
            "widening_budget",
            on_orchestrator(),
        ),
        invalid(
            "widening_tools",
            "A forged block after the refund agent (tools crm.read, refund.issue) declaring \
             tools [crm.read, email.send]: email.* was granted to the orchestrator but narrowed \
             away, and the effective set is the last one.",
            &keys,
            Input::Bytes(forge_caveats(r, &[tools(&["crm.read", "email.send"])])),
            "widening_tools",
            on_refund(),
        ),
        invalid(
            "widening_depth",
            "A forged block after the orchestrator (depth 3) declaring depth 3: one hop has \
             been used, so at most 2 remain.",
            &keys,
            Input::Bytes(forge_caveats(o, &[Caveat::Depth(3)])),
            "widening_depth",
            on_orchestrator(),
        ),
        invalid(
            "widening_expiry",
            "A forged block after the orchestrator (not_after = issue + 1 h) declaring \
             not_after = issue + 24 h.",
            &keys,
            Input::Bytes(forge_caveats(
                o,
                &[Caveat::Expiry {
                    not_after: ISSUED_AT + 86_400,
                    not_before: None,
                }],
            )),
            "widening_expiry",
            on_orchestrator(),
        ),
        invalid(
            "widening_resources",
            "A forged block after the refund agent (resources customer:4821) declaring \
             resources [customer:*].",
            &keys,
            Input::Bytes(forge_caveats(r, &[resources(&["customer:*"])])),
            "widening_resources",
            on_refund(),
        ),
        invalid(
            "widening_arg_bound",
            "A forged block after the refund agent (refund.issue amount <= $100) declaring \
             refund.issue amount <= $200.",
            &keys,
            Input::Bytes(forge_caveats(r, &[amount_at_most(200 * USD as i64)])),
            "widening_arg_bound",
            on_refund(),
        ),
        invalid(
            "depth_exceeded",
            "A forged block after the ticket agent, whose remaining depth is 0 (the refund \
             agent declared depth 1 and the ticket agent used it). The block declares only a \
             label, so nothing but the depth is wrong.",
            &keys,
            Input::Bytes(forge_caveats(
                ticket.to_bytes(),
                &[Caveat::Label("one-too-many".to_owned())],
            )),
            "depth_exceeded",
            with(support_seeds(3), &[forged_seed()]),
        ),
    ]
}

fn signature_vectors() -> Vec<Vector> {
    let simple = simple();
    let [orchestrator, refund, ticket] = support();
    let sealed = refund.seal().expect("unsealed");
    let keys = [&issuer()];

    // Splice: a twin of the orchestrator (same caveats, different ephemeral
    // key) and its own refund agent block, moved onto the real orchestrator.
    let twin = Token::mint_with_seed(&issuer(), orchestrator_caveats(), &TWIN[0])
        .expect("valid caveats")
        .attenuate_with_seed(refund_agent_caveats(), &TWIN[1])
        .expect("narrows");
    let mut spliced = Parts::of(orchestrator.to_bytes());
    let mut twin_parts = Parts::of(twin.to_bytes());
    spliced.push_block(twin_parts.remove_block(1));
    spliced.proof = twin_parts.proof;

    // Reorder: three label-only hops, blocks 1 and 2 swapped. The proof is
    // the secret of the block now last, so only the signatures can tell.
    let hops = Token::mint_with_seed(&issuer(), vec![tools(&["crm.*"])], &HOPS[0])
        .expect("valid caveats")
        .attenuate_with_seed(vec![Caveat::Label("hop-1".to_owned())], &HOPS[1])
        .expect("narrows")
        .attenuate_with_seed(vec![Caveat::Label("hop-2".to_owned())], &HOPS[2])
        .expect("narrows");
    let mut reordered = Parts::of(hops.to_bytes());
    let hop_1 = reordered.remove_block(1);
    reordered.push_block(hop_1);
    reordered.proof = HOPS[1].to_vec();
    let hops_seeds = vec![
        seed("root key (issuer)", &ISSUER),
        seed("block 0 ephemeral key", &HOPS[0]),
        seed("block 1 ephemeral key (label hop-1)", &HOPS[1]),
        seed("block 2 ephemeral key (label hop-2)", &HOPS[2]),
    ];

    let mut dropped = Parts::of(ticket.to_bytes());
    dropped.remove_block(2);

    let mut dropped_sealed = Parts::of(sealed.to_bytes());
    dropped_sealed.remove_block(1);

    let mut swapped_proof = Parts::of(ticket.to_bytes());
    swapped_proof.proof = SIMPLE_0.to_vec();

    let other_sealed = simple.seal().expect("unsealed");
    let mut swapped_seal = Parts::of(sealed.to_bytes());
    swapped_seal.proof = Parts::of(other_sealed.to_bytes()).proof;

    // Tampered kid: block 0 names the other issuer's key, which the keyset
    // also trusts, so the root signature is checked against the wrong key.
    let other = other_issuer();
    let mut tampered = Parts::of(simple.to_bytes());
    let payload = tampered.payload(0).to_vec();
    let kid = simple.root_kid().0;
    let at = payload
        .windows(8)
        .position(|w| w == kid)
        .expect("block 0 carries its kid");
    let mut new_payload = payload;
    new_payload[at..at + 8].copy_from_slice(&other.kid().0);
    tampered.items[0] = new_payload;

    let mut high_s = Parts::of(simple.to_bytes());
    add_group_order(high_s.signature_mut(0));
    let mut high_s_batch = Parts::of(refund.to_bytes());
    add_group_order(high_s_batch.signature_mut(1));

    // Off-curve next keys: forged blocks whose next_key passes the byte
    // checks but is no curve point.
    let off_curve = off_curve_key();
    let off_curve_last = forge::append_raw(
        orchestrator.to_bytes(),
        forge::raw_payload(None, &off_curve, &[]),
        &FORGED,
    )
    .expect("unsealed");
    let off_curve_inner =
        forge::append_unchecked(&off_curve_last, &[], &FORGED_2).expect("unsealed");

    vec![
        invalid(
            "spliced_block",
            "Block 1 of another token (same issuer, same block 0 caveats, another ephemeral \
             key) appended to the orchestrator's block 0, with that token's proof secret. Each \
             signature covers the previous one, so the block does not verify here.",
            &keys,
            Input::Bytes(spliced.encode()),
            "bad_signature",
            with(
                support_seeds(1),
                &[
                    ("other token: block 0 ephemeral key", &TWIN[0]),
                    ("other token: block 1 ephemeral key (spliced)", &TWIN[1]),
                ],
            ),
        ),
        invalid(
            "reordered_blocks",
            "A three-block chain (block 0, label hop-1, label hop-2) with blocks 1 and 2 \
             swapped. The caveats still narrow and the proof is the secret matching the block \
             now last, so only the chained signatures catch it.",
            &keys,
            Input::Bytes(reordered.encode()),
            "bad_signature",
            hops_seeds,
        ),
        invalid(
            "dropped_last_block",
            "The ticket agent's three-block token with block 2 removed to recover the refund \
             agent's wider authority. The proof secret belongs to the removed block.",
            &keys,
            Input::Bytes(dropped.encode()),
            "bad_proof",
            support_seeds(3),
        ),
        invalid(
            "dropped_last_block_sealed",
            "The sealed refund agent token with block 1 removed: the seal was made by block 1's \
             key over block 1's signature and does not verify for block 0.",
            &keys,
            Input::Bytes(dropped_sealed.encode()),
            "bad_proof",
            support_seeds(2),
        ),
        invalid(
            "swapped_proof",
            "The ticket agent's token with its proof secret replaced by the one-block token's \
             proof secret.",
            &keys,
            Input::Bytes(swapped_proof.encode()),
            "bad_proof",
            with(
                support_seeds(3),
                &[("the other token's proof secret", &SIMPLE_0)],
            ),
        ),
        invalid(
            "swapped_seal",
            "The sealed refund agent token with its seal replaced by the seal of the sealed \
             one-block token. The block signatures are fine; the seal alone fails.",
            &keys,
            Input::Bytes(swapped_seal.encode()),
            "bad_proof",
            with(
                support_seeds(2),
                &[(
                    "the other token's block 0 ephemeral key (made the seal)",
                    &SIMPLE_0,
                )],
            ),
        ),
        invalid(
            "unknown_root_key",
            "The one-block token verified with a keyset that holds only another issuer's key: \
             block 0's kid names no trusted key.",
            &[&other],
            Input::Bytes(simple.to_bytes().to_vec()),
            "unknown_kid",
            with(
                simple_seeds(),
                &[("root key (other issuer)", &OTHER_ISSUER)],
            ),
        ),
        invalid(
            "tampered_kid",
            "The one-block token with block 0's kid changed to the kid of another issuer's key. \
             The keyset trusts both keys, so the kid resolves, but block 0 was not signed by \
             that key.",
            &[&issuer(), &other],
            Input::Bytes(tampered.encode()),
            "bad_signature",
            with(
                simple_seeds(),
                &[("root key (other issuer)", &OTHER_ISSUER)],
            ),
        ),
        invalid(
            "signature_s_not_reduced",
            "The one-block token with block 0's signature scalar S replaced by S + L (the group \
             order): the same value mod L, so a permissive verifier accepts it; strict \
             verification requires S < L. One signature: the single-signature path.",
            &keys,
            Input::Bytes(high_s.encode()),
            "bad_signature",
            simple_seeds(),
        ),
        invalid(
            "signature_s_not_reduced_batch",
            "The refund agent's two-block token with block 1's S replaced by S + L. Two \
             signatures: the batch path must refuse it as well.",
            &keys,
            Input::Bytes(high_s_batch.encode()),
            "bad_signature",
            support_seeds(2),
        ),
        invalid(
            "off_curve_next_key",
            "Two forged blocks after the orchestrator: block 1's next_key passes the byte \
             checks (small y, canonical, not small-order) but is not on the curve, and block 2 \
             is signed by some other key. Block 2's verification key cannot be decompressed.",
            &keys,
            Input::Bytes(off_curve_inner),
            "bad_key",
            with(
                support_seeds(1),
                &[
                    forged_seed(),
                    (
                        "second forged block ephemeral key (the proof secret)",
                        &FORGED_2,
                    ),
                ],
            ),
        ),
        invalid(
            "off_curve_last_next_key",
            "A forged block after the orchestrator whose next_key is not on the curve, with any \
             proof secret: no secret derives that key, so the proof check fails first.",
            &keys,
            Input::Bytes(off_curve_last),
            "bad_proof",
            with(support_seeds(1), &[forged_seed()]),
        ),
    ]
}

// ---------------------------------------------------------------------------
// Format v1 hardening (issue 9): mixed-order points under the cofactored
// rule, error precedence, several budgets, one_of bounds.

/// Seeds of the mixed-order and multi-budget vectors.
const MIXED: [u8; 32] = [0x80; 32];
const MULTI: [[u8; 32]; 2] = [[0x70; 32], [0x71; 32]];

/// A point of order 8, decompressed.
fn order_8_point() -> curve25519_dalek::EdwardsPoint {
    let mut b = [0u8; 32];
    hex::decode_to_slice(ORDER_8_POINT, &mut b).expect("32 bytes of hex");
    curve25519_dalek::edwards::CompressedEdwardsY(b)
        .decompress()
        .expect("a curve point")
}

/// `pk(seed) + T8`: a mixed-order key whose prime-order part `seed` holds.
fn mixed_key(seed: &[u8; 32]) -> [u8; 32] {
    let a = ed25519_dalek::SigningKey::from_bytes(seed)
        .verifying_key()
        .to_edwards();
    (a + order_8_point()).compress().to_bytes()
}

/// RFC 8032 signing with `seed`'s expanded secret, except that the hash
/// `k = SHA-512(R || A || M)` uses `key` as `A` (it may be mixed-order), the
/// nonce point is `[r]B + r_torsion` for the RFC 8032 nonce `r`, and
/// `s_delta` is added to `S`.
fn sign_mixed(
    seed: &[u8; 32],
    key: &[u8; 32],
    msg: &[u8],
    r_torsion: curve25519_dalek::EdwardsPoint,
    s_delta: u64,
) -> [u8; 64] {
    use curve25519_dalek::Scalar;
    use ed25519_dalek::{Digest, Sha512};
    let esk = ed25519_dalek::hazmat::ExpandedSecretKey::from(seed);
    let r = Scalar::from_hash(
        Sha512::new()
            .chain_update(esk.hash_prefix)
            .chain_update(msg),
    );
    let big_r = (r * curve25519_dalek::constants::ED25519_BASEPOINT_POINT + r_torsion).compress();
    let k = Scalar::from_hash(
        Sha512::new()
            .chain_update(big_r.as_bytes())
            .chain_update(key)
            .chain_update(msg),
    );
    let s = r + k * esk.scalar + Scalar::from(s_delta);
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(big_r.as_bytes());
    out[32..].copy_from_slice(s.as_bytes());
    out
}

/// Whether cofactorless `verify_strict` accepts the last block of `token`.
fn strict_accepts_last(token: &[u8], key: &[u8; 32]) -> bool {
    let parts = Parts::of(token);
    let n = parts.items.len() / 2;
    let mut msg = b"baton/v1/block\0\x01".to_vec();
    msg.extend_from_slice(&parts.items[2 * n - 3]);
    msg.extend_from_slice(&parts.items[2 * n - 2]);
    let sig = ed25519_dalek::Signature::from_slice(&parts.items[2 * n - 1]).expect("64 bytes");
    ed25519_dalek::VerifyingKey::from_bytes(key).is_ok_and(|k| k.verify_strict(&msg, &sig).is_ok())
}

fn hardening_vectors() -> Vec<Vector> {
    let simple = simple();
    let [orchestrator, refund, _] = support();
    let keys = [&issuer()];
    let identity = curve25519_dalek::EdwardsPoint::default();
    let orchestrator_key = forge::public_of(&SUPPORT[0]);
    let label = |l: &str| [Caveat::Label(l.to_owned())];

    // A mixed-order next_key, and block 2 honestly signed for it.
    let mixed = mixed_key(&MIXED);
    let with_mixed_key = forge::append_raw(
        orchestrator.to_bytes(),
        forge::raw_payload(None, &mixed, &label("mixed-order key")),
        &MIXED,
    )
    .expect("unsealed");
    let signed_by_mixed = forge::append_signed_with(
        &with_mixed_key,
        forge::raw_payload(
            None,
            &forge::public_of(&FORGED_2),
            &label("signed by the mixed-order key"),
        ),
        |m| sign_mixed(&MIXED, &mixed, m, identity, 0),
        &FORGED_2,
    )
    .expect("a token");
    assert!(
        !strict_accepts_last(&signed_by_mixed, &mixed),
        "the cofactorless equation must fail on this vector, or it tests nothing"
    );
    let signed_by_mixed = UnverifiedToken::from_bytes(&signed_by_mixed).expect("parses");
    let signed_by_mixed = Verifier::new(Keyset::new().with(issuer().public()))
        .verify(&signed_by_mixed)
        .expect("valid under the cofactored rule");
    let mixed_seeds = || {
        with(
            support_seeds(1),
            &[
                ("block 1 next_key: pk(seed) + the order-8 point", &MIXED),
                ("block 2 ephemeral key (the proof secret)", &FORGED_2),
            ],
        )
    };

    // A mixed-order R in block 1's signature, by the orchestrator's key.
    let mixed_r = |s_delta| {
        forge::append_signed_with(
            orchestrator.to_bytes(),
            forge::raw_payload(None, &forge::public_of(&FORGED), &label("mixed-order R")),
            |m| sign_mixed(&SUPPORT[0], &orchestrator_key, m, order_8_point(), s_delta),
            &FORGED,
        )
        .expect("a token")
    };
    let mixed_r_ok = mixed_r(0);
    assert!(!strict_accepts_last(&mixed_r_ok, &orchestrator_key));
    let mixed_r_ok = Verifier::new(Keyset::new().with(issuer().public()))
        .verify(&UnverifiedToken::from_bytes(&mixed_r_ok).expect("parses"))
        .expect("valid under the cofactored rule");

    // Seal precedence: a 2-block sealed token with a bad seal, a bad block 0
    // signature, or both. Block 0's signature is inside block 1's message
    // but not the seal's, so the seal stays valid when only it changes.
    let sealed = refund.seal().expect("unsealed");
    let other_seal = Parts::of(simple.seal().expect("unsealed").to_bytes()).proof;
    let mut bad_block = Parts::of(sealed.to_bytes());
    bad_block.signature_mut(0)[0] ^= 1;
    let mut bad_both = Parts::of(sealed.to_bytes());
    bad_both.signature_mut(0)[0] ^= 1;
    bad_both.proof = other_seal.clone();
    let mut bad_secret_and_block = Parts::of(refund.to_bytes());
    bad_secret_and_block.signature_mut(0)[0] ^= 1;
    bad_secret_and_block.proof = SIMPLE_0.to_vec();

    // §3.3 applies to the first item of the envelope too.
    let bytes = simple.to_bytes();
    assert_eq!(&bytes[..2], &[0x83, 0x01]);
    let first = |item: &[u8]| {
        let mut b = vec![0x83];
        b.extend_from_slice(item);
        b.extend_from_slice(&bytes[2..]);
        b
    };

    // Several budgets: units, filters and blocks that each decide a ceiling.
    let budget = |unit: Unit, ceiling: u64, tools: Option<&str>| {
        Caveat::Budget(Budget::new(unit, ceiling, tools.map(pattern)))
    };
    let currency = |values: &[&str]| {
        Caveat::ArgBound(ArgConstraint::new(
            pattern("refund.*"),
            "currency",
            ArgBound::OneOf(values.iter().map(|v| (*v).to_owned()).collect()),
        ))
    };
    let gpu = Unit::parse("gpu_seconds").expect("a custom unit");
    let multi = Token::mint_with_seed(
        &issuer(),
        vec![
            tools(&["crm.*", "refund.*"]),
            budget(Unit::UsdMicrocents, 50 * USD, None),
            budget(Unit::UsdMicrocents, 10 * USD, Some("crm.*")),
            budget(Unit::Calls, 100, None),
            budget(gpu.clone(), 30, Some("refund.*")),
            currency(&["eur", "usd"]),
        ],
        &MULTI[0],
    )
    .expect("valid caveats")
    .attenuate_with_seed(
        vec![
            budget(Unit::UsdMicrocents, 2 * USD, Some("crm.read")),
            budget(Unit::Calls, 20, None),
            budget(gpu, 25, Some("refund.issue")),
            currency(&["usd"]),
        ],
        &MULTI[1],
    );
    let multi = match multi {
        Ok(t) => t,
        Err(e) => panic!("multi-budget block 1 narrows: {e}"),
    };

    vec![
        valid(
            "mixed_order_next_key",
            "A forged block 1 after the orchestrator whose next_key is pk(seed) + T, T the \
             point of order 8 of the spec §7.1 table (mixed order: it passes the byte checks), \
             and a block 2 signed per RFC 8032 with that seed's secret, hashing the mixed-order \
             key as A. The cofactorless equation fails on it (by [k]T); the cofactored rule of \
             spec §7.1 accepts it, in a batch or alone, so the token is valid.",
            &keys,
            &signed_by_mixed,
            mixed_seeds(),
            vec![req("the orchestrator's tools still apply", "crm.read", NOW)],
        ),
        valid(
            "mixed_order_r",
            "A forged block 1 after the orchestrator signed by the orchestrator's proof secret \
             with R = [r]B + T (r the RFC 8032 nonce, T the order-8 point of the spec §7.1 \
             table), S = r + k·a for k over that R. verify_strict rejects it; under the \
             cofactored rule the small-order part of R does not matter, so the token is valid.",
            &keys,
            &mixed_r_ok,
            with(support_seeds(1), &[forged_seed()]),
            vec![req(
                "the orchestrator's tools still apply",
                "email.send",
                NOW,
            )],
        ),
        invalid(
            "mixed_order_r_wrong_s",
            "The previous vector's block 1 with S + 1: the defect [1]B + T has a prime-order \
             part, so it is invalid under every rule.",
            &keys,
            Input::Bytes(mixed_r(1)),
            "bad_signature",
            with(support_seeds(1), &[forged_seed()]),
        ),
        invalid(
            "sealed_bad_block_signature",
            "The sealed refund agent token with one bit of block 0's signature flipped. The \
             seal covers block 1's signature only and still verifies: bad_signature.",
            &keys,
            Input::Bytes(bad_block.encode()),
            "bad_signature",
            support_seeds(2),
        ),
        invalid(
            "sealed_bad_seal_and_block_signature",
            "The previous vector with its seal also replaced by another token's seal. Both \
             fail; a failed proof is reported first (spec §6.1 step 8): bad_proof.",
            &keys,
            Input::Bytes(bad_both.encode()),
            "bad_proof",
            with(
                support_seeds(2),
                &[(
                    "the other token's block 0 ephemeral key (made the seal)",
                    &SIMPLE_0,
                )],
            ),
        ),
        invalid(
            "bad_secret_and_block_signature",
            "The unsealed refund agent token with one bit of block 0's signature flipped and \
             its proof secret replaced by another token's: both fail, bad_proof first.",
            &keys,
            Input::Bytes(bad_secret_and_block.encode()),
            "bad_proof",
            with(
                support_seeds(2),
                &[("the other token's proof secret", &SIMPLE_0)],
            ),
        ),
        invalid(
            "version_break_byte",
            "The one-block token with its version replaced by a break byte (0xff): the first \
             item is read under spec §3.3 like any other, so C1 applies before the type check.",
            &keys,
            Input::Bytes(first(&[0xff])),
            "cbor_malformed",
            simple_seeds(),
        ),
        invalid(
            "version_indefinite_array",
            "The one-block token with its version replaced by an empty indefinite-length array \
             (0x9f 0xff): spec §3.3 C2 (indefinite length) comes before C5 (wrong type).",
            &keys,
            Input::Bytes(first(&[0x9f, 0xff])),
            "non_canonical",
            simple_seeds(),
        ),
        invalid(
            "version_text",
            "The one-block token with its version replaced by the text \"1\" (0x61 0x31): a \
             well-formed item of the wrong type, C5.",
            &keys,
            Input::Bytes(first(&[0x61, 0x31])),
            "malformed",
            simple_seeds(),
        ),
        valid(
            "multi_budget",
            "Two blocks with several budgets. Block 0: tools crm.*, refund.*; usd_microcents \
             $50 for all actions and $10 for crm.*; 100 calls; 30 gpu_seconds (a custom unit) \
             for refund.*; currency one_of [eur, usd] for refund.*. Block 1: $2 for crm.read, \
             20 calls, 25 gpu_seconds for refund.issue (within block 0's 30 for refund.*, \
             which covers it), currency one_of [usd]. effective_budgets lists \
             each declared (unit, filter) once, ordered by unit code (custom units after, by \
             name) then filter (none first, then bytewise), with the smallest ceiling among \
             same-unit budgets whose filter covers it (spec §6.2): units never mix.",
            &keys,
            &multi,
            vec![
                seed("root key (issuer)", &ISSUER),
                seed("block 0 ephemeral key", &MULTI[0]),
                seed("block 1 ephemeral key", &MULTI[1]),
            ],
            vec![
                req(
                    "crm.read: usd $2, $10 and $50 scopes, both calls scopes",
                    "crm.read",
                    NOW,
                ),
                req("crm.write: no $2 scope", "crm.write", NOW),
                req("refund.issue in usd", "refund.issue", NOW)
                    .arg("currency", ArgJson::Str("usd".to_owned())),
                req("eur narrowed away", "refund.issue", NOW)
                    .arg("currency", ArgJson::Str("eur".to_owned()))
                    .deny("arg_out_of_bounds"),
                req("currency missing", "refund.void", NOW).deny("arg_missing"),
            ],
        ),
    ]
}

// ---------------------------------------------------------------------------
// Holder binding and proof of possession (spec §12), numbered from 100.

/// The refund agent's own holder key pair (`baton keygen --holder`).
const AGENT: [u8; 32] = [0x70; 32];
/// A child holder the refund agent delegates to.
const CHILD_HOLDER: [u8; 32] = [0x71; 32];
/// A thief's key.
const THIEF: [u8; 32] = [0x7f; 32];
/// The gateway's audience in every holder vector.
const AUDIENCE: &str = "gateway.example";
/// The operation every holder vector's request names.
const OPERATION: &str = "POST /refunds";
/// The request body every holder vector's request sends.
const BODY: &[u8] = br#"{"amount":4000000000}"#;

fn agent() -> baton::HolderKey {
    baton::HolderKey::from_seed(&AGENT)
}

/// Orchestrator, then the refund agent's block bound to the agent's key.
fn bound_refund() -> Token {
    let [orchestrator, _, _] = support();
    let mut caveats = refund_agent_caveats();
    caveats.push(Caveat::Holder(agent().public()));
    orchestrator
        .attenuate_with_seed(caveats, &SUPPORT[1])
        .expect("the bound refund agent narrows the orchestrator")
}

fn holder_seeds(more: &[(&str, &[u8; 32])]) -> Vec<Seed> {
    with(
        support_seeds(1),
        &[
            &[("holder key (refund agent, keygen --holder)", &AGENT)],
            more,
        ]
        .concat(),
    )
}

/// The refund the holder vectors ask for.
fn refund_req(note: &str) -> Req {
    let mut r = req(note, "refund.issue", NOW)
        .on("customer:4821")
        .arg("amount", ArgJson::Int(40 * USD as i64));
    r.case.operation = Some(OPERATION.to_owned());
    r.case.body_hex = Some(hex::encode(BODY));
    r
}

/// Signs a proof for `signed` (which may differ from what is presented) and
/// attaches it to `presented`.
fn proved(
    presented: Req,
    signed: &RequestCase,
    key: &baton::HolderKey,
    audience: &str,
    block: &baton::BlockId,
    ts: u64,
    nonce: u8,
) -> Req {
    let request = request_unproved(signed).expect("the generator's requests are valid");
    let proof = baton::HolderProof::sign_with_nonce(
        key,
        &baton::Audience::new(audience).expect("valid audience"),
        block,
        &request,
        ts,
        [nonce; 16],
    );
    let mut r = presented;
    r.case.proof = Some(proof.to_header());
    r
}

/// A valid vector whose verifier has the audience [`AUDIENCE`].
fn valid_bound(
    name: &str,
    description: &str,
    token: &Token,
    seeds: Vec<Seed>,
    requests: Vec<Req>,
) -> Vector {
    valid_for(
        name,
        description,
        &[&issuer()],
        token,
        seeds,
        requests,
        Some(AUDIENCE),
    )
}

fn holder_vectors() -> Vec<Vector> {
    let agent = agent();
    let bound = bound_refund();
    let last = *bound.block_ids().last().expect("a token has blocks");
    let base = refund_req("the refund, with the holder's proof").case;
    let ok = |note: &str, nonce: u8| {
        proved(refund_req(note), &base, &agent, AUDIENCE, &last, NOW, nonce)
    };
    let mut out = vec![];

    out.push(valid_bound(
        "holder_valid_bound_chain",
        "The support scenario's refund agent (block 1) is bound to the agent's own holder key \
         (caveat 7): block 1's next_key is that key and the proof field is empty. Each request \
         carries a Baton-Proof by the holder key over audience gateway.example, the last block \
         id, the time, a nonce and the request hash of operation `POST /refunds`, the action, \
         resource, arguments and body. Without a proof the token grants nothing.",
        &bound,
        holder_seeds(&[]),
        vec![
            ok("the refund with the holder's proof", 1),
            refund_req("the same refund without a proof").deny("proof_missing"),
            {
                let mut r = refund_req("a proof that is not one");
                r.case.proof = Some("baton_proof_v1_AAAA".to_owned());
                r.deny("proof_malformed")
            },
        ],
    ));

    let narrowed = bound
        .attenuate_as_holder(
            &agent,
            vec![
                Caveat::Holder(agent.public()),
                Caveat::Label("narrowed".to_owned()),
            ],
        )
        .expect("the holder narrows its own token");
    let child = baton::HolderKey::from_seed(&CHILD_HOLDER);
    let delegated = bound
        .attenuate_as_holder(&agent, vec![Caveat::Holder(child.public())])
        .expect("the holder delegates to a child key");
    let narrowed_last = *narrowed.block_ids().last().expect("blocks");
    let delegated_last = *delegated.block_ids().last().expect("blocks");
    // Holder signatures are deterministic Ed25519, so these tokens are fixed.
    out.push(valid_bound(
        "holder_narrowed_by_holder",
        "The bound refund agent appends block 2 itself, signed with its holder key, declaring \
         the same holder again (and a label). The proof is over block 2's id.",
        &narrowed,
        holder_seeds(&[]),
        vec![
            proved(
                refund_req("proof over the last block"),
                &base,
                &agent,
                AUDIENCE,
                &narrowed_last,
                NOW,
                2,
            ),
            proved(
                refund_req("proof over the parent's last block"),
                &base,
                &agent,
                AUDIENCE,
                &last,
                NOW,
                3,
            )
            .deny("proof_invalid"),
        ],
    ));
    out.push(valid_bound(
        "holder_delegated_to_child",
        "The bound refund agent delegates: block 2, signed with its holder key, binds a child's \
         holder key. Only the child can prove now.",
        &delegated,
        holder_seeds(&[("holder key (child)", &CHILD_HOLDER)]),
        vec![
            proved(
                refund_req("the child's proof"),
                &base,
                &child,
                AUDIENCE,
                &delegated_last,
                NOW,
                4,
            ),
            proved(
                refund_req("the parent holder's proof"),
                &base,
                &agent,
                AUDIENCE,
                &delegated_last,
                NOW,
                5,
            )
            .deny("proof_invalid"),
        ],
    ));

    // Invalid chains.
    let thief = baton::HolderKey::from_seed(&THIEF);
    let keys = [&issuer()];
    let rebound = forge::append_signed_by(
        bound.to_bytes(),
        forge::raw_payload(
            None,
            thief.public().as_bytes(),
            &[Caveat::Holder(thief.public())],
        ),
        &THIEF,
        &[],
    )
    .expect("a token");
    out.push(invalid(
        "holder_rebound_by_thief",
        "A thief holding only the bound token's text appends block 2 binding the thief's own \
         key, signed with that key. Block 2 must be signed by the holder key that block 1 \
         names.",
        &keys,
        Input::Bytes(rebound),
        "bad_signature",
        holder_seeds(&[("thief's key", &THIEF)]),
    ));
    let not_holder = forge::append_signed_by(
        bound.to_bytes(),
        forge::raw_payload(
            None,
            agent.public().as_bytes(),
            &[Caveat::Holder(agent.public())],
        ),
        &THIEF,
        &[],
    )
    .expect("a token");
    out.push(invalid(
        "holder_block_not_signed_by_holder",
        "Block 2 keeps the same holder but is signed by another key than the holder's.",
        &keys,
        Input::Bytes(not_holder),
        "bad_signature",
        holder_seeds(&[("signer of block 2 (not the holder)", &THIEF)]),
    ));
    let dropped = forge::append_signed_by(
        bound.to_bytes(),
        forge::raw_payload(None, &forge::public_of(&FORGED), &[Caveat::Depth(0)]),
        &AGENT,
        &FORGED,
    )
    .expect("a token");
    out.push(invalid(
        "holder_binding_dropped",
        "The holder signs block 2 with no holder caveat and an ephemeral next_key, with that \
         key's secret as the proof: dropping the binding would make a bearer token.",
        &keys,
        Input::Bytes(dropped),
        "holder_unbound",
        holder_seeds(&[forged_seed()]),
    ));
    let mismatch = forge::append_signed_by(
        bound.to_bytes(),
        forge::raw_payload(
            None,
            &forge::public_of(&FORGED),
            &[Caveat::Holder(child.public())],
        ),
        &AGENT,
        &[],
    )
    .expect("a token");
    out.push(invalid(
        "holder_key_not_next_key",
        "Block 2 declares the child's holder key but names another next_key.",
        &keys,
        Input::Bytes(mismatch),
        "holder_mismatch",
        holder_seeds(&[("holder key (child)", &CHILD_HOLDER), forged_seed()]),
    ));
    out.push(invalid(
        "holder_bound_with_secret",
        "The bound token with the holder's own secret in its proof field: a bound token \
         carries no proof secret.",
        &keys,
        Input::Bytes(forge::replace_proof(bound.to_bytes(), &AGENT).expect("a token")),
        "malformed",
        holder_seeds(&[]),
    ));
    let [_, refund, _] = support();
    out.push(invalid(
        "holder_empty_proof_unbound",
        "The (unbound) refund agent token with an empty proof field.",
        &keys,
        Input::Bytes(forge::replace_proof(refund.to_bytes(), &[]).expect("a token")),
        "holder_unbound",
        support_seeds(2),
    ));

    // Proofs that do not fit the request, each a vector of its own.
    let other = |f: &dyn Fn(&mut RequestCase)| {
        let mut c = base.clone();
        f(&mut c);
        c
    };
    let cases: Vec<(&str, &str, Req)> = vec![
        (
            "proof_other_audience",
            "A proof made for audience gateway-b.example.",
            proved(
                refund_req("proof for another gateway"),
                &base,
                &agent,
                "gateway-b.example",
                &last,
                NOW,
                10,
            ),
        ),
        (
            "proof_other_block",
            "A proof over block 0's id instead of the last block's.",
            proved(
                refund_req("proof over block 0"),
                &base,
                &agent,
                AUDIENCE,
                &bound.block_ids()[0],
                NOW,
                11,
            ),
        ),
        (
            "proof_other_action",
            "A proof made for action crm.read.",
            proved(
                refund_req("proof for crm.read"),
                &other(&|c| c.action = "crm.read".into()),
                &agent,
                AUDIENCE,
                &last,
                NOW,
                12,
            ),
        ),
        (
            "proof_other_resource",
            "A proof made for resource customer:1.",
            proved(
                refund_req("proof for customer:1"),
                &other(&|c| c.resource = Some("customer:1".into())),
                &agent,
                AUDIENCE,
                &last,
                NOW,
                13,
            ),
        ),
        (
            "proof_other_args",
            "A proof made for amount 9000000000.",
            proved(
                refund_req("proof for another amount"),
                &other(&|c| {
                    c.args.insert("amount".into(), ArgJson::Int(9_000_000_000));
                }),
                &agent,
                AUDIENCE,
                &last,
                NOW,
                14,
            ),
        ),
        (
            "proof_other_body",
            "A proof made for the body {\"amount\":9000000000}.",
            proved(
                refund_req("proof for another body"),
                &other(&|c| {
                    c.body_hex = Some(hex::encode(br#"{"amount":9000000000}"#));
                }),
                &agent,
                AUDIENCE,
                &last,
                NOW,
                15,
            ),
        ),
    ];
    for (name, desc, r) in cases {
        out.push(valid_bound(
            name,
            &format!("The bound refund agent token (vector 100). {desc} The verifier rebuilds the request hash from the request it executes, so the signature fails."),
            &bound,
            holder_seeds(&[]),
            vec![r.deny("proof_invalid")],
        ));
    }
    out.push(valid_bound(
        "proof_expired",
        "A proof signed 61 seconds before the request: outside [now - 60, now + 10]; 60 \
         seconds before is still accepted.",
        &bound,
        holder_seeds(&[]),
        vec![
            proved(
                refund_req("61 s old"),
                &base,
                &agent,
                AUDIENCE,
                &last,
                NOW - 61,
                20,
            )
            .deny("proof_expired"),
            proved(
                refund_req("60 s old"),
                &base,
                &agent,
                AUDIENCE,
                &last,
                NOW - 60,
                21,
            ),
        ],
    ));
    out.push(valid_bound(
        "proof_from_the_future",
        "A proof signed 11 seconds after the request time; 10 seconds after is still accepted.",
        &bound,
        holder_seeds(&[]),
        vec![
            proved(
                refund_req("11 s ahead"),
                &base,
                &agent,
                AUDIENCE,
                &last,
                NOW + 11,
                22,
            )
            .deny("proof_expired"),
            proved(
                refund_req("10 s ahead"),
                &base,
                &agent,
                AUDIENCE,
                &last,
                NOW + 10,
                23,
            ),
        ],
    ));
    out.push(valid_bound(
        "proof_replayed",
        "The same proof twice, in order, to one verifier: the replay store (keyed on holder and \
         nonce) accepts it once.",
        &bound,
        holder_seeds(&[]),
        vec![
            ok("first use", 24),
            ok("the same proof again", 24).deny("proof_replayed"),
        ],
    ));
    out
}
