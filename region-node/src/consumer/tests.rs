use super::*;
use crate::storage::{FailingStore, MemoryStore};

const NOW: i64 = 1_700_000_000_000;

fn record(queue_id: i32, tag: &str, delivery_timestamp_ms: Option<i64>) -> Record {
    let mut record = crate::test_records::message_record(queue_id, b"body");
    if let Some(message) = record.message.as_mut() {
        message.tag = Some(tag.into());
        message.delivery_timestamp_ms = delivery_timestamp_ms;
    }
    record
}

fn engine_with(records: Vec<Record>) -> (Arc<MemoryStore>, ConsumerEngine<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    store.append(records, "here").expect("append");
    let engine = ConsumerEngine::load(store.clone(), "here".into()).expect("load");
    (store, engine)
}

fn request<'a>(filter: &'a Filter, now_ms: i64) -> ReceiveRequest<'a> {
    ReceiveRequest {
        group: "group",
        topic: "orders",
        queue_count: 2,
        consume_from: ConsumeFrom::Earliest,
        filter,
        max_messages: 32,
        max_bytes: usize::MAX,
        invisible_ms: 10_000,
        max_attempts: 17,
        fifo: false,
        now_ms,
    }
}

#[test]
fn delivers_each_message_once_until_its_deadline() {
    let (_, engine) = engine_with(vec![record(0, "a", None), record(1, "a", None)]);
    let first = engine
        .receive(&request(&Filter::All, NOW))
        .expect("receive");
    assert_eq!(first.deliveries.len(), 2);
    assert!(
        first
            .deliveries
            .iter()
            .all(|delivery| delivery.attempt == 1)
    );
    assert_eq!(first.next_deadline_ms, Some(NOW + 10_000));
    let again = engine
        .receive(&request(&Filter::All, NOW + 9_999))
        .expect("receive");
    assert!(again.deliveries.is_empty());
}

#[test]
fn unacknowledged_message_returns_with_next_attempt_and_old_handle_is_refused() {
    let (_, engine) = engine_with(vec![record(0, "a", None)]);
    let first = engine
        .receive(&request(&Filter::All, NOW))
        .expect("receive");
    let old = first.deliveries[0].handle.clone();
    let second = engine
        .receive(&request(&Filter::All, NOW + 10_000))
        .expect("receive");
    assert_eq!(second.deliveries.len(), 1);
    assert_eq!(second.deliveries[0].attempt, 2);
    assert_ne!(second.deliveries[0].handle, old);
    assert!(matches!(
        engine.ack("group", "orders", &old),
        Err(ConsumerError::InvalidReceiptHandle { .. })
    ));
    engine
        .ack("group", "orders", &second.deliveries[0].handle)
        .expect("ack");
    let later = engine
        .receive(&request(&Filter::All, NOW + 100_000))
        .expect("receive");
    assert!(later.deliveries.is_empty());
    assert_eq!(later.next_deadline_ms, None);
}

#[test]
fn acknowledged_state_survives_reload() {
    let (store, engine) = engine_with(vec![record(0, "a", None), record(0, "a", None)]);
    let received = engine
        .receive(&request(&Filter::All, NOW))
        .expect("receive");
    engine
        .ack("group", "orders", &received.deliveries[0].handle)
        .expect("ack");
    drop(engine);
    let reloaded = ConsumerEngine::load(store, "here".into()).expect("load");
    let after = reloaded
        .receive(&request(&Filter::All, NOW + 20_000))
        .expect("receive");
    assert_eq!(
        after.deliveries.len(),
        1,
        "only the unacknowledged message returns"
    );
    assert_eq!(after.deliveries[0].offset, received.deliveries[1].offset);
    assert_eq!(after.deliveries[0].attempt, 2);
}

#[test]
fn filtered_messages_are_skipped_for_the_group() {
    let (_, engine) = engine_with(vec![record(0, "a", None), record(0, "b", None)]);
    let only_b = Filter::parse_tags("b").expect("valid");
    let received = engine.receive(&request(&only_b, NOW)).expect("receive");
    assert_eq!(received.deliveries.len(), 1);
    assert_eq!(
        received.deliveries[0]
            .record
            .message
            .as_ref()
            .and_then(|m| m.tag.as_deref()),
        Some("b")
    );
}

