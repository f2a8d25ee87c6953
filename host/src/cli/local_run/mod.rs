//! `stephost run`: one plugin or workflow on a document, in a throw-away
//! daemon whose state lives in memory, so the step behaves exactly as in
//! production, callbacks included; prints the outcome and every request.
//! Compiled components outlive the run in a per-user cache ([`cache`]), so
//! an unchanged plugin is not compiled again on the next run.

mod cache;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{listen_address, load_config, read_json, recorder};
use crate::auth::Permission;
use crate::daemon::Daemon;
use crate::model::{Doc, ExecState};
use crate::wasm::engine::CacheOutcome;
use crate::workflow::Target;

/// Exit code of `run` when it stopped waiting (`--timeout-secs`, Ctrl-C)
/// before the execution ended.
pub const EXIT_NOT_ENDED: i32 = 3;

/// Options of `stephost run`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["plugin", "workflow"])))]
pub struct RunArgs {
    /// Run this plugin as a one-step workflow.
    #[arg(long)]
    pub plugin: Option<String>,
    /// Run this workflow from the daemon config.
    #[arg(long)]
    pub workflow: Option<String>,
    /// The step's config (a JSON file), with --plugin.
    #[arg(long, env = "STEPHOST_STEP_CONFIG", requires = "plugin")]
    pub step_config: Option<PathBuf>,
    /// The input document (a JSON file) [default: null].
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// The daemon's config (TOML, the file `serve --config` takes), for
    /// workflows, secrets and grants.
    #[arg(long, env = "STEPHOST_CONFIG", visible_alias = "daemon-config")]
    pub config: Option<PathBuf>,
    /// Print the requests the step would make without sending any; ends
    /// with state "dry-run" (exit 0) at the first request withheld.
    #[arg(long)]
    pub dry_run: bool,
    /// Where partners call back while a step waits (HOST:PORT; port 0
    /// picks a free one).
    #[arg(long, default_value = "127.0.0.1:0", value_parser = listen_address)]
    pub listen: SocketAddr,
    /// Base URL partners call back on [default: http://<listen>].
    #[arg(long)]
    pub public_url: Option<String>,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Let plugins reach this internal address range (CIDR; repeatable).
    #[arg(long = "egress-allow", value_name = "CIDR")]
    pub egress_allow: Vec<String>,
    /// Compile every component afresh, and neither read nor write the
    /// per-user compiled-component cache ($XDG_CACHE_HOME/stephost, else
    /// ~/.cache/stephost; the config's compiled_cache_dir is not used).
    #[arg(long)]
    pub no_cache: bool,
}

/// A daemon config that is a step's JSON config was given the old way
/// (`--config step.json`): said so, rather than a TOML parse error.
fn daemon_config(path: Option<&Path>) -> anyhow::Result<crate::config::Config> {
    if let Some(path) = path
        && path.extension().is_some_and(|e| e == "json")
    {
        anyhow::bail!(
            "--config is the daemon's config (TOML), as in `serve`; give the step's JSON config {} with --step-config",
            path.display()
        );
    }
    load_config(path)
}

