//! Storage for one region node, behind the narrow [`LogStore`] trait.
//!
//! The trait never names RocksDB: handlers, the consumer engine and the
//! replication API see only [`Record`]s, sequences, offsets and group state.
//! Two implementations exist — [`MemoryStore`] and [`RocksStore`] — and one
//! conformance suite (`conformance.rs`) runs against both.
//!
//! What is stored:
//! * the commit log: local sequence (1, 2, 3, … with no gaps, until
//!   retention removes messages) → record;
//! * consume queues: (topic, queue id, queue offset) → sequence, the time the
//!   message joined the queue and the queue's cumulative bytes; offsets of
//!   each queue start at 0 and have no gaps, except that retention
//!   ([`LogStore::trim_queue`]) removes entries from the head;
//! * the timer index: (delivery time, sequence) of each message with a
//!   delivery time that has not joined its queue yet (see
//!   [`LogStore::enqueue_due`]);
//! * open transactions: the sequence of each half message (a message of
//!   type TRANSACTION, in the log and the dedup index but in no queue) whose
//!   outcome is not known yet, with its check-back count (see
//!   [`LogStore::end_transaction`]);
//! * the deduplication index: dedup id → sequence, and (topic, client message
//!   id) → sequence for records that originated in this region;
//! * message indexes: per topic by key, by tag and by time (the time its
//!   origin stored it), and by client message id; and per message the trace
//!   records that mention it (see [`LogStore::query_messages`]);
//! * consumer-group state: per (group, topic, queue) a cursor plus the state of
//!   each offset between the cursor's floor and its next offset;
//! * small metadata values (replication checkpoints, settings), among them
//!   the newest change of each topic and consumer group the admin API made
//!   (see [`LogStore::catalog`]).
//!
//! Durability: every write call returns after the data is written; whether it
//! was also fsynced depends on the store's [`FlushMode`](meridian_topology::FlushMode)
//! (`sync` fsyncs the write-ahead log before returning, `async` does not).
//! All calls are blocking; async callers use `spawn_blocking` or a writer thread.

pub mod codec;
#[cfg(test)]
mod conformance;
#[cfg(test)]
mod failing;
#[cfg(test)]
mod memory;
#[cfg(feature = "rocksdb")]
mod rocks;

#[cfg(test)]
pub use failing::FailingStore;
#[cfg(test)]
pub use memory::MemoryStore;
#[cfg(feature = "rocksdb")]
pub use rocks::RocksStore;

use meridian_proto::meridian::v1::{CatalogChange, Record, RecordKind};
use std::collections::BTreeMap;

pub use codec::MessageIndex;

/// The log value codec, for the micro-benchmarks (`crate::bench_support`).
pub mod codec_for_bench {
    use meridian_proto::meridian::v1::Record;

    pub fn encode(record: &Record) -> Vec<u8> {
        super::codec::encode_log_value(record)
    }

    pub fn decode(value: &[u8]) -> Option<Record> {
        super::codec::decode_log_value(1, value).ok()
    }
}

/// A position in a message query's order: the time the message's origin
/// stored it (ms since the Unix epoch), then its local sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueryPosition {
    pub stored_ms: i64,
    pub sequence: u64,
}

/// Records found by an exact index (see [`LogStore::indexed_records`]).
#[derive(Debug, Clone, Copy)]
pub enum IndexLookup<'a> {
    /// Messages with this client message id (RocketMQ's message_id).
    MessageId(&'a str),
    /// Trace records that mention the message with this dedup id.
    Trace(&'a [u8]),
}

impl IndexLookup<'_> {
    fn prefix(&self) -> Vec<u8> {
        match self {
            IndexLookup::MessageId(id) => codec::message_id_prefix(id),
            IndexLookup::Trace(dedup_id) => codec::trace_prefix(dedup_id),
        }
    }
}

/// Where the message with a dedup id is stored, and whether it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLocation {
    pub sequence: u64,
    /// Its queue offset; `None` while it waits for its delivery time or its
    /// transaction's commit, and for a rolled-back half message.
    pub queue_offset: Option<u64>,
    /// Whether it is a half message whose transaction is open.
    pub open_transaction: bool,
}

