//! The partner of the cycles benchmark: answers a step's POST at once,
//! then calls back, as a partner service would. Its own module so that the
//! way callbacks are spread over several daemons is in one place.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

/// What the partner saw when it called back.
#[derive(Debug, Clone)]
pub struct CallbackSeen {
    pub status: u16,
    pub latency: Duration,
}

pub type Waiters = Arc<Mutex<HashMap<u64, tokio::sync::oneshot::Sender<CallbackSeen>>>>;

/// The partner: answers the step's POST at once, then calls back (to the
/// node after the one whose URL it got, when there are several).
pub async fn partner(
    waiters: Waiters,
    http: reqwest::Client,
    bases: Arc<Vec<String>>,
) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let waiters = waiters.clone();
            let http = http.clone();
            let bases = bases.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let waiters = waiters.clone();
                        let http = http.clone();
                        let bases = bases.clone();
                        async move {
                            let url = req
                                .headers()
                                .get("x-callback-url")
                                .and_then(|v| v.to_str().ok())
                                .map(|url| other_node(&bases, url));
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let cycle = serde_json::from_slice::<Value>(&body)
                                .ok()
                                .and_then(|v| v["cycle"].as_u64());
                            if let (Some(url), Some(cycle)) = (url, cycle) {
                                tokio::spawn(call_back(http, waiters, url, cycle));
                            }
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"{}"),
                            )))
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(format!("http://{addr}/partner"))
}

/// The callback URL `url` (on one node's base) on the next node's base.
fn other_node(bases: &[String], url: &str) -> String {
    for (i, base) in bases.iter().enumerate() {
        if let Some(path) = url.strip_prefix(base.as_str())
            && path.starts_with('/')
        {
            return format!("{}{path}", bases[(i + 1) % bases.len()]);
        }
    }
    url.to_owned()
}

async fn call_back(http: reqwest::Client, waiters: Waiters, url: String, cycle: u64) {
    let t = Instant::now();
    let status = match http
        .post(&url)
        .header("content-type", "application/json")
        .body(json!({"cycle": cycle, "ok": true}).to_string())
        .send()
        .await
    {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let _ = resp.bytes().await;
            status
        }
        Err(_) => 0,
    };
    let seen = CallbackSeen {
        status,
        latency: t.elapsed(),
    };
    if let Some(tx) = waiters.lock().unwrap().remove(&cycle) {
        let _ = tx.send(seen);
    }
}
