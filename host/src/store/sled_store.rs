//! The embedded [`Store`](super::Store): sled trees for executions,
//! callbacks, timers and component blobs, with multi-tree transactions for
//! atomic transitions.

use std::path::Path;
use std::sync::{Arc, Mutex};

use sled::Transactional;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};

mod plugin_refs;

use super::{BoxFuture, Change, ExecutionFilter, Store, StoreError, WriteStats};
use crate::model::{CallbackRecord, Delivery, ExecState, Execution, Timer};

/// sled-backed store.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    executions: sled::Tree,
    callbacks: sled::Tree,
    timers: sled::Tree,
    components: sled::Tree,
    tokens: sled::Tree,
    deliveries: sled::Tree,
    /// Ids of the executions in state `running` (empty values): recovery
    /// reads these at open instead of scanning every execution.
    running: sled::Tree,
    /// Executions per state (state name -> i64, big-endian), kept in the
    /// same transaction as every execution write: counting them at open
    /// costs four reads, not a scan.
    counts: sled::Tree,
    /// Timer records that could not be decoded, moved aside by their key so
    /// that one bad record cannot stop every timer behind it.
    quarantine: sled::Tree,
    /// How many were moved aside since open.
    quarantined: Arc<std::sync::atomic::AtomicU64>,
    commit: Arc<GroupCommit>,
    applier: Arc<Applier>,
}

/// The queue of [`GroupApply`], behind a lock that ignores poisoning (a
/// panic while holding it leaves the queue consistent).
#[derive(Default)]
struct Applier(Mutex<GroupApply>);

impl Applier {
    fn lock(&self) -> std::sync::MutexGuard<'_, GroupApply> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// sled keeps up to this much of the database in its page cache (its
/// default, 1 GiB, let a daemon with a million waiting executions grow to
/// a gigabyte of RSS after one scan). Lookups touch a handful of pages.
const CACHE_CAPACITY: u64 = 64 * 1024 * 1024;

/// Marks, in the `meta` tree, that the `running` index is complete.
const RUNNING_INDEX_MARK: &[u8] = b"index/running/v1";
/// Marks, in the `meta` tree, that the per-state counts are complete.
const COUNTS_MARK: &[u8] = b"index/counts/v1";

/// Every execution state, in the order the counts are reported.
const STATES: [ExecState; 4] = [
    ExecState::Running,
    ExecState::Suspended,
    ExecState::Completed,
    ExecState::Failed,
];

fn count_key(state: ExecState) -> &'static [u8] {
    // Exhaustive, so a new state cannot be left uncounted.
    match state {
        ExecState::Running => b"running",
        ExecState::Suspended => b"suspended",
        ExecState::Completed => b"completed",
        ExecState::Failed => b"failed",
    }
}

fn count_value(bytes: Option<&[u8]>) -> i64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, i64::from_be_bytes)
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

/// The error of a transaction that never aborts on purpose: only the
/// database can fail it.
fn storage_only(e: TransactionError<std::convert::Infallible>) -> sled::Error {
    match e {
        TransactionError::Storage(e) => e,
        TransactionError::Abort(never) => match never {},
    }
}

