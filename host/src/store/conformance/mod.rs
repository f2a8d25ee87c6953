//! The contract of a store, as tests every backend runs: one line,
//! [`store_conformance!`](crate::store_conformance), runs the whole suite
//! against a backend. The workflow's correctness rests on these
//! properties (a refused change writes nothing, one racing writer wins,
//! timers come back by due time), so a new backend proves it can replace
//! sled here before anything else runs on it.
//!
//! Public, not `#[cfg(test)]`, so that a backend in another crate can run
//! it too; hidden from the docs, as it is no API of the daemon.
#![doc(hidden)]

mod changes;
mod listing;
mod nodes;
mod removal;
mod tables;

use std::sync::Arc;

pub use self::changes::*;
pub use self::listing::*;
pub use self::nodes::*;
pub use self::removal::*;
pub use self::tables::*;
use super::{Change, Store, StoreError};
use crate::model::{
    CallbackRecord, CallbackState, Delivery, DeliveryState, Doc, Execution, Timer, TimerKind,
    delivery_key,
};

/// A store under test.
pub trait Backend: Send + 'static {
    /// A handle to the store (the same store every call).
    fn store(&self) -> Arc<dyn Store>;
    /// Closes the store and opens its data again, as a restarted daemon
    /// would; every handle from [`Backend::store`] must be dropped first.
    /// `false` for a store that keeps nothing across a restart, whose
    /// durability checks are then skipped.
    fn reopen(&mut self) -> bool;
}

/// A store that keeps nothing across a restart (the in-memory one).
pub struct Volatile(Arc<dyn Store>);

impl Volatile {
    /// Tests `store`.
    pub fn new(store: impl Store) -> Self {
        Self(Arc::new(store))
    }
}

impl Backend for Volatile {
    fn store(&self) -> Arc<dyn Store> {
        self.0.clone()
    }

    fn reopen(&mut self) -> bool {
        false
    }
}

/// Runs the conformance suite against the [`Backend`] `$backend` makes
/// (evaluated once per test, so each test gets a fresh store).
#[macro_export]
macro_rules! store_conformance {
    ($backend:expr) => {
        $crate::store_conformance!(@each $backend;
            a_stale_change_is_refused_and_writes_nothing,
            creating_a_record_twice_conflicts,
            one_of_many_racing_writers_wins,
            an_early_callback_is_stored_then_claimed_once,
            timers_come_due_in_order,
            deliveries_are_found_by_key_and_by_execution,
            executions_are_listed_filtered_and_visited,
            listings_follow_filters_transitions_and_removals,
            counts_by_workflow_follow_transitions,
            an_idempotent_start_is_stored_once_and_removed_with_its_execution,
            tokens_are_stored_by_hash,
            token_rules_hold_when_writes_race,
            components_are_kept_by_hash,
            plugin_refs_list_every_version_until_removed,
            counts_by_state_follow_transitions,
            the_node_secret_never_changes,
            records_survive_reopening,
            ended_executions_are_found_by_end_time,
            callbacks_are_found_by_execution,
            a_removal_takes_every_record_of_the_execution,
            a_removal_racing_writes_is_all_or_nothing,
            orphans_are_the_running_executions_of_dead_nodes,
            claimed_timers_go_to_one_caller_until_the_claim_lapses,
            one_node_at_a_time_leads_a_chore
        );
    };
    (@each $backend:expr; $($test:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                $crate::store::conformance::$test($backend).await;
            }
        )*
    };
}

/// An execution in state `running`, at `version`.
pub fn execution(id: &str, version: u64) -> Execution {
    let mut exec = Execution::new(
        id.into(),
        "w".into(),
        vec![],
        Doc::json(&serde_json::json!({})),
        "r".into(),
        0,
    );
    exec.version = version;
    exec
}

/// A registered callback of execution `e`, at `version`.
pub fn callback(id: &str, version: u64) -> CallbackRecord {
    CallbackRecord {
        correlation_id: id.into(),
        version,
        execution_id: "e".into(),
        step_run_id: "r".into(),
        attempt: Some(1),
        secret_sha256: String::new(),
        require_token: false,
        state: CallbackState::Registered,
        created_ms: 0,
    }
}

pub(super) fn timer(due_ms: u64, execution_id: &str, kind: TimerKind) -> Timer {
    Timer {
        due_ms,
        execution_id: execution_id.into(),
        kind,
    }
}

pub(super) fn delivery(execution_id: &str, seq: u64, version: u64) -> Delivery {
    Delivery {
        execution_id: execution_id.into(),
        seq,
        version,
        url: "https://client.example/results".into(),
        state: DeliveryState::Pending,
        webhook_id: None,
        body: format!("result {seq} v{version}"),
        attempts: vec![],
        due_ms: None,
        created_ms: 0,
        updated_ms: 0,
    }
}

pub(super) fn with_execution(e: Execution) -> Change {
    Change {
        execution: Some(e),
        ..Default::default()
    }
}

/// Applies `change(i)` for `i` in `0..n`, all at once from separate
/// tasks; the `i`s whose change applied (every other must have been
/// refused as a conflict).
pub(super) async fn race(
    store: &Arc<dyn Store>,
    n: u64,
    change: impl Fn(u64) -> Change,
) -> Vec<u64> {
    let racers: Vec<_> = (0..n)
        .map(|i| {
            let store = store.clone();
            let change = change(i);
            tokio::spawn(async move { (i, store.apply(&change).await) })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        match racer.await.unwrap() {
            (i, Ok(())) => winners.push(i),
            (_, Err(StoreError::Conflict(_))) => {}
            (_, Err(e)) => panic!("unexpected error {e}"),
        }
    }
    winners
}

pub(super) fn is_conflict(result: Result<(), StoreError>) -> bool {
    matches!(result, Err(StoreError::Conflict(_)))
}
