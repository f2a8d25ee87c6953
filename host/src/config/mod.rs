//! The daemon's configuration: embedded defaults, overridden by an optional
//! `stephost.toml` and then by command-line flags. Unknown keys are an
//! error, so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod delivery;
pub mod store;

pub use delivery::{DeliveryConfig, MAX_DELAY_MS};
pub use store::{ClusterConfig, PostgresLocation, StoreLocation};

/// Component instances that may be live at once unless configured
/// otherwise (`max_concurrent_steps`): each running or HTTP-waiting step
/// call holds one. A call beyond it waits for a slot (see
/// `executor`) rather than failing.
pub const DEFAULT_MAX_INSTANCES: u32 = 1000;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with line and column.
        message: String,
    },
    /// The values are individually fine but do not fit together.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Upper bound of `max_concurrent_steps`: every slot reserves address
/// space for two linear memories of the largest plugin's size at start.
pub const MAX_CONCURRENT_STEPS: u32 = 10_000;

/// Everything the daemon can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Base URL partners use to reach `/v1/callbacks/...`; defaults to
    /// `http://{listen}`. Set it when the daemon sits behind a proxy.
    pub public_url: Option<String>,
    /// sled's state, and the compiled cache by default, whatever the store.
    pub data_dir: PathBuf,
    /// `"sled"` (the default: in `data_dir`), or the PostgreSQL database
    /// several daemons share: `postgres://user@host:port/database`.
    pub store: Option<String>,
    /// A file whose first line is the PostgreSQL password (when neither
    /// the URL nor `STEPHOST_STORE_PASSWORD` gives one).
    pub store_password_file: Option<PathBuf>,
    /// Connections kept open to PostgreSQL; every transition in flight
    /// holds one while it commits.
    pub store_pool_size: usize,
    /// Daemons sharing a PostgreSQL store (`[cluster]`).
    pub cluster: ClusterConfig,
    /// Where compiled components are cached (keyed by content hash and
    /// engine settings, checked against a digest on every read); default
    /// `<data_dir>/cache`. Several daemons may share one.
    pub compiled_cache_dir: Option<PathBuf>,
    /// How long a suspension waits when the step names no timeout.
    pub default_callback_timeout_ms: u64,
    /// Upper bound on any suspension's timeout: nothing waits forever.
    pub max_callback_timeout_ms: u64,
    /// Largest request body the API accepts (callbacks, executions).
    pub max_request_body_bytes: usize,
    /// Largest component accepted by `POST /v1/plugins`.
    pub max_plugin_bytes: usize,
    /// How long a request body may go without a byte arriving before the
    /// request is answered `408` (a client that stalls mid-body would
    /// otherwise hold its connection and its handler forever).
    pub request_body_timeout_ms: u64,
    /// Grace period for in-flight requests on shutdown.
    pub shutdown_grace_ms: u64,
    /// Step calls that may run at once (each holds a Wasm instance from a
    /// pool reserved at start, waiting for HTTP included); more wait for a
    /// free slot.
    pub max_concurrent_steps: u32,
    /// Internal address ranges plugins may reach anyway (CIDR, e.g.
    /// `10.20.0.0/16`); every other loopback, link-local, private or
    /// metadata address is refused after DNS resolution.
    pub egress_allow: Vec<String>,
    /// How outbound requests leave the machine (`[egress]`).
    pub egress: EgressConfig,
    /// Who may call the API.
    pub auth: AuthConfig,
    /// Limits applied to every plugin unless its own section says otherwise.
    pub limits: Limits,
    /// Named secrets; handed only to plugins granted them.
    pub secrets: BTreeMap<String, SecretSource>,
    /// Per-plugin settings: where to load it from, and what it may use.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Named workflows: ordered lists of steps.
    pub workflows: BTreeMap<String, WorkflowConfig>,
    /// Result delivery to clients that start executions with a `callback_url`.
    pub delivery: DeliveryConfig,
    /// How long ended executions are kept.
    pub retention: RetentionConfig,
}

