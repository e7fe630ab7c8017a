//! Access keys and grants on the RocketMQ gRPC ports (issue 12), with the
//! official Rust client (5.0.0, unmodified) and raw signed requests: a key
//! with the grant sends and receives (through a router in direct and in
//! proxy mode); a wrong secret, an unknown key, no key, an expired
//! `x-mq-date-time` and a topic the key has no grant for each get the
//! documented status (UNAUTHORIZED 40100 / FORBIDDEN 40300) with a message
//! naming what was wrong, and nothing is stored.

use crate::support::{CLIENT_CALL_TIMEOUT, LONG_POLLING, TAG, topic_count, within};
use anyhow::Context as _;
use hmac::{Hmac, Mac as _};
use meridian_tests::meridian_proto::rocketmq::v2::{
    Code, Message as ProtoMessage, QueryRouteRequest, Resource, SendMessageRequest,
    SystemProperties,
};
use meridian_tests::meridian_topology::RouterMode;
use meridian_tests::{TEST_TOPIC, TestCluster};
use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use rocketmq::{Producer, SimpleConsumer};
use sha1::Sha1;
use std::time::Duration;

/// A key that may send to and consume the test topic as groups `sec-*`.
const WRITER: (&str, &str) = ("orders-app", "orders-secret");
const WRITER_ALLOW: &str =
    r#"[{ actions = ["pub", "sub"], topics = ["demo"], groups = ["sec-*"] }]"#;
/// A key that may only consume the test topic.
const READER: (&str, &str) = ("reader", "reader-secret");
const READER_ALLOW: &str = r#"[{ actions = ["sub"], topics = ["demo"], groups = ["sec-*"] }]"#;

fn client_option(access_url: &str, key: Option<(&str, &str)>) -> ClientOption {
    let mut option = ClientOption::default();
    option.set_access_url(access_url);
    option.set_enable_tls(false);
    option.set_long_polling_timeout(LONG_POLLING);
    if let Some((access_key, secret_key)) = key {
        option.set_access_key(access_key);
        option.set_secret_key(secret_key);
    }
    option
}

async fn producer(access_url: &str, key: Option<(&str, &str)>) -> anyhow::Result<Producer> {
    let mut option = ProducerOption::default();
    option.set_topics(vec![TEST_TOPIC]);
    let mut producer = Producer::new(option, client_option(access_url, key))
        .map_err(|error| anyhow::anyhow!("create a producer: {error}"))?;
    within(CLIENT_CALL_TIMEOUT, "start the producer", producer.start())
        .await?
        .map_err(|error| anyhow::anyhow!("start the producer: {error}"))?;
    Ok(producer)
}

async fn consumer(
    access_url: &str,
    group: &str,
    key: Option<(&str, &str)>,
) -> anyhow::Result<SimpleConsumer> {
    let mut option = SimpleConsumerOption::default();
    option.set_topics(vec![TEST_TOPIC]);
    option.set_consumer_group(group);
    let mut consumer = SimpleConsumer::new(option, client_option(access_url, key))
        .map_err(|error| anyhow::anyhow!("create a consumer: {error}"))?;
    within(CLIENT_CALL_TIMEOUT, "start the consumer", consumer.start())
        .await?
        .map_err(|error| anyhow::anyhow!("start the consumer: {error}"))?;
    Ok(consumer)
}

async fn send(producer: &Producer, body: &str) -> anyhow::Result<String> {
    let message = MessageBuilder::builder()
        .set_topic(TEST_TOPIC)
        .set_tag(TAG)
        .set_body(body.as_bytes().to_vec())
        .build()
        .map_err(|error| anyhow::anyhow!("build a message: {error}"))?;
    let receipt = within(CLIENT_CALL_TIMEOUT, "send", producer.send(message))
        .await?
        .map_err(|error| anyhow::anyhow!("send: {error}"))?;
    Ok(receipt.message_id().to_owned())
}

