//! A callback-timeout or retry timer fires, or finds its wait over.

use super::*;

#[tokio::test]
async fn a_callback_timeout_claims_the_execution_and_expires_the_callback() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    let t = w.step(&Event::TimerFired(w.timers().await.remove(0))).await;
    assert_eq!(
        (t.effects.drive, t.effects.timer_fired),
        (true, Some("callback-timeout"))
    );
    let exec = w.exec().await;
    assert_eq!(exec.state, ExecState::Running);
    assert_eq!(exec.pending.unwrap().event, ResumeWith::Timeout);
    assert_eq!(w.callback("c1").await.state, CallbackState::Expired);
    assert!(w.timers().await.is_empty());
}

#[tokio::test]
async fn a_retry_timer_resumes_the_next_attempt_with_the_same_run_id() {
    let w = World::new();
    let started = w.start(&["a"]).await;
    w.returned(Ok(Outcome::RetryAfter(bindings::Retry {
        delay_ms: 10,
        state: b"s".to_vec(),
    })))
    .await;
    let t = w.step(&Event::TimerFired(w.timers().await.remove(0))).await;
    assert_eq!(t.effects.timer_fired, Some("retry"));
    let exec = w.exec().await;
    assert_eq!((exec.attempt, exec.state), (2, ExecState::Running));
    assert_eq!(exec.step_run_id, started.step_run_id);
    assert_eq!(exec.pending.unwrap().event, ResumeWith::Timer);
}

#[tokio::test]
async fn a_timer_whose_wait_is_over_is_stale() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    let timer = w.timers().await.remove(0);
    let moved = Timer {
        due_ms: timer.due_ms + 1,
        ..timer.clone()
    };
    assert_eq!(
        w.decide(&Event::TimerFired(moved)).await.unwrap_err(),
        Refusal::Stale
    );
    let other_kind = Timer {
        kind: TimerKind::Retry,
        ..timer.clone()
    };
    assert_eq!(
        w.decide(&Event::TimerFired(other_kind)).await.unwrap_err(),
        Refusal::Stale
    );
    w.step(&on_callback("c1", "won")).await;
    assert_eq!(
        w.decide(&Event::TimerFired(timer)).await.unwrap_err(),
        Refusal::Stale
    );
}
