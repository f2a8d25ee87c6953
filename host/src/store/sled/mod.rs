//! The embedded store: sled trees for executions, callbacks, timers,
//! deliveries, tokens and component blobs; transitions written atomically
//! through write-ahead intents ([`intent`]).
//!
//! sled is a blocking library. Point reads stay on the caller's thread
//! (they are served from the page cache and cost microseconds), while
//! everything that can take long — an fsync, a scan of a whole tree — runs
//! on tokio's blocking pool ([`blocking`]), so a slow disk never stalls
//! the async workers that serve requests. Writes of transitions go
//! through group apply ([`group_apply`]) and their fsyncs through group
//! commit ([`group_commit`]).

mod group_apply;
mod group_commit;
mod intent;
mod listing;
mod plugin_refs;
mod private;
mod tables;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sled::Transactional as _;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use self::group_apply::Applier;
use self::group_commit::GroupCommit;
use super::StoreError;
use crate::model::ExecState;

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
    /// What retention and listings read, in one tree (each tree a transaction
    /// touches costs it): ended executions by state and end time
    /// ([`ended_key`]), so that what is due is found without a scan;
    /// callback records by execution ([`callback_index_key`]), so that
    /// removing an execution finds all of its; and what listings read
    /// ([`listing`]): executions by state, by workflow, by plugin and by
    /// both, which also gives recovery the running ones. Empty values, but for
    /// the records of idempotent starts ([`idempotency_key`]).
    indexes: sled::Tree,
    /// Executions per state (state name -> i64, big-endian), and the
    /// number of timers ([`TIMER_COUNT_KEY`]), kept in the same
    /// transaction as every write of those records: counting them at open
    /// or at a scrape costs a read each, not a scan.
    counts: sled::Tree,
    /// Timer records that could not be decoded, moved aside by their key so
    /// that one bad record cannot stop every timer behind it.
    quarantine: sled::Tree,
    /// How many were moved aside since open.
    quarantined: Arc<AtomicU64>,
    /// The batch of changes being written, logged whole before its keys
    /// (at most one record: [`intent`]).
    intents: sled::Tree,
    /// Keeps point reads off a batch being written ([`intent`]).
    visibility: Arc<intent::Visibility>,
    /// Held by whatever writes the trees batches write: the batch leader,
    /// and a timer's move to quarantine.
    gate: Arc<std::sync::Mutex<intent::Gate>>,
    commit: Arc<GroupCommit>,
    applier: Arc<Applier>,
    /// Held by the token writes that check a rule over every token (the
    /// first token, the last admin), so that two at once cannot both pass.
    token_rules: Arc<std::sync::Mutex<()>>,
    /// Heartbeats of the daemons in this process (one, but for tests).
    nodes: Arc<crate::store::nodes::LocalNodes>,
}

/// sled keeps up to this much of the database in its page cache (its
/// default, 1 GiB, let a daemon with a million waiting executions grow to
/// a gigabyte of RSS after one scan). Lookups touch a handful of pages.
const CACHE_CAPACITY: u64 = 64 * 1024 * 1024;

/// How long an open waits for the data dir's lock to be let go before it
/// says another process holds it. A store dropped a moment ago (a daemon
/// restarted in the same process, or one that is still exiting) keeps
/// the lock until sled's background writes and a flush cut short by the
/// shutdown have finished with it.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Marks, in the `meta` tree, that the listing indexes are complete.
const LISTING_INDEX_MARK: &[u8] = b"index/listing/v2";
/// The tree of running executions' ids that the listing indexes replaced:
/// dropped once they are built.
const OLD_RUNNING_TREE: &str = "executions-running";
/// Marks, in the `meta` tree, that the per-state counts are complete.
const COUNTS_MARK: &[u8] = b"index/counts/v1";
/// Marks, in the `meta` tree, that the timer count is complete.
const TIMER_COUNT_MARK: &[u8] = b"index/timer-count/v1";
/// Marks, in the `meta` tree, that the index of ended executions is
/// complete.
const ENDED_INDEX_MARK: &[u8] = b"index/ended/v1";
/// Marks, in the `meta` tree, that the index of callbacks by execution is
/// complete.
const CALLBACK_INDEX_MARK: &[u8] = b"index/callbacks-by-execution/v1";
/// The first byte of every [`callback_index_key`] (the states of
/// [`ended_key`] take `c` and `f`).
const CALLBACK_INDEX_TAG: u8 = b'k';

