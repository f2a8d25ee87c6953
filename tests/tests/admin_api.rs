//! The admin side of the HTTP API and its command line (docs/api.md,
//! docs/configuration.md): cancel, the list filters, the `admin`
//! permission on retry/skip/cancel/upload, and `executions show|skip|cancel`
//! and `run --workflow` run in-process through `stephost::cli::execute`.

use clap::Parser as _;
use serde_json::{Value, json};
use stephost::Config;
use stephost::cli::{Cli, execute};
use stephost_tests::{Partner, TestDaemon, call_back, client, events};

/// A partner that fails every request: a step calling it fails.
async fn failing_partner() -> Partner {
    Partner::start(|_| async { (500, json!({"error": "down"})) }).await
}

/// Starts a `wait-for-callback` execution and waits until it is suspended;
/// returns its id and callback URL.
async fn suspended(daemon: &TestDaemon, partner: &Partner) -> (String, String) {
    let before = partner.requests().len();
    let id = daemon
        .start_execution(json!({
            "plugin": "wait-for-callback",
            "config": {"url": partner.base},
            "input": {"n": 1},
        }))
        .await;
    daemon.wait_for(&id, "suspended").await;
    let url = partner.wait_for_requests(before + 1).await[before].callback_url();
    (id, url)
}

/// A suspended execution shows what it waits for: the callback URL the
/// partner was given, without its secret, and when the wait ends; an
/// execution that waits for nothing shows `null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_execution_shows_the_callback_it_waits_for() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let (id, url) = suspended(&daemon, &partner).await;
    let exec = daemon.execution(&id).await;
    let wait = &exec["wait"];
    let (without_secret, secret) = url.split_once("?secret=").expect("a secret in the URL");
    assert!(!secret.is_empty());
    assert_eq!(wait["for"], "callback", "{exec:#}");
    assert_eq!(wait["callback_url"], without_secret);
    assert!(without_secret.ends_with(wait["correlation_id"].as_str().unwrap()));
    assert_eq!(wait["until_ms"], exec["waiting_until_ms"]);
    assert_eq!(wait["step"], "wait-for-callback");
    assert_eq!(wait["attempt"], 1);
    assert!(wait["step_run_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(
        !exec.to_string().contains(secret),
        "the secret is the partner's alone"
    );

    let (status, body) = call_back(&url, r#"{"approved": true}"#).await;
    assert_eq!(status, 200, "{body}");
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["wait"], Value::Null);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_fails_a_suspended_execution_with_cancelled_and_closes_its_callback() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let (id, url) = suspended(&daemon, &partner).await;

    let (status, answer) = daemon
        .post(&format!("/v1/executions/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["id"], id);
    assert_eq!(answer["state"], "failed");
    assert_eq!(answer["step"], "wait-for-callback");

    let exec = daemon.execution(&id).await;
    assert_eq!(exec["state"], "failed", "{exec:#}");
    assert_eq!(exec["error"]["code"], "cancelled", "{exec:#}");
    assert_eq!(events(&exec).last().unwrap(), "failed");
    assert_eq!(exec["waiting_until_ms"], Value::Null);

    // The wait is over: the partner's callback comes too late.
    let (status, body) = call_back(&url, r#"{"late": true}"#).await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(daemon.execution(&id).await["state"], "failed");

    // Cancelling what has ended is a conflict, an unknown id a 404.
    let (status, again) = daemon
        .post(&format!("/v1/executions/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["error"]["code"], "wrong-state");
    let (status, _) = daemon
        .post(
            "/v1/executions/0190a4a8-0000-7000-8000-000000000000/cancel",
            json!({}),
        )
        .await;
    assert_eq!(status, 404);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_cancel_on_the_command_line_cancels_a_suspended_execution() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;
    let (id, _) = suspended(&daemon, &partner).await;

    let (code, answer) = stephost_tests::run_cli(&[
        "executions",
        "cancel",
        &id,
        "--url",
        &daemon.base,
        "--token",
        &daemon.token,
    ])
    .await;
    assert_eq!(code, 0, "{answer:#}");
    assert_eq!(answer["id"], id);
    assert_eq!(answer["state"], "failed");
    let exec = daemon.execution(&id).await;
    assert_eq!(exec["error"]["code"], "cancelled", "{exec:#}");

    // A second cancel is refused, and the command says so by its code.
    let (code, refused) = stephost_tests::run_cli(&[
        "executions",
        "cancel",
        &id,
        "--url",
        &daemon.base,
        "--token",
        &daemon.token,
    ])
    .await;
    assert_eq!(code, 1);
    assert_eq!(refused["error"]["code"], "wrong-state", "{refused}");
    daemon.stop().await;
}

fn ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list["executions"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_filters_by_state_workflow_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let partner = failing_partner().await;
    let config = Config::from_toml(
        "[workflows.twice]\nsteps = [{ plugin = \"echo\" }, { plugin = \"echo\" }]\n",
    )
    .unwrap();
    let daemon = TestDaemon::start(config, dir.path()).await;
    let mut echoes = Vec::new();
    for n in 0..2 {
        let id = daemon
            .start_execution(json!({"plugin": "echo", "input": {"n": n}}))
            .await;
        daemon.wait_for(&id, "completed").await;
        echoes.push(id);
    }
    echoes.sort();
    let failed = daemon
        .start_execution(json!({
            "plugin": "wait-for-callback",
            "config": {"url": partner.base},
            "input": {},
        }))
        .await;
    daemon.wait_for(&failed, "failed").await;
    let twice = daemon
        .start_execution(json!({"workflow": "twice", "input": {}}))
        .await;
    daemon.wait_for(&twice, "completed").await;

    let (status, all) = daemon.get("/v1/executions").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&all).len(), 4, "{all:#}");

    let (_, by_state) = daemon.get("/v1/executions?state=failed").await;
    assert_eq!(ids(&by_state), vec![failed.clone()], "{by_state:#}");
    assert_eq!(by_state["executions"][0]["state"], "failed");

    let (_, by_workflow) = daemon.get("/v1/executions?workflow=echo").await;
    assert_eq!(ids(&by_workflow), echoes, "{by_workflow:#}");
    let (_, named) = daemon.get("/v1/executions?workflow=twice").await;
    assert_eq!(ids(&named), vec![twice], "{named:#}");
    assert_eq!(named["executions"][0]["workflow"], "twice");

    let (_, both) = daemon
        .get("/v1/executions?state=completed&workflow=echo")
        .await;
    assert_eq!(ids(&both), echoes);
    let (_, none) = daemon
        .get("/v1/executions?state=suspended&workflow=echo")
        .await;
    assert_eq!(ids(&none), Vec::<String>::new());

    let (_, limited) = daemon.get("/v1/executions?limit=2").await;
    assert_eq!(ids(&limited).len(), 2, "{limited:#}");
    let (_, one) = daemon.get("/v1/executions?state=completed&limit=1").await;
    assert_eq!(ids(&one).len(), 1, "{one:#}");
    assert_eq!(one["executions"][0]["state"], "completed");

    let (status, bad) = daemon.get("/v1/executions?state=sleeping").await;
    assert_eq!(status, 400, "{bad}");

    // `executions list --state` is the same filter.
    let (code, listed) = stephost_tests::run_cli(&[
        "executions",
        "list",
        "--state",
        "failed",
        "--url",
        &daemon.base,
        "--token",
        &daemon.token,
    ])
    .await;
    assert_eq!(code, 0);
    assert_eq!(ids(&listed), [failed]);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_skip_cancel_and_upload_need_admin_and_a_lesser_token_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let down = failing_partner().await;
    let accepting = Partner::accepting().await;
    let daemon = TestDaemon::start_default(dir.path()).await;

    let writer = daemon
        .token("writer", &["executions:write", "executions:read"])
        .await;

    let failed = daemon
        .start_execution(json!({
            "plugin": "wait-for-callback",
            "config": {"url": down.base},
            "input": {},
        }))
        .await;
    let failed_before = daemon.wait_for(&failed, "failed").await;
    let (waiting, _) = suspended(&daemon, &accepting).await;
    let waiting_before = daemon.execution(&waiting).await;

    let as_writer = |method: reqwest::Method, path: String, body: Vec<u8>| {
        let writer = writer.clone();
        let base = daemon.base.clone();
        async move {
            let resp = client()
                .request(method, format!("{base}{path}"))
                .bearer_auth(writer)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // The token is good for what it grants.
    let (status, _) = as_writer(
        reqwest::Method::GET,
        format!("/v1/executions/{failed}"),
        vec![],
    )
    .await;
    assert_eq!(status, 200);

    let component = std::fs::read(format!("{}/hostile.wasm", env!("TEST_PLUGIN_DIR"))).unwrap();
    let refused = [
        (format!("/v1/executions/{failed}/retry"), vec![]),
        (format!("/v1/executions/{failed}/skip"), vec![]),
        (format!("/v1/executions/{waiting}/cancel"), vec![]),
        ("/v1/plugins?name=sneaky".to_owned(), component),
    ];
    for (path, body) in refused {
        let (status, answer) = as_writer(reqwest::Method::POST, path.clone(), body).await;
        assert_eq!(status, 403, "{path}: {answer}");
        assert_eq!(answer["error"]["code"], "forbidden", "{path}: {answer}");
    }

    // Nothing changed: the same status logs, the same states, no plugin.
    let failed_after = daemon.execution(&failed).await;
    assert_eq!(failed_after["state"], "failed");
    assert_eq!(failed_after["status_log"], failed_before["status_log"]);
    let waiting_after = daemon.execution(&waiting).await;
    assert_eq!(waiting_after["state"], "suspended");
    assert_eq!(waiting_after["status_log"], waiting_before["status_log"]);
    let (_, plugins) = daemon.get("/v1/plugins").await;
    assert!(
        plugins["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "sneaky"),
        "{plugins:#}"
    );

    // The same actions with the admin token apply: the refusals above
    // were the permission, not the executions' states.
    let (status, answer) = daemon
        .post(&format!("/v1/executions/{waiting}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = daemon
        .post(&format!("/v1/executions/{failed}/skip"), json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_show_and_skip_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let down = failing_partner().await;
    let config = Config::from_toml(&format!(
        "[workflows.ask-then-echo]\nsteps = [\n  {{ name = \"ask\", plugin = \"wait-for-callback\", config = {{ url = \"{}\" }} }},\n  {{ name = \"after\", plugin = \"echo\", config = {{ tag = \"after\" }} }},\n]\n",
        down.base
    ))
    .unwrap();
    let daemon = TestDaemon::start(config, dir.path()).await;
    let id = daemon
        .start_execution(json!({"workflow": "ask-then-echo", "input": {"order": 7}}))
        .await;
    let failed = daemon.wait_for(&id, "failed").await;
    assert_eq!(failed["step"], "ask");

    let remote = [
        "--url",
        daemon.base.as_str(),
        "--token",
        daemon.token.as_str(),
    ];
    let mut show = vec!["executions", "show", &id];
    show.extend(remote);
    let (code, shown) = stephost_tests::run_cli(&show).await;
    assert_eq!(code, 0, "{shown:#}");
    assert_eq!(shown["id"], id);
    assert_eq!(shown["state"], "failed");
    assert_eq!(shown["step"], "ask");
    assert_eq!(shown["status_log"], failed["status_log"]);

    let mut skip = vec!["executions", "skip", &id];
    skip.extend(remote);
    let (code, skipped) = stephost_tests::run_cli(&skip).await;
    assert_eq!(code, 0, "{skipped:#}");
    assert_eq!(skipped["id"], id);
    let exec = daemon.wait_for(&id, "completed").await;
    // The failed step's input went to the next step.
    assert_eq!(
        exec["output"],
        json!({"input": {"order": 7}, "config": {"tag": "after"}}),
        "{exec:#}"
    );
    assert!(events(&exec).contains(&"skipped".to_owned()), "{exec:#}");
    assert_eq!(down.requests().len(), 1, "a skip does not re-run the step");

    // Skipping a completed execution is refused.
    let (code, refused) = stephost_tests::run_cli(&skip).await;
    assert_eq!(code, 1);
    assert_eq!(refused["error"]["code"], "wrong-state", "{refused}");

    // `show` of an unknown execution fails.
    let mut unknown = vec!["executions", "show", "0190a4a8-0000-7000-8000-000000000000"];
    unknown.extend(remote);
    let (code, _) = stephost_tests::run_cli(&unknown).await;
    assert_eq!(code, 1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_workflow_on_the_command_line_runs_every_step_of_the_configured_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::start(|req| async move { (200, json!({"seen": req.json()})) }).await;
    let daemon_config = dir.path().join("stephost.toml");
    std::fs::write(
        &daemon_config,
        format!(
            "[workflows.report]\nsteps = [\n  {{ name = \"first\", plugin = \"echo\", config = {{ tag = \"a\" }} }},\n  {{ name = \"send\", plugin = \"http-task\", config = {{ url = \"{}/report\", body = \"{{{{input | json}}}}\" }} }},\n]\n",
            partner.base
        ),
    )
    .unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(&input, json!({"n": 1}).to_string()).unwrap();
    let (code, report) = stephost_tests::run_cli(&[
        "run",
        "--workflow",
        "report",
        "--config",
        daemon_config.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["state"], "completed", "{report:#}");
    // Both steps ran, in order: the partner got the echo step's output.
    let received = partner.wait_for_requests(1).await;
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].json(),
        json!({"input": {"n": 1}, "config": {"tag": "a"}})
    );
    let steps: Vec<&str> = report["status_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["step"].as_str().unwrap())
        .collect();
    assert!(
        steps.contains(&"first") && steps.contains(&"send"),
        "{report:#}"
    );
    let requests = report["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 1, "{report:#}");
    assert_eq!(requests[0]["url"], format!("{}/report", partner.base));

    // An unknown workflow fails the command.
    let cli_parsed = Cli::try_parse_from([
        "stephost",
        "run",
        "--workflow",
        "nope",
        "--config",
        daemon_config.to_str().unwrap(),
    ])
    .unwrap();
    let mut out = Vec::new();
    assert!(execute(cli_parsed.command, &mut out).await.is_err());
}
