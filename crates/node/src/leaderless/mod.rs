//! Leaderless keyspaces in the node: any node coordinates a request to any
//! key of the keyspace over its preference list of N replicas.
//!
//! Not built yet (issue 12): [`start`] refuses, so a leaderless keyspace is
//! defined in the map but has no replica on any node.

use std::sync::Arc;

use tandem_core::keyspace::KeyspaceDef;

use crate::engines::{Engine, EngineEnv};

/// Starts the replica of leaderless keyspace `def` on this node.
pub fn start(_env: &EngineEnv, def: &KeyspaceDef) -> Result<Arc<dyn Engine>, String> {
    Err(format!("keyspace {:?}: leaderless replicas are not built in this version", def.name))
}
