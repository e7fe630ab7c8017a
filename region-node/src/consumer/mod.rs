//! Consumer groups: who has received what, what is invisible until when, what is acked.
//!
//! RocketMQ 5's "pop" model: a receive takes up to N visible messages of a
//! topic from any of its queues, makes them invisible for a while and hands
//! out receipt handles; an ack finishes a message; a message not acked before
//! its deadline becomes visible again with `delivery_attempt + 1`.
//!
//! State per (group, topic, queue) is a cursor (`floor`, `next`) plus the state
//! of each offset between them (see [`crate::storage::GroupCursor`]). It is held
//! in memory and written through to storage on every change, in one batch per
//! operation, so a restart resumes exactly. A group seen for the first time is
//! created on the spot at the queue's earliest retained offset, or at its end
//! when the topic says `consume_from = "latest"`.
//!
//! Delay messages use the same machinery: an offset whose delivery time lies
//! in the future is parked as in flight with attempt 0 and that time as its
//! deadline, so it surfaces as attempt 1 once the time has come.
//!
//! All methods block on storage; async callers use `spawn_blocking`.

mod filter;
mod handle;

pub use filter::{FilterError, TagFilter};
pub use handle::{MalformedHandle, ReceiptHandle};

use crate::storage::{GroupCursor, GroupQueueKey, GroupWrite, LogStore, OffsetState, StorageError};
use meridian_proto::meridian::v1::Record;
use meridian_topology::ConsumeFrom;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::watch;

/// Most queue entries read from storage at once while looking for messages.
const READ_CHUNK: usize = 256;

/// Errors of consumer-group operations.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("receipt handle `{handle}` is not valid: {reason}")]
    InvalidReceiptHandle {
        handle: String,
        reason: &'static str,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// One message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub record: Record,
    pub queue_id: i32,
    pub offset: u64,
    pub attempt: u32,
    pub handle: ReceiptHandle,
}

/// What a receive asks for.
#[derive(Debug, Clone)]
pub struct ReceiveRequest<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    pub queue_count: u16,
    pub consume_from: ConsumeFrom,
    pub filter: &'a TagFilter,
    pub max_messages: usize,
    /// Stop adding messages once their bodies reach this many bytes (at
    /// least one message is always returned when one is visible).
    pub max_bytes: usize,
    pub invisible_ms: i64,
    pub now_ms: i64,
}

/// What a receive found.
#[derive(Debug, Default)]
pub struct Received {
    pub deliveries: Vec<Delivery>,
    /// Body bytes of the deliveries.
    pub bytes: usize,
    /// The earliest time an invisible message of these queues becomes visible
    /// again (for long polling to wake up), if any.
    pub next_deadline_ms: Option<i64>,
}

impl Received {
    fn is_full(&self, request: &ReceiveRequest<'_>) -> bool {
        self.deliveries.len() >= request.max_messages || self.bytes >= request.max_bytes
    }

    fn push(&mut self, delivery: Delivery) {
        self.bytes += delivery
            .record
            .message
            .as_ref()
            .map_or(0, |message| message.body.len());
        self.deliveries.push(delivery);
    }
}

#[derive(Debug, Default)]
struct QueueState {
    cursor: GroupCursor,
    offsets: BTreeMap<u64, OffsetState>,
}

/// The consumer-group engine of one node.
pub struct ConsumerEngine<S> {
    store: Arc<S>,
    region: String,
    groups: Mutex<HashMap<GroupQueueKey, QueueState>>,
    rotation: AtomicUsize,
    /// Counts invisibility changes, so that waiting receives re-check: a
    /// shortened invisibility (a push consumer's nack) must not wait for
    /// the end of a long poll that started before it.
    invisibility_changes: watch::Sender<u64>,
}

impl<S: LogStore> ConsumerEngine<S> {
    /// Loads every stored group state.
    pub fn load(store: Arc<S>, region: String) -> Result<Self, StorageError> {
        let groups = store
            .load_groups()?
            .into_iter()
            .map(|state| {
                let queue = QueueState {
                    cursor: state.cursor,
                    offsets: state.offsets,
                };
                (state.key, queue)
            })
            .collect();
        Ok(Self {
            store,
            region,
            groups: Mutex::new(groups),
            rotation: AtomicUsize::new(0),
            invisibility_changes: watch::Sender::new(0),
        })
    }

    /// A receiver that sees a change whenever [`Self::change_invisible`]
    /// has moved a deadline.
    pub fn subscribe_invisibility_changes(&self) -> watch::Receiver<u64> {
        self.invisibility_changes.subscribe()
    }

