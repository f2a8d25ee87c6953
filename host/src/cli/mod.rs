//! The command line: `stephost serve`, `run`, `token` and `executions`.
//! Parsing and dispatch live here so `main.rs` stays a one-liner, and
//! [`execute`] writes to any output so the commands are testable in-process.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crate::config::Config;
use crate::daemon::{Daemon, shutdown_signals};

mod executions;
mod local_run;
mod migrate;
pub mod partner;
mod plugin_add;
mod recorder;
mod remote;
mod tokens;

pub use executions::ExecutionsCommand;
pub use local_run::{EXIT_NOT_ENDED, RunArgs};
pub use remote::Remote;
use remote::call;
pub use tokens::TokenCommand;

/// What `--help` says about exit codes.
const EXIT_CODES: &str = "Exit codes:
  0  done: the daemon stopped cleanly; `run` completed (or its dry run
     ended); the daemon answered with success
  1  an error (printed on stderr); `run`: the execution failed; a daemon
     answered with an error
  2  the command line is wrong (usage)
  3  `run` stopped waiting (--timeout-secs or Ctrl-C) before the execution ended";

/// Runs workflow steps as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "stephost", version, about, after_help = EXIT_CODES)]
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
    /// A partner to try steps with: prints what steps send it and calls
    /// back on the callback URL it finds (one JSON object per line).
    Partner(partner::PartnerArgs),
    /// Run one plugin or workflow locally on a document and print the
    /// outcome and every HTTP request it made (exit 0 completed, 1 failed,
    /// 3 not ended).
    Run(RunArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Move a stopped sled daemon's state into a PostgreSQL database
    /// (docs/scale-out.md).
    Migrate(migrate::MigrateArgs),
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
    /// Address to listen on, HOST:PORT [default: 127.0.0.1:8080].
    #[arg(long, value_parser = listen_address)]
    pub listen: Option<SocketAddr>,
    /// Data directory [default: ./stephost-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Base URL partners call back on [default: http://<listen>].
    #[arg(long)]
    pub public_url: Option<String>,
    /// Where state lives: `sled` (in the data dir) or
    /// postgres://user@host:port/database, shared by several daemons
    /// [env: STEPHOST_STORE]. Its password goes in STEPHOST_STORE_PASSWORD
    /// or --store-password-file, never on the command line.
    #[arg(long, value_name = "sled|URL")]
    pub store: Option<String>,
    /// A file whose first line is the PostgreSQL password.
    #[arg(long, value_name = "FILE")]
    pub store_password_file: Option<PathBuf>,
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
        // Read here rather than by clap's `env`, so that a password is
        // refused only where it came from the command line.
        if let Some(store) = &self.store {
            crate::config::store::refuse_password_in_argument("--store", store)?;
            config.store = Some(store.clone());
        } else if let Ok(store) = std::env::var("STEPHOST_STORE")
            && !store.is_empty()
        {
            config.store = Some(store);
        }
        if let Some(file) = &self.store_password_file {
            config.store_password_file = Some(file.clone());
        }
        config
            .egress_allow
            .extend(self.egress_allow.iter().cloned());
        config.validate()?;
        Ok(config)
    }
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
    /// restarts; new executions use it); prints its version and grant, and
    /// what the daemon's config lacks for the grant the project's
    /// stephost.toml gives it.
    Add {
        /// How to reach the daemon.
        #[command(flatten)]
        remote: Remote,
        /// Name to load it under.
        name: String,
        /// The component file (`.wasm`).
        file: PathBuf,
        /// The project's config, whose [plugins.NAME] grant to compare
        /// with the daemon's [default: stephost.toml beside FILE, if any].
        #[arg(long)]
        config: Option<PathBuf>,
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

/// A `--listen` value: an IP and port, or a host name and port resolved
/// once, now (its first address).
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let hint = "expected HOST:PORT, e.g. 127.0.0.1:8080, [::1]:8080 or localhost:8080";
    if text
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        return Err(hint.to_owned());
    }
    let mut resolved = std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| format!("cannot resolve {text:?} ({e}); {hint}"))?;
    resolved
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address; {hint}"))
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
            // Everything the daemon creates (sled's files while it serves,
            // the compiled cache) is its owner's only, like the data dir.
            #[cfg(unix)]
            rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
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
        Command::Run(args) => local_run::run_locally(args, out).await,
        Command::Partner(args) => {
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("listen on {}", args.listen))?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
            let emit: partner::Emit = std::sync::Arc::new(move |event| {
                let _ = tx.send(event);
            });
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let mut server = tokio::spawn(partner::serve(listener, args, emit, shutdown));
            loop {
                tokio::select! {
                    Some(event) = rx.recv() => {
                        writeln!(out, "{event}")?;
                        out.flush()?;
                    }
                    done = &mut server => {
                        done.context("the partner task")??;
                        while let Ok(event) = rx.try_recv() {
                            writeln!(out, "{event}")?;
                        }
                        return Ok(0);
                    }
                }
            }
        }
        Command::Token(cmd) => tokens::execute(cmd, out).await,
        Command::Migrate(args) => migrate::execute(args, out).await,
        Command::Executions(cmd) => executions::execute(cmd, out).await,
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
        Command::Plugin(PluginCommand::Add {
            remote,
            name,
            file,
            config,
        }) => plugin_add::add(&remote, &name, &file, config.as_deref(), out).await,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A second daemon on a data dir hears who holds it and what to do,
    /// with the lock error underneath.
    #[test]
    fn a_held_data_dir_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let _held = crate::daemon::open_sled(dir.path()).unwrap();
        let err = crate::daemon::open_sled(dir.path()).unwrap_err();
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
