//! API tokens and their permissions. A token is shown once, when created;
//! the store keeps only its SHA-256, so a stolen data dir yields no usable
//! token. Lookup is by that hash, which leaks nothing an attacker could use
//! to guess a token.

use sha2::Digest as _;

use crate::model::now_ms;
use crate::store::{StoreError, TokenStore};

pub use crate::model::{Permission, TokenRecord};

/// Why a request's credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header (401).
    #[error("this endpoint needs an API token: send `Authorization: Bearer <token>`")]
    Missing,
    /// Not `Bearer <token>`, or not a token this daemon issued (401).
    #[error("the API token is malformed or unknown")]
    Invalid,
    /// A token past its expiry (401).
    #[error("the API token {0} has expired; an admin can create a new one")]
    Expired(String),
    /// A token revoked while its request was being received (401): the
    /// request is refused before it takes effect.
    #[error("the API token {0} was revoked while this request was being received")]
    Revoked(String),
    /// A valid token without the permission (403).
    #[error("the API token lacks the permission {0}")]
    Forbidden(Permission),
    /// The tokens could not be read (503): the store is down, which says
    /// nothing about the token, so it is not refused as unknown.
    #[error("cannot check the API token: {0}")]
    Unavailable(String),
}

/// SHA-256 hex of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Creates a token, valid until `expires_ms` if given; returns it (to
/// show once) and its stored record.
pub async fn create_token(
    store: &dyn TokenStore,
    name: &str,
    permissions: &[Permission],
    expires_ms: Option<u64>,
) -> Result<(String, TokenRecord), StoreError> {
    let (token, record) = new_token(name, permissions, expires_ms);
    store.put_token(&record).await?;
    Ok((token, record))
}

/// Creates the first admin token of a store that has none, or nothing
/// when another daemon (or request) made a token first.
pub async fn create_first_admin_token(
    store: &dyn TokenStore,
) -> Result<Option<(String, TokenRecord)>, StoreError> {
    let (token, record) = new_token("first-admin", &[Permission::Admin], None);
    Ok(store
        .put_first_token(&record)
        .await?
        .then_some((token, record)))
}

/// A new token and its record, not stored yet.
fn new_token(
    name: &str,
    permissions: &[Permission],
    expires_ms: Option<u64>,
) -> (String, TokenRecord) {
    let token = format!("sht_{}", hex::encode(rand::random::<[u8; 32]>()));
    let mut permissions = permissions.to_vec();
    permissions.sort_by_key(|p| p.as_str());
    permissions.dedup();
    let record = TokenRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_owned(),
        sha256: token_hash(&token),
        permissions,
        created_ms: now_ms(),
        expires_ms,
        last_used_ms: None,
    };
    (token, record)
}

/// Every token record, oldest first.
pub async fn list_tokens(store: &dyn TokenStore) -> Result<Vec<TokenRecord>, StoreError> {
    let mut tokens = store.tokens().await?;
    tokens.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
    Ok(tokens)
}

/// Why a token was not revoked.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// No token has this id.
    #[error("no token {0}")]
    NotFound(String),
    /// It is the last token with `admin`: without it nobody could manage
    /// tokens through the API again.
    #[error(
        "token {0} is the last admin token; create another admin token first, or revoke it with force"
    )]
    LastAdmin(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Revokes the token with public id `id`: refused from then on. The last
/// token with `admin` is kept unless `force`; the store decides that
/// atomically, so revocations at once (on one daemon or on several sharing
/// a database) never remove the last two together.
pub async fn revoke_token(
    store: &dyn TokenStore,
    id: &str,
    force: bool,
) -> Result<TokenRecord, RevokeError> {
    let record = store
        .tokens()
        .await?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| RevokeError::NotFound(id.to_owned()))?;
    if force {
        store.remove_token(&record.sha256).await?;
    } else if !store.remove_token_keeping_an_admin(&record.sha256).await? {
        return Err(RevokeError::LastAdmin(id.to_owned()));
    }
    Ok(record)
}

/// The token record of a bearer token, if one was sent (the API parses the
/// `Authorization` header); a token this daemon did not issue is refused.
pub async fn authenticate(
    store: &dyn TokenStore,
    token: Option<&str>,
) -> Result<Option<TokenRecord>, AuthError> {
    let Some(token) = token else {
        return Ok(None);
    };
    let record = match store.token(&token_hash(token)).await {
        Ok(Some(record)) => record,
        Ok(None) => return Err(AuthError::Invalid),
        Err(e) => {
            tracing::error!(error = %e, "token lookup failed");
            return Err(AuthError::Unavailable(e.to_string()));
        }
    };
    let now = now_ms();
    if record.expired(now) {
        return Err(AuthError::Expired(record.id));
    }
    if record.use_is_news(now) {
        // Bookkeeping: a failure to record it must not refuse the request.
        if let Err(e) = store.touch_token(&record.sha256, now).await {
            tracing::warn!(token_id = %record.id, error = %e, "could not record the token's use");
        }
    }
    Ok(Some(record))
}

