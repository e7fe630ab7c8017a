//! Acknowledgements cross regions: a consumer group that moves from region
//! a to region b receives in b exactly what it had not acknowledged in a.

use crate::support::{
    ack, checkpoint, last_sequence, receive, receive_exactly, send, shut_down, start_consumer,
    start_producer, topic_count, within,
};
use meridian_tests::{TEST_TOPIC, TestCluster, wait_until};
use std::collections::BTreeSet;
use std::time::Duration;

const MESSAGES: usize = 20;
const ACKED_IN_A: usize = 10;
const GROUP: &str = "moving-group";

#[tokio::test(flavor = "multi_thread")]
async fn a_group_moving_regions_gets_exactly_what_it_did_not_acknowledge() {
    let cluster = TestCluster::builder()
        .regions(2)
        .build()
        .await
        .expect("start a two-region cluster");
    let producer = start_producer(&cluster.router_endpoint("a"))
        .await
        .expect("producer via a");
    let mut sent = BTreeSet::new();
    for index in 0..MESSAGES {
        sent.insert(
            send(&producer, format!("moving {index}").into_bytes())
                .await
                .expect("send"),
        );
    }
    wait_until(
        Duration::from_secs(60),
        "b stores every message",
        || async { anyhow::Ok(topic_count(&cluster, "b").await? >= MESSAGES as u64) },
    )
    .await
    .expect("replication a -> b");

    // In a: receive everything, acknowledge the first ACKED_IN_A; the rest
    // stay in flight there.
    let in_a = start_consumer(&cluster.router_endpoint("a"), GROUP)
        .await
        .expect("consumer via a");
    let mut received_in_a = BTreeSet::new();
    let mut acked_in_a = BTreeSet::new();
    within(Duration::from_secs(60), "a delivers every message", async {
        while received_in_a.len() < MESSAGES {
            for message in receive(&in_a).await.expect("receive in a") {
                let id = message.message_id().to_owned();
                if acked_in_a.len() < ACKED_IN_A && !acked_in_a.contains(&id) {
                    ack(&in_a, &message).await.expect("ack in a");
                    acked_in_a.insert(id.clone());
                }
                received_in_a.insert(id);
            }
        }
    })
    .await
    .expect("a delivers");
    let backlog = last_sequence(&cluster, "a")
        .await
        .expect("a's last sequence")
        .saturating_sub(checkpoint(&cluster, "a", "b").await.expect("a -> b"));
    println!(
        "acknowledgements (and other records) of a not yet confirmed by b when the group moved: {backlog}"
    );
    let a_last = last_sequence(&cluster, "a")
        .await
        .expect("a's last sequence");
    wait_until(
        Duration::from_secs(60),
        "b confirms a's acknowledgements",
        || async { anyhow::Ok(checkpoint(&cluster, "a", "b").await? >= a_last) },
    )
    .await
    .expect("acks replicate");

    // In b: the same group gets exactly the messages a did not acknowledge.
    let in_b = start_consumer(&cluster.router_endpoint("b"), GROUP)
        .await
        .expect("consumer via b");
    let expected: BTreeSet<String> = sent.difference(&acked_in_a).cloned().collect();
    receive_exactly(
        &in_b,
        TEST_TOPIC,
        &expected,
        "b delivers exactly what the group did not acknowledge in a",
    )
    .await
    .expect("b delivers");
    shut_down(in_a, producer).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), in_b.shutdown()).await;
    cluster.finish();
}

/// A group created in region a on a topic whose new groups start at the end
/// (`consume_from = "latest"`) starts from the same messages in b: moved to
/// b, it gets what was sent after its start in a, not the older messages,
/// and not nothing (as a group created anew at b's end would).
#[tokio::test(flavor = "multi_thread")]
async fn a_latest_group_moving_regions_starts_from_the_same_messages() {
    let cluster = TestCluster::builder()
        .regions(2)
        .consume_from(meridian_tests::meridian_topology::ConsumeFrom::Latest)
        .build()
        .await
        .expect("start a two-region cluster");
    let producer = start_producer(&cluster.router_endpoint("a"))
        .await
        .expect("producer via a");
    for index in 0..5 {
        send(&producer, format!("before the group {index}").into_bytes())
            .await
            .expect("send");
    }
    // The group's first receive in a creates it at the end of every queue.
    let in_a = start_consumer(&cluster.router_endpoint("a"), "latest-group")
        .await
        .expect("consumer via a");
    let first = receive(&in_a).await.expect("receive in a");
    assert!(
        first.is_empty(),
        "a latest group starts after the old messages"
    );
    let mut after = BTreeSet::new();
    for index in 0..5 {
        after.insert(
            send(&producer, format!("after the group {index}").into_bytes())
                .await
                .expect("send"),
        );
    }
    let a_last = last_sequence(&cluster, "a")
        .await
        .expect("a's last sequence");
    wait_until(
        Duration::from_secs(60),
        "b confirms everything a holds, the group's start too",
        || async { anyhow::Ok(checkpoint(&cluster, "a", "b").await? >= a_last) },
    )
    .await
    .expect("replication a -> b");

    let in_b = start_consumer(&cluster.router_endpoint("b"), "latest-group")
        .await
        .expect("consumer via b");
    receive_exactly(
        &in_b,
        TEST_TOPIC,
        &after,
        "b delivers exactly the messages after the group's start",
    )
    .await
    .expect("b delivers");
    shut_down(in_a, producer).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), in_b.shutdown()).await;
    cluster.finish();
}
