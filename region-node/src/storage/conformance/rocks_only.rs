//! Behaviour only a persistent store has: reopening, and bytes on disk that
//! do not decode.

use super::*;

fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, StorageError>) {
    assert!(
        matches!(
            result,
            Err(StorageError::Corrupt {
                what: "log record",
                ..
            })
        ),
        "{result:?}"
    );
}

#[test]
fn data_survives_close_and_reopen() {
    for flush in [FlushMode::Sync, FlushMode::Async] {
        let dir = tempfile::tempdir().unwrap();
        let group = GroupQueueKey::new("g", "t", 0);
        {
            let store = RocksStore::open(dir.path(), flush).unwrap();
            store
                .append(
                    vec![record(1, "t", 0), record(2, "t", 1), record(3, "t", 0)],
                    LOCAL,
                )
                .unwrap();
            store
                .write_groups(vec![GroupWrite {
                    key: group.clone(),
                    cursor: GroupCursor { floor: 1, next: 2 },
                    set: vec![(1, OffsetState::Done)],
                    remove: Vec::new(),
                }])
                .unwrap();
            store.put_meta("k", b"v").unwrap();
        }
        let store = RocksStore::open(dir.path(), flush).unwrap();
        assert_eq!(store.last_sequence().unwrap(), 3);
        assert_eq!(
            store.queue_bounds("t", 0).unwrap(),
            QueueBounds { min: 0, max: 2 }
        );
        let results = store
            .append(
                vec![record(4, "t", 0), record(5, "t", 1), record(6, "t", 9)],
                LOCAL,
            )
            .unwrap();
        assert_eq!(results, vec![stored(4, 2), stored(5, 1), stored(6, 0)]);
        // Both dedup key spaces survive.
        let results = store
            .append(vec![record(2, "t", 1), retry_of(7, 1, "t", 0)], LOCAL)
            .unwrap();
        assert_eq!(results, vec![duplicate_of(2, 0), duplicate_of(1, 0)]);
        assert_eq!(
            sequences(&store.read_log(0, 100, usize::MAX).unwrap()),
            (1..=6).collect::<Vec<_>>()
        );
        assert_eq!(
            store.get(3).unwrap(),
            Some(with_sequence(record(3, "t", 0), 3))
        );
        assert_eq!(store.load_groups().unwrap().len(), 1);
        assert_eq!(
            store.load_groups().unwrap()[0].cursor,
            GroupCursor { floor: 1, next: 2 }
        );
        assert_eq!(store.get_meta("k").unwrap(), Some(b"v".to_vec()));
        drop(store);
        let store = RocksStore::open(dir.path(), flush).unwrap();
        assert_eq!(store.last_sequence().unwrap(), 6);
        assert_eq!(
            store.queue_bounds("t", 1).unwrap(),
            QueueBounds { min: 0, max: 2 }
        );
    }
}

#[test]
fn waiting_timer_messages_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RocksStore::open(dir.path(), FlushMode::Sync).unwrap();
        store
            .append(
                vec![
                    timer_record(1, "t", 0, 5_000),
                    timer_record(2, "t", 0, 9_000),
                ],
                LOCAL,
            )
            .unwrap();
        assert_eq!(store.enqueue_due(5_000, 10).unwrap().len(), 1);
    }
    let store = RocksStore::open(dir.path(), FlushMode::Sync).unwrap();
    assert_eq!(store.next_timer_due().unwrap(), Some(9_000));
    assert_eq!(
        store.queue_bounds("t", 0).unwrap(),
        QueueBounds { min: 0, max: 1 }
    );
    let later = store.enqueue_due(9_000, 10).unwrap();
    assert_eq!((later[0].sequence, later[0].offset), (2, 1));
}

#[test]
fn a_queue_emptied_by_retention_keeps_its_offsets_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let retention = crate::storage::Retention {
        max_age_ms: 1,
        max_bytes: None,
    };
    {
        let store = RocksStore::open(dir.path(), FlushMode::Sync).unwrap();
        let mut records: Vec<Record> = (1..=3).map(|n| stored_at(n, "orders", T0, 10)).collect();
        records.push(stored_at(4, "other", T0, 10));
        store.append(records, LOCAL).unwrap();
        let trimmed = store
            .trim_queue("orders", 0, &retention, T0 + 1_000, u64::MAX, 100)
            .unwrap();
        assert_eq!((trimmed.removed, trimmed.min_offset), (3, 3));
    }
    let store = RocksStore::open(dir.path(), FlushMode::Sync).unwrap();
    assert_eq!(
        store.queue_bounds("orders", 0).unwrap(),
        QueueBounds { min: 3, max: 3 }
    );
    assert_eq!(
        store
            .append(vec![stored_at(5, "orders", T0, 10)], LOCAL)
            .unwrap(),
        [stored(5, 3)]
    );
}

#[test]
fn corrupt_values_yield_corrupt_not_a_panic() {
    let (_dir, store) = open_rocks();
    store
        .append((1..=3).map(|n| record(n, "t", 0)).collect(), LOCAL)
        .unwrap();
    store.put_raw_log_value(2, b"garbage").unwrap();
    assert_corrupt(store.get(2));
    assert_corrupt(store.read_log(0, 10, usize::MAX));
    assert_corrupt(store.read_queue("t", 0, 0, 10));
    assert_eq!(
        store.get(1).unwrap(),
        Some(with_sequence(record(1, "t", 0), 1))
    );
    assert_eq!(
        sequences(&store.read_log(2, 10, usize::MAX).unwrap()),
        vec![3]
    );

    // One flipped bit in the body of an otherwise valid value.
    let mut value = codec::encode_log_value(&record(3, "t", 0));
    let last = value.len() - 1;
    value[last] ^= 0x01;
    store.put_raw_log_value(3, &value).unwrap();
    assert_corrupt(store.get(3));
    store.put_raw_log_value(3, &[]).unwrap();
    assert_corrupt(store.get(3));
}

#[test]
fn open_creates_missing_parent_directories() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("node-1").join("db");
    let store = RocksStore::open(&nested, FlushMode::Async).unwrap();
    assert_eq!(
        store.append(vec![record(1, "t", 0)], LOCAL).unwrap(),
        vec![stored(1, 0)]
    );
}

#[test]
fn opening_a_file_fails_with_its_path() {
    let file = tempfile::NamedTempFile::new().unwrap();
    match RocksStore::open(file.path(), FlushMode::Async) {
        Err(StorageError::Open { path, .. }) => assert_eq!(path, file.path()),
        other => panic!("expected an Open error, got {other:?}"),
    }
}
