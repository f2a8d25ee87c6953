//! [`NodeStore`](super::NodeStore) for the stores one process holds (sled,
//! memory): the heartbeats live in that process, as every node that can
//! use the store does. Kept to the same contract as the shared store's, so
//! that the conformance suite checks it the same way.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Chore, ExecutionFilter, ExecutionStore, StoreError};
use crate::model::{ExecState, Execution};

/// Heartbeats by node id, and the leader of each chore, by this
/// process's monotonic clock.
#[derive(Debug, Default)]
pub(super) struct LocalNodes {
    beats: Mutex<HashMap<String, Instant>>,
    leads: Mutex<HashMap<Chore, Lead>>,
}

/// Who leads a chore, since when they last asked, and for how long that
/// holds.
#[derive(Debug)]
struct Lead {
    node: String,
    asked: Instant,
    hold: Duration,
}

impl LocalNodes {
    pub(super) fn heartbeat(&self, node: &str) {
        self.lock().insert(node.to_owned(), Instant::now());
    }

    pub(super) fn leave(&self, node: &str) {
        self.lock().remove(node);
        self.leads().retain(|_, lead| lead.node != node);
    }

    /// [`NodeStore::lead`](super::NodeStore::lead).
    pub(super) fn lead(&self, chore: Chore, node: &str, hold_ms: u64) -> bool {
        let mut leads = self.leads();
        let now = Instant::now();
        if let Some(lead) = leads.get(&chore)
            && lead.node != node
            && now.duration_since(lead.asked) <= lead.hold
        {
            return false;
        }
        let hold = Duration::from_millis(hold_ms);
        leads.insert(
            chore,
            Lead {
                node: node.to_owned(),
                asked: now,
                hold,
            },
        );
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.beats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn leads(&self) -> std::sync::MutexGuard<'_, HashMap<Chore, Lead>> {
        self.leads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`NodeStore::orphaned`](super::NodeStore::orphaned), by a scan of
    /// the running executions (few, on one machine).
    pub(super) async fn orphaned(
        &self,
        store: &dyn ExecutionStore,
        node: &str,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<Execution>, StoreError> {
        let running = store
            .executions(&ExecutionFilter {
                state: Some(ExecState::Running),
                ..Default::default()
            })
            .await?;
        let lease = Duration::from_millis(lease_ms);
        let beats = self.lock();
        let live = |owner: &str| beats.get(owner).is_some_and(|at| at.elapsed() <= lease);
        Ok(running
            .into_iter()
            .filter(|e| match e.owner.as_deref() {
                None => true,
                Some(owner) => owner != node && !live(owner),
            })
            .take(limit)
            .collect())
    }
}