/// Tells a data dir held by another process (sled takes an exclusive
/// `flock` on its `db` file) from any other failure to open, by asking the
/// file system rather than reading sled's message: sled reports the lock as
/// an `Other` I/O error, its text the only trace of `WouldBlock`.
fn open_error(dir: &Path, source: sled::Error) -> StoreError {
    let held = std::fs::File::open(dir.join("db").join("db"))
        .is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
    let dir = dir.to_path_buf();
    if held {
        StoreError::Locked { dir, source }
    } else {
        StoreError::Open { dir, source }
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always serialise")
}

impl SledStore {
    /// Moves an undecodable timer record out of the timers tree into
    /// `timers-quarantine` (same key, same bytes), in one transaction, so
    /// an operator can inspect it and every other timer keeps firing.
    fn quarantine_timer(
        &self,
        key: &[u8],
        bytes: &[u8],
        why: &StoreError,
    ) -> Result<(), StoreError> {
        (&self.timers, &self.quarantine)
            .transaction(|(timers, quarantine)| {
                timers.remove(key)?;
                quarantine.insert(key, bytes)?;
                Ok::<_, ConflictableTransactionError<std::convert::Infallible>>(())
            })
            .map_err(storage_only)?;
        self.quarantined
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(
            key = %String::from_utf8_lossy(key),
            error = %why,
            "a timer record could not be decoded; moved it to the timers-quarantine tree and went on with the others"
        );
        Ok(())
    }

    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(CACHE_CAPACITY)
            .open()
            .map_err(|e| open_error(dir, e))?;
        let store = Self {
            executions: db.open_tree("executions")?,
            callbacks: db.open_tree("callbacks")?,
            timers: db.open_tree("timers")?,
            components: db.open_tree("components")?,
            tokens: db.open_tree("tokens")?,
            deliveries: db.open_tree("deliveries")?,
            running: db.open_tree("executions-running")?,
            counts: db.open_tree("execution-counts")?,
            quarantine: db.open_tree("timers-quarantine")?,
            quarantined: Arc::default(),
            commit: Arc::new(GroupCommit::default()),
            applier: Arc::default(),
            db,
        };
        store.build_indexes()?;
        Ok(store)
    }

    /// Builds the `running` index and the per-state counts once, for a
    /// data dir written before they existed: one scan, then never again.
    fn build_indexes(&self) -> Result<(), StoreError> {
        let meta = self.db.open_tree("meta")?;
        let running_done = meta.contains_key(RUNNING_INDEX_MARK)?;
        let counts_done = meta.contains_key(COUNTS_MARK)?;
        if running_done && counts_done {
            return Ok(());
        }
        #[derive(serde::Deserialize)]
        struct StateOnly {
            state: ExecState,
        }
        if !running_done {
            self.running.clear()?;
        }
        let mut counts = [0i64; STATES.len()];
        for item in self.executions.iter() {
            let (key, bytes) = item?;
            let StateOnly { state } = decode(&key, &bytes)?;
            if !running_done && state == ExecState::Running {
                self.running.insert(key, &[])?;
            }
            if let Some(i) = STATES.iter().position(|s| *s == state) {
                counts[i] += 1;
            }
        }
        if !counts_done {
            for (state, n) in STATES.iter().zip(counts) {
                self.counts.insert(count_key(*state), &n.to_be_bytes())?;
            }
        }
        meta.insert(RUNNING_INDEX_MARK, &[])?;
        meta.insert(COUNTS_MARK, &[])?;
        self.db.flush()?;
        Ok(())
    }
}

impl SledStore {
    /// One disk flush per caller, without grouping: only for the benchmark
    /// that compares the two. (The flush before group commit was sled's
    /// `flush_async`, which deadlocks when called concurrently: sled#1308.)
    #[doc(hidden)]
    pub async fn flush_ungrouped(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|source| StoreError::Task {
                what: "flush",
                source,
            })??;
        Ok(())
    }
}

/// Group commit: concurrent [`Store::flush`] callers share disk flushes.
///
/// Each caller takes a ticket after its writes are applied. One caller at a
/// time leads: it notes the newest ticket issued, flushes sled (which makes
/// every write applied before the flush started durable), and publishes
/// that ticket as flushed. Callers that arrive meanwhile wait; when the
/// flush ends, those it covered return, and one of the rest leads the next
/// flush for all of them. So N overlapping requests cost about two fsyncs,
/// not N, and nobody returns before a flush that began after its writes.
#[derive(Debug)]
struct GroupCommit {
    state: Mutex<CommitState>,
    /// Bumped whenever a flush ends (or its leader gives up).
    done: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct CommitState {
    /// Tickets handed out so far.
    issued: u64,
    /// Every ticket up to this one is durable.
    flushed: u64,
    /// A leader is flushing now.
    flushing: bool,
    /// Disk flushes done, for the benchmarks and tests.
    disk_flushes: u64,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            done: tokio::sync::watch::channel(0).0,
        }
    }
}

/// Clears `flushing` if a leader's future is dropped mid-flush, so the
/// waiters elect another instead of waiting forever.
struct LeaderGuard<'a> {
    commit: &'a GroupCommit,
    armed: bool,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.commit.lock().flushing = false;
            self.commit.done.send_modify(|n| *n += 1);
        }
    }
}

