//! The RocksDB [`LogStore`]: the node's durable storage.
//!
//! # Key layout
//!
//! Integers in keys are big-endian (byte order = numeric order); `name` below
//! means an unsigned LEB128 varint of the string's byte length followed by its
//! UTF-8 bytes, so no name's encoding is a prefix of another's; `qid` is the
//! `i32` queue id as a big-endian `u32` with the sign bit flipped. Byte formats
//! live in [`super::codec`].
//!
//! | column family | key | value |
//! |---|---|---|
//! | `log`   | `sequence: u64` | `0x01` (format version), CRC32C of the payload (`u32`), protobuf `Record` without `sequence`; values ≥ 64 KiB go to blob files |
//! | `queue` | `name(topic) qid offset: u64` | `sequence: u64, queued_at_ms: i64, cumulative_bytes: u64` (older entries: `sequence` alone) |
//! | `dedup` | `0x01 dedup_id` (16 bytes) | `sequence: u64, queue_offset: u64` (older entries: `sequence` alone) |
//! | `dedup` | `0x03 name(topic) name(client_message_id) digest` (SHA-256 of the content, 32 bytes) — local-origin records only | `sequence: u64, queue_offset: u64` |
//! | `group` | `name(group) name(topic) qid 0x00` — the cursor | `floor: u64, next: u64` |
//! | `group` | `name(group) name(topic) qid 0x01 offset: u64` — one offset's state | `0x01 deadline_ms: i64 attempt: u32` (in flight) or `0x02` (done) |
//! | `meta`  | the key's UTF-8 bytes (`queue-floor/<hex topic>/<queue id>`: a queue's retention floor) | the value's bytes |
//! | `timer` | `due_ms: i64` (sign bit flipped) `sequence: u64` — a message waiting for its delivery time | empty |
//!
//! A group queue's cursor sorts just before its offsets, so start-up loads all
//! group state in one forward scan.
//!
//! Every column family's tables are LZ4-compressed. The `log`'s blocks are
//! 16 KiB (about 14 records of 1 KiB, whose repeated fields compress against
//! each other) and kept compressed whenever that saves any byte: RocksDB's
//! default keeps a block raw unless it shrinks by 12.5 %, which blocks of
//! incompressible bodies never do. With random 1 KiB bodies this stores
//! 1.17 bytes per body byte instead of 1.23 (docs/benchmarks.md).
//!
//! # What is durable when
//!
//! Each call that writes (`append`, `write_groups`, `put_meta`) is one
//! `WriteBatch`: one write-ahead-log entry covering every column family it
//! touches, so after any crash either all of it or none of it is there. The
//! write-ahead log is never disabled.
//! * `flush = "sync"`: the WAL is fsynced before the call returns; a returned
//!   write survives power loss.
//! * `flush = "async"`: the call returns once the WAL entry is in the OS page
//!   cache; it survives a crash of the process but not of the machine. After a
//!   machine crash the newest batches may be gone, and their sequences and
//!   queue offsets will be assigned again to later records.
//!
//! # Concurrency
//!
//! Appends are serialised by a mutex so that sequences and queue offsets are
//! assigned in order without gaps; the caller gathers many producers' records
//! into one `append` (group commit) to amortise the fsync. The highest
//! sequence and each queue's next offset are cached in memory and updated only
//! after a successful write. The cached last sequence is read at open by
//! seeking to the last `log` key; a queue's next offset is read by seeking to
//! its last key the first time the queue is appended to. Reads take no lock.

use super::{
    Appended, Enqueued, GroupQueueState, GroupWrite, IndexLookup, LocalMessage, LogStore,
    MessageIndex, MessageLocation, OpenTransaction, QueryPosition, QueueBounds, Retention,
    StorageError, StorageMemory, TransactionEnded, Trimmed,
    codec::{self, GroupKey},
    validate_for_append,
};
use meridian_proto::meridian::v1::{CatalogChange, Record};
use meridian_topology::FlushMode;
use parking_lot::Mutex;
use prost::Message as _;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType,
    Direction, FlushOptions, IteratorMode, Options, WriteBatch, WriteBufferManager, WriteOptions,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const LOG: &str = "log";
const QUEUE: &str = "queue";
const DEDUP: &str = "dedup";
const GROUP: &str = "group";
const META: &str = "meta";
const TIMER: &str = "timer";
const TXN: &str = "txn";
const INDEX: &str = "index";
const COLUMN_FAMILIES: [&str; 8] = [LOG, QUEUE, DEDUP, GROUP, META, TIMER, TXN, INDEX];

/// Commit-log values at least this large are stored in blob files, so that
/// compaction of the log does not rewrite large bodies.
const MIN_BLOB_BYTES: u64 = 64 * 1024;

/// The RocksDB [`LogStore`]; see the module docs for layout and durability.
pub struct RocksStore {
    db: DB,
    /// Shared by every column family's tables; charged for the memtables.
    cache: Cache,
    /// The memory budget the store was opened with, bytes.
    memory_bytes: usize,
    path: PathBuf,
    flush: FlushMode,
    write_options: WriteOptions,
    /// Never fsyncs (see [`LogStore::write_groups_relaxed`]).
    relaxed_write_options: WriteOptions,
    /// Held for the whole of an append: sequence and offset assignment is serial.
    append_state: Mutex<AppendState>,
    /// The last sequence written, published after each successful append.
    last_sequence: AtomicU64,
    /// Held across a checkpoint's read-compare-write.
    checkpoint_lock: Mutex<()>,
    /// Acknowledgements held for messages not stored yet: while 0, storing
    /// a replicated message needs no scan for them.
    held_acks: AtomicU64,
}

struct AppendState {
    last_sequence: u64,
    /// The tail of each queue appended to since open.
    tails: HashMap<(String, i32), QueueTail>,
    /// No `timer` key below this one is live: where reads of the timer
    /// index start, instead of the column family's first key, so they do
    /// not walk the tombstones of every message already moved to its queue
    /// (a million moved made each look walk a million tombstones until
    /// compaction). `None`: not known yet (start at the first key).
    timer_floor: Option<Vec<u8>>,
}

/// A message joining a queue.
#[derive(Debug, Clone, Copy)]
struct NewEntry {
    sequence: u64,
    /// When it joins (its store time, or its due time).
    queued_at_ms: i64,
    /// Its encoded record size.
    bytes: usize,
}

