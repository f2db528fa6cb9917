//! The proxy's policy: its configuration file, parsed into types that
//! cannot be invalid, and the pure mapping from an MCP `tools/call` to a
//! Baton [`Request`] and a cost. No I/O here; the file is read by the
//! caller and handed over as bytes.
//!
//! The format is in `spec/mcp.md` §2.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::authority::Request;
use crate::caveat::{ArgValue, Unit, valid_arg_name};
use crate::error::Denied;
use crate::pattern::{ActionName, ResourceName};
use crate::token::Token;
use crate::verifier::{AuthorizeError, Verifier};

use super::Refusal;

/// A configuration file larger than this is not one (and is refused
/// before parsing).
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// Why a configuration file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("the configuration is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge,
    /// The file is not the JSON document of `spec/mcp.md` §2 (unknown
    /// fields included).
    #[error("the configuration does not parse: {0}")]
    Syntax(String),
    /// The server name is not an action name (`spec/token.md`).
    #[error("server name {0:?} is not an action name")]
    ServerName(String),
    /// A tool's `action` is not an action name.
    #[error("tool {tool:?}: action {action:?} is not an action name")]
    Action {
        /// The tool.
        tool: String,
        /// The action as written.
        action: String,
    },
    /// A tool's `resource_arg` or a cost's `amount_arg` is not an argument name.
    #[error("tool {tool:?}: {arg:?} is not an argument name")]
    ArgName {
        /// The tool.
        tool: String,
        /// The argument as written.
        arg: String,
    },
    /// A cost's unit is not a unit name, or is the reserved `usd`.
    #[error("tool {tool:?}: unit {unit:?}: {reason}")]
    Unit {
        /// The tool.
        tool: String,
        /// The unit as written.
        unit: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A cost has both or neither of `amount` and `amount_arg`, or an
    /// amount outside 1…2⁶³−1.
    #[error("tool {tool:?}: a cost needs exactly one of amount (1..=2^63-1) or amount_arg")]
    Amount {
        /// The tool.
        tool: String,
    },
}

/// The configuration file as written (spec/mcp.md §2).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    server: Option<String>,
    #[serde(default)]
    tools: BTreeMap<String, ToolFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolFile {
    action: Option<String>,
    resource_arg: Option<String>,
    #[serde(default)]
    resource_prefix: String,
    cost: Option<CostFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CostFile {
    unit: String,
    amount: Option<u64>,
    amount_arg: Option<String>,
    actual_field: Option<String>,
}

/// How the proxy maps and prices the downstream server's tools.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The first segments of every default action: `<server>.<tool>`.
    server: String,
    tools: BTreeMap<String, ToolRule>,
}

/// The configured mapping of one tool.
#[derive(Debug, Clone)]
struct ToolRule {
    action: Option<ActionName>,
    resource: Option<(String, String)>,
    cost: Option<Cost>,
}

/// What a call of a priced tool holds and charges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cost {
    /// The unit held and charged.
    pub unit: Unit,
    /// Where the amount held comes from.
    pub amount: Amount,
    /// A field of the result's `structuredContent` holding the actual cost,
    /// a non-negative integer. Without it the amount held is charged.
    pub actual_field: Option<String>,
}

/// Where the amount to hold comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Amount {
    /// A fixed amount per call.
    Fixed(u64),
    /// The value of an integer argument of the call (1…2⁶³−1).
    Arg(String),
}

/// One `tools/call`, mapped: the request to authorize, the same action,
/// resource and arguments for the ledger, and the amount to hold.
#[derive(Debug, Clone)]
pub struct MappedCall {
    /// The request to authorize offline.
    pub request: Request,
    /// The action, for the ledger.
    pub action: String,
    /// The resource, for the ledger.
    pub resource: Option<String>,
    /// The arguments the token sees, for the ledger.
    pub args: BTreeMap<String, ArgValue>,
    /// What to hold and charge, for a priced tool.
    pub charge: Option<Charge>,
}

/// The hold of one priced call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The unit.
    pub unit: Unit,
    /// The amount to hold.
    pub amount: u64,
    /// Where the actual cost is read from, if not the amount held.
    pub actual_field: Option<String>,
}

impl Policy {
    /// A policy with no configured tool: every tool `t` is action
    /// `<server>.<t>`, free, without a resource.
    pub fn new(server: &str) -> Result<Self, ConfigError> {
        Self::from_file(ConfigFile::default(), Some(server))
    }

