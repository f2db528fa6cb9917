//! Typed outcomes to HTTP answers, in one place: statuses, the error body
//! (spec/http.md §2.1) and the reservation view (§6.4).
//!
//! Rendering is deterministic: the same [`Outcome`] always gives the same
//! bytes, which is what makes an idempotent replay byte-identical even
//! though only the typed outcome is stored.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::ledger::{Allocation, LedgerError, Outcome, ResState, View};

/// An answer: HTTP status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: String,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body,
        )
            .into_response()
    }
}

/// The error body `{"error": {"code", "message", ...detail}}`.
pub(crate) fn error_reply(status: u16, code: &str, message: &str, detail: Option<Value>) -> Reply {
    let mut err = json!({ "code": code, "message": message });
    if let (Some(Value::Object(d)), Some(obj)) = (detail, err.as_object_mut()) {
        obj.extend(d);
    }
    Reply {
        status,
        body: json!({ "error": err }).to_string(),
    }
}

/// The status and error body of a ledger refusal.
pub(crate) fn ledger_error_reply(e: &LedgerError) -> Reply {
    let (status, detail) = match e {
        LedgerError::InsufficientBudget { scope, remaining } => (
            402,
            Some(json!({
                "scope": {
                    "block_id": scope.block.to_string(),
                    "unit": scope.unit.as_str(),
                    "tools": scope.tools.as_ref().map(|p| p.as_str()),
                },
                "remaining": remaining,
            })),
        ),
        LedgerError::NoBudget => (403, None),
        LedgerError::InvalidAmount => (400, None),
        LedgerError::NotFound => (404, None),
        LedgerError::Finalized(ResState::Expired) => (410, Some(json!({ "state": "expired" }))),
        LedgerError::Finalized(s) => (409, Some(json!({ "state": s.as_str() }))),
        LedgerError::Revoked(b) => (403, Some(json!({ "block_id": b.to_string() }))),
        // Unreachable for tokens of one issuer; a conflict, not a server fault.
        LedgerError::CeilingConflict => (409, None),
        LedgerError::AllocationExhausted { id, remaining } => (
            402,
            Some(json!({ "allocation_id": id.to_string(), "remaining": remaining })),
        ),
        LedgerError::AllocationNotFound => (404, None),
        LedgerError::AllocationFinalized(s) => (409, Some(json!({ "state": s.as_str() }))),
        LedgerError::AllocationExists(id) => {
            (409, Some(json!({ "allocation_id": id.to_string() })))
        }
        LedgerError::ExceedsChildBudget { ceiling } => {
            (400, Some(json!({ "child_ceiling": ceiling })))
        }
        LedgerError::NotDescendant => (403, None),
        LedgerError::AllocationsUnsupported => (501, None),
    };
    error_reply(status, e.code(), &e.to_string(), detail)
}

/// The reply to a ledger outcome. `NotRecorded` has no reply of its own
/// (the caller answers with the denial that made it ask); it is rendered
/// as not found only as a fail-closed fallback.
pub(crate) fn outcome_reply(outcome: &Outcome) -> Reply {
    match outcome {
        Outcome::Done { created, view } => Reply {
            status: if *created { 201 } else { 200 },
            body: reservation_body(view),
        },
        Outcome::Allocation { created, alloc } => Reply {
            status: if *created { 201 } else { 200 },
            body: json!({ "allocation": allocation_json(alloc) }).to_string(),
        },
        Outcome::Refused(e) => ledger_error_reply(e),
        Outcome::KeyReused => error_reply(
            409,
            "idempotency_mismatch",
            "this idempotency key was used for a different request",
            None,
        ),
        _ => ledger_error_reply(&LedgerError::NotFound),
    }
}

/// The JSON view of an allocation (spec/http.md §6.16). A `Value` map, so
/// its keys print sorted like every other body.
pub(crate) fn allocation_json(a: &Allocation) -> Value {
    json!({
        "id": a.id.to_string(),
        "parent_block_id": a.parent.last().map(ToString::to_string),
        "child_block_id": a.child.last().map(ToString::to_string),
        "unit": a.unit.as_str(),
        "amount": a.amount,
        "charged": a.charged,
        "drawn": a.drawn,
        "unused": a.unused(),
        "returned": a.returned,
        "overflow": a.overflow.as_str(),
        "state": a.state.as_str(),
        "expires_at_ms": a.expires_at,
        "finalized_at_ms": a.finalized_at,
        "scopes": a.scopes.iter().map(|k| json!({
            "block_id": k.block.to_string(),
            "unit": k.unit.as_str(),
            "tools": k.tools.as_ref().map(|p| p.as_str()),
        })).collect::<Vec<_>>(),
    })
}

