//! A new plugin author's first steps with the `stephost` binary alone, in
//! each language: `stephost plugin new` in an empty directory, the
//! project's own `build.sh`, and `stephost run` on its sample step and
//! input, twice: the second run reads the compiled component from the
//! per-user cache. In Rust, which compiles fastest, also what `--no-cache`
//! and a corrupt cache entry do, and `stephost plugin add` into a running
//! daemon that lacks the grant the project's `stephost.toml` gives.
//!
//! Nothing these commands see points into this repository: no generated
//! file names it, the working directories are temporary ones, every
//! environment variable whose value names it is removed, and the tools the
//! builds install or fill (componentize-py, componentize-js, the C
//! toolchain's wit-bindgen and wasm-tools, cargo's target dir) live in the system's temporary directory, shared between
//! runs so that only the first run of the suite installs them.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::BIN;
use serde_json::{Value, json};

/// The checkout this test belongs to, which the commands must not need.
fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ lives in the repository root")
        .to_owned()
}

/// Where the builds keep what they install or compile, outside the
/// checkout and across runs.
fn shared(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("stephost-from-zero").join(what);
    assert!(
        !dir.starts_with(checkout()),
        "the temporary directory {} is inside the checkout",
        dir.display()
    );
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `program` in `cwd`, with every environment variable that names the
/// checkout removed (and the checkout's directories dropped from `PATH`).
fn command(program: impl AsRef<OsStr>, cwd: &Path) -> Command {
    let repo = checkout();
    let repo = repo.to_string_lossy();
    let mut command = Command::new(program);
    command.current_dir(cwd);
    for (key, value) in std::env::vars_os() {
        if key == "PATH" {
            let kept: Vec<PathBuf> = std::env::split_paths(&value)
                .filter(|p| !p.to_string_lossy().contains(&*repo))
                .collect();
            command.env("PATH", std::env::join_paths(kept).unwrap());
        } else if value.to_string_lossy().contains(&*repo) {
            command.env_remove(key);
        }
    }
    // Flags meant for this test's own build (coverage, wrappers) would
    // break a wasm32 build.
    for key in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        command.env_remove(key);
    }
    command.env("STEPHOST_LOG", "warn");
    command
}

fn output(command: &mut Command) -> Output {
    let out = command.output().expect("start the command");
    eprintln!(
        "--- {command:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A scaffolded project in a fresh temporary directory.
struct Project {
    name: String,
    dir: PathBuf,
    /// `XDG_CACHE_HOME` of its runs: the per-user cache is `stephost/` in it.
    xdg_cache: PathBuf,
    _root: tempfile::TempDir,
}

impl Project {
    /// `stephost plugin new NAME --lang LANG` in an empty directory.
    fn new(name: &str, lang: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let work = root.path().join("work");
        let xdg_cache = root.path().join("xdg-cache");
        std::fs::create_dir_all(&work).unwrap();
        let out = output(command(BIN, &work).args(["plugin", "new", name, "--lang", lang]));
        assert!(out.status.success());
        let created: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(created["created"], name);
        let dir = work.join(name);
        let repo = checkout();
        let mut files = vec![dir.clone()];
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    !text.contains(&*repo.to_string_lossy()),
                    "{} names the checkout",
                    path.display()
                );
            }
        }
        Self {
            name: name.to_owned(),
            dir,
            xdg_cache,
            _root: root,
        }
    }

    /// `./build.sh`; returns the component it reports.
    fn build(&self) -> PathBuf {
        let mut build = command(self.dir.join("build.sh"), &self.dir);
        build
            .env("CARGO_TARGET_DIR", shared("cargo-target"))
            .env("STEPHOST_TOOLS", shared("tools"));
        if self.dir.join("Cargo.toml").exists() {
            // The versions the reference plugins are tested with, so the
            // shared target dir stays warm; the lock file names no path.
            let lock = std::fs::read_to_string(checkout().join("plugins/Cargo.lock")).unwrap();
            assert!(!lock.contains(&*checkout().to_string_lossy()));
            std::fs::write(self.dir.join("Cargo.lock"), lock).unwrap();
        }
        let out = output(&mut build);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "build.sh failed. A Python build needs python3 with pip, a JavaScript build \
             node with npm, a C build the Debian packages clang-15, lld-15 and wasi-libc \
             (`apt-get install --no-install-recommends clang-15 lld-15 wasi-libc`) and cargo, \
             and on first use network access to PyPI, npm or crates.io; a Rust build needs \
             `rustup target add wasm32-wasip2`.\n{stdout}"
        );
        let wasm = PathBuf::from(stdout.lines().last().expect("a component path"));
        assert_eq!(wasm, self.dir.join(format!("{}.wasm", self.name)));
        wasm
    }

    /// `stephost run` of the sample step (on `input`, if given) with
    /// `extra` arguments; the exit code and the report.
    fn run(&self, input: Option<Value>, extra: &[&str]) -> (i32, Value) {
        let input_file = match input {
            Some(input) => {
                let path = self.dir.join("other-input.json");
                std::fs::write(&path, input.to_string()).unwrap();
                path
            }
            None => self.dir.join("input.json"),
        };
        let out = output(
            command(BIN, &self.dir)
                .args(["run", "--plugin", &self.name])
                .args(["--config", "stephost.toml", "--step-config", "step.json"])
                .arg("--input")
                .arg(&input_file)
                .args(extra)
                .env("XDG_CACHE_HOME", &self.xdg_cache),
        );
        let report = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
        (out.status.code().unwrap_or(-1), report)
    }

    /// The sample step completes, with its component `from` the cache
    /// (`hit`) or not (`compiled`).
    fn run_sample(&self, from: &str) {
        let (code, report) = self.run(None, &[]);
        assert_eq!(code, 0, "{report:#}");
        assert_eq!(report["state"], "completed");
        assert_eq!(
            report["output"],
            json!({"name": "Ada", "greeting": "Hello, Ada!"})
        );
        assert_eq!(report["cache"]["plugins"][&self.name], from, "{report:#}");
        assert_eq!(
            report["cache"]["dir"],
            json!(self.xdg_cache.join("stephost"))
        );
    }

    /// Every cache file: name, size and modification time.
    fn cache_listing(&self) -> Vec<(String, u64, std::time::SystemTime)> {
        let mut listing: Vec<_> = std::fs::read_dir(self.xdg_cache.join("stephost"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let meta = e.metadata().unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    meta.len(),
                    meta.modified().unwrap(),
                )
            })
            .collect();
        listing.sort();
        listing
    }
}

