//! The config as the gateway runs it: validated, with its SHA-256, every setting as a dotted
//! key (what a reload compares) and the summary `GET /v1/config` shows.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::gateway::LoadedConfig;

use super::Config;

/// Reads and validates `path` for the gateway: every problem as `file:line: key: message`.
pub fn load_for_gateway(path: &Path) -> Result<LoadedConfig, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
    let config = Config::parse(&text)
        .map_err(|errors| errors.iter().map(|e| format!("{}: {e}", path.display())).collect::<Vec<_>>())?;
    let sha256 = hex(&Sha256::digest(text.as_bytes()));
    let value: toml::Value = toml::from_str(&text).map_err(|e| vec![format!("{}: {e}", path.display())])?;
    let mut keys = BTreeMap::new();
    flatten("", &value, &mut keys);
    let summary = summary(&sha256, &[path.display().to_string()], &keys);
    Ok(LoadedConfig {
        config,
        sha256,
        keys,
        summary,
        files: vec![path.to_owned()],
        include_dirs: Vec::new(),
        warnings: Vec::new(),
    })
}

/// `GET /v1/config`: the SHA-256, the files and every key by section.
pub fn summary(sha256: &str, files: &[String], keys: &BTreeMap<String, String>) -> Value {
    let mut sections: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for (k, v) in keys {
        let (section, rest) = k.split_once('.').unwrap_or(("", k));
        sections.entry(section).or_default().insert(rest, v);
    }
    json!({ "sha256": sha256, "files": files, "settings": sections })
}

/// Keys whose values are secrets: shown masked (with a digest, so a change still shows).
const SECRET_KEYS: &[&str] = &["password", "token", "secret"];

/// Flattens a TOML value into dotted keys; arrays of tables are keyed by their `system_id`
/// (accounts) or `name` (content rules) when they have one, else by position.
fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    let join = |k: &str| if prefix.is_empty() { k.to_owned() } else { format!("{prefix}.{k}") };
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                flatten(&join(k), v, out);
            }
        }
        toml::Value::Array(a) if !a.is_empty() && a.iter().all(|x| x.is_table()) => {
            for (i, x) in a.iter().enumerate() {
                let id = x
                    .get("system_id")
                    .or_else(|| x.get("name"))
                    .and_then(|s| s.as_str())
                    .map(str::to_owned)
                    .unwrap_or_else(|| i.to_string());
                flatten(&join(&id), x, out);
            }
        }
        other => {
            let last = prefix.rsplit('.').next().unwrap_or(prefix);
            let text = scalar(other);
            let shown = if SECRET_KEYS.iter().any(|s| last.contains(s))
                && !last.ends_with("_env")
                && !last.ends_with("_file")
            {
                format!("*** (sha256:{})", &hex(&Sha256::digest(text.as_bytes()))[..8])
            } else {
                text
            };
            out.insert(prefix.to_owned(), shown);
        }
    }
}

/// A value as TOML would write it (arrays inline).
fn scalar(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(a) => format!("[{}]", a.iter().map(scalar).collect::<Vec<_>>().join(", ")),
        toml::Value::Table(t) => {
            let inner: Vec<String> = t.iter().map(|(k, v)| format!("{k} = {}", scalar(v))).collect();
            format!("{{ {} }}", inner.join(", "))
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