/// Runs `stephost run`; returns the exit code.
pub(super) async fn run_locally(args: RunArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let mut config = daemon_config(args.config.as_deref())?;
    let data = tempfile::Builder::new()
        .prefix("stephost-run-")
        .tempdir()
        .context("create a temporary data dir")?;
    // The state is in memory; this directory is the daemon's data dir in
    // name only, and holds the compiled components when there is no
    // per-user cache: private, like any data dir.
    #[cfg(unix)]
    std::fs::set_permissions(
        data.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .context("make the temporary data dir private")?;
    config.data_dir = data.path().to_owned();
    // A daemon's cache is that daemon's (it runs what it finds there), so
    // even a config that names one gets the user's own cache here; without
    // it, a cache in the temporary data dir, which dies with it.
    let user_cache = if args.no_cache {
        None
    } else {
        cache::user_dir()
    };
    config.compiled_cache_dir = Some(
        user_cache
            .clone()
            .unwrap_or_else(|| data.path().join("cache")),
    );
    // Bound before the daemon opens: the step may hand out a callback URL
    // as soon as the run starts, before `serve` has looked at the
    // listener, so the URL must already name the port partners call.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let local = listener.local_addr().context("listener address")?;
    config.public_url = args
        .public_url
        .clone()
        .or(config.public_url)
        .or_else(|| Some(format!("http://{local}")));
    config
        .egress_allow
        .extend(args.egress_allow.iter().cloned());
    let target = match (&args.plugin, &args.workflow) {
        (Some(plugin), _) => Target::Plugin {
            name: plugin.clone(),
            config: match &args.step_config {
                Some(path) => read_json(path, "step config")?,
                None => Value::Null,
            },
        },
        (None, Some(workflow)) => Target::Workflow(workflow.clone()),
        (None, None) => anyhow::bail!("give --plugin or --workflow"),
    };
    let input = match &args.input {
        Some(path) => read_json(path, "input")?,
        None => Value::Null,
    };

    let recorder = std::sync::Arc::new(recorder::Recorder::new(args.dry_run));
    let used = used_plugins(&config, &target);
    // Nothing of a local run outlives it, so its state stays in memory (a
    // store named by the config is not opened either: a run never touches
    // a production database).
    let store = std::sync::Arc::new(crate::store::MemoryStore::default());
    let daemon = Daemon::open_on(config, store, recorder.clone(), &used).await?;
    let compiled = compiled_report(&daemon, &used, user_cache.as_deref());
    // The local API stays locked (it listens for callbacks, which carry
    // secrets of their own); a token nobody sees keeps the daemon from
    // asking for one.
    daemon.create_token("run", &[Permission::Admin]).await?;
    let workflows = daemon.workflows().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(daemon.serve(listener, async move {
        let _ = stopped.await;
    }));

    let exec = workflows.start(target, Doc::json(&input)).await?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut announced = false;
    let exec = loop {
        let now = workflows
            .store()
            .execution(&exec.id)
            .await?
            .context("the execution vanished")?;
        if now.state.is_terminal() || Instant::now() > deadline {
            break now;
        }
        if now.state == ExecState::Suspended {
            if args.dry_run {
                // Nothing was sent, so nobody will call back.
                break now;
            }
            if !announced {
                announced = true;
                eprintln!(
                    "suspended at step {:?}; waiting for its callback (Ctrl-C to stop)",
                    now.step().name
                );
            }
        }
        tokio::select! {
            // A read of the in-memory store: polling often costs nothing
            // and ends the run soon after the step does.
            _ = tokio::time::sleep(Duration::from_millis(2)) => {}
            _ = tokio::signal::ctrl_c() => break now,
        }
    };
    let _ = stop.send(());
    server.await.context("local daemon task")??;

    let sent = recorder.take();
    let view = crate::api::execution_view(&exec);
    // A dry run that withheld a request ends there, as asked: not a
    // failure of the step.
    let withheld = args.dry_run && !sent.is_empty() && exec.state == ExecState::Failed;
    let (state, code) = match exec.state {
        _ if withheld => (json!("dry-run"), 0),
        ExecState::Completed => (view["state"].clone(), 0),
        ExecState::Failed => (view["state"].clone(), 1),
        ExecState::Suspended if args.dry_run => (view["state"].clone(), 0),
        _ => (view["state"].clone(), EXIT_NOT_ENDED),
    };
    let report = json!({
        "state": state,
        "output": view["output"],
        "error": if withheld { Value::Null } else { view["error"].clone() },
        "dry_run": args.dry_run,
        "requests": sent,
        "status_log": view["status_log"],
        "cache": compiled,
    });
    writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    Ok(code)
}

/// The plugins `target` runs (those of a workflow that names unknown
/// plugins fail when it starts, not here).
fn used_plugins(config: &crate::config::Config, target: &Target) -> Vec<String> {
    let mut names: Vec<String> = match target {
        Target::Plugin { name, .. } => vec![name.clone()],
        Target::Workflow(workflow) => config
            .workflows
            .get(workflow)
            .map(|w| w.steps.iter().map(|s| s.plugin.clone()).collect())
            .unwrap_or_default(),
    };
    names.sort();
    names.dedup();
    names
}

/// For the report: where the compiled components of `used` came from
/// (`hit`: read from the per-user cache; `compiled`: compiled now and
/// stored there; `uncached`: compiled, and the cache could not be
/// written), or `null` without the cache. Marks their entries as used and
/// prunes the cache.
fn compiled_report(daemon: &Daemon, used: &[String], dir: Option<&Path>) -> Value {
    let Some(dir) = dir else {
        return Value::Null;
    };
    let registry = daemon.workflows().registry();
    let mut plugins = serde_json::Map::new();
    let mut hashes = Vec::new();
    for name in used {
        if let Some(plugin) = registry.current(name) {
            let outcome = match plugin.compiled {
                CacheOutcome::Hit => "hit",
                CacheOutcome::Compiled => "compiled",
                CacheOutcome::Uncached => "uncached",
            };
            plugins.insert(name.clone(), json!(outcome));
            hashes.push(plugin.hash.clone());
        }
    }
    cache::touch(dir, &hashes);
    let removed = cache::prune(dir, cache::KEEP_BYTES, &hashes);
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "pruned the least recently used compiled components");
    }
    json!({"dir": dir, "plugins": plugins})
}
