//! `meridian status`: every region's node health and every replication link's
//! backlog, read from the nodes' internal API (`meridian.v1.NodeService`).
//!
//! A link's backlog is the sending node's last sequence minus the sequence its
//! peer has acknowledged (the checkpoint the sender persisted): how many commit
//! log entries the peer has not yet confirmed. Entries that do not replicate to
//! that peer (other topics, records from other origins) are skipped by the
//! sender but still move the checkpoint, so an idle, healthy link shows 0.
//! For a link with a backlog, the entries are read back (`Tail`, at most
//! [`UNCONFIRMED_READ_MAX`]) to show how many of them are messages and
//! consumer acknowledgements bound for that peer, and how old the oldest is.

use meridian_face::access::{SignedChannel, Signer};
use meridian_face::tls::Dialer;
use meridian_proto::meridian::v1::node_service_client::NodeServiceClient;
use meridian_proto::meridian::v1::{
    GetCheckpointRequest, HealthRequest, StorageMemory, TailRequest,
};
use meridian_replicator::core::{RecordFilter, Verdict};
use meridian_topology::Topology;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

/// How long one region may take to answer.
const REGION_TIMEOUT: Duration = Duration::from_secs(2);
/// Commit-log entries read per link to describe its backlog, at most.
pub const UNCONFIRMED_READ_MAX: u64 = 10_000;

/// What one region's node said, or why it said nothing.
enum Health {
    Up {
        last_sequence: u64,
        /// Sends since the node started whose message id another message
        /// with other content already had (both stored).
        reused_client_ids: u64,
        /// The node's storage memory, if it reports it.
        storage_memory: Option<StorageMemory>,
        client: Box<NodeServiceClient<SignedChannel>>,
    },
    Down(String),
}

async fn connect(
    admin: SocketAddr,
    signer: &Signer,
    dialer: &Result<Dialer, String>,
) -> Result<NodeServiceClient<SignedChannel>, String> {
    let endpoint = dialer
        .as_ref()
        .map_err(Clone::clone)?
        .endpoint(admin)
        .map_err(|error| error.to_string())?
        .connect_timeout(REGION_TIMEOUT)
        .timeout(REGION_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| format!("cannot connect to {admin}: {error}"))?;
    Ok(NodeServiceClient::with_interceptor(channel, signer.clone()))
}

async fn health(
    region: &str,
    admin: SocketAddr,
    signer: &Signer,
    dialer: &Result<Dialer, String>,
) -> Health {
    let mut client = match connect(admin, signer, dialer).await {
        Ok(client) => client,
        Err(reason) => return Health::Down(reason),
    };
    match client.health(HealthRequest {}).await {
        Ok(answer) if answer.get_ref().region == region => Health::Up {
            last_sequence: answer.get_ref().last_sequence,
            reused_client_ids: answer.get_ref().reused_client_ids,
            storage_memory: answer.get_ref().storage_memory,
            client: Box::new(client),
        },
        Ok(answer) => Health::Down(format!(
            "{admin} answers as region `{}`",
            answer.get_ref().region
        )),
        Err(status) => Health::Down(format!("health check failed: {}", status.message())),
    }
}

/// A deployment's status.
pub struct Report {
    /// The tables printed by `meridian status`.
    pub text: String,
    /// Regions whose node did not answer (or answered as another region).
    pub regions_down: Vec<String>,
}

/// One replication link's progress.
pub struct LinkBacklog {
    pub from: String,
    pub to: String,
    /// How far the peer confirmed; `Err` says why it is unknown.
    pub progress: Result<LinkProgress, String>,
}

/// Where a link stands.
#[derive(Debug, Clone, Copy)]
pub struct LinkProgress {
    /// The sending node's last commit-log sequence.
    pub last_sequence: u64,
    /// The peer confirmed every entry through this sequence.
    pub acknowledged: u64,
    /// What the unconfirmed entries bound for the peer are (`None` when it
    /// could not be read).
    pub unconfirmed: Option<Unconfirmed>,
}

/// The unconfirmed entries of a link that go to its peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unconfirmed {
    pub messages: u64,
    /// Consumer-group acknowledgements.
    pub acks: u64,
    /// When the oldest of them was stored or acknowledged, ms since the Unix epoch.
    pub oldest_ms: Option<i64>,
    /// More entries than [`UNCONFIRMED_READ_MAX`]: the counts are a floor.
    pub truncated: bool,
}

