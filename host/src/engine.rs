//! The one wasmtime [`Engine`] of the daemon and the clock that interrupts
//! plugins: epoch interruption, ticked by a tokio task, lets a call's time
//! limit be checked without a thread per call and makes a busy plugin yield
//! to the executor so it cannot starve the others.

use std::time::Duration;

use anyhow::Context as _;
use wasmtime::{Config, Engine};

/// How often the epoch advances: the granularity of time limits.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Builds the engine every plugin is compiled for.
pub fn new_engine() -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("configure the wasm engine")
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the returned task
/// is aborted.
pub fn spawn_epoch_ticker(engine: Engine) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(EPOCH_TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            engine.increment_epoch();
        }
    })
}
