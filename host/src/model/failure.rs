//! The codes an execution fails with, as one enum: the state machine names
//! a failure by its variant, and [`Failure::as_str`] is the one place the
//! stable strings the API documents (`docs/api.md`) are written.

/// Why an execution failed (the `error.code` of a failed execution).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The step's plugin (or the version it is pinned to) is not loaded.
    PluginUnavailable,
    /// The callback did not arrive in time and the step did not decide.
    CallbackTimeout,
    /// The step failed without naming a code.
    StepFailed,
    /// The step failed with a code of its own.
    Step(String),
    /// `suspend` or `retry-after` state over `max_state_bytes`.
    StateTooLarge,
    /// The step's output over `max_output_bytes`.
    BodyTooLarge,
    /// `suspend` with a correlation id this step did not register, or one
    /// already used.
    InvalidSuspension,
    /// An outcome the step may not give here (`reject-callback` on `run`).
    InvalidOutcome,
    /// An operator cancelled the execution.
    Cancelled,
    /// The step call produced no outcome; the call's own code
    /// (`time-limit`, `memory-limit`, `trap`, `instantiate`).
    Call(&'static str),
}

impl Failure {
    /// The stable code recorded on the execution.
    pub fn as_str(&self) -> &str {
        match self {
            Self::PluginUnavailable => "plugin-unavailable",
            Self::CallbackTimeout => "callback-timeout",
            Self::StepFailed => "step-failed",
            Self::Step(code) => code,
            Self::StateTooLarge => "state-too-large",
            Self::BodyTooLarge => "body-too-large",
            Self::InvalidSuspension => "invalid-suspension",
            Self::InvalidOutcome => "invalid-outcome",
            Self::Cancelled => "cancelled",
            Self::Call(code) => code,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
