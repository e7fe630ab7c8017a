//! The topology data model: what a topology file says, after parsing.

use crate::Drill;
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A whole deployment: regions, the links between them and the topics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Regions by name (`[a-z0-9-]`, 1..=32 characters).
    pub regions: BTreeMap<String, Region>,
    /// Links between regions; their latency orders failover choices.
    #[serde(default)]
    pub links: Vec<Link>,
    /// Topics by name (RocketMQ topic rules: `[A-Za-z0-9_-%|]`, 1..=127 characters).
    #[serde(default)]
    pub topics: BTreeMap<String, Topic>,
    /// Consumer groups by name (RocketMQ group rules: `[%|a-zA-Z0-9_-]`,
    /// 1..=255 characters) and their policies; a group not listed here is
    /// created on first use with [`crate::Group::default`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, crate::Group>,
    /// A scripted failure scenario to play against this deployment
    /// (`meridian drill run`); absent in most files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<Drill>,
    /// Who may use the client protocols (RocketMQ gRPC, HTTP, STOMP) and
    /// the admin API; absent: development mode (anonymous clients accepted,
    /// logged at start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
    /// Mutual TLS between replicators with certificates of a deployment
    /// CA; absent: each replicator makes a self-signed certificate and a
    /// dialer trusts the one in the peer's data directory (one machine only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_tls: Option<TlsFiles>,
    /// TLS on every region's client endpoints: the node's RocketMQ gRPC,
    /// admin, HTTP and STOMP listeners and the router. `cert` must name the
    /// addresses clients dial (IP addresses or DNS names); `ca` is what the
    /// deployment's own processes (routers, replicators, `meridian status`,
    /// `admin`, `bench`, drills) trust when they dial those endpoints.
    /// Absent: plain TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_tls: Option<TlsFiles>,
}

/// `[replication_tls]` and `[client_tls]`: PEM files of a CA and of each
/// region's certificate (`meridian certs` makes them for development).
/// `{region}` in `cert` and `key` is replaced by the region's name;
/// relative paths are resolved against the topology file's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA certificate (PEM) that signed every region's certificate.
    pub ca: PathBuf,
    /// A region's certificate chain (PEM), e.g. `certs/{region}.pem`,
    /// signed by `ca`. For replication it must name
    /// `<region>.replicator.meridian`; for client endpoints, the addresses
    /// clients dial.
    pub cert: PathBuf,
    /// The certificate's private key (PEM, PKCS#8), e.g. `certs/{region}-key.pem`.
    pub key: PathBuf,
}

impl TlsFiles {
    /// `template` with `{region}` replaced by `region`.
    fn for_region(template: &std::path::Path, region: &str) -> PathBuf {
        PathBuf::from(template.to_string_lossy().replace("{region}", region))
    }

    /// Where `region`'s certificate chain is.
    pub fn cert_path(&self, region: &str) -> PathBuf {
        Self::for_region(&self.cert, region)
    }

    /// Where `region`'s private key is.
    pub fn key_path(&self, region: &str) -> PathBuf {
        Self::for_region(&self.key, region)
    }
}

/// Where a deployment's access keys are (`[access]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// A TOML file of access keys (`[[keys]]` with `id` and `secret`, or
    /// `secret_env` naming an environment variable that holds it), never
    /// the secrets themselves in the topology. A relative path is resolved
    /// against the directory of the topology file.
    pub keys_file: PathBuf,
    /// The key (of the keys file, granted `admin`) the deployment's own
    /// processes sign their calls to nodes' admin ports with: routers,
    /// replicators, `meridian status`, drills, and `meridian admin` when
    /// given no key of its own.
    pub internal_key: String,
}

/// One region: a public cloud region or a private site, running one node,
/// one replicator and one router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// A public cloud region or a private site.
    pub site: Site,
    /// RocketMQ 5 gRPC endpoint of the region's node (clients send and receive here).
    pub node: SocketAddr,
    /// The node's internal gRPC API: health, commit-log tail, apply, checkpoints.
    pub admin: SocketAddr,
    /// UDP address of the region's replicator (QUIC), where its peers dial
    /// it. Public regions only: a private site never listens for
    /// replication; its replicator dials its [`Region::hubs`] and both
    /// directions flow over that connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicator: Option<SocketAddr>,
    /// Private sites only: the public regions whose replicators this site's
    /// replicator dials (at least one). Records between the site and any
    /// other region travel through a hub.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hubs: Vec<String>,
    /// RocketMQ 5 gRPC access point of the region's router.
    pub router: SocketAddr,
    /// The node's HTTP listener (TCP): the Alibaba Cloud MQ HTTP API
    /// (2015-06-06) at the root path and the JSON REST API under `/v1/`.
    /// Absent: the node serves no HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<SocketAddr>,
    /// The node's STOMP 1.2 listener (TCP). Absent: the node serves no STOMP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stomp: Option<SocketAddr>,
    /// Where the region's processes keep their state. A relative path is
    /// resolved against the directory of the topology file.
    pub data_dir: PathBuf,
    /// When the node acknowledges a send: after fsync (`sync`) or after the
    /// write reached the OS (`async`).
    #[serde(default)]
    pub flush: FlushMode,
    /// How the region's router serves clients: `direct` (QueryRoute points
    /// at a node, clients talk to it) or `proxy` (QueryRoute points at the
    /// router, which carries every call to the chosen region's node).
    #[serde(default)]
    pub router_mode: RouterMode,
    /// The memory the node's storage may use, MiB: RocksDB's memtables
    /// (at most half of it) and one block cache shared by every column
    /// family, which also holds the tables' index blocks, so RocksDB's
    /// memory stays within it however much the node stores. Default
    /// [`Region::DEFAULT_STORAGE_MEMORY_MB`]; 16..=1048576.
    #[serde(
        default = "Region::default_storage_memory_mb",
        skip_serializing_if = "Region::is_default_storage_memory_mb"
    )]
    pub storage_memory_mb: u32,
}

