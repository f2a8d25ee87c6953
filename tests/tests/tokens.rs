//! API tokens an admin can see and revoke (`docs/api.md`, "Tokens"): the
//! list never shows a token, a revoked token is refused from the answer
//! on, and the last admin token is kept unless revoking it is forced.

use serde_json::{Value, json};
use stephost_tests::TestDaemon;

/// `method path` with bearer `token`; status and JSON body.
async fn call(
    daemon: &TestDaemon,
    method: reqwest::Method,
    path: &str,
    token: &str,
) -> (u16, Value) {
    daemon.call(method, path, Some(token)).await
}

/// Creates a token named `name` with `permissions`; returns (token, id).
async fn create(daemon: &TestDaemon, name: &str, permissions: &[&str]) -> (String, String) {
    let (status, body) = daemon
        .post(
            "/v1/tokens",
            json!({"name": name, "permissions": permissions}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["token"].as_str().unwrap().to_owned(),
        body["id"].as_str().unwrap().to_owned(),
    )
}

async fn listed(daemon: &TestDaemon, token: &str) -> Vec<Value> {
    let (status, body) = call(daemon, reqwest::Method::GET, "/v1/tokens", token).await;
    assert_eq!(status, 200, "{body}");
    body["tokens"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_listed_without_secrets_and_a_revoked_one_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let admin = daemon.token.clone();
    let (reader, reader_id) = create(&daemon, "dashboard", &["executions:read"]).await;

    let tokens = listed(&daemon, &admin).await;
    let mut names: Vec<_> = tokens.iter().map(|t| t["name"].to_string()).collect();
    names.sort();
    assert_eq!(names, [r#""dashboard""#, r#""test-admin""#]);
    let page = serde_json::to_string(&tokens).unwrap();
    assert!(!page.contains(&admin) && !page.contains(&reader), "{page}");
    for t in &tokens {
        assert!(t.get("token").is_none() && t.get("sha256").is_none(), "{t}");
    }
    let dashboard = tokens.iter().find(|t| t["name"] == "dashboard").unwrap();
    assert_eq!(dashboard["id"], reader_id.as_str());
    assert_eq!(dashboard["permissions"], json!(["executions:read"]));

    // Only an admin may list or revoke.
    let (status, _) = call(&daemon, reqwest::Method::GET, "/v1/tokens", &reader).await;
    assert_eq!(status, 403);
    let path = format!("/v1/tokens/{reader_id}");
    let (status, _) = call(&daemon, reqwest::Method::DELETE, &path, &reader).await;
    assert_eq!(status, 403);

    let (status, _) = call(&daemon, reqwest::Method::GET, "/v1/executions", &reader).await;
    assert_eq!(status, 200);
    let (status, body) = call(&daemon, reqwest::Method::DELETE, &path, &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"id": reader_id, "name": "dashboard", "revoked": true})
    );
    let (status, _) = call(&daemon, reqwest::Method::GET, "/v1/executions", &reader).await;
    assert_eq!(status, 401, "a revoked token is refused at once");
    assert_eq!(listed(&daemon, &admin).await.len(), 1);
    let (status, body) = call(&daemon, reqwest::Method::DELETE, &path, &admin).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not-found");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_admin_token_is_kept_unless_revoking_it_is_forced() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let first = daemon.token.clone();
    let first_id = listed(&daemon, &first).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first_path = format!("/v1/tokens/{first_id}");

    let (status, body) = call(&daemon, reqwest::Method::DELETE, &first_path, &first).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "last-admin-token");
    assert_eq!(listed(&daemon, &first).await.len(), 1, "still there");

    // With a second admin, the first may go; the second is then the last.
    let (second, second_id) = create(&daemon, "second-admin", &["admin"]).await;
    let (status, body) = call(&daemon, reqwest::Method::DELETE, &first_path, &second).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(&daemon, reqwest::Method::GET, "/v1/tokens", &first).await;
    assert_eq!(status, 401);
    let second_path = format!("/v1/tokens/{second_id}");
    let (status, _) = call(&daemon, reqwest::Method::DELETE, &second_path, &second).await;
    assert_eq!(status, 409);
    let forced = format!("{second_path}?force=true");
    let (status, body) = call(&daemon, reqwest::Method::DELETE, &forced, &second).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(&daemon, reqwest::Method::GET, "/v1/tokens", &second).await;
    assert_eq!(status, 401, "forced: no admin token is left");
    daemon.stop().await;
}
