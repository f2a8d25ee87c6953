//! When the daemon cannot register a callback (its store refused the write:
//! a full disk, a failing database), every reference step that waits for a
//! partner fails with `callback-error` and sends nothing — a partner must
//! never hold a URL that was not made durable. The registrar is the one
//! part made to fail here (a failing disk cannot be had on demand); the
//! executor, the engine and the plugins are the real ones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stephost::bindings::{Document, Outcome, StepContext};
use stephost::capabilities::{CallInfo, Grant, HostServices, Registrar, Registration};
use stephost::wasm::executor::{Executor, Invocation};
use stephost_tests::Partner;

/// Refuses every registration the way the durable registrar does when
/// its store fails.
struct FailingRegistrar;

impl Registrar for FailingRegistrar {
    fn register<'a>(
        &'a self,
        _call: &'a CallInfo,
        _require_token: bool,
        _n: u32,
    ) -> stephost::store::BoxFuture<'a, Result<Registration, String>> {
        Box::pin(async {
            Err("could not register the callback: storage error: No space left on device".into())
        })
    }
}

fn call(plugin: &str, config: &serde_json::Value) -> (CallInfo, Invocation) {
    let info = CallInfo {
        plugin: plugin.into(),
        execution_id: "e-1".into(),
        step: plugin.into(),
        step_run_id: "r-1".into(),
        attempt: 1,
        version: 1,
        record_ms: 0,
        deadline: Instant::now() + Duration::from_secs(30),
    };
    let invocation = Invocation::Run {
        ctx: StepContext {
            execution_id: "e-1".into(),
            workflow: plugin.into(),
            step: plugin.into(),
            attempt: 1,
            step_run_id: "r-1".into(),
            config: config.to_string(),
            metadata: "{}".into(),
        },
        input: Document {
            content_type: "application/json".into(),
            body: br#"{"order": 7}"#.to_vec(),
        },
    };
    (info, invocation)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_callback_cannot_be_registered_fails_with_callback_error_and_sends_nothing() {
    let partner = Partner::accepting().await;
    // Loopback allowed and the built-in plugins' own grants: were a step to
    // send before registering, the partner would hear it.
    let config = stephost::Config::from_toml("egress_allow = [\"127.0.0.0/8\"]\n").unwrap();
    let engine = stephost::wasm::engine::new_engine(&config).unwrap();
    let services = HostServices::new(
        Arc::new(FailingRegistrar),
        Arc::new(config.egress().unwrap()),
    )
    .unwrap();
    let executor = Executor::new(engine.clone(), services).unwrap();
    let url = format!("{}/partner", partner.base);
    for (plugin, step_config) in [
        (
            "link-async-http",
            serde_json::json!({"url": url, "async": true}),
        ),
        ("wait-for-callback", serde_json::json!({"url": url})),
        ("async-operation", serde_json::json!({"url": url})),
        ("integration-step", serde_json::json!({"url": url})),
    ] {
        let bytes = stephost::builtin::component(plugin).expect("built in");
        let component = wasmtime::component::Component::new(&engine, bytes).unwrap();
        let pre = executor.prepare(&component).unwrap();
        let (info, invocation) = call(plugin, &step_config);
        let result = executor
            .call(
                &pre,
                Arc::new(Grant::for_plugin(&config, plugin).unwrap()),
                info,
                invocation,
            )
            .await;
        match result.outcome {
            Ok(Outcome::Fail(failure)) => {
                assert_eq!(
                    failure.error_code.as_deref(),
                    Some("callback-error"),
                    "{plugin}: {failure:?}"
                );
                assert!(
                    failure.error_text.contains("No space left on device"),
                    "{plugin} says why: {failure:?}"
                );
            }
            other => panic!("{plugin}: {other:?}"),
        }
        assert!(
            result.requests.is_empty(),
            "{plugin} sent {:?}",
            result.requests
        );
    }
    assert!(partner.requests().is_empty(), "the partner heard nothing");
}
