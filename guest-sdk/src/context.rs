//! The step's view of the call it serves, with its JSON fields parsed on
//! demand.
//!
//! The host hands config and metadata over as JSON text so that the WIT
//! contract does not depend on any one plugin's config shape; this is where
//! that text becomes typed values, with one consistent error when it does
//! not fit.

use serde::de::DeserializeOwned;

use crate::{Failure, StepContext};

/// Everything a step knows about the call it is serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    raw: StepContext,
}

impl Context {
    /// Wrap the context the host passed in.
    pub fn new(raw: StepContext) -> Self {
        Self { raw }
    }

    /// The execution: one document going through one workflow.
    pub fn execution_id(&self) -> &str {
        &self.raw.execution_id
    }

    /// Name of the workflow (the plugin's name for ad-hoc runs).
    pub fn workflow(&self) -> &str {
        &self.raw.workflow
    }

    /// Name of this step within the workflow.
    pub fn step(&self) -> &str {
        &self.raw.step
    }

    /// 1 on the first attempt; grows with each retry.
    pub fn attempt(&self) -> u32 {
        self.raw.attempt
    }

    /// Stable across retries, resumes and crash re-runs of this step: send
    /// it to partners as an idempotency key.
    pub fn step_run_id(&self) -> &str {
        &self.raw.step_run_id
    }

    /// The config exactly as the workflow author wrote it.
    pub fn config_text(&self) -> &str {
        &self.raw.config
    }

    /// The step's config, deserialized.
    ///
    /// An empty (or blank) config means "nothing configured": it reads as
    /// `{}` when `T` accepts that (a struct whose fields all have defaults,
    /// a map, a [`serde_json::Value`]) and otherwise as `null` (an
    /// `Option`, `()`), so a step with no required settings works without
    /// any config. Any other mismatch is a failure with code
    /// `invalid-config` that names the step and the problem.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        let text = self.raw.config.trim();
        let result = if text.is_empty() {
            serde_json::from_str("{}")
                .or_else(|first| serde_json::from_str("null").map_err(|_| first))
        } else {
            serde_json::from_str(text)
        };
        result.map_err(|e| {
            let text = if text.is_empty() {
                // The position would point into the `{}` stand-in, not
                // into anything the workflow author wrote.
                let message = e.to_string();
                let location = format!(" at line {} column {}", e.line(), e.column());
                let message = message.strip_suffix(&location).unwrap_or(&message);
                format!("no config given, but one is required: {message}")
            } else {
                format!("invalid config: {e}")
            };
            Failure::new(
                "invalid-config",
                format!("step `{}`: {text}", self.raw.step),
            )
        })
    }

    /// The metadata for templating (`workflow`, `execution_id`, `step`,
    /// `attempt`, `step_run_id`, `steps`), or `null` if the host sent none.
    pub fn metadata(&self) -> serde_json::Value {
        serde_json::from_str(&self.raw.metadata).unwrap_or(serde_json::Value::Null)
    }

    /// The context as the host sent it.
    pub fn raw(&self) -> &StepContext {
        &self.raw
    }

    /// Unwrap into the context as the host sent it.
    pub fn into_raw(self) -> StepContext {
        self.raw
    }
}

impl From<StepContext> for Context {
    fn from(raw: StepContext) -> Self {
        Self::new(raw)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::{Value, json};

    use super::*;

    pub(crate) fn ctx(config: &str) -> Context {
        Context::new(StepContext {
            execution_id: "ex-1".into(),
            workflow: "wf".into(),
            step: "notify".into(),
            attempt: 2,
            step_run_id: "run-1".into(),
            config: config.into(),
            metadata: r#"{"workflow":"wf","steps":{"a":{"x":1}}}"#.into(),
        })
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Required {
        url: String,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    struct AllOptional {
        #[serde(default)]
        timeout_ms: Option<u64>,
    }

    #[test]
    fn accessors() {
        let c = ctx("");
        assert_eq!(c.execution_id(), "ex-1");
        assert_eq!(c.workflow(), "wf");
        assert_eq!(c.step(), "notify");
        assert_eq!(c.attempt(), 2);
        assert_eq!(c.step_run_id(), "run-1");
        assert_eq!(c.metadata()["steps"]["a"]["x"], 1);
    }

    #[test]
    fn config_parses_json() {
        let c = ctx(r#"{"url":"http://x"}"#);
        assert_eq!(c.config::<Required>().unwrap().url, "http://x");
    }

    #[test]
    fn empty_config_reads_as_empty_object_or_null() {
        let c = ctx("  ");
        assert_eq!(c.config::<AllOptional>().unwrap(), AllOptional::default());
        assert_eq!(c.config::<Value>().unwrap(), json!({}));
        assert_eq!(c.config::<BTreeMap<String, u8>>().unwrap(), BTreeMap::new());
        assert_eq!(c.config::<Option<Required>>().unwrap(), None);
        c.config::<()>().unwrap();
    }

    #[test]
    fn missing_required_config_is_invalid_config() {
        let f = ctx("").config::<Required>().unwrap_err();
        assert_eq!(f.error_code.as_deref(), Some("invalid-config"));
        assert!(f.error_text.contains("notify"), "{}", f.error_text);
        assert_eq!(
            f.error_text,
            "step `notify`: no config given, but one is required: missing field `url`"
        );
    }

    #[test]
    fn malformed_config_is_invalid_config() {
        let f = ctx("{not json").config::<Value>().unwrap_err();
        assert_eq!(f.error_code.as_deref(), Some("invalid-config"));
        assert!(
            f.error_text.starts_with("step `notify`: invalid config:"),
            "{}",
            f.error_text
        );
    }

    #[test]
    fn bad_metadata_is_null() {
        let mut raw = ctx("").into_raw();
        raw.metadata = String::new();
        assert_eq!(Context::new(raw).metadata(), Value::Null);
    }
}