/// Where a queue's next entry goes.
#[derive(Debug, Clone, Copy, Default)]
struct QueueTail {
    /// The next offset.
    next: u64,
    /// The cumulative bytes of the last entry (0 for a queue without one).
    cumulative_bytes: u64,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .field("flush", &self.flush)
            .field("last_sequence", &self.last_sequence.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

fn backend(operation: &'static str) -> impl FnOnce(rocksdb::Error) -> StorageError {
    move |error| StorageError::Backend {
        operation,
        source: Box::new(error),
    }
}

/// Table block size of the `log` column family, bytes: a block holds about
/// 14 records of 1 KiB, whose repeated fields (topic, regions, client id)
/// compress against each other.
const LOG_BLOCK_BYTES: usize = 16 * 1024;

/// RocksDB keeps a compressed block only if it is at most this many bytes
/// per KiB of the raw block (its default is 896: at least 12.5 % saved).
/// Commit-log blocks are mostly message bodies, often already compressed
/// or encrypted, so the records' own fields save less than that, and the
/// default would store the block raw; any saving is kept instead.
const LOG_MAX_COMPRESSED_BYTES_PER_KB: &str = "1023";

/// The memory a store uses when its region does not say, bytes (the
/// topology's default `storage_memory_mb`).
pub const DEFAULT_MEMORY_BYTES: usize =
    meridian_topology::Region::DEFAULT_STORAGE_MEMORY_MB as usize * 1024 * 1024;

/// The part of the memory budget memtables may take, as a divisor: half.
/// The rest (and whatever memtables do not use) caches table blocks.
const MEMTABLE_SHARE_DIVISOR: usize = 2;

/// Table options of one column family: its blocks, index and filter blocks
/// in the store's one `cache`, so that no table keeps memory outside it.
/// By default RocksDB gives each column family its own 32 MiB cache and
/// keeps every table's index in memory outside any cache, which grows
/// with the data stored (docs/benchmarks.md, node memory).
fn column_family_options(name: &str, cache: &Cache) -> Options {
    let mut options = Options::default();
    options.set_compression_type(DBCompressionType::Lz4);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_cache_index_and_filter_blocks(true);
    // The newest tables' (and every table's top-level) index blocks stay
    // in the cache, counted in its capacity, so reads of recent messages
    // do not wait for an index block evicted by a scan of old ones.
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    table.set_pin_top_level_index_and_filter(true);
    if name == LOG {
        table.set_block_size(LOG_BLOCK_BYTES);
    }
    options.set_block_based_table_factory(&table);
    if name == LOG {
        options.set_enable_blob_files(true);
        options.set_min_blob_size(MIN_BLOB_BYTES);
        options.set_blob_compression_type(DBCompressionType::Lz4);
        options.set_enable_blob_gc(true);
    }
    options
}

impl RocksStore {
    /// Writes group-state changes in one batch with `options`.
    fn write_group_batch(
        &self,
        writes: Vec<GroupWrite>,
        options: &WriteOptions,
    ) -> Result<(), StorageError> {
        if writes.is_empty() {
            return Ok(());
        }
        let group = self.cf(GROUP);
        let mut batch = WriteBatch::default();
        for write in &writes {
            batch.put_cf(
                group,
                codec::group_cursor_key(&write.key),
                codec::encode_cursor(write.cursor),
            );
            for &(offset, state) in &write.set {
                batch.put_cf(
                    group,
                    codec::group_offset_key(&write.key, offset),
                    codec::encode_offset_state(state),
                );
            }
            for &offset in &write.remove {
                batch.delete_cf(group, codec::group_offset_key(&write.key, offset));
            }
        }
        self.db
            .write_opt(batch, options)
            .map_err(backend("write group state"))
    }

    /// Opens (creating it and its parents if needed) the store in `dir`
    /// with the default memory budget, [`DEFAULT_MEMORY_BYTES`]; see
    /// [`RocksStore::open_with_memory`].
    pub fn open(dir: &Path, flush: FlushMode) -> Result<RocksStore, StorageError> {
        Self::open_with_memory(dir, flush, DEFAULT_MEMORY_BYTES)
    }

    /// Opens (creating it and its parents if needed) the store in `dir`.
    /// `flush` decides whether writes fsync the write-ahead log before
    /// returning (see the module docs). `memory_bytes` bounds RocksDB's
    /// memtables (at most half of it, all column families together) and
    /// its one block cache, which holds data, index and filter blocks and
    /// is charged for the memtables too: the store's memory stays near
    /// `memory_bytes` however much it holds.
    pub fn open_with_memory(
        dir: &Path,
        flush: FlushMode,
        memory_bytes: usize,
    ) -> Result<RocksStore, StorageError> {
        let open_error = |source: Box<dyn std::error::Error + Send + Sync>| StorageError::Open {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|error| open_error(Box::new(error)))?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // The rocksdb crate is built without snappy, RocksDB's default.
        options.set_compression_type(DBCompressionType::Lz4);
        let cache = Cache::new_lru_cache(memory_bytes);
        // Memtables are charged to the cache (as reserved blocks), so the
        // cache's capacity covers both; past the memtables' share RocksDB
        // flushes the largest memtable.
        let memtables = WriteBufferManager::new_write_buffer_manager_with_cache(
            memory_bytes / MEMTABLE_SHARE_DIVISOR,
            false,
            cache.clone(),
        );
        options.set_write_buffer_manager(&memtables);
        let descriptors = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, column_family_options(name, &cache)));
        let db = DB::open_cf_descriptors(&options, dir, descriptors)
            .map_err(|error| open_error(Box::new(error)))?;
        // Not settable through `Options` in the rocksdb crate; RocksDB's
        // options string names it (options/cf_options.cc).
        let log = db
            .cf_handle(LOG)
            .expect("the database was opened with every column family this store uses");
        let compression =
            format!("{{max_compressed_bytes_per_kb={LOG_MAX_COMPRESSED_BYTES_PER_KB}}}");
        db.set_options_cf(log, &[("compression_opts", compression.as_str())])
            .map_err(|error| open_error(Box::new(error)))?;
        let mut write_options = WriteOptions::default();
        write_options.set_sync(flush == FlushMode::Sync);
        let mut store = RocksStore {
            db,
            cache,
            memory_bytes,
            path: dir.to_owned(),
            flush,
            write_options,
            relaxed_write_options: WriteOptions::default(),
            append_state: Mutex::new(AppendState {
                last_sequence: 0,
                tails: HashMap::new(),
                timer_floor: None,
            }),
            last_sequence: AtomicU64::new(0),
            held_acks: AtomicU64::new(0),
            checkpoint_lock: Mutex::new(()),
        };
        let last_sequence = store.read_last_sequence()?;
        store.append_state.get_mut().last_sequence = last_sequence;
        store.last_sequence.store(last_sequence, Ordering::Release);
        let held = store.count_held_acks()?;
        store.held_acks.store(held, Ordering::Release);
        tracing::info!(
            path = %dir.display(),
            ?flush,
            last_sequence,
            memory_mb = memory_bytes / (1024 * 1024),
            "opened the RocksDB store"
        );
        Ok(store)
    }

