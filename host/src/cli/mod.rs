//! The command line: `stephost serve`, `run`, `token` and `executions`.
//! Parsing and dispatch live here so `main.rs` stays a one-liner, and
//! [`execute`] writes to any output so the commands are testable in-process.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crate::config::Config;
use crate::daemon::{Daemon, shutdown_signals};
use crate::model::Doc;
use crate::workflow::Target;

mod recorder;
mod remote;
mod tokens;

pub use remote::Remote;
use remote::call;
pub use tokens::TokenCommand;

/// Runs workflow steps as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "stephost", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// On an error, print its full debug form, with a backtrace when
    /// `RUST_BACKTRACE` is set (otherwise: one line and its causes).
    #[arg(long, global = true)]
    pub debug: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Run one plugin or workflow locally on a document and print the
    /// outcome and every HTTP request it made.
    Run(RunArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Inspect and repair executions of a running daemon.
    #[command(subcommand)]
    Executions(ExecutionsCommand),
    /// Write, load and inspect plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

/// Options of `stephost serve`; each overrides the config file.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Config file (TOML); without it the embedded defaults apply.
    #[arg(long, env = "STEPHOST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Data directory [default: ./stephost-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Base URL partners call back on [default: http://<listen>].
    #[arg(long)]
    pub public_url: Option<String>,
    /// Let plugins reach this internal address range (CIDR; repeatable),
    /// e.g. 127.0.0.0/8 for partners on this machine.
    #[arg(long = "egress-allow", value_name = "CIDR")]
    pub egress_allow: Vec<String>,
}

impl ServeArgs {
    /// The effective configuration.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = load_config(self.config.as_deref())?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(url) = &self.public_url {
            config.public_url = Some(url.clone());
        }
        config
            .egress_allow
            .extend(self.egress_allow.iter().cloned());
        config.validate()?;
        Ok(config)
    }
}

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
    #[arg(long, requires = "plugin")]
    pub config: Option<PathBuf>,
    /// The input document (a JSON file) [default: null].
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Daemon config (TOML) for workflows, secrets and grants.
    #[arg(long, env = "STEPHOST_CONFIG")]
    pub daemon_config: Option<PathBuf>,
    /// Print the requests the step would make without sending any.
    #[arg(long)]
    pub dry_run: bool,
    /// Where partners call back while a step waits [default: 127.0.0.1, a free port].
    #[arg(long, default_value = "127.0.0.1:0")]
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
}

/// `stephost executions ...`
#[derive(Debug, Subcommand)]
pub enum ExecutionsCommand {
    /// List executions.
    List {
        /// How to reach the daemon.
        #[command(flatten)]
        remote: Remote,
        /// Only those in this state.
        #[arg(long)]
        state: Option<String>,
    },
    /// Show one execution with its status log.
    Show {
        /// How to reach the daemon.
        #[command(flatten)]
        remote: Remote,
        /// Execution id.
        id: String,
    },
    /// Re-run the failed step of a failed execution.
    Retry {
        /// How to reach the daemon.
        #[command(flatten)]
        remote: Remote,
        /// Execution id.
        id: String,
    },
    /// Skip the failed step and go on with the next.
    Skip {
        /// How to reach the daemon.
        #[command(flatten)]
        remote: Remote,
        /// Execution id.
        id: String,
    },
    /// Cancel a running or suspended execution.
    Cancel {
        /// How to reach the daemon.
        #[command(flatten)]
        remote: Remote,
        /// Execution id.
        id: String,
    },
    /// Remove an ended execution with its status log, callbacks and
    /// deliveries.
    Delete {
        /// How to reach the daemon.
        #[command(flatten)]
        remote: Remote,
        /// Execution id.
        id: String,
    },
}

