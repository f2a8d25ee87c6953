//! Callback registration: the durable registrar and its derived tickets.

use super::*;
use crate::model::CallbackState;

/// The durable [`Registrar`]: a callback is in the store, flushed, before
/// its URL reaches the plugin.
///
/// A step run that a crash interrupted before its `suspend` was durable is
/// re-run with the same step-run-id; its registrations then get the very
/// tickets the interrupted run got (same correlation id, same URL), so the
/// partner sees the same callback URL again, and a callback it already
/// sent (and got `202` for) is delivered rather than stranded on a URL
/// nobody waits on. Tickets are derived from a secret of the data dir, the
/// step-run-id, the attempt and the registration's position in the call.
pub struct DurableRegistrar {
    store: Arc<dyn Store>,
    public_url: std::sync::RwLock<String>,
    /// Records created before this time come from an earlier process.
    boot_ms: u64,
    key: std::sync::OnceLock<Vec<u8>>,
}

/// Registrations per step attempt that get reproducible tickets; any
/// further ones get random tickets.
const REPRODUCIBLE_REGISTRATIONS: u32 = 64;

impl DurableRegistrar {
    /// A registrar handing out URLs under `public_url`.
    pub fn new(store: Arc<dyn Store>, public_url: String) -> Self {
        Self {
            store,
            public_url: std::sync::RwLock::new(public_url),
            boot_ms: now_ms(),
            key: std::sync::OnceLock::new(),
        }
    }

    async fn key(&self) -> Result<&[u8], StoreError> {
        if let Some(key) = self.key.get() {
            return Ok(key);
        }
        let key = self.store.node_secret("callback-tickets").await?;
        Ok(self.key.get_or_init(|| key))
    }

    /// The `n`-th ticket (correlation id, URL secret) of a step attempt.
    fn derived_ticket(
        &self,
        key: &[u8],
        call: &CallInfo,
        attempt: u32,
        n: u32,
    ) -> (String, String) {
        let mac = |data: &str| {
            crate::capabilities::signing::hmac(
                bindings::stephost::plugin::signing::HmacAlg::Sha256,
                key,
                data.as_bytes(),
            )
        };
        let digest = mac(&format!(
            "correlation-id\n{}\n{}\n{attempt}\n{n}",
            call.execution_id, call.step_run_id
        ));
        // Under a time-ordered execution id, the ticket is time-ordered
        // too (its timestamp, the rest from the digest), for the same
        // locality; under an older random one it is random as before, so
        // a re-run after an upgrade derives the ticket it handed out.
        let created = uuid::Uuid::parse_str(&call.execution_id)
            .ok()
            .filter(|u| u.get_version_num() == 7)
            .and_then(|u| u.get_timestamp())
            .map(|t| t.to_unix());
        let id = match created {
            Some((secs, nanos)) => {
                let mut rest = [0u8; 10];
                rest.copy_from_slice(&digest[..10]);
                let ms = secs * 1000 + u64::from(nanos / 1_000_000);
                uuid::Builder::from_unix_timestamp_millis(ms, &rest).into_uuid()
            }
            None => {
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(&digest[..16]);
                uuid::Builder::from_random_bytes(bytes).into_uuid()
            }
        }
        .to_string();
        let secret = hex::encode(mac(&format!("callback-secret\n{id}")));
        (id, secret)
    }

    /// Changes the base URL (once the listener's port is known).
    pub fn set_public_url(&self, url: String) {
        *self.public_url.write().expect("lock poisoned") = url;
    }
}

