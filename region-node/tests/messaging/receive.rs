//! ReceiveMessage: stream shape, delivered properties, batches, tag filters,
//! long polling and the checks of its arguments.

use crate::support::{Receive, TestNode, delivered_properties, id_and_handle, message, properties};
use md5::{Digest as _, Md5};
use meridian_proto::rocketmq::v2::{Code, DigestType, Encoding, Message, MessageType};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread")]
async fn a_delivered_message_carries_every_property_clients_read() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let mut client = node.client("receive-properties").await;

    let mut sent = message("with-properties", "the body of the message");
    properties(&mut sent).queue_id = 2;
    properties(&mut sent).tag = Some("blue".to_owned());
    let born_timestamp = properties(&mut sent).born_timestamp;
    let offset = client.send_ok(sent).await;

    let messages = client
        .receive(&Receive::new("properties"))
        .await
        .expect_messages("the sent message");
    assert_eq!(messages.len(), 1, "{messages:?}");
    let delivered = &messages[0];
    assert_eq!(
        delivered.topic,
        crate::support::resource(crate::support::TOPIC)
    );
    assert_eq!(delivered.body, b"the body of the message");
    assert_eq!(
        delivered.user_properties,
        HashMap::from([("origin".to_owned(), "conformance".to_owned())])
    );
    let properties = delivered_properties(delivered);
    assert_eq!(properties.message_id, "with-properties");
    assert!(
        properties
            .receipt_handle
            .as_ref()
            .is_some_and(|handle| !handle.is_empty())
    );
    let digest = properties
        .body_digest
        .as_ref()
        .expect("a body digest (Node needs it)");
    assert_eq!(digest.r#type, DigestType::Md5 as i32);
    let expected = hex::encode_upper(Md5::digest(b"the body of the message"));
    assert_eq!(
        digest.checksum, expected,
        "MD5 of the body in upper-case hex"
    );
    assert_eq!(properties.body_encoding, Encoding::Identity as i32);
    assert_eq!(properties.message_type, MessageType::Normal as i32);
    assert_eq!(properties.born_timestamp, born_timestamp);
    assert_eq!(properties.born_host, "test-host");
    assert_eq!(properties.delivery_attempt, Some(1));
    assert_eq!(properties.tag.as_deref(), Some("blue"));
    assert_eq!(properties.keys, ["key-1", "key-2"]);
    assert_eq!(properties.queue_id, 2);
    assert_eq!(properties.queue_offset, Some(offset));
    assert!(properties.store_timestamp.is_some());
    assert!(!properties.store_host.is_empty());

    drop(client);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_size_is_honoured_across_several_frames() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let mut client = node.client("receive-batches").await;
    let mut sent = BTreeSet::new();
    for index in 0..5 {
        let id = format!("batched-{index}");
        let mut one = message(&id, format!("body {index}"));
        properties(&mut one).queue_id = index % 3;
        client.send_ok(one).await;
        sent.insert(id);
    }

    let mut receive = Receive::new("batches");
    receive.batch = 2;
    let mut received = BTreeSet::new();
    for expected in [2, 2, 1] {
        let messages = client.receive(&receive).await.expect_messages("a batch");
        assert_eq!(messages.len(), expected, "batch of at most 2: {messages:?}");
        for delivered in &messages {
            let (id, _) = id_and_handle(delivered);
            assert!(received.insert(id.clone()), "{id} delivered twice");
        }
    }
    assert_eq!(received, sent);
    receive.poll = Duration::ZERO;
    client
        .receive(&receive)
        .await
        .expect_not_found("all 5 are in flight");

    drop(client);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_filters_star_and_alternatives() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let mut client = node.client("receive-filters").await;
    for tag in ["a", "b", "c"] {
        let mut tagged = message(&format!("tagged-{tag}"), tag);
        properties(&mut tagged).tag = Some(tag.to_owned());
        client.send_ok(tagged).await;
    }
    let tags = |messages: Vec<Message>| -> BTreeSet<String> {
        messages
            .iter()
            .map(|delivered| delivered_properties(delivered).tag.clone().expect("tagged"))
            .collect()
    };

    let everything = client.receive(&Receive::new("all-tags")).await;
    assert_eq!(
        tags(everything.expect_messages("`*`")),
        BTreeSet::from(["a".into(), "b".into(), "c".into()])
    );

    let mut some = Receive::new("some-tags");
    some.filter = "a||b".to_owned();
    let chosen = client.receive(&some).await;
    assert_eq!(
        tags(chosen.expect_messages("`a||b`")),
        BTreeSet::from(["a".into(), "b".into()])
    );
    some.poll = Duration::ZERO;
    client
        .receive(&some)
        .await
        .expect_not_found("`c` never passes `a||b`");

    drop(client);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_topic_is_long_polled_then_answered_message_not_found() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let mut client = node.client("receive-long-poll").await;

    let mut receive = Receive::new("long-poll");
    receive.poll = Duration::from_secs(2);
    let started = Instant::now();
    client
        .receive(&receive)
        .await
        .expect_not_found("nothing was sent");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1_500) && waited <= Duration::from_secs(5),
        "asked for a 2 s long poll, the answer came after {waited:?}"
    );

    // A deadline shorter than the requested poll shortens it (keeping ~1 s back).
    receive.poll = Duration::from_secs(10);
    receive.deadline = Some(Duration::from_secs(3));
    let started = Instant::now();
    client
        .receive(&receive)
        .await
        .expect_not_found("nothing was sent");
    let waited = started.elapsed();
    assert!(
        waited <= Duration::from_secs(3),
        "a 3 s deadline was not respected: {waited:?}"
    );

    drop(client);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_sent_during_a_long_poll_wakes_it() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let mut consumer = node.client("woken-consumer").await;
    let mut producer = node.client("waking-producer").await;

    let mut receive = Receive::new("woken");
    receive.poll = Duration::from_secs(15);
    let started = Instant::now();
    let polling = tokio::spawn(async move { consumer.receive(&receive).await });
    // The poll must be waiting: the wake-up by a send is what is tested (a
    // receive that starts after the send would pass anyway).
    node.until_receives_wait(1).await;
    producer.send_ok(message("wake-up", "now")).await;
    let messages = polling
        .await
        .expect("the receive task")
        .expect_messages("the message sent during the poll");
    let waited = started.elapsed();
    assert_eq!(messages.len(), 1);
    assert!(
        waited < Duration::from_secs(5),
        "the send did not wake the 15 s poll: it answered after {waited:?}"
    );

    drop(producer);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn receive_refuses_short_deadlines_and_invisible_durations_out_of_range() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let mut client = node.client("receive-arguments").await;
    client.send_ok(message("waiting", "x")).await;

    let mut short = Receive::new("arguments");
    short.deadline = Some(Duration::from_millis(800));
    assert_eq!(client.receive(&short).await.code, Code::IllegalPollingTime);

    for invisible in [
        Duration::from_millis(500),
        Duration::from_secs(12 * 3600 + 1),
    ] {
        let mut out_of_range = Receive::new("arguments");
        out_of_range.invisible = Some(invisible);
        let received = client.receive(&out_of_range).await;
        assert_eq!(received.code, Code::IllegalInvisibleTime, "{invisible:?}");
    }

    // The refusals took nothing: the message is still there, on first delivery.
    let messages = client
        .receive(&Receive::new("arguments"))
        .await
        .expect_messages("the waiting message");
    assert_eq!(delivered_properties(&messages[0]).delivery_attempt, Some(1));

    drop(client);
    node.stop().await;
}
