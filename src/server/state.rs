//! The state every handler shares: the writer's handle, the verifier, the
//! signing key and the metrics.

use std::sync::{Arc, RwLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::writer::LedgerHandle;
use crate::keys::RootKey;
use crate::ledger::Population;
use crate::verifier::Verifier;

/// Prometheus metrics, in the OpenMetrics text format.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<Vec<(String, String)>, Counter>,
    records: Family<Vec<(String, String)>, Gauge>,
    ready: Gauge,
}

impl Metrics {
    pub(crate) fn new(batches: Counter, retries: Counter) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "baton_ledger_requests",
            "Ledger requests by operation and HTTP status",
            requests.clone(),
        );
        registry.register(
            "baton_ledger_batches",
            "Durable write transactions (group commits)",
            batches,
        );
        registry.register(
            "baton_ledger_group_retries",
            "Group transactions run again after losing a race with another group on a shared store",
            retries,
        );
        let records = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register(
            "baton_ledger_memory_records",
            "Records the ledger holds in memory, by kind (bounded by active state and the caches)",
            records.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "baton_ready",
            "Whether the store is available (1) or not (0)",
            ready.clone(),
        );
        Self {
            registry,
            requests,
            records,
            ready,
        }
    }

    pub(crate) fn count(&self, op: &str, status: u16) {
        self.requests
            .get_or_create(&vec![
                ("op".into(), op.into()),
                ("status".into(), status.to_string()),
            ])
            .inc();
    }

    pub(crate) fn render(&self, ready: bool, population: Population) -> String {
        self.ready.set(i64::from(ready));
        let p = population;
        for (kind, n) in [
            ("scopes", p.scopes),
            ("active_reservations", p.active),
            ("expiry_index", p.expiry),
            ("finalized_cache", p.finalized),
            ("idempotency_cache", p.idempotency),
            ("holder_cache", p.holders),
            ("revoked", p.revoked),
            ("active_allocations", p.allocations),
        ] {
            self.records
                .get_or_create(&vec![("kind".into(), kind.into())])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub(crate) ledger: LedgerHandle,
    pub(crate) verifier: Arc<RwLock<Verifier>>,
    pub(crate) signer: Arc<RwLock<RootKey>>,
    pub(crate) metrics: Arc<Metrics>,
    /// Taken for the whole of a live key rotation, so that concurrent
    /// rotations reach the store and the in-memory keys in the same order.
    pub(crate) rotation: Arc<tokio::sync::Mutex<()>>,
}
