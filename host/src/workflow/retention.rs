//! Retention: ended executions are removed once they are older than
//! `[retention]` says, so that a daemon's data dir holds what is waiting
//! and what ended lately, not everything it ever ran.
//!
//! A chore rather than a timer per execution: the store keeps ended
//! executions in an index by end time ([`ExecutionStore::ended`]), so
//! each sweep reads exactly the executions that are due, whatever number
//! of others are waiting. Each removal goes through the one commit path
//! as an [`Event::Remove`], decided on what the execution is when it is
//! removed: one that was retried meanwhile, or whose result is still
//! being delivered, is left alone. Nothing about the chore itself needs
//! to be stored: after a restart the index says what is due again. Of the
//! daemons sharing a store, one sweeps at a time ([`Chore::Retention`]).
//!
//! [`ExecutionStore::ended`]: crate::store::ExecutionStore::ended

use super::driver::{Durability, Known};
use super::lead::Leading;
use super::transition::Event;
use super::*;
use crate::config::RetentionConfig;
use crate::store::Chore;

/// Executions removed per read of the index.
const BATCH: usize = 256;

/// Pause between sweeps that found nothing more to remove.
const IDLE: Duration = Duration::from_secs(1);

impl Workflows {
    /// Removes what `retention` says is due, until the task is dropped,
    /// while this node leads the chore (held for `hold_ms` between asks).
    pub async fn run_retention(self: Arc<Self>, retention: RetentionConfig, hold_ms: u64) {
        let mut leading = Leading::default();
        loop {
            if !self.leads(Chore::Retention, hold_ms, &mut leading).await {
                tokio::time::sleep(IDLE).await;
                continue;
            }
            match self.sweep(&retention, now_ms()).await {
                // A full batch: more may be due; go on at once (letting
                // the requests in between through).
                Ok(n) if n == BATCH => tokio::task::yield_now().await,
                Ok(_) => tokio::time::sleep(IDLE).await,
                Err(e) => {
                    tracing::warn!(error = %e, "retention sweep failed; trying again");
                    tokio::time::sleep(IDLE).await;
                }
            }
        }
    }

    /// One sweep at `now_ms`: removes up to a batch of ended executions of
    /// each state that are due. Returns the most it removed of one state
    /// (a full batch means more may be due). Executions still delivering
    /// their result stay at the head of the index until that is over, so
    /// a sweep never spins on them.
    pub async fn sweep(
        self: &Arc<Self>,
        retention: &RetentionConfig,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        let mut most = 0;
        for (state, keep_ms) in [
            (ExecState::Completed, retention.completed_ms),
            (ExecState::Failed, retention.failed_ms),
        ] {
            if keep_ms == 0 {
                continue;
            }
            let due = now_ms.saturating_sub(keep_ms);
            let ids = self.store.ended(state, due, BATCH).await?;
            let event = Event::Remove { due: Some(due) };
            // All of a batch at once: their writes then share transactions
            // (group apply), where one after another each
            // would wait its turn on a busy runtime, and a daemon ending
            // executions faster than that would never catch up.
            let settled = futures_util::future::join_all(
                ids.iter()
                    .map(|id| self.settle(id, &event, Durability::Lazy, None, Known::default())),
            )
            .await;
            let mut removed = 0;
            for outcome in settled {
                // Refused: retried, or still delivering; the index offers
                // it again at its next end, or next sweep.
                removed += usize::from(outcome?.is_ok());
            }
            most = most.max(removed);
        }
        Ok(most)
    }
}
