//! [`TestCluster`]: a whole Meridian deployment on loopback, one process per
//! region and role, in a temp dir of its own.

use anyhow::Context as _;
use meridian_face::access::{Authentication, SignedChannel, Signer};
use meridian_face::tls::Dialer;
use meridian_proto::meridian::v1::node_service_client::NodeServiceClient;
use meridian_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use meridian_topology::{
    ConsumeFrom, FlushMode, Group, Link, MessageType, Region, RouterMode, Site, Topic, Topology,
};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;
use tonic::transport::Channel;

use crate::command::{CommandOutput, meridian_binary};
use crate::ports::HeldPorts;
use crate::process::{LOG_TAIL_LINES, Process, read_log, tail};
use meridian_sockets::{Protocol, Role};

/// The topic every test cluster has: 8 queues, every message type, replicated
/// to every region, new groups start from the earliest message.
pub const TEST_TOPIC: &str = "demo";
/// The key the deployment's own processes sign admin-port calls with
/// (`[access] internal_key`), added to every keys file the builder writes.
pub const INTERNAL_KEY: &str = "meridian-internal";

/// A secret no test knows: the process id and the time, hashed.
fn uuid_like_secret() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!(
        "{:016x}{:016x}",
        hasher.finish(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos())
    )
}

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
    groups: BTreeMap<String, Group>,
    binary: Option<PathBuf>,
    router_mode: RouterMode,
    /// Where new consumer groups of [`TEST_TOPIC`] start.
    consume_from: ConsumeFrom,
    /// A topology file to run instead of the planned regions.
    topology_file: Option<PathBuf>,
    /// Access keys (id, secret, `allow` as a TOML array); none:
    /// development mode.
    access_keys: Vec<(String, String, String)>,
    /// Mutual TLS between replicators with a CA `meridian certs` makes.
    replication_tls: bool,
    /// TLS on every client endpoint, with the same CA and certificates.
    client_tls: bool,
}

impl Default for TestClusterBuilder {
    fn default() -> Self {
        TestClusterBuilder {
            regions: 2,
            flush: FlushMode::Async,
            ready_timeout: READY_TIMEOUT,
            stop_timeout: STOP_TIMEOUT,
            extra_topics: BTreeMap::new(),
            groups: BTreeMap::new(),
            binary: None,
            router_mode: RouterMode::Direct,
            consume_from: ConsumeFrom::Earliest,
            topology_file: None,
            access_keys: Vec::new(),
            replication_tls: false,
            client_tls: false,
        }
    }
}

impl TestClusterBuilder {
    /// Gives the deployment an access key (id, secret) granted everything
    /// (`pub`, `sub` and `admin` on every topic and group): every face then
    /// refuses anyone without a key (written to a keys file the topology's
    /// `[access]` names).
    pub fn access_key(self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.access_key_allowing(
            id,
            secret,
            r#"[{ actions = ["pub", "sub", "admin"], topics = ["*"], groups = ["*"] }]"#,
        )
    }

    /// Gives the deployment an access key (id, secret) with the grants
    /// `allow`, a TOML array of the keys file (`[{ actions = ["pub"],
    /// topics = ["t"] }]`).
    pub fn access_key_allowing(
        mut self,
        id: impl Into<String>,
        secret: impl Into<String>,
        allow: &str,
    ) -> Self {
        self.access_keys
            .push((id.into(), secret.into(), allow.to_owned()));
        self
    }

    /// Mutual TLS between the replicators: `meridian certs` makes a CA and a
    /// certificate per region in `<root>/certs`, which `[replication_tls]`
    /// names.
    pub fn replication_tls(mut self) -> Self {
        self.replication_tls = true;
        self
    }

    /// TLS on every client endpoint (node, admin, router, HTTP, STOMP):
    /// `[client_tls]` names the CA and certificates `meridian certs` makes
    /// in `<root>/certs` ([`TestCluster::client_ca`]).
    pub fn client_tls(mut self) -> Self {
        self.client_tls = true;
        self
    }

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

    /// How every region's router serves clients (default `direct`).
    pub fn router_mode(mut self, mode: RouterMode) -> Self {
        self.router_mode = mode;
        self
    }

    /// Where new consumer groups of [`TEST_TOPIC`] start (default earliest).
    pub fn consume_from(mut self, consume_from: ConsumeFrom) -> Self {
        self.consume_from = consume_from;
        self
    }

