//! `meridian status`: node health and replication backlog per link.

use crate::support::{send, start_producer};
use meridian_tests::{CommandOutput, Role, TestCluster, wait_until};
use std::time::Duration;

const MESSAGES: u64 = 20;

async fn status(cluster: &TestCluster) -> CommandOutput {
    let topology = cluster.topology_path().to_owned();
    let args = [
        "status".as_ref(),
        "--topology".as_ref(),
        topology.as_os_str(),
    ];
    cluster
        .run_meridian(args, Duration::from_secs(30))
        .await
        .expect("meridian status runs")
}

/// (acknowledged, backlog) of the link `from -> to` in a status report.
fn link(output: &CommandOutput, from: &str, to: &str) -> Option<(u64, u64)> {
    let prefix = format!("{from} -> {to} ");
    let line = output
        .stdout
        .lines()
        .find(|line| line.starts_with(&prefix))?;
    let mut numbers = line[prefix.len()..].split_whitespace();
    Some((numbers.next()?.parse().ok()?, numbers.next()?.parse().ok()?))
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_replication_backlog_draining_and_a_dead_node() {
    let mut cluster = TestCluster::builder()
        .regions(2)
        .build()
        .await
        .expect("start a two-region cluster");
    let producer = start_producer(&cluster.router_endpoint("a"))
        .await
        .expect("producer via a's router");
    for index in 0..MESSAGES {
        send(&producer, format!("status {index}").into_bytes())
            .await
            .expect("send via a");
    }

    wait_until(
        Duration::from_secs(30),
        "a -> b backlog to drain",
        || async {
            let output = status(&cluster).await;
            output.status.success()
                && link(&output, "a", "b")
                    .is_some_and(|(acknowledged, backlog)| acknowledged >= MESSAGES && backlog == 0)
        },
    )
    .await
    .expect("the link a -> b catches up and status shows it");
    let healthy = status(&cluster).await;
    assert!(
        healthy
            .stdout
            .lines()
            .any(|line| line.starts_with("a ") && line.contains(" up ")),
        "region a is shown up:\n{healthy}"
    );
    // Each node's storage memory: in use / its budget (the default 256 MiB).
    let region_a = healthy
        .stdout
        .lines()
        .find(|line| line.starts_with("a "))
        .expect("a line for region a");
    let memory = region_a
        .split_whitespace()
        .nth(4)
        .and_then(|cell| cell.split_once('/'))
        .and_then(|(used, budget)| Some((used.parse::<u64>().ok()?, budget.parse::<u64>().ok()?)));
    assert!(
        memory.is_some_and(|(used, budget)| budget == 256 && used <= budget),
        "region a's storage memory is shown as used/256:\n{healthy}"
    );

    // With b's replicator down, what a holds for b is listed: messages and
    // how old the oldest is.
    cluster
        .kill9("b", Role::Replicator)
        .expect("kill b's replicator");
    for index in 0..5 {
        send(&producer, format!("held {index}").into_bytes())
            .await
            .expect("send via a");
    }
    let waiting = status(&cluster).await;
    let line = waiting
        .stdout
        .lines()
        .find(|line| line.starts_with("a -> b "))
        .expect("the a -> b line")
        .to_owned();
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        columns.len(),
        8,
        "link, acknowledged, backlog, messages, acks, oldest: {line}"
    );
    let messages: u64 = columns[5].parse().expect("a message count");
    assert!(messages >= 5, "the held messages are counted: {line}");
    assert!(columns[7].ends_with('s'), "the oldest one's age: {line}");
    cluster
        .start("b", Role::Replicator)
        .await
        .expect("restart b's replicator");

    cluster.kill9("b", Role::Node).expect("kill b's node");
    let output = status(&cluster).await;
    assert_eq!(output.code(), Some(1), "a region is down:\n{output}");
    assert!(
        output
            .stdout
            .lines()
            .any(|line| line.starts_with("b ") && line.contains(" down ")),
        "region b is shown down:\n{output}"
    );
    assert!(
        output.stderr.contains('b'),
        "stderr names region b:\n{output}"
    );
    assert_eq!(
        link(&output, "b", "a"),
        None,
        "b's outgoing links are unknown:\n{output}"
    );

    let _ = tokio::time::timeout(Duration::from_secs(10), producer.shutdown()).await;
    cluster.finish();
}