/// Receives (and acknowledges) until a message with `body` arrives.
async fn receive_body(consumer: &SimpleConsumer, body: &str) -> anyhow::Result<()> {
    let filter = FilterExpression::new(FilterType::Tag, "*");
    within(Duration::from_secs(60), "receive the message", async {
        loop {
            let messages = within(
                LONG_POLLING + CLIENT_CALL_TIMEOUT,
                "receive",
                consumer.receive(TEST_TOPIC.to_owned(), &filter),
            )
            .await?
            .map_err(|error| anyhow::anyhow!("receive: {error}"))?;
            for message in messages {
                within(CLIENT_CALL_TIMEOUT, "ack", consumer.ack(&message))
                    .await?
                    .map_err(|error| anyhow::anyhow!("ack: {error}"))?;
                if message.body() == body.as_bytes() {
                    return anyhow::Ok(());
                }
            }
        }
    })
    .await?
}

/// Starts a consumer of `group` and receives once (what a grant for the
/// group's heartbeat or for the receive refuses).
async fn consume_once(
    access_url: &str,
    group: &str,
    key: Option<(&str, &str)>,
) -> anyhow::Result<()> {
    let consumer = consumer(access_url, group, key).await?;
    let filter = FilterExpression::new(FilterType::Tag, "*");
    let received = within(
        LONG_POLLING + CLIENT_CALL_TIMEOUT,
        "receive",
        consumer.receive(TEST_TOPIC.to_owned(), &filter),
    )
    .await?
    .map_err(|error| anyhow::anyhow!("receive: {error}"));
    let _ = within(Duration::from_secs(10), "shutdown", consumer.shutdown()).await;
    received.map(drop)
}

/// Asserts that `outcome` failed with `code` (its name, as the Rust client
/// reports it) and a message containing each of `expected`.
fn assert_refused<T>(
    outcome: anyhow::Result<T>,
    code: &str,
    expected: &[&str],
    what: &str,
) -> anyhow::Result<()> {
    let Err(error) = outcome else {
        anyhow::bail!("{what}: succeeded, expected {code}");
    };
    let text = format!("{error:#}");
    anyhow::ensure!(text.contains(code), "{what}: expected {code}, got: {text}");
    for part in expected {
        anyhow::ensure!(text.contains(part), "{what}: expected `{part}` in: {text}");
    }
    Ok(())
}

