//! Derived tickets: nothing is stored when one is handed out; the
//! `suspend` on it, or an early callback, creates its record, and the two
//! racing for it create it once.

use super::*;

#[tokio::test]
async fn a_suspend_on_a_derived_ticket_creates_its_waiting_record() {
    let w = World::new();
    w.start(&["a"]).await;
    let rec = w.derived("c1").await;
    let event = w.returned_event(Ok(suspend("c1", Some(5_000)))).await;
    let t = w.decide_with(&event, Some(&rec)).await.unwrap();
    assert_eq!(t.change.callbacks.len(), 1);
    assert_eq!(t.change.callbacks[0].version, 1, "created by this write");
    w.store.apply(&t.change).await.unwrap();
    assert_eq!(w.exec().await.state, ExecState::Suspended);
    assert_eq!(w.callback("c1").await.state, CallbackState::Waiting);
}

#[tokio::test]
async fn an_early_callback_on_a_derived_ticket_is_kept_for_the_suspend() {
    let w = World::new();
    w.start(&["a"]).await;
    let rec = w.derived("c1").await;
    let t = w
        .decide_with(&on_callback("c1", "early"), Some(&rec))
        .await
        .unwrap();
    assert!(t.change.execution.is_none(), "the step has not suspended");
    w.store.apply(&t.change).await.unwrap();
    assert!(matches!(
        w.callback("c1").await.state,
        CallbackState::Received { .. }
    ));
    // The suspend finds the stored callback first and resumes at once.
    let event = w.returned_event(Ok(suspend("c1", None))).await;
    let t = w.decide_with(&event, Some(&rec)).await.unwrap();
    w.store.apply(&t.change).await.unwrap();
    let exec = w.exec().await;
    assert_eq!(exec.state, ExecState::Running);
    assert!(matches!(
        exec.pending.map(|p| p.event),
        Some(ResumeWith::Callback { .. })
    ));
    assert_eq!(w.callback("c1").await.state, CallbackState::Consumed);
}

#[tokio::test]
async fn an_early_callback_and_the_suspend_decided_at_once_create_the_record_once() {
    let w = World::new();
    w.start(&["a"]).await;
    let rec = w.derived("c1").await;
    let suspend_on = w.returned_event(Ok(suspend("c1", None))).await;
    // Both decided on the same reads (nothing stored yet), then written.
    let early = w
        .decide_with(&on_callback("c1", "early"), Some(&rec))
        .await
        .unwrap();
    let parked = w.decide_with(&suspend_on, Some(&rec)).await.unwrap();
    w.store.apply(&early.change).await.unwrap();
    assert!(matches!(
        w.store.apply(&parked.change).await,
        Err(crate::store::StoreError::Conflict(_))
    ));
    // The loser decides again on what is stored: it resumes at once.
    let t = w.decide_with(&suspend_on, Some(&rec)).await.unwrap();
    w.store.apply(&t.change).await.unwrap();
    assert_eq!(w.exec().await.state, ExecState::Running);
    assert_eq!(w.callback("c1").await.state, CallbackState::Consumed);
}

#[tokio::test]
async fn a_callback_on_a_derived_ticket_of_an_older_attempt_is_gone() {
    let w = World::new();
    w.start(&["a"]).await;
    let mut rec = w.derived("c1").await;
    rec.attempt = Some(0);
    let refusal = w
        .decide_with(&on_callback("c1", "late"), Some(&rec))
        .await
        .unwrap_err();
    assert!(matches!(refusal, Refusal::Gone(_)), "{refusal:?}");
}
