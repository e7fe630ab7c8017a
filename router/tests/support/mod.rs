//! The test harness: fake nodes and the router of `eu-west` between them.
//!
//! Regions come from the demo topology, seen from `eu-west`: `eu-west` (own,
//! 0 ms) and `us-east` (40 ms) have fake nodes answering `Health`; `on-prem`
//! (8 ms, nearer than `us-east`) has a listener that never accepts, a hung
//! node that must never be chosen. Every address is bound on port 0.

use meridian_proto::meridian::v1::node_service_server::{NodeService, NodeServiceServer};
use meridian_proto::meridian::v1::{
    ApplyRequest, ApplyResponse, Checkpoint, GetCheckpointRequest, HealthRequest, HealthResponse,
    PutCheckpointResponse, TailBatch, TailRequest, TopicStatsRequest, TopicStatsResponse,
};
use meridian_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use meridian_proto::rocketmq::v2::{
    Address, Code, QueryRouteRequest, QueryRouteResponse, Resource,
};
use meridian_router::RouterError;
use meridian_topology::Topology;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Bound on any single step that should be immediate.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// A node that only answers `Health`, for its region.
struct FakeNode {
    region: String,
}

#[tonic::async_trait]
impl NodeService for FakeNode {
    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthResponse>, Status> {
        Ok(Response::new(HealthResponse {
            region: self.region.clone(),
            last_sequence: 0,
            started_at_ms: 0,
            ..Default::default()
        }))
    }

    type TailStream = tokio_stream::Empty<Result<TailBatch, Status>>;

    async fn tail(&self, _: Request<TailRequest>) -> Result<Response<Self::TailStream>, Status> {
        Err(Status::unimplemented("fake node"))
    }

    async fn apply(&self, _: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        Err(Status::unimplemented("fake node"))
    }

    async fn get_checkpoint(
        &self,
        _: Request<GetCheckpointRequest>,
    ) -> Result<Response<Checkpoint>, Status> {
        Err(Status::unimplemented("fake node"))
    }

    async fn put_checkpoint(
        &self,
        _: Request<Checkpoint>,
    ) -> Result<Response<PutCheckpointResponse>, Status> {
        Err(Status::unimplemented("fake node"))
    }

    async fn topic_stats(
        &self,
        _: Request<TopicStatsRequest>,
    ) -> Result<Response<TopicStatsResponse>, Status> {
        Err(Status::unimplemented("fake node"))
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
        Err(Status::unimplemented("fake node"))
    }
}

/// A running fake node; [`RunningNode::kill`] stops it.
struct RunningNode {
    stop: CancellationToken,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningNode {
    pub async fn start(region: &str) -> (SocketAddr, RunningNode) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake node");
        let address = listener.local_addr().expect("fake node address");
        let stop = CancellationToken::new();
        let server = tonic::transport::Server::builder()
            .add_service(NodeServiceServer::new(FakeNode {
                region: region.to_owned(),
            }))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            );
        (
            address,
            RunningNode {
                stop,
                task: tokio::spawn(server),
            },
        )
    }

    /// Stops serving, closes its connections and waits until it is gone.
    async fn kill(self) {
        self.stop.cancel();
        timeout(STEP_TIMEOUT, self.task)
            .await
            .expect("fake node stops in time")
            .expect("fake node task")
            .expect("fake node served");
    }
}

/// The router of `eu-west` and the fake nodes around it.
pub struct Harness {
    pub client: MessagingServiceClient<Channel>,
    pub topology: Topology,
    pub router_stop: CancellationToken,
    router: JoinHandle<Result<(), RouterError>>,
    /// Fake nodes still running, by region.
    nodes: BTreeMap<String, RunningNode>,
    /// Keep the reserved addresses bound for the whole test.
    _reserved: Vec<TcpListener>,
}