impl Region {
    /// [`Region::storage_memory_mb`] when the file leaves it out, MiB.
    pub const DEFAULT_STORAGE_MEMORY_MB: u32 = 256;
    /// The smallest [`Region::storage_memory_mb`] allowed, MiB.
    pub const MIN_STORAGE_MEMORY_MB: u32 = 16;
    /// The largest [`Region::storage_memory_mb`] allowed, MiB (1 TiB).
    pub const MAX_STORAGE_MEMORY_MB: u32 = 1024 * 1024;

    fn default_storage_memory_mb() -> u32 {
        Self::DEFAULT_STORAGE_MEMORY_MB
    }

    fn is_default_storage_memory_mb(value: &u32) -> bool {
        *value == Self::DEFAULT_STORAGE_MEMORY_MB
    }
}

/// How a router serves clients (see [`Region::router_mode`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouterMode {
    /// QueryRoute answers with the chosen region's node; clients then call
    /// the node. A client follows a failover only when it queries routes
    /// again (Python and Node.js every 30 s, the Rust client 5.0.0 never).
    #[default]
    Direct,
    /// QueryRoute answers with the router itself, which carries Send,
    /// Receive, Ack and ChangeInvisibleDuration to the region it chooses at
    /// that moment (acks and invisibility changes to the region that issued
    /// the receipt handle): a failover reaches every client at once.
    Proxy,
}

/// What kind of place a region is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Site {
    /// A public cloud region, reachable from the other regions.
    Public,
    /// A private site (on premises), possibly behind NAT.
    Private,
}

/// When a node acknowledges a send (see [`Region::flush`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushMode {
    /// The write-ahead log is fsynced before a send is acknowledged.
    #[default]
    Sync,
    /// A send is acknowledged once written to the OS; a machine crash may lose it.
    Async,
}

/// A network link between two regions.
///
/// `latency_ms` orders failover choices. All four properties describe the
/// link for emulation, the same in both directions. The emulation fields
/// besides latency are optional and written back only when set, so files
/// without them stay unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// The two regions the link joins (order does not matter).
    pub between: [String; 2],
    /// One-way latency in milliseconds (0..=60000).
    pub latency_ms: u32,
    /// Extra one-way delay in milliseconds, drawn uniformly from
    /// `[0, jitter_ms]` per packet (0..=60000; default 0).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub jitter_ms: u32,
    /// Share of packets dropped, in percent (0 to 100; default 0).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub loss_percent: f64,
    /// Bandwidth in kilobits per second, per direction (1..=1000000000);
    /// `None` (the default) for no limit.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "saturating_option_u64"
    )]
    pub bandwidth_kbps: Option<u64>,
}

impl Link {
    /// A link with the given latency and no jitter, loss or bandwidth limit.
    pub fn new(a: impl Into<String>, b: impl Into<String>, latency_ms: u32) -> Link {
        Link {
            between: [a.into(), b.into()],
            latency_ms,
            jitter_ms: 0,
            loss_percent: 0.0,
            bandwidth_kbps: None,
        }
    }

    /// Whether the link joins `a` and `b`, in either order.
    pub fn joins(&self, a: &str, b: &str) -> bool {
        let [first, second] = &self.between;
        (first == a && second == b) || (first == b && second == a)
    }
}

fn is_zero_u32(value: &u32) -> bool {
    *value == 0
}

fn is_zero_f64(value: &f64) -> bool {
    *value == 0.0
}

/// Writes a `u64` as a TOML integer, which is signed: values above
/// `i64::MAX` are written as `i64::MAX` (validation refuses them, like
/// non-UTF-8 data directories, so only an invalid topology loses anything).
pub(crate) fn saturating_u64<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_i64(i64::try_from(*value).unwrap_or(i64::MAX))
}

/// [`saturating_u64`] for optional values.
pub(crate) fn saturating_option_u64<S: Serializer>(
    value: &Option<u64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => saturating_u64(value, serializer),
        None => serializer.serialize_none(),
    }
}

