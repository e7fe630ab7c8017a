//! Byte formats of the stored keys and values, shared by every backend that
//! persists bytes (today `RocksStore`).
//!
//! Why these shapes:
//! * Integers in keys are big-endian so that byte order equals numeric order:
//!   a forward scan of the `log` column family is a scan in sequence order, and
//!   a scan of one queue's prefix is a scan in offset order. The signed queue id
//!   has its sign bit flipped for the same reason.
//! * Strings in keys (topic, group, client message id) are preceded by their
//!   length as an unsigned LEB128 varint. The prefix is self-delimiting, so
//!   ("ab", "c") and ("a", "bc") can never encode to the same bytes and one
//!   queue's key prefix is never a prefix of another queue's keys. Names are
//!   usually short, so the length costs one byte.
//! * A commit-log value is `version (1 byte) | CRC32C of the payload (4 bytes,
//!   big-endian) | payload`, the payload being the protobuf encoding of the
//!   [`Record`] with `sequence` cleared (the key holds it). The checksum is
//!   written with the record and checked whenever it is read back; the
//!   version byte lets a later format coexist with this one.
//!
//! Decoders never panic on bad bytes: they return [`StorageError::Corrupt`]
//! naming what was being read, the key and the reason. The full key layout per
//! column family is documented in `storage/rocks.rs`.

use super::{GroupCursor, GroupQueueKey, OffsetState, OpenTransaction, StorageError};
use meridian_proto::meridian::v1::{Message, Record};
use prost::Message as _;
use sha2::Digest as _;

/// The format version of commit-log values written by this code.
pub const LOG_VALUE_VERSION: u8 = 1;
/// Bytes before the protobuf payload in a commit-log value.
const LOG_VALUE_HEADER_BYTES: usize = 1 + 4;

/// `dedup` key space of dedup ids.
const DEDUP_ID_TAG: u8 = 0x01;
// 0x02 was the `dedup` key space of (topic, client message id) without a
// content digest; such keys are no longer read (nor written).
/// `dedup` key space of (topic, client message id, content digest) of
/// local-origin records.
const DEDUP_LOCAL_MESSAGE_TAG: u8 = 0x03;
/// `dedup` keys of acknowledgements waiting for their message.
const DEDUP_HELD_ACK_TAG: u8 = 0x04;
/// Bytes of a `dedup` value: sequence and queue offset.
const DEDUP_VALUE_BYTES: usize = 16;

/// Follows a group queue prefix: the key of the cursor.
const GROUP_CURSOR_TAG: u8 = 0x00;
/// Follows a group queue prefix: the key of one offset's state.
const GROUP_OFFSET_TAG: u8 = 0x01;

/// `group` offset-state value tags.
const OFFSET_IN_FLIGHT_TAG: u8 = 0x01;
const OFFSET_DONE_TAG: u8 = 0x02;

/// The size a record counts for in `read_log`'s byte budget: its protobuf
/// encoding as returned (with `sequence` set). Every backend uses this so that
/// paging is identical across them.
pub fn record_size(record: &Record) -> usize {
    record.encoded_len()
}

// ---- commit log ----------------------------------------------------------

/// `log` key: the sequence, big-endian.
pub fn log_key(sequence: u64) -> [u8; 8] {
    sequence.to_be_bytes()
}

/// Reads a `log` key back.
pub fn decode_log_key(key: &[u8]) -> Result<u64, StorageError> {
    read_u64(key).ok_or_else(|| {
        corrupt(
            "log key",
            key,
            format!("expected 8 bytes, found {}", key.len()),
        )
    })
}