    fn cf(&self, name: &'static str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("the database was opened with every column family this store uses")
    }

    /// How many acknowledgements wait for their message (a scan of the
    /// `0x04` dedup keys only).
    fn count_held_acks(&self) -> Result<u64, StorageError> {
        let prefix = codec::held_ack_prefix(&[]);
        let mut iterator = self.db.raw_iterator_cf(self.cf(DEDUP));
        iterator.seek(&prefix);
        let mut count = 0;
        while iterator.key().is_some_and(|key| key.starts_with(&prefix)) {
            count += 1;
            iterator.next();
        }
        iterator
            .status()
            .map_err(backend("count the held acknowledgements"))?;
        Ok(count)
    }

    fn read_last_sequence(&self) -> Result<u64, StorageError> {
        match self.db.iterator_cf(self.cf(LOG), IteratorMode::End).next() {
            None => Ok(0),
            Some(entry) => {
                let (key, _) = entry.map_err(backend("read the last log key"))?;
                codec::decode_log_key(&key)
            }
        }
    }

    /// The tail of a queue, read from the last key of its prefix (or its
    /// retention floor when retention emptied it).
    fn read_tail(&self, topic: &str, queue_id: i32) -> Result<QueueTail, StorageError> {
        let prefix = codec::queue_prefix(topic, queue_id);
        let last = codec::queue_key(topic, queue_id, u64::MAX);
        let mut entries = self.db.iterator_cf(
            self.cf(QUEUE),
            IteratorMode::From(&last, Direction::Reverse),
        );
        if let Some(entry) = entries.next() {
            let (key, value) = entry.map_err(backend("read the last queue key"))?;
            if key.starts_with(&prefix) {
                let entry = codec::decode_queue_value(&key, &value)?;
                return Ok(QueueTail {
                    next: codec::queue_key_offset(&key)?.saturating_add(1),
                    cumulative_bytes: entry.cumulative_bytes.unwrap_or(0),
                });
            }
        }
        Ok(QueueTail {
            next: self.read_floor(topic, queue_id)?,
            cumulative_bytes: 0,
        })
    }

    /// The offset below which retention removed every entry of a queue.
    fn read_floor(&self, topic: &str, queue_id: i32) -> Result<u64, StorageError> {
        let key = codec::queue_floor_meta_key(topic, queue_id);
        match self.get_meta(&key)? {
            None => Ok(0),
            Some(value) => codec::decode_sequence_value("queue floor", key.as_bytes(), &value),
        }
    }

    /// The first offset of a queue, if it has any entry.
    fn read_first_offset(&self, topic: &str, queue_id: i32) -> Result<Option<u64>, StorageError> {
        let prefix = codec::queue_prefix(topic, queue_id);
        let mut entries = self.db.iterator_cf(
            self.cf(QUEUE),
            IteratorMode::From(&prefix, Direction::Forward),
        );
        match entries.next() {
            Some(entry) => {
                let (key, _) = entry.map_err(backend("read the first queue key"))?;
                if key.starts_with(&prefix) {
                    Ok(Some(codec::queue_key_offset(&key)?))
                } else {
                    Ok(None)
                }
            }
            None => Ok(None),
        }
    }

    /// Puts `entry` at the next offset of `queue` in `batch`, and returns
    /// that offset: the next one this batch left (`staged`),
    /// else the cached one, else the one read from storage. The caller
    /// holds the append lock and applies `staged` to the cache once the
    /// batch is written.
    fn stage_queue_entry(
        &self,
        batch: &mut WriteBatch,
        state: &AppendState,
        staged: &mut HashMap<(String, i32), QueueTail>,
        queue: (String, i32),
        entry: NewEntry,
    ) -> Result<u64, StorageError> {
        let tail = match staged.get(&queue).or_else(|| state.tails.get(&queue)) {
            Some(&tail) => tail,
            None => self.read_tail(&queue.0, queue.1)?,
        };
        let cumulative_bytes = tail
            .cumulative_bytes
            .saturating_add(u64::try_from(entry.bytes).unwrap_or(u64::MAX));
        batch.put_cf(
            self.cf(QUEUE),
            codec::queue_key(&queue.0, queue.1, tail.next),
            codec::queue_value(entry.sequence, entry.queued_at_ms, cumulative_bytes),
        );
        staged.insert(
            queue,
            QueueTail {
                next: tail.next + 1,
                cumulative_bytes,
            },
        );
        Ok(tail.next)
    }

    /// Looks a `dedup` key up, first among this batch's pending entries.
    fn find_dedup_key(
        &self,
        pending: &HashMap<Vec<u8>, codec::DedupEntry>,
        key: &[u8],
    ) -> Result<Option<codec::DedupEntry>, StorageError> {
        if let Some(&entry) = pending.get(key) {
            return Ok(Some(entry));
        }
        let value = self
            .db
            .get_pinned_cf(self.cf(DEDUP), key)
            .map_err(backend("read a dedup entry"))?;
        value
            .map(|value| codec::decode_dedup_value(key, &value))
            .transpose()
    }

    /// Whether any `dedup` key starts with `prefix`, in this batch or stored.
    fn any_dedup_key_with_prefix(
        &self,
        pending: &HashMap<Vec<u8>, codec::DedupEntry>,
        prefix: &[u8],
    ) -> Result<bool, StorageError> {
        if pending.keys().any(|key| key.starts_with(prefix)) {
            return Ok(true);
        }
        let mut iterator = self.db.raw_iterator_cf(self.cf(DEDUP));
        iterator.seek(prefix);
        let found = iterator.valid() && iterator.key().is_some_and(|key| key.starts_with(prefix));
        iterator
            .status()
            .map_err(backend("scan the dedup entries of a client message id"))?;
        Ok(found)
    }

    /// Stages the removal of a rolled-back half message (log record, dedup
    /// entries) in `batch`: only while it is a closed half message (in no
    /// queue, its transaction not open) and below `last_sequence` (the
    /// log's last record stays: sequences continue from it). Returns
    /// whether it was staged.
    fn stage_half_message_removal(
        &self,
        batch: &mut WriteBatch,
        message_dedup_id: &[u8],
        last_sequence: u64,
    ) -> Result<bool, StorageError> {
        let Some(location) = self.locate_message(message_dedup_id)? else {
            return Ok(false);
        };
        if location.sequence >= last_sequence
            || location.queue_offset.is_some()
            || location.open_transaction
        {
            return Ok(false);
        }
        let Some(record) = self.get(location.sequence)? else {
            return Ok(false);
        };
        batch.delete_cf(self.cf(LOG), codec::log_key(location.sequence));
        self.stage_entries_removal(batch, &record, location.sequence);
        Ok(true)
    }

