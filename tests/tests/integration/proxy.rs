//! Routers in proxy mode: clients keep one access point, the router, which
//! carries every call to a region's node; when that region's node dies, the
//! same client instance goes on sending and receiving through the same
//! router, now served by the nearest healthy region. The official Rust
//! client 5.0.0 never re-queries routes, so in direct mode it could not.

use crate::support::{
    CLIENT_CALL_TIMEOUT, LONG_POLLING, ack, query_route, shut_down, start_consumer, start_producer,
    within,
};
use meridian_tests::meridian_topology::RouterMode;
use meridian_tests::{Role, TEST_TOPIC, TestCluster};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use rocketmq::{Producer, SimpleConsumer};
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;
use tokio::time::Instant;

async fn send_tagged(producer: &Producer, tag: &str, body: String) -> anyhow::Result<String> {
    let message = MessageBuilder::builder()
        .set_topic(TEST_TOPIC)
        .set_tag(tag)
        .set_body(body.into_bytes())
        .build()
        .map_err(|error| anyhow::anyhow!("build a message: {error:?}"))?;
    let receipt = within(CLIENT_CALL_TIMEOUT, "send", producer.send(message))
        .await?
        .map_err(|error| anyhow::anyhow!("send: {error:?}"))?;
    Ok(receipt.message_id().to_owned())
}

/// Receives (and acks) messages tagged `tag` until every id of `wanted` came.
async fn receive_tagged(
    consumer: &SimpleConsumer,
    tag: &str,
    wanted: &HashSet<String>,
    limit: Duration,
) -> anyhow::Result<()> {
    let filter = FilterExpression::new(FilterType::Tag, tag);
    let mut received = HashSet::new();
    let deadline = Instant::now() + limit;
    while !wanted.is_subset(&received) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "received {} of {} messages tagged {tag} within {limit:?}",
            received.intersection(wanted).count(),
            wanted.len()
        );
        let messages = within(
            LONG_POLLING + CLIENT_CALL_TIMEOUT,
            "receive",
            consumer.receive_with(TEST_TOPIC, &filter, 32, Duration::from_secs(30)),
        )
        .await?;
        // A receive in flight when the node died fails; the next one goes on.
        let Ok(messages) = messages else { continue };
        for message in messages {
            ack(consumer, &message).await?;
            received.insert(message.message_id().to_owned());
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_rust_client_survives_its_regions_node_through_a_proxying_router() -> anyhow::Result<()>
{
    let mut cluster = TestCluster::builder()
        .regions(2)
        .router_mode(RouterMode::Proxy)
        .build()
        .await?;
    let router_a = cluster.router_endpoint("a");
    let route = query_route(&router_a).await?;
    anyhow::ensure!(
        route == BTreeSet::from([router_a.clone()]),
        "a proxying router routes clients to itself, not {route:?}"
    );

    let producer = start_producer(&router_a).await?;
    let consumer = start_consumer(&router_a, "through-the-proxy").await?;
    let mut before = HashSet::new();
    for index in 0..5 {
        before.insert(send_tagged(&producer, "before", format!("before {index}")).await?);
    }
    receive_tagged(&consumer, "before", &before, Duration::from_secs(30)).await?;

    cluster.kill9("a", Role::Node)?;
    let killed_at = Instant::now();
    // The same producer, never re-querying routes: sends fail only while the
    // router has not yet noticed, then go to b.
    let mut after = HashSet::new();
    while after.len() < 5 {
        anyhow::ensure!(
            killed_at.elapsed() < Duration::from_secs(30),
            "only {} sends succeeded within 30 s of the kill",
            after.len()
        );
        if let Ok(id) = send_tagged(&producer, "after", format!("after {}", after.len())).await {
            after.insert(id);
        }
    }
    eprintln!(
        "sends through a's router succeeded again {:?} after a's node was killed",
        killed_at.elapsed()
    );
    receive_tagged(&consumer, "after", &after, Duration::from_secs(30)).await?;
    shut_down(consumer, producer).await;
    cluster.finish();
    Ok(())
}
