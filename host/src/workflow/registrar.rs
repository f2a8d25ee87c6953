//! Callback registration: tickets derived from what is already durable,
//! so that registering a callback writes nothing.
//!
//! A step's `n`-th registration in a call gets a ticket (correlation id,
//! URL secret) that is an HMAC, under a secret of the data dir, of the
//! execution, its step run, attempt and version (the record the call runs
//! on) and `n`. All of those are durable before the call starts (the start
//! and every step boundary are flushed), so:
//!
//! - a callback that arrives before the step suspends is admitted by
//!   deriving the ticket again: its URL names the execution and the
//!   ticket's position (`execution=…&ticket=<version>.<n>`), the secret
//!   must match, and only then is anything written (the early callback,
//!   flushed before its `202`);
//! - a step re-run after a crash runs on the same stored version, so its
//!   registrations get the very tickets the interrupted run handed out,
//!   and a callback the partner already sent (and got `202` for) is the
//!   one its `suspend` finds;
//! - the record itself is written by the `suspend` that waits on it (or by
//!   the early callback), in the write that change makes anyway.
//!
//! What cannot be derived is stored as before, flushed before the URL is
//! returned: registrations in `describe` (no step run), and past the
//! 64th in one call. Tickets handed out by a build that stored every
//! registration are found by their stored records.

use super::*;
use crate::capabilities::Registration;
use crate::model::CallbackState;

/// The durable [`Registrar`]: a ticket it returns can be called back on
/// at once, and across a crash.
pub struct DurableRegistrar {
    store: Arc<dyn Store>,
    public_url: std::sync::RwLock<String>,
    /// Records created before this time come from an earlier process.
    boot_ms: u64,
    key: TicketKey,
}

/// The data dir's key tickets are derived under, read once.
#[derive(Default)]
pub(super) struct TicketKey(std::sync::OnceLock<Vec<u8>>);

impl TicketKey {
    pub(super) async fn get(&self, store: &dyn Store) -> Result<&[u8], StoreError> {
        if let Some(key) = self.0.get() {
            return Ok(key);
        }
        let key = store.node_secret(TICKET_KEY).await?;
        Ok(self.0.get_or_init(|| key))
    }
}

/// Registrations per step call whose tickets are derived; any further
/// ones get random tickets, stored.
pub(super) const DERIVED_REGISTRATIONS: u32 = 64;

/// The name of the data dir's secret tickets are derived under.
pub const TICKET_KEY: &str = "callback-tickets";

/// Where a derived ticket comes from, as its URL names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locator {
    /// The execution.
    pub execution_id: String,
    /// The execution's version the registering call ran on.
    pub version: u64,
    /// The registration's position in that call.
    pub n: u32,
}

impl Locator {
    /// Reads the `execution` and `ticket` (`<version>.<n>`) values of a
    /// callback URL; `None` when either is missing or malformed.
    pub fn parse(execution: Option<&str>, ticket: Option<&str>) -> Option<Self> {
        let (version, n) = ticket?.split_once('.')?;
        Some(Self {
            execution_id: execution?.to_owned(),
            version: version.parse().ok()?,
            n: n.parse().ok().filter(|n| *n < DERIVED_REGISTRATIONS)?,
        })
    }
}

/// HMAC-SHA256 under the ticket key.
fn mac(key: &[u8], data: &str) -> Vec<u8> {
    crate::capabilities::signing::hmac(
        bindings::stephost::plugin::signing::HmacAlg::Sha256,
        key,
        data.as_bytes(),
    )
}

