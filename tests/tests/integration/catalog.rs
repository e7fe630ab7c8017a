//! Topics and consumer groups created, changed and deleted through
//! `meridian admin` while the deployment runs: stored by the node (they
//! survive a crash), replicated to every region, routed by every router,
//! replicated by the replicators like topics of the file, exported as a
//! topology file; bad definitions refused naming what is wrong.

use crate::support::{
    query_route_of, receive_exactly, send_to, start_consumer_of, start_producer_of, within,
};
use meridian_tests::meridian_proto::rocketmq::v2::Code;
use meridian_tests::{Role, TestCluster};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const TOPIC: &str = "orders";

/// Runs `meridian admin --region REGION ARGS`; (exit code 0?, stdout, stderr).
async fn admin(
    cluster: &TestCluster,
    region: &str,
    args: &[&str],
) -> anyhow::Result<(bool, String, String)> {
    let topology = cluster.topology_path().display().to_string();
    let mut all = vec!["admin", "--topology", &topology, "--region", region];
    all.extend_from_slice(args);
    let output = cluster.run_meridian(all, Duration::from_secs(30)).await?;
    Ok((output.code() == Some(0), output.stdout, output.stderr))
}

/// `admin` that must succeed, with `--json`, parsed.
async fn admin_json(cluster: &TestCluster, region: &str, args: &[&str]) -> anyhow::Result<Value> {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, stdout, stderr) = admin(cluster, region, &all).await?;
    anyhow::ensure!(ok, "meridian admin {args:?} in {region} failed: {stderr}");
    Ok(serde_json::from_str(&stdout)?)
}

/// The status code a router's QueryRoute answers for `topic`.
async fn route_code(endpoint: &str, topic: &str) -> anyhow::Result<Code> {
    let status = query_route_of(endpoint, topic)
        .await?
        .status
        .unwrap_or_default();
    Ok(Code::try_from(status.code).unwrap_or(Code::Unspecified))
}

/// Waits until `region`'s router answers `expected` for `topic`.
async fn until_routed(
    cluster: &TestCluster,
    region: &str,
    topic: &str,
    expected: Code,
) -> anyhow::Result<()> {
    within(
        Duration::from_secs(20),
        "the router to learn the change",
        async {
            loop {
                if route_code(&cluster.router_endpoint(region), topic).await? == expected {
                    return anyhow::Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await?
}

/// Waits until `check` holds for `region`'s answer to `args`.
async fn until_admin(
    cluster: &TestCluster,
    region: &str,
    args: &[&str],
    check: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    within(
        Duration::from_secs(20),
        "the change to reach the region",
        async {
            loop {
                let (ok, stdout, _) = admin(cluster, region, &[args, &["--json"]].concat()).await?;
                if ok {
                    let value: Value = serde_json::from_str(&stdout)?;
                    if check(&value) {
                        return anyhow::Ok(value);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await?
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_and_groups_change_at_run_time_in_every_region_and_survive_a_crash()
-> anyhow::Result<()> {
    let mut cluster = TestCluster::builder().regions(2).build().await?;
    // A topic the topology file does not have, held by both regions.
    let created = admin_json(
        &cluster,
        "a",
        &[
            "topics",
            "create",
            TOPIC,
            "--queues",
            "4",
            "--types",
            "normal,fifo",
            "--replicate-to",
            "a,b",
        ],
    )
    .await?;
    anyhow::ensure!(created["queues"] == 4, "{created}");
    until_routed(&cluster, "a", TOPIC, Code::Ok).await?;
    until_routed(&cluster, "b", TOPIC, Code::Ok).await?;
    // Its messages replicate like a file topic's.
    let producer = start_producer_of(&cluster.router_endpoint("a"), TOPIC).await?;
    let id = send_to(&producer, TOPIC, b"first order".to_vec()).await?;
    let consumer = start_consumer_of(&cluster.router_endpoint("b"), "billing", TOPIC).await?;
    receive_exactly(&consumer, TOPIC, &BTreeSet::from([id]), "region b").await?;

    // Updates and groups reach the other region.
    admin_json(
        &cluster,
        "a",
        &["topics", "update", TOPIC, "--retention-ms", "3600000"],
    )
    .await?;
    until_admin(&cluster, "b", &["topics", "describe", TOPIC], |topic| {
        topic["retention_ms"] == 3_600_000
    })
    .await?;
    admin_json(
        &cluster,
        "b",
        &["groups", "create", "billing", "--max-attempts", "3"],
    )
    .await?;
    until_admin(&cluster, "a", &["groups", "describe", "billing"], |group| {
        group["configured"] == true && group["max_attempts"] == 3
    })
    .await?;

    admin_json(
        &cluster,
        "a",
        &["groups", "update", "billing", "--fifo", "true"],
    )
    .await?;
    until_admin(&cluster, "b", &["groups", "describe", "billing"], |group| {
        group["fifo"] == true && group["max_attempts"] == 3
    })
    .await?;

    // Stored: a crash loses nothing.
    cluster.kill9("a", Role::Node)?;
    cluster.start("a", Role::Node).await?;
    let described = admin_json(&cluster, "a", &["topics", "describe", TOPIC]).await?;
    anyhow::ensure!(
        described["retention_ms"] == 3_600_000 && described["queues"] == 4,
        "{described}"
    );

    // The export is a topology file with the changes.
    let export = cluster.temp_dir().join("exported.toml");
    let export_arg = export.display().to_string();
    let (ok, _, stderr) = admin(&cluster, "a", &["export", "--output", &export_arg]).await?;
    anyhow::ensure!(ok, "export failed: {stderr}");
    let exported =
        meridian_tests::meridian_topology::Topology::load(&export).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        exported.regions == cluster.topology().regions
            && exported.topics.get(TOPIC).map(|topic| topic.queues) == Some(4)
            && exported
                .groups
                .get("billing")
                .map(|group| group.max_attempts)
                == Some(3),
        "exported: {}",
        std::fs::read_to_string(&export)?
    );

    // Bad changes are refused, naming what is wrong.
    for (args, names) in [
        (
            vec!["topics", "update", TOPIC, "--queues", "2"],
            "never shrink",
        ),
        (vec!["topics", "create", TOPIC], "exists"),
        (
            vec!["topics", "create", "elsewhere", "--replicate-to", "mars"],
            "mars",
        ),
        (vec!["topics", "create", "typed", "--types", "lite"], "lite"),
        (
            vec!["groups", "update", "nobody", "--fifo", "true"],
            "nobody",
        ),
        (
            vec![
                "groups", "reset", "nobody", "--topic", TOPIC, "--to", "earliest",
            ],
            "nobody",
        ),
    ] {
        let (ok, _, stderr) = admin(&cluster, "a", &args).await?;
        anyhow::ensure!(!ok && stderr.contains(names), "{args:?}: {stderr}");
    }

    // A deleted group is configured nowhere and forgotten where deleted.
    admin_json(&cluster, "b", &["groups", "delete", "billing"]).await?;
    until_admin(&cluster, "a", &["groups", "list"], |groups| {
        groups.as_array().is_some_and(|groups| {
            groups
                .iter()
                .all(|group| group["name"] != "billing" || group["configured"] == false)
        })
    })
    .await?;

    // A deleted topic is no longer routed, in either region.
    admin_json(&cluster, "b", &["topics", "delete", TOPIC]).await?;
    until_routed(&cluster, "a", TOPIC, Code::TopicNotFound).await?;
    until_routed(&cluster, "b", TOPIC, Code::TopicNotFound).await?;
    cluster.finish();
    Ok(())
}
