//! Consumer groups: who has received what, what is invisible until when, what is acked.
//!
//! RocketMQ 5's "pop" model: a receive takes up to N visible messages of a
//! topic from any of its queues, makes them invisible for a while and hands
//! out receipt handles; an ack finishes a message; a message not acked before
//! its deadline becomes visible again with `delivery_attempt + 1`.
//!
//! State per (group, topic, queue) is a cursor (`floor`, `next`) plus the state
//! of each offset between them (see [`crate::storage::GroupCursor`]). It is held
//! in memory; every operation computes its change first, writes it to storage
//! in one batch (an ack of N handles is one write) and installs it in memory
//! only once the write succeeded (see `state`), so memory never claims what
//! storage lacks and a restart resumes exactly. A group seen for the first time is
//! created on the spot at the queue's earliest retained offset, or at its end
//! when the topic says `consume_from = "latest"`.
//!
//! Delay messages reach a queue only when due (storage's timer index and the
//! node's `timers` task). Should one be read while its delivery time is
//! still ahead by this receive's clock (the timer's clock ran a little
//! ahead), its offset is parked as in flight with attempt 0 and that time
//! as its deadline, so it surfaces as attempt 1 once the time has come.
//!
//! All methods block on storage; async callers use `spawn_blocking`.

mod filter;
mod handle;
mod poll;
mod sql;
mod start;
mod state;

pub use filter::{Filter, FilterError};
pub use handle::{MalformedHandle, ReceiptHandle};
pub use poll::{Clock, SystemClock, Try, WaitingReceives, Wakers, long_poll};

use crate::storage::{GroupCursor, GroupQueueKey, LogStore, OffsetState, StorageError};
use meridian_proto::meridian::v1::Record;
use meridian_topology::ConsumeFrom;
use parking_lot::{Mutex, RwLock};
use state::{QueueChange, QueueState, Staged};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::watch;

/// Consumer groups a node tracks at most: groups are created on a client's
/// first receive, so without a cap any client could grow the node's memory
/// and storage without bound by inventing group names.
pub const MAX_GROUPS: usize = 10_000;

/// Most queue entries read from storage at once while looking for messages.
const READ_CHUNK: usize = 256;

/// Ordered consumption: most messages of a queue waiting behind an earlier
/// message of their group (tracked, undelivered), beyond which a receive
/// stops reading the queue further.
const FIFO_LOOKAHEAD: usize = 1024;

/// The state of a message that waits behind an earlier one of its message
/// group (ordered consumption): "in flight" with attempt 0 and a deadline
/// long past, so that it is due, and its next delivery is attempt 1.
const WAITING: OffsetState = OffsetState::InFlight {
    deadline_ms: 0,
    attempt: 0,
};

/// How long a message being moved to the dead-letter topic stays invisible,
/// in ms: the move normally finishes within milliseconds; if it fails (the
/// append, a crash), the message is due again after this and the move is
/// tried again.
pub const DEAD_LETTER_RETRY_MS: i64 = 30_000;

/// Broadcast consumer instances (`<group>@<client id>`) that have not
/// received for this long are forgotten, in ms: their state is removed, so
/// the instances of clients that are gone (a restarted client has a new
/// client id) do not pile up towards [`MAX_GROUPS`].
pub const BROADCAST_INSTANCE_IDLE_MS: i64 = 24 * 60 * 60 * 1000;

/// Errors of consumer-group operations.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("receipt handle `{handle}` is not valid: {reason}")]
    InvalidReceiptHandle {
        handle: String,
        reason: &'static str,
    },
    #[error(
        "consumer group `{group}` would be new, but this node already tracks {limit} groups (the limit)"
    )]
    TooManyGroups { group: String, limit: usize },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Every group queue's state, each behind its own lock, and the names of
/// the groups. Entries are only ever added, so a queue's `Arc` stays the one
/// and only state of that queue once looked up.
#[derive(Debug, Default)]
struct GroupIndex {
    queues: HashMap<GroupQueueKey, Arc<Mutex<QueueState>>>,
    names: HashSet<String>,
}

/// A group's progress on one queue (see [`ConsumerEngine::progress`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueProgress {
    pub topic: String,
    pub queue_id: i32,
    /// Every offset below is finished (acknowledged or skipped).
    pub floor: u64,
    /// The next offset never delivered to the group.
    pub next: u64,
    /// Delivered and neither acknowledged nor given up.
    pub in_flight: u64,
    /// Held back (ordered consumption) or not due yet, undelivered.
    pub waiting: u64,
}

impl GroupIndex {
    /// Adds a group queue that did not exist, as `change` (written) makes it.
    fn insert_created(&mut self, change: QueueChange) {
        let key = change.key.clone();
        let mut created = QueueState::default();
        change.install(&mut created);
        self.names.insert(key.group.clone());
        self.queues.insert(key, Arc::new(Mutex::new(created)));
    }
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

/// One message to finish for a group, by an acknowledgement from another
/// region (see [`ConsumerEngine::finish_replicated`]).
#[derive(Debug, Clone, Copy)]
pub struct Finish<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    pub queue_id: i32,
    pub offset: u64,
    /// Where the group starts if this node has not seen it.
    pub consume_from: ConsumeFrom,
}

