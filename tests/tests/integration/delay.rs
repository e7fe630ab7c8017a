//! Delay messages through the official Rust client: hidden until their
//! delivery time, then delivered within a second of it, in any region and
//! across a node restart; a timer message belongs to its queue from its due
//! time, so a `latest` group created after the send still receives it.

use crate::support::{
    CLIENT_CALL_TIMEOUT, LONG_POLLING, TAG, ack, start_consumer, start_producer, within,
};
use meridian_tests::{Role, TEST_TOPIC, TestCluster};
use meridian_topology::{ConsumeFrom, FlushMode};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::{MessageBuilder, MessageView};
use rocketmq::{Producer, SimpleConsumer};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Slack on "within a second of the delivery time": the client's own
/// round trip and the test machine's scheduling.
const SLACK_MS: i64 = 500;

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Sends a delay message due `seconds` whole seconds from now (the Rust
/// client takes epoch seconds); returns its id and due time in ms.
async fn send_delayed(producer: &Producer, seconds: i64) -> anyhow::Result<(String, i64)> {
    let due_s = wall_ms() / 1000 + seconds;
    let message = MessageBuilder::delay_message_builder(TEST_TOPIC, b"later".to_vec(), due_s)
        .set_tag(TAG)
        .build()
        .map_err(|error| anyhow::anyhow!("build a delay message: {error:?}"))?;
    let receipt = within(CLIENT_CALL_TIMEOUT, "send", producer.send(message))
        .await?
        .map_err(|error| anyhow::anyhow!("send a delay message: {error:?}"))?;
    Ok((receipt.message_id().to_owned(), due_s * 1000))
}

/// Receives until `id` arrives (at most 60 s); returns it and when it came.
async fn receive_delayed(
    consumer: &SimpleConsumer,
    id: &str,
) -> anyhow::Result<(MessageView, i64)> {
    let filter = FilterExpression::new(FilterType::Tag, "*");
    within(Duration::from_secs(60), "the delay message", async {
        loop {
            let messages = within(
                LONG_POLLING + CLIENT_CALL_TIMEOUT,
                "receive",
                consumer.receive(TEST_TOPIC, &filter),
            )
            .await?
            .map_err(|error| anyhow::anyhow!("receive: {error:?}"))?;
            let arrived = wall_ms();
            for message in messages {
                ack(consumer, &message).await?;
                if message.message_id() == id {
                    return Ok((message, arrived));
                }
            }
        }
    })
    .await?
}

fn check_on_time(message: &MessageView, due_ms: i64, arrived_ms: i64) -> anyhow::Result<()> {
    anyhow::ensure!(
        arrived_ms >= due_ms,
        "delivered {} ms before its delivery time",
        due_ms - arrived_ms
    );
    anyhow::ensure!(
        arrived_ms <= due_ms + 1_000 + SLACK_MS,
        "delivered {} ms after its delivery time",
        arrived_ms - due_ms
    );
    anyhow::ensure!(
        message.delivery_timestamp() == Some(due_ms / 1000),
        "delivery timestamp {:?}",
        message.delivery_timestamp()
    );
    anyhow::ensure!(message.delivery_attempt() == 1, "attempt");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delay_message_reaches_a_latest_group_created_after_the_send_on_time_in_another_region()
-> anyhow::Result<()> {
    let cluster = TestCluster::builder()
        .regions(2)
        .consume_from(ConsumeFrom::Latest)
        .build()
        .await?;
    let producer = start_producer(&cluster.router_endpoint("a")).await?;
    let (id, due_ms) = send_delayed(&producer, 5).await?;
    // A new group, created (at the end of every queue) after the send:
    // the message joins its queue only when due, so it is for the group.
    let consumer = start_consumer(&cluster.router_endpoint("b"), "late-joiner").await?;
    let (message, arrived_ms) = receive_delayed(&consumer, &id).await?;
    check_on_time(&message, due_ms, arrived_ms)?;
    cluster.finish();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delay_message_waiting_through_a_node_crash_is_delivered_when_due() -> anyhow::Result<()>
{
    let mut cluster = TestCluster::builder()
        .regions(1)
        .flush(FlushMode::Sync)
        .build()
        .await?;
    let producer = start_producer(&cluster.router_endpoint("a")).await?;
    let (id, due_ms) = send_delayed(&producer, 4).await?;
    cluster.kill9("a", Role::Node)?;
    cluster.start("a", Role::Node).await?;
    let consumer = start_consumer(&cluster.router_endpoint("a"), "after-crash").await?;
    let (message, arrived_ms) = receive_delayed(&consumer, &id).await?;
    check_on_time(&message, due_ms, arrived_ms)?;
    cluster.finish();
    Ok(())
}
