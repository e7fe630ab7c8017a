//! Test harness: an in-memory fake of the node's internal API and helpers to
//! run replicators of a two-region topology on loopback ports chosen by the OS.

#![allow(dead_code)] // each test binary uses a different part of the harness

use meridian_proto::meridian::v1::node_service_server::{NodeService, NodeServiceServer};
use meridian_proto::meridian::v1::{
    ApplyRequest, ApplyResponse, Checkpoint, GetCheckpointRequest, HealthRequest, HealthResponse,
    Message, PutCheckpointResponse, Record, RecordKind, TailBatch, TailRequest, TopicStatsRequest,
    TopicStatsResponse,
};
use meridian_topology::{Region, Site, Topic, Topology};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Polls `condition` every 10 ms until it holds; panics after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Debug, Default)]
pub struct NodeState {
    pub log: Vec<Record>,
    pub dedup_ids: HashSet<Vec<u8>>,
    pub checkpoints: HashMap<String, u64>,
    pub stored: u64,
    pub duplicates: u64,
    /// GetCheckpoint calls: one per replication session the replicator started.
    pub checkpoint_reads: u64,
    /// Apply calls still to refuse (as if the node were unavailable).
    pub apply_failures_left: u64,
    /// Apply calls received, refused and held ones included.
    pub apply_calls: u64,
}

/// An in-memory node: a commit log, deduplication, checkpoints.
#[derive(Clone)]
pub struct FakeNode {
    pub region: String,
    state: Arc<Mutex<NodeState>>,
    last_sequence: Arc<watch::Sender<u64>>,
    /// While true, Apply calls wait (counted in `apply_calls` first).
    hold_applies: Arc<watch::Sender<bool>>,
}

impl FakeNode {
    pub fn new(region: &str) -> Self {
        Self {
            region: region.to_owned(),
            state: Arc::default(),
            last_sequence: Arc::new(watch::channel(0).0),
            hold_applies: Arc::new(watch::channel(false).0),
        }
    }

    /// Makes Apply calls wait (`true`) until released (`false`).
    pub fn hold_applies(&self, hold: bool) {
        self.hold_applies.send_replace(hold);
    }

    pub fn state(&self) -> MutexGuard<'_, NodeState> {
        self.state.lock().expect("fake node state lock")
    }

    /// Appends a message produced in this region; returns its sequence.
    pub fn produce(&self, topic: &str, body: &str) -> u64 {
        let mut state = self.state();
        let sequence = state.log.len() as u64 + 1;
        let mut dedup_id = self.region.as_bytes().to_vec();
        dedup_id.extend_from_slice(&sequence.to_be_bytes());
        state.dedup_ids.insert(dedup_id.clone());
        state.log.push(Record {
            sequence,
            kind: RecordKind::Message as i32,
            dedup_id,
            origin_region: self.region.clone(),
            origin_sequence: sequence,
            path: vec![self.region.clone()],
            message: Some(Message {
                topic: topic.to_owned(),
                body: body.as_bytes().to_vec(),
                ..Message::default()
            }),
            ack: None,
            group_start: None,
            transaction_end: None,
            trace: None,
            catalog: None,
        });
        drop(state);
        self.last_sequence.send_replace(sequence);
        sequence
    }

    pub fn log_len(&self) -> usize {
        self.state().log.len()
    }

    pub fn checkpoint(&self, peer: &str) -> u64 {
        self.state().checkpoints.get(peer).copied().unwrap_or(0)
    }

    pub fn set_checkpoint(&self, peer: &str, sequence: u64) {
        self.state().checkpoints.insert(peer.to_owned(), sequence);
    }

    /// Serves the node API on a loopback port until `shutdown`.
    pub async fn serve(&self, shutdown: CancellationToken) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake node");
        let address = listener.local_addr().expect("fake node address");
        let server = tonic::transport::Server::builder()
            .add_service(NodeServiceServer::new(self.clone()))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                shutdown.cancelled_owned(),
            );
        tokio::spawn(server);
        address
    }

    /// Records after `after` up to `max_records`, and the highest sequence examined.
    fn read_after(&self, after: u64, max_records: usize, local_only: bool) -> Option<TailBatch> {
        let state = self.state();
        let start = usize::try_from(after).expect("small");
        let examined = state.log.get(start..)?.iter().take(max_records);
        let mut through = after;
        let mut records = Vec::new();
        for record in examined {
            through = record.sequence;
            if !local_only || record.origin_region == self.region {
                records.push(record.clone());
            }
        }
        (through > after).then_some(TailBatch {
            records,
            through_sequence: through,
        })
    }
}