/// What a receive asks for.
#[derive(Debug, Clone)]
pub struct ReceiveRequest<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    pub queue_count: u16,
    pub consume_from: ConsumeFrom,
    pub filter: &'a Filter,
    pub max_messages: usize,
    /// Stop adding messages once their bodies reach this many bytes (at
    /// least one message is always returned when one is visible).
    pub max_bytes: usize,
    pub invisible_ms: i64,
    /// Deliveries of one message to the group at most; a message due again
    /// after that many goes to [`Received::dead_letters`] instead.
    pub max_attempts: u32,
    /// Ordered consumption: see [`ConsumerEngine::fill_in_order`].
    pub fifo: bool,
    pub now_ms: i64,
}

/// A message the group gave up on: delivered `max_attempts` times and due
/// again. It stays invisible for [`DEAD_LETTER_RETRY_MS`]; the caller
/// copies it to the dead-letter topic, then acknowledges `handle`.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub record: Record,
    /// The deliveries made.
    pub attempts: u32,
    /// Names the message's current (undelivered) invisibility, for the ack.
    pub handle: ReceiptHandle,
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
    /// The group queues this receive created: queue id and start offset.
    pub created: Vec<(i32, u64)>,
    /// Messages to move to the group's dead-letter topic.
    pub dead_letters: Vec<DeadLetter>,
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

/// The consumer-group engine of one node.
pub struct ConsumerEngine<S> {
    store: Arc<S>,
    region: String,
    /// Looked up under a read lock; written (and held for the whole
    /// operation) only by a receive that creates queues. Each queue's state
    /// has its own mutex, taken in ascending queue id order, so operations
    /// on different groups or topics never wait for each other.
    groups: RwLock<GroupIndex>,
    /// Consumer groups this node tracks at most (see [`MAX_GROUPS`]).
    max_groups: usize,
    rotation: AtomicUsize,
    /// Counts invisibility changes, so that waiting receives re-check: a
    /// shortened invisibility (a push consumer's nack) must not wait for
    /// the end of a long poll that started before it.
    invisibility_changes: watch::Sender<u64>,
    /// When each broadcast instance last received (ms); instances loaded
    /// at start count from the first sweep that sees them.
    instance_activity: Mutex<HashMap<String, i64>>,
}

impl<S: LogStore> ConsumerEngine<S> {
    /// Loads every stored group state.
    pub fn load(store: Arc<S>, region: String) -> Result<Self, StorageError> {
        let mut groups = GroupIndex::default();
        for state in store.load_groups()? {
            groups.names.insert(state.key.group.clone());
            let queue = QueueState {
                cursor: state.cursor,
                offsets: state.offsets,
            };
            groups.queues.insert(state.key, Arc::new(Mutex::new(queue)));
        }
        Ok(Self {
            store,
            region,
            groups: RwLock::new(groups),
            max_groups: MAX_GROUPS,
            rotation: AtomicUsize::new(0),
            invisibility_changes: watch::Sender::new(0),
            instance_activity: Mutex::new(HashMap::new()),
        })
    }

    /// Forgets the broadcast instances that have not received for
    /// `idle_ms`: removes their state from storage, then from memory.
    /// Returns their names.
    pub fn forget_idle_instances(
        &self,
        now_ms: i64,
        idle_ms: i64,
    ) -> Result<Vec<String>, StorageError> {
        let instances: Vec<String> = self
            .groups
            .read()
            .names
            .iter()
            .filter(|name| name.contains(meridian_topology::BROADCAST_INSTANCE_SEPARATOR))
            .cloned()
            .collect();
        let idle = |name: &str| {
            let mut activity = self.instance_activity.lock();
            let last = *activity.entry(name.to_owned()).or_insert(now_ms);
            now_ms.saturating_sub(last) >= idle_ms
        };
        let mut forgotten = Vec::new();
        for name in instances {
            if !idle(&name) {
                continue;
            }
            let mut index = self.groups.write();
            // Wait for operations already holding a queue of the instance,
            // then look again: a receive may just have come.
            let queues: Vec<Arc<Mutex<QueueState>>> = index
                .queues
                .iter()
                .filter(|(key, _)| key.group == name)
                .map(|(_, queue)| Arc::clone(queue))
                .collect();
            let _guards: Vec<_> = queues.iter().map(|queue| queue.lock()).collect();
            if !idle(&name) {
                continue;
            }
            self.store.remove_group(&name)?;
            index.queues.retain(|key, _| key.group != name);
            index.names.remove(&name);
            self.instance_activity.lock().remove(&name);
            forgotten.push(name);
        }
        Ok(forgotten)
    }

    /// Forgets consumer group `group` here, with its broadcast instances
    /// (`<group>@…`): removes their state from storage (one write per
    /// group), then from memory; in-flight handles become invalid. Returns
    /// how many groups (instances included) were forgotten.
    pub fn forget_group(&self, group: &str) -> Result<usize, StorageError> {
        let mut index = self.groups.write();
        let instance_prefix = format!("{group}{}", meridian_topology::BROADCAST_INSTANCE_SEPARATOR);
        let names: Vec<String> = index
            .names
            .iter()
            .filter(|name| *name == group || name.starts_with(&instance_prefix))
            .cloned()
            .collect();
        let queues: Vec<Arc<Mutex<QueueState>>> = index
            .queues
            .iter()
            .filter(|(key, _)| names.contains(&key.group))
            .map(|(_, queue)| Arc::clone(queue))
            .collect();
        let _guards: Vec<_> = queues.iter().map(|queue| queue.lock()).collect();
        for name in &names {
            self.store.remove_group(name)?;
            index.queues.retain(|key, _| key.group != *name);
            index.names.remove(name);
            self.instance_activity.lock().remove(name);
        }
        Ok(names.len())
    }

