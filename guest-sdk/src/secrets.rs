//! Secrets the operator granted to this plugin.
//!
//! Prefer [`crate::signing`] with [`crate::signing::KeyRef::secret`] when a
//! secret is only needed to sign: then its value never enters the sandbox.

/// The value of secret `name`, or `None` if it does not exist or is not
/// granted to this plugin.
pub fn get(name: &str) -> Option<String> {
    crate::bindings::stephost::plugin::secrets::get(name)
}
