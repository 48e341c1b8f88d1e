//! One write, all or nothing: the entry point that runs a write command
//! and the contract every write command (and a future multi-command
//! transaction) relies on.
//!
//! # The `WriteCtx` contract
//! - A command changes the keyspace only through [`WriteCtx::emit`]. Emit
//!   first charges the effect's encoded size (an upper bound, see
//!   [`effect_bytes_bound`]) to the [`Batch`]'s budget; only if it fits is
//!   the effect applied to the store (so later reads in the same command
//!   see it) and recorded, together with an undo record that holds what it
//!   displaced (moved, never copied).
//! - Once one effect does not fit, the batch is *refused*: that effect and
//!   every later one are not applied, and the command's reply is replaced by
//!   the refusal error. [`execute`] then undoes the effects already applied,
//!   newest first, so the store is exactly as before the command.
//! - The caller logs the batch's effects as one entry ([`Batch::effects`]);
//!   if logging fails it calls [`Batch::rollback`], and after a successful
//!   append [`Batch::commit`] drops the undo records. Applying and logging
//!   thus happen together or not at all.
//! - A multi-command transaction runs each command with [`run`] on one
//!   batch and decides once at the end (all effects in one entry, or
//!   rollback of all).
//!
//! Must never: read a clock, log anything itself, or let an effect reach
//! the store without being charged to the budget.
//!
//! [`WriteCtx::emit`]: crate::command::WriteCtx::emit

use bytes::Bytes;

use crate::command::{WriteCtx, WriteFn};
use crate::effect::Effect;
use crate::resp::Frame;
use crate::store::{Store, Undo};

/// Largest encoded log entry payload (the effects of one write): what one
/// log record (`tandem_storage::log::RECORD_PAYLOAD_BYTES_MAX`), one peer
/// frame and one snapshot chunk carry. A write whose effects could exceed it
/// is refused before anything is applied.
pub const ENTRY_PAYLOAD_BYTES_MAX: usize = 512 << 20;
/// Room kept in an entry for everything but the largest value: the key, the
/// entry header and the effect framing. The protocol's default bulk limit
/// is [`ENTRY_PAYLOAD_BYTES_MAX`] minus this, so a `SET` of the largest
/// bulk string with a key of up to about 64 KiB always fits one entry.
pub const ENTRY_OVERHEAD_RESERVE_BYTES: usize = 64 << 10;
/// Bytes of an entry payload besides its effects: format byte, commit time
/// and effect count (postcard varints, at their widest).
const ENTRY_HEADER_BYTES_MAX: usize = 1 + 10 + 10;
/// Bytes of one effect besides its keys, values and members: variant tag,
/// length prefixes, expiry (postcard varints, at their widest).
const EFFECT_FRAMING_BYTES_MAX: usize = 1 + 5 + 5 + 11;
/// Framing per set member (its length prefix).
const MEMBER_FRAMING_BYTES_MAX: usize = 5;
/// A postcard varint at its widest (a score's bits, a list change count or
/// index).
const VARINT_BYTES_MAX: usize = 10;

/// An upper bound on the bytes `effect` adds to an encoded entry payload.
pub fn effect_bytes_bound(effect: &Effect) -> usize {
    let members = |m: &[Bytes]| m.iter().map(|m| m.len() + MEMBER_FRAMING_BYTES_MAX).sum::<usize>();
    EFFECT_FRAMING_BYTES_MAX
        + match effect {
            Effect::Set { key, value, .. } => key.len() + value.len(),
            Effect::Del { key } | Effect::Evict { key } | Effect::Expire { key, .. } => key.len(),
            Effect::SAdd { key, members: m }
            | Effect::SRem { key, members: m }
            | Effect::HDel { key, fields: m }
            | Effect::ZRem { key, members: m } => key.len() + members(m),
            Effect::HSet { key, fields } => {
                key.len() + fields.iter().map(|(f, v)| f.len() + v.len() + 2 * MEMBER_FRAMING_BYTES_MAX).sum::<usize>()
            }
            Effect::ZAdd { key, members: m } => {
                key.len() + m.iter().map(|(_, m)| VARINT_BYTES_MAX + m.len() + MEMBER_FRAMING_BYTES_MAX).sum::<usize>()
            }
            // Direction flag and change count besides the framing.
            Effect::LPush { key, items, .. } => key.len() + members(items) + 1 + VARINT_BYTES_MAX,
            Effect::LPop { key, .. } => key.len() + 1 + 2 * VARINT_BYTES_MAX,
            Effect::LSet { key, value, .. } => {
                key.len() + value.len() + MEMBER_FRAMING_BYTES_MAX + 2 * VARINT_BYTES_MAX
            }
            Effect::LReplace { key, items, .. } => key.len() + members(items) + VARINT_BYTES_MAX,
            Effect::FlushAll => 0,
        }
}

