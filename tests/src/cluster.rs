//! [`TestCluster`]: a whole Meridian deployment on loopback, one process per
//! region and role, in a temp dir of its own.

use anyhow::Context as _;
use meridian_proto::meridian::v1::node_service_client::NodeServiceClient;
use meridian_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use meridian_topology::{ConsumeFrom, FlushMode, Link, MessageType, Region, Site, Topic, Topology};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint};

use crate::command::{CommandOutput, meridian_binary};
use crate::ports::HeldPorts;
use crate::process::{LOG_TAIL_LINES, Process, read_log, tail};
use meridian_sockets::{Protocol, Role};

/// The topic every test cluster has: 8 queues, every message type, replicated
/// to every region, new groups start from the earliest message.
pub const TEST_TOPIC: &str = "demo";

/// Default time a process gets to print its readiness line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time a process gets to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Gap between the link latencies of consecutive region pairs.
const LATENCY_STEP_MS: u32 = 10;
/// Messages of the internal API can be large (a Tail batch).
const ADMIN_MAX_DECODING_BYTES: usize = 64 * 1024 * 1024;

/// The name of the region at `index`: `a`, `b`, … `z`, then `r26`, `r27`, ….
pub fn region_name(index: usize) -> String {
    match u8::try_from(index) {
        Ok(offset) if offset < 26 => char::from(b'a' + offset).to_string(),
        _ => format!("r{index}"),
    }
}

/// Configures and starts a [`TestCluster`].
#[derive(Debug, Clone)]
pub struct TestClusterBuilder {
    regions: usize,
    flush: FlushMode,
    ready_timeout: Duration,
    stop_timeout: Duration,
    extra_topics: BTreeMap<String, Topic>,
    binary: Option<PathBuf>,
}

impl Default for TestClusterBuilder {
    fn default() -> Self {
        TestClusterBuilder {
            regions: 2,
            flush: FlushMode::Async,
            ready_timeout: READY_TIMEOUT,
            stop_timeout: STOP_TIMEOUT,
            extra_topics: BTreeMap::new(),
            binary: None,
        }
    }
}

impl TestClusterBuilder {
    /// Number of regions (default 2), named by [`region_name`].
    pub fn regions(mut self, count: usize) -> Self {
        self.regions = count;
        self
    }

    /// Flush mode of every region (default `async`: fast; use `sync` to test durability).
    pub fn flush(mut self, flush: FlushMode) -> Self {
        self.flush = flush;
        self
    }

    /// How long each process may take to print its readiness line (default 60 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// How long a process may take to exit after SIGTERM (default 30 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Adds a topic besides [`TEST_TOPIC`].
    pub fn topic(mut self, name: impl Into<String>, topic: Topic) -> Self {
        self.extra_topics.insert(name.into(), topic);
        self
    }

    /// Runs this binary instead of [`meridian_binary`]'s choice.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Writes the topology and starts every node, then every replicator, then
    /// every router, each stage waiting for all its readiness lines.
    pub async fn build(self) -> anyhow::Result<TestCluster> {
        anyhow::ensure!(
            self.regions >= 1,
            "a test cluster needs at least one region"
        );
        let binary = match self.binary {
            Some(binary) => binary,
            None => meridian_binary()?,
        };
        let directory = tempfile::Builder::new()
            .prefix("meridian-test-")
            .tempdir()
            .context("create the test cluster's temp dir")?;
        let root = directory.path().to_path_buf();
        let (mut topology, held_ports) = plan(self.regions, &root, self.flush)?;
        topology.topics.extend(self.extra_topics);

        std::fs::create_dir_all(root.join("logs")).context("create the logs dir")?;
        for region in topology.regions.values() {
            std::fs::create_dir_all(&region.data_dir)
                .with_context(|| format!("create the data dir {}", region.data_dir.display()))?;
        }
        let topology_path = root.join("topology.toml");
        let text = toml::to_string(&topology).context("serialize the test topology to TOML")?;
        std::fs::write(&topology_path, text)
            .with_context(|| format!("write {}", topology_path.display()))?;

        let mut cluster = TestCluster {
            directory: Some(directory),
            root: root.clone(),
            binary,
            topology,
            topology_path,
            processes: BTreeMap::new(),
            held_ports,
            ready_timeout: self.ready_timeout,
            stop_timeout: self.stop_timeout,
            finished: false,
        };
        let context = || format!("start a test cluster in {}", root.display());
        for role in Role::ALL {
            let regions = cluster.regions();
            for region in &regions {
                cluster.spawn(region, role).with_context(context)?;
            }
            for region in &regions {
                cluster
                    .wait_ready(region, role)
                    .await
                    .with_context(context)?;
            }
        }
        Ok(cluster)
    }
}

