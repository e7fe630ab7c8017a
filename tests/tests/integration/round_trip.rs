//! The official RocketMQ Rust client, unmodified, across two regions.

use crate::support::{ack, receive, send, start_consumer, start_producer};
use meridian_tests::TestCluster;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

const MESSAGES: usize = 1_000;

#[tokio::test(flavor = "multi_thread")]
async fn official_client_round_trip_across_regions() {
    let cluster = TestCluster::builder()
        .regions(2)
        .build()
        .await
        .expect("start a two-region cluster");

    let producer = start_producer(&cluster.router_endpoint("a"))
        .await
        .expect("start a producer via a's router");
    let mut sent: HashMap<String, Vec<u8>> = HashMap::with_capacity(MESSAGES);
    for index in 0..MESSAGES {
        let body = format!("round trip message {index}").into_bytes();
        let id = send(&producer, body.clone())
            .await
            .expect("send via a's router");
        assert!(
            sent.insert(id.clone(), body).is_none(),
            "the producer got message id {id} twice"
        );
    }

    let consumer = start_consumer(&cluster.router_endpoint("b"), "round-trip")
        .await
        .expect("start a consumer via b's router");
    let mut received: HashMap<String, Vec<u8>> = HashMap::with_capacity(MESSAGES);
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.len() < MESSAGES {
        assert!(
            Instant::now() < deadline,
            "b delivered only {} of {MESSAGES} messages within 120 s",
            received.len()
        );
        for message in receive(&consumer).await.expect("receive via b's router") {
            let id = message.message_id().to_owned();
            assert!(
                sent.contains_key(&id),
                "b delivered message {id}, which was never sent"
            );
            assert!(
                received
                    .insert(id.clone(), message.body().to_vec())
                    .is_none(),
                "b delivered message {id} twice"
            );
            ack(&consumer, &message).await.expect("ack via b");
        }
    }
    for (id, body) in &sent {
        assert_eq!(
            received.get(id),
            Some(body),
            "the body of message {id} changed on the way"
        );
    }

    let more = receive(&consumer).await.expect("receive once more");
    assert!(
        more.is_empty(),
        "after all {MESSAGES} were acked, b delivered {} more: {:?}",
        more.len(),
        more.iter()
            .map(|message| message.message_id().to_owned())
            .collect::<Vec<_>>()
    );

    let _ = tokio::time::timeout(Duration::from_secs(10), consumer.shutdown()).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), producer.shutdown()).await;
    cluster.finish();
}
