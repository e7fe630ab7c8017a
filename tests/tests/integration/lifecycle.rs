//! Process lifecycle: graceful shutdown, and one node per data dir.

use crate::support::last_sequence;
use meridian_tests::{CommandOutput, Role, TestCluster};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn graceful_sigterm_exits_zero() {
    let mut cluster = TestCluster::builder()
        .regions(2)
        .build()
        .await
        .expect("start a two-region cluster");
    // Dependents first, the node last; `stop` asserts exit code 0.
    for role in [Role::Router, Role::Replicator, Role::Node] {
        cluster
            .stop("a", role)
            .await
            .unwrap_or_else(|error| panic!("SIGTERM {role} of a: {error:#}"));
    }
    // A graceful exit releases everything: the same ports and data dir serve again.
    for role in Role::ALL {
        cluster
            .start("a", role)
            .await
            .unwrap_or_else(|error| panic!("restart {role} of a: {error:#}"));
    }
    last_sequence(&cluster, "a")
        .await
        .expect("a's node answers Health after the restart");
    cluster.finish();
}

/// Runs a second `meridian <role>` for region a, which must exit by itself.
async fn second_process(cluster: &TestCluster, role: Role) -> CommandOutput {
    let topology = cluster.topology_path().to_owned();
    let args = [
        role.as_str().as_ref(),
        "--topology".as_ref(),
        topology.as_os_str(),
        "--region".as_ref(),
        "a".as_ref(),
    ];
    cluster
        .run_meridian(args, Duration::from_secs(30))
        .await
        .unwrap_or_else(|error| panic!("a second {role} for region a exits by itself: {error:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn data_dir_lock_refuses_second_node() {
    let mut cluster = TestCluster::builder()
        .regions(2)
        .build()
        .await
        .expect("start a two-region cluster");
    let output = second_process(&cluster, Role::Node).await;

    assert!(
        !output.status.success(),
        "a second node on a's data dir must be refused:\n{output}"
    );
    let stderr = output.stderr.to_lowercase();
    assert!(
        stderr.contains("lock"),
        "stderr does not say the data dir is locked:\n{output}"
    );
    let data_dir = cluster.data_dir("a");
    assert!(
        output.stderr.contains(&*data_dir.to_string_lossy())
            || stderr.contains("data dir")
            || stderr.contains("data_dir")
            || stderr.contains("data directory"),
        "stderr does not mention the data directory:\n{output}"
    );
    assert!(
        !output.stderr.contains("panicked"),
        "the second node panicked:\n{output}"
    );

    assert!(
        cluster.is_running("a", Role::Node),
        "the first node of a must keep running"
    );
    last_sequence(&cluster, "a")
        .await
        .expect("the first node of a still answers Health");

    // The replicator takes its lock before it reports ready: a second one is
    // refused without ever printing the readiness line.
    let output = second_process(&cluster, Role::Replicator).await;
    assert!(
        !output.status.success(),
        "a second replicator on a's data dir must be refused:\n{output}"
    );
    assert!(
        output.stderr.contains("locked by another process"),
        "stderr does not say the data dir is locked:\n{output}"
    );
    assert!(
        !output.stdout.contains("MERIDIAN_READY"),
        "a refused replicator must not report ready:\n{output}"
    );
    assert!(
        cluster.is_running("a", Role::Replicator),
        "the first replicator of a must keep running"
    );
    cluster.finish();
}
