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
    admin_in(cluster, "a", args, json).await
}

/// Runs `meridian admin` against `region`'s node.
async fn admin_in(
    cluster: &TestCluster,
    region: &str,
    args: &[&str],
    json: bool,
) -> anyhow::Result<String> {
    let topology = cluster.topology_path().display().to_string();
    let mut all = vec!["admin", "--topology", &topology, "--region", region];
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

/// The trace of `id` as `region` shows it: (event, region, attempt) per step.
pub(crate) async fn trace_in(
    cluster: &TestCluster,
    region: &str,
    id: &str,
) -> anyhow::Result<(Value, Vec<(String, String, u64)>)> {
    let shown: Value =
        serde_json::from_str(&admin_in(cluster, region, &["messages", "show", id], true).await?)?;
    let steps = shown[0]["trace"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|step| {
                    (
                        step["event"].as_str().unwrap_or_default().to_owned(),
                        step["region"].as_str().unwrap_or_default().to_owned(),
                        step["attempt"].as_u64().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((shown, steps))
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_are_found_by_id_key_tag_and_time_and_traced_in_every_region() -> anyhow::Result<()>
{
    let cluster = TestCluster::builder().regions(2).build().await?;
    let producer = start_producer(&cluster.router_endpoint("a")).await?;
    let started = now_ms()?;
    let mut ids = Vec::new();
    for (index, key) in ["order-41", "order-42", "order-43"].into_iter().enumerate() {
        let message = rocketmq::model::message::MessageBuilder::builder()
            .set_topic(TEST_TOPIC)
            .set_tag(if index == 1 { "paid" } else { "new" })
            .set_keys(vec![key])
            .set_body(format!("order {index}").into_bytes())
            .build()
            .map_err(|error| anyhow::anyhow!("build: {error:?}"))?;
        let receipt = within(CLIENT_CALL_TIMEOUT, "send", producer.send(message))
            .await?
            .map_err(|error| anyhow::anyhow!("send: {error:?}"))?;
        ids.push(receipt.message_id().to_owned());
    }
    let traced = ids[1].clone();
    // Region b delivers it twice (the first delivery is let go), then acks.
    let consumer = start_consumer(&cluster.router_endpoint("b"), GROUP).await?;
    let filter = FilterExpression::new(FilterType::Tag, "paid");
    let mut attempts = Vec::new();
    within(Duration::from_secs(60), "two deliveries", async {
        while attempts.len() < 2 {
            let messages = within(
                LONG_POLLING + CLIENT_CALL_TIMEOUT,
                "receive",
                consumer.receive_with(TEST_TOPIC, &filter, 16, Duration::from_secs(1)),
            )
            .await?
            .map_err(|error| anyhow::anyhow!("receive: {error:?}"))?;
            for message in messages {
                attempts.push(message.delivery_attempt());
                if attempts.len() == 2 {
                    ack(&consumer, &message).await?;
                }
            }
        }
        anyhow::Ok(())
    })
    .await??;
    anyhow::ensure!(attempts == [1, 2], "attempts {attempts:?}");

    // Query: by key, by tag, by time (paged), in both regions.
    for region in ["a", "b"] {
        let by_key: Value = serde_json::from_str(
            &admin_in(
                &cluster,
                region,
                &[
                    "messages", "query", "--topic", TEST_TOPIC, "--key", "order-42",
                ],
                true,
            )
            .await?,
        )?;
        let found: Vec<&str> = by_key["messages"]
            .as_array()
            .map(|messages| {
                messages
                    .iter()
                    .filter_map(|m| m["message_id"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        anyhow::ensure!(found == [traced.as_str()], "{region} by key: {by_key}");
        let by_tag: Value = serde_json::from_str(
            &admin_in(
                &cluster,
                region,
                &["messages", "query", "--topic", TEST_TOPIC, "--tag", "new"],
                true,
            )
            .await?,
        )?;
        anyhow::ensure!(
            by_tag["messages"].as_array().map(Vec::len) == Some(2),
            "{region} by tag: {by_tag}"
        );
    }
    let from = started.to_string();
    let first_page: Value = serde_json::from_str(
        &admin(
            &cluster,
            &[
                "messages", "query", "--topic", TEST_TOPIC, "--from", &from, "--limit", "2",
            ],
            true,
        )
        .await?,
    )?;
    let token = first_page["next_page_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    anyhow::ensure!(
        first_page["messages"].as_array().map(Vec::len) == Some(2) && !token.is_empty(),
        "first page: {first_page}"
    );
    let second_page: Value = serde_json::from_str(
        &admin(
            &cluster,
            &[
                "messages", "query", "--topic", TEST_TOPIC, "--from", &from, "--limit", "2",
                "--page", &token,
            ],
            true,
        )
        .await?,
    )?;
    anyhow::ensure!(
        second_page["messages"][0]["message_id"] == ids[2].as_str()
            && second_page["next_page_token"] == "",
        "second page: {second_page}"
    );

    // The trace: sent and stored in a, arrived in b, delivered twice and
    // acknowledged in b, in that order, as both regions show it.
    let expected: Vec<(String, String, u64)> = [
        ("sent", "a", 0),
        ("stored", "a", 0),
        ("arrived", "b", 0),
        ("delivered", "b", 1),
        ("delivered", "b", 2),
        ("acknowledged", "b", 0),
    ]
    .into_iter()
    .map(|(event, region, attempt)| (event.to_owned(), region.to_owned(), attempt))
    .collect();
    for region in ["b", "a"] {
        let (shown, steps) = within(Duration::from_secs(30), "the whole trace", async {
            loop {
                let (shown, steps) = trace_in(&cluster, region, &traced).await?;
                if steps.len() >= expected.len() {
                    return anyhow::Ok((shown, steps));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await??;
        anyhow::ensure!(steps == expected, "trace in {region}: {steps:?}\n{shown}");
    }
    // People get a table; an unknown id is an error naming it.
    let table = admin(&cluster, &["messages", "show", &traced], false).await?;
    anyhow::ensure!(
        table.contains("acknowledged") && table.contains(GROUP),
        "{table}"
    );
    let topology = cluster.topology_path().display().to_string();
    let unknown = cluster
        .run_meridian(
            [
                "admin",
                "--topology",
                &topology,
                "messages",
                "show",
                "no-such-id",
            ],
            Duration::from_secs(30),
        )
        .await?;
    anyhow::ensure!(
        unknown.code() != Some(0) && unknown.stderr.contains("no-such-id"),
        "{unknown:?}"
    );
    cluster.finish();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_admin_api_matches_its_openapi_document() -> anyhow::Result<()> {
    let interpreter = crate::python_client::Python::from_env()?;
    let cluster = TestCluster::builder().regions(1).build().await?;
    let producer = start_producer(&cluster.router_endpoint("a")).await?;
    let mut ids = Vec::new();
    for index in 0..3 {
        ids.push(send(&producer, format!("json {index}").into_bytes()).await?);
    }
    let consumer = start_consumer(&cluster.router_endpoint("a"), GROUP).await?;
    anyhow::ensure!(take(&consumer, 3).await?.len() == 3);
    let python = crate::python_client::Python::for_cluster(interpreter, &cluster)?;
    let base_url = format!("http://{}", cluster.admin_endpoint("a"));
    let run = python
        .run(
            "admin_http.py",
            &crate::script::args([
                "--base-url",
                &base_url,
                "--topic",
                TEST_TOPIC,
                "--group",
                GROUP,
                "--message-id",
                &ids[0],
            ]),
        )
        .await?;
    run.succeeded(|_| Ok(()))?;
    cluster.finish();
    Ok(())
}
