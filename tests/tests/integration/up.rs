//! `meridian up`: a whole deployment from a topology file, used by the official client.

use crate::support::{
    ack, query_route, receive, send, shut_down, start_consumer, start_producer, within,
};
use meridian_tests::meridian_proto::meridian::v1::HealthRequest;
use meridian_tests::meridian_proto::meridian::v1::node_service_client::NodeServiceClient;
use meridian_tests::{meridian_binary, topology_with_held_ports};
use meridian_topology::FlushMode;
use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const MESSAGES: usize = 50;

#[tokio::test(flavor = "multi_thread")]
async fn meridian_up_runs_a_deployment_and_stops_it_on_sigterm() {
    let directory = tempfile::tempdir().expect("temp dir");
    let (topology, ports) =
        topology_with_held_ports(2, directory.path(), FlushMode::Sync).expect("topology");
    let path = directory.path().join("topology.toml");
    std::fs::write(&path, topology.to_toml_string()).expect("write topology");
    let log_path = directory.path().join("up.log");
    let log = std::fs::File::create(&log_path).expect("log file");

    let mut command = tokio::process::Command::new(meridian_binary().expect("meridian binary"));
    command
        .arg("up")
        .arg("--topology")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    // `meridian up` inherits every socket of the topology and passes each to
    // its process: no port is free between being chosen and being served.
    ports
        .handover_all(&topology)
        .expect("sockets")
        .apply_tokio(&mut command)
        .expect("hand over");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MERIDIAN_") {
            command.env_remove(name);
        }
    }
    let mut up = command.spawn().expect("start meridian up");
    // The command holds this process's copies of the handed-over sockets.
    drop(command);
    let mut lines = BufReader::new(up.stdout.take().expect("stdout")).lines();
    let mut banner = Vec::new();
    let ready = within(
        Duration::from_secs(120),
        "meridian up to report it is up",
        async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                banner.push(line.clone());
                if line.starts_with("Logs:") {
                    return true;
                }
            }
            false
        },
    )
    .await;
    let up_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        matches!(ready, Ok(true)),
        "meridian up did not come up:\n{}",
        up_log()
    );
    let table = banner.join("\n");
    for (name, region) in &topology.regions {
        assert!(
            table.contains(name),
            "the endpoint table names region {name}:\n{table}"
        );
        assert!(
            table.contains(&region.router.to_string()),
            "the table shows {name}'s router:\n{table}"
        );
    }

    let first = topology.regions.values().next().expect("region a");
    let second = topology.regions.values().nth(1).expect("region b");
    let producer = start_producer(&first.router.to_string())
        .await
        .expect("producer via a");
    let mut sent = HashSet::new();
    for index in 0..MESSAGES {
        let id = send(&producer, format!("up {index}").into_bytes())
            .await
            .expect("send");
        sent.insert(id);
    }
    let consumer = start_consumer(&second.router.to_string(), "up-test")
        .await
        .expect("consumer via b");
    let mut received = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while received.len() < MESSAGES && tokio::time::Instant::now() < deadline {
        for message in receive(&consumer).await.expect("receive via b") {
            ack(&consumer, &message).await.expect("ack");
            received.insert(message.message_id().to_owned());
        }
    }
    assert_eq!(
        received,
        sent,
        "b delivers exactly what a acknowledged:\n{}",
        up_log()
    );
    shut_down(consumer, producer).await;

    let pid = nix::unistd::Pid::from_raw(i32::try_from(up.id().expect("pid")).expect("pid fits"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = within(Duration::from_secs(60), "meridian up to stop", up.wait())
        .await
        .expect("stopped in time")
        .expect("exit status");
    assert!(
        status.success(),
        "meridian up exits 0 after SIGTERM: {status}\n{}",
        up_log()
    );
    for region in topology.regions.values() {
        for address in [region.router, region.node, region.admin] {
            assert!(
                tokio::net::TcpStream::connect(address).await.is_err(),
                "{address} still accepts connections after meridian up stopped"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn children_of_a_killed_meridian_up_stop_too() {
    let (_directory, topology, _path, _ports, mut up) = one_region_up().await;
    up.kill().await.expect("SIGKILL meridian up");

    let region = topology.regions.values().next().expect("one region");
    meridian_tests::wait_until(
        Duration::from_secs(30),
        "the orphaned children to stop",
        || async {
            let mut all_closed = true;
            for address in [region.router, region.node, region.admin] {
                all_closed &= tokio::net::TcpStream::connect(address).await.is_err();
            }
            all_closed
        },
    )
    .await
    .expect("children follow their parent");
}

/// A one-region topology on held ports, written to a file in a temp dir,
/// and `meridian up` running it: (temp dir, topology, file, ports, up).
async fn one_region_up() -> (
    tempfile::TempDir,
    meridian_topology::Topology,
    std::path::PathBuf,
    meridian_tests::HeldPorts,
    tokio::process::Child,
) {
    let directory = tempfile::tempdir().expect("temp dir");
    let (topology, ports) =
        topology_with_held_ports(1, directory.path(), FlushMode::Async).expect("topology");
    let path = directory.path().join("topology.toml");
    std::fs::write(&path, topology.to_toml_string()).expect("write topology");
    let up = spawn_up(&path, &topology, &ports).await;
    (directory, topology, path, ports, up)
}

/// Starts `meridian up --topology path` on the held sockets and waits until it
/// reports it is up.
async fn spawn_up(
    path: &std::path::Path,
    topology: &meridian_topology::Topology,
    ports: &meridian_tests::HeldPorts,
) -> tokio::process::Child {
    let mut command = tokio::process::Command::new(meridian_binary().expect("meridian binary"));
    ports
        .handover_all(topology)
        .expect("sockets")
        .apply_tokio(&mut command)
        .expect("hand over");
    let mut up = command
        .arg("up")
        .arg("--topology")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start meridian up");
    // The command holds this process's copies of the handed-over sockets.
    drop(command);
    let mut lines = BufReader::new(up.stdout.take().expect("stdout")).lines();
    let ready = within(
        Duration::from_secs(120),
        "meridian up to report it is up",
        async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if line.starts_with("Logs:") {
                    return true;
                }
            }
            false
        },
    )
    .await;
    assert!(matches!(ready, Ok(true)), "meridian up did not come up");
    // Keep reading stdout so `up` never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    up
}

/// The node's `started_at_ms`, if it answers Health.
async fn node_started_at(admin: std::net::SocketAddr) -> Option<u64> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{admin}")).ok()?;
    let channel = endpoint.connect().await.ok()?;
    let mut client = NodeServiceClient::new(channel);
    let health = client.health(HealthRequest {}).await.ok()?;
    Some(health.into_inner().started_at_ms)
}

#[tokio::test(flavor = "multi_thread")]
async fn meridian_up_restarts_a_killed_node_on_the_same_ports() {
    let (_directory, topology, _path, _ports, mut up) = one_region_up().await;
    let region = topology.regions.values().next().expect("one region");
    let first = node_started_at(region.admin)
        .await
        .expect("the node answers Health");

    // kill -9 the node: the `meridian node` child whose command line names
    // this region's view of the topology (links are emulated).
    let view = region.data_dir.join("emulated-topology.toml");
    let pattern = format!("meridian node --topology {} ", view.display());
    let killed = std::process::Command::new("pkill")
        .arg("-9")
        .arg("-f")
        .arg(&pattern)
        .status()
        .expect("run pkill");
    assert!(killed.success(), "no process matched {pattern:?}");

    meridian_tests::wait_until(
        Duration::from_secs(30),
        "a new node to answer on the same admin address",
        || async {
            Ok::<_, anyhow::Error>(
                node_started_at(region.admin)
                    .await
                    .is_some_and(|started| started != first),
            )
        },
    )
    .await
    .expect("meridian up restarts the node");
    // The router routes to it again once its probes see it (≤ 1 probe round).
    meridian_tests::wait_until(
        Duration::from_secs(30),
        "the router to route to the restarted node",
        || async { Ok::<_, anyhow::Error>(query_route(&region.router.to_string()).await.is_ok()) },
    )
    .await
    .expect("the router sees the node again");
    // The restarted node serves clients on its RocketMQ port too.
    let producer = start_producer(&region.router.to_string())
        .await
        .expect("a producer via the router");
    send(&producer, b"after the restart".to_vec())
        .await
        .expect("a send after the restart");
    let _ = within(
        Duration::from_secs(10),
        "producer shutdown",
        producer.shutdown(),
    )
    .await;
    up.kill().await.expect("SIGKILL meridian up");
}

/// `meridian ctl` against a running two-region `meridian up`.
async fn ctl(path: &std::path::Path, args: &[&str]) -> meridian_tests::CommandOutput {
    let mut all = vec!["ctl", "--topology", path.to_str().expect("UTF-8 path")];
    all.extend_from_slice(args);
    meridian_tests::run_meridian(all, Duration::from_secs(60))
        .await
        .expect("run meridian ctl")
}

/// `meridian ctl status --json`, parsed.
async fn ctl_status(path: &std::path::Path) -> serde_json::Value {
    let output = ctl(path, &["status", "--json"]).await;
    assert_eq!(output.code(), Some(0), "ctl status: {output}");
    serde_json::from_str(&output.stdout).expect("status JSON")
}

fn process_state(status: &serde_json::Value, region: &str, role: &str) -> String {
    status["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .find(|process| process["region"] == region && process["role"] == role)
        .and_then(|process| process["state"].as_str())
        .expect("the process is listed")
        .to_owned()
}

fn partitioned(status: &serde_json::Value, from: &str, to: &str) -> bool {
    status["links"]
        .as_array()
        .expect("links")
        .iter()
        .find(|link| link["from"] == from && link["to"] == to)
        .and_then(|link| link["partitioned"].as_bool())
        .expect("the direction is listed")
}

#[tokio::test(flavor = "multi_thread")]
async fn meridian_ctl_kills_starts_and_cuts_links_of_a_running_deployment() {
    let directory = tempfile::tempdir().expect("temp dir");
    let (topology, ports) =
        topology_with_held_ports(2, directory.path(), FlushMode::Async).expect("topology");
    let path = directory.path().join("topology.toml");
    std::fs::write(&path, topology.to_toml_string()).expect("write topology");
    let mut up = spawn_up(&path, &topology, &ports).await;
    let names: Vec<&String> = topology.regions.keys().collect();
    let (a, b) = (names[0].as_str(), names[1].as_str());
    let admin = topology.regions[a].admin;

    let status = ctl_status(&path).await;
    assert_eq!(status["processes"].as_array().expect("processes").len(), 6);
    assert_eq!(status["links_emulated"], true);
    assert_eq!(process_state(&status, a, "node"), "running");
    let first = node_started_at(admin).await.expect("a's node answers");

    // Killed on request, the node stays down: no restart until `start`.
    let killed = ctl(&path, &["kill", a, "node"]).await;
    assert_eq!(killed.code(), Some(0), "{killed}");
    assert!(killed.stdout.contains("killed (SIGKILL)"), "{killed}");
    assert_eq!(process_state(&ctl_status(&path).await, a, "node"), "down");
    assert!(
        node_started_at(admin).await.is_none(),
        "a killed node answers"
    );
    let started = ctl(&path, &["start", a, "node"]).await;
    assert_eq!(started.code(), Some(0), "{started}");
    assert_eq!(
        process_state(&ctl_status(&path).await, a, "node"),
        "running"
    );
    let second = node_started_at(admin)
        .await
        .expect("the started node answers");
    assert_ne!(first, second, "a new incarnation of the node");

    let cut = ctl(&path, &["partition", a, b, "--one-way"]).await;
    assert_eq!(cut.code(), Some(0), "{cut}");
    let status = ctl_status(&path).await;
    assert!(partitioned(&status, a, b));
    assert!(!partitioned(&status, b, a), "one way only");
    let healed = ctl(&path, &["heal", a, b]).await;
    assert_eq!(healed.code(), Some(0), "{healed}");
    assert!(!partitioned(&ctl_status(&path).await, a, b));

    let degraded = ctl(
        &path,
        &[
            "degrade",
            a,
            b,
            "--latency-ms",
            "120",
            "--loss-percent",
            "2.5",
        ],
    )
    .await;
    assert_eq!(degraded.code(), Some(0), "{degraded}");
    let status = ctl_status(&path).await;
    let link = status["links"]
        .as_array()
        .expect("links")
        .iter()
        .find(|link| link["from"] == b && link["to"] == a)
        .expect("b -> a listed")
        .clone();
    assert_eq!(link["latency_ms"], 120);
    assert_eq!(link["loss_percent"], 2.5);

    // Bad requests name what was wrong and change nothing.
    let bad = ctl(&path, &["degrade", a, b, "--loss-percent", "150"]).await;
    assert_eq!(bad.code(), Some(1), "{bad}");
    assert!(bad.stderr.contains("loss_percent = 150"), "{bad}");
    let unknown = ctl(&path, &["kill", "mars", "node"]).await;
    assert_eq!(unknown.code(), Some(1), "{unknown}");
    assert!(unknown.stderr.contains("\"mars\""), "{unknown}");
    let same = ctl(&path, &["partition", a, a]).await;
    assert_eq!(same.code(), Some(1), "{same}");
    let nothing = ctl(&path, &["degrade", a, b]).await;
    assert_eq!(nothing.code(), Some(1), "{nothing}");
    assert!(nothing.stderr.contains("nothing to change"), "{nothing}");
    // Options may come after the subcommand too.
    let after = meridian_tests::run_meridian(
        [
            "ctl",
            "status",
            "--topology",
            path.to_str().expect("UTF-8 path"),
        ],
        Duration::from_secs(60),
    )
    .await
    .expect("run meridian ctl");
    assert_eq!(after.code(), Some(0), "{after}");

    let pid = nix::unistd::Pid::from_raw(i32::try_from(up.id().expect("pid")).expect("pid fits"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let stopped = within(Duration::from_secs(60), "meridian up to stop", up.wait())
        .await
        .expect("stopped in time")
        .expect("exit status");
    assert!(
        stopped.success(),
        "meridian up exits 0 after SIGTERM: {stopped}"
    );
    let gone = ctl(&path, &["status"]).await;
    assert_eq!(
        gone.code(),
        Some(1),
        "no deployment answers after up stopped: {gone}"
    );
    assert!(
        !path.with_extension("sock").exists(),
        "up removes its control socket"
    );
}

/// `message_count` of the test topic in the node whose admin API is `admin`.
async fn topic_count_at(admin: std::net::SocketAddr) -> anyhow::Result<u64> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{admin}"))?
        .connect()
        .await?;
    let stats = NodeServiceClient::new(channel)
        .topic_stats(
            meridian_tests::meridian_proto::meridian::v1::TopicStatsRequest {
                topic: meridian_tests::TEST_TOPIC.to_owned(),
            },
        )
        .await?;
    Ok(stats.into_inner().message_count)
}

/// A private site behind two hubs stays connected both ways when the link
/// to one hub is cut: its messages reach that hub's region through the
/// other hub, and that region's messages reach the site the same way.
#[tokio::test(flavor = "multi_thread")]
async fn a_site_with_two_hubs_reaches_both_while_one_link_is_cut() {
    const MESSAGES: u64 = 5;
    let directory = tempfile::tempdir().expect("temp dir");
    let (mut topology, ports) =
        topology_with_held_ports(3, directory.path(), FlushMode::Async).expect("topology");
    let names: Vec<String> = topology.regions.keys().cloned().collect();
    let (a, b, site) = (&names[0], &names[1], &names[2]);
    {
        let region = topology.regions.get_mut(site).expect("the site");
        region.site = meridian_topology::Site::Private;
        region.hubs = vec![a.clone(), b.clone()];
        region.replicator = None;
    }
    topology
        .validate()
        .expect("a valid topology with a private site");
    let path = directory.path().join("topology.toml");
    std::fs::write(&path, topology.to_toml_string()).expect("write topology");
    let mut up = spawn_up(&path, &topology, &ports).await;

    let cut = ctl(&path, &["partition", site, b]).await;
    assert_eq!(cut.code(), Some(0), "{cut}");
    for (from, to) in [(site, b), (b, site)] {
        let from_router = topology.regions[from.as_str()].router.to_string();
        let producer = start_producer(&from_router).await.expect("a producer");
        let before = topic_count_at(topology.regions[to.as_str()].admin)
            .await
            .expect("count before");
        for index in 0..MESSAGES {
            send(&producer, format!("{from} to {to} {index}").into_bytes())
                .await
                .expect("send");
        }
        let target = topology.regions[to.as_str()].admin;
        meridian_tests::wait_until(
            Duration::from_secs(60),
            &format!("{to} stores {from}'s messages while their link is cut"),
            || async { anyhow::Ok(topic_count_at(target).await? >= before + MESSAGES) },
        )
        .await
        .expect("delivered through the other hub");
        let _ = within(Duration::from_secs(10), "shutdown", producer.shutdown()).await;
    }
    assert!(partitioned(&ctl_status(&path).await, site, b), "still cut");
    up.kill().await.expect("SIGKILL meridian up");
}
