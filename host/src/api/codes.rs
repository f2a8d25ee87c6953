//! Every `code` an API error answer can carry, declared once. Clients match
//! on these strings, so they never change; [`ApiError`](super::ApiError)
//! takes an [`ApiCode`] rather than a string, which keeps a new code from
//! appearing anywhere but in this list, and `tests/tests/error_codes.rs`
//! checks that `docs/errors.md` documents exactly this list, with the same
//! statuses.

use axum::http::StatusCode;

/// Declares [`ApiCode`] from one table, so that the variants, their wire
/// strings, their statuses and [`ApiCode::ALL`] cannot disagree.
macro_rules! api_codes {
    ($($variant:ident = $code:literal, [$($status:ident),+], $meaning:literal;)+) => {
        /// A stable error code of the API (`error.code` of an error answer).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ApiCode {
            $(#[doc = $meaning] $variant,)+
        }

        impl ApiCode {
            /// Every code, in the order `docs/errors.md` lists them.
            pub const ALL: &[ApiCode] = &[$(ApiCode::$variant,)+];

            /// The string on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ApiCode::$variant => $code,)+
                }
            }

            /// The statuses an answer with this code can have.
            pub fn statuses(self) -> &'static [StatusCode] {
                match self {
                    $(ApiCode::$variant => &[$(StatusCode::$status),+],)+
                }
            }

            /// What it means, in one line.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(ApiCode::$variant => $meaning,)+
                }
            }
        }
    };
}

api_codes! {
    BadRequest = "bad-request", [BAD_REQUEST],
        "the request is malformed: body, query or path parameter";
    CallbackRejected = "callback-rejected", [BAD_REQUEST],
        "the step refused the callback's content; it keeps waiting";
    Unauthorized = "unauthorized", [UNAUTHORIZED],
        "no token, or one that is not valid; or a callback's secret missing or wrong";
    Forbidden = "forbidden", [FORBIDDEN],
        "the token lacks the permission the endpoint needs";
    NotFound = "not-found", [NOT_FOUND],
        "no such path, execution or token";
    UnknownWorkflow = "unknown-workflow", [NOT_FOUND],
        "no workflow of that name is configured";
    UnknownPlugin = "unknown-plugin", [NOT_FOUND, CONFLICT],
        "no plugin of that name is loaded";
    UnknownCallback = "unknown-callback", [NOT_FOUND],
        "no callback is registered under that id";
    MethodNotAllowed = "method-not-allowed", [METHOD_NOT_ALLOWED],
        "the path does not take this method";
    RequestTimeout = "request-timeout", [REQUEST_TIMEOUT],
        "the request body stopped arriving";
    WrongState = "wrong-state", [CONFLICT],
        "the execution is not in a state the action applies to";
    Busy = "busy", [CONFLICT],
        "the execution kept changing while the request was decided; nothing was done";
    DuplicateCallback = "duplicate-callback", [CONFLICT],
        "a callback for that id was already delivered";
    PluginFromConfig = "plugin-from-config", [CONFLICT],
        "the plugin's code comes from the config file or the binary, not an upload";
    PluginInUse = "plugin-in-use", [CONFLICT],
        "an execution or a configured workflow still uses the plugin";
    LastAdminToken = "last-admin-token", [CONFLICT],
        "revoking this token would leave no admin token";
    CallbackExpired = "callback-expired", [GONE],
        "the wait this callback was for is over";
    BodyTooLarge = "body-too-large", [PAYLOAD_TOO_LARGE],
        "the request body exceeds the daemon's limit";
    IdempotencyKeyReused = "idempotency-key-reused", [UNPROCESSABLE_ENTITY],
        "the Idempotency-Key started an execution with another request body";
    NotAComponent = "not-a-component", [UNPROCESSABLE_ENTITY],
        "the uploaded bytes are not a WebAssembly component";
    WrongWorld = "wrong-world", [UNPROCESSABLE_ENTITY],
        "the component does not fit the step-plugin world";
    DescribeFailed = "describe-failed", [UNPROCESSABLE_ENTITY],
        "the component's describe call failed";
    InvalidName = "invalid-name", [UNPROCESSABLE_ENTITY],
        "the plugin name is not allowed";
    Internal = "internal", [INTERNAL_SERVER_ERROR],
        "the daemon failed while handling the request; nothing was acknowledged";
    Storage = "storage", [SERVICE_UNAVAILABLE],
        "the store failed; nothing was acknowledged";
}

impl std::fmt::Display for ApiCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn codes_are_distinct_kebab_case_and_have_a_status() {
        let mut seen = HashSet::new();
        for code in ApiCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.split('-')
                    .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase())),
                "{s}"
            );
            assert!(!code.statuses().is_empty(), "{s}");
            assert!(
                code.statuses()
                    .iter()
                    .all(|s| s.is_client_error() || s.is_server_error()),
                "{s}"
            );
        }
    }
}