#[test]
fn latest_starts_after_existing_messages() {
    let (store, engine) = engine_with(vec![record(0, "a", None)]);
    let mut latest = request(&Filter::All, NOW);
    latest.consume_from = ConsumeFrom::Latest;
    assert!(
        engine
            .receive(&latest)
            .expect("receive")
            .deliveries
            .is_empty()
    );
    store
        .append(vec![record(0, "a", None)], "here")
        .expect("append");
    assert_eq!(
        engine.receive(&latest).expect("receive").deliveries.len(),
        1
    );
}

#[test]
fn delayed_message_stays_hidden_until_its_time() {
    let (store, engine) = engine_with(vec![record(0, "a", Some(NOW + 5_000))]);
    let early = engine
        .receive(&request(&Filter::All, NOW))
        .expect("receive");
    assert!(early.deliveries.is_empty(), "in the timer index, no queue");
    assert_eq!(
        store.enqueue_due(NOW + 5_000, 10).expect("enqueue").len(),
        1
    );
    let due = engine
        .receive(&request(&Filter::All, NOW + 5_000))
        .expect("receive");
    assert_eq!(due.deliveries.len(), 1);
    assert_eq!(due.deliveries[0].attempt, 1);
}

#[test]
fn a_queued_message_whose_time_has_not_come_by_this_clock_waits_for_it() {
    // The timer moved it by a clock a little ahead of this receive's.
    let (store, engine) = engine_with(vec![record(0, "a", Some(NOW + 5_000))]);
    store.enqueue_due(NOW + 5_000, 10).expect("enqueue");
    let early = engine
        .receive(&request(&Filter::All, NOW + 4_990))
        .expect("receive");
    assert!(early.deliveries.is_empty());
    assert_eq!(early.next_deadline_ms, Some(NOW + 5_000));
    let due = engine
        .receive(&request(&Filter::All, NOW + 5_000))
        .expect("receive");
    assert_eq!(due.deliveries[0].attempt, 1);
}

#[test]
fn change_invisible_issues_a_new_handle() {
    let (_, engine) = engine_with(vec![record(0, "a", None)]);
    let received = engine
        .receive(&request(&Filter::All, NOW))
        .expect("receive");
    let old = received.deliveries[0].handle.clone();
    let new = engine
        .change_invisible("group", "orders", &old, 60_000, NOW + 1)
        .expect("change");
    assert_ne!(new, old);
    assert!(engine.ack("group", "orders", &old).is_err());
    engine
        .ack("group", "orders", &new)
        .expect("ack with new handle");
}

#[test]
fn a_receive_stops_at_its_byte_budget_but_returns_at_least_one_message() {
    let (_, engine) = engine_with(vec![
        record(0, "a", None),
        record(0, "a", None),
        record(0, "a", None),
    ]);
    let mut small = request(&Filter::All, NOW);
    small.max_bytes = 1;
    let first = engine.receive(&small).expect("receive");
    assert_eq!(first.deliveries.len(), 1);
    assert_eq!(first.bytes, 4);
    let rest = engine
        .receive(&request(&Filter::All, NOW))
        .expect("receive");
    assert_eq!(
        rest.deliveries.len(),
        2,
        "the others stay visible for the next receive"
    );
}

/// An engine over a store whose writes fail on demand.
fn failing_engine(records: Vec<Record>) -> (Arc<FailingStore>, ConsumerEngine<FailingStore>) {
    let store = Arc::new(FailingStore::new());
    store.append(records, "here").expect("append");
    let engine = ConsumerEngine::load(store.clone(), "here".into()).expect("load");
    (store, engine)
}

/// The first delivery of a receive at `now_ms`.
fn first_delivery<S: LogStore>(engine: &ConsumerEngine<S>, now_ms: i64) -> Delivery {
    engine
        .receive(&request(&Filter::All, now_ms))
        .expect("receive")
        .deliveries
        .remove(0)
}

/// The engine's state equals what a restart would load from the store.
fn assert_memory_matches_store(store: &Arc<FailingStore>, engine: &ConsumerEngine<FailingStore>) {
    let reloaded = ConsumerEngine::load(store.clone(), "here".into()).expect("reload");
    assert_eq!(engine.snapshot(), reloaded.snapshot());
}