/// Encodes a commit-log value. The stored payload never carries `sequence`:
/// if `record.sequence` is set, a copy with it cleared is encoded.
pub fn encode_log_value(record: &Record) -> Vec<u8> {
    if record.sequence != 0 {
        let mut without_sequence = record.clone();
        without_sequence.sequence = 0;
        return encode_log_value(&without_sequence);
    }
    let mut value = Vec::with_capacity(LOG_VALUE_HEADER_BYTES + record.encoded_len());
    value.push(LOG_VALUE_VERSION);
    value.extend_from_slice(&[0; 4]);
    record
        .encode(&mut value)
        .expect("a Vec grows to hold any encoding, so prost cannot run out of space");
    let checksum = crc32c::crc32c(&value[LOG_VALUE_HEADER_BYTES..]);
    value[1..LOG_VALUE_HEADER_BYTES].copy_from_slice(&checksum.to_be_bytes());
    value
}

/// Decodes a commit-log value stored under `sequence`, checking version,
/// length and checksum, and sets `sequence` on the returned record.
pub fn decode_log_value(sequence: u64, value: &[u8]) -> Result<Record, StorageError> {
    let fail = |reason: String| StorageError::Corrupt {
        what: "log record",
        key: format!("log/{sequence}"),
        reason,
    };
    if value.len() < LOG_VALUE_HEADER_BYTES {
        return Err(fail(format!(
            "value is {} bytes, shorter than the {LOG_VALUE_HEADER_BYTES}-byte header",
            value.len()
        )));
    }
    let (header, payload) = value.split_at(LOG_VALUE_HEADER_BYTES);
    if header[0] != LOG_VALUE_VERSION {
        return Err(fail(format!("unknown format version {}", header[0])));
    }
    let stored = read_u32(&header[1..]).ok_or_else(|| fail("truncated checksum".to_owned()))?;
    let computed = crc32c::crc32c(payload);
    if stored != computed {
        return Err(fail(format!(
            "checksum mismatch: stored {stored:#010x}, computed {computed:#010x} over {} bytes",
            payload.len()
        )));
    }
    let mut record =
        Record::decode(payload).map_err(|e| fail(format!("protobuf decoding failed: {e}")))?;
    record.sequence = sequence;
    Ok(record)
}

// ---- consume queues -------------------------------------------------------

/// The prefix shared by every `queue` key of one (topic, queue id).
pub fn queue_prefix(topic: &str, queue_id: i32) -> Vec<u8> {
    let mut key = Vec::with_capacity(varint_len(topic.len()) + topic.len() + 4 + 8);
    put_name(&mut key, topic);
    key.extend_from_slice(&ordered_i32(queue_id));
    key
}

/// `queue` key: `varint len | topic | queue id (sign-flipped u32 BE) | offset (u64 BE)`.
pub fn queue_key(topic: &str, queue_id: i32, offset: u64) -> Vec<u8> {
    let mut key = queue_prefix(topic, queue_id);
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

/// Reads a `queue` key back into (topic, queue id, offset). The store
/// reads only the offset ([`queue_key_offset`]); tests and the fuzz target
/// read whole keys.
pub fn decode_queue_key(key: &[u8]) -> Result<(String, i32, u64), StorageError> {
    let mut reader = KeyReader::new(key);
    let decoded = (|| {
        let topic = reader.name()?;
        let queue_id = reader.queue_id()?;
        let offset = reader.u64()?;
        reader.finish()?;
        Some((topic, queue_id, offset))
    })();
    decoded.ok_or_else(|| corrupt("queue key", key, "malformed key".to_owned()))
}

/// The queue offset at the end of a `queue` key known to start with a queue prefix.
pub fn queue_key_offset(key: &[u8]) -> Result<u64, StorageError> {
    key.len()
        .checked_sub(8)
        .and_then(|start| read_u64(&key[start..]))
        .ok_or_else(|| corrupt("queue key", key, "shorter than an offset".to_owned()))
}

/// A consume-queue entry: where its message is in the log, when it joined
/// the queue and how many bytes the queue had taken in up to and including
/// it (what retention by time and size reads without touching the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueEntry {
    pub sequence: u64,
    /// When the message joined the queue, ms since the Unix epoch: its
    /// store time, or for a delay message its due time. `None` for entries
    /// written before this was recorded.
    pub queued_at_ms: Option<i64>,
    /// Encoded record bytes of every message the queue ever took, this one
    /// included (`None` for older entries).
    pub cumulative_bytes: Option<u64>,
}

