//! Bulk operator actions (`POST /v1/executions/cancel|retry` with a
//! filter): a dry run changes nothing and says what would; the action goes
//! through each execution's own transition, counting what changed and what
//! was skipped and why; an empty filter is refused. A token that may only
//! read (or read and start) is refused every operator action, single or
//! bulk, dry run included, and nothing changes.

use serde_json::{Value, json};
use stephost_tests::{Partner, TestDaemon, client};

mod openapi_check;
use openapi_check::check;

async fn bulk(daemon: &TestDaemon, action: &str, body: Value) -> (u16, Value) {
    let path = format!("/v1/executions/{action}");
    post_as(daemon, &daemon.token, (&path, &path), body).await
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

/// `POST {path}` with `body` as bearer `token`; the answer is checked
/// against the OpenAPI description under `template`.
async fn post_as(
    daemon: &TestDaemon,
    token: &str,
    (path, template): (&str, &str),
    body: Value,
) -> (u16, Value) {
    let resp = client()
        .post(format!("{}{path}", daemon.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let answer = resp.json().await.unwrap_or(Value::Null);
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
async fn a_token_without_admin_is_refused_single_and_bulk_actions_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let accepting = Partner::accepting().await;
    let refusing = Partner::start(|_| async { (500, json!({"down": true})) }).await;
    let failed = daemon
        .start_execution(
            json!({"plugin": "wait-for-callback", "config": {"url": refusing.base}, "input": {}}),
        )
        .await;
    let waiting = daemon
        .start_execution(
            json!({"plugin": "wait-for-callback", "config": {"url": accepting.base}, "input": {}}),
        )
        .await;
    let failed_before = daemon.wait_for(&failed, "failed").await;
    let waiting_before = daemon.wait_for(&waiting, "suspended").await;
    let partner_calls = refusing.requests().len();
    let tokens = [
        daemon.token("reader", &["executions:read"]).await,
        daemon
            .token("starter", &["executions:read", "executions:write"])
            .await,
    ];

    // Each action applies to its execution's state (the admin does it
    // below), so a refusal here is the permission's.
    let (retry, skip, cancel) = (
        format!("/v1/executions/{failed}/retry"),
        format!("/v1/executions/{failed}/skip"),
        format!("/v1/executions/{waiting}/cancel"),
    );
    let single = [
        (retry.as_str(), "/v1/executions/{id}/retry"),
        (skip.as_str(), "/v1/executions/{id}/skip"),
        (cancel.as_str(), "/v1/executions/{id}/cancel"),
    ];
    let bulk_cancel = ("/v1/executions/cancel", "/v1/executions/cancel");
    let bulk_retry = ("/v1/executions/retry", "/v1/executions/retry");
    for token in &tokens {
        let (status, _) = daemon
            .call(
                reqwest::Method::GET,
                &format!("/v1/executions/{failed}"),
                Some(token),
            )
            .await;
        assert_eq!(status, 200, "the token may read");
        let mut refused = Vec::new();
        for route in single {
            refused.push((route, post_as(&daemon, token, route, json!({})).await));
        }
        for dry_run in [true, false] {
            let body = json!({"state": "suspended", "dry_run": dry_run});
            refused.push((
                bulk_cancel,
                post_as(&daemon, token, bulk_cancel, body).await,
            ));
            let body = json!({"state": "failed", "dry_run": dry_run});
            refused.push((bulk_retry, post_as(&daemon, token, bulk_retry, body).await));
        }
        assert_eq!(refused.len(), 7);
        for ((path, _), (status, answer)) in refused {
            assert_eq!(status, 403, "{path}: {answer}");
            assert_eq!(answer["error"]["code"], "forbidden", "{path}: {answer}");
            assert!(answer.get("matched").is_none(), "no dry run: {answer}");
        }
    }

    // Nothing changed, and the failed step's partner was not called again.
    for (id, before) in [(&failed, &failed_before), (&waiting, &waiting_before)] {
        let after = daemon.execution(id).await;
        for field in ["state", "attempt", "step", "updated_ms", "status_log"] {
            assert_eq!(after[field], before[field], "{field} of {id}");
        }
    }
    assert_eq!(
        refusing.requests().len(),
        partner_calls,
        "no retry reached the partner"
    );

    // The admin's dry runs match them: the refusals were not for want of
    // a match.
    let (_, answer) = bulk(
        &daemon,
        "cancel",
        json!({"state": "suspended", "dry_run": true}),
    )
    .await;
    assert_eq!(
        (&answer["matched"], &answer["changed"]),
        (&json!(1), &json!(1))
    );
    let (_, answer) = bulk(
        &daemon,
        "retry",
        json!({"state": "failed", "dry_run": true}),
    )
    .await;
    assert_eq!(
        (&answer["matched"], &answer["changed"]),
        (&json!(1), &json!(1))
    );
    let (status, answer) = daemon.post(&cancel, json!({})).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = daemon.post(&retry, json!({})).await;
    assert_eq!(status, 200, "{answer}");
    daemon.stop().await;
}
