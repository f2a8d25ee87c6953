//! A step's call returned: start, then complete, fail, suspend, retry-after, reject-callback, or no outcome.

use super::*;

// start

#[tokio::test]
async fn start_writes_a_running_execution_on_its_first_step_with_a_fresh_run_id() {
    let w = World::new();
    let exec = w.start(&["a", "b"]).await;
    assert_eq!(exec.state, ExecState::Running);
    assert_eq!((exec.version, exec.step_index, exec.attempt), (1, 0, 1));
    assert_eq!(exec.step_run_id, "run-1");
    assert_eq!(exec.created_ms, NOW);
    assert_eq!(
        log_events(&exec),
        [("started", ExecState::Running, ExecState::Running)]
    );
    assert!(w.store.deliveries_of("e1").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_start_with_an_idempotency_key_writes_its_record_in_the_same_change() {
    let w = World::new();
    let key = crate::model::StartKey {
        key: "tok/k1".into(),
        request_sha256: "abc".into(),
        status: 202,
    };
    let t = w.with_ctx(|ctx| {
        start(
            "e1".into(),
            "wf".into(),
            vec![StepSpec {
                name: "s1".into(),
                plugin: "a".into(),
                config: serde_json::Value::Null,
                plugin_hash: None,
            }],
            Doc::json(&serde_json::json!({})),
            None,
            Some(&key),
            ctx,
        )
    });
    let exec = t.change.execution.as_ref().unwrap();
    assert_eq!(exec.idempotency_key.as_deref(), Some("tok/k1"));
    let record = t.change.idempotent_start.as_ref().unwrap();
    assert_eq!(
        (
            record.key.as_str(),
            record.execution_id.as_str(),
            record.request_sha256.as_str(),
            record.status,
            record.state.as_str(),
        ),
        ("tok/k1", "e1", "abc", 202, "running")
    );
    assert_eq!(record.created_ms, exec.created_ms);
}

#[tokio::test]
async fn start_with_a_callback_url_arms_its_delivery_in_the_same_change() {
    let w = World::new();
    let t = w.with_ctx(|ctx| {
        start(
            "e1".into(),
            "wf".into(),
            vec![StepSpec {
                name: "s1".into(),
                plugin: "a".into(),
                config: serde_json::Value::Null,
                plugin_hash: Some("a-v1".into()),
            }],
            Doc::json(&serde_json::json!({})),
            Some("http://127.0.0.1:9/result"),
            None,
            ctx,
        )
    });
    assert!(t.change.execution.is_some());
    assert_eq!(t.change.deliveries.len(), 1);
    assert_eq!(t.change.deliveries[0].url, "http://127.0.0.1:9/result");
    assert_eq!(t.change.deliveries[0].seq, 0);
}

#[tokio::test]
async fn complete_moves_to_the_next_step_pinned_to_its_current_plugin() {
    let w = World::new();
    w.start(&["a", "b"]).await;
    let t = w.returned(Ok(Outcome::Complete(doc("out-1")))).await;
    assert_eq!(t.report(), StepReport::Running);
    assert!(!t.effects.drive, "the step loop goes on by itself");
    let exec = w.exec().await;
    assert_eq!((exec.step_index, exec.attempt, exec.version), (1, 1, 2));
    assert_eq!(exec.step_run_id, "run-2", "a new step gets a new run id");
    assert_eq!(exec.steps[1].plugin_hash.as_deref(), Some("b-v1"));
    assert_eq!(exec.document.body, b"out-1");
    assert!(exec.outputs.contains_key("s1"));
    assert_eq!(
        log_events(&exec)[1..],
        [
            ("step-completed", ExecState::Running, ExecState::Running),
            ("started", ExecState::Running, ExecState::Running)
        ]
    );
}

#[tokio::test]
async fn complete_on_the_last_step_completes_with_the_output() {
    let w = World::new();
    w.start(&["a"]).await;
    let t = w.returned(Ok(Outcome::Complete(doc("done")))).await;
    assert_eq!(t.report(), StepReport::Ended(ExecState::Completed));
    let exec = w.exec().await;
    assert_eq!(exec.state, ExecState::Completed);
    assert_eq!(exec.output.unwrap().body, b"done");
}

#[tokio::test]
async fn complete_fails_when_the_next_steps_plugin_is_not_loaded() {
    let mut w = World::new();
    w.plugins.remove("b");
    w.start(&["a", "b"]).await;
    w.returned(Ok(Outcome::Complete(doc("x")))).await;
    let exec = w.exec().await;
    assert_eq!(exec.state, ExecState::Failed);
    assert_eq!(error_code(&exec), "plugin-unavailable");
    assert_eq!(exec.error.unwrap().step, "s2", "the step that cannot start");
    assert_eq!(exec.version, 2, "one write, one version");
}

#[tokio::test]
async fn an_output_over_the_limit_fails_with_body_too_large() {
    let w = World::new();
    w.start(&["a"]).await;
    w.returned(Ok(Outcome::Complete(doc(&"x".repeat(129)))))
        .await;
    let exec = w.exec().await;
    assert_eq!(error_code(&exec), "body-too-large");
    assert!(exec.output.is_none());
}

#[tokio::test]
async fn fail_records_the_steps_code_text_and_statuses_or_step_failed() {
    let w = World::new();
    w.start(&["a", "b"]).await;
    let t = w
        .returned(Ok(Outcome::Fail(bindings::Failure {
            error_code: Some("partner-said-no".into()),
            error_text: "nope".into(),
            document_status: Some("rejected".into()),
            technical_status: Some("422".into()),
        })))
        .await;
    assert_eq!(t.report(), StepReport::Ended(ExecState::Failed));
    let err = w.exec().await.error.unwrap();
    assert_eq!(
        (err.code.as_str(), err.text.as_str(), err.step.as_str()),
        ("partner-said-no", "nope", "s1")
    );
    assert_eq!(err.document_status.as_deref(), Some("rejected"));
    assert_eq!(err.technical_status.as_deref(), Some("422"));

    let w = World::new();
    w.start(&["a"]).await;
    w.returned(Ok(Outcome::Fail(bindings::Failure {
        error_code: None,
        error_text: "no code".into(),
        document_status: None,
        technical_status: None,
    })))
    .await;
    assert_eq!(error_code(&w.exec().await), "step-failed");
}

#[tokio::test]
async fn a_call_without_an_outcome_fails_with_the_calls_code() {
    let w = World::new();
    w.start(&["a"]).await;
    w.returned(Err(StepError::Trap("boom".into()))).await;
    let exec = w.exec().await;
    assert_eq!(error_code(&exec), "trap");
    assert!(exec.error.unwrap().text.contains("boom"));
}

#[tokio::test]
async fn an_unavailable_plugin_fails_the_execution() {
    let w = World::new();
    let exec = w.start(&["a"]).await;
    w.step(&Event::PluginUnavailable {
        version: exec.version,
        why: "version a-v1 is gone".into(),
    })
    .await;
    let exec = w.exec().await;
    assert_eq!(error_code(&exec), "plugin-unavailable");
    assert_eq!(exec.error.unwrap().text, "version a-v1 is gone");
}

#[tokio::test]
async fn an_outcome_of_a_version_that_moved_on_is_lost() {
    let w = World::new();
    let exec = w.start(&["a"]).await;
    w.step(&Event::Cancel).await;
    let late = Event::Returned {
        version: exec.version,
        outcome: Ok(Outcome::Complete(doc("late"))),
    };
    assert_eq!(w.decide(&late).await.unwrap_err(), Refusal::Lost);
    assert_eq!(error_code(&w.exec().await), "cancelled");
}

#[tokio::test]
async fn suspend_parks_on_the_registered_callback_with_its_timeout_timer() {
    let w = World::new();
    w.start(&["a"]).await;
    let t = w.suspend_on("c1", Some(5_000)).await;
    assert_eq!(t.report(), StepReport::Suspended);
    assert_eq!(t.effects.wake_at, Some(NOW + 5_000));
    let exec = w.exec().await;
    assert_eq!(exec.state, ExecState::Suspended);
    let waiting = exec.waiting.unwrap();
    assert_eq!(waiting.correlation_id.as_deref(), Some("c1"));
    assert_eq!(
        (waiting.state.as_slice(), waiting.due_ms),
        (&b"st"[..], NOW + 5_000)
    );
    assert_eq!(w.callback("c1").await.state, CallbackState::Waiting);
    assert_eq!(
        w.timers().await,
        [Timer {
            due_ms: NOW + 5_000,
            execution_id: "e1".into(),
            kind: TimerKind::CallbackTimeout
        }]
    );
}

#[tokio::test]
async fn a_suspend_timeout_defaults_and_is_capped() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", None).await;
    assert_eq!(w.exec().await.waiting.unwrap().due_ms, NOW + 60_000);

    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(u64::MAX)).await;
    assert_eq!(w.exec().await.waiting.unwrap().due_ms, NOW + 3_600_000);
}

