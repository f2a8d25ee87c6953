//! `stephost plugin add`: uploads a component to a running daemon and
//! tells its author what came of it and what is left to do. An upload
//! brings code, never permissions: what a plugin may reach stays in the
//! operator's config file (`[plugins.NAME]`). So the answer shows the
//! version the daemon now runs and the grant it runs under, and when the
//! project's own `stephost.toml` (the one `stephost run` used) names hosts
//! or secrets the daemon does not grant, the section to add and that the
//! daemon must be restarted to read it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::remote::{Remote, call};
use crate::config::Config;

/// Uploads `file` as `name`; prints the plugin with its grant and the next
/// steps. Returns 0 once uploaded, 1 when the daemon refused it.
pub(super) async fn add(
    remote: &Remote,
    name: &str,
    file: &Path,
    config: Option<&Path>,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let wanted = wanted_grant(config, file, name)?;
    let bytes =
        std::fs::read(file).with_context(|| format!("read the component {}", file.display()))?;
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("name", name)
        .finish();
    let mut answer = Vec::new();
    let code = call(
        remote,
        reqwest::Method::POST,
        &format!("/v1/plugins?{query}"),
        Some(bytes),
        &mut answer,
    )
    .await?;
    if code != 0 {
        out.write_all(&answer)?;
        return Ok(code);
    }
    let mut plugin: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    // The grant is the daemon's to tell (its config file, its defaults).
    // The daemon took the name, so it needs no escaping in a path.
    let mut shown = Vec::new();
    let grant = match call(
        remote,
        reqwest::Method::GET,
        &format!("/v1/plugins/{name}"),
        None,
        &mut shown,
    )
    .await?
    {
        0 => serde_json::from_slice::<Value>(&shown).unwrap_or(Value::Null)["grant"].take(),
        _ => Value::Null,
    };
    let (next, section) = next_steps(name, &remote.url, &grant, wanted.as_ref());
    for line in &next {
        eprintln!("{line}");
        if line.starts_with("Next:")
            && let Some(section) = &section
        {
            eprintln!("\n{section}");
        }
    }
    plugin["grant"] = grant;
    plugin["next"] = json!(next);
    if let Some(section) = section {
        plugin["add_to_daemon_config"] = json!(section);
    }
    writeln!(out, "{}", serde_json::to_string_pretty(&plugin)?)?;
    Ok(0)
}

/// What the project's config grants the plugin: its file, hosts and
/// secrets. From `--config`, else the `stephost.toml` beside the
/// component if there is one (where `plugin new` puts it).
struct Wanted {
    file: PathBuf,
    hosts: Vec<String>,
    secrets: Vec<String>,
}

fn wanted_grant(config: Option<&Path>, file: &Path, name: &str) -> anyhow::Result<Option<Wanted>> {
    let (path, explicit) = match config {
        Some(path) => (path.to_owned(), true),
        None => {
            let beside = file
                .parent()
                .unwrap_or(Path::new("."))
                .join("stephost.toml");
            if !beside.is_file() {
                return Ok(None);
            }
            (beside, false)
        }
    };
    let parsed = match Config::from_file(&path) {
        Ok(parsed) => parsed,
        Err(e) if explicit => return Err(e.into()),
        Err(e) => {
            eprintln!("note: not comparing grants with {}: {e}", path.display());
            return Ok(None);
        }
    };
    Ok(parsed.plugins.get(name).map(|section| Wanted {
        file: path,
        hosts: section.allowed_hosts.clone().unwrap_or_default(),
        secrets: section.secrets.clone(),
    }))
}

