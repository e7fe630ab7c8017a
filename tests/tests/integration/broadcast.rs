//! Broadcast consumption: every consumer instance (client id) of a group
//! configured `broadcast = true` gets every message, with its own progress
//! and acknowledgements, which survive a node crash; a clustering group on
//! the same topic still shares its messages between its instances.

use crate::support::{
    CLIENT_CALL_TIMEOUT, LONG_POLLING, ack, send, start_consumer, start_producer, within,
};
use meridian_tests::{Role, TEST_TOPIC, TestCluster};
use meridian_topology::{FlushMode, Group};
use rocketmq::SimpleConsumer;
use rocketmq::model::common::{FilterExpression, FilterType};
use std::collections::BTreeSet;
use std::time::Duration;

const BROADCAST_GROUP: &str = "fan-out";
const SHARED_GROUP: &str = "shared";
const MESSAGES: usize = 30;
const INSTANCES: usize = 3;

/// What one consumer instance has acknowledged, by body.
#[derive(Default)]
struct Progress {
    acked: BTreeSet<String>,
}

impl Progress {
    /// Receives once and acknowledges what came; a body this instance
    /// acknowledged before must not come again.
    async fn receive_and_ack(
        &mut self,
        consumer: &SimpleConsumer,
        tolerate_errors: bool,
    ) -> anyhow::Result<()> {
        let filter = FilterExpression::new(FilterType::Tag, "*");
        let received = within(
            LONG_POLLING + CLIENT_CALL_TIMEOUT,
            "receive",
            consumer.receive_with(TEST_TOPIC, &filter, 8, Duration::from_secs(30)),
        )
        .await?;
        let messages = match received {
            Ok(messages) => messages,
            Err(_) if tolerate_errors => return Ok(()),
            Err(error) => anyhow::bail!("receive: {error:?}"),
        };
        for message in messages {
            let body = String::from_utf8(message.body().to_vec())?;
            anyhow::ensure!(
                !self.acked.contains(&body),
                "{body} came again after its acknowledgement (attempt {})",
                message.delivery_attempt()
            );
            if ack(consumer, &message).await.is_ok() {
                self.acked.insert(body);
            } else {
                anyhow::ensure!(tolerate_errors, "ack of {body} failed");
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_broadcast_instance_gets_every_message_across_a_node_crash() -> anyhow::Result<()> {
    let mut cluster = TestCluster::builder()
        .regions(1)
        .flush(FlushMode::Sync)
        .group(
            BROADCAST_GROUP,
            Group {
                broadcast: true,
                ..Group::default()
            },
        )
        .build()
        .await?;
    let endpoint = cluster.router_endpoint("a");
    let producer = start_producer(&endpoint).await?;
    let expected: BTreeSet<String> = (0..MESSAGES).map(|index| format!("m{index}")).collect();
    for body in &expected {
        send(&producer, body.clone().into_bytes()).await?;
    }
    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        instances.push((
            start_consumer(&endpoint, BROADCAST_GROUP).await?,
            Progress::default(),
        ));
    }
    // Each instance takes part of the messages, then the node crashes.
    for (consumer, progress) in &mut instances {
        while progress.acked.len() < MESSAGES / 3 {
            progress.receive_and_ack(consumer, false).await?;
        }
    }
    cluster.kill9("a", Role::Node)?;
    cluster.start("a", Role::Node).await?;
    within(
        Duration::from_secs(120),
        "every instance gets every message",
        async {
            for (consumer, progress) in &mut instances {
                while progress.acked.len() < MESSAGES {
                    progress.receive_and_ack(consumer, true).await?;
                }
            }
            anyhow::Ok(())
        },
    )
    .await??;
    for (index, (_, progress)) in instances.iter().enumerate() {
        anyhow::ensure!(
            progress.acked == expected,
            "instance {index} acked {:?}",
            progress.acked
        );
    }

    // A clustering group on the same topic shares the messages: two
    // instances together get each message once.
    let shared = [
        start_consumer(&endpoint, SHARED_GROUP).await?,
        start_consumer(&endpoint, SHARED_GROUP).await?,
    ];
    let mut together = Progress::default();
    within(
        Duration::from_secs(60),
        "the shared group's messages",
        async {
            while together.acked.len() < MESSAGES {
                for consumer in &shared {
                    together.receive_and_ack(consumer, false).await?;
                }
            }
            anyhow::Ok(())
        },
    )
    .await??;
    anyhow::ensure!(together.acked == expected);
    cluster.finish();
    Ok(())
}
