//! Callback ingress: a partner's callback checked (secret, token), stored
//! when it comes early, or claiming the suspension it answers.

use super::driver::{Durability, Known, Settled};
use super::transition::{Event, Refusal};
use super::*;

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
    /// this returns anything but an error. `token_ok`: the request carried
    /// a valid token with `callbacks:send`; `token_required`: the operator
    /// requires one on every callback.
    pub async fn callback(
        self: &Arc<Self>,
        correlation_id: &str,
        secret: Option<&str>,
        token_ok: bool,
        token_required: bool,
        callback: ReceivedCallback,
    ) -> Result<CallbackReply, CallbackError> {
        let rec = self
            .store
            .callback(correlation_id)
            .await?
            .ok_or(CallbackError::NotFound)?;
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
        let settled = self
            .settle(
                &rec.execution_id,
                &event,
                Durability::Now,
                Some(tx),
                Known {
                    execution: None,
                    callback: Some(rec.clone()),
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
                tracing::info!(execution_id = %rec.execution_id, correlation_id, "early callback stored");
                return Ok(CallbackReply::Stored);
            }
            Err(Refusal::Duplicate(why)) => return Err(CallbackError::Duplicate(why.into())),
            Err(Refusal::Gone(why)) => return Err(CallbackError::Gone(why)),
            Err(_) => return Err(CallbackError::NotFound),
        };
        tracing::debug!(execution_id = %exec.id, step = %exec.step().name, correlation_id, "callback claimed its suspension");
        Ok(match rx.await {
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
}