#[test]
fn a_failed_ack_write_leaves_the_message_in_flight_and_the_retry_really_acks() {
    let (store, engine) = failing_engine(vec![record(0, "a", None)]);
    let delivery = first_delivery(&engine, NOW);
    store.fail_writes(true);
    assert!(matches!(
        engine.ack("group", "orders", &delivery.handle),
        Err(ConsumerError::Storage(_))
    ));
    assert_memory_matches_store(&store, &engine);
    // Still in flight: it comes back after its deadline (were the ack
    // installed, nothing would come back, in memory, until a restart did).
    store.fail_writes(false);
    let redelivered = engine
        .receive(&request(&Filter::All, NOW + 10_000))
        .expect("receive");
    assert_eq!(redelivered.deliveries.len(), 1);
    assert_eq!(redelivered.deliveries[0].attempt, 2);
    engine
        .ack("group", "orders", &redelivered.deliveries[0].handle)
        .expect("the retried ack is stored");
    assert_memory_matches_store(&store, &engine);
    let reloaded = ConsumerEngine::load(store.clone(), "here".into()).expect("reload");
    assert!(
        reloaded
            .receive(&request(&Filter::All, NOW + 100_000))
            .expect("receive")
            .deliveries
            .is_empty(),
        "acknowledged for good"
    );
}

#[test]
fn a_receive_whose_state_cannot_be_written_hands_nothing_out() {
    let (store, engine) = failing_engine(vec![record(0, "a", None), record(1, "a", None)]);
    store.fail_writes(true);
    assert!(matches!(
        engine.receive(&request(&Filter::All, NOW)),
        Err(ConsumerError::Storage(_))
    ));
    assert_memory_matches_store(&store, &engine);
    store.fail_writes(false);
    let received = engine
        .receive(&request(&Filter::All, NOW))
        .expect("receive");
    assert_eq!(received.deliveries.len(), 2);
    assert!(
        received
            .deliveries
            .iter()
            .all(|delivery| delivery.attempt == 1)
    );
    assert_memory_matches_store(&store, &engine);
}

#[test]
fn a_failed_invisibility_change_keeps_the_old_handle_valid() {
    let (store, engine) = failing_engine(vec![record(0, "a", None)]);
    let delivery = first_delivery(&engine, NOW);
    store.fail_writes(true);
    assert!(matches!(
        engine.change_invisible("group", "orders", &delivery.handle, 60_000, NOW),
        Err(ConsumerError::Storage(_))
    ));
    assert_memory_matches_store(&store, &engine);
    store.fail_writes(false);
    engine
        .ack("group", "orders", &delivery.handle)
        .expect("the old handle still names the delivery");
}

#[test]
fn acks_of_many_handles_are_one_write_with_one_outcome_each() {
    let (store, engine) =
        failing_engine((0..6).map(|index| record(index % 2, "a", None)).collect());
    let deliveries = engine
        .receive(&request(&Filter::All, NOW))
        .expect("receive")
        .deliveries;
    assert_eq!(deliveries.len(), 6);
    let mut handles: Vec<ReceiptHandle> = deliveries.iter().map(|d| d.handle.clone()).collect();
    // A stale handle (another attempt) of a message in flight fails alone.
    let mut stale = handles[0].clone();
    stale.attempt = 7;
    handles.insert(0, stale);
    // The same handle twice: the second is an ack of a finished message.
    handles.push(handles[2].clone());

    store.fail_writes(true);
    assert!(engine.ack_many("group", "orders", &handles).is_err());
    assert_eq!(store.failed_writes(), 1, "one write for the whole batch");
    assert_memory_matches_store(&store, &engine);

    store.fail_writes(false);
    let outcomes = engine
        .ack_many("group", "orders", &handles)
        .expect("stored");
    assert_eq!(outcomes.len(), handles.len());
    assert!(matches!(
        outcomes[0],
        Err(ConsumerError::InvalidReceiptHandle { .. })
    ));
    assert!(outcomes[1..7].iter().all(Result::is_ok), "{outcomes:?}");
    assert!(outcomes[7].is_ok(), "acking twice is harmless");
    assert_memory_matches_store(&store, &engine);
    let later = engine
        .receive(&request(&Filter::All, NOW + 100_000))
        .expect("receive");
    assert!(later.deliveries.is_empty());
}