    /// Resets `group`'s progress on queues of `topic`: each (queue id,
    /// offset) of `positions` becomes the queue's next offset to deliver,
    /// with nothing in flight (in-flight handles become invalid). Queues the
    /// group never consumed are created there. Effective at once for
    /// running consumers; written durably before it is installed.
    pub fn reset(
        &self,
        group: &str,
        topic: &str,
        positions: &[(i32, u64)],
    ) -> Result<(), StorageError> {
        let mut index = self.groups.write();
        let queues: Vec<Option<Arc<Mutex<QueueState>>>> = positions
            .iter()
            .map(|(queue_id, _)| {
                index
                    .queues
                    .get(&GroupQueueKey::new(group, topic, *queue_id))
                    .cloned()
            })
            .collect();
        let mut guards: Vec<_> = queues
            .iter()
            .map(|queue| queue.as_ref().map(|queue| queue.lock()))
            .collect();
        let staged: Vec<Staged<'_>> = positions
            .iter()
            .zip(&guards)
            .map(|((queue_id, position), guard)| {
                let key = GroupQueueKey::new(group, topic, *queue_id);
                let cursor = GroupCursor {
                    floor: *position,
                    next: *position,
                };
                match guard {
                    Some(installed) => {
                        let mut staged = Staged::over(key, installed);
                        staged.reset(*position);
                        staged
                    }
                    None => Staged::create(key, cursor),
                }
            })
            .collect();
        let changes = self.persist(staged)?;
        for (change, guard) in changes.into_iter().zip(guards.iter_mut()) {
            match guard {
                Some(guard) => change.install(guard),
                None => index.insert_created(change),
            }
        }
        drop(guards);
        // Receives waiting for messages look again.
        self.invisibility_changes
            .send_modify(|changes| *changes = changes.wrapping_add(1));
        Ok(())
    }

    /// A group's progress on every queue it consumed here, in key order.
    pub fn progress(&self, group: &str) -> Vec<QueueProgress> {
        let index = self.groups.read();
        let mut progress: Vec<QueueProgress> = index
            .queues
            .iter()
            .filter(|(key, _)| key.group == group)
            .map(|(key, queue)| {
                let queue = queue.lock();
                let (mut in_flight, mut waiting) = (0, 0);
                for state in queue.offsets.values() {
                    match state {
                        OffsetState::InFlight { attempt: 0, .. } => waiting += 1,
                        OffsetState::InFlight { .. } => in_flight += 1,
                        OffsetState::Done => {}
                    }
                }
                QueueProgress {
                    topic: key.topic.clone(),
                    queue_id: key.queue_id,
                    floor: queue.cursor.floor,
                    next: queue.cursor.next,
                    in_flight,
                    waiting,
                }
            })
            .collect();
        progress.sort_by(|a, b| (&a.topic, a.queue_id).cmp(&(&b.topic, b.queue_id)));
        progress
    }

    /// The names of every consumer group this node tracks.
    pub fn group_names(&self) -> Vec<String> {
        self.groups.read().names.iter().cloned().collect()
    }

    /// A receiver that sees a change whenever [`Self::change_invisible`]
    /// may have made a message visible sooner.
    pub fn subscribe_invisibility_changes(&self) -> watch::Receiver<u64> {
        self.invisibility_changes.subscribe()
    }

    /// Takes up to `max_messages` visible messages from the topic's queues.
    /// On a storage error nothing is handed out and nothing changes.
    pub fn receive(&self, request: &ReceiveRequest<'_>) -> Result<Received, ConsumerError> {
        if request
            .group
            .contains(meridian_topology::BROADCAST_INSTANCE_SEPARATOR)
        {
            self.instance_activity
                .lock()
                .insert(request.group.to_owned(), request.now_ms);
        }
        let queue_count = usize::from(request.queue_count.max(1));
        let start = self.rotation.fetch_add(1, Ordering::Relaxed) % queue_count;
        // Keys by queue id (the locking order); visited from `start` round.
        let keys: Vec<GroupQueueKey> = (0..queue_count)
            .map(|queue_id| {
                GroupQueueKey::new(
                    request.group,
                    request.topic,
                    i32::try_from(queue_id).unwrap_or(0),
                )
            })
            .collect();
        let order: Vec<usize> = (0..queue_count)
            .map(|step| (start + step) % queue_count)
            .collect();

        // Every queue exists: each is locked on its own, the index is free.
        let existing: Option<Vec<Arc<Mutex<QueueState>>>> = {
            let index = self.groups.read();
            keys.iter()
                .map(|key| index.queues.get(key).cloned())
                .collect()
        };
        if let Some(queues) = existing {
            let mut guards: Vec<_> = queues.iter().map(|queue| queue.lock()).collect();
            let installed: Vec<Option<&QueueState>> =
                guards.iter().map(|guard| Some(&**guard)).collect();
            let (received, changes) = self.stage_receive(request, &keys, &order, &installed)?;
            for change in changes {
                let slot = usize::try_from(change.key.queue_id).unwrap_or(0);
                change.install(&mut guards[slot]);
            }
            return Ok(received);
        }

        // Some queue is new: creating it is done under the index's write
        // lock, so that two first receives cannot both create it.
        let mut index = self.groups.write();
        if !index.names.contains(request.group) && index.names.len() >= self.max_groups {
            return Err(ConsumerError::TooManyGroups {
                group: request.group.to_owned(),
                limit: self.max_groups,
            });
        }
        let queues: Vec<Option<Arc<Mutex<QueueState>>>> = keys
            .iter()
            .map(|key| index.queues.get(key).cloned())
            .collect();
        let mut guards: Vec<_> = queues
            .iter()
            .map(|queue| queue.as_ref().map(|queue| queue.lock()))
            .collect();
        let installed: Vec<Option<&QueueState>> = guards.iter().map(Option::as_deref).collect();
        let (received, changes) = self.stage_receive(request, &keys, &order, &installed)?;
        for change in changes {
            let slot = usize::try_from(change.key.queue_id).unwrap_or(0);
            match guards.get_mut(slot).and_then(Option::as_mut) {
                Some(guard) => change.install(guard),
                None => index.insert_created(change),
            }
        }
        Ok(received)
    }

