//! A partner's callback: early, on time, duplicate, late, stale, racing a timer.

use super::*;

#[tokio::test]
async fn a_callback_before_suspend_is_stored_and_the_suspend_resumes_at_once() {
    let w = World::new();
    w.start(&["a"]).await;
    w.register("c1").await;
    let t = w.step(&on_callback("c1", "early")).await;
    assert!(t.change.execution.is_none(), "only the callback is written");
    assert!(matches!(
        w.callback("c1").await.state,
        CallbackState::Received { .. }
    ));
    assert_eq!(w.exec().await.state, ExecState::Running);

    let t = w.returned(Ok(suspend("c1", None))).await;
    assert_eq!(t.report(), StepReport::Running, "resumed without waiting");
    let exec = w.exec().await;
    assert_eq!(exec.state, ExecState::Running);
    assert!(w.timers().await.is_empty(), "no timeout timer to wait on");
    assert_eq!(w.callback("c1").await.state, CallbackState::Consumed);
    match &exec.pending.as_ref().unwrap().event {
        ResumeWith::Callback { callback, .. } => assert_eq!(callback.body, b"early"),
        other => panic!("resumed with {other:?}"),
    }
    assert_eq!(
        log_events(&exec)[1..],
        [
            ("suspended", ExecState::Running, ExecState::Suspended),
            ("callback", ExecState::Suspended, ExecState::Running)
        ]
    );
}

#[tokio::test]
async fn a_callback_on_time_claims_the_suspension_and_drops_its_timer() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    let t = w.step(&on_callback("c1", "ok")).await;
    assert!(t.effects.drive, "the claim starts a driver");
    let exec = w.exec().await;
    assert_eq!(exec.state, ExecState::Running);
    assert!(exec.waiting.is_none());
    let pending = exec.pending.unwrap();
    assert_eq!(pending.state, b"st");
    assert!(matches!(pending.event, ResumeWith::Callback { .. }));
    assert_eq!(w.callback("c1").await.state, CallbackState::Consumed);
    assert!(w.timers().await.is_empty());
}

#[tokio::test]
async fn a_duplicate_callback_is_refused_delivered_or_waiting() {
    let w = World::new();
    w.start(&["a"]).await;
    w.register("c1").await;
    w.step(&on_callback("c1", "early")).await;
    assert!(matches!(
        w.decide(&on_callback("c1", "again")).await,
        Err(Refusal::Duplicate(m)) if m.contains("waiting for delivery")
    ));
    w.returned(Ok(suspend("c1", None))).await;
    assert!(matches!(
        w.decide(&on_callback("c1", "again")).await,
        Err(Refusal::Duplicate(m)) if m.contains("already delivered")
    ));
}

#[tokio::test]
async fn a_callback_after_the_end_or_its_timeout_is_gone() {
    let w = World::new();
    w.start(&["a"]).await;
    w.register("c1").await;
    w.returned(Ok(Outcome::Complete(doc("done")))).await;
    assert!(matches!(
        w.decide(&on_callback("c1", "late")).await,
        Err(Refusal::Gone(m)) if m.contains("already completed")
    ));

    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    w.step(&Event::TimerFired(w.timers().await.remove(0))).await;
    assert!(matches!(
        w.decide(&on_callback("c1", "late")).await,
        Err(Refusal::Gone(m)) if m.contains("timed out")
    ));
}

#[tokio::test]
async fn a_callback_of_an_attempt_that_is_over_is_gone() {
    let w = World::new();
    w.start(&["a"]).await;
    w.register("c1").await;
    w.returned(Ok(Outcome::RetryAfter(bindings::Retry {
        delay_ms: 10,
        state: vec![],
    })))
    .await;
    w.step(&Event::TimerFired(w.timers().await.remove(0))).await;
    assert_eq!(w.exec().await.attempt, 2);
    assert!(matches!(
        w.decide(&on_callback("c1", "stale")).await,
        Err(Refusal::Gone(m)) if m.contains("attempt")
    ));
}

#[tokio::test]
async fn a_callback_while_its_execution_is_being_resumed_settles_first() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    // A timeout decided on the same read as the callback is mid-write:
    // the execution is running, the record still waiting.
    let timer = w.timers().await.remove(0);
    let mut t = w.decide(&Event::TimerFired(timer)).await.unwrap();
    t.change.callbacks.clear();
    w.store.apply(&t.change).await.unwrap();
    assert_eq!(
        w.decide(&on_callback("c1", "x")).await.unwrap_err(),
        Refusal::Settling
    );
}

#[tokio::test]
async fn a_callback_and_a_timeout_decided_together_have_exactly_one_winner() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    let by_callback = w.decide(&on_callback("c1", "x")).await.unwrap();
    let by_timer = w
        .decide(&Event::TimerFired(w.timers().await.remove(0)))
        .await
        .unwrap();
    w.store.apply(&by_callback.change).await.unwrap();
    assert!(matches!(
        w.store.apply(&by_timer.change).await,
        Err(crate::store::StoreError::Conflict(_))
    ));
    // Decided again on what is stored now, the timer is stale.
    let timer = by_timer.change.remove_timers[0].clone();
    assert_eq!(
        w.decide(&Event::TimerFired(timer)).await.unwrap_err(),
        Refusal::Stale
    );
}
