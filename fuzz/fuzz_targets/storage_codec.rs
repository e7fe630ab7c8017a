//! The node's readers of stored keys and values (region-node/src/storage/
//! codec.rs), on arbitrary bytes as a damaged disk could hand them back:
//! the commit log (`decode_log_key`, `decode_log_value`), consume queues
//! (`decode_queue_key`, `queue_key_offset`, `decode_queue_value`,
//! `decode_sequence_value`), the dedup index (`decode_dedup_value`,
//! `held_ack_sequence`), the timer index (`decode_timer_key`), open
//! transactions (`decode_transaction`), consumer groups (`decode_group_key`,
//! `decode_cursor`, `decode_offset_state`), message indexes
//! (`decode_position`, `indexed_sequence`) and replication checkpoints
//! (`decode_checkpoint_value`).
//!
//! Input: a flags byte, a key length byte, the key (that many bytes, or
//! what is left), then the value. Flag bit 0: the target writes the right
//! CRC32C into the commit-log value's header first, so that mutations reach
//! the protobuf decoding. The log value's sequence is the key's first 8
//! bytes (zero-padded).
//!
//! Every decoder runs on the key or value (or both). None may panic, every
//! error is `StorageError::Corrupt` (and displays), and:
//! * fixed-width and key formats round trip exactly: what decodes is what
//!   the encoder writes for the decoded value, byte for byte (so one logical
//!   key has one stored form);
//! * a decoded log record carries the key's sequence and encodes
//!   (`encode_log_value`) to a value that decodes to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_region_node::fuzzing::codec;
use meridian_region_node::fuzzing::{GroupCursor, OffsetState, OpenTransaction, StorageError};

/// Checks that a decoder's error is a `Corrupt` one and displays; passes
/// on what it decoded.
fn decoded<T>(result: Result<T, StorageError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            assert!(matches!(error, StorageError::Corrupt { .. }), "{error:?}");
            let _ = error.to_string();
            None
        }
    }
}

/// The last 8 bytes of `bytes` as a big-endian `u64`, if it has 8.
fn last_u64(bytes: &[u8]) -> Option<u64> {
    let start = bytes.len().checked_sub(8)?;
    bytes[start..].try_into().ok().map(u64::from_be_bytes)
}

fn log(key: &[u8], value: &[u8], fix_checksum: bool) {
    if let Some(sequence) = decoded(codec::decode_log_key(key)) {
        assert_eq!(codec::log_key(sequence), key);
    }
    let mut padded = [0; 8];
    let taken = key.len().min(8);
    padded[..taken].copy_from_slice(&key[..taken]);
    let sequence = u64::from_be_bytes(padded);
    let mut value = value.to_vec();
    if fix_checksum && value.len() >= 5 {
        let checksum = crc32c::crc32c(&value[5..]);
        value[1..5].copy_from_slice(&checksum.to_be_bytes());
    }
    if let Some(record) = decoded(codec::decode_log_value(sequence, &value)) {
        assert_eq!(record.sequence, sequence);
        let encoded = codec::encode_log_value(&record);
        assert_eq!(encoded[0], codec::LOG_VALUE_VERSION);
        let again = codec::decode_log_value(sequence, &encoded).expect("an encoded record decodes");
        assert_eq!(again, record);
    }
}

fn queue(key: &[u8], value: &[u8]) {
    if let Some((topic, queue_id, offset)) = decoded(codec::decode_queue_key(key)) {
        assert_eq!(codec::queue_key(&topic, queue_id, offset), key);
        assert!(key.starts_with(&codec::queue_prefix(&topic, queue_id)));
    }
    assert_eq!(decoded(codec::queue_key_offset(key)), last_u64(key));
    if let Some(entry) = decoded(codec::decode_queue_value(key, value)) {
        match (entry.queued_at_ms, entry.cumulative_bytes) {
            (Some(queued_at_ms), Some(cumulative_bytes)) => assert_eq!(
                codec::queue_value(entry.sequence, queued_at_ms, cumulative_bytes),
                value
            ),
            (None, None) => assert_eq!(codec::sequence_value(entry.sequence), value),
            other => panic!("half a queue entry: {other:?}"),
        }
    }
    if let Some(sequence) = decoded(codec::decode_sequence_value("fuzz", key, value)) {
        assert_eq!(codec::sequence_value(sequence), value);
    }
}