impl GroupCommit {
    fn lock(&self) -> std::sync::MutexGuard<'_, CommitState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn flush(&self, db: &sled::Db) -> Result<(), StoreError> {
        let mut done = self.done.subscribe();
        let ticket = {
            let mut s = self.lock();
            s.issued += 1;
            s.issued
        };
        loop {
            let lead = {
                let mut s = self.lock();
                if s.flushed >= ticket {
                    return Ok(());
                }
                if s.flushing {
                    None
                } else {
                    s.flushing = true;
                    Some(())
                }
            };
            let Some(()) = lead else {
                // Marks the current value seen; a change after the check
                // above wakes us.
                done.borrow_and_update();
                if self.lock().flushing && done.changed().await.is_err() {
                    return Err(StoreError::Abandoned("group commit closed"));
                }
                continue;
            };
            let mut guard = LeaderGuard {
                commit: self,
                armed: true,
            };
            // Let the other ready tasks of this thread finish their writes
            // and take tickets first, so this flush covers them too.
            tokio::task::yield_now().await;
            let covers = self.lock().issued;
            let db = db.clone();
            let result = tokio::task::spawn_blocking(move || db.flush()).await;
            guard.armed = false;
            let result = match result {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(StoreError::Sled(e)),
                Err(source) => Err(StoreError::Task {
                    what: "flush",
                    source,
                }),
            };
            {
                let mut s = self.lock();
                s.flushing = false;
                s.disk_flushes += 1;
                if result.is_ok() {
                    s.flushed = s.flushed.max(covers);
                }
            }
            self.done.send_modify(|n| *n += 1);
            // On failure the others try a flush of their own and see the
            // error themselves.
            return result;
        }
    }
}

/// A stored key and its value.
type Record = (sled::IVec, sled::IVec);

/// A change ready for the batch transaction: its records already encoded
/// by the caller, so the one applying a batch only checks and writes.
struct Prepared {
    /// Id, version, state and encoding of the new execution.
    execution: Option<(String, u64, ExecState, Vec<u8>)>,
    /// Key, version and encoding of each callback record.
    callbacks: Vec<(String, u64, Vec<u8>)>,
    add_timers: Vec<(Vec<u8>, Vec<u8>)>,
    remove_timers: Vec<Vec<u8>>,
    /// Key, version and encoding of each delivery record.
    deliveries: Vec<(String, u64, Vec<u8>)>,
}

impl Prepared {
    fn new(change: &Change) -> Self {
        Self {
            execution: change
                .execution
                .as_ref()
                .map(|e| (e.id.clone(), e.version, e.state, encode(e))),
            callbacks: change
                .callbacks
                .iter()
                .map(|c| (c.correlation_id.clone(), c.version, encode(c)))
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
        }
    }
}

/// A sled error inside a transaction (the outer layer), or this change's
/// own refusal (the inner one): a conflict or a corrupt record refuses one
/// change of a batch, not the batch.
type Checked<T> = Result<Result<T, StoreError>, UnabortableTransactionError>;

/// Checks that the execution `key` is at `version - 1` (absent for 1);
/// tells its current state (`None` when it is new), for the counts.
fn check_execution_version(
    tree: &TransactionalTree,
    key: &str,
    version: u64,
) -> Checked<Option<ExecState>> {
    #[derive(serde::Deserialize)]
    struct VersionAndState {
        version: u64,
        state: ExecState,
    }
    let current = match tree.get(key.as_bytes())? {
        None => None,
        Some(bytes) => match decode::<VersionAndState>(key.as_bytes(), &bytes) {
            Ok(c) => Some(c),
            Err(e) => return Ok(Err(e)),
        },
    };
    let current_version = current.as_ref().map_or(0, |c| c.version);
    if current_version + 1 != version {
        return Ok(Err(StoreError::Conflict(format!(
            "execution {key} is at version {current_version}, change expects {}",
            version.saturating_sub(1)
        ))));
    }
    Ok(Ok(current.map(|c| c.state)))
}

