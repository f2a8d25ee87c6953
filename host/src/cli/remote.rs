//! Commands that act through a running daemon's HTTP API: how to reach
//! it, and one call that prints the answer.

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

/// How to reach a running daemon.
#[derive(Debug, clap::Args)]
pub struct Remote {
    /// The daemon's base URL.
    #[arg(long, env = "STEPHOST_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API token.
    #[arg(long, env = "STEPHOST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// One API call to a running daemon; prints the JSON answer, returns 0 on
/// success and 1 otherwise.
pub(super) async fn call(
    remote: &Remote,
    method: reqwest::Method,
    path: &str,
    body: Option<Vec<u8>>,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let url = format!("{}{path}", remote.url.trim_end_matches('/'));
    let mut request = reqwest::Client::new()
        .request(method, &url)
        .timeout(Duration::from_secs(300));
    if let Some(token) = &remote.token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let resp = request
        .send()
        .await
        .with_context(|| format!("reach the daemon at {url}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    writeln!(out, "{}", serde_json::to_string_pretty(&body)?)?;
    if !status.is_success() {
        eprintln!("the daemon answered {status}");
        return Ok(1);
    }
    Ok(0)
}
