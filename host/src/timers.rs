//! The durable timer loop: callback timeouts, `retry-after` delays and
//! result-delivery retries live in the store, ordered by due time, so they
//! survive restarts (late ones fire at once, on the first look after the
//! start) and a million pending timers cost no thread and no memory.
//!
//! Firing a timer only claims what it guards (one compare-and-swap write)
//! and hands the work to a task of its own, so a slow step or a slow client
//! never holds the loop up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::delivery::Deliverer;
use crate::model::{Timer, TimerKind, now_ms};
use crate::store::{Change, Store, StoreError};
use crate::workflow::Workflows;

/// Longest sleep between looks at the store; bounds how late a timer added
/// by another process (or missed wake-up) can fire.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Timers fired per store scan.
const BATCH: usize = 256;
/// Pause after a timer failed to fire (storage trouble), so a timer that
/// keeps failing does not spin the loop.
const ERROR_PAUSE: Duration = Duration::from_millis(200);

/// Wakes the timer loop early, when a timer is written that is due before
/// the loop would next look. Most timers (callback timeouts of minutes or
/// hours) are not: the loop is woken for the few that are, instead of
/// scanning the store again after every suspension.
#[derive(Debug)]
pub struct TimerWake {
    notify: tokio::sync::Notify,
    /// When the sleeping loop looks next (ms since the epoch); [`LOOKING`]
    /// while it is looking, so a timer written meanwhile always wakes it.
    planned_ms: AtomicU64,
}

/// `planned_ms` while the loop is not asleep: every due time is before it,
/// so a timer committed while the loop reads the store is never missed.
const LOOKING: u64 = u64::MAX;

impl Default for TimerWake {
    fn default() -> Self {
        Self {
            notify: tokio::sync::Notify::new(),
            planned_ms: AtomicU64::new(LOOKING),
        }
    }
}

impl TimerWake {
    /// A timer due at `due_ms` was written (and committed).
    pub fn added(&self, due_ms: u64) {
        if due_ms < self.planned_ms.load(Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }

    /// A timer due now was written.
    pub fn now(&self) {
        self.notify.notify_one();
    }

    /// Sleeps until `sleep` has passed or an earlier timer is added. Any
    /// `added` from the loop's scan on wakes it (the permit is kept).
    async fn sleep(&self, sleep: Duration) {
        let planned = now_ms().saturating_add(sleep.as_millis() as u64);
        self.planned_ms.store(planned, Ordering::SeqCst);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = self.notify.notified() => {}
        }
        self.planned_ms.store(LOOKING, Ordering::SeqCst);
    }
}

/// Removes a timer whose wait already ended. Someone else removing it
/// first (a conflict) is as good.
pub(crate) async fn drop_stale(store: &dyn Store, timer: Timer) -> Result<(), StoreError> {
    match store
        .apply(&Change {
            remove_timers: vec![timer],
            ..Default::default()
        })
        .await
    {
        Ok(()) | Err(StoreError::Conflict(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Fires due timers until the task is aborted.
pub async fn run(workflows: Arc<Workflows>, deliverer: Arc<Deliverer>) {
    let wake = workflows.timer_wake();
    loop {
        let now = now_ms();
        let due = match workflows.store().due_timers(now, BATCH).await {
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
                TimerKind::Delivery { .. } => deliverer.fire(timer).await,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A short `retry-after` committed while the loop reads the store (it
    /// is not asleep yet) must cut the loop's next sleep short.
    #[tokio::test]
    async fn a_timer_added_while_the_loop_looks_wakes_its_next_sleep() {
        let wake = TimerWake::default();
        // The loop is looking: a timer due in 10 ms is committed.
        wake.added(now_ms() + 10);
        let slept = tokio::time::timeout(Duration::from_millis(500), wake.sleep(MAX_SLEEP)).await;
        assert!(
            slept.is_ok(),
            "the loop slept on past a timer added while it looked"
        );

        // Asleep until far ahead, an earlier timer wakes it; a later one does not.
        let wake = Arc::new(TimerWake::default());
        let sleeper = tokio::spawn({
            let wake = wake.clone();
            async move { wake.sleep(Duration::from_secs(60)).await }
        });
        while wake.planned_ms.load(Ordering::SeqCst) == LOOKING {
            tokio::task::yield_now().await;
        }
        wake.added(now_ms() + 120_000);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !sleeper.is_finished(),
            "a later timer must not wake the loop"
        );
        wake.added(now_ms() + 10);
        tokio::time::timeout(Duration::from_millis(500), sleeper)
            .await
            .expect("an earlier timer wakes the sleeping loop")
            .unwrap();
    }
}
