//! HMAC signing with keys the plugin may never see.
//!
//! Partners usually want a hex or base64 signature header; the host returns
//! raw bytes, so the encoders live here next to the calls.

use crate::Failure;
use crate::bindings::stephost::plugin::signing as wit;

pub use wit::{HmacAlg, KeyRef};

/// Why the host would not sign: the secret is unknown or not granted to
/// this plugin (the text says which). A step that lets it escape with `?`
/// fails with code `signing-error`, as the Python and JavaScript SDKs do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningError(pub String);

impl std::fmt::Display for SigningError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SigningError {}

/// The host's text, for code that keeps errors as strings.
impl From<SigningError> for String {
    fn from(e: SigningError) -> Self {
        e.0
    }
}

impl From<SigningError> for Failure {
    fn from(e: SigningError) -> Self {
        Failure::new("signing-error", e.0)
    }
}

impl KeyRef {
    /// The secret granted to this plugin under `name`; its value stays in
    /// the host.
    pub fn secret(name: impl Into<String>) -> Self {
        KeyRef::Secret(name.into())
    }

    /// Key bytes the plugin already has.
    pub fn inline(key: impl Into<Vec<u8>>) -> Self {
        KeyRef::Inline(key.into())
    }
}

/// The raw HMAC of `data` with `alg`. Fails if the secret is unknown or not
/// granted to this plugin.
pub fn hmac(alg: HmacAlg, key: &KeyRef, data: &[u8]) -> Result<Vec<u8>, SigningError> {
    wit::hmac(alg, key, data).map_err(SigningError)
}

/// HMAC-SHA1 of `data`, for partners that still ask for it.
pub fn hmac_sha1(key: &KeyRef, data: &[u8]) -> Result<Vec<u8>, SigningError> {
    hmac(HmacAlg::Sha1, key, data)
}

/// HMAC-SHA256 of `data`.
pub fn hmac_sha256(key: &KeyRef, data: &[u8]) -> Result<Vec<u8>, SigningError> {
    hmac(HmacAlg::Sha256, key, data)
}

/// HMAC-SHA512 of `data`.
pub fn hmac_sha512(key: &KeyRef, data: &[u8]) -> Result<Vec<u8>, SigningError> {
    hmac(HmacAlg::Sha512, key, data)
}

/// Lower-case hex, the usual form of a signature header.
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// Standard base64 with padding (RFC 4648 §4), the other usual form of a
/// signature header.
pub fn base64(bytes: &[u8]) -> String {
    use ::base64::Engine as _;
    ::base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_encodes_lower_case() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input}");
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn a_signing_error_fails_the_step_with_signing_error() {
        let f = Failure::from(SigningError("secret `k` is not granted".into()));
        assert_eq!(f.error_code.as_deref(), Some("signing-error"));
        assert_eq!(f.error_text, "secret `k` is not granted");
        assert_eq!(String::from(SigningError("x".into())), "x");
    }

    #[test]
    fn key_refs() {
        assert_eq!(KeyRef::secret("k"), KeyRef::Secret("k".into()));
        assert_eq!(KeyRef::inline(b"k".to_vec()), KeyRef::Inline(b"k".to_vec()));
    }
}