/// Checks that `key` holds version `new_version - 1` (or nothing, for 1).
fn check_version(tree: &TransactionalTree, kind: &str, key: &str, new_version: u64) -> Checked<()> {
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

/// The trees a change writes, inside one transaction.
struct Txn<'a> {
    executions: &'a TransactionalTree,
    callbacks: &'a TransactionalTree,
    timers: &'a TransactionalTree,
    deliveries: &'a TransactionalTree,
    running: &'a TransactionalTree,
    counts: &'a TransactionalTree,
}

impl Txn<'_> {
    /// Checks every version a change expects before writing any of it, so
    /// a refused change leaves nothing behind. Changes earlier in the same
    /// batch are seen (sled reads a transaction's own writes).
    fn apply(&self, p: &Prepared) -> Checked<()> {
        let mut before = None;
        if let Some((id, version, _, _)) = &p.execution {
            match check_execution_version(self.executions, id, *version)? {
                Ok(state) => before = state,
                Err(e) => return Ok(Err(e)),
            }
        }
        for (key, version, _) in &p.callbacks {
            if let Err(e) = check_version(self.callbacks, "callback", key, *version)? {
                return Ok(Err(e));
            }
        }
        for (key, version, _) in &p.deliveries {
            if let Err(e) = check_version(self.deliveries, "delivery", key, *version)? {
                return Ok(Err(e));
            }
        }
        if let Some((id, _, state, bytes)) = &p.execution {
            self.executions.insert(id.as_bytes(), bytes.as_slice())?;
            if before != Some(*state) {
                // Transactions run one at a time (sled's lock, and one
                // batch at a time here), so these counters never conflict.
                let bump = |state: ExecState, by: i64| {
                    let key = count_key(state);
                    let now = count_value(self.counts.get(key)?.as_deref()) + by;
                    self.counts.insert(key, &now.to_be_bytes()).map(|_| ())
                };
                bump(*state, 1)?;
                if let Some(old) = before {
                    bump(old, -1)?;
                }
            }
            if *state == ExecState::Running {
                self.running.insert(id.as_bytes(), &[])?;
            } else {
                self.running.remove(id.as_bytes())?;
            }
        }
        for (key, _, bytes) in &p.callbacks {
            self.callbacks.insert(key.as_bytes(), bytes.as_slice())?;
        }
        for key in &p.remove_timers {
            self.timers.remove(key.as_slice())?;
        }
        for (key, bytes) in &p.add_timers {
            self.timers.insert(key.as_slice(), bytes.as_slice())?;
        }
        for (key, _, bytes) in &p.deliveries {
            self.deliveries.insert(key.as_bytes(), bytes.as_slice())?;
        }
        Ok(Ok(()))
    }
}

impl SledStore {
    /// Applies a batch of changes in one sled transaction, each checked on
    /// its own: one refused change does not refuse the others.
    fn apply_batch(&self, batch: &[Prepared]) -> Vec<Result<(), StoreError>> {
        let trees = (
            &self.executions,
            &self.callbacks,
            &self.timers,
            &self.deliveries,
            &self.running,
            &self.counts,
        );
        let result = trees.transaction(|(e, c, t, d, r, n)| {
            let txn = Txn {
                executions: e,
                callbacks: c,
                timers: t,
                deliveries: d,
                running: r,
                counts: n,
            };
            let mut outcomes = Vec::with_capacity(batch.len());
            for p in batch {
                outcomes.push(txn.apply(p)?);
            }
            Ok::<_, ConflictableTransactionError<std::convert::Infallible>>(outcomes)
        });
        match result.map_err(storage_only) {
            Ok(outcomes) => outcomes,
            // The database itself failed: every change of the batch hears
            // it (sled's errors clone).
            Err(e) => batch
                .iter()
                .map(|_| Err(StoreError::Sled(e.clone())))
                .collect(),
        }
    }

