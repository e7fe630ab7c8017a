//! One test suite for every [`LogStore`]: each case is a generic function
//! written once, and `conformance_suite!` instantiates every case as a test
//! for [`MemoryStore`] and for [`RocksStore`] (in a temporary directory).
//! A behaviour the two disagree on fails here, which is what lets the layers
//! above test against the in-memory store.
//!
//! RocksDB-only behaviour (reopening, corrupt bytes on disk) is in `rocks_only`.

#[cfg(feature = "rocksdb")]
use super::RocksStore;
use super::{
    Appended, GroupCursor, GroupQueueKey, GroupQueueState, GroupWrite, LogStore, MemoryStore,
    OffsetState, QueueBounds, Retention, StorageError, codec,
};
use meridian_proto::meridian::v1::{Message, Record, RecordKind};
use meridian_topology::FlushMode;
use std::collections::BTreeMap;

const LOCAL: &str = "eu-west";
const REMOTE: &str = "us-east";

fn open_memory() -> ((), MemoryStore) {
    ((), MemoryStore::new())
}

#[cfg(feature = "rocksdb")]
fn open_rocks() -> (tempfile::TempDir, RocksStore) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = RocksStore::open(dir.path(), FlushMode::Sync).expect("open the store");
    (dir, store)
}

/// A distinct 16-byte dedup id per `n`.
fn dedup_id(n: u64) -> Vec<u8> {
    let mut id = vec![0xab; 8];
    id.extend_from_slice(&n.to_be_bytes());
    id
}

/// A local-origin message record numbered `n` for (topic, queue id).
fn record(n: u64, topic: &str, queue_id: i32) -> Record {
    Record {
        sequence: 0,
        kind: RecordKind::Message as i32,
        dedup_id: dedup_id(n),
        origin_region: LOCAL.to_owned(),
        origin_sequence: n,
        path: vec![LOCAL.to_owned()],
        message: Some(Message {
            client_message_id: format!("client-{n}"),
            topic: topic.to_owned(),
            queue_id,
            keys: vec![format!("key-{n}")],
            user_properties: [("n".to_owned(), n.to_string())].into(),
            born_timestamp_ms: 1_700_000_000_000,
            body: format!("body-{n:04}").into_bytes(),
            ..Message::default()
        }),
        ack: None,
        group_start: None,
        transaction_end: None,
        trace: None,
        catalog: None,
    }
}

/// An acknowledgement record numbered `n` (dedup id `n`) of the message with
/// dedup id `of`.
fn ack_record(n: u64, of: u64) -> Record {
    Record {
        kind: RecordKind::Ack as i32,
        dedup_id: dedup_id(n),
        origin_region: "elsewhere".to_owned(),
        path: vec!["elsewhere".to_owned()],
        ack: Some(meridian_proto::meridian::v1::GroupAck {
            group: "g".to_owned(),
            topic: "orders".to_owned(),
            queue_id: 0,
            message_dedup_id: dedup_id(of),
            acked_at_ms: 0,
        }),
        ..Record::default()
    }
}

fn with_origin(mut record: Record, region: &str) -> Record {
    record.origin_region = region.to_owned();
    record.path = vec![region.to_owned()];
    record
}

fn with_sequence(mut record: Record, sequence: u64) -> Record {
    record.sequence = sequence;
    record
}

fn stored(sequence: u64, queue_offset: u64) -> Appended {
    Appended::Stored {
        sequence,
        queue_offset: Some(queue_offset),
        reused_client_id: false,
    }
}

/// Stored although another message already had its topic and client message id.
fn stored_reusing_id(sequence: u64, queue_offset: u64) -> Appended {
    Appended::Stored {
        sequence,
        queue_offset: Some(queue_offset),
        reused_client_id: true,
    }
}

fn duplicate_of(sequence: u64, queue_offset: u64) -> Appended {
    Appended::Duplicate {
        sequence,
        queue_offset: Some(queue_offset),
    }
}

/// A producer's retry of `record(original, topic, 0)`: the same message (same
/// client message id and content) with a new dedup id, sent to `queue_id`.
fn retry_of(n: u64, original: u64, topic: &str, queue_id: i32) -> Record {
    let mut retry = record(original, topic, queue_id);
    retry.dedup_id = dedup_id(n);
    retry
}

fn sequences(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.sequence).collect()
}

/// Bytes that do not compress, so large values really are large on disk.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_be_bytes()[0]
        })
        .collect()
}

// ---- cases ------------------------------------------------------------------

fn sequences_start_at_one_without_gaps(store: &impl LogStore) {
    assert_eq!(store.last_sequence().unwrap(), 0);
    assert!(store.read_log(0, 10, usize::MAX).unwrap().is_empty());
    let first = store
        .append((1..=3).map(|n| record(n, "t", 0)).collect(), LOCAL)
        .unwrap();
    assert_eq!(first, vec![stored(1, 0), stored(2, 1), stored(3, 2)]);
    // The sequence on input is ignored.
    let input = vec![with_sequence(record(4, "t", 0), 77), record(5, "t", 0)];
    assert_eq!(
        store.append(input, LOCAL).unwrap(),
        vec![stored(4, 3), stored(5, 4)]
    );
    assert_eq!(store.append(Vec::new(), LOCAL).unwrap(), Vec::new());
    assert_eq!(store.last_sequence().unwrap(), 5);
    let all = store.read_log(0, 100, usize::MAX).unwrap();
    let expected: Vec<Record> = (1..=5)
        .map(|n| with_sequence(record(n, "t", 0), n))
        .collect();
    assert_eq!(all, expected);
}

fn queue_offsets_start_at_zero_per_queue(store: &impl LogStore) {
    let batch = vec![
        record(1, "a", 0),
        record(2, "a", 1),
        record(3, "b", 0),
        record(4, "a", 0),
    ];
    assert_eq!(
        store.append(batch, LOCAL).unwrap(),
        vec![stored(1, 0), stored(2, 0), stored(3, 0), stored(4, 1)]
    );
    let batch = vec![record(5, "a", 0), record(6, "b", 0), record(7, "a", -1)];
    assert_eq!(
        store.append(batch, LOCAL).unwrap(),
        vec![stored(5, 2), stored(6, 1), stored(7, 0)]
    );
    assert_eq!(
        store.queue_bounds("a", 0).unwrap(),
        QueueBounds { min: 0, max: 3 }
    );
    assert_eq!(
        store.queue_bounds("a", 1).unwrap(),
        QueueBounds { min: 0, max: 1 }
    );
    assert_eq!(
        store.queue_bounds("a", -1).unwrap(),
        QueueBounds { min: 0, max: 1 }
    );
    assert_eq!(
        store.queue_bounds("b", 0).unwrap(),
        QueueBounds { min: 0, max: 2 }
    );
}

