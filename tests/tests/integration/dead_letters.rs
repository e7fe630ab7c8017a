//! Dead letters: a message a group gave up on moves to `%DLQ%<group>`,
//! which can be consumed in any region; ForwardMessageToDeadLetterQueue
//! does the same on a consumer's request.

use crate::support::{
    CLIENT_CALL_TIMEOUT, LONG_POLLING, ack, send, start_consumer, start_consumer_of,
    start_producer, within,
};
use anyhow::Context as _;
use meridian_proto::rocketmq::v2::{
    Code, FilterExpression as RawFilter, FilterType as RawFilterType,
    ForwardMessageToDeadLetterQueueRequest, MessageQueue, ReceiveMessageRequest, Resource,
    receive_message_response,
};
use meridian_tests::{Role, TEST_TOPIC, TestCluster};
use meridian_topology::Group;
use rocketmq::SimpleConsumer;
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageView;
use std::time::Duration;
use tokio::time::Instant;

const GROUP: &str = "two-tries";
const DEAD_LETTERS: &str = "%DLQ%two-tries";

/// Receives from `topic` with invisible time `invisible` until message
/// `wanted` arrives (at most 60 s); returns it.
async fn receive_until(
    consumer: &SimpleConsumer,
    topic: &str,
    wanted: &str,
    invisible: Duration,
) -> anyhow::Result<MessageView> {
    let filter = FilterExpression::new(FilterType::Tag, "*");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{wanted} did not arrive from {topic} within 60 s"
        );
        let messages = match within(
            LONG_POLLING + CLIENT_CALL_TIMEOUT,
            "receive",
            consumer.receive_with(topic, &filter, 32, invisible),
        )
        .await?
        {
            Ok(messages) => messages,
            // A node that just restarted: the client reconnects on the next call.
            Err(error) if Instant::now() + Duration::from_secs(50) < deadline => {
                note_retried_receive(topic, &error);
                continue;
            }
            Err(error) => anyhow::bail!("receive from {topic}: {error:?}"),
        };
        if let Some(message) = messages
            .into_iter()
            .find(|message| message.message_id() == wanted)
        {
            return Ok(message);
        }
    }
}