    /// Stages the removal of what refers to `record` (stored at
    /// `sequence`) besides its log entry: its dedup entries (the client
    /// message id's too, for a message) and its index entries.
    fn stage_entries_removal(&self, batch: &mut WriteBatch, record: &Record, sequence: u64) {
        batch.delete_cf(self.cf(DEDUP), codec::dedup_id_key(&record.dedup_id));
        for index_key in codec::index_keys(record, sequence) {
            batch.delete_cf(self.cf(INDEX), index_key);
        }
        if let Some(message) = record.message.as_ref()
            && !message.client_message_id.is_empty()
        {
            batch.delete_cf(
                self.cf(DEDUP),
                codec::local_message_key(
                    &message.topic,
                    &message.client_message_id,
                    &codec::content_digest(message),
                ),
            );
        }
    }

    /// The catalog change kept under `key`.
    fn read_catalog_change(&self, key: &str) -> Result<Option<CatalogChange>, StorageError> {
        self.get_meta(key)?
            .map(|value| {
                CatalogChange::decode(value.as_slice()).map_err(|error| StorageError::Corrupt {
                    what: "catalog change",
                    key: key.to_owned(),
                    reason: error.to_string(),
                })
            })
            .transpose()
    }

    /// Writes raw bytes as the commit-log value of `sequence`, bypassing the codec.
    #[cfg(test)]
    pub(crate) fn put_raw_log_value(
        &self,
        sequence: u64,
        value: &[u8],
    ) -> Result<(), StorageError> {
        self.db
            .put_cf_opt(
                self.cf(LOG),
                codec::log_key(sequence),
                value,
                &self.write_options,
            )
            .map_err(backend("write a raw log value"))
    }
}

impl Drop for RocksStore {
    /// A graceful stop makes every acknowledged write durable, whatever the
    /// flush mode: the write-ahead log is synced before the store closes.
    /// Then every column family's memtable is written to a table, so that
    /// the log's files are obsolete (RocksDB deletes them): the next start
    /// replays nothing, and a stopped store holds each entry once, in
    /// compressed tables, not also in the uncompressed log. This takes as
    /// long as writing the memtables (at most 64 MiB per column family).
    fn drop(&mut self) {
        match self.db.flush_wal(true) {
            Ok(()) => {
                tracing::debug!(path = %self.path.display(), "write-ahead log synced at close")
            }
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "failed to sync the write-ahead log at close");
                return;
            }
        }
        let families: Vec<&ColumnFamily> = COLUMN_FAMILIES
            .iter()
            .filter_map(|name| self.db.cf_handle(name))
            .collect();
        let mut options = FlushOptions::default();
        options.set_wait(true);
        match self.db.flush_cfs_opt(&families, &options) {
            Ok(()) => {
                tracing::debug!(path = %self.path.display(), "memtables written to tables at close")
            }
            Err(error) => {
                // The synced log still holds every write; the next start
                // replays it.
                tracing::warn!(path = %self.path.display(), %error, "failed to flush the memtables at close");
            }
        }
    }
}

impl LogStore for RocksStore {
    fn append(
        &self,
        mut records: Vec<Record>,
        local_region: &str,
    ) -> Result<Vec<Appended>, StorageError> {
        validate_for_append(&records)?;
        let mut state = self.append_state.lock();
        let mut batch = WriteBatch::default();
        let mut results = Vec::with_capacity(records.len());
        // `dedup` keys written by this batch, so duplicates within it are caught.
        let mut pending_dedup = HashMap::new();
        // Queue tails as this batch leaves them; applied to the cache after the write.
        let mut staged_offsets: HashMap<(String, i32), QueueTail> = HashMap::new();
        // Catalog changes this batch keeps, by meta key.
        let mut pending_catalog: HashMap<String, CatalogChange> = HashMap::new();
        let mut sequence = state.last_sequence;
        for record in &mut records {
            let id_key = codec::dedup_id_key(&record.dedup_id);
            if let Some(existing) = self.find_dedup_key(&pending_dedup, &id_key)? {
                results.push(Appended::Duplicate {
                    sequence: existing.sequence,
                    queue_offset: existing.queue_offset,
                });
                continue;
            }
            let local = LocalMessage::of(record, local_region);
            let mut reused_client_id = false;
            let mut local_key = None;
            if let Some(local) = &local {
                let key =
                    codec::local_message_key(local.topic, local.client_message_id, &local.digest);
                if let Some(existing) = self.find_dedup_key(&pending_dedup, &key)? {
                    results.push(Appended::Duplicate {
                        sequence: existing.sequence,
                        queue_offset: existing.queue_offset,
                    });
                    continue;
                }
                let prefix = codec::local_message_prefix(local.topic, local.client_message_id);
                reused_client_id = self.any_dedup_key_with_prefix(&pending_dedup, &prefix)?;
                local_key = Some(key);
            }

            // A message takes the next offset of its queue, or waits for its
            // transaction's outcome (a half message), or waits in the timer
            // index for its delivery time; an acknowledgement is in the log
            // and deduplicated, in no queue.
            let queue_offset = match record.message.as_ref() {
                None => None,
                Some(message) if super::is_half_message(message) => {
                    batch.put_cf(
                        self.cf(TXN),
                        codec::transaction_key(sequence + 1),
                        codec::transaction_value(0, 0),
                    );
                    None
                }
                Some(message) if message.delivery_timestamp_ms.is_some() => {
                    let due = message.delivery_timestamp_ms.unwrap_or_default();
                    let key = codec::timer_key(due, sequence + 1);
                    if let Some(floor) = state.timer_floor.as_mut()
                        && key.as_slice() < floor.as_slice()
                    {
                        *floor = key.to_vec();
                    }
                    batch.put_cf(self.cf(TIMER), key, []);
                    None
                }
                Some(message) => Some(self.stage_queue_entry(
                    &mut batch,
                    &state,
                    &mut staged_offsets,
                    (message.topic.clone(), message.queue_id),
                    NewEntry {
                        sequence: sequence + 1,
                        queued_at_ms: codec::stored_at_ms(message),
                        bytes: codec::record_size(record),
                    },
                )?),
            };
            sequence += 1;

            let entry = codec::DedupEntry {
                sequence,
                queue_offset,
            };
            let value = match queue_offset {
                Some(offset) => codec::dedup_value(sequence, offset).to_vec(),
                None => codec::sequence_value(sequence).to_vec(),
            };
            batch.put_cf(self.cf(DEDUP), &id_key, &value);
            pending_dedup.insert(id_key, entry);
            if let Some(key) = local_key {
                batch.put_cf(self.cf(DEDUP), &key, &value);
                pending_dedup.insert(key, entry);
            }

            for key in codec::index_keys(record, sequence) {
                batch.put_cf(self.cf(INDEX), key, []);
            }
            if let Some(change) = record.catalog.as_ref() {
                let key = super::catalog_meta_key(change);
                let kept = match pending_catalog.get(&key) {
                    Some(kept) => Some(Clone::clone(kept)),
                    None => self.read_catalog_change(&key)?,
                };
                if super::newer_catalog_change(change, kept.as_ref()) {
                    batch.put_cf(self.cf(META), key.as_bytes(), change.encode_to_vec());
                    pending_catalog.insert(key, change.clone());
                }
            }
            record.sequence = 0;
            batch.put_cf(
                self.cf(LOG),
                codec::log_key(sequence),
                codec::encode_log_value(record),
            );
            results.push(Appended::Stored {
                sequence,
                queue_offset,
                reused_client_id,
            });
        }
        if sequence != state.last_sequence {
            self.db
                .write_opt(batch, &self.write_options)
                .map_err(backend("append records"))?;
            state.last_sequence = sequence;
            state.tails.extend(staged_offsets);
            self.last_sequence.store(sequence, Ordering::Release);
        }
        Ok(results)
    }