/// The data format of a data dir, in the `meta` tree (big-endian u64).
/// Absent in data dirs written before it existed (format 1 as well: what
/// they lack are indexes, which opening builds). A data dir of a higher
/// format is refused, never misread. New indexes do not raise it (an
/// older build would leave them out of date, not misread anything:
/// `docs/compatibility.md`).
///
/// Format 2 writes transitions through write-ahead intents: a data dir
/// left by a crash may hold a half-written batch that only its intent
/// completes, which a build of format 1 would not know to replay. Format
/// 1 data dirs are read as they are (they hold no intent) and marked 2.
const FORMAT_KEY: &[u8] = b"format";
/// The format this build writes, and the newest it reads.
pub const FORMAT: u64 = 2;

/// The key of an ended execution in `indexes`: a byte for the
/// state, the end time (big-endian, so that keys sort by it) and the id.
/// `None` for a state that is not an end.
pub(super) fn ended_key(state: ExecState, ended_ms: u64, id: &str) -> Option<Vec<u8>> {
    let tag = match state {
        ExecState::Completed => b'c',
        ExecState::Failed => b'f',
        ExecState::Running | ExecState::Suspended => return None,
    };
    let mut key = Vec::with_capacity(9 + id.len());
    key.push(tag);
    key.extend_from_slice(&ended_ms.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    Some(key)
}

/// The key of a callback record in `indexes`: its tag, the execution id,
/// `/`, the correlation id.
pub(super) fn callback_index_key(execution_id: &str, correlation_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + execution_id.len() + correlation_id.len());
    key.push(CALLBACK_INDEX_TAG);
    key.extend_from_slice(execution_id.as_bytes());
    key.push(b'/');
    key.extend_from_slice(correlation_id.as_bytes());
    key
}

/// The first byte of every [`idempotency_key`].
const IDEMPOTENCY_TAG: u8 = b'i';

/// The key of an idempotent start's record in `indexes` (the one kind of
/// entry there with a value: a small record, kept in this tree rather
/// than a tree of its own, which every transaction would pay for).
pub(super) fn idempotency_key(scoped: &str) -> Vec<u8> {
    [&[IDEMPOTENCY_TAG], scoped.as_bytes()].concat()
}

/// Removes every key of `tree` that starts with `prefix`.
fn clear_prefix(tree: &sled::Tree, prefix: &[u8]) -> Result<(), StoreError> {
    for key in tree.scan_prefix(prefix).keys() {
        tree.remove(key?)?;
    }
    Ok(())
}

/// The key of the timer count in the `counts` tree (no state is named so).
const TIMER_COUNT_KEY: &[u8] = b"timers";

/// Every execution state, in the order the counts are reported.
const STATES: [ExecState; 4] = ExecState::ALL;

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

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always serialise")
}

/// The error of a transaction that never aborts on purpose: only the
/// database can fail it.
fn storage_only(e: TransactionError<std::convert::Infallible>) -> sled::Error {
    match e {
        TransactionError::Storage(e) => e,
        TransactionError::Abort(never) => match never {},
    }
}

/// Runs `work` on tokio's blocking pool: for fsyncs and scans, which must
/// not hold an async worker thread.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|source| StoreError::Task { what, source })?
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

