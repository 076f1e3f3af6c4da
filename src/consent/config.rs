//! The consent data's validated configuration (`[consent]` and `[node] id`), owned here so
//! that the consent store does not depend on the config module's other types.

use std::path::PathBuf;

use super::statement::NodeId;

/// Where the consent data lives and who this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentConfig {
    /// `consent.snapshot`: the snapshot file loaded at start and on reload.
    pub snapshot: Option<PathBuf>,
    /// `consent.journal`: the journal directory; without it live statements are kept in memory
    /// only.
    pub journal: Option<PathBuf>,
    /// `consent.watch`: reload the snapshot when its file changes.
    pub watch: bool,
    /// `node.id`: the origin of the statements this node makes (architecture §8).
    pub node: NodeId,
}

impl Default for ConsentConfig {
    /// No snapshot, no journal, no watch; the node id from the host name.
    fn default() -> ConsentConfig {
        ConsentConfig { snapshot: None, journal: None, watch: false, node: NodeId::from_hostname() }
    }
}
