//! The embedded [`Store`](super::Store): sled trees for executions,
//! callbacks, timers and component blobs, with multi-tree transactions for
//! atomic transitions.

use std::path::Path;
use std::sync::{Arc, Mutex};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use super::{BoxFuture, Change, ExecutionFilter, Store, StoreError};
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
    commit: Arc<GroupCommit>,
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

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always serialise")
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Backend(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(CACHE_CAPACITY)
            .open()
            .map_err(|e| {
                StoreError::Backend(format!("cannot open data dir {}: {e}", dir.display()))
            })?;
        let store = Self {
            executions: db.open_tree("executions").map_err(backend)?,
            callbacks: db.open_tree("callbacks").map_err(backend)?,
            timers: db.open_tree("timers").map_err(backend)?,
            components: db.open_tree("components").map_err(backend)?,
            tokens: db.open_tree("tokens").map_err(backend)?,
            deliveries: db.open_tree("deliveries").map_err(backend)?,
            running: db.open_tree("executions-running").map_err(backend)?,
            counts: db.open_tree("execution-counts").map_err(backend)?,
            commit: Arc::new(GroupCommit::default()),
            db,
        };
        store.build_indexes()?;
        Ok(store)
    }

    /// Builds the `running` index and the per-state counts once, for a
    /// data dir written before they existed: one scan, then never again.
    fn build_indexes(&self) -> Result<(), StoreError> {
        let meta = self.db.open_tree("meta").map_err(backend)?;
        let running_done = meta.contains_key(RUNNING_INDEX_MARK).map_err(backend)?;
        let counts_done = meta.contains_key(COUNTS_MARK).map_err(backend)?;
        if running_done && counts_done {
            return Ok(());
        }
        #[derive(serde::Deserialize)]
        struct StateOnly {
            state: ExecState,
        }
        if !running_done {
            self.running.clear().map_err(backend)?;
        }
        let mut counts = [0i64; STATES.len()];
        for item in self.executions.iter() {
            let (key, bytes) = item.map_err(backend)?;
            let StateOnly { state } = decode(&key, &bytes)?;
            if !running_done && state == ExecState::Running {
                self.running.insert(key, &[]).map_err(backend)?;
            }
            if let Some(i) = STATES.iter().position(|s| *s == state) {
                counts[i] += 1;
            }
        }
        if !counts_done {
            for (state, n) in STATES.iter().zip(counts) {
                self.counts
                    .insert(count_key(*state), &n.to_be_bytes())
                    .map_err(backend)?;
            }
        }
        meta.insert(RUNNING_INDEX_MARK, &[]).map_err(backend)?;
        meta.insert(COUNTS_MARK, &[]).map_err(backend)?;
        self.db.flush().map_err(backend)?;
        Ok(())
    }
}

impl SledStore {
    /// How many disk flushes (fsyncs) [`Store::flush`] has done: fewer than
    /// its callers when they overlap (group commit).
    pub fn disk_flushes(&self) -> u64 {
        self.commit.lock().disk_flushes
    }

