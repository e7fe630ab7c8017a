//! Shared helpers: official-client setup with timeouts, commit-log reads over
//! the node's internal API, raw QueryRoute.

use anyhow::Context as _;
use meridian_tests::TEST_TOPIC;
use meridian_tests::TestCluster;
use meridian_tests::meridian_proto::meridian::v1::{
    GetCheckpointRequest, HealthRequest, Record, RecordKind, TailRequest, TopicStatsRequest,
};
use meridian_tests::meridian_proto::rocketmq::v2::{
    Address, AddressScheme, Code, Endpoints, QueryRouteRequest, Resource,
};
use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::{Message, MessageBuilder, MessageView};
use rocketmq::{Producer, SimpleConsumer};
use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

/// Upper bound for one official-client call that is not a long poll.
pub const CLIENT_CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Long polling of the test consumers: short, so "nothing more" is quick to see.
pub const LONG_POLLING: Duration = Duration::from_secs(5);
/// Tag of every test message.
pub const TAG: &str = "test";

/// Awaits `future`, failing with `what` after `timeout` (the official client has
/// calls without a timeout of their own).
pub async fn within<T>(
    timeout: Duration,
    what: &str,
    future: impl Future<Output = T>,
) -> anyhow::Result<T> {
    tokio::time::timeout(timeout, future)
        .await
        .map_err(|_| anyhow::anyhow!("{what}: no answer within {timeout:?}"))
}

fn client_option(access_url: &str) -> ClientOption {
    let mut option = ClientOption::default();
    option.set_access_url(access_url);
    option.set_enable_tls(false);
    option.set_long_polling_timeout(LONG_POLLING);
    option
}

/// A started official producer of [`TEST_TOPIC`] with `access_url` as access point.
pub async fn start_producer(access_url: &str) -> anyhow::Result<Producer> {
    start_producer_of(access_url, TEST_TOPIC).await
}

/// A started official producer of `topic` with `access_url` as access point.
pub async fn start_producer_of(access_url: &str, topic: &str) -> anyhow::Result<Producer> {
    let mut option = ProducerOption::default();
    option.set_topics(vec![topic]);
    let mut producer = Producer::new(option, client_option(access_url))
        .map_err(|error| anyhow::anyhow!("create a producer: {error:?}"))?;
    within(CLIENT_CALL_TIMEOUT, "start the producer", producer.start())
        .await?
        .map_err(|error| anyhow::anyhow!("start a producer via {access_url}: {error:?}"))?;
    Ok(producer)
}

/// A started official simple consumer of [`TEST_TOPIC`] in `group`.
pub async fn start_consumer(access_url: &str, group: &str) -> anyhow::Result<SimpleConsumer> {
    start_consumer_of(access_url, group, TEST_TOPIC).await
}

/// A started official simple consumer of `topic` in `group`.
pub async fn start_consumer_of(
    access_url: &str,
    group: &str,
    topic: &str,
) -> anyhow::Result<SimpleConsumer> {
    let mut option = SimpleConsumerOption::default();
    option.set_topics(vec![topic]);
    option.set_consumer_group(group);
    let mut consumer = SimpleConsumer::new(option, client_option(access_url))
        .map_err(|error| anyhow::anyhow!("create a simple consumer: {error:?}"))?;
    within(
        CLIENT_CALL_TIMEOUT,
        "start the simple consumer",
        consumer.start(),
    )
    .await?
    .map_err(|error| anyhow::anyhow!("start a simple consumer via {access_url}: {error:?}"))?;
    Ok(consumer)
}

/// A normal message of `topic`.
pub fn message_of(topic: &str, body: Vec<u8>) -> anyhow::Result<impl Message> {
    MessageBuilder::builder()
        .set_topic(topic)
        .set_tag(TAG)
        .set_body(body)
        .build()
        .map_err(|error| anyhow::anyhow!("build a message: {error:?}"))
}

/// Sends one message and returns the message id the server acknowledged.
pub async fn send(producer: &Producer, body: Vec<u8>) -> anyhow::Result<String> {
    send_to(producer, TEST_TOPIC, body).await
}

/// Sends one message of `topic`; returns the message id the server acknowledged.
pub async fn send_to(producer: &Producer, topic: &str, body: Vec<u8>) -> anyhow::Result<String> {
    let receipt = within(
        CLIENT_CALL_TIMEOUT,
        "send a message",
        producer.send(message_of(topic, body)?),
    )
    .await?
    .map_err(|error| anyhow::anyhow!("send a message: {error:?}"))?;
    Ok(receipt.message_id().to_owned())
}