/// When a message was stored (its origin's store time, else its birth):
/// when it joins its queue unless it waits for a delivery time.
pub fn stored_at_ms(message: &Message) -> i64 {
    if message.store_timestamp_ms != 0 {
        message.store_timestamp_ms
    } else {
        message.born_timestamp_ms
    }
}

/// Bytes of a `queue` value: `sequence u64 | queued_at_ms i64 | cumulative_bytes u64`.
pub const QUEUE_VALUE_BYTES: usize = 24;

/// `queue` value of an entry with its time and cumulative bytes.
pub fn queue_value(
    sequence: u64,
    queued_at_ms: i64,
    cumulative_bytes: u64,
) -> [u8; QUEUE_VALUE_BYTES] {
    let mut value = [0; QUEUE_VALUE_BYTES];
    value[..8].copy_from_slice(&sequence.to_be_bytes());
    value[8..16].copy_from_slice(&queued_at_ms.to_be_bytes());
    value[16..].copy_from_slice(&cumulative_bytes.to_be_bytes());
    value
}

/// Reads a `queue` value (24 bytes, or the 8-byte sequence of older entries).
pub fn decode_queue_value(key: &[u8], value: &[u8]) -> Result<QueueEntry, StorageError> {
    match value.len() {
        8 => Ok(QueueEntry {
            sequence: decode_sequence_value("queue entry", key, value)?,
            queued_at_ms: None,
            cumulative_bytes: None,
        }),
        QUEUE_VALUE_BYTES => Ok(QueueEntry {
            sequence: read_u64(&value[..8]).unwrap_or_default(),
            queued_at_ms: value[8..16].try_into().ok().map(i64::from_be_bytes),
            cumulative_bytes: read_u64(&value[16..]),
        }),
        length => Err(corrupt(
            "queue entry",
            key,
            format!("expected {QUEUE_VALUE_BYTES} bytes (or 8), found {length}"),
        )),
    }
}

/// `meta` key holding a queue's retention floor: the offset below which
/// every entry was removed (so offsets never restart, even when retention
/// emptied the queue).
pub fn queue_floor_meta_key(topic: &str, queue_id: i32) -> String {
    format!("queue-floor/{}/{queue_id}", hex::encode(topic))
}

/// A sequence as stored in `queue` and `dedup` values.
pub fn sequence_value(sequence: u64) -> [u8; 8] {
    sequence.to_be_bytes()
}

/// Reads a sequence value; `what` and `key` name it in the error.
pub fn decode_sequence_value(
    what: &'static str,
    key: &[u8],
    value: &[u8],
) -> Result<u64, StorageError> {
    read_u64(value).ok_or_else(|| {
        corrupt(
            what,
            key,
            format!("expected an 8-byte sequence, found {} bytes", value.len()),
        )
    })
}

// ---- deduplication --------------------------------------------------------

/// `dedup` key of a dedup id: `0x01 | dedup id`.
pub fn dedup_id_key(dedup_id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + dedup_id.len());
    key.push(DEDUP_ID_TAG);
    key.extend_from_slice(dedup_id);
    key
}

/// Prefix of the held acknowledgements of a message: `0x04 | message dedup id`.
pub fn held_ack_prefix(message_dedup_id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + message_dedup_id.len() + 8);
    key.push(DEDUP_HELD_ACK_TAG);
    key.extend_from_slice(message_dedup_id);
    key
}

/// `dedup` key of a held acknowledgement: `0x04 | message dedup id |
/// ack sequence: u64`; the value is empty.
pub fn held_ack_key(message_dedup_id: &[u8], ack_sequence: u64) -> Vec<u8> {
    let mut key = held_ack_prefix(message_dedup_id);
    key.extend_from_slice(&ack_sequence.to_be_bytes());
    key
}

