//! The WebAssembly layer: the engine every component runs on (with the
//! epoch ticker that enforces time limits and the on-disk compiled cache),
//! the executor that makes one step call in a fresh sandbox, and the
//! registry of loaded plugins and their versions. Above it the state
//! machine sees plugins and calls, never wasmtime; below it are only the
//! contract's bindings, the capabilities a call imports, and the store
//! that keeps uploaded components.

pub mod engine;
pub mod executor;
pub mod plugins;