    /// Parses a configuration file (JSON, spec/mcp.md §2). `server`, when
    /// given, overrides the file's `server`.
    pub fn from_json(bytes: &[u8], server: Option<&str>) -> Result<Self, ConfigError> {
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge);
        }
        let file: ConfigFile =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        Self::from_file(file, server)
    }

    fn from_file(file: ConfigFile, server: Option<&str>) -> Result<Self, ConfigError> {
        let server = server
            .map(str::to_owned)
            .or(file.server)
            .ok_or_else(|| ConfigError::ServerName(String::new()))?;
        if ActionName::parse(&server).is_err() {
            return Err(ConfigError::ServerName(server));
        }
        let mut tools = BTreeMap::new();
        for (tool, rule) in file.tools {
            let action = match rule.action {
                Some(a) => Some(ActionName::parse(&a).map_err(|_| ConfigError::Action {
                    tool: tool.clone(),
                    action: a,
                })?),
                None => None,
            };
            let arg_name = |arg: String| {
                if valid_arg_name(&arg) {
                    Ok(arg)
                } else {
                    Err(ConfigError::ArgName {
                        tool: tool.clone(),
                        arg,
                    })
                }
            };
            let resource = match rule.resource_arg {
                Some(arg) => Some((arg_name(arg)?, rule.resource_prefix)),
                None => None,
            };
            let cost = match rule.cost {
                Some(c) => {
                    let unit = match Unit::parse(&c.unit) {
                        Ok(Unit::Custom(u)) if u == "usd" => {
                            Err("usd is reserved; use usd_microcents")
                        }
                        other => other,
                    }
                    .map_err(|reason| ConfigError::Unit {
                        tool: tool.clone(),
                        unit: c.unit.clone(),
                        reason,
                    })?;
                    let amount = match (c.amount, c.amount_arg) {
                        (Some(n), None) if (1..=i64::MAX as u64).contains(&n) => Amount::Fixed(n),
                        (None, Some(arg)) => Amount::Arg(arg_name(arg)?),
                        _ => return Err(ConfigError::Amount { tool }),
                    };
                    Some(Cost {
                        unit,
                        amount,
                        actual_field: c.actual_field,
                    })
                }
                None => None,
            };
            tools.insert(
                tool,
                ToolRule {
                    action,
                    resource,
                    cost,
                },
            );
        }
        Ok(Self { server, tools })
    }

    /// Whether any tool has a cost (then the proxy needs a ledger).
    pub fn has_costs(&self) -> bool {
        self.tools.values().any(|t| t.cost.is_some())
    }

    /// The action a call of `tool` asks for: the configured one, or
    /// `<server>.<tool>`. A tool name that does not make an action name
    /// (upper case, spaces, `*`) is refused, never rewritten: two tools
    /// must not fall under one action by accident.
    pub fn action(&self, tool: &str) -> Result<ActionName, Denied> {
        match self.tools.get(tool).and_then(|t| t.action.clone()) {
            Some(a) => Ok(a),
            None => ActionName::parse(&format!("{}.{tool}", self.server))
                .map_err(|_| Denied::InvalidAction),
        }
    }

    /// Maps one call of `tool` with `arguments` at Unix time `now`.
    ///
    /// The token sees each argument whose name is an argument name and
    /// whose value is a string or an integer in i64; others are left out,
    /// so a bound on them fails as `arg_missing`. The resource is the
    /// configured prefix followed by the configured argument, which must
    /// then be a string (or the call has no resource).
    pub fn map_call(
        &self,
        tool: &str,
        arguments: Option<&Map<String, Value>>,
        now: u64,
    ) -> Result<MappedCall, Refusal> {
        let action = self.action(tool)?;
        let rule = self.tools.get(tool);
        let mut request = Request::new(action.as_str(), now)?;
        let mut args = BTreeMap::new();
        let empty = Map::new();
        let arguments = arguments.unwrap_or(&empty);
        for (name, value) in arguments {
            if !valid_arg_name(name) {
                continue;
            }
            let value = match value {
                Value::String(s) => ArgValue::Str(s.clone()),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => ArgValue::Int(i),
                    None => continue,
                },
                _ => continue,
            };
            request = request.arg(name, value.clone())?;
            args.insert(name.clone(), value);
        }
        let mut resource = None;
        if let Some((arg, prefix)) = rule.and_then(|r| r.resource.as_ref())
            && let Some(Value::String(s)) = arguments.get(arg)
        {
            let r = format!("{prefix}{s}");
            // Checked here so that a bad name is the library's denial, not
            // a proxy error.
            ResourceName::parse(&r).map_err(|_| Denied::ResourceNotAllowed)?;
            request = request.resource(&r)?;
            resource = Some(r);
        }
        let charge = match rule.and_then(|r| r.cost.as_ref()) {
            None => None,
            Some(cost) => {
                let amount = match &cost.amount {
                    Amount::Fixed(n) => *n,
                    Amount::Arg(arg) => arguments
                        .get(arg)
                        .and_then(Value::as_u64)
                        .filter(|n| (1..=i64::MAX as u64).contains(n))
                        .ok_or_else(|| Refusal::CostArg(arg.clone()))?,
                };
                Some(Charge {
                    unit: cost.unit.clone(),
                    amount,
                    actual_field: cost.actual_field.clone(),
                })
            }
        };
        Ok(MappedCall {
            request,
            action: action.as_str().to_owned(),
            resource,
            args,
            charge,
        })
    }

    /// Whether `tools/list` shows `tool` to `token` at `now`: the token
    /// allows the tool's action now, whatever the resource and arguments
    /// (those are only known at call time, where they are checked).
    pub fn visible(&self, verifier: &Verifier, token: &Token, tool: &str, now: u64) -> bool {
        let Ok(action) = self.action(tool) else {
            return false;
        };
        let Ok(request) = Request::new(action.as_str(), now) else {
            return false;
        };
        match verifier.authorize(token, &request) {
            Ok(_) => true,
            // Decided by the call's resource and arguments, not by the action.
            Err(AuthorizeError::Denied(
                Denied::ResourceNotAllowed | Denied::ArgMissing(_) | Denied::ArgOutOfBounds(_),
            )) => true,
            Err(_) => false,
        }
    }
}

