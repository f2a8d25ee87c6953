//! The schema, as numbered migrations compiled into the binary and applied
//! when a store opens. Many daemons may start at once against one
//! database: the migrations run under an advisory lock, so exactly one
//! applies each, and the others find it applied. Every applied version is
//! a row of `schema_version`; a database whose newest version is past
//! what this binary knows was migrated by a newer stephost, and is refused
//! before anything reads or writes it.

use deadpool_postgres::Pool;

use super::connect::{classify, pool_error};
use crate::store::StoreError;

/// The migrations, oldest first: (version, SQL). Never edit one that was
/// released; add the next.
pub(super) const MIGRATIONS: &[(u64, &str)] = &[
    (1, include_str!("migrations/0001_tables.sql")),
    (2, include_str!("migrations/0002_listing.sql")),
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: u64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The advisory lock the migrations run under ("stephost" in ASCII): a
/// number no other user of the database is likely to pick.
const MIGRATION_LOCK: i64 = 0x7374_6570_686f_7374;

/// Brings the database's schema up to [`SCHEMA_VERSION`], or refuses a
/// newer one. One transaction: the lock is
/// `pg_advisory_xact_lock`, released by the commit or rollback however
/// this ends, so it can never stay held on a connection the pool reuses;
/// and PostgreSQL's DDL is transactional, so a failed migration leaves
/// the schema as it was.
pub(super) async fn migrate(pool: &Pool, target: &str) -> Result<(), StoreError> {
    let fail = |e| classify(e, target);
    let mut client = pool.get().await.map_err(|e| pool_error(e, target))?;
    let tx = client.transaction().await.map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(fail)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
            version bigint PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(fail)?;
    let found: Option<i64> = tx
        .query_one("SELECT max(version) FROM schema_version", &[])
        .await
        .map_err(fail)?
        .get(0);
    let found = found.map_or(0, |v| u64::try_from(v).unwrap_or(0));
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            target: target.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tx.batch_execute(sql).await.map_err(fail)?;
        let version = i64::try_from(*version).expect("migration versions are small");
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(fail)?;
        tracing::info!(database = target, version, "applied a schema migration");
    }
    tx.commit().await.map_err(fail)
}