/// Checks again, once a request has been received in full, that the token
/// `admitted` it is still valid: a token revoked or expired while a long
/// request was on its way is refused before the request takes effect.
pub async fn still_valid(store: &dyn TokenStore, admitted: &TokenRecord) -> Result<(), AuthError> {
    match store.token(&admitted.sha256).await {
        Ok(Some(record)) if record.expired(now_ms()) => Err(AuthError::Expired(record.id)),
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(AuthError::Revoked(admitted.id.clone())),
        Err(e) => {
            tracing::error!(error = %e, "token lookup failed");
            Err(AuthError::Unavailable(e.to_string()))
        }
    }
}

/// Requires a token with `needed`.
pub async fn require(
    store: &dyn TokenStore,
    token: Option<&str>,
    needed: Permission,
) -> Result<TokenRecord, AuthError> {
    let record = authenticate(store, token)
        .await?
        .ok_or(AuthError::Missing)?;
    if !record.allows(needed) {
        return Err(AuthError::Forbidden(needed));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ExecutionStore as _, SledStore};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revoking_the_last_two_admin_tokens_at_once_keeps_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        for round in 0..20 {
            let (_, a) = create_token(&store, &format!("a{round}"), &[Permission::Admin], None)
                .await
                .unwrap();
            let (_, b) = create_token(&store, &format!("b{round}"), &[Permission::Admin], None)
                .await
                .unwrap();
            let (ra, rb) = tokio::join!(
                revoke_token(&store, &a.id, false),
                revoke_token(&store, &b.id, false)
            );
            let revoked = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
            assert_eq!(revoked, 1, "round {round}: {ra:?} {rb:?}");
            let refused = [ra, rb].into_iter().find_map(Result::err).unwrap();
            assert!(matches!(refused, RevokeError::LastAdmin(_)), "{refused:?}");
            let admins = store
                .tokens()
                .await
                .unwrap()
                .into_iter()
                .filter(|t| t.permissions.contains(&Permission::Admin))
                .count();
            assert_eq!(admins, 1, "round {round}");
            // Leave no admin behind for the next round.
            let left = store.tokens().await.unwrap();
            for t in left {
                revoke_token(&store, &t.id, true).await.unwrap();
            }
        }
    }

    #[tokio::test]
    async fn a_token_is_stored_only_as_its_hash_and_checked_by_permission() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let (token, record) = create_token(&store, "ci", &[Permission::ExecutionsRead], None)
            .await
            .unwrap();
        use sha2::Digest as _;
        assert_eq!(
            record.sha256,
            hex::encode(sha2::Sha256::digest(token.as_bytes())),
            "the record keeps the token's SHA-256"
        );
        assert_eq!(
            store.token(&record.sha256).await.unwrap(),
            Some(record.clone())
        );
        let ok = require(&store, Some(&token), Permission::ExecutionsRead)
            .await
            .unwrap();
        assert_eq!(ok.name, "ci");
        assert_eq!(
            require(&store, Some(&token), Permission::ExecutionsWrite).await,
            Err(AuthError::Forbidden(Permission::ExecutionsWrite))
        );
        assert_eq!(
            require(&store, None, Permission::ExecutionsRead).await,
            Err(AuthError::Missing)
        );
        assert_eq!(
            require(&store, Some("sht_nope"), Permission::ExecutionsRead).await,
            Err(AuthError::Invalid)
        );
        // The Bearer scheme is required: see api/auth.rs.

        // On disk: the hash is there (so the scan sees what was stored),
        // the token is not.
        store.flush().await.unwrap();
        drop(store);
        let holds = |needle: &[u8]| stephost_tests::files_hold(dir.path(), needle);
        assert!(holds(record.sha256.as_bytes()), "the store holds the hash");
        assert!(
            !holds(token.as_bytes()),
            "the plain token is nowhere on disk"
        );
    }

    #[test]
    fn admin_allows_everything() {
        let record = TokenRecord {
            id: String::new(),
            name: String::new(),
            sha256: String::new(),
            permissions: vec![Permission::Admin],
            created_ms: 0,
            expires_ms: None,
            last_used_ms: None,
        };
        assert!(Permission::ALL.iter().all(|p| record.allows(*p)));
        assert!("callbacks:send".parse::<Permission>().is_ok());
        assert!(
            "root"
                .parse::<Permission>()
                .unwrap_err()
                .contains("callbacks:send")
        );
    }
}
