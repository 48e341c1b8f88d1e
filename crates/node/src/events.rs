//! The node's event log: what happened to the cluster, in words and
//! numbers ("node 1 lost at T; node 2 promoted at T+412 ms (RTO 412 ms)";
//! "37 entries not on node 2, saved to <rollback file>").
//!
//! Owns a bounded in-memory list (newest last) served at `GET /events` and
//! printed by `tandem status`; every event is also logged through `tracing`.
//! This module records; it never decides anything.

use std::collections::VecDeque;

use parking_lot::Mutex;
use serde::Serialize;

use crate::db::unix_ms;
use crate::rollback::rfc3339;

/// Events kept per node (oldest dropped first).
pub const EVENTS_KEPT_MAX: usize = 1000;

/// Optional numbers attached to an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EventFields {
    /// Recovery time of a failover, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rto_ms: Option<u64>,
    /// Writes that could not be kept (in a rollback file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_writes: Option<u64>,
    /// The LSN range concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lsn_range: Option<(u64, u64)>,
    /// The epoch concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The node concerned (lost, promoted, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<u64>,
}

/// One event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Unix ms.
    pub at_ms: u64,
    /// RFC 3339.
    pub at: String,
    /// The node that recorded it.
    pub node: u64,
    /// `lost`, `promoted`, `bootstrap`, `rollback`, `switchover`, `fenced`,
    /// `lease`, `promotion_blocked`.
    pub kind: String,
    /// What happened, in words.
    pub message: String,
    /// Numbers.
    #[serde(flatten)]
    pub fields: EventFields,
}

/// The event log of one node.
#[derive(Debug)]
pub struct Events {
    node: u64,
    list: Mutex<VecDeque<Event>>,
}

impl Events {
    /// An empty log for `node`.
    pub fn new(node: u64) -> Events {
        Events { node, list: Mutex::new(VecDeque::new()) }
    }

    /// Records an event now.
    pub fn record(&self, kind: &str, message: String, fields: EventFields) {
        tracing::warn!(event = kind, "{message}");
        let at_ms = unix_ms();
        let mut list = self.list.lock();
        if list.len() == EVENTS_KEPT_MAX {
            list.pop_front();
        }
        list.push_back(Event { at_ms, at: rfc3339(at_ms), node: self.node, kind: kind.into(), message, fields });
    }

    /// Every kept event, oldest first.
    pub fn list(&self) -> Vec<Event> {
        self.list.lock().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_kept_in_order_and_bounded() {
        let e = Events::new(3);
        for i in 0..EVENTS_KEPT_MAX + 5 {
            e.record("lost", format!("event {i}"), EventFields { rto_ms: Some(i as u64), ..Default::default() });
        }
        let list = e.list();
        assert_eq!(list.len(), EVENTS_KEPT_MAX);
        assert_eq!(list[0].message, "event 5");
        assert_eq!(list.last().unwrap().node, 3);
        let json = serde_json::to_value(&list[0]).unwrap();
        assert_eq!(json["rto_ms"], 5);
        assert!(json.get("lost_writes").is_none());
    }
}