/// Reads the actual cost of a priced call from its result: the integer at
/// `field` of `structured`, if configured, else the amount held. A missing
/// or malformed field charges the amount held, so that a tool that forgets
/// to report is charged its estimate rather than nothing.
pub fn actual_cost(charge: &Charge, structured: Option<&Value>) -> u64 {
    charge
        .actual_field
        .as_deref()
        .and_then(|f| structured?.get(f)?.as_u64())
        .filter(|n| *n <= i64::MAX as u64)
        .unwrap_or(charge.amount)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caveat::{ArgBound, ArgConstraint, Caveat};
    use crate::keys::{Keyset, RootKey};
    use crate::pattern::ActionPattern;
    use proptest::strategy::Strategy as _;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    fn policy() -> Policy {
        Policy::from_json(
            br#"{"server": "files", "tools": {
                "read": {"resource_arg": "path", "resource_prefix": "file:"},
                "Write": {"action": "files.write", "cost": {"unit": "calls", "amount": 2}},
                "gen": {"cost": {"unit": "tokens", "amount_arg": "max_tokens", "actual_field": "used"}}
            }}"#,
            None,
        )
        .unwrap()
    }

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn default_and_configured_actions() {
        let p = policy();
        assert_eq!(p.action("read").unwrap().as_str(), "files.read");
        assert_eq!(p.action("Write").unwrap().as_str(), "files.write");
        assert_eq!(p.action("list_dir").unwrap().as_str(), "files.list_dir");
        // Not rewritten: an unmapped name that is not an action name is refused.
        assert_eq!(p.action("ListDir"), Err(Denied::InvalidAction));
        assert_eq!(p.action("a*"), Err(Denied::InvalidAction));
        assert_eq!(p.action(""), Err(Denied::InvalidAction));
    }

    #[test]
    fn arguments_resource_and_costs() {
        let p = policy();
        let a = args(json!({"path": "a/b.txt", "n": -3, "flag": true, "x": 1.5,
                            "camelCase": "skipped", "big": u64::MAX}));
        let call = p.map_call("read", Some(&a), NOW).unwrap();
        assert_eq!(call.resource.as_deref(), Some("file:a/b.txt"));
        assert_eq!(
            call.args.into_iter().collect::<Vec<_>>(),
            [
                ("n".to_owned(), ArgValue::Int(-3)),
                ("path".to_owned(), ArgValue::Str("a/b.txt".into()))
            ]
        );
        assert_eq!(call.charge, None);

        let call = p.map_call("Write", None, NOW).unwrap();
        assert_eq!(call.action, "files.write");
        assert_eq!(call.charge.unwrap().amount, 2);

        let call = p.map_call("gen", Some(&args(json!({"max_tokens": 700}))), NOW);
        let charge = call.unwrap().charge.unwrap();
        assert_eq!((charge.unit.as_str(), charge.amount), ("tokens", 700));
        assert_eq!(actual_cost(&charge, Some(&json!({"used": 512}))), 512);
        assert_eq!(actual_cost(&charge, Some(&json!({"used": "x"}))), 700);
        assert_eq!(actual_cost(&charge, None), 700);

        for bad in [
            json!({}),
            json!({"max_tokens": 0}),
            json!({"max_tokens": "7"}),
        ] {
            let e = p.map_call("gen", Some(&args(bad)), NOW).unwrap_err();
            assert_eq!(e.code(), "cost_arg_invalid");
        }
        // A resource that is not a resource name is a denial.
        let e = p
            .map_call("read", Some(&args(json!({"path": "a b"}))), NOW)
            .unwrap_err();
        assert_eq!(e.code(), "resource_not_allowed");
    }

    #[test]
    fn bad_configurations_are_refused() {
        let cases: [(&[u8], &str); 8] = [
            (br#"{"tools": {}}"#, "server"),
            (br#"{"server": "Files"}"#, "server"),
            (br#"{"server": "f", "extra": 1}"#, "parse"),
            (
                br#"{"server": "f", "tools": {"t": {"action": "a.*"}}}"#,
                "action",
            ),
            (
                br#"{"server": "f", "tools": {"t": {"resource_arg": "Path"}}}"#,
                "argument",
            ),
            (
                br#"{"server": "f", "tools": {"t": {"cost": {"unit": "usd", "amount": 1}}}}"#,
                "usd",
            ),
            (
                br#"{"server": "f", "tools": {"t": {"cost": {"unit": "calls"}}}}"#,
                "exactly one",
            ),
            (
                br#"{"server": "f", "tools": {"t": {"cost": {"unit": "calls", "amount": 0}}}}"#,
                "exactly one",
            ),
        ];
        for (text, want) in cases {
            let e = Policy::from_json(text, None).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let big = vec![b' '; MAX_CONFIG_BYTES + 1];
        assert_eq!(
            Policy::from_json(&big, None).unwrap_err(),
            ConfigError::TooLarge
        );
    }

    #[test]
    fn listing_follows_the_action_only() {
        let root = RootKey::from_seed(&[7; 32]);
        let verifier = Verifier::new(Keyset::new().with(root.public()));
        let token = Token::mint(
            &root,
            vec![
                Caveat::tools(["files.read", "files.write"]).unwrap(),
                Caveat::resources(["file:*"]).unwrap(),
                Caveat::ArgBound(ArgConstraint::new(
                    ActionPattern::parse("files.write").unwrap(),
                    "size",
                    ArgBound::Range {
                        min: Some(0),
                        max: Some(10),
                    },
                )),
                Caveat::Expiry {
                    not_after: NOW + 60,
                    not_before: None,
                },
            ],
        )
        .unwrap();
        let p = policy();
        assert!(p.visible(&verifier, &token, "read", NOW));
        assert!(p.visible(&verifier, &token, "Write", NOW));
        assert!(!p.visible(&verifier, &token, "gen", NOW));
        assert!(!p.visible(&verifier, &token, "Read", NOW));
        // Expired: nothing is shown.
        assert!(!p.visible(&verifier, &token, "read", NOW + 3600));
    }

    proptest::proptest! {
        /// Any bytes: a policy or a named error, never a panic.
        #[test]
        fn any_config_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Policy::from_json(&bytes, None);
        }

        /// Any tool name and arguments: a mapped call whose arguments are
        /// exactly the well-named strings and i64 integers, or a refusal.
        #[test]
        fn any_call_maps_or_is_refused(
            tool in "[a-zA-Z_.*: -]{0,12}",
            args in proptest::collection::btree_map("[a-zA-Z_]{1,6}", proptest::prop_oneof![
                proptest::num::i64::ANY.prop_map(|i| json!(i)),
                proptest::num::u64::ANY.prop_map(|u| json!(u)),
                "[a-z/. ]{0,8}".prop_map(|s| json!(s)),
                proptest::bool::ANY.prop_map(|b| json!(b)),
                proptest::num::f64::NORMAL.prop_map(|f| json!(f)),
            ], 0..8),
        ) {
            let p = policy();
            let args: Map<String, Value> = args.into_iter().collect();
            if let Ok(call) = p.map_call(&tool, Some(&args), NOW) {
                for (name, value) in &call.args {
                    proptest::prop_assert!(valid_arg_name(name));
                    let sent = &args[name];
                    match value {
                        ArgValue::Int(i) => proptest::prop_assert_eq!(sent.as_i64(), Some(*i)),
                        ArgValue::Str(s) => proptest::prop_assert_eq!(sent.as_str(), Some(s.as_str())),
                    }
                }
                let expected = args
                    .iter()
                    .filter(|(k, v)| valid_arg_name(k) && (v.is_string() || v.as_i64().is_some()))
                    .count();
                proptest::prop_assert_eq!(call.args.len(), expected);
            }
        }
    }
}