/// One long-polling receive of up to 32 messages with every tag.
pub async fn receive(consumer: &SimpleConsumer) -> anyhow::Result<Vec<MessageView>> {
    receive_of(consumer, TEST_TOPIC).await
}

/// One long-polling receive of up to 32 messages of `topic` with every tag.
pub async fn receive_of(
    consumer: &SimpleConsumer,
    topic: &str,
) -> anyhow::Result<Vec<MessageView>> {
    let filter = FilterExpression::new(FilterType::Tag, "*");
    within(
        LONG_POLLING + CLIENT_CALL_TIMEOUT,
        "receive messages",
        consumer.receive(topic.to_owned(), &filter),
    )
    .await?
    .map_err(|error| anyhow::anyhow!("receive messages: {error:?}"))
}

/// Receives and acknowledges messages of `topic` until `expected.len()`
/// arrived (at most 60 s), then long-polls once more, and checks that the
/// consumer got exactly `expected` (message ids), each once. `what` names
/// the consumer in failures.
pub async fn receive_exactly(
    consumer: &SimpleConsumer,
    topic: &str,
    expected: &BTreeSet<String>,
    what: &str,
) -> anyhow::Result<()> {
    let mut received = Vec::new();
    within(Duration::from_secs(60), what, async {
        while received.len() < expected.len() {
            for message in receive_of(consumer, topic).await? {
                received.push(message.message_id().to_owned());
                ack(consumer, &message).await?;
            }
        }
        anyhow::Ok(())
    })
    .await??;
    // One more long poll: nothing else comes.
    for message in receive_of(consumer, topic).await? {
        received.push(message.message_id().to_owned());
    }
    let distinct: BTreeSet<String> = received.iter().cloned().collect();
    anyhow::ensure!(
        distinct.len() == received.len(),
        "{what}: a message was delivered twice: {received:?}"
    );
    anyhow::ensure!(
        distinct == *expected,
        "{what}: delivered {distinct:?}, expected {expected:?}"
    );
    Ok(())
}

/// Shuts both clients down, each within 10 s (a failed shutdown is not
/// what the calling test is about).
pub async fn shut_down(consumer: SimpleConsumer, producer: Producer) {
    let _ = within(
        Duration::from_secs(10),
        "consumer shutdown",
        consumer.shutdown(),
    )
    .await;
    let _ = within(
        Duration::from_secs(10),
        "producer shutdown",
        producer.shutdown(),
    )
    .await;
}

pub async fn ack(consumer: &SimpleConsumer, message: &MessageView) -> anyhow::Result<()> {
    within(CLIENT_CALL_TIMEOUT, "ack a message", consumer.ack(message))
        .await?
        .map_err(|error| anyhow::anyhow!("ack message {}: {error:?}", message.message_id()))
}

/// `message_count` of [`TEST_TOPIC`] in the region's node.
pub async fn topic_count(cluster: &TestCluster, region: &str) -> anyhow::Result<u64> {
    topic_count_of(cluster, region, TEST_TOPIC).await
}

/// `message_count` of `topic` in the region's node.
pub async fn topic_count_of(
    cluster: &TestCluster,
    region: &str,
    topic: &str,
) -> anyhow::Result<u64> {
    let mut admin = cluster.admin_client(region).await?;
    let request = TopicStatsRequest {
        topic: topic.to_owned(),
    };
    let stats = within(
        CLIENT_CALL_TIMEOUT,
        "TopicStats",
        admin.topic_stats(request),
    )
    .await?
    .with_context(|| format!("TopicStats of {topic} in region {region}"))?
    .into_inner();
    Ok(stats.message_count)
}

/// The highest committed sequence of the region's commit log.
pub async fn last_sequence(cluster: &TestCluster, region: &str) -> anyhow::Result<u64> {
    let mut admin = cluster.admin_client(region).await?;
    let health = within(
        CLIENT_CALL_TIMEOUT,
        "Health",
        admin.health(HealthRequest {}),
    )
    .await?
    .with_context(|| format!("Health of region {region}"))?
    .into_inner();
    Ok(health.last_sequence)
}

