//! A [`LogStore`] for tests whose writes fail on demand, over a [`MemoryStore`].

use super::{
    Appended, Enqueued, GroupQueueState, GroupWrite, IndexLookup, LogStore, MemoryStore,
    MessageIndex, MessageLocation, OpenTransaction, QueryPosition, QueueBounds, StorageError,
    TransactionEnded,
};
use meridian_proto::meridian::v1::Record;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Reads always work; `append`, `write_groups` and `put_meta` fail with a
/// `Backend` error while [`FailingStore::fail_writes`] is on.
#[derive(Debug, Default)]
pub struct FailingStore {
    inner: MemoryStore,
    failing: AtomicBool,
    failed: AtomicU64,
    /// The next `append` panics (once).
    panic_next_append: AtomicBool,
}

impl FailingStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Turns write failures on or off.
    pub fn fail_writes(&self, fail: bool) {
        self.failing.store(fail, Ordering::SeqCst);
    }

    /// Makes the next `append` panic, as a bug in a store would.
    pub fn panic_next_append(&self) {
        self.panic_next_append.store(true, Ordering::SeqCst);
    }

    /// How many writes failed so far.
    pub fn failed_writes(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    fn check(&self, operation: &'static str) -> Result<(), StorageError> {
        if !self.failing.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.failed.fetch_add(1, Ordering::SeqCst);
        Err(StorageError::Backend {
            operation,
            source: "injected write failure".into(),
        })
    }
}

impl LogStore for FailingStore {
    fn append(
        &self,
        records: Vec<Record>,
        local_region: &str,
    ) -> Result<Vec<Appended>, StorageError> {
        if self.panic_next_append.swap(false, Ordering::SeqCst) {
            panic!("injected panic in append");
        }
        self.check("append records")?;
        self.inner.append(records, local_region)
    }

    fn next_timer_due(&self) -> Result<Option<i64>, StorageError> {
        self.inner.next_timer_due()
    }

    fn enqueue_due(&self, now_ms: i64, max: usize) -> Result<Vec<Enqueued>, StorageError> {
        self.check("enqueue due timers")?;
        self.inner.enqueue_due(now_ms, max)
    }

    fn last_sequence(&self) -> Result<u64, StorageError> {
        self.inner.last_sequence()
    }

    fn read_log(
        &self,
        after: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StorageError> {
        self.inner.read_log(after, max_records, max_bytes)
    }

    fn get(&self, sequence: u64) -> Result<Option<Record>, StorageError> {
        self.inner.get(sequence)
    }

    fn read_queue(
        &self,
        topic: &str,
        queue_id: i32,
        from_offset: u64,
        max: usize,
    ) -> Result<Vec<(u64, Record)>, StorageError> {
        self.inner.read_queue(topic, queue_id, from_offset, max)
    }

    fn queue_bounds(&self, topic: &str, queue_id: i32) -> Result<QueueBounds, StorageError> {
        self.inner.queue_bounds(topic, queue_id)
    }

    fn offset_at_time(
        &self,
        topic: &str,
        queue_id: i32,
        time_ms: i64,
    ) -> Result<u64, StorageError> {
        self.inner.offset_at_time(topic, queue_id, time_ms)
    }

    fn trim_queue(
        &self,
        topic: &str,
        queue_id: i32,
        retention: &super::Retention,
        now_ms: i64,
        replicated_through: u64,
        max: usize,
    ) -> Result<super::Trimmed, StorageError> {
        self.inner
            .trim_queue(topic, queue_id, retention, now_ms, replicated_through, max)
    }

    fn trim_control_records(
        &self,
        now_ms: i64,
        max_age_ms: &dyn Fn(&str) -> Option<i64>,
        replicated_through: u64,
        max: usize,
    ) -> Result<super::ControlTrimmed, StorageError> {
        self.inner
            .trim_control_records(now_ms, max_age_ms, replicated_through, max)
    }

    fn query_messages(
        &self,
        topic: &str,
        index: MessageIndex<'_>,
        range: std::ops::Range<i64>,
        after: Option<QueryPosition>,
        limit: usize,
    ) -> Result<Vec<(QueryPosition, Record)>, StorageError> {
        self.inner.query_messages(topic, index, range, after, limit)
    }

    fn indexed_records(
        &self,
        lookup: IndexLookup<'_>,
        limit: usize,
    ) -> Result<Vec<Record>, StorageError> {
        self.inner.indexed_records(lookup, limit)
    }

    fn locate_message(&self, dedup_id: &[u8]) -> Result<Option<MessageLocation>, StorageError> {
        self.inner.locate_message(dedup_id)
    }

    fn end_transaction(
        &self,
        message_dedup_id: &[u8],
        commit: bool,
        at_ms: i64,
    ) -> Result<TransactionEnded, StorageError> {
        self.check("end a transaction")?;
        self.inner.end_transaction(message_dedup_id, commit, at_ms)
    }

    fn open_transactions(&self) -> Result<Vec<OpenTransaction>, StorageError> {
        self.inner.open_transactions()
    }

    fn note_transaction_check(
        &self,
        sequence: u64,
        checks: u32,
        at_ms: i64,
    ) -> Result<bool, StorageError> {
        self.check("count a transaction check-back")?;
        self.inner.note_transaction_check(sequence, checks, at_ms)
    }

    fn find_dedup(&self, dedup_id: &[u8]) -> Result<Option<u64>, StorageError> {
        self.inner.find_dedup(dedup_id)
    }

    fn find_message(&self, dedup_id: &[u8]) -> Result<Option<(u64, u64)>, StorageError> {
        self.inner.find_message(dedup_id)
    }

    fn hold_ack(&self, message_dedup_id: &[u8], ack_sequence: u64) -> Result<(), StorageError> {
        self.check("hold an acknowledgement")?;
        self.inner.hold_ack(message_dedup_id, ack_sequence)
    }

    fn take_held_acks(&self, message_dedup_id: &[u8]) -> Result<Vec<u64>, StorageError> {
        self.check("release held acknowledgements")?;
        self.inner.take_held_acks(message_dedup_id)
    }

    fn write_groups(&self, writes: Vec<GroupWrite>) -> Result<(), StorageError> {
        self.check("write group state")?;
        self.inner.write_groups(writes)
    }

    fn remove_group(&self, group: &str) -> Result<(), StorageError> {
        self.inner.remove_group(group)
    }

    fn load_groups(&self) -> Result<Vec<GroupQueueState>, StorageError> {
        self.inner.load_groups()
    }

    fn checkpoint(&self, peer: &str) -> Result<u64, StorageError> {
        self.inner.checkpoint(peer)
    }

    fn advance_checkpoint(&self, peer: &str, sequence: u64) -> Result<u64, StorageError> {
        self.check("advance a checkpoint")?;
        self.inner.advance_checkpoint(peer, sequence)
    }

    fn catalog(&self) -> Result<Vec<meridian_proto::meridian::v1::CatalogChange>, StorageError> {
        self.inner.catalog()
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get_meta(key)
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.check("write a metadata value")?;
        self.inner.put_meta(key, value)
    }
}