/// The ack sequence of a held-acknowledgement key.
pub fn held_ack_sequence(key: &[u8]) -> Result<u64, StorageError> {
    key.len()
        .checked_sub(8)
        .and_then(|start| read_u64(&key[start..]))
        .ok_or_else(|| {
            corrupt(
                "held acknowledgement",
                key,
                "shorter than 8 bytes".to_owned(),
            )
        })
}

/// SHA-256 of what makes two sends the same message: message type, tag,
/// keys, message group, delivery time, user properties (sorted by name) and
/// body, each length-prefixed. Not the queue (a producer's retry may pick
/// another), nor born time and host.
pub type ContentDigest = [u8; 32];

/// The [`ContentDigest`] of `message`.
pub fn content_digest(message: &Message) -> ContentDigest {
    fn bytes(hasher: &mut sha2::Sha256, value: &[u8]) {
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value);
    }
    fn optional(hasher: &mut sha2::Sha256, value: Option<&str>) {
        match value {
            Some(value) => {
                hasher.update([1]);
                bytes(hasher, value.as_bytes());
            }
            None => hasher.update([0]),
        }
    }
    let mut hasher = sha2::Sha256::new();
    hasher.update(message.message_type.to_be_bytes());
    optional(&mut hasher, message.tag.as_deref());
    hasher.update((message.keys.len() as u64).to_be_bytes());
    for key in &message.keys {
        bytes(&mut hasher, key.as_bytes());
    }
    optional(&mut hasher, message.message_group.as_deref());
    match message.delivery_timestamp_ms {
        Some(timestamp) => {
            hasher.update([1]);
            hasher.update(timestamp.to_be_bytes());
        }
        None => hasher.update([0]),
    }
    let mut properties: Vec<_> = message.user_properties.iter().collect();
    properties.sort();
    hasher.update((properties.len() as u64).to_be_bytes());
    for (name, value) in properties {
        bytes(&mut hasher, name.as_bytes());
        bytes(&mut hasher, value.as_bytes());
    }
    bytes(&mut hasher, &message.body);
    hasher.finalize().into()
}

/// The prefix of every `dedup` key of local-origin messages with this topic
/// and client message id: `0x03 | varint len | topic | varint len | client message id`.
pub fn local_message_prefix(topic: &str, client_message_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(
        1 + varint_len(topic.len())
            + topic.len()
            + varint_len(client_message_id.len())
            + client_message_id.len()
            + 32,
    );
    key.push(DEDUP_LOCAL_MESSAGE_TAG);
    put_name(&mut key, topic);
    put_name(&mut key, client_message_id);
    key
}

/// `dedup` key of a local-origin message: [`local_message_prefix`] then its
/// [`ContentDigest`].
pub fn local_message_key(topic: &str, client_message_id: &str, digest: &ContentDigest) -> Vec<u8> {
    let mut key = local_message_prefix(topic, client_message_id);
    key.extend_from_slice(digest);
    key
}

/// What a `dedup` entry points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupEntry {
    pub sequence: u64,
    /// `None` for entries written before the offset was recorded (8-byte values).
    pub queue_offset: Option<u64>,
}

/// `dedup` value: `sequence: u64 | queue offset: u64`.
pub fn dedup_value(sequence: u64, queue_offset: u64) -> [u8; DEDUP_VALUE_BYTES] {
    let mut value = [0; DEDUP_VALUE_BYTES];
    value[..8].copy_from_slice(&sequence.to_be_bytes());
    value[8..].copy_from_slice(&queue_offset.to_be_bytes());
    value
}

/// Reads a `dedup` value (16 bytes, or the 8-byte sequence of older entries).
pub fn decode_dedup_value(key: &[u8], value: &[u8]) -> Result<DedupEntry, StorageError> {
    match value.len() {
        8 => Ok(DedupEntry {
            sequence: decode_sequence_value("dedup entry", key, value)?,
            queue_offset: None,
        }),
        DEDUP_VALUE_BYTES => Ok(DedupEntry {
            sequence: read_u64(&value[..8]).unwrap_or_default(),
            queue_offset: read_u64(&value[8..]),
        }),
        length => Err(corrupt(
            "dedup entry",
            key,
            format!("expected {DEDUP_VALUE_BYTES} bytes (or 8), found {length}"),
        )),
    }
}

