//! The console's usability in a real browser (Debian's headless Chromium,
//! the real daemon, partners on loopback): the list's pager goes to older
//! executions and back; pausing auto-refresh stops the polling until it is
//! resumed; an execution's page shows its result delivery with every
//! attempt; times are local with UTC on hover; a long body is folded; an
//! action works from the keyboard, and Escape leaves the execution as it
//! was; at 400 px wide neither page scrolls sideways. Screenshots of the
//! confirmation opened from the keyboard and of a folded body at 400 px
//! go to `target/console-screenshots/`.

mod browser;

use std::time::{Duration, Instant};

use browser::{Browser, Page, UI_WAIT, screenshot_dir};
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use serde_json::json;
use stephost_tests::{Partner, TestDaemon, WAIT};

/// The list's page size (`PAGE` in list.js).
const PAGE: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_pages_pauses_folds_and_works_from_the_keyboard() {
    let browser = Browser::start(1280, 800).await;
    // Its own task, so that the browser is closed when an assertion fails.
    let outcome = tokio::spawn(scenario(browser.page.clone())).await;
    browser.stop().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn scenario(page: Page) {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_default(dir.path()).await;
    let base = daemon.base.clone();

    // More echo executions than a page holds: one with a long output, one
    // whose result is delivered to a client, the others short.
    let results = Partner::start(|_| async { (200, json!({"ok": true})) }).await;
    let long_input = json!({
        "lines": (0..30).map(|i| format!("line {i}")).collect::<Vec<_>>(),
        "document": "x".repeat(400),
    });
    let long = daemon
        .start_execution(json!({"plugin": "echo", "input": long_input}))
        .await;
    let (status, answer) = daemon
        .post(
            "/v1/executions",
            json!({"plugin": "echo", "input": {"n": 0}, "callback_url": results.base}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let delivered = answer["id"].as_str().unwrap().to_owned();
    let mut short = Vec::new();
    for n in 1..=PAGE {
        short.push(
            daemon
                .start_execution(json!({"plugin": "echo", "input": {"n": n}}))
                .await,
        );
    }
    // A failed one whose partner is down at first (a retry reaches it).
    let flaky = Partner::down_at_first().await;
    let failed = daemon
        .start_execution(
            json!({"plugin": "wait-for-callback", "config": {"url": flaky.base}, "input": {}}),
        )
        .await;
    daemon.wait_for(&failed, "failed").await;
    delivery_delivered(&daemon, &delivered).await;

    page.client
        .goto(&format!("{base}/ui#token={}", daemon.token))
        .await
        .unwrap();
    page.wait_for_text("[data-testid=whoami]", "admin").await;

    // The pager: the newest 50 echo executions, then the older ones (the
    // first two started), then the same 50 again.
    page.client
        .goto(&format!("{base}/ui#/executions?workflow=echo"))
        .await
        .unwrap();
    page.wait_for_text("tbody", &short[PAGE - 1]).await;
    page.wait_for_text(".pager", "page 1").await;
    let first = row_ids(&page).await;
    assert_eq!(first.len(), PAGE);
    assert_eq!(first[0], short[PAGE - 1], "newest first");
    assert_eq!(
        page.js("return document.querySelector('.pager button').disabled")
            .await,
        json!(true),
        "no newer page than the first"
    );
    page.click(".pager button:last-of-type").await;
    page.wait_for_text(".pager", "page 2").await;
    let mut second = row_ids(&page).await;
    second.sort();
    let mut older = vec![long.clone(), delivered.clone()];
    older.sort();
    assert_eq!(second, older, "the second page holds the rest");
    assert_eq!(
        page.js("return document.querySelector('.pager button:last-of-type').disabled")
            .await,
        json!(true),
        "no older page than the last"
    );
    page.click(".pager button").await;
    page.wait_for_text(".pager", "page 1").await;
    assert_eq!(row_ids(&page).await, first, "back to the first page");

    // Pausing auto-refresh stops the polling: an execution started
    // meanwhile shows only once it is resumed. Every call the page makes
    // is counted.
    page.js(
        "window.__calls = 0; window.__pending = 0; const real = window.fetch; \
         window.fetch = (...a) => { window.__calls++; window.__pending++; \
         return real(...a).finally(() => window.__pending--); };",
    )
    .await;
    page.click(".toolbar button[aria-pressed]").await;
    page.wait_for_text(".toolbar button[aria-pressed=true]", "Resume auto-refresh")
        .await;
    wait_until(&page, "return window.__pending === 0").await;
    let calls_paused = page.js("return window.__calls").await;
    let newer = daemon
        .start_execution(json!({"plugin": "echo", "input": {"n": "while paused"}}))
        .await;
    // More than one refresh interval (3 s in list.js).
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(
        page.js("return window.__calls").await,
        calls_paused,
        "no call while paused"
    );
    assert!(!page.text_of("tbody").await.unwrap().contains(&newer));
    page.click(".toolbar button[aria-pressed=true]").await;
    page.wait_for_text(".toolbar button[aria-pressed=false]", "Pause auto-refresh")
        .await;
    page.wait_for_text("tbody", &newer).await;

    // Times: local in the text, UTC on hover. The browser runs in a zone
    // half an hour off UTC (browser/mod.rs), so the minutes differ.
    let exec = daemon.execution(&long).await;
    // The output as the page shows it (JSON.stringify with two spaces).
    let long_text = serde_json::to_string_pretty(&exec["output"]).unwrap();
    page.client
        .goto(&format!("{base}/ui#/executions/{long}"))
        .await
        .unwrap();
    page.wait_for_text("[data-testid=output]", "Output").await;
    let created = exec["created_ms"].as_u64().unwrap();
    let shown = page
        .js(&format!(
            "const t = document.querySelector('.facts time'); \
             return [t.getAttribute('datetime'), t.title, t.textContent, \
                     new Date({created}).toISOString(), -new Date({created}).getTimezoneOffset()]"
        ))
        .await;
    let [datetime, title, text, iso, offset] = shown.as_array().unwrap().as_slice() else {
        panic!("{shown}")
    };
    assert_eq!(datetime, iso, "{shown}");
    let iso = iso.as_str().unwrap();
    assert_eq!(
        title,
        &json!(format!("{} {} UTC", &iso[..10], &iso[11..19]))
    );
    let offset = offset.as_i64().unwrap();
    assert!(
        offset % 60 != 0,
        "the browser's zone is off UTC by {offset} min"
    );
    let local = created as i64 / 1000 + offset * 60;
    let (text, utc) = (text.as_str().unwrap(), created as i64 / 1000);
    let mm_ss = |s: i64| format!("{:02}:{:02}", s / 60 % 60, s % 60);
    assert!(
        text.contains(&mm_ss(local)) && !text.contains(&mm_ss(utc)),
        "{text} is not local time (UTC {iso}, offset {offset} min)"
    );

    // A long body is folded, closed; a short one is shown as it is.
    assert_eq!(page.count("[data-testid=output] details").await, 1);
    assert_eq!(
        page.js(
            "const d = document.querySelector('[data-testid=output] details'); \
             return [d.open, d.querySelector('pre').checkVisibility(), d.querySelector('summary').textContent]"
        )
        .await,
        json!([false, false, format!("output: {} lines, {} characters", long_text.lines().count(), long_text.len())])
    );
    page.click("[data-testid=output] summary").await;
    assert_eq!(
        page.js("return document.querySelector('[data-testid=output] pre').checkVisibility()")
            .await,
        json!(true),
        "opened"
    );
    page.client
        .goto(&format!("{base}/ui#/executions/{}", short[0]))
        .await
        .unwrap();
    page.wait_for_text("[data-testid=output] pre", "\"n\": 1")
        .await;
    assert_eq!(page.count("[data-testid=output] details").await, 0);

    // The result delivery, with its attempt.
    page.client
        .goto(&format!("{base}/ui#/executions/{delivered}"))
        .await
        .unwrap();
    page.wait_for_text("main", "Result delivery").await;
    let delivery = page
        .js(
            "const s = [...document.querySelectorAll('section')] \
               .find((s) => s.querySelector('h2')?.textContent === 'Result delivery'); \
             return [s.querySelector('.badge').textContent, s.querySelector('dd .mono').textContent, \
                     [...s.querySelectorAll('tbody tr')].map((r) => [...r.cells].map((c) => c.textContent))]",
        )
        .await;
    assert_eq!(delivery[0], "delivered", "{delivery}");
    assert_eq!(delivery[1], json!(results.base), "{delivery}");
    let attempts = delivery[2].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{delivery}");
    assert_eq!(
        (&attempts[0][0], &attempts[0][3]),
        (&json!("1"), &json!("200"))
    );
    assert_eq!(results.requests().len(), 1);

    // Retry from the keyboard: Tab to the button, Enter opens the
    // confirmation with the focus in it, Escape closes it and nothing
    // happens; Enter again, Tab to the confirm button, Enter retries.
    page.client
        .goto(&format!("{base}/ui#/executions/{failed}"))
        .await
        .unwrap();
    page.wait_for_text("[data-testid=error]", "partner-error")
        .await;
    tab_to(&page, "action-retry").await;
    press(&page, Key::Enter).await;
    wait_until(
        &page,
        "return document.querySelector('dialog')?.open === true",
    )
    .await;
    assert_eq!(
        page.js("return document.querySelector('dialog').contains(document.activeElement)")
            .await,
        json!(true),
        "the focus moves into the confirmation"
    );
    press(&page, Key::Escape).await;
    wait_until(&page, "return document.querySelector('dialog') === null").await;
    assert_eq!(
        page.js("return document.activeElement?.dataset?.testid ?? null")
            .await,
        "action-retry",
        "the focus is back on the button"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = daemon.execution(&failed).await;
    assert_eq!(
        (still["state"].as_str(), still["attempt"].as_u64()),
        (Some("failed"), Some(1)),
        "Escape must not retry"
    );
    assert_eq!(flaky.requests().len(), 1);
    tab_to(&page, "action-retry").await;
    press(&page, Key::Enter).await;
    page.wait_for_text("dialog", "attempt 2").await;
    let shot = page
        .screenshot(&screenshot_dir(), "confirm-by-keyboard.png")
        .await;
    println!("console screenshot: {}", shot.display());
    tab_to(&page, "confirm").await;
    press(&page, Key::Enter).await;
    page.wait_for_text("h1 .badge", "suspended").await;
    let retried = daemon.execution(&failed).await;
    assert_eq!(
        (retried["state"].as_str(), retried["attempt"].as_u64()),
        (Some("suspended"), Some(2))
    );

    // A narrow window: no page scrolls sideways; the list is cards.
    page.set_viewport(400, 800).await;
    page.wait_for_text("[data-testid=wait]", "Copy as curl")
        .await;
    assert_fits(&page, "a suspended execution").await;
    for id in [&delivered, &long] {
        page.client
            .goto(&format!("{base}/ui#/executions/{id}"))
            .await
            .unwrap();
        page.wait_for_text("main", "Output").await;
        assert_fits(&page, id).await;
        page.js("document.querySelectorAll('details').forEach((d) => d.open = true)")
            .await;
        assert_fits(&page, id).await;
    }
    let shot = page
        .screenshot(&screenshot_dir(), "detail-opened-400.png")
        .await;
    println!("console screenshot: {}", shot.display());
    page.client
        .goto(&format!("{base}/ui#/executions"))
        .await
        .unwrap();
    page.wait_for_text("tbody", &failed).await;
    assert_fits(&page, "the list").await;
    assert_eq!(
        page.js(
            "return getComputedStyle(document.querySelector('table.executions thead')).display"
        )
        .await,
        "none",
        "rows become cards"
    );
    daemon.stop().await;
}

/// The execution ids of the list's rows, in order.
async fn row_ids(page: &Page) -> Vec<String> {
    let ids = page
        .js("return [...document.querySelectorAll('[data-testid=execution-row] a')].map((a) => a.textContent)")
        .await;
    serde_json::from_value(ids).unwrap()
}

/// Presses and lets go of `key` where the focus is, as a keyboard would.
async fn press(page: &Page, key: Key) {
    let key: char = key.into();
    let actions = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: key })
        .then(KeyAction::Up { value: key });
    page.client.perform_actions(actions).await.unwrap();
}

/// Presses Tab until the element with `data-testid` `testid` has the focus.
async fn tab_to(page: &Page, testid: &str) {
    let focused = "return document.activeElement?.dataset?.testid ?? null";
    for _ in 0..30 {
        if page.js(focused).await == testid {
            return;
        }
        press(page, Key::Tab).await;
    }
    panic!("30 Tabs did not reach {testid}");
}

/// Waits until `script` returns true.
async fn wait_until(page: &Page, script: &str) {
    let deadline = Instant::now() + UI_WAIT;
    while page.js(script).await != json!(true) {
        assert!(Instant::now() < deadline, "waited {UI_WAIT:?} for {script}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The page is no wider than the window: nothing to scroll sideways.
async fn assert_fits(page: &Page, what: &str) {
    let sizes = page
        .js("return [document.documentElement.scrollWidth, window.innerWidth]")
        .await;
    assert!(
        sizes[0].as_u64() <= sizes[1].as_u64() && sizes[1] == 400,
        "{what} at 400 px: [scrollWidth, innerWidth] = {sizes}"
    );
}

/// Polls until the execution's result was delivered.
async fn delivery_delivered(daemon: &TestDaemon, id: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let exec = daemon.execution(id).await;
        if exec["delivery"]["state"] == "delivered" {
            return;
        }
        assert!(Instant::now() < deadline, "not delivered: {exec:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
