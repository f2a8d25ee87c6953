//! `[delivery] signing_secret_env`: the signing secret read from the
//! environment signs every delivery; a variable that is not set stops the
//! daemon from opening with an error naming it. Alone in its binary
//! because it sets the process environment.

use serde_json::json;
use stephost::Config;
use stephost::bindings::stephost::plugin::signing::HmacAlg;
use stephost::capabilities::signing::hmac;
use stephost_tests::{Partner, TestDaemon};

/// The raw signing key (32 bytes).
const KEY: &[u8] = b"signing-secret-from-the-env-32by";

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    use ::base64::Engine as _;
    ::base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_secret_from_the_environment_signs_the_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let var = "STEPHOST_TEST_WEBHOOK_SECRET";
    // SAFETY: this binary holds this one test, so no other thread reads or
    // writes the environment while it is set.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var(var, format!("whsec_{}", base64(KEY)));
    }
    let results = Partner::start(|_| async { (200, json!({"ok": true})) }).await;
    let config =
        Config::from_toml(&format!("[delivery]\nsigning_secret_env = \"{var}\"\n")).unwrap();
    let daemon = TestDaemon::start(config, dir.path()).await;
    let (status, _) = daemon
        .post(
            "/v1/executions",
            json!({"plugin": "echo", "input": {"n": 1}, "callback_url": results.base}),
        )
        .await;
    assert_eq!(status, 202);
    let sent = results.wait_for_requests(1).await;
    let id = sent[0].header("webhook-id").unwrap();
    let timestamp = sent[0].header("webhook-timestamp").unwrap();
    let signatures = sent[0]
        .header("webhook-signature")
        .expect("signed with the secret from the environment");
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(&sent[0].body);
    let expected = format!("v1,{}", base64(&hmac(HmacAlg::Sha256, KEY, &signed)));
    assert!(
        signatures.split(' ').any(|s| s == expected),
        "{signatures} is not {expected}"
    );
    daemon.stop().await;

    let mut missing = Config::from_toml(
        "[delivery]\nsigning_secret_env = \"STEPHOST_TEST_WEBHOOK_SECRET_NOT_SET\"\n",
    )
    .unwrap();
    missing.data_dir = dir.path().to_owned();
    let err = stephost::Daemon::open(missing).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("STEPHOST_TEST_WEBHOOK_SECRET_NOT_SET"),
        "{err:#}"
    );
}
