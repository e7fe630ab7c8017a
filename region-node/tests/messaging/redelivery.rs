//! Invisibility and redelivery, ack, ChangeInvisibleDuration, delay messages,
//! and consumer-group state across a restart.

use crate::support::{
    Receive, TestNode, code, delivered_properties, id_and_handle, message, now_ms, properties,
    timestamp_ms, to_ms,
};
use meridian_proto::rocketmq::v2::{Code, MessageType};
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn an_unacked_message_comes_back_with_the_next_attempt_and_a_new_handle() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let mut client = node.client("redelivery").await;
    client.send_ok(message("unacked", "x")).await;

    let mut short = Receive::new("redelivery");
    short.invisible = Some(Duration::from_secs(1));
    let received_at_ms = now_ms();
    let first = client
        .receive(&short)
        .await
        .expect_messages("first delivery");
    let (id, old_handle) = id_and_handle(&first[0]);
    assert_eq!(delivered_properties(&first[0]).delivery_attempt, Some(1));

    // The long poll wakes when the invisibility ends; no sleeping needed.
    short.poll = Duration::from_secs(5);
    let second = client.receive(&short).await.expect_messages("redelivery");
    let redelivered_at_ms = now_ms();
    assert_eq!(second.len(), 1);
    let (second_id, new_handle) = id_and_handle(&second[0]);
    assert_eq!(second_id, id);
    assert_eq!(delivered_properties(&second[0]).delivery_attempt, Some(2));
    assert_ne!(
        new_handle, old_handle,
        "a redelivery has a new receipt handle"
    );
    assert!(
        redelivered_at_ms - received_at_ms >= 1_000,
        "redelivered {} ms after the first delivery, before its 1 s invisibility ended",
        redelivered_at_ms - received_at_ms
    );

    let stale = client.ack("redelivery", &[(&id, &old_handle)]).await;
    assert_eq!(code(stale.status.as_ref()), Code::InvalidReceiptHandle);
    assert_eq!(
        code(stale.entries[0].status.as_ref()),
        Code::InvalidReceiptHandle
    );
    assert_eq!(client.ack_one("redelivery", &second[0]).await, Code::Ok);

    short.poll = Duration::from_millis(2_500);
    client
        .receive(&short)
        .await
        .expect_not_found("the acked message stays acked");

    drop(client);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn change_invisible_duration_replaces_the_handle() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let mut client = node.client("change-invisible").await;
    let group = "change-invisible";
    client.send_ok(message("changed", "x")).await;

    let first = client
        .receive(&Receive::new(group))
        .await
        .expect_messages("delivery");
    let (id, first_handle) = id_and_handle(&first[0]);
    let changed = client
        .change_invisible(group, &id, &first_handle, Duration::from_secs(1))
        .await;
    assert_eq!(code(changed.status.as_ref()), Code::Ok, "{changed:?}");
    let second_handle = changed.receipt_handle;
    assert_ne!(second_handle, first_handle);

    let stale = client.ack(group, &[(&id, &first_handle)]).await;
    assert_eq!(code(stale.status.as_ref()), Code::InvalidReceiptHandle);
    // A refused change still answers a handle: the one it was given.
    let refused = client
        .change_invisible(group, &id, &first_handle, Duration::from_secs(5))
        .await;
    assert_eq!(code(refused.status.as_ref()), Code::InvalidReceiptHandle);
    assert_eq!(refused.receipt_handle, first_handle);
    let garbage = client
        .change_invisible(group, &id, "not-a-handle", Duration::from_secs(5))
        .await;
    assert_eq!(code(garbage.status.as_ref()), Code::InvalidReceiptHandle);
    assert_eq!(garbage.receipt_handle, "not-a-handle");
    let out_of_range = client
        .change_invisible(group, &id, &second_handle, Duration::from_secs(13 * 3600))
        .await;
    assert_eq!(
        code(out_of_range.status.as_ref()),
        Code::IllegalInvisibleTime
    );
    assert_eq!(out_of_range.receipt_handle, second_handle);

    // The 30 s invisibility was shortened to 1 s: the message comes back.
    let mut receive = Receive::new(group);
    receive.poll = Duration::from_secs(5);
    let again = client.receive(&receive).await.expect_messages("after 1 s");
    assert_eq!(delivered_properties(&again[0]).delivery_attempt, Some(2));
    let (_, third_handle) = id_and_handle(&again[0]);
    let changed = client
        .change_invisible(group, &id, &third_handle, Duration::from_secs(30))
        .await;
    assert_eq!(code(changed.status.as_ref()), Code::Ok, "{changed:?}");
    let acked = client.ack(group, &[(&id, &changed.receipt_handle)]).await;
    assert_eq!(
        code(acked.status.as_ref()),
        Code::Ok,
        "the newest handle acks"
    );

    drop(client);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ack_answers_each_entry_and_refuses_garbage_handles() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let mut client = node.client("acks").await;
    let group = "acks";
    client.send_ok(message("acked", "x")).await;
    let delivered = client
        .receive(&Receive::new(group))
        .await
        .expect_messages("delivery");
    let (id, handle) = id_and_handle(&delivered[0]);

    let garbage = [
        ("garbage", "garbage"),
        ("empty", ""),
        ("never-delivered", "v1.a.0.99.1.1"),
        ("other-region", "v1.elsewhere.0.0.1.1"),
        ("unknown-queue", "v1.a.4096.0.1.1"),
        ("overflow", "v1.a.0.99999999999999999999999.1.1"),
    ];
    let mut entries = vec![(id.as_str(), handle.as_str())];
    entries.extend(garbage);
    let response = client.ack(group, &entries).await;
    assert_eq!(code(response.status.as_ref()), Code::MultipleResults);
    let codes: Vec<Code> = response
        .entries
        .iter()
        .map(|entry| code(entry.status.as_ref()))
        .collect();
    assert_eq!(codes[0], Code::Ok, "{response:?}");
    for (entry_code, (what, _)) in codes[1..].iter().zip(garbage) {
        assert_eq!(*entry_code, Code::InvalidReceiptHandle, "{what}");
    }
    let only_garbage = client.ack(group, &garbage).await;
    assert_eq!(
        code(only_garbage.status.as_ref()),
        Code::InvalidReceiptHandle
    );

    drop(client);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delay_message_is_hidden_until_its_delivery_time() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let mut client = node.client("delay").await;
    // Whole seconds, as the Rust and Python clients send it: 2 to 3 s ahead.
    let delivery_ms = (now_ms() / 1000 + 3) * 1000;
    let mut delayed = message("delayed", "later");
    properties(&mut delayed).message_type = MessageType::Delay as i32;
    properties(&mut delayed).delivery_timestamp = Some(timestamp_ms(delivery_ms));
    client.send_ok(delayed).await;

    client
        .receive(&Receive::new("delay"))
        .await
        .expect_not_found("the delivery time has not come");
    let mut receive = Receive::new("delay");
    receive.poll = Duration::from_secs(5);
    let messages = client.receive(&receive).await.expect_messages("on time");
    let received_ms = now_ms();
    assert!(
        received_ms >= delivery_ms,
        "delivered {} ms before its delivery time",
        delivery_ms - received_ms
    );
    let properties = delivered_properties(&messages[0]);
    assert_eq!(properties.message_type, MessageType::Delay as i32);
    assert_eq!(
        properties.delivery_timestamp.as_ref().map(to_ms),
        Some(delivery_ms)
    );
    assert_eq!(properties.delivery_attempt, Some(1));

    drop(client);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_time_more_than_40_days_ahead_is_refused() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let mut client = node.client("far-delay").await;
    let day_ms = 24 * 60 * 60 * 1000;
    // 41 days ahead, and "now" in milliseconds put into the seconds field.
    for (what, delivery) in [
        ("41 days", timestamp_ms(now_ms() + 41 * day_ms)),
        ("ms as s", timestamp_ms(now_ms() * 1000)),
    ] {
        let mut far = message(what, "x");
        properties(&mut far).message_type = MessageType::Delay as i32;
        properties(&mut far).delivery_timestamp = Some(delivery);
        let response = client.send(vec![far]).await;
        assert_eq!(
            code(response.status.as_ref()),
            Code::IllegalDeliveryTime,
            "{what}"
        );
        assert_eq!(response.entries.len(), 1);
    }
    let mut near = message("39 days", "x");
    properties(&mut near).message_type = MessageType::Delay as i32;
    properties(&mut near).delivery_timestamp = Some(timestamp_ms(now_ms() + 39 * day_ms));
    client.send_ok(near).await;

    drop(client);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn group_state_survives_a_restart() {
    let directory = tempfile::tempdir().expect("temp dir");
    let group = "restarted";
    let node = TestNode::start(directory.path()).await;
    let mut client = node.client("before-restart").await;
    for index in 0..4 {
        client
            .send_ok(message(&format!("restart-{index}"), "x"))
            .await;
    }
    let mut receive = Receive::new(group);
    receive.invisible = Some(Duration::from_secs(2));
    let received_at_ms = now_ms();
    let delivered = client.receive(&receive).await.expect_messages("all four");
    assert_eq!(delivered.len(), 4);
    let mut unacked = BTreeSet::new();
    for message in &delivered {
        let (id, _) = id_and_handle(message);
        if id == "restart-0" || id == "restart-1" {
            assert_eq!(client.ack_one(group, message).await, Code::Ok);
        } else {
            unacked.insert(id);
        }
    }
    drop(client);
    node.stop().await;

    let node = TestNode::start(directory.path()).await;
    let mut client = node.client("after-restart").await;
    receive.invisible = Some(Duration::from_secs(30));
    receive.poll = Duration::from_secs(5);
    let mut redelivered = BTreeSet::new();
    while redelivered.len() < unacked.len() {
        let messages = client
            .receive(&receive)
            .await
            .expect_messages("redeliveries");
        assert!(
            now_ms() - received_at_ms >= 2_000,
            "redelivered before the 2 s invisibility ended"
        );
        for message in &messages {
            let (id, _) = id_and_handle(message);
            assert!(unacked.contains(&id), "{id} was acked before the restart");
            assert_eq!(delivered_properties(message).delivery_attempt, Some(2));
            assert!(redelivered.insert(id.clone()), "{id} redelivered twice");
            assert_eq!(client.ack_one(group, message).await, Code::Ok);
        }
    }
    receive.poll = Duration::from_secs(1);
    client
        .receive(&receive)
        .await
        .expect_not_found("everything is acked");

    drop(client);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shortened_invisibility_wakes_a_waiting_long_poll() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let group = "nacked";
    let mut nacking = node.client("nacking-consumer").await;
    let mut waiting = node.client("waiting-consumer").await;
    nacking.send_ok(message("nacked", "x")).await;
    let delivered = nacking
        .receive(&Receive::new(group))
        .await
        .expect_messages("delivery");
    let (id, handle) = id_and_handle(&delivered[0]);

    // A push consumer's nack: ChangeInvisibleDuration with the first back-off
    // step (1 s) while another receive of the group already waits.
    let mut receive = Receive::new(group);
    receive.poll = Duration::from_secs(15);
    let started = tokio::time::Instant::now();
    let polling = tokio::spawn(async move { waiting.receive(&receive).await });
    // The poll must be waiting: waking it is what is tested.
    node.until_receives_wait(1).await;
    let changed = nacking
        .change_invisible(group, &id, &handle, Duration::from_secs(1))
        .await;
    assert_eq!(code(changed.status.as_ref()), Code::Ok, "{changed:?}");
    let messages = polling
        .await
        .expect("the receive task")
        .expect_messages("the nacked message, 1 s later");
    let waited = started.elapsed();
    assert_eq!(delivered_properties(&messages[0]).delivery_attempt, Some(2));
    assert!(
        waited < Duration::from_secs(5),
        "the 15 s poll missed the 1 s invisibility: it answered after {waited:?}"
    );

    drop(nacking);
    node.stop().await;
}
