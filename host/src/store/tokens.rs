//! The rule the token stores apply atomically, each in its own way: a
//! revocation never removes the last token with `admin`, or nobody could
//! manage the daemon any more.

use crate::model::{Permission, TokenRecord};

/// Whether removing the token `sha256` from `tokens` leaves a token with
/// `admin` (or it was none, or is not there: nothing to keep).
pub(crate) fn keeps_an_admin<'a>(
    tokens: impl IntoIterator<Item = &'a TokenRecord>,
    sha256: &str,
) -> bool {
    let is_admin = |t: &TokenRecord| t.permissions.contains(&Permission::Admin);
    let (mut target_is_admin, mut other_admins) = (false, 0);
    for token in tokens {
        if token.sha256 == sha256 {
            target_is_admin = is_admin(token);
        } else if is_admin(token) {
            other_admins += 1;
        }
    }
    !target_is_admin || other_admins > 0
}
