//! Group apply: concurrent [`Change`]s share one batch write, each still
//! checked (and refused) on its own, because an atomic write costs far more
//! than the records it writes.

use std::sync::Mutex;

use super::intent::{Staged, StagedTree, TreeId};
use super::listing::{Listed, Stored, workflow_count_key};
use super::{
    SledStore, TIMER_COUNT_KEY, callback_index_key, count_key, count_value, decode, encode,
    ended_key, idempotency_key,
};
use crate::model::ExecState;
use crate::store::{Change, StoreError};

/// The queue of [`GroupApply`], behind a lock that ignores poisoning (a
/// panic while holding it leaves the queue consistent).
#[derive(Default)]
pub(super) struct Applier(Mutex<GroupApply>);

impl Applier {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, GroupApply> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A change ready for the batch: its records already encoded
/// by the caller, so the one applying a batch only checks and writes.
struct Prepared {
    execution: Option<PreparedExecution>,
    /// Key, version, execution id and encoding of each callback record.
    callbacks: Vec<(String, u64, String, Vec<u8>)>,
    add_timers: Vec<(Vec<u8>, Vec<u8>)>,
    remove_timers: Vec<Vec<u8>>,
    /// Key, version and encoding of each delivery record.
    deliveries: Vec<(String, u64, Vec<u8>)>,
    remove: Option<crate::store::Removal>,
    /// Key and encoding of an idempotent start's record.
    idempotent_start: Option<(Vec<u8>, Vec<u8>)>,
}

/// A new execution record, and what its indexes need of it.
struct PreparedExecution {
    id: String,
    version: u64,
    state: ExecState,
    updated_ms: u64,
    listed: Listed,
    bytes: Vec<u8>,
}

impl Prepared {
    fn new(change: &Change) -> Self {
        Self {
            execution: change.execution.as_ref().map(|e| PreparedExecution {
                id: e.id.clone(),
                version: e.version,
                state: e.state,
                updated_ms: e.updated_ms,
                listed: Listed::of(e),
                bytes: encode(e),
            }),
            callbacks: change
                .callbacks
                .iter()
                .map(|c| {
                    let owner = c.execution_id.clone();
                    (c.correlation_id.clone(), c.version, owner, encode(c))
                })
                .collect(),
            add_timers: change
                .add_timers
                .iter()
                .map(|t| (t.key().to_vec(), encode(t)))
                .collect(),
            remove_timers: change
                .remove_timers
                .iter()
                .map(|t| t.key().to_vec())
                .collect(),
            deliveries: change
                .deliveries
                .iter()
                .map(|d| (d.key(), d.version, encode(d)))
                .collect(),
            remove: change.remove.clone(),
            idempotent_start: change
                .idempotent_start
                .as_ref()
                .map(|i| (idempotency_key(&i.key), encode(i))),
        }
    }
}

/// A sled error while reading for the batch (the outer layer), or this
/// change's own refusal (the inner one): a conflict or a corrupt record
/// refuses one change of a batch, not the batch.
type Checked<T> = Result<Result<T, StoreError>, sled::Error>;

impl Stored {
    /// Its key in the index of ended executions, if it has ended.
    fn ended_key(&self, id: &str) -> Option<Vec<u8>> {
        ended_key(self.state, self.updated_ms, id)
    }
}

/// The stored execution `key`, if any.
fn stored_execution(tree: &StagedTree, key: &str) -> Checked<Option<Stored>> {
    Ok(match tree.get(key.as_bytes())? {
        None => Ok(None),
        Some(bytes) => decode::<Stored>(key.as_bytes(), &bytes).map(Some),
    })
}

/// Checks that the execution `key` is at `version - 1` (absent for 1);
/// tells what is stored (`None` when it is new), for the indexes.
fn check_execution_version(tree: &StagedTree, key: &str, version: u64) -> Checked<Option<Stored>> {
    let current = match stored_execution(tree, key)? {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let current_version = current.as_ref().map_or(0, |c| c.version);
    if current_version + 1 != version {
        return Ok(Err(StoreError::Conflict(format!(
            "execution {key} is at version {current_version}, change expects {}",
            version.saturating_sub(1)
        ))));
    }
    Ok(Ok(current))
}

/// Checks that the execution a removal names is still at the version it
/// was decided on.
fn check_removal(tree: &StagedTree, r: &crate::store::Removal) -> Checked<Stored> {
    match stored_execution(tree, &r.id)? {
        Ok(Some(stored)) if stored.version == r.version => Ok(Ok(stored)),
        Ok(stored) => Ok(Err(StoreError::Conflict(format!(
            "execution {} is at version {}, its removal expects {}",
            r.id,
            stored.map_or(0, |s| s.version),
            r.version
        )))),
        Err(e) => Ok(Err(e)),
    }
}

/// Checks that `key` holds version `new_version - 1` (or nothing, for 1).
fn check_version(tree: &StagedTree, kind: &str, key: &str, new_version: u64) -> Checked<()> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: u64,
    }
    let current_version = match tree.get(key.as_bytes())? {
        None => 0,
        Some(bytes) => match decode::<Versioned>(key.as_bytes(), &bytes) {
            Ok(v) => v.version,
            Err(e) => return Ok(Err(e)),
        },
    };
    if current_version + 1 != new_version {
        return Ok(Err(StoreError::Conflict(format!(
            "{kind} {key} is at version {current_version}, change expects {}",
            new_version.saturating_sub(1)
        ))));
    }
    Ok(Ok(()))
}

