//! Where plugins may send requests. Two independent checks, both of which a
//! request must pass:
//!
//! - the plugin's **host grant** (`allowed_hosts`): which scheme, host and
//!   port the plugin may name in a URL;
//! - the daemon's **address policy**: whatever a plugin names, the address
//!   it resolves to must not be loopback, link-local (cloud metadata lives
//!   there), private, shared or otherwise internal, unless the operator
//!   lifted that for a range (`egress_allow`).
//!
//! The address check runs inside the HTTP client's resolver, on the very
//! addresses the client then connects to, so a name that resolves to a
//! public address when checked and a private one when used (DNS rebinding)
//! cannot slip through. URLs with a literal IP are checked before sending.
//!
//! Both outbound clients (plugin HTTP and result delivery) are built by
//! [`Egress::client_builder`], which never takes a proxy from the
//! environment: through a proxy the resolver would only ever see the
//! proxy's own address, and the policy would not apply to the target. An
//! operator's explicit proxy (`[egress] proxy`) is used, and then
//! [`Egress::check_target`] resolves and checks the target itself before
//! the request is handed to the proxy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// The operator's address policy.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    /// Ranges exempted from the internal-address ban.
    pub allow: Vec<IpNet>,
}

/// Why an address is refused, for the error text.
fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal_v4(v4);
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if first == 0x0064 && v6.segments()[1] == 0xff9b {
                // NAT64 can reach any IPv4 address, internal ones included.
                Some("NAT64")
            } else {
                None
            }
        }
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_link_local() {
        Some("link-local (cloud metadata)")
    } else if ip.is_private() {
        Some("private")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("broadcast, multicast or reserved")
    } else if a == 192 && b == 0 && ip.octets()[2] == 0 {
        Some("IETF protocol assignments")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("benchmarking")
    } else {
        None
    }
}

impl AddressPolicy {
    /// `Ok` if a plugin may connect to `ip`; otherwise why not.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        let Some(kind) = internal_kind(ip) else {
            return Ok(());
        };
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        if self
            .allow
            .iter()
            .any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
        {
            return Ok(());
        }
        Err(format!(
            "address {ip} is {kind}; the daemon refuses internal addresses unless an operator allows the range (egress_allow)"
        ))
    }
}

/// The address a URL names literally (`http://10.0.0.1/`, `http://[::1]/`),
/// which never reaches a resolver and so must be checked on its own.
pub fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// A refused resolution, recognisable in the HTTP client's error chain.
#[derive(Debug, thiserror::Error)]
#[error("egress denied: {0}")]
pub struct EgressDenied(pub String);

/// Why an outbound request got no answer, read off the client's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestFailure {
    /// The request's time limit ran out.
    Timeout,
    /// The address policy refused the target ([`EgressDenied`]'s text).
    Denied(String),
    /// Anything else (refused, reset, TLS): the error and every cause in
    /// its chain, since the top level alone only says "error sending
    /// request".
    Connection(String),
}

/// Classifies an outbound request's error for plugins and deliveries.
pub fn request_failure(e: &reqwest::Error) -> RequestFailure {
    if e.is_timeout() {
        return RequestFailure::Timeout;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(denied) = s.downcast_ref::<EgressDenied>() {
            return RequestFailure::Denied(denied.to_string());
        }
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    RequestFailure::Connection(text)
}

/// How the daemon reaches other hosts: the address policy, and the
/// operator's proxy if one is configured. The one place outbound HTTP
/// clients are built.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    policy: Arc<AddressPolicy>,
    proxy: Option<reqwest::Url>,
}

impl Egress {
    /// Egress under `policy`, through `proxy` when one is given (an
    /// `http://` or `https://` URL, checked by the config).
    pub fn new(policy: AddressPolicy, proxy: Option<reqwest::Url>) -> Self {
        Self {
            policy: Arc::new(policy),
            proxy,
        }
    }