/// The strings of a JSON array.
fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// TOML for a list of strings.
fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|i| Value::from(i.as_str()).to_string())
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// What to do now, one sentence a line, and the config section the
/// daemon needs when it grants less than the project's config does.
fn next_steps(
    name: &str,
    url: &str,
    grant: &Value,
    wanted: Option<&Wanted>,
) -> (Vec<String>, Option<String>) {
    let mut next = Vec::new();
    let mut section = None;
    let granted_hosts = strings(&grant["allowed_hosts"]);
    let granted_secrets = strings(&grant["secrets"]);
    if let Some(wanted) = wanted {
        let any_host = granted_hosts.iter().any(|h| h == "*");
        let hosts: Vec<String> = wanted
            .hosts
            .iter()
            .filter(|h| !any_host && !granted_hosts.contains(h))
            .cloned()
            .collect();
        let secrets: Vec<String> = wanted
            .secrets
            .iter()
            .filter(|s| !granted_secrets.contains(s))
            .cloned()
            .collect();
        if !hosts.is_empty() || !secrets.is_empty() {
            let mut missing = Vec::new();
            if !hosts.is_empty() {
                missing.push(format!("the hosts {}", hosts.join(", ")));
            }
            if !secrets.is_empty() {
                missing.push(format!("the secrets {}", secrets.join(", ")));
            }
            next.push(format!(
                "{} grants {name} {}, which the daemon does not: there its requests fail with \
                 egress-denied and its signing with signing-error.",
                wanted.file.display(),
                missing.join(" and ")
            ));
            let mut text = format!("[plugins.{name}]\n");
            let all_hosts = merged(&granted_hosts, &hosts);
            if !all_hosts.is_empty() {
                text.push_str(&format!("allowed_hosts = {}\n", toml_list(&all_hosts)));
            }
            let all_secrets = merged(&granted_secrets, &secrets);
            if !all_secrets.is_empty() {
                text.push_str(&format!("secrets = {}\n", toml_list(&all_secrets)));
            }
            next.push(format!(
                "Next: put the section below (add_to_daemon_config) in the daemon's config \
                 file{}, without `path` (a path would tie the name to a file and refuse \
                 uploads); then restart the daemon, which reads grants when it starts. The \
                 upload is kept and loads again under the new grant.",
                if secrets.is_empty() {
                    ""
                } else {
                    " and define each secret under [secrets]"
                }
            ));
            section = Some(text);
        }
    }
    next.push(format!(
        "Run it: curl -XPOST {}/v1/executions -H \"Authorization: Bearer $TOKEN\" -d \
         '{{\"plugin\": \"{name}\", \"config\": {{}}, \"input\": {{}}}}'",
        url.trim_end_matches('/')
    ));
    (next, section)
}

/// `granted` followed by what `more` adds.
fn merged(granted: &[String], more: &[String]) -> Vec<String> {
    let mut all = granted.to_vec();
    all.extend(more.iter().filter(|m| !granted.contains(m)).cloned());
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(hosts: &[&str], secrets: &[&str]) -> Wanted {
        Wanted {
            file: PathBuf::from("stephost.toml"),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_missing_grant_is_explained_with_the_section_to_add() {
        let grant = json!({"allowed_hosts": ["https://a.example"], "secrets": []});
        let (next, section) = next_steps(
            "shout",
            "http://d:8080/",
            &grant,
            Some(&wanted(
                &["https://a.example", "https://b.example"],
                &["key"],
            )),
        );
        assert_eq!(next.len(), 3, "{next:#?}");
        assert!(
            next[0].contains("the hosts https://b.example and the secrets key"),
            "{}",
            next[0]
        );
        assert!(
            next[1].contains("restart the daemon") && next[1].contains("under [secrets]"),
            "{}",
            next[1]
        );
        assert_eq!(
            section.unwrap(),
            "[plugins.shout]\nallowed_hosts = [\"https://a.example\", \"https://b.example\"]\n\
             secrets = [\"key\"]\n"
        );
        assert!(next[2].starts_with("Run it: curl -XPOST http://d:8080/v1/executions"));
    }

    #[test]
    fn nothing_is_missing_when_granted_or_when_any_host_is() {
        let any = json!({"allowed_hosts": ["*"], "secrets": ["key"]});
        let (next, section) = next_steps("s", "u", &any, Some(&wanted(&["https://x"], &["key"])));
        assert_eq!((next.len(), section), (1, None), "{next:#?}");
        let none = json!({"allowed_hosts": [], "secrets": []});
        assert_eq!(next_steps("s", "u", &none, None).0.len(), 1);
        assert_eq!(
            next_steps("s", "u", &none, Some(&wanted(&[], &[]))).0.len(),
            1
        );
    }
}