fn read_log_pages_by_records_and_bytes(store: &impl LogStore) {
    store
        .append((1..=10).map(|n| record(n, "t", 0)).collect(), LOCAL)
        .unwrap();
    assert_eq!(
        sequences(&store.read_log(0, 3, usize::MAX).unwrap()),
        vec![1, 2, 3]
    );
    assert_eq!(
        sequences(&store.read_log(3, 3, usize::MAX).unwrap()),
        vec![4, 5, 6]
    );
    assert_eq!(
        sequences(&store.read_log(8, 3, usize::MAX).unwrap()),
        vec![9, 10]
    );
    assert!(store.read_log(10, 3, usize::MAX).unwrap().is_empty());
    assert!(store.read_log(u64::MAX, 3, usize::MAX).unwrap().is_empty());
    assert!(store.read_log(0, 0, usize::MAX).unwrap().is_empty());

    let size = codec::record_size(&with_sequence(record(1, "t", 0), 1));
    assert_eq!(
        size,
        codec::record_size(&with_sequence(record(2, "t", 0), 2))
    );
    assert_eq!(
        sequences(&store.read_log(0, 100, 2 * size).unwrap()),
        vec![1, 2]
    );
    assert_eq!(
        sequences(&store.read_log(0, 100, 2 * size - 1).unwrap()),
        vec![1]
    );
    assert_eq!(
        sequences(&store.read_log(4, 100, 3 * size + 1).unwrap()),
        vec![5, 6, 7]
    );
    // At least one record, however small the byte budget.
    assert_eq!(sequences(&store.read_log(0, 100, 0).unwrap()), vec![1]);
    assert_eq!(sequences(&store.read_log(5, 100, 1).unwrap()), vec![6]);
}

fn get_returns_stored_records(store: &impl LogStore) {
    store
        .append(vec![record(1, "t", 0), record(2, "u", 3)], LOCAL)
        .unwrap();
    assert_eq!(
        store.get(1).unwrap(),
        Some(with_sequence(record(1, "t", 0), 1))
    );
    assert_eq!(
        store.get(2).unwrap(),
        Some(with_sequence(record(2, "u", 3), 2))
    );
    assert_eq!(store.get(0).unwrap(), None);
    assert_eq!(store.get(3).unwrap(), None);
    assert_eq!(store.get(u64::MAX).unwrap(), None);
}

fn read_queue_returns_offsets_and_records(store: &impl LogStore) {
    let batch = (1..=10)
        .map(|n| record(n, if n % 2 == 0 { "t" } else { "tt" }, 1))
        .collect();
    store.append(batch, LOCAL).unwrap();
    store.append(vec![record(11, "t", 2)], LOCAL).unwrap();
    let queue = store.read_queue("t", 1, 0, 100).unwrap();
    let expected: Vec<(u64, Record)> = (0..5)
        .map(|offset| {
            let n = 2 * offset + 2;
            (offset, with_sequence(record(n, "t", 1), n))
        })
        .collect();
    assert_eq!(queue, expected);
    assert_eq!(
        store.read_queue("t", 1, 3, 1).unwrap(),
        expected[3..4].to_vec()
    );
    assert_eq!(
        store.read_queue("t", 1, 3, 100).unwrap(),
        expected[3..].to_vec()
    );
    assert!(store.read_queue("t", 1, 5, 100).unwrap().is_empty());
    assert!(store.read_queue("t", 1, 0, 0).unwrap().is_empty());
    assert!(store.read_queue("t", 3, 0, 100).unwrap().is_empty());
    assert!(store.read_queue("", 1, 0, 100).unwrap().is_empty());
    let other = store.read_queue("t", 2, 0, 100).unwrap();
    assert_eq!(other, vec![(0, with_sequence(record(11, "t", 2), 11))]);
    assert_eq!(store.read_queue("tt", 1, 0, 100).unwrap().len(), 5);
}

fn queue_bounds_of_unknown_queue_is_empty(store: &impl LogStore) {
    assert_eq!(
        store.queue_bounds("nothing", 0).unwrap(),
        QueueBounds { min: 0, max: 0 }
    );
    store.append(vec![record(1, "t", 0)], LOCAL).unwrap();
    assert_eq!(store.queue_bounds("t", 1).unwrap(), QueueBounds::default());
    assert_eq!(store.queue_bounds("", 0).unwrap(), QueueBounds::default());
    assert_eq!(
        store.queue_bounds("t", 0).unwrap(),
        QueueBounds { min: 0, max: 1 }
    );
}

fn dedup_id_is_deduplicated_across_batches(store: &impl LogStore) {
    store
        .append(vec![record(1, "t", 0), record(2, "t", 0)], LOCAL)
        .unwrap();
    // Same dedup id, otherwise different: still a duplicate, whatever its origin.
    let mut again = with_origin(record(2, "u", 4), REMOTE);
    again.message.as_mut().unwrap().body = b"other".to_vec();
    let results = store.append(vec![again, record(3, "t", 0)], LOCAL).unwrap();
    assert_eq!(results, vec![duplicate_of(2, 1), stored(3, 2)]);
    assert_eq!(
        store.append(vec![record(1, "t", 0)], LOCAL).unwrap(),
        vec![duplicate_of(1, 0)]
    );
    assert_eq!(store.last_sequence().unwrap(), 3);
    assert_eq!(store.queue_bounds("u", 4).unwrap(), QueueBounds::default());
    assert_eq!(store.find_dedup(&dedup_id(2)).unwrap(), Some(2));
    assert_eq!(store.find_dedup(&dedup_id(3)).unwrap(), Some(3));
    assert_eq!(store.find_dedup(&dedup_id(4)).unwrap(), None);
    assert_eq!(store.find_dedup(b"short").unwrap(), None);
}

fn dedup_id_is_deduplicated_within_a_batch(store: &impl LogStore) {
    let batch = vec![
        record(1, "t", 0),
        with_origin(record(1, "t", 0), REMOTE),
        record(2, "t", 0),
        record(1, "u", 0),
    ];
    let results = store.append(batch, LOCAL).unwrap();
    assert_eq!(
        results,
        vec![
            stored(1, 0),
            duplicate_of(1, 0),
            stored(2, 1),
            duplicate_of(1, 0)
        ]
    );
    assert_eq!(store.last_sequence().unwrap(), 2);
    assert_eq!(
        store.queue_bounds("t", 0).unwrap(),
        QueueBounds { min: 0, max: 2 }
    );
    assert_eq!(store.queue_bounds("u", 0).unwrap(), QueueBounds::default());
    assert_eq!(
        sequences(&store.read_log(0, 100, usize::MAX).unwrap()),
        vec![1, 2]
    );
}

