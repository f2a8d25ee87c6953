//! Records copied in as they are, for `stephost migrate` (a sled data
//! dir's executions moved to PostgreSQL): no compare-and-swap, since the
//! versions come from another store; a record already present is left
//! alone, so a migration cut short can simply be run again. The counts
//! move with the rows, in the same transaction.

use super::json::Json;
use super::{COUNT_SHARDS, PgStore, STATES, TIMER_COUNT, int};
use crate::model::{CallbackRecord, Delivery, Execution, IdempotentStart, Timer};
use crate::store::StoreError;

/// Records to copy in one transaction.
#[derive(Debug, Default)]
pub struct Import {
    /// Executions, at their versions.
    pub executions: Vec<Execution>,
    /// Callback records.
    pub callbacks: Vec<CallbackRecord>,
    /// Result deliveries.
    pub deliveries: Vec<Delivery>,
    /// Timers.
    pub timers: Vec<Timer>,
    /// Records of idempotent starts.
    pub idempotent_starts: Vec<IdempotentStart>,
}

impl PgStore {
    /// Writes `batch` in one transaction; records already present (same
    /// key) are kept. Returns how many executions were new.
    pub async fn import(&self, batch: &Import) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.fail(e))?;
        let mut by_state = [0i64; 4];
        let mut new_timers = 0i64;
        for e in &batch.executions {
            let sql =
                "INSERT INTO executions (id, version, state, workflow, updated_ms, record, owner)
                       VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING";
            let (version, updated) = (int(e.version), int(e.updated_ms));
            let written = tx
                .execute(
                    sql,
                    &[
                        &e.id,
                        &version,
                        &e.state.as_str(),
                        &e.workflow,
                        &updated,
                        &Json::of(e),
                        &e.owner,
                    ],
                )
                .await
                .map_err(|e| self.fail(e))?;
            if written == 1 {
                let i = STATES.iter().position(|s| *s == e.state).unwrap_or(0);
                by_state[i] += 1;
            }
        }
        for c in &batch.callbacks {
            let sql = "INSERT INTO callbacks (correlation_id, execution_id, version, record)
                       VALUES ($1, $2, $3, $4) ON CONFLICT (correlation_id) DO NOTHING";
            tx.execute(
                sql,
                &[
                    &c.correlation_id,
                    &c.execution_id,
                    &int(c.version),
                    &Json::of(c),
                ],
            )
            .await
            .map_err(|e| self.fail(e))?;
        }
        for d in &batch.deliveries {
            let sql = "INSERT INTO deliveries (key, execution_id, seq, version, record)
                       VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO NOTHING";
            tx.execute(
                sql,
                &[
                    &d.key(),
                    &d.execution_id,
                    &int(d.seq),
                    &int(d.version),
                    &Json::of(d),
                ],
            )
            .await
            .map_err(|e| self.fail(e))?;
        }
        for i in &batch.idempotent_starts {
            let sql =
                "INSERT INTO idempotent_starts (key, execution_id, record) VALUES ($1, $2, $3)
                       ON CONFLICT (key) DO NOTHING";
            tx.execute(sql, &[&i.key, &i.execution_id, &Json::of(i)])
                .await
                .map_err(|e| self.fail(e))?;
        }
        for t in &batch.timers {
            let sql = "INSERT INTO timers (key, due_ms, record) VALUES ($1, $2, $3)
                       ON CONFLICT (key) DO NOTHING";
            let written = tx
                .execute(sql, &[&t.key(), &int(t.due_ms), &Json::of(t)])
                .await
                .map_err(|e| self.fail(e))?;
            new_timers += i64::try_from(written).unwrap_or(0);
        }
        let shard = i16::from(rand::random::<u8>() % COUNT_SHARDS);
        let names = STATES.map(crate::model::ExecState::as_str);
        for (name, by) in names
            .into_iter()
            .zip(by_state)
            .chain([(TIMER_COUNT, new_timers)])
        {
            if by != 0 {
                tx.execute(
                    "UPDATE counts SET n = n + $3 WHERE name = $1 AND shard = $2",
                    &[&name, &shard, &by],
                )
                .await
                .map_err(|e| self.fail(e))?;
            }
        }
        tx.commit().await.map_err(|e| self.fail(e))?;
        Ok(by_state.iter().sum::<i64>() as u64)
    }

    /// Sets secret `name` to `value` unless it exists; an existing one of
    /// another value is refused: callback URLs made under either key would
    /// stop working.
    pub async fn import_secret(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let sql = "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
        self.run(sql, &[&name, &value]).await?;
        let row = self
            .row("SELECT value FROM secrets WHERE name = $1", &[&name])
            .await?;
        let stored: Vec<u8> = row.get(0);
        if stored != value {
            return Err(StoreError::Conflict(format!(
                "the database already has its own secret {name:?} (a daemon ran on it): the callback URLs partners hold would stop working; migrate into a new database"
            )));
        }
        Ok(())
    }
}