/// `stephost plugin ...`
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Write a new plugin project: a sample step, build.sh, stephost.toml.
    New {
        /// Plugin name (lower-case letters, digits, '-').
        name: String,
        /// Language of the project.
        #[arg(long, value_enum, default_value_t = crate::scaffold::Lang::Rust)]
        lang: crate::scaffold::Lang,
        /// Directory to create [default: ./NAME].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Load a component into a running daemon (uploaded, kept across
    /// restarts; new executions use it).
    Add {
        /// How to reach the daemon.
        #[command(flatten)]
        remote: Remote,
        /// Name to load it under.
        name: String,
        /// The component file (`.wasm`).
        file: PathBuf,
    },
    /// Delete an uploaded plugin from a running daemon (refused while an
    /// execution still needs it, and for built-in or configured plugins).
    Remove {
        /// How to reach the daemon.
        #[command(flatten)]
        remote: Remote,
        /// Plugin name.
        name: String,
    },
    /// List the daemon's plugins.
    List {
        /// How to reach the daemon.
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one plugin: version, hash, config schema, grant.
    Inspect {
        /// How to reach the daemon.
        #[command(flatten)]
        remote: Remote,
        /// Plugin name.
        name: String,
    },
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    })
}

fn read_json(path: &Path, what: &str) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read the {what} file {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("the {what} file {} is not valid JSON", path.display()))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STEPHOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Entry point of the binary: runs the command and exits with its code,
/// or with 1 after printing the error.
pub fn run() -> ! {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let debug = cli.debug;
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
        .and_then(|runtime| runtime.block_on(execute(cli.command, &mut std::io::stdout())));
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("{}", describe_error(&e, debug));
            std::process::exit(1);
        }
    }
}

/// An error as an operator reads it: `error: …` and one `caused by:` line
/// per cause. The debug form (which carries a backtrace whenever
/// `RUST_BACKTRACE` is set, a common setting) only with `--debug`; panics
/// keep Rust's own report.
pub fn describe_error(e: &anyhow::Error, debug: bool) -> String {
    if debug {
        return format!("error: {e:?}");
    }
    let mut shown = e.to_string();
    let mut text = format!("error: {shown}");
    for cause in e.chain().skip(1) {
        let line = cause.to_string();
        // Errors whose message already quotes their cause (the store's
        // do, for the logs and API answers that show only the message)
        // are not repeated.
        if !shown.ends_with(&line) {
            text.push_str(&format!("\n  caused by: {line}"));
        }
        shown = line;
    }
    text
}

/// Runs a command, writing its result to `out`; returns the exit code.
pub async fn execute(command: Command, out: &mut dyn Write) -> anyhow::Result<i32> {
    match command {
        Command::Serve(args) => {
            let config = args.config()?;
            let listen = config.listen;
            let daemon = Daemon::open(config).await?;
            if let Some(path) = daemon.first_admin_token().await? {
                tracing::warn!(
                    file = %path.display(),
                    "first start without API tokens: created an admin token and wrote it to this file (readable by this user only); keep it somewhere safe and delete the file"
                );
            }
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("listen on {listen}"))?;
            // First SIGTERM/Ctrl-C: graceful; a second one exits at once.
            daemon.serve(listener, shutdown_signals()).await?;
            Ok(0)
        }
        Command::Run(args) => run_locally(args, out).await,
        Command::Token(cmd) => tokens::execute(cmd, out).await,
        Command::Executions(cmd) => remote(cmd, out).await,
        Command::Plugin(PluginCommand::New { name, lang, dir }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            crate::scaffold::new_plugin(&dir, &name, lang)?;
            writeln!(
                out,
                "{}",
                json!({"created": dir, "plugin": name, "lang": lang.to_string()})
            )?;
            Ok(0)
        }
        Command::Plugin(PluginCommand::Add { remote, name, file }) => {
            let bytes = std::fs::read(&file)
                .with_context(|| format!("read the component {}", file.display()))?;
            call(
                &remote,
                reqwest::Method::POST,
                &format!("/v1/plugins?name={name}"),
                Some(bytes),
                out,
            )
            .await
        }
        Command::Plugin(PluginCommand::Remove { remote, name }) => {
            call(
                &remote,
                reqwest::Method::DELETE,
                &format!("/v1/plugins/{name}"),
                None,
                out,
            )
            .await
        }
        Command::Plugin(PluginCommand::List { remote }) => {
            call(&remote, reqwest::Method::GET, "/v1/plugins", None, out).await
        }
        Command::Plugin(PluginCommand::Inspect { remote, name }) => {
            call(
                &remote,
                reqwest::Method::GET,
                &format!("/v1/plugins/{name}"),
                None,
                out,
            )
            .await
        }
    }
}