#[test]
fn a_new_group_beyond_the_cap_is_refused_and_known_groups_go_on() {
    let (_, mut engine) = engine_with(vec![record(0, "a", None)]);
    engine.max_groups = 2;
    let receive = |engine: &ConsumerEngine<MemoryStore>, group: &'static str| {
        let filter = Filter::All;
        let mut request = request(&filter, NOW);
        request.group = group;
        engine
            .receive(&request)
            .map(|received| received.deliveries.len())
    };
    assert_eq!(receive(&engine, "first").expect("first group"), 1);
    assert_eq!(receive(&engine, "second").expect("second group"), 1);
    let refused = receive(&engine, "third").expect_err("over the cap");
    assert!(
        refused.to_string().contains("third") && refused.to_string().contains("2 groups"),
        "{refused}"
    );
    assert_eq!(receive(&engine, "first").expect("a known group"), 0);
}

#[test]
fn concurrent_receives_of_one_group_never_hand_out_a_message_twice() {
    let records = (0..200).map(|index| record(index % 2, "a", None)).collect();
    let (store, engine) = engine_with(records);
    let engine = Arc::new(engine);
    let delivered: Vec<(i32, u64)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let engine = Arc::clone(&engine);
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    for _ in 0..40 {
                        let filter = Filter::All;
                        let mut request = request(&filter, NOW);
                        request.max_messages = 3;
                        let received = engine.receive(&request).expect("receive");
                        mine.extend(
                            received
                                .deliveries
                                .iter()
                                .map(|delivery| (delivery.queue_id, delivery.offset)),
                        );
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("worker"))
            .collect()
    });
    let mut unique = delivered.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        delivered.len(),
        "a message was handed out twice"
    );
    assert_eq!(delivered.len(), 200, "every message was handed out");
    let reloaded = ConsumerEngine::load(store, "here".into()).expect("reload");
    assert_eq!(engine.snapshot(), reloaded.snapshot());
}

/// A finish of offset `offset` of queue 0 for `group` on `orders`.
fn finish(offset: u64, consume_from: ConsumeFrom) -> Finish<'static> {
    Finish {
        group: "group",
        topic: "orders",
        queue_id: 0,
        offset,
        consume_from,
    }
}

#[test]
fn many_finishes_over_several_queues_are_one_write() {
    let (store, engine) = engine_with(vec![
        record(0, "a", None),
        record(0, "a", None),
        record(1, "a", None),
    ]);
    let finishes = [
        finish(0, ConsumeFrom::Earliest),
        Finish {
            queue_id: 1,
            ..finish(0, ConsumeFrom::Earliest)
        },
        finish(0, ConsumeFrom::Earliest),
    ];
    assert_eq!(engine.finish_replicated(&finishes).expect("finish"), 2);
    let received = engine
        .receive(&request(&Filter::All, NOW))
        .expect("receive");
    assert_eq!(offsets_of(&received), vec![(0, 1)]);
    let reloaded = ConsumerEngine::load(store, "here".into()).expect("reload");
    assert_eq!(reloaded.snapshot(), engine.snapshot());
}

fn offsets_of(received: &Received) -> Vec<(i32, u64)> {
    let mut offsets: Vec<(i32, u64)> = received
        .deliveries
        .iter()
        .map(|delivery| (delivery.queue_id, delivery.offset))
        .collect();
    offsets.sort_unstable();
    offsets
}

#[test]
fn a_message_finished_by_another_region_before_delivery_is_skipped() {
    let (store, engine) = engine_with(vec![
        record(0, "a", None),
        record(0, "a", None),
        record(0, "a", None),
    ]);
    // The group is new here: created where a receive would create it.
    assert_eq!(
        engine
            .finish_replicated(&[finish(1, ConsumeFrom::Earliest)])
            .expect("finish"),
        1
    );
    assert_eq!(
        engine
            .finish_replicated(&[finish(1, ConsumeFrom::Earliest)])
            .expect("finish again"),
        0,
        "a second finish changes nothing"
    );
    let received = engine
        .receive(&request(&Filter::All, NOW))
        .expect("receive");
    assert_eq!(offsets_of(&received), vec![(0, 0), (0, 2)]);
    // What memory holds is what storage holds.
    let reloaded = ConsumerEngine::load(store, "here".into()).expect("reload");
    assert_eq!(reloaded.snapshot(), engine.snapshot());
}

