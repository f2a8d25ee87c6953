//! Counts of executions by state, summed over the shards the writes keep
//! (no scan of the executions), and this process's write counters.

use std::sync::atomic::Ordering;

use super::{PgStore, STATES, uint};
use crate::model::ExecState;
use crate::store::{StatsStore, StoreFuture, WriteStats};

impl StatsStore for PgStore {
    fn count_executions_by_state(&self) -> StoreFuture<'_, Vec<(ExecState, u64)>> {
        Box::pin(async move {
            let sql = "SELECT name, sum(n)::bigint FROM counts GROUP BY name";
            let rows = self.rows(sql, &[]).await?;
            let count = |state: ExecState| {
                rows.iter()
                    .find(|row| row.get::<_, &str>(0) == state.as_str())
                    .map_or(0, |row| uint(row.get(1)))
            };
            Ok(STATES.into_iter().map(|s| (s, count(s))).collect())
        })
    }

    fn count_executions_by_workflow<'a>(
        &'a self,
        workflow: Option<&'a str>,
    ) -> StoreFuture<'a, Vec<(String, ExecState, u64)>> {
        Box::pin(async move {
            // Kept by a trigger on the executions table (migration 2).
            let sql = "SELECT workflow, state, sum(n)::bigint FROM workflow_counts
                       WHERE $1::text IS NULL OR workflow = $1
                       GROUP BY workflow, state HAVING sum(n) > 0";
            let rows = self.rows(sql, &[&workflow]).await?;
            let mut counts: Vec<_> = rows
                .iter()
                .filter_map(|row| {
                    let state = row.get::<_, &str>(1);
                    let state = STATES.into_iter().find(|s| s.as_str() == state)?;
                    Some((row.get(0), state, uint(row.get(2))))
                })
                .collect();
            counts.sort();
            Ok(counts)
        })
    }

    fn quarantined_timers(&self) -> u64 {
        self.counters.quarantined.load(Ordering::Relaxed)
    }

    fn write_stats(&self) -> WriteStats {
        let c = &self.counters;
        WriteStats {
            changes: c.changes.load(Ordering::Relaxed),
            transactions: c.transactions.load(Ordering::Relaxed),
            flush_requests: c.flush_requests.load(Ordering::Relaxed),
            // Each commit waited for the server's WAL flush; `flush` itself
            // flushes nothing. The server may share one disk flush among
            // concurrent commits, which this process cannot see.
            disk_flushes: c.commits.load(Ordering::Relaxed),
        }
    }
}
