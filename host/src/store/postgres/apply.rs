//! [`ExecutionStore::apply`](crate::store::ExecutionStore::apply) as one
//! transaction of compare-and-swaps, the contract sled keeps: a record at
//! version 1 is inserted only if absent (`ON CONFLICT DO NOTHING`), any
//! later version replaces only the version before it (`WHERE version + 1
//! = $n`: written so, not `version = $n - 1`, because PostgreSQL would
//! type a parameter in `$n - 1` as an `integer`); a statement that touches no row means another writer moved
//! on, and the whole transaction is rolled back and refused as
//! [`StoreError::Conflict`]. READ COMMITTED is enough: an `UPDATE` that
//! waited for a concurrent writer re-checks its `WHERE` against the
//! committed row, so of two writers of one version exactly one matches.
//!
//! The parts of a change are written in sled's order (execution,
//! callbacks, removal, timers, deliveries), each kind sorted by key, and
//! the counts last in a fixed order: transactions then take their row
//! locks in the same order, and rarely deadlock. When PostgreSQL still
//! breaks a deadlock by failing one transaction, that transaction is run
//! again: it was refused by no record.

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::json::Json;
use super::{COUNT_SHARDS, Counters, PgStore, STATES, TIMER_COUNT, connect, int};
use crate::model::ExecState;
use crate::store::{Change, StoreError};

/// How often a change that lost a deadlock is tried, in all.
const ATTEMPTS: u32 = 5;

/// Why a change was not written: refused by a record, or failed.
enum Failed {
    Conflict(String),
    Db(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for Failed {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e)
    }
}

/// How much a change moves each count: the four states, then timers (the
/// order the rows are locked in).
#[derive(Default)]
struct Deltas([i64; 5]);

impl Deltas {
    fn state(&mut self, state: ExecState, by: i64) {
        let i = STATES.iter().position(|s| *s == state).unwrap_or(0);
        self.0[i] += by;
    }

    fn timers(&mut self, by: i64) {
        self.0[4] += by;
    }

    /// (count name, delta) of the counts that move, in lock order.
    fn moved(&self) -> impl Iterator<Item = (&'static str, i64)> + '_ {
        let names = STATES.map(ExecState::as_str);
        names
            .into_iter()
            .chain([TIMER_COUNT])
            .zip(self.0)
            .filter(|(_, by)| *by != 0)
    }
}

impl PgStore {
    /// [`ExecutionStore::apply`](crate::store::ExecutionStore::apply).
    pub(super) async fn apply_change(&self, change: &Change) -> Result<(), StoreError> {
        Counters::bump(&self.counters.changes);
        let mut attempt = 1;
        loop {
            let mut client = self.client().await?;
            Counters::bump(&self.counters.transactions);
            let tx = client.transaction().await.map_err(|e| self.fail(e))?;
            match write(&tx, change).await {
                Ok(()) => {
                    tx.commit().await.map_err(|e| self.fail(e))?;
                    Counters::bump(&self.counters.commits);
                    return Ok(());
                }
                Err(Failed::Conflict(why)) => {
                    // Rolled back before the connection goes back to the
                    // pool. Should the rollback fail, the connection is
                    // broken and the server discards the transaction
                    // anyway: the refusal is still the answer.
                    if let Err(e) = tx.rollback().await {
                        tracing::debug!(error = %e, "rolling back a refused change failed");
                    }
                    return Err(StoreError::Conflict(why));
                }
                Err(Failed::Db(e)) if connect::is_transient(&e) && attempt < ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "a change ran into another transaction; trying it again");
                }
                Err(Failed::Db(e)) => return Err(self.fail(e)),
            }
        }
    }
}