#[test]
fn a_message_in_flight_here_finished_elsewhere_is_not_redelivered() {
    let (_, engine) = engine_with(vec![record(0, "a", None), record(0, "a", None)]);
    let first = engine
        .receive(&request(&Filter::All, NOW))
        .expect("receive");
    assert_eq!(offsets_of(&first), vec![(0, 0), (0, 1)]);
    assert_eq!(
        engine
            .finish_replicated(&[finish(0, ConsumeFrom::Earliest)])
            .expect("finish"),
        1
    );
    // The local consumer's late ack of it succeeds (already finished).
    let handle = &first
        .deliveries
        .iter()
        .find(|d| d.offset == 0)
        .expect("offset 0")
        .handle;
    engine.ack("group", "orders", handle).expect("ack");
    let later = engine
        .receive(&request(&Filter::All, NOW + 20_000))
        .expect("receive after the deadline");
    assert_eq!(
        offsets_of(&later),
        vec![(0, 1)],
        "only the unfinished one returns"
    );
}

#[test]
fn a_finish_before_the_groups_start_changes_nothing() {
    let (_, engine) = engine_with(vec![record(0, "a", None), record(0, "a", None)]);
    assert_eq!(
        engine
            .finish_replicated(&[finish(0, ConsumeFrom::Latest)])
            .expect("finish"),
        0
    );
    let received = engine
        .receive(&request(&Filter::All, NOW))
        .expect("receive");
    assert!(
        received.deliveries.is_empty(),
        "a latest group starts after both"
    );
}

#[test]
fn a_message_due_after_its_last_attempt_becomes_a_dead_letter_once() {
    let (_, engine) = engine_with(vec![record(0, "a", None)]);
    let with_attempts = |now| ReceiveRequest {
        max_attempts: 2,
        ..request(&Filter::All, now)
    };
    let first = engine.receive(&with_attempts(NOW)).expect("receive");
    assert_eq!(first.deliveries[0].attempt, 1);
    let second = engine
        .receive(&with_attempts(NOW + 10_000))
        .expect("receive");
    assert_eq!(second.deliveries[0].attempt, 2);
    assert!(second.dead_letters.is_empty());

    let third = engine
        .receive(&with_attempts(NOW + 20_000))
        .expect("receive");
    assert!(third.deliveries.is_empty(), "no third delivery");
    assert_eq!(third.dead_letters.len(), 1);
    let dead = &third.dead_letters[0];
    assert_eq!(dead.attempts, 2);
    assert_eq!(dead.handle.deadline_ms, NOW + 20_000 + DEAD_LETTER_RETRY_MS);
    // While the move is under way the message is neither delivered nor
    // moved a second time.
    let meanwhile = engine
        .receive(&with_attempts(NOW + 21_000))
        .expect("receive");
    assert!(meanwhile.deliveries.is_empty() && meanwhile.dead_letters.is_empty());

    // Read through the handle, then finished by it, as the node does.
    let original = engine
        .delivered("group", "orders", &dead.handle)
        .expect("the message");
    assert_eq!(original.dedup_id, dead.record.dedup_id);
    engine
        .ack("group", "orders", &dead.handle)
        .expect("ack the original");
    let after = engine
        .receive(&with_attempts(NOW + 100_000))
        .expect("receive");
    assert!(after.deliveries.is_empty() && after.dead_letters.is_empty());
}

#[test]
fn a_dead_letter_not_finished_is_offered_again_after_the_retry_time() {
    let (_, engine) = engine_with(vec![record(0, "a", None)]);
    let with_attempts = |now| ReceiveRequest {
        max_attempts: 1,
        ..request(&Filter::All, now)
    };
    engine.receive(&with_attempts(NOW)).expect("receive");
    let moved = engine
        .receive(&with_attempts(NOW + 10_000))
        .expect("receive");
    assert_eq!(moved.dead_letters.len(), 1);
    // The copy was never stored (a crash, a failed append): offered again.
    let again = engine
        .receive(&with_attempts(NOW + 10_000 + DEAD_LETTER_RETRY_MS))
        .expect("receive");
    assert_eq!(again.dead_letters.len(), 1);
    assert_eq!(again.dead_letters[0].attempts, 1);
}

/// A message of `group` (message group) on queue 0.
fn grouped(group: &str, body: &str) -> Record {
    let mut record = crate::test_records::message_record(0, body.as_bytes());
    if let Some(message) = record.message.as_mut() {
        message.message_group = Some(group.into());
        message.tag = Some("a".into());
    }
    record
}