fn client_message_id_is_deduplicated_only_for_local_origin(store: &impl LogStore) {
    store.append(vec![record(1, "t", 0)], LOCAL).unwrap();
    // A producer's retry: new dedup id, same topic, client message id and
    // content, another queue: answered with the stored copy's place.
    assert_eq!(
        store.append(vec![retry_of(2, 1, "t", 3)], LOCAL).unwrap(),
        vec![duplicate_of(1, 0)]
    );
    // The same client message id on another topic is another message.
    assert_eq!(
        store.append(vec![retry_of(3, 1, "u", 0)], LOCAL).unwrap(),
        vec![stored(2, 0)]
    );
    // A replicated record is matched by dedup id only.
    let replicated = with_origin(retry_of(4, 1, "t", 0), REMOTE);
    assert_eq!(
        store.append(vec![replicated], LOCAL).unwrap(),
        vec![stored(3, 1)]
    );
    // A replicated record does not register its client message id either.
    store
        .append(vec![with_origin(record(5, "t", 0), REMOTE)], LOCAL)
        .unwrap();
    assert_eq!(
        store.append(vec![retry_of(6, 5, "t", 0)], LOCAL).unwrap(),
        vec![stored(5, 3)]
    );
    // Within one batch.
    let results = store
        .append(vec![record(7, "t", 0), retry_of(8, 7, "t", 0)], LOCAL)
        .unwrap();
    assert_eq!(results, vec![stored(6, 4), duplicate_of(6, 4)]);
    // Messages without a client message id are never matched by it.
    let anonymous = |n: u64| {
        let mut r = record(n, "t", 0);
        r.message.as_mut().unwrap().client_message_id.clear();
        r
    };
    assert_eq!(
        store
            .append(vec![anonymous(9), anonymous(10)], LOCAL)
            .unwrap(),
        vec![stored(7, 5), stored(8, 6)]
    );
    // Whether a record is local depends on the caller's region.
    assert_eq!(
        store.append(vec![retry_of(11, 7, "t", 0)], REMOTE).unwrap(),
        vec![stored(9, 7)]
    );
}

fn a_reused_client_message_id_with_other_content_is_stored(store: &impl LogStore) {
    // Another producer whose message ids collide with record 1's: same topic
    // and client message id, other content.
    let colliding = |n: u64, with: u64, change: fn(&mut Message)| {
        let mut other = record(n, "t", 0);
        let message = other.message.as_mut().unwrap();
        message.client_message_id = format!("client-{with}");
        *message = Message {
            body: record(with, "t", 0).message.unwrap().body,
            keys: record(with, "t", 0).message.unwrap().keys,
            user_properties: record(with, "t", 0).message.unwrap().user_properties,
            ..message.clone()
        };
        change(message);
        other
    };
    store.append(vec![record(1, "t", 0)], LOCAL).unwrap();
    let other_body = colliding(2, 1, |message| message.body = b"other".to_vec());
    assert_eq!(
        store.append(vec![other_body.clone()], LOCAL).unwrap(),
        vec![stored_reusing_id(2, 1)]
    );
    // Retries of either message are still recognised.
    let mut retry = other_body;
    retry.dedup_id = dedup_id(3);
    retry.message.as_mut().unwrap().queue_id = 1;
    assert_eq!(
        store
            .append(vec![retry, retry_of(4, 1, "t", 2)], LOCAL)
            .unwrap(),
        vec![duplicate_of(2, 1), duplicate_of(1, 0)]
    );
    // Any part of the content makes another message; within one batch too.
    let other_property = colliding(5, 1, |message| {
        message.user_properties.insert("n".into(), "other".into());
    });
    let other_tag = colliding(6, 1, |message| message.tag = Some("other".into()));
    assert_eq!(
        store
            .append(vec![record(7, "t", 0), other_property, other_tag], LOCAL)
            .unwrap(),
        vec![
            stored(3, 2),
            stored_reusing_id(4, 3),
            stored_reusing_id(5, 4)
        ]
    );
    assert_eq!(
        sequences(&store.read_log(0, 100, usize::MAX).unwrap()),
        vec![1, 2, 3, 4, 5]
    );
}

fn acknowledgements_join_the_log_but_no_queue(store: &impl LogStore) {
    let appended = store
        .append(vec![record(1, "orders", 0), ack_record(2, 1)], LOCAL)
        .expect("append");
    assert_eq!(
        appended,
        vec![
            stored(1, 0),
            Appended::Stored {
                sequence: 2,
                queue_offset: None,
                reused_client_id: false,
            }
        ]
    );
    assert_eq!(
        store.queue_bounds("orders", 0).expect("bounds"),
        QueueBounds { min: 0, max: 1 },
        "the ack is in no queue"
    );
    let again = store.append(vec![ack_record(2, 1)], LOCAL).expect("append");
    assert_eq!(
        again,
        vec![Appended::Duplicate {
            sequence: 2,
            queue_offset: None
        }]
    );
    assert_eq!(
        store.find_message(&dedup_id(1)).expect("find"),
        Some((1, 0))
    );
    assert_eq!(
        store.find_message(&dedup_id(2)).expect("find"),
        None,
        "an ack is no message"
    );
    let log = store.read_log(0, 10, usize::MAX).expect("log");
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].ack, ack_record(2, 1).ack);
    let invalid = Record {
        ack: None,
        group_start: None,
        transaction_end: None,
        trace: None,
        catalog: None,
        ..ack_record(3, 1)
    };
    assert!(matches!(
        store.append(vec![invalid], LOCAL),
        Err(StorageError::InvalidRecord { .. })
    ));
}

fn held_acknowledgements_are_taken_once(store: &impl LogStore) {
    store.hold_ack(&dedup_id(7), 12).expect("hold");
    store.hold_ack(&dedup_id(7), 5).expect("hold");
    store.hold_ack(&dedup_id(8), 9).expect("hold");
    assert_eq!(
        store.take_held_acks(&dedup_id(7)).expect("take"),
        vec![5, 12]
    );
    assert!(store.take_held_acks(&dedup_id(7)).expect("take").is_empty());
    assert_eq!(store.take_held_acks(&dedup_id(8)).expect("take"), vec![9]);
}

