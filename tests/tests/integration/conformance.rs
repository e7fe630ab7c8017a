//! What the official RocketMQ Rust client 5.0.0 needs of a deployment, seen
//! through a router (shared/protocols/rocketmq-grpc.md, §5): start-up against
//! an unknown topic, a body near the 4 MiB frame limit, redelivery, an empty
//! long poll, and shutdown.

use crate::support::{
    CLIENT_CALL_TIMEOUT, LONG_POLLING, TAG, ack, send, start_consumer, start_producer, within,
};
use meridian_tests::{TEST_TOPIC, TestCluster};
use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageView;
use rocketmq::{Producer, SimpleConsumer};
use std::time::Duration;
use tokio::time::Instant;

/// A body near the largest the node accepts: its delivery must still fit the
/// 4 MiB the client (tonic 0.9) accepts per frame.
const LARGE_BODY_BYTES: usize = 4 * 1024 * 1024 - 4 * 1024;

/// Receives with a short invisible duration until `wanted` arrives.
async fn receive_until(
    consumer: &SimpleConsumer,
    wanted: &str,
    invisible: Duration,
) -> MessageView {
    let filter = FilterExpression::new(FilterType::Tag, TAG);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "{wanted} did not arrive within 60 s"
        );
        let messages = within(
            LONG_POLLING + CLIENT_CALL_TIMEOUT,
            "receive",
            consumer.receive_with(TEST_TOPIC, &filter, 32, invisible),
        )
        .await
        .expect("the receive answers in time")
        .expect("receive via the router's route");
        if let Some(message) = messages
            .into_iter()
            .find(|message| message.message_id() == wanted)
        {
            return message;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn producer_start_with_an_unknown_topic_fails_without_panicking() {
    let cluster = TestCluster::builder()
        .regions(1)
        .build()
        .await
        .expect("start a one-region cluster");
    let mut producer_option = ProducerOption::default();
    producer_option.set_topics(vec!["no-such-topic"]);
    let mut client_option = ClientOption::default();
    client_option.set_access_url(cluster.router_endpoint("a"));
    client_option.set_enable_tls(false);
    let started = tokio::spawn(async move {
        let mut producer = Producer::new(producer_option, client_option)
            .map_err(|error| format!("create: {error:?}"))?;
        producer
            .start()
            .await
            .map_err(|error| format!("start: {error:?}"))
    });
    let outcome = within(CLIENT_CALL_TIMEOUT, "Producer::start", started)
        .await
        .expect("start() answers in time")
        .expect("the start task did not panic");
    let error = outcome.expect_err("start() with an unknown topic must fail");
    assert!(error.starts_with("start:"), "{error}");
    cluster.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_near_4_mib_round_trips() {
    let cluster = TestCluster::builder()
        .regions(1)
        .build()
        .await
        .expect("start a one-region cluster");
    let router = cluster.router_endpoint("a");
    let producer = start_producer(&router).await.expect("start a producer");
    let consumer = start_consumer(&router, "large-bodies")
        .await
        .expect("start a consumer");

    let body: Vec<u8> = (0..LARGE_BODY_BYTES)
        .map(|index| u8::try_from(index % 251).expect("below 256"))
        .collect();
    let id = send(&producer, body.clone())
        .await
        .expect("send a 3.9 MiB body");
    let received = receive_until(&consumer, &id, Duration::from_secs(15)).await;
    assert_eq!(received.body().len(), body.len());
    assert!(
        received.body() == body.as_slice(),
        "the body changed on the way"
    );
    assert_eq!(received.delivery_attempt(), 1);
    ack(&consumer, &received)
        .await
        .expect("ack the large message");

    within(CLIENT_CALL_TIMEOUT, "shutdown", consumer.shutdown())
        .await
        .expect("shutdown answers in time")
        .expect("consumer shutdown returns Ok");
    within(CLIENT_CALL_TIMEOUT, "shutdown", producer.shutdown())
        .await
        .expect("shutdown answers in time")
        .expect("producer shutdown returns Ok");
    cluster.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unacked_message_comes_back_with_delivery_attempt_2() {
    let cluster = TestCluster::builder()
        .regions(1)
        .build()
        .await
        .expect("start a one-region cluster");
    let router = cluster.router_endpoint("a");
    let producer = start_producer(&router).await.expect("start a producer");
    let consumer = start_consumer(&router, "redelivered")
        .await
        .expect("start a consumer");
    let id = send(&producer, b"comes back".to_vec()).await.expect("send");

    let invisible = Duration::from_secs(2);
    let first = receive_until(&consumer, &id, invisible).await;
    assert_eq!(first.delivery_attempt(), 1);
    let second = receive_until(&consumer, &id, invisible).await;
    assert_eq!(
        second.delivery_attempt(),
        2,
        "the redelivery counts its attempt"
    );
    assert_eq!(second.body(), b"comes back");
    ack(&consumer, &second)
        .await
        .expect("ack with the newest handle");
    cluster.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_receive_on_an_empty_topic_returns_an_empty_list() {
    let cluster = TestCluster::builder()
        .regions(1)
        .build()
        .await
        .expect("start a one-region cluster");
    // The client's defaults: a 40 s long poll and a 40 s deadline; the node
    // polls 20 s and answers MESSAGE_NOT_FOUND before the deadline.
    let mut client_option = ClientOption::default();
    client_option.set_access_url(cluster.router_endpoint("a"));
    client_option.set_enable_tls(false);
    let mut option = SimpleConsumerOption::default();
    option.set_topics(vec![TEST_TOPIC]);
    option.set_consumer_group("empty-topic");
    let mut consumer = SimpleConsumer::new(option, client_option).expect("create a consumer");
    within(CLIENT_CALL_TIMEOUT, "start", consumer.start())
        .await
        .expect("start() answers in time")
        .expect("start a consumer");

    let filter = FilterExpression::new(FilterType::Tag, "*");
    let started = Instant::now();
    let messages = within(
        Duration::from_secs(60),
        "the default receive",
        consumer.receive(TEST_TOPIC, &filter),
    )
    .await
    .expect("the receive answers in time")
    .expect("an empty topic is not an error");
    let waited = started.elapsed();
    assert!(messages.is_empty(), "nothing was sent: {}", messages.len());
    assert!(
        waited < Duration::from_secs(40),
        "answered after {waited:?}, not before the client's 40 s deadline"
    );
    eprintln!("the default receive on an empty topic answered after {waited:?}");
    within(CLIENT_CALL_TIMEOUT, "shutdown", consumer.shutdown())
        .await
        .expect("shutdown answers in time")
        .expect("consumer shutdown returns Ok");
    cluster.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_of_producer_and_consumer_returns_ok() {
    let cluster = TestCluster::builder()
        .regions(1)
        .build()
        .await
        .expect("start a one-region cluster");
    let router = cluster.router_endpoint("a");
    let producer = start_producer(&router).await.expect("start a producer");
    let consumer = start_consumer(&router, "shutting-down")
        .await
        .expect("start a consumer");
    send(&producer, b"before shutdown".to_vec())
        .await
        .expect("send");

    within(CLIENT_CALL_TIMEOUT, "shutdown", producer.shutdown())
        .await
        .expect("shutdown answers in time")
        .expect("NotifyClientTermination answers OK to the producer");
    within(CLIENT_CALL_TIMEOUT, "shutdown", consumer.shutdown())
        .await
        .expect("shutdown answers in time")
        .expect("NotifyClientTermination answers OK to the consumer");
    cluster.finish();
}