/// Scaffolds, builds and runs the sample step twice.
fn from_zero(name: &str, lang: &str) -> Project {
    let project = Project::new(name, lang);
    project.build();
    project.run_sample("compiled");
    project.run_sample("hit");
    let (code, report) = project.run(Some(json!([1])), &[]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["error"]["code"], "invalid-document", "{report:#}");
    project
}

#[test]
fn a_python_plugin_from_zero() {
    from_zero("hello-python", "python");
}

#[test]
fn a_js_plugin_from_zero() {
    from_zero("hello-js", "js");
}

/// Fails, naming the packages, where clang-15, lld-15 or wasi-libc is
/// missing: a skipped language would go unnoticed.
#[test]
fn a_c_plugin_from_zero() {
    from_zero("hello-c", "c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_plugin_from_zero_and_into_a_daemon() {
    let project = tokio::task::spawn_blocking(|| {
        let project = from_zero("hello-rust", "rust");

        // --no-cache neither reads nor writes the cache.
        let before = project.cache_listing();
        let (code, report) = project.run(None, &["--no-cache"]);
        assert_eq!((code, &report["cache"]), (0, &Value::Null), "{report:#}");
        assert_eq!(project.cache_listing(), before);

        // A corrupt entry is noticed, compiled again and rewritten.
        let wasm = std::fs::read(project.dir.join("hello-rust.wasm")).unwrap();
        let hash = stephost::model::content_hash(&wasm);
        let entry = before
            .iter()
            .find(|(name, ..)| name.starts_with(&hash) && name.ends_with(".cwasm"))
            .expect("the plugin's cache entry");
        let entry = project.xdg_cache.join("stephost").join(&entry.0);
        let mut bytes = std::fs::read(&entry).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        std::fs::write(&entry, bytes).unwrap();
        project.run_sample("compiled");
        project.run_sample("hit");
        project
    })
    .await
    .unwrap();

    // The project's config grants a host the daemon does not: `plugin
    // add` uploads all the same and names the section to add.
    let toml = project.dir.join("stephost.toml");
    let text = std::fs::read_to_string(&toml).unwrap().replace(
        "path = \"hello-rust.wasm\"",
        "path = \"hello-rust.wasm\"\nallowed_hosts = [\"https://partner.example\"]",
    );
    std::fs::write(&toml, text).unwrap();
    let data = tempfile::tempdir().unwrap();
    let daemon = stephost_tests::TestDaemon::start_default(data.path()).await;
    let mut add = command(BIN, &project.dir);
    add.args(["plugin", "add", "hello-rust", "hello-rust.wasm"])
        .args(["--url", &daemon.base, "--token", &daemon.token]);
    let out = tokio::task::spawn_blocking(move || output(&mut add))
        .await
        .unwrap();
    assert!(out.status.success());
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&added["name"], &added["version"], &added["source"]),
        (&json!("hello-rust"), &json!("0.1.0"), &json!("upload")),
        "{added:#}"
    );
    assert_eq!(added["grant"]["allowed_hosts"], json!([]), "{added:#}");
    assert!(
        added["next"][0]
            .as_str()
            .unwrap()
            .contains("the hosts https://partner.example"),
        "{added:#}"
    );
    assert_eq!(
        added["add_to_daemon_config"],
        "[plugins.hello-rust]\nallowed_hosts = [\"https://partner.example\"]\n"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Next: put the section below"), "{stderr}");
    let id = daemon
        .start_execution(json!({"plugin": "hello-rust", "input": {"name": "Bo"}}))
        .await;
    let exec = daemon.wait_for(&id, "completed").await;
    assert_eq!(exec["output"]["greeting"], "Hello, Bo!");
    daemon.stop().await;
}
