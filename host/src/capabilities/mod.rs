//! The host side of every WIT import, one module per capability, all
//! implemented on [`StepState`], the data of the fresh wasmtime store each
//! step call gets. A plugin can reach nothing the state does not hold: its
//! own grant, its own call's identity, and the shared services.

pub mod callbacks;
pub mod http;
pub mod log;
pub mod secrets;
pub mod signing;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::config::Limits;

pub use callbacks::Registrar;
pub use http::RecordedRequest;

/// What the operator granted one plugin.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// Secret values by name.
    pub secrets: BTreeMap<String, String>,
    /// Resource limits.
    pub limits: Limits,
    /// Hosts it may send requests to.
    pub hosts: crate::egress::HostRules,
}

impl Grant {
    /// Replaces every granted secret value in `text` with `****`, so a
    /// plugin cannot leak a secret through logs, errors or recorded requests.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for value in self.secrets.values() {
            if !value.is_empty() && out.contains(value.as_str()) {
                out = out.replace(value.as_str(), "****");
            }
        }
        out
    }
}

/// Identity of one step call, for logs and callback registration.
#[derive(Debug, Clone)]
pub struct CallInfo {
    /// Plugin name.
    pub plugin: String,
    /// Execution id.
    pub execution_id: String,
    /// Step name.
    pub step: String,
    /// The step run's idempotency key.
    pub step_run_id: String,
    /// Which attempt of the step this is (1 for the first run).
    pub attempt: u32,
    /// When the call's time limit runs out.
    pub deadline: Instant,
}

/// Services shared by all calls.
#[derive(Clone)]
pub struct HostServices {
    /// Outbound HTTP client validating TLS.
    pub http: reqwest::Client,
    /// Outbound HTTP client for partners with self-signed certificates.
    pub http_insecure: reqwest::Client,
    /// Where callbacks are registered.
    pub registrar: Arc<dyn Registrar>,
    /// Which addresses plugins may reach.
    pub policy: Arc<crate::egress::AddressPolicy>,
    /// `stephost run --dry-run`: record requests, send none.
    pub dry_run: bool,
    /// `stephost run`: every request of every call, as it happens.
    pub request_sink: Option<RequestSink>,
}

/// Receives `(execution id, request)` for every outbound request.
pub type RequestSink = tokio::sync::mpsc::UnboundedSender<(String, RecordedRequest)>;

impl std::fmt::Debug for HostServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostServices").finish_non_exhaustive()
    }
}

impl HostServices {
    /// Builds the HTTP clients around a registrar; both resolve names
    /// through the address policy.
    pub fn new(
        registrar: Arc<dyn Registrar>,
        policy: Arc<crate::egress::AddressPolicy>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        // Redirects are not followed: a plugin sees the 3xx and decides, and
        // a partner cannot bounce a request to a host the plugin never named.
        let build = |insecure: bool| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .danger_accept_invalid_certs(insecure)
                .dns_resolver(Arc::new(crate::egress::PolicyResolver::new(policy.clone())))
                .user_agent(concat!("stephost/", env!("CARGO_PKG_VERSION")))
                .build()
                .context("build the outbound HTTP client")
        };
        Ok(Self {
            http: build(false)?,
            http_insecure: build(true)?,
            registrar,
            policy,
            dry_run: false,
            request_sink: None,
        })
    }
}

/// Memory and table limits of one call; remembers whether it refused a
/// growth, so a resulting trap is reported as `memory-limit`.
#[derive(Debug)]
pub struct CallLimiter {
    /// Bytes of linear memory allowed.
    pub memory_bytes: usize,
    /// Set when a memory growth was refused.
    pub memory_exceeded: bool,
}

impl wasmtime::ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// The data of one step call's store.
pub struct StepState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: CallLimiter,
    pub(crate) grant: Arc<Grant>,
    pub(crate) call: CallInfo,
    pub(crate) services: HostServices,
    /// Every outbound request of this call, secrets masked.
    pub(crate) requests: Vec<RecordedRequest>,
    /// Set by the epoch callback when the call ran out of time.
    pub(crate) timed_out: bool,
}

impl StepState {
    /// State for one call: an empty WASI context (no files, environment or
    /// sockets; clocks and random only).
    pub fn new(grant: Arc<Grant>, call: CallInfo, services: HostServices) -> Self {
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let memory_bytes = usize::try_from(grant.limits.memory_mb.saturating_mul(1024 * 1024))
            .unwrap_or(usize::MAX);
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: CallLimiter {
                memory_bytes,
                memory_exceeded: false,
            },
            grant,
            call,
            services,
            requests: Vec::new(),
            timed_out: false,
        }
    }
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl crate::bindings::stephost::plugin::types::Host for StepState {}
