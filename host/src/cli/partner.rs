//! `stephost partner`: a partner system to try steps with, on this
//! machine. It prints every request a step sends it and, unless told to
//! wait, calls back on the callback URL it finds in the request, so that
//! a suspend/resume round trip runs with nothing else installed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse as _, Response};
use serde_json::{Value, json};

use super::listen_address;

/// Options of `stephost partner`.
#[derive(Debug, Clone, clap::Args)]
pub struct PartnerArgs {
    /// Address to listen on, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:9000", value_parser = listen_address)]
    pub listen: SocketAddr,
    /// HTTP status to answer the step's request with.
    #[arg(long, default_value_t = 202)]
    pub status: u16,
    /// Call back this long after the request (e.g. 0s, 2s, 1m).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub delay: Duration,
    /// Never call back: print the callback URL, for calling back by hand.
    #[arg(long)]
    pub manual: bool,
    /// The callback's body (JSON).
    #[arg(long, default_value = r#"{"approved": true}"#)]
    pub callback_body: String,
    /// A header for the callback, "Name: value" (repeatable), e.g.
    /// "X-Link-Status: Ok" or "X-Status-Code: 200".
    #[arg(long = "callback-header", value_name = "NAME: VALUE", value_parser = header_arg)]
    pub callback_headers: Vec<(String, String)>,
    /// Copy this header of the step's request onto the callback
    /// (repeatable), e.g. X-Link-Correlation-Id.
    #[arg(long = "echo-header", value_name = "NAME")]
    pub echo_headers: Vec<String>,
}

fn header_arg(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("expected \"Name: value\", got {text:?}"))?;
    let (name, value) = (name.trim(), value.trim());
    reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a header name"))?;
    reqwest::header::HeaderValue::from_str(value)
        .map_err(|_| format!("{value:?} is not a header value"))?;
    Ok((name.to_owned(), value.to_owned()))
}

/// What the partner tells its operator: one JSON object per event.
pub type Emit = Arc<dyn Fn(Value) + Send + Sync>;

struct Partner {
    args: PartnerArgs,
    callback_body: Bytes,
    client: reqwest::Client,
    emit: Emit,
}

/// Serves as the partner on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    args: PartnerArgs,
    emit: Emit,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serde_json::from_str::<Value>(&args.callback_body).context("--callback-body is not JSON")?;
    StatusCode::from_u16(args.status)
        .ok()
        .filter(|s| !s.is_informational())
        .with_context(|| format!("--status {} is not a final HTTP status", args.status))?;
    let partner = Arc::new(Partner {
        callback_body: Bytes::from(args.callback_body.clone()),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("build the HTTP client")?,
        args,
        emit,
    });
    let app = axum::Router::new()
        .fallback(received)
        .layer(axum::extract::DefaultBodyLimit::max(16 << 20))
        .with_state(partner.clone());
    let local = listener.local_addr().context("the partner's address")?;
    (partner.emit)(json!({"listening": format!("http://{local}")}));
    // One connection at a time is plenty for a partner one person drives;
    // each is served on its own task.
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "partner: accept failed");
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = builder.serve_connection(io, service).await;
        });
    }
}

async fn received(
    State(partner): State<Arc<Partner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shown: Vec<_> = headers
        .iter()
        .map(|(k, v)| json!([k.as_str(), String::from_utf8_lossy(v.as_bytes())]))
        .collect();
    let text = String::from_utf8_lossy(&body);
    let callback = callback_url(&uri, &headers, &body);
    (partner.emit)(json!({"received": {
        "method": method.as_str(), "path": uri.to_string(), "headers": shown,
        "body": text, "callback_url": callback,
    }}));
    if let Some(url) = callback {
        if partner.args.manual {
            (partner.emit)(json!({"call_back_by_hand":
                format!("curl -s -XPOST '{url}' -d '{}'", partner.args.callback_body)}));
        } else {
            let echoed: Vec<(String, String)> = partner
                .args
                .echo_headers
                .iter()
                .filter_map(|name| {
                    let value = headers.get(name.as_str())?.to_str().ok()?;
                    Some((name.clone(), value.to_owned()))
                })
                .collect();
            tokio::spawn(call_back(partner.clone(), url, echoed));
        }
    }
    let status = StatusCode::from_u16(partner.args.status).unwrap_or(StatusCode::ACCEPTED);
    let headers = [(axum::http::header::CONTENT_TYPE, "application/json")];
    (status, headers, json!({"received": true}).to_string()).into_response()
}

