//! The command line: `stephost serve` and friends. Parsing lives here so
//! `main.rs` stays a one-liner and the commands are testable.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::daemon::{Daemon, shutdown_signal};

/// Runs workflow steps as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "stephost", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
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
}

impl ServeArgs {
    /// The effective configuration.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(url) = &self.public_url {
            config.public_url = Some(url.clone());
        }
        config.validate()?;
        Ok(config)
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STEPHOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Entry point of the binary.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let config = args.config()?;
                let listen = config.listen;
                let daemon = Daemon::open(config).await?;
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("listen on {listen}"))?;
                daemon.serve(listener, shutdown_signal()).await
            }
        }
    })
}
