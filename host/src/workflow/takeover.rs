//! Daemons sharing a store keep each other's executions going: each writes
//! a heartbeat, and takes over the running executions of a node whose
//! heartbeat is older than the lease ([`NodeStore`](crate::store::NodeStore)).
//! A take-over is a transition like any other ([`Event::TakeOver`]), so it
//! moves the version on: whatever the presumed-dead node still writes is
//! refused by its compare-and-swap (fencing), and the step runs again here
//! with the same step-run-id.
//!
//! One node at a time looks for orphans ([`Chore::TakeOver`]); every
//! node heartbeats.
//!
//! On an embedded store nothing of this runs: the one daemon that holds it
//! re-runs what was left running when it starts ([`Workflows::recover`]).

use super::driver::{Durability, Known};
use super::lead::Leading;
use super::transition::Event;
use super::*;
use crate::store::Chore;

/// Orphans taken over per look.
const BATCH: usize = 64;

impl Workflows {
    /// Takes over the running executions no live node owns; returns how
    /// many this node took (another node may win some: their
    /// compare-and-swap decides).
    pub async fn take_over_orphans(self: &Arc<Self>, lease_ms: u64) -> Result<usize, StoreError> {
        let mut taken = 0;
        loop {
            let orphans = self.store.orphaned(&self.node, lease_ms, BATCH).await?;
            let full = orphans.len() == BATCH;
            let mut progressed = false;
            for exec in orphans {
                let (id, previous) = (exec.id.clone(), exec.owner.clone());
                let event = Event::TakeOver {
                    version: exec.version,
                };
                let known = Known {
                    execution: Some(exec),
                    ..Known::default()
                };
                if self
                    .settle(&id, &event, Durability::Now, None, known)
                    .await?
                    .is_ok()
                {
                    taken += 1;
                    progressed = true;
                    tracing::warn!(
                        execution_id = %id,
                        previous_owner = previous.as_deref().unwrap_or("none"),
                        node = %self.node,
                        "took over a running execution whose node stopped; its step runs again here"
                    );
                }
            }
            if !full || !progressed {
                break;
            }
        }
        self.metrics.recovered(taken);
        Ok(taken)
    }

    /// Writes this node's heartbeat every third of the lease, takes up
    /// plugins uploaded through other nodes every few seconds, and, while
    /// it leads the take-over, looks for orphans every second (a node
    /// that left cleanly frees its executions at once; a cheap indexed
    /// read finds them), until the task is aborted. A heartbeat that cannot be written is logged and
    /// tried again: if that lasts a lease, the other nodes take this one's
    /// executions over, and its own late writes are refused.
    pub async fn run_membership(self: Arc<Self>, lease_ms: u64) {
        let cadence = crate::config::ClusterConfig { lease_ms };
        let (beat_every, look_every) = (cadence.beat_every(), cadence.look_every());
        let mut last_beat = Instant::now();
        let mut looks = 0u64;
        let mut leading = Leading::default();
        loop {
            // A hint from another node (a plugin uploaded or removed, a
            // node that left) means look now; the sleep is the truth.
            let hinted = tokio::select! {
                () = tokio::time::sleep(look_every) => false,
                () = self.store.hinted() => true,
            };
            if last_beat.elapsed() + look_every / 2 >= beat_every {
                match self.store.heartbeat(&self.node).await {
                    Ok(()) => last_beat = Instant::now(),
                    Err(e) => {
                        tracing::error!(node = %self.node, error = %e, "cannot write this node's heartbeat; retrying");
                        continue;
                    }
                }
            }
            if self.leads(Chore::TakeOver, lease_ms, &mut leading).await
                && let Err(e) = self.take_over_orphans(lease_ms).await
            {
                tracing::error!(node = %self.node, error = %e, "cannot look for executions of stopped nodes; retrying");
            }
            looks += 1;
            if (hinted
                || looks.is_multiple_of(u64::from(crate::config::ClusterConfig::UPLOAD_LOOKS)))
                && let Err(e) = self.registry.sync_uploads().await
            {
                tracing::error!(node = %self.node, error = %e, "cannot read the uploaded plugins; retrying");
            }
        }
    }

    /// Says this node stopped: what it leaves running is taken over by
    /// the others at once, not a lease later.
    pub async fn leave(&self) {
        if let Err(e) = self.store.leave(&self.node).await {
            tracing::warn!(node = %self.node, error = %e, "cannot remove this node's heartbeat; the others take its executions over when its lease runs out");
        }
    }
}
