//! The step's config: what the workflow author may set, its defaults, and
//! the checks serde cannot do. Pure, so that every rule is tested natively.

use std::collections::BTreeMap;

use serde::Deserialize;
use stephost_guest::{Context, Failure};

use crate::{CALLBACK_URL, CORRELATION_ID};

/// The built-in document statuses of the platform this step reproduces;
/// a workflow with custom statuses lists its own in `document_statuses`.
const DEFAULT_DOCUMENT_STATUSES: &[&str] = &[
    "Inbox",
    "Initialize",
    "Processing",
    "Batching",
    "AwaitingConfirmation",
    "Failed",
    "Ignored",
    "Outbox",
    "Completed",
];

/// Methods a workflow author may choose; checked up front so that a typo
/// is a config error, not a failed partner call.
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

pub(crate) const CONFIG_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["url"],
  "additionalProperties": false,
  "properties": {
    "url": { "type": "string", "description": "Where to send the document" },
    "method": { "enum": ["GET", "POST", "PUT", "PATCH", "DELETE"], "default": "POST" },
    "headers": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Extra request headers" },
    "async": { "type": "boolean", "default": false, "description": "Async flow: wait for the partner's callback" },
    "use_async_response_body": { "type": "boolean", "default": true, "description": "On an Ok callback, its body becomes the document; otherwise the document goes on unchanged" },
    "document_statuses": { "type": "array", "items": { "type": "string" }, "description": "Recognised document statuses for X-Link-Document-Status" },
    "timeout_ms": { "type": "integer", "minimum": 1, "description": "How long to wait for the callback; the daemon's default when absent" },
    "require_token": { "type": "boolean", "default": true, "description": "The callback needs an API token with permission callbacks:send in addition to the URL's secret; false admits a callback on the URL alone" }
  }
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) url: String,
    #[serde(default = "default_method")]
    pub(crate) method: String,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    #[serde(default, rename = "async")]
    pub(crate) async_flow: bool,
    #[serde(default = "yes")]
    pub(crate) use_async_response_body: bool,
    #[serde(default = "default_document_statuses")]
    pub(crate) document_statuses: Vec<String>,
    #[serde(default)]
    pub(crate) timeout_ms: Option<u64>,
    /// Link asks for the "API AsyncFlow Send Callback" permission on
    /// every callback, so the token is required unless turned off.
    #[serde(default = "yes")]
    pub(crate) require_token: bool,
}

fn default_method() -> String {
    "POST".to_owned()
}

fn yes() -> bool {
    true
}

