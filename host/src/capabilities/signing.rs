//! `signing.hmac`: HMAC with SHA-1, SHA-256 or SHA-512, keyed by a granted
//! secret the plugin never sees, or by bytes it supplies.

use hmac::{Hmac, Mac};

use super::StepState;
use crate::bindings::stephost::plugin::signing::{HmacAlg, Host, KeyRef};

/// Computes an HMAC; shared with result delivery and tests.
pub fn hmac(alg: HmacAlg, key: &[u8], data: &[u8]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
            .expect("HMAC accepts keys of any length");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }
    match alg {
        HmacAlg::Sha1 => run::<Hmac<sha1::Sha1>>(key, data),
        HmacAlg::Sha256 => run::<Hmac<sha2::Sha256>>(key, data),
        HmacAlg::Sha512 => run::<Hmac<sha2::Sha512>>(key, data),
    }
}

impl Host for StepState {
    async fn hmac(
        &mut self,
        alg: HmacAlg,
        key: KeyRef,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, String>> {
        let key = match key {
            KeyRef::Inline(bytes) => bytes,
            KeyRef::Secret(name) => match self.grant.secrets.get(&name) {
                Some(value) => value.as_bytes().to_vec(),
                None => {
                    return Ok(Err(format!(
                        "secret {name:?} does not exist or is not granted to plugin {:?}",
                        self.call.plugin
                    )));
                }
            },
        };
        Ok(Ok(hmac(alg, &key, &data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_rfc_4231_test_case_2() {
        let mac = hmac(HmacAlg::Sha256, b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let mac = hmac(HmacAlg::Sha512, b"Jefe", b"what do ya want for nothing?");
        assert!(hex::encode(mac).starts_with("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd6"));
        let mac = hmac(HmacAlg::Sha1, b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }
}