/// `authorization` and `x-mq-date-time` as the clients write them, signed
/// with `secret` over `date_time`.
fn signed<T>(message: T, access_key: &str, secret: &str, date_time: &str) -> tonic::Request<T> {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(date_time.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("x-mq-client-id", "security-test".parse().expect("ascii"));
    metadata.insert("x-mq-date-time", date_time.parse().expect("ascii"));
    metadata.insert(
        "authorization",
        format!(
            "MQv2-HMAC-SHA1 Credential={access_key}, SignedHeaders=x-mq-date-time, Signature={signature}"
        )
        .parse()
        .expect("ascii"),
    );
    request
}

/// `yyyyMMddTHHmmssZ` of the UTC time `offset` from now.
fn date_time(offset: time::Duration) -> String {
    let at = time::OffsetDateTime::now_utc() + offset;
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

fn topic() -> Option<Resource> {
    Some(Resource {
        resource_namespace: String::new(),
        name: TEST_TOPIC.to_owned(),
    })
}

/// Through region a's router (direct mode: the client then talks to the
/// node itself): the writer sends and a consumer receives; every wrong
/// credential and a denied action is refused with its status and reason,
/// and nothing of theirs is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_rust_client_with_keys_and_grants() -> anyhow::Result<()> {
    let cluster = TestCluster::builder()
        .regions(1)
        .access_key_allowing(WRITER.0, WRITER.1, WRITER_ALLOW)
        .access_key_allowing(READER.0, READER.1, READER_ALLOW)
        .build()
        .await?;
    let router = cluster.router_endpoint("a");

    let writer = producer(&router, Some(WRITER)).await?;
    send(&writer, "with the right key").await?;
    let reader = consumer(&router, "sec-readers", Some(READER)).await?;
    receive_body(&reader, "with the right key").await?;
    let stored = topic_count(&cluster, "a").await?;
    anyhow::ensure!(stored == 1, "{stored} messages stored, expected 1");

    assert_refused(
        producer(&router, Some((WRITER.0, "not-the-secret"))).await,
        "UNAUTHORIZED",
        &["the signature does not match access key `orders-app`"],
        "a wrong secret",
    )?;
    assert_refused(
        producer(&router, Some(("nobody", "whatever"))).await,
        "UNAUTHORIZED",
        &["access key `nobody` is unknown"],
        "an unknown key",
    )?;
    assert_refused(
        producer(&router, None).await,
        "UNAUTHORIZED",
        &["requires an access key"],
        "no key",
    )?;
    // The reader may see the topic's route, so its producer starts; its
    // sends are refused.
    let reader_producer = producer(&router, Some(READER)).await?;
    assert_refused(
        send(&reader_producer, "from a reader").await,
        "FORBIDDEN",
        &["access key `reader` is not granted `pub` on topic `demo`"],
        "a send without `pub`",
    )?;
    assert_refused(
        consume_once(&router, "other-group", Some(READER)).await,
        "FORBIDDEN",
        &[
            "access key `reader` is not granted `sub`",
            "consumer group `other-group`",
        ],
        "a consumer group outside the grant",
    )?;

    // Raw requests to the node: an expired date, and a send the writer
    // signs for a day ago.
    let node = cluster.node_endpoint("a");
    let mut client = TestCluster::messaging_client(&node).await?;
    let stale = date_time(-time::Duration::hours(1));
    let route = client
        .query_route(signed(
            QueryRouteRequest {
                topic: topic(),
                endpoints: None,
            },
            WRITER.0,
            WRITER.1,
            &stale,
        ))
        .await
        .context("QueryRoute")?
        .into_inner();
    let status = route.status.context("a status")?;
    anyhow::ensure!(
        status.code == Code::Unauthorized as i32
            && status.message.contains("away from the server's clock"),
        "an expired date: {status:?}"
    );
    let message = ProtoMessage {
        topic: topic(),
        system_properties: Some(SystemProperties {
            message_id: "0000000000000000000000000000E1".to_owned(),
            tag: Some(TAG.to_owned()),
            ..SystemProperties::default()
        }),
        body: b"signed a day ago".to_vec(),
        ..ProtoMessage::default()
    };
    let sent = client
        .send_message(signed(
            SendMessageRequest {
                messages: vec![message],
            },
            WRITER.0,
            WRITER.1,
            &date_time(-time::Duration::days(1)),
        ))
        .await
        .context("SendMessage")?
        .into_inner();
    let status = sent.status.context("a status")?;
    anyhow::ensure!(
        status.code == Code::Unauthorized as i32,
        "a send signed a day ago: {status:?}"
    );
    let stored = topic_count(&cluster, "a").await?;
    anyhow::ensure!(
        stored == 1,
        "{stored} messages stored after the refused sends, expected still 1"
    );
    let _ = within(Duration::from_secs(10), "shutdown", writer.shutdown()).await;
    let _ = within(Duration::from_secs(10), "shutdown", reader.shutdown()).await;
    let _ = within(
        Duration::from_secs(10),
        "shutdown",
        reader_producer.shutdown(),
    )
    .await;
    Ok(())
}

/// In proxy mode the router carries every call to the node, signing it
/// afresh for the caller's key: the node checks the same key and grants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxying_router_carries_the_caller_s_key() -> anyhow::Result<()> {
    let cluster = TestCluster::builder()
        .regions(2)
        .router_mode(RouterMode::Proxy)
        .access_key_allowing(WRITER.0, WRITER.1, WRITER_ALLOW)
        .access_key_allowing(READER.0, READER.1, READER_ALLOW)
        .build()
        .await?;
    let router = cluster.router_endpoint("b");
    let writer = producer(&router, Some(WRITER)).await?;
    send(&writer, "through the proxy").await?;
    let reader = consumer(&router, "sec-proxy", Some(READER)).await?;
    receive_body(&reader, "through the proxy").await?;
    let reader_producer = producer(&router, Some(READER)).await?;
    assert_refused(
        send(&reader_producer, "from a reader").await,
        "FORBIDDEN",
        &["access key `reader` is not granted `pub` on topic `demo`"],
        "a send without `pub` through the proxy",
    )?;
    let _ = within(Duration::from_secs(10), "shutdown", writer.shutdown()).await;
    let _ = within(Duration::from_secs(10), "shutdown", reader.shutdown()).await;
    let _ = within(
        Duration::from_secs(10),
        "shutdown",
        reader_producer.shutdown(),
    )
    .await;
    Ok(())
}
