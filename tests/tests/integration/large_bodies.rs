//! The largest bodies with each official client: 4 MiB (4,194,304 bytes) is
//! the most a producer may send (`publishing.max_body_size`), and how much
//! a consumer can take depends on the client (`meridian_face::delivery`):
//!
//! * Python sends and receives exactly 4 MiB of random bytes (its channel
//!   has no inbound limit);
//! * Node.js sends exactly 4 MiB and receives it when the body compresses
//!   (the face sends it GZIP-encoded under grpc-js's 4 MiB inbound limit);
//! * Rust sends exactly 4 MiB (read here by Python) and receives a body
//!   whose whole delivery fits tonic 0.9's 4 MiB inbound limit: 4 MiB less
//!   1 KiB leaves room for the envelope (topic, ids, receipt handle). A
//!   delivery over its limit is not sent to it but released at once, and
//!   reaches the dead-letter topic after the group's max attempts.
//!
//! One byte more is refused with MESSAGE_BODY_TOO_LARGE (tests in the node's
//! messaging suite and in the Node.js producer's settings test).

use crate::json::Access as _;
use crate::nodejs_client::{NodeJs, succeeded};
use crate::python_client::Python;
use crate::script;
use crate::support::{
    CLIENT_CALL_TIMEOUT, LONG_POLLING, ack, start_consumer, start_producer, within,
};
use meridian_tests::{Role, TEST_TOPIC, TestCluster};
use meridian_topology::Group;
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use sha2::{Digest as _, Sha256};
use std::time::Duration;

/// `publishing.max_body_size`: 4 MiB.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// A group with only Rust consumers, which cannot take 4 MiB deliveries.
const RUST_ONLY_GROUP: &str = "large-rust-only";
/// The largest body the tests hand the Rust client: room for its envelope.
const RUST_RECEIVABLE: usize = MAX_BODY - 1024;