    /// Stages a receive over the installed state of each queue (`None`: not
    /// created yet), visiting queues in `order`, and persists the changes.
    fn stage_receive(
        &self,
        request: &ReceiveRequest<'_>,
        keys: &[GroupQueueKey],
        order: &[usize],
        installed: &[Option<&QueueState>],
    ) -> Result<(Received, Vec<QueueChange>), ConsumerError> {
        let mut received = Received::default();
        let mut staged_queues = Vec::new();
        for &slot in order {
            let key = keys[slot].clone();
            let mut staged = match installed[slot] {
                Some(queue) => Staged::over(key, queue),
                None => {
                    let bounds = self.store.queue_bounds(request.topic, key.queue_id)?;
                    let position = match request.consume_from {
                        ConsumeFrom::Earliest => bounds.min,
                        ConsumeFrom::Latest => bounds.max,
                    };
                    let cursor = GroupCursor {
                        floor: position,
                        next: position,
                    };
                    received.created.push((key.queue_id, position));
                    Staged::create(key, cursor)
                }
            };
            if request.fifo {
                self.fill_in_order(&mut staged, request, &mut received)?;
            } else {
                self.fill_from_queue(&mut staged, request, &mut received)?;
            }
            if staged.is_changed() {
                staged_queues.push(staged);
            }
        }
        let changes = if received.created.is_empty() {
            self.persist_relaxed(staged_queues)?
        } else {
            self.persist(staged_queues)?
        };
        Ok((received, changes))
    }

    /// The record at `offset` of a group queue's consume queue; `None` when
    /// it is no longer retained.
    fn read_offset(
        &self,
        key: &GroupQueueKey,
        offset: u64,
    ) -> Result<Option<Record>, StorageError> {
        Ok(self
            .store
            .read_queue(&key.topic, key.queue_id, offset, 1)?
            .into_iter()
            .find(|(found, _)| *found == offset)
            .map(|(_, record)| record))
    }

    /// The installed state of a queue, if it exists.
    fn queue(&self, key: &GroupQueueKey) -> Option<Arc<Mutex<QueueState>>> {
        self.groups.read().queues.get(key).cloned()
    }

    /// Every queue's installed state, for tests to compare with storage.
    #[cfg(test)]
    fn snapshot(&self) -> BTreeMap<GroupQueueKey, QueueState> {
        self.groups
            .read()
            .queues
            .iter()
            .map(|(key, queue)| (key.clone(), queue.lock().clone()))
            .collect()
    }

    /// Writes the staged changes in one batch, durably (the region's flush
    /// mode); returns what to install.
    fn persist(&self, staged: Vec<Staged<'_>>) -> Result<Vec<QueueChange>, StorageError> {
        let (writes, changes): (Vec<_>, Vec<_>) = staged.into_iter().map(Staged::finish).unzip();
        if !writes.is_empty() {
            self.store.write_groups(writes)?;
        }
        Ok(changes)
    }

    /// [`Self::persist`] without waiting for the disk, for changes a crash
    /// may lose harmlessly: deliveries and invisibility changes (the
    /// message only becomes visible again sooner, as at-least-once allows).
    /// Acknowledgements and new group queues (a `latest` group's start must
    /// not move) always use [`Self::persist`].
    fn persist_relaxed(&self, staged: Vec<Staged<'_>>) -> Result<Vec<QueueChange>, StorageError> {
        let (writes, changes): (Vec<_>, Vec<_>) = staged.into_iter().map(Staged::finish).unzip();
        if !writes.is_empty() {
            self.store.write_groups_relaxed(writes)?;
        }
        Ok(changes)
    }

