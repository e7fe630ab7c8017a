//! Failover drills with the official clients: a producer sends every 100 ms
//! through region a's router, in proxy mode, while a's node is killed. The
//! producer keeps its access point; its sends go on (served by b) with no
//! gap between successful sends over [`MAX_GAP_MS`]; and every send answered
//! OK is stored in some region (a's once its node is back). The producing
//! scripts are `steady_produce.py` and `steady_produce.js`.

use crate::json::Access as _;
use crate::script::{self, ScriptRun};
use crate::support::{client_message_ids, message_records, topic_count};
use anyhow::Context as _;
use meridian_tests::meridian_topology::RouterMode;
use meridian_tests::{Role, TEST_TOPIC, TestCluster};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The longest time a producer may go without a successful send.
pub const MAX_GAP_MS: u64 = 2_000;

/// A two-region cluster whose routers proxy.
pub async fn proxying_cluster() -> anyhow::Result<TestCluster> {
    script::two_region_cluster()
        .router_mode(RouterMode::Proxy)
        .build()
        .await
}

/// The steady producer scripts' arguments besides the endpoint.
pub fn producer_args() -> Vec<String> {
    script::args([
        "--topic",
        TEST_TOPIC,
        "--tag",
        "drill",
        "--seconds",
        "8",
        "--interval-ms",
        "100",
    ])
}

/// Kills a's node once `producing` is sending, then checks the gap and that
/// nothing answered OK was lost.
pub async fn producer_survives_node_loss(
    mut cluster: TestCluster,
    producing: JoinHandle<anyhow::Result<ScriptRun>>,
    client: &str,
) -> anyhow::Result<()> {
    meridian_tests::wait_until(
        Duration::from_secs(60),
        "sends to reach region a",
        || async { Ok::<_, anyhow::Error>(topic_count(&cluster, "a").await? >= 5) },
    )
    .await?;
    cluster.kill9("a", Role::Node)?;

    let produced = producing.await??;
    // Sends in flight at the kill fail, and the client logs them as errors.
    let output = produced.completed()?;
    let mut ok_ids = BTreeSet::new();
    let mut last_ok_ms: Option<u64> = None;
    let mut longest_gap_ms = 0;
    let mut failed = 0;
    let mut last_at_ms = 0;
    for send in output.field("sends")?.array()? {
        let at_ms = send.field("at_ms")?.u64()?;
        last_at_ms = at_ms;
        if send.field("ok")?.bool()? {
            ok_ids.insert(send.field("message_id")?.str()?.to_owned());
            if let Some(last) = last_ok_ms {
                longest_gap_ms = longest_gap_ms.max(at_ms.saturating_sub(last));
            }
            last_ok_ms = Some(at_ms);
        } else {
            failed += 1;
        }
    }
    // An outage that lasts to the end of the run counts too.
    let last_ok_ms = last_ok_ms.context("no send was answered OK")?;
    longest_gap_ms = longest_gap_ms.max(last_at_ms.saturating_sub(last_ok_ms));
    println!(
        "{client} drill: {} sends answered OK, {failed} failed, longest gap between OKs {longest_gap_ms} ms",
        ok_ids.len()
    );
    anyhow::ensure!(
        longest_gap_ms <= MAX_GAP_MS,
        "the {client} producer went {longest_gap_ms} ms without a successful send (budget {MAX_GAP_MS} ms)\n{produced}"
    );

    // Nothing answered OK is lost: a's node comes back with what it had.
    cluster.start("a", Role::Node).await?;
    let mut stored = client_message_ids(&message_records(&cluster, "a").await?);
    stored.extend(client_message_ids(&message_records(&cluster, "b").await?));
    let lost: Vec<&String> = ok_ids.iter().filter(|id| !stored.contains(id)).collect();
    anyhow::ensure!(
        lost.is_empty(),
        "sends answered OK but stored nowhere: {lost:?}"
    );
    cluster.finish();
    Ok(())
}
