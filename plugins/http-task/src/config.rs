//! The step's config: what the workflow author may set, its defaults, the
//! retry policy, and the checks serde cannot do. Pure, so that every rule
//! is tested natively.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use serde_json::Value;
use stephost_guest::{Context, Failure};

use crate::{GUID, SIGNATURE, TIMESTAMP};

/// Methods a workflow author may choose, and those of them that carry a
/// body.
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];
const METHODS_WITH_BODY: &[&str] = &["POST", "PUT", "PATCH"];

pub(crate) const CONFIG_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["url"],
  "additionalProperties": false,
  "properties": {
    "name": { "type": "string", "description": "User-visible name of the task, used in logs and errors; the step name when absent" },
    "url": { "type": "string", "description": "Where the request goes" },
    "method": { "enum": ["GET", "POST", "PUT", "PATCH", "DELETE"], "default": "POST" },
    "headers": { "type": "object", "additionalProperties": { "type": "string" } },
    "body": { "type": "string", "description": "Body template (POST, PUT, PATCH only): {{workflow}}, {{execution_id}}, {{step}}, {{attempt}}, {{step_run_id}}, {{steps.<step>.<path>}}, {{input}}, {{input.<path>}}; add | json to insert JSON" },
    "secret_key": { "type": "string", "description": "Name of a daemon secret granted to http-task; signs every request" },
    "validate_tls": { "type": "boolean", "default": true },
    "retry_on_failure": {
      "description": "true for the defaults, or the policy; off when absent or false",
      "oneOf": [
        { "type": "boolean" },
        { "type": "object", "additionalProperties": false, "properties": {
          "attempts": { "type": "integer", "minimum": 1, "default": 3, "description": "Requests in all, the first included" },
          "backoff_ms": { "type": "integer", "minimum": 0, "default": 1000, "description": "Delay before the first retry" },
          "multiplier": { "type": "number", "minimum": 1, "default": 2, "description": "Each further delay is the previous one times this" }
        } }
      ]
    }
  }
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default)]
    pub(crate) name: Option<String>,
    pub(crate) url: String,
    #[serde(default = "default_method")]
    pub(crate) method: String,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) body: Option<String>,
    #[serde(default)]
    pub(crate) secret_key: Option<String>,
    #[serde(default = "yes")]
    pub(crate) validate_tls: bool,
    #[serde(default, deserialize_with = "retry_policy")]
    pub(crate) retry_on_failure: Option<RetryPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RetryPolicy {
    pub(crate) attempts: u32,
    pub(crate) backoff_ms: u64,
    pub(crate) multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff_ms: 1000,
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `tries`-th failed request.
    pub(crate) fn delay_ms(&self, tries: u32) -> u64 {
        let exponent = i32::try_from(tries.saturating_sub(1)).unwrap_or(i32::MAX);
        // A float-to-int cast saturates, so a huge product stays u64::MAX
        // (and the daemon clips it to its own maximum wait).
        (self.backoff_ms as f64 * self.multiplier.powi(exponent)) as u64
    }
}

/// `retry_on_failure` is a checkbox in the product, so `true` and `false`
/// work as well as a policy object.
fn retry_policy<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RetryPolicy>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null | Value::Bool(false) => Ok(None),
        Value::Bool(true) => Ok(Some(RetryPolicy::default())),
        policy => RetryPolicy::deserialize(policy)
            .map(Some)
            .map_err(D::Error::custom),
    }
}

fn default_method() -> String {
    "POST".to_owned()
}

fn yes() -> bool {
    true
}

impl Config {
    pub(crate) fn load(ctx: &Context) -> Result<Self, Failure> {
        let mut config: Config = ctx.config()?;
        config.method = config.method.to_ascii_uppercase();
        config.check().map_err(|why| {
            Failure::new("invalid-config", format!("step `{}`: {why}", ctx.step()))
        })?;
        Ok(config)
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if !METHODS.contains(&self.method.as_str()) {
            return Err(format!(
                "method {:?} is not one of {}",
                self.method,
                METHODS.join(", ")
            ));
        }
        if self.body.is_some() && !METHODS_WITH_BODY.contains(&self.method.as_str()) {
            return Err(format!(
                "a body is sent only with {}, not with {}",
                METHODS_WITH_BODY.join(", "),
                self.method
            ));
        }
        if let Some(name) = self.headers.keys().find(|name| {
            [GUID, TIMESTAMP, SIGNATURE]
                .iter()
                .any(|own| name.eq_ignore_ascii_case(own))
        }) {
            return Err(format!(
                "header {name} is set by the step and cannot be configured"
            ));
        }
        if let Some(policy) = &self.retry_on_failure {
            if policy.attempts == 0 {
                return Err("retry_on_failure.attempts must be at least 1".to_owned());
            }
            if !(policy.multiplier.is_finite() && policy.multiplier >= 1.0) {
                return Err("retry_on_failure.multiplier must be a number >= 1".to_owned());
            }
        }
        Ok(())
    }

