//! The timer loop's alarm clock. The state machine rings it when it
//! commits a timer due before the loop would next look; the loop
//! (`crate::timers`, a layer above) sleeps on it. It lives here, with the
//! one that rings it, so the state machine knows nothing of the loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::model::now_ms;

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
    pub async fn sleep(&self, sleep: Duration) {
        let planned = now_ms().saturating_add(sleep.as_millis() as u64);
        self.planned_ms.store(planned, Ordering::SeqCst);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = self.notify.notified() => {}
        }
        self.planned_ms.store(LOOKING, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A short `retry-after` committed while the loop reads the store (it
    /// is not asleep yet) must cut the loop's next sleep short.
    #[tokio::test]
    async fn a_timer_added_while_the_loop_looks_wakes_its_next_sleep() {
        let wake = TimerWake::default();
        // The loop is looking: a timer due in 10 ms is committed.
        wake.added(now_ms() + 10);
        let slept = tokio::time::timeout(
            Duration::from_millis(500),
            wake.sleep(Duration::from_secs(1)),
        )
        .await;
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
