//! `stephost run` loads only the plugins its run uses: a plugin author's
//! run neither waits for the others to load nor fails on one of them that
//! is broken, while `serve` still refuses that config.

use clap::Parser as _;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_loads_only_the_plugins_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.wasm");
    let daemon_config = dir.path().join("stephost.toml");
    std::fs::write(
        &daemon_config,
        format!(
            "data_dir = {:?}\n[plugins.broken]\npath = {:?}\n[workflows.uses-broken]\nsteps = [{{ plugin = \"broken\" }}]\n",
            dir.path().join("data"),
            missing
        ),
    )
    .unwrap();
    let config = daemon_config.to_str().unwrap();

    let (code, report) =
        stephost_tests::run_cli(&["run", "--plugin", "echo", "--config", config]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["state"], "completed", "{report:#}");
    assert_eq!(report["output"]["input"], json!(null), "{report:#}");

    // The plugin a run uses is loaded, and its failure is the run's.
    let cli = stephost::cli::Cli::try_parse_from([
        "stephost",
        "run",
        "--workflow",
        "uses-broken",
        "--config",
        config,
        "--no-cache",
    ])
    .unwrap();
    let failed = stephost::cli::execute(cli.command, &mut Vec::new())
        .await
        .expect_err("the run fails");
    assert!(
        format!("{failed:#}").contains("missing.wasm"),
        "names the file: {failed:#}"
    );

    // A daemon loads every plugin, and refuses to start without this one.
    let config =
        stephost::Config::from_toml(&std::fs::read_to_string(&daemon_config).unwrap()).unwrap();
    let Err(refused) = stephost::Daemon::open(config).await else {
        panic!("a daemon started without the plugin its config names");
    };
    assert!(
        format!("{refused:#}").contains("missing.wasm"),
        "{refused:#}"
    );
}