    /// Stages the redeliveries and new messages of one queue.
    fn fill_from_queue(
        &self,
        queue: &mut Staged<'_>,
        request: &ReceiveRequest<'_>,
        received: &mut Received,
    ) -> Result<(), ConsumerError> {
        let now = request.now_ms;
        let deadline = now.saturating_add(request.invisible_ms);
        let key = queue.key().clone();

        // Invisible messages whose time has come, oldest offset first.
        let mut due: Vec<(u64, u32)> = queue
            .offsets()
            .filter_map(|(offset, state)| match state {
                OffsetState::InFlight {
                    deadline_ms,
                    attempt,
                } if deadline_ms <= now => Some((offset, attempt)),
                _ => None,
            })
            .collect();
        due.sort_unstable();
        for (offset, attempt) in due {
            if received.is_full(request) {
                break;
            }
            let Some(record) = self.read_offset(&key, offset)? else {
                // No longer retained: nothing left to deliver.
                queue.insert(offset, OffsetState::Done);
                continue;
            };
            if !request.filter.matches(record.message.as_ref()) {
                // The group's subscription no longer takes it.
                queue.insert(offset, OffsetState::Done);
                continue;
            }
            self.stage_redelivery(queue, request, received, offset, attempt, record);
        }

        // Messages never delivered to this group.
        let end = self.store.queue_bounds(&key.topic, key.queue_id)?.max;
        while !received.is_full(request) && queue.cursor().next < end {
            let entries = self.store.read_queue(
                &key.topic,
                key.queue_id,
                queue.cursor().next,
                READ_CHUNK.min(request.max_messages - received.deliveries.len()),
            )?;
            if entries.is_empty() {
                break;
            }
            for (offset, record) in entries {
                if offset < queue.cursor().next {
                    continue;
                }
                if received.is_full(request) {
                    break;
                }
                queue.cursor_mut().next = offset + 1;
                if queue.get(offset) == Some(OffsetState::Done) {
                    // Acknowledged in another region before it was delivered here.
                    continue;
                }
                let message = record.message.as_ref();
                let delivery_time = message.and_then(|message| message.delivery_timestamp_ms);
                if !request.filter.matches(message) {
                    queue.insert(offset, OffsetState::Done);
                } else if let Some(time) = delivery_time.filter(|time| *time > now) {
                    queue.insert(
                        offset,
                        OffsetState::InFlight {
                            deadline_ms: time,
                            attempt: 0,
                        },
                    );
                } else {
                    queue.insert(
                        offset,
                        OffsetState::InFlight {
                            deadline_ms: deadline,
                            attempt: 1,
                        },
                    );
                    received.push(self.delivery(&key, offset, 1, deadline, record));
                }
            }
        }

        finish_fill(queue, received);
        Ok(())
    }

    /// Stages the next delivery of a due in-flight `offset` whose last
    /// delivery was `attempt` (0: never delivered), or, past the group's
    /// max attempts, its move to the dead-letter topic.
    fn stage_redelivery(
        &self,
        queue: &mut Staged<'_>,
        request: &ReceiveRequest<'_>,
        received: &mut Received,
        offset: u64,
        attempt: u32,
        record: Record,
    ) {
        if attempt >= request.max_attempts {
            let letter = self.stage_dead_letter(queue, request.now_ms, offset, attempt, record);
            received.dead_letters.push(letter);
            return;
        }
        let key = queue.key().clone();
        let deadline = request.now_ms.saturating_add(request.invisible_ms);
        let attempt = attempt + 1;
        queue.insert(
            offset,
            OffsetState::InFlight {
                deadline_ms: deadline,
                attempt,
            },
        );
        received.push(self.delivery(&key, offset, attempt, deadline, record));
    }

    /// Stages the move of `offset` (delivered `attempt` times) to the
    /// dead-letter topic: it stays invisible for [`DEAD_LETTER_RETRY_MS`]
    /// while the caller copies it and acknowledges the returned handle.
    fn stage_dead_letter(
        &self,
        queue: &mut Staged<'_>,
        now_ms: i64,
        offset: u64,
        attempt: u32,
        record: Record,
    ) -> DeadLetter {
        let retry_at = now_ms.saturating_add(DEAD_LETTER_RETRY_MS);
        queue.insert(
            offset,
            OffsetState::InFlight {
                deadline_ms: retry_at,
                attempt,
            },
        );
        let delivery = self.delivery(queue.key(), offset, attempt, retry_at, record);
        DeadLetter {
            record: delivery.record,
            attempts: attempt,
            handle: delivery.handle,
        }
    }

