//! `log.log`: plugin log lines go into the daemon's `tracing` output,
//! tagged with the call's identity and with granted secrets masked.

use super::StepState;
use crate::bindings::stephost::plugin::log::{Host, Level};

/// Longest log line kept; a plugin cannot flood the daemon's log.
const MAX_LINE: usize = 8 * 1024;

impl Host for StepState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let mut message = self.grant.mask(&message);
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [truncated]");
        }
        let c = &self.call;
        macro_rules! emit {
            ($lvl:expr) => {
                tracing::event!(
                    target: "stephost::plugin",
                    $lvl,
                    plugin = %c.plugin,
                    execution_id = %c.execution_id,
                    step = %c.step,
                    "{message}"
                )
            };
        }
        match level {
            Level::Trace => emit!(tracing::Level::TRACE),
            Level::Debug => emit!(tracing::Level::DEBUG),
            Level::Info => emit!(tracing::Level::INFO),
            Level::Warn => emit!(tracing::Level::WARN),
            Level::Error => emit!(tracing::Level::ERROR),
        }
        Ok(())
    }
}