/// A topic and its policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topic {
    /// Number of queues (1..=1024); the same in every region.
    pub queues: u16,
    /// Message types the topic accepts.
    pub message_types: Vec<MessageType>,
    /// Regions that receive a copy of every message sent to the topic in any region.
    pub replicate_to: Vec<String>,
    /// Where a consumer group that has never consumed the topic starts.
    #[serde(default)]
    pub consume_from: ConsumeFrom,
    /// When a send is acknowledged: once stored in the region that took it
    /// (`local`, the default), or once also durably applied in
    /// [`Topic::geo_copies`] other regions of `replicate_to` (`geo`), so
    /// that losing the region right after the acknowledgement loses nothing.
    #[serde(default, skip_serializing_if = "is_local")]
    pub durability: Durability,
    /// With `durability = "geo"`: how many other regions must have applied a
    /// message before its send is acknowledged (1..=replicate_to less one;
    /// default 1).
    #[serde(default = "one_copy", skip_serializing_if = "is_one_copy")]
    pub geo_copies: u8,
    /// How long each region keeps a message after it joined its queue (a
    /// delay message: after its due time), in ms (1000..=31536000000, one
    /// year; default 259200000: 72 h, RocketMQ's `fileReservedTime`).
    /// Expired messages are removed with their queue and dedup entries,
    /// once every region they go to confirmed them; a consumer group behind
    /// resumes at the earliest message left.
    #[serde(
        default = "default_retention_ms",
        skip_serializing_if = "is_default_retention_ms"
    )]
    pub retention_ms: u64,
    /// Most bytes (encoded records) each region keeps of the topic, oldest
    /// messages removed first; split evenly over the queues, and a queue's
    /// newest message is always kept. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,
    /// When the node asks producers about transactions left open (topics
    /// that accept `transaction` messages).
    #[serde(default, skip_serializing_if = "TransactionChecks::is_default")]
    pub transaction_checks: TransactionChecks,
}

/// How a region checks back on open transactions of a topic
/// (`[topics.NAME.transaction_checks]`): the region that took a half
/// message asks a producer of the topic (RocketMQ's
/// `RecoverOrphanedTransactionCommand` on its Telemetry stream) first
/// `first_after_ms` after the send, then every `interval_ms`; after `max`
/// check-backs without an outcome the transaction is rolled back. Defaults
/// are RocketMQ's broker defaults (`transactionTimeOut` 6 s,
/// `transactionCheckInterval` 60 s, `transactionCheckMax` 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransactionChecks {
    /// Delay before the first check-back, in ms after the half message was
    /// stored (100..=86400000).
    pub first_after_ms: u64,
    /// Delay between check-backs, in ms (100..=86400000).
    pub interval_ms: u64,
    /// Check-backs sent to producers before the node rolls the transaction
    /// back (1..=1000). Rounds in which no producer of the topic was
    /// connected do not count.
    pub max: u32,
}

impl Default for TransactionChecks {
    fn default() -> Self {
        TransactionChecks {
            first_after_ms: 6_000,
            interval_ms: 60_000,
            max: 15,
        }
    }
}

impl TransactionChecks {
    fn is_default(&self) -> bool {
        *self == TransactionChecks::default()
    }
}

/// Default [`Topic::retention_ms`]: 72 hours.
pub const DEFAULT_RETENTION_MS: u64 = 72 * 60 * 60 * 1000;

fn default_retention_ms() -> u64 {
    DEFAULT_RETENTION_MS
}

fn is_default_retention_ms(retention_ms: &u64) -> bool {
    *retention_ms == DEFAULT_RETENTION_MS
}

/// When a send to a topic is acknowledged (see [`Topic::durability`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Stored (per the region's `flush`) in the region that took the send.
    #[default]
    Local,
    /// Also applied in `geo_copies` other regions.
    Geo,
}

fn is_local(durability: &Durability) -> bool {
    *durability == Durability::Local
}

fn one_copy() -> u8 {
    1
}

fn is_one_copy(copies: &u8) -> bool {
    *copies == 1
}

/// The kinds of message a topic accepts (RocketMQ 5's topic message types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    Normal,
    Fifo,
    Delay,
    Transaction,
}

impl MessageType {
    /// Every message type, in declaration order.
    pub const ALL: [MessageType; 4] = [
        MessageType::Normal,
        MessageType::Fifo,
        MessageType::Delay,
        MessageType::Transaction,
    ];

    /// The name used in topology files (`normal`, `fifo`, `delay`, `transaction`).
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Normal => "normal",
            MessageType::Fifo => "fifo",
            MessageType::Delay => "delay",
            MessageType::Transaction => "transaction",
        }
    }
}

/// Where a new consumer group starts reading a topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsumeFrom {
    /// From the earliest message still retained.
    #[default]
    Earliest,
    /// Only messages stored after the group was created.
    Latest,
}
