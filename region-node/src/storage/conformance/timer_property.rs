//! Property: whatever delivery times messages carry and however the timer
//! is driven (clock steps, `max` per call), every timer message joins its
//! queue exactly once, never before its delivery time, in delivery-time
//! order (ties by arrival), and takes the next offset of its queue after
//! the messages that joined before it.

use super::*;
use proptest::prelude::*;

/// Messages: (queue id, delivery time in ms; `None`: no delivery time).
type Messages = Vec<(i32, Option<i64>)>;

/// Messages, then the clock steps of the timer (ms) and its `max`.
fn scenario() -> impl Strategy<Value = (Messages, Vec<i64>, usize)> {
    (
        prop::collection::vec((0i32..3, prop::option::weighted(0.8, 0i64..5_000)), 1..40),
        prop::collection::vec(0i64..2_000, 1..12),
        1usize..8,
    )
}

fn check(
    store: &impl LogStore,
    messages: Messages,
    steps: Vec<i64>,
    max: usize,
) -> Result<(), TestCaseError> {
    let records: Vec<Record> = messages
        .iter()
        .enumerate()
        .map(|(index, (queue_id, due))| {
            let n = index as u64 + 1;
            match due {
                Some(due) => timer_record(n, "t", *queue_id, *due),
                None => record(n, "t", *queue_id),
            }
        })
        .collect();
    store.append(records, LOCAL).unwrap();
    let mut now = 0;
    let mut joined: Vec<(i64, u64)> = Vec::new();
    // Clock steps, then enough calls at the end to drain everything.
    let ends = steps.into_iter().chain(std::iter::repeat_n(5_000, 60));
    for step in ends {
        now += step;
        let enqueued = store.enqueue_due(now, max).unwrap();
        prop_assert!(enqueued.len() <= max);
        for moved in enqueued {
            let due = messages[usize::try_from(moved.sequence - 1).unwrap()]
                .1
                .expect("only timer messages move");
            prop_assert!(due <= now, "moved at {now}, due at {due}");
            joined.push((due, moved.sequence));
        }
    }
    let timers: usize = messages.iter().filter(|(_, due)| due.is_some()).count();
    prop_assert_eq!(joined.len(), timers, "every timer message joined once");
    let mut ordered = joined.clone();
    ordered.sort();
    prop_assert_eq!(&joined, &ordered, "in delivery-time order");
    prop_assert_eq!(store.next_timer_due().unwrap(), None);
    // Each queue holds its messages once each, offsets without gaps.
    for queue_id in 0..3 {
        let expected = messages
            .iter()
            .filter(|(queue, _)| *queue == queue_id)
            .count();
        let entries = store.read_queue("t", queue_id, 0, usize::MAX).unwrap();
        prop_assert_eq!(entries.len(), expected);
        for (index, (offset, _)) in entries.iter().enumerate() {
            prop_assert_eq!(*offset, index as u64);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn memory_store_timer_messages_join_once_in_time_order((messages, steps, max) in scenario()) {
        check(&MemoryStore::new(), messages, steps, max)?;
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn rocks_store_timer_messages_join_once_in_time_order((messages, steps, max) in scenario()) {
        let (_dir, store) = open_rocks();
        check(&store, messages, steps, max)?;
    }
}
