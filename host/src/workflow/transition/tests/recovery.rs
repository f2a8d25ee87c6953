//! What a restarted daemon calls, and what each event reads.

use super::*;

#[tokio::test]
async fn recovery_resumes_a_claimed_callback_with_the_same_run_id_and_event() {
    let w = World::new();
    let started = w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    w.step(&on_callback("c1", "payload")).await;
    // What a restarted daemon reads back and calls.
    let exec = w.exec().await;
    match crate::workflow::driver::invocation(&exec) {
        Invocation::Resume {
            ctx, state, event, ..
        } => {
            assert_eq!(ctx.step_run_id, started.step_run_id);
            assert_eq!(state, b"st");
            assert!(matches!(
                event,
                bindings::ResumeEvent::Callback(c) if c.body == b"payload"
            ));
        }
        other => panic!("expected a resume, got {other:?}"),
    }
    // A running execution with nothing claimed re-runs its step.
    let w = World::new();
    w.start(&["a"]).await;
    assert!(matches!(
        crate::workflow::driver::invocation(&w.exec().await),
        Invocation::Run { .. }
    ));
}

#[test]
fn needs_names_the_records_each_event_reads() {
    let mut exec = crate::store::conformance::execution("e1", 1);
    exec.steps = vec![
        StepSpec {
            name: "s1".into(),
            plugin: "a".into(),
            config: serde_json::Value::Null,
            plugin_hash: None,
        },
        StepSpec {
            name: "s2".into(),
            plugin: "b".into(),
            config: serde_json::Value::Null,
            plugin_hash: None,
        },
    ];
    let returned = |o| Event::Returned {
        version: 1,
        outcome: Ok(o),
    };
    assert_eq!(
        needs(&exec, &returned(suspend("c9", None)))
            .callback
            .as_deref(),
        Some("c9")
    );
    assert_eq!(
        needs(&exec, &returned(Outcome::Complete(doc("x")))).plugins,
        ["b"]
    );
    assert_eq!(needs(&exec, &Event::Retry).plugins, ["a"]);
    assert_eq!(needs(&exec, &Event::Skip).plugins, ["b"]);
    assert_eq!(needs(&exec, &Event::Cancel), Needs::default());
    exec.waiting = Some(Waiting {
        correlation_id: Some("c2".into()),
        state: vec![],
        due_ms: 1,
    });
    assert_eq!(needs(&exec, &Event::Cancel).callback.as_deref(), Some("c2"));
}

/// A take-over writes the next version (fencing the old owner), keeps the
/// step run and its claimed resume, logs `taken-over`, and has the new
/// owner drive it; it applies only to the running version it was found at.
#[tokio::test]
async fn a_take_over_moves_the_version_on_and_keeps_the_claimed_resume() {
    let w = World::new();
    let started = w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    w.step(&on_callback("c1", "payload")).await;
    let version = w.exec().await.version;
    assert_eq!(
        w.decide(&Event::TakeOver {
            version: version - 1
        })
        .await
        .unwrap_err(),
        Refusal::Lost,
        "found at an older version: someone moved it since"
    );
    let t = w.step(&Event::TakeOver { version }).await;
    assert!(t.effects.drive, "the node that takes it over drives it");
    assert_eq!(t.from, Some(ExecState::Running));
    let exec = w.exec().await;
    assert_eq!(exec.version, version + 1);
    assert_eq!(exec.state, ExecState::Running);
    assert_eq!(exec.step_run_id, started.step_run_id);
    assert!(
        exec.pending.is_some(),
        "the claimed callback is resumed again"
    );
    assert_eq!(
        log_events(&exec).last(),
        Some(&("taken-over", ExecState::Running, ExecState::Running))
    );

    // Nothing but a running execution is taken over.
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", None).await;
    let version = w.exec().await.version;
    assert_eq!(
        w.decide(&Event::TakeOver { version }).await.unwrap_err(),
        Refusal::Lost
    );
}
