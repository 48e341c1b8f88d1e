//! Multi-leader keyspaces in the node: every node accepts writes to the
//! keyspace and streams its own writes to every other node.
//!
//! Not built yet (issue 11): [`start`] refuses, so a multi-leader keyspace
//! is defined in the map but has no replica on any node.

use std::sync::Arc;

use tandem_core::keyspace::KeyspaceDef;

use crate::engines::{Engine, EngineEnv};

/// Starts the replica of multi-leader keyspace `def` on this node.
pub fn start(_env: &EngineEnv, def: &KeyspaceDef) -> Result<Arc<dyn Engine>, String> {
    Err(format!("keyspace {:?}: multi-leader replicas are not built in this version", def.name))
}