impl LinkProgress {
    /// Entries the peer has not confirmed.
    pub fn backlog(&self) -> u64 {
        self.last_sequence.saturating_sub(self.acknowledged)
    }
}

/// Every region's health and every link's backlog.
struct Snapshot {
    regions: BTreeMap<String, Health>,
    links: Vec<LinkBacklog>,
}

/// With `describe`, also reads back each backlog ([`Unconfirmed`]).
async fn snapshot(topology: &Topology, describe: bool) -> Snapshot {
    let mut regions = BTreeMap::new();
    let signer = crate::admin::internal_signer(topology);
    let dialer = crate::admin::dialer(topology).map_err(|error| format!("{error:#}"));
    for (name, region) in &topology.regions {
        regions.insert(
            name.clone(),
            health(name, region.admin, &signer, &dialer).await,
        );
    }
    let mut links = Vec::new();
    for (from, health) in &regions {
        for to in topology.replication_neighbours(from) {
            let progress = match health {
                Health::Up {
                    last_sequence,
                    client,
                    ..
                } => {
                    let request = GetCheckpointRequest {
                        peer_region: to.to_owned(),
                    };
                    match client.clone().get_checkpoint(request).await {
                        Ok(checkpoint) => {
                            let acknowledged = checkpoint.get_ref().acked_through_sequence;
                            let unconfirmed = if describe {
                                unconfirmed(
                                    (**client).clone(),
                                    topology,
                                    from,
                                    to,
                                    acknowledged,
                                    *last_sequence,
                                )
                                .await
                            } else {
                                None
                            };
                            Ok(LinkProgress {
                                last_sequence: *last_sequence,
                                acknowledged,
                                unconfirmed,
                            })
                        }
                        Err(status) => Err(status.message().to_owned()),
                    }
                }
                Health::Down(_) => Err(format!("{from}'s node does not answer")),
            };
            links.push(LinkBacklog {
                from: from.clone(),
                to: to.to_owned(),
                progress,
            });
        }
    }
    Snapshot { regions, links }
}

/// Reads back the entries of `from`'s log after `acknowledged` through
/// `last` and counts those `from` sends to `peer` (the replicator's own
/// filter: records of any origin it forwards); `None` when the node does not
/// answer in time.
async fn unconfirmed(
    mut client: NodeServiceClient<SignedChannel>,
    topology: &Topology,
    from: &str,
    peer: &str,
    acknowledged: u64,
    last: u64,
) -> Option<Unconfirmed> {
    let mut found = Unconfirmed::default();
    if last <= acknowledged {
        return Some(found);
    }
    let mut filter = RecordFilter::new(topology, from, peer);
    let read = async {
        let request = TailRequest {
            after_sequence: acknowledged,
            max_records: 1024,
            max_bytes: 4 * 1024 * 1024,
            local_origin_only: false,
        };
        let mut stream = client.tail(request).await.ok()?.into_inner();
        let mut read = 0u64;
        while let Some(batch) = stream.message().await.ok()? {
            for record in &batch.records {
                if record.sequence > last {
                    return Some(());
                }
                read += 1;
                if filter.verdict(record) != Verdict::Send {
                    continue;
                }
                let stamp = match (&record.message, &record.ack) {
                    (Some(message), _) => {
                        found.messages += 1;
                        Some(message.store_timestamp_ms)
                    }
                    (None, Some(ack)) => {
                        found.acks += 1;
                        Some(ack.acked_at_ms)
                    }
                    _ => None,
                };
                if let Some(stamp) = stamp.filter(|stamp| *stamp > 0) {
                    found.oldest_ms =
                        Some(found.oldest_ms.map_or(stamp, |oldest| oldest.min(stamp)));
                }
            }
            if batch.through_sequence >= last {
                return Some(());
            }
            if read >= UNCONFIRMED_READ_MAX {
                found.truncated = true;
                return Some(());
            }
        }
        Some(())
    };
    tokio::time::timeout(REGION_TIMEOUT, read).await.ok()??;
    Some(found)
}