fn in_order(filter: &Filter, now_ms: i64, max_messages: usize) -> ReceiveRequest<'_> {
    ReceiveRequest {
        fifo: true,
        queue_count: 1,
        max_messages,
        ..request(filter, now_ms)
    }
}

fn bodies(received: &Received) -> Vec<String> {
    received
        .deliveries
        .iter()
        .map(|delivery| {
            String::from_utf8(delivery.record.message.clone().expect("message").body)
                .expect("utf-8")
        })
        .collect()
}

#[test]
fn ordered_consumption_holds_a_message_group_while_an_earlier_message_is_in_flight() {
    let (_, engine) = engine_with(vec![
        grouped("g1", "g1-a"),
        grouped("g2", "g2-a"),
        grouped("g1", "g1-b"),
        grouped("g2", "g2-b"),
    ]);
    let all = Filter::All;
    // One message per receive: g1-a, then g2-a (g1-b waits behind g1-a).
    let first = engine.receive(&in_order(&all, NOW, 1)).expect("receive");
    assert_eq!(bodies(&first), ["g1-a"]);
    let second = engine.receive(&in_order(&all, NOW, 1)).expect("receive");
    assert_eq!(bodies(&second), ["g2-a"]);
    let blocked = engine.receive(&in_order(&all, NOW, 32)).expect("receive");
    assert!(
        bodies(&blocked).is_empty(),
        "both groups have one in flight"
    );
    assert_eq!(blocked.next_deadline_ms, Some(NOW + 10_000));

    // g1-a acknowledged: g1-b comes; g2 still waits.
    engine
        .ack("group", "orders", &first.deliveries[0].handle)
        .expect("ack");
    let third = engine.receive(&in_order(&all, NOW, 32)).expect("receive");
    assert_eq!(bodies(&third), ["g1-b"]);
    assert_eq!(third.deliveries[0].attempt, 1);
    engine
        .ack("group", "orders", &third.deliveries[0].handle)
        .expect("ack");

    // g2-a's invisibility ends: it comes again, before g2-b.
    let again = engine
        .receive(&in_order(&all, NOW + 10_000, 1))
        .expect("receive");
    assert_eq!(bodies(&again), ["g2-a"]);
    assert_eq!(again.deliveries[0].attempt, 2);
    engine
        .ack("group", "orders", &again.deliveries[0].handle)
        .expect("ack");
    let last = engine
        .receive(&in_order(&all, NOW + 10_001, 32))
        .expect("receive");
    assert_eq!(bodies(&last), ["g2-b"]);
}

#[test]
fn ordered_consumption_hands_out_consecutive_messages_of_a_group_in_one_receive() {
    let (_, engine) = engine_with(vec![
        grouped("g1", "1"),
        grouped("g1", "2"),
        grouped("g1", "3"),
    ]);
    let all = Filter::All;
    let batch = engine.receive(&in_order(&all, NOW, 32)).expect("receive");
    assert_eq!(bodies(&batch), ["1", "2", "3"]);
    // The first is acknowledged, the others not: they come back in order.
    engine
        .ack("group", "orders", &batch.deliveries[0].handle)
        .expect("ack");
    let again = engine
        .receive(&in_order(&all, NOW + 10_000, 32))
        .expect("receive");
    assert_eq!(bodies(&again), ["2", "3"]);
    assert!(
        again
            .deliveries
            .iter()
            .all(|delivery| delivery.attempt == 2)
    );
}

#[test]
fn a_waiting_message_survives_a_reload_and_is_delivered_as_attempt_one() {
    let (store, engine) = engine_with(vec![grouped("g1", "first"), grouped("g1", "second")]);
    let all = Filter::All;
    let first = engine.receive(&in_order(&all, NOW, 1)).expect("receive");
    // The second is read and tracked as waiting behind the first.
    assert!(
        engine
            .receive(&in_order(&all, NOW, 32))
            .expect("receive")
            .deliveries
            .is_empty()
    );
    engine
        .ack("group", "orders", &first.deliveries[0].handle)
        .expect("ack");
    drop(engine);
    let reloaded = ConsumerEngine::load(store, "here".into()).expect("load");
    let second = reloaded.receive(&in_order(&all, NOW, 32)).expect("receive");
    assert_eq!(bodies(&second), ["second"]);
    assert_eq!(second.deliveries[0].attempt, 1);
}