// ---- timer index ------------------------------------------------------------

/// `timer` key: `due_ms` (an `i64`, big-endian with the sign bit flipped, so
/// byte order is time order) then `sequence: u64`.
pub fn timer_key(due_ms: i64, sequence: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&((due_ms as u64) ^ 0x8000_0000_0000_0000).to_be_bytes());
    key[8..].copy_from_slice(&sequence.to_be_bytes());
    key
}

/// Reads a `timer` key: (due time in ms, sequence).
pub fn decode_timer_key(key: &[u8]) -> Result<(i64, u64), StorageError> {
    match (
        key.get(..8).and_then(read_u64),
        key.get(8..).and_then(read_u64),
    ) {
        (Some(due), Some(sequence)) if key.len() == 16 => {
            Ok(((due ^ 0x8000_0000_0000_0000) as i64, sequence))
        }
        _ => Err(corrupt(
            "timer key",
            key,
            format!("expected 16 bytes, found {}", key.len()),
        )),
    }
}

// ---- open transactions ---------------------------------------------------

/// `txn` key: the half message's `sequence: u64` (as [`log_key`]).
pub fn transaction_key(sequence: u64) -> [u8; 8] {
    log_key(sequence)
}

/// `txn` value: `checks: u32, last_check_ms: i64`.
pub fn transaction_value(checks: u32, last_check_ms: i64) -> [u8; 12] {
    let mut value = [0; 12];
    value[..4].copy_from_slice(&checks.to_be_bytes());
    value[4..].copy_from_slice(&last_check_ms.to_be_bytes());
    value
}

/// Reads a `txn` entry.
pub fn decode_transaction(key: &[u8], value: &[u8]) -> Result<OpenTransaction, StorageError> {
    let sequence = key.try_into().map(u64::from_be_bytes).map_err(|_| {
        corrupt(
            "transaction key",
            key,
            format!("expected 8 bytes, found {}", key.len()),
        )
    })?;
    match (
        value.get(..4).and_then(read_u32),
        value.get(4..).and_then(read_u64),
    ) {
        (Some(checks), Some(last_check_ms)) if value.len() == 12 => Ok(OpenTransaction {
            sequence,
            checks,
            last_check_ms: last_check_ms as i64,
        }),
        _ => Err(corrupt(
            "transaction value",
            key,
            format!("expected 12 bytes, found {}", value.len()),
        )),
    }
}

// ---- consumer groups ------------------------------------------------------

/// A decoded `group` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupKey {
    Cursor(GroupQueueKey),
    Offset(GroupQueueKey, u64),
}

fn group_queue_prefix(key: &GroupQueueKey, extra: usize) -> Vec<u8> {
    let (group, topic) = (key.group.as_str(), key.topic.as_str());
    let mut bytes = Vec::with_capacity(
        varint_len(group.len()) + group.len() + varint_len(topic.len()) + topic.len() + 4 + extra,
    );
    put_name(&mut bytes, group);
    put_name(&mut bytes, topic);
    bytes.extend_from_slice(&ordered_i32(key.queue_id));
    bytes
}

/// The prefix of every `group` key of one consumer group.
pub fn group_prefix(group: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(varint_len(group.len()) + group.len());
    put_name(&mut bytes, group);
    bytes
}

/// `group` key of a cursor: `varint len | group | varint len | topic | queue id | 0x00`.
pub fn group_cursor_key(key: &GroupQueueKey) -> Vec<u8> {
    let mut bytes = group_queue_prefix(key, 1);
    bytes.push(GROUP_CURSOR_TAG);
    bytes
}

