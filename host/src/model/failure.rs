//! The codes an execution fails with, as one enum: the state machine names
//! a failure by its variant, and [`Failure::as_str`] is the one place the
//! stable strings are written. [`Failure::HOST_CODES`] lists every code the
//! host sets itself (a step's own codes aside); a test below keeps it equal
//! to what the variants produce, and `tests/tests/error_codes.rs` keeps
//! `docs/errors.md` equal to it.

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
    /// Every code the host itself records on a failed execution, with what
    /// it means: the codes of the variants other than [`Failure::Step`],
    /// and the codes of a call without outcome (the executor's
    /// `StepError::code`, whose tests keep this list whole).
    pub const HOST_CODES: &[(&str, &str)] = &[
        (
            "plugin-unavailable",
            "the step's plugin, or the version the execution is pinned to, is not loaded",
        ),
        (
            "callback-timeout",
            "no valid callback arrived in time and the step decided nothing else",
        ),
        ("step-failed", "the step failed without naming a code"),
        (
            "state-too-large",
            "the state of a suspend or retry-after exceeds max_state_bytes",
        ),
        (
            "body-too-large",
            "the step's output exceeds max_output_bytes",
        ),
        (
            "invalid-suspension",
            "suspend on a correlation id this step did not register, or one already used",
        ),
        (
            "invalid-outcome",
            "an outcome the step may not give here (reject-callback from run)",
        ),
        ("cancelled", "an operator cancelled the execution"),
        ("time-limit", "the call ran past the plugin's time_limit_ms"),
        (
            "memory-limit",
            "the plugin tried to grow its memory past memory_mb",
        ),
        (
            "trap",
            "the plugin trapped: a Rust panic, unreachable code, a runtime error",
        ),
        ("instantiate", "the component could not be instantiated"),
    ];

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