#[tokio::test]
async fn suspend_on_an_id_this_step_did_not_register_fails_invalid_suspension() {
    let w = World::new();
    w.start(&["a"]).await;
    w.returned(Ok(suspend("never-registered", None))).await;
    assert_eq!(error_code(&w.exec().await), "invalid-suspension");
    assert!(w.timers().await.is_empty());
}

#[tokio::test]
async fn suspend_on_a_callback_already_used_fails_invalid_suspension_in_one_write() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", None).await;
    w.step(&on_callback("c1", "first")).await;
    // The resumed step suspends again on the id it already consumed.
    let t = w.returned(Ok(suspend("c1", None))).await;
    let exec = w.exec().await;
    assert_eq!(error_code(&exec), "invalid-suspension");
    assert_eq!(t.report(), StepReport::Ended(ExecState::Failed));
    assert_eq!(exec.version, 4, "start, suspend, callback, this failure");
}

#[tokio::test]
async fn suspend_state_over_the_limit_fails_state_too_large() {
    let w = World::new();
    w.start(&["a"]).await;
    w.register("c1").await;
    w.returned(Ok(Outcome::Suspend(bindings::Suspension {
        correlation_id: "c1".into(),
        state: vec![0; 65],
        timeout_ms: None,
    })))
    .await;
    assert_eq!(error_code(&w.exec().await), "state-too-large");
    assert_eq!(w.callback("c1").await.state, CallbackState::Registered);
}