    /// The address policy.
    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// A client builder that follows no redirect (a plugin sees the 3xx
    /// and decides; a partner cannot bounce a request to a host nobody
    /// named), resolves names through the address policy, and uses no
    /// proxy but the operator's: `HTTP_PROXY`, `HTTPS_PROXY` and
    /// `ALL_PROXY` in the daemon's environment are ignored.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let resolver = PolicyResolver {
            policy: self.policy.clone(),
            trusted: self
                .proxy
                .as_ref()
                .and_then(|p| p.host_str())
                .map(str::to_ascii_lowercase),
        };
        let builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(resolver))
            .user_agent(concat!("stephost/", env!("CARGO_PKG_VERSION")));
        match &self.proxy {
            Some(proxy) => builder.proxy(
                reqwest::Proxy::all(proxy.clone())
                    .expect("the config admits only http(s) proxy URLs"),
            ),
            None => builder,
        }
    }

    /// Checks where a request is going before it is sent. A literal IP is
    /// checked here, since it never reaches the resolver. Through a proxy
    /// the resolver only sees the proxy, so the target's name is resolved
    /// here and every address it has must be permitted (the proxy resolves
    /// it again; see `docs/security.md` on rebinding behind a proxy).
    pub async fn check_target(&self, url: &reqwest::Url) -> Result<(), EgressDenied> {
        if let Some(ip) = literal_ip(url) {
            return self.policy.check(ip).map_err(EgressDenied);
        }
        let Some(host) = url.host_str() else {
            return Err(EgressDenied("the URL has no host".into()));
        };
        if self.proxy.is_none() {
            return Ok(());
        }
        let port = url.port_or_known_default().unwrap_or(0);
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| {
                EgressDenied(format!(
                    "{host}: cannot resolve it to check it against the address policy: {e}"
                ))
            })?
            .collect();
        if resolved.is_empty() {
            return Err(EgressDenied(format!("{host}: it resolves to no address")));
        }
        for addr in resolved {
            self.policy
                .check(addr.ip())
                .map_err(|why| EgressDenied(format!("{host}: {why}")))?;
        }
        Ok(())
    }
}

/// The HTTP client's resolver: resolves, then keeps only permitted
/// addresses — the ones the client will actually connect to.
#[derive(Debug)]
struct PolicyResolver {
    policy: Arc<AddressPolicy>,
    /// The operator's proxy: its address is the operator's choice, not a
    /// plugin's, so it is not held to the policy.
    trusted: Option<String>,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let trusted = self
            .trusted
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(name.as_str()));
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if trusted {
                return Ok(Box::new(resolved.into_iter()) as reqwest::dns::Addrs);
            }
            let mut refusals = Vec::new();
            let permitted: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.check(addr.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refusals.push(why);
                        false
                    }
                })
                .collect();
            if permitted.is_empty() {
                let why = refusals
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "it resolves to no address".to_owned());
                return Err(Box::new(EgressDenied(format!("{host}: {why}")))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// One entry of a plugin's `allowed_hosts`: `scheme://host[:port]`, where
/// host may start with `*.` (any subdomain) and port may be `*`. Without a
/// port, the scheme's default port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    scheme: String,
    host: String,
    port: Option<u16>,
    text: String,
}

impl std::str::FromStr for HostPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("invalid allowed_hosts entry {text:?}: {why}");
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://host[:port]"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.contains('?') || rest.contains('@') {
            return Err(bad("only scheme, host and port; no path, query or user"));
        }
        // An IPv6 host is bracketed (`[::1]`, `[::1]:8443`), so its colons
        // are not taken for the port's.
        let (host, port) = match rest.strip_prefix('[') {
            Some(bracketed) => {
                let (host, tail) = bracketed
                    .split_once(']')
                    .ok_or_else(|| bad("an IPv6 address needs its closing ]"))?;
                let port = match tail {
                    "" => None,
                    tail => Some(
                        tail.strip_prefix(':')
                            .ok_or_else(|| bad("expected :port after ]"))?,
                    ),
                };
                (host, port)
            }
            None => match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            },
        };
        let port = match port {
            Some("*") => None,
            Some(port) => Some(
                port.parse::<u16>()
                    .map_err(|_| bad("the port must be a number or *"))?,
            ),
            None => Some(if scheme == "https" { 443 } else { 80 }),
        };
        if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("write an IPv6 address in brackets, like [::1]"));
        }
        // The URL parser writes IPv6 addresses in their shortest form.
        let host = match host.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => v6.to_string(),
            Err(_) => host.to_ascii_lowercase(),
        };
        if host.is_empty() || host[host.starts_with("*.") as usize * 2..].contains('*') {
            return Err(bad("the host must be a name, an IP, or *.domain"));
        }
        Ok(Self {
            scheme,
            host,
            port,
            text: text.to_owned(),
        })
    }
}

impl HostPattern {
    /// Whether `url` falls under this pattern.
    pub fn matches(&self, url: &reqwest::Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            Some(domain) => host.len() > domain.len() + 1 && host.ends_with(&format!(".{domain}")),
            None => host == self.host,
        };
        host_ok
            && url.scheme() == self.scheme
            && self
                .port
                .is_none_or(|p| url.port_or_known_default() == Some(p))
    }
}