/// Writes every part of `change` in `tx`, or says why not.
async fn write(tx: &Transaction<'_>, change: &Change) -> Result<(), Failed> {
    let shard = i16::from(rand::random::<u8>() % COUNT_SHARDS);
    let mut deltas = Deltas::default();
    if let Some(e) = &change.execution {
        write_execution(tx, e, &mut deltas).await?;
    }
    if let Some(i) = &change.idempotent_start {
        let sql = "INSERT INTO idempotent_starts (key, execution_id, record) VALUES ($1, $2, $3)
                   ON CONFLICT (key) DO NOTHING";
        if run(tx, sql, &[&i.key, &i.execution_id, &Json::of(i)]).await? == 0 {
            return Err(Failed::Conflict(format!(
                "idempotency key {} is already stored",
                i.key
            )));
        }
    }
    let mut callbacks: Vec<_> = change.callbacks.iter().collect();
    callbacks.sort_by(|a, b| a.correlation_id.cmp(&b.correlation_id));
    for c in callbacks {
        let (id, version, record) = (&c.correlation_id, int(c.version), Json::of(c));
        let written = if c.version == 1 {
            let sql = "INSERT INTO callbacks (correlation_id, execution_id, version, record)
                       VALUES ($1, $2, $3, $4) ON CONFLICT (correlation_id) DO NOTHING";
            run(tx, sql, &[id, &c.execution_id, &version, &record]).await?
        } else {
            let sql = "UPDATE callbacks SET execution_id = $2, version = $3, record = $4
                       WHERE correlation_id = $1 AND version + 1 = $3";
            run(tx, sql, &[id, &c.execution_id, &version, &record]).await?
        };
        if written == 0 {
            return Err(refused("callback", id, c.version));
        }
    }
    if let Some(r) = &change.remove {
        let sql = "DELETE FROM executions WHERE id = $1 AND version = $2 RETURNING state";
        let removed = query_opt(tx, sql, &[&r.id, &int(r.version)]).await?;
        let Some(row) = removed else {
            return Err(Failed::Conflict(format!(
                "execution {} is no longer at version {} (moved on or removed), which its removal expects",
                r.id, r.version
            )));
        };
        let state: String = row.get(0);
        deltas.state(parse_state(&state), -1);
        let sql = "DELETE FROM callbacks WHERE correlation_id = ANY($1)";
        run(tx, sql, &[&r.callbacks]).await?;
        let sql = "DELETE FROM deliveries WHERE key = ANY($1)";
        run(tx, sql, &[&r.deliveries]).await?;
        if let Some(key) = &r.idempotency_key {
            let sql = "DELETE FROM idempotent_starts WHERE key = $1";
            run(tx, sql, &[key]).await?;
        }
    }
    if !change.remove_timers.is_empty() {
        let keys: Vec<Vec<u8>> = change.remove_timers.iter().map(|t| t.key()).collect();
        let sql = "DELETE FROM timers WHERE key = ANY($1)";
        let removed = run(tx, sql, &[&keys]).await?;
        deltas.timers(-i64::try_from(removed).unwrap_or(i64::MAX));
    }
    let mut timers: Vec<_> = change.add_timers.iter().map(|t| (t.key(), t)).collect();
    timers.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, t) in timers {
        let (due, record) = (int(t.due_ms), Json::of(t));
        let sql = "INSERT INTO timers (key, due_ms, record) VALUES ($1, $2, $3)
                   ON CONFLICT (key) DO NOTHING";
        if run(tx, sql, &[&key, &due, &record]).await? == 1 {
            deltas.timers(1);
        } else {
            // The same key is the same wait: written again, not counted
            // again, and free to be claimed anew.
            let sql = "UPDATE timers SET due_ms = $2, record = $3, claimed_until = NULL
                       WHERE key = $1";
            run(tx, sql, &[&key, &due, &record]).await?;
        }
    }
    let mut deliveries: Vec<_> = change.deliveries.iter().map(|d| (d.key(), d)).collect();
    deliveries.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, d) in deliveries {
        let (version, seq, record) = (int(d.version), int(d.seq), Json::of(d));
        let params: [&(dyn ToSql + Sync); 5] = [&key, &d.execution_id, &seq, &version, &record];
        let written = if d.version == 1 {
            let sql = "INSERT INTO deliveries (key, execution_id, seq, version, record)
                       VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO NOTHING";
            run(tx, sql, &params).await?
        } else {
            let sql = "UPDATE deliveries SET execution_id = $2, seq = $3, version = $4, record = $5
                       WHERE key = $1 AND version + 1 = $4";
            run(tx, sql, &params).await?
        };
        if written == 0 {
            return Err(refused("delivery", &key, d.version));
        }
    }
    for (name, by) in deltas.moved() {
        let sql = "UPDATE counts SET n = n + $3 WHERE name = $1 AND shard = $2";
        run(tx, sql, &[&name, &shard, &by]).await?;
    }
    Ok(())
}

/// Writes the new version of an execution, and moves the counts of its
/// old and new state.
async fn write_execution(
    tx: &Transaction<'_>,
    e: &crate::model::Execution,
    deltas: &mut Deltas,
) -> Result<(), Failed> {
    let (version, updated, record) = (int(e.version), int(e.updated_ms), Json::of(e));
    let state = e.state.as_str();
    let params: [&(dyn ToSql + Sync); 7] = [
        &e.id,
        &version,
        &state,
        &e.workflow,
        &updated,
        &record,
        &e.owner,
    ];
    if e.version == 1 {
        let sql = "INSERT INTO executions (id, version, state, workflow, updated_ms, record, owner)
                   VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING";
        if run(tx, sql, &params).await? == 0 {
            return Err(refused("execution", &e.id, e.version));
        }
        deltas.state(e.state, 1);
        return Ok(());
    }
    // The old state comes from a self-join: a row is returned only if the
    // version still matched once the row was locked, and then no writer
    // came in between, so the joined row is the replaced one.
    let sql = "UPDATE executions AS e
               SET version = $2, state = $3, workflow = $4, updated_ms = $5, record = $6,
                   owner = $7
               FROM executions AS old
               WHERE e.id = $1 AND e.version + 1 = $2 AND old.id = e.id
               RETURNING old.state";
    let Some(row) = query_opt(tx, sql, &params).await? else {
        return Err(refused("execution", &e.id, e.version));
    };
    let old = parse_state(&row.get::<_, String>(0));
    if old != e.state {
        deltas.state(old, -1);
        deltas.state(e.state, 1);
    }
    Ok(())
}

/// The refusal of a record whose stored version is not `version - 1`.
fn refused(kind: &str, key: &str, version: u64) -> Failed {
    Failed::Conflict(if version == 1 {
        format!("{kind} {key} already exists, change expects a new one")
    } else {
        format!(
            "{kind} {key} is no longer at version {} (moved on or removed), change expects it",
            version - 1
        )
    })
}

/// A state as the `state` column holds it. Only this module writes the
/// column, from [`ExecState::as_str`].
fn parse_state(name: &str) -> ExecState {
    STATES
        .into_iter()
        .find(|s| s.as_str() == name)
        .unwrap_or(ExecState::Running)
}

/// Runs a prepared (and cached) statement; the rows it touched.
async fn run(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.execute(&statement, params).await
}

/// Runs a prepared (and cached) statement that returns a row or none.
async fn query_opt(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.query_opt(&statement, params).await
}
