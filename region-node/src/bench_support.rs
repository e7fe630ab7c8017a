//! What the criterion micro-benchmarks (`region-node/benches/`) drive: the
//! record codec, storage appends and reads, the timer index and the filter
//! evaluator, behind wrappers that take and return plain values, so no
//! storage or consumer type leaves the crate. Not an API: hidden from the
//! docs, and only benchmarks use it.

use crate::consumer::Filter;
#[cfg(feature = "rocksdb")]
use crate::storage::RocksStore;
use crate::storage::{LogStore, StorageError};
use meridian_proto::meridian::v1::{Message, Record, RecordKind};
use meridian_topology::FlushMode;
use std::collections::HashMap;
use std::path::Path;

/// A local message record of `topic` queue `queue_id` with a `body_len`
/// byte body, a tag, two keys and two user properties; `delay_until_ms`
/// makes it a delay message.
pub fn message_record(
    n: u64,
    topic: &str,
    queue_id: i32,
    body_len: usize,
    delay_until_ms: Option<i64>,
) -> Record {
    let mut dedup_id = uuid::Uuid::now_v7().as_bytes().to_vec();
    dedup_id[8..].copy_from_slice(&n.to_be_bytes());
    Record {
        kind: RecordKind::Message as i32,
        dedup_id,
        origin_region: "bench".to_owned(),
        path: vec!["bench".to_owned()],
        message: Some(Message {
            client_message_id: format!("01BENCH{n:024X}"),
            topic: topic.to_owned(),
            queue_id,
            tag: Some("paid".to_owned()),
            keys: vec![format!("order-{n}"), "customer-7".to_owned()],
            user_properties: HashMap::from([
                ("amount".to_owned(), (n % 1000).to_string()),
                ("region".to_owned(), "eu-west".to_owned()),
            ]),
            born_timestamp_ms: 1_796_000_000_000,
            store_timestamp_ms: 1_796_000_000_000,
            born_host: "bench-host".to_owned(),
            delivery_timestamp_ms: delay_until_ms,
            body: vec![b'x'; body_len],
            ..Message::default()
        }),
        ..Record::default()
    }
}

/// The record as stored in the commit log (version byte, CRC32C, protobuf).
pub fn encode_record(record: &Record) -> Vec<u8> {
    crate::storage::codec_for_bench::encode(record)
}

/// A stored log value read back; `None` if it does not decode.
pub fn decode_record(value: &[u8]) -> Option<Record> {
    crate::storage::codec_for_bench::decode(value)
}

/// A RocksDB store in a directory, as the node opens it.
#[cfg(feature = "rocksdb")]
pub struct BenchStore(RocksStore);

#[cfg(feature = "rocksdb")]
impl BenchStore {
    /// Opens (or creates) the store in `dir`; `sync`: fsync every write.
    pub fn open(dir: &Path, sync: bool) -> Result<BenchStore, StorageError> {
        let flush = if sync {
            FlushMode::Sync
        } else {
            FlushMode::Async
        };
        Ok(BenchStore(RocksStore::open(dir, flush)?))
    }

    /// Appends `records` in one batch; how many were stored.
    pub fn append(&self, records: Vec<Record>) -> Result<usize, StorageError> {
        Ok(self.0.append(records, "bench")?.len())
    }

    /// Reads up to `max` entries of a queue from `from_offset`; how many came.
    pub fn read_queue(
        &self,
        topic: &str,
        queue_id: i32,
        from_offset: u64,
        max: usize,
    ) -> Result<usize, StorageError> {
        Ok(self.0.read_queue(topic, queue_id, from_offset, max)?.len())
    }

    /// Moves up to `max` delay messages due at `now_ms` to their queues;
    /// how many moved.
    pub fn enqueue_due(&self, now_ms: i64, max: usize) -> Result<usize, StorageError> {
        Ok(self.0.enqueue_due(now_ms, max)?.len())
    }

    /// The earliest delivery time waiting in the timer index.
    pub fn next_timer_due(&self) -> Result<Option<i64>, StorageError> {
        self.0.next_timer_due()
    }
}

/// A consumer filter: a tag expression (`a || b`) or, with `sql`, SQL92.
pub struct BenchFilter(Filter);

impl BenchFilter {
    pub fn parse(expression: &str, sql: bool) -> Result<BenchFilter, String> {
        let filter = if sql {
            Filter::parse_sql(expression)
        } else {
            Filter::parse_tags(expression)
        };
        filter.map(BenchFilter).map_err(|error| error.to_string())
    }

    /// Whether the filter takes `record`'s message.
    pub fn matches(&self, record: &Record) -> bool {
        self.0.matches(record.message.as_ref())
    }
}
