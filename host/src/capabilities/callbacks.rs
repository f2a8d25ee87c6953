//! `callbacks.register`: hands the plugin a correlation id and the URL a
//! partner calls back on. Registration goes through a [`Registrar`] so the
//! daemon can make the ticket good before the plugin sends the URL
//! anywhere, while `stephost run` can keep it in memory.

use super::{CallInfo, StepState};
use crate::bindings::stephost::plugin::callbacks::{CallbackOptions, Host, Ticket};
use crate::model::CallbackRecord;
use crate::store::BoxFuture;

/// A ticket handed out, and how it is known later.
#[derive(Debug, Clone)]
pub struct Registration {
    /// What the plugin gets.
    pub ticket: Ticket,
    /// `None` when the registration is stored (durable before the ticket
    /// was returned); otherwise the ticket is derived, nothing was written,
    /// and this is the record (version 0, `registered`) that a `suspend`
    /// on it, or an early callback, creates.
    pub unstored: Option<CallbackRecord>,
}

/// Registers callbacks for step calls.
pub trait Registrar: Send + Sync + 'static {
    /// Registers the `n`-th callback of the call (from 0); returns the
    /// ticket only once a callback on it cannot be lost: the registration
    /// is durable, or the ticket can be derived again from what is.
    fn register<'a>(
        &'a self,
        call: &'a CallInfo,
        require_token: bool,
        n: u32,
    ) -> BoxFuture<'a, Result<Registration, String>>;
}

impl Host for StepState {
    async fn register(
        &mut self,
        opts: CallbackOptions,
    ) -> wasmtime::Result<Result<Ticket, String>> {
        let registrar = self.services.registrar.clone();
        let n = self.registrations;
        self.registrations += 1;
        Ok(
            match registrar.register(&self.call, opts.require_token, n).await {
                Ok(Registration { ticket, unstored }) => {
                    self.unstored.extend(unstored);
                    Ok(ticket)
                }
                Err(e) => Err(e),
            },
        )
    }
}