/// `stephost run`: a throw-away daemon on a temp data dir, so the step
/// behaves exactly as in production, callbacks included.
async fn run_locally(args: RunArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let mut config = load_config(args.daemon_config.as_deref())?;
    let data = tempfile::tempdir().context("create a temporary data dir")?;
    config.data_dir = data.path().to_owned();
    config.public_url = args.public_url.clone().or(config.public_url);
    config
        .egress_allow
        .extend(args.egress_allow.iter().cloned());
    let target = match (&args.plugin, &args.workflow) {
        (Some(plugin), _) => Target::Plugin {
            name: plugin.clone(),
            config: match &args.config {
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
    let daemon = Daemon::open_with(config, recorder.clone()).await?;
    let workflows = daemon.workflows().clone();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
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
        if now.state == crate::model::ExecState::Suspended && !announced {
            announced = true;
            eprintln!(
                "suspended at step {:?}; waiting for its callback (Ctrl-C to stop)",
                now.step().name
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = tokio::signal::ctrl_c() => break now,
        }
    };
    let _ = stop.send(());
    server.await.context("local daemon task")??;

    let sent = recorder.take();
    let view = crate::api::execution_view(&exec);
    let report = json!({
        "state": view["state"],
        "output": view["output"],
        "error": view["error"],
        "dry_run": args.dry_run,
        "requests": sent,
        "status_log": view["status_log"],
    });
    writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    Ok(match exec.state {
        crate::model::ExecState::Completed => 0,
        crate::model::ExecState::Failed => 1,
        _ => 2,
    })
}

/// `stephost executions ...` over the HTTP API.
async fn remote(cmd: ExecutionsCommand, out: &mut dyn Write) -> anyhow::Result<i32> {
    let (remote, method, path) = match &cmd {
        ExecutionsCommand::List { remote, state } => (
            remote,
            reqwest::Method::GET,
            match state {
                Some(s) => format!("/v1/executions?state={s}"),
                None => "/v1/executions".to_owned(),
            },
        ),
        ExecutionsCommand::Show { remote, id } => {
            (remote, reqwest::Method::GET, format!("/v1/executions/{id}"))
        }
        ExecutionsCommand::Retry { remote, id } => (
            remote,
            reqwest::Method::POST,
            format!("/v1/executions/{id}/retry"),
        ),
        ExecutionsCommand::Skip { remote, id } => (
            remote,
            reqwest::Method::POST,
            format!("/v1/executions/{id}/skip"),
        ),
        ExecutionsCommand::Cancel { remote, id } => (
            remote,
            reqwest::Method::POST,
            format!("/v1/executions/{id}/cancel"),
        ),
        ExecutionsCommand::Delete { remote, id } => (
            remote,
            reqwest::Method::DELETE,
            format!("/v1/executions/{id}"),
        ),
    };
    call(remote, method, &path, None, out).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second daemon on a data dir hears who holds it and what to do,
    /// with the lock error underneath.
    #[test]
    fn a_held_data_dir_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let _held = crate::daemon::open_store(dir.path()).unwrap();
        let err = crate::daemon::open_store(dir.path()).unwrap_err();
        let text = describe_error(&err, false);
        assert!(
            text.starts_with("error: the data dir")
                && text.contains(
                    "is in use by another stephost process (stop it, or use its HTTP API)"
                ),
            "{text}"
        );
        assert!(
            text.contains("caused by: the data dir") && text.contains("could not acquire lock"),
            "{text}"
        );
    }
}
