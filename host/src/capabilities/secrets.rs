//! `secrets.get`: a plugin reads only the secrets its grant names.

use super::StepState;
use crate::bindings::stephost::plugin::secrets::Host;

impl Host for StepState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.grant.secrets.get(&name).cloned())
    }
}