/// `group` key of one offset's state: the group queue prefix, `0x01`, offset (u64 BE).
/// It sorts after the queue's cursor key, so one forward scan meets a cursor
/// and then its offsets.
pub fn group_offset_key(key: &GroupQueueKey, offset: u64) -> Vec<u8> {
    let mut bytes = group_queue_prefix(key, 9);
    bytes.push(GROUP_OFFSET_TAG);
    bytes.extend_from_slice(&offset.to_be_bytes());
    bytes
}

/// Reads a `group` key back.
pub fn decode_group_key(key: &[u8]) -> Result<GroupKey, StorageError> {
    let mut reader = KeyReader::new(key);
    let decoded = (|| {
        let queue = GroupQueueKey {
            group: reader.name()?,
            topic: reader.name()?,
            queue_id: reader.queue_id()?,
        };
        let decoded = match reader.u8()? {
            GROUP_CURSOR_TAG => GroupKey::Cursor(queue),
            GROUP_OFFSET_TAG => GroupKey::Offset(queue, reader.u64()?),
            _ => return None,
        };
        reader.finish()?;
        Some(decoded)
    })();
    decoded.ok_or_else(|| corrupt("group key", key, "malformed key".to_owned()))
}

/// `group` cursor value: `floor (u64 BE) | next (u64 BE)`.
pub fn encode_cursor(cursor: GroupCursor) -> [u8; 16] {
    let mut value = [0; 16];
    value[..8].copy_from_slice(&cursor.floor.to_be_bytes());
    value[8..].copy_from_slice(&cursor.next.to_be_bytes());
    value
}

/// Reads a cursor value stored under `key`.
pub fn decode_cursor(key: &[u8], value: &[u8]) -> Result<GroupCursor, StorageError> {
    match (
        value.get(..8).and_then(read_u64),
        value.get(8..).and_then(read_u64),
    ) {
        (Some(floor), Some(next)) if value.len() == 16 => Ok(GroupCursor { floor, next }),
        _ => Err(corrupt(
            "group cursor",
            key,
            format!("expected 16 bytes, found {}", value.len()),
        )),
    }
}

/// `group` offset-state value: `0x01 | deadline ms (i64 BE) | attempt (u32 BE)`
/// for in-flight, `0x02` for done.
pub fn encode_offset_state(state: OffsetState) -> Vec<u8> {
    match state {
        OffsetState::InFlight {
            deadline_ms,
            attempt,
        } => {
            let mut value = Vec::with_capacity(13);
            value.push(OFFSET_IN_FLIGHT_TAG);
            value.extend_from_slice(&deadline_ms.to_be_bytes());
            value.extend_from_slice(&attempt.to_be_bytes());
            value
        }
        OffsetState::Done => vec![OFFSET_DONE_TAG],
    }
}

/// Reads an offset-state value stored under `key`.
pub fn decode_offset_state(key: &[u8], value: &[u8]) -> Result<OffsetState, StorageError> {
    match value {
        [OFFSET_DONE_TAG] => Ok(OffsetState::Done),
        [OFFSET_IN_FLIGHT_TAG, rest @ ..] if rest.len() == 12 => {
            let deadline = read_u64(&rest[..8]);
            let attempt = read_u32(&rest[8..]);
            match (deadline, attempt) {
                (Some(deadline), Some(attempt)) => Ok(OffsetState::InFlight {
                    deadline_ms: i64::from_be_bytes(deadline.to_be_bytes()),
                    attempt,
                }),
                _ => Err(corrupt(
                    "group offset state",
                    key,
                    "truncated value".to_owned(),
                )),
            }
        }
        _ => Err(corrupt(
            "group offset state",
            key,
            format!(
                "unknown encoding ({} bytes, tag {:?})",
                value.len(),
                value.first()
            ),
        )),
    }
}

// ---- message and trace indexes ---------------------------------------------

/// `index` key kinds. Time-ordered kinds end with `stored_ms` (an `i64` with
/// the sign bit flipped, big-endian) and the message's `sequence: u64`.
const INDEX_BY_KEY: u8 = 0x01;
const INDEX_BY_TAG: u8 = 0x02;
const INDEX_BY_TIME: u8 = 0x03;
/// `0x04 name(client message id) sequence`.
const INDEX_BY_ID: u8 = 0x04;
/// `0x05 message dedup id (16 bytes) trace record sequence`.
const INDEX_TRACE: u8 = 0x05;