/// The first and the end (exclusive) keys of a time-ordered index scan of
/// `prefix` over `range` after `after`.
fn query_bounds(
    prefix: &[u8],
    range: &std::ops::Range<i64>,
    after: Option<QueryPosition>,
) -> (Vec<u8>, Vec<u8>) {
    let from = codec::at_position(prefix, range.start, 0);
    let start = match after {
        Some(after) => {
            let next = match after.sequence.checked_add(1) {
                Some(sequence) => codec::at_position(prefix, after.stored_ms, sequence),
                None => codec::at_position(prefix, after.stored_ms.saturating_add(1), 0),
            };
            next.max(from)
        }
        None => from,
    };
    (start, codec::at_position(prefix, range.end, 0))
}

/// Length of a dedup id (a UUIDv7).
pub const DEDUP_ID_BYTES: usize = 16;

/// A message that left the timer index for its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub topic: String,
    pub queue_id: i32,
    pub offset: u64,
    pub sequence: u64,
    pub dedup_id: Vec<u8>,
}

/// A half message whose transaction has no outcome yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenTransaction {
    /// The half message's local sequence.
    pub sequence: u64,
    /// Check-backs sent to producers so far.
    pub checks: u32,
    /// When the last check-back was sent (ms since the Unix epoch), 0 before the first.
    pub last_check_ms: i64,
}

/// What [`LogStore::end_transaction`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionEnded {
    /// The half message joined its queue.
    Committed(Enqueued),
    /// The half message will never be delivered.
    RolledBack { sequence: u64 },
    /// The transaction had ended before (`committed`: its message is in a
    /// queue), or the message is not a half message.
    NotOpen { sequence: u64, committed: bool },
    /// No message with this dedup id is stored.
    NotStored,
}

/// A store's memory now, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorageMemory {
    /// What the store may use (the region's `storage_memory_mb`).
    pub budget_bytes: u64,
    /// Memtables of every column family: writes not yet in tables.
    pub memtable_bytes: u64,
    /// The block cache's use, including what it reserves for memtables.
    pub cache_bytes: u64,
    /// Tables' index and filter blocks kept outside the cache (near 0:
    /// the store puts them in the cache).
    pub table_reader_bytes: u64,
}

/// Result of appending one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored at this local sequence and queue offset (`None` for records
    /// that join no queue: acknowledgements; and for messages with a
    /// delivery time, which join their queue when due). `reused_client_id`: a
    /// different message (other content) with the same topic and client
    /// message id was already stored, so the client's ids are not unique
    /// (both are kept).
    Stored {
        sequence: u64,
        queue_offset: Option<u64>,
        reused_client_id: bool,
    },
    /// Skipped: the same dedup id, or, for a record that originated here, the
    /// same topic, client message id and content (a SHA-256 digest of it),
    /// is already stored at this sequence and queue offset (`None` only for
    /// entries stored before offsets were recorded with them).
    Duplicate {
        sequence: u64,
        queue_offset: Option<u64>,
    },
}

/// Identifies one consume queue of one consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupQueueKey {
    pub group: String,
    pub topic: String,
    pub queue_id: i32,
}

impl GroupQueueKey {
    pub fn new(group: impl Into<String>, topic: impl Into<String>, queue_id: i32) -> Self {
        Self {
            group: group.into(),
            topic: topic.into(),
            queue_id,
        }
    }
}

/// Progress of a group on one queue. Every offset below `floor` is finished
/// (acknowledged or skipped); offsets in `floor..next` have an [`OffsetState`]
/// or are finished; offsets from `next` on were never delivered here, and
/// are [`OffsetState::Done`] when another region's acknowledgement finished
/// them first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCursor {
    pub floor: u64,
    pub next: u64,
}

/// State of one delivered offset above the floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetState {
    /// Delivered and invisible until `deadline_ms` (ms since the Unix epoch);
    /// `attempt` is the delivery attempt (1 for the first delivery).
    InFlight { deadline_ms: i64, attempt: u32 },
    /// Acknowledged (or filtered out) but above the floor.
    Done,
}

/// One atomic change of a group queue's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupWrite {
    pub key: GroupQueueKey,
    pub cursor: GroupCursor,
    /// Offsets whose state is set (inserted or replaced).
    pub set: Vec<(u64, OffsetState)>,
    /// Offsets whose state is removed (they fell below the floor).
    pub remove: Vec<u64>,
}

