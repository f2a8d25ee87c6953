//! Operator actions: retry, skip, cancel.

use super::*;

async fn failed_on_first_step(w: &World) {
    w.start(&["a", "b"]).await;
    w.returned(Err(StepError::Trap("x".into()))).await;
}

#[tokio::test]
async fn retry_runs_the_failed_step_again_on_the_current_version() {
    let w = World::new();
    failed_on_first_step(&w).await;
    let run_id = w.exec().await.step_run_id;
    let t = w.step(&Event::Retry).await;
    assert!(t.effects.drive);
    assert_eq!(t.from, Some(ExecState::Failed));
    let exec = w.exec().await;
    assert_eq!((exec.state, exec.attempt), (ExecState::Running, 2));
    assert_eq!(exec.step_run_id, run_id, "partners can dedupe");
    assert_eq!(exec.steps[0].plugin_hash.as_deref(), Some("a-v2"));
    assert!(exec.error.is_none());
}

#[tokio::test]
async fn skip_hands_the_input_to_the_next_step_or_completes_with_it() {
    let w = World::new();
    failed_on_first_step(&w).await;
    let input = w.exec().await.document;
    w.step(&Event::Skip).await;
    let exec = w.exec().await;
    assert_eq!((exec.state, exec.step_index), (ExecState::Running, 1));
    assert_eq!(exec.document, input);
    assert_eq!(exec.steps[1].plugin_hash.as_deref(), Some("b-v1"));
    // The log says what happened: the failed step was skipped (failed →
    // running), then the next one started.
    let moves: Vec<_> = exec.status_log[exec.status_log.len() - 2..]
        .iter()
        .map(|e| (e.event.as_str(), e.from, e.to))
        .collect();
    assert_eq!(
        moves,
        [
            ("skipped", ExecState::Failed, ExecState::Running),
            ("started", ExecState::Running, ExecState::Running)
        ]
    );

    let w = World::new();
    w.start(&["a"]).await;
    w.returned(Err(StepError::Trap("x".into()))).await;
    let t = w.step(&Event::Skip).await;
    assert!(!t.effects.drive);
    let exec = w.exec().await;
    assert_eq!(exec.state, ExecState::Completed);
    assert_eq!(exec.output.unwrap(), input);
}

#[tokio::test]
async fn retry_and_skip_apply_to_failed_executions_with_loaded_plugins_only() {
    let w = World::new();
    w.start(&["a"]).await;
    for event in [Event::Retry, Event::Skip] {
        assert_eq!(
            w.decide(&event).await.unwrap_err(),
            Refusal::WrongState(ExecState::Running)
        );
    }
    let mut w = World::new();
    failed_on_first_step(&w).await;
    w.plugins.clear();
    assert_eq!(
        w.decide(&Event::Retry).await.unwrap_err(),
        Refusal::UnknownPlugin("a".into())
    );
    assert_eq!(
        w.decide(&Event::Skip).await.unwrap_err(),
        Refusal::UnknownPlugin("b".into())
    );
}

#[tokio::test]
async fn cancel_fails_a_suspended_execution_expires_its_callback_and_drops_its_timer() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    let t = w.step(&Event::Cancel).await;
    assert_eq!(t.from, Some(ExecState::Suspended));
    let exec = w.exec().await;
    assert_eq!(error_code(&exec), "cancelled");
    assert!(exec.waiting.is_none());
    assert_eq!(w.callback("c1").await.state, CallbackState::Expired);
    assert!(w.timers().await.is_empty());
}

#[tokio::test]
async fn cancel_applies_to_running_executions_and_not_to_ended_ones() {
    let w = World::new();
    w.start(&["a"]).await;
    w.step(&Event::Cancel).await;
    assert_eq!(error_code(&w.exec().await), "cancelled");
    assert_eq!(
        w.decide(&Event::Cancel).await.unwrap_err(),
        Refusal::WrongState(ExecState::Failed)
    );
}
