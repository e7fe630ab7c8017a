//! Geo-durable sends: a topic with `durability = "geo"` answers a send only
//! once another region has applied the message, so losing the region right
//! after the answer loses nothing; when no other region can confirm in time,
//! the send is refused with a clear error.

use crate::support::{client_message_ids, message_records, within};
use meridian_tests::meridian_topology::{ConsumeFrom, Durability, MessageType, Topic};
use meridian_tests::{Role, TestCluster};
use rocketmq::Producer;
use rocketmq::conf::{ClientOption, ProducerOption};
use rocketmq::model::message::MessageBuilder;
use std::time::{Duration, Instant};

const GEO_TOPIC: &str = "geo-orders";

async fn geo_cluster() -> TestCluster {
    let topic = Topic {
        queues: 4,
        message_types: vec![MessageType::Normal],
        replicate_to: vec!["a".to_owned(), "b".to_owned()],
        consume_from: ConsumeFrom::Earliest,
        durability: Durability::Geo,
        geo_copies: 1,
        retention_ms: meridian_topology::DEFAULT_RETENTION_MS,
        retention_bytes: None,
        transaction_checks: Default::default(),
    };
    TestCluster::builder()
        .regions(2)
        .topic(GEO_TOPIC, topic)
        .build()
        .await
        .expect("start a two-region cluster")
}

async fn geo_producer(access_url: &str) -> Producer {
    let mut option = ProducerOption::default();
    option.set_topics(vec![GEO_TOPIC]);
    let mut client = ClientOption::default();
    client.set_access_url(access_url);
    client.set_enable_tls(false);
    let mut producer = Producer::new(option, client).expect("create a producer");
    within(
        Duration::from_secs(15),
        "start the producer",
        producer.start(),
    )
    .await
    .expect("in time")
    .expect("start the producer");
    producer
}

async fn send_geo(producer: &Producer, body: &str) -> Result<String, String> {
    let message = MessageBuilder::builder()
        .set_topic(GEO_TOPIC)
        .set_tag("geo")
        .set_body(body.as_bytes().to_vec())
        .build()
        .map_err(|error| format!("{error:?}"))?;
    within(Duration::from_secs(15), "send", producer.send(message))
        .await
        .map_err(|error| format!("{error:#}"))?
        .map(|receipt| receipt.message_id().to_owned())
        .map_err(|error| format!("{error:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_geo_send_answered_ok_survives_the_loss_of_its_region() {
    let mut cluster = geo_cluster().await;
    let producer = geo_producer(&cluster.node_endpoint("a")).await;
    let mut sent = Vec::new();
    for index in 0..5 {
        sent.push(
            send_geo(&producer, &format!("geo {index}"))
                .await
                .expect("geo send"),
        );
    }
    // Right after the last OK: a is gone, b must already hold everything.
    cluster.kill9("a", Role::Node).expect("kill -9 a's node");
    let stored_in_b = client_message_ids(&message_records(&cluster, "b").await.expect("b's log"));
    for id in &sent {
        assert!(
            stored_in_b.contains(id),
            "{id} was answered OK but b does not hold it"
        );
    }
    cluster.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_geo_send_no_other_region_confirms_is_refused_in_time() {
    let mut cluster = geo_cluster().await;
    let producer = geo_producer(&cluster.node_endpoint("a")).await;
    send_geo(&producer, "before")
        .await
        .expect("a geo send with b up");
    cluster
        .kill9("b", Role::Replicator)
        .expect("kill -9 b's replicator");
    let started = Instant::now();
    let refused = send_geo(&producer, "unconfirmed").await;
    let waited = started.elapsed();
    let error = refused.expect_err("no region can confirm it");
    println!("geo send refused after {} ms: {error}", waited.as_millis());
    assert!(
        error.contains("durability") && error.contains("geo"),
        "the error says why: {error}"
    );
    assert!(waited < Duration::from_secs(10), "refused in {waited:?}");
    cluster.finish();
}
