//! The router sends clients to the nearest healthy region.

use crate::support::query_route;
use meridian_tests::{Role, TestCluster, wait_until};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::Instant;

/// How fast a router must notice its node is gone.
const FAILOVER_BUDGET: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread")]
async fn router_fails_over_when_node_killed() {
    // Three regions so that "nearest" is a real choice: from a, b (10 ms) is
    // nearer than c (20 ms).
    let mut cluster = TestCluster::builder()
        .regions(3)
        .build()
        .await
        .expect("start a three-region cluster");
    for region in cluster.regions() {
        let route = query_route(&cluster.router_endpoint(&region))
            .await
            .expect("QueryRoute while all is healthy");
        assert_eq!(
            route,
            BTreeSet::from([cluster.node_endpoint(&region)]),
            "the router of healthy region {region} must route to its own node"
        );
    }

    let router_a = cluster.router_endpoint("a");
    let node_b = cluster.node_endpoint("b");
    cluster.kill9("a", Role::Node).expect("kill -9 a's node");
    let killed_at = Instant::now();
    wait_until(
        FAILOVER_BUDGET * 3,
        "a's router routes to b's node",
        || async {
            let route = query_route(&router_a).await?;
            anyhow::ensure!(
                route.len() == 1 && route.contains(&node_b),
                "a's router answered {route:?}"
            );
            anyhow::Ok(true)
        },
    )
    .await
    .expect("a's router fails over to b");
    let elapsed = killed_at.elapsed();
    assert!(
        elapsed <= FAILOVER_BUDGET,
        "a's router took {elapsed:?} to fail over, the budget is {FAILOVER_BUDGET:?}"
    );
    eprintln!("a's router failed over to b {elapsed:?} after the kill");
    cluster.finish();
}