/// A correlation id from a digest: under a time-ordered execution id it is
/// time-ordered too (its timestamp, the rest from the digest), for the
/// store's locality; under an older random one it is random.
fn ticket_id(execution_id: &str, digest: &[u8]) -> String {
    let created = uuid::Uuid::parse_str(execution_id)
        .ok()
        .filter(|u| u.get_version_num() == 7)
        .and_then(|u| u.get_timestamp())
        .map(|t| t.to_unix());
    match created {
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
    .to_string()
}

/// The ticket (correlation id, URL secret) of the `n`-th registration of
/// the call on `version` of the execution, for this step run and attempt.
/// Whether a token is required is part of it, so a URL cannot be turned
/// into one that needs none.
pub(super) fn derived_ticket(
    key: &[u8],
    execution_id: &str,
    step_run_id: &str,
    attempt: u32,
    at: (u64, u32),
    require_token: bool,
) -> (String, String) {
    let (version, n) = at;
    let digest = mac(
        key,
        &format!(
            "ticket\n{execution_id}\n{step_run_id}\n{attempt}\n{version}\n{n}\n{}",
            u8::from(require_token)
        ),
    );
    let id = ticket_id(execution_id, &digest);
    let secret = hex::encode(mac(key, &format!("callback-secret\n{id}")));
    (id, secret)
}

/// The ticket a build that stored every registration handed out for the
/// `n`-th free position of a step attempt.
fn stored_era_ticket(key: &[u8], call: &CallInfo, n: u32) -> (String, String) {
    let digest = mac(
        key,
        &format!(
            "correlation-id\n{}\n{}\n{}\n{n}",
            call.execution_id, call.step_run_id, call.attempt
        ),
    );
    let id = ticket_id(&call.execution_id, &digest);
    let secret = hex::encode(mac(key, &format!("callback-secret\n{id}")));
    (id, secret)
}

impl DurableRegistrar {
    /// A registrar handing out URLs under `public_url`.
    pub fn new(store: Arc<dyn Store>, public_url: String) -> Self {
        Self {
            store,
            public_url: std::sync::RwLock::new(public_url),
            boot_ms: now_ms(),
            key: TicketKey::default(),
        }
    }

    async fn key(&self) -> Result<&[u8], StoreError> {
        self.key.get(self.store.as_ref()).await
    }

    /// Changes the base URL (once the listener's port is known).
    pub fn set_public_url(&self, url: String) {
        *self.public_url.write().expect("lock poisoned") = url;
    }

    fn base(&self) -> String {
        self.public_url.read().expect("lock poisoned").clone()
    }

    /// A call re-run on a record an earlier process wrote may be one a
    /// build that stored every registration made: the ticket it handed
    /// out for this position, if its record says so.
    async fn stored_era(
        &self,
        key: &[u8],
        call: &CallInfo,
        require_token: bool,
        n: u32,
    ) -> Result<Option<bindings::stephost::plugin::callbacks::Ticket>, StoreError> {
        let (correlation_id, secret) = stored_era_ticket(key, call, n);
        let Some(rec) = self.store.callback(&correlation_id).await? else {
            return Ok(None);
        };
        let reusable = rec.execution_id == call.execution_id
            && rec.step_run_id == call.step_run_id
            && rec.require_token == require_token
            && rec.created_ms < self.boot_ms
            && rec.secret_sha256 == sha256_hex(secret.as_bytes())
            && matches!(
                rec.state,
                CallbackState::Registered | CallbackState::Received { .. }
            );
        if !reusable {
            return Ok(None);
        }
        tracing::info!(execution_id = %call.execution_id, step = %call.step, %correlation_id, "re-run step gets the stored callback ticket of its interrupted run");
        Ok(Some(bindings::stephost::plugin::callbacks::Ticket {
            url: format!(
                "{}/v1/callbacks/{correlation_id}?secret={secret}",
                self.base()
            ),
            correlation_id,
        }))
    }
}

impl Registrar for DurableRegistrar {
    fn register<'a>(
        &'a self,
        call: &'a CallInfo,
        require_token: bool,
        n: u32,
    ) -> crate::store::BoxFuture<'a, Result<Registration, String>> {
        Box::pin(async move {
            let fail = |e: StoreError| format!("could not register the callback: {e}");
            let key = self.key().await.map_err(fail)?;
            // A step's own run (not a describe call) gets tickets that a
            // re-run after a crash derives again.
            if !call.step_run_id.is_empty() && n < DERIVED_REGISTRATIONS {
                if call.record_ms < self.boot_ms
                    && let Some(ticket) = self
                        .stored_era(key, call, require_token, n)
                        .await
                        .map_err(fail)?
                {
                    return Ok(Registration {
                        ticket,
                        unstored: None,
                    });
                }
                let (correlation_id, secret) = derived_ticket(
                    key,
                    &call.execution_id,
                    &call.step_run_id,
                    call.attempt,
                    (call.version, n),
                    require_token,
                );
                let record = CallbackRecord {
                    correlation_id: correlation_id.clone(),
                    version: 0,
                    execution_id: call.execution_id.clone(),
                    step_run_id: call.step_run_id.clone(),
                    attempt: Some(call.attempt),
                    secret_sha256: sha256_hex(secret.as_bytes()),
                    require_token,
                    state: CallbackState::Registered,
                    created_ms: now_ms(),
                };
                let url = format!(
                    "{}/v1/callbacks/{correlation_id}?secret={secret}&execution={}&ticket={}.{n}",
                    self.base(),
                    call.execution_id,
                    call.version
                );
                return Ok(Registration {
                    ticket: bindings::stephost::plugin::callbacks::Ticket {
                        url,
                        correlation_id,
                    },
                    unstored: Some(record),
                });
            }
            let correlation_id = new_id();
            let secret = hex::encode(rand::random::<[u8; 32]>());
            let rec = CallbackRecord {
                correlation_id: correlation_id.clone(),
                version: 1,
                execution_id: call.execution_id.clone(),
                step_run_id: call.step_run_id.clone(),
                attempt: (!call.step_run_id.is_empty()).then_some(call.attempt),
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
            self.store.flush().await.map_err(fail)?;
            Ok(Registration {
                ticket: bindings::stephost::plugin::callbacks::Ticket {
                    url: format!(
                        "{}/v1/callbacks/{correlation_id}?secret={secret}",
                        self.base()
                    ),
                    correlation_id,
                },
                unstored: None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CallbackStore as _, ExecutionStore as _};

    fn call(execution_id: &str) -> CallInfo {
        CallInfo {
            plugin: "p".into(),
            execution_id: execution_id.into(),
            step: "s".into(),
            step_run_id: "run".into(),
            attempt: 1,
            version: 3,
            record_ms: now_ms(),
            deadline: Instant::now(),
        }
    }

    fn registrar() -> (Arc<crate::store::MemoryStore>, DurableRegistrar) {
        let store = Arc::new(crate::store::MemoryStore::new());
        let registrar = DurableRegistrar::new(store.clone(), "http://x".into());
        (store, registrar)
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
        let (_, registrar) = registrar();
        let key = registrar.key().await.unwrap().to_vec();
        let exec_id = new_execution_id();
        let derive = |attempt, at, token| derived_ticket(&key, &exec_id, "run", attempt, at, token);
        let (cid, secret) = derive(1, (3, 0), false);
        // A re-run derives the same ticket; another attempt, version,
        // position or token requirement not.
        assert_eq!(derive(1, (3, 0), false), (cid.clone(), secret.clone()));
        assert_ne!(derive(2, (3, 0), false).0, cid);
        assert_ne!(derive(1, (4, 0), false).0, cid);
        assert_ne!(derive(1, (3, 1), false).0, cid);
        assert_ne!(derive(1, (3, 0), true).0, cid);
        let ticket = uuid::Uuid::parse_str(&cid).unwrap();
        let exec = uuid::Uuid::parse_str(&exec_id).unwrap();
        assert_eq!(ticket.get_version_num(), 7);
        assert_eq!(ticket.get_timestamp(), exec.get_timestamp());
        assert_eq!(secret.len(), 64);
        // Under a random (older) execution id the ticket is random too.
        let old = uuid::Uuid::new_v4().to_string();
        let (cid, _) = derived_ticket(&key, &old, "run", 1, (3, 0), false);
        assert_eq!(uuid::Uuid::parse_str(&cid).unwrap().get_version_num(), 4);
    }

    #[tokio::test]
    async fn a_step_registration_writes_nothing_and_its_url_locates_the_ticket() {
        let (store, registrar) = registrar();
        let exec_id = new_execution_id();
        let before = crate::store::StatsStore::write_stats(store.as_ref());
        let first = registrar.register(&call(&exec_id), true, 0).await.unwrap();
        let second = registrar.register(&call(&exec_id), false, 1).await.unwrap();
        let after = crate::store::StatsStore::write_stats(store.as_ref());
        assert_eq!(after.changes, before.changes, "no change applied");
        assert_eq!(after.flush_requests, before.flush_requests, "no flush");
        assert_ne!(first.ticket.correlation_id, second.ticket.correlation_id);
        let rec = first.unstored.expect("derived, not stored");
        assert_eq!(rec.version, 0);
        assert_eq!(rec.state, CallbackState::Registered);
        assert!(rec.require_token);
        assert_eq!(rec.attempt, Some(1));
        assert!(store.callback(&rec.correlation_id).await.unwrap().is_none());
        let url = &first.ticket.url;
        let query = url.split_once('?').unwrap().1;
        let value = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
        };
        let locator = Locator::parse(value("execution").as_deref(), value("ticket").as_deref());
        assert_eq!(
            locator,
            Some(Locator {
                execution_id: exec_id.clone(),
                version: 3,
                n: 0
            })
        );
        let key = registrar.key().await.unwrap();
        let (cid, secret) = derived_ticket(key, &exec_id, "run", 1, (3, 0), true);
        assert_eq!(cid, rec.correlation_id);
        assert_eq!(value("secret"), Some(secret.clone()));
        assert_eq!(rec.secret_sha256, sha256_hex(secret.as_bytes()));
        // The same call made again (a re-run) gets the same ticket.
        let again = registrar.register(&call(&exec_id), true, 0).await.unwrap();
        assert_eq!(again.ticket.url, first.ticket.url);
    }

    #[test]
    fn a_malformed_locator_is_none() {
        for (e, t) in [
            (None, Some("1.0")),
            (Some("e"), None),
            (Some("e"), Some("1")),
            (Some("e"), Some("x.0")),
            (Some("e"), Some("1.64")),
            (Some("e"), Some("1.-1")),
        ] {
            assert_eq!(Locator::parse(e, t), None, "{e:?} {t:?}");
        }
    }

    #[tokio::test]
    async fn registrations_that_cannot_be_derived_are_stored_and_flushed() {
        let (store, registrar) = registrar();
        let exec_id = new_execution_id();
        let mut describe = call(&exec_id);
        describe.step_run_id.clear();
        for (info, n) in [(describe, 0), (call(&exec_id), DERIVED_REGISTRATIONS)] {
            let before = crate::store::StatsStore::write_stats(store.as_ref());
            let reg = registrar.register(&info, false, n).await.unwrap();
            assert!(reg.unstored.is_none());
            let rec = store.callback(&reg.ticket.correlation_id).await.unwrap();
            assert_eq!(rec.unwrap().state, CallbackState::Registered);
            let after = crate::store::StatsStore::write_stats(store.as_ref());
            assert_eq!(after.flush_requests, before.flush_requests + 1);
            assert!(!reg.ticket.url.contains("execution="));
        }
    }

    #[tokio::test]
    async fn a_rerun_gets_the_ticket_an_older_build_stored_for_its_interrupted_run() {
        let (store, registrar) = registrar();
        let key = registrar.key().await.unwrap().to_vec();
        let exec_id = new_execution_id();
        let mut info = call(&exec_id);
        info.record_ms = registrar.boot_ms - 1;
        let (cid, secret) = stored_era_ticket(&key, &info, 0);
        // What a build that stored registrations left: the early callback
        // a partner sent on it, before a crash.
        let rec = CallbackRecord {
            correlation_id: cid.clone(),
            version: 2,
            execution_id: exec_id.clone(),
            step_run_id: "run".into(),
            attempt: Some(1),
            secret_sha256: sha256_hex(secret.as_bytes()),
            require_token: false,
            state: CallbackState::Received {
                callback: crate::model::ReceivedCallback {
                    method: "POST".into(),
                    headers: vec![],
                    body: b"{}".to_vec(),
                    received_ms: 1,
                },
            },
            created_ms: registrar.boot_ms - 1,
        };
        store
            .apply(&Change {
                callbacks: vec![CallbackRecord {
                    version: 1,
                    ..rec.clone()
                }],
                ..Default::default()
            })
            .await
            .unwrap();
        store
            .apply(&Change {
                callbacks: vec![rec],
                ..Default::default()
            })
            .await
            .unwrap();
        let reg = registrar.register(&info, false, 0).await.unwrap();
        assert_eq!(reg.ticket.correlation_id, cid);
        assert!(reg.unstored.is_none());
        assert_eq!(
            reg.ticket.url,
            format!("http://x/v1/callbacks/{cid}?secret={secret}")
        );
        // A call on a record this process wrote derives, reads nothing.
        let reg = registrar.register(&call(&exec_id), false, 0).await.unwrap();
        assert_ne!(reg.ticket.correlation_id, cid);
    }
}
