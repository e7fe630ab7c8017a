use super::*;

#[tokio::test]
async fn a_cluster_of_fake_processes_starts_stops_restarts_and_logs() {
    let directory = tempfile::tempdir().expect("temp dir");
    let binary = crate::fake::binary(directory.path(), crate::fake::SERVES_UNTIL_SIGTERM);
    let mut cluster = TestCluster::builder()
        .regions(2)
        .binary(&binary)
        .build()
        .await
        .expect("start a cluster of fakes");
    let written = std::fs::read_to_string(cluster.topology_path()).expect("read the topology");
    let parsed: Topology = toml::from_str(&written).expect("parse the topology");
    assert_eq!(&parsed, cluster.topology());
    for region in cluster.regions() {
        assert!(cluster.data_dir(&region).is_dir());
        for role in Role::ALL {
            assert!(cluster.is_running(&region, role), "{role} of {region} runs");
        }
    }

    cluster
        .stop("a", Role::Router)
        .await
        .expect("SIGTERM → exit 0");
    assert!(!cluster.is_running("a", Role::Router));
    cluster.start("a", Role::Router).await.expect("restart");
    assert!(
        cluster.start("a", Role::Router).await.is_err(),
        "already running"
    );
    cluster.kill9("b", Role::Node).expect("kill -9");
    assert!(!cluster.is_running("b", Role::Node));
    assert!(
        cluster.kill9("b", Role::Node).is_err(),
        "not running any more"
    );

    let log = cluster.log("a", Role::Router);
    assert_eq!(
        log.matches("MERIDIAN_READY role=router region=a").count(),
        2,
        "{log}"
    );
    assert!(log.contains("got SIGTERM"), "{log}");
    assert!(cluster.log("b", Role::Node).contains("SIGKILL"));

    let output = cluster
        .run_meridian(["bogus"], Duration::from_secs(10))
        .await
        .expect("run a one-shot command");
    assert_eq!(output.code(), Some(64));
    assert!(output.stderr.contains("usage"), "{output}");

    let root = cluster.temp_dir().to_owned();
    cluster.finish();
    assert!(!root.exists(), "a finished cluster removes its temp dir");
}

#[tokio::test]
async fn a_cluster_dropped_without_finish_keeps_its_temp_dir() {
    let directory = tempfile::tempdir().expect("temp dir");
    let binary = crate::fake::binary(directory.path(), crate::fake::SERVES_UNTIL_SIGTERM);
    let mut cluster = TestCluster::builder()
        .regions(1)
        .binary(&binary)
        .build()
        .await
        .expect("start a cluster of fakes");
    let pid = cluster.pid("a", Role::Node).expect("the node runs");
    let root = cluster.temp_dir().to_owned();
    assert!(cluster.is_running("a", Role::Node));
    drop(cluster);
    assert!(
        root.join("logs").join("a-node.log").is_file(),
        "the logs are kept"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the node was killed and reaped"
    );
    std::fs::remove_dir_all(&root).expect("clean up the kept temp dir");
}

#[tokio::test]
async fn a_process_that_fails_to_start_fails_the_build() {
    let directory = tempfile::tempdir().expect("temp dir");
    let binary = crate::fake::binary(
        directory.path(),
        r#"echo "error: cannot open data dir" >&2; exit 1"#,
    );
    let error = TestCluster::builder()
        .regions(1)
        .binary(&binary)
        .build()
        .await
        .expect_err("the node exits at once");
    let message = format!("{error:#}");
    assert!(message.contains("did not become ready"), "{message}");
    assert!(message.contains("cannot open data dir"), "{message}");
    let kept = message
        .strip_prefix("start a test cluster in ")
        .and_then(|rest| rest.split(':').next())
        .expect("the error names the temp dir");
    assert!(Path::new(kept).join("logs").is_dir(), "{kept} is kept");
    std::fs::remove_dir_all(kept).expect("clean up the kept temp dir");
}

#[test]
fn region_names_are_short_and_unique() {
    assert_eq!(region_name(0), "a");
    assert_eq!(region_name(2), "c");
    assert_eq!(region_name(25), "z");
    assert_eq!(region_name(26), "r26");
}

#[test]
fn the_planned_topology_round_trips_through_toml() {
    let root = tempfile::tempdir().expect("temp dir");
    let (topology, held) =
        plan(3, root.path(), FlushMode::Sync, RouterMode::Direct).expect("plan a topology");
    // Every socket every role listens on is held under the name it is handed over by.
    for region in topology.regions.keys() {
        for role in Role::ALL {
            let handover = held
                .handover(&topology, region, role)
                .expect("sockets for the role");
            assert!(!handover.is_empty(), "{role} of {region} has sockets");
        }
    }
    let text = toml::to_string(&topology).expect("serialize");
    let parsed: Topology = toml::from_str(&text).expect("parse what was written");
    assert_eq!(parsed, topology);
    assert_eq!(
        parsed.regions.keys().cloned().collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!(parsed.topics[TEST_TOPIC].queues, 8);
    assert_eq!(parsed.topics[TEST_TOPIC].replicate_to, ["a", "b", "c"]);
}

#[test]
fn link_latencies_make_the_nearest_region_unique() {
    let root = tempfile::tempdir().expect("temp dir");
    let (topology, _reservations) =
        plan(3, root.path(), FlushMode::Async, RouterMode::Direct).expect("plan a topology");
    let latency = |x: &str, y: &str| {
        topology
            .links
            .iter()
            .find(|link| {
                link.between.contains(&x.to_owned()) && link.between.contains(&y.to_owned())
            })
            .map(|link| link.latency_ms)
            .expect("every pair is linked")
    };
    assert!(latency("a", "b") < latency("a", "c"));
    assert!(latency("b", "a") < latency("b", "c"));
    assert!(latency("c", "a") < latency("c", "b"));
}

#[test]
fn every_address_is_a_distinct_loopback_port() {
    let root = tempfile::tempdir().expect("temp dir");
    let (topology, _reservations) =
        plan(3, root.path(), FlushMode::Async, RouterMode::Direct).expect("plan a topology");
    let mut tcp = std::collections::BTreeSet::new();
    for region in topology.regions.values() {
        for address in [region.node, region.admin, region.router] {
            assert!(address.ip().is_loopback());
            assert!(tcp.insert(address.port()), "TCP port {address} used twice");
        }
        assert!(
            region
                .replicator
                .is_some_and(|address| address.ip().is_loopback())
        );
    }
}
