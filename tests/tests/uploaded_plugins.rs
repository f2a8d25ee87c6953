//! Plugins uploaded at run time are first-class: a `[plugins.NAME]` section
//! grants them by name like any other plugin, an upload cannot take over a
//! name the config file or the binary provides (a restart would undo it),
//! uploads survive restarts, and `DELETE /v1/plugins/{name}` removes an
//! upload once no execution needs any of its versions. The real daemon,
//! real components, a real partner on loopback.

use serde_json::{Value, json};
use stephost::Config;
use stephost::store::ComponentStore as _;
use stephost_tests::{Partner, TestDaemon, call_back};

/// The reference `wait-for-callback` component: posts its input to
/// `config.url` and waits for the callback.
fn waiter_bytes() -> Vec<u8> {
    stephost::builtin::component("wait-for-callback")
        .expect("built in")
        .to_vec()
}

/// The reference `echo` component: completes at once.
fn echo_bytes() -> Vec<u8> {
    stephost::builtin::component("echo")
        .expect("built in")
        .to_vec()
}

/// A test component no other plugin is made of.
fn hostile_bytes() -> Vec<u8> {
    std::fs::read(format!("{}/hostile.wasm", env!("TEST_PLUGIN_DIR"))).unwrap()
}

fn hash_of(bytes: &[u8]) -> String {
    stephost::wasm::plugins::content_hash(bytes)
}

async fn delete(daemon: &TestDaemon, name: &str, token: &str) -> (u16, Value) {
    let path = format!("/v1/plugins/{name}");
    daemon
        .call(reqwest::Method::DELETE, &path, Some(token))
        .await
}

/// `[plugins.waiter]` granting loopback partners, and no `path`.
fn waiter_granted() -> Config {
    Config::from_toml(
        r#"
        [secrets]
        partner-key = { value = "k3y" }
        [plugins.waiter]
        allowed_hosts = ["http://127.0.0.1:*"]
        secrets = ["partner-key"]
        memory_mb = 64
        time_limit_ms = 45000
        "#,
    )
    .unwrap()
}

fn start_waiter(partner: &Partner, plugin: &str) -> Value {
    json!({"plugin": plugin, "config": {"url": format!("{}/orders", partner.base)}, "input": {"order": 7}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_section_without_path_grants_an_uploaded_plugin_of_that_name() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    // The section names a plugin that is not loaded yet: the daemon starts.
    let daemon = TestDaemon::start(waiter_granted(), dir.path()).await;
    let (status, _) = daemon.get("/v1/plugins/waiter").await;
    assert_eq!(status, 404, "nothing is uploaded yet");

    let (status, body) = daemon.upload("waiter", waiter_bytes()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["source"], "upload");
    let (status, view) = daemon.get("/v1/plugins/waiter").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["source"], "upload");
    assert_eq!(
        view["grant"],
        json!({
            "section": "[plugins.waiter]",
            "allowed_hosts": ["http://127.0.0.1:*"],
            "secrets": ["partner-key"],
            "limits": {"memory_mb": 64, "time_limit_ms": 45000, "max_body_bytes": 16777216},
        }),
        "{view:#}"
    );

    // The grant is used: the step reaches the loopback partner, suspends,
    // and the callback completes it.
    let id = daemon
        .start_execution(start_waiter(&partner, "waiter"))
        .await;
    daemon.wait_for(&id, "suspended").await;
    let url = partner.wait_for_requests(1).await[0].callback_url();
    let (status, body) = call_back(&url, r#"{"approved": true}"#).await;
    assert_eq!(status, 200, "{body}");
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"approved": true}));

    // And again after a restart, with the upload reloaded from the store.
    daemon.stop().await;
    let daemon = TestDaemon::start(waiter_granted(), dir.path()).await;
    let id = daemon
        .start_execution(start_waiter(&partner, "waiter"))
        .await;
    daemon.wait_for(&id, "suspended").await;
    assert_eq!(partner.wait_for_requests(2).await.len(), 2);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_plugin_without_a_section_has_no_network_and_is_told_why() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    // Loopback is allowed by the address policy: only the grant refuses.
    let daemon = TestDaemon::start_default(dir.path()).await;
    let (status, body) = daemon.upload("waiter", waiter_bytes()).await;
    assert_eq!(status, 201, "{body}");
    let (_, view) = daemon.get("/v1/plugins/waiter").await;
    assert_eq!(view["grant"]["section"], Value::Null, "{view:#}");
    assert_eq!(view["grant"]["allowed_hosts"], json!([]), "{view:#}");
    assert_eq!(view["grant"]["secrets"], json!([]), "{view:#}");

    let id = daemon
        .start_execution(start_waiter(&partner, "waiter"))
        .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "egress-denied", "{exec:#}");
    let text = exec["error"]["text"].as_str().unwrap();
    assert!(
        text.contains("\"waiter\" has no network grant") && text.contains("allowed_hosts"),
        "the error names the plugin and the missing grant: {text}"
    );
    assert!(partner.requests().is_empty());

    // The built-in plugin made of the very same bytes keeps its own grant:
    // grants go by name, not by component.
    let (_, builtin) = daemon.get("/v1/plugins/wait-for-callback").await;
    assert_eq!(builtin["hash"], view["hash"], "the same component");
    assert_eq!(builtin["grant"]["allowed_hosts"], json!(["*"]));
    let id = daemon
        .start_execution(start_waiter(&partner, "wait-for-callback"))
        .await;
    daemon.wait_for(&id, "suspended").await;
    assert_eq!(partner.wait_for_requests(1).await.len(), 1);
    daemon.stop().await;
}

