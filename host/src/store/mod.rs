//! Durable state behind a trait. The workflow state machine speaks only to
//! [`Store`], so a shared database could back several daemons later without
//! touching it; [`SledStore`] is the embedded implementation.
//!
//! Every state transition is one [`Change`]: whole new records whose
//! `version` is one more than the stored one. The store applies a change
//! atomically or not at all, and refuses it with [`StoreError::Conflict`]
//! when any record moved on meanwhile — that compare-and-swap is what makes
//! two concurrent callbacks resume a step exactly once.

mod sled_store;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

pub use sled_store::SledStore;

use crate::model::{CallbackRecord, Delivery, ExecState, Execution, Timer};

/// What the store can fail with. Each failure keeps its cause as its
/// [`source`](std::error::Error::source), so a caller can tell a full disk
/// from a lock held by another process by type, never by reading text; the
/// cause's text is in the message too, because logs and API answers show
/// only the message.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A record was changed by someone else since it was read.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Another process has the data dir open (sled allows one).
    #[error("the data dir {} is locked by another process: {source}", dir.display())]
    Locked {
        /// The data dir.
        dir: PathBuf,
        /// What the database said.
        #[source]
        source: sled::Error,
    },
    /// The data dir could not be created.
    #[error("cannot create data dir {}: {source}", dir.display())]
    CreateDir {
        /// The data dir.
        dir: PathBuf,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// The database in the data dir could not be opened.
    #[error("cannot open data dir {}: {source}", dir.display())]
    Open {
        /// The data dir.
        dir: PathBuf,
        /// Why not.
        #[source]
        source: sled::Error,
    },
    /// The database failed (disk full, I/O error).
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// Blocking storage work could not finish on its thread (it panicked,
    /// or the runtime is shutting down).
    #[error("storage error: {what} failed: {source}")]
    Task {
        /// The work.
        what: &'static str,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A write or flush was given up by the task that was doing it for
    /// this caller (it panicked or was cancelled).
    #[error("storage error: {0}")]
    Abandoned(&'static str),
    /// A stored record could not be decoded.
    #[error("corrupt record {key}: {source}")]
    Corrupt {
        /// The key.
        key: String,
        /// The decoder's complaint.
        #[source]
        source: serde_json::Error,
    },
}

/// One atomic transition: new versions of the records it touches, and the
/// timers it adds and removes.
#[derive(Debug, Default, Clone)]
pub struct Change {
    /// New execution; stored version must be `version - 1` (absent for 1).
    pub execution: Option<Execution>,
    /// New callback records, same rule.
    pub callbacks: Vec<CallbackRecord>,
    /// Timers to add.
    pub add_timers: Vec<Timer>,
    /// Timers to remove (missing ones are ignored).
    pub remove_timers: Vec<Timer>,
    /// New result-delivery records, same version rule as executions.
    pub deliveries: Vec<Delivery>,
}

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Filters of [`Store::executions`].
#[derive(Debug, Default, Clone)]
pub struct ExecutionFilter {
    /// Only executions in this state.
    pub state: Option<ExecState>,
    /// Only executions of this workflow.
    pub workflow: Option<String>,
    /// At most this many.
    pub limit: Option<usize>,
}

/// Durable state of the daemon.
pub trait Store: Send + Sync + 'static {
    /// One execution.
    fn execution(&self, id: &str) -> Result<Option<Execution>, StoreError>;
    /// Executions matching a filter, in id order.
    fn executions(&self, filter: &ExecutionFilter) -> Result<Vec<Execution>, StoreError>;
    /// One callback registration.
    fn callback(&self, correlation_id: &str) -> Result<Option<CallbackRecord>, StoreError>;
    /// Applies a change atomically, or refuses it with `Conflict`.
    /// Concurrent changes may be written together (one transaction for
    /// all), each still checked and refused on its own. Not durable until
    /// [`Store::flush`].
    fn apply<'a>(&'a self, change: &'a Change) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Timers due at or before `now_ms`, earliest first, at most `limit`.
    fn due_timers(&self, now_ms: u64, limit: usize) -> Result<Vec<Timer>, StoreError>;
    /// When the earliest timer is due.
    fn next_timer_due(&self) -> Result<Option<u64>, StoreError>;
    /// Timer records [`Store::due_timers`] could not decode and moved aside
    /// since the store was opened (each is logged with its key).
    fn quarantined_timers(&self) -> u64;
    /// Keeps a component's bytes under its content hash, so an execution
    /// suspended on an old version can resume on it after a restart.
    fn put_component(&self, hash: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// A stored component.
    fn component(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores an API token record (keyed by its hash).
    fn put_token(&self, token: &crate::auth::TokenRecord) -> Result<(), StoreError>;
    /// The token record with this hash.
    fn token(&self, sha256: &str) -> Result<Option<crate::auth::TokenRecord>, StoreError>;
    /// Number of stored tokens.
    fn token_count(&self) -> Result<usize, StoreError>;
    /// Records that `name` is an uploaded plugin at version `hash` (its
    /// current one), and adds `hash` to the versions uploaded under
    /// `name`; flushed before it returns.
    fn put_plugin_ref(&self, name: &str, hash: &str) -> Result<(), StoreError>;
    /// Uploaded plugins: (name, hash of the current version).
    fn plugin_refs(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Every version ever uploaded under `name` (hashes, in no particular
    /// order); empty for a name uploaded only before versions were
    /// recorded, whose versions only its executions name.
    fn plugin_versions(&self, name: &str) -> Result<Vec<String>, StoreError>;
    /// Forgets the uploaded plugin `name`: its current version and its
    /// list of versions (not their bytes); flushed before it returns.
    fn remove_plugin_ref(&self, name: &str) -> Result<(), StoreError>;
    /// Drops a stored component's bytes (missing ones are ignored).
    fn remove_component(&self, hash: &str) -> Result<(), StoreError>;
    /// Calls `visit` with every execution, in id order, one at a time (a
    /// scan that never holds them all in memory).
    fn each_execution(&self, visit: &mut dyn FnMut(Execution)) -> Result<(), StoreError>;
    /// Makes everything applied so far durable on disk. Concurrent callers
    /// share one disk flush.
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    // Durability and observability (result delivery, timers, metrics).

    /// One result delivery, by [`crate::model::delivery_key`].
    fn delivery(&self, key: &str) -> Result<Option<Delivery>, StoreError>;
    /// An execution's deliveries, the `armed` record (seq 0) first, then
    /// by sequence.
    fn deliveries_of(&self, execution_id: &str) -> Result<Vec<Delivery>, StoreError>;
    /// How many executions are in each state; read once at open to seed
    /// the metrics gauges, which transitions then keep current.
    fn count_executions_by_state(&self) -> Result<Vec<(ExecState, u64)>, StoreError>;
    /// Pending timers in all, and how many of them are due at `now_ms`.
    fn timer_backlog(&self, now_ms: u64) -> Result<(u64, u64), StoreError>;
    /// A random 32-byte secret of this store under `name`, created (and
    /// flushed) on first use and the same ever after.
    fn node_secret(&self, name: &str) -> Result<Vec<u8>, StoreError>;
    /// What the writes cost so far: changes against transactions, and
    /// flush requests against disk flushes (group apply and group commit).
    fn write_stats(&self) -> WriteStats;
}

/// Counters of [`Store::apply`] and [`Store::flush`], since the store was
/// opened.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Changes applied or refused.
    pub changes: u64,
    /// Database transactions they took.
    pub transactions: u64,
    /// Calls of [`Store::flush`].
    pub flush_requests: u64,
    /// Disk flushes they were served by.
    pub disk_flushes: u64,
}
