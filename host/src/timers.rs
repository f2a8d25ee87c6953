//! The durable timer loop: callback timeouts and `retry-after` delays live
//! in the store, ordered by due time, so they survive restarts (late ones
//! fire at once) and a million pending timers cost no thread and no memory.

use std::sync::Arc;
use std::time::Duration;

use crate::model::now_ms;
use crate::workflow::Workflows;

/// Longest sleep between looks at the store; bounds how late a timer added
/// by another process (or missed wake-up) can fire.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Timers fired per store scan.
const BATCH: usize = 256;

/// Fires due timers until cancelled.
pub async fn run(workflows: Arc<Workflows>) {
    let wake = workflows.timer_wake();
    loop {
        let now = now_ms();
        let due = match workflows.store().due_timers(now, BATCH) {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "cannot read timers; retrying");
                tokio::time::sleep(MAX_SLEEP).await;
                continue;
            }
        };
        let full = due.len() == BATCH;
        for timer in due {
            if let Err(e) = workflows.fire_timer(timer).await {
                tracing::error!(error = %e, "timer could not fire; retrying");
            }
        }
        if full {
            continue;
        }
        let sleep = match workflows.store().next_timer_due() {
            Ok(Some(due)) => Duration::from_millis(due.saturating_sub(now_ms())).min(MAX_SLEEP),
            _ => MAX_SLEEP,
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = wake.notified() => {}
        }
    }
}