#[test]
fn ordered_consumption_moves_a_message_past_its_attempts_then_frees_its_group() {
    let (_, engine) = engine_with(vec![grouped("g1", "poison"), grouped("g1", "next")]);
    let all = Filter::All;
    let once = |now| ReceiveRequest {
        max_attempts: 1,
        ..in_order(&all, now, 1)
    };
    engine.receive(&once(NOW)).expect("receive");
    let moved = engine.receive(&once(NOW + 10_000)).expect("receive");
    assert!(moved.deliveries.is_empty(), "the group waits for the move");
    assert_eq!(moved.dead_letters.len(), 1);
    engine
        .ack("group", "orders", &moved.dead_letters[0].handle)
        .expect("finish the original");
    let next = engine.receive(&once(NOW + 10_001)).expect("receive");
    assert_eq!(bodies(&next), ["next"]);
}

#[test]
fn a_redelivery_the_filter_no_longer_takes_is_finished_not_delivered() {
    let (_, engine) = engine_with(vec![record(0, "a", None)]);
    let first = engine
        .receive(&request(&Filter::All, NOW))
        .expect("receive");
    assert_eq!(first.deliveries.len(), 1);
    let only_b = Filter::parse_tags("b").expect("valid");
    let again = engine
        .receive(&request(&only_b, NOW + 10_000))
        .expect("receive");
    assert!(
        again.deliveries.is_empty(),
        "tag a is not for a `b` receive"
    );
    let later = engine
        .receive(&request(&Filter::All, NOW + 100_000))
        .expect("receive");
    assert!(later.deliveries.is_empty(), "finished for the group");
}

#[test]
fn the_sweep_moves_a_message_past_its_attempts_without_a_receive() {
    let (_, engine) = engine_with(vec![record(0, "a", None), record(0, "a", None)]);
    let once = |now| ReceiveRequest {
        max_attempts: 1,
        ..request(&Filter::All, now)
    };
    let delivered = engine.receive(&once(NOW)).expect("receive");
    assert_eq!(delivered.deliveries.len(), 2);
    engine
        .ack("group", "orders", &delivered.deliveries[1].handle)
        .expect("ack");
    assert!(
        engine
            .sweep_dead_letters(NOW + 9_999, |_| 1)
            .expect("sweep")
            .is_empty(),
        "still invisible"
    );
    let swept = engine
        .sweep_dead_letters(NOW + 10_000, |_| 1)
        .expect("sweep");
    assert_eq!(swept.len(), 1);
    let (group, topic, letters) = &swept[0];
    assert_eq!((group.as_str(), topic.as_str()), ("group", "orders"));
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].handle.offset, delivered.deliveries[0].offset);
    // Being moved: neither swept nor delivered again meanwhile.
    assert!(
        engine
            .sweep_dead_letters(NOW + 10_001, |_| 1)
            .expect("sweep")
            .is_empty()
    );
    assert!(
        engine
            .receive(&once(NOW + 10_001))
            .expect("receive")
            .deliveries
            .is_empty()
    );
}

#[test]
fn idle_broadcast_instances_are_forgotten_in_memory_and_storage() {
    let (store, engine) = engine_with(vec![record(0, "a", None)]);
    for group in ["fan@client-1", "fan@client-2", "plain"] {
        let request = ReceiveRequest {
            group,
            ..request(&Filter::All, NOW)
        };
        engine.receive(&request).expect("receive");
    }
    let idle = BROADCAST_INSTANCE_IDLE_MS;
    assert!(
        engine
            .forget_idle_instances(NOW + idle - 1, idle)
            .expect("sweep")
            .is_empty()
    );
    let active = ReceiveRequest {
        group: "fan@client-2",
        ..request(&Filter::All, NOW + idle / 2)
    };
    engine.receive(&active).expect("receive");
    assert_eq!(
        engine
            .forget_idle_instances(NOW + idle, idle)
            .expect("sweep"),
        ["fan@client-1"]
    );
    let mut names = engine.group_names();
    names.sort();
    assert_eq!(names, ["fan@client-2", "plain"]);
    let stored: BTreeSet<String> = store
        .load_groups()
        .expect("load")
        .into_iter()
        .map(|state| state.key.group)
        .collect();
    assert_eq!(
        stored,
        BTreeSet::from(["fan@client-2".to_owned(), "plain".to_owned()])
    );
}
