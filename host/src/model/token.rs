//! API tokens as stored: what a token may do, and its record — its hash,
//! never the token. Data only; creating and checking tokens is `auth`'s.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Everything, including tokens, retry, skip and cancel.
    #[serde(rename = "admin")]
    Admin,
    /// Start executions.
    #[serde(rename = "executions:write")]
    ExecutionsWrite,
    /// Read executions and plugins.
    #[serde(rename = "executions:read")]
    ExecutionsRead,
    /// Send callbacks (besides the per-callback URL secret).
    #[serde(rename = "callbacks:send")]
    CallbacksSend,
}

impl Permission {
    /// Every permission, for help texts.
    pub const ALL: [Permission; 4] = [
        Self::Admin,
        Self::ExecutionsWrite,
        Self::ExecutionsRead,
        Self::CallbacksSend,
    ];

    /// The name used in config, CLI and API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::ExecutionsWrite => "executions:write",
            Self::ExecutionsRead => "executions:read",
            Self::CallbacksSend => "callbacks:send",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<_> = Self::ALL.iter().map(|p| p.as_str()).collect();
                format!("unknown permission {s:?}; use one of {}", all.join(", "))
            })
    }
}

/// A stored token: its hash and what it may do, never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id, for listing and revoking.
    pub id: String,
    /// What the operator called it.
    pub name: String,
    /// SHA-256 of the token, hex; also the key.
    pub sha256: String,
    /// Granted permissions.
    pub permissions: Vec<Permission>,
    /// Creation time.
    pub created_ms: u64,
    /// When it stops being accepted; never without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// When a request last used it, to within [`LAST_USED_GRANULARITY_MS`]:
    /// recording every use would be a write per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_ms: Option<u64>,
}

/// How stale a token's recorded last use may get before a request writes
/// it again.
pub const LAST_USED_GRANULARITY_MS: u64 = 60_000;

impl TokenRecord {
    /// Whether the token may do what `needed` names (`admin` may do all).
    pub fn allows(&self, needed: Permission) -> bool {
        self.permissions
            .iter()
            .any(|p| *p == needed || *p == Permission::Admin)
    }

    /// Whether it has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|at| at <= now_ms)
    }

    /// Whether a use at `now_ms` should be recorded.
    pub fn use_is_news(&self, now_ms: u64) -> bool {
        self.last_used_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= LAST_USED_GRANULARITY_MS)
    }
}

impl TokenRecord {
    /// What may be shown of it (`GET /v1/tokens`, `token list`): never
    /// the token's hash.
    pub fn public_view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "permissions": self.permissions,
            "created_ms": self.created_ms,
            "expires_ms": self.expires_ms,
            "last_used_ms": self.last_used_ms,
        })
    }
}