/// The trees a change writes, staged for the batch's write.
struct Txn<'s, 'a> {
    executions: StagedTree<'s, 'a>,
    callbacks: StagedTree<'s, 'a>,
    timers: StagedTree<'s, 'a>,
    deliveries: StagedTree<'s, 'a>,
    counts: StagedTree<'s, 'a>,
    indexes: StagedTree<'s, 'a>,
}

impl Txn<'_, '_> {
    /// Checks every version a change expects before writing any of it, so
    /// a refused change leaves nothing behind. Changes earlier in the same
    /// batch are seen (the staged batch reads its own writes). Tells how
    /// many timers the change added net: a removed timer that was never
    /// there, or one added twice, moves nothing.
    fn apply(&self, p: &Prepared) -> Checked<i64> {
        let mut before = None;
        if let Some(e) = &p.execution {
            match check_execution_version(&self.executions, &e.id, e.version)? {
                Ok(stored) => before = stored,
                Err(e) => return Ok(Err(e)),
            }
        }
        let mut removed = None;
        if let Some(r) = &p.remove {
            match check_removal(&self.executions, r)? {
                Ok(stored) => removed = Some((r, stored)),
                Err(e) => return Ok(Err(e)),
            }
        }
        for (key, version, _, _) in &p.callbacks {
            if let Err(e) = check_version(&self.callbacks, "callback", key, *version)? {
                return Ok(Err(e));
            }
        }
        for (key, version, _) in &p.deliveries {
            if let Err(e) = check_version(&self.deliveries, "delivery", key, *version)? {
                return Ok(Err(e));
            }
        }
        if let Some((key, _)) = &p.idempotent_start
            && self.indexes.get(key)?.is_some()
        {
            return Ok(Err(StoreError::Conflict(format!(
                "idempotency key {} is already stored",
                String::from_utf8_lossy(&key[1..])
            ))));
        }
        // One batch is applied at a time, so these counters never
        // conflict.
        let bump = |state: ExecState, by: i64| {
            let key = count_key(state);
            let now = count_value(self.counts.get(key)?.as_deref()) + by;
            self.counts.insert(key, &now.to_be_bytes());
            Ok::<_, sled::Error>(())
        };
        // A workflow's counter that falls to zero goes, so that workflows
        // long gone leave nothing to read.
        let bump_workflow = |workflow: &str, state: ExecState, by: i64| {
            let key = workflow_count_key(workflow, state);
            let now = count_value(self.counts.get(&key)?.as_deref()) + by;
            if now == 0 {
                self.counts.remove(key);
            } else {
                self.counts.insert(key, &now.to_be_bytes());
            }
            Ok::<_, sled::Error>(())
        };
        if let Some(e) = &p.execution {
            self.executions.insert(e.id.as_bytes(), e.bytes.as_slice());
            let old_state = before.as_ref().map(|b| b.state);
            if old_state != Some(e.state) {
                bump(e.state, 1)?;
                bump_workflow(&e.listed.workflow, e.state, 1)?;
                if let Some(old) = &before {
                    bump(old.state, -1)?;
                    bump_workflow(&old.workflow, old.state, -1)?;
                }
            }
            if let Some(key) = before.as_ref().and_then(|b| b.ended_key(&e.id)) {
                self.indexes.remove(key);
            }
            // Only the entries that move: most transitions keep the
            // workflow, and many the state and the plugin.
            let old = before.as_ref().map(|b| b.listed().keys(&e.id));
            let new = e.listed.keys(&e.id);
            for key in old.iter().flatten() {
                if !new.contains(key) {
                    self.indexes.remove(key.as_slice());
                }
            }
            for key in new {
                if !old.as_ref().is_some_and(|o| o.contains(&key)) {
                    self.indexes.insert(key, &[]);
                }
            }
            if let Some(key) = ended_key(e.state, e.updated_ms, &e.id) {
                self.indexes.insert(key, &[]);
            }
        }
        if let Some((key, bytes)) = &p.idempotent_start {
            self.indexes.insert(key.as_slice(), bytes.as_slice());
        }
        for (key, version, owner, bytes) in &p.callbacks {
            self.callbacks.insert(key.as_bytes(), bytes.as_slice());
            if *version == 1 {
                self.indexes.insert(callback_index_key(owner, key), &[]);
            }
        }
        if let Some((r, stored)) = removed {
            self.executions.remove(r.id.as_bytes());
            bump(stored.state, -1)?;
            bump_workflow(&stored.workflow, stored.state, -1)?;
            for key in stored.listed().keys(&r.id) {
                self.indexes.remove(key);
            }
            if let Some(key) = stored.ended_key(&r.id) {
                self.indexes.remove(key);
            }
            for cid in &r.callbacks {
                self.callbacks.remove(cid.as_bytes());
                self.indexes.remove(callback_index_key(&r.id, cid));
            }
            for key in &r.deliveries {
                self.deliveries.remove(key.as_bytes());
            }
            if let Some(key) = &r.idempotency_key {
                self.indexes.remove(idempotency_key(key));
            }
        }
        let mut timers = 0;
        for key in &p.remove_timers {
            if self.timers.take(key.as_slice())?.is_some() {
                timers -= 1;
            }
        }
        for (key, bytes) in &p.add_timers {
            if self
                .timers
                .replace(key.as_slice(), bytes.as_slice())?
                .is_none()
            {
                timers += 1;
            }
        }
        for (key, _, bytes) in &p.deliveries {
            self.deliveries.insert(key.as_bytes(), bytes.as_slice());
        }
        Ok(Ok(timers))
    }