/// The stored state of one group queue, as loaded at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupQueueState {
    pub key: GroupQueueKey,
    pub cursor: GroupCursor,
    pub offsets: BTreeMap<u64, OffsetState>,
}

/// Offsets of one consume queue: `min..max`, `max` being the next offset to write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueBounds {
    pub min: u64,
    pub max: u64,
}

/// What a consume queue keeps (see [`LogStore::trim_queue`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages are removed once they joined their queue this long ago (ms).
    pub max_age_ms: i64,
    /// Oldest messages first are removed while the queue holds more than
    /// this many bytes of encoded records; the newest one always stays.
    pub max_bytes: Option<u64>,
}

/// What one [`LogStore::trim_queue`] call removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Messages removed.
    pub removed: usize,
    /// The queue's first offset after the call.
    pub min_offset: u64,
}

/// What one [`LogStore::trim_control_records`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControlTrimmed {
    /// Records removed.
    pub removed: usize,
    /// Records walked past or removed (less than `max`: the walk stopped).
    pub walked: usize,
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("failed to open the store at {path}")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("storage operation `{operation}` failed")]
    Backend {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("corrupt {what} at key {key}: {reason}")]
    Corrupt {
        what: &'static str,
        key: String,
        reason: String,
    },
    #[error("invalid record for append: {reason}")]
    InvalidRecord { reason: String },
}