/// The hosts a plugin may name.
#[derive(Debug, Clone, Default)]
pub enum HostRules {
    /// Any host (the reference plugins: the workflow author picks the URL).
    Any,
    /// Only these; empty means no network at all.
    #[default]
    None,
    /// Only these patterns.
    Only(Vec<HostPattern>),
}

impl HostRules {
    /// Rules from config entries (`"*"` alone means any host).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        if entries.iter().any(|e| e == "*") {
            return Ok(Self::Any);
        }
        if entries.is_empty() {
            return Ok(Self::None);
        }
        entries
            .iter()
            .map(|e| e.parse())
            .collect::<Result<Vec<_>, _>>()
            .map(Self::Only)
    }

    /// `Ok` if the plugin may send to `url`; otherwise the rule that says no.
    pub fn check(&self, plugin: &str, url: &reqwest::Url) -> Result<(), String> {
        let target = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        );
        match self {
            Self::Any => Ok(()),
            Self::None => Err(format!(
                "plugin {plugin:?} has no network grant (allowed_hosts is empty), so {target} is refused"
            )),
            Self::Only(patterns) => {
                if patterns.iter().any(|p| p.matches(url)) {
                    return Ok(());
                }
                let list: Vec<&str> = patterns.iter().map(|p| p.text.as_str()).collect();
                Err(format!(
                    "{target} is not in plugin {plugin:?}'s allowed_hosts [{}]",
                    list.join(", ")
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str) -> reqwest::Url {
        reqwest::Url::parse(u).unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let policy = AddressPolicy::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(policy.check(ip).is_err(), "{ip} must be refused");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(policy.check(ip).is_ok(), "{ip} is public");
        }
        let why = policy
            .check("169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert!(why.contains("metadata"), "{why}");
        let lifted = AddressPolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
        };
        assert!(lifted.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(lifted.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(lifted.check("169.254.169.254".parse().unwrap()).is_err());
    }

    #[test]
    fn host_patterns_match_scheme_host_and_port() {
        let p: HostPattern = "https://api.example.com".parse().unwrap();
        assert!(p.matches(&url("https://api.example.com/v1/x")));
        assert!(p.matches(&url("https://API.example.com:443/")));
        assert!(!p.matches(&url("http://api.example.com/")));
        assert!(!p.matches(&url("https://api.example.com:8443/")));
        assert!(!p.matches(&url("https://evil-api.example.com/")));

        let p: HostPattern = "https://*.example.com:8443".parse().unwrap();
        assert!(p.matches(&url("https://a.b.example.com:8443/")));
        assert!(!p.matches(&url("https://example.com:8443/")));
        assert!(!p.matches(&url("https://a.example.com/")));
        assert!(!p.matches(&url("https://a.example.com.evil.net:8443/")));

        let p: HostPattern = "http://127.0.0.1:*".parse().unwrap();
        assert!(p.matches(&url("http://127.0.0.1:9999/")));

        // IPv6 in brackets, with or without a port.
        let p: HostPattern = "https://[::1]".parse().unwrap();
        assert!(p.matches(&url("https://[::1]/x")));
        assert!(!p.matches(&url("https://[::1]:8443/x")));
        let p: HostPattern = "http://[2001:db8::1]:8080".parse().unwrap();
        assert!(p.matches(&url("http://[2001:db8::1]:8080/")));
        assert!(!p.matches(&url("http://[2001:db8::1]/")));
        let p: HostPattern = "http://[0:0::1]:*".parse().unwrap();
        assert!(p.matches(&url("http://[::1]:1234/")));

        for bad in [
            "api.example.com",
            "ftp://x",
            "https://x/path",
            "https://a.*.com",
            "https://x:port",
            "https://[::1",
            "https://[::1]x",
            "https://::1",
        ] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn rules_name_what_refused_the_request() {
        let none = HostRules::parse(&[]).unwrap();
        assert!(
            none.check("p", &url("https://a.com/"))
                .unwrap_err()
                .contains("no network grant")
        );
        let only = HostRules::parse(&["https://a.com".into()]).unwrap();
        let why = only.check("p", &url("https://b.com/")).unwrap_err();
        assert!(
            why.contains("https://b.com:443") && why.contains("https://a.com"),
            "{why}"
        );
        assert!(
            HostRules::parse(&["*".into()])
                .unwrap()
                .check("p", &url("http://x/"))
                .is_ok()
        );
    }
}
