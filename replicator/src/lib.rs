//! The replicator agent: ships a region's commit log to its peer regions over QUIC.
//!
//! One replicator runs per region, next to the region's node. It is both:
//!
//! * a **sender**, one link per neighbour region (every other public region,
//!   plus the private sites this region is a hub of; a private site's
//!   neighbours are its hubs): it tails the local node's commit log from the
//!   checkpoint persisted for that peer, keeps the records the peer must get
//!   from this region (any origin: hubs forward, see [`core::RecordFilter`]),
//!   sends them in batches over a QUIC stream and persists the peer's
//!   acknowledgements as the new checkpoint (`sender.rs`, driven by the
//!   I/O-free state machine in [`core`]);
//! * a **receiver** that applies its peers' batches to the local node and
//!   acknowledges them once durable ([`receiver`]): a QUIC server in a public
//!   region; in a private site, which never listens, it serves the streams
//!   its hubs open on the connections the site dialed.
//!
//! Delivery is at least once on the wire and exactly once in storage: the
//! receiving node skips records whose deduplication id it already has, so
//! resending after any failure is harmless.
//!
//! # Protocol
//!
//! One bidirectional QUIC stream per direction (ALPN `meridian-repl/1`, see
//! [`tls`]), carrying length-prefixed `ReplicationFrame`s ([`frame`]). Public
//! regions dial each other (a connection per direction); a private site dials
//! each hub and the hub, once the site's Hello arrived, opens a second stream
//! on that connection for its own direction. The sending side of a stream
//! sends `Hello{protocol_version: 1, from_region, to_region}`, then
//! `Batch`es with increasing `through_sequence`; the acceptor answers each with
//! `Ack{through_sequence, stored, duplicates}` after the node's Apply returned.
//! Either side may send `Goodbye{reason}` before closing. Close codes:
//! [`protocol::CLOSE_NORMAL`] (0), [`protocol::CLOSE_HANDSHAKE_REFUSED`] (1),
//! [`protocol::CLOSE_MALFORMED`] (2), [`protocol::CLOSE_NODE_UNAVAILABLE`] (3).
//!
//! Not yet: compression, rate limits, mutual TLS, metrics.
//!
//! This crate talks to the node only through `meridian-proto`'s gRPC API. It
//! must not depend on `meridian-region-node` or `meridian-router`.

pub mod core;
mod error;
pub mod frame;
#[cfg(test)]
mod network_sim_tests;
mod node_client;
pub mod protocol;
pub mod receiver;
pub mod receiver_core;
mod sender;
pub mod tls;

pub use error::ReplicatorError;
pub use protocol::PROTOCOL_VERSION;
pub use tls::server_name;