    /// The task's name for people: the configured one, else the step's.
    pub(crate) fn display_name<'a>(&'a self, ctx: &'a Context) -> &'a str {
        self.name.as_deref().unwrap_or(ctx.step())
    }

    pub(crate) fn attempts(&self) -> u32 {
        self.retry_on_failure.as_ref().map_or(1, |p| p.attempts)
    }
}

#[cfg(test)]
mod tests {
    use stephost_guest::StepContext;

    use super::*;

    fn ctx(config: &str) -> Context {
        Context::new(StepContext {
            execution_id: "ex-1".into(),
            workflow: "orders".into(),
            step: "notify".into(),
            attempt: 1,
            step_run_id: "run-1".into(),
            config: config.into(),
            metadata: r#"{"workflow": "orders", "attempt": 1}"#.into(),
        })
    }

    fn load(config: &str) -> Result<Config, Failure> {
        Config::load(&ctx(config))
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

    /// The documented defaults: POST, no headers, no body, no signing, TLS
    /// checked, no retries (one request in all), the step's name.
    #[test]
    fn defaults_are_the_documented_ones() {
        let config = load(r#"{"url": "https://erp.example/hook"}"#).unwrap();
        assert_eq!(config.method, "POST");
        assert!(config.headers.is_empty());
        assert_eq!(config.body, None);
        assert_eq!(config.secret_key, None);
        assert!(config.validate_tls);
        assert!(config.retry_on_failure.is_none());
        assert_eq!(config.attempts(), 1);
        assert_eq!(config.display_name(&ctx("")), "notify");
        let named = load(r#"{"url": "u", "name": "Notify ERP"}"#).unwrap();
        assert_eq!(named.display_name(&ctx("")), "Notify ERP");
    }

    /// "`GET`, `POST`, `PUT`, `PATCH` or `DELETE` (any case)"; anything
    /// else is `invalid-config`.
    #[test]
    fn the_method_is_normalised_and_checked() {
        for (given, sent) in [("get", "GET"), ("Patch", "PATCH"), ("delete", "DELETE")] {
            let config = load(&format!(r#"{{"url": "u", "method": "{given}"}}"#)).unwrap();
            assert_eq!(config.method, sent);
        }
        let text = invalid_config(r#"{"url": "u", "method": "head"}"#);
        assert_eq!(
            text,
            r#"step `notify`: method "HEAD" is not one of GET, POST, PUT, PATCH, DELETE"#
        );
    }

    /// A body "only with `POST`, `PUT` or `PATCH`; with `GET` or `DELETE`
    /// it is a config error".
    #[test]
    fn a_body_only_goes_with_post_put_or_patch() {
        for method in ["post", "PUT", "patch"] {
            load(&format!(
                r#"{{"url": "u", "method": "{method}", "body": "x"}}"#
            ))
            .unwrap();
        }
        for method in ["GET", "delete"] {
            let text = invalid_config(&format!(
                r#"{{"url": "u", "method": "{method}", "body": "x"}}"#
            ));
            assert_eq!(
                text,
                format!(
                    "step `notify`: a body is sent only with POST, PUT, PATCH, not with {}",
                    method.to_ascii_uppercase()
                )
            );
            // Without a body, these methods are fine.
            load(&format!(r#"{{"url": "u", "method": "{method}"}}"#)).unwrap();
        }
    }

    /// "The three `X-Http-Task-*` headers belong to the step and cannot be
    /// set here", in any case.
    #[test]
    fn the_step_s_own_headers_cannot_be_configured() {
        for header in [
            "X-Http-Task-Guid",
            "x-http-task-timestamp",
            "X-HTTP-TASK-SIGNATURE",
        ] {
            let text = invalid_config(&format!(
                r#"{{"url": "u", "headers": {{"{header}": "v"}}}}"#
            ));
            assert_eq!(
                text,
                format!(
                    "step `notify`: header {header} is set by the step and cannot be configured"
                )
            );
        }
        load(r#"{"url": "u", "headers": {"X-Http-Task-Name": "v"}}"#).unwrap();
    }

    /// `retry_on_failure`: `false` (or absent, or null) is off, `true` is
    /// the documented defaults (3 attempts, 1000 ms, times 2), a table
    /// overrides what it sets.
    #[test]
    fn retry_on_failure_is_false_true_or_a_policy() {
        for off in ["false", "null"] {
            let config = load(&format!(r#"{{"url": "u", "retry_on_failure": {off}}}"#)).unwrap();
            assert!(config.retry_on_failure.is_none(), "{off}");
        }
        let config = load(r#"{"url": "u", "retry_on_failure": true}"#).unwrap();
        let policy = config.retry_on_failure.as_ref().unwrap();
        assert_eq!(
            (policy.attempts, policy.backoff_ms, policy.multiplier),
            (3, 1000, 2.0)
        );
        assert_eq!(config.attempts(), 3);
        let config =
            load(r#"{"url": "u", "retry_on_failure": {"attempts": 5, "backoff_ms": 2000}}"#)
                .unwrap();
        let policy = config.retry_on_failure.as_ref().unwrap();
        assert_eq!(
            (policy.attempts, policy.backoff_ms, policy.multiplier),
            (5, 2000, 2.0)
        );
    }

    /// `attempts` ≥ 1 and a finite `multiplier` ≥ 1; unknown policy keys
    /// and other types are config errors too.
    #[test]
    fn a_bad_retry_policy_is_invalid_config() {
        let text = invalid_config(r#"{"url": "u", "retry_on_failure": {"attempts": 0}}"#);
        assert_eq!(
            text,
            "step `notify`: retry_on_failure.attempts must be at least 1"
        );
        for multiplier in ["0.5", "0", "-2"] {
            let text = invalid_config(&format!(
                r#"{{"url": "u", "retry_on_failure": {{"multiplier": {multiplier}}}}}"#
            ));
            assert_eq!(
                text,
                "step `notify`: retry_on_failure.multiplier must be a number >= 1"
            );
        }
        let text = invalid_config(r#"{"url": "u", "retry_on_failure": {"tries": 2}}"#);
        assert!(text.contains("unknown field `tries`"), "{text}");
        let text = invalid_config(r#"{"url": "u", "retry_on_failure": "yes"}"#);
        assert!(text.contains("invalid type"), "{text}");
    }

    /// Unknown top-level keys are `invalid-config` (a misspelt key must not
    /// fall back to a default); `url` is required.
    #[test]
    fn unknown_keys_and_a_missing_url_are_invalid_config() {
        let text = invalid_config(r#"{"url": "u", "retry": true}"#);
        assert!(text.contains("unknown field `retry`"), "{text}");
        let text = invalid_config("");
        assert!(text.contains("missing field `url`"), "{text}");
    }

    /// "Each further delay is the previous one times this": backoff_ms
    /// after the first request, then times the multiplier each time; `1`
    /// is a fixed delay; a huge product saturates instead of wrapping.
    #[test]
    fn retry_delays_grow_by_the_multiplier() {
        let policy = |backoff_ms, multiplier| RetryPolicy {
            attempts: 10,
            backoff_ms,
            multiplier,
        };
        let doubling = policy(1000, 2.0);
        assert_eq!(
            (1..=4).map(|t| doubling.delay_ms(t)).collect::<Vec<_>>(),
            [1000, 2000, 4000, 8000]
        );
        let fixed = policy(250, 1.0);
        assert_eq!(
            (1..=3).map(|t| fixed.delay_ms(t)).collect::<Vec<_>>(),
            [250, 250, 250]
        );
        assert_eq!(policy(1500, 1.5).delay_ms(3), 3375);
        assert_eq!(policy(0, 2.0).delay_ms(5), 0);
        assert_eq!(policy(u64::MAX / 2, 10.0).delay_ms(40), u64::MAX);
    }
}