fn checkpoints_only_move_forward(store: &impl LogStore) {
    assert_eq!(store.checkpoint("peer").unwrap(), 0);
    assert_eq!(store.advance_checkpoint("peer", 10).unwrap(), 10);
    assert_eq!(
        store.advance_checkpoint("peer", 7).unwrap(),
        10,
        "a late ack"
    );
    assert_eq!(store.advance_checkpoint("peer", 10).unwrap(), 10);
    assert_eq!(store.checkpoint("peer").unwrap(), 10);
    assert_eq!(store.checkpoint("other").unwrap(), 0, "per peer");
    // Concurrent advances end at the highest, whatever their order.
    std::thread::scope(|scope| {
        for thread in 0..8u64 {
            scope.spawn(move || {
                for step in 0..50u64 {
                    store
                        .advance_checkpoint("racing", (step * 8 + thread) % 397)
                        .unwrap();
                }
            });
        }
    });
    let highest = (0..8u64)
        .flat_map(|thread| (0..50u64).map(move |step| (step * 8 + thread) % 397))
        .max()
        .unwrap();
    assert_eq!(store.checkpoint("racing").unwrap(), highest);
}

fn invalid_record_leaves_nothing_written(store: &impl LogStore) {
    let mut short_id = record(2, "t", 0);
    short_id.dedup_id.truncate(15);
    let mut no_origin = record(3, "t", 0);
    no_origin.origin_region.clear();
    let mut no_message = record(4, "t", 0);
    no_message.message = None;
    let mut no_topic = record(5, "t", 0);
    no_topic.message.as_mut().unwrap().topic.clear();
    for invalid in [short_id, no_origin, no_message, no_topic] {
        let result = store.append(vec![record(1, "t", 0), invalid], LOCAL);
        assert!(
            matches!(result, Err(StorageError::InvalidRecord { .. })),
            "{result:?}"
        );
        assert_eq!(store.last_sequence().unwrap(), 0);
        assert_eq!(store.find_dedup(&dedup_id(1)).unwrap(), None);
        assert_eq!(store.queue_bounds("t", 0).unwrap(), QueueBounds::default());
        assert!(store.read_log(0, 10, usize::MAX).unwrap().is_empty());
    }
    // The store still works, starting from sequence 1.
    assert_eq!(
        store.append(vec![record(1, "t", 0)], LOCAL).unwrap(),
        vec![stored(1, 0)]
    );
}

fn group_writes_round_trip(store: &impl LogStore) {
    assert!(store.load_groups().unwrap().is_empty());
    store.write_groups(Vec::new()).unwrap();
    // Names chosen so that naive concatenation would collide.
    let first = GroupQueueKey::new("ab", "c", 0);
    let second = GroupQueueKey::new("a", "bc", 0);
    let third = GroupQueueKey::new("a", "bc", -2);
    let in_flight = |deadline_ms, attempt| OffsetState::InFlight {
        deadline_ms,
        attempt,
    };
    store
        .write_groups(vec![
            GroupWrite {
                key: first.clone(),
                cursor: GroupCursor { floor: 0, next: 4 },
                set: vec![
                    (0, in_flight(1_000, 1)),
                    (1, OffsetState::Done),
                    (2, in_flight(2_000, 3)),
                    (3, in_flight(5, 1)),
                ],
                remove: Vec::new(),
            },
            GroupWrite {
                key: second.clone(),
                cursor: GroupCursor { floor: 7, next: 7 },
                set: Vec::new(),
                remove: Vec::new(),
            },
        ])
        .unwrap();
    // Relaxed writes (no fsync) read back the same.
    store
        .write_groups_relaxed(vec![
            GroupWrite {
                key: first.clone(),
                cursor: GroupCursor { floor: 2, next: 5 },
                set: vec![
                    (2, OffsetState::Done),
                    (4, in_flight(-1, 2)),
                    (0, OffsetState::Done),
                ],
                // A removal wins over a `set` of the same offset in the same write.
                remove: vec![0, 1, 99],
            },
            GroupWrite {
                key: third.clone(),
                cursor: GroupCursor { floor: 0, next: 1 },
                set: vec![(0, in_flight(i64::MAX, u32::MAX))],
                remove: Vec::new(),
            },
        ])
        .unwrap();
    let expected = vec![
        GroupQueueState {
            key: third,
            cursor: GroupCursor { floor: 0, next: 1 },
            offsets: BTreeMap::from([(0, in_flight(i64::MAX, u32::MAX))]),
        },
        GroupQueueState {
            key: second,
            cursor: GroupCursor { floor: 7, next: 7 },
            offsets: BTreeMap::new(),
        },
        GroupQueueState {
            key: first,
            cursor: GroupCursor { floor: 2, next: 5 },
            offsets: BTreeMap::from([
                (2, OffsetState::Done),
                (3, in_flight(5, 1)),
                (4, in_flight(-1, 2)),
            ]),
        },
    ];
    assert_eq!(store.load_groups().unwrap(), expected);
}

fn meta_values_round_trip(store: &impl LogStore) {
    assert_eq!(store.get_meta("checkpoint/us-east").unwrap(), None);
    store.put_meta("checkpoint/us-east", b"42").unwrap();
    store.put_meta("checkpoint", b"").unwrap();
    assert_eq!(
        store.get_meta("checkpoint/us-east").unwrap(),
        Some(b"42".to_vec())
    );
    assert_eq!(store.get_meta("checkpoint").unwrap(), Some(Vec::new()));
    store.put_meta("checkpoint/us-east", b"43").unwrap();
    assert_eq!(
        store.get_meta("checkpoint/us-east").unwrap(),
        Some(b"43".to_vec())
    );
    assert_eq!(store.get_meta("checkpoint/us").unwrap(), None);
}

fn large_bodies_round_trip(store: &impl LogStore) {
    let mut batch = Vec::new();
    for (n, len) in [(1, 1024 * 1024), (2, 4 * 1024 * 1024), (3, 10)] {
        let mut r = record(n, "big", 0);
        r.message.as_mut().unwrap().body = noise(len, n);
        batch.push(r);
    }
    let expected: Vec<Record> = batch
        .iter()
        .cloned()
        .zip(1..)
        .map(|(r, n)| with_sequence(r, n))
        .collect();
    store.append(batch, LOCAL).unwrap();
    for record in &expected {
        assert_eq!(store.get(record.sequence).unwrap().as_ref(), Some(record));
    }
    assert_eq!(store.read_log(0, 10, usize::MAX).unwrap(), expected);
    assert_eq!(store.read_log(0, 10, 1).unwrap(), expected[..1].to_vec());
    let queue: Vec<Record> = store
        .read_queue("big", 0, 0, 10)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(queue, expected);
}

