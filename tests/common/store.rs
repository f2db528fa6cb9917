//! The backend `BATON_TEST_STORE` names, for the suites written once
//! against the `Store` trait (tests/http.rs, tests/allocations.rs): `sqlite`
//! (in memory, the default), `sqlite-file` (a WAL database in a temporary
//! directory, fsync on) or `postgres` (a schema of its own on
//! `BATON_TEST_POSTGRES`, dropped when the test ends). A new backend adds
//! its arm here.

use std::sync::atomic::{AtomicU64, Ordering};

use baton::store::Store;
use baton::store::postgres::{PgOptions, PgStore, drop_schema};
use baton::store::sqlite::SqliteStore;

/// The PostgreSQL server `BATON_TEST_STORE=postgres` uses:
/// `BATON_TEST_POSTGRES`, else the CI machine's.
pub fn pg_url() -> String {
    std::env::var(super::POSTGRES_ENV)
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Drops a test's uniquely named PostgreSQL schema when the test ends.
pub struct SchemaGuard(pub String);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        if let Err(e) = drop_schema(&pg_url(), &self.0) {
            eprintln!("dropping schema {}: {e}", self.0);
        }
    }
}

/// A number no other call in this process returns.
pub fn unique() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A schema name no other test (in any process) uses.
pub fn unique_schema(tag: &str) -> String {
    format!(
        "baton_{tag}_{}_{}_{}",
        std::process::id(),
        unique(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    )
}

/// A PostgreSQL store on `schema` (created if absent).
pub fn pg_store(schema: &str) -> Box<dyn Store> {
    let mut opts = PgOptions::new(&pg_url());
    opts.schema = schema.to_owned();
    opts.pool_size = 3;
    Box::new(PgStore::connect(&opts).expect("postgres store"))
}

/// A fresh store of the backend `BATON_TEST_STORE` names, with the guard
/// of its schema on PostgreSQL.
pub fn test_store(tag: &str) -> (Box<dyn Store>, Option<SchemaGuard>) {
    match std::env::var("BATON_TEST_STORE").as_deref() {
        Ok("postgres") => {
            let schema = unique_schema(tag);
            let guard = SchemaGuard(schema.clone());
            (pg_store(&schema), Some(guard))
        }
        Ok("sqlite-file") => {
            let dir = std::env::temp_dir().join(format!(
                "baton-{tag}-{}-{}",
                std::process::id(),
                unique()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let store = SqliteStore::open(&dir.join("ledger.db")).expect("file store");
            (Box::new(store), None)
        }
        Ok("sqlite") | Err(_) => (
            Box::new(SqliteStore::in_memory().expect("in-memory store")),
            None,
        ),
        Ok(other) => panic!("unknown BATON_TEST_STORE {other:?}"),
    }
}
