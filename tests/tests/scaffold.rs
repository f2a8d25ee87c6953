//! `stephost plugin new`, end to end: a project scaffolded in each language
//! builds with its own `build.sh`, its `stephost.toml` loads the component
//! into the real daemon, and its sample step completes on its sample
//! input and config. This is what a new plugin author does first.

mod toolchains;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use stephost::Config;
use stephost::scaffold::{Lang, new_plugin};
use stephost_tests::TestDaemon;

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Scaffolds `name` in `lang`, builds it, runs its sample step in a daemon
/// loaded from its own `stephost.toml`, and checks the greeting.
async fn scaffold_build_and_run(name: &str, lang: Lang) {
    let root = tempfile::tempdir().unwrap();
    let project = root.path().join(name);
    new_plugin(&project, name, lang).unwrap();

    let script = project.join("build.sh");
    let mut build = Command::new(&script);
    build.current_dir(&project);
    if lang == Lang::Rust {
        let repo = toolchains::repo_root();
        // The plugins' lock file pins the same dependency versions as the
        // reference plugins, so the build needs no fresh resolution and the
        // shared target dir stays warm across runs.
        std::fs::copy(repo.join("plugins/Cargo.lock"), project.join("Cargo.lock")).unwrap();
        build.env("CARGO_TARGET_DIR", repo.join("target/scaffold-test"));
        // Flags meant for the test's own build (coverage, wrappers) would
        // break a wasm32 build.
        for key in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
        ] {
            build.env_remove(key);
        }
    }
    let wasm = toolchains::run_build(&mut build, &script);
    assert_eq!(wasm, project.join(format!("{name}.wasm")));

    // The daemon resolves a plugin path against its working directory,
    // which here is the test's, so point the project's config at the file.
    let mut config = Config::from_file(&project.join("stephost.toml")).unwrap();
    config
        .plugins
        .get_mut(name)
        .expect("stephost.toml configures the plugin")
        .path = Some(wasm);
    let data = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(config, data.path()).await;
    let id = daemon
        .start_execution(json!({
            "plugin": name,
            "config": read_json(&project.join("step.json")),
            "input": read_json(&project.join("input.json")),
        }))
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(
        exec["output"],
        json!({"name": "Ada", "greeting": "Hello, Ada!"})
    );

    let id = daemon
        .start_execution(json!({"plugin": name, "input": [1]}))
        .await;
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["code"], "invalid-document", "{exec:#}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_rust_plugin_builds_and_runs() {
    scaffold_build_and_run("hello-rust", Lang::Rust).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_python_plugin_builds_and_runs() {
    scaffold_build_and_run("hello-python", Lang::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_js_plugin_builds_and_runs() {
    scaffold_build_and_run("hello-js", Lang::Js).await;
}
