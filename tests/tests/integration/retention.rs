//! Retention: a topic's messages leave a region `retention_ms` after they
//! joined their queue, but only once every region they go to confirmed
//! them; queue offsets never restart (also across a node crash), and a
//! consumer group behind the retention point resumes at the earliest
//! message left.

use crate::support::{
    CLIENT_CALL_TIMEOUT, LONG_POLLING, ack, send_to, start_consumer_of, start_producer_of,
    topic_count_of, within,
};
use meridian_tests::{Role, TestCluster, wait_until};
use meridian_topology::{ConsumeFrom, FlushMode, MessageType, Topic};
use rocketmq::SimpleConsumer;
use rocketmq::model::common::{FilterExpression, FilterType};
use std::collections::BTreeSet;
use std::time::Duration;

const TOPIC: &str = "short-lived";
const RETENTION_MS: u64 = 2_000;

fn short_lived(regions: &[&str]) -> Topic {
    Topic {
        queues: 1,
        message_types: vec![MessageType::Normal],
        replicate_to: regions.iter().map(|region| (*region).to_owned()).collect(),
        consume_from: ConsumeFrom::Earliest,
        durability: Default::default(),
        geo_copies: 1,
        retention_ms: RETENTION_MS,
        retention_bytes: None,
        transaction_checks: Default::default(),
    }
}

/// Receives (and acknowledges) until `count` messages came; their bodies.
async fn take(consumer: &SimpleConsumer, count: usize) -> anyhow::Result<BTreeSet<String>> {
    let filter = FilterExpression::new(FilterType::Tag, "*");
    let mut bodies = BTreeSet::new();
    within(Duration::from_secs(60), "receive", async {
        while bodies.len() < count {
            let messages = within(
                LONG_POLLING + CLIENT_CALL_TIMEOUT,
                "receive",
                consumer.receive_with(TOPIC, &filter, 1, Duration::from_secs(30)),
            )
            .await?
            .map_err(|error| anyhow::anyhow!("receive: {error:?}"))?;
            for message in messages {
                bodies.insert(String::from_utf8(message.body().to_vec())?);
                ack(consumer, &message).await?;
            }
        }
        anyhow::Ok(())
    })
    .await??;
    Ok(bodies)
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_messages_leave_once_replicated_and_late_groups_resume_after_them()
-> anyhow::Result<()> {
    let mut cluster = TestCluster::builder()
        .regions(2)
        .flush(FlushMode::Sync)
        .topic(TOPIC, short_lived(&["a", "b"]))
        .build()
        .await?;
    // b cannot confirm anything while its replicator is down.
    cluster.stop("b", Role::Replicator).await?;
    let endpoint = cluster.router_endpoint("a");
    let producer = start_producer_of(&endpoint, TOPIC).await?;
    for body in ["old-1", "old-2", "old-3"] {
        send_to(&producer, TOPIC, body.as_bytes().to_vec()).await?;
    }
    let behind = start_consumer_of(&endpoint, "behind", TOPIC).await?;
    let first = take(&behind, 1).await?;

    // Time must pass for the messages to expire (not a readiness wait):
    // their retention and one more pass of the retention task.
    tokio::time::sleep(Duration::from_millis(RETENTION_MS + 1_500)).await;
    anyhow::ensure!(
        topic_count_of(&cluster, "a", TOPIC).await? == 3,
        "a removed messages b had not confirmed"
    );

    cluster.start("b", Role::Replicator).await?;
    wait_until(Duration::from_secs(30), "b has every message", || async {
        anyhow::Ok(topic_count_of(&cluster, "b", TOPIC).await? == 3)
    })
    .await?;
    wait_until(
        Duration::from_secs(30),
        "a removed the expired messages",
        || async { anyhow::Ok(topic_count_of(&cluster, "a", TOPIC).await? == 0) },
    )
    .await?;

    // A crash changes nothing: offsets go on from where retention left them.
    cluster.kill9("a", Role::Node)?;
    cluster.start("a", Role::Node).await?;
    for body in ["new-1", "new-2"] {
        send_to(&producer, TOPIC, body.as_bytes().to_vec()).await?;
    }
    let expected: BTreeSet<String> = ["new-1", "new-2"].map(str::to_owned).into();
    // The group that was behind skips what expired unconsumed.
    let resumed = take(&behind, 2).await?;
    anyhow::ensure!(
        resumed == expected,
        "behind got {resumed:?} after {first:?}"
    );
    let fresh = start_consumer_of(&endpoint, "fresh", TOPIC).await?;
    let fresh_got = take(&fresh, 2).await?;
    anyhow::ensure!(fresh_got == expected, "a new group got {fresh_got:?}");
    cluster.finish();
    Ok(())
}