    /// Takes up to `max_messages` visible messages from the topic's queues.
    pub fn receive(&self, request: &ReceiveRequest<'_>) -> Result<Received, ConsumerError> {
        let mut groups = self.groups.lock();
        let mut received = Received::default();
        let mut writes = Vec::new();
        let queue_count = usize::from(request.queue_count.max(1));
        let start = self.rotation.fetch_add(1, Ordering::Relaxed) % queue_count;
        for step in 0..queue_count {
            let queue_id = i32::try_from((start + step) % queue_count).unwrap_or(0);
            let key = GroupQueueKey {
                group: request.group.to_owned(),
                topic: request.topic.to_owned(),
                queue_id,
            };
            if !groups.contains_key(&key) {
                let bounds = self.store.queue_bounds(request.topic, queue_id)?;
                let position = match request.consume_from {
                    ConsumeFrom::Earliest => bounds.min,
                    ConsumeFrom::Latest => bounds.max,
                };
                let cursor = GroupCursor {
                    floor: position,
                    next: position,
                };
                groups.insert(
                    key.clone(),
                    QueueState {
                        cursor,
                        offsets: BTreeMap::new(),
                    },
                );
                writes.push(GroupWrite {
                    key: key.clone(),
                    cursor,
                    set: Vec::new(),
                    remove: Vec::new(),
                });
            }
            let Some(queue) = groups.get_mut(&key) else {
                continue;
            };
            if let Some(write) = self.fill_from_queue(&key, queue, request, &mut received)? {
                writes.push(write);
            }
        }
        if !writes.is_empty() {
            self.store.write_groups(writes)?;
        }
        Ok(received)
    }

    /// Redeliveries and new messages of one queue; returns the state change.
    fn fill_from_queue(
        &self,
        key: &GroupQueueKey,
        queue: &mut QueueState,
        request: &ReceiveRequest<'_>,
        received: &mut Received,
    ) -> Result<Option<GroupWrite>, ConsumerError> {
        let mut changed = BTreeSet::new();
        let now = request.now_ms;
        let deadline = now.saturating_add(request.invisible_ms);

        // Invisible messages whose time has come, oldest offset first.
        let due: Vec<(u64, u32)> = queue
            .offsets
            .iter()
            .filter_map(|(offset, state)| match state {
                OffsetState::InFlight {
                    deadline_ms,
                    attempt,
                } if *deadline_ms <= now => Some((*offset, *attempt)),
                _ => None,
            })
            .collect();
        for (offset, attempt) in due {
            if received.is_full(request) {
                break;
            }
            changed.insert(offset);
            let record = self
                .store
                .read_queue(&key.topic, key.queue_id, offset, 1)?
                .into_iter()
                .find(|(found, _)| *found == offset);
            let Some((_, record)) = record else {
                // No longer retained: nothing left to deliver.
                queue.offsets.insert(offset, OffsetState::Done);
                continue;
            };
            let attempt = attempt + 1;
            queue.offsets.insert(
                offset,
                OffsetState::InFlight {
                    deadline_ms: deadline,
                    attempt,
                },
            );
            received.push(self.delivery(key, offset, attempt, deadline, record));
        }

        // Messages never delivered to this group.
        let end = self.store.queue_bounds(&key.topic, key.queue_id)?.max;
        while !received.is_full(request) && queue.cursor.next < end {
            let entries = self.store.read_queue(
                &key.topic,
                key.queue_id,
                queue.cursor.next,
                READ_CHUNK.min(request.max_messages - received.deliveries.len()),
            )?;
            if entries.is_empty() {
                break;
            }
            for (offset, record) in entries {
                if offset < queue.cursor.next {
                    continue;
                }
                if received.is_full(request) {
                    break;
                }
                queue.cursor.next = offset + 1;
                changed.insert(offset);
                let message = record.message.as_ref();
                let tag = message.and_then(|message| message.tag.as_deref());
                let delivery_time = message.and_then(|message| message.delivery_timestamp_ms);
                if !request.filter.matches(tag) {
                    queue.offsets.insert(offset, OffsetState::Done);
                } else if let Some(time) = delivery_time.filter(|time| *time > now) {
                    queue.offsets.insert(
                        offset,
                        OffsetState::InFlight {
                            deadline_ms: time,
                            attempt: 0,
                        },
                    );
                } else {
                    queue.offsets.insert(
                        offset,
                        OffsetState::InFlight {
                            deadline_ms: deadline,
                            attempt: 1,
                        },
                    );
                    received.push(self.delivery(key, offset, 1, deadline, record));
                }
            }
        }

        let removed = advance_floor(queue);
        for (_, state) in queue.offsets.iter() {
            if let OffsetState::InFlight { deadline_ms, .. } = state {
                received.next_deadline_ms = Some(
                    received
                        .next_deadline_ms
                        .map_or(*deadline_ms, |next| next.min(*deadline_ms)),
                );
            }
        }
        if changed.is_empty() && removed.is_empty() {
            return Ok(None);
        }
        Ok(Some(write_for(key, queue, changed, removed)))
    }

    fn delivery(
        &self,
        key: &GroupQueueKey,
        offset: u64,
        attempt: u32,
        deadline_ms: i64,
        record: Record,
    ) -> Delivery {
        Delivery {
            record,
            queue_id: key.queue_id,
            offset,
            attempt,
            handle: ReceiptHandle {
                region: self.region.clone(),
                queue_id: key.queue_id,
                offset,
                attempt,
                deadline_ms,
            },
        }
    }