/// The topology of an `regions`-region test cluster under `root`, on ports
/// held (by the returned [`HeldPorts`]) for as long as the cluster lives.
fn plan(regions: usize, root: &Path, flush: FlushMode) -> anyhow::Result<(Topology, HeldPorts)> {
    let names: Vec<String> = (0..regions).map(region_name).collect();
    let mut held = HeldPorts::default();
    let mut region_map = BTreeMap::new();
    for name in &names {
        let region = Region {
            site: Site::Public,
            node: held.hold(format!("{name}.node"), Protocol::Tcp)?,
            admin: held.hold(format!("{name}.admin"), Protocol::Tcp)?,
            replicator: held.hold(format!("{name}.replicator"), Protocol::Udp)?,
            router: held.hold(format!("{name}.router"), Protocol::Tcp)?,
            data_dir: root.join(name).join("data"),
            flush,
        };
        region_map.insert(name.clone(), region);
    }
    // Every pair is linked; latencies all differ (a–b 10, a–c 20, b–c 30, …),
    // so each region's nearest peer is unique: `a` for everyone but `a`, whose
    // nearest is `b`.
    let mut links = Vec::new();
    for (first_index, first) in names.iter().enumerate() {
        for (second_index, second) in names.iter().enumerate().skip(first_index + 1) {
            let steps =
                u32::try_from(first_index + second_index).context("region count fits in u32")?;
            links.push(Link {
                between: [first.clone(), second.clone()],
                latency_ms: LATENCY_STEP_MS * steps,
            });
        }
    }
    let topic = Topic {
        queues: 8,
        message_types: vec![
            MessageType::Normal,
            MessageType::Fifo,
            MessageType::Delay,
            MessageType::Transaction,
        ],
        replicate_to: names.clone(),
        consume_from: ConsumeFrom::Earliest,
    };
    let topology = Topology {
        regions: region_map,
        links,
        topics: BTreeMap::from([(TEST_TOPIC.to_owned(), topic)]),
    };
    Ok((topology, held))
}

/// A valid topology like a test cluster's, with data dirs under `root`, on
/// loopback ports held until the returned [`HeldPorts`] is dropped: a base
/// for files that tests break, or for a `meridian up` that inherits the
/// sockets ([`HeldPorts::handover_all`]).
pub fn topology_with_held_ports(
    regions: usize,
    root: &Path,
    flush: FlushMode,
) -> anyhow::Result<(Topology, HeldPorts)> {
    plan(regions, root, flush)
}

