//! The command line, run in-process through `stephost::cli::execute` with
//! real plugins and a real partner on loopback.

use clap::Parser as _;
use serde_json::{Value, json};
use stephost::cli::Cli;
use stephost_tests::{Partner, TestDaemon, call_back, client, files_hold};

fn write(dir: &std::path::Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, value.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_prints_the_outcome_of_a_plugin_on_a_document() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.json", &json!({"tag": "t"}));
    let input = write(dir.path(), "input.json", &json!({"order": 3}));
    let (code, report) = stephost_tests::run_cli(&[
        "run",
        "--plugin",
        "echo",
        "--step-config",
        &config,
        "--input",
        &input,
    ])
    .await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["state"], "completed");
    assert_eq!(
        report["output"],
        json!({"input": {"order": 3}, "config": {"tag": "t"}})
    );
    assert_eq!(report["requests"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_waits_for_the_callback_and_prints_every_request() {
    let dir = tempfile::tempdir().unwrap();
    // Answers 202, then calls back a moment later, as a real partner would.
    let partner = Partner::start(|req| async move {
        let url = req.callback_url();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            call_back(&url, r#"{"done": true}"#).await;
        });
        (202, json!({}))
    })
    .await;
    let config = write(
        dir.path(),
        "config.json",
        &json!({"url": format!("{}/jobs", partner.base)}),
    );
    let input = write(dir.path(), "input.json", &json!({"job": 1}));
    let (code, report) = stephost_tests::run_cli(&[
        "run",
        "--plugin",
        "wait-for-callback",
        "--step-config",
        &config,
        "--input",
        &input,
    ])
    .await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["state"], "completed");
    assert_eq!(report["output"], json!({"done": true}));
    let requests = report["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["method"], "POST");
    assert_eq!(requests[0]["url"], format!("{}/jobs", partner.base));
    assert_eq!(requests[0]["status"], 202);
    assert_eq!(
        serde_json::from_str::<Value>(requests[0]["body"].as_str().unwrap()).unwrap(),
        json!({"job": 1})
    );
    let headers = requests[0]["headers"].as_array().unwrap();
    assert!(headers.iter().any(|h| {
        h[0].as_str()
            .unwrap()
            .eq_ignore_ascii_case("x-callback-url")
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_prints_the_requests_and_sends_none() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::accepting().await;
    let config = write(dir.path(), "config.json", &json!({"url": partner.base}));
    let (code, report) = stephost_tests::run_cli(&[
        "run",
        "--plugin",
        "wait-for-callback",
        "--step-config",
        &config,
        "--dry-run",
    ])
    .await;
    assert_eq!(code, 0, "a dry run ends where it was asked to: {report:#}");
    assert_eq!(report["state"], "dry-run");
    assert_eq!(report["error"], Value::Null);
    assert_eq!(report["dry_run"], true);
    assert_eq!(
        report["requests"].as_array().unwrap().len(),
        1,
        "{report:#}"
    );
    assert!(
        report["requests"][0]["error"]
            .as_str()
            .unwrap()
            .contains("dry run")
    );
    assert!(partner.requests().is_empty(), "nothing reached the partner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_created_on_the_command_line_is_accepted_by_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (code, created) = stephost_tests::run_cli(&[
        "token",
        "create",
        "--data-dir",
        data,
        "--name",
        "ops",
        "--permission",
        "executions:read",
    ])
    .await;
    assert_eq!(code, 0);
    let token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(created["permissions"], json!(["executions:read"]));

    let daemon = TestDaemon::start_default(dir.path()).await;
    let resp = client()
        .get(format!("{}/v1/executions", daemon.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // `token create` kept only the hash: the token itself is nowhere in
    // the data dir, while what was stored (the token's name) is.
    assert!(
        files_hold(dir.path(), b"\"ops\""),
        "the scan sees the stored token record"
    );
    assert!(
        !files_hold(dir.path(), token.as_bytes()),
        "the plain token is not on disk"
    );

    // The executions commands go through the same API with the token.
    let (code, list) = stephost_tests::run_cli(&[
        "executions",
        "list",
        "--url",
        &daemon.base,
        "--token",
        &token,
    ])
    .await;
    assert_eq!(code, 0);
    assert_eq!(list["executions"], json!([]));
    // A failed execution exists, so a refusal can only be the permission.
    let id = daemon
        .start_execution(json!({"plugin": "wait-for-callback", "config": {}, "input": {}}))
        .await;
    let before = daemon.wait_for(&id, "failed").await;
    let (code, answer) = stephost_tests::run_cli(&[
        "executions",
        "retry",
        &id,
        "--url",
        &daemon.base,
        "--token",
        &token,
    ])
    .await;
    assert_eq!(code, 1, "a read-only token cannot retry");
    assert_eq!(answer["error"]["code"], "forbidden", "{answer}");
    let after = daemon.execution(&id).await;
    assert_eq!(
        after["status_log"], before["status_log"],
        "nothing was retried"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_refused_by_the_parser() {
    assert!(
        Cli::try_parse_from(["stephost", "run"]).is_err(),
        "run needs --plugin or --workflow"
    );
    assert!(
        Cli::try_parse_from([
            "stephost",
            "token",
            "create",
            "--name",
            "x",
            "--permission",
            "root"
        ])
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_masks_granted_secrets_in_the_requests_it_prints() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Partner::start(|_| async { (200, json!({"stored": true})) }).await;
    let daemon_config = dir.path().join("stephost.toml");
    std::fs::write(
        &daemon_config,
        "[secrets]\nerp = { value = \"Bearer top-secret-key\" }\n[plugins.integration-step]\nsecrets = [\"erp\"]\n",
    )
    .unwrap();
    let config = write(
        dir.path(),
        "config.json",
        &json!({"url": partner.base, "api_key_secret": "erp"}),
    );
    let (code, report) = stephost_tests::run_cli(&[
        "run",
        "--plugin",
        "integration-step",
        "--step-config",
        &config,
        "--config",
        daemon_config.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{report:#}");
    let received = partner.wait_for_requests(1).await;
    assert_eq!(
        received[0].header("authorization"),
        Some("Bearer top-secret-key"),
        "the partner gets the real key"
    );
    let printed = report.to_string();
    assert!(
        !printed.contains("top-secret-key"),
        "the report shows no secret: {printed}"
    );
    let headers = report["requests"][0]["headers"].as_array().unwrap();
    let auth = headers
        .iter()
        .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case("authorization"))
        .expect("the Authorization header is listed");
    assert_eq!(auth[1], "****");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_add_loads_a_component_into_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let file = format!("{}/hostile.wasm", env!("TEST_PLUGIN_DIR"));
    let (code, added) = stephost_tests::run_cli(&[
        "plugin",
        "add",
        "--url",
        &daemon.base,
        "--token",
        &daemon.token,
        "misfit",
        &file,
    ])
    .await;
    assert_eq!(code, 0, "{added:#}");
    assert_eq!(added["name"], "misfit");
    let (code, list) = stephost_tests::run_cli(&[
        "plugin",
        "list",
        "--url",
        &daemon.base,
        "--token",
        &daemon.token,
    ])
    .await;
    assert_eq!(code, 0);
    assert!(
        list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "misfit")
    );
    let (code, shown) = stephost_tests::run_cli(&[
        "plugin",
        "inspect",
        "--url",
        &daemon.base,
        "--token",
        &daemon.token,
        "misfit",
    ])
    .await;
    assert_eq!(code, 0);
    assert_eq!(shown["hash"], added["hash"]);
    let id = daemon
        .start_execution(json!({"plugin": "misfit", "config": {"mode": "trap"}, "input": {}}))
        .await;
    assert_eq!(
        daemon.wait_for(&id, "failed").await["error"]["code"],
        "trap"
    );

    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"nope").unwrap();
    let (code, refused) = stephost_tests::run_cli(&[
        "plugin",
        "add",
        "--url",
        &daemon.base,
        "--token",
        &daemon.token,
        "bogus",
        bogus.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 1);
    assert_eq!(refused["error"]["code"], "not-a-component");
    daemon.stop().await;
}

/// `token list` and `token revoke` on a stopped daemon's data dir, and
/// `executions delete` on a running one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_listed_and_revoked_in_a_data_dir_and_executions_deleted() {
    use clap::Parser as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let create = |name: &'static str, permission: &'static str| {
        let data = data.to_owned();
        async move {
            let (code, created) = stephost_tests::run_cli(&[
                "token",
                "create",
                "--data-dir",
                &data,
                "--name",
                name,
                "--permission",
                permission,
            ])
            .await;
            assert_eq!(code, 0);
            (
                created["token"].as_str().unwrap().to_owned(),
                created["id"].as_str().unwrap().to_owned(),
            )
        }
    };
    let (admin, admin_id) = create("ops", "admin").await;
    let admin_header = format!("Bearer {admin}");
    let (reader, reader_id) = create("dashboard", "executions:read").await;

    let (code, listed) = stephost_tests::run_cli(&["token", "list", "--data-dir", data]).await;
    assert_eq!(code, 0);
    let mut names: Vec<_> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["dashboard", "ops"]);
    let text = listed.to_string();
    assert!(!text.contains(&admin) && !text.contains(&reader), "{text}");

    let (code, revoked) =
        stephost_tests::run_cli(&["token", "revoke", &reader_id, "--data-dir", data]).await;
    assert_eq!(code, 0);
    assert_eq!(revoked["revoked"], true);
    // The last admin token stays unless forced.
    let cli = Cli::try_parse_from(["stephost", "token", "revoke", &admin_id, "--data-dir", data])
        .unwrap();
    let refused = stephost::cli::execute(cli.command, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        format!("{refused:#}").contains("last admin token"),
        "{refused:#}"
    );
    let (code, revoked) =
        stephost_tests::run_cli(&["token", "revoke", &admin_id, "--force", "--data-dir", data])
            .await;
    assert_eq!((code, &revoked["name"]), (0, &json!("ops")));

    let daemon = TestDaemon::start_default(dir.path()).await;
    let refused = client()
        .get(format!("{}/v1/executions", daemon.base))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "the revoked token");
    let refused = client()
        .get(format!("{}/v1/executions", daemon.base))
        .header("authorization", &admin_header)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "the admin token revoked by force");
    let id = daemon
        .start_execution(json!({"plugin": "echo", "input": {"n": 1}}))
        .await;
    daemon.wait_for(&id, "completed").await;
    let (code, deleted) = stephost_tests::run_cli(&[
        "executions",
        "delete",
        &id,
        "--url",
        &daemon.base,
        "--token",
        &daemon.token,
    ])
    .await;
    assert_eq!(code, 0, "{deleted}");
    assert_eq!(deleted, json!({"id": id, "deleted": true}));
    assert_eq!(daemon.get(&format!("/v1/executions/{id}")).await.0, 404);
    daemon.stop().await;
}

/// The first start of a data dir without tokens makes an admin token and
/// leaves it in `first-admin-token`, readable by its owner only; later
/// starts, or a daemon without auth, make none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_leaves_an_admin_token_in_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = stephost::Config {
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    let daemon = stephost::Daemon::open(config.clone()).await.unwrap();
    let path = daemon
        .first_admin_token()
        .await
        .unwrap()
        .expect("a first admin token");
    assert_eq!(path, dir.path().join("data").join("first-admin-token"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        // Everything the first start wrote, the compiled-component cache
        // included, is its owner's only. (sled's own files under db/ are
        // covered by the daemon process's umask: readme_commands.rs.)
        let mut dirs = vec![dir.path().join("data")];
        let mut cached = 0;
        while let Some(d) = dirs.pop() {
            assert_eq!(mode(&d) & 0o077, 0, "{}", d.display());
            for entry in std::fs::read_dir(&d).unwrap() {
                let p = entry.unwrap().path();
                cached += usize::from(p.extension().is_some_and(|e| e == "cwasm"));
                if p.ends_with("db") {
                    assert_eq!(mode(&p) & 0o077, 0, "{}", p.display());
                } else if p.is_dir() {
                    dirs.push(p);
                } else {
                    assert_eq!(mode(&p) & 0o077, 0, "{}", p.display());
                }
            }
        }
        assert!(cached > 0, "the first start compiled the built-in plugins");
    }
    let token = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    let store = daemon.workflows().store().clone();
    let record = stephost::auth::authenticate(store.as_ref(), Some(&token))
        .await
        .unwrap()
        .expect("the token is valid");
    assert!(record.allows(stephost::auth::Permission::Admin));
    assert_eq!(daemon.first_admin_token().await.unwrap(), None, "only once");
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), token);
    drop((daemon, store));

    let mut open = stephost::Config {
        data_dir: dir.path().join("open"),
        ..Default::default()
    };
    open.auth.enabled = false;
    let daemon = stephost::Daemon::open(open).await.unwrap();
    assert_eq!(daemon.first_admin_token().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_names_the_step_config_and_the_daemon_config_apart() {
    let dir = tempfile::tempdir().unwrap();
    let step = write(dir.path(), "step.json", &json!({"tag": "t"}));
    let cli =
        Cli::try_parse_from(["stephost", "run", "--plugin", "echo", "--config", &step]).unwrap();
    let err = stephost::cli::execute(cli.command, &mut Vec::new())
        .await
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("--config is the daemon's config (TOML)")
            && message.contains("--step-config"),
        "{message}"
    );
}

#[test]
fn listen_takes_a_host_name_or_says_what_it_needs() {
    let parsed = Cli::try_parse_from(["stephost", "serve", "--listen", "localhost:8089"]).unwrap();
    let stephost::cli::Command::Serve(args) = parsed.command else {
        panic!("serve");
    };
    let address = args.listen.unwrap();
    assert!(
        address.ip().is_loopback() && address.port() == 8089,
        "{address}"
    );
    for wrong in ["localhost", "8080", "no-such-host.invalid:8080"] {
        let err = Cli::try_parse_from(["stephost", "serve", "--listen", wrong])
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected HOST:PORT"), "{wrong}: {err}");
    }
}

#[test]
fn help_lists_the_exit_codes() {
    use clap::CommandFactory as _;
    let help = stephost::cli::Cli::command().render_long_help().to_string();
    assert!(help.contains("Exit codes:"), "{help}");
    assert!(help.contains("3  `run` stopped waiting"), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_list_pages_newest_first_by_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = stephost_tests::TestDaemon::start_default(dir.path()).await;
    let mut echoes = Vec::new();
    for n in 0..5 {
        let (status, body) = daemon
            .post(
                "/v1/executions",
                json!({"plugin": "echo", "input": {"n": n}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        echoes.push(body["id"].as_str().unwrap().to_owned());
        let (status, _) = daemon
            .post(
                "/v1/executions",
                json!({"plugin": "wait-for-callback", "config": {"url": "http://127.0.0.1:9/"}, "input": {}}),
            )
            .await;
        assert_eq!(status, 201);
    }
    echoes.reverse();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec![
            "executions",
            "list",
            "--url",
            &daemon.base,
            "--token",
            &daemon.token,
            "--workflow",
            "echo",
            "--limit",
            "2",
        ];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let (code, page) = stephost_tests::run_cli(&args).await;
        assert_eq!(code, 0, "{page}");
        pages += 1;
        for e in page["executions"].as_array().unwrap() {
            assert_eq!(e["workflow"], "echo", "{e}");
            seen.push(e["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 10, "paging ends");
    }
    assert_eq!(seen, echoes, "every echo once, newest first");
    assert_eq!(pages, 3);

    let (code, oldest) = stephost_tests::run_cli(&[
        "executions",
        "list",
        "--url",
        &daemon.base,
        "--token",
        &daemon.token,
        "--workflow",
        "echo",
        "--limit",
        "1",
        "--oldest-first",
    ])
    .await;
    assert_eq!(code, 0);
    assert_eq!(oldest["executions"][0]["id"], echoes[4].as_str());

    // By plugin and creation time: none was created before 2000.
    let by = |extra: &'static [&'static str]| {
        let mut args = vec![
            "executions",
            "list",
            "--url",
            &daemon.base,
            "--token",
            &daemon.token,
            "--plugin",
            "echo",
        ];
        args.extend(extra);
        async move { stephost_tests::run_cli(&args).await }
    };
    let (code, recent) = by(&["--created-after", "2000-01-01T00:00:00Z"]).await;
    assert_eq!(code, 0, "{recent}");
    assert_eq!(
        recent["executions"].as_array().unwrap().len(),
        5,
        "{recent}"
    );
    let (code, old) = by(&["--created-before", "946684800000"]).await;
    assert_eq!(code, 0, "{old}");
    assert_eq!(old["executions"], json!([]), "{old}");

    let (status, body) = daemon
        .call(
            reqwest::Method::GET,
            "/v1/executions?cursor=nope",
            Some(&daemon.token),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("bad-request"))
    );
    daemon.stop().await;
}
