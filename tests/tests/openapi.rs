//! The OpenAPI description (`GET /v1/openapi.json`) held to the API
//! itself: it lists exactly the routes the router serves, each of them is
//! served, and real answers of a run through the API validate against its
//! schemas (with a JSON Schema validator, not by eye).

use std::collections::BTreeSet;

use serde_json::{Value, json};
use stephost_tests::{Partner, TestDaemon, call_back};

mod openapi_check;
use openapi_check::check;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// (METHOD, path) of every `.route(…)` in the router's source.
fn router_routes() -> BTreeSet<(String, String)> {
    let source = include_str!("../../host/src/api/mod.rs");
    // The unit tests below the router build routers of their own.
    let source = source.split("#[cfg(test)]").next().unwrap();
    let mut routes = BTreeSet::new();
    for call in source.split(".route(").skip(1) {
        // The call's arguments: up to the parenthesis that closes it.
        let mut depth = 1;
        let end = call
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map(|(i, _)| i)
            .expect("a closed .route( call");
        let args = &call[..end];
        let path = args.split('"').nth(1).expect("a path literal");
        for method in METHODS {
            let named = args.match_indices(&format!("{method}(")).any(|(i, _)| {
                i == 0
                    || !args.as_bytes()[i - 1].is_ascii_alphanumeric()
                        && args.as_bytes()[i - 1] != b'_'
            });
            if named {
                routes.insert((method.to_uppercase(), path.to_owned()));
            }
        }
    }
    routes
}

fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