/// `[retention]`: how long an ended execution is kept (with its status
/// log, documents, callbacks and deliveries) before it is removed; `0`
/// keeps them forever.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// After completing.
    pub completed_ms: u64,
    /// After failing (longer by default: someone may want to retry).
    pub failed_ms: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            completed_ms: 7 * 24 * 60 * 60 * 1000,
            failed_ms: 30 * 24 * 60 * 60 * 1000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            data_dir: PathBuf::from("./stephost-data"),
            store: None,
            store_password_file: None,
            store_pool_size: store::DEFAULT_POOL_SIZE,
            cluster: ClusterConfig::default(),
            compiled_cache_dir: None,
            default_callback_timeout_ms: 24 * 60 * 60 * 1000,
            max_callback_timeout_ms: 30 * 24 * 60 * 60 * 1000,
            max_request_body_bytes: 4 * 1024 * 1024,
            max_plugin_bytes: 128 * 1024 * 1024,
            request_body_timeout_ms: 30_000,
            shutdown_grace_ms: 10_000,
            max_concurrent_steps: DEFAULT_MAX_INSTANCES,
            egress_allow: Vec::new(),
            egress: EgressConfig::default(),
            auth: AuthConfig::default(),
            limits: Limits::default(),
            secrets: BTreeMap::new(),
            plugins: BTreeMap::new(),
            workflows: BTreeMap::new(),
            delivery: DeliveryConfig::default(),
            retention: RetentionConfig::default(),
        }
    }
}

/// `[egress]`: how plugin requests and result deliveries leave the machine.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    /// Send every outbound request through this HTTP proxy
    /// (`http://host:port`, credentials allowed). The address policy still
    /// applies to each request's target. Proxy variables in the daemon's
    /// environment (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`) are never used.
    pub proxy: Option<String>,
}

impl EgressConfig {
    /// The proxy URL, checked.
    fn proxy_url(&self) -> Result<Option<reqwest::Url>, ConfigError> {
        let Some(text) = &self.proxy else {
            return Ok(None);
        };
        let bad = |why: String| ConfigError::Invalid(format!("egress.proxy: {why}"));
        let url = reqwest::Url::parse(text).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!(
                "the proxy must be an http:// or https:// URL, not {}://",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("the proxy URL has no host".into()));
        }
        reqwest::Proxy::all(url.clone()).map_err(|e| bad(e.to_string()))?;
        Ok(Some(url))
    }
}

/// API authentication.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require API tokens on `/v1` (turn off only behind a gateway that
    /// authenticates for the daemon).
    pub enabled: bool,
    /// Require a token with `callbacks:send` on every callback, in addition
    /// to the secret in its URL (then neither alone is enough).
    pub callbacks_require_token: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            callbacks_require_token: false,
        }
    }
}

/// Resource limits of one plugin call.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory a plugin instance may grow to.
    pub memory_mb: u64,
    /// Wall-clock time one `run` or `resume` call may take, outbound HTTP
    /// included.
    pub time_limit_ms: u64,
    /// Largest outbound response body a plugin may receive.
    pub max_body_bytes: u64,
    /// Largest `state` a suspension may persist.
    pub max_state_bytes: usize,
    /// Largest document a step may output.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mb: 128,
            time_limit_ms: 60_000,
            max_body_bytes: 16 * 1024 * 1024,
            max_state_bytes: 1024 * 1024,
            max_output_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// The value itself (keep the file private).
    pub value: Option<String>,
    /// Or the name of an environment variable holding it.
    pub env: Option<String>,
}

/// Settings of one plugin.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// A component file to load under this name; absent for the built-in
    /// reference plugins.
    pub path: Option<PathBuf>,
    /// Hosts it may send requests to: `scheme://host[:port]` patterns,
    /// `*.` subdomain wildcards, `:*` for any port, `"*"` for any host.
    /// Absent: any host for the reference plugins, none for others.
    pub allowed_hosts: Option<Vec<String>>,
    /// Secrets this plugin may read and sign with.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Overrides of the default limits.
    pub memory_mb: Option<u64>,
    /// Overrides of the default call time limit.
    pub time_limit_ms: Option<u64>,
    /// Overrides of the default outbound response body cap.
    pub max_body_bytes: Option<u64>,
}

/// One named workflow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    /// The steps, run in order.
    pub steps: Vec<StepConfig>,
}

/// One step of a workflow.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// Step name, unique in the workflow; defaults to the plugin name.
    pub name: Option<String>,
    /// The plugin that runs it.
    pub plugin: String,
    /// The plugin's configuration, handed to it as JSON.
    #[serde(default)]
    pub config: serde_json::Value,
}