fn concurrent_appends_get_gap_free_sequences_and_offsets(store: &impl LogStore) {
    const THREADS: u64 = 4;
    const BATCHES: u64 = 25;
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            scope.spawn(move || {
                for batch in 0..BATCHES {
                    let n = (thread * BATCHES + batch) * 2 + 1;
                    let records = vec![record(n, "t", 0), record(n + 1, "t", 0)];
                    let results = store.append(records, LOCAL).unwrap();
                    assert!(matches!(
                        results[..],
                        [Appended::Stored { .. }, Appended::Stored { .. }]
                    ));
                }
            });
        }
    });
    let total = THREADS * BATCHES * 2;
    assert_eq!(store.last_sequence().unwrap(), total);
    assert_eq!(
        store.queue_bounds("t", 0).unwrap(),
        QueueBounds { min: 0, max: total }
    );
    let log = store.read_log(0, usize::MAX, usize::MAX).unwrap();
    assert_eq!(sequences(&log), (1..=total).collect::<Vec<_>>());
    let queue = store.read_queue("t", 0, 0, usize::MAX).unwrap();
    for (offset, (queue_offset, record)) in queue.iter().enumerate() {
        assert_eq!(*queue_offset, offset as u64);
        assert_eq!(
            record.sequence,
            offset as u64 + 1,
            "offsets follow sequences within a queue"
        );
    }
}

/// `record(n, topic, queue_id)` with a delivery time.
fn timer_record(n: u64, topic: &str, queue_id: i32, due_ms: i64) -> Record {
    let mut record = record(n, topic, queue_id);
    if let Some(message) = record.message.as_mut() {
        message.delivery_timestamp_ms = Some(due_ms);
    }
    record
}

fn timer_messages_join_their_queue_when_due_in_time_order(store: &impl LogStore) {
    let appended = store
        .append(
            vec![
                timer_record(1, "orders", 0, 3_000),
                record(2, "orders", 0),
                timer_record(3, "orders", 0, 1_000),
                timer_record(4, "orders", 1, 2_000),
            ],
            LOCAL,
        )
        .expect("append");
    assert_eq!(
        appended[0],
        Appended::Stored {
            sequence: 1,
            queue_offset: None,
            reused_client_id: false
        },
        "a timer message joins no queue yet"
    );
    assert_eq!(appended[1], stored(2, 0));
    assert_eq!(store.read_queue("orders", 0, 0, 10).expect("read").len(), 1);
    assert_eq!(store.next_timer_due().expect("next"), Some(1_000));
    assert!(store.find_message(&dedup_id(3)).expect("find").is_none());

    assert!(store.enqueue_due(999, 10).expect("enqueue").is_empty());
    let first = store.enqueue_due(2_000, 10).expect("enqueue");
    let moved: Vec<(u64, i32, u64)> = first
        .iter()
        .map(|enqueued| (enqueued.sequence, enqueued.queue_id, enqueued.offset))
        .collect();
    assert_eq!(moved, vec![(3, 0, 1), (4, 1, 0)], "earliest first");
    assert_eq!(first[0].dedup_id, dedup_id(3));
    assert_eq!(first[0].topic, "orders");
    assert_eq!(
        store.find_message(&dedup_id(3)).expect("find"),
        Some((3, 1))
    );
    let queue: Vec<u64> = store
        .read_queue("orders", 0, 0, 10)
        .expect("read")
        .iter()
        .map(|(_, record)| record.sequence)
        .collect();
    assert_eq!(queue, vec![2, 3]);
    assert_eq!(store.next_timer_due().expect("next"), Some(3_000));

    // A later message of the queue comes after the enqueued one.
    assert_eq!(
        store
            .append(vec![record(5, "orders", 0)], LOCAL)
            .expect("append")[0],
        stored(5, 2)
    );
    let last = store.enqueue_due(i64::MAX, 1).expect("enqueue");
    assert_eq!(last.len(), 1);
    assert_eq!((last[0].sequence, last[0].offset), (1, 3));
    assert_eq!(store.next_timer_due().expect("next"), None);
    assert!(store.enqueue_due(i64::MAX, 10).expect("enqueue").is_empty());
}

fn enqueue_due_takes_at_most_max(store: &impl LogStore) {
    let records = (1..=5)
        .map(|n| timer_record(n, "orders", 0, i64::try_from(n).expect("small")))
        .collect();
    store.append(records, LOCAL).expect("append");
    assert_eq!(store.enqueue_due(100, 2).expect("enqueue").len(), 2);
    assert_eq!(store.next_timer_due().expect("next"), Some(3));
    assert_eq!(store.enqueue_due(100, 10).expect("enqueue").len(), 3);
}

// ---- instantiation ----------------------------------------------------------

/// A message numbered `n` of `topic` queue 0 stored at `stored_at_ms` with
/// a body of `body_len` bytes.
fn stored_at(n: u64, topic: &str, stored_at_ms: i64, body_len: usize) -> Record {
    let mut record = record(n, topic, 0);
    let message = record.message.as_mut().expect("a message");
    message.store_timestamp_ms = stored_at_ms;
    message.body = noise(body_len, n);
    record
}

const T0: i64 = 1_700_000_000_000;

fn retention_by_age_removes_the_oldest_messages_and_their_dedup_entries(store: &impl LogStore) {
    let records = vec![
        stored_at(1, "orders", T0, 10),
        stored_at(2, "orders", T0 + 1_000, 10),
        stored_at(3, "orders", T0 + 10_000, 10),
    ];
    store.append(records.clone(), LOCAL).expect("append");
    let retention = super::Retention {
        max_age_ms: 5_000,
        max_bytes: None,
    };
    let trimmed = store
        .trim_queue("orders", 0, &retention, T0 + 6_000, u64::MAX, 100)
        .expect("trim");
    assert_eq!(trimmed.removed, 2);
    assert_eq!(trimmed.min_offset, 2);
    assert_eq!(
        store.queue_bounds("orders", 0).expect("bounds"),
        QueueBounds { min: 2, max: 3 }
    );
    let left: Vec<u64> = store
        .read_queue("orders", 0, 0, 10)
        .expect("read")
        .iter()
        .map(|(offset, _)| *offset)
        .collect();
    assert_eq!(left, [2]);
    assert_eq!(store.get(1).expect("get"), None, "the log record is gone");
    assert_eq!(store.find_dedup(&dedup_id(1)).expect("dedup"), None);
    // Its dedup window is over: a resend is stored again, at the next offset.
    assert_eq!(
        store
            .append(vec![records[0].clone()], LOCAL)
            .expect("append"),
        [stored(4, 3)]
    );
    // Nothing more is old enough.
    let again = store
        .trim_queue("orders", 0, &retention, T0 + 6_000, u64::MAX, 100)
        .expect("trim");
    assert_eq!(again.removed, 0);
}

