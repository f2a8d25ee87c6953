//! What one plugin may do — the hosts it may reach, the secrets it may
//! read, its limits — resolved once from the config. Its own module, above
//! the config and below everything that enforces it, so the config never
//! has to know the capabilities that use it.

use std::collections::BTreeMap;

use crate::config::{Config, ConfigError, Limits};
use crate::egress::HostRules;

/// What the operator granted one plugin.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// Secret values by name.
    pub secrets: BTreeMap<String, String>,
    /// Resource limits.
    pub limits: Limits,
    /// Hosts it may send requests to.
    pub hosts: HostRules,
}

impl Grant {
    /// Everything `plugin` is granted: hosts, secrets, limits.
    pub fn for_plugin(config: &Config, plugin: &str) -> Result<Grant, ConfigError> {
        let configured = config
            .plugins
            .get(plugin)
            .and_then(|p| p.allowed_hosts.as_ref());
        let hosts = match configured {
            Some(entries) => HostRules::parse(entries)
                .map_err(|e| ConfigError::Invalid(format!("plugin {plugin:?}: {e}")))?,
            // The workflow author picks a reference plugin's URL; the
            // address policy still applies.
            None if crate::builtin::component(plugin).is_some() => HostRules::Any,
            None => HostRules::None,
        };
        Ok(Grant {
            secrets: config.secrets_for(plugin)?,
            limits: config.limits_for(plugin),
            hosts,
        })
    }

    /// Replaces every granted secret value in `text` with `****`, so a
    /// plugin cannot leak a secret through logs, errors or recorded requests.
    /// Every occurrence of every secret is found, overlapping ones included,
    /// and each run of text they cover becomes one `****`: where one secret
    /// contains or overlaps another, no part of either survives.
    pub fn mask(&self, text: &str) -> String {
        let secrets: Vec<&str> = self
            .secrets
            .values()
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .collect();
        if secrets.is_empty() {
            return text.to_owned();
        }
        let Ok(automaton) = aho_corasick::AhoCorasick::new(&secrets) else {
            // Too many or too large secrets for an automaton: say nothing
            // rather than risk a leak.
            return "**** (text withheld: the granted secrets could not be masked)".to_owned();
        };
        // Overlapping matches come in order of where they end; merge them
        // in order of where they start.
        let mut spans: Vec<(usize, usize)> = automaton
            .find_overlapping_iter(text)
            .map(|m| (m.start(), m.end()))
            .collect();
        spans.sort_unstable();
        let mut covered: Vec<(usize, usize)> = Vec::new();
        for (start, end) in spans {
            match covered.last_mut() {
                Some((_, last)) if start <= *last => *last = (*last).max(end),
                _ => covered.push((start, end)),
            }
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end) in covered {
            out.push_str(&text[at..start]);
            out.push_str("****");
            at = end;
        }
        out.push_str(&text[at..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(secrets: &[(&str, &str)]) -> Grant {
        Grant {
            secrets: secrets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_secret_inside_a_longer_one_leaves_nothing_of_either() {
        // Name order puts the shorter secret first: replacing in that order
        // would leave "****def".
        let g = grant(&[("a-short", "abc"), ("b-long", "abcdef")]);
        assert_eq!(g.mask("key=abcdef;k2=abc"), "key=****;k2=****");
        let g = grant(&[("a-long", "xabcx"), ("b-short", "abc")]);
        assert_eq!(g.mask("xabcx abc"), "**** ****");
        // Overlapping, neither inside the other.
        let g = grant(&[("one", "hello wo"), ("two", "world")]);
        assert_eq!(g.mask("say hello world!"), "say ****!");
        let g = grant(&[("inner", "cd"), ("outer", "abcdef")]);
        assert_eq!(g.mask("xabcdefx"), "x****x");
        let g = grant(&[("a", "aaa")]);
        assert_eq!(g.mask("aaaa-aaa"), "****-****");
    }

    #[test]
    fn masking_without_secrets_keeps_the_text() {
        assert_eq!(grant(&[]).mask("plain"), "plain");
        assert_eq!(grant(&[("empty", "")]).mask("plain"), "plain");
    }
}
