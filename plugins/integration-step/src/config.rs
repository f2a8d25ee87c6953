//! The step's config: what the workflow author may set, and the checks
//! serde cannot do. All but reading the named secret is pure, so the rules
//! are tested natively.

use std::collections::BTreeMap;

use serde::Deserialize;
use stephost_guest::{Failure, secrets};

/// Headers the step owns, each with why it cannot be configured.
const RESERVED_HEADERS: &[(&str, &str)] = &[
    (
        "Authorization",
        "name a secret in api_key_secret instead, so the key stays out of workflow configs and logs",
    ),
    ("X-Response-URL", "the step sets it to its callback URL"),
];

pub(crate) const CONFIG_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["url"],
  "additionalProperties": false,
  "properties": {
    "url": { "type": "string", "description": "The integration URL" },
    "method": { "enum": ["POST", "PUT"], "default": "POST" },
    "api_key_secret": { "type": "string", "description": "Daemon secret whose value is sent as the Authorization header" },
    "headers": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Additional headers" },
    "timeout_ms": { "type": "integer", "minimum": 1, "description": "How long to wait for the POST to X-Response-URL after a 202; the daemon's default when absent" }
  }
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) url: String,
    #[serde(default)]
    pub(crate) method: Method,
    #[serde(default)]
    pub(crate) api_key_secret: Option<String>,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) timeout_ms: Option<u64>,
}

/// The seed offers PUT or POST, "typically POST".
#[derive(Deserialize, Default, Clone, Copy)]
pub(crate) enum Method {
    #[default]
    #[serde(rename = "POST", alias = "post")]
    Post,
    #[serde(rename = "PUT", alias = "put")]
    Put,
}

impl Method {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

impl Config {
    /// What serde cannot check: headers that clash with the step's own.
    pub(crate) fn check(&self, step: &str) -> Result<(), Failure> {
        for (reserved, why) in RESERVED_HEADERS {
            if self
                .headers
                .keys()
                .any(|h| h.eq_ignore_ascii_case(reserved))
            {
                return Err(Failure::new(
                    "invalid-config",
                    format!("step `{step}`: header {reserved} cannot be configured: {why}"),
                ));
            }
        }
        Ok(())
    }

    /// The configured Authorization value. A named secret that cannot be
    /// read fails the step: sending without the key would only earn a 401.
    pub(crate) fn api_key(&self) -> Result<Option<String>, Failure> {
        let Some(name) = &self.api_key_secret else {
            return Ok(None);
        };
        secrets::get(name).map(Some).ok_or_else(|| {
            Failure::new(
                "secret-unavailable",
                format!("secret {name:?} does not exist or is not granted to integration-step"),
            )
        })
    }

    /// The API key to blank out of error texts, if one is configured and
    /// readable: a key that cannot be read cannot be echoed either.
    pub(crate) fn key_to_mask(&self) -> Option<String> {
        self.api_key().ok().flatten()
    }
}

/// `text` with the API key blanked out. The partner may echo the request
/// in an error body, and error texts land in the status log.
pub(crate) fn masked(text: String, key: Option<&str>) -> String {
    match key {
        Some(key) if !key.is_empty() => text.replace(key, "****"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use stephost_guest::{Context, StepContext};

    use super::*;

    /// The config as `start` reads and checks it. No test names an
    /// `api_key_secret` here: reading it is a host call.
    fn load(config: &str) -> Result<Config, Failure> {
        let ctx = Context::new(StepContext {
            execution_id: "ex-1".into(),
            workflow: "wf".into(),
            step: "send-to-hr".into(),
            attempt: 1,
            step_run_id: "run-1".into(),
            config: config.into(),
            metadata: "{}".into(),
        });
        let config: Config = ctx.config()?;
        config.check(ctx.step())?;
        Ok(config)
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

    /// The README's defaults: POST, no key, no extra headers, the
    /// daemon's timeout.
    #[test]
    fn defaults_are_the_documented_ones() {
        let config = load(r#"{"url": "https://hr.example/api/hires"}"#).unwrap();
        assert_eq!(config.url, "https://hr.example/api/hires");
        assert_eq!(config.method.as_str(), "POST");
        assert_eq!(config.api_key_secret, None);
        assert!(config.headers.is_empty());
        assert_eq!(config.timeout_ms, None);
        assert_eq!(config.api_key().unwrap(), None, "no key: no Authorization");
    }

    /// `method` is `"POST"` or `"PUT"`, as the seed offers; nothing else.
    #[test]
    fn the_method_is_post_or_put() {
        for (given, sent) in [
            ("POST", "POST"),
            ("PUT", "PUT"),
            ("post", "POST"),
            ("put", "PUT"),
        ] {
            let config = load(&format!(r#"{{"url": "u", "method": "{given}"}}"#)).unwrap();
            assert_eq!(config.method.as_str(), sent);
        }
        for method in ["PATCH", "GET", "DELETE", ""] {
            let text = invalid_config(&format!(r#"{{"url": "u", "method": "{method}"}}"#));
            assert!(text.contains("unknown variant"), "{text}");
        }
    }

    /// `Authorization` and `X-Response-URL` "are the step's own and are
    /// refused (`invalid-config`)", in any case, each saying why.
    #[test]
    fn the_step_s_own_headers_are_refused() {
        let text = invalid_config(r#"{"url": "u", "headers": {"authorization": "Bearer k"}}"#);
        assert_eq!(
            text,
            "step `send-to-hr`: header Authorization cannot be configured: name a secret in \
             api_key_secret instead, so the key stays out of workflow configs and logs"
        );
        let text = invalid_config(r#"{"url": "u", "headers": {"X-RESPONSE-URL": "x"}}"#);
        assert_eq!(
            text,
            "step `send-to-hr`: header X-Response-URL cannot be configured: the step sets it \
             to its callback URL"
        );
        let config = load(r#"{"url": "u", "headers": {"X-Source": "form"}}"#).unwrap();
        assert_eq!(config.headers["X-Source"], "form");
    }

    /// "Unknown keys are an error (`invalid-config`)"; `url` is required.
    #[test]
    fn unknown_keys_and_a_missing_url_are_invalid_config() {
        let text = invalid_config(r#"{"url": "u", "api_key": "Bearer k"}"#);
        assert!(text.contains("unknown field `api_key`"), "{text}");
        let text = invalid_config(r#"{"method": "POST"}"#);
        assert!(text.contains("missing field `url`"), "{text}");
    }

    /// The key never reaches an error text: every occurrence is blanked.
    /// No key, or an empty one, leaves the text alone (replacing "" would
    /// put `****` between every character).
    #[test]
    fn masking_blanks_every_occurrence_of_the_key() {
        assert_eq!(
            masked(
                "got Bearer k1, expected not Bearer k1".into(),
                Some("Bearer k1")
            ),
            "got ****, expected not ****"
        );
        assert_eq!(masked("abc".into(), None), "abc");
        assert_eq!(masked("abc".into(), Some("")), "abc");
    }
}
