//! The operator's console (`/ui`) in a real browser: Debian's headless
//! Chromium against the real daemon and real partners on loopback. An
//! operator signs in with a token from the URL fragment, finds a
//! suspended execution by filter, opens it and sees its wait, watches a
//! partner's callback complete it without reloading, retries a failed
//! one, bulk-cancels on a filter after a dry run; a read-only token sees
//! no action; what partners send (`<script>`, `<img onerror>` in callback
//! bodies and headers) shows as text and never runs; the console's
//! answers carry the security headers. Screenshots of the pages go to
//! `target/console-screenshots/` (printed at the end).

mod browser;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use browser::{Browser, Page, screenshot_dir};
use serde_json::json;
use stephost_tests::{Partner, TestDaemon, call_back, client};

/// What partners send to the console's reader: markup that would run if
/// the console ever treated it as HTML.
const SCRIPT: &str = "<script>window.__pwned='script'</script>";
const IMG: &str = "<img src=x onerror=\"window.__pwned='img'\">";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_watches_and_repairs_executions_in_the_console() {
    let began = Instant::now();
    let browser = Browser::start(1280, 800).await;
    // The scenario runs in a task of its own, so that the browser session
    // is closed (and Chromium exits) even when an assertion fails.
    let outcome = tokio::spawn(scenario(browser.page.clone())).await;
    browser.stop().await;
    match outcome {
        Ok(shots) => {
            for shot in shots {
                println!("console screenshot: {}", shot.display());
            }
        }
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
    println!("console browser test took {:?}", began.elapsed());
}

async fn scenario(page: Page) -> Vec<PathBuf> {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let base = daemon.base.clone();
    let shots_dir = screenshot_dir();
    let mut shots = Vec::new();

    // The console's files are open, and every answer carries the policy.
    for path in ["/ui", "/ui/app.js", "/ui/style.css", "/ui/nothing.js"] {
        let resp = client().get(format!("{base}{path}")).send().await.unwrap();
        let h = resp.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        let expected = if path == "/ui/nothing.js" { 404 } else { 200 };
        assert_eq!(resp.status(), expected, "{path}");
    }

    // A suspended execution (its partner will call back), and one that
    // fails because its partner is down at first (the retry will reach it).
    let waiter = Partner::accepting().await;
    let suspended = daemon
        .start_execution(json!({"plugin": "wait-for-callback", "config": {"url": waiter.base}, "input": {"order": 42}}))
        .await;
    daemon.wait_for(&suspended, "suspended").await;
    let flaky = Partner::down_at_first().await;
    let failed = daemon
        .start_execution(json!({"plugin": "wait-for-callback", "config": {"url": flaky.base}, "input": {"order": 7}}))
        .await;
    daemon.wait_for(&failed, "failed").await;
    let viewer = daemon.token("viewer", &["executions:read"]).await;

    // Sign in through the fragment: the token leaves the address bar.
    page.client
        .goto(&format!("{base}/ui#token={}", daemon.token))
        .await
        .unwrap();
    page.wait_for_text("[data-testid=whoami]", "test-admin · admin")
        .await;
    let address = page.client.current_url().await.unwrap().to_string();
    assert!(
        !address.contains(&daemon.token) && !address.contains("token="),
        "{address}"
    );
    assert_eq!(
        page.js("return sessionStorage.getItem('stephost.token')")
            .await,
        json!(daemon.token)
    );

    // Find the suspended one by filter.
    page.wait_for_text("[data-testid=counts]", "1 suspended")
        .await;
    page.client
        .find(fantoccini::Locator::Css("#f-state"))
        .await
        .unwrap()
        .select_by_value("suspended")
        .await
        .unwrap();
    page.client
        .find(fantoccini::Locator::Css("#f-workflow"))
        .await
        .unwrap()
        .send_keys("wait-for-callback")
        .await
        .unwrap();
    page.client
        .find(fantoccini::Locator::Css("#f-plugin"))
        .await
        .unwrap()
        .send_keys("wait-for-callback")
        .await
        .unwrap();
    page.click(".filters button[type=submit]").await;
    page.wait_for_text("tbody", &suspended).await;
    assert_eq!(page.count("[data-testid=execution-row]").await, 1);
    let address = page.client.current_url().await.unwrap().to_string();
    assert!(address.contains("plugin=wait-for-callback"), "{address}");
    // The counts are the filter's workflow's.
    page.wait_for_text("[data-testid=counts]", "of wait-for-callback")
        .await;
    assert!(!page.text_of("tbody").await.unwrap().contains(&failed));

    // Open it: its wait, with the callback's shape but not its secret.
    let exec = daemon.execution(&suspended).await;
    let correlation_id = exec["wait"]["correlation_id"].as_str().unwrap().to_owned();
    page.click(&format!("a[href='#/executions/{suspended}']"))
        .await;
    page.wait_for_text("[data-testid=wait]", &correlation_id)
        .await;
    let curl = page.text_of("[data-testid=curl]").await.unwrap();
    let url = waiter.wait_for_requests(1).await[0].callback_url();
    let secret = url
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(
        curl.contains(exec["wait"]["callback_url"].as_str().unwrap()),
        "{curl}"
    );
    assert!(
        curl.contains("<SECRET>") && !curl.contains(secret),
        "{curl}"
    );
    shots.push(page.screenshot(&shots_dir, "detail-1280x800.png").await);

    // The partner calls back; the page shows it without reloading.
    page.js("window.__stillHere = true").await;
    let (status, answer) = call_back(&url, r#"{"approved": true}"#).await;
    assert_eq!(status, 200, "{answer}");
    page.wait_for_text("h1 .badge", "completed").await;
    page.wait_for_text("[data-testid=output]", "approved").await;
    assert_eq!(
        page.js("return window.__stillHere === true").await,
        json!(true)
    );
    assert_eq!(
        page.count("[data-testid=wait]").await,
        0,
        "no wait once completed"
    );

    // Retry the failed one: the confirmation says what happens; the page
    // follows the execution to its next state.
    page.client
        .goto(&format!("{base}/ui#/executions/{failed}"))
        .await
        .unwrap();
    page.wait_for_text("[data-testid=error]", "partner-error")
        .await;
    page.click("[data-testid=action-retry]").await;
    page.wait_for_text("dialog", "attempt 2").await;
    page.click("dialog [data-testid=confirm]").await;
    page.wait_for_text("h1 .badge", "suspended").await;
    page.wait_for_text("#flash", "Retry").await;
    let retried = daemon.execution(&failed).await;
    assert_eq!(
        (retried["state"].as_str(), retried["attempt"].as_u64()),
        (Some("suspended"), Some(2))
    );

    // The plugins page: versions, grants, schemas, and who waits on what
    // (the retried execution now waits on wait-for-callback).
    page.client
        .goto(&format!("{base}/ui#/plugins"))
        .await
        .unwrap();
    let section = "[data-testid=plugin][data-name=wait-for-callback]";
    page.wait_for_text(section, "1 suspended on it").await;
    let shown = page.wait_for_text(section, &failed).await;
    assert!(
        shown.contains("Hosts") && shown.contains("Config schema"),
        "{shown}"
    );
    let echo = page
        .wait_for_text("[data-testid=plugin][data-name=echo]", "Version")
        .await;
    assert!(echo.contains("no suspended execution"), "{echo}");
    shots.push(page.screenshot(&shots_dir, "plugins-1280x800.png").await);

    // Partners' markup, in a callback body and in callback headers: as
    // the step's output and error, and as a callback received early.
    let xss_body = xss_in_body(&daemon).await;
    let xss_headers = xss_in_headers(&daemon).await;
    let (early, _gated, release) = xss_received_early(&daemon).await;
    page.client
        .goto(&format!("{base}/ui#/executions/{early}"))
        .await
        .unwrap();
    let received = page.wait_for_text(".received", "x-partner-note").await;
    assert!(
        received.contains(SCRIPT) && received.contains(IMG),
        "{received}"
    );
    assert!(
        received.contains("***") && !received.contains("partner-key"),
        "{received}"
    );
    assert_eq!(
        page.count("main script, main img").await,
        0,
        "markup became elements"
    );
    assert_nothing_ran(&page).await;
    page.js("document.querySelector('.received').scrollIntoView()")
        .await;
    shots.push(
        page.screenshot(&shots_dir, "partner-markup-as-text.png")
            .await,
    );
    release.add_permits(1);
    daemon.wait_for(&early, "completed").await;
    page.client
        .goto(&format!("{base}/ui#/executions/{xss_body}"))
        .await
        .unwrap();
    page.wait_for_text("[data-testid=output]", SCRIPT).await;
    page.wait_for_text("[data-testid=output]", "<img src=x onerror=")
        .await;
    assert_nothing_ran(&page).await;
    page.client
        .goto(&format!("{base}/ui#/executions/{xss_headers}"))
        .await
        .unwrap();
    page.wait_for_text("[data-testid=error]", SCRIPT).await;
    page.wait_for_text("[data-testid=error]", IMG).await;
    assert_eq!(
        page.count("main script, main img").await,
        0,
        "markup became elements"
    );
    // The policy holds too: an inline script the page would add is refused.
    page.js("const s = document.createElement('script'); s.textContent = 'window.__inline = 1'; document.body.append(s)").await;
    assert_eq!(
        page.js("return [window.__pwned ?? null, window.__inline ?? null]")
            .await,
        json!([null, null])
    );
    // Admin sees the actions a failed execution allows.
    assert_eq!(page.count("[data-testid^=action-]").await, 2);

    // Bulk cancel on a filter: a dry run says how many first.
    page.client
        .goto(&format!(
            "{base}/ui#/executions?state=suspended&workflow=wait-for-callback"
        ))
        .await
        .unwrap();
    page.wait_for_text("tbody", &failed).await;
    page.click(".bulk button.danger").await;
    page.wait_for_text("dialog", "1 would be cancelled").await;
    page.click("dialog [data-testid=confirm]").await;
    page.wait_for_text("#flash", "Cancelled 1 of 1").await;
    assert_eq!(
        daemon.execution(&failed).await["error"]["code"],
        "cancelled"
    );

    // The list, then the same at a narrow width.
    page.client
        .goto(&format!("{base}/ui#/executions"))
        .await
        .unwrap();
    page.wait_for_text("tbody", &xss_headers).await;
    shots.push(page.screenshot(&shots_dir, "list-1280x800.png").await);
    page.set_viewport(400, 800).await;
    page.wait_for_text("tbody", &suspended).await;
    shots.push(page.screenshot(&shots_dir, "list-400.png").await);
    page.client
        .goto(&format!("{base}/ui#/executions/{xss_headers}"))
        .await
        .unwrap();
    page.wait_for_text("[data-testid=error]", "E-XSS").await;
    shots.push(page.screenshot(&shots_dir, "detail-400.png").await);
    page.set_viewport(1280, 800).await;

    // A read-only token, typed into the sign-in form: no action anywhere.
    page.click("#who button").await;
    page.wait_for_text("main", "Sign in").await;
    page.client
        .find(fantoccini::Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(&viewer)
        .await
        .unwrap();
    page.click(".signin button[type=submit]").await;
    page.wait_for_text("[data-testid=whoami]", "viewer · read-only")
        .await;
    page.client
        .goto(&format!("{base}/ui#/executions/{xss_headers}"))
        .await
        .unwrap();
    page.wait_for_text("[data-testid=error]", "E-XSS").await;
    assert_eq!(
        page.count("[data-testid^=action-]").await,
        0,
        "a read-only token sees no action"
    );
    page.client
        .goto(&format!("{base}/ui#/executions?state=failed"))
        .await
        .unwrap();
    page.wait_for_text("tbody", &xss_headers).await;
    assert_eq!(
        page.count(".bulk button").await,
        0,
        "a read-only token sees no bulk action"
    );

    daemon.stop().await;
    shots
}

/// No markup a partner sent has run in the page.
async fn assert_nothing_ran(page: &Page) {
    assert_eq!(
        page.js("return window.__pwned ?? null").await,
        serde_json::Value::Null,
        "a partner's markup ran in the console"
    );
}

/// An execution whose output is a partner's callback body full of markup.
async fn xss_in_body(daemon: &TestDaemon) -> String {
    let partner = Partner::accepting().await;
    let id = daemon
        .start_execution(
            json!({"plugin": "wait-for-callback", "config": {"url": partner.base}, "input": {}}),
        )
        .await;
    daemon.wait_for(&id, "suspended").await;
    let url = partner.wait_for_requests(1).await[0].callback_url();
    let body = json!({"note": format!("{SCRIPT}{IMG}")}).to_string();
    let (status, answer) = call_back(&url, body).await;
    assert_eq!(status, 200, "{answer}");
    daemon.wait_for(&id, "completed").await;
    id
}

/// A running execution with a callback that arrived before its step
/// suspended (the partner holds the step's request until `release`), with
/// markup in its headers and body, and a credential header the API masks.
async fn xss_received_early(daemon: &TestDaemon) -> (String, Partner, Arc<tokio::sync::Semaphore>) {
    let (partner, release) = stephost_tests::gated_partner((202, json!({}))).await;
    let id = daemon
        .start_execution(
            json!({"plugin": "wait-for-callback", "config": {"url": partner.base}, "input": {}}),
        )
        .await;
    let url = partner.wait_for_requests(1).await[0].callback_url();
    let resp = client()
        .post(&url)
        .header("X-Partner-Note", format!("{SCRIPT}{IMG}"))
        .header("X-Api-Key", "partner-key")
        .body(json!({"note": format!("{IMG}{SCRIPT}")}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "stored early");
    (id, partner, release)
}

/// An execution failed by a partner's callback headers full of markup
/// (`link-async-http` takes its error from them).
async fn xss_in_headers(daemon: &TestDaemon) -> String {
    let partner = Partner::accepting().await;
    let id = daemon
        .start_execution(json!({"plugin": "link-async-http", "config": {"url": format!("{}/documents", partner.base), "async": true}, "input": {}}))
        .await;
    daemon.wait_for(&id, "suspended").await;
    let sent = &partner.wait_for_requests(1).await[0];
    let correlation_id = sent.header("x-link-correlation-id").unwrap().to_owned();
    let url = sent.header("x-link-callback-url").unwrap().to_owned();
    let resp = client()
        .post(&url)
        .bearer_auth(&daemon.token)
        .header("content-type", "application/json")
        .header("X-Link-Correlation-Id", correlation_id)
        .header("X-Link-Status", "Failed")
        .header("X-Link-Document-Status", SCRIPT)
        .header("X-Link-Error-Code", "E-XSS")
        .header("X-Link-Error-Text", IMG)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    let exec = daemon.wait_for(&id, "failed").await;
    assert_eq!(exec["error"]["technical_status"], json!(SCRIPT), "{exec}");
    assert_eq!(exec["error"]["text"], json!(IMG), "{exec}");
    id
}
