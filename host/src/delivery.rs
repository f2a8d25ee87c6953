//! Result delivery: a client that starts an execution with a `callback_url`
//! gets the result POSTed there when the execution ends, signed with the
//! Standard Webhooks scheme when a signing secret is configured.
//!
//! Nothing is lost on the way:
//! - the request for a delivery (`armed` record) is written with the
//!   execution itself, before `202` is answered;
//! - the delivery is queued (a `pending` record and its durable timer) in
//!   the very [`Change`] that ends the execution, so no end goes out
//!   without its delivery;
//! - an attempt first takes a lease (its timer moved past the request's
//!   time limit) and flushes the store, so what a client receives is always
//!   on disk, and an attempt cut short by a crash is made again after the
//!   restart, with the same `webhook-id` for the client to recognise;
//! - a failed attempt (non-2xx, no answer) is recorded on the delivery with
//!   its reason and retried every `callback_retry_interval_ms`, up to
//!   `callback_maximum_retries` times.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::bindings::stephost::plugin::signing::HmacAlg;

pub use crate::config::DeliveryConfig;
use crate::model::{
    Delivery, DeliveryAttempt, DeliveryState, Timer, TimerKind, delivery_key, now_ms,
};
use crate::store::{BoxFuture, Change, StoreError};
use crate::workflow::Workflows;

/// Time an attempt may take beyond its request's time limit before its
/// lease runs out and the delivery is tried again.
const LEASE_MARGIN_MS: u64 = 5_000;
/// How much of a client's error answer is kept on the attempt.
const MAX_REASON_CHARS: usize = 300;
/// How much of a client's error answer is read at all: the URL is the
/// client's choice, and so is how much it sends back.
const MAX_ERROR_BODY_BYTES: usize = 4 * 1024;
/// Longest `callback_url` accepted.
const MAX_URL_LEN: usize = 2048;

/// Checks a client's `callback_url`: absolute http(s) with a host.
/// Where it may point is checked by [`check_callback_address`].
pub fn validate_callback_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("callback_url is longer than {MAX_URL_LEN} bytes"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("callback_url: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "callback_url must be http or https, not {}",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("callback_url has no host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("callback_url must not carry credentials".into());
    }
    Ok(())
}