#[tonic::async_trait]
impl NodeService for FakeNode {
    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthResponse>, Status> {
        Ok(Response::new(HealthResponse {
            region: self.region.clone(),
            last_sequence: self.log_len() as u64,
            started_at_ms: 0,
            ..Default::default()
        }))
    }

    type TailStream = ReceiverStream<Result<TailBatch, Status>>;

    async fn tail(
        &self,
        request: Request<TailRequest>,
    ) -> Result<Response<Self::TailStream>, Status> {
        let request = request.into_inner();
        let (sender, receiver) = mpsc::channel(2);
        let node = self.clone();
        let max_records = usize::try_from(request.max_records.clamp(1, 100)).expect("small");
        // Ends when the caller goes away.
        tokio::spawn(async move {
            let mut after = request.after_sequence;
            let mut changed = node.last_sequence.subscribe();
            loop {
                match node.read_after(after, max_records, request.local_origin_only) {
                    Some(batch) => {
                        after = batch.through_sequence;
                        if sender.send(Ok(batch)).await.is_err() {
                            return;
                        }
                    }
                    None => tokio::select! {
                        _ = sender.closed() => return,
                        result = changed.changed() => if result.is_err() { return },
                    },
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn apply(
        &self,
        request: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        let request = request.into_inner();
        self.state().apply_calls += 1;
        let mut held = self.hold_applies.subscribe();
        let _ = held.wait_for(|hold| !*hold).await;
        let mut response = ApplyResponse::default();
        let mut state = self.state();
        if state.apply_failures_left > 0 {
            state.apply_failures_left -= 1;
            return Err(Status::unavailable("fake node refuses this apply"));
        }
        for mut record in request.records {
            if !state.dedup_ids.insert(record.dedup_id.clone()) {
                response.duplicates += 1;
                continue;
            }
            record.sequence = state.log.len() as u64 + 1;
            if record.path.last() != Some(&request.from_region) {
                record.path.push(request.from_region.clone());
            }
            record.path.push(self.region.clone());
            state.log.push(record);
            response.stored += 1;
        }
        state.stored += u64::from(response.stored);
        state.duplicates += u64::from(response.duplicates);
        let last = state.log.len() as u64;
        drop(state);
        self.last_sequence.send_replace(last);
        Ok(Response::new(response))
    }

    async fn get_checkpoint(
        &self,
        request: Request<GetCheckpointRequest>,
    ) -> Result<Response<Checkpoint>, Status> {
        let peer_region = request.into_inner().peer_region;
        self.state().checkpoint_reads += 1;
        Ok(Response::new(Checkpoint {
            acked_through_sequence: self.checkpoint(&peer_region),
            peer_region,
        }))
    }

    async fn put_checkpoint(
        &self,
        request: Request<Checkpoint>,
    ) -> Result<Response<PutCheckpointResponse>, Status> {
        let checkpoint = request.into_inner();
        let mut state = self.state();
        let previous = state.checkpoints.entry(checkpoint.peer_region).or_default();
        // Invariant in pairs: the replicator never moves a checkpoint backwards.
        assert!(
            checkpoint.acked_through_sequence >= *previous,
            "checkpoint went backwards: {} < {previous}",
            checkpoint.acked_through_sequence
        );
        *previous = checkpoint.acked_through_sequence;
        Ok(Response::new(PutCheckpointResponse {}))
    }

    async fn topic_stats(
        &self,
        _: Request<TopicStatsRequest>,
    ) -> Result<Response<TopicStatsResponse>, Status> {
        Err(Status::unimplemented("not needed by the replicator"))
    }

    async fn get_catalog(
        &self,
        _: Request<meridian_proto::meridian::v1::GetCatalogRequest>,
    ) -> Result<Response<meridian_proto::meridian::v1::GetCatalogResponse>, Status> {
        Ok(Response::new(
            meridian_proto::meridian::v1::GetCatalogResponse::default(),
        ))
    }

    type WatchTransactionChecksStream =
        tokio_stream::Empty<Result<meridian_proto::meridian::v1::TransactionCheck, Status>>;

    async fn watch_transaction_checks(
        &self,
        _: Request<tonic::Streaming<meridian_proto::meridian::v1::TransactionCheckInterest>>,
    ) -> Result<Response<Self::WatchTransactionChecksStream>, Status> {
        Err(Status::unimplemented("not needed by the replicator"))
    }
}

/// One region of a test deployment: its fake node and where its replicator listens.
pub struct TestRegion {
    pub name: String,
    pub node: FakeNode,
    pub node_address: SocketAddr,
    pub replicator_address: SocketAddr,
    pub data_dir: tempfile::TempDir,
    /// Bound once; each replicator run gets a duplicate of it, so the port
    /// stays ours across restarts. Unused by a private site.
    socket: UdpSocket,
    /// The hubs of a private site; empty for a public region.
    pub hubs: Vec<String>,
}

impl TestRegion {
    pub async fn start(name: &str, shutdown: &CancellationToken) -> Self {
        let node = FakeNode::new(name);
        let node_address = node.serve(shutdown.child_token()).await;
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind replicator socket");
        let replicator_address = socket.local_addr().expect("replicator address");
        Self {
            socket,
            hubs: Vec::new(),
            name: name.to_owned(),
            node,
            node_address,
            replicator_address,
            data_dir: tempfile::tempdir().expect("data dir"),
        }
    }

    /// The replicator's socket, for one run.
    pub fn socket(&self) -> UdpSocket {
        self.socket
            .try_clone()
            .expect("duplicate replicator socket")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.path().to_owned()
    }

    /// A private site behind `hubs` (it listens for nothing).
    pub async fn start_private(name: &str, hubs: &[&str], shutdown: &CancellationToken) -> Self {
        let mut region = Self::start(name, shutdown).await;
        region.hubs = hubs.iter().map(|hub| hub.to_string()).collect();
        region
    }

    pub fn is_private(&self) -> bool {
        !self.hubs.is_empty()
    }

    fn region(&self) -> Region {
        let unused: SocketAddr = "127.0.0.1:9".parse().expect("address");
        Region {
            site: if self.is_private() {
                Site::Private
            } else {
                Site::Public
            },
            node: unused,
            admin: self.node_address,
            replicator: (!self.is_private()).then_some(self.replicator_address),
            hubs: self.hubs.clone(),
            router: unused,
            data_dir: self.data_dir(),
            flush: Default::default(),
            router_mode: Default::default(),
            storage_memory_mb: meridian_topology::Region::DEFAULT_STORAGE_MEMORY_MB,
            http: None,
            stomp: None,
        }
    }
}

/// A topology of `regions` with topics as (name, replicate_to).
pub fn topology(regions: &[&TestRegion], topics: &[(&str, &[&str])]) -> Topology {
    Topology {
        groups: Default::default(),
        regions: regions
            .iter()
            .map(|region| (region.name.clone(), region.region()))
            .collect(),
        links: Vec::new(),
        topics: topics
            .iter()
            .map(|(name, replicate_to)| {
                let topic = Topic {
                    queues: 4,
                    message_types: Vec::new(),
                    replicate_to: replicate_to
                        .iter()
                        .map(|region| region.to_string())
                        .collect(),
                    consume_from: Default::default(),
                    durability: Default::default(),
                    geo_copies: 1,
                    retention_ms: meridian_topology::DEFAULT_RETENTION_MS,
                    retention_bytes: None,
                    transaction_checks: Default::default(),
                };
                (name.to_string(), topic)
            })
            .collect::<BTreeMap<_, _>>(),
        drill: None,
        access: None,
        replication_tls: None,
        client_tls: None,
    }
}

/// A replicator running in a task, stopped by its token.
pub struct RunningReplicator {
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<Result<(), meridian_replicator::ReplicatorError>>,
}

impl RunningReplicator {
    pub fn start(topology: &Topology, region: &TestRegion) -> Self {
        let shutdown = CancellationToken::new();
        let future = meridian_replicator::run(
            topology.clone(),
            region.name.clone(),
            (!region.is_private()).then(|| region.socket()),
            shutdown.clone(),
        );
        Self {
            shutdown,
            handle: tokio::spawn(future),
        }
    }

    /// Cancels and waits; the replicator must stop cleanly and promptly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = within(Duration::from_secs(10), "replicator stops", self.handle).await;
        result
            .expect("replicator task")
            .expect("replicator returns Ok on shutdown");
    }
}

pub async fn within<T>(timeout: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(timeout, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {timeout:?} waiting until {what}"))
}