    /// One disk flush per caller, without grouping: only for the benchmark
    /// that compares the two. (The flush before group commit was sled's
    /// `flush_async`, which deadlocks when called concurrently: sled#1308.)
    #[doc(hidden)]
    pub async fn flush_ungrouped(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Backend(format!("flush task failed: {e}")))?
            .map_err(backend)?;
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
            let covers = {
                let mut s = self.lock();
                if s.flushed >= ticket {
                    return Ok(());
                }
                if s.flushing {
                    None
                } else {
                    s.flushing = true;
                    Some(s.issued)
                }
            };
            let Some(covers) = covers else {
                // Marks the current value seen; a change after the check
                // above wakes us.
                done.borrow_and_update();
                if self.lock().flushing && done.changed().await.is_err() {
                    return Err(StoreError::Backend("group commit closed".into()));
                }
                continue;
            };
            let mut guard = LeaderGuard {
                commit: self,
                armed: true,
            };
            let db = db.clone();
            let result = tokio::task::spawn_blocking(move || db.flush()).await;
            guard.armed = false;
            let result = match result {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(backend(e)),
                Err(e) => Err(StoreError::Backend(format!("flush task failed: {e}"))),
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

/// [`check_version`] for an execution; also tells its current state
/// (`None` when it is new), for the per-state counts.
fn check_execution_version(
    tree: &TransactionalTree,
    exec: &Execution,
) -> Result<Option<ExecState>, ConflictableTransactionError<StoreError>> {
    #[derive(serde::Deserialize)]
    struct VersionAndState {
        version: u64,
        state: ExecState,
    }
    let key = exec.id.as_str();
    let current = match tree.get(key.as_bytes())? {
        None => None,
        Some(bytes) => Some(
            decode::<VersionAndState>(key.as_bytes(), &bytes)
                .map_err(ConflictableTransactionError::Abort)?,
        ),
    };
    let current_version = current.as_ref().map_or(0, |c| c.version);
    if current_version + 1 != exec.version {
        return Err(ConflictableTransactionError::Abort(StoreError::Conflict(
            format!(
                "execution {key} is at version {current_version}, change expects {}",
                exec.version.saturating_sub(1)
            ),
        )));
    }
    Ok(current.map(|c| c.state))
}

/// Checks that `key` holds version `new_version - 1` (or nothing, for 1).
fn check_version(
    tree: &TransactionalTree,
    kind: &str,
    key: &str,
    new_version: u64,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    let current = tree.get(key.as_bytes())?;
    let current_version = match current {
        None => 0,
        Some(bytes) => {
            #[derive(serde::Deserialize)]
            struct Versioned {
                version: u64,
            }
            decode::<Versioned>(key.as_bytes(), &bytes)
                .map_err(ConflictableTransactionError::Abort)?
                .version
        }
    };
    if current_version + 1 != new_version {
        return Err(ConflictableTransactionError::Abort(StoreError::Conflict(
            format!(
                "{kind} {key} is at version {current_version}, change expects {}",
                new_version.saturating_sub(1)
            ),
        )));
    }
    Ok(())
}

impl Store for SledStore {
    fn execution(&self, id: &str) -> Result<Option<Execution>, StoreError> {
        match self.executions.get(id.as_bytes()).map_err(backend)? {
            Some(bytes) => decode(id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn executions(&self, filter: &ExecutionFilter) -> Result<Vec<Execution>, StoreError> {
        let mut out = Vec::new();
        if filter.state == Some(ExecState::Running) {
            // From the index: cost by the running executions, not all.
            for item in self.running.iter() {
                let (key, _) = item.map_err(backend)?;
                let Some(bytes) = self.executions.get(&key).map_err(backend)? else {
                    continue;
                };
                let exec: Execution = decode(&key, &bytes)?;
                if exec.state != ExecState::Running
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
            return Ok(out);
        }
        for item in self.executions.iter() {
            let (key, bytes) = item.map_err(backend)?;
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
        match self
            .callbacks
            .get(correlation_id.as_bytes())
            .map_err(backend)?
        {
            Some(bytes) => decode(correlation_id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn apply(&self, change: &Change) -> Result<(), StoreError> {
        let trees = (
            &self.executions,
            &self.callbacks,
            &self.timers,
            &self.deliveries,
            &self.running,
            &self.counts,
        );
        let result = trees.transaction(|(e, c, t, d, r, n)| {
            if let Some(exec) = &change.execution {
                let before = check_execution_version(e, exec)?;
                e.insert(exec.id.as_bytes(), encode(exec))?;
                if before != Some(exec.state) {
                    // sled runs transactions one at a time (a global lock),
                    // so these counters never conflict.
                    let bump = |state: ExecState, by: i64| {
                        let key = count_key(state);
                        let now = count_value(n.get(key)?.as_deref()) + by;
                        n.insert(key, &now.to_be_bytes()).map(|_| ())
                    };
                    bump(exec.state, 1)?;
                    if let Some(old) = before {
                        bump(old, -1)?;
                    }
                }
                if exec.state == ExecState::Running {
                    r.insert(exec.id.as_bytes(), &[])?;
                } else {
                    r.remove(exec.id.as_bytes())?;
                }
            }
            for cb in &change.callbacks {
                check_version(c, "callback", &cb.correlation_id, cb.version)?;
                c.insert(cb.correlation_id.as_bytes(), encode(cb))?;
            }
            for timer in &change.remove_timers {
                t.remove(timer.key())?;
            }
            for timer in &change.add_timers {
                t.insert(timer.key(), encode(timer))?;
            }
            for delivery in &change.deliveries {
                let key = delivery.key();
                check_version(d, "delivery", &key, delivery.version)?;
                d.insert(key.as_bytes(), encode(delivery))?;
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(backend(e)),
        }
    }

    fn due_timers(&self, now_ms: u64, limit: usize) -> Result<Vec<Timer>, StoreError> {
        let end = (now_ms.saturating_add(1)).to_be_bytes();
        let mut out = Vec::new();
        for item in self.timers.range(..end.as_slice()).take(limit) {
            let (key, bytes) = item.map_err(backend)?;
            out.push(decode(&key, &bytes)?);
        }
        Ok(out)
    }

    fn next_timer_due(&self) -> Result<Option<u64>, StoreError> {
        match self.timers.first().map_err(backend)? {
            Some((key, bytes)) => Ok(Some(decode::<Timer>(&key, &bytes)?.due_ms)),
            None => Ok(None),
        }
    }

    fn put_component(&self, hash: &str, bytes: &[u8]) -> Result<(), StoreError> {
        if !self.components.contains_key(hash).map_err(backend)? {
            self.components.insert(hash, bytes).map_err(backend)?;
        }
        Ok(())
    }

    fn component(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .components
            .get(hash)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn put_token(&self, token: &crate::auth::TokenRecord) -> Result<(), StoreError> {
        self.tokens
            .insert(token.sha256.as_bytes(), encode(token))
            .map_err(backend)?;
        self.tokens.flush().map_err(backend)?;
        Ok(())
    }

    fn token(&self, sha256: &str) -> Result<Option<crate::auth::TokenRecord>, StoreError> {
        match self.tokens.get(sha256.as_bytes()).map_err(backend)? {
            Some(bytes) => decode(sha256.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn token_count(&self) -> Result<usize, StoreError> {
        Ok(self.tokens.len())
    }

    fn put_plugin_ref(&self, name: &str, hash: &str) -> Result<(), StoreError> {
        let refs = self.db.open_tree("plugins").map_err(backend)?;
        refs.insert(name.as_bytes(), hash.as_bytes())
            .map_err(backend)?;
        refs.flush().map_err(backend)?;
        Ok(())
    }

    fn plugin_refs(&self) -> Result<Vec<(String, String)>, StoreError> {
        let refs = self.db.open_tree("plugins").map_err(backend)?;
        refs.iter()
            .map(|item| {
                let (k, v) = item.map_err(backend)?;
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                ))
            })
            .collect()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.commit.flush(&self.db))
    }

    // Durability and observability (result delivery, timers, metrics).

    fn delivery(&self, key: &str) -> Result<Option<Delivery>, StoreError> {
        match self.deliveries.get(key.as_bytes()).map_err(backend)? {
            Some(bytes) => decode(key.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn deliveries_of(&self, execution_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let prefix = format!("{execution_id}/");
        let mut out = Vec::new();
        for item in self.deliveries.scan_prefix(prefix.as_bytes()) {
            let (key, bytes) = item.map_err(backend)?;
            out.push(decode(&key, &bytes)?);
        }
        Ok(out)
    }

    fn count_executions_by_state(&self) -> Result<Vec<(ExecState, u64)>, StoreError> {
        // Kept by `apply`: four reads, whatever the number of executions.
        STATES
            .into_iter()
            .map(|state| {
                let n = self.counts.get(count_key(state)).map_err(backend)?;
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
        let meta = self.db.open_tree("meta").map_err(backend)?;
        let key = format!("secret/{name}");
        if let Some(existing) = meta.get(key.as_bytes()).map_err(backend)? {
            return Ok(existing.to_vec());
        }
        let fresh = rand::random::<[u8; 32]>();
        // Of two racing creators the first wins; both then use its value.
        let _ = meta
            .compare_and_swap(key.as_bytes(), None::<&[u8]>, Some(&fresh[..]))
            .map_err(backend)?;
        meta.flush().map_err(backend)?;
        meta.get(key.as_bytes())
            .map_err(backend)?
            .map(|v| v.to_vec())
            .ok_or_else(|| backend("node secret vanished after creation"))
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

    #[test]
    fn a_stale_version_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .apply(&Change {
                execution: Some(exec("e", 1)),
                ..Default::default()
            })
            .unwrap();
        store
            .apply(&Change {
                execution: Some(exec("e", 2)),
                ..Default::default()
            })
            .unwrap();
        // A writer that read version 1 loses, and its callback write with it.
        let stale = Change {
            execution: Some(exec("e", 2)),
            callbacks: vec![callback("c", 1)],
            ..Default::default()
        };
        assert!(matches!(store.apply(&stale), Err(StoreError::Conflict(_))));
        assert_eq!(store.execution("e").unwrap().unwrap().version, 2);
        assert!(
            store.callback("c").unwrap().is_none(),
            "a refused change must write nothing"
        );
    }

    #[test]
    fn inserting_twice_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let change = Change {
            callbacks: vec![callback("c", 1)],
            ..Default::default()
        };
        store.apply(&change).unwrap();
        assert!(matches!(store.apply(&change), Err(StoreError::Conflict(_))));
    }

    #[test]
    fn timers_come_back_in_due_order_and_only_when_due() {
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
        store.apply(&change).unwrap();
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
                    .unwrap();
                store.flush().await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let flushes = store.disk_flushes();
        assert!(
            (1..n).contains(&flushes),
            "{n} overlapping flushes took {flushes} disk flushes"
        );
        // A flush with nothing new still waits for a disk flush of its own.
        store.flush().await.unwrap();
        assert_eq!(store.disk_flushes(), flushes + 1);
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        for i in 0..n {
            assert!(store.execution(&format!("e{i}")).unwrap().is_some());
        }
    }

    fn counts(store: &SledStore) -> Vec<u64> {
        store
            .count_executions_by_state()
            .unwrap()
            .into_iter()
            .map(|(_, n)| n)
            .collect()
    }

    #[test]
    fn the_running_index_follows_every_transition_and_is_built_for_old_data() {
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
                    .unwrap();
            }
            let mut b = exec("b", 2);
            b.state = ExecState::Suspended;
            store
                .apply(&Change {
                    execution: Some(b),
                    ..Default::default()
                })
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
                .unwrap();
            store.flush().await.unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.execution("e").unwrap().unwrap().id, "e");
    }
}