/// Refuses a (valid) `callback_url` whose host is a literal address the
/// policy refuses, so the client hears of it at start rather than from a
/// failed delivery. A name is checked when the result is delivered (in the
/// resolver), since what it resolves to may change until then.
pub fn check_callback_address(
    url: &str,
    policy: &crate::egress::AddressPolicy,
) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("callback_url: {e}"))?;
    if let Some(ip) = crate::egress::literal_ip(&parsed) {
        policy
            .check(ip)
            .map_err(|why| format!("callback_url: {why}"))?;
    }
    Ok(())
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`: the
/// Standard Webhooks `webhook-signature` value.
pub fn sign(key: &[u8], webhook_id: &str, timestamp: u64, body: &str) -> String {
    let signed = format!("{webhook_id}.{timestamp}.{body}");
    let mac = crate::capabilities::signing::hmac(HmacAlg::Sha256, key, signed.as_bytes());
    format!("v1,{}", STANDARD.encode(mac))
}

/// The API view of an execution's latest delivery, or `null`.
pub fn view(deliveries: &[Delivery]) -> serde_json::Value {
    let Some(latest) = deliveries.last() else {
        return serde_json::Value::Null;
    };
    serde_json::json!({
        "url": latest.url,
        "state": latest.state,
        "webhook_id": latest.webhook_id,
        "attempts": latest.attempts,
        "next_attempt_ms": match latest.state {
            DeliveryState::Pending => latest.due_ms,
            _ => None,
        },
        "deliveries": deliveries.iter().filter(|d| d.seq > 0).count(),
    })
}

/// Sends due deliveries; driven by the timer loop.
pub struct Deliverer {
    workflows: Arc<Workflows>,
    client: reqwest::Client,
    egress: crate::egress::Egress,
    key: Option<Vec<u8>>,
    config: DeliveryConfig,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer").finish_non_exhaustive()
    }
}

impl crate::timers::DeliveryTimers for Deliverer {
    fn fire_delivery(self: Arc<Self>, timer: Timer) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async move { self.fire(timer).await })
    }
}

impl Deliverer {
    /// A deliverer with the daemon's delivery settings and address policy
    /// (a client's URL is held to the same egress rules as a plugin's).
    pub fn new(config: &crate::Config, workflows: Arc<Workflows>) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let settings = config.delivery.clone();
        let key = settings.signing_key().map_err(anyhow::Error::msg)?;
        let egress = config.egress()?;
        let timeout = Duration::from_millis(settings.request_timeout_ms);
        let client = egress
            .client_builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .context("build the delivery HTTP client")?;
        Ok(Self {
            workflows,
            client,
            egress,
            key,
            config: settings,
        })
    }

    /// Fires a due delivery timer: takes the lease on the delivery, then
    /// makes the attempt in the background.
    pub async fn fire(self: &Arc<Self>, timer: Timer) -> Result<(), StoreError> {
        let TimerKind::Delivery { seq } = timer.kind else {
            return Ok(());
        };
        let store = self.workflows.store().clone();
        let current = store
            .delivery(&delivery_key(&timer.execution_id, seq))
            .await?;
        let live =
            current.filter(|d| d.state == DeliveryState::Pending && d.due_ms == Some(timer.due_ms));
        let Some(delivery) = live else {
            return crate::store::remove_timer(store.as_ref(), timer).await;
        };
        let lease_due = now_ms()
            .saturating_add(self.config.request_timeout_ms)
            .saturating_add(LEASE_MARGIN_MS);
        let mut next = delivery;
        next.version += 1;
        next.due_ms = Some(lease_due);
        next.updated_ms = now_ms();
        let lease = Timer {
            due_ms: lease_due,
            execution_id: timer.execution_id.clone(),
            kind: timer.kind.clone(),
        };
        match store
            .apply(&Change {
                deliveries: vec![next.clone()],
                remove_timers: vec![timer],
                add_timers: vec![lease],
                ..Default::default()
            })
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Ok(()),
            Err(e) => return Err(e),
        }
        self.workflows.metrics().timer_fired("delivery");
        let this = self.clone();
        self.workflows
            .spawn(async move { this.attempt(next).await });
        Ok(())
    }

    /// One attempt of a leased delivery, and its record.
    async fn attempt(&self, delivery: Delivery) {
        let store = self.workflows.store().clone();
        let execution_id = delivery.execution_id.clone();
        // Only what is on disk goes out: a client never sees a result that
        // a crash could take back.
        if let Err(e) = store.flush().await {
            tracing::warn!(%execution_id, error = %e, "cannot flush before a result delivery; it is retried when its lease runs out");
            return;
        }
        let started = Instant::now();
        let time_ms = now_ms();
        let result = self.send(&delivery).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let number = delivery.attempts.len() + 1;
        let mut next = delivery.clone();
        next.version += 1;
        next.updated_ms = now_ms();
        let lease = Timer {
            due_ms: delivery.due_ms.unwrap_or_default(),
            execution_id: execution_id.clone(),
            kind: TimerKind::Delivery { seq: delivery.seq },
        };
        let mut change = Change {
            remove_timers: vec![lease],
            ..Default::default()
        };
        let (ok, gave_up) = match result {
            Ok(status) => {
                next.attempts.push(DeliveryAttempt {
                    time_ms,
                    duration_ms,
                    status: Some(status),
                    error: None,
                });
                next.state = DeliveryState::Delivered;
                next.due_ms = None;
                tracing::info!(%execution_id, url = %delivery.url, attempt = number, status, "result delivered");
                (true, false)
            }
            Err((status, reason)) => {
                next.attempts.push(DeliveryAttempt {
                    time_ms,
                    duration_ms,
                    status,
                    error: Some(reason.clone()),
                });
                let retries_used = next.attempts.len().saturating_sub(1);
                if retries_used >= self.config.callback_maximum_retries as usize {
                    next.state = DeliveryState::Failed;
                    next.due_ms = None;
                    tracing::error!(%execution_id, url = %delivery.url, attempt = number, %reason, "result delivery failed; giving up after the last retry");
                    (false, true)
                } else {
                    let due = now_ms().saturating_add(self.config.callback_retry_interval_ms);
                    next.due_ms = Some(due);
                    change.add_timers.push(Timer {
                        due_ms: due,
                        execution_id: execution_id.clone(),
                        kind: TimerKind::Delivery { seq: delivery.seq },
                    });
                    tracing::warn!(%execution_id, url = %delivery.url, attempt = number, %reason, retry_in_ms = self.config.callback_retry_interval_ms, "result delivery failed; will retry");
                    (false, false)
                }
            }
        };
        change.deliveries.push(next);
        match store.apply(&change).await {
            Ok(()) => {
                self.workflows.metrics().delivery_attempt(ok, gave_up);
                if !change.add_timers.is_empty() {
                    self.workflows.timer_wake().now();
                }
            }
            Err(StoreError::Conflict(why)) => {
                tracing::warn!(%execution_id, %why, "delivery record changed during an attempt; keeping the newer one");
            }
            Err(e) => {
                tracing::error!(%execution_id, error = %e, "cannot record a delivery attempt; it is made again when its lease runs out");
            }
        }
    }

    /// POSTs the result. `Ok(status)` for a 2xx; otherwise the status (if
    /// any) and why it failed.
    async fn send(&self, d: &Delivery) -> Result<u16, (Option<u16>, String)> {
        let url = reqwest::Url::parse(&d.url).map_err(|e| (None, format!("bad URL: {e}")))?;
        self.egress
            .check_target(&url)
            .await
            .map_err(|denied| (None, denied.to_string()))?;
        let webhook_id = d.webhook_id.clone().unwrap_or_else(|| d.key());
        let timestamp = now_ms() / 1000;
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .body(d.body.clone());
        if let Some(key) = &self.key {
            request = request.header(
                "webhook-signature",
                sign(key, &webhook_id, timestamp, &d.body),
            );
        }
        let mut response = request.send().await.map_err(|e| (None, describe(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(status.as_u16());
        }
        // Only the start of an error answer is read; the rest is dropped
        // with the connection.
        let mut head = Vec::new();
        while head.len() < MAX_ERROR_BODY_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => head.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        let cut = head.len() > MAX_ERROR_BODY_BYTES;
        head.truncate(MAX_ERROR_BODY_BYTES);
        let text = String::from_utf8_lossy(&head);
        let mut snippet: String = text.chars().take(MAX_REASON_CHARS).collect();
        if cut || text.chars().count() > MAX_REASON_CHARS {
            snippet.push('…');
        }
        Err((
            Some(status.as_u16()),
            format!("client answered HTTP {}: {snippet}", status.as_u16()),
        ))
    }
}

/// Why a request got no answer, with the cause (refused, timeout, TLS).
fn describe(e: &reqwest::Error) -> String {
    match crate::egress::request_failure(e) {
        crate::egress::RequestFailure::Timeout => "no answer within the request time limit".into(),
        crate::egress::RequestFailure::Denied(text)
        | crate::egress::RequestFailure::Connection(text) => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification
    /// (github.com/standard-webhooks/standard-webhooks, spec/standard-webhooks.md).
    #[test]
    fn signs_like_the_standard_webhooks_reference() {
        let key = crate::config::delivery::decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let body = r#"{"test": 2432232314}"#;
        let sig = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn the_delivery_section_parses_with_defaults_and_names_bad_keys() {
        let c = crate::Config::from_toml("").unwrap();
        assert_eq!(c.delivery.callback_retry_interval_ms, 60_000);
        assert_eq!(c.delivery.callback_maximum_retries, 5);
        assert_eq!(c.delivery.signing_key(), Ok(None));
        let c = crate::Config::from_toml(
            "[delivery]\nsigning_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\ncallback_retry_interval_ms = 250\ncallback_maximum_retries = 0\n",
        )
        .unwrap();
        assert_eq!(c.delivery.signing_key().unwrap().unwrap().len(), 24);
        assert_eq!(c.delivery.callback_maximum_retries, 0);
        let err = crate::Config::from_toml("[delivery]\nretry_interval = 1").unwrap_err();
        assert!(err.to_string().contains("retry_interval"), "{err}");
        let err = crate::Config::from_toml("[delivery]\nsigning_secret = \"secret\"").unwrap_err();
        assert!(err.to_string().contains("whsec_"), "{err}");
        for bad in [
            "callback_retry_interval_ms = 0",
            "callback_retry_interval_ms = 18446744073709551615",
            "request_timeout_ms = 0",
            "request_timeout_ms = 100000000000",
        ] {
            let err = crate::Config::from_toml(&format!("[delivery]\n{bad}")).unwrap_err();
            let key = bad.split(' ').next().unwrap();
            assert!(err.to_string().contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn secrets_and_urls_are_checked() {
        assert!(validate_callback_url("https://client.example/results?x=1").is_ok());
        assert!(validate_callback_url("ftp://client.example/").is_err());
        assert!(validate_callback_url("not a url").is_err());
        assert!(validate_callback_url("https://user:pw@client.example/").is_err());
        let policy = crate::egress::AddressPolicy::default();
        let check = |url| check_callback_address(url, &policy);
        // Literal internal addresses are refused at once; names are
        // checked when the result is delivered.
        for internal in [
            "http://169.254.169.254/latest",
            "http://127.0.0.1:9000/results",
            "http://[::1]/r",
            "http://10.0.0.7/r",
        ] {
            let why = check(internal).unwrap_err();
            assert!(why.contains("egress_allow"), "{internal}: {why}");
        }
        assert!(check("http://localhost:9000/r").is_ok());
        let lifted = crate::egress::AddressPolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
        };
        assert!(check_callback_address("http://127.0.0.1:9000/r", &lifted).is_ok());
    }
}