use crate::core::{RecordFilter, SenderLimits};
use crate::node_client::NodeClient;
use crate::sender::{Link, LinkStatus, Transport};
use meridian_topology::{Site, Topology};
use std::collections::{BTreeSet, HashMap};
use std::fs::{File, TryLockError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

/// How often the per-peer progress line is logged (at DEBUG).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

/// Runs the replicator of `region` until `shutdown` is cancelled: on
/// `socket` (already bound, UDP) for a public region, which peers dial; on
/// an ephemeral socket of its own for a private site (pass `None`), which
/// only dials its hubs.
///
/// Takes the data directory lock first, loads or generates the TLS identity,
/// then serves peers and runs one link per neighbour region. On cancellation
/// all tasks stop, the QUIC endpoint closes and drains, and `Ok(())` is
/// returned.
pub async fn run(
    topology: Topology,
    region: String,
    socket: Option<std::net::UdpSocket>,
    shutdown: CancellationToken,
) -> Result<(), ReplicatorError> {
    let local = topology
        .region(&region)
        .map_err(|source| ReplicatorError::UnknownRegion {
            region: region.clone(),
            source: Box::new(source),
        })?;
    let lock = lock_data_dir(&local.data_dir)?;
    serve(topology, region, socket, lock, shutdown).await
}

/// [`run`] for a caller that already holds the data directory lock (the CLI
/// takes it before announcing readiness, so a second replicator of the same
/// region is refused before it claims to be ready).
pub async fn serve(
    topology: Topology,
    region: String,
    socket: Option<std::net::UdpSocket>,
    lock: DataDirLock,
    shutdown: CancellationToken,
) -> Result<(), ReplicatorError> {
    let _lock = lock;
    let local = topology
        .region(&region)
        .map_err(|source| ReplicatorError::UnknownRegion {
            region: region.clone(),
            source: Box::new(source),
        })?;
    let neighbours: Vec<String> = topology
        .replication_neighbours(&region)
        .into_iter()
        .map(str::to_owned)
        .collect();
    let trust = tls::Trust::load(&topology, &region, local)?;
    let (endpoint, local_address) = open_endpoint(&topology, &region, local, &trust, socket)?;
    // Calls to the node's admin port are signed with the internal key.
    let signer = meridian_face::access::Authentication::of_topology(topology.access.as_ref())
        .map_err(|source| ReplicatorError::AccessKeys {
            source: Box::new(source),
        })?
        .internal_signer();
    let dialer = meridian_face::tls::Dialer::of_topology(&topology).map_err(|source| {
        ReplicatorError::ClientTls {
            source: Box::new(source),
        }
    })?;
    let node = NodeClient::connect_lazy(local.admin, signer, &dialer)?;

    let tasks_shutdown = shutdown.child_token();
    let mut tasks = JoinSet::new();
    let mut task_names = HashMap::new();

    // Private sites that dial this region: their links send over the
    // connection the site opened, which the receiver hands over.
    let mut inbound_links = HashMap::new();
    let mut waiting_links = HashMap::new();
    for neighbour in &neighbours {
        if !topology.dials(&region, neighbour) {
            let (sender, receiver) = tokio::sync::watch::channel(None);
            inbound_links.insert(neighbour.clone(), sender);
            waiting_links.insert(neighbour.clone(), receiver);
        }
    }
    let receiver = Arc::new(receiver::Receiver {
        local_region: region.clone(),
        known_peers: neighbours.iter().cloned().collect::<BTreeSet<_>>(),
        node: node.clone(),
        inbound_links,
        checks_peer_names: trust.checks_peer_names(),
    });
    if local.site == Site::Public {
        let handle = tasks.spawn(
            receiver::run_receiver(
                endpoint.clone(),
                Arc::clone(&receiver),
                tasks_shutdown.clone(),
            )
            .instrument(info_span!("receiver", region = %region)),
        );
        task_names.insert(handle.id(), "receiver".to_owned());
    }

    let mut statuses = Vec::new();
    for peer in &neighbours {
        let peer_region = &topology.regions[peer];
        let status = Arc::new(LinkStatus::default());
        statuses.push((peer.clone(), Arc::clone(&status)));
        let transport = match (peer_region.replicator, waiting_links.remove(peer)) {
            (_, Some(connections)) => Transport::Accept { connections },
            (Some(address), None) => Transport::Dial {
                address,
                peer_data_dir: peer_region.data_dir.clone(),
                // A private site serves its hub's records on the connection it dialed.
                serve_returning: (local.site == Site::Private).then(|| Arc::clone(&receiver)),
            },
            (None, None) => {
                // Validation gives every public region an address; a
                // private neighbour always dials (handled above).
                warn!(peer = %peer, "neighbour has no replicator address; no link");
                continue;
            }
        };
        let link = Link {
            local_region: region.clone(),
            peer: peer.clone(),
            trust: trust.clone(),
            transport,
            endpoint: endpoint.clone(),
            node: node.clone(),
            filter: RecordFilter::new(&topology, &region, peer),
            limits: SenderLimits::default(),
            status,
        };
        let handle = tasks.spawn(
            sender::run_link(link, tasks_shutdown.clone())
                .instrument(info_span!("link", region = %region, peer = %peer)),
        );
        task_names.insert(handle.id(), format!("link to {peer}"));
    }
    let handle = tasks.spawn(report_progress(node, statuses, tasks_shutdown.clone()));
    task_names.insert(handle.id(), "progress reporter".to_owned());
    info!(
        region = %region,
        address = %local_address,
        listening = local.site == Site::Public,
        ?neighbours,
        "replicator started"
    );

    let mut outcome = Ok(());
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            joined = tasks.join_next_with_id() => match joined {
                None => break,
                Some(Ok((id, ()))) => {
                    let task = task_names.get(&id).map_or("unknown", String::as_str);
                    warn!(task, "replicator task ended before shutdown");
                }
                Some(Err(source)) => {
                    let task = task_names.get(&source.id()).cloned().unwrap_or_default();
                    error!(task = %task, "replicator task failed; stopping");
                    outcome = Err(ReplicatorError::Task { task, source });
                    break;
                }
            },
        }
    }
    tasks_shutdown.cancel();
    while let Some(joined) = tasks.join_next().await {
        if let Err(error) = joined {
            error!(error = %error, "replicator task failed while stopping");
        }
    }
    endpoint.close(protocol::CLOSE_NORMAL.into(), b"shutdown");
    endpoint.wait_idle().await;
    info!(region = %region, "replicator stopped");
    outcome
}

