//! stephost: a daemon that runs workflow steps as sandboxed WebAssembly
//! components, suspends them while partners work, and resumes them when the
//! partner calls back — across restarts, with nothing lost.
//!
//! The library holds everything; the `stephost` binary only parses arguments
//! and calls [`cli::run`]. Tests start the real daemon with [`Daemon::open`]
//! and [`Daemon::serve`] on a listener of their own.

pub mod api;
pub mod auth;
pub mod bindings;
pub mod builtin;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod egress;
pub mod grant;
pub mod metrics;
pub mod model;
pub mod scaffold;
pub mod store;
pub mod timers;
pub mod wasm;
pub mod workflow;

pub use config::Config;
pub use daemon::Daemon;