/// The storage memory `region`'s node reports now (`meridian bench`
/// reads its own node's at the end of a run); `Err` says why there is none.
pub async fn storage_memory(topology: &Topology, region: &str) -> Result<StorageMemory, String> {
    let admin = topology
        .regions
        .get(region)
        .ok_or_else(|| format!("no region `{region}` in the topology"))?
        .admin;
    let signer = crate::admin::internal_signer(topology);
    let dialer = crate::admin::dialer(topology).map_err(|error| format!("{error:#}"));
    match health(region, admin, &signer, &dialer).await {
        Health::Up {
            storage_memory: Some(memory),
            ..
        } => Ok(memory),
        Health::Up { .. } => Err(format!("{region}'s node reports no storage memory")),
        Health::Down(reason) => Err(reason),
    }
}

/// Every replication link's progress (drills wait for links to catch up).
pub async fn link_backlogs(topology: &Topology) -> Vec<LinkBacklog> {
    snapshot(topology, false).await.links
}

/// Asks every region's node for its health and its outgoing checkpoints.
pub async fn report(topology: &Topology) -> Report {
    let Snapshot { regions, links } = snapshot(topology, true).await;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<14} {:<6} {:>14} {:>11} {:>15}  detail",
        "region", "node", "last sequence", "reused ids", "storage MiB"
    );
    for (name, health) in &regions {
        match health {
            Health::Up {
                last_sequence,
                reused_client_ids,
                storage_memory,
                ..
            } => {
                // In use (memtables and cached blocks, and index blocks
                // outside the cache) of the budget.
                let memory = storage_memory.map_or_else(
                    || "-".to_owned(),
                    |memory| {
                        format!(
                            "{}/{}",
                            mebibytes(storage_in_use(&memory)),
                            mebibytes(memory.budget_bytes)
                        )
                    },
                );
                let detail = if *reused_client_ids > 0 {
                    "  producers sent different messages with the same message id (all stored)"
                } else {
                    ""
                };
                let _ = writeln!(
                    text,
                    "{name:<14} {:<6} {last_sequence:>14} {reused_client_ids:>11} {memory:>15}{detail}",
                    "up"
                );
            }
            Health::Down(reason) => {
                let _ = writeln!(
                    text,
                    "{name:<14} {:<6} {:>14} {:>11} {:>15}  {reason}",
                    "down", "-", "-", "-"
                );
            }
        }
    }
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "{:<30} {:>12} {:>10} {:>9} {:>7} {:>10}",
        "replication link", "acknowledged", "backlog", "messages", "acks", "oldest"
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        });
    for link in &links {
        let name = format!("{} -> {}", link.from, link.to);
        match &link.progress {
            Ok(progress) => {
                let (messages, acks, oldest) = match progress.unconfirmed {
                    Some(found) => {
                        let plus = if found.truncated { "+" } else { "" };
                        (
                            format!("{}{plus}", found.messages),
                            format!("{}{plus}", found.acks),
                            found.oldest_ms.map_or_else(
                                || "-".to_owned(),
                                |oldest| {
                                    format!("{:.1}s", (now_ms - oldest).max(0) as f64 / 1000.0)
                                },
                            ),
                        )
                    }
                    None => ("?".to_owned(), "?".to_owned(), "?".to_owned()),
                };
                let _ = writeln!(
                    text,
                    "{name:<30} {:>12} {:>10} {messages:>9} {acks:>7} {oldest:>10}",
                    progress.acknowledged,
                    progress.backlog()
                );
            }
            Err(_) if matches!(regions.get(&link.from), Some(Health::Down(_))) => {
                let _ = writeln!(text, "{name:<30} {:>12} {:>10}", "-", "unknown");
            }
            Err(reason) => {
                let _ = writeln!(text, "{name:<30} {:>12} {:>10}  {reason}", "-", "unknown");
            }
        }
    }
    let regions_down = regions
        .iter()
        .filter(|(_, health)| matches!(health, Health::Down(_)))
        .map(|(name, _)| name.clone())
        .collect();
    Report { text, regions_down }
}

/// What a node's storage holds in memory, bytes: the block cache (which
/// includes its reservation for the memtables, or the memtables if they
/// outgrew it) and index blocks outside the cache.
pub fn storage_in_use(memory: &StorageMemory) -> u64 {
    memory.cache_bytes.max(memory.memtable_bytes) + memory.table_reader_bytes
}

/// Bytes as whole MiB, rounded to nearest.
fn mebibytes(bytes: u64) -> u64 {
    (bytes + 512 * 1024) / (1024 * 1024)
}