    /// Moves the timer count by `by`, in the batch: once per batch, not per
    /// change, as it is one more record to write.
    fn count_timers(&self, by: i64) -> Result<(), sled::Error> {
        if by != 0 {
            let now = count_value(self.counts.get(TIMER_COUNT_KEY)?.as_deref()) + by;
            self.counts.insert(TIMER_COUNT_KEY, &now.to_be_bytes());
        }
        Ok(())
    }
}

impl SledStore {
    /// Applies a batch of changes in one atomic write (see [`super::intent`]),
    /// each checked on its own: one refused change does not refuse the
    /// others.
    fn apply_batch(&self, batch: &[Prepared]) -> Vec<Result<(), StoreError>> {
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        let staged = Staged::new(self);
        let txn = Txn {
            executions: staged.tree(TreeId::Executions),
            callbacks: staged.tree(TreeId::Callbacks),
            timers: staged.tree(TreeId::Timers),
            deliveries: staged.tree(TreeId::Deliveries),
            counts: staged.tree(TreeId::Counts),
            indexes: staged.tree(TreeId::Indexes),
        };
        let checked = (|| {
            let mut outcomes = Vec::with_capacity(batch.len());
            let mut timers = 0;
            for p in batch {
                let outcome = txn.apply(p)?;
                if let Ok(added) = &outcome {
                    timers += added;
                }
                outcomes.push(outcome.map(|_| ()));
            }
            txn.count_timers(timers)?;
            Ok::<_, sled::Error>(outcomes)
        })();
        let written = checked
            .map_err(StoreError::Sled)
            .and_then(|outcomes| staged.write(&mut gate).map(|()| outcomes));
        match written {
            Ok(outcomes) => outcomes,
            // The database itself failed: every change of the batch hears
            // it (sled's errors clone).
            Err(e) => batch
                .iter()
                .map(|_| {
                    Err(match &e {
                        StoreError::Sled(e) => StoreError::Sled(e.clone()),
                        _ => StoreError::Halted,
                    })
                })
                .collect(),
        }
    }