impl Harness {
    pub async fn start() -> Harness {
        // Router logs go to the test's captured output, shown when it fails.
        let _already_set = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "meridian_router=debug".into()),
            )
            .with_test_writer()
            .try_init();
        let mut topology = Topology::demo(Path::new("/nonexistent/meridian-router-test"));
        let mut reserved = Vec::new();
        for region in topology.regions.values_mut() {
            let node = TcpListener::bind("127.0.0.1:0").await.expect("bind node");
            region.node = node.local_addr().expect("node address");
            reserved.push(node);
            // These tests are about routes to nodes (proxy mode is tested
            // end to end in tests/).
            region.router_mode = meridian_topology::RouterMode::Direct;
        }
        let (eu_west_admin, eu_west) = RunningNode::start("eu-west").await;
        let (us_east_admin, us_east) = RunningNode::start("us-east").await;
        let hung = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind hung node");
        let admins = [
            ("eu-west", eu_west_admin),
            ("us-east", us_east_admin),
            ("on-prem", hung.local_addr().expect("hung node address")),
        ];
        reserved.push(hung);
        for (name, admin) in admins {
            topology.regions.get_mut(name).expect("demo region").admin = admin;
        }

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind router");
        let router_address = listener.local_addr().expect("router address");
        let router_stop = CancellationToken::new();
        let router = tokio::spawn(meridian_router::run(
            topology.clone(),
            "eu-west".to_owned(),
            listener,
            router_stop.clone(),
        ));
        let client = timeout(
            STEP_TIMEOUT,
            MessagingServiceClient::connect(format!("http://{router_address}")),
        )
        .await
        .expect("connect to the router in time")
        .expect("connect to the router");
        Harness {
            client,
            topology,
            router_stop,
            router,
            nodes: BTreeMap::from([
                ("eu-west".to_owned(), eu_west),
                ("us-east".to_owned(), us_east),
            ]),
            _reserved: reserved,
        }
    }

    pub fn node_address(&self, region: &str) -> Address {
        let node = self.topology.regions[region].node;
        Address {
            host: node.ip().to_string(),
            port: i32::from(node.port()),
        }
    }

    pub async fn query_route(&mut self, topic: &str) -> QueryRouteResponse {
        let request = QueryRouteRequest {
            topic: Some(resource(topic)),
            endpoints: None,
        };
        timeout(
            STEP_TIMEOUT,
            self.client.query_route(with_client_id(request)),
        )
        .await
        .expect("QueryRoute answers in time")
        .expect("QueryRoute succeeds at the gRPC level")
        .into_inner()
    }

    /// Kills the fake node of `region`.
    pub async fn kill_node(&mut self, region: &str) {
        self.nodes
            .remove(region)
            .expect("node is running")
            .kill()
            .await;
    }

    /// Stops the router and the remaining nodes, checking that the router
    /// ends cleanly and in time.
    pub async fn stop(self) {
        for node in self.nodes.into_values() {
            node.kill().await;
        }
        self.router_stop.cancel();
        timeout(STEP_TIMEOUT, self.router)
            .await
            .expect("router stops in time")
            .expect("router task")
            .expect("router ran without error");
    }
}

pub fn resource(name: &str) -> Resource {
    Resource {
        resource_namespace: "test-ns".to_owned(),
        name: name.to_owned(),
    }
}

pub fn with_client_id<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "x-mq-client-id",
        "router-test@1#1".parse().expect("ascii header value"),
    );
    request
}

pub fn code(status: Option<&meridian_proto::rocketmq::v2::Status>) -> Option<Code> {
    status.and_then(|status| Code::try_from(status.code).ok())
}

/// The region and node address every queue of an OK route points at.
pub fn routed_to(route: &QueryRouteResponse) -> (String, Address) {
    assert_eq!(code(route.status.as_ref()), Some(Code::Ok), "{route:?}");
    assert_eq!(route.message_queues.len(), 8, "one queue per topic queue");
    let brokers: Vec<(String, Address)> = route
        .message_queues
        .iter()
        .map(|queue| {
            let broker = queue.broker.as_ref().expect("broker");
            let endpoints = broker.endpoints.as_ref().expect("endpoints");
            assert_eq!(endpoints.addresses.len(), 1);
            (broker.name.clone(), endpoints.addresses[0].clone())
        })
        .collect();
    assert!(
        brokers.windows(2).all(|pair| pair[0] == pair[1]),
        "{brokers:?}"
    );
    brokers[0].clone()
}
