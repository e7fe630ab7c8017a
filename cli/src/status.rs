//! `meridian status`: every region's node health and every replication link's
//! backlog, read from the nodes' internal API (`meridian.v1.NodeService`).
//!
//! A link's backlog is the sending node's last sequence minus the sequence its
//! peer has acknowledged (the checkpoint the sender persisted): how many commit
//! log entries the peer has not yet confirmed. Entries that do not replicate to
//! that peer (other topics, records from other origins) are skipped by the
//! sender but still move the checkpoint, so an idle, healthy link shows 0.

use meridian_proto::meridian::v1::node_service_client::NodeServiceClient;
use meridian_proto::meridian::v1::{GetCheckpointRequest, HealthRequest};
use meridian_topology::Topology;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long one region may take to answer.
const REGION_TIMEOUT: Duration = Duration::from_secs(2);

/// What one region's node said, or why it said nothing.
enum Health {
    Up {
        last_sequence: u64,
        /// Sends since the node started whose message id another message
        /// with other content already had (both stored).
        reused_client_ids: u64,
        client: NodeServiceClient<Channel>,
    },
    Down(String),
}

async fn connect(admin: SocketAddr) -> Result<NodeServiceClient<Channel>, String> {
    let endpoint = Endpoint::from_shared(format!("http://{admin}"))
        .map_err(|error| error.to_string())?
        .connect_timeout(REGION_TIMEOUT)
        .timeout(REGION_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| format!("cannot connect to {admin}: {error}"))?;
    Ok(NodeServiceClient::new(channel))
}

async fn health(region: &str, admin: SocketAddr) -> Health {
    let mut client = match connect(admin).await {
        Ok(client) => client,
        Err(reason) => return Health::Down(reason),
    };
    match client.health(HealthRequest {}).await {
        Ok(answer) if answer.get_ref().region == region => Health::Up {
            last_sequence: answer.get_ref().last_sequence,
            reused_client_ids: answer.get_ref().reused_client_ids,
            client,
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

async fn snapshot(topology: &Topology) -> Snapshot {
    let mut regions = BTreeMap::new();
    for (name, region) in &topology.regions {
        regions.insert(name.clone(), health(name, region.admin).await);
    }
    let mut links = Vec::new();
    for (from, health) in &regions {
        for to in topology.peers(from) {
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
                        Ok(checkpoint) => Ok(LinkProgress {
                            last_sequence: *last_sequence,
                            acknowledged: checkpoint.get_ref().acked_through_sequence,
                        }),
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

/// Every replication link's progress (drills wait for links to catch up).
pub async fn link_backlogs(topology: &Topology) -> Vec<LinkBacklog> {
    snapshot(topology).await.links
}

/// Asks every region's node for its health and its outgoing checkpoints.
pub async fn report(topology: &Topology) -> Report {
    let Snapshot { regions, links } = snapshot(topology).await;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<14} {:<6} {:>14} {:>11}  detail",
        "region", "node", "last sequence", "reused ids"
    );
    for (name, health) in &regions {
        match health {
            Health::Up {
                last_sequence,
                reused_client_ids,
                ..
            } => {
                let detail = if *reused_client_ids > 0 {
                    "  producers sent different messages with the same message id (all stored)"
                } else {
                    ""
                };
                let _ = writeln!(
                    text,
                    "{name:<14} {:<6} {last_sequence:>14} {reused_client_ids:>11}{detail}",
                    "up"
                );
            }
            Health::Down(reason) => {
                let _ = writeln!(
                    text,
                    "{name:<14} {:<6} {:>14} {:>11}  {reason}",
                    "down", "-", "-"
                );
            }
        }
    }
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "{:<30} {:>12} {:>10}",
        "replication link", "acknowledged", "backlog"
    );
    for link in &links {
        let name = format!("{} -> {}", link.from, link.to);
        match &link.progress {
            Ok(progress) => {
                let _ = writeln!(
                    text,
                    "{name:<30} {:>12} {:>10}",
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
