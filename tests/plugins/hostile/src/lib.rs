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
        other => Err(Failure::new(
            "invalid-config",
            format!("unknown mode {other:?}"),
        )),
    }
}

stephost_guest::export_step!(Hostile);
