//! A plugin that misbehaves on purpose, so the tests can show the host
//! stops each kind of misbehaviour and reports it, while everyone else's
//! executions go on. Config `{"mode": ..., "url": ...}` picks the attack.

use serde::Deserialize;
use stephost_guest::{Context, Document, Failure, Outcome, Step, callbacks, http};

#[derive(Deserialize)]
struct Config {
    mode: String,
    #[serde(default)]
    url: Option<String>,
    /// `read-file`: the file to read [default: /etc/passwd].
    #[serde(default)]
    path: Option<String>,
    /// `read-env`: the variable to read [default: PATH].
    #[serde(default)]
    name: Option<String>,
    /// `open-socket`: `ip:port` to connect to [default: 127.0.0.1:80].
    #[serde(default)]
    address: Option<String>,
    /// `leak-secret`: the granted secret to leak.
    #[serde(default)]
    secret: Option<String>,
    /// `leak-secret`: where to put it, `log`, `fail` or `trap`;
    /// `long-log`: how many bytes the line has.
    #[serde(default)]
    how: Option<String>,
}

struct Hostile;

impl Step for Hostile {
    fn run(ctx: Context, _input: Document) -> Outcome {
        attack(&ctx).unwrap_or_else(Outcome::from)
    }
}

fn attack(ctx: &Context) -> Result<Outcome, Failure> {
    let config: Config = ctx.config()?;
    match config.mode.as_str() {
        "loop" => loop {
            std::hint::black_box(());
        },
        "memory" => {
            // Grows until the host refuses; the allocation failure aborts.
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "trap" => panic!("hostile plugin panics on purpose"),
        "huge-output" => Ok(Outcome::complete(Document::text("x".repeat(20 << 20)))),
        "huge-state" => {
            // Asks the host to keep 4 MiB per waiting execution.
            let ticket = callbacks::register(false)?;
            Ok(Outcome::suspend(
                ticket.correlation_id,
                vec![7u8; 4 << 20],
                None,
            ))
        }
        "fetch" => {
            // Forbidden host or internal address: the host answers with a
            // typed error, which the SDK maps to `egress-denied`.
            let url = config.url.unwrap_or_default();
            let resp = http::Request::get(&url).send()?;
            Ok(Outcome::complete(Document::text(format!(
                "got {}",
                resp.status
            ))))
        }
        // The sandbox escapes: each tries what WASI would allow with a
        // populated context, and completes with what it got, so a test can
        // tell "denied" from "not tried". `allowed` is true only if the
        // access worked; `answer` is what WASI answered (the error text)
        // or, had it worked, a hint of what was found.
        "read-file" => {
            let path = config.path.unwrap_or_else(|| "/etc/passwd".to_owned());
            let report = match std::fs::read_to_string(&path) {
                Ok(text) => serde_json::json!({
                    "mode": "read-file", "allowed": true,
                    "answer": format!("read {} bytes: {}", text.len(), text.chars().take(40).collect::<String>()),
                }),
                Err(e) => {
                    serde_json::json!({"mode": "read-file", "allowed": false, "answer": e.to_string()})
                }
            };
            let listing = match std::fs::read_dir("/") {
                Ok(entries) => entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>(),
                Err(_) => Vec::new(),
            };
            let mut report = report;
            report["root_entries"] = serde_json::json!(listing);
            Ok(Outcome::complete(Document::from_value(&report)))
        }
        "read-env" => {
            let name = config.name.unwrap_or_else(|| "PATH".to_owned());
            let (allowed, answer) = match std::env::var(&name) {
                Ok(value) => (true, format!("{name}={value}")),
                Err(e) => (false, e.to_string()),
            };
            let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
            Ok(Outcome::complete(Document::from_value(
                &serde_json::json!({
                    "mode": "read-env", "allowed": allowed, "answer": answer, "env": vars,
                }),
            )))
        }
        "open-socket" => {
            // A plain TCP connection through wasi:sockets, around the
            // host's checked `http.send`.
            let target = config.address.unwrap_or_else(|| "127.0.0.1:80".to_owned());
            let (allowed, answer) = match target.parse::<std::net::SocketAddr>() {
                Err(e) => (false, format!("bad address: {e}")),
                Ok(addr) => match std::net::TcpStream::connect(addr) {
                    Ok(stream) => (true, format!("connected to {:?}", stream.peer_addr())),
                    Err(e) => (false, e.to_string()),
                },
            };
            Ok(Outcome::complete(Document::from_value(
                &serde_json::json!({
                    "mode": "open-socket", "allowed": allowed, "answer": answer,
                }),
            )))
        }
        // Puts a granted secret where the host, not the plugin, must
        // mask it: a log line, every text of a failure, a panic message.
        "leak-secret" => {
            let name = config.secret.unwrap_or_default();
            let value = stephost_guest::secrets::get(&name).unwrap_or_default();
            match config.how.as_deref().unwrap_or("log") {
                "log" => {
                    stephost_guest::log::warn(&format!("the secret is {value}, see"));
                    Ok(Outcome::complete(Document::text("logged")))
                }
                "fail" => Err(Failure::new(format!("code-{value}"), format!("text {value} here"))
                    .with_document_status(format!("doc {value}"))
                    .with_technical_status(format!("tech {value}"))),
                _ => panic!("the secret is {value}, panicking"),
            }
        }
        // One log line far above the host's cap.
        "long-log" => {
            let bytes: usize = config
                .how
                .as_deref()
                .and_then(|n| n.parse().ok())
                .unwrap_or(20_000);
            stephost_guest::log::info(&format!("long:{}", "y".repeat(bytes)));
            Ok(Outcome::complete(Document::text("logged")))
        }
        other => Err(Failure::new(
            "invalid-config",
            format!("unknown mode {other:?}"),
        )),
    }
}

stephost_guest::export_step!(Hostile);