/// The sequence of `region`'s log that `peer` has acknowledged.
pub async fn checkpoint(cluster: &TestCluster, region: &str, peer: &str) -> anyhow::Result<u64> {
    let mut admin = cluster.admin_client(region).await?;
    let request = GetCheckpointRequest {
        peer_region: peer.to_owned(),
    };
    let checkpoint = within(
        CLIENT_CALL_TIMEOUT,
        "GetCheckpoint",
        admin.get_checkpoint(request),
    )
    .await?
    .with_context(|| format!("GetCheckpoint of link {region} → {peer}"))?
    .into_inner();
    Ok(checkpoint.acked_through_sequence)
}

/// Every message record of the region's commit log, read with Tail from the
/// start up to the last sequence committed when the read began.
pub async fn message_records(cluster: &TestCluster, region: &str) -> anyhow::Result<Vec<Record>> {
    let last = last_sequence(cluster, region).await?;
    let mut records = Vec::new();
    if last == 0 {
        return Ok(records);
    }
    let mut admin = cluster.admin_client(region).await?;
    let request = TailRequest {
        after_sequence: 0,
        max_records: 1_000,
        max_bytes: 4 * 1024 * 1024,
        local_origin_only: false,
    };
    let mut stream = within(CLIENT_CALL_TIMEOUT, "Tail", admin.tail(request))
        .await?
        .with_context(|| format!("Tail the commit log of region {region}"))?
        .into_inner();
    let mut through = 0;
    while through < last {
        let batch = within(CLIENT_CALL_TIMEOUT, "the next Tail batch", stream.message())
            .await?
            .with_context(|| format!("Tail region {region}: read a batch"))?
            .with_context(|| {
                format!("Tail region {region}: the stream ended at {through} before {last}")
            })?;
        anyhow::ensure!(
            batch.through_sequence >= through,
            "Tail region {region}: through_sequence went backwards from {through} to {}",
            batch.through_sequence
        );
        through = batch.through_sequence;
        records.extend(batch.records.into_iter().filter(|record| {
            record.kind == RecordKind::Message as i32 && record.message.is_some()
        }));
    }
    Ok(records)
}

/// The client message ids of `records`, in log order.
pub fn client_message_ids(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|record| record.message.as_ref())
        .map(|message| message.client_message_id.clone())
        .collect()
}

/// QueryRoute of `topic` to `endpoint` (a router or node), as a client asks.
pub async fn query_route_of(
    endpoint: &str,
    topic: &str,
) -> anyhow::Result<meridian_tests::meridian_proto::rocketmq::v2::QueryRouteResponse> {
    let mut client = TestCluster::messaging_client(endpoint).await?;
    let (host, port) = endpoint
        .rsplit_once(':')
        .context("an endpoint is host:port")?;
    let mut request = tonic::Request::new(QueryRouteRequest {
        topic: Some(Resource {
            resource_namespace: String::new(),
            name: topic.to_owned(),
        }),
        endpoints: Some(Endpoints {
            scheme: AddressScheme::IPv4 as i32,
            addresses: vec![Address {
                host: host.to_owned(),
                port: port.parse().context("a port is a number")?,
            }],
        }),
    });
    request.metadata_mut().insert(
        "x-mq-client-id",
        "meridian-tests-route-probe"
            .parse()
            .context("a metadata value")?,
    );
    request.set_timeout(Duration::from_secs(3));
    Ok(within(
        CLIENT_CALL_TIMEOUT,
        "QueryRoute",
        client.query_route(request),
    )
    .await?
    .with_context(|| format!("QueryRoute via {endpoint}"))?
    .into_inner())
}

/// Asks `endpoint` (a router or node) for the route of [`TEST_TOPIC`] and
/// returns the distinct broker endpoints (`host:port`) of its queues.
pub async fn query_route(endpoint: &str) -> anyhow::Result<BTreeSet<String>> {
    let response = query_route_of(endpoint, TEST_TOPIC).await?;
    let status = response
        .status
        .context("QueryRoute answered without a status")?;
    anyhow::ensure!(
        status.code == Code::Ok as i32,
        "QueryRoute via {endpoint} answered code {} ({})",
        status.code,
        status.message
    );
    let mut brokers = BTreeSet::new();
    for queue in &response.message_queues {
        let address = queue
            .broker
            .as_ref()
            .and_then(|broker| broker.endpoints.as_ref())
            .and_then(|endpoints| endpoints.addresses.first())
            .with_context(|| {
                format!(
                    "QueryRoute via {endpoint}: queue {} has no broker address",
                    queue.id
                )
            })?;
        brokers.insert(format!("{}:{}", address.host, address.port));
    }
    anyhow::ensure!(
        !brokers.is_empty(),
        "QueryRoute via {endpoint} returned no queues"
    );
    Ok(brokers)
}
