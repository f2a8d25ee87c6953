//! Figure 2: plugin load. Compiling a component against loading it from
//! the compiled-component cache (`<data_dir>/cache/`), for the project's
//! own interpreter-based plugins (componentize-py, componentize-js) when
//! they have been built, or any component given with `--component`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use stephost::wasm::engine::{CacheOutcome, ComponentCache};
use stephost::wasm::executor::Executor;

use crate::stats::{Samples, fmt, machine};

#[derive(clap::Args)]
pub struct Args {
    /// Components to load [default: the Python and JS example plugins
    /// under target/other-plugins/, then the built-in `http-task`].
    #[arg(long)]
    component: Vec<PathBuf>,
    /// Loads from the cache to time per component.
    #[arg(long, default_value_t = 10)]
    hits: usize,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    let defaults = [
        "target/other-plugins/python-sign-and-forward.wasm",
        "target/other-plugins/js-sign-and-forward.wasm",
    ];
    let paths: Vec<PathBuf> = if args.component.is_empty() {
        defaults
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect()
    } else {
        args.component.clone()
    };
    for p in paths {
        let bytes = std::fs::read(&p).with_context(|| format!("read {}", p.display()))?;
        inputs.push((
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            bytes,
        ));
    }
    if args.component.is_empty() {
        let http_task =
            stephost::builtin::component("http-task").context("http-task is built in")?;
        inputs.push(("http-task (built in, Rust)".into(), http_task.to_vec()));
    }

    let engine = stephost::wasm::engine::new_engine(&stephost::Config::default())?;
    let executor = Executor::new(engine.clone(), crate::dispatch::services()?)?;
    println!("# Figure 2: plugin load, compile vs compiled-component cache");
    println!("machine: {}", machine());
    println!();
    println!(
        "| component | size | compile | compile + write cache | cache entry | load from cache (median / max of {}) | of which SHA-256 check | then pre-instantiate + describe |",
        args.hits
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, bytes) in &inputs {
        let dir = tempfile::tempdir()?;
        let cache = ComponentCache::new(engine.clone(), Some(dir.path().to_owned()));
        let hash = stephost::wasm::plugins::content_hash(bytes);

        let t = Instant::now();
        wasmtime::component::Component::new(&engine, bytes).map_err(anyhow::Error::from)?;
        let compile = t.elapsed();

        let t = Instant::now();
        let (_, outcome) = cache.load_or_compile(&hash, bytes)?;
        let first = t.elapsed();
        anyhow::ensure!(outcome == CacheOutcome::Compiled, "first load compiles");
        let entry = cache.path_of(&hash).context("cache is on")?;
        let entry_size = std::fs::metadata(&entry)?.len();

        let mut hits = Vec::new();
        let mut component = None;
        for _ in 0..args.hits.max(1) {
            let t = Instant::now();
            let (c, outcome) = cache.load_or_compile(&hash, bytes)?;
            hits.push(t.elapsed());
            anyhow::ensure!(outcome == CacheOutcome::Hit, "later loads hit the cache");
            component = Some(c);
        }
        let hits = Samples::new(hits);

        let t = Instant::now();
        let data = std::fs::read(&entry)?;
        let _ = <sha2::Sha256 as sha2::Digest>::digest(&data);
        let sha = t.elapsed();

        let component = component.expect("at least one hit");
        let t = Instant::now();
        let pre = executor.prepare(&component)?;
        let info = rt.block_on(executor.describe(
            &pre,
            Arc::new(stephost::capabilities::Grant::default()),
            "bench",
        ));
        let describe = t.elapsed();
        let described = info
            .map(|i| i.name)
            .unwrap_or_else(|e| format!("describe failed: {e}"));

        println!(
            "| {name} ({described}) | {:.1} MB | {} | {} | {:.1} MB | {} / {} | {} | {} |",
            bytes.len() as f64 / 1e6,
            fmt(compile),
            fmt(first),
            entry_size as f64 / 1e6,
            fmt(hits.median()),
            fmt(hits.pct(100.0)),
            fmt(sha),
            fmt(describe),
        );
    }
    Ok(())
}
