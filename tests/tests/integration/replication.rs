//! Replication survives a crash of the sending replicator: at-least-once
//! transport, exactly-once storage.

use crate::support::{
    checkpoint, client_message_ids, last_sequence, message_records, send, start_producer,
    topic_count,
};
use meridian_tests::{Role, TestCluster, wait_until};
use std::collections::BTreeSet;
use std::time::Duration;

const MESSAGES: usize = 1_000;

#[tokio::test(flavor = "multi_thread")]
async fn replicator_kill9_mid_stream_loses_and_duplicates_nothing() {
    let mut cluster = TestCluster::builder()
        .regions(2)
        .build()
        .await
        .expect("start a two-region cluster");

    let producer = start_producer(&cluster.router_endpoint("a"))
        .await
        .expect("start a producer via a's router");
    let sending = tokio::spawn(async move {
        let mut acknowledged = Vec::with_capacity(MESSAGES);
        for index in 0..MESSAGES {
            let body = format!("replicated message {index}").into_bytes();
            acknowledged.push(send(&producer, body).await?);
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), producer.shutdown()).await;
        anyhow::Ok(acknowledged)
    });

    // Kill while the stream is flowing: b has some of the messages, not all.
    let count_at_kill = wait_until(
        Duration::from_secs(60),
        "b has received its first replicated message",
        || async {
            let count = topic_count(&cluster, "b").await?;
            anyhow::Ok((count >= 1).then_some(count))
        },
    )
    .await
    .expect("replication a → b starts");
    cluster
        .kill9("a", Role::Replicator)
        .expect("kill -9 a's replicator");
    assert!(
        count_at_kill < MESSAGES as u64,
        "replication finished before the kill ({count_at_kill} on b), so nothing was in flight"
    );
    eprintln!("killed a's replicator with {count_at_kill} of {MESSAGES} messages on b");
    cluster
        .start("a", Role::Replicator)
        .await
        .expect("restart a's replicator");

    let acknowledged = tokio::time::timeout(Duration::from_secs(120), sending)
        .await
        .expect("the producer finishes within 120 s")
        .expect("the producer task does not panic")
        .expect("every send to a is acknowledged (a's node never went down)");
    let acknowledged: BTreeSet<String> = acknowledged.into_iter().collect();
    assert_eq!(
        acknowledged.len(),
        MESSAGES,
        "a acknowledged duplicate message ids"
    );

    wait_until(
        Duration::from_secs(60),
        format!("b stores all {MESSAGES} messages"),
        || async { anyhow::Ok(topic_count(&cluster, "b").await? >= MESSAGES as u64) },
    )
    .await
    .expect("b catches up after the restart");
    // Resends after the restart happen until the link's checkpoint covers a's
    // whole log; only then is b's count final.
    let a_last = last_sequence(&cluster, "a")
        .await
        .expect("a's last sequence");
    wait_until(
        Duration::from_secs(60),
        format!("b acknowledged a's log through {a_last}"),
        || async { anyhow::Ok(checkpoint(&cluster, "a", "b").await? >= a_last) },
    )
    .await
    .expect("the a → b checkpoint catches up");

    assert_eq!(
        topic_count(&cluster, "a").await.expect("a's count"),
        MESSAGES as u64
    );
    assert_eq!(
        topic_count(&cluster, "b").await.expect("b's count"),
        MESSAGES as u64,
        "b lost or duplicated messages"
    );
    let ids = client_message_ids(
        &message_records(&cluster, "b")
            .await
            .expect("read b's commit log"),
    );
    assert_eq!(
        ids.len(),
        MESSAGES,
        "b's commit log holds {} message records",
        ids.len()
    );
    let distinct: BTreeSet<String> = ids.into_iter().collect();
    assert_eq!(distinct.len(), MESSAGES, "b's commit log holds duplicates");
    assert_eq!(
        distinct, acknowledged,
        "b's messages differ from what a acknowledged"
    );
    cluster.finish();
}