/// The JSON view of a scope. Fields are in alphabetical order, the order
/// `serde_json::Value` maps print in, so every body of the service sorts
/// its keys the same way.
#[derive(serde::Serialize)]
struct ScopeView<'a> {
    block_id: String,
    ceiling: u64,
    held: u64,
    remaining: u64,
    spent: u64,
    tools: Option<&'a str>,
    unit: &'a str,
}

/// The JSON view of a reservation (alphabetical fields, as above).
#[derive(serde::Serialize)]
struct ReservationView<'a> {
    amount: u64,
    block_id: Option<String>,
    charged: Option<u64>,
    expires_at_ms: u64,
    id: String,
    scopes: Vec<ScopeView<'a>>,
    state: &'static str,
    unit: &'a str,
}

#[derive(serde::Serialize)]
struct Wrapped<'a> {
    reservation: ReservationView<'a>,
}

fn view(v: &View) -> ReservationView<'_> {
    let s = &v.snapshot;
    ReservationView {
        amount: s.amount,
        block_id: v.holder.chain.last().map(ToString::to_string),
        charged: s.charged,
        expires_at_ms: s.expires_at,
        id: s.id.to_string(),
        scopes: v
            .holder
            .scopes
            .iter()
            .zip(&s.counters)
            .map(|(k, c)| ScopeView {
                block_id: k.block.to_string(),
                ceiling: c.ceiling,
                held: c.held,
                remaining: c.remaining(),
                spent: c.spent,
                tools: k.tools.as_ref().map(|p| p.as_str()),
                unit: k.unit.as_str(),
            })
            .collect(),
        state: s.state.as_str(),
        unit: v.holder.unit.as_str(),
    }
}

/// `{"reservation": ...}`, serialized straight from the view without a
/// `Value` tree.
pub(crate) fn reservation_body(v: &View) -> String {
    serde_json::to_string(&Wrapped {
        reservation: view(v),
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::caveat::Unit;
    use crate::keys::BlockId;
    use crate::ledger::{Holder, ResId, ScopeKey, ScopeState, Snapshot};
    use crate::pattern::ActionPattern;

    #[test]
    fn a_reservation_renders_with_sorted_keys_and_typed_nulls() {
        let holder = Arc::new(Holder {
            id: 1,
            chain: vec![BlockId([0; 32]), BlockId([1; 32])],
            unit: Unit::Calls,
            scopes: vec![
                ScopeKey {
                    block: BlockId([1; 32]),
                    unit: Unit::Calls,
                    tools: Some(ActionPattern::parse("crm.*").unwrap()),
                },
                ScopeKey {
                    block: BlockId([0; 32]),
                    unit: Unit::Calls,
                    tools: None,
                },
            ],
        });
        let v = View {
            holder,
            snapshot: Snapshot {
                id: ResId::new(1, [2; 12]),
                state: ResState::Active,
                amount: 3,
                charged: None,
                expires_at: 60_001,
                counters: vec![
                    ScopeState {
                        ceiling: 5,
                        spent: 1,
                        held: 3,
                    },
                    ScopeState {
                        ceiling: 9,
                        spent: 1,
                        held: 3,
                    },
                ],
            },
        };
        let body = reservation_body(&v);
        let parsed: Value = serde_json::from_str(&body).unwrap();
        // Re-serializing through a sorted map gives the same bytes.
        assert_eq!(parsed.to_string(), body);
        assert_eq!(parsed["reservation"]["scopes"][0]["tools"], "crm.*");
        assert_eq!(parsed["reservation"]["scopes"][1]["tools"], Value::Null);
        assert_eq!(parsed["reservation"]["scopes"][0]["remaining"], 1);
        assert_eq!(
            parsed["reservation"]["id"],
            "rsv_000000000001020202020202020202020202"
        );
    }

    #[test]
    fn an_insufficient_budget_names_its_scope_with_null_tools() {
        let r = ledger_error_reply(&LedgerError::InsufficientBudget {
            scope: ScopeKey {
                block: BlockId([1; 32]),
                unit: Unit::Calls,
                tools: None,
            },
            remaining: 2,
        });
        assert_eq!(r.status, 402);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["error"]["scope"]["tools"], Value::Null);
        assert_eq!(v["error"]["remaining"], 2);
        assert_eq!(v["error"]["code"], "insufficient_budget");
    }
}
