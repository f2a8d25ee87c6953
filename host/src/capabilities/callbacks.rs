//! `callbacks.register`: hands the plugin a correlation id and the URL a
//! partner calls back on. Registration goes through a [`Registrar`] so the
//! daemon can make it durable before the plugin sends the URL anywhere,
//! while `stephost run` can keep it in memory.

use super::{CallInfo, StepState};
use crate::bindings::stephost::plugin::callbacks::{CallbackOptions, Host, Ticket};
use crate::store::BoxFuture;

/// Registers callbacks for step calls.
pub trait Registrar: Send + Sync + 'static {
    /// Registers one callback for the call; returns the ticket only once the
    /// registration is durable.
    fn register<'a>(
        &'a self,
        call: &'a CallInfo,
        require_token: bool,
    ) -> BoxFuture<'a, Result<Ticket, String>>;
}

impl Host for StepState {
    async fn register(
        &mut self,
        opts: CallbackOptions,
    ) -> wasmtime::Result<Result<Ticket, String>> {
        let registrar = self.services.registrar.clone();
        Ok(registrar.register(&self.call, opts.require_token).await)
    }
}