/// A running Meridian deployment; see the crate docs.
pub struct TestCluster {
    directory: Option<TempDir>,
    root: PathBuf,
    binary: PathBuf,
    topology: Topology,
    topology_path: PathBuf,
    processes: BTreeMap<(String, Role), Process>,
    /// Every port of the topology, held while the cluster lives.
    held_ports: HeldPorts,
    ready_timeout: Duration,
    stop_timeout: Duration,
    finished: bool,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TestCluster")
            .field("root", &self.root)
            .field("regions", &self.regions())
            .field("running", &self.processes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl TestCluster {
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder::default()
    }

    /// Region names in order (`a`, `b`, …).
    pub fn regions(&self) -> Vec<String> {
        self.topology.regions.keys().cloned().collect()
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn topology_path(&self) -> &Path {
        &self.topology_path
    }

    /// The cluster's temp dir (topology, data dirs, logs).
    pub fn temp_dir(&self) -> &Path {
        &self.root
    }

    /// The `meridian` binary the cluster runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The region's entry of the topology. Panics on an unknown name (a test bug).
    pub fn region(&self, region: &str) -> &Region {
        match self.topology.regions.get(region) {
            Some(entry) => entry,
            None => panic!(
                "the test cluster has no region named {region:?}; it has {:?}",
                self.regions()
            ),
        }
    }

    pub fn data_dir(&self, region: &str) -> PathBuf {
        self.region(region).data_dir.clone()
    }

    /// `127.0.0.1:port` of the region's router (RocketMQ access point).
    pub fn router_endpoint(&self, region: &str) -> String {
        self.region(region).router.to_string()
    }

    /// `127.0.0.1:port` of the region's node (RocketMQ gRPC).
    pub fn node_endpoint(&self, region: &str) -> String {
        self.region(region).node.to_string()
    }

    /// `127.0.0.1:port` of the region's node internal API.
    pub fn admin_endpoint(&self, region: &str) -> String {
        self.region(region).admin.to_string()
    }

    /// UDP address of the region's replicator.
    pub fn replicator_address(&self, region: &str) -> SocketAddr {
        self.region(region).replicator
    }

    /// A connected client of the region node's internal API.
    pub async fn admin_client(&self, region: &str) -> anyhow::Result<NodeServiceClient<Channel>> {
        let channel = connect(&self.admin_endpoint(region))
            .await
            .with_context(|| format!("connect to the admin API of region {region}"))?;
        Ok(NodeServiceClient::new(channel).max_decoding_message_size(ADMIN_MAX_DECODING_BYTES))
    }

    /// A connected raw RocketMQ client of `endpoint` (`host:port` of a router or node).
    pub async fn messaging_client(
        endpoint: &str,
    ) -> anyhow::Result<MessagingServiceClient<Channel>> {
        let channel = connect(endpoint)
            .await
            .with_context(|| format!("connect to the RocketMQ API at {endpoint}"))?;
        Ok(MessagingServiceClient::new(channel))
    }

    /// `true` while the process of `role` in `region` runs.
    pub fn is_running(&mut self, region: &str, role: Role) -> bool {
        self.processes
            .get_mut(&(region.to_owned(), role))
            .is_some_and(Process::is_running)
    }

    /// The pid of the process, if the harness started one and has not reaped it.
    pub fn pid(&self, region: &str, role: Role) -> Option<u32> {
        self.processes
            .get(&(region.to_owned(), role))
            .map(Process::pid)
    }

    /// Starts the role in the region again (same ports, same data dir) and
    /// waits for its readiness line.
    pub async fn start(&mut self, region: &str, role: Role) -> anyhow::Result<()> {
        self.spawn(region, role)?;
        self.wait_ready(region, role).await
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self, region: &str, role: Role) -> anyhow::Result<()> {
        let mut process = self
            .processes
            .remove(&(region.to_owned(), role))
            .with_context(|| {
                format!("kill -9 {role} of region {region}: the harness is not running it")
            })?;
        process.kill9()?;
        Ok(())
    }

    /// SIGTERM, wait for the exit, and fail unless the exit code is 0.
    pub async fn stop(&mut self, region: &str, role: Role) -> anyhow::Result<()> {
        let mut process = self
            .processes
            .remove(&(region.to_owned(), role))
            .with_context(|| {
                format!("stop {role} of region {region}: the harness is not running it")
            })?;
        let status = process.terminate(self.stop_timeout).await?;
        anyhow::ensure!(
            status.code() == Some(0),
            "`meridian {role}` of region {region} exited with {status} after SIGTERM, expected exit code 0\n{}",
            process.log_tail(LOG_TAIL_LINES)
        );
        Ok(())
    }

    fn log_path(&self, region: &str, role: Role) -> PathBuf {
        self.root.join("logs").join(format!("{region}-{role}.log"))
    }

    /// Everything the role in the region wrote (stdout and stderr), across restarts.
    pub fn log(&self, region: &str, role: Role) -> String {
        read_log(&self.log_path(region, role))
    }

    /// Runs a one-shot command with the cluster's binary; see [`crate::run_meridian`].
    pub async fn run_meridian<I, S>(
        &self,
        args: I,
        timeout: Duration,
    ) -> anyhow::Result<CommandOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        crate::command::run_binary(&self.binary, args, timeout).await
    }

    /// Ends a test that passed: kills every process without printing logs and
    /// removes the temp dir.
    pub fn finish(mut self) {
        self.finished = true;
    }

    /// Prints the tail of every process's log to stderr.
    pub fn print_logs(&self) {
        eprintln!(
            "===== meridian test cluster in {} =====",
            self.root.display()
        );
        for region in self.regions() {
            for role in Role::ALL {
                let path = self.log_path(&region, role);
                if !path.exists() {
                    continue;
                }
                eprintln!(
                    "===== region {region}, {role}: last {LOG_TAIL_LINES} lines of {} =====",
                    path.display()
                );
                eprint!("{}", tail(&read_log(&path), LOG_TAIL_LINES));
            }
        }
        eprintln!("===== end of meridian logs =====");
    }

    fn spawn(&mut self, region: &str, role: Role) -> anyhow::Result<()> {
        let key = (region.to_owned(), role);
        if let Some(process) = self.processes.get_mut(&key) {
            anyhow::ensure!(
                !process.is_running(),
                "start {role} of region {region}: it is already running (pid {})",
                process.pid()
            );
            self.processes.remove(&key);
        }
        let sockets = self
            .held_ports
            .handover(&self.topology, region, role)
            .with_context(|| format!("sockets for {role} of region {region}"))?;
        let process = Process::spawn(
            &self.binary,
            &self.topology_path,
            region,
            role,
            &self.log_path(region, role),
            sockets,
        )?;
        self.processes.insert(key, process);
        Ok(())
    }

    async fn wait_ready(&mut self, region: &str, role: Role) -> anyhow::Result<()> {
        let timeout = self.ready_timeout;
        let process = self
            .processes
            .get_mut(&(region.to_owned(), role))
            .with_context(|| format!("wait for {role} of region {region}: not started"))?;
        process.wait_ready(timeout).await
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Each process kills (SIGKILL) and reaps itself when dropped.
        self.processes.clear();
        if std::thread::panicking() || !self.finished {
            self.print_logs();
            if let Some(directory) = self.directory.take() {
                let kept = directory.keep();
                eprintln!(
                    "kept the test cluster's temp dir for inspection: {}",
                    kept.display()
                );
            }
        }
    }
}

async fn connect(endpoint: &str) -> anyhow::Result<Channel> {
    let channel = Endpoint::from_shared(format!("http://{endpoint}"))
        .context("build the gRPC endpoint")?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(channel)
}

#[cfg(test)]
mod tests {
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
        let (topology, held) = plan(3, root.path(), FlushMode::Sync).expect("plan a topology");
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
            plan(3, root.path(), FlushMode::Async).expect("plan a topology");
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
            plan(3, root.path(), FlushMode::Async).expect("plan a topology");
        let mut tcp = std::collections::BTreeSet::new();
        for region in topology.regions.values() {
            for address in [region.node, region.admin, region.router] {
                assert!(address.ip().is_loopback());
                assert!(tcp.insert(address.port()), "TCP port {address} used twice");
            }
            assert!(region.replicator.ip().is_loopback());
        }
    }
}
