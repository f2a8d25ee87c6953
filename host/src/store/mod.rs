//! Durable state behind small traits. The workflow state machine speaks
//! only to these, so a shared database can back several daemons without
//! touching it; [`SledStore`] is the embedded implementation,
//! [`PgStore`] the one on a PostgreSQL database several daemons can
//! share, [`MemoryStore`] the one tests use, and [`conformance`] is the
//! suite of tests every implementation passes.
//!
//! Every state transition is one [`Change`]: whole new records whose
//! `version` is one more than the stored one. The store applies a change
//! atomically or not at all, and refuses it with [`StoreError::Conflict`]
//! when any record moved on meanwhile — that compare-and-swap is what makes
//! two concurrent callbacks resume a step exactly once.
//!
//! The traits are split by concern so that a part of the daemon can be
//! given only the tables it uses, and every operation returns a boxed
//! future, reads included: a backend behind a network (or a disk read that
//! misses the cache) must never hold an async worker thread, and boxed
//! futures keep the traits usable as `dyn`. [`Store`] bundles them all for
//! the code that holds one handle.

pub mod conformance;
mod error;
mod memory;
mod nodes;
mod postgres;
mod sled;
mod tokens;

use std::future::Future;
use std::pin::Pin;

pub use self::sled::SledStore;
pub use error::StoreError;
pub use memory::MemoryStore;
/// A private PostgreSQL server for tests (the daemon's tests start
/// theirs with it too).
#[cfg(any(test, feature = "test-postgres"))]
pub use postgres::testing as pg_testing;
pub use postgres::{Import, PgStore, SCHEMA_VERSION as PG_SCHEMA_VERSION};

use crate::model::TokenRecord;
use crate::model::{CallbackRecord, Delivery, ExecState, Execution, IdempotentStart, Timer};

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
    /// An ended execution to remove, with every record that is only its.
    pub remove: Option<Removal>,
    /// The record of an idempotent start, written with the execution it
    /// started: a key already stored refuses the change (`Conflict`).
    pub idempotent_start: Option<IdempotentStart>,
}

/// Removes an ended execution (retention, or an operator's `DELETE`): the
/// execution record and the records listed here, at once. The stored
/// execution must still be at `version`, or the change is refused with
/// `Conflict`, like any other compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The execution.
    pub id: String,
    /// Its version the removal was decided on.
    pub version: u64,
    /// Correlation ids of its callback records.
    pub callbacks: Vec<String>,
    /// Keys of its delivery records.
    pub deliveries: Vec<String>,
    /// The scoped key of the idempotent start that made it, if any.
    pub idempotency_key: Option<String>,
}

/// A boxed future, so the traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What store operations return.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// Filters of [`ExecutionStore::executions`]. Every store serves them from
/// indexes: by state, by workflow and state, by the current step's plugin
/// and state, and by id for the creation times (ids are UUIDv7, so a time
/// range is an id range), so that a page costs the page, not the store.
#[derive(Debug, Default, Clone)]
pub struct ExecutionFilter {
    /// Only executions in this state.
    pub state: Option<ExecState>,
    /// Only executions of this workflow.
    pub workflow: Option<String>,
    /// Only executions whose current step runs on this plugin.
    pub plugin: Option<String>,
    /// Only executions created at or after this time (ms since the epoch).
    pub created_after_ms: Option<u64>,
    /// Only executions created before this time (ms since the epoch).
    pub created_before_ms: Option<u64>,
    /// At most this many.
    pub limit: Option<usize>,
    /// Highest id first (execution ids are UUIDv7: newest first) instead
    /// of lowest.
    pub newest_first: bool,
    /// Only executions past this id in the listing's order: the id a
    /// previous page ended with, to page on from there.
    pub past: Option<String>,
}

/// How far an execution's id time may stand from its `created_ms` (both
/// are read from the clock when it starts, one after the other): the id
/// range of a creation-time filter is widened by this much, and the
/// records in the margin are checked by `created_ms` itself.
pub const ID_CLOCK_MARGIN_MS: u64 = 1_000;

impl ExecutionFilter {
    /// Whether `id` comes after [`past`](Self::past) in this order.
    pub fn is_past(&self, id: &str) -> bool {
        match &self.past {
            None => true,
            Some(past) if self.newest_first => id < past.as_str(),
            Some(past) => id > past.as_str(),
        }
    }

    /// Whether `exec` passes every filter but the cursor and the limit.
    pub fn matches(&self, exec: &Execution) -> bool {
        self.state.is_none_or(|s| s == exec.state)
            && self.workflow.as_ref().is_none_or(|w| *w == exec.workflow)
            && self.plugin.as_ref().is_none_or(|p| {
                exec.steps
                    .get(exec.step_index)
                    .is_some_and(|s| s.plugin == *p)
            })
            && self.created_after_ms.is_none_or(|t| exec.created_ms >= t)
            && self.created_before_ms.is_none_or(|t| exec.created_ms < t)
    }

