//! API tokens an admin can see and revoke (`docs/api.md`, "Tokens"): the
//! list never shows a token, a revoked token is refused from the answer
//! on, and the last admin token is kept unless revoking it is forced.
//! Any token can ask what it is (`GET /v1/whoami`).

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
    let (reader, reader_id) = daemon
        .token_with_id("dashboard", &["executions:read"])
        .await;

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
    let (second, second_id) = daemon.token_with_id("second-admin", &["admin"]).await;
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

/// The token record `id` as `GET /v1/tokens` shows it.
async fn listed_one(daemon: &TestDaemon, id: &str) -> Value {
    let tokens = listed(daemon, &daemon.token).await;
    tokens.into_iter().find(|t| t["id"] == id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refused_once_expired_and_its_expiry_and_last_use_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let (status, body) = daemon
        .post(
            "/v1/tokens",
            json!({"name": "short", "permissions": ["executions:read"], "expires_in_secs": 0}),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("bad-request"))
    );

    let before = stephost::model::now_ms();
    let (status, body) = daemon
        .post(
            "/v1/tokens",
            json!({"name": "short", "permissions": ["executions:read"], "expires_in_secs": 2}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (token, id) = (
        body["token"].as_str().unwrap(),
        body["id"].as_str().unwrap(),
    );
    let expires = body["expires_ms"].as_u64().unwrap();
    assert!((before + 2_000..=stephost::model::now_ms() + 2_000).contains(&expires));
    assert_eq!(listed_one(&daemon, id).await["last_used_ms"], Value::Null);

    let (status, _) = call(&daemon, reqwest::Method::GET, "/v1/executions", token).await;
    assert_eq!(status, 200, "valid until it expires");
    let used = listed_one(&daemon, id).await["last_used_ms"]
        .as_u64()
        .unwrap();
    assert!((before..=stephost::model::now_ms()).contains(&used));
    assert_eq!(listed_one(&daemon, id).await["expires_ms"], expires);

    while stephost::model::now_ms() < expires {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, body) = call(&daemon, reqwest::Method::GET, "/v1/executions", token).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
    daemon.stop().await;
}

/// Sends the head of `POST path` with `token` and the first `sent` bytes
/// of `body` on a raw connection, so that the rest can follow later.
async fn start_slow_post(
    daemon: &TestDaemon,
    path: &str,
    token: &str,
    body: &[u8],
    sent: usize,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let address = daemon.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..sent]).await.unwrap();
    stream
}