impl Registrar for DurableRegistrar {
    fn register<'a>(
        &'a self,
        call: &'a CallInfo,
        require_token: bool,
    ) -> crate::store::BoxFuture<'a, Result<bindings::stephost::plugin::callbacks::Ticket, String>>
    {
        Box::pin(async move {
            let fail = |e: StoreError| format!("could not register the callback: {e}");
            let key = self.key().await.map_err(fail)?;
            // The step's own run (not a describe call) gets tickets that
            // a re-run after a crash can derive again.
            let attempt = (!call.step_run_id.is_empty()).then_some(call.attempt);
            let mut chosen = None;
            for n in 0..REPRODUCIBLE_REGISTRATIONS {
                let Some(attempt) = attempt else { break };
                let (correlation_id, secret) = self.derived_ticket(key, call, attempt, n);
                let Some(rec) = self.store.callback(&correlation_id).await.map_err(fail)? else {
                    chosen = Some((correlation_id, secret, true));
                    break;
                };
                // Handed out by an earlier process to this very step attempt
                // and not waited on yet: the interrupted run's ticket.
                let reusable = rec.execution_id == call.execution_id
                    && rec.step_run_id == call.step_run_id
                    && rec.require_token == require_token
                    && rec.created_ms < self.boot_ms
                    && rec.secret_sha256 == sha256_hex(secret.as_bytes())
                    && matches!(
                        rec.state,
                        CallbackState::Registered | CallbackState::Received { .. }
                    );
                if reusable {
                    chosen = Some((correlation_id, secret, false));
                    break;
                }
            }
            let (correlation_id, secret, fresh) =
                chosen.unwrap_or_else(|| (new_id(), hex::encode(rand::random::<[u8; 32]>()), true));
            if fresh {
                let rec = CallbackRecord {
                    correlation_id: correlation_id.clone(),
                    version: 1,
                    execution_id: call.execution_id.clone(),
                    step_run_id: call.step_run_id.clone(),
                    attempt,
                    secret_sha256: sha256_hex(secret.as_bytes()),
                    require_token,
                    state: CallbackState::Registered,
                    created_ms: now_ms(),
                };
                self.store
                    .apply(&Change {
                        callbacks: vec![rec],
                        ..Default::default()
                    })
                    .await
                    .map_err(fail)?;
            } else {
                tracing::info!(execution_id = %call.execution_id, step = %call.step, %correlation_id, "re-run step gets the callback ticket of its interrupted run");
            }
            self.store.flush().await.map_err(fail)?;
            let base = self.public_url.read().expect("lock poisoned").clone();
            Ok(bindings::stephost::plugin::callbacks::Ticket {
                url: format!("{base}/v1/callbacks/{correlation_id}?secret={secret}"),
                correlation_id,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(execution_id: &str) -> CallInfo {
        CallInfo {
            plugin: "p".into(),
            execution_id: execution_id.into(),
            step: "s".into(),
            step_run_id: "run".into(),
            attempt: 1,
            deadline: Instant::now(),
        }
    }

    fn registrar() -> DurableRegistrar {
        let store = Arc::new(crate::store::MemoryStore::new());
        DurableRegistrar::new(store, "http://x".into())
    }

    #[test]
    fn execution_ids_are_time_ordered_uuids() {
        let ids: Vec<String> = (0..100).map(|_| new_execution_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "later ids sort after earlier ones");
        for id in &ids {
            assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
        }
    }

    #[tokio::test]
    async fn tickets_are_derived_again_and_share_their_executions_time_order() {
        let registrar = registrar();
        let key = registrar.key().await.unwrap().to_vec();
        let exec_id = new_execution_id();
        let (cid, secret) = registrar.derived_ticket(&key, &call(&exec_id), 1, 0);
        // A re-run derives the same ticket; another attempt or index not.
        assert_eq!(
            registrar.derived_ticket(&key, &call(&exec_id), 1, 0),
            (cid.clone(), secret.clone())
        );
        assert_ne!(registrar.derived_ticket(&key, &call(&exec_id), 2, 0).0, cid);
        assert_ne!(registrar.derived_ticket(&key, &call(&exec_id), 1, 1).0, cid);
        let ticket = uuid::Uuid::parse_str(&cid).unwrap();
        let exec = uuid::Uuid::parse_str(&exec_id).unwrap();
        assert_eq!(ticket.get_version_num(), 7);
        assert_eq!(ticket.get_timestamp(), exec.get_timestamp());
        assert_eq!(secret.len(), 64);
    }

    #[tokio::test]
    async fn tickets_of_executions_with_random_ids_are_derived_as_before() {
        // Executions written before ids were time-ordered keep the ticket
        // derivation they were registered with, so a re-run after an
        // upgrade hands out the same ticket.
        let registrar = registrar();
        let key = registrar.key().await.unwrap().to_vec();
        let exec_id = uuid::Uuid::new_v4().to_string();
        let (cid, _) = registrar.derived_ticket(&key, &call(&exec_id), 1, 0);
        use hmac::Mac as _;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("correlation-id\n{exec_id}\nrun\n1\n0").as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        assert_eq!(
            cid,
            uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .to_string()
        );
    }
}