    /// Group apply: see [`GroupApply`].
    async fn apply_grouped(&self, change: &Change) -> Result<(), StoreError> {
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
            // paying for a transaction of their own. Yield again while the
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

/// Group apply: concurrent [`Store::apply`] callers share one sled
/// transaction.
///
/// sled seals and writes its IO buffer twice for every transaction (to pin
/// the batch in the log), each write with its own `sync_file_range`, on an
/// IO thread woken for it: a transaction of three small records costs as
/// much CPU as a dozen plain inserts. So callers queue their changes
/// (already encoded); the first of them leads, lets the other ready tasks
/// queue theirs, then applies the whole queue in one transaction (each
/// change checked and refused on its own) and hands every caller its
/// result, until the queue is empty. Alone, a caller is its own leader and
/// pays what it paid before.
#[derive(Default)]
struct GroupApply {
    queue: Vec<(
        Prepared,
        tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    )>,
    leading: bool,
    /// Changes and transactions so far, for [`Store::write_stats`].
    changes: u64,
    transactions: u64,
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

impl Store for SledStore {
    fn execution(&self, id: &str) -> Result<Option<Execution>, StoreError> {
        match self.executions.get(id.as_bytes())? {
            Some(bytes) => decode(id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn executions(&self, filter: &ExecutionFilter) -> Result<Vec<Execution>, StoreError> {
        // Running ones come from the index (cost by the running executions,
        // not all of them); anything else is a scan.
        let records: Box<dyn Iterator<Item = Result<Option<Record>, StoreError>>> =
            if filter.state == Some(ExecState::Running) {
                Box::new(self.running.iter().map(|item| {
                    let (key, _) = item?;
                    Ok(self.executions.get(&key)?.map(|b| (key, b)))
                }))
            } else {
                Box::new(
                    self.executions
                        .iter()
                        .map(|item| item.map(Some).map_err(StoreError::from)),
                )
            };
        let mut out = Vec::new();
        for record in records {
            let Some((key, bytes)) = record? else {
                continue;
            };
            let exec: Execution = decode(&key, &bytes)?;
            if filter.state.is_some_and(|s| s != exec.state)
                || filter
                    .workflow
                    .as_ref()
                    .is_some_and(|w| *w != exec.workflow)
            {
                continue;
            }
            out.push(exec);
            if filter.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
        Ok(out)
    }

    fn callback(&self, correlation_id: &str) -> Result<Option<CallbackRecord>, StoreError> {
        match self.callbacks.get(correlation_id.as_bytes())? {
            Some(bytes) => decode(correlation_id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn apply<'a>(&'a self, change: &'a Change) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.apply_grouped(change))
    }

    fn due_timers(&self, now_ms: u64, limit: usize) -> Result<Vec<Timer>, StoreError> {
        let end = (now_ms.saturating_add(1)).to_be_bytes();
        let mut out = Vec::new();
        for item in self.timers.range(..end.as_slice()).take(limit) {
            let (key, bytes) = item?;
            match decode(&key, &bytes) {
                Ok(timer) => out.push(timer),
                Err(e) => self.quarantine_timer(&key, &bytes, &e)?,
            }
        }
        Ok(out)
    }

    fn next_timer_due(&self) -> Result<Option<u64>, StoreError> {
        // The key starts with the due time, so a record that does not
        // decode still says when it is due (and is moved aside then).
        match self.timers.first()? {
            Some((key, bytes)) => match <[u8; 8]>::try_from(key.get(..8).unwrap_or_default()) {
                Ok(due) => Ok(Some(u64::from_be_bytes(due))),
                Err(_) => decode::<Timer>(&key, &bytes).map(|t| Some(t.due_ms)),
            },
            None => Ok(None),
        }
    }

    fn quarantined_timers(&self) -> u64 {
        self.quarantined.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn put_component(&self, hash: &str, bytes: &[u8]) -> Result<(), StoreError> {
        if !self.components.contains_key(hash)? {
            self.components.insert(hash, bytes)?;
        }
        Ok(())
    }

    fn component(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.components.get(hash)?.map(|v| v.to_vec()))
    }

    fn put_token(&self, token: &crate::auth::TokenRecord) -> Result<(), StoreError> {
        self.tokens.insert(token.sha256.as_bytes(), encode(token))?;
        self.tokens.flush()?;
        Ok(())
    }

    fn token(&self, sha256: &str) -> Result<Option<crate::auth::TokenRecord>, StoreError> {
        match self.tokens.get(sha256.as_bytes())? {
            Some(bytes) => decode(sha256.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn token_count(&self) -> Result<usize, StoreError> {
        Ok(self.tokens.len())
    }

    fn put_plugin_ref(&self, name: &str, hash: &str) -> Result<(), StoreError> {
        plugin_refs::put(self, name, hash)
    }

    fn plugin_refs(&self) -> Result<Vec<(String, String)>, StoreError> {
        plugin_refs::all(self)
    }

    fn plugin_versions(&self, name: &str) -> Result<Vec<String>, StoreError> {
        plugin_refs::versions(self, name)
    }

    fn remove_plugin_ref(&self, name: &str) -> Result<(), StoreError> {
        plugin_refs::remove(self, name)
    }

    fn remove_component(&self, hash: &str) -> Result<(), StoreError> {
        self.components.remove(hash)?;
        Ok(())
    }

    fn each_execution(&self, visit: &mut dyn FnMut(Execution)) -> Result<(), StoreError> {
        for item in self.executions.iter() {
            let (key, bytes) = item?;
            visit(decode(&key, &bytes)?);
        }
        Ok(())
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.commit.flush(&self.db))
    }

    // Durability and observability (result delivery, timers, metrics).

    fn delivery(&self, key: &str) -> Result<Option<Delivery>, StoreError> {
        match self.deliveries.get(key.as_bytes())? {
            Some(bytes) => decode(key.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn deliveries_of(&self, execution_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let prefix = format!("{execution_id}/");
        let mut out = Vec::new();
        for item in self.deliveries.scan_prefix(prefix.as_bytes()) {
            let (key, bytes) = item?;
            out.push(decode(&key, &bytes)?);
        }
        Ok(out)
    }

    fn count_executions_by_state(&self) -> Result<Vec<(ExecState, u64)>, StoreError> {
        // Kept by `apply`: four reads, whatever the number of executions.
        STATES
            .into_iter()
            .map(|state| {
                let n = self.counts.get(count_key(state))?;
                Ok((state, count_value(n.as_deref()).max(0) as u64))
            })
            .collect()
    }

    fn timer_backlog(&self, now_ms: u64) -> Result<(u64, u64), StoreError> {
        let end = now_ms.saturating_add(1).to_be_bytes();
        let due = self.timers.range(..end.as_slice()).count() as u64;
        Ok((self.timers.len() as u64, due))
    }

    fn node_secret(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let meta = self.db.open_tree("meta")?;
        let key = format!("secret/{name}");
        if let Some(existing) = meta.get(key.as_bytes())? {
            return Ok(existing.to_vec());
        }
        let fresh = rand::random::<[u8; 32]>();
        // Of two racing creators the first wins; both then use its value.
        let _ = meta.compare_and_swap(key.as_bytes(), None::<&[u8]>, Some(&fresh[..]))?;
        meta.flush()?;
        meta.get(key.as_bytes())?
            .map(|v| v.to_vec())
            .ok_or(StoreError::Abandoned("node secret vanished after creation"))
    }

    fn write_stats(&self) -> WriteStats {
        let (changes, transactions) = {
            let a = self.applier.lock();
            (a.changes, a.transactions)
        };
        let c = self.commit.lock();
        WriteStats {
            changes,
            transactions,
            flush_requests: c.issued,
            disk_flushes: c.disk_flushes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CallbackState, Doc, ExecState, TimerKind};

    fn exec(id: &str, version: u64) -> Execution {
        Execution {
            id: id.into(),
            version,
            workflow: "w".into(),
            steps: vec![],
            state: ExecState::Running,
            step_index: 0,
            attempt: 1,
            step_run_id: "r".into(),
            document: Doc::json(&serde_json::json!({})),
            outputs: Default::default(),
            waiting: None,
            pending: None,
            output: None,
            error: None,
            status_log: vec![],
            created_ms: 0,
            updated_ms: 0,
        }
    }

    /// A second opener of a data dir hears that another process holds
    /// it, as a variant the daemon can match, with the words an operator
    /// needs.
    #[test]
    fn a_data_dir_held_open_is_refused_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path()).unwrap();
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("is locked by another process")
                && text.contains("could not acquire lock"),
            "{text}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    /// One undecodable timer record must not stop the timers behind it:
    /// it is moved aside, counted, and the others fire.
    #[test]
    fn an_undecodable_timer_is_quarantined_and_the_others_still_come_due() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let good = Timer {
            due_ms: 200,
            execution_id: "e1".into(),
            kind: TimerKind::CallbackTimeout,
        };
        store.timers.insert(good.key(), encode(&good)).unwrap();
        let mut bad_key = 100u64.to_be_bytes().to_vec();
        bad_key.extend_from_slice(b"broken");
        store
            .timers
            .insert(bad_key.as_slice(), &b"{not json"[..])
            .unwrap();

        assert_eq!(
            store.next_timer_due().unwrap(),
            Some(100),
            "read from the key"
        );
        assert_eq!(store.due_timers(1_000, 10).unwrap(), vec![good.clone()]);
        assert_eq!(store.quarantined_timers(), 1);
        assert!(store.timers.get(&bad_key).unwrap().is_none());
        assert_eq!(
            store.quarantine.get(&bad_key).unwrap().unwrap().as_ref(),
            b"{not json"
        );
        // Once moved aside it is not met again.
        assert_eq!(store.due_timers(1_000, 10).unwrap(), vec![good]);
        assert_eq!(store.quarantined_timers(), 1);
    }

    fn callback(id: &str, version: u64) -> CallbackRecord {
        CallbackRecord {
            correlation_id: id.into(),
            version,
            execution_id: "e".into(),
            step_run_id: "r".into(),
            secret_sha256: String::new(),
            require_token: false,
            state: CallbackState::Registered,
            created_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_stale_version_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .apply(&Change {
                execution: Some(exec("e", 1)),
                ..Default::default()
            })
            .await
            .unwrap();
        store
            .apply(&Change {
                execution: Some(exec("e", 2)),
                ..Default::default()
            })
            .await
            .unwrap();
        // A writer that read version 1 loses, and its callback write with it.
        let stale = Change {
            execution: Some(exec("e", 2)),
            callbacks: vec![callback("c", 1)],
            ..Default::default()
        };
        assert!(matches!(
            store.apply(&stale).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.execution("e").unwrap().unwrap().version, 2);
        assert!(
            store.callback("c").unwrap().is_none(),
            "a refused change must write nothing"
        );
    }

    #[tokio::test]
    async fn inserting_twice_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let change = Change {
            callbacks: vec![callback("c", 1)],
            ..Default::default()
        };
        store.apply(&change).await.unwrap();
        assert!(matches!(
            store.apply(&change).await,
            Err(StoreError::Conflict(_))
        ));
    }

    #[tokio::test]
    async fn timers_come_back_in_due_order_and_only_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let t = |due, id: &str| Timer {
            due_ms: due,
            execution_id: id.into(),
            kind: TimerKind::Retry,
        };
        let change = Change {
            add_timers: vec![t(300, "c"), t(100, "a"), t(200, "b")],
            ..Default::default()
        };
        store.apply(&change).await.unwrap();
        assert_eq!(store.next_timer_due().unwrap(), Some(100));
        let due: Vec<_> = store
            .due_timers(200, 10)
            .unwrap()
            .into_iter()
            .map(|t| t.execution_id)
            .collect();
        assert_eq!(due, ["a", "b"]);
        store
            .apply(&Change {
                remove_timers: vec![t(100, "a")],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(store.next_timer_due().unwrap(), Some(200));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_flushes_share_disk_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let n: u64 = 64;
        let mut tasks = Vec::new();
        for i in 0..n {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .apply(&Change {
                        execution: Some(exec(&format!("e{i}"), 1)),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                store.flush().await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let flushes = store.write_stats().disk_flushes;
        assert_eq!(store.write_stats().flush_requests, n);
        assert!(
            (1..n).contains(&flushes),
            "{n} overlapping flushes took {flushes} disk flushes"
        );
        // A flush with nothing new still waits for a disk flush of its own.
        store.flush().await.unwrap();
        assert_eq!(store.write_stats().disk_flushes, flushes + 1);
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        for i in 0..n {
            assert!(store.execution(&format!("e{i}")).unwrap().is_some());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_changes_share_transactions_and_are_each_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        // 64 writers race to create the same 8 executions: per id exactly
        // one wins and the rest are refused, however they are batched.
        let mut tasks = Vec::new();
        for i in 0..64u32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("e{}", i % 8);
                let mut e = exec(&id, 1);
                e.workflow = format!("writer {i}");
                (
                    id,
                    e.workflow.clone(),
                    store
                        .apply(&Change {
                            execution: Some(e),
                            callbacks: vec![callback(&format!("c{i}"), 1)],
                            ..Default::default()
                        })
                        .await,
                )
            }));
        }
        let mut winners = std::collections::HashMap::new();
        for t in tasks {
            let (id, writer, result) = t.await.unwrap();
            match result {
                Ok(()) => assert!(winners.insert(id, writer).is_none(), "two winners"),
                Err(StoreError::Conflict(_)) => {}
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert_eq!(winners.len(), 8);
        for (id, writer) in &winners {
            let stored = store.execution(id).unwrap().unwrap();
            assert_eq!(&stored.workflow, writer, "the winner's record is stored");
        }
        // A refused change wrote nothing: only the winners' callbacks exist.
        let callbacks = (0..64)
            .filter(|i| store.callback(&format!("c{i}")).unwrap().is_some())
            .count();
        assert_eq!(callbacks, 8);
        assert_eq!(counts(&store), [8, 0, 0, 0]);
        let stats = store.write_stats();
        assert_eq!(stats.changes, 64);
        assert!(
            stats.transactions < stats.changes,
            "64 racing writers took {} transactions: none were shared",
            stats.transactions
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn ready_writers_are_applied_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        // All 50 tasks are ready together: the first leads, yields, and
        // the other 49 queue behind it before it applies.
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .apply(&Change {
                            execution: Some(exec(&format!("e{i}"), 1)),
                            ..Default::default()
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let stats = store.write_stats();
        assert_eq!(stats.changes, 50);
        assert_eq!(stats.transactions, 1, "{stats:?}");
        assert_eq!(counts(&store), [50, 0, 0, 0]);
    }

    fn counts(store: &SledStore) -> Vec<u64> {
        store
            .count_executions_by_state()
            .unwrap()
            .into_iter()
            .map(|(_, n)| n)
            .collect()
    }

    #[tokio::test]
    async fn the_running_index_follows_every_transition_and_is_built_for_old_data() {
        let dir = tempfile::tempdir().unwrap();
        let running = |store: &SledStore| -> Vec<String> {
            store
                .executions(&ExecutionFilter {
                    state: Some(ExecState::Running),
                    ..Default::default()
                })
                .unwrap()
                .into_iter()
                .map(|e| e.id)
                .collect()
        };
        {
            let store = SledStore::open(dir.path()).unwrap();
            for id in ["a", "b", "c"] {
                store
                    .apply(&Change {
                        execution: Some(exec(id, 1)),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            let mut b = exec("b", 2);
            b.state = ExecState::Suspended;
            store
                .apply(&Change {
                    execution: Some(b),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(running(&store), ["a", "c"]);
            // running, suspended, completed, failed
            assert_eq!(counts(&store), [2, 1, 0, 0]);
            // A refused change leaves the index alone too.
            let mut stale = exec("a", 5);
            stale.state = ExecState::Completed;
            assert!(
                store
                    .apply(&Change {
                        execution: Some(stale),
                        ..Default::default()
                    })
                    .await
                    .is_err()
            );
            assert_eq!(running(&store), ["a", "c"]);
            assert_eq!(counts(&store), [2, 1, 0, 0]);
            let mut c = exec("c", 2);
            c.state = ExecState::Failed;
            store
                .apply(&Change {
                    execution: Some(c),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(counts(&store), [1, 1, 0, 1]);
            // As if written before the index and the counts existed.
            store.db.drop_tree("executions-running").unwrap();
            store.db.drop_tree("execution-counts").unwrap();
            let meta = store.db.open_tree("meta").unwrap();
            meta.remove(RUNNING_INDEX_MARK).unwrap();
            meta.remove(COUNTS_MARK).unwrap();
            store.db.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(running(&store), ["a"]);
        assert_eq!(counts(&store), [1, 1, 0, 1]);
    }

    #[tokio::test]
    async fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store
                .apply(&Change {
                    execution: Some(exec("e", 1)),
                    ..Default::default()
                })
                .await
                .unwrap();
            store.flush().await.unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.execution("e").unwrap().unwrap().id, "e");
    }
}
