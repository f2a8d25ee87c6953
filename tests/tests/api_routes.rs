//! The edges of the route table that no resource test reaches, pinned
//! against the real daemon so that a change of router cannot move them:
//! unknown paths and methods, trailing slashes, the open endpoints, and
//! how a missing or malformed token is refused (`docs/api.md`).

use serde_json::{Value, json};
use stephost_tests::{TestDaemon, client};

/// Status, `Allow` header and body text of `method path`, with `token`.
async fn call(
    daemon: &TestDaemon,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, Option<String>, String) {
    let mut req = client().request(method, format!("{}{path}", daemon.base));
    if let Some(token) = token {
        req = req.header("authorization", token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let allow = resp
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, allow, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_answer_in_the_error_shape() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let admin = format!("Bearer {}", daemon.token);
    let admin = Some(admin.as_str());

    let (status, _, body) = call(&daemon, reqwest::Method::GET, "/v1/nothing", admin).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        r#"{"error":{"code":"not-found","message":"no route for /v1/nothing"}}"#
    );

    let (status, allow, body) = call(&daemon, reqwest::Method::PUT, "/v1/executions", admin).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(
        body,
        r#"{"error":{"code":"method-not-allowed","message":"PUT is not allowed on /v1/executions"}}"#
    );
    let allow = allow.expect("a 405 says what is allowed");
    for method in ["GET", "POST"] {
        assert!(allow.contains(method), "{allow}");
    }
    let (status, _, _) = call(
        &daemon,
        reqwest::Method::GET,
        "/v1/executions/0190a4a8-0000-7000-8000-000000000000/retry",
        admin,
    )
    .await;
    assert_eq!(status, 405);
    let (status, _, _) = call(
        &daemon,
        reqwest::Method::POST,
        "/v1/executions/0190a4a8-0000-7000-8000-000000000000/rewind",
        admin,
    )
    .await;
    assert_eq!(status, 404);

    // A trailing slash names the same resource.
    let (status, _, body) = call(&daemon, reqwest::Method::GET, "/v1/executions/", admin).await;
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed, json!({"executions": [], "next_cursor": null}));

    // What the table does not list takes `admin` to be told about, but a
    // wrong method on an open endpoint is answered to anyone.
    let (status, _, body) = call(&daemon, reqwest::Method::GET, "/v1/nothing", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = call(&daemon, reqwest::Method::DELETE, "/v1/executions", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, allow, body) = call(
        &daemon,
        reqwest::Method::GET,
        "/v1/callbacks/0190a4a8-0000-7000-8000-000000000000",
        None,
    )
    .await;
    assert_eq!((status, allow.as_deref()), (405, Some("POST")), "{body}");
    let (status, _, body) = call(&daemon, reqwest::Method::POST, "/healthz", None).await;
    assert_eq!(status, 405, "{body}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_endpoints_need_no_token_and_the_others_a_bearer_one() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;

    let resp = client()
        .get(format!("{}/healthz", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.text().await.unwrap(), r#"{"status":"ok"}"#);
    let resp = client()
        .get(format!("{}/metrics", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );

    let missing = r#"{"error":{"code":"unauthorized","message":"this endpoint needs an API token: send `Authorization: Bearer <token>`"}}"#;
    let invalid =
        r#"{"error":{"code":"unauthorized","message":"the API token is malformed or unknown"}}"#;
    let bare = daemon.token.clone();
    let basic = "Basic dXNlcjpwYXNz".to_owned();
    let unknown = "Bearer sht_unknown".to_owned();
    for (token, expected) in [
        (None, missing),
        (Some(&bare), invalid),
        (Some(&basic), invalid),
        (Some(&unknown), invalid),
    ] {
        let (status, _, body) = call(
            &daemon,
            reqwest::Method::GET,
            "/v1/executions",
            token.map(String::as_str),
        )
        .await;
        assert_eq!((status, body.as_str()), (401, expected), "{token:?}");
    }
    let lower = format!("bearer {}", daemon.token);
    let (status, _, body) = call(
        &daemon,
        reqwest::Method::GET,
        "/v1/executions",
        Some(&lower),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    daemon.stop().await;
}