    /// The ids this filter's creation times can select, as string bounds
    /// (inclusive lower, exclusive upper): the prefix of a UUIDv7 made at
    /// that time, widened by [`ID_CLOCK_MARGIN_MS`].
    pub fn id_bounds(&self) -> (Option<String>, Option<String>) {
        let lower = self
            .created_after_ms
            .map(|t| uuid_v7_prefix(t.saturating_sub(ID_CLOCK_MARGIN_MS)));
        let upper = self
            .created_before_ms
            .map(|t| uuid_v7_prefix(t.saturating_add(ID_CLOCK_MARGIN_MS)));
        (lower, upper)
    }
}

/// The first characters of every UUIDv7 made at `ms` (its 48-bit time, in
/// lowercase hex as the hyphenated form writes it): ids made earlier sort
/// below it, ids made at or after it above.
pub fn uuid_v7_prefix(ms: u64) -> String {
    let ms = ms.min((1 << 48) - 1);
    format!("{:08x}-{:04x}", ms >> 16, ms & 0xffff)
}

/// Executions, and the one write path of every transition: [`Change`]s,
/// which also carry the callbacks, timers and deliveries that move with an
/// execution.
pub trait ExecutionStore: Send + Sync {
    /// One execution.
    fn execution<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Execution>>;
    /// Executions matching a filter, in id order (or its reverse).
    fn executions<'a>(&'a self, filter: &'a ExecutionFilter) -> StoreFuture<'a, Vec<Execution>>;
    /// Calls `visit` with every execution, in id order, one at a time (a
    /// scan that never holds them all in memory).
    fn each_execution<'a>(
        &'a self,
        visit: &'a mut (dyn FnMut(Execution) + Send),
    ) -> StoreFuture<'a, ()>;
    /// Ids of executions that ended in `state` (completed or failed) at or
    /// before `ended_ms`, the earliest ending first, at most `limit`: read
    /// from an index by end time, so its cost is the ended executions it
    /// returns, not every execution the store holds.
    fn ended<'a>(
        &'a self,
        state: ExecState,
        ended_ms: u64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<String>>;
    /// The idempotent start stored under the scoped `key`, if any.
    fn idempotent_start<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<IdempotentStart>>;
    /// Applies a change atomically, or refuses it with `Conflict`.
    /// Concurrent changes may be written together (one transaction for
    /// all), each still checked and refused on its own. Not durable until
    /// [`ExecutionStore::flush`].
    fn apply<'a>(&'a self, change: &'a Change) -> StoreFuture<'a, ()>;
    /// Makes everything applied so far durable. Concurrent callers share
    /// one disk flush.
    fn flush(&self) -> StoreFuture<'_, ()>;
}

/// Callback registrations (written through [`Change`]s).
pub trait CallbackStore: Send + Sync {
    /// One callback registration.
    fn callback<'a>(&'a self, correlation_id: &'a str) -> StoreFuture<'a, Option<CallbackRecord>>;
    /// Correlation ids of every callback record of an execution (early
    /// ones included), in no particular order.
    fn callbacks_of<'a>(&'a self, execution_id: &'a str) -> StoreFuture<'a, Vec<String>>;
}

/// Durable timers (written through [`Change`]s).
pub trait TimerStore: Send + Sync {
    /// Timers due at or before `now_ms`, earliest first, at most `limit`.
    fn due_timers(&self, now_ms: u64, limit: usize) -> StoreFuture<'_, Vec<Timer>>;
    /// When the earliest timer is due.
    fn next_timer_due(&self) -> StoreFuture<'_, Option<u64>>;
    /// [`TimerStore::due_timers`], for the timer loop. A store several
    /// daemons share hands each due timer to one of them at a time: the
    /// timers returned are claimed for `lease_ms` (by the store's clock,
    /// which it compares due times against instead of `now_ms`, so that
    /// nodes whose clocks differ agree), and a timer still stored when its
    /// claim lapses — its claimer died — is handed out again. Firing a
    /// timer stays a compare-and-swap, so a claim only saves nodes the
    /// work of losing that race.
    fn claim_due_timers(
        &self,
        now_ms: u64,
        limit: usize,
        lease_ms: u64,
    ) -> StoreFuture<'_, Vec<Timer>> {
        let _ = lease_ms;
        self.due_timers(now_ms, limit)
    }
    /// Pending timers in all, and how many of them are due at `now_ms`.
    /// Every `/metrics` scrape asks, so the total must be kept by the
    /// writes that add and remove timers, never counted by a scan; only
    /// the due ones (the timer loop's backlog) may be walked.
    fn timer_backlog(&self, now_ms: u64) -> StoreFuture<'_, (u64, u64)>;
}