    fn last_sequence(&self) -> Result<u64, StorageError> {
        Ok(self.last_sequence.load(Ordering::Acquire))
    }

    fn memory(&self) -> Result<Option<StorageMemory>, StorageError> {
        // Property names: RocksDB's include/rocksdb/db.h (DB::Properties).
        let sum = |property: &str| -> Result<u64, StorageError> {
            let mut total = 0_u64;
            for name in COLUMN_FAMILIES {
                let value = self
                    .db
                    .property_int_value_cf(self.cf(name), property)
                    .map_err(backend("read a memory property"))?;
                total = total.saturating_add(value.unwrap_or(0));
            }
            Ok(total)
        };
        Ok(Some(StorageMemory {
            budget_bytes: u64::try_from(self.memory_bytes).unwrap_or(u64::MAX),
            memtable_bytes: sum("rocksdb.cur-size-all-mem-tables")?,
            cache_bytes: u64::try_from(self.cache.get_usage()).unwrap_or(u64::MAX),
            table_reader_bytes: sum("rocksdb.estimate-table-readers-mem")?,
        }))
    }

    fn next_timer_due(&self) -> Result<Option<i64>, StorageError> {
        let floor = self.append_state.lock().timer_floor.clone();
        let mut iterator = self.db.raw_iterator_cf(self.cf(TIMER));
        match &floor {
            Some(floor) => iterator.seek(floor),
            None => iterator.seek_to_first(),
        }
        let due = iterator
            .key()
            .map(|key| codec::decode_timer_key(key).map(|(due, _)| due))
            .transpose()?;
        iterator
            .status()
            .map_err(backend("read the first timer key"))?;
        Ok(due)
    }

    fn enqueue_due(&self, now_ms: i64, max: usize) -> Result<Vec<Enqueued>, StorageError> {
        // Offsets are assigned under the append lock, as appends assign them.
        let mut state = self.append_state.lock();
        let mut due = Vec::new();
        let mut iterator = self.db.raw_iterator_cf(self.cf(TIMER));
        match &state.timer_floor {
            Some(floor) => iterator.seek(floor),
            None => iterator.seek_to_first(),
        }
        // The smallest live key: a later look starts there.
        let first_live = iterator.key().map(<[u8]>::to_vec);
        while due.len() < max {
            let Some(key) = iterator.key() else { break };
            let (due_ms, sequence) = codec::decode_timer_key(key)?;
            if due_ms > now_ms {
                break;
            }
            due.push((key.to_vec(), due_ms, sequence));
            iterator.next();
        }
        iterator.status().map_err(backend("scan the timer index"))?;
        drop(iterator);
        let Some((last_key, _, _)) = due.last() else {
            if first_live.is_some() {
                state.timer_floor = first_live;
            }
            return Ok(Vec::new());
        };
        let last_key = last_key.clone();
        let mut batch = WriteBatch::default();
        let mut staged_offsets: HashMap<(String, i32), QueueTail> = HashMap::new();
        let mut enqueued = Vec::with_capacity(due.len());
        for (key, due_ms, sequence) in due {
            batch.delete_cf(self.cf(TIMER), &key);
            let record = self.get(sequence)?.ok_or_else(|| StorageError::Corrupt {
                what: "timer entry",
                key: hex::encode(&key),
                reason: format!("points at sequence {sequence}, which is not stored"),
            })?;
            let bytes = codec::record_size(&record);
            let Some(message) = record.message else {
                continue;
            };
            let queue = (message.topic, message.queue_id);
            let offset = self.stage_queue_entry(
                &mut batch,
                &state,
                &mut staged_offsets,
                queue.clone(),
                NewEntry {
                    sequence,
                    queued_at_ms: due_ms,
                    bytes,
                },
            )?;
            batch.put_cf(
                self.cf(DEDUP),
                codec::dedup_id_key(&record.dedup_id),
                codec::dedup_value(sequence, offset),
            );
            enqueued.push(Enqueued {
                topic: queue.0,
                queue_id: queue.1,
                offset,
                sequence,
                dedup_id: record.dedup_id,
            });
        }
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(backend("move due messages to their queues"))?;
        state.tails.extend(staged_offsets);
        // Every live key is above the last one moved (keys move in order,
        // and appends lower the floor for earlier ones).
        state.timer_floor = Some(last_key);
        Ok(enqueued)
    }

    fn read_log(
        &self,
        after: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StorageError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let start = codec::log_key(first);
        let entries = self
            .db
            .iterator_cf(self.cf(LOG), IteratorMode::From(&start, Direction::Forward));
        let mut records = Vec::new();
        let mut bytes = 0;
        for entry in entries.take(max_records) {
            let (key, value) = entry.map_err(backend("read the log"))?;
            let record = codec::decode_log_value(codec::decode_log_key(&key)?, &value)?;
            let size = codec::record_size(&record);
            if !records.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            records.push(record);
        }
        Ok(records)
    }

    fn get(&self, sequence: u64) -> Result<Option<Record>, StorageError> {
        let value = self
            .db
            .get_pinned_cf(self.cf(LOG), codec::log_key(sequence))
            .map_err(backend("read a log record"))?;
        value
            .map(|value| codec::decode_log_value(sequence, &value))
            .transpose()
    }