fn dedup(key: &[u8], value: &[u8]) {
    if let Some(entry) = decoded(codec::decode_dedup_value(key, value)) {
        match entry.queue_offset {
            Some(offset) => assert_eq!(codec::dedup_value(entry.sequence, offset), value),
            None => assert_eq!(codec::sequence_value(entry.sequence), value),
        }
    }
    let sequence = decoded(codec::held_ack_sequence(key));
    assert_eq!(sequence, last_u64(key));
    // A held-ack key is a tag byte, the message's dedup id, the sequence.
    if let Some(sequence) = sequence.filter(|_| key.len() > 8) {
        let message_dedup_id = &key[1..key.len() - 8];
        let written = codec::held_ack_key(message_dedup_id, sequence);
        assert!(written.starts_with(&codec::held_ack_prefix(message_dedup_id)));
        if key[0] == written[0] {
            assert_eq!(written, key);
        }
    }
}

fn timer_and_transaction(key: &[u8], value: &[u8]) {
    if let Some((due_ms, sequence)) = decoded(codec::decode_timer_key(key)) {
        assert_eq!(codec::timer_key(due_ms, sequence), key);
    }
    if let Some(OpenTransaction {
        sequence,
        checks,
        last_check_ms,
    }) = decoded(codec::decode_transaction(key, value))
    {
        assert_eq!(codec::transaction_key(sequence), key);
        assert_eq!(codec::transaction_value(checks, last_check_ms), value);
    }
}

fn group(key: &[u8], value: &[u8]) {
    match decoded(codec::decode_group_key(key)) {
        Some(codec::GroupKey::Cursor(queue)) => {
            assert_eq!(codec::group_cursor_key(&queue), key);
            assert!(key.starts_with(&codec::group_prefix(&queue.group)));
        }
        Some(codec::GroupKey::Offset(queue, offset)) => {
            assert_eq!(codec::group_offset_key(&queue, offset), key);
            assert!(key.starts_with(&codec::group_prefix(&queue.group)));
        }
        None => {}
    }
    if let Some(cursor) = decoded(codec::decode_cursor(key, value)) {
        let GroupCursor { floor, next } = cursor;
        assert_eq!(codec::encode_cursor(GroupCursor { floor, next }), value);
    }
    if let Some(state) = decoded(codec::decode_offset_state(key, value)) {
        assert_eq!(codec::encode_offset_state(state), value);
        if let OffsetState::InFlight { .. } = state {
            assert_eq!(value.len(), 13);
        }
    }
}

fn index_and_checkpoint(key: &[u8], value: &[u8]) {
    match decoded(codec::decode_position(key)) {
        Some((stored_ms, sequence)) => {
            let prefix = &key[..key.len() - 16];
            assert_eq!(codec::at_position(prefix, stored_ms, sequence), key);
        }
        None => assert!(key.len() < 16),
    }
    assert_eq!(decoded(codec::indexed_sequence(key)), last_u64(key));
    let name = String::from_utf8_lossy(key);
    if let Some(sequence) = decoded(codec::decode_checkpoint_value(&name, value)) {
        assert_eq!(codec::checkpoint_value(sequence), value);
    }
}

fuzz_target!(|data: &[u8]| {
    let [flags, key_len, rest @ ..] = data else {
        return;
    };
    let (key, value) = rest.split_at(usize::from(*key_len).min(rest.len()));
    log(key, value, flags & 1 == 1);
    queue(key, value);
    dedup(key, value);
    timer_and_transaction(key, value);
    group(key, value);
    index_and_checkpoint(key, value);
});