/// Notes a failed receive that is retried.
fn note_retried_receive(topic: &str, error: &impl std::fmt::Debug) {
    eprintln!("receive from {topic} failed, trying again: {error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_past_its_groups_max_attempts_moves_to_the_dead_letter_topic()
-> anyhow::Result<()> {
    let mut cluster = TestCluster::builder()
        .regions(2)
        .group(
            GROUP,
            Group {
                max_attempts: 2,
                ..Group::default()
            },
        )
        .build()
        .await?;
    let producer = start_producer(&cluster.router_endpoint("a")).await?;
    let id = send(&producer, b"never consumed".to_vec()).await?;

    let consumer = start_consumer(&cluster.router_endpoint("a"), GROUP).await?;
    let short = Duration::from_secs(1);
    for attempt in 1..=2 {
        let message = receive_until(&consumer, TEST_TOPIC, &id, short).await?;
        anyhow::ensure!(
            message.delivery_attempt() == attempt,
            "delivery {attempt} says attempt {}",
            message.delivery_attempt()
        );
        if attempt == 1 {
            // The attempt count survives a crash of the node.
            cluster.kill9("a", Role::Node)?;
            cluster.start("a", Role::Node).await?;
        }
    }
    // The group's next receive after the second invisibility ends moves
    // the message instead of delivering it a third time.
    let filter = FilterExpression::new(FilterType::Tag, "*");
    let third = within(
        LONG_POLLING + CLIENT_CALL_TIMEOUT,
        "third receive",
        consumer.receive_with(TEST_TOPIC, &filter, 32, short),
    );

    // The dead letter is read in the other region, by another group.
    let reader =
        start_consumer_of(&cluster.router_endpoint("b"), "dlq-reader", DEAD_LETTERS).await?;
    let read = async {
        let dead = receive_until(&reader, DEAD_LETTERS, &id, Duration::from_secs(30)).await?;
        ack(&reader, &dead).await?;
        anyhow::Ok(dead)
    };
    let (third, dead) = tokio::join!(third, read);
    let dead = dead?;
    let third = third?.map_err(|error| anyhow::anyhow!("third receive: {error:?}"))?;
    anyhow::ensure!(
        third.iter().all(|message| message.message_id() != id),
        "the message was delivered a third time"
    );
    anyhow::ensure!(dead.body() == b"never consumed", "the body changed");
    anyhow::ensure!(dead.topic() == DEAD_LETTERS, "topic {}", dead.topic());
    let properties = dead.properties();
    anyhow::ensure!(
        properties.get("DLQ_ORIGIN_TOPIC").map(String::as_str) == Some(TEST_TOPIC),
        "properties {properties:?}"
    );
    anyhow::ensure!(
        properties.get("DLQ_ORIGIN_MESSAGE_ID") == Some(&id),
        "properties {properties:?}"
    );
    anyhow::ensure!(
        properties.get("DLQ_DELIVERY_ATTEMPTS").map(String::as_str) == Some("2"),
        "properties {properties:?}"
    );
    cluster.finish();
    Ok(())
}

/// A raw request to `endpoint` from client `client_id`, with a deadline.
fn raw<T>(message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-mq-client-id", "meridian-tests-dlq".parse()?);
    request.set_timeout(Duration::from_secs(10));
    Ok(request)
}

fn resource(name: &str) -> Option<Resource> {
    Some(Resource {
        resource_namespace: String::new(),
        name: name.to_owned(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_to_dead_letter_queue_copies_then_acknowledges() -> anyhow::Result<()> {
    let cluster = TestCluster::builder().regions(1).build().await?;
    let producer = start_producer(&cluster.router_endpoint("a")).await?;
    let id = send(&producer, b"give up on me".to_vec()).await?;

    let node = cluster.node_endpoint("a");
    let mut client = TestCluster::messaging_client(&node).await?;
    let receive = ReceiveMessageRequest {
        group: resource("pusher"),
        message_queue: Some(MessageQueue {
            topic: resource(TEST_TOPIC),
            id: -1,
            ..MessageQueue::default()
        }),
        filter_expression: Some(RawFilter {
            r#type: RawFilterType::Tag as i32,
            expression: "*".to_owned(),
        }),
        batch_size: 32,
        invisible_duration: Some(meridian_proto::prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
        long_polling_timeout: Some(meridian_proto::prost_types::Duration {
            seconds: 5,
            nanos: 0,
        }),
        ..ReceiveMessageRequest::default()
    };
    let mut frames = client
        .receive_message(raw(receive)?)
        .await
        .context("ReceiveMessage")?
        .into_inner();
    let mut delivered = None;
    while let Some(frame) = frames.message().await? {
        if let Some(receive_message_response::Content::Message(message)) = frame.content {
            delivered = Some(message);
        }
    }
    let delivered = delivered.context("the message was delivered")?;
    let properties = delivered.system_properties.context("system properties")?;
    anyhow::ensure!(properties.message_id == id);
    let handle = properties.receipt_handle.context("a receipt handle")?;

    let forward = ForwardMessageToDeadLetterQueueRequest {
        group: resource("pusher"),
        topic: resource(TEST_TOPIC),
        receipt_handle: handle.clone(),
        message_id: id.clone(),
        delivery_attempt: 1,
        max_delivery_attempts: 1,
        ..ForwardMessageToDeadLetterQueueRequest::default()
    };
    for round in ["first", "repeated"] {
        let answer = client
            .forward_message_to_dead_letter_queue(raw(forward.clone())?)
            .await
            .context("ForwardMessageToDeadLetterQueue")?
            .into_inner();
        let status = answer.status.context("a status")?;
        let expected = match round {
            "first" => Code::Ok,
            // The original is acknowledged now: its handle is finished.
            _ => Code::InvalidReceiptHandle,
        };
        anyhow::ensure!(
            status.code == expected as i32,
            "{round} forward answered {status:?}"
        );
    }
    let reader =
        start_consumer_of(&cluster.router_endpoint("a"), "dlq-reader", "%DLQ%pusher").await?;
    let dead = receive_until(&reader, "%DLQ%pusher", &id, Duration::from_secs(30)).await?;
    ack(&reader, &dead).await?;
    anyhow::ensure!(dead.body() == b"give up on me");
    anyhow::ensure!(
        dead.properties()
            .get("DLQ_DELIVERY_ATTEMPTS")
            .map(String::as_str)
            == Some("1"),
        "properties {:?}",
        dead.properties()
    );
    cluster.finish();
    Ok(())
}
