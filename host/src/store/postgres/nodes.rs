//! Heartbeats and orphans on PostgreSQL: every node writes its row in
//! `nodes` by the database's clock, so the nodes' own clocks never decide
//! who is dead; the running executions of a node whose heartbeat is older
//! than the lease are read through the `executions_by_state` index.

use super::json::decode;
use super::{PgStore, int};
use crate::model::Execution;
use crate::store::{Chore, NodeStore, StoreError, StoreFuture};

/// Rows of nodes gone this long are deleted by the next heartbeat of any
/// node, so that the table stays the size of the cluster.
const FORGET_AFTER: &str = "1 day";

impl PgStore {
    async fn beat(&self, node: &str) -> Result<(), StoreError> {
        let sql = "INSERT INTO nodes (id, heartbeat_at) VALUES ($1, clock_timestamp())
                   ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at";
        self.run(sql, &[&node]).await?;
        let sql = format!(
            "DELETE FROM nodes WHERE heartbeat_at < clock_timestamp() - interval '{FORGET_AFTER}'"
        );
        self.run(&sql, &[]).await?;
        Ok(())
    }

    async fn orphans(
        &self,
        node: &str,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<Execution>, StoreError> {
        let sql = "SELECT e.id, e.record FROM executions e
                   LEFT JOIN nodes n ON n.id = e.owner
                   WHERE e.state = 'running' AND e.owner IS DISTINCT FROM $1
                     AND (n.id IS NULL
                          OR n.heartbeat_at < clock_timestamp() - $2 * interval '1 millisecond')
                   ORDER BY e.id LIMIT $3";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let lease = int(lease_ms) as f64;
        let rows = self.rows(sql, &[&node, &lease, &limit]).await?;
        rows.iter()
            .map(|row| decode(row, 1, &row.get::<_, String>(0)))
            .collect()
    }
}

impl NodeStore for PgStore {
    fn is_shared(&self) -> bool {
        true
    }

    fn heartbeat<'a>(&'a self, node: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.beat(node))
    }

    fn leave<'a>(&'a self, node: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.resign(node).await;
            self.run("DELETE FROM nodes WHERE id = $1", &[&node])
                .await?;
            // Its executions are free now: the others take them at once.
            self.hint("node left").await;
            Ok(())
        })
    }

    fn lead<'a>(&'a self, chore: Chore, node: &'a str, hold_ms: u64) -> StoreFuture<'a, bool> {
        Box::pin(PgStore::lead(self, chore, node, hold_ms))
    }

    fn hinted(&self) -> crate::store::BoxFuture<'_, ()> {
        Box::pin(PgStore::hinted(self))
    }

    fn orphaned<'a>(
        &'a self,
        node: &'a str,
        lease_ms: u64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Execution>> {
        Box::pin(self.orphans(node, lease_ms, limit))
    }
}
