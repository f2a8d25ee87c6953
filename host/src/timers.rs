//! The durable timer loop: callback timeouts, `retry-after` delays and
//! result-delivery retries live in the store, ordered by due time, so they
//! survive restarts (late ones fire at once, on the first look after the
//! start) and a million pending timers cost no thread and no memory.
//!
//! Firing a timer only claims what it guards (one compare-and-swap write)
//! and hands the work to a task of its own, so a slow step or a slow client
//! never holds the loop up.

use std::sync::Arc;
use std::time::Duration;

use crate::model::{Timer, TimerKind, now_ms};
use crate::store::{BoxFuture, StoreError};
use crate::workflow::Workflows;

/// Longest sleep between looks at the store; bounds how late a timer added
/// by another process (or missed wake-up) can fire.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Timers fired per store scan.
const BATCH: usize = 256;
/// Pause after a timer failed to fire (storage trouble), so a timer that
/// keeps failing does not spin the loop.
const ERROR_PAUSE: Duration = Duration::from_millis(200);

/// Fires the timers of result deliveries (`crate::delivery`, a layer
/// above): the loop hands them over and knows nothing else of delivery.
pub trait DeliveryTimers: Send + Sync {
    /// Fires one due delivery timer.
    fn fire_delivery(self: Arc<Self>, timer: Timer) -> BoxFuture<'static, Result<(), StoreError>>;
}

/// Fires due timers until the task is aborted. On a store several daemons
/// share, each timer is claimed for `claim_ms` by the node that fires it
/// ([`crate::store::TimerStore::claim_due_timers`]).
pub async fn run(workflows: Arc<Workflows>, deliveries: Arc<dyn DeliveryTimers>, claim_ms: u64) {
    let wake = workflows.timer_wake();
    loop {
        let now = now_ms();
        let claimed = workflows.store().claim_due_timers(now, BATCH, claim_ms);
        let due = match claimed.await {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "cannot read timers; retrying");
                tokio::time::sleep(MAX_SLEEP).await;
                continue;
            }
        };
        let full = due.len() == BATCH;
        let mut failed = false;
        for timer in due {
            let execution_id = timer.execution_id.clone();
            let fired = match timer.kind {
                TimerKind::Delivery { .. } => deliveries.clone().fire_delivery(timer).await,
                _ => workflows.fire_timer(timer).await,
            };
            if let Err(e) = fired {
                failed = true;
                tracing::error!(%execution_id, error = %e, "timer could not fire; retrying");
            }
        }
        if failed {
            tokio::time::sleep(ERROR_PAUSE).await;
            continue;
        }
        if full {
            continue;
        }
        let sleep = match workflows.store().next_timer_due().await {
            Ok(Some(due)) => Duration::from_millis(due.saturating_sub(now_ms())).min(MAX_SLEEP),
            _ => MAX_SLEEP,
        };
        wake.sleep(sleep).await;
    }
}
