//! `meridian admin`: a region's topics and a consumer group's progress
//! (consumed offset, in flight, backlog, age of the oldest unacknowledged
//! message), as tables and as JSON.

use crate::support::{
    CLIENT_CALL_TIMEOUT, LONG_POLLING, ack, send, start_consumer, start_producer, within,
};
use meridian_tests::{TEST_TOPIC, TestCluster};
use rocketmq::model::common::{FilterExpression, FilterType};
use serde_json::Value;
use std::time::Duration;

const GROUP: &str = "inspected";

/// Runs `meridian admin --topology <cluster's> --region a <args> --json`.
async fn admin_json(cluster: &TestCluster, args: &[&str]) -> anyhow::Result<Value> {
    let output = admin(cluster, args, true).await?;
    Ok(serde_json::from_str(&output)?)
}

async fn admin(cluster: &TestCluster, args: &[&str], json: bool) -> anyhow::Result<String> {
    let topology = cluster.topology_path().display().to_string();
    let mut all = vec!["admin", "--topology", &topology, "--region", "a"];
    all.extend_from_slice(args);
    if json {
        all.push("--json");
    }
    let output = cluster.run_meridian(all, Duration::from_secs(30)).await?;
    anyhow::ensure!(
        output.code() == Some(0),
        "meridian admin {args:?} failed: {}",
        output.stderr
    );
    Ok(output.stdout)
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_shows_topics_and_a_groups_progress() -> anyhow::Result<()> {
    let cluster = TestCluster::builder().regions(1).build().await?;
    let endpoint = cluster.router_endpoint("a");
    let producer = start_producer(&endpoint).await?;
    for index in 0..10 {
        send(&producer, format!("message {index}").into_bytes()).await?;
    }
    // The group takes 4 messages in one receive and acknowledges 3.
    let consumer = start_consumer(&endpoint, GROUP).await?;
    let filter = FilterExpression::new(FilterType::Tag, "*");
    let mut taken = Vec::new();
    within(Duration::from_secs(60), "four messages", async {
        while taken.len() < 4 {
            let wanted = i32::try_from(4 - taken.len())?;
            let messages = within(
                LONG_POLLING + CLIENT_CALL_TIMEOUT,
                "receive",
                consumer.receive_with(TEST_TOPIC, &filter, wanted, Duration::from_secs(300)),
            )
            .await?
            .map_err(|error| anyhow::anyhow!("receive: {error:?}"))?;
            taken.extend(messages);
        }
        anyhow::Ok(())
    })
    .await??;
    for message in &taken[..3] {
        ack(&consumer, message).await?;
    }

    let topics = admin_json(&cluster, &["topics", "list"]).await?;
    let test_topic = topics
        .as_array()
        .and_then(|topics| topics.iter().find(|topic| topic["name"] == TEST_TOPIC))
        .ok_or_else(|| anyhow::anyhow!("{TEST_TOPIC} not listed: {topics}"))?;
    anyhow::ensure!(test_topic["messages"] == 10, "{test_topic}");
    let described = admin_json(&cluster, &["topics", "describe", TEST_TOPIC]).await?;
    let max_offsets: u64 = described["queue_offsets"]
        .as_array()
        .map(|queues| {
            queues
                .iter()
                .filter_map(|queue| queue["max_offset"].as_u64())
                .sum()
        })
        .unwrap_or_default();
    anyhow::ensure!(max_offsets == 10, "{described}");

    let groups = admin_json(&cluster, &["groups", "list"]).await?;
    anyhow::ensure!(
        groups
            .as_array()
            .is_some_and(|groups| groups.iter().any(|group| group["name"] == GROUP)),
        "{groups}"
    );
    let group = admin_json(&cluster, &["groups", "describe", GROUP]).await?;
    let queues = group["queues"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no queues: {group}"))?;
    let sum = |field: &str| -> u64 {
        queues
            .iter()
            .filter_map(|queue| queue[field].as_u64())
            .sum()
    };
    anyhow::ensure!(sum("in_flight") == 1, "{group}");
    anyhow::ensure!(sum("backlog") == 7, "10 sent, 3 acknowledged: {group}");
    anyhow::ensure!(
        queues
            .iter()
            .any(|queue| queue["oldest_unconsumed_age_ms"].as_i64().is_some()),
        "{group}"
    );
    // People get a table.
    let table = admin(&cluster, &["groups", "describe", GROUP], false).await?;
    anyhow::ensure!(
        table.contains("BACKLOG") && table.contains(TEST_TOPIC),
        "{table}"
    );
    // An unknown group is an error naming it.
    let topology = cluster.topology_path().display().to_string();
    let unknown = cluster
        .run_meridian(
            [
                "admin",
                "--topology",
                &topology,
                "groups",
                "describe",
                "nobody",
            ],
            Duration::from_secs(30),
        )
        .await?;
    anyhow::ensure!(
        unknown.code() != Some(0) && unknown.stderr.contains("nobody"),
        "{unknown:?}"
    );
    cluster.finish();
    Ok(())
}

fn now_ms() -> anyhow::Result<i64> {
    Ok(i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?)
}

/// Receives and acknowledges until `count` messages came; their bodies, sorted.
async fn take(consumer: &rocketmq::SimpleConsumer, count: usize) -> anyhow::Result<Vec<String>> {
    let filter = FilterExpression::new(FilterType::Tag, "*");
    let mut bodies = Vec::new();
    within(Duration::from_secs(60), "receive", async {
        while bodies.len() < count {
            let messages = within(
                LONG_POLLING + CLIENT_CALL_TIMEOUT,
                "receive",
                consumer.receive_with(TEST_TOPIC, &filter, 16, Duration::from_secs(30)),
            )
            .await?
            .map_err(|error| anyhow::anyhow!("receive: {error:?}"))?;
            for message in messages {
                bodies.push(String::from_utf8(message.body().to_vec())?);
                ack(consumer, &message).await?;
            }
        }
        anyhow::Ok(())
    })
    .await??;
    bodies.sort();
    Ok(bodies)
}

#[tokio::test(flavor = "multi_thread")]
async fn resetting_a_group_redelivers_from_earliest_or_a_time_to_a_running_consumer()
-> anyhow::Result<()> {
    let cluster = TestCluster::builder().regions(1).build().await?;
    let endpoint = cluster.router_endpoint("a");
    let producer = start_producer(&endpoint).await?;
    for index in 0..4 {
        send(&producer, format!("early {index}").into_bytes()).await?;
    }
    let consumer = start_consumer(&endpoint, GROUP).await?;
    let early: Vec<String> = (0..4).map(|index| format!("early {index}")).collect();
    anyhow::ensure!(take(&consumer, 4).await? == early);
    // Messages stored from `cut` on are the late ones.
    let cut = now_ms()? + 1;
    while now_ms()? <= cut {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for index in 0..3 {
        send(&producer, format!("late {index}").into_bytes()).await?;
    }
    let late: Vec<String> = (0..3).map(|index| format!("late {index}")).collect();
    anyhow::ensure!(take(&consumer, 3).await? == late);

    // Back to the start: the same consumer gets everything again.
    let reset = admin_json(
        &cluster,
        &[
            "groups", "reset", GROUP, "--topic", TEST_TOPIC, "--to", "earliest",
        ],
    )
    .await?;
    anyhow::ensure!(
        reset["queues"].as_array().is_some_and(|q| !q.is_empty()),
        "{reset}"
    );
    let mut everything = early.clone();
    everything.extend(late.iter().cloned());
    everything.sort();
    anyhow::ensure!(take(&consumer, 7).await? == everything);

    // To a time: only what was stored from then on.
    admin_json(
        &cluster,
        &[
            "groups",
            "reset",
            GROUP,
            "--topic",
            TEST_TOPIC,
            "--to",
            &cut.to_string(),
        ],
    )
    .await?;
    anyhow::ensure!(take(&consumer, 3).await? == late);
    // To the end: nothing is left.
    admin_json(
        &cluster,
        &[
            "groups", "reset", GROUP, "--topic", TEST_TOPIC, "--to", "latest",
        ],
    )
    .await?;
    let group = admin_json(&cluster, &["groups", "describe", GROUP]).await?;
    let backlog: u64 = group["queues"]
        .as_array()
        .map(|queues| {
            queues
                .iter()
                .filter_map(|queue| queue["backlog"].as_u64())
                .sum()
        })
        .unwrap_or(u64::MAX);
    anyhow::ensure!(backlog == 0, "{group}");
    cluster.finish();
    Ok(())
}