fn retention_by_size_keeps_the_newest_bytes_and_always_the_last_message(store: &impl LogStore) {
    let records: Vec<Record> = (1..=4).map(|n| stored_at(n, "orders", T0, 1_000)).collect();
    let size = u64::try_from(codec::record_size(&records[0])).expect("size");
    store.append(records, LOCAL).expect("append");
    let keep_two = super::Retention {
        max_age_ms: i64::MAX,
        max_bytes: Some(2 * size + 10),
    };
    let trimmed = store
        .trim_queue("orders", 0, &keep_two, T0, u64::MAX, 100)
        .expect("trim");
    assert_eq!((trimmed.removed, trimmed.min_offset), (2, 2));
    let keep_none = super::Retention {
        max_age_ms: i64::MAX,
        max_bytes: Some(1),
    };
    let trimmed = store
        .trim_queue("orders", 0, &keep_none, T0, u64::MAX, 100)
        .expect("trim");
    assert_eq!(
        (trimmed.removed, trimmed.min_offset),
        (1, 3),
        "the last one stays"
    );
}

fn retention_keeps_the_last_record_of_the_log(store: &impl LogStore) {
    let records: Vec<Record> = (1..=5).map(|n| stored_at(n, "orders", T0, 10)).collect();
    store.append(records, LOCAL).expect("append");
    let retention = super::Retention {
        max_age_ms: 1,
        max_bytes: None,
    };
    let now = T0 + 10_000;
    // The log's last record stays, whatever its age.
    let trimmed = store
        .trim_queue("orders", 0, &retention, now, u64::MAX, 100)
        .expect("trim");
    assert_eq!((trimmed.removed, trimmed.min_offset), (4, 4));
    store
        .append(vec![stored_at(6, "other", now, 10)], LOCAL)
        .expect("append");
    let trimmed = store
        .trim_queue("orders", 0, &retention, now, u64::MAX, 100)
        .expect("trim");
    assert_eq!((trimmed.removed, trimmed.min_offset), (1, 5));
}

fn retention_waits_for_replication_and_takes_at_most_max(store: &impl LogStore) {
    let mut records: Vec<Record> = (1..=5).map(|n| stored_at(n, "orders", T0, 10)).collect();
    records.push(stored_at(6, "other", T0, 10));
    store.append(records, LOCAL).expect("append");
    let retention = super::Retention {
        max_age_ms: 1,
        max_bytes: None,
    };
    let now = T0 + 10_000;
    let trimmed = store
        .trim_queue("orders", 0, &retention, now, u64::MAX, 1)
        .expect("trim");
    assert_eq!((trimmed.removed, trimmed.min_offset), (1, 1));
    // Sequence 4 and later are not confirmed by every peer yet.
    let trimmed = store
        .trim_queue("orders", 0, &retention, now, 3, 100)
        .expect("trim");
    assert_eq!((trimmed.removed, trimmed.min_offset), (2, 3));
    let trimmed = store
        .trim_queue("orders", 0, &retention, now, 5, 100)
        .expect("trim");
    assert_eq!((trimmed.removed, trimmed.min_offset), (2, 5));
    // Emptied, the queue keeps its offsets.
    assert_eq!(
        store.queue_bounds("orders", 0).expect("bounds"),
        QueueBounds { min: 5, max: 5 }
    );
    assert_eq!(
        store
            .append(vec![stored_at(7, "orders", now, 10)], LOCAL)
            .expect("append"),
        [stored(7, 5)]
    );
}

fn expired_acknowledgements_leave_the_log_and_held_ones_stay(store: &impl LogStore) {
    let acked_at = |mut record: Record, at_ms: i64| {
        record.ack.as_mut().expect("an ack").acked_at_ms = at_ms;
        record
    };
    store
        .append(
            vec![
                stored_at(1, "orders", T0, 10),
                acked_at(ack_record(2, 1), T0),
                // Waits for a message that is not there (yet).
                acked_at(ack_record(3, 99), T0),
                acked_at(ack_record(4, 1), T0 + 9_000),
                stored_at(5, "orders", T0, 10),
            ],
            LOCAL,
        )
        .expect("append");
    store.hold_ack(&dedup_id(99), 3).expect("hold");
    let five_seconds = |_: &str| Some(5_000);
    let trimmed = store
        .trim_control_records(T0 + 10_000, &five_seconds, u64::MAX, 100)
        .expect("trim");
    // The message stays (queue retention's), the old ack goes, the held
    // one stays, the young one stops the walk.
    assert_eq!((trimmed.removed, trimmed.walked), (1, 3));
    assert!(store.get(1).expect("get").is_some());
    assert_eq!(store.get(2).expect("get"), None);
    assert_eq!(store.find_dedup(&dedup_id(2)).expect("dedup"), None);
    assert!(store.get(3).expect("get").is_some());
    assert!(store.get(4).expect("get").is_some());
    // Later, the young one is old too; the log's last record stays.
    let trimmed = store
        .trim_control_records(T0 + 20_000, &five_seconds, u64::MAX, 100)
        .expect("trim");
    assert_eq!((trimmed.removed, trimmed.walked), (1, 1));
    assert_eq!(store.get(4).expect("get"), None);
    assert_eq!(store.take_held_acks(&dedup_id(99)).expect("take"), [3]);
}

fn offset_at_time_finds_the_first_message_at_or_after_a_time(store: &impl LogStore) {
    let records: Vec<Record> = (1..=5)
        .map(|n| {
            stored_at(
                n,
                "orders",
                T0 + i64::try_from(n).expect("small") * 1_000,
                10,
            )
        })
        .collect();
    store.append(records, LOCAL).expect("append");
    let at = |time| store.offset_at_time("orders", 0, time).expect("lookup");
    assert_eq!(at(T0), 0);
    assert_eq!(at(T0 + 1_000), 0);
    assert_eq!(at(T0 + 2_500), 2);
    assert_eq!(at(T0 + 5_000), 4);
    assert_eq!(at(T0 + 9_000), 5, "after the last: the queue's end");
    assert_eq!(store.offset_at_time("none", 0, T0).expect("lookup"), 0);
}

/// A local-origin half message numbered `n` (type TRANSACTION) of "orders" queue 0.
fn half_message(n: u64) -> Record {
    let mut half = record(n, "orders", 0);
    if let Some(message) = half.message.as_mut() {
        message.message_type = meridian_proto::meridian::v1::MessageType::Transaction as i32;
    }
    half
}

/// A transaction outcome record numbered `n` for the half message `of`.
fn transaction_end(n: u64, of: u64, commit: bool, ended_at_ms: i64) -> Record {
    Record {
        kind: RecordKind::TransactionEnd as i32,
        dedup_id: dedup_id(n),
        origin_region: LOCAL.to_owned(),
        path: vec![LOCAL.to_owned()],
        transaction_end: Some(meridian_proto::meridian::v1::TransactionEnd {
            topic: "orders".to_owned(),
            message_dedup_id: dedup_id(of),
            commit,
            ended_at_ms,
            ..Default::default()
        }),
        ..Record::default()
    }
}