    /// Group apply: see [`GroupApply`].
    pub(super) async fn apply_grouped(&self, change: &Change) -> Result<(), StoreError> {
        let prepared = Prepared::new(change);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let lead = {
            let mut q = self.applier.lock();
            q.queue.push((prepared, tx));
            !std::mem::replace(&mut q.leading, true)
        };
        if lead {
            let leader = ApplyLeader { store: self };
            // Let the other ready tasks of this thread reach their writes
            // first: under load they join this batch instead of each
            // paying for a batch of their own. Yield again while the
            // queue keeps growing (a few times at most).
            let mut queued = 1;
            for _ in 0..MAX_GATHER_YIELDS {
                tokio::task::yield_now().await;
                let now = self.applier.lock().queue.len();
                if now == queued {
                    break;
                }
                queued = now;
            }
            drop(leader);
        }
        rx.await
            .unwrap_or_else(|_| Err(StoreError::Abandoned("the write was abandoned")))
    }
}

/// How often a group-apply leader yields, at most, while its queue grows.
const MAX_GATHER_YIELDS: usize = 4;

/// Group apply: concurrent
/// [`ExecutionStore::apply`](crate::store::ExecutionStore::apply) callers
/// share one batch write.
///
/// A batch costs more than its records: its intent, its removal and the
/// lock that hides it from readers (see [`super::intent`]; before it, a
/// sled transaction, which sealed and wrote back sled's IO buffer twice).
/// So callers queue their changes
/// (already encoded); the first of them leads, lets the other ready tasks
/// queue theirs, then applies the whole queue in one batch (each
/// change checked and refused on its own) and hands every caller its
/// result, until the queue is empty. Alone, a caller is its own leader.
#[derive(Default)]
pub(super) struct GroupApply {
    queue: Vec<(
        Prepared,
        tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    )>,
    leading: bool,
    /// Changes and batches (`transactions`, the name of the figure) so far, for
    /// [`StatsStore::write_stats`](crate::store::StatsStore::write_stats).
    pub(super) changes: u64,
    pub(super) transactions: u64,
}

/// The leader of a group apply: it applies the queue when dropped, so even
/// a leader whose task is cancelled while yielding leaves no queued caller
/// waiting for it.
struct ApplyLeader<'a> {
    store: &'a SledStore,
}

impl ApplyLeader<'_> {
    fn lead(&mut self) {
        loop {
            let batch = {
                let mut q = self.store.applier.lock();
                if q.queue.is_empty() {
                    q.leading = false;
                    return;
                }
                q.changes += q.queue.len() as u64;
                q.transactions += 1;
                std::mem::take(&mut q.queue)
            };
            let (changes, senders): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            // Should sled panic, the next caller must be able to lead (this
            // batch's callers hear "abandoned" from their dropped senders).
            let unwinding = UnwindReset(&self.store.applier);
            let outcomes = self.store.apply_batch(&changes);
            std::mem::forget(unwinding);
            for (tx, outcome) in senders.into_iter().zip(outcomes) {
                let _ = tx.send(outcome);
            }
        }
    }
}

/// Clears `leading` when a batch panics, so writers do not queue forever
/// behind a leader that is gone.
struct UnwindReset<'a>(&'a Applier);

impl Drop for UnwindReset<'_> {
    fn drop(&mut self) {
        self.0.lock().leading = false;
    }
}

impl Drop for ApplyLeader<'_> {
    fn drop(&mut self) {
        self.lead();
    }
}
