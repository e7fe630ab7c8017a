//! Different messages that share a message id are all stored and delivered,
//! whichever official client sent them (issue 6, item 7): two producers whose
//! hosts, pids (1, in containers) and clock seconds coincide generate the same
//! ids. The Python and Node.js client tests run [`scenario`] with their
//! producer script; the script's `--colliding-message-ids` makes the
//! unmodified client's id generator produce such ids. The Rust client takes
//! any type implementing its public `Message` trait, whose message id is the
//! sender's to choose: the test here gives two Rust producers the same ids.

use crate::json::{Access as _, Value};
use crate::script::{self, ScriptRun};
use crate::support::{CLIENT_CALL_TIMEOUT, ack, receive, start_consumer, start_producer, within};
use meridian_tests::meridian_proto::meridian::v1::HealthRequest;
use meridian_tests::{TEST_TOPIC, TestCluster};
use rocketmq::model::message::Message;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Messages each of the two producers sends.
const MESSAGES: usize = 5;

/// (message id, body) of every message a producer script sent.
fn sent(run: &ScriptRun) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let output: &Value = run.succeeded(|_| Ok(()))?;
    output
        .field("sent")?
        .array()?
        .iter()
        .map(|entry| {
            Ok((
                entry.field("message_id")?.str()?.to_owned(),
                script::decode_hex(entry.field("body_hex")?.str()?)?,
            ))
        })
        .collect()
}

/// Runs the producer script (`produce`, given its arguments) twice with
/// colliding ids through region a's router, then checks that a new group in
/// region b receives all 2 × [`MESSAGES`] bodies, and that region a counted
/// the reused ids.
pub async fn scenario<F, Fut>(cluster: &TestCluster, mut produce: F) -> anyhow::Result<()>
where
    F: FnMut(Vec<String>) -> Fut,
    Fut: Future<Output = anyhow::Result<ScriptRun>>,
{
    let sizes = ["64"; MESSAGES].join(",");
    let args = vec![
        "--endpoints".to_owned(),
        cluster.router_endpoint("a"),
        "--topic".to_owned(),
        TEST_TOPIC.to_owned(),
        format!("--sizes={sizes}"),
        "--colliding-message-ids".to_owned(),
    ];
    let first = sent(&produce(args.clone()).await?)?;
    let second = sent(&produce(args).await?)?;
    expect_every_message(cluster, first, second).await
}

/// The ids of the two producers' sends collide, their bodies differ, region
/// a counted the reused ids, and a new group in region b receives every body.
async fn expect_every_message(
    cluster: &TestCluster,
    first: Vec<(String, Vec<u8>)>,
    second: Vec<(String, Vec<u8>)>,
) -> anyhow::Result<()> {
    let ids =
        |sent: &[(String, Vec<u8>)]| sent.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
    anyhow::ensure!(
        ids(&first) == ids(&second),
        "the two producers' ids should collide: {:?} vs {:?}",
        ids(&first),
        ids(&second)
    );
    let mut expected: Vec<Vec<u8>> = first
        .into_iter()
        .chain(second)
        .map(|(_, body)| body)
        .collect();
    expected.sort();
    expected.dedup();
    anyhow::ensure!(
        expected.len() == 2 * MESSAGES,
        "the bodies should all differ"
    );

    let health = cluster
        .admin_client("a")
        .await?
        .health(HealthRequest {})
        .await?
        .into_inner();
    anyhow::ensure!(
        health.reused_client_ids == MESSAGES as u64,
        "region a counted {} reused message ids, expected {MESSAGES}",
        health.reused_client_ids
    );

    let consumer = start_consumer(&cluster.router_endpoint("b"), "colliding-ids").await?;
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.len() < expected.len() && Instant::now() < deadline {
        for message in receive(&consumer).await? {
            ack(&consumer, &message).await?;
            received.push(message.body().to_vec());
        }
    }
    let _ = within(
        Duration::from_secs(10),
        "consumer shutdown",
        consumer.shutdown(),
    )
    .await;
    received.sort();
    anyhow::ensure!(
        received == expected,
        "region b delivered {} messages, expected the {} different ones sent",
        received.len(),
        expected.len()
    );
    Ok(())
}

/// A message whose id the test chooses, for the Rust client's public
/// `Message` trait (its `MessageBuilder` always generates the id).
struct WithId {
    id: String,
    body: Vec<u8>,
}

impl Message for WithId {
    fn take_message_id(&mut self) -> String {
        self.id.clone()
    }
    fn take_topic(&mut self) -> String {
        TEST_TOPIC.to_owned()
    }
    fn take_body(&mut self) -> Vec<u8> {
        self.body.clone()
    }
    fn take_tag(&mut self) -> Option<String> {
        None
    }
    fn take_keys(&mut self) -> Vec<String> {
        Vec::new()
    }
    fn take_properties(&mut self) -> HashMap<String, String> {
        HashMap::new()
    }
    fn take_message_group(&mut self) -> Option<String> {
        None
    }
    fn take_delivery_timestamp(&mut self) -> Option<i64> {
        None
    }
    fn transaction_enabled(&mut self) -> bool {
        false
    }
}

/// Two official Rust producers send different messages with the same ids
/// (RocketMQ's id layout, as two containers' producers would make them).
#[tokio::test(flavor = "multi_thread")]
async fn rust_producers_with_colliding_message_ids_lose_nothing() -> anyhow::Result<()> {
    let cluster = script::two_region_cluster().build().await?;
    let mut sends = Vec::new();
    for producer_index in 0..2u8 {
        let producer = start_producer(&cluster.router_endpoint("a")).await?;
        let mut sent = Vec::new();
        for index in 0..MESSAGES {
            let id = format!("010A0000000001000105000000{index:08X}");
            let body = format!("producer {producer_index}, message {index}").into_bytes();
            let message = WithId {
                id: id.clone(),
                body: body.clone(),
            };
            let receipt = within(CLIENT_CALL_TIMEOUT, "send", producer.send(message))
                .await?
                .map_err(|error| anyhow::anyhow!("send message {index}: {error:?}"))?;
            anyhow::ensure!(
                receipt.message_id() == id,
                "the receipt names {}, sent {id}",
                receipt.message_id()
            );
            sent.push((id, body));
        }
        let _ = within(
            Duration::from_secs(10),
            "producer shutdown",
            producer.shutdown(),
        )
        .await;
        sends.push(sent);
    }
    let second = sends.pop().unwrap_or_default();
    let first = sends.pop().unwrap_or_default();
    expect_every_message(&cluster, first, second).await?;
    cluster.finish();
    Ok(())
}