/// The node's storage. See the module docs for what is stored and when it is durable.
pub trait LogStore: Send + Sync + 'static {
    /// Appends records in one atomic batch, in order. Each record gets the next
    /// local sequence and, for a message, the next offset of its (topic,
    /// queue); `record.sequence` on input is ignored. A record must carry a
    /// 16-byte `dedup_id`, an `origin_region`, and a `message` with a topic
    /// or an `ack` (kind `ACK`) with a group, a topic and a 16-byte message
    /// dedup id; else `InvalidRecord` and nothing is written. Duplicates (see
    /// [`Appended::Duplicate`]) are skipped, including duplicates within the
    /// same batch.
    fn append(
        &self,
        records: Vec<Record>,
        local_region: &str,
    ) -> Result<Vec<Appended>, StorageError>;

    /// The highest sequence stored, 0 when the log is empty.
    fn last_sequence(&self) -> Result<u64, StorageError>;

    /// What the store's memory holds now; `None` for a store without a
    /// memory budget (the in-memory store of tests).
    fn memory(&self) -> Result<Option<StorageMemory>, StorageError> {
        Ok(None)
    }

    /// The earliest delivery time (ms since the Unix epoch) of a message
    /// waiting in the timer index, if any waits.
    ///
    /// A message record with a `delivery_timestamp_ms` is appended to the
    /// log and the dedup index like any other, but joins no queue: it waits
    /// in the timer index, keyed by its delivery time, until
    /// [`LogStore::enqueue_due`] moves it to its queue, where it takes the
    /// next offset (a timer message belongs to its queue from its due time,
    /// as in RocketMQ). Undue messages cost consumers nothing.
    fn next_timer_due(&self) -> Result<Option<i64>, StorageError>;

    /// Moves up to `max` messages whose delivery time is at or before
    /// `now_ms` from the timer index to their queues, earliest first, in one
    /// atomic write (durable like an append); their dedup entries get the
    /// queue offset. Returns what moved.
    fn enqueue_due(&self, now_ms: i64, max: usize) -> Result<Vec<Enqueued>, StorageError>;

    /// Records with sequence > `after`, in order, at most `max_records` and
    /// stopping once `max_bytes` of encoded records are reached (at least one
    /// record is returned when any exists). `sequence` is set on each record.
    ///
    /// A record counts for its protobuf encoding as returned
    /// (`prost::Message::encoded_len`); a record that would take the total
    /// above `max_bytes` is left for the next call unless it is the first.
    /// `max_records == 0` returns nothing.
    fn read_log(
        &self,
        after: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StorageError>;

    /// The record stored at `sequence`, if any.
    fn get(&self, sequence: u64) -> Result<Option<Record>, StorageError>;

    /// Entries of a consume queue from `from_offset`, at most `max`: (offset, record).
    fn read_queue(
        &self,
        topic: &str,
        queue_id: i32,
        from_offset: u64,
        max: usize,
    ) -> Result<Vec<(u64, Record)>, StorageError>;

    /// Offsets of a consume queue; `0..0` for a queue never written. Once
    /// retention removed entries, `min` is the first one left (`min ==
    /// max` when none is): offsets never restart.
    fn queue_bounds(&self, topic: &str, queue_id: i32) -> Result<QueueBounds, StorageError>;

    /// The first offset of a consume queue whose message joined it at or
    /// after `time_ms` (its queue's next offset when none did), found by a
    /// binary search over the entries' times: messages join queues in time
    /// order (up to clock steps), so this is where a consumer resetting to
    /// that time starts.
    fn offset_at_time(&self, topic: &str, queue_id: i32, time_ms: i64)
    -> Result<u64, StorageError>;

    /// Removes from the head of a consume queue, oldest first and at most
    /// `max`, the messages `retention` no longer keeps at `now_ms`: their
    /// queue entries, log records and dedup entries, in one atomic write.
    /// It stops at the first message kept, and never removes a message
    /// whose sequence is above `replicated_through` (not yet confirmed by
    /// every region it goes to), nor the log's last record (sequences
    /// continue from it after a restart). A message's age counts from when it joined
    /// its queue (a delay message: its due time; older entries that lack
    /// that time: their store time). A later copy of a removed message (a
    /// replication resend) is stored again: the dedup window is the
    /// retention.
    fn trim_queue(
        &self,
        topic: &str,
        queue_id: i32,
        retention: &Retention,
        now_ms: i64,
        replicated_through: u64,
        max: usize,
    ) -> Result<Trimmed, StorageError>;

    /// Messages of `topic` in `index` whose origin stored them within
    /// `range` (ms since the Unix epoch), in (stored time, sequence) order,
    /// after the position `after`, at most `limit`: read through the index,
    /// never by scanning the log.
    fn query_messages(
        &self,
        topic: &str,
        index: MessageIndex<'_>,
        range: std::ops::Range<i64>,
        after: Option<QueryPosition>,
        limit: usize,
    ) -> Result<Vec<(QueryPosition, Record)>, StorageError>;

    /// At most `limit` records an exact index names, in sequence order.
    fn indexed_records(
        &self,
        lookup: IndexLookup<'_>,
        limit: usize,
    ) -> Result<Vec<Record>, StorageError>;

    /// Where the message with `dedup_id` is stored; `None` when no message has it.
    fn locate_message(&self, dedup_id: &[u8]) -> Result<Option<MessageLocation>, StorageError>;

    /// Ends the transaction of the half message with `message_dedup_id`, in
    /// one atomic write (durable like an append): a commit moves it to its
    /// queue at the next offset (joining at `at_ms`, as far as retention and
    /// resets are concerned) and gives its dedup entry that offset; a
    /// rollback only closes it (the half message stays in the log, never
    /// delivered, until [`LogStore::trim_control_records`] removes it with
    /// its rollback record). Ending a transaction that is not open changes
    /// nothing.
    ///
    /// A message record of type TRANSACTION without a delivery time is a
    /// half message: [`LogStore::append`] stores it in the log and the dedup
    /// index, in no queue, and opens its transaction.
    fn end_transaction(
        &self,
        message_dedup_id: &[u8],
        commit: bool,
        at_ms: i64,
    ) -> Result<TransactionEnded, StorageError>;

    /// Every open transaction, by sequence.
    fn open_transactions(&self) -> Result<Vec<OpenTransaction>, StorageError>;

    /// Records that check-back number `checks` of the open transaction at
    /// `sequence` was sent at `at_ms`. Returns `false` (and writes nothing)
    /// when the transaction is no longer open. Written without waiting for
    /// the disk: a lost count only means one more check-back.
    fn note_transaction_check(
        &self,
        sequence: u64,
        checks: u32,
        at_ms: i64,
    ) -> Result<bool, StorageError>;

    /// The sequence of the record with this dedup id, if stored (the node
    /// finds duplicates inside `append`; this finds a record whose dedup id
    /// is derived, such as a transaction's outcome).
    fn find_dedup(&self, dedup_id: &[u8]) -> Result<Option<u64>, StorageError>;

    /// Where the message with this dedup id is stored: (sequence, queue
    /// offset); `None` when no message has it.
    fn find_message(&self, dedup_id: &[u8]) -> Result<Option<(u64, u64)>, StorageError>;

    /// Remembers that the acknowledgement stored at `ack_sequence` waits for
    /// the message with `message_dedup_id` (not stored yet).
    fn hold_ack(&self, message_dedup_id: &[u8], ack_sequence: u64) -> Result<(), StorageError>;

    /// The sequences of the acknowledgements held for this message, in
    /// order, forgetting them.
    fn take_held_acks(&self, message_dedup_id: &[u8]) -> Result<Vec<u64>, StorageError>;

    /// Applies group-state changes in one atomic batch. Writes apply in order;
    /// within one write the cursor is replaced, then `set` is applied, then
    /// `remove` (so an offset in both ends up removed).
    fn write_groups(&self, writes: Vec<GroupWrite>) -> Result<(), StorageError>;

    /// [`LogStore::write_groups`] without waiting for the disk, whatever the
    /// flush mode: for changes a crash may lose harmlessly (a delivery's
    /// in-flight mark: losing it only makes the message visible again). A
    /// later durable write makes it durable too (one log, in order).
    fn write_groups_relaxed(&self, writes: Vec<GroupWrite>) -> Result<(), StorageError> {
        self.write_groups(writes)
    }

    /// Removes every stored state of consumer group `group` (all its
    /// queues), in one write.
    fn remove_group(&self, group: &str) -> Result<(), StorageError>;

    /// Every stored group queue state, ordered by [`GroupQueueKey`].
    fn load_groups(&self) -> Result<Vec<GroupQueueState>, StorageError>;

    /// The replication checkpoint of `peer`: the highest local sequence the
    /// peer region confirmed it applied; 0 when it confirmed nothing yet.
    fn checkpoint(&self, peer: &str) -> Result<u64, StorageError>;

    /// Raises `peer`'s checkpoint to `sequence` unless it is already at or
    /// above it, and returns the checkpoint after the call. Never moves
    /// backwards, also under concurrent calls (a late, smaller ack is a no-op).
    fn advance_checkpoint(&self, peer: &str, sequence: u64) -> Result<u64, StorageError>;

    /// Removes acknowledgement, group-start, transaction-outcome and trace
    /// records (in the log but in no queue) older than their topic's
    /// retention, with their dedup and index entries, and with a rollback its
    /// half message: walks the log from where the previous call stopped (a
    /// cursor in metadata), visiting at most `max` records and walking past
    /// messages (queue retention removes those) and acknowledgements that
    /// still wait for their message (kept), and stops at the first record
    /// still young enough to keep, or at a sequence above
    /// `replicated_through` or the log's last. `max_age_ms` gives a topic's
    /// retention (`None`: the topic is unknown, the record goes).
    fn trim_control_records(
        &self,
        now_ms: i64,
        max_age_ms: &dyn Fn(&str) -> Option<i64>,
        replicated_through: u64,
        max: usize,
    ) -> Result<ControlTrimmed, StorageError>;

    /// The newest change of every topic and consumer group made through the
    /// admin API. [`LogStore::append`] keeps, in the same write as the
    /// record, a `CATALOG` record's change when it is newer (by changed
    /// time, then region) than the change kept for its item, so every
    /// region that stored the same changes keeps the same ones.
    fn catalog(&self) -> Result<Vec<CatalogChange>, StorageError>;

    /// Reads a metadata value.
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// Writes a metadata value.
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError>;
}