/// Result deliveries (written through [`Change`]s).
pub trait DeliveryStore: Send + Sync {
    /// One result delivery, by [`crate::model::delivery_key`].
    fn delivery<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Delivery>>;
    /// An execution's deliveries, the `armed` record (seq 0) first, then
    /// by sequence.
    fn deliveries_of<'a>(&'a self, execution_id: &'a str) -> StoreFuture<'a, Vec<Delivery>>;
}

/// API token records, keyed by the token's hash.
pub trait TokenStore: Send + Sync {
    /// Stores a token record; durable before it returns.
    fn put_token<'a>(&'a self, token: &'a TokenRecord) -> StoreFuture<'a, ()>;
    /// The token record with this hash.
    fn token<'a>(&'a self, sha256: &'a str) -> StoreFuture<'a, Option<TokenRecord>>;
    /// Number of stored tokens.
    fn token_count(&self) -> StoreFuture<'_, usize>;
    /// Every token record, in no particular order.
    fn tokens(&self) -> StoreFuture<'_, Vec<TokenRecord>>;
    /// Forgets the token with this hash (a missing one is ignored);
    /// durable before it returns, so a revoked token is refused from then
    /// on, after a crash too.
    fn remove_token<'a>(&'a self, sha256: &'a str) -> StoreFuture<'a, ()>;
    /// Stores `token` only if no token is stored yet, atomically: of
    /// daemons making their first admin token at once on one store, one
    /// does. Whether it was stored; durable before it returns.
    fn put_first_token<'a>(&'a self, token: &'a TokenRecord) -> StoreFuture<'a, bool>;
    /// Forgets the token with this hash unless it is the last token with
    /// `admin`, atomically: revocations racing on one store (or on daemons
    /// sharing it) never leave no admin. `false` when it was kept; a
    /// missing token is nothing to keep. Durable before it returns.
    fn remove_token_keeping_an_admin<'a>(&'a self, sha256: &'a str) -> StoreFuture<'a, bool>;
    /// Records a use of the token with this hash at `at_ms` (kept if it
    /// is later than the one recorded). Never creates a record: a token
    /// revoked meanwhile stays revoked. Not flushed: a crash may forget
    /// the last minute of uses, nothing else.
    fn touch_token<'a>(&'a self, sha256: &'a str, at_ms: u64) -> StoreFuture<'a, ()>;
}

/// Component bytes by content hash, and the names of uploaded plugins.
pub trait ComponentStore: Send + Sync {
    /// Keeps a component's bytes under its content hash, so an execution
    /// suspended on an old version can resume on it after a restart.
    fn put_component<'a>(&'a self, hash: &'a str, bytes: &'a [u8]) -> StoreFuture<'a, ()>;
    /// A stored component.
    fn component<'a>(&'a self, hash: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;
    /// Drops a stored component's bytes (missing ones are ignored).
    fn remove_component<'a>(&'a self, hash: &'a str) -> StoreFuture<'a, ()>;
    /// Records that `name` is an uploaded plugin at version `hash` (its
    /// current one), and adds `hash` to the versions uploaded under
    /// `name`; durable before it returns.
    fn put_plugin_ref<'a>(&'a self, name: &'a str, hash: &'a str) -> StoreFuture<'a, ()>;
    /// Uploaded plugins: (name, hash of the current version), by name.
    fn plugin_refs(&self) -> StoreFuture<'_, Vec<(String, String)>>;
    /// Every version ever uploaded under `name` (hashes, in no particular
    /// order); empty for a name uploaded only before versions were
    /// recorded, whose versions only its executions name.
    fn plugin_versions<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Vec<String>>;
    /// Forgets the uploaded plugin `name`: its current version and its
    /// list of versions (not their bytes); durable before it returns.
    fn remove_plugin_ref<'a>(&'a self, name: &'a str) -> StoreFuture<'a, ()>;
}

/// Work one node of those sharing a store does for all of them. Each of
/// its writes is a compare-and-swap transition, so two nodes doing it at
/// once lose nothing; one leader per chore only spares the others reading
/// the same index and losing every race.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chore {
    /// Removing ended executions past their retention.
    Retention,
    /// Taking over the running executions of nodes that stopped.
    TakeOver,
}

impl Chore {
    /// Every chore.
    pub const ALL: [Self; 2] = [Self::Retention, Self::TakeOver];

    /// As logs and metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retention => "retention",
            Self::TakeOver => "take-over",
        }
    }
}

