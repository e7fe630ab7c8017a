//! An in-memory [`LogStore`]: the reference the RocksDB store is checked
//! against, and a fast store for tests of the layers above storage.
//!
//! It keeps the same semantics as [`RocksStore`](super::RocksStore) —
//! validation before any write, duplicates within one batch, gap-free
//! sequences and offsets, all-or-nothing batches — but nothing survives the
//! process, so the flush mode does not apply. One mutex guards everything:
//! simplicity matters more here than concurrency.

use super::{
    Appended, Enqueued, GroupCursor, GroupQueueKey, GroupQueueState, GroupWrite, IndexLookup,
    LocalMessage, LogStore, MessageIndex, MessageLocation, OffsetState, OpenTransaction,
    QueryPosition, QueueBounds, Retention, StorageError, TransactionEnded, Trimmed, codec,
    validate_for_append,
};
use meridian_proto::meridian::v1::{CatalogChange, Record};
use parking_lot::Mutex;
use prost::Message as _;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Where a message is: sequence, queue offset (`None` while in the timer index).
type Location = (u64, Option<u64>);

/// An in-memory [`LogStore`]; see the module docs.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Sequence → record, `sequence` set.
    log: BTreeMap<u64, Record>,
    /// The highest sequence ever assigned (retention may have removed it).
    last_sequence: u64,
    /// [`LogStore::trim_control_records`]'s cursor.
    control_floor: u64,
    /// (topic, queue id) → its entries.
    queues: BTreeMap<(String, i32), MemoryQueue>,
    /// Dedup id → (sequence, queue offset; `None` for acknowledgements).
    dedup_ids: HashMap<Vec<u8>, (u64, Option<u64>)>,
    /// (message dedup id, ack sequence) of held acknowledgements.
    held_acks: BTreeSet<(Vec<u8>, u64)>,
    /// (topic, client message id) of local-origin records → content digest
    /// → (sequence, queue offset; `None` while in the timer index).
    local_messages: HashMap<(String, String), HashMap<codec::ContentDigest, Location>>,
    /// (delivery time, sequence) of messages waiting to join their queue.
    timers: BTreeSet<(i64, u64)>,
    /// Sequence of an open transaction's half message → (checks, last check ms).
    transactions: BTreeMap<u64, (u32, i64)>,
    /// The `index` keys of the RocksDB layout (`codec::index_keys`).
    index: BTreeSet<Vec<u8>>,
    groups: BTreeMap<GroupQueueKey, (GroupCursor, BTreeMap<u64, OffsetState>)>,
    meta: BTreeMap<String, Vec<u8>>,
}

/// One consume queue.
#[derive(Debug, Default)]
struct MemoryQueue {
    /// Offset → entry.
    entries: BTreeMap<u64, codec::QueueEntry>,
    /// The offset below which retention removed everything.
    floor: u64,
}