    fn read_queue(
        &self,
        topic: &str,
        queue_id: i32,
        from_offset: u64,
        max: usize,
    ) -> Result<Vec<(u64, Record)>, StorageError> {
        let prefix = codec::queue_prefix(topic, queue_id);
        let start = codec::queue_key(topic, queue_id, from_offset);
        let entries = self.db.iterator_cf(
            self.cf(QUEUE),
            IteratorMode::From(&start, Direction::Forward),
        );
        // The entries first, then their records in one batched lookup
        // (sequences ascend with offsets: sorted input).
        let mut entries_found = Vec::new();
        for entry in entries {
            if entries_found.len() >= max {
                break;
            }
            let (key, value) = entry.map_err(backend("read a consume queue"))?;
            if !key.starts_with(&prefix) {
                break;
            }
            let offset = codec::queue_key_offset(&key)?;
            let sequence = codec::decode_queue_value(&key, &value)?.sequence;
            entries_found.push((key, offset, sequence));
        }
        let log_keys: Vec<[u8; 8]> = entries_found
            .iter()
            .map(|(_, _, sequence)| codec::log_key(*sequence))
            .collect();
        let values = self.db.batched_multi_get_cf(self.cf(LOG), &log_keys, true);
        let mut found = Vec::with_capacity(entries_found.len());
        for ((key, offset, sequence), value) in entries_found.into_iter().zip(values) {
            let value = value.map_err(backend("read log records"))?;
            let record = value
                .map(|value| codec::decode_log_value(sequence, &value))
                .transpose()?
                .ok_or_else(|| StorageError::Corrupt {
                    what: "queue entry",
                    key: hex::encode(&key),
                    reason: format!("points at sequence {sequence}, which is not stored"),
                })?;
            found.push((offset, record));
        }
        Ok(found)
    }

    fn queue_bounds(&self, topic: &str, queue_id: i32) -> Result<QueueBounds, StorageError> {
        let max = self.read_tail(topic, queue_id)?.next;
        Ok(QueueBounds {
            min: self.read_first_offset(topic, queue_id)?.unwrap_or(max),
            max,
        })
    }

