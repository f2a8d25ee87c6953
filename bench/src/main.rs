//! `stephost-bench`: the benchmark suite of stephost. Each subcommand
//! measures one figure of `docs/performance.md` and prints a table; every
//! loop is bounded in count and time, and all traffic stays on loopback.
//!
//! Build it optimised: `cargo run --release -p stephost-bench -- <figure>`.

mod cycles;
mod daemon;
mod dispatch;
mod list;
mod load;
mod nodes;
mod partner;
mod pg;
mod scale;
mod stats;
mod store;

use clap::{Parser, Subcommand};

/// The daemon's allocator (see `host/src/main.rs`), so the daemon the
/// benchmarks run in-process allocates as `stephost serve` does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "stephost benchmarks: each prints a table of measured figures")]
struct Cli {
    #[command(subcommand)]
    figure: Figure,
}

#[derive(Subcommand)]
enum Figure {
    /// Figure 1 (and 5): instantiate `echo`, call `run`, map the outcome,
    /// drop the store.
    Dispatch(dispatch::Args),
    /// Figure 2: plugin load from the compiled-component cache versus
    /// compiling.
    Load(load::Args),
    /// Figure 3 (and 5, 8): start -> suspend -> callback -> completed cycles
    /// of `wait-for-callback` through the daemon over HTTP on loopback, on
    /// sled or PostgreSQL, with one daemon or several.
    Cycles(cycles::Args),
    /// Figure 3b: durable transitions through the store alone, with and
    /// without group commit.
    Store(store::Args),
    /// Figure 4 (and 8): many suspended executions in the store (sled or
    /// PostgreSQL): RSS, callback lookup, restart-to-serving, disk per
    /// execution.
    Scale(scale::Args),
    /// Issue 15: `GET /v1/executions` filtered and paged by cursor, and
    /// the counts, with a million executions of a realistic mix stored
    /// (sled or PostgreSQL), against the scan the listing did before its
    /// indexes.
    List(list::Args),
}

fn main() -> anyhow::Result<()> {
    if let Ok(filter) = std::env::var("STEPHOST_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let cli = Cli::parse();
    match cli.figure {
        Figure::Dispatch(a) => dispatch::main(a),
        Figure::Load(a) => load::main(a),
        Figure::Cycles(a) => cycles::main(a),
        Figure::Scale(a) => scale::main(a),
        Figure::Store(a) => store::main(a),
        Figure::List(a) => list::main(a),
    }
}