/// Whether `retention` keeps a queue entry at `now_ms` ([`LogStore::trim_queue`]):
/// `record` is its message (`None`: gone from the log, never kept), `is_last`
/// whether it is the queue's newest entry (always kept by size), and
/// `last_cumulative` the newest entry's cumulative bytes.
fn retention_keeps(
    retention: &Retention,
    now_ms: i64,
    entry: &codec::QueueEntry,
    record: Option<&Record>,
    is_last: bool,
    last_cumulative: Option<u64>,
) -> bool {
    let Some(record) = record else {
        return false;
    };
    let queued_at = entry
        .queued_at_ms
        .or_else(|| record.message.as_ref().map(codec::stored_at_ms));
    if queued_at.is_some_and(|at| now_ms.saturating_sub(at) >= retention.max_age_ms) {
        return false;
    }
    match (retention.max_bytes, entry.cumulative_bytes, last_cumulative) {
        (Some(limit), Some(cumulative), Some(last)) if !is_last => {
            // Bytes from this entry to the newest, this one included.
            let size = u64::try_from(codec::record_size(record)).unwrap_or(u64::MAX);
            last.saturating_sub(cumulative).saturating_add(size) <= limit
        }
        _ => true,
    }
}

/// `meta` key of [`LogStore::trim_control_records`]'s cursor: the last
/// sequence it walked past.
const CONTROL_FLOOR_META_KEY: &str = "control-floor";