/// The effects of one write (or one transaction) in progress, their undo
/// records and their size budget.
#[derive(Debug)]
pub struct Batch {
    effects: Vec<Effect>,
    undo: Vec<Undo>,
    bytes: usize,
    bytes_max: usize,
    refused: Option<usize>,
}

impl Batch {
    /// An empty batch whose effects may encode to at most `bytes_max`
    /// (capped at [`ENTRY_PAYLOAD_BYTES_MAX`]).
    pub fn new(bytes_max: usize) -> Batch {
        Batch {
            effects: Vec::new(),
            undo: Vec::new(),
            bytes: ENTRY_HEADER_BYTES_MAX,
            bytes_max: bytes_max.min(ENTRY_PAYLOAD_BYTES_MAX),
            refused: None,
        }
    }

    /// The effects applied so far, in order.
    pub fn effects(&self) -> &[Effect] {
        &self.effects
    }

    /// Moves the effects out (for the log entry); the undo records stay
    /// until [`Batch::commit`] or [`Batch::rollback`].
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Gives back the effect vector taken by [`Batch::take_effects`] (keeps
    /// its allocation for the next write).
    pub fn restore_effects(&mut self, effects: Vec<Effect>) {
        self.effects = effects;
    }

    /// True if nothing was applied.
    pub fn is_empty(&self) -> bool {
        self.effects.is_empty()
    }

    /// The error for a refused batch, if an effect did not fit.
    pub fn refusal(&self) -> Option<String> {
        self.refused.map(|needed| {
            format!(
                "ERR this write's effects need at least {needed} bytes in the log, more than the limit of {} bytes \
                 per write (entry_bytes_max); nothing was changed",
                self.bytes_max
            )
        })
    }

    /// Charges `effect` to the budget; false (and the batch is refused) if
    /// it does not fit or the batch was refused already.
    fn admit(&mut self, effect: &Effect) -> bool {
        let bytes = self.bytes.saturating_add(effect_bytes_bound(effect));
        if let Some(needed) = &mut self.refused {
            *needed = needed.saturating_add(effect_bytes_bound(effect));
            return false;
        }
        if bytes > self.bytes_max {
            self.refused = Some(bytes);
            return false;
        }
        self.bytes = bytes;
        true
    }

    /// Charges, applies and records one effect (see the module doc).
    pub(crate) fn emit(&mut self, store: &mut Store, effect: Effect) {
        if self.admit(&effect) {
            self.undo.push(store.apply_undoable(&effect));
            self.effects.push(effect);
        }
    }

    /// Like `emit`, for node housekeeping (expiry sweeps): an effect that
    /// does not fit is not applied and does not refuse the batch. Returns
    /// whether it was applied.
    pub fn try_emit(&mut self, store: &mut Store, effect: Effect) -> bool {
        if self.refused.is_some() || self.bytes.saturating_add(effect_bytes_bound(&effect)) > self.bytes_max {
            return false;
        }
        self.emit(store, effect);
        true
    }

    /// The effects are in the log: forget how to undo them and start over.
    pub fn commit(&mut self) {
        self.effects.clear();
        self.undo.clear();
        self.bytes = ENTRY_HEADER_BYTES_MAX;
        self.refused = None;
    }

    /// Undoes every applied effect, newest first, and starts over.
    pub fn rollback(&mut self, store: &mut Store) {
        while let Some(undo) = self.undo.pop() {
            store.undo(undo);
        }
        self.commit();
    }
}

/// Runs one write command into `batch` without deciding: the reply, or the
/// refusal error if an effect did not fit (the caller rolls back).
pub fn run(f: WriteFn, store: &mut Store, now_ms: u64, args: &[Bytes], batch: &mut Batch) -> Frame {
    let reply = f(&mut WriteCtx { store, now_ms, batch }, args);
    match batch.refusal() {
        Some(e) => Frame::Error(e),
        None => reply,
    }
}

/// Runs one write command all or nothing: on refusal the store is put back
/// as it was and the error is returned; otherwise the reply, with the
/// effects in `batch` for the caller to log (then [`Batch::commit`], or
/// [`Batch::rollback`] if logging fails).
pub fn execute(f: WriteFn, store: &mut Store, now_ms: u64, args: &[Bytes], batch: &mut Batch) -> Frame {
    debug_assert!(batch.is_empty() && batch.undo.is_empty(), "a batch starts empty");
    let reply = run(f, store, now_ms, args, batch);
    if batch.refused.is_some() {
        batch.rollback(store);
    }
    reply
}

#[cfg(test)]
mod tests;
