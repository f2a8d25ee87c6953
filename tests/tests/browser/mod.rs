//! Headless Chromium driven over WebDriver, for the console's browser
//! tests: Debian's `chromium` and `chromium-driver`, a chromedriver on a
//! free loopback port, a fresh profile per run, and waits that are always
//! bounded. A machine without them fails the test and says what to
//! install: a browser test that passes without a browser tests nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// How long any one wait in the browser may take.
pub const UI_WAIT: Duration = Duration::from_secs(15);

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Where the screenshots go: a test artifact, next to the build.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("console-screenshots")
}

/// A browser session and the chromedriver serving it.
pub struct Browser {
    /// The session's page.
    pub page: Page,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// Fails the test, saying how to install what is missing.
fn require(path: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: the console's browser test needs Debian's headless Chromium; \
         install it with `apt-get install chromium chromium-driver` (.ci/run does)"
    );
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a `width`×`height`
    /// window.
    pub async fn start(width: u32, height: u32) -> Self {
        require(CHROMIUM);
        require(CHROMEDRIVER);
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        // The browser's local time is half an hour off UTC (India, no
        // summer time), so that a page showing local time and one showing
        // UTC differ even in the minutes.
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .env("TZ", "Asia/Kolkata")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let profile = tempfile::tempdir().unwrap();
        // This machine's network is closed: everything Chromium would
        // fetch in the background (updates, sync, QUIC probes) is turned
        // off, so it only talks to the daemon on loopback.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--window-size={width},{height}"),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": CHROMIUM, "args": args}),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + UI_WAIT;
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                // chromedriver may not listen yet.
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no browser session from chromedriver at {url}: {e}"),
            }
        };
        let browser = Self {
            page: Page { client },
            driver,
            _profile: profile,
        };
        browser.page.set_viewport(width, height).await;
        browser
    }

    /// Ends the session (Chromium exits) and stops chromedriver.
    pub async fn stop(mut self) {
        let _ = tokio::time::timeout(UI_WAIT, self.page.client.clone().close()).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The page of a session: what a test does in it. Cheap to clone, so a
/// scenario can run in a task of its own and the session still be closed
/// when it panics.
#[derive(Clone)]
pub struct Page {
    /// The WebDriver client.
    pub client: Client,
}

impl Page {
    /// Sizes the window so that the page itself (what a screenshot shows)
    /// is `width`×`height`: the window's own frame takes some of it.
    pub async fn set_viewport(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
        let inner = self
            .js("return [window.innerWidth, window.innerHeight]")
            .await;
        let (w, h) = (
            inner[0].as_u64().unwrap() as u32,
            inner[1].as_u64().unwrap() as u32,
        );
        self.client
            .set_window_size(2 * width - w.min(width), 2 * height - h.min(height))
            .await
            .unwrap();
    }

    /// Runs `script` in the page and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The text of the first element matching `css`, or `None`.
    pub async fn text_of(&self, css: &str) -> Option<String> {
        let script = format!(
            "return document.querySelector({})?.textContent ?? null",
            json!(css)
        );
        self.js(&script).await.as_str().map(str::to_owned)
    }

    /// Waits until the first element matching `css` has text containing
    /// `needle`; returns the whole text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + UI_WAIT;
        loop {
            let text = self.text_of(css).await;
            if let Some(text) = &text
                && text.contains(needle)
            {
                return text.clone();
            }
            assert!(
                Instant::now() < deadline,
                "waited {UI_WAIT:?} for {css:?} to show {needle:?}; it shows {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the first element matching `css` (waiting for it).
    pub async fn click(&self, css: &str) {
        let element =
            tokio::time::timeout(UI_WAIT, self.client.wait().for_element(Locator::Css(css)))
                .await
                .unwrap_or_else(|_| panic!("no {css} within {UI_WAIT:?}"))
                .unwrap_or_else(|e| panic!("no {css}: {e}"));
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> u64 {
        let script = format!("return document.querySelectorAll({}).length", json!(css));
        self.js(&script).await.as_u64().unwrap()
    }

    /// Saves a screenshot of the window as `name` in `dir`; returns its path.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.canonicalize().unwrap().join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that panicked did not call `stop`: the driver goes anyway.
        let _ = self.driver.kill();
    }
}