/// Which index a message query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageIndex<'a> {
    /// Messages with this key (RocketMQ's message keys).
    Key(&'a str),
    /// Messages with this tag.
    Tag(&'a str),
    /// Every message of the topic.
    Time,
}

/// The prefix of one topic's entries in one index; time-ordered entries
/// follow it.
pub fn message_index_prefix(topic: &str, index: MessageIndex<'_>) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + topic.len() + 32);
    match index {
        MessageIndex::Key(name) => {
            key.push(INDEX_BY_KEY);
            put_name(&mut key, topic);
            put_name(&mut key, name);
        }
        MessageIndex::Tag(name) => {
            key.push(INDEX_BY_TAG);
            put_name(&mut key, topic);
            put_name(&mut key, name);
        }
        MessageIndex::Time => {
            key.push(INDEX_BY_TIME);
            put_name(&mut key, topic);
        }
    }
    key
}

/// `prefix` followed by a time-ordered position.
pub fn at_position(prefix: &[u8], stored_ms: i64, sequence: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&((stored_ms as u64) ^ 0x8000_0000_0000_0000).to_be_bytes());
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

/// The (stored ms, sequence) a time-ordered index key ends with.
pub fn decode_position(key: &[u8]) -> Result<(i64, u64), StorageError> {
    let tail = key.len().checked_sub(16).map(|start| &key[start..]);
    match tail.map(|tail| (read_u64(&tail[..8]), read_u64(&tail[8..]))) {
        Some((Some(stored), Some(sequence))) => {
            Ok(((stored ^ 0x8000_0000_0000_0000) as i64, sequence))
        }
        _ => Err(corrupt(
            "index key",
            key,
            "shorter than a position".to_owned(),
        )),
    }
}

/// The prefix of the messages with a client message id.
pub fn message_id_prefix(client_message_id: &str) -> Vec<u8> {
    let mut key = vec![INDEX_BY_ID];
    put_name(&mut key, client_message_id);
    key
}

/// The prefix of the trace records of the message with `message_dedup_id`.
pub fn trace_prefix(message_dedup_id: &[u8]) -> Vec<u8> {
    let mut key = vec![INDEX_TRACE];
    key.extend_from_slice(message_dedup_id);
    key
}

/// The sequence an id or trace index key ends with.
pub fn indexed_sequence(key: &[u8]) -> Result<u64, StorageError> {
    key.len()
        .checked_sub(8)
        .and_then(|start| read_u64(&key[start..]))
        .ok_or_else(|| corrupt("index key", key, "shorter than a sequence".to_owned()))
}

/// Every `index` key of the record stored at `sequence`: for a message, one
/// per key, its tag, its time and its client message id; for trace events,
/// one per message they mention.
pub fn index_keys(record: &Record, sequence: u64) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    if let Some(message) = record.message.as_ref() {
        let stored = stored_at_ms(message);
        let topic = message.topic.as_str();
        let mut names: Vec<&str> = message.keys.iter().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        for name in names.into_iter().filter(|name| !name.is_empty()) {
            keys.push(at_position(
                &message_index_prefix(topic, MessageIndex::Key(name)),
                stored,
                sequence,
            ));
        }
        if let Some(tag) = message.tag.as_deref().filter(|tag| !tag.is_empty()) {
            keys.push(at_position(
                &message_index_prefix(topic, MessageIndex::Tag(tag)),
                stored,
                sequence,
            ));
        }
        keys.push(at_position(
            &message_index_prefix(topic, MessageIndex::Time),
            stored,
            sequence,
        ));
        if !message.client_message_id.is_empty() {
            let mut key = message_id_prefix(&message.client_message_id);
            key.extend_from_slice(&sequence.to_be_bytes());
            keys.push(key);
        }
    }
    if let Some(trace) = record.trace.as_ref() {
        let mut mentioned: Vec<&[u8]> = trace
            .events
            .iter()
            .map(|event| event.message_dedup_id.as_slice())
            .collect();
        mentioned.sort_unstable();
        mentioned.dedup();
        for dedup_id in mentioned {
            let mut key = trace_prefix(dedup_id);
            key.extend_from_slice(&sequence.to_be_bytes());
            keys.push(key);
        }
    }
    keys
}

