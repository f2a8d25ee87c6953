//! Reads of executions, callbacks and deliveries, by key and by index;
//! their writes are [`Change`]s ([`super::apply`]).

use tokio_postgres::types::ToSql;

use super::json::decode;
use super::{Counters, PgStore, STATES, int};
use crate::model::{CallbackRecord, Delivery, ExecState, Execution, IdempotentStart};
use crate::store::{
    CallbackStore, Change, DeliveryStore, ExecutionFilter, ExecutionStore, StoreError, StoreFuture,
};

/// Executions an [`ExecutionStore::each_execution`] scan reads at a time:
/// the visitor never holds more than one page in memory.
const SCAN_PAGE: i64 = 256;

impl PgStore {
    /// The record (column 0) of the one row `sql` selects by `key`, if any.
    async fn record<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let rows = self.rows(sql, &[&key]).await?;
        rows.first().map(|row| decode(row, 0, key)).transpose()
    }

    /// The executions `filter` selects. The statement is built from the
    /// filters given (a handful of shapes, each cached), so that every one
    /// is a range of an index rather than a scan that checks each row: a
    /// workflow's or a plugin's executions in any state are one range per
    /// state, each ordered and limited, which PostgreSQL merges (as sled's
    /// listing does).
    async fn list(&self, filter: &ExecutionFilter) -> Result<Vec<Execution>, StoreError> {
        let limit = filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        let (lower, upper) = filter.id_bounds();
        let (after, before) = (
            filter.created_after_ms.map(int),
            filter.created_before_ms.map(int),
        );
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        let mut conditions = Vec::new();
        fn add<'p>(
            (params, conditions): (&mut Vec<&'p (dyn ToSql + Sync)>, &mut Vec<String>),
            column: &str,
            op: &str,
            value: &'p (dyn ToSql + Sync),
        ) {
            params.push(value);
            conditions.push(format!("{column} {op} ${}", params.len()));
        }
        if let Some(workflow) = &filter.workflow {
            add((&mut params, &mut conditions), "workflow", "=", workflow);
        }
        if let Some(plugin) = &filter.plugin {
            add((&mut params, &mut conditions), "plugin", "=", plugin);
        }
        if let Some(past) = &filter.past {
            let op = if filter.newest_first { "<" } else { ">" };
            add((&mut params, &mut conditions), "id", op, past);
        }
        if let Some(lower) = &lower {
            add((&mut params, &mut conditions), "id", ">=", lower);
        }
        if let Some(upper) = &upper {
            add((&mut params, &mut conditions), "id", "<", upper);
        }
        if let Some(after) = &after {
            add((&mut params, &mut conditions), "created_ms", ">=", after);
        }
        if let Some(before) = &before {
            add((&mut params, &mut conditions), "created_ms", "<", before);
        }
        let order = if filter.newest_first {
            " ORDER BY id DESC"
        } else {
            " ORDER BY id"
        };
        let limit_sql = match &limit {
            Some(limit) => {
                params.push(limit);
                format!(" LIMIT ${}", params.len())
            }
            None => String::new(),
        };
        let select = |state: Option<&str>| {
            let mut all = conditions.clone();
            all.extend(state.map(|s| format!("state = '{s}'")));
            let mut sql = String::from("SELECT id, record FROM executions");
            if !all.is_empty() {
                sql.push_str(" WHERE ");
                sql.push_str(&all.join(" AND "));
            }
            sql
        };
        let by_name = filter.workflow.is_some() || filter.plugin.is_some();
        let sql = match filter.state {
            Some(state) => format!("{}{order}{limit_sql}", select(Some(state.as_str()))),
            None if by_name => {
                let branches: Vec<String> = STATES
                    .iter()
                    .map(|s| format!("({}{order}{limit_sql})", select(Some(s.as_str()))))
                    .collect();
                format!(
                    "SELECT id, record FROM ({}) AS page{order}{limit_sql}",
                    branches.join(" UNION ALL ")
                )
            }
            None => format!("{}{order}{limit_sql}", select(None)),
        };
        let rows = self.rows(&sql, &params).await?;
        rows.iter()
            .map(|row| decode(row, 1, &row.get::<_, String>(0)))
            .collect()
    }

    /// [`ExecutionStore::each_execution`]: pages of the id index, each
    /// read after the visitor has seen the one before.
    async fn visit(&self, visit: &mut (dyn FnMut(Execution) + Send)) -> Result<(), StoreError> {
        let mut after: Option<String> = None;
        loop {
            let rows = match &after {
                None => {
                    let sql = "SELECT id, record FROM executions ORDER BY id LIMIT $1";
                    self.rows(sql, &[&SCAN_PAGE]).await?
                }
                Some(after) => {
                    let sql =
                        "SELECT id, record FROM executions WHERE id > $1 ORDER BY id LIMIT $2";
                    self.rows(sql, &[after, &SCAN_PAGE]).await?
                }
            };
            let full = rows.len() as i64 == SCAN_PAGE;
            for row in &rows {
                let id: String = row.get(0);
                visit(decode(row, 1, &id)?);
                after = Some(id);
            }
            if !full {
                return Ok(());
            }
        }
    }
}

