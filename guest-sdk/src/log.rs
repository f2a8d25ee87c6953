//! Lines in the daemon's log, tagged by the host with the execution and
//! step, so that a plugin needs no logging setup of its own.
//!
//! Never log secrets: the host cannot tell them apart from other text.

use crate::bindings::stephost::plugin::log as wit;

pub use wit::Level;

/// Write one line at `level`.
pub fn log(level: Level, message: &str) {
    wit::log(level, message);
}

/// Write one line at level `trace`.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Write one line at level `debug`.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Write one line at level `info`.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Write one line at level `warn`.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Write one line at level `error`.
pub fn error(message: &str) {
    log(Level::Error, message);
}