// ---- replication checkpoints ---------------------------------------------

/// `meta` key of a peer's replication checkpoint.
pub fn checkpoint_key(peer: &str) -> String {
    format!("replication/checkpoint/{peer}")
}

/// `meta` value of a checkpoint: the sequence, `u64` big-endian.
pub fn checkpoint_value(sequence: u64) -> [u8; 8] {
    sequence.to_be_bytes()
}

/// Reads a checkpoint value stored under `key`.
pub fn decode_checkpoint_value(key: &str, value: &[u8]) -> Result<u64, StorageError> {
    read_u64(value).ok_or_else(|| {
        corrupt(
            "replication checkpoint",
            key.as_bytes(),
            format!("expected an 8-byte sequence, found {} bytes", value.len()),
        )
    })
}

// ---- helpers --------------------------------------------------------------

fn corrupt(what: &'static str, key: &[u8], reason: String) -> StorageError {
    StorageError::Corrupt {
        what,
        key: hex::encode(key),
        reason,
    }
}

fn read_u64(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

fn read_u32(bytes: &[u8]) -> Option<u32> {
    bytes.try_into().ok().map(u32::from_be_bytes)
}

/// Maps an `i32` to big-endian bytes whose byte order is the numeric order.
fn ordered_i32(value: i32) -> [u8; 4] {
    (u32::from_be_bytes(value.to_be_bytes()) ^ 0x8000_0000).to_be_bytes()
}

fn varint_len(mut value: usize) -> usize {
    let mut bytes = 1;
    while value >= 0x80 {
        value >>= 7;
        bytes += 1;
    }
    bytes
}

/// Appends `varint len | name`.
fn put_name(key: &mut Vec<u8>, name: &str) {
    let mut len = name.len();
    while len >= 0x80 {
        key.push((len & 0x7f) as u8 | 0x80);
        len >>= 7;
    }
    key.push(len as u8);
    key.extend_from_slice(name.as_bytes());
}

/// A cursor over a key; every read returns `None` when the bytes run out or
/// are malformed, never panics.
struct KeyReader<'a> {
    rest: &'a [u8],
}

impl<'a> KeyReader<'a> {
    fn new(key: &'a [u8]) -> Self {
        Self { rest: key }
    }

    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.rest.len() < count {
            return None;
        }
        let (taken, rest) = self.rest.split_at(count);
        self.rest = rest;
        Some(taken)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(read_u64)
    }

    fn queue_id(&mut self) -> Option<i32> {
        let ordered = self.take(4).and_then(read_u32)?;
        Some(i32::from_be_bytes((ordered ^ 0x8000_0000).to_be_bytes()))
    }

    /// A varint as `put_name` writes it: the shortest encoding only (a
    /// last group of zero bits after the first is refused), so that a key
    /// decodes only from the bytes the encoder writes for it and one name
    /// has one stored form.
    fn varint(&mut self) -> Option<usize> {
        let mut value: usize = 0;
        // A usize needs at most 10 groups of 7 bits.
        for shift in (0..70).step_by(7) {
            let byte = self.u8()?;
            let bits = usize::from(byte & 0x7f);
            value |= bits.checked_shl(shift).filter(|v| v >> shift == bits)?;
            if byte & 0x80 == 0 {
                return (byte != 0 || shift == 0).then_some(value);
            }
        }
        None
    }

    fn name(&mut self) -> Option<String> {
        let len = self.varint()?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).ok()
    }

    fn finish(&self) -> Option<()> {
        self.rest.is_empty().then_some(())
    }
}

#[cfg(test)]
mod tests;