/// Bytes that do not compress (xorshift), so no encoding can shrink them.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The one message a consumer script received: (size, sha256).
fn received_one(output: &crate::json::Value) -> anyhow::Result<(u64, String)> {
    let received = output.field("received")?.array()?;
    anyhow::ensure!(received.len() == 1, "received {} messages", received.len());
    let message = &received[0];
    Ok((
        message.field("size")?.u64()?,
        message.field("sha256")?.str()?.to_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_largest_bodies_round_trip_with_every_official_client() -> anyhow::Result<()> {
    let interpreter = Python::from_env()?;
    let modules = NodeJs::from_env()?;
    let mut cluster = TestCluster::builder()
        .regions(1)
        .group(
            RUST_ONLY_GROUP,
            Group {
                max_attempts: 2,
                ..Group::default()
            },
        )
        .build()
        .await?;
    let python = Python::for_cluster(interpreter, &cluster)?;
    let node = NodeJs::for_cluster(modules, &cluster)?;
    let endpoint = cluster.router_endpoint("a");
    let max = MAX_BODY.to_string();
    let consume_of = |topic: &str, group: &str, tag: &str| {
        script::args([
            "--endpoints",
            &endpoint,
            "--topic",
            topic,
            "--group",
            group,
            "--filter",
            tag,
            "--expect",
            "1",
        ])
    };
    let consume = |group: &str, tag: &str| consume_of(TEST_TOPIC, group, tag);
    let dead_letters = format!("%DLQ%{RUST_ONLY_GROUP}");

    // Python: exactly 4 MiB of random bytes, both ways.
    let sent = python
        .run(
            "produce.py",
            &script::args([
                "--endpoints",
                &endpoint,
                "--topic",
                TEST_TOPIC,
                "--tag",
                "large-python",
                &format!("--sizes={max}"),
            ]),
        )
        .await?;
    let python_sha = sent
        .succeeded(|_| Ok(()))?
        .field("sent")?
        .array()?
        .first()
        .ok_or_else(|| anyhow::anyhow!("nothing sent"))?
        .field("sha256")?
        .str()?
        .to_owned();
    // A crash between send and receive loses nothing.
    cluster.kill9("a", Role::Node)?;
    cluster.start("a", Role::Node).await?;
    python
        .run("consume.py", &consume("large-python", "large-python"))
        .await?
        .succeeded(|output| {
            anyhow::ensure!(received_one(output)? == (MAX_BODY as u64, python_sha.clone()));
            Ok(())
        })?;

    // Node.js: exactly 4 MiB that compresses, both ways (delivered GZIP).
    let sent = node
        .run(
            "produce.js",
            &script::args([
                "--endpoints",
                &endpoint,
                "--topic",
                TEST_TOPIC,
                "--tag",
                "large-nodejs",
                "--compressible",
                "--sizes",
                &max,
            ]),
        )
        .await?;
    let node_sha = succeeded(&sent)?
        .field("sent")?
        .array()?
        .first()
        .ok_or_else(|| anyhow::anyhow!("nothing sent\n{sent}"))?
        .field("sha256")?
        .str()?
        .to_owned();
    let received = node
        .run("consume.js", &consume("large-nodejs", "large-nodejs"))
        .await?;
    let output = succeeded(&received)?;
    anyhow::ensure!(
        received_one(output)? == (MAX_BODY as u64, node_sha),
        "{received}"
    );
    let first = &output.field("received")?.array()?[0];
    anyhow::ensure!(!first.field("corrupted")?.bool()?, "{received}");

    // Rust: sends exactly 4 MiB (Python reads it) and receives the largest
    // body whose delivery fits its 4 MiB inbound limit.
    let producer = start_producer(&endpoint).await?;
    let send = |tag: &'static str, body: Vec<u8>| {
        let message = MessageBuilder::builder()
            .set_topic(TEST_TOPIC)
            .set_tag(tag)
            .set_body(body)
            .build();
        let producer = &producer;
        async move {
            let message = message.map_err(|error| anyhow::anyhow!("build: {error:?}"))?;
            within(CLIENT_CALL_TIMEOUT, "send", producer.send(message))
                .await?
                .map_err(|error| anyhow::anyhow!("send: {error:?}"))
        }
    };
    let exact = noise(MAX_BODY, 7);
    send("large-rust", exact.clone()).await?;
    python
        .run("consume.py", &consume("large-rust-python", "large-rust"))
        .await?
        .succeeded(|output| {
            anyhow::ensure!(received_one(output)? == (MAX_BODY as u64, sha256_hex(&exact)));
            Ok(())
        })?;
    let receivable = noise(RUST_RECEIVABLE, 11);
    send("rust-receivable", receivable.clone()).await?;
    let consumer = start_consumer(&endpoint, "large-rust").await?;
    let filter = FilterExpression::new(FilterType::Tag, "rust-receivable");
    let messages = within(
        LONG_POLLING + CLIENT_CALL_TIMEOUT,
        "receive",
        consumer.receive_with(TEST_TOPIC, &filter, 1, Duration::from_secs(30)),
    )
    .await?
    .map_err(|error| anyhow::anyhow!("receive: {error:?}"))?;
    let message = messages
        .first()
        .ok_or_else(|| anyhow::anyhow!("nothing received"))?;
    anyhow::ensure!(message.body() == receivable.as_slice(), "the body changed");
    ack(&consumer, message).await?;

    // A Rust consumer never gets the exact 4 MiB of noise (no shape fits
    // its limit): it is released at once each time, and after the group's
    // max attempts it is in the dead-letter topic, whole.
    let only_rust = start_consumer(&endpoint, RUST_ONLY_GROUP).await?;
    let filter = FilterExpression::new(FilterType::Tag, "large-rust");
    for _ in 0..3 {
        let messages = within(
            LONG_POLLING + CLIENT_CALL_TIMEOUT,
            "receive",
            only_rust.receive_with(TEST_TOPIC, &filter, 1, Duration::from_secs(30)),
        )
        .await?
        .map_err(|error| anyhow::anyhow!("receive: {error:?}"))?;
        anyhow::ensure!(
            messages.is_empty(),
            "a delivery over the client's limit was sent"
        );
    }
    python
        .run(
            "consume.py",
            &consume_of(&dead_letters, "dlq-reader", "large-rust"),
        )
        .await?
        .succeeded(|output| {
            anyhow::ensure!(received_one(output)? == (MAX_BODY as u64, sha256_hex(&exact)));
            Ok(())
        })?;
    cluster.finish();
    Ok(())
}