#[test]
fn the_description_lists_exactly_the_routes_the_router_serves() {
    let doc = stephost::api::openapi_document();
    assert_eq!(doc["openapi"], "3.1.0");
    let routes = router_routes();
    assert!(
        routes.len() >= 15,
        "the router's routes were found: {routes:?}"
    );
    assert_eq!(documented_routes(doc), routes);
    let codes: Vec<&str> = stephost::api::ApiCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(
        doc["components"]["schemas"]["ErrorCode"]["enum"],
        json!(codes)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let doc = stephost::api::openapi_document();
    for (method, path) in documented_routes(doc) {
        let concrete = path
            .replace("{id}", "0190d6c6-0000-7000-8000-000000000000")
            .replace("{name}", "echo");
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let (status, body) = daemon
            .call(method.clone(), &concrete, Some(&daemon.token))
            .await;
        assert_ne!(status, 405, "{method} {path}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.starts_with("no route for"),
            "{method} {path}: {body}"
        );
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_validate_against_the_description() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let doc = stephost::api::openapi_document();
    let token = daemon.token.clone();
    let call = |method: reqwest::Method, path: String, template: &'static str| {
        let (daemon, token) = (&daemon, token.clone());
        async move {
            let (status, body) = daemon.call(method.clone(), &path, Some(&token)).await;
            check(doc, method.as_str(), template, status, &body);
            (status, body)
        }
    };
    let post = |path: &'static str, body: Value| {
        let daemon = &daemon;
        async move {
            let (status, answer) = daemon.post(path, body).await;
            check(doc, "POST", path, status, &answer);
            (status, answer)
        }
    };
    use reqwest::Method as M;

    let (status, served) = daemon.get("/v1/openapi.json").await;
    assert_eq!((status, &served), (200, doc));
    call(M::GET, "/healthz".into(), "/healthz").await;

    // Executions: started, listed, shown (waiting, then done), acted on.
    let (status, echo) = post(
        "/v1/executions",
        json!({"plugin": "echo", "input": {"n": 1}}),
    )
    .await;
    assert_eq!(status, 201);
    let partner = Partner::accepting().await;
    let (_, waiting) = post(
        "/v1/executions",
        json!({"plugin": "wait-for-callback", "config": {"url": partner.base}, "input": {"n": 2}}),
    )
    .await;
    let id = waiting["id"].as_str().unwrap().to_owned();
    daemon.wait_for(&id, "suspended").await;
    let (_, shown) = call(
        M::GET,
        format!("/v1/executions/{id}"),
        "/v1/executions/{id}",
    )
    .await;
    assert_eq!(shown["wait"]["for"], "callback", "{shown:#}");
    let url = partner.wait_for_requests(1).await[0].callback_url();
    let (status, answer) = call_back(&url, r#"{"ok": true}"#).await;
    assert_eq!(status, 200);
    check(doc, "POST", "/v1/callbacks/{id}", status, &answer);
    let (status, answer) = call_back(&url, r#"{"ok": true}"#).await;
    check(doc, "POST", "/v1/callbacks/{id}", status, &answer);
    daemon.wait_for(&id, "completed").await;
    call(
        M::GET,
        format!("/v1/executions/{id}"),
        "/v1/executions/{id}",
    )
    .await;
    call(M::GET, "/v1/executions?limit=1".into(), "/v1/executions").await;

    call(M::GET, "/v1/executions?state=nope".into(), "/v1/executions").await;
    let echo_id = echo["id"].as_str().unwrap();
    daemon.wait_for(echo_id, "completed").await;
    let (_, counts) = call(
        M::GET,
        "/v1/executions/counts".into(),
        "/v1/executions/counts",
    )
    .await;
    assert_eq!(counts["by_state"]["completed"], 2, "{counts}");
    assert_eq!(counts["total"], 2, "{counts}");
    let (_, of_echo) = call(
        M::GET,
        "/v1/executions/counts?workflow=echo&by=workflow".into(),
        "/v1/executions/counts",
    )
    .await;
    assert_eq!(of_echo["by_state"]["completed"], 1, "{of_echo}");
    assert_eq!(of_echo["total"], 1, "{of_echo}");
    assert_eq!(
        of_echo["by_workflow"]["echo"]["by_state"]["completed"], 1,
        "{of_echo}"
    );
    let (status, _) = call(
        M::GET,
        "/v1/executions/counts?by=plugin".into(),
        "/v1/executions/counts",
    )
    .await;
    assert_eq!(status, 400);
    let (_, filtered) = call(
        M::GET,
        "/v1/executions?plugin=echo&created_after=2020-01-01T00:00:00Z&created_before=4102444800000"
            .into(),
        "/v1/executions",
    )
    .await;
    assert_eq!(
        filtered["executions"].as_array().unwrap().len(),
        1,
        "{filtered}"
    );
    let (status, _) = call(
        M::GET,
        "/v1/executions?created_after=yesterday".into(),
        "/v1/executions",
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = call(
        M::POST,
        format!("/v1/executions/{echo_id}/retry"),
        "/v1/executions/{id}/retry",
    )
    .await;
    assert_eq!(status, 409);

    let refusing = Partner::start(|_| async { (500, json!({"down": true})) }).await;
    let (_, failing) = post(
        "/v1/executions",
        json!({"plugin": "wait-for-callback", "config": {"url": refusing.base}, "input": {}}),
    )
    .await;
    let failed = failing["id"].as_str().unwrap().to_owned();
    let exec = daemon.wait_for(&failed, "failed").await;
    check(doc, "GET", "/v1/executions/{id}", 200, &exec);
    let (status, _) = call(
        M::POST,
        format!("/v1/executions/{failed}/skip"),
        "/v1/executions/{id}/skip",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        M::DELETE,
        format!("/v1/executions/{failed}"),
        "/v1/executions/{id}",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        M::GET,
        "/v1/executions/0190d6c6-0000-7000-8000-000000000000".into(),
        "/v1/executions/{id}",
    )
    .await;
    assert_eq!(status, 404);
    // A start and its key used again with another body (422).
    for (body, expected) in [
        (json!({"plugin": "echo", "input": {}}), 201),
        (json!({"plugin": "echo", "input": 1}), 422),
    ] {
        let answer = stephost_tests::client()
            .post(format!("{}/v1/executions", daemon.base))
            .bearer_auth(&token)
            .header("Idempotency-Key", "openapi-check")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.unwrap();
        assert_eq!(status, expected, "{body}");
        check(doc, "POST", "/v1/executions", status, &body);
    }
    let (status, _) = post("/v1/executions", json!({"plugin": "nope"})).await;
    assert_eq!(status, 404);
    let (status, _) = post("/v1/executions", json!([1])).await;
    assert_eq!(status, 400);

    // Plugins and tokens.
    let (status, me) = call(M::GET, "/v1/whoami".into(), "/v1/whoami").await;
    assert_eq!((status, &me["name"]), (200, &json!("test-admin")));
    call(M::GET, "/v1/plugins".into(), "/v1/plugins").await;
    call(M::GET, "/v1/plugins/echo".into(), "/v1/plugins/{name}").await;
    call(M::GET, "/v1/plugins/nope".into(), "/v1/plugins/{name}").await;
    let (status, _) = call(M::DELETE, "/v1/plugins/echo".into(), "/v1/plugins/{name}").await;
    assert_eq!(status, 409);
    let (status, created) = post(
        "/v1/tokens",
        json!({"name": "ci", "permissions": ["executions:read"], "expires_in_secs": 60}),
    )
    .await;
    assert_eq!(status, 201);
    call(M::GET, "/v1/tokens".into(), "/v1/tokens").await;
    let revoke = format!("/v1/tokens/{}", created["id"].as_str().unwrap());
    let (status, _) = call(M::DELETE, revoke.clone(), "/v1/tokens/{id}").await;
    assert_eq!(status, 200);
    let (status, _) = call(M::DELETE, revoke, "/v1/tokens/{id}").await;
    assert_eq!(status, 404);

    // Refusals have the error shape too.
    let (status, body) = daemon.call(M::GET, "/v1/executions", None).await;
    assert_eq!(status, 401);
    check(doc, "GET", "/v1/executions", status, &body);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_shows_each_steps_plugin_version_and_an_early_callback_masked() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let doc = stephost::api::openapi_document();
    let (partner, release) = stephost_tests::gated_partner((202, json!({}))).await;
    let id = daemon
        .start_execution(
            json!({"plugin": "wait-for-callback", "config": {"url": partner.base}, "input": {}}),
        )
        .await;
    // The step's request is held: the step has not suspended yet.
    let url = partner.wait_for_requests(1).await[0].callback_url();
    let resp = stephost_tests::client()
        .post(&url)
        .header("X-Api-Key", "s3cret-from-the-partner")
        .header("X-Link-Status", "Ok")
        .body(r#"{"early": true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "stored early");

    let path = format!("/v1/executions/{id}");
    let (status, shown) = daemon.get(&path).await;
    check(doc, "GET", "/v1/executions/{id}", status, &shown);
    let hash = stephost::wasm::plugins::content_hash(
        stephost::builtin::component("wait-for-callback").unwrap(),
    );
    assert_eq!(
        shown["steps"],
        json!([{"name": "wait-for-callback", "plugin": "wait-for-callback", "plugin_hash": hash}])
    );
    let callback = &shown["callbacks"][0];
    assert_eq!(callback["state"], "received", "{shown:#}");
    let received = &callback["received"];
    assert_eq!(received["body"], r#"{"early": true}"#);
    let headers = received["headers"].as_array().unwrap();
    assert!(
        headers.contains(&json!(["x-api-key", "***"])),
        "{received:#}"
    );
    assert!(
        headers.contains(&json!(["x-link-status", "Ok"])),
        "{received:#}"
    );
    assert!(!shown.to_string().contains("s3cret-from-the-partner"));

    release.add_permits(1);
    let done = daemon.wait_for(&id, "completed").await;
    assert_eq!(done["output"], json!({"early": true}));
    let (status, shown) = daemon.get(&path).await;
    check(doc, "GET", "/v1/executions/{id}", status, &shown);
    assert_eq!(shown["callbacks"][0]["state"], "delivered", "{shown:#}");
    assert_eq!(shown["callbacks"][0]["received"], Value::Null);
    daemon.stop().await;
}