    /// Runs the regions, links and topics of a topology file (an example,
    /// say) instead of planned ones: every address becomes a held loopback
    /// port and every data directory one of the cluster's, so the file's
    /// fixed ports and paths are never used; its drill is left out.
    /// [`Self::regions`] and the test-topic settings do not apply.
    pub fn topology_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.topology_file = Some(path.into());
        self
    }

    /// Adds a topic besides [`TEST_TOPIC`].
    pub fn topic(mut self, name: impl Into<String>, topic: Topic) -> Self {
        self.extra_topics.insert(name.into(), topic);
        self
    }

    /// Configures consumer group `name` (`[groups.NAME]`).
    pub fn group(mut self, name: impl Into<String>, group: Group) -> Self {
        self.groups.insert(name.into(), group);
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
        let (mut topology, held_ports) = match &self.topology_file {
            Some(path) => plan_from_file(path, &root)?,
            None => plan(self.regions, &root, self.flush, self.router_mode)?,
        };
        if let Some(topic) = topology.topics.get_mut(TEST_TOPIC) {
            topic.consume_from = self.consume_from;
        }
        topology.topics.extend(self.extra_topics);
        topology.groups.extend(self.groups);

        if !self.access_keys.is_empty() {
            let keys_file = root.join("access-keys.toml");
            let text: String = self
                .access_keys
                .iter()
                .map(|(id, secret, allow)| {
                    format!("[[keys]]\nid = {id:?}\nsecret = {secret:?}\nallow = {allow}\n\n")
                })
                .chain(std::iter::once(format!(
                    "[[keys]]\nid = {INTERNAL_KEY:?}\nsecret = \"{}\"\nallow = [{{ actions = [\"admin\"] }}]\n",
                    uuid_like_secret()
                )))
                .collect();
            std::fs::write(&keys_file, text)
                .with_context(|| format!("write {}", keys_file.display()))?;
            topology.access = Some(meridian_topology::Access {
                keys_file,
                internal_key: INTERNAL_KEY.to_owned(),
            });
        }
        std::fs::create_dir_all(root.join("logs")).context("create the logs dir")?;
        for region in topology.regions.values() {
            std::fs::create_dir_all(&region.data_dir)
                .with_context(|| format!("create the data dir {}", region.data_dir.display()))?;
        }
        let topology_path = root.join("topology.toml");
        let text = toml::to_string(&topology).context("serialize the test topology to TOML")?;
        std::fs::write(&topology_path, text)
            .with_context(|| format!("write {}", topology_path.display()))?;
        if self.replication_tls || self.client_tls {
            let certs = root.join("certs");
            let output = std::process::Command::new(&binary)
                .arg("certs")
                .arg("--topology")
                .arg(&topology_path)
                .arg("--out")
                .arg(&certs)
                .output()
                .context("run meridian certs")?;
            anyhow::ensure!(
                output.status.success(),
                "meridian certs failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let files = meridian_topology::TlsFiles {
                ca: certs.join("ca.pem"),
                cert: certs.join("{region}.pem"),
                key: certs.join("{region}-key.pem"),
            };
            if self.replication_tls {
                topology.replication_tls = Some(files.clone());
            }
            if self.client_tls {
                topology.client_tls = Some(files);
            }
            let text = toml::to_string(&topology).context("serialize the test topology to TOML")?;
            std::fs::write(&topology_path, text)
                .with_context(|| format!("write {}", topology_path.display()))?;
        }

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
fn plan(
    regions: usize,
    root: &Path,
    flush: FlushMode,
    router_mode: RouterMode,
) -> anyhow::Result<(Topology, HeldPorts)> {
    let names: Vec<String> = (0..regions).map(region_name).collect();
    let mut held = HeldPorts::default();
    let mut region_map = BTreeMap::new();
    for name in &names {
        let region = Region {
            site: Site::Public,
            node: held.hold(format!("{name}.node"), Protocol::Tcp)?,
            admin: held.hold(format!("{name}.admin"), Protocol::Tcp)?,
            replicator: Some(held.hold(format!("{name}.replicator"), Protocol::Udp)?),
            hubs: Vec::new(),
            router: held.hold(format!("{name}.router"), Protocol::Tcp)?,
            http: Some(held.hold(format!("{name}.http"), Protocol::Tcp)?),
            stomp: Some(held.hold(format!("{name}.stomp"), Protocol::Tcp)?),
            data_dir: root.join(name).join("data"),
            flush,
            router_mode,
            storage_memory_mb: meridian_topology::Region::DEFAULT_STORAGE_MEMORY_MB,
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
            links.push(Link::new(
                first.clone(),
                second.clone(),
                LATENCY_STEP_MS * steps,
            ));
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
        durability: Default::default(),
        geo_copies: 1,
        retention_ms: meridian_topology::DEFAULT_RETENTION_MS,
        retention_bytes: None,
        transaction_checks: Default::default(),
    };
    let topology = Topology {
        groups: Default::default(),
        regions: region_map,
        links,
        topics: BTreeMap::from([(TEST_TOPIC.to_owned(), topic)]),
        drill: None,
        access: None,
        replication_tls: None,
        client_tls: None,
    };
    Ok((topology, held))
}

/// The topology of `path` with every address a held loopback port and every
/// data directory under `root` (see [`TestClusterBuilder::topology_file`]).
fn plan_from_file(path: &Path, root: &Path) -> anyhow::Result<(Topology, HeldPorts)> {
    let mut topology =
        Topology::load(path).with_context(|| format!("load the topology {}", path.display()))?;
    topology.drill = None;
    let mut held = HeldPorts::default();
    for (name, region) in &mut topology.regions {
        region.node = held.hold(format!("{name}.node"), Protocol::Tcp)?;
        region.admin = held.hold(format!("{name}.admin"), Protocol::Tcp)?;
        region.router = held.hold(format!("{name}.router"), Protocol::Tcp)?;
        if region.http.is_some() {
            region.http = Some(held.hold(format!("{name}.http"), Protocol::Tcp)?);
        }
        if region.stomp.is_some() {
            region.stomp = Some(held.hold(format!("{name}.stomp"), Protocol::Tcp)?);
        }
        if region.replicator.is_some() {
            region.replicator = Some(held.hold(format!("{name}.replicator"), Protocol::Udp)?);
        }
        region.data_dir = root.join(name).join("data");
    }
    topology
        .validate()
        .context("the topology with held ports is valid")?;
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
    plan(regions, root, flush, RouterMode::Direct)
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

    /// `127.0.0.1:port` of the region's node HTTP listener (Aliyun MQ HTTP
    /// API and JSON API); every test cluster region serves one.
    pub fn http_endpoint(&self, region: &str) -> String {
        self.region(region)
            .http
            .map(|address| address.to_string())
            .unwrap_or_default()
    }

    /// `127.0.0.1:port` of the region's node STOMP listener.
    pub fn stomp_endpoint(&self, region: &str) -> String {
        self.region(region)
            .stomp
            .map(|address| address.to_string())
            .unwrap_or_default()
    }

    /// UDP address of the region's replicator.
    pub fn replicator_address(&self, region: &str) -> SocketAddr {
        self.region(region)
            .replicator
            .expect("test cluster regions are public and have a replicator address")
    }

    /// A connected client of the region node's internal API, signing its
    /// calls with the deployment's internal key when it has access keys.
    pub async fn admin_client(
        &self,
        region: &str,
    ) -> anyhow::Result<NodeServiceClient<SignedChannel>> {
        let channel = connect(&self.dialer()?, &self.admin_endpoint(region))
            .await
            .with_context(|| format!("connect to the admin API of region {region}"))?;
        Ok(
            NodeServiceClient::with_interceptor(channel, self.internal_signer()?)
                .max_decoding_message_size(ADMIN_MAX_DECODING_BYTES),
        )
    }

    /// How the deployment's own processes dial its endpoints (TLS with
    /// [`TestClusterBuilder::client_tls`]).
    pub fn dialer(&self) -> anyhow::Result<Dialer> {
        Dialer::of_topology(&self.topology).context("the cluster's [client_tls] CA")
    }

    /// The CA file clients must trust with [`TestClusterBuilder::client_tls`].
    pub fn client_ca(&self) -> Option<&Path> {
        self.topology
            .client_tls
            .as_ref()
            .map(|tls| tls.ca.as_path())
    }

    /// What signs calls as the deployment's own processes do.
    pub fn internal_signer(&self) -> anyhow::Result<Signer> {
        Ok(Authentication::of_topology(self.topology.access.as_ref())
            .context("load the cluster's access keys")?
            .internal_signer())
    }

    /// A connected raw RocketMQ client of `endpoint` (`host:port` of a router or node).
    pub async fn messaging_client(
        endpoint: &str,
    ) -> anyhow::Result<MessagingServiceClient<Channel>> {
        let channel = connect(&Dialer::plain(), endpoint)
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

    /// The log file of `region`'s `role` process.
    pub fn log_path(&self, region: &str, role: Role) -> PathBuf {
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

    /// [`TestCluster::run_meridian`] with `env` (name, value) set for it.
    pub async fn run_meridian_with_env<I, S>(
        &self,
        args: I,
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> anyhow::Result<CommandOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        crate::command::run_binary_with_env(&self.binary, args, env, timeout).await
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

async fn connect(dialer: &Dialer, endpoint: &str) -> anyhow::Result<Channel> {
    let channel = dialer
        .endpoint(endpoint)
        .context("build the gRPC endpoint")?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(channel)
}

#[cfg(test)]
mod tests;