/// The QUIC endpoint: a server on the given socket for a public region; a
/// client only (no server configuration, so every incoming connection is
/// refused) on an ephemeral socket for a private site. Returns it with its
/// local address, for logs.
fn open_endpoint(
    topology: &Topology,
    region: &str,
    local: &meridian_topology::Region,
    trust: &tls::Trust,
    socket: Option<std::net::UdpSocket>,
) -> Result<(quinn::Endpoint, String), ReplicatorError> {
    let (socket, server_config) = match (local.site, socket) {
        (Site::Public, Some(socket)) => (socket, trust.server_config(region)?),
        (Site::Public, None) => {
            return Err(ReplicatorError::NoSocket {
                region: region.to_owned(),
            });
        }
        (Site::Private, socket) => {
            if socket.is_some() {
                warn!(
                    region,
                    "a private site never listens; ignoring the given socket"
                );
            }
            // Dial from the family of the first hub's address.
            let ipv6 = local
                .hubs
                .iter()
                .filter_map(|hub| topology.regions.get(hub)?.replicator)
                .next()
                .is_some_and(|address| address.is_ipv6());
            let any: SocketAddr = if ipv6 {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            };
            let socket =
                std::net::UdpSocket::bind(any).map_err(|source| ReplicatorError::Endpoint {
                    address: any.to_string(),
                    source,
                })?;
            (socket, None)
        }
    };
    let local_address = socket
        .local_addr()
        .map_or_else(|_| "(unknown)".to_owned(), |address| address.to_string());
    let endpoint_error = |source| ReplicatorError::Endpoint {
        address: local_address.clone(),
        source,
    };
    socket.set_nonblocking(true).map_err(endpoint_error)?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server_config,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(endpoint_error)?;
    Ok((endpoint, local_address))
}

/// Logs each link's acknowledged sequence and lag behind the node's log.
async fn report_progress(
    node: NodeClient,
    links: Vec<(String, Arc<LinkStatus>)>,
    shutdown: CancellationToken,
) {
    let first_tick = tokio::time::Instant::now() + PROGRESS_INTERVAL;
    let mut interval = tokio::time::interval_at(first_tick, PROGRESS_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = interval.tick() => {}
        }
        let health = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            health = node.health() => health,
        };
        let last_sequence = match health {
            Ok(health) => Some(health.last_sequence),
            Err(error) => {
                debug!(error = %meridian_report::Report(&error), "node health unavailable");
                None
            }
        };
        for (peer, status) in &links {
            let acked_through = status.acked_through();
            let lag_sequences = last_sequence.map(|last| last.saturating_sub(acked_through));
            debug!(
                peer = %peer,
                connected = status.connected(),
                acked_through,
                ?last_sequence,
                ?lag_sequences,
                "replication progress"
            );
        }
    }
}

/// Exclusive ownership of `<data_dir>/replicator/` for this process's lifetime.
#[derive(Debug)]
pub struct DataDirLock {
    // Holding the open file holds the lock; dropping it releases the lock.
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates `<data_dir>/replicator/` and locks `<data_dir>/replicator/LOCK`
/// exclusively, so that two replicators never share one region's state.
pub fn lock_data_dir(data_dir: &Path) -> Result<DataDirLock, ReplicatorError> {
    let directory = data_dir.join("replicator");
    std::fs::create_dir_all(&directory).map_err(|source| ReplicatorError::CreateDirectory {
        path: directory.clone(),
        source,
    })?;
    let path = directory.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| ReplicatorError::LockFile {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock { _file: file, path }),
        Err(TryLockError::WouldBlock) => Err(ReplicatorError::Locked { path }),
        Err(TryLockError::Error(source)) => Err(ReplicatorError::LockFile { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_of_a_data_dir_fails_until_the_first_is_dropped() {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let first = lock_data_dir(data_dir.path()).expect("first lock");
        assert!(first.path().ends_with("replicator/LOCK"));
        let error = lock_data_dir(data_dir.path()).expect_err("already locked");
        assert!(matches!(error, ReplicatorError::Locked { .. }));
        assert!(
            error.to_string().contains("is locked by another process"),
            "{error}"
        );
        drop(first);
        lock_data_dir(data_dir.path()).expect("lock after release");
    }
}
