//! The config as the gateway runs and reloads it: [`load`](super::load)'s result in the shape
//! the gateway applies ([`LoadedConfig`]), problems as text.

use std::path::Path;

use crate::gateway::LoadedConfig;

use super::{load, summary, Diagnostic, Loaded};

/// Reads and validates `path` (and its includes) for the gateway: on any error, every
/// problem as `file:line: key: message` (warnings prefixed `warning: `).
pub fn load_for_gateway(path: &Path) -> Result<LoadedConfig, Vec<String>> {
    let l = load(path).map_err(|diags| diags.iter().map(Diagnostic::report).collect::<Vec<_>>())?;
    Ok(for_gateway(l))
}

/// A loaded config in the shape the gateway applies.
pub fn for_gateway(l: Loaded) -> LoadedConfig {
    LoadedConfig {
        summary: summary(&l),
        sha256: l.sha256,
        keys: l.keys,
        files: l.files,
        include_dirs: l.include_dirs,
        warnings: l.warnings.iter().map(Diagnostic::report).collect(),
        config: l.config,
    }
}
