//! `http.send`: the plugin's only way out. Every request is bounded by its
//! own timeout clipped to the time left in the call, its response body is
//! capped, redirects are not followed, and each one is recorded (secrets
//! masked) for `stephost run` and for operators.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::StepState;
use crate::bindings::stephost::plugin::http::{Host, HttpError, Request, Response};

/// Timeout of a request that names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// One outbound request as the plugin made it, with what came of it.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    /// Method.
    pub method: String,
    /// URL (secrets masked).
    pub url: String,
    /// Headers (secrets masked).
    pub headers: Vec<(String, String)>,
    /// Body as text (lossy, secrets masked).
    pub body: String,
    /// Response status, if one came.
    pub status: Option<u16>,
    /// The error, if none came.
    pub error: Option<String>,
    /// Time taken.
    pub duration_ms: u64,
}

impl HttpError {
    fn describe(&self) -> String {
        match self {
            HttpError::InvalidRequest(m) => format!("invalid request: {m}"),
            HttpError::Denied(m) => format!("denied: {m}"),
            HttpError::Timeout => "timeout".into(),
            HttpError::Connection(m) => format!("connection: {m}"),
            HttpError::BodyTooLarge(n) => format!("response body larger than {n} bytes"),
        }
    }
}

/// What the embedder decides about plugins' outbound requests. The daemon
/// sends every request and watches none ([`SendAll`]); `stephost run`
/// reports each request as it happens and, with `--dry-run`, sends none.
/// A hooks trait, as wasi-http's hooks are, keeps those command-line
/// features out of the state every production call carries.
pub trait HttpHooks: Send + Sync {
    /// Whether requests are sent at all; when not, the plugin gets
    /// `denied` ("dry run").
    fn sends(&self) -> bool {
        true
    }

    /// Sees every request of every call once it was made (or refused),
    /// secrets masked.
    fn observe(&self, _execution_id: &str, _request: &RecordedRequest) {}
}

/// The daemon's hooks: send everything, watch nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendAll;

impl HttpHooks for SendAll {}

impl Host for StepState {
    async fn send(&mut self, req: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        let started = Instant::now();
        let mut record = RecordedRequest {
            method: req.method.to_ascii_uppercase(),
            url: self.grant.mask(&req.url),
            headers: req
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), self.grant.mask(v)))
                .collect(),
            body: self.grant.mask(&String::from_utf8_lossy(&req.body)),
            status: None,
            error: None,
            duration_ms: 0,
        };
        let result = if !self.services.hooks.sends() {
            Err(HttpError::Denied(
                "dry run: the request was not sent".into(),
            ))
        } else {
            self.send_inner(req).await
        };
        record.duration_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(resp) => record.status = Some(resp.status),
            Err(e) => record.error = Some(self.grant.mask(&e.describe())),
        }
        tracing::debug!(
            plugin = %self.call.plugin,
            execution_id = %self.call.execution_id,
            step = %self.call.step,
            method = %record.method,
            url = %record.url,
            status = ?record.status,
            error = ?record.error,
            "outbound request"
        );
        self.services
            .hooks
            .observe(&self.call.execution_id, &record);
        self.requests.push(record);
        Ok(result)
    }
}

impl StepState {
    async fn send_inner(&mut self, req: Request) -> Result<Response, HttpError> {
        let method = req.method.to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(HttpError::InvalidRequest(format!(
                "unsupported method {:?}",
                req.method
            )));
        }
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| HttpError::InvalidRequest(e.to_string()))?;
        let url = reqwest::Url::parse(&req.url)
            .map_err(|e| HttpError::InvalidRequest(format!("bad URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HttpError::InvalidRequest(format!(
                "URL scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        self.grant
            .hosts
            .check(&self.call.plugin, &url)
            .map_err(HttpError::Denied)?;
        self.services
            .egress
            .check_target(&url)
            .await
            .map_err(|denied| HttpError::Denied(denied.to_string()))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &req.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::InvalidRequest(format!("bad header name {name:?}")))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| HttpError::InvalidRequest(format!("bad value for header {name}")))?;
            headers.append(name, value);
        }

        let left = self.call.deadline.saturating_duration_since(Instant::now());
        let wanted = req
            .timeout_ms
            .map(|ms| Duration::from_millis(u64::from(ms)))
            .unwrap_or(DEFAULT_TIMEOUT);
        let timeout = wanted.min(left);
        if timeout.is_zero() {
            return Err(HttpError::Timeout);
        }

        let client = if req.validate_tls {
            &self.services.http
        } else {
            &self.services.http_insecure
        };
        let mut builder = client.request(method, url).headers(headers);
        if !req.body.is_empty() {
            builder = builder.body(req.body);
        }
        let limit = self.grant.limits.max_body_bytes;
        let exchange = async move {
            let mut resp = builder.send().await.map_err(map_error)?;
            if resp.content_length().is_some_and(|n| n > limit) {
                return Err(HttpError::BodyTooLarge(limit));
            }
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(map_error)? {
                if body.len() as u64 + chunk.len() as u64 > limit {
                    return Err(HttpError::BodyTooLarge(limit));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Response {
                status,
                headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout),
        }
    }
}

fn map_error(e: reqwest::Error) -> HttpError {
    match crate::egress::request_failure(&e) {
        crate::egress::RequestFailure::Timeout => HttpError::Timeout,
        crate::egress::RequestFailure::Denied(text) => HttpError::Denied(text),
        crate::egress::RequestFailure::Connection(text) => HttpError::Connection(text),
    }
}