impl MemoryQueue {
    /// Appends a message's entry; returns its offset.
    fn push(&mut self, sequence: u64, queued_at_ms: i64, bytes: usize) -> u64 {
        let (offset, cumulative) = match self.entries.last_key_value() {
            Some((&last, entry)) => (last + 1, entry.cumulative_bytes.unwrap_or(0)),
            None => (self.floor, 0),
        };
        self.entries.insert(
            offset,
            codec::QueueEntry {
                sequence,
                queued_at_ms: Some(queued_at_ms),
                cumulative_bytes: Some(
                    cumulative.saturating_add(u64::try_from(bytes).unwrap_or(u64::MAX)),
                ),
            },
        );
        offset
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl LogStore for MemoryStore {
    fn append(
        &self,
        records: Vec<Record>,
        local_region: &str,
    ) -> Result<Vec<Appended>, StorageError> {
        validate_for_append(&records)?;
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let mut results = Vec::with_capacity(records.len());
        for mut record in records {
            if let Some(&(sequence, queue_offset)) = inner.dedup_ids.get(&record.dedup_id) {
                results.push(Appended::Duplicate {
                    sequence,
                    queue_offset,
                });
                continue;
            }
            let local = LocalMessage::of(&record, local_region).map(|local| {
                (
                    (local.topic.to_owned(), local.client_message_id.to_owned()),
                    local.digest,
                )
            });
            let same_id = local
                .as_ref()
                .and_then(|(id, _)| inner.local_messages.get(id));
            if let Some(&(sequence, queue_offset)) = same_id
                .zip(local.as_ref())
                .and_then(|(digests, (_, digest))| digests.get(digest))
            {
                results.push(Appended::Duplicate {
                    sequence,
                    queue_offset,
                });
                continue;
            }
            let reused_client_id = same_id.is_some_and(|digests| !digests.is_empty());
            inner.last_sequence += 1;
            let sequence = inner.last_sequence;
            inner.index.extend(codec::index_keys(&record, sequence));
            if let Some(change) = record.catalog.as_ref() {
                let key = super::catalog_meta_key(change);
                let kept = inner
                    .meta
                    .get(&key)
                    .and_then(|value| CatalogChange::decode(value.as_slice()).ok());
                if super::newer_catalog_change(change, kept.as_ref()) {
                    inner.meta.insert(key, change.encode_to_vec());
                }
            }
            let Some(message) = record.message.as_ref() else {
                // An acknowledgement: in the log and deduplicated, in no queue.
                inner
                    .dedup_ids
                    .insert(record.dedup_id.clone(), (sequence, None));
                record.sequence = sequence;
                inner.log.insert(sequence, record);
                results.push(Appended::Stored {
                    sequence,
                    queue_offset: None,
                    reused_client_id: false,
                });
                continue;
            };
            let queue_offset = match message.delivery_timestamp_ms {
                _ if super::is_half_message(message) => {
                    inner.transactions.insert(sequence, (0, 0));
                    None
                }
                Some(due) => {
                    inner.timers.insert((due, sequence));
                    None
                }
                None => {
                    let bytes = codec::record_size(&record);
                    let queue = inner
                        .queues
                        .entry((message.topic.clone(), message.queue_id))
                        .or_default();
                    Some(queue.push(sequence, codec::stored_at_ms(message), bytes))
                }
            };
            inner
                .dedup_ids
                .insert(record.dedup_id.clone(), (sequence, queue_offset));
            if let Some((id, digest)) = local {
                inner
                    .local_messages
                    .entry(id)
                    .or_default()
                    .insert(digest, (sequence, queue_offset));
            }
            record.sequence = sequence;
            inner.log.insert(sequence, record);
            results.push(Appended::Stored {
                sequence,
                queue_offset,
                reused_client_id,
            });
        }
        Ok(results)
    }

    fn next_timer_due(&self) -> Result<Option<i64>, StorageError> {
        Ok(self.inner.lock().timers.first().map(|&(due, _)| due))
    }

    fn enqueue_due(&self, now_ms: i64, max: usize) -> Result<Vec<Enqueued>, StorageError> {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let due: Vec<(i64, u64)> = inner
            .timers
            .iter()
            .take_while(|(due, _)| *due <= now_ms)
            .take(max)
            .copied()
            .collect();
        let mut enqueued = Vec::with_capacity(due.len());
        for timer in due {
            inner.timers.remove(&timer);
            let (_, sequence) = timer;
            let Some(record) = inner.log.get(&sequence) else {
                return Err(StorageError::Corrupt {
                    what: "timer entry",
                    key: format!("{}/{sequence}", timer.0),
                    reason: format!("points at sequence {sequence}, which is not stored"),
                });
            };
            let Some(message) = record.message.as_ref() else {
                continue;
            };
            let queue = inner
                .queues
                .entry((message.topic.clone(), message.queue_id))
                .or_default();
            let offset = queue.push(sequence, timer.0, codec::record_size(record));
            inner
                .dedup_ids
                .insert(record.dedup_id.clone(), (sequence, Some(offset)));
            enqueued.push(Enqueued {
                topic: message.topic.clone(),
                queue_id: message.queue_id,
                offset,
                sequence,
                dedup_id: record.dedup_id.clone(),
            });
        }
        Ok(enqueued)
    }

    fn last_sequence(&self) -> Result<u64, StorageError> {
        Ok(self.inner.lock().last_sequence)
    }

    fn read_log(
        &self,
        after: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StorageError> {
        let inner = self.inner.lock();
        let mut records = Vec::new();
        let mut bytes = 0;
        for record in inner
            .log
            .range(after.saturating_add(1)..)
            .map(|(_, r)| r)
            .take(max_records)
        {
            let size = codec::record_size(record);
            if !records.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            records.push(record.clone());
        }
        Ok(records)
    }

    fn get(&self, sequence: u64) -> Result<Option<Record>, StorageError> {
        Ok(self.inner.lock().log.get(&sequence).cloned())
    }

    fn read_queue(
        &self,
        topic: &str,
        queue_id: i32,
        from_offset: u64,
        max: usize,
    ) -> Result<Vec<(u64, Record)>, StorageError> {
        let inner = self.inner.lock();
        let Some(queue) = inner.queues.get(&(topic.to_owned(), queue_id)) else {
            return Ok(Vec::new());
        };
        queue
            .entries
            .range(from_offset..)
            .take(max)
            .map(|(&offset, entry)| match inner.log.get(&entry.sequence) {
                Some(record) => Ok((offset, record.clone())),
                None => Err(StorageError::Corrupt {
                    what: "queue entry",
                    key: format!("{topic}/{queue_id}/{offset}"),
                    reason: format!("points at sequence {}, which is not stored", entry.sequence),
                }),
            })
            .collect()
    }

    fn queue_bounds(&self, topic: &str, queue_id: i32) -> Result<QueueBounds, StorageError> {
        let inner = self.inner.lock();
        let Some(queue) = inner.queues.get(&(topic.to_owned(), queue_id)) else {
            return Ok(QueueBounds::default());
        };
        let max = queue
            .entries
            .last_key_value()
            .map_or(queue.floor, |(&last, _)| last + 1);
        let min = queue
            .entries
            .first_key_value()
            .map_or(max, |(&first, _)| first);
        Ok(QueueBounds { min, max })
    }

    fn offset_at_time(
        &self,
        topic: &str,
        queue_id: i32,
        time_ms: i64,
    ) -> Result<u64, StorageError> {
        let inner = self.inner.lock();
        let Some(queue) = inner.queues.get(&(topic.to_owned(), queue_id)) else {
            return Ok(0);
        };
        let end = queue
            .entries
            .last_key_value()
            .map_or(queue.floor, |(&last, _)| last + 1);
        Ok(queue
            .entries
            .iter()
            .find(|(_, entry)| entry.queued_at_ms.unwrap_or(i64::MIN) >= time_ms)
            .map_or(end, |(&offset, _)| offset))
    }

    fn trim_queue(
        &self,
        topic: &str,
        queue_id: i32,
        retention: &Retention,
        now_ms: i64,
        replicated_through: u64,
        max: usize,
    ) -> Result<Trimmed, StorageError> {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let Some(queue) = inner.queues.get_mut(&(topic.to_owned(), queue_id)) else {
            return Ok(Trimmed::default());
        };
        let Some((&last_offset, last)) = queue.entries.last_key_value() else {
            return Ok(Trimmed {
                removed: 0,
                min_offset: queue.floor,
            });
        };
        let last_cumulative = last.cumulative_bytes;
        let mut removed = 0;
        while removed < max {
            let Some((&offset, &entry)) = queue.entries.first_key_value() else {
                break;
            };
            let record = inner.log.get(&entry.sequence);
            if entry.sequence > replicated_through
                || entry.sequence >= inner.last_sequence
                || super::retention_keeps(
                    retention,
                    now_ms,
                    &entry,
                    record,
                    offset == last_offset,
                    last_cumulative,
                )
            {
                break;
            }
            queue.entries.remove(&offset);
            queue.floor = offset + 1;
            if let Some(record) = inner.log.remove(&entry.sequence) {
                for key in codec::index_keys(&record, entry.sequence) {
                    inner.index.remove(&key);
                }
                inner.dedup_ids.remove(&record.dedup_id);
                if let Some(message) = record.message.as_ref() {
                    let id = (message.topic.clone(), message.client_message_id.clone());
                    if let Some(digests) = inner.local_messages.get_mut(&id) {
                        digests.remove(&codec::content_digest(message));
                        if digests.is_empty() {
                            inner.local_messages.remove(&id);
                        }
                    }
                }
            }
            removed += 1;
        }
        let min_offset = queue
            .entries
            .first_key_value()
            .map_or(queue.floor, |(&first, _)| first);
        Ok(Trimmed {
            removed,
            min_offset,
        })
    }

    fn trim_control_records(
        &self,
        now_ms: i64,
        max_age_ms: &dyn Fn(&str) -> Option<i64>,
        replicated_through: u64,
        max: usize,
    ) -> Result<super::ControlTrimmed, StorageError> {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let walk: Vec<u64> = inner
            .log
            .range(inner.control_floor.saturating_add(1)..)
            .take(max)
            .map(|(&sequence, _)| sequence)
            .collect();
        let (mut removed, mut walked) = (0, 0);
        for sequence in walk {
            if sequence > replicated_through || sequence >= inner.last_sequence {
                break;
            }
            let Some(record) = inner.log.get(&sequence) else {
                continue;
            };
            let held = |message_dedup_id: &[u8]| {
                Ok(inner
                    .held_acks
                    .contains(&(message_dedup_id.to_vec(), sequence)))
            };
            match super::control_step(record, now_ms, max_age_ms, held)? {
                super::ControlStep::Stop => break,
                super::ControlStep::Skip => {}
                super::ControlStep::Remove => {
                    if let Some(record) = inner.log.remove(&sequence) {
                        inner.dedup_ids.remove(&record.dedup_id);
                        for key in codec::index_keys(&record, sequence) {
                            inner.index.remove(&key);
                        }
                    }
                    removed += 1;
                }
                super::ControlStep::RemoveRollback { message_dedup_id } => {
                    if let Some(record) = inner.log.remove(&sequence) {
                        inner.dedup_ids.remove(&record.dedup_id);
                    }
                    removed += 1;
                    if let Some(&(half, None)) = inner.dedup_ids.get(&message_dedup_id)
                        && !inner.transactions.contains_key(&half)
                        && half < inner.last_sequence
                    {
                        inner.dedup_ids.remove(&message_dedup_id);
                        if let Some(record) = inner.log.remove(&half) {
                            for key in codec::index_keys(&record, half) {
                                inner.index.remove(&key);
                            }
                            if let Some(message) = record.message.as_ref() {
                                let id = (message.topic.clone(), message.client_message_id.clone());
                                if let Some(digests) = inner.local_messages.get_mut(&id) {
                                    digests.remove(&codec::content_digest(message));
                                }
                            }
                        }
                        removed += 1;
                    }
                }
            }
            inner.control_floor = sequence;
            walked += 1;
        }
        Ok(super::ControlTrimmed { removed, walked })
    }

    fn query_messages(
        &self,
        topic: &str,
        index: MessageIndex<'_>,
        range: std::ops::Range<i64>,
        after: Option<QueryPosition>,
        limit: usize,
    ) -> Result<Vec<(QueryPosition, Record)>, StorageError> {
        let inner = self.inner.lock();
        let prefix = codec::message_index_prefix(topic, index);
        let (start, end) = super::query_bounds(&prefix, &range, after);
        let mut found = Vec::new();
        for key in inner.index.range(start..end) {
            if found.len() >= limit {
                break;
            }
            if !key.starts_with(&prefix) {
                break;
            }
            let (stored_ms, sequence) = codec::decode_position(key)?;
            if let Some(record) = inner.log.get(&sequence) {
                found.push((
                    QueryPosition {
                        stored_ms,
                        sequence,
                    },
                    record.clone(),
                ));
            }
        }
        Ok(found)
    }

    fn indexed_records(
        &self,
        lookup: IndexLookup<'_>,
        limit: usize,
    ) -> Result<Vec<Record>, StorageError> {
        let inner = self.inner.lock();
        let prefix = lookup.prefix();
        let mut records = Vec::new();
        for key in inner
            .index
            .range(prefix.clone()..)
            .take_while(|key| key.starts_with(&prefix))
            .take(limit)
        {
            let sequence = codec::indexed_sequence(key)?;
            records.extend(inner.log.get(&sequence).cloned());
        }
        Ok(records)
    }

    fn locate_message(&self, dedup_id: &[u8]) -> Result<Option<MessageLocation>, StorageError> {
        let inner = self.inner.lock();
        Ok(inner
            .dedup_ids
            .get(dedup_id)
            .map(|&(sequence, queue_offset)| MessageLocation {
                sequence,
                queue_offset,
                open_transaction: inner.transactions.contains_key(&sequence),
            }))
    }

    fn end_transaction(
        &self,
        message_dedup_id: &[u8],
        commit: bool,
        at_ms: i64,
    ) -> Result<TransactionEnded, StorageError> {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let Some(&(sequence, queue_offset)) = inner.dedup_ids.get(message_dedup_id) else {
            return Ok(TransactionEnded::NotStored);
        };
        if inner.transactions.remove(&sequence).is_none() {
            return Ok(TransactionEnded::NotOpen {
                sequence,
                committed: queue_offset.is_some(),
            });
        }
        if !commit {
            return Ok(TransactionEnded::RolledBack { sequence });
        }
        let Some(message) = inner
            .log
            .get(&sequence)
            .and_then(|record| record.message.as_ref())
        else {
            return Err(StorageError::Corrupt {
                what: "open transaction",
                key: sequence.to_string(),
                reason: "its half message is not in the log".into(),
            });
        };
        let bytes = inner.log.get(&sequence).map_or(0, codec::record_size);
        let queue = (message.topic.clone(), message.queue_id);
        let offset = inner
            .queues
            .entry(queue.clone())
            .or_default()
            .push(sequence, at_ms, bytes);
        inner
            .dedup_ids
            .insert(message_dedup_id.to_vec(), (sequence, Some(offset)));
        Ok(TransactionEnded::Committed(Enqueued {
            topic: queue.0,
            queue_id: queue.1,
            offset,
            sequence,
            dedup_id: message_dedup_id.to_vec(),
        }))
    }

    fn open_transactions(&self) -> Result<Vec<OpenTransaction>, StorageError> {
        Ok(self
            .inner
            .lock()
            .transactions
            .iter()
            .map(|(&sequence, &(checks, last_check_ms))| OpenTransaction {
                sequence,
                checks,
                last_check_ms,
            })
            .collect())
    }

    fn note_transaction_check(
        &self,
        sequence: u64,
        checks: u32,
        at_ms: i64,
    ) -> Result<bool, StorageError> {
        Ok(match self.inner.lock().transactions.get_mut(&sequence) {
            Some(entry) => {
                *entry = (checks, at_ms);
                true
            }
            None => false,
        })
    }

    fn find_message(&self, dedup_id: &[u8]) -> Result<Option<(u64, u64)>, StorageError> {
        Ok(self
            .inner
            .lock()
            .dedup_ids
            .get(dedup_id)
            .and_then(|&(sequence, offset)| Some((sequence, offset?))))
    }

    fn hold_ack(&self, message_dedup_id: &[u8], ack_sequence: u64) -> Result<(), StorageError> {
        self.inner
            .lock()
            .held_acks
            .insert((message_dedup_id.to_vec(), ack_sequence));
        Ok(())
    }

    fn take_held_acks(&self, message_dedup_id: &[u8]) -> Result<Vec<u64>, StorageError> {
        let mut inner = self.inner.lock();
        let held: Vec<(Vec<u8>, u64)> = inner
            .held_acks
            .range((message_dedup_id.to_vec(), 0)..=(message_dedup_id.to_vec(), u64::MAX))
            .cloned()
            .collect();
        for entry in &held {
            inner.held_acks.remove(entry);
        }
        Ok(held.into_iter().map(|(_, sequence)| sequence).collect())
    }

    fn find_dedup(&self, dedup_id: &[u8]) -> Result<Option<u64>, StorageError> {
        Ok(self
            .inner
            .lock()
            .dedup_ids
            .get(dedup_id)
            .map(|&(sequence, _)| sequence))
    }

    fn write_groups(&self, writes: Vec<GroupWrite>) -> Result<(), StorageError> {
        let mut inner = self.inner.lock();
        for write in writes {
            let (cursor, offsets) = inner.groups.entry(write.key).or_default();
            *cursor = write.cursor;
            offsets.extend(write.set);
            for offset in write.remove {
                offsets.remove(&offset);
            }
        }
        Ok(())
    }

    fn remove_group(&self, group: &str) -> Result<(), StorageError> {
        self.inner.lock().groups.retain(|key, _| key.group != group);
        Ok(())
    }

    fn load_groups(&self) -> Result<Vec<GroupQueueState>, StorageError> {
        Ok(self
            .inner
            .lock()
            .groups
            .iter()
            .map(|(key, (cursor, offsets))| GroupQueueState {
                key: key.clone(),
                cursor: *cursor,
                offsets: offsets.clone(),
            })
            .collect())
    }

    fn checkpoint(&self, peer: &str) -> Result<u64, StorageError> {
        let key = codec::checkpoint_key(peer);
        self.inner
            .lock()
            .meta
            .get(&key)
            .map_or(Ok(0), |value| codec::decode_checkpoint_value(&key, value))
    }

    fn advance_checkpoint(&self, peer: &str, sequence: u64) -> Result<u64, StorageError> {
        let key = codec::checkpoint_key(peer);
        let mut inner = self.inner.lock();
        let current = inner
            .meta
            .get(&key)
            .map_or(Ok(0), |value| codec::decode_checkpoint_value(&key, value))?;
        if sequence <= current {
            return Ok(current);
        }
        inner
            .meta
            .insert(key, codec::checkpoint_value(sequence).to_vec());
        Ok(sequence)
    }

    fn catalog(&self) -> Result<Vec<CatalogChange>, StorageError> {
        let inner = self.inner.lock();
        Ok(inner
            .meta
            .range(super::CATALOG_META_PREFIX.to_owned()..)
            .take_while(|(key, _)| key.starts_with(super::CATALOG_META_PREFIX))
            .filter_map(|(_, value)| CatalogChange::decode(value.as_slice()).ok())
            .collect())
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.inner.lock().meta.get(key).cloned())
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.inner
            .lock()
            .meta
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }
}