fn half_messages_wait_in_no_queue_until_their_transaction_ends(store: &impl LogStore) {
    let appended = store
        .append(
            vec![half_message(1), record(2, "orders", 0), half_message(3)],
            LOCAL,
        )
        .expect("append");
    assert_eq!(
        appended,
        [
            Appended::Stored {
                sequence: 1,
                queue_offset: None,
                reused_client_id: false
            },
            stored(2, 0),
            Appended::Stored {
                sequence: 3,
                queue_offset: None,
                reused_client_id: false
            },
        ]
    );
    let open: Vec<u64> = store
        .open_transactions()
        .expect("open")
        .iter()
        .map(|open| open.sequence)
        .collect();
    assert_eq!(open, [1, 3]);
    assert_eq!(
        sequences(
            &store
                .read_queue("orders", 0, 0, 10)
                .expect("read")
                .into_iter()
                .map(|(_, r)| r)
                .collect::<Vec<_>>()
        ),
        [2]
    );

    // Commit: the half message joins its queue at the next offset.
    match store
        .end_transaction(&dedup_id(3), true, T0 + 5_000)
        .expect("commit")
    {
        super::TransactionEnded::Committed(enqueued) => {
            assert_eq!((enqueued.sequence, enqueued.offset), (3, 1));
            assert_eq!(enqueued.dedup_id, dedup_id(3));
        }
        other => panic!("expected a commit, got {other:?}"),
    }
    assert_eq!(
        store.find_message(&dedup_id(3)).expect("find"),
        Some((3, 1))
    );
    // It joined at its commit time.
    assert_eq!(store.offset_at_time("orders", 0, T0 + 1).expect("time"), 1);
    // Rollback: never in a queue.
    assert_eq!(
        store
            .end_transaction(&dedup_id(1), false, T0)
            .expect("rollback"),
        super::TransactionEnded::RolledBack { sequence: 1 }
    );
    assert_eq!(store.find_message(&dedup_id(1)).expect("find"), None);
    assert!(store.open_transactions().expect("open").is_empty());
    // Ending again changes nothing and says how it ended.
    assert_eq!(
        store
            .end_transaction(&dedup_id(3), false, T0)
            .expect("again"),
        super::TransactionEnded::NotOpen {
            sequence: 3,
            committed: true
        }
    );
    assert_eq!(
        store
            .end_transaction(&dedup_id(1), true, T0)
            .expect("again"),
        super::TransactionEnded::NotOpen {
            sequence: 1,
            committed: false
        }
    );
    assert_eq!(
        store
            .end_transaction(&dedup_id(2), true, T0)
            .expect("not a half message"),
        super::TransactionEnded::NotOpen {
            sequence: 2,
            committed: true
        }
    );
    assert_eq!(
        store
            .end_transaction(&dedup_id(9), true, T0)
            .expect("unknown"),
        super::TransactionEnded::NotStored
    );
    assert_eq!(store.queue_bounds("orders", 0).expect("bounds").max, 2);
}

fn transaction_checks_are_counted_while_open(store: &impl LogStore) {
    store.append(vec![half_message(1)], LOCAL).expect("append");
    assert!(store.note_transaction_check(1, 1, T0).expect("note"));
    assert_eq!(
        store.open_transactions().expect("open"),
        [super::OpenTransaction {
            sequence: 1,
            checks: 1,
            last_check_ms: T0
        }]
    );
    store
        .end_transaction(&dedup_id(1), true, T0)
        .expect("commit");
    assert!(!store.note_transaction_check(1, 2, T0).expect("note"));
    assert!(store.open_transactions().expect("open").is_empty());
}

fn expired_rollbacks_leave_with_their_half_message(store: &impl LogStore) {
    store
        .append(
            vec![
                half_message(1),
                half_message(2),
                transaction_end(3, 1, false, T0),
                transaction_end(4, 2, true, T0),
                record(5, "orders", 0),
            ],
            LOCAL,
        )
        .expect("append");
    store
        .end_transaction(&dedup_id(1), false, T0)
        .expect("rollback");
    store
        .end_transaction(&dedup_id(2), true, T0)
        .expect("commit");
    let five_seconds = |_: &str| Some(5_000);
    let trimmed = store
        .trim_control_records(T0 + 1_000, &five_seconds, u64::MAX, 100)
        .expect("trim");
    assert_eq!(trimmed.removed, 0, "young outcomes stay");
    let trimmed = store
        .trim_control_records(T0 + 10_000, &five_seconds, u64::MAX, 100)
        .expect("trim");
    // Both outcomes go; the rolled-back half message with its rollback;
    // the committed one stays (its queue's retention decides).
    assert_eq!(trimmed.removed, 3);
    assert_eq!(store.get(1).expect("get"), None);
    assert_eq!(store.find_dedup(&dedup_id(1)).expect("dedup"), None);
    assert!(store.get(2).expect("get").is_some());
    assert_eq!(store.get(3).expect("get"), None);
    assert_eq!(store.get(4).expect("get"), None);
}

fn messages_are_found_by_key_tag_time_and_id(store: &impl LogStore) {
    use super::{IndexLookup, MessageIndex, QueryPosition};
    // Five messages a second apart; even ones tagged "paid", all keyed
    // "key-<n>", message 3 also "vip".
    let records: Vec<Record> = (1..=5)
        .map(|n| {
            let mut record = stored_at(
                n,
                "orders",
                T0 + i64::try_from(n).expect("small") * 1_000,
                8,
            );
            let message = record.message.as_mut().expect("a message");
            if n % 2 == 0 {
                message.tag = Some("paid".to_owned());
            }
            if n == 3 {
                message.keys.push("vip".to_owned());
            }
            record
        })
        .chain([stored_at(6, "audit", T0 + 3_000, 8)])
        .collect();
    store.append(records, LOCAL).expect("append");
    let found = |index, range: std::ops::Range<i64>, after, limit| -> Vec<u64> {
        store
            .query_messages("orders", index, range, after, limit)
            .expect("query")
            .into_iter()
            .map(|(position, record)| {
                assert_eq!(position.sequence, record.sequence);
                position.sequence
            })
            .collect()
    };
    let all = i64::MIN..i64::MAX;
    assert_eq!(
        found(MessageIndex::Time, all.clone(), None, 10),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        found(MessageIndex::Tag("paid"), all.clone(), None, 10),
        [2, 4]
    );
    assert_eq!(found(MessageIndex::Key("vip"), all.clone(), None, 10), [3]);
    assert_eq!(
        found(MessageIndex::Key("key-4"), all.clone(), None, 10),
        [4]
    );
    assert!(found(MessageIndex::Key("none"), all.clone(), None, 10).is_empty());
    // A range is [start, end) of store times.
    assert_eq!(
        found(MessageIndex::Time, T0 + 2_000..T0 + 4_000, None, 10),
        [2, 3]
    );
    // Pages continue after the last position returned.
    assert_eq!(found(MessageIndex::Time, all.clone(), None, 2), [1, 2]);
    let after = QueryPosition {
        stored_ms: T0 + 2_000,
        sequence: 2,
    };
    assert_eq!(
        found(MessageIndex::Time, all.clone(), Some(after), 2),
        [3, 4]
    );
    // By client message id, any topic.
    let by_id = store
        .indexed_records(IndexLookup::MessageId("client-6"), 10)
        .expect("by id");
    assert_eq!(sequences(&by_id), [6]);
    let location = store
        .locate_message(&dedup_id(4))
        .expect("locate")
        .expect("stored");
    assert_eq!((location.sequence, location.queue_offset), (4, Some(3)));
    assert!(!location.open_transaction);
    // Retention removes the index entries with the messages.
    let retention = Retention {
        max_age_ms: 10_000,
        max_bytes: None,
    };
    store
        .trim_queue("orders", 0, &retention, T0 + 13_500, u64::MAX, 100)
        .expect("trim");
    assert_eq!(found(MessageIndex::Time, all.clone(), None, 10), [4, 5]);
    assert!(
        store
            .indexed_records(IndexLookup::MessageId("client-1"), 10)
            .expect("by id")
            .is_empty()
    );
}