/// Sends the rest of `body` and reads the answer: status and JSON body.
async fn finish_slow_post(
    mut stream: tokio::net::TcpStream,
    body: &[u8],
    sent: usize,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream.write_all(&body[sent..]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("an answer within 10 s")
    .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let json = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_while_its_request_arrives_is_refused_before_the_request_acts() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let body = serde_json::to_vec(&json!({"plugin": "echo", "input": {"order": 42}})).unwrap();
    let half = body.len() / 2;

    // The same slow request with a token nobody revokes starts an execution.
    let kept = daemon.token("kept", &["executions:write"]).await;
    let slow = start_slow_post(&daemon, "/v1/executions", &kept, &body, half).await;
    let (status, answer) = finish_slow_post(slow, &body, half).await;
    assert_eq!(status, 201, "{answer}");

    let (writer, writer_id) = daemon.token_with_id("writer", &["executions:write"]).await;
    let slow = start_slow_post(&daemon, "/v1/executions", &writer, &body, half).await;
    // Admitted: the token's first use is recorded when its request is let in.
    let admitted = async {
        while listed_one(&daemon, &writer_id).await["last_used_ms"].is_null() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), admitted)
        .await
        .expect("the slow request is admitted");

    // The revocation does not wait for the request in flight, and every
    // request that comes after it is refused.
    let path = format!("/v1/tokens/{writer_id}");
    let (status, answer) = call(&daemon, reqwest::Method::DELETE, &path, &daemon.token).await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = daemon
        .call(reqwest::Method::GET, "/v1/executions", Some(&writer))
        .await;
    assert_eq!(status, 401);

    // The request in flight is refused once it has arrived, and started
    // nothing.
    let (status, answer) = finish_slow_post(slow, &body, half).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "unauthorized");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("revoked while this request"), "{message}");
    let (_, list) = call(
        &daemon,
        reqwest::Method::GET,
        "/v1/executions",
        &daemon.token,
    )
    .await;
    assert_eq!(list["executions"].as_array().unwrap().len(), 1, "{list}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_commands_work_through_a_running_daemon_and_say_so_when_it_holds_the_dir() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let data_dir = daemon.data_dir.to_str().unwrap().to_owned();
    let at = [
        "--url",
        daemon.base.as_str(),
        "--token",
        daemon.token.as_str(),
    ];

    let args = [
        &[
            "token",
            "create",
            "--name",
            "ci",
            "--permission",
            "executions:read",
        ][..],
        &["--expires-in", "1h"],
        &at,
    ]
    .concat();
    let (code, created) = stephost_tests::run_cli(&args).await;
    assert_eq!(code, 0, "{created}");
    let token = created["token"].as_str().unwrap();
    let hour = created["expires_ms"].as_u64().unwrap() - created["created_ms"].as_u64().unwrap();
    assert!((3_599_000..=3_601_000).contains(&hour), "{created}");
    let (status, _) = call(&daemon, reqwest::Method::GET, "/v1/executions", token).await;
    assert_eq!(status, 200);

    let (code, list) = stephost_tests::run_cli(&[&["token", "list"][..], &at].concat()).await;
    assert_eq!(code, 0, "{list}");
    let names: Vec<_> = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["name"])
        .collect();
    assert_eq!(names, [&json!("test-admin"), &json!("ci")]);

    let id = created["id"].as_str().unwrap();
    let (code, revoked) =
        stephost_tests::run_cli(&[&["token", "revoke", id][..], &at].concat()).await;
    assert_eq!((code, &revoked["revoked"]), (0, &json!(true)), "{revoked}");
    let (status, _) = call(&daemon, reqwest::Method::GET, "/v1/executions", token).await;
    assert_eq!(status, 401);

    // On the data dir itself, the running daemon's lock is explained with
    // the way through it.
    use clap::Parser as _;
    let cli =
        stephost::cli::Cli::try_parse_from(["stephost", "token", "list", "--data-dir", &data_dir])
            .unwrap();
    let err = stephost::cli::execute(cli.command, &mut Vec::new())
        .await
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("--url"), "{message}");
    daemon.stop().await;

    // Stopped: the same commands on the data dir.
    let (code, list) = stephost_tests::run_cli(&["token", "list", "--data-dir", &data_dir]).await;
    assert_eq!(code, 0, "{list}");
    assert_eq!(list["tokens"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_valid_token_is_told_what_it_is_and_nothing_else_is() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let (viewer, viewer_id) = daemon.token_with_id("viewer", &["executions:read"]).await;
    let sender = daemon.token("partner", &["callbacks:send"]).await;

    let (status, me) = call(&daemon, reqwest::Method::GET, "/v1/whoami", &viewer).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (&me["id"], &me["name"], &me["permissions"], &me["auth"]),
        (
            &json!(viewer_id),
            &json!("viewer"),
            &json!(["executions:read"]),
            &json!(true)
        )
    );
    assert!(
        me.get("token").is_none() && me.get("sha256").is_none(),
        "{me}"
    );
    // Even a token that may only send callbacks may ask about itself.
    let (status, me) = call(&daemon, reqwest::Method::GET, "/v1/whoami", &sender).await;
    assert_eq!(
        (status, &me["permissions"]),
        (200, &json!(["callbacks:send"]))
    );

    let (status, _) = daemon.call(reqwest::Method::GET, "/v1/whoami", None).await;
    assert_eq!(status, 401);
    let (status, _) = call(
        &daemon,
        reqwest::Method::GET,
        "/v1/whoami",
        "sht_not-a-token",
    )
    .await;
    assert_eq!(status, 401);
    daemon.stop().await;
}
