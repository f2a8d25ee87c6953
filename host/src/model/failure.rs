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
    /// and the codes of a call without outcome
    /// ([`StepError::code`](crate::wasm::executor::StepError::code)).
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::wasm::executor::StepError;

    /// One failure of every kind the host records. The matches are
    /// exhaustive so that a new variant of `Failure` or `StepError` does
    /// not compile here until it is listed, and then checked.
    fn every_host_failure() -> Vec<Failure> {
        let calls = [
            StepError::TimeLimit {
                limit_ms: 1,
                after_ms: 2,
            },
            StepError::MemoryLimit(1),
            StepError::Trap(String::new()),
            StepError::Instantiate(String::new()),
        ];
        for call in &calls {
            match call {
                StepError::TimeLimit { .. }
                | StepError::MemoryLimit(_)
                | StepError::Trap(_)
                | StepError::Instantiate(_) => {}
            }
        }
        let mut all = vec![
            Failure::PluginUnavailable,
            Failure::CallbackTimeout,
            Failure::StepFailed,
            Failure::StateTooLarge,
            Failure::BodyTooLarge,
            Failure::InvalidSuspension,
            Failure::InvalidOutcome,
            Failure::Cancelled,
        ];
        for failure in &all {
            match failure {
                Failure::PluginUnavailable
                | Failure::CallbackTimeout
                | Failure::StepFailed
                | Failure::StateTooLarge
                | Failure::BodyTooLarge
                | Failure::InvalidSuspension
                | Failure::InvalidOutcome
                | Failure::Cancelled => {}
                // A step's own code, and the call codes listed above.
                Failure::Step(_) | Failure::Call(_) => {}
            }
        }
        all.extend(calls.iter().map(|call| Failure::Call(call.code())));
        all
    }

    #[test]
    fn host_codes_are_exactly_the_codes_the_host_records() {
        let produced: BTreeSet<String> = every_host_failure()
            .iter()
            .map(|f| f.as_str().to_owned())
            .collect();
        let listed: BTreeSet<String> = Failure::HOST_CODES
            .iter()
            .map(|(code, _)| (*code).to_owned())
            .collect();
        assert_eq!(
            listed.len(),
            Failure::HOST_CODES.len(),
            "a code is listed twice"
        );
        assert_eq!(produced, listed);
    }
}