fn default_document_statuses() -> Vec<String> {
    DEFAULT_DOCUMENT_STATUSES
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

impl Config {
    pub(crate) fn load(ctx: &Context) -> Result<Self, Failure> {
        let mut config: Config = ctx.config()?;
        config.method = config.method.to_ascii_uppercase();
        let invalid =
            |text: String| Failure::new("invalid-config", format!("step `{}`: {text}", ctx.step()));
        if !METHODS.contains(&config.method.as_str()) {
            return Err(invalid(format!(
                "method {:?} is not one of {}",
                config.method,
                METHODS.join(", ")
            )));
        }
        // The step owns these two: a configured copy would hand the
        // partner a second, wrong correlation id or callback URL.
        if let Some(name) = config.headers.keys().find(|name| {
            name.eq_ignore_ascii_case(CORRELATION_ID) || name.eq_ignore_ascii_case(CALLBACK_URL)
        }) {
            return Err(invalid(format!(
                "header {name} is set by the step and cannot be configured"
            )));
        }
        if config.timeout_ms == Some(0) {
            return Err(invalid("timeout_ms must be greater than zero".to_owned()));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use stephost_guest::StepContext;

    use super::*;

    fn load(config: &str) -> Result<Config, Failure> {
        Config::load(&Context::new(StepContext {
            execution_id: "ex-1".into(),
            workflow: "wf".into(),
            step: "validate".into(),
            attempt: 1,
            step_run_id: "run-1".into(),
            config: config.into(),
            metadata: "{}".into(),
        }))
    }

    fn invalid_config(config: &str) -> String {
        match load(config) {
            Ok(_) => panic!("{config} was accepted"),
            Err(f) => {
                assert_eq!(f.error_code.as_deref(), Some("invalid-config"), "{config}");
                f.error_text
            }
        }
    }

    /// The documented defaults: POST, no headers, the sync flow, the
    /// callback body used, the platform's built-in document statuses, the
    /// daemon's timeout, a token required.
    #[test]
    fn defaults_are_the_documented_ones() {
        let config = load(r#"{"url": "https://p.example"}"#).unwrap();
        assert_eq!(config.url, "https://p.example");
        assert_eq!(config.method, "POST");
        assert!(config.headers.is_empty());
        assert!(!config.async_flow);
        assert!(config.use_async_response_body);
        assert_eq!(
            config.document_statuses,
            [
                "Inbox",
                "Initialize",
                "Processing",
                "Batching",
                "AwaitingConfirmation",
                "Failed",
                "Ignored",
                "Outbox",
                "Completed"
            ]
        );
        assert_eq!(config.timeout_ms, None);
        assert!(config.require_token);
    }

    /// `document_statuses` replaces the built-in list rather than adding
    /// to it; the config key for the async flow is `async`.
    #[test]
    fn configured_document_statuses_replace_the_built_in_ones() {
        let config = load(
            r#"{"url": "u", "async": true, "use_async_response_body": false,
                "document_statuses": ["Parked"], "timeout_ms": 60000}"#,
        )
        .unwrap();
        assert!(config.async_flow);
        assert!(!config.use_async_response_body);
        assert_eq!(config.document_statuses, ["Parked"]);
        assert_eq!(config.timeout_ms, Some(60_000));
    }

    /// "`GET`, `POST`, `PUT`, `PATCH` or `DELETE` (any case)": normalised
    /// to upper case, so the request and the check see one spelling.
    #[test]
    fn the_method_is_normalised_to_upper_case() {
        for (given, sent) in [
            ("get", "GET"),
            ("Post", "POST"),
            ("put", "PUT"),
            ("pAtCh", "PATCH"),
            ("DELETE", "DELETE"),
        ] {
            let config = load(&format!(r#"{{"url": "u", "method": "{given}"}}"#)).unwrap();
            assert_eq!(config.method, sent);
        }
    }

    /// Any other method is a config error, not a failed partner call.
    #[test]
    fn other_methods_are_invalid_config() {
        for method in ["HEAD", "OPTIONS", "", "POST "] {
            let text = invalid_config(&format!(r#"{{"url": "u", "method": "{method}"}}"#));
            assert_eq!(
                text,
                format!(
                    "step `validate`: method {:?} is not one of GET, POST, PUT, PATCH, DELETE",
                    method.to_ascii_uppercase()
                )
            );
        }
    }

    /// `X-Link-Correlation-Id` and `X-Link-Callback-Url` "belong to the
    /// step and cannot be set here", in any case; other headers can.
    #[test]
    fn the_step_s_own_headers_cannot_be_configured() {
        for header in [
            "X-Link-Correlation-Id",
            "x-link-callback-url",
            "X-LINK-CORRELATION-ID",
        ] {
            let text = invalid_config(&format!(
                r#"{{"url": "u", "headers": {{"{header}": "v"}}}}"#
            ));
            assert_eq!(
                text,
                format!(
                    "step `validate`: header {header} is set by the step and cannot be configured"
                )
            );
        }
        let config =
            load(r#"{"url": "u", "headers": {"Authorization": "Bearer t", "X-Link-Status": "x"}}"#)
                .unwrap();
        assert_eq!(config.headers.len(), 2);
    }

    /// A zero timeout would fail the wait before the partner could answer.
    #[test]
    fn timeout_ms_zero_is_invalid_config() {
        let text = invalid_config(r#"{"url": "u", "async": true, "timeout_ms": 0}"#);
        assert_eq!(
            text,
            "step `validate`: timeout_ms must be greater than zero"
        );
        assert_eq!(
            load(r#"{"url": "u", "timeout_ms": 1}"#).unwrap().timeout_ms,
            Some(1)
        );
    }

    /// "Unknown keys are an error (`invalid-config`), so a typo never falls
    /// back to a default silently"; `url` is required.
    #[test]
    fn unknown_keys_and_a_missing_url_are_invalid_config() {
        let text = invalid_config(r#"{"url": "u", "asynch": true}"#);
        assert!(text.contains("unknown field `asynch`"), "{text}");
        let text = invalid_config(r#"{"url": "u", "async_flow": true}"#);
        assert!(text.contains("unknown field `async_flow`"), "{text}");
        let text = invalid_config("");
        assert!(text.contains("missing field `url`"), "{text}");
    }

    /// Link requires a callbacks:send token on every callback; the config
    /// turns that off only when it says so.
    #[test]
    fn the_callback_needs_a_token_unless_the_config_turns_it_off() {
        let config: Config = serde_json::from_str(r#"{"url": "https://p.example"}"#).unwrap();
        assert!(config.require_token);
        let config: Config =
            serde_json::from_str(r#"{"url": "https://p.example", "require_token": false}"#)
                .unwrap();
        assert!(!config.require_token);
        let schema: serde_json::Value = serde_json::from_str(CONFIG_SCHEMA).unwrap();
        assert_eq!(schema["properties"]["require_token"]["default"], true);
    }
}