impl Config {
    /// Reads a `stephost.toml`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text and checks it.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: references between sections and sane values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.default_callback_timeout_ms == 0 || self.max_callback_timeout_ms == 0 {
            return invalid("callback timeouts must be greater than zero".into());
        }
        if self.default_callback_timeout_ms > self.max_callback_timeout_ms {
            return invalid("default_callback_timeout_ms exceeds max_callback_timeout_ms".into());
        }
        if !(1..=MAX_DELAY_MS).contains(&self.request_body_timeout_ms) {
            return invalid(format!(
                "request_body_timeout_ms must be between 1 and {MAX_DELAY_MS} (one day), got {}",
                self.request_body_timeout_ms
            ));
        }
        if !(1..=MAX_CONCURRENT_STEPS).contains(&self.max_concurrent_steps) {
            return invalid(format!(
                "max_concurrent_steps must be between 1 and {MAX_CONCURRENT_STEPS}, got {}",
                self.max_concurrent_steps
            ));
        }
        if self.limits.time_limit_ms == 0 || self.limits.memory_mb == 0 {
            return invalid("limits.time_limit_ms and limits.memory_mb must be > 0".into());
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return invalid(format!(
                "public_url must start with http:// or https://, got {url:?}"
            ));
        }
        for (name, secret) in &self.secrets {
            match (&secret.value, &secret.env) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return invalid(format!(
                        "secret {name:?} needs exactly one of `value` or `env`"
                    ));
                }
            }
        }
        for (plugin, pc) in &self.plugins {
            for s in &pc.secrets {
                if !self.secrets.contains_key(s) {
                    return invalid(format!("plugin {plugin:?} is granted unknown secret {s:?}"));
                }
            }
        }
        self.egress()?;
        for (plugin, pc) in &self.plugins {
            if let Some(hosts) = &pc.allowed_hosts {
                crate::egress::HostRules::parse(hosts)
                    .map_err(|e| ConfigError::Invalid(format!("plugin {plugin:?}: {e}")))?;
            }
        }
        for (name, wf) in &self.workflows {
            if wf.steps.is_empty() {
                return invalid(format!("workflow {name:?} has no steps"));
            }
        }
        self.delivery.validate().map_err(ConfigError::Invalid)?;
        if let Some(url) = &self.store {
            store::validate(url)?;
        }
        self.cluster.validate()?;
        if !(1..=1000).contains(&self.store_pool_size) {
            return invalid(format!(
                "store_pool_size must be between 1 and 1000, got {}",
                self.store_pool_size
            ));
        }
        Ok(())
    }

    /// Where durable state lives, with the PostgreSQL password looked up.
    pub fn store_location(&self) -> Result<StoreLocation, ConfigError> {
        store::resolve(
            self.store.as_deref(),
            &self.data_dir,
            self.store_password_file.as_deref(),
            self.store_pool_size,
        )
    }

    /// Where compiled components are cached.
    pub fn compiled_cache_dir(&self) -> PathBuf {
        self.compiled_cache_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("cache"))
    }

    /// The base of every callback URL handed to partners.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }

    /// Limits of one plugin: its overrides on top of the defaults.
    pub fn limits_for(&self, plugin: &str) -> Limits {
        let mut limits = self.limits.clone();
        if let Some(pc) = self.plugins.get(plugin) {
            if let Some(v) = pc.memory_mb {
                limits.memory_mb = v;
            }
            if let Some(v) = pc.time_limit_ms {
                limits.time_limit_ms = v;
            }
            if let Some(v) = pc.max_body_bytes {
                limits.max_body_bytes = v;
            }
        }
        limits
    }

    /// How the daemon reaches other hosts: the address policy and the
    /// operator's proxy.
    pub fn egress(&self) -> Result<crate::egress::Egress, ConfigError> {
        Ok(crate::egress::Egress::new(
            self.address_policy()?,
            self.egress.proxy_url()?,
        ))
    }

    /// The daemon's address policy.
    fn address_policy(&self) -> Result<crate::egress::AddressPolicy, ConfigError> {
        let allow = self
            .egress_allow
            .iter()
            .map(|range| {
                range.parse::<ipnet::IpNet>().or_else(|_| {
                    range
                        .parse::<std::net::IpAddr>()
                        .map(ipnet::IpNet::from)
                        .map_err(|_| {
                            ConfigError::Invalid(format!(
                                "egress_allow entry {range:?} is not an address range like 10.0.0.0/8"
                            ))
                        })
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::egress::AddressPolicy { allow })
    }

    /// Resolves the secrets granted to `plugin` to their values.
    pub fn secrets_for(&self, plugin: &str) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut out = BTreeMap::new();
        let Some(pc) = self.plugins.get(plugin) else {
            return Ok(out);
        };
        for name in &pc.secrets {
            let source = &self.secrets[name];
            let value = match (&source.value, &source.env) {
                (Some(v), _) => v.clone(),
                (None, Some(var)) => std::env::var(var).map_err(|_| {
                    ConfigError::Invalid(format!(
                        "secret {name:?} reads environment variable {var:?}, which is not set"
                    ))
                })?,
                (None, None) => unreachable!("validate() rejects a secret with no source"),
            };
            out.insert(name.clone(), value);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_embedded_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./stephost-data"));
        assert_eq!(c.public_url(), "http://127.0.0.1:8080");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Config::from_toml("listne = \"0.0.0.0:1\"").unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
        let err = Config::from_toml("[limits]\nmemroy_mb = 3").unwrap_err();
        assert!(err.to_string().contains("memroy_mb"), "{err}");
    }

    #[test]
    fn workflows_and_grants_parse() {
        let c = Config::from_toml(
            r#"
            [secrets]
            partner = { value = "s3cret" }
            [plugins.echo]
            secrets = ["partner"]
            memory_mb = 16
            [workflows.flow]
            steps = [ { plugin = "echo", config = { greeting = "hi" } }, { name = "second", plugin = "echo" } ]
            "#,
        )
        .unwrap();
        let wf = &c.workflows["flow"];
        assert_eq!(wf.steps.len(), 2);
        assert_eq!(wf.steps[0].config["greeting"], "hi");
        assert_eq!(c.limits_for("echo").memory_mb, 16);
        assert_eq!(c.secrets_for("echo").unwrap()["partner"], "s3cret");
        assert!(c.secrets_for("other").unwrap().is_empty());
    }

    #[test]
    fn max_concurrent_steps_is_bounded() {
        for (value, ok) in [(0, false), (1, true), (1000, true), (10_001, false)] {
            let config = Config {
                max_concurrent_steps: value,
                ..Default::default()
            };
            let result = config.validate();
            assert_eq!(result.is_ok(), ok, "{value}: {result:?}");
            if let Err(e) = result {
                assert!(e.to_string().contains("max_concurrent_steps"), "{e}");
            }
        }
    }

    #[test]
    fn request_body_timeout_is_bounded() {
        for (value, ok) in [
            (0, false),
            (1, true),
            (MAX_DELAY_MS, true),
            (MAX_DELAY_MS + 1, false),
        ] {
            let config = Config {
                request_body_timeout_ms: value,
                ..Default::default()
            };
            let result = config.validate();
            assert_eq!(result.is_ok(), ok, "{value}: {result:?}");
            if let Err(e) = result {
                assert!(e.to_string().contains("request_body_timeout_ms"), "{e}");
            }
        }
    }

    #[test]
    fn the_egress_proxy_is_checked() {
        let c =
            Config::from_toml("[egress]\nproxy = \"http://user:pw@proxy.internal:3128\"").unwrap();
        assert_eq!(
            c.egress.proxy.as_deref(),
            Some("http://user:pw@proxy.internal:3128")
        );
        for bad in ["socks5://proxy:1080", "not a url", "file:///tmp/x"] {
            let err = Config::from_toml(&format!("[egress]\nproxy = {bad:?}")).unwrap_err();
            assert!(err.to_string().contains("egress.proxy"), "{bad}: {err}");
        }
        let err = Config::from_toml("[egress]\nproxi = \"http://p:1\"").unwrap_err();
        assert!(err.to_string().contains("proxi"), "{err}");
    }

    #[test]
    fn grants_of_unknown_secrets_and_empty_workflows_are_errors() {
        let err = Config::from_toml("[plugins.echo]\nsecrets = [\"nope\"]").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = Config::from_toml("[workflows.w]\nsteps = []").unwrap_err();
        assert!(err.to_string().contains("no steps"), "{err}");
    }
}