/// sled's database in `dir`, waiting up to [`LOCK_WAIT`] for a lock
/// another holder is about to let go.
fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let opened = sled::Config::new()
            .path(dir.join("db"))
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(CACHE_CAPACITY)
            .open();
        match opened.map_err(|e| open_error(dir, e)) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. Blocking (it may build the
    /// indexes of an old data dir): called once, before serving.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        private::create_dir(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        if let Some(mode) = private::exposure(dir) {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{mode:04o}"),
                "the data dir may be read by other users; it holds the callback-ticket key, API token hashes and every document partners sent: chmod 700 {}",
                dir.display()
            );
        }
        let db = open_db(dir)?;
        let store = Self {
            executions: db.open_tree("executions")?,
            callbacks: db.open_tree("callbacks")?,
            timers: db.open_tree("timers")?,
            components: db.open_tree("components")?,
            tokens: db.open_tree("tokens")?,
            deliveries: db.open_tree("deliveries")?,
            indexes: db.open_tree("indexes")?,
            counts: db.open_tree("execution-counts")?,
            quarantine: db.open_tree("timers-quarantine")?,
            quarantined: Arc::default(),
            intents: db.open_tree("intents")?,
            visibility: Arc::default(),
            gate: Arc::default(),
            commit: Arc::new(GroupCommit::default()),
            applier: Arc::default(),
            token_rules: Arc::default(),
            nodes: Arc::default(),
            db,
        };
        store.check_format(dir)?;
        intent::replay(&store)?;
        store.build_indexes()?;
        if let Err(e) = private::tighten(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not make the data dir's files private (0600)");
        }
        Ok(store)
    }

    /// Refuses a data dir of a newer format, before anything reads or
    /// writes it (`build_indexes` records the format of a new or older
    /// one).
    fn check_format(&self, dir: &Path) -> Result<(), StoreError> {
        let meta = self.db.open_tree("meta")?;
        let found = meta
            .get(FORMAT_KEY)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map_or(FORMAT, u64::from_be_bytes);
        if found > FORMAT {
            return Err(StoreError::NewerFormat {
                dir: dir.to_path_buf(),
                found,
                supported: FORMAT,
            });
        }
        Ok(())
    }

    /// Builds the indexes and the counts once, for a data dir written
    /// before they existed: one scan each, then never again.
    fn build_indexes(&self) -> Result<(), StoreError> {
        let meta = self.db.open_tree("meta")?;
        let mut built = false;
        if !meta.contains_key(CALLBACK_INDEX_MARK)? {
            #[derive(serde::Deserialize)]
            struct Owner {
                execution_id: String,
            }
            clear_prefix(&self.indexes, &[CALLBACK_INDEX_TAG])?;
            for item in self.callbacks.iter() {
                let (key, bytes) = item?;
                let Owner { execution_id } = decode(&key, &bytes)?;
                let cid = String::from_utf8_lossy(&key);
                self.indexes
                    .insert(callback_index_key(&execution_id, &cid), &[])?;
            }
            meta.insert(CALLBACK_INDEX_MARK, &[])?;
            built = true;
        }
        if !meta.contains_key(ENDED_INDEX_MARK)? {
            #[derive(serde::Deserialize)]
            struct End {
                state: ExecState,
                updated_ms: u64,
            }
            for state in [ExecState::Completed, ExecState::Failed] {
                let tag = ended_key(state, 0, "").unwrap_or_default();
                clear_prefix(&self.indexes, &tag[..1])?;
            }
            for item in self.executions.iter() {
                let (key, bytes) = item?;
                let End { state, updated_ms } = decode(&key, &bytes)?;
                if let Some(k) = ended_key(state, updated_ms, &String::from_utf8_lossy(&key)) {
                    self.indexes.insert(k, &[])?;
                }
            }
            meta.insert(ENDED_INDEX_MARK, &[])?;
            built = true;
        }
        if !meta.contains_key(TIMER_COUNT_MARK)? {
            // Keys only: a record that would not decode is still a timer
            // until it is moved aside, which counts it out.
            let mut n = 0i64;
            for key in self.timers.iter().keys() {
                key?;
                n += 1;
            }
            self.counts.insert(TIMER_COUNT_KEY, &n.to_be_bytes())?;
            meta.insert(TIMER_COUNT_MARK, &[])?;
            built = true;
        }
        let listing_done = meta.contains_key(LISTING_INDEX_MARK)?;
        let counts_done = meta.contains_key(COUNTS_MARK)?;
        if !(listing_done && counts_done) {
            if !listing_done {
                for tag in listing::TAGS {
                    clear_prefix(&self.indexes, &[tag])?;
                }
                clear_prefix(&self.counts, &listing::workflow_counts_prefix(None))?;
            }
            let mut counts = [0i64; STATES.len()];
            let mut by_workflow = std::collections::BTreeMap::<_, i64>::new();
            for item in self.executions.iter() {
                let (key, bytes) = item?;
                let stored: listing::Stored = decode(&key, &bytes)?;
                if !listing_done {
                    for k in stored.listed().keys(&String::from_utf8_lossy(&key)) {
                        self.indexes.insert(k, &[])?;
                    }
                    let key = listing::workflow_count_key(&stored.workflow, stored.state);
                    *by_workflow.entry(key).or_default() += 1;
                }
                if let Some(i) = STATES.iter().position(|s| *s == stored.state) {
                    counts[i] += 1;
                }
            }
            if !counts_done {
                for (state, n) in STATES.iter().zip(counts) {
                    self.counts.insert(count_key(*state), &n.to_be_bytes())?;
                }
            }
            for (key, n) in by_workflow {
                self.counts.insert(key, &n.to_be_bytes())?;
            }
            meta.insert(LISTING_INDEX_MARK, &[])?;
            meta.insert(COUNTS_MARK, &[])?;
            built = true;
        }
        if self
            .db
            .tree_names()
            .iter()
            .any(|n| n == OLD_RUNNING_TREE.as_bytes())
        {
            self.db.drop_tree(OLD_RUNNING_TREE)?;
            built = true;
        }
        let format = meta
            .get(FORMAT_KEY)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map(u64::from_be_bytes);
        if format != Some(FORMAT) {
            meta.insert(FORMAT_KEY, &FORMAT.to_be_bytes())?;
            built = true;
        }
        if built {
            self.db.flush()?;
        }
        Ok(())
    }

    /// Moves an undecodable timer record out of the timers tree into
    /// `timers-quarantine` (same key, same bytes), in one transaction, so
    /// an operator can inspect it and every other timer keeps firing.
    fn quarantine_timer(
        &self,
        key: &[u8],
        bytes: &[u8],
        why: &StoreError,
    ) -> Result<(), StoreError> {
        let _gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        (&self.timers, &self.quarantine, &self.counts)
            .transaction(|(timers, quarantine, counts)| {
                if timers.remove(key)?.is_some() {
                    let n = count_value(counts.get(TIMER_COUNT_KEY)?.as_deref()) - 1;
                    counts.insert(TIMER_COUNT_KEY, &n.to_be_bytes())?;
                }
                quarantine.insert(key, bytes)?;
                Ok::<_, ConflictableTransactionError<std::convert::Infallible>>(())
            })
            .map_err(storage_only)?;
        self.quarantined.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            key = %String::from_utf8_lossy(key),
            error = %why,
            "a timer record could not be decoded; moved it to the timers-quarantine tree and went on with the others"
        );
        Ok(())
    }

    /// One disk flush per caller, without grouping: only for the benchmark
    /// that compares the two. (The flush before group commit was sled's
    /// `flush_async`, which deadlocks when called concurrently: sled#1308.)
    #[doc(hidden)]
    pub async fn flush_ungrouped(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        blocking("flush", move || Ok(db.flush()?)).await?;
        Ok(())
    }
}
