//! Operator actions on one execution: retry, skip and cancel, decided by
//! [`super::transition`] and committed by the driver.

use super::driver::{Durability, Known, Settled};
use super::transition::{Event, Refusal};
use super::*;

/// Why an operator action was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No such execution (404).
    #[error("no such execution")]
    NotFound,
    /// Not in a state the action applies to (409).
    #[error("the execution is {}", .0.as_str())]
    WrongState(ExecState),
    /// Changed concurrently (409).
    #[error("the execution changed meanwhile; try again")]
    Busy,
    /// The step's plugin is no longer loaded (409).
    #[error("plugin {0:?} is not loaded")]
    UnknownPlugin(String),
    /// The store failed (503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Refusal> for AdminError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::WrongState(state) => Self::WrongState(state),
            Refusal::UnknownPlugin(name) => Self::UnknownPlugin(name),
            Refusal::NotFound => Self::NotFound,
            // Not decided for operator actions; a moving record at most.
            _ => Self::Busy,
        }
    }
}

impl Workflows {
    /// Re-runs the failed step of a failed execution: same step-run-id (so
    /// partners can dedupe), next attempt, on the plugin's current version.
    pub async fn retry(self: &Arc<Self>, id: &str) -> Result<Execution, AdminError> {
        self.act(id, Event::Retry).await
    }

    /// Skips the failed step: its input goes on to the next step, or
    /// becomes the output if it was the last one.
    pub async fn skip(self: &Arc<Self>, id: &str) -> Result<Execution, AdminError> {
        self.act(id, Event::Skip).await
    }

    /// Cancels a running or suspended execution: it fails with code
    /// `cancelled`, its callback expires and its timer is dropped.
    pub async fn cancel(self: &Arc<Self>, id: &str) -> Result<Execution, AdminError> {
        self.act(id, Event::Cancel).await
    }

    /// An operator action, decided again on what the execution is now
    /// whenever it loses its compare-and-swap (a callback resumed it, a
    /// step committed its outcome, another operator acted): it then either
    /// applies (a cancel applies to running executions too) or says why
    /// not (`wrong-state`).
    async fn act(self: &Arc<Self>, id: &str, event: Event) -> Result<Execution, AdminError> {
        match self
            .settle(id, &event, Durability::Now, None, Known::default())
            .await
        {
            Ok(Ok(Settled {
                execution: Some(exec),
                ..
            })) => Ok(exec),
            Ok(Ok(_)) => Err(AdminError::Busy),
            Ok(Err(refusal)) => Err(refusal.into()),
            Err(StoreError::Conflict(_)) => Err(AdminError::Busy),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes an ended execution with its callbacks and deliveries (and
    /// stops a result delivery still retrying): `DELETE`.
    pub async fn remove(self: &Arc<Self>, id: &str) -> Result<(), AdminError> {
        let event = Event::Remove { due: None };
        match self
            .settle(id, &event, Durability::Now, None, Known::default())
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(refusal)) => Err(refusal.into()),
            Err(StoreError::Conflict(_)) => Err(AdminError::Busy),
            Err(e) => Err(e.into()),
        }
    }

    /// The current versions of the plugins of `exec`'s remaining steps,
    /// held (see [`Registry::pin`]) until a retry or skip is written.
    pub(super) async fn pin_ahead(&self, exec: &Execution) -> crate::wasm::plugins::Pinned {
        let ahead = exec.steps.get(exec.step_index..).unwrap_or_default();
        self.registry
            .pin(ahead.iter().map(|s| s.plugin.as_str()))
            .await
    }
}