    /// Finishes the delivery named by `handle`. Acknowledging a message that
    /// is already finished is harmless and succeeds.
    pub fn ack(
        &self,
        group: &str,
        topic: &str,
        handle: &ReceiptHandle,
    ) -> Result<(), ConsumerError> {
        let mut groups = self.groups.lock();
        let (key, queue) = group_queue(&mut groups, group, topic, handle)?;
        if handle.offset < queue.cursor.floor {
            return Ok(());
        }
        match current(queue, handle) {
            Ok(()) => {}
            Err(Stale::Finished) => return Ok(()),
            Err(stale) => return Err(invalid(handle, stale.reason())),
        }
        queue.offsets.insert(handle.offset, OffsetState::Done);
        let removed = advance_floor(queue);
        let write = write_for(&key, queue, BTreeSet::from([handle.offset]), removed);
        self.store.write_groups(vec![write])?;
        Ok(())
    }

    /// Moves the invisibility deadline of a delivery to `now_ms + invisible_ms`
    /// and returns the handle that replaces `handle`.
    pub fn change_invisible(
        &self,
        group: &str,
        topic: &str,
        handle: &ReceiptHandle,
        invisible_ms: i64,
        now_ms: i64,
    ) -> Result<ReceiptHandle, ConsumerError> {
        let mut groups = self.groups.lock();
        let (key, queue) = group_queue(&mut groups, group, topic, handle)?;
        if handle.offset < queue.cursor.floor {
            return Err(invalid(handle, Stale::Finished.reason()));
        }
        current(queue, handle).map_err(|stale| invalid(handle, stale.reason()))?;
        let deadline_ms = now_ms.saturating_add(invisible_ms);
        let state = OffsetState::InFlight {
            deadline_ms,
            attempt: handle.attempt,
        };
        queue.offsets.insert(handle.offset, state);
        let write = write_for(&key, queue, BTreeSet::from([handle.offset]), Vec::new());
        self.store.write_groups(vec![write])?;
        self.invisibility_changes
            .send_modify(|changes| *changes = changes.wrapping_add(1));
        Ok(ReceiptHandle {
            deadline_ms,
            ..handle.clone()
        })
    }
}

/// Why a handle no longer names the current delivery of its offset.
#[derive(Debug, Clone, Copy)]
enum Stale {
    Finished,
    Superseded,
    NeverDelivered,
}

impl Stale {
    fn reason(self) -> &'static str {
        match self {
            Self::Finished => "the message is already acknowledged",
            Self::Superseded => {
                "the message was redelivered or its invisibility changed; use the newest handle"
            }
            Self::NeverDelivered => "the message was never delivered",
        }
    }
}

/// The state of the group queue a handle points into.
fn group_queue<'a>(
    groups: &'a mut HashMap<GroupQueueKey, QueueState>,
    group: &str,
    topic: &str,
    handle: &ReceiptHandle,
) -> Result<(GroupQueueKey, &'a mut QueueState), ConsumerError> {
    let key = GroupQueueKey {
        group: group.to_owned(),
        topic: topic.to_owned(),
        queue_id: handle.queue_id,
    };
    let queue = groups
        .get_mut(&key)
        .ok_or_else(|| invalid(handle, "no delivery to this group on this queue"))?;
    Ok((key, queue))
}

/// Whether `handle` names the current, unfinished delivery of its offset.
fn current(queue: &QueueState, handle: &ReceiptHandle) -> Result<(), Stale> {
    match queue.offsets.get(&handle.offset) {
        Some(OffsetState::InFlight {
            deadline_ms,
            attempt,
        }) if *attempt == handle.attempt && *deadline_ms == handle.deadline_ms => Ok(()),
        Some(OffsetState::InFlight { .. }) => Err(Stale::Superseded),
        Some(OffsetState::Done) => Err(Stale::Finished),
        None => Err(Stale::NeverDelivered),
    }
}

fn invalid(handle: &ReceiptHandle, reason: &'static str) -> ConsumerError {
    ConsumerError::InvalidReceiptHandle {
        handle: handle.to_string(),
        reason,
    }
}

/// Moves the floor over finished offsets; returns the offsets it passed.
fn advance_floor(queue: &mut QueueState) -> Vec<u64> {
    let mut removed = Vec::new();
    while queue.cursor.floor < queue.cursor.next {
        match queue.offsets.get(&queue.cursor.floor) {
            Some(OffsetState::InFlight { .. }) => break,
            Some(OffsetState::Done) => {
                queue.offsets.remove(&queue.cursor.floor);
                removed.push(queue.cursor.floor);
            }
            // Not tracked: finished before (e.g. filtered out and compacted).
            None => {}
        }
        queue.cursor.floor += 1;
    }
    removed
}

fn write_for(
    key: &GroupQueueKey,
    queue: &QueueState,
    changed: BTreeSet<u64>,
    removed: Vec<u64>,
) -> GroupWrite {
    let mut set = Vec::new();
    let mut remove = removed;
    for offset in changed {
        match queue.offsets.get(&offset) {
            Some(state) => set.push((offset, *state)),
            None if !remove.contains(&offset) => remove.push(offset),
            None => {}
        }
    }
    GroupWrite {
        key: key.clone(),
        cursor: queue.cursor,
        set,
        remove,
    }
}

#[cfg(test)]
mod tests;