/// What [`LogStore::trim_control_records`] does with one log record.
enum ControlStep {
    /// A message (or nothing the walk handles): walk past it.
    Skip,
    /// Remove it (with its dedup entry) and walk on.
    Remove,
    /// Remove this rollback record and its half message (the message with
    /// this dedup id, if it is still a closed half message: in no queue,
    /// not open), and walk on.
    RemoveRollback { message_dedup_id: Vec<u8> },
    /// Keep it and stop the walk here.
    Stop,
}

/// Decides [`ControlStep`] for `record`; `held` says whether an
/// acknowledgement still waits for its message.
fn control_step(
    record: &Record,
    now_ms: i64,
    max_age_ms: &dyn Fn(&str) -> Option<i64>,
    held: impl FnOnce(&[u8]) -> Result<bool, StorageError>,
) -> Result<ControlStep, StorageError> {
    let (topic, at_ms) = if let Some(ack) = record.ack.as_ref() {
        if held(&ack.message_dedup_id)? {
            // Applied when its message comes: kept.
            return Ok(ControlStep::Skip);
        }
        (ack.topic.as_str(), ack.acked_at_ms)
    } else if let Some(start) = record.group_start.as_ref() {
        (start.topic.as_str(), start.created_at_ms)
    } else if let Some(end) = record.transaction_end.as_ref() {
        (end.topic.as_str(), end.ended_at_ms)
    } else if let Some(trace) = record.trace.as_ref() {
        (trace.topic.as_str(), trace.written_at_ms)
    } else {
        return Ok(ControlStep::Skip);
    };
    match max_age_ms(topic) {
        Some(age) if now_ms.saturating_sub(at_ms) < age => Ok(ControlStep::Stop),
        _ => Ok(match record.transaction_end.as_ref() {
            Some(end) if !end.commit => ControlStep::RemoveRollback {
                message_dedup_id: end.message_dedup_id.clone(),
            },
            _ => ControlStep::Remove,
        }),
    }
}

