//! The operator's web console at `/ui` (`docs/operations.md`, "The
//! console"): a few static files compiled into the binary, so that the
//! daemon serves its own console with nothing to install and no build
//! step. The files hold no data and need no token; the page asks the
//! token-checked API for everything it shows, with the token the operator
//! signs in with.
//!
//! What a partner or a plugin sent is shown on that page, so the page is
//! made safe by construction: its scripts only ever set text, and every
//! answer here carries a Content-Security-Policy that allows no inline
//! script or style and nothing from another origin, so that even a
//! mistake in the scripts could not run what a partner sent.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;

use super::{Param, Shared};

/// The policy of every console answer: own files only, no inline script
/// or style, no plugins, no framing, API calls to this origin only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's files: name, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("console/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("console/style.css"),
    ),
    ("app.js", JS, include_str!("console/app.js")),
    ("api.js", JS, include_str!("console/api.js")),
    ("dom.js", JS, include_str!("console/dom.js")),
    ("list.js", JS, include_str!("console/list.js")),
    ("detail.js", JS, include_str!("console/detail.js")),
    ("plugins.js", JS, include_str!("console/plugins.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

/// `/ui` (the page) and `/ui/{file}` (what it loads). Open: the files are
/// the same for everyone.
pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/{file}", get(file))
}

async fn index() -> Response {
    serve("index.html")
}

async fn file(Param(name): Param) -> Response {
    serve(&name)
}

/// A console file, or a plain `404` (under the same policy) for a name
/// the console does not have.
fn serve(name: &str) -> Response {
    let (status, content_type, body) = match FILES.iter().find(|(n, ..)| *n == name) {
        Some((_, content_type, body)) => (StatusCode::OK, *content_type, *body),
        None => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "no such console file\n",
        ),
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // A daemon upgrade brings new files: have the browser ask again.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_carries_the_policy_and_known_types() {
        for name in ["index.html", "app.js", "style.css", "missing.js", "../x"] {
            let resp = serve(name);
            let h = resp.headers();
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
            let known = FILES.iter().any(|(n, ..)| *n == name);
            assert_eq!(resp.status() == StatusCode::OK, known, "{name}");
        }
    }

    #[test]
    fn the_files_load_nothing_from_elsewhere_and_set_no_html() {
        for (name, _, body) in FILES {
            for banned in [
                "http://",
                "https://",
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!body.contains(banned), "{name} contains {banned}");
            }
            // No inline script or style for the policy to refuse.
            if name.ends_with(".html") {
                assert!(!body.contains("<style"), "{name}");
                assert!(!body.contains(" style="), "{name}");
                for script in body.split("<script").skip(1) {
                    assert!(
                        script.trim_start().starts_with("type=\"module\" src="),
                        "{name}"
                    );
                }
            }
        }
    }
}
