//! `[delivery]`: how results are delivered to a client's `callback_url`.
//! Its own section type here, so that the config stays a leaf that the
//! delivery code imports, never the reverse.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

/// Upper bound of `callback_retry_interval_ms` and `request_timeout_ms`
/// (one day), so that scheduling arithmetic never overflows.
pub const MAX_DELAY_MS: u64 = 24 * 60 * 60 * 1000;

/// `[delivery]` in `stephost.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// `whsec_<base64 key>`: sign every delivery (Standard Webhooks).
    /// Without it deliveries go out unsigned.
    pub signing_secret: Option<String>,
    /// Or the name of an environment variable holding that secret.
    pub signing_secret_env: Option<String>,
    /// Delay between a failed attempt and the next.
    pub callback_retry_interval_ms: u64,
    /// Retries after the first attempt before the daemon gives up.
    pub callback_maximum_retries: u32,
    /// Time limit of one attempt, connecting included.
    pub request_timeout_ms: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            signing_secret: None,
            signing_secret_env: None,
            callback_retry_interval_ms: 60_000,
            callback_maximum_retries: 5,
            request_timeout_ms: 10_000,
        }
    }
}

impl DeliveryConfig {
    /// Checks the values; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, value) in [
            (
                "callback_retry_interval_ms",
                self.callback_retry_interval_ms,
            ),
            ("request_timeout_ms", self.request_timeout_ms),
        ] {
            if value == 0 || value > MAX_DELAY_MS {
                return Err(format!(
                    "delivery.{key} must be between 1 and {MAX_DELAY_MS} (one day), not {value}"
                ));
            }
        }
        if self.signing_secret.is_some() && self.signing_secret_env.is_some() {
            return Err(
                "give delivery.signing_secret or delivery.signing_secret_env, not both".into(),
            );
        }
        if let Some(secret) = &self.signing_secret {
            decode_secret(secret).map_err(|e| format!("delivery.signing_secret: {e}"))?;
        }
        Ok(())
    }

    /// The signing key, if one is configured (read from the environment
    /// when `signing_secret_env` names a variable).
    pub fn signing_key(&self) -> Result<Option<Vec<u8>>, String> {
        let secret = match (&self.signing_secret, &self.signing_secret_env) {
            (Some(secret), _) => secret.clone(),
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                format!("delivery.signing_secret_env names {var:?}, which is not set")
            })?,
            (None, None) => return Ok(None),
        };
        decode_secret(&secret)
            .map(Some)
            .map_err(|e| format!("delivery signing secret: {e}"))
    }
}

/// The key inside a `whsec_…` secret.
pub(crate) fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("must start with whsec_ (the Standard Webhooks secret format)")?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|e| format!("the part after whsec_ is not base64: {e}"))?;
    if key.len() < 16 {
        return Err(format!(
            "the key is {} bytes; use at least 16 (24 to 64 recommended)",
            key.len()
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_checked() {
        assert!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(decode_secret("whsec_!!!").is_err());
        assert!(decode_secret("whsec_c2hvcnQ=").is_err(), "too short");
        assert_eq!(
            decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap()
                .len(),
            24
        );
    }
}