async fn call_back(partner: Arc<Partner>, url: String, echoed: Vec<(String, String)>) {
    tokio::time::sleep(partner.args.delay).await;
    let mut request = partner
        .client
        .post(&url)
        .header("Content-Type", "application/json")
        .body(partner.callback_body.clone());
    for (name, value) in partner.args.callback_headers.iter().chain(&echoed) {
        request = request.header(name, value);
    }
    let event = match request.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let answer = resp.text().await.unwrap_or_default();
            let answer = serde_json::from_str(&answer).unwrap_or(Value::String(answer));
            json!({"called_back": {"url": url, "status": status, "answer": answer}})
        }
        Err(e) => json!({"called_back": {"url": url, "error": e.to_string()}}),
    };
    (partner.emit)(event);
}

/// The callback URL in a step's request: a header, query parameter or
/// JSON body field (at any depth) holding a stephost callback URL, as the
/// reference steps and most partners' conventions place it.
fn callback_url(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let is_callback = |s: &str| s.starts_with("http") && s.contains("/v1/callbacks/");
    let from_headers = headers
        .values()
        .filter_map(|v| v.to_str().ok())
        .find(|v| is_callback(v))
        .map(str::to_owned);
    let from_query = || {
        form_urlencoded::parse(uri.query()?.as_bytes())
            .map(|(_, v)| v.into_owned())
            .find(|v| is_callback(v))
    };
    let from_body = || {
        let value: Value = serde_json::from_slice(body).ok()?;
        find_string(&value, &is_callback)
    };
    from_headers.or_else(from_query).or_else(from_body)
}

fn find_string(value: &Value, wanted: &dyn Fn(&str) -> bool) -> Option<String> {
    match value {
        Value::String(s) if wanted(s) => Some(s.clone()),
        Value::Array(items) => items.iter().find_map(|v| find_string(v, wanted)),
        Value::Object(fields) => fields.values().find_map(|v| find_string(v, wanted)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callback_url_is_found_in_a_header_the_query_or_the_body() {
        let url = "http://127.0.0.1:8080/v1/callbacks/c?secret=s&execution=e&ticket=1.0";
        let mut headers = HeaderMap::new();
        headers.insert("x-link-callback-url", url.parse().unwrap());
        let plain: Uri = "/orders".parse().unwrap();
        assert_eq!(callback_url(&plain, &headers, b"").as_deref(), Some(url));

        let encoded: String = form_urlencoded::byte_serialize(url.as_bytes()).collect();
        let query: Uri = format!("/orders?callback_url={encoded}").parse().unwrap();
        assert_eq!(
            callback_url(&query, &HeaderMap::new(), b"").as_deref(),
            Some(url)
        );

        let body = json!({"order": 1, "meta": [{"reply_to": url}]}).to_string();
        let found = callback_url(&plain, &HeaderMap::new(), body.as_bytes());
        assert_eq!(found.as_deref(), Some(url));

        let none = json!({"url": "http://example.com/"}).to_string();
        assert_eq!(
            callback_url(&plain, &HeaderMap::new(), none.as_bytes()),
            None
        );
    }

    #[test]
    fn callback_headers_must_be_name_colon_value() {
        assert_eq!(
            header_arg("X-Link-Status: Ok"),
            Ok(("X-Link-Status".into(), "Ok".into()))
        );
        assert!(header_arg("X-Link-Status Ok").is_err());
        assert!(header_arg("bad name: v").is_err());
    }
}
