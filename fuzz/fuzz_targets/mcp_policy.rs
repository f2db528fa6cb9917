//! Fuzzes the `baton mcp-proxy` configuration parser and the mapping of a
//! call to a request and a cost (spec/mcp.md §2, §3).
//!
//! The input is a configuration file, a NUL byte, then a call as JSON:
//! `{"name": TOOL, "arguments": {...}, "result": STRUCTURED_CONTENT}`.
//! Nothing may panic; a mapped call carries exactly the arguments the
//! spec admits, a positive amount that fits an i64, and an actual cost
//! that fits an i64 too.
#![no_main]

use baton::ArgValue;
use baton::mcp::Policy;
use baton::mcp::policy::actual_cost;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let (config, call) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    // With and without a server name from the command line.
    let policies = [
        Policy::from_json(config, None),
        Policy::from_json(config, Some("fz")),
    ];
    let Ok(Value::Object(call)) = serde_json::from_slice::<Value>(call) else {
        return;
    };
    let Some(Value::String(tool)) = call.get("name") else {
        return;
    };
    let arguments = match call.get("arguments") {
        Some(Value::Object(a)) => Some(a),
        _ => None,
    };
    for policy in policies.iter().flatten() {
        let Ok(mapped) = policy.map_call(tool, arguments, 1_700_000_000) else {
            continue;
        };
        assert_eq!(
            policy.action(tool).ok().map(|a| a.as_str().to_owned()),
            Some(mapped.action.clone())
        );
        for (name, value) in &mapped.args {
            let given = arguments.and_then(|a| a.get(name));
            match value {
                ArgValue::Str(s) => assert_eq!(given, Some(&Value::String(s.clone()))),
                ArgValue::Int(i) => {
                    assert_eq!(given.and_then(Value::as_i64), Some(*i))
                }
                _ => panic!("an argument of another type was admitted"),
            }
        }
        if let Some(charge) = &mapped.charge {
            assert!((1..=i64::MAX as u64).contains(&charge.amount));
            let actual = actual_cost(charge, call.get("result"));
            assert!(actual <= i64::MAX as u64);
        }
    }
});
