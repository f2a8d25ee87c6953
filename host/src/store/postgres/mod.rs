//! The store on PostgreSQL: the shared database that lets several daemons
//! serve one set of executions (see the design notes on many daemons).
//! It keeps the contract sled keeps, checked by the same conformance
//! suite: every [`Change`](crate::store::Change) is one transaction that
//! compare-and-swaps the version of every record it writes
//! ([`apply`]), timers are rows by due time, counts are kept by the
//! writes, and secrets are created once for every node.
//!
//! Every operation takes a connection from a pool and awaits the server:
//! no call blocks a thread. Commits are durable when they return (the
//! server's `synchronous_commit`), so [`flush`](crate::store::ExecutionStore::flush)
//! has nothing left to do.

mod apply;
mod components;
mod connect;
mod executions;
mod hints;
mod import;
mod json;
mod leads;
mod migrations;
mod nodes;
mod secrets;
mod stats;
#[cfg(any(test, feature = "test-postgres"))]
pub mod testing;
#[cfg(test)]
mod tests;
mod timers;
mod tokens;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;

pub use self::import::Import;
pub use self::migrations::SCHEMA_VERSION;
use crate::model::ExecState;
use crate::store::StoreError;

/// The PostgreSQL-backed store.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// The database as messages name it: `user@host:port/database`, never
    /// the password.
    target: Arc<str>,
    counters: Arc<Counters>,
    /// How to connect, for the hint listener's connection of its own.
    config: Arc<tokio_postgres::Config>,
    hints: Arc<hints::Hints>,
    leads: Arc<leads::Leads>,
}

/// What [`StatsStore`](crate::store::StatsStore) reports of this
/// process's own writes.
#[derive(Debug, Default)]
struct Counters {
    changes: AtomicU64,
    transactions: AtomicU64,
    commits: AtomicU64,
    flush_requests: AtomicU64,
    quarantined: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Every execution state, in the order the counts are reported.
const STATES: [ExecState; 4] = ExecState::ALL;

/// The `counts` row of the number of timers (no state is named so).
const TIMER_COUNT: &str = "timers";

/// Shards of each count (see the `counts` table): the migration creates
/// rows 0 to 15.
const COUNT_SHARDS: u8 = 16;

/// A `u64` of the model as a `bigint`. Versions and times in milliseconds
/// never come near the limit; should one pass it, it is capped, which
/// keeps its order against every smaller value.
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A `bigint` read back (counts may dip below zero in one shard).
fn uint(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl PgStore {
    /// Connects to the database `url` names
    /// (`postgres://user:password@host:port/database`), and brings its
    /// schema up to date (or refuses a newer one). The database must
    /// exist; its tables are created here.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, None, connect::POOL_SIZE).await
    }

    /// [`PgStore::open`] with a password kept out of the URL (from the
    /// environment or a file), and `pool_size` connections at most.
    pub async fn open_with(
        url: &str,
        password: Option<&str>,
        pool_size: usize,
    ) -> Result<Self, StoreError> {
        let (pool, target, config) = connect::pool(url, password, pool_size)?;
        migrations::migrate(&pool, &target).await?;
        let store = Self {
            pool,
            target: target.into(),
            counters: Arc::default(),
            config: Arc::new(config),
            hints: Arc::default(),
            leads: Arc::default(),
        };
        store.warn_if_not_durable().await?;
        Ok(store)
    }

    /// Logs a warning when the server would acknowledge a commit before
    /// it is on disk: a transition acknowledged to a partner could then be
    /// lost in a crash of the database.
    async fn warn_if_not_durable(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        for setting in ["fsync", "synchronous_commit"] {
            let row = client
                .query_one("SELECT current_setting($1)", &[&setting])
                .await
                .map_err(|e| self.fail(e))?;
            let value: String = row.get(0);
            if value == "off" {
                tracing::warn!(
                    database = %self.target,
                    setting,
                    "PostgreSQL runs with {setting} = off: a transition acknowledged to a partner may be lost if the database crashes"
                );
            }
        }
        Ok(())
    }

    /// Rows of a cached statement on a pooled connection.
    pub(super) async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(|e| self.fail(e))?;
        client
            .query(&statement, params)
            .await
            .map_err(|e| self.fail(e))
    }

    /// The rows a cached statement touched, on a pooled connection (in a
    /// transaction of its own).
    pub(super) async fn run(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(|e| self.fail(e))?;
        client
            .execute(&statement, params)
            .await
            .map_err(|e| self.fail(e))
    }

    /// The one row of a cached statement, on a pooled connection.
    pub(super) async fn row(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(|e| self.fail(e))?;
        client
            .query_one(&statement, params)
            .await
            .map_err(|e| self.fail(e))
    }

    /// A connection from the pool.
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| connect::pool_error(e, &self.target))
    }

    /// A failure of the client library, as the variant it means.
    fn fail(&self, e: tokio_postgres::Error) -> StoreError {
        connect::classify(e, &self.target)
    }
}
