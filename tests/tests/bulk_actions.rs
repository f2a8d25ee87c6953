//! Bulk operator actions (`POST /v1/executions/cancel|retry` with a
//! filter): a dry run changes nothing and says what would; the action goes
//! through each execution's own transition, counting what changed and what
//! was skipped and why; an empty filter is refused.

use serde_json::{Value, json};
use stephost_tests::{Partner, TestDaemon};

mod openapi_check;
use openapi_check::check;

async fn bulk(daemon: &TestDaemon, action: &str, body: Value) -> (u16, Value) {
    let path = format!("/v1/executions/{action}");
    let (status, answer) = daemon.post(&path, body).await;
    let template = if action == "cancel" {
        "/v1/executions/cancel"
    } else {
        "/v1/executions/retry"
    };
    check(
        stephost::api::openapi_document(),
        "POST",
        template,
        status,
        &answer,
    );
    (status, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_cancel_and_retry_act_on_a_filter_and_say_what_they_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let accepting = Partner::accepting().await;
    let refusing = Partner::start(|_| async { (500, json!({"down": true})) }).await;
    let start = |url: String| {
        let daemon = &daemon;
        async move {
            daemon
                .start_execution(
                    json!({"plugin": "wait-for-callback", "config": {"url": url}, "input": {}}),
                )
                .await
        }
    };
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(start(accepting.base.clone()).await);
    }
    let mut failed = Vec::new();
    for _ in 0..2 {
        failed.push(start(refusing.base.clone()).await);
    }
    let echo = daemon
        .start_execution(json!({"plugin": "echo", "input": {}}))
        .await;
    for id in &waiting {
        daemon.wait_for(id, "suspended").await;
    }
    for id in &failed {
        daemon.wait_for(id, "failed").await;
    }
    daemon.wait_for(&echo, "completed").await;

    let (status, answer) = bulk(&daemon, "cancel", json!({})).await;
    assert_eq!(status, 400, "{answer}");

    let (status, answer) = bulk(
        &daemon,
        "cancel",
        json!({"state": "suspended", "dry_run": true}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (answer["matched"].clone(), answer["changed"].clone()),
        (json!(3), json!(3))
    );
    for id in &waiting {
        daemon.wait_for(id, "suspended").await; // a dry run changed nothing
    }

    let (_, answer) = bulk(&daemon, "cancel", json!({"workflow": "wait-for-callback"})).await;
    assert_eq!(answer["matched"], 5, "{answer:#}");
    assert_eq!(answer["changed"], 3, "{answer:#}");
    assert_eq!(answer["skipped"], 2);
    assert_eq!(answer["skipped_by_code"], json!({"wrong-state": 2}));
    let skipped: Vec<&str> = answer["skipped_executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(
        failed.iter().all(|id| skipped.contains(&id.as_str())),
        "{answer:#}"
    );
    for id in &waiting {
        let exec = daemon.wait_for(id, "failed").await;
        assert_eq!(exec["error"]["code"], "cancelled");
    }
    let (_, shown) = daemon.get(&format!("/v1/executions/{echo}")).await;
    assert_eq!(shown["state"], "completed", "outside the filter");

    // Retry every failed one of the workflow: the cancelled ones wait again,
    // the others fail again at their partner.
    let (_, answer) = bulk(
        &daemon,
        "retry",
        json!({"state": "failed", "workflow": "wait-for-callback"}),
    )
    .await;
    assert_eq!(
        (answer["matched"].clone(), answer["changed"].clone()),
        (json!(5), json!(5)),
        "{answer:#}"
    );
    for id in &waiting {
        daemon.wait_for(id, "suspended").await;
    }
    let (_, answer) = bulk(
        &daemon,
        "retry",
        json!({"state": "completed", "dry_run": true}),
    )
    .await;
    assert_eq!(answer["matched"], 1);
    assert_eq!(answer["changed"], 0);
    assert_eq!(answer["skipped_by_code"], json!({"wrong-state": 1}));

    // The plugin and creation-time filters select as the listing does.
    let (_, answer) = bulk(
        &daemon,
        "cancel",
        json!({"plugin": "wait-for-callback", "created_after": "2020-01-01T00:00:00Z", "dry_run": true}),
    )
    .await;
    assert_eq!(answer["matched"], 5, "{answer:#}");
    let (_, answer) = bulk(
        &daemon,
        "cancel",
        json!({"plugin": "wait-for-callback", "created_before": 1_000, "dry_run": true}),
    )
    .await;
    assert_eq!(answer["matched"], 0, "{answer:#}");
    let (status, answer) = bulk(&daemon, "cancel", json!({"created_after": true})).await;
    assert_eq!(status, 400, "{answer:#}");
    daemon.stop().await;
}
