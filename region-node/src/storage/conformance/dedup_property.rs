//! Property: whatever mix of new messages, producer retries and reused
//! client message ids is sent, every distinct message is stored exactly
//! once, and every send is answered with the record that holds its content.

use super::*;
use proptest::prelude::*;

/// One send of a producer.
#[derive(Debug, Clone)]
enum Send {
    /// A new message: client id `id`, content `content`.
    New { id: u8, content: u8 },
    /// A retry of the `index`-th earlier send (modulo their count), to another queue.
    Retry { index: usize, queue_id: i32 },
}

fn sends() -> impl Strategy<Value = Vec<Vec<Send>>> {
    // Few ids and contents, so ids collide with other contents often.
    let send = prop_oneof![
        (0u8..4, 0u8..3).prop_map(|(id, content)| Send::New { id, content }),
        (any::<usize>(), 0i32..4).prop_map(|(index, queue_id)| Send::Retry { index, queue_id }),
    ];
    // Batches of sends, as group commit forms them.
    prop::collection::vec(prop::collection::vec(send, 1..5), 1..12)
}

fn message_record(n: u64, id: u8, content: u8, queue_id: i32) -> Record {
    let mut record = record(n, "t", queue_id);
    let message = record.message.as_mut().unwrap();
    message.client_message_id = format!("client-{id}");
    message.body = vec![content];
    message.keys.clear();
    message.user_properties.clear();
    record
}

fn check(store: &impl LogStore, batches: Vec<Vec<Send>>) -> Result<(), TestCaseError> {
    let mut sent: Vec<(u8, u8)> = Vec::new();
    let mut n = 0;
    for batch in batches {
        let mut records = Vec::new();
        let mut contents = Vec::new();
        for send in batch {
            n += 1;
            let (id, content, queue_id) = match send {
                Send::New { id, content } => (id, content, 0),
                Send::Retry { index, queue_id } => match sent.get(index % sent.len().max(1)) {
                    Some(&(id, content)) => (id, content, queue_id),
                    None => (0, 0, queue_id),
                },
            };
            sent.push((id, content));
            contents.push((id, content));
            records.push(message_record(n, id, content, queue_id));
        }
        let results = store.append(records, LOCAL).unwrap();
        for (result, (id, content)) in results.into_iter().zip(contents) {
            let sequence = match result {
                Appended::Stored { sequence, .. } | Appended::Duplicate { sequence, .. } => {
                    sequence
                }
            };
            let stored = store.get(sequence).unwrap().unwrap().message.unwrap();
            prop_assert_eq!(stored.client_message_id, format!("client-{id}"));
            prop_assert_eq!(stored.body, vec![content], "answered with another message");
        }
    }
    let mut stored: Vec<(String, Vec<u8>)> = store
        .read_log(0, usize::MAX, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|record| {
            let message = record.message.unwrap();
            (message.client_message_id, message.body)
        })
        .collect();
    let stored_count = stored.len();
    stored.sort();
    stored.dedup();
    prop_assert_eq!(stored.len(), stored_count, "a message was stored twice");
    let mut distinct: Vec<(String, Vec<u8>)> = sent
        .into_iter()
        .map(|(id, content)| (format!("client-{id}"), vec![content]))
        .collect();
    distinct.sort();
    distinct.dedup();
    prop_assert_eq!(stored, distinct, "every distinct message is stored");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn memory_store_stores_each_distinct_message_once(batches in sends()) {
        check(&MemoryStore::new(), batches)?;
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn rocks_store_stores_each_distinct_message_once(batches in sends()) {
        let (_dir, store) = open_rocks();
        check(&store, batches)?;
    }
}
