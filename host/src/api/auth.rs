//! Who may call what (`docs/api.md`, "Authentication"): a request's
//! `Authorization: Bearer` token, looked up in the store, against the
//! permission its route needs. One layer, [`guard`], checks it for a group
//! of routes; the callback route, where a token is optional, reads the
//! same token through [`caller`].

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse as _, Response};
use headers::authorization::Bearer;
use headers::{Authorization, HeaderMapExt as _};
use http_body_util::{BodyExt as _, Limited};

use super::{ApiError, Shared};
use crate::auth::{AuthError, Permission, TokenRecord};

/// What the [`guard`] layer of one group of routes needs.
#[derive(Clone)]
struct Needs {
    api: Shared,
    permission: Permission,
}

/// `routes`, each admitting only a token with `permission` (when auth is
/// on).
pub(super) fn guard(
    routes: Router<Shared>,
    api: &Shared,
    permission: Permission,
) -> Router<Shared> {
    let needs = Needs {
        api: api.clone(),
        permission,
    };
    routes.route_layer(from_fn_with_state(needs, require))
}

async fn require(State(needs): State<Needs>, req: Request, next: Next) -> Response {
    match admit(&needs.api, req, needs.permission).await {
        Ok(req) => next.run(req).await,
        Err(refused) => refused.into_response(),
    }
}

/// Hands `req` back if its token has `needed` (or auth is off); else the
/// refusal, once the request's body has been read.
pub(super) async fn admit(
    api: &Shared,
    req: Request,
    needed: Permission,
) -> Result<Request, ApiError> {
    if !api.auth.enabled {
        return Ok(req);
    }
    let mut req = req;
    let refused = match check(api, req.headers(), needed).await {
        Ok(record) => {
            req.extensions_mut().insert(Admitted(record));
            return Ok(req);
        }
        Err(refused) => refused,
    };
    // Read what the client is sending (up to the request limit, for a few
    // seconds at most) before refusing it, so that it hears the refusal
    // rather than a connection reset mid-body.
    let drain = Limited::new(req.into_body(), api.max_body).collect();
    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
    Err(refused.into())
}

/// The token that admitted a request, kept in its extensions so that a
/// handler can check it again once the body has arrived.
#[derive(Clone)]
pub(super) struct Admitted(TokenRecord);

impl Admitted {
    /// The public id of the token that admitted the request.
    pub(super) fn token_id(&self) -> &str {
        &self.0.id
    }
}

/// A request's body (up to `limit`), once the token that admitted it has
/// been found still valid: a request that takes long to arrive (an upload,
/// a slow client) takes effect only if its token was not revoked or did
/// not expire meanwhile.
pub(super) async fn admitted_body(
    api: &Shared,
    admitted: Option<&Admitted>,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let body = super::read_body(body, limit).await?;
    if let Some(Admitted(record)) = admitted {
        crate::auth::still_valid(api.workflows.store().as_ref(), record).await?;
    }
    Ok(body)
}

async fn check(
    api: &Shared,
    headers: &HeaderMap,
    needed: Permission,
) -> Result<TokenRecord, AuthError> {
    let token = bearer(headers)?;
    crate::auth::require(api.workflows.store().as_ref(), token.as_deref(), needed).await
}

/// The token a request carries, if any; one that is sent must be valid
/// (whether auth is on or not: a client that sends one means it).
pub(super) async fn caller(
    api: &Shared,
    headers: &HeaderMap,
) -> Result<Option<TokenRecord>, ApiError> {
    let token = bearer(headers)?;
    let store = api.workflows.store().as_ref();
    Ok(crate::auth::authenticate(store, token.as_deref()).await?)
}

/// The bearer token of an `Authorization` header: none without the
/// header; any other scheme, or no token, is invalid.
fn bearer(headers: &HeaderMap) -> Result<Option<String>, AuthError> {
    match headers.typed_try_get::<Authorization<Bearer>>() {
        Ok(None) => Ok(None),
        Ok(Some(header)) if !header.token().is_empty() => Ok(Some(header.token().to_owned())),
        Ok(Some(_)) | Err(_) => Err(AuthError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use axum::http::header::AUTHORIZATION;
    use proptest::prelude::*;

    fn with(value: &[u8]) -> Option<HeaderMap> {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_bytes(value).ok()?);
        Some(headers)
    }

    #[test]
    fn the_bearer_scheme_is_required() {
        let token = |v: &[u8]| bearer(&with(v).unwrap());
        assert_eq!(token(b"Bearer sht_1"), Ok(Some("sht_1".to_owned())));
        assert_eq!(token(b"bearer sht_1"), Ok(Some("sht_1".to_owned())));
        assert_eq!(token(b"sht_1"), Err(AuthError::Invalid));
        assert_eq!(token(b"Basic c2h0OjE="), Err(AuthError::Invalid));
        assert_eq!(token(b"Bearer"), Err(AuthError::Invalid));
        assert_eq!(bearer(&HeaderMap::new()), Ok(None));
    }

    proptest! {
        #[test]
        fn any_authorization_header_is_a_clean_refusal(header in proptest::collection::vec(any::<u8>(), 0..96)) {
            let Some(headers) = with(&header) else {
                return Ok(()); // hyper would not have parsed it
            };
            let dir = tempfile::tempdir().unwrap();
            let store = crate::store::SledStore::open(dir.path()).unwrap();
            let refused = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(async {
                    let token = bearer(&headers)?;
                    crate::auth::authenticate(&store, token.as_deref()).await
                });
            prop_assert!(refused.is_err());
        }
    }
}