#[tokio::test]
async fn retry_after_waits_on_a_retry_timer_capped_at_the_ceiling() {
    let w = World::new();
    w.start(&["a"]).await;
    let t = w
        .returned(Ok(Outcome::RetryAfter(bindings::Retry {
            delay_ms: u64::MAX,
            state: b"again".to_vec(),
        })))
        .await;
    assert_eq!(t.report(), StepReport::Suspended);
    let exec = w.exec().await;
    let waiting = exec.waiting.unwrap();
    assert_eq!(waiting.correlation_id, None);
    assert_eq!(waiting.due_ms, NOW + 3_600_000);
    assert_eq!(w.timers().await[0].kind, TimerKind::Retry);
}

#[tokio::test]
async fn retry_after_state_over_the_limit_fails_state_too_large() {
    let w = World::new();
    w.start(&["a"]).await;
    w.returned(Ok(Outcome::RetryAfter(bindings::Retry {
        delay_ms: 10,
        state: vec![0; 65],
    })))
    .await;
    assert_eq!(error_code(&w.exec().await), "state-too-large");
    assert!(w.timers().await.is_empty());
}

#[tokio::test]
async fn reject_callback_puts_the_wait_back_exactly_and_reopens_the_callback() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    let before = w.exec().await.waiting.unwrap();
    w.step(&on_callback("c1", "bad")).await;
    let t = w
        .returned(Ok(Outcome::RejectCallback("bad signature".into())))
        .await;
    assert_eq!(t.report(), StepReport::Rejected("bad signature".into()));
    let exec = w.exec().await;
    assert_eq!(exec.state, ExecState::Suspended);
    assert_eq!(exec.waiting.as_ref(), Some(&before));
    assert!(exec.pending.is_none());
    assert_eq!(w.callback("c1").await.state, CallbackState::Waiting);
    assert_eq!(w.timers().await[0].due_ms, before.due_ms);
    let last = exec.status_log.last().unwrap();
    assert_eq!(
        (last.event.as_str(), last.error_text.as_deref()),
        ("callback-rejected", Some("bad signature"))
    );
}

#[tokio::test]
async fn reject_callback_on_a_timeout_fails_callback_timeout_and_on_run_invalid_outcome() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    w.step(&Event::TimerFired(w.timers().await.remove(0))).await;
    w.returned(Ok(Outcome::RejectCallback("no".into()))).await;
    assert_eq!(error_code(&w.exec().await), "callback-timeout");

    let w = World::new();
    w.start(&["a"]).await;
    w.returned(Ok(Outcome::RejectCallback("no".into()))).await;
    assert_eq!(error_code(&w.exec().await), "invalid-outcome");
}

#[tokio::test]
async fn no_outcome_on_a_timeout_resume_fails_callback_timeout() {
    let w = World::new();
    w.start(&["a"]).await;
    w.suspend_on("c1", Some(5_000)).await;
    w.step(&Event::TimerFired(w.timers().await.remove(0))).await;
    w.returned(Err(StepError::TimeLimit {
        limit_ms: 10,
        after_ms: 11,
    }))
    .await;
    let exec = w.exec().await;
    assert_eq!(error_code(&exec), "callback-timeout");
    assert!(exec.error.unwrap().text.contains("did not decide"));
}