/// Checks what [`LogStore::append`] requires of every record of a batch,
/// before anything is written.
fn validate_for_append(records: &[Record]) -> Result<(), StorageError> {
    for (index, record) in records.iter().enumerate() {
        let invalid = |what: &str| StorageError::InvalidRecord {
            reason: format!("record {index} of the batch {what}"),
        };
        if record.dedup_id.len() != DEDUP_ID_BYTES {
            return Err(invalid(&format!(
                "has a {}-byte dedup id, expected {DEDUP_ID_BYTES}",
                record.dedup_id.len()
            )));
        }
        if record.origin_region.is_empty() {
            return Err(invalid("has no origin region"));
        }
        if record.kind == RecordKind::Ack as i32 {
            match &record.ack {
                None => return Err(invalid("is an acknowledgement without an ack")),
                Some(ack) if ack.group.is_empty() || ack.topic.is_empty() => {
                    return Err(invalid("has an ack without a group or topic"));
                }
                Some(ack) if ack.message_dedup_id.len() != DEDUP_ID_BYTES => {
                    return Err(invalid(&format!(
                        "has an ack of a {}-byte message dedup id, expected {DEDUP_ID_BYTES}",
                        ack.message_dedup_id.len()
                    )));
                }
                Some(_) if record.message.is_some() => {
                    return Err(invalid("is an acknowledgement with a message"));
                }
                Some(_) => {}
            }
            continue;
        }
        if record.kind == RecordKind::TransactionEnd as i32 {
            match &record.transaction_end {
                None => return Err(invalid("is a transaction outcome without its transaction")),
                Some(end) if end.topic.is_empty() => {
                    return Err(invalid("has a transaction outcome without a topic"));
                }
                Some(end) if end.message_dedup_id.len() != DEDUP_ID_BYTES => {
                    return Err(invalid(&format!(
                        "ends the transaction of a {}-byte message dedup id, expected \
                         {DEDUP_ID_BYTES}",
                        end.message_dedup_id.len()
                    )));
                }
                Some(_) if record.message.is_some() || record.ack.is_some() => {
                    return Err(invalid("is a transaction outcome with a message or an ack"));
                }
                Some(_) => {}
            }
            continue;
        }
        if record.kind == RecordKind::Catalog as i32 {
            match &record.catalog {
                None => return Err(invalid("is a catalog record without its change")),
                Some(change) if change.name.is_empty() => {
                    return Err(invalid("changes a catalog item without a name"));
                }
                Some(_) if record.message.is_some() || record.ack.is_some() => {
                    return Err(invalid("is a catalog record with a message or an ack"));
                }
                Some(_) => {}
            }
            continue;
        }
        if record.kind == RecordKind::Trace as i32 {
            match &record.trace {
                None => return Err(invalid("is a trace record without events")),
                Some(trace) if trace.topic.is_empty() => {
                    return Err(invalid("has trace events without a topic"));
                }
                Some(_) if record.message.is_some() || record.ack.is_some() => {
                    return Err(invalid("is a trace record with a message or an ack"));
                }
                Some(_) => {}
            }
            continue;
        }
        if record.kind == RecordKind::GroupStart as i32 {
            match &record.group_start {
                None => return Err(invalid("is a group start without its group")),
                Some(start) if start.group.is_empty() || start.topic.is_empty() => {
                    return Err(invalid("has a group start without a group or topic"));
                }
                Some(_) if record.message.is_some() || record.ack.is_some() => {
                    return Err(invalid("is a group start with a message or an ack"));
                }
                Some(_) => {}
            }
            continue;
        }
        match &record.message {
            None => return Err(invalid("has no message")),
            Some(message) if message.topic.is_empty() => {
                return Err(invalid("has a message without a topic"));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// `meta` key prefix of the kept catalog changes.
const CATALOG_META_PREFIX: &str = "catalog/";

/// `meta` key of the kept change of a catalog item.
fn catalog_meta_key(change: &CatalogChange) -> String {
    format!("{CATALOG_META_PREFIX}{}/{}", change.kind, change.name)
}

/// Whether `candidate` is newer than `kept` (by changed time, then region).
fn newer_catalog_change(candidate: &CatalogChange, kept: Option<&CatalogChange>) -> bool {
    kept.is_none_or(|kept| {
        (candidate.changed_at_ms, &candidate.region) > (kept.changed_at_ms, &kept.region)
    })
}

/// Whether `message` is a half message: of type TRANSACTION, without a
/// delivery time (it joins its queue when its transaction commits).
fn is_half_message(message: &meridian_proto::meridian::v1::Message) -> bool {
    message.message_type == meridian_proto::meridian::v1::MessageType::Transaction as i32
        && message.delivery_timestamp_ms.is_none()
}

/// What a record that originated in this region is deduplicated by besides
/// its dedup id: topic, client message id and content digest (a retry is the
/// same message; a different message that reuses an id is not). Records
/// replicated from elsewhere were deduplicated by their origin and are
/// matched by dedup id alone; records without a client message id only so.
struct LocalMessage<'a> {
    topic: &'a str,
    client_message_id: &'a str,
    digest: codec::ContentDigest,
}

impl<'a> LocalMessage<'a> {
    fn of(record: &'a Record, local_region: &str) -> Option<LocalMessage<'a>> {
        let message = record.message.as_ref()?;
        (record.origin_region == local_region && !message.client_message_id.is_empty()).then(|| {
            LocalMessage {
                topic: &message.topic,
                client_message_id: &message.client_message_id,
                digest: codec::content_digest(message),
            }
        })
    }
}