    /// Ordered consumption of one queue: offsets in order, and within each
    /// message group nothing is handed out while an earlier message of the
    /// group is invisible (in flight, or being moved to the dead-letter
    /// topic). A message whose invisibility ended is delivered again before
    /// anything later of its group; several consecutive messages of a group
    /// may go in one receive, in order. A new message behind an earlier one
    /// of its group is tracked as waiting ([`WAITING`]), at most
    /// [`FIFO_LOOKAHEAD`] per queue. Messages without a message group are
    /// not held back.
    fn fill_in_order(
        &self,
        queue: &mut Staged<'_>,
        request: &ReceiveRequest<'_>,
        received: &mut Received,
    ) -> Result<(), ConsumerError> {
        let now = request.now_ms;
        let key = queue.key().clone();
        // Message groups with an earlier message still invisible.
        let mut blocked: HashSet<String> = HashSet::new();
        let mut tracked: Vec<(u64, OffsetState)> = queue.offsets().collect();
        tracked.sort_unstable_by_key(|(offset, _)| *offset);
        let mut waiting = 0;
        for (offset, state) in tracked {
            let OffsetState::InFlight {
                deadline_ms,
                attempt,
            } = state
            else {
                continue;
            };
            let Some(record) = self.read_offset(&key, offset)? else {
                queue.insert(offset, OffsetState::Done);
                continue;
            };
            if deadline_ms <= now && !request.filter.matches(record.message.as_ref()) {
                // Due, and the group's subscription no longer takes it.
                queue.insert(offset, OffsetState::Done);
                continue;
            }
            let group = message_group(&record);
            let held = group.is_some_and(|group| blocked.contains(group));
            if deadline_ms > now || held || received.is_full(request) {
                if let Some(group) = group {
                    blocked.insert(group.to_owned());
                }
                if state == WAITING {
                    waiting += 1;
                }
                continue;
            }
            let before = received.dead_letters.len();
            let group = group.map(str::to_owned);
            self.stage_redelivery(queue, request, received, offset, attempt, record);
            if received.dead_letters.len() > before
                && let Some(group) = group
            {
                // The next of the group waits until the move is done.
                blocked.insert(group);
            }
        }

        let end = self.store.queue_bounds(&key.topic, key.queue_id)?.max;
        'read: while !received.is_full(request)
            && waiting < FIFO_LOOKAHEAD
            && queue.cursor().next < end
        {
            let entries =
                self.store
                    .read_queue(&key.topic, key.queue_id, queue.cursor().next, READ_CHUNK)?;
            if entries.is_empty() {
                break;
            }
            for (offset, record) in entries {
                if offset < queue.cursor().next {
                    continue;
                }
                if received.is_full(request) || waiting >= FIFO_LOOKAHEAD {
                    break 'read;
                }
                queue.cursor_mut().next = offset + 1;
                if queue.get(offset) == Some(OffsetState::Done) {
                    continue;
                }
                if !request.filter.matches(record.message.as_ref()) {
                    queue.insert(offset, OffsetState::Done);
                    continue;
                }
                if message_group(&record).is_some_and(|group| blocked.contains(group)) {
                    queue.insert(offset, WAITING);
                    waiting += 1;
                    continue;
                }
                self.stage_redelivery(queue, request, received, offset, 0, record);
            }
        }
        finish_fill(queue, received);
        Ok(())
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

    /// Finishes the delivery named by `handle`; see [`Self::ack_many`].
    #[cfg(test)]
    pub fn ack(
        &self,
        group: &str,
        topic: &str,
        handle: &ReceiptHandle,
    ) -> Result<(), ConsumerError> {
        self.ack_many(group, topic, std::slice::from_ref(handle))?
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Finishes the deliveries named by `handles`, in one storage write; one
    /// outcome per handle, in order. Acknowledging a message that is already
    /// finished is harmless and succeeds. On a storage error (the `Err`)
    /// none of them is finished.
    pub fn ack_many(
        &self,
        group: &str,
        topic: &str,
        handles: &[ReceiptHandle],
    ) -> Result<Vec<Result<(), ConsumerError>>, StorageError> {
        // Lock every queue the handles name, in ascending queue id order.
        let queue_ids: BTreeSet<i32> = handles.iter().map(|handle| handle.queue_id).collect();
        let queues: BTreeMap<i32, Arc<Mutex<QueueState>>> = queue_ids
            .into_iter()
            .filter_map(|queue_id| {
                self.queue(&GroupQueueKey::new(group, topic, queue_id))
                    .map(|queue| (queue_id, queue))
            })
            .collect();
        let mut guards: BTreeMap<i32, _> = queues
            .iter()
            .map(|(queue_id, queue)| (*queue_id, queue.lock()))
            .collect();
        let mut staged: BTreeMap<i32, Staged<'_>> = guards
            .iter()
            .map(|(queue_id, guard)| {
                let key = GroupQueueKey::new(group, topic, *queue_id);
                (*queue_id, Staged::over(key, guard))
            })
            .collect();
        let mut outcomes = Vec::with_capacity(handles.len());
        for handle in handles {
            match staged.get_mut(&handle.queue_id) {
                Some(queue) => outcomes.push(ack_staged(queue, handle)),
                None => outcomes.push(Err(invalid(handle, NO_DELIVERY))),
            }
        }
        // An ack may free messages waiting behind it in their message
        // group (ordered consumption): waiting receives look again.
        let frees_waiting = staged
            .values()
            .any(|queue| queue.is_changed() && queue.offsets().any(|(_, state)| state == WAITING));
        let changed = staged.into_values().filter(Staged::is_changed).collect();
        let changes = self.persist(changed)?;
        for change in changes {
            if let Some(guard) = guards.get_mut(&change.key.queue_id) {
                change.install(guard);
            }
        }
        if frees_waiting {
            self.invisibility_changes
                .send_modify(|changes| *changes = changes.wrapping_add(1));
        }
        Ok(outcomes)
    }

    /// Finishes, for their groups, the messages named by `finishes`, as
    /// acknowledgements made in another region do, in one storage write:
    /// whether a message was delivered here (an outstanding receipt handle
    /// then answers "already acknowledged"), is invisible, or was never
    /// delivered (it will be skipped). A group queue this node has not seen is
    /// created first, where a receive would have created it (`consume_from`);
    /// a message before the group's start, or already finished, changes
    /// nothing. Returns how many messages were finished.
    pub fn finish_replicated(&self, finishes: &[Finish<'_>]) -> Result<usize, ConsumerError> {
        if finishes.is_empty() {
            return Ok(0);
        }
        let keys: BTreeSet<GroupQueueKey> = finishes
            .iter()
            .map(|finish| GroupQueueKey::new(finish.group, finish.topic, finish.queue_id))
            .collect();
        let missing: Vec<&Finish<'_>> = finishes
            .iter()
            .filter(|finish| {
                self.queue(&GroupQueueKey::new(
                    finish.group,
                    finish.topic,
                    finish.queue_id,
                ))
                .is_none()
            })
            .collect();
        if !missing.is_empty() {
            self.create_queues(&missing)?;
        }
        // Lock every queue in key order (the locking order of ack_many is by
        // queue id within one group and topic; keys sort the same way).
        let queues: Vec<(GroupQueueKey, Arc<Mutex<QueueState>>)> = keys
            .into_iter()
            .filter_map(|key| self.queue(&key).map(|queue| (key, queue)))
            .collect();
        let mut guards: Vec<_> = queues.iter().map(|(_, queue)| queue.lock()).collect();
        let mut staged: Vec<Staged<'_>> = queues
            .iter()
            .zip(&guards)
            .map(|((key, _), guard)| Staged::over(key.clone(), guard))
            .collect();
        let mut finished = 0;
        for finish in finishes {
            let key = GroupQueueKey::new(finish.group, finish.topic, finish.queue_id);
            if let Some(queue) = staged.iter_mut().find(|queue| *queue.key() == key)
                && finish_staged(queue, finish.offset)
            {
                finished += 1;
            }
        }
        let changed: Vec<Staged<'_>> = staged.into_iter().filter(Staged::is_changed).collect();
        for change in self.persist(changed)? {
            if let Some(slot) = queues.iter().position(|(key, _)| *key == change.key) {
                change.install(&mut guards[slot]);
            }
        }
        Ok(finished)
    }

    /// Creates the group queues `finishes` name that do not exist yet, each
    /// at the position a first receive would take (none beyond
    /// [`MAX_GROUPS`] groups: those finishes are skipped).
    fn create_queues(&self, finishes: &[&Finish<'_>]) -> Result<(), ConsumerError> {
        let mut index = self.groups.write();
        let mut staged = Vec::new();
        let mut seen = BTreeSet::new();
        for finish in finishes {
            let key = GroupQueueKey::new(finish.group, finish.topic, finish.queue_id);
            if index.queues.contains_key(&key) || !seen.insert(key.clone()) {
                continue;
            }
            if !index.names.contains(finish.group) && index.names.len() >= self.max_groups {
                // Replication must not stall on it: the group's messages are
                // simply not finished here.
                tracing::warn!(
                    group = finish.group,
                    limit = self.max_groups,
                    "an acknowledgement from another region names a group this node cannot track"
                );
                continue;
            }
            let bounds = self.store.queue_bounds(finish.topic, finish.queue_id)?;
            let position = match finish.consume_from {
                ConsumeFrom::Earliest => bounds.min,
                ConsumeFrom::Latest => bounds.max,
            };
            staged.push(Staged::create(
                key,
                GroupCursor {
                    floor: position,
                    next: position,
                },
            ));
        }
        for change in self.persist(staged)? {
            index.insert_created(change);
        }
        Ok(())
    }

    /// Finds messages whose last delivery attempt ended (in flight, past
    /// their deadline, delivered `max_attempts(group)` times or more) in
    /// every group queue, and stages their move to the dead-letter topic as
    /// a receive would: so a message moves even when its group stopped
    /// receiving. Returns them per (group, topic).
    pub fn sweep_dead_letters(
        &self,
        now_ms: i64,
        max_attempts: impl Fn(&str) -> u32,
    ) -> Result<Vec<(String, String, Vec<DeadLetter>)>, ConsumerError> {
        // The offsets of a queue whose last attempt ended.
        let past_last_attempt = |key: &GroupQueueKey, queue: &QueueState| -> Vec<(u64, u32)> {
            let limit = max_attempts(&key.group);
            queue
                .offsets
                .iter()
                .filter_map(|(offset, state)| match *state {
                    OffsetState::InFlight {
                        deadline_ms,
                        attempt,
                    } if deadline_ms <= now_ms && attempt >= limit && attempt > 0 => {
                        Some((*offset, attempt))
                    }
                    _ => None,
                })
                .collect()
        };
        // Only queues with something to move are taken out of the index.
        let queues: Vec<(GroupQueueKey, Arc<Mutex<QueueState>>)> = self
            .groups
            .read()
            .queues
            .iter()
            .filter(|(key, queue)| !past_last_attempt(key, &queue.lock()).is_empty())
            .map(|(key, queue)| (key.clone(), Arc::clone(queue)))
            .collect();
        let mut swept: Vec<(String, String, Vec<DeadLetter>)> = Vec::new();
        for (key, queue) in queues {
            let mut guard = queue.lock();
            // Looked at again under the lock: a receive may have moved them.
            let due = past_last_attempt(&key, &guard);
            if due.is_empty() {
                continue;
            }
            let mut staged = Staged::over(key.clone(), &guard);
            let mut letters = Vec::new();
            for (offset, attempt) in due {
                match self.read_offset(&key, offset)? {
                    Some(record) => letters.push(self.stage_dead_letter(
                        &mut staged,
                        now_ms,
                        offset,
                        attempt,
                        record,
                    )),
                    None => staged.insert(offset, OffsetState::Done),
                }
            }
            staged.advance_floor();
            for change in self.persist_relaxed(vec![staged])? {
                change.install(&mut guard);
            }
            if !letters.is_empty() {
                swept.push((key.group.clone(), key.topic.clone(), letters));
            }
        }
        Ok(swept)
    }

    /// The message of the current delivery `handle` names (for a move to
    /// the dead-letter topic); an error if the handle is not current.
    pub fn delivered(
        &self,
        group: &str,
        topic: &str,
        handle: &ReceiptHandle,
    ) -> Result<Record, ConsumerError> {
        let key = GroupQueueKey::new(group, topic, handle.queue_id);
        let queue = self
            .queue(&key)
            .ok_or_else(|| invalid(handle, NO_DELIVERY))?;
        let guard = queue.lock();
        let staged = Staged::over(key, &guard);
        if handle.offset < staged.cursor().floor {
            return Err(invalid(handle, Stale::Finished.reason()));
        }
        current(&staged, handle).map_err(|stale| invalid(handle, stale.reason()))?;
        self.read_offset(staged.key(), handle.offset)?
            .ok_or_else(|| invalid(handle, "the message is no longer retained"))
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
        let key = GroupQueueKey::new(group, topic, handle.queue_id);
        let queue = self
            .queue(&key)
            .ok_or_else(|| invalid(handle, NO_DELIVERY))?;
        let mut guard = queue.lock();
        let mut staged = Staged::over(key, &guard);
        if handle.offset < staged.cursor().floor {
            return Err(invalid(handle, Stale::Finished.reason()));
        }
        current(&staged, handle).map_err(|stale| invalid(handle, stale.reason()))?;
        let deadline_ms = now_ms.saturating_add(invisible_ms);
        let state = OffsetState::InFlight {
            deadline_ms,
            attempt: handle.attempt,
        };
        staged.insert(handle.offset, state);
        for change in self.persist_relaxed(vec![staged])? {
            change.install(&mut guard);
        }
        // Waiting receives look again only if the message may come back
        // sooner than they planned for (a nack); a renewal pushes it later.
        if deadline_ms < handle.deadline_ms {
            self.invisibility_changes
                .send_modify(|changes| *changes = changes.wrapping_add(1));
        }
        Ok(ReceiptHandle {
            deadline_ms,
            ..handle.clone()
        })
    }
}

/// The message group of a message record, if it has a non-empty one.
fn message_group(record: &Record) -> Option<&str> {
    record
        .message
        .as_ref()
        .and_then(|message| message.message_group.as_deref())
        .filter(|group| !group.is_empty())
}

/// Ends a queue's fill: moves the floor, and notes the earliest deadline
/// of what stays invisible (for long polling; a message waiting behind an
/// earlier one of its group waits for that one's deadline or ack instead).
fn finish_fill(queue: &mut Staged<'_>, received: &mut Received) {
    queue.advance_floor();
    for (_, state) in queue.offsets() {
        if state == WAITING {
            continue;
        }
        if let OffsetState::InFlight { deadline_ms, .. } = state {
            received.next_deadline_ms = Some(
                received
                    .next_deadline_ms
                    .map_or(deadline_ms, |next| next.min(deadline_ms)),
            );
        }
    }
}

/// Why a handle's group has no state for its queue.
const NO_DELIVERY: &str = "no delivery to this group on this queue";

/// Stages the ack of one handle.
fn ack_staged(queue: &mut Staged<'_>, handle: &ReceiptHandle) -> Result<(), ConsumerError> {
    if handle.offset < queue.cursor().floor {
        return Ok(());
    }
    match current(queue, handle) {
        Ok(()) => {}
        Err(Stale::Finished) => return Ok(()),
        Err(stale) => return Err(invalid(handle, stale.reason())),
    }
    queue.insert(handle.offset, OffsetState::Done);
    queue.advance_floor();
    Ok(())
}

/// Stages the finish of `offset` from another region; whether it changed anything.
fn finish_staged(queue: &mut Staged<'_>, offset: u64) -> bool {
    if offset < queue.cursor().floor {
        return false;
    }
    match queue.get(offset) {
        Some(OffsetState::Done) => return false,
        // Between floor and next and not tracked: finished before.
        None if offset < queue.cursor().next => return false,
        Some(OffsetState::InFlight { .. }) | None => {}
    }
    queue.insert(offset, OffsetState::Done);
    queue.advance_floor();
    true
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

/// Whether `handle` names the current, unfinished delivery of its offset.
fn current(queue: &Staged<'_>, handle: &ReceiptHandle) -> Result<(), Stale> {
    match queue.get(handle.offset) {
        Some(OffsetState::InFlight {
            deadline_ms,
            attempt,
        }) if attempt == handle.attempt && deadline_ms == handle.deadline_ms => Ok(()),
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

#[cfg(test)]
mod tests;