fn trace_records_are_found_per_message_and_expire_with_their_topic(store: &impl LogStore) {
    use super::IndexLookup;
    use meridian_proto::meridian::v1::{TraceEvent, TraceEvents};
    let trace = |n: u64, about: &[u64], written_at_ms: i64| Record {
        kind: RecordKind::Trace as i32,
        dedup_id: dedup_id(n),
        origin_region: LOCAL.to_owned(),
        path: vec![LOCAL.to_owned()],
        trace: Some(TraceEvents {
            topic: "orders".to_owned(),
            written_at_ms,
            events: about
                .iter()
                .map(|message| TraceEvent {
                    message_dedup_id: dedup_id(*message),
                    at_ms: written_at_ms,
                    ..TraceEvent::default()
                })
                .collect(),
        }),
        ..Record::default()
    };
    store
        .append(
            vec![
                stored_at(1, "orders", T0, 8),
                trace(2, &[1, 1, 9], T0),
                trace(3, &[1], T0 + 9_000),
                record(4, "orders", 0),
            ],
            LOCAL,
        )
        .expect("append");
    let of = |message: u64| {
        sequences(
            &store
                .indexed_records(IndexLookup::Trace(&dedup_id(message)), 10)
                .expect("trace"),
        )
    };
    assert_eq!(of(1), [2, 3]);
    assert_eq!(of(9), [2]);
    let five_seconds = |_: &str| Some(5_000);
    store
        .trim_control_records(T0 + 10_000, &five_seconds, u64::MAX, 100)
        .expect("trim");
    assert_eq!(
        of(1),
        [3],
        "the old trace record left with its index entries"
    );
    assert!(of(9).is_empty());
}

fn the_newest_catalog_change_of_each_item_is_kept(store: &impl LogStore) {
    use meridian_proto::meridian::v1::{CatalogChange, CatalogKind};
    let change = |n: u64, name: &str, at: i64, region: &str| Record {
        kind: RecordKind::Catalog as i32,
        dedup_id: dedup_id(n),
        origin_region: region.to_owned(),
        path: vec![region.to_owned()],
        catalog: Some(CatalogChange {
            kind: CatalogKind::Topic as i32,
            name: name.to_owned(),
            definition_toml: Some(format!("# {n}")),
            changed_at_ms: at,
            region: region.to_owned(),
            deleted: false,
        }),
        ..Record::default()
    };
    // Older after newer, in one batch and across batches.
    store
        .append(
            vec![change(1, "orders", 20, "b"), change(2, "orders", 10, "a")],
            LOCAL,
        )
        .expect("append");
    store
        .append(
            vec![change(3, "orders", 20, "a"), change(4, "audit", 5, "a")],
            LOCAL,
        )
        .expect("append");
    let kept: Vec<(String, Option<String>)> = store
        .catalog()
        .expect("catalog")
        .into_iter()
        .map(|change| (change.name, change.definition_toml))
        .collect();
    assert_eq!(
        kept,
        [
            ("audit".to_owned(), Some("# 4".to_owned())),
            ("orders".to_owned(), Some("# 1".to_owned())),
        ]
    );
}

macro_rules! cases_for {
    ($open:path; $($case:ident),+ $(,)?) => {
        $(
            #[test]
            fn $case() {
                let (_guard, store) = $open();
                super::$case(&store);
            }
        )+
    };
}

macro_rules! conformance_suite {
    ($($case:ident),+ $(,)?) => {
        mod memory_store {
            cases_for!(super::open_memory; $($case),+);
        }
        #[cfg(feature = "rocksdb")]
        mod rocks_store {
            cases_for!(super::open_rocks; $($case),+);
        }
    };
}

conformance_suite!(
    sequences_start_at_one_without_gaps,
    queue_offsets_start_at_zero_per_queue,
    read_log_pages_by_records_and_bytes,
    get_returns_stored_records,
    read_queue_returns_offsets_and_records,
    queue_bounds_of_unknown_queue_is_empty,
    dedup_id_is_deduplicated_across_batches,
    dedup_id_is_deduplicated_within_a_batch,
    client_message_id_is_deduplicated_only_for_local_origin,
    a_reused_client_message_id_with_other_content_is_stored,
    checkpoints_only_move_forward,
    acknowledgements_join_the_log_but_no_queue,
    held_acknowledgements_are_taken_once,
    invalid_record_leaves_nothing_written,
    group_writes_round_trip,
    meta_values_round_trip,
    large_bodies_round_trip,
    concurrent_appends_get_gap_free_sequences_and_offsets,
    timer_messages_join_their_queue_when_due_in_time_order,
    enqueue_due_takes_at_most_max,
    retention_by_age_removes_the_oldest_messages_and_their_dedup_entries,
    retention_by_size_keeps_the_newest_bytes_and_always_the_last_message,
    retention_waits_for_replication_and_takes_at_most_max,
    retention_keeps_the_last_record_of_the_log,
    expired_acknowledgements_leave_the_log_and_held_ones_stay,
    offset_at_time_finds_the_first_message_at_or_after_a_time,
    half_messages_wait_in_no_queue_until_their_transaction_ends,
    transaction_checks_are_counted_while_open,
    expired_rollbacks_leave_with_their_half_message,
    messages_are_found_by_key_tag_time_and_id,
    trace_records_are_found_per_message_and_expire_with_their_topic,
    the_newest_catalog_change_of_each_item_is_kept,
);

mod dedup_property;
#[cfg(feature = "rocksdb")]
mod rocks_only;
mod timer_property;
