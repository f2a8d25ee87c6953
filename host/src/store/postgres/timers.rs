//! Timers are rows, read by due time through the `timers_by_due` index.
//! The timer loop claims them ([`TimerStore::claim_due_timers`]): due by
//! the database's clock, not yet claimed by another node (or claimed by one
//! that did not fire them in time), locked with `SKIP LOCKED` so that
//! nodes claiming at once take different timers instead of queueing on the
//! same rows. A record that does not decode is moved aside to
//! `timers_quarantine` rather than stopping every timer due after it.

use super::json::decode;
use super::{Counters, PgStore, TIMER_COUNT, int, uint};
use crate::model::Timer;
use crate::store::{StoreError, StoreFuture, TimerStore};

impl PgStore {
    async fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<Timer>, StoreError> {
        let sql = "SELECT key, record FROM timers WHERE due_ms <= $1
                   ORDER BY due_ms, key LIMIT $2";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.rows(sql, &[&int(now_ms), &limit]).await?;
        self.decode_timers(&rows).await
    }

    async fn claim(&self, limit: usize, lease_ms: u64) -> Result<Vec<Timer>, StoreError> {
        let sql = "WITH due AS (
                       SELECT key FROM timers
                       WHERE due_ms <= (extract(epoch FROM clock_timestamp()) * 1000)::bigint
                         AND (claimed_until IS NULL OR claimed_until < clock_timestamp())
                       ORDER BY due_ms, key LIMIT $1
                       FOR UPDATE SKIP LOCKED)
                   UPDATE timers t
                   SET claimed_until = clock_timestamp() + $2 * interval '1 millisecond'
                   FROM due WHERE t.key = due.key
                   RETURNING t.key, t.record, t.due_ms";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let lease = int(lease_ms) as f64;
        let mut rows = self.rows(sql, &[&limit, &lease]).await?;
        // RETURNING keeps no order.
        rows.sort_by(|a, b| {
            (a.get::<_, i64>(2), a.get::<_, Vec<u8>>(0))
                .cmp(&(b.get::<_, i64>(2), b.get::<_, Vec<u8>>(0)))
        });
        self.decode_timers(&rows).await
    }

    async fn decode_timers(&self, rows: &[tokio_postgres::Row]) -> Result<Vec<Timer>, StoreError> {
        let mut due = Vec::with_capacity(rows.len());
        for row in rows {
            let key: Vec<u8> = row.get(0);
            match decode(row, 1, &String::from_utf8_lossy(&key)) {
                Ok(timer) => due.push(timer),
                Err(e @ StoreError::Corrupt { .. }) => self.quarantine(&key, &e).await?,
                Err(e) => return Err(e),
            }
        }
        Ok(due)
    }

    /// Moves the timer `key` to `timers_quarantine`, and out of the count,
    /// in one transaction.
    async fn quarantine(&self, key: &[u8], why: &StoreError) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.fail(e))?;
        let moved = tx
            .execute(
                "WITH moved AS (DELETE FROM timers WHERE key = $1 RETURNING key, record)
                 INSERT INTO timers_quarantine (key, record) SELECT key, record FROM moved
                 ON CONFLICT (key) DO UPDATE SET record = excluded.record, moved_at = now()",
                &[&key],
            )
            .await
            .map_err(|e| self.fail(e))?;
        if moved > 0 {
            let shard = i16::from(rand::random::<u8>() % super::COUNT_SHARDS);
            tx.execute(
                "UPDATE counts SET n = n - 1 WHERE name = $1 AND shard = $2",
                &[&TIMER_COUNT, &shard],
            )
            .await
            .map_err(|e| self.fail(e))?;
        }
        tx.commit().await.map_err(|e| self.fail(e))?;
        if moved > 0 {
            Counters::bump(&self.counters.quarantined);
            tracing::error!(
                key = %String::from_utf8_lossy(key),
                error = %why,
                "a timer record could not be decoded; moved it to the timers_quarantine table and went on with the others"
            );
        }
        Ok(())
    }

    async fn next_due(&self) -> Result<Option<u64>, StoreError> {
        // The key starts with the exact due time (big-endian), even for a
        // timer past the `due_ms` column's cap or one that does not decode.
        // Timers another node has claimed are its to fire: counting them
        // would wake this node's loop for nothing, again and again.
        let sql = "SELECT key FROM timers
                   WHERE claimed_until IS NULL OR claimed_until < clock_timestamp()
                   ORDER BY due_ms, key LIMIT 1";
        let rows = self.rows(sql, &[]).await?;
        Ok(rows.first().and_then(|row| {
            let key: Vec<u8> = row.get(0);
            let due = <[u8; 8]>::try_from(key.get(..8)?).ok()?;
            Some(u64::from_be_bytes(due))
        }))
    }

    async fn backlog(&self, now_ms: u64) -> Result<(u64, u64), StoreError> {
        // The total is kept by the writes; only the due timers (the timer
        // loop's backlog, normally none) are counted from the index.
        let sql = "SELECT (SELECT coalesce(sum(n), 0)::bigint FROM counts WHERE name = $1),
                          (SELECT count(*) FROM timers WHERE due_ms <= $2)";
        let row = self.row(sql, &[&TIMER_COUNT, &int(now_ms)]).await?;
        Ok((uint(row.get(0)), uint(row.get(1))))
    }
}

impl TimerStore for PgStore {
    fn due_timers(&self, now_ms: u64, limit: usize) -> StoreFuture<'_, Vec<Timer>> {
        Box::pin(self.due(now_ms, limit))
    }

    fn claim_due_timers(
        &self,
        _now_ms: u64,
        limit: usize,
        lease_ms: u64,
    ) -> StoreFuture<'_, Vec<Timer>> {
        Box::pin(self.claim(limit, lease_ms))
    }

    fn next_timer_due(&self) -> StoreFuture<'_, Option<u64>> {
        Box::pin(self.next_due())
    }

    fn timer_backlog(&self, now_ms: u64) -> StoreFuture<'_, (u64, u64)> {
        Box::pin(self.backlog(now_ms))
    }
}