impl ExecutionStore for PgStore {
    fn execution<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Execution>> {
        Box::pin(self.record("SELECT record FROM executions WHERE id = $1", id))
    }

    fn executions<'a>(&'a self, filter: &'a ExecutionFilter) -> StoreFuture<'a, Vec<Execution>> {
        Box::pin(self.list(filter))
    }

    fn idempotent_start<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<IdempotentStart>> {
        Box::pin(self.record("SELECT record FROM idempotent_starts WHERE key = $1", key))
    }

    fn each_execution<'a>(
        &'a self,
        visit: &'a mut (dyn FnMut(Execution) + Send),
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.visit(visit))
    }

    fn ended<'a>(
        &'a self,
        state: ExecState,
        ended_ms: u64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            if !state.is_terminal() {
                return Ok(Vec::new());
            }
            // The partial index `executions_ended` answers this in order.
            let sql = "SELECT id FROM executions
                       WHERE state = $1 AND updated_ms <= $2
                         AND state IN ('completed', 'failed')
                       ORDER BY updated_ms, id LIMIT $3";
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = self
                .rows(sql, &[&state.as_str(), &int(ended_ms), &limit])
                .await?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }

    fn apply<'a>(&'a self, change: &'a Change) -> StoreFuture<'a, ()> {
        Box::pin(self.apply_change(change))
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        // Every commit of `apply` returned only once the server had it on
        // disk (its `synchronous_commit`, checked at open): nothing is
        // left to flush.
        Counters::bump(&self.counters.flush_requests);
        Box::pin(async { Ok(()) })
    }
}

impl CallbackStore for PgStore {
    fn callback<'a>(&'a self, correlation_id: &'a str) -> StoreFuture<'a, Option<CallbackRecord>> {
        let sql = "SELECT record FROM callbacks WHERE correlation_id = $1";
        Box::pin(self.record(sql, correlation_id))
    }

    fn callbacks_of<'a>(&'a self, execution_id: &'a str) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let sql = "SELECT correlation_id FROM callbacks WHERE execution_id = $1";
            let rows = self.rows(sql, &[&execution_id]).await?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }
}

impl DeliveryStore for PgStore {
    fn delivery<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Delivery>> {
        Box::pin(self.record("SELECT record FROM deliveries WHERE key = $1", key))
    }

    fn deliveries_of<'a>(&'a self, execution_id: &'a str) -> StoreFuture<'a, Vec<Delivery>> {
        Box::pin(async move {
            let sql = "SELECT key, record FROM deliveries WHERE execution_id = $1 ORDER BY seq";
            let rows = self.rows(sql, &[&execution_id]).await?;
            rows.iter()
                .map(|row| decode(row, 1, &row.get::<_, String>(0)))
                .collect()
        })
    }
}
