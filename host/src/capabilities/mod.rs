//! The host side of every WIT import, one module per capability, all
//! implemented on [`StepState`], the data of the fresh wasmtime store each
//! step call gets. A plugin can reach nothing the state does not hold: its
//! own grant, its own call's identity, and the shared services.

pub mod callbacks;
pub mod http;
pub mod log;
pub mod secrets;
pub mod signing;
pub mod stderr;

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use crate::grant::Grant;
pub use callbacks::{Registrar, Registration};
pub use http::{HttpHooks, RecordedRequest};

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
    /// The execution's version the call runs on (0 outside an execution).
    /// A re-run after a crash runs on the same stored version, so tickets
    /// derived from it are handed out again the same.
    pub version: u64,
    /// When that version was written (ms since the epoch; 0 outside an
    /// execution): older than the process means a re-run of a call an
    /// earlier process may have made.
    pub record_ms: u64,
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
    /// Which addresses plugins may reach, and through which proxy.
    pub egress: Arc<crate::egress::Egress>,
    /// Whether requests are sent, and who watches them.
    pub hooks: Arc<dyn HttpHooks>,
}

impl std::fmt::Debug for HostServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostServices").finish_non_exhaustive()
    }
}

impl HostServices {
    /// Builds the HTTP clients around a registrar; both go out under
    /// `egress` (address policy, no redirects, no proxy but the operator's).
    pub fn new(
        registrar: Arc<dyn Registrar>,
        egress: Arc<crate::egress::Egress>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let build = |insecure: bool| {
            egress
                .client_builder()
                .danger_accept_invalid_certs(insecure)
                .build()
                .context("build the outbound HTTP client")
        };
        Ok(Self {
            http: build(false)?,
            http_insecure: build(true)?,
            registrar,
            egress,
            hooks: Arc::new(http::SendAll),
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
    /// Callback registrations made so far in this call: the next one's
    /// position, from which its ticket is derived.
    pub(crate) registrations: u32,
    /// The registrations of this call that were not stored (their tickets
    /// are derived), as the records a `suspend` on them creates.
    pub(crate) unstored: Vec<crate::model::CallbackRecord>,
    /// Set by the epoch callback when the call ran out of time.
    pub(crate) timed_out: bool,
    /// What the plugin wrote to stderr last, for a trap's failure text.
    pub(crate) stderr: stderr::StderrTail,
}

impl StepState {
    /// State for one call: an empty WASI context (no files, environment or
    /// sockets; clocks and random only).
    pub fn new(grant: Arc<Grant>, call: CallInfo, services: HostServices) -> Self {
        let stderr = stderr::StderrTail::default();
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stderr(stderr.clone())
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
            registrations: 0,
            unstored: Vec::new(),
            timed_out: false,
            stderr,
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
