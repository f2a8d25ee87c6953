//! Callback ingress: a partner's callback checked (secret, token), stored
//! when it comes early, or claiming the suspension it answers.

use super::driver::{Durability, Known, Settled};
use super::registrar::{Locator, derived_ticket};
use super::transition::{Event, Refusal};
use super::*;
use crate::model::CallbackState;

/// How many attempts back a derived ticket is looked for: one of an older
/// attempt is refused with `410` rather than `404`.
const ATTEMPTS_BACK: u32 = 8;

/// How a callback request was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackReply {
    /// Stored before the step suspended; delivered when it does (202).
    Stored,
    /// Delivered; the step accepted it and the execution moved on (200).
    Applied {
        /// The execution's state after the step's answer.
        state: ExecState,
    },
    /// The step rejected it; the execution keeps waiting (400).
    Rejected(String),
}

/// Why a callback was refused.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// No callback registered under that id (404).
    #[error("no callback is registered under this id")]
    NotFound,
    /// The URL secret is missing or wrong (401).
    #[error("the callback secret is missing or wrong")]
    BadSecret,
    /// A token is required and was not given (401).
    #[error("this callback requires an API token with permission callbacks:send")]
    TokenRequired,
    /// Already consumed or received (409).
    #[error("{0}")]
    Duplicate(String),
    /// The wait it was for is over (410).
    #[error("{0}")]
    Gone(String),
    /// The store failed (500/503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Workflows {
    /// Handles `POST /v1/callbacks/{id}`. The callback is durable before
    /// this returns anything but an error. `locator`: where the URL says a
    /// derived ticket comes from (see `registrar.rs`); `token_ok`: the
    /// request carried a valid token with `callbacks:send`;
    /// `token_required`: the operator requires one on every callback.
    #[allow(clippy::too_many_arguments)]
    pub async fn callback(
        self: &Arc<Self>,
        correlation_id: &str,
        secret: Option<&str>,
        locator: Option<&Locator>,
        token_ok: bool,
        token_required: bool,
        callback: ReceivedCallback,
    ) -> Result<CallbackReply, CallbackError> {
        let (rec, execution, derived) = match self.store.callback(correlation_id).await? {
            Some(rec) => (rec, None, Vec::new()),
            None => {
                let locator = locator.ok_or(CallbackError::NotFound)?;
                let (rec, exec) = self
                    .derived_callback(correlation_id, locator)
                    .await?
                    .ok_or(CallbackError::NotFound)?;
                (rec.clone(), Some(exec), vec![rec])
            }
        };
        let given = sha256_hex(secret.unwrap_or_default().as_bytes());
        let secret_ok =
            secret.is_some() && bool::from(given.as_bytes().ct_eq(rec.secret_sha256.as_bytes()));
        // The URL secret or an API token admits a callback. Where a token
        // is required (by the step's `require-token` or by the operator) it
        // is needed in addition to the secret, so a leaked URL alone is not
        // enough, and neither is a token alone.
        let token_required = token_required || rec.require_token;
        if token_required && !token_ok {
            return Err(CallbackError::TokenRequired);
        }
        if !secret_ok && (token_required || !token_ok) {
            return Err(CallbackError::BadSecret);
        }
        let event = Event::Callback {
            correlation_id: correlation_id.to_owned(),
            callback,
        };
        // The verdict of the step this callback resumes, from the driver
        // the claim starts in a task of its own (so a partner hanging up
        // cannot abandon the execution half-way).
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Written without waiting for the disk: every answer below waits
        // for a flush that covers the write instead, and the claim's flush
        // runs while the step resumes rather than before it.
        let settled = self
            .settle(
                &rec.execution_id,
                &event,
                Durability::Lazy,
                Some(tx),
                Known {
                    execution,
                    callback: Some(rec.clone()),
                    derived,
                },
            )
            .await?;
        let exec = match settled {
            Ok(Settled {
                execution: Some(exec),
                ..
            }) => exec,
            Ok(Settled {
                execution: None, ..
            }) => {
                self.store.flush().await?;
                tracing::info!(execution_id = %rec.execution_id, correlation_id, "early callback stored");
                return Ok(CallbackReply::Stored);
            }
            Err(refusal) => {
                // The claim that makes this one a duplicate may not be on
                // disk yet: a 409 must not outlive it in a crash.
                self.store.flush().await?;
                return Err(match refusal {
                    Refusal::Duplicate(why) => CallbackError::Duplicate(why.into()),
                    Refusal::Gone(why) => CallbackError::Gone(why),
                    _ => CallbackError::NotFound,
                });
            }
        };
        tracing::debug!(execution_id = %exec.id, step = %exec.step().name, correlation_id, "callback claimed its suspension");
        let (flushed, report) = tokio::join!(self.store.flush(), rx);
        flushed?;
        Ok(match report {
            Ok(StepReport::Rejected(reason)) => CallbackReply::Rejected(reason),
            Ok(StepReport::Ended(state)) => CallbackReply::Applied { state },
            Ok(StepReport::Suspended) => CallbackReply::Applied {
                state: ExecState::Suspended,
            },
            // Shutting down or lost: the claim is durable, so the callback
            // is applied on restart.
            _ => CallbackReply::Applied {
                state: ExecState::Running,
            },
        })
    }

    /// A callback on a derived ticket nothing was stored for yet: derives
    /// the ticket again from the execution the URL names, for its current
    /// step run (this attempt or a few before), and makes the record that
    /// registration would have stored. `None` when the id is no ticket of
    /// that execution's step run. The secret is checked by the caller,
    /// against the record, as for a stored one.
    async fn derived_callback(
        &self,
        correlation_id: &str,
        locator: &Locator,
    ) -> Result<Option<(CallbackRecord, Execution)>, StoreError> {
        let Some(exec) = self.store.execution(&locator.execution_id).await? else {
            return Ok(None);
        };
        let key = self.ticket_key.get(self.store.as_ref()).await?;
        let at = (locator.version, locator.n);
        let first = exec.attempt.saturating_sub(ATTEMPTS_BACK).max(1);
        for attempt in (first..=exec.attempt).rev() {
            for require_token in [false, true] {
                let (cid, secret) =
                    derived_ticket(key, &exec.id, &exec.step_run_id, attempt, at, require_token);
                if bool::from(cid.as_bytes().ct_eq(correlation_id.as_bytes())) {
                    let rec = CallbackRecord {
                        correlation_id: cid,
                        version: 0,
                        execution_id: exec.id.clone(),
                        step_run_id: exec.step_run_id.clone(),
                        attempt: Some(attempt),
                        secret_sha256: sha256_hex(secret.as_bytes()),
                        require_token,
                        state: CallbackState::Registered,
                        created_ms: now_ms(),
                    };
                    return Ok(Some((rec, exec)));
                }
            }
        }
        Ok(None)
    }
}
