//! Round trips and rejection of bad bytes for every stored format.

use super::*;
use meridian_proto::meridian::v1::{Message, RecordKind};

fn record() -> Record {
    Record {
        sequence: 0,
        kind: RecordKind::Message as i32,
        dedup_id: vec![7; 16],
        origin_region: "eu-west".to_owned(),
        origin_sequence: 42,
        path: vec!["eu-west".to_owned()],
        message: Some(Message {
            client_message_id: "client-1".to_owned(),
            topic: "orders".to_owned(),
            queue_id: 3,
            tag: Some("paid".to_owned()),
            body: b"hello".to_vec(),
            ..Message::default()
        }),
        ack: None,
        group_start: None,
        transaction_end: None,
        trace: None,
        catalog: None,
    }
}

fn assert_corrupt(result: Result<Record, StorageError>, reason_part: &str) {
    match result {
        Err(StorageError::Corrupt { what, reason, .. }) => {
            assert_eq!(what, "log record");
            assert!(
                reason.contains(reason_part),
                "reason {reason:?} lacks {reason_part:?}"
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn log_value_round_trips_and_drops_the_sequence() {
    let mut input = record();
    input.sequence = 99;
    let value = encode_log_value(&input);
    assert_eq!(value[0], LOG_VALUE_VERSION);
    assert_eq!(
        value,
        encode_log_value(&record()),
        "the sequence is not part of the value"
    );
    let decoded = decode_log_value(5, &value).unwrap();
    assert_eq!(
        decoded,
        Record {
            sequence: 5,
            ..record()
        }
    );
}

#[test]
fn log_value_rejects_bad_bytes_without_panicking() {
    let value = encode_log_value(&record());
    assert_corrupt(decode_log_value(1, &[]), "shorter");
    assert_corrupt(decode_log_value(1, &value[..3]), "shorter");
    let mut bad_version = value.clone();
    bad_version[0] = 9;
    assert_corrupt(decode_log_value(1, &bad_version), "version 9");
    for index in [1, 5, value.len() - 1] {
        let mut flipped = value.clone();
        flipped[index] ^= 0x40;
        assert_corrupt(decode_log_value(1, &flipped), "checksum");
    }
    assert_corrupt(decode_log_value(1, &value[..value.len() - 1]), "checksum");
    // A valid checksum over bytes that are not a protobuf Record.
    let garbage = [0xff_u8, 0xff, 0xff];
    let mut forged = vec![LOG_VALUE_VERSION];
    forged.extend_from_slice(&crc32c::crc32c(&garbage).to_be_bytes());
    forged.extend_from_slice(&garbage);
    assert_corrupt(decode_log_value(1, &forged), "protobuf");
}

#[test]
fn log_keys_round_trip_in_numeric_order() {
    for sequence in [0, 1, 255, 256, u64::MAX] {
        assert_eq!(decode_log_key(&log_key(sequence)).unwrap(), sequence);
    }
    assert!(log_key(255) < log_key(256));
    assert!(decode_log_key(&[1, 2, 3]).is_err());
}

#[test]
fn queue_keys_round_trip_and_order_by_offset_then_queue() {
    for (topic, queue_id, offset) in [
        ("orders", 0, 0),
        ("", -1, 7),
        ("t".repeat(300).as_str(), i32::MAX, u64::MAX),
    ] {
        let key = queue_key(topic, queue_id, offset);
        assert_eq!(
            decode_queue_key(&key).unwrap(),
            (topic.to_owned(), queue_id, offset)
        );
        assert_eq!(queue_key_offset(&key).unwrap(), offset);
        assert!(key.starts_with(&queue_prefix(topic, queue_id)));
    }
    assert!(queue_key("a", 0, 255) < queue_key("a", 0, 256));
    assert!(queue_key("a", -1, 9) < queue_key("a", 0, 0));
    assert!(queue_key("a", i32::MIN, 0) < queue_key("a", -1, 0));
    assert!(decode_queue_key(&[5, b'a']).is_err());
}

/// Found by the fuzz target `storage_codec`: a name length written in two
/// bytes (`0x95 0x00`, 21) where one (`0x15`) is the encoding decoded as
/// the same key, so one queue had two stored forms.
#[test]
fn names_lengths_only_in_their_shortest_form() {
    let key = [
        0x95, 0x00, // the topic's length
        0, 1, 0, 0, 0, 0, 0, 0, 0, 126, 1, 0, 0, 0, 0, 0, 0, 59, 0, 35, 0, // topic
        0, 0, 0, 0, // queue id
        0, 0, 34, 34, 255, 255, 255, 255, // offset
    ];
    assert!(decode_queue_key(&key).is_err());
    let shortest = [&[0x15][..], &key[2..]].concat();
    let (topic, queue_id, offset) = decode_queue_key(&shortest).unwrap();
    assert_eq!(queue_key(&topic, queue_id, offset), shortest);
    // A length of 0 is one zero byte; 128 takes two bytes, the last not zero.
    assert!(decode_queue_key(&[[0x80, 0x00].as_slice(), &[0; 12]].concat()).is_err());
    let long = queue_key(&"t".repeat(128), 1, 2);
    assert_eq!(&long[..2], [0x80, 0x01]);
    assert_eq!(decode_queue_key(&long).unwrap(), ("t".repeat(128), 1, 2));
    let group = GroupQueueKey::new("g", "t", 0);
    let mut overlong = vec![0x81, 0x00];
    overlong.extend_from_slice(&group_cursor_key(&group)[1..]);
    assert!(decode_group_key(&overlong).is_err());
}

#[test]
fn names_are_length_prefixed_so_prefixes_never_collide() {
    assert_ne!(queue_prefix("ab", 1), queue_prefix("a", 1));
    assert!(!queue_key("ab", 1, 0).starts_with(&queue_prefix("a", 1)));
    assert_ne!(
        local_message_prefix("ab", "c"),
        local_message_prefix("a", "bc")
    );
    // One client id's prefix never covers another id's keys.
    assert!(!local_message_key("a", "bc", &[0; 32]).starts_with(&local_message_prefix("a", "b")));
    let one = GroupQueueKey {
        group: "ab".into(),
        topic: "c".into(),
        queue_id: 0,
    };
    let two = GroupQueueKey {
        group: "a".into(),
        topic: "bc".into(),
        queue_id: 0,
    };
    assert_ne!(group_cursor_key(&one), group_cursor_key(&two));
    assert!(!dedup_id_key(&[DEDUP_LOCAL_MESSAGE_TAG]).starts_with(&[DEDUP_LOCAL_MESSAGE_TAG]));
    assert_eq!(dedup_id_key(&[9; 16]).len(), 17);
}

#[test]
fn group_keys_round_trip_and_sort_cursor_first() {
    let queue = GroupQueueKey {
        group: "g".repeat(200),
        topic: "orders".into(),
        queue_id: -4,
    };
    let cursor = group_cursor_key(&queue);
    assert_eq!(
        decode_group_key(&cursor).unwrap(),
        GroupKey::Cursor(queue.clone())
    );
    for offset in [0, 1, u64::MAX] {
        let key = group_offset_key(&queue, offset);
        assert!(cursor < key);
        assert_eq!(
            decode_group_key(&key).unwrap(),
            GroupKey::Offset(queue.clone(), offset)
        );
    }
    let mut trailing = cursor.clone();
    trailing.push(0);
    assert!(decode_group_key(&trailing).is_err());
    assert!(decode_group_key(&[0xff; 12]).is_err());
    assert!(decode_group_key(&[]).is_err());
}

#[test]
fn group_values_round_trip_and_reject_garbage() {
    let cursor = GroupCursor {
        floor: 3,
        next: u64::MAX,
    };
    assert_eq!(decode_cursor(b"k", &encode_cursor(cursor)).unwrap(), cursor);
    assert!(decode_cursor(b"k", &[0; 15]).is_err());
    for state in [
        OffsetState::Done,
        OffsetState::InFlight {
            deadline_ms: -5,
            attempt: 1,
        },
        OffsetState::InFlight {
            deadline_ms: i64::MAX,
            attempt: u32::MAX,
        },
    ] {
        assert_eq!(
            decode_offset_state(b"k", &encode_offset_state(state)).unwrap(),
            state
        );
    }
    for garbage in [
        &[][..],
        &[OFFSET_IN_FLIGHT_TAG, 1, 2][..],
        &[OFFSET_DONE_TAG, 0][..],
        &[9][..],
    ] {
        assert!(decode_offset_state(b"k", garbage).is_err());
    }
}

#[test]
fn sequence_values_round_trip() {
    assert_eq!(
        decode_sequence_value("dedup", b"k", &sequence_value(77)).unwrap(),
        77
    );
    assert!(decode_sequence_value("dedup", b"k", &[1]).is_err());
}

#[test]
fn dedup_values_round_trip_and_old_ones_still_read() {
    let key = dedup_id_key(&[1; 16]);
    let entry = decode_dedup_value(&key, &dedup_value(7, 3)).expect("decode");
    assert_eq!(
        entry,
        DedupEntry {
            sequence: 7,
            queue_offset: Some(3)
        }
    );
    let old = decode_dedup_value(&key, &sequence_value(9)).expect("an 8-byte value");
    assert_eq!(
        old,
        DedupEntry {
            sequence: 9,
            queue_offset: None
        }
    );
    assert!(matches!(
        decode_dedup_value(&key, &[0; 5]),
        Err(StorageError::Corrupt { .. })
    ));
}

#[test]
fn the_content_digest_covers_content_but_not_queue_or_birth() {
    let base = crate::test_records::message_record(0, b"body")
        .message
        .expect("a message");
    let digest = content_digest(&base);
    let mut other_queue = base.clone();
    other_queue.queue_id = 5;
    other_queue.born_timestamp_ms += 1;
    other_queue.born_host = "elsewhere".into();
    assert_eq!(content_digest(&other_queue), digest);
    let changes: [fn(&mut Message); 6] = [
        |message| message.body.push(b'!'),
        |message| message.tag = Some("other".into()),
        |message| message.keys.push("k".into()),
        |message| message.message_group = Some("g".into()),
        |message| message.delivery_timestamp_ms = Some(1),
        |message| {
            message.user_properties.insert("p".into(), "v".into());
        },
    ];
    for change in changes {
        let mut changed = base.clone();
        change(&mut changed);
        assert_ne!(content_digest(&changed), digest, "{changed:?}");
    }
    // Length prefixes: moving a byte between tag and body changes the digest.
    let mut one = base.clone();
    one.tag = Some("ab".into());
    one.body = b"c".to_vec();
    let mut two = base;
    two.tag = Some("a".into());
    two.body = b"bc".to_vec();
    assert_ne!(content_digest(&one), content_digest(&two));
}