    fn offset_at_time(
        &self,
        topic: &str,
        queue_id: i32,
        time_ms: i64,
    ) -> Result<u64, StorageError> {
        let bounds = self.queue_bounds(topic, queue_id)?;
        let (mut low, mut high) = (bounds.min, bounds.max);
        // Invariant: every entry below `low` joined before `time_ms`, every
        // one at or after `high` at or after it.
        while low < high {
            let middle = low + (high - low) / 2;
            let key = codec::queue_key(topic, queue_id, middle);
            let value = self
                .db
                .get_pinned_cf(self.cf(QUEUE), &key)
                .map_err(backend("read a queue entry"))?;
            let joined = match value {
                Some(value) => {
                    let entry = codec::decode_queue_value(&key, &value)?;
                    match entry.queued_at_ms {
                        Some(at) => at,
                        None => self
                            .get(entry.sequence)?
                            .and_then(|record| record.message)
                            .map_or(i64::MIN, |message| codec::stored_at_ms(&message)),
                    }
                }
                // Removed by retention meanwhile: older than anything left.
                None => i64::MIN,
            };
            if joined < time_ms {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        Ok(low)
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
        // No lock: appends only add at a queue's tail (a stale, smaller
        // tail counter only keeps more), only retention removes at its
        // head, and the removal and the new floor land in one atomic batch,
        // so a tail read sees either the entries or the floor. Reading the
        // records (bodies included) never holds up appends.
        let last_sequence = self.last_sequence.load(Ordering::Acquire);
        let prefix = codec::queue_prefix(topic, queue_id);
        let tail_cumulative = {
            let mut last = self.db.iterator_cf(
                self.cf(QUEUE),
                IteratorMode::From(
                    &codec::queue_key(topic, queue_id, u64::MAX),
                    Direction::Reverse,
                ),
            );
            match last.next() {
                Some(entry) => {
                    let (key, value) = entry.map_err(backend("read the last queue key"))?;
                    if !key.starts_with(&prefix) {
                        return Ok(Trimmed::default());
                    }
                    (
                        codec::queue_key_offset(&key)?,
                        codec::decode_queue_value(&key, &value)?,
                    )
                }
                None => return Ok(Trimmed::default()),
            }
        };
        let (last_offset, last_entry) = tail_cumulative;
        let mut batch = WriteBatch::default();
        let mut removed = 0;
        let mut min_offset = None;
        let entries = self.db.iterator_cf(
            self.cf(QUEUE),
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for entry in entries {
            let (key, value) = entry.map_err(backend("read a consume queue"))?;
            if !key.starts_with(&prefix) {
                break;
            }
            let offset = codec::queue_key_offset(&key)?;
            let queued = codec::decode_queue_value(&key, &value)?;
            // The log's last record stays: the next sequence is read from it at open.
            if removed >= max
                || queued.sequence > replicated_through
                || queued.sequence >= last_sequence
            {
                min_offset = Some(offset);
                break;
            }
            let record = self.get(queued.sequence)?;
            let kept = super::retention_keeps(
                retention,
                now_ms,
                &queued,
                record.as_ref(),
                offset == last_offset,
                last_entry.cumulative_bytes,
            );
            if kept {
                min_offset = Some(offset);
                break;
            }
            batch.delete_cf(self.cf(QUEUE), &key);
            batch.delete_cf(self.cf(LOG), codec::log_key(queued.sequence));
            if let Some(record) = &record {
                self.stage_entries_removal(&mut batch, record, queued.sequence);
            }
            removed += 1;
            min_offset = Some(offset + 1);
        }
        let min_offset = min_offset.unwrap_or(last_offset + 1);
        if removed > 0 {
            batch.put_cf(
                self.cf(META),
                codec::queue_floor_meta_key(topic, queue_id).as_bytes(),
                codec::sequence_value(min_offset),
            );
            self.db
                .write_opt(batch, &self.write_options)
                .map_err(backend("remove expired messages"))?;
        }
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
        let last_sequence = self.last_sequence.load(Ordering::Acquire);
        let mut cursor = match self.get_meta(super::CONTROL_FLOOR_META_KEY)? {
            None => 0,
            Some(value) => codec::decode_sequence_value(
                "control floor",
                super::CONTROL_FLOOR_META_KEY.as_bytes(),
                &value,
            )?,
        };
        let start = codec::log_key(cursor.saturating_add(1));
        let entries = self
            .db
            .iterator_cf(self.cf(LOG), IteratorMode::From(&start, Direction::Forward));
        let mut batch = WriteBatch::default();
        let (mut removed, mut walked) = (0, 0);
        for entry in entries.take(max) {
            let (key, value) = entry.map_err(backend("read the log"))?;
            let sequence = codec::decode_log_key(&key)?;
            if sequence > replicated_through || sequence >= last_sequence {
                break;
            }
            let record = codec::decode_log_value(sequence, &value)?;
            let held = |message_dedup_id: &[u8]| {
                Ok(self
                    .db
                    .get_pinned_cf(
                        self.cf(DEDUP),
                        codec::held_ack_key(message_dedup_id, sequence),
                    )
                    .map_err(backend("read a held acknowledgement"))?
                    .is_some())
            };
            match super::control_step(&record, now_ms, max_age_ms, held)? {
                super::ControlStep::Stop => break,
                super::ControlStep::Skip => {}
                super::ControlStep::Remove => {
                    batch.delete_cf(self.cf(LOG), &key);
                    self.stage_entries_removal(&mut batch, &record, sequence);
                    removed += 1;
                }
                super::ControlStep::RemoveRollback { message_dedup_id } => {
                    batch.delete_cf(self.cf(LOG), &key);
                    self.stage_entries_removal(&mut batch, &record, sequence);
                    removed += 1;
                    if self.stage_half_message_removal(
                        &mut batch,
                        &message_dedup_id,
                        last_sequence,
                    )? {
                        removed += 1;
                    }
                }
            }
            cursor = sequence;
            walked += 1;
        }
        // Nothing walked, nothing to write (this runs every second).
        if walked > 0 {
            batch.put_cf(
                self.cf(META),
                super::CONTROL_FLOOR_META_KEY.as_bytes(),
                codec::sequence_value(cursor),
            );
            self.db
                .write_opt(batch, &self.write_options)
                .map_err(backend("remove expired acknowledgements"))?;
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
        let prefix = codec::message_index_prefix(topic, index);
        let (start, end) = super::query_bounds(&prefix, &range, after);
        let mut found = Vec::new();
        let mut iterator = self.db.raw_iterator_cf(self.cf(INDEX));
        iterator.seek(&start);
        while found.len() < limit {
            let Some(key) = iterator.key() else { break };
            if !key.starts_with(&prefix) || key >= end.as_slice() {
                break;
            }
            let (stored_ms, sequence) = codec::decode_position(key)?;
            // An entry whose record retention just removed is skipped.
            if let Some(record) = self.get(sequence)? {
                found.push((
                    QueryPosition {
                        stored_ms,
                        sequence,
                    },
                    record,
                ));
            }
            iterator.next();
        }
        iterator.status().map_err(backend("scan a message index"))?;
        Ok(found)
    }

    fn indexed_records(
        &self,
        lookup: IndexLookup<'_>,
        limit: usize,
    ) -> Result<Vec<Record>, StorageError> {
        let prefix = lookup.prefix();
        let mut sequences = Vec::new();
        let mut iterator = self.db.raw_iterator_cf(self.cf(INDEX));
        iterator.seek(&prefix);
        while sequences.len() < limit {
            let Some(key) = iterator.key().filter(|key| key.starts_with(&prefix)) else {
                break;
            };
            sequences.push(codec::indexed_sequence(key)?);
            iterator.next();
        }
        iterator.status().map_err(backend("scan an index"))?;
        drop(iterator);
        let mut records = Vec::with_capacity(sequences.len());
        for sequence in sequences {
            records.extend(self.get(sequence)?);
        }
        Ok(records)
    }

    fn locate_message(&self, dedup_id: &[u8]) -> Result<Option<MessageLocation>, StorageError> {
        let Some(entry) = self.find_dedup_key(&HashMap::new(), &codec::dedup_id_key(dedup_id))?
        else {
            return Ok(None);
        };
        let open_transaction = self
            .db
            .get_pinned_cf(self.cf(TXN), codec::transaction_key(entry.sequence))
            .map_err(backend("read an open transaction"))?
            .is_some();
        Ok(Some(MessageLocation {
            sequence: entry.sequence,
            queue_offset: entry.queue_offset,
            open_transaction,
        }))
    }

    fn end_transaction(
        &self,
        message_dedup_id: &[u8],
        commit: bool,
        at_ms: i64,
    ) -> Result<TransactionEnded, StorageError> {
        // Offsets are assigned under the append lock, as appends assign them.
        let mut state = self.append_state.lock();
        let id_key = codec::dedup_id_key(message_dedup_id);
        let Some(entry) = self.find_dedup_key(&HashMap::new(), &id_key)? else {
            return Ok(TransactionEnded::NotStored);
        };
        let sequence = entry.sequence;
        let open = self
            .db
            .get_pinned_cf(self.cf(TXN), codec::transaction_key(sequence))
            .map_err(backend("read an open transaction"))?
            .is_some();
        if !open {
            return Ok(TransactionEnded::NotOpen {
                sequence,
                committed: entry.queue_offset.is_some(),
            });
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(TXN), codec::transaction_key(sequence));
        if !commit {
            self.db
                .write_opt(batch, &self.write_options)
                .map_err(backend("roll a transaction back"))?;
            return Ok(TransactionEnded::RolledBack { sequence });
        }
        let record = self.get(sequence)?.ok_or_else(|| StorageError::Corrupt {
            what: "open transaction",
            key: sequence.to_string(),
            reason: "its half message is not in the log".into(),
        })?;
        let bytes = codec::record_size(&record);
        let Some(message) = record.message else {
            return Err(StorageError::Corrupt {
                what: "open transaction",
                key: sequence.to_string(),
                reason: "its record is not a message".into(),
            });
        };
        let mut staged_offsets: HashMap<(String, i32), QueueTail> = HashMap::new();
        let queue = (message.topic, message.queue_id);
        let offset = self.stage_queue_entry(
            &mut batch,
            &state,
            &mut staged_offsets,
            queue.clone(),
            NewEntry {
                sequence,
                queued_at_ms: at_ms,
                bytes,
            },
        )?;
        batch.put_cf(
            self.cf(DEDUP),
            &id_key,
            codec::dedup_value(sequence, offset),
        );
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(backend("commit a transaction"))?;
        state.tails.extend(staged_offsets);
        Ok(TransactionEnded::Committed(Enqueued {
            topic: queue.0,
            queue_id: queue.1,
            offset,
            sequence,
            dedup_id: record.dedup_id,
        }))
    }

    fn open_transactions(&self) -> Result<Vec<OpenTransaction>, StorageError> {
        let mut open = Vec::new();
        for entry in self.db.iterator_cf(self.cf(TXN), IteratorMode::Start) {
            let (key, value) = entry.map_err(backend("scan the open transactions"))?;
            open.push(codec::decode_transaction(&key, &value)?);
        }
        Ok(open)
    }

    fn note_transaction_check(
        &self,
        sequence: u64,
        checks: u32,
        at_ms: i64,
    ) -> Result<bool, StorageError> {
        // Under the append lock, so an end_transaction cannot slip in
        // between the look and the write and leave the entry open again.
        let _state = self.append_state.lock();
        let key = codec::transaction_key(sequence);
        let open = self
            .db
            .get_pinned_cf(self.cf(TXN), key)
            .map_err(backend("read an open transaction"))?
            .is_some();
        if open {
            self.db
                .put_cf_opt(
                    self.cf(TXN),
                    key,
                    codec::transaction_value(checks, at_ms),
                    &self.relaxed_write_options,
                )
                .map_err(backend("count a transaction check-back"))?;
        }
        Ok(open)
    }

    fn find_dedup(&self, dedup_id: &[u8]) -> Result<Option<u64>, StorageError> {
        Ok(self
            .find_dedup_key(&HashMap::new(), &codec::dedup_id_key(dedup_id))?
            .map(|entry| entry.sequence))
    }

    fn find_message(&self, dedup_id: &[u8]) -> Result<Option<(u64, u64)>, StorageError> {
        Ok(self
            .find_dedup_key(&HashMap::new(), &codec::dedup_id_key(dedup_id))?
            .and_then(|entry| Some((entry.sequence, entry.queue_offset?))))
    }

    fn hold_ack(&self, message_dedup_id: &[u8], ack_sequence: u64) -> Result<(), StorageError> {
        // Counted first: a concurrent take must not skip the scan.
        self.held_acks.fetch_add(1, Ordering::AcqRel);
        self.db
            .put_cf_opt(
                self.cf(DEDUP),
                codec::held_ack_key(message_dedup_id, ack_sequence),
                [],
                &self.write_options,
            )
            .map_err(backend("hold an acknowledgement"))
    }

    fn take_held_acks(&self, message_dedup_id: &[u8]) -> Result<Vec<u64>, StorageError> {
        if self.held_acks.load(Ordering::Acquire) == 0 {
            return Ok(Vec::new());
        }
        let prefix = codec::held_ack_prefix(message_dedup_id);
        let mut keys = Vec::new();
        let mut iterator = self.db.raw_iterator_cf(self.cf(DEDUP));
        iterator.seek(&prefix);
        while let Some(key) = iterator.key().filter(|key| key.starts_with(&prefix)) {
            keys.push(key.to_vec());
            iterator.next();
        }
        iterator
            .status()
            .map_err(backend("scan the held acknowledgements of a message"))?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut sequences = Vec::with_capacity(keys.len());
        let mut batch = WriteBatch::default();
        for key in &keys {
            sequences.push(codec::held_ack_sequence(key)?);
            batch.delete_cf(self.cf(DEDUP), key);
        }
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(backend("release held acknowledgements"))?;
        let taken = u64::try_from(sequences.len()).unwrap_or(u64::MAX);
        let _ = self
            .held_acks
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(taken))
            });
        Ok(sequences)
    }

    fn write_groups(&self, writes: Vec<GroupWrite>) -> Result<(), StorageError> {
        self.write_group_batch(writes, &self.write_options)
    }

    fn write_groups_relaxed(&self, writes: Vec<GroupWrite>) -> Result<(), StorageError> {
        self.write_group_batch(writes, &self.relaxed_write_options)
    }

    fn remove_group(&self, group: &str) -> Result<(), StorageError> {
        let prefix = codec::group_prefix(group);
        let mut batch = WriteBatch::default();
        let mut iterator = self.db.raw_iterator_cf(self.cf(GROUP));
        iterator.seek(&prefix);
        while let Some(key) = iterator.key().filter(|key| key.starts_with(&prefix)) {
            batch.delete_cf(self.cf(GROUP), key);
            iterator.next();
        }
        iterator.status().map_err(backend("scan a group's state"))?;
        drop(iterator);
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(backend("remove a group's state"))
    }

    fn load_groups(&self) -> Result<Vec<GroupQueueState>, StorageError> {
        let mut states: Vec<GroupQueueState> = Vec::new();
        for entry in self.db.iterator_cf(self.cf(GROUP), IteratorMode::Start) {
            let (key, value) = entry.map_err(backend("read group state"))?;
            match codec::decode_group_key(&key)? {
                GroupKey::Cursor(queue) => states.push(GroupQueueState {
                    key: queue,
                    cursor: codec::decode_cursor(&key, &value)?,
                    offsets: Default::default(),
                }),
                GroupKey::Offset(queue, offset) => match states.last_mut() {
                    Some(state) if state.key == queue => {
                        state
                            .offsets
                            .insert(offset, codec::decode_offset_state(&key, &value)?);
                    }
                    _ => {
                        return Err(StorageError::Corrupt {
                            what: "group offset state",
                            key: hex::encode(&key),
                            reason: "no cursor is stored for its group queue".to_owned(),
                        });
                    }
                },
            }
        }
        // Key order puts shorter names first; return the same order as `GroupQueueKey`'s.
        states.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(states)
    }

    fn checkpoint(&self, peer: &str) -> Result<u64, StorageError> {
        let key = codec::checkpoint_key(peer);
        self.get_meta(&key)?
            .map_or(Ok(0), |value| codec::decode_checkpoint_value(&key, &value))
    }

    fn advance_checkpoint(&self, peer: &str, sequence: u64) -> Result<u64, StorageError> {
        let _serial = self.checkpoint_lock.lock();
        let current = self.checkpoint(peer)?;
        if sequence <= current {
            return Ok(current);
        }
        self.put_meta(
            &codec::checkpoint_key(peer),
            &codec::checkpoint_value(sequence),
        )?;
        Ok(sequence)
    }

    fn catalog(&self) -> Result<Vec<CatalogChange>, StorageError> {
        let prefix = super::CATALOG_META_PREFIX.as_bytes();
        let mut keys = Vec::new();
        let mut iterator = self.db.raw_iterator_cf(self.cf(META));
        iterator.seek(prefix);
        while let Some(key) = iterator.key().filter(|key| key.starts_with(prefix)) {
            keys.push(String::from_utf8_lossy(key).into_owned());
            iterator.next();
        }
        iterator.status().map_err(backend("scan the catalog"))?;
        drop(iterator);
        let mut changes = Vec::with_capacity(keys.len());
        for key in keys {
            changes.extend(self.read_catalog_change(&key)?);
        }
        Ok(changes)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.db
            .get_cf(self.cf(META), key.as_bytes())
            .map_err(backend("read a metadata value"))
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.db
            .put_cf_opt(self.cf(META), key.as_bytes(), value, &self.write_options)
            .map_err(backend("write a metadata value"))
    }
}
