//! Test harness for the end-to-end tests: the real daemon on port 0 with a
//! temp data dir, and a real partner HTTP server on loopback whose answers
//! each test scripts. Nothing here is mocked; it only saves boilerplate.
//!
//! The tests run on a multi-threaded runtime, as `stephost serve` does
//! (`#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`), so the
//! daemon, the partner and the client really run in parallel and races
//! are races, not interleavings at await points.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use stephost::{Config, Daemon};

/// The loopback ranges, for `egress_allow`.
pub const LOOPBACK: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// How long a test waits for a state before failing.
pub const WAIT: Duration = Duration::from_secs(30);

/// A daemon running in this process.
pub struct TestDaemon {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// An admin API token, created before the daemon started serving.
    pub token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestDaemon {
    /// Starts a daemon with `config` (its `data_dir` replaced by `data_dir`)
    /// that may reach partners on loopback, where every test partner lives.
    pub async fn start(mut config: Config, data_dir: &Path) -> Self {
        config
            .egress_allow
            .extend(LOOPBACK.iter().map(|r| r.to_string()));
        Self::start_with_policy(config, data_dir).await
    }

    /// Starts a daemon with `config` exactly as given: no loopback
    /// exemption unless the config has one.
    pub async fn start_with_policy(mut config: Config, data_dir: &Path) -> Self {
        init_logging();
        config.data_dir = data_dir.to_owned();
        // One compiled-component cache for the whole test run (entries are
        // keyed by content hash and engine settings, and written by
        // rename), so a test daemon does not compile the built-in plugins
        // again: a test that measures compiling sets its own.
        if config.compiled_cache_dir.is_none() {
            config.compiled_cache_dir = Some(PathBuf::from(env!("STEPHOST_TEST_COMPILED_CACHE")));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let daemon = Daemon::open(config).await.expect("daemon opens");
        let token = daemon
            .create_token("test-admin", &[stephost::auth::Permission::Admin])
            .await
            .expect("create an admin token");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(daemon.serve(listener, async move {
            let _ = rx.await;
        }));
        Self {
            base: format!("http://{addr}"),
            data_dir: data_dir.to_owned(),
            token,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Starts a daemon with the embedded defaults.
    pub async fn start_default(data_dir: &Path) -> Self {
        Self::start(Config::default(), data_dir).await
    }

    /// Stops it gracefully and waits until its store is closed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("serve task").expect("serve returns Ok");
        }
    }

    /// `POST {base}{path}` with a JSON body, as an admin; returns status
    /// and JSON body (`null` if the body is not JSON).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = client()
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `POST /v1/plugins?name={name}` with a component's bytes, as an
    /// admin; returns status and JSON body (`null` if not JSON).
    pub async fn upload(&self, name: &str, bytes: Vec<u8>) -> (u16, Value) {
        let resp = client()
            .post(format!("{}/v1/plugins?name={name}", self.base))
            .bearer_auth(&self.token)
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `method {base}{path}` with bearer `token` (none: no header);
    /// returns status and JSON body (`null` if the body is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req = client().request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `GET {base}{path}` as an admin; returns status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = client()
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Mints an API token named `name` with `permissions`, as the admin;
    /// returns the token (shown once, in the answer).
    pub async fn token(&self, name: &str, permissions: &[&str]) -> String {
        self.token_with_id(name, permissions).await.0
    }

    /// [`TestDaemon::token`], and the token's id (for `DELETE
    /// /v1/tokens/{id}`).
    pub async fn token_with_id(&self, name: &str, permissions: &[&str]) -> (String, String) {
        let (status, created) = self
            .post(
                "/v1/tokens",
                json!({"name": name, "permissions": permissions}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let field = |key: &str| created[key].as_str().unwrap().to_owned();
        (field("token"), field("id"))
    }

    /// Starts an execution; returns its id.
    pub async fn start_execution(&self, body: Value) -> String {
        let resp = client()
            .post(format!("{}/v1/executions", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 201, "start execution: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    /// `GET /v1/executions/{id}`.
    pub async fn execution(&self, id: &str) -> Value {
        client()
            .get(format!("{}/v1/executions/{id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls until the execution is in `state`; panics with the execution
    /// if it ends in another state or the wait runs out.
    pub async fn wait_for(&self, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let exec = self.execution(id).await;
            let now = exec["state"].as_str().unwrap_or_default().to_owned();
            if now == state {
                return exec;
            }
            let terminal = now == "completed" || now == "failed";
            if terminal || Instant::now() > deadline {
                panic!("waited for {state}, execution is {now}: {exec:#}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /metrics` (open, no token), as series name (labels included)
    /// to value.
    pub async fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        let page = client()
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_samples(&page)
    }
}

/// Whether any file under `dir` holds `needle` byte for byte: to show that
/// a secret never reaches the disk (and, with a value that must be there,
/// that the scan sees what was stored).
pub fn files_hold(dir: &Path, needle: &[u8]) -> bool {
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                return true;
            }
        }
    }
    false
}

/// The samples of a Prometheus text page: series name (labels included)
/// to value.
pub fn metric_samples(page: &str) -> std::collections::BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A shared HTTP client.
pub fn client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap()
        })
        .clone()
}

/// Logs to the test output when `STEPHOST_LOG` is set (e.g. `debug`).
pub fn init_logging() {
    if let Ok(filter) = std::env::var("STEPHOST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A request the partner received.
#[derive(Debug, Clone)]
pub struct PartnerRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl PartnerRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `X-Callback-Url` a `wait-for-callback` step sends.
    pub fn callback_url(&self) -> String {
        self.header("x-callback-url")
            .expect("the step sends X-Callback-Url")
            .to_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What the partner answers.
pub type Reply = (u16, Value);

type Handler =
    Arc<dyn Fn(PartnerRequest) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// A partner HTTP service on loopback that records what it receives.
pub struct Partner {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    requests: Arc<Mutex<Vec<PartnerRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Partner {
    /// Answers every request with `202 {"accepted": true}`.
    pub async fn accepting() -> Self {
        Self::start(|_| async { (202, json!({"accepted": true})) }).await
    }

    /// Answers the first request `503` (down for maintenance) and every
    /// later one `202`: a step that fails once and succeeds when retried.
    pub async fn down_at_first() -> Self {
        let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        Self::start(move |_| {
            let first = !answered.swap(true, std::sync::atomic::Ordering::SeqCst);
            async move {
                if first {
                    (503, json!({"error": "partner down for maintenance"}))
                } else {
                    (202, json!({"accepted": true}))
                }
            }
        })
        .await
    }

    /// Answers with whatever `handler` returns.
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(PartnerRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        Self::start_on([127, 0, 0, 1].into(), handler).await
    }

    /// Like [`Partner::start`], on another loopback address (a port of
    /// `ip`), for tests that need a partner the address policy tells apart
    /// from the others, such as an HTTP proxy at 127.0.0.2.
    pub async fn start_on<F, Fut>(ip: std::net::IpAddr, handler: F) -> Self
    where
        F: Fn(PartnerRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |r| Box::pin(handler(r)));
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve_partner(
                    TokioIo::new(stream),
                    handler.clone(),
                    recorded.clone(),
                ));
            }
        });
        Self {
            base: format!("http://{addr}"),
            requests,
            task,
        }
    }

    /// Like [`Partner::start`], over HTTPS with a self-signed certificate
    /// for `localhost`: a partner whose certificate does not validate.
    pub async fn start_tls<F, Fut>(handler: F) -> Self
    where
        F: Fn(PartnerRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |r| Box::pin(handler(r)));
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = certified.cert.der().clone();
        let key =
            rustls_pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let tls = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let handler = handler.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate aborts the
                    // handshake: nothing to serve then.
                    if let Ok(tls) = acceptor.accept(stream).await {
                        serve_partner(TokioIo::new(tls), handler, recorded).await;
                    }
                });
            }
        });
        Self {
            base: format!("https://localhost:{port}"),
            requests,
            task,
        }
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<PartnerRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for_requests(&self, n: usize) -> Vec<PartnerRequest> {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "partner got {} of {n} requests",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Partner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one partner connection: records each request, answers with the
/// handler's reply.
async fn serve_partner<I>(io: I, handler: Handler, recorded: Arc<Mutex<Vec<PartnerRequest>>>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let handler = handler.clone();
        let recorded = recorded.clone();
        async move {
            let method = req.method().to_string();
            let uri = req.uri().to_string();
            let headers = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            let request = PartnerRequest {
                method,
                uri,
                headers,
                body,
            };
            recorded.lock().unwrap().push(request.clone());
            let (status, value) = handler(request).await;
            let mut resp = hyper::Response::new(Full::new(Bytes::from(value.to_string())));
            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
            resp.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            Ok::<_, Infallible>(resp)
        }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, service)
        .await;
}

/// POSTs a callback body to a callback URL; returns status and JSON body.
pub async fn call_back(url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let value = resp.json().await.unwrap_or(Value::Null);
    (status, value)
}

/// The events of an execution's status log, in order.
pub fn events(exec: &Value) -> Vec<String> {
    exec["status_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

/// `(from, to)` of each status-log line.
pub fn transitions(exec: &Value) -> Vec<(String, String)> {
    exec["status_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_owned(),
                e["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A raw HTTP server on loopback that reads each request and answers it
/// with `response` verbatim (or, with `None`, never answers and holds the
/// connection); returns its base URL and how many connections it took.
pub async fn raw_server(response: Option<String>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let response = response.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then as much body as Content-Length says.
                loop {
                    let Ok(n) = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length: usize = text[..end]
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse().unwrap_or(0))
                            .unwrap_or(0);
                        if seen.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                match response {
                    Some(r) => {
                        let _ =
                            tokio::io::AsyncWriteExt::write_all(&mut stream, r.as_bytes()).await;
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
                    }
                    None => {
                        // Never answers; the connection stays open until
                        // the client gives up.
                        let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
                    }
                }
            });
        }
    });
    (base, connections)
}

/// A loopback server that accepts every connection and closes it at once,
/// before any answer: "no answer at all" for a client, without the race of
/// reusing a port a closed listener just released (another test may take
/// it meanwhile). Returns its base URL and how many connections it took.
pub async fn closing_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Closed before a status line: no response to take it for.
            drop(stream);
        }
    });
    (base, connections)
}

