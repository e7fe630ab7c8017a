//! Ordered (FIFO) messages: the official Python client sends interleaved
//! message groups and consumes them in a FIFO consumer group that fails
//! messages now and then; each group is processed in order. The official
//! Rust client's FIFO messages land in one queue per group whatever queue
//! it picks, and survive a node crash in order.

use crate::python_client::Python;
use crate::support::{
    CLIENT_CALL_TIMEOUT, LONG_POLLING, ack, start_consumer, start_producer, within,
};
use anyhow::Context as _;
use meridian_tests::{Role, TEST_TOPIC, TestCluster};
use meridian_topology::{FlushMode, Group};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use std::collections::BTreeMap;
use std::time::Duration;

const FIFO_GROUP: &str = "in-order";

fn fifo_group() -> Group {
    Group {
        fifo: true,
        ..Group::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn python_fifo_consumer_processes_each_message_group_in_order_despite_failures()
-> anyhow::Result<()> {
    let interpreter = Python::from_env()?;
    let cluster = TestCluster::builder()
        .regions(1)
        .group(FIFO_GROUP, fifo_group())
        .build()
        .await?;
    let python = Python::for_cluster(interpreter, &cluster)?;
    let run = python
        .run(
            "fifo.py",
            &crate::script::args([
                "--endpoints",
                &cluster.router_endpoint("a"),
                "--topic",
                TEST_TOPIC,
                "--group",
                FIFO_GROUP,
                "--message-groups",
                "3",
                "--per-group",
                "500",
                "--fail-every",
                "7",
            ]),
        )
        .await?;
    run.succeeded(|output| {
        use crate::json::Access as _;
        for group in ["group-0", "group-1", "group-2"] {
            let processed: Vec<u64> = output
                .field("processed")?
                .field(group)?
                .array()?
                .iter()
                .map(|index| index.u64())
                .collect::<anyhow::Result<_>>()?;
            let expected: Vec<u64> = (0..500).collect();
            anyhow::ensure!(processed == expected, "{group} processed {processed:?}");
        }
        let failed = output.field("failed")?.array()?.len();
        anyhow::ensure!(failed == 3 * (500 / 7), "{failed} failures");
        for (body, attempt) in output.field("redelivered_attempts")?.object()? {
            anyhow::ensure!(
                attempt.u64()? >= 2,
                "{body} came again as attempt {attempt:?}"
            );
        }
        Ok(())
    })?;
    println!("python fifo.py: {:?}", run.elapsed);
    cluster.finish();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_fifo_messages_keep_their_group_order_across_a_node_crash() -> anyhow::Result<()> {
    let mut cluster = TestCluster::builder()
        .regions(1)
        .flush(FlushMode::Sync)
        .group(FIFO_GROUP, fifo_group())
        .build()
        .await?;
    let producer = start_producer(&cluster.router_endpoint("a")).await?;
    let groups = ["red", "green"];
    let per_group = 40;
    for index in 0..per_group {
        for group in groups {
            let message = MessageBuilder::fifo_message_builder(
                TEST_TOPIC,
                format!("{group}:{index}").into_bytes(),
                group,
            )
            .build()
            .map_err(|error| anyhow::anyhow!("build: {error:?}"))?;
            within(CLIENT_CALL_TIMEOUT, "send", producer.send(message))
                .await?
                .map_err(|error| anyhow::anyhow!("send: {error:?}"))?;
        }
    }
    let consumer = start_consumer(&cluster.router_endpoint("a"), FIFO_GROUP).await?;
    let filter = FilterExpression::new(FilterType::Tag, "*");
    let mut processed: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut crashed = false;
    within(Duration::from_secs(90), "consume every message", async {
        while processed.values().map(Vec::len).sum::<usize>() < groups.len() * per_group {
            let messages = match within(
                LONG_POLLING + CLIENT_CALL_TIMEOUT,
                "receive",
                consumer.receive_with(TEST_TOPIC, &filter, 8, Duration::from_secs(2)),
            )
            .await?
            {
                Ok(messages) => messages,
                // The node is coming back: try again.
                Err(_) if crashed => continue,
                Err(error) => anyhow::bail!("receive: {error:?}"),
            };
            for message in messages {
                let group = message
                    .message_group()
                    .context("a message group")?
                    .to_owned();
                let body = String::from_utf8(message.body().to_vec())?;
                let index: u32 = body.split(':').nth(1).context("an index")?.parse()?;
                let seen = processed.entry(group.clone()).or_default();
                anyhow::ensure!(
                    index as usize <= seen.len(),
                    "{group}: {index} came before {}",
                    seen.len()
                );
                if index as usize == seen.len() {
                    seen.push(index);
                }
                // Acks may fail while the node is down: the message comes again.
                let _ = ack(&consumer, &message).await;
            }
            if !crashed && processed.values().map(Vec::len).sum::<usize>() >= per_group {
                crashed = true;
                cluster.kill9("a", Role::Node)?;
                cluster.start("a", Role::Node).await?;
            }
        }
        anyhow::Ok(())
    })
    .await??;
    for group in groups {
        let expected: Vec<u32> = (0..u32::try_from(per_group)?).collect();
        anyhow::ensure!(
            processed[group] == expected,
            "{group}: {:?}",
            processed[group]
        );
    }
    cluster.finish();
    Ok(())
}