/// The daemons (nodes) sharing a store: which of them are alive, and the
/// running executions the dead ones left. A running execution names its
/// [`owner`](crate::model::Execution::owner); a node writes a heartbeat
/// every few seconds, and once an owner's heartbeat is older than the
/// lease, another node takes its executions over — a compare-and-swap
/// write that moves the version on, so whatever the old owner still
/// writes is refused (fencing).
pub trait NodeStore: Send + Sync {
    /// Whether several daemons may use this store at once. An embedded
    /// store is held by one process, which re-runs everything left
    /// running when it starts; only a shared one needs heartbeats.
    fn is_shared(&self) -> bool;
    /// Records that `node` is alive, now (by the store's clock).
    fn heartbeat<'a>(&'a self, node: &'a str) -> StoreFuture<'a, ()>;
    /// Forgets `node`, which stopped: what it left running is free to
    /// take at once, not a lease later.
    fn leave<'a>(&'a self, node: &'a str) -> StoreFuture<'a, ()>;
    /// Running executions no live node owns — no owner, or one without a
    /// heartbeat in the last `lease_ms` — but `node` (the caller, which
    /// knows its own), at most `limit`, lowest id first.
    fn orphaned<'a>(
        &'a self,
        node: &'a str,
        lease_ms: u64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Execution>>;
    /// Whether `node` leads `chore` now, and should do it. One node at a
    /// time leads each chore. The leader keeps the lead by asking again
    /// within `hold_ms`; it loses it when it stops asking for that long
    /// (a hung process), [`leave`](Self::leave)s, or its link to the
    /// store breaks (a killed one), and the next node to ask takes it.
    /// On a store one process holds, that process's node leads (its
    /// store keeps the same contract, in memory, for the nodes of that
    /// process).
    fn lead<'a>(&'a self, chore: Chore, node: &'a str, hold_ms: u64) -> StoreFuture<'a, bool>;
    /// Completes when a node sharing the store hints that something the
    /// others poll for changed (an uploaded or removed plugin, a node
    /// that left): a wake-up, never the truth, which the polls read. A
    /// store no other daemon shares never completes it.
    fn hinted(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::pending())
    }
}

/// Secrets of this data dir (the key callback tickets are derived from).
pub trait SecretStore: Send + Sync {
    /// A random 32-byte secret under `name`, created (and made durable) on
    /// first use and the same ever after.
    fn node_secret<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Vec<u8>>;
}

/// What metrics read from the store.
///
/// The counters are of this process's own write path, kept in memory by
/// the store: reading them touches no database, so they are plain calls.
pub trait StatsStore: Send + Sync {
    /// How many executions are in each state; read once at open to seed
    /// the metrics gauges, which transitions then keep current.
    fn count_executions_by_state(&self) -> StoreFuture<'_, Vec<(ExecState, u64)>>;
    /// How many executions of each workflow are in each state (only
    /// `workflow`'s, if given): (workflow, state, count), by workflow,
    /// without the states none is in. From counters every write keeps, so
    /// its cost is the workflows, not the executions.
    fn count_executions_by_workflow<'a>(
        &'a self,
        workflow: Option<&'a str>,
    ) -> StoreFuture<'a, Vec<(String, ExecState, u64)>>;
    /// Timer records the store could not decode and moved aside since it
    /// was opened (each is logged with its key).
    fn quarantined_timers(&self) -> u64;
    /// What the writes cost so far: changes against transactions, and
    /// flush requests against disk flushes (group apply and group commit).
    fn write_stats(&self) -> WriteStats;
}

/// Durable state of the daemon: every table, behind one handle.
pub trait Store:
    ExecutionStore
    + CallbackStore
    + TimerStore
    + DeliveryStore
    + TokenStore
    + ComponentStore
    + SecretStore
    + StatsStore
    + NodeStore
    + 'static
{
}

impl<T> Store for T where
    T: ExecutionStore
        + CallbackStore
        + TimerStore
        + DeliveryStore
        + TokenStore
        + ComponentStore
        + SecretStore
        + StatsStore
        + NodeStore
        + 'static
{
}

/// Counters of [`ExecutionStore::apply`] and [`ExecutionStore::flush`],
/// since the store was opened.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Changes applied or refused.
    pub changes: u64,
    /// Database transactions they took.
    pub transactions: u64,
    /// Calls of [`ExecutionStore::flush`].
    pub flush_requests: u64,
    /// Disk flushes they were served by.
    pub disk_flushes: u64,
}

/// Removes a timer whose wait already ended. Someone else removing it
/// first (a conflict) is as good.
pub async fn remove_timer(store: &dyn ExecutionStore, timer: Timer) -> Result<(), StoreError> {
    let change = Change {
        remove_timers: vec![timer],
        ..Default::default()
    };
    match store.apply(&change).await {
        Ok(()) | Err(StoreError::Conflict(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