/// A partner that holds every request until the returned semaphore gets a
/// permit (one per request), then answers `reply`: the test, not a clock,
/// decides when a step call ends.
pub async fn gated_partner(reply: Reply) -> (Partner, Arc<tokio::sync::Semaphore>) {
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let gate = release.clone();
    let partner = Partner::start(move |_| {
        let (gate, reply) = (gate.clone(), reply.clone());
        async move {
            gate.acquire().await.unwrap().forget();
            reply
        }
    })
    .await;
    (partner, release)
}

/// Runs the `stephost` command line in this process with `args` (without
/// the program name) and returns its exit code and its JSON output. `run`
/// gets `--egress-allow` for loopback, where every test partner lives, and
/// `--no-cache`.
pub async fn run_cli(args: &[&str]) -> (i32, Value) {
    use clap::Parser as _;
    let mut argv: Vec<&str> = std::iter::once("stephost")
        .chain(args.iter().copied())
        .collect();
    if args.first() == Some(&"run") {
        argv.extend(["--egress-allow", "127.0.0.0/8", "--egress-allow", "::1/128"]);
        // Tests leave the user's compiled-component cache alone (the cache
        // itself is tested in host/tests/plugin_from_zero.rs).
        if !args.contains(&"--no-cache") {
            argv.push("--no-cache");
        }
    }
    let cli = stephost::cli::Cli::try_parse_from(argv).expect("arguments parse");
    let mut out = Vec::new();
    let code = stephost::cli::execute(cli.command, &mut out)
        .await
        .expect("command runs");
    let text = String::from_utf8(out).unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (code, value)
}
