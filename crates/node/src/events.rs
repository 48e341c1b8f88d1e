//! The node's event log: what happened to the cluster, in words and
//! numbers ("node 1 lost at T; node 2 promoted at T+412 ms (RTO 412 ms)";
//! "37 entries not on node 2, saved to <rollback file>").
//!
//! Owns a bounded in-memory list (newest last) and, when the node runs the
//! control plane, the forwarding of every event into the replicated cluster
//! map (`ControlCmd::RecordEvent`), so the cluster's event log survives the
//! loss or restart of any node. `GET /events` serves the map's events merged
//! with this node's own (those not yet committed included); `tandem status`
//! prints them. Every event is also logged through `tracing`. This module
//! records; it never decides anything.

use std::collections::VecDeque;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::control::map::ClusterEvent;

use crate::db::unix_ms;
use crate::rollback::rfc3339;

/// Events kept per node (oldest dropped first).
pub const EVENTS_KEPT_MAX: usize = 1000;
/// Events waiting to be committed to the cluster map; past it the newest
/// stays only in this node's list (and a warning says so).
pub const EVENTS_PENDING_MAX: usize = 256;
/// Pause between attempts to commit an event while the control plane has
/// no quorum.
const FORWARD_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Optional numbers attached to an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

impl Event {
    /// The replicated form.
    pub fn to_cluster(&self) -> ClusterEvent {
        ClusterEvent {
            at_ms: self.at_ms,
            node: self.node,
            kind: self.kind.clone(),
            message: self.message.clone(),
            rto_ms: self.fields.rto_ms,
            lost_writes: self.fields.lost_writes,
            lsn_range: self.fields.lsn_range,
            epoch: self.fields.epoch,
            subject: self.fields.subject,
        }
    }

    /// From the replicated form.
    pub fn from_cluster(e: &ClusterEvent) -> Event {
        Event {
            at_ms: e.at_ms,
            at: rfc3339(e.at_ms),
            node: e.node,
            kind: e.kind.clone(),
            message: e.message.clone(),
            fields: EventFields {
                rto_ms: e.rto_ms,
                lost_writes: e.lost_writes,
                lsn_range: e.lsn_range,
                epoch: e.epoch,
                subject: e.subject,
            },
        }
    }

    /// Identity for merging lists from several sources.
    fn key(&self) -> (u64, u64, &str, &str) {
        (self.at_ms, self.node, &self.kind, &self.message)
    }
}

/// Merges event lists (each oldest first) into one, oldest first, without
/// duplicates (the same event seen in the map and in a node's own list).
pub fn merge(lists: impl IntoIterator<Item = Vec<Event>>) -> Vec<Event> {
    let mut all: Vec<Event> = lists.into_iter().flatten().collect();
    all.sort_by(|a, b| a.key().cmp(&b.key()));
    all.dedup_by(|a, b| a.key() == b.key());
    all
}

/// The event log of one node.
#[derive(Debug)]
pub struct Events {
    node: u64,
    list: Mutex<VecDeque<Event>>,
    /// Where events go to be committed to the cluster map (set once the
    /// control plane runs).
    sink: Mutex<Option<mpsc::Sender<ClusterEvent>>>,
}

impl Events {
    /// An empty log for `node`.
    pub fn new(node: u64) -> Events {
        Events { node, list: Mutex::new(VecDeque::new()), sink: Mutex::new(None) }
    }

    /// From now on, commits every recorded event to the cluster map through
    /// `control` (in order, retrying while the control plane has no quorum).
    pub fn forward_to(&self, control: std::sync::Arc<crate::control::ControlPlane>) {
        let (tx, mut rx) = mpsc::channel::<ClusterEvent>(EVENTS_PENDING_MAX);
        *self.sink.lock() = Some(tx);
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let mut failures = 0u64;
                loop {
                    match control.propose(crate::control::ControlCmd::RecordEvent(event.clone())).await {
                        Ok(_) => break,
                        Err(crate::control::ControlError::Shutdown) => return,
                        Err(e) => {
                            failures += 1;
                            if failures == 1 || failures.is_power_of_two() {
                                tracing::debug!(error = %e, failures, "event not yet in the cluster map; retrying");
                            }
                            tokio::time::sleep(FORWARD_RETRY).await;
                        }
                    }
                }
            }
        });
    }

    /// Records an event now.
    pub fn record(&self, kind: &str, message: String, fields: EventFields) {
        tracing::warn!(event = kind, "{message}");
        let at_ms = unix_ms();
        let mut list = self.list.lock();
        if list.len() == EVENTS_KEPT_MAX {
            list.pop_front();
        }
        let event = Event { at_ms, at: rfc3339(at_ms), node: self.node, kind: kind.into(), message, fields };
        if let Some(sink) = self.sink.lock().as_ref() {
            if sink.try_send(event.to_cluster()).is_err() {
                tracing::warn!(
                    "{EVENTS_PENDING_MAX} events wait for the control plane; this one stays on this node only"
                );
            }
        }
        list.push_back(event);
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

    #[test]
    fn events_merge_drops_duplicates_and_orders_by_time() {
        let e = Events::new(1);
        e.record("lost", "a".into(), EventFields::default());
        e.record("promoted", "b".into(), EventFields { rto_ms: Some(3), ..Default::default() });
        let local = e.list();
        let from_map: Vec<Event> = local.iter().map(|ev| Event::from_cluster(&ev.to_cluster())).collect();
        assert_eq!(from_map, local);
        let merged = merge([from_map, local.clone()]);
        assert_eq!(merged, local);
    }
}