/// A config with `[plugins.waiter] path` (the waiter component, written
/// into `dir`) and the built-in plugins.
fn waiter_from_path(dir: &std::path::Path) -> (Config, String) {
    let path = dir.join("a.wasm");
    std::fs::write(&path, waiter_bytes()).unwrap();
    let config = Config::from_toml(&format!(
        "[plugins.waiter]\npath = \"{}\"\nallowed_hosts = [\"http://127.0.0.1:*\"]\n",
        path.display()
    ))
    .unwrap();
    (config, path.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_cannot_replace_configured_or_built_in_plugins_and_the_newest_upload_survives_a_restart()
 {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (config, path) = waiter_from_path(files.path());
    let daemon = TestDaemon::start(config.clone(), dir.path()).await;
    let (_, configured) = daemon.get("/v1/plugins/waiter").await;
    assert_eq!(configured["source"], "config");
    assert_eq!(configured["builtin"], false);
    assert_eq!(configured["hash"], hash_of(&waiter_bytes()));
    let (_, builtin) = daemon.get("/v1/plugins/echo").await;
    assert_eq!(builtin["source"], "builtin");
    assert_eq!(builtin["builtin"], true);

    let (status, body) = daemon.upload("waiter", hostile_bytes()).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "plugin-from-config");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&path) && message.contains("[plugins.waiter]"),
        "the refusal says where the code comes from: {message}"
    );
    let (status, body) = daemon.upload("echo", hostile_bytes()).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "plugin-from-config");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("built into the daemon"),
        "{body}"
    );

    // Other names: the newest upload is the current version.
    let (status, body) = daemon.upload("shout", hostile_bytes()).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = daemon.upload("shout", echo_bytes()).await;
    assert_eq!(status, 201, "{body}");

    daemon.stop().await;
    let daemon = TestDaemon::start(config, dir.path()).await;
    let (_, waiter) = daemon.get("/v1/plugins/waiter").await;
    assert_eq!(waiter["source"], "config");
    assert_eq!(waiter["hash"], hash_of(&waiter_bytes()), "{waiter:#}");
    let (_, echo) = daemon.get("/v1/plugins/echo").await;
    assert_eq!(echo["hash"], hash_of(&echo_bytes()), "{echo:#}");
    let (_, shout) = daemon.get("/v1/plugins/shout").await;
    assert_eq!(shout["source"], "upload");
    assert_eq!(shout["hash"], hash_of(&echo_bytes()), "{shout:#}");
    let id = daemon
        .start_execution(json!({"plugin": "shout", "input": {"n": 1}}))
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"], json!({"n": 1}), "the newest upload runs");

    // Neither can be deleted either.
    for name in ["waiter", "echo"] {
        let (status, body) = delete(&daemon, name, &daemon.token).await;
        assert_eq!(status, 409, "{name}: {body}");
        assert_eq!(body["error"]["code"], "plugin-from-config", "{body}");
    }
    let (status, body) = delete(&daemon, "nobody", &daemon.token).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown-plugin");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_suspended_on_an_older_upload_resumes_on_it_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start(waiter_granted(), dir.path()).await;
    let (status, _) = daemon.upload("waiter", waiter_bytes()).await;
    assert_eq!(status, 201);
    let old = daemon
        .start_execution(start_waiter(&partner, "waiter"))
        .await;
    daemon.wait_for(&old, "suspended").await;
    let url = partner.wait_for_requests(1).await[0].callback_url();

    let (status, _) = daemon.upload("waiter", echo_bytes()).await;
    assert_eq!(status, 201);
    let new = daemon
        .start_execution(json!({"plugin": "waiter", "input": {"new": true}}))
        .await;
    let exec = daemon.wait_for(&new, "completed").await;
    assert_eq!(
        exec["output"],
        json!({"new": true}),
        "new executions run v2"
    );

    let old_base = daemon.base.clone();
    daemon.stop().await;
    let daemon = TestDaemon::start(waiter_granted(), dir.path()).await;
    let (_, view) = daemon.get("/v1/plugins/waiter").await;
    assert_eq!(view["hash"], hash_of(&echo_bytes()));
    // The new daemon listens on a new port (a stable public_url in production).
    let url = url.replacen(&old_base, &daemon.base, 1);
    let (status, body) = call_back(&url, r#"{"resumed": "on v1"}"#).await;
    assert_eq!(status, 200, "{body}");
    let exec = daemon.wait_for(&old, "completed").await;
    assert_eq!(exec["output"], json!({"resumed": "on v1"}));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_upload_waits_until_no_execution_needs_any_of_its_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (partner, release) = stephost_tests::gated_partner((202, json!({"accepted": true}))).await;
    let daemon = TestDaemon::start(waiter_granted(), dir.path()).await;
    let (status, _) = daemon.upload("waiter", waiter_bytes()).await;
    assert_eq!(status, 201);

    // Running: the step waits for the partner's answer.
    let id = daemon
        .start_execution(start_waiter(&partner, "waiter"))
        .await;
    let url = partner.wait_for_requests(1).await[0].callback_url();
    assert_eq!(daemon.execution(&id).await["state"], "running");
    let (status, body) = delete(&daemon, "waiter", &daemon.token).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "plugin-in-use");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&id),
        "the refusal names the execution: {body}"
    );

    // Suspended on v1 while v2 is current: v1 is still needed.
    release.add_permits(1);
    daemon.wait_for(&id, "suspended").await;
    let (status, _) = daemon.upload("waiter", hostile_bytes()).await;
    assert_eq!(status, 201);
    let (status, body) = delete(&daemon, "waiter", &daemon.token).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "plugin-in-use");

    // Admin only.
    let ops = daemon
        .token("ops", &["executions:read", "executions:write"])
        .await;
    let (status, body) = delete(&daemon, "waiter", &ops).await;
    assert_eq!(status, 403, "{body}");

    let (status, body) = call_back(&url, r#"{"done": true}"#).await;
    assert_eq!(status, 200, "{body}");
    daemon.wait_for(&id, "completed").await;

    let (status, body) = delete(&daemon, "waiter", &daemon.token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["removed_versions"], json!([hash_of(&hostile_bytes())]));
    // v1 is the built-in wait-for-callback's component: its bytes stay.
    assert_eq!(body["shared_versions"], json!([hash_of(&waiter_bytes())]));

    let (status, _) = daemon.get("/v1/plugins/waiter").await;
    assert_eq!(status, 404);
    let (_, list) = daemon.get("/v1/plugins").await;
    assert!(
        !list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "waiter"),
        "{list:#}"
    );
    let (status, body) = daemon
        .post("/v1/executions", start_waiter(&partner, "waiter"))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown-plugin");
    let (status, body) = delete(&daemon, "waiter", &daemon.token).await;
    assert_eq!(status, 404, "{body}");

    // The shared component still runs the built-in plugin.
    release.add_permits(1);
    let builtin = daemon
        .start_execution(start_waiter(&partner, "wait-for-callback"))
        .await;
    daemon.wait_for(&builtin, "suspended").await;

    // Gone for good: not back after a restart, and its bytes are gone.
    daemon.stop().await;
    let daemon = TestDaemon::start(waiter_granted(), dir.path()).await;
    let (status, _) = daemon.get("/v1/plugins/waiter").await;
    assert_eq!(status, 404);
    daemon.stop().await;
    let store = stephost::store::SledStore::open(dir.path()).unwrap();
    assert!(
        store
            .component(&hash_of(&hostile_bytes()))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .component(&hash_of(&waiter_bytes()))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_a_configured_workflow_uses_cannot_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let (status, _) = daemon.upload("shout", echo_bytes()).await;
    assert_eq!(status, 201);
    daemon.stop().await;
    let config = Config::from_toml("[workflows.loud]\nsteps = [{ plugin = \"shout\" }]\n").unwrap();
    let daemon = TestDaemon::start(config, dir.path()).await;
    let (status, body) = delete(&daemon, "shout", &daemon.token).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "plugin-in-use");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("workflow \"loud\""),
        "{body}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_remove_deletes_an_upload_through_the_cli() {
    use clap::Parser as _;
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let file = dir.path().join("shout.wasm");
    std::fs::write(&file, echo_bytes()).unwrap();
    let run = |args: Vec<String>| async move {
        let cli = stephost::cli::Cli::try_parse_from(args).expect("arguments parse");
        let mut out = Vec::new();
        let code = stephost::cli::execute(cli.command, &mut out)
            .await
            .expect("command runs");
        let value: Value = serde_json::from_slice(&out).unwrap();
        (code, value)
    };
    let remote = |cmd: &[&str]| -> Vec<String> {
        ["stephost", "plugin"]
            .iter()
            .chain(cmd)
            .map(|s| s.to_string())
            .chain([
                "--url".into(),
                daemon.base.clone(),
                "--token".into(),
                daemon.token.clone(),
            ])
            .collect()
    };
    let (code, added) = run(remote(&["add", "shout", file.to_str().unwrap()])).await;
    assert_eq!(code, 0, "{added:#}");
    let (code, removed) = run(remote(&["remove", "shout"])).await;
    assert_eq!(code, 0, "{removed:#}");
    assert_eq!(removed["deleted"], true);
    let (code, again) = run(remote(&["remove", "shout"])).await;
    assert_eq!(code, 1, "{again:#}");
    assert_eq!(again["error"]["code"], "unknown-plugin");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_retry_runs_the_current_version_while_a_suspended_execution_resumes_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let daemon = TestDaemon::start(waiter_granted(), dir.path()).await;
    // v1 of `waiter` waits for a callback; v1 of `flaky` fails (the hostile
    // test plugin refuses an unknown mode).
    assert_eq!(daemon.upload("waiter", waiter_bytes()).await.0, 201);
    assert_eq!(daemon.upload("flaky", hostile_bytes()).await.0, 201);
    let suspended = daemon
        .start_execution(start_waiter(&partner, "waiter"))
        .await;
    daemon.wait_for(&suspended, "suspended").await;
    let url = partner.wait_for_requests(1).await[0].callback_url();
    let failed = daemon
        .start_execution(
            json!({"plugin": "flaky", "config": {"mode": "none such"}, "input": {"n": 1}}),
        )
        .await;
    let exec = daemon.wait_for(&failed, "failed").await;
    assert_eq!(exec["error"]["code"], "invalid-config", "{exec:#}");

    // v2 of both is the echo component.
    assert_eq!(daemon.upload("waiter", echo_bytes()).await.0, 201);
    assert_eq!(daemon.upload("flaky", echo_bytes()).await.0, 201);

    let (status, body) = daemon
        .post(&format!("/v1/executions/{failed}/retry"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let exec = daemon.wait_for(&failed, "completed").await;
    // Echo answers with its config and input; v1 would have failed again.
    assert_eq!(
        exec["output"],
        json!({"config": {"mode": "none such"}, "input": {"n": 1}}),
        "the retry ran v2 (echo)"
    );

    let (status, body) = call_back(&url, r#"{"resumed": "on v1"}"#).await;
    assert_eq!(status, 200, "{body}");
    let exec = daemon.wait_for(&suspended, "completed").await;
    assert_eq!(
        exec["output"],
        json!({"resumed": "on v1"}),
        "the suspended execution resumed on v1 (wait-for-callback), not on echo"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_says_why_with_its_code_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::from_toml(
        r#"
        max_plugin_bytes = 150000
        [plugins.tiny]
        memory_mb = 1
        "#,
    )
    .unwrap();
    config.max_request_body_bytes = 1 << 20;
    let daemon = TestDaemon::start(config, dir.path()).await;
    let echo = echo_bytes();
    assert!(echo.len() < 150_000, "echo is {} bytes", echo.len());
    let big = hostile_bytes();
    assert!(big.len() > 150_000, "hostile is {} bytes", big.len());

    let (status, body) = daemon.upload("Bad Name", echo.clone()).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("invalid-name")),
        "{body}"
    );

    let (status, body) = daemon.upload("big", big).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (413, &json!("body-too-large")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("150000"),
        "{body}"
    );

    // `[plugins.tiny]` gives it 1 MiB of memory, less than the component's
    // own initial memory: describing it fails.
    let (status, body) = daemon.upload("tiny", echo.clone()).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("describe-failed")),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("tiny"),
        "{body}"
    );

    for name in ["big", "tiny"] {
        let (status, _) = daemon.get(&format!("/v1/plugins/{name}")).await;
        assert_eq!(status, 404, "{name} was not added");
    }
    let (_, list) = daemon.get("/v1/plugins").await;
    let uploads: Vec<&Value> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"] == "upload")
        .collect();
    assert!(uploads.is_empty(), "{list:#}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_view_shows_the_config_schema_it_describes_and_its_grant() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(
        r#"
        [secrets]
        k = { value = "v" }
        [plugins.async-operation]
        allowed_hosts = ["https://ops.example"]
        secrets = ["k"]
        time_limit_ms = 1234
        "#,
    )
    .unwrap();
    let daemon = TestDaemon::start(config, dir.path()).await;
    let (status, view) = daemon.get("/v1/plugins/async-operation").await;
    assert_eq!(status, 200);
    let schema = &view["config_schema"];
    assert_eq!(schema["type"], "object", "{view:#}");
    assert_eq!(schema["required"], json!(["url"]), "{view:#}");
    assert_eq!(
        schema["properties"]["callback"]["properties"]["in"]["enum"],
        json!(["query", "header", "body"])
    );
    assert_eq!(view["grant"]["section"], "[plugins.async-operation]");
    assert_eq!(
        view["grant"]["allowed_hosts"],
        json!(["https://ops.example"])
    );
    assert_eq!(view["grant"]["secrets"], json!(["k"]));
    assert_eq!(view["grant"]["limits"]["time_limit_ms"], 1234);

    // A plugin that describes no schema shows null.
    let (_, echo) = daemon.get("/v1/plugins/echo").await;
    assert_eq!(echo["config_schema"], Value::Null, "{echo:#}");
    daemon.stop().await;
}
