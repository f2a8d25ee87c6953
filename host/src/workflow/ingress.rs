//! Callback ingress: a partner's callback checked (secret, token), stored
//! when it comes early, or claiming the suspension it answers.

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
        // A conflict means a racing writer moved a record; re-read and
        // decide again. It settles within a few rounds.
        for _ in 0..16 {
            let rec = self
                .store
                .callback(correlation_id)
                .await?
                .ok_or(CallbackError::NotFound)?;
            let given = sha256_hex(secret.unwrap_or_default().as_bytes());
            let secret_ok = secret.is_some()
                && bool::from(given.as_bytes().ct_eq(rec.secret_sha256.as_bytes()));
            // The URL secret or an API token admits a callback. Where a
            // token is required (by the step's `require-token` or by the
            // operator) it is needed in addition to the secret, so a leaked
            // URL alone is not enough, and neither is a token alone.
            let token_required = token_required || rec.require_token;
            if token_required && !token_ok {
                return Err(CallbackError::TokenRequired);
            }
            if !secret_ok && (token_required || !token_ok) {
                return Err(CallbackError::BadSecret);
            }
            match &rec.state {
                CallbackState::Consumed => {
                    return Err(CallbackError::Duplicate(
                        "this callback was already delivered".into(),
                    ));
                }
                CallbackState::Received { .. } => {
                    return Err(CallbackError::Duplicate(
                        "a callback for this id was already received and is waiting for delivery"
                            .into(),
                    ));
                }
                CallbackState::Expired => {
                    return Err(CallbackError::Gone(
                        "the wait for this callback is over (timed out)".into(),
                    ));
                }
                CallbackState::Registered | CallbackState::Waiting => {}
            }
            let exec = self
                .store
                .execution(&rec.execution_id)
                .await?
                .ok_or(CallbackError::NotFound)?;
            if exec.state.is_terminal() {
                return Err(CallbackError::Gone(format!(
                    "the execution this callback belongs to has already {}",
                    exec.state.as_str()
                )));
            }
            // A ticket handed out by a step run or attempt that is over (the
            // execution moved on to another step, or an admin retry or a
            // retry-after started a new attempt, which registers its own):
            // nothing will ever wait for it, so storing the callback would
            // acknowledge what is then lost.
            let stale_attempt = rec.attempt.is_some_and(|a| a != exec.attempt);
            if rec.state == CallbackState::Registered
                && (rec.step_run_id != exec.step_run_id || stale_attempt)
            {
                return Err(CallbackError::Gone(
                    "the step attempt this callback belongs to is over; a later attempt has its own callback URL"
                        .into(),
                ));
            }
            if rec.state == CallbackState::Registered {
                {
                    let mut rec = rec.clone();
                    rec.version += 1;
                    rec.state = CallbackState::Received {
                        callback: callback.clone(),
                    };
                    match self
                        .store
                        .apply(&Change {
                            callbacks: vec![rec],
                            ..Default::default()
                        })
                        .await
                    {
                        Ok(()) => {}
                        Err(StoreError::Conflict(_)) => continue,
                        Err(e) => return Err(e.into()),
                    }
                    self.store.flush().await?;
                    tracing::info!(execution_id = %exec.id, step = %exec.step().name, correlation_id, "early callback stored");
                    return Ok(CallbackReply::Stored);
                }
            }
            let Some(waiting) = exec.waiting.clone().filter(|w| {
                exec.state == ExecState::Suspended
                    && w.correlation_id.as_deref() == Some(correlation_id)
            }) else {
                // The step is being resumed right now (by a timer, say);
                // let the record settle.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let from = exec.state;
            let mut next = bump(exec);
            next.state = ExecState::Running;
            next.waiting = None;
            next.pending = Some(PendingResume {
                event: ResumeWith::Callback {
                    correlation_id: correlation_id.to_owned(),
                    callback: callback.clone(),
                },
                state: waiting.state.clone(),
                waiting: waiting.clone(),
            });
            next.log(from, "callback", None);
            let mut rec = rec.clone();
            rec.version += 1;
            rec.state = CallbackState::Consumed;
            let timer = Timer {
                due_ms: waiting.due_ms,
                execution_id: next.id.clone(),
                kind: TimerKind::CallbackTimeout,
            };
            let id = next.id.clone();
            match self
                .store
                .apply(&Change {
                    execution: Some(next),
                    callbacks: vec![rec],
                    remove_timers: vec![timer],
                    ..Default::default()
                })
                .await
            {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
            self.metrics
                .transition(Some(ExecState::Suspended), ExecState::Running);
            self.store.flush().await?;
            // The claim is durable; resume in a task of its own so a partner
            // hanging up cannot abandon the execution half-way.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let this = self.clone();
            self.spawn(async move { this.drive(&id, Some(tx)).await });
            return Ok(match rx.await {
                Ok(StepReport::Rejected(reason)) => CallbackReply::Rejected(reason),
                Ok(StepReport::Ended(state)) => CallbackReply::Applied { state },
                Ok(StepReport::Suspended) => CallbackReply::Applied {
                    state: ExecState::Suspended,
                },
                // Shutting down or lost: the claim is durable, so the
                // callback is applied on restart.
                _ => CallbackReply::Applied {
                    state: ExecState::Running,
                },
            });
        }
        Err(CallbackError::Store(StoreError::Conflict(
            "callback record kept changing; try again".into(),
        )))
    }
}
