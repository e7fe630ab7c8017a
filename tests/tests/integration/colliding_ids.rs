//! Different messages that share a message id are all stored and delivered,
//! whichever official client sent them (issue 6, item 7): two producers whose
//! hosts, pids (1, in containers) and clock seconds coincide generate the same
//! ids. The Python and Node.js client tests run [`scenario`] with their
//! producer script; the script's `--colliding-message-ids` makes the
//! unmodified client's id generator produce such ids.

use crate::json::{Access as _, Value};
use crate::script::{self, ScriptRun};
use crate::support::{ack, receive, start_consumer, within};
use meridian_tests::meridian_proto::meridian::v1::HealthRequest;
use meridian_tests::{TEST_TOPIC, TestCluster};
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
        "random bodies should all differ"
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
