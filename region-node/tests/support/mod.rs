//! Shared helpers of the node's RocketMQ conformance tests.
//!
//! [`TestNode`] opens a real node (RocksDB) on a temp data dir and serves it
//! on listeners bound to port 0 before the node starts, so there is no port
//! race and no readiness wait: a client's connection waits in the listen
//! backlog until the server takes it. [`Client`] wraps the raw tonic client:
//! every request carries `x-mq-client-id`, every call has a time limit, and
//! every status it returns goes through [`code`], which fails the test on a
//! code the oldest supported client (Rust 5.0.0) could not decode.

use meridian_face::client_settings::known_to_oldest_client;
use meridian_proto::meridian::v1::node_service_client::NodeServiceClient;
use meridian_proto::meridian::v1::{HealthRequest, TopicStatsRequest};
use meridian_proto::prost_types::{Duration as ProtoDuration, Timestamp};
use meridian_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use meridian_proto::rocketmq::v2::{
    AckMessageEntry, AckMessageRequest, AckMessageResponse, ChangeInvisibleDurationRequest,
    ChangeInvisibleDurationResponse, Code, Encoding, FilterExpression, FilterType, Message,
    MessageQueue, MessageType, QueryRouteRequest, QueryRouteResponse, ReceiveMessageRequest,
    Resource, SendMessageRequest, SendMessageResponse, Status, SystemProperties,
    receive_message_response,
};
use meridian_region_node::{Node, StartError};
use meridian_topology::{ConsumeFrom, FlushMode, Region, Site, Topic, Topology};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// The node's region.
pub const REGION: &str = "a";
/// The one topic: 8 queues, every message type.
pub const TOPIC: &str = "demo";
pub const QUEUES: i32 = 8;
/// The largest body the API accepts.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Upper bound of any call that is not a long poll.
pub const STEP: Duration = Duration::from_secs(10);
/// Time a call may take beyond its long-polling time.
const POLL_SLACK: Duration = Duration::from_secs(10);
/// What the client accepts in one frame: a delivered 4 MiB body plus properties.
const CLIENT_MAX_DECODE_BYTES: usize = 8 * 1024 * 1024;

/// Awaits `future`, failing the test with `what` after `limit`.
pub async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: no answer within {limit:?}"),
    }
}

/// A node serving on loopback until [`TestNode::stop`].
pub struct TestNode {
    pub node_address: SocketAddr,
    pub admin_address: SocketAddr,
    shutdown: CancellationToken,
    serving: JoinHandle<Result<(), StartError>>,
    /// The router and replicator addresses of the topology, held so that no
    /// one else gets them; the node never uses them.
    _reserved: (std::net::TcpListener, std::net::UdpSocket),
}

impl TestNode {
    /// Opens the node of region [`REGION`] on `data_dir` and serves it.
    pub async fn start(data_dir: &Path) -> TestNode {
        let _already_set = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "meridian_region_node=debug".into()),
            )
            .with_test_writer()
            .try_init();
        let node_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind node");
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let router = std::net::TcpListener::bind("127.0.0.1:0").expect("reserve router");
        let replicator = std::net::UdpSocket::bind("127.0.0.1:0").expect("reserve replicator");
        let node_address = node_listener.local_addr().expect("node address");
        let admin_address = admin_listener.local_addr().expect("admin address");
        let region = Region {
            site: Site::Public,
            node: node_address,
            admin: admin_address,
            replicator: Some(replicator.local_addr().expect("replicator address")),
            hubs: Vec::new(),
            router: router.local_addr().expect("router address"),
            data_dir: data_dir.to_path_buf(),
            flush: FlushMode::Async,
            router_mode: meridian_topology::RouterMode::Direct,
            storage_memory_mb: meridian_topology::Region::DEFAULT_STORAGE_MEMORY_MB,
            http: None,
            stomp: None,
        };
        let topic = Topic {
            queues: u16::try_from(QUEUES).expect("queue count fits"),
            message_types: meridian_topology::MessageType::ALL.to_vec(),
            replicate_to: vec![REGION.to_owned()],
            consume_from: ConsumeFrom::Earliest,
            durability: Default::default(),
            geo_copies: 1,
            retention_ms: meridian_topology::DEFAULT_RETENTION_MS,
            retention_bytes: None,
            transaction_checks: Default::default(),
        };
        let topology = Topology {
            groups: Default::default(),
            regions: BTreeMap::from([(REGION.to_owned(), region)]),
            links: Vec::new(),
            topics: BTreeMap::from([(TOPIC.to_owned(), topic)]),
            drill: None,
            access: None,
            replication_tls: None,
            client_tls: None,
        };
        topology.validate().expect("the test topology is valid");
        let node = Node::open(topology, REGION).expect("open the node");
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(node.serve(
            meridian_region_node::Listeners {
                node: node_listener,
                admin: admin_listener,
                http: None,
                stomp: None,
            },
            shutdown.clone(),
        ));
        TestNode {
            node_address,
            admin_address,
            shutdown,
            serving,
            _reserved: (router, replicator),
        }
    }

    /// Stops the node gracefully and waits until it has released its data dir.
    pub async fn stop(self) {
        self.shutdown.cancel();
        within(Duration::from_secs(30), "the node stops", self.serving)
            .await
            .expect("the serve task did not panic")
            .expect("the node served and stopped without error");
    }

    /// A client with its own client id.
    pub async fn client(&self, client_id: &str) -> Client {
        let channel = connect(self.node_address).await;
        Client {
            inner: MessagingServiceClient::new(channel)
                .max_decoding_message_size(CLIENT_MAX_DECODE_BYTES),
            client_id: client_id.to_owned(),
        }
    }

    /// Returns once `count` receives are waiting in a long poll, as the
    /// node's `Health` reports (a real signal, not a sleep); fails after [`STEP`].
    pub async fn until_receives_wait(&self, count: u64) {
        let mut admin = NodeServiceClient::new(connect(self.admin_address).await);
        within(STEP, "receives waiting in a long poll", async {
            loop {
                let health = admin
                    .health(HealthRequest {})
                    .await
                    .expect("Health answers")
                    .into_inner();
                if health.waiting_receives >= count {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    /// `message_count` of [`TOPIC`] from the node's internal API.
    pub async fn message_count(&self) -> u64 {
        let mut admin = NodeServiceClient::new(connect(self.admin_address).await);
        let request = TopicStatsRequest {
            topic: TOPIC.to_owned(),
        };
        within(STEP, "TopicStats", admin.topic_stats(request))
            .await
            .expect("TopicStats answers")
            .into_inner()
            .message_count
    }
}

async fn connect(address: SocketAddr) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{address}")).expect("a valid endpoint");
    within(STEP, "connect", endpoint.connect())
        .await
        .expect("connect to the node")
}

/// The code of a status, checked: present, decodable, not UNSPECIFIED, and
/// known to the Rust client 5.0.0 (which panics on any other).
pub fn code(status: Option<&Status>) -> Code {
    let status = status.expect("every response carries a status");
    let code = Code::try_from(status.code)
        .unwrap_or_else(|_| panic!("status code {} is not in the API", status.code));
    assert_ne!(code, Code::Unspecified, "CODE_UNSPECIFIED sent: {status:?}");
    assert!(
        known_to_oldest_client(code),
        "{code:?} would make the Rust 5.0.0 client panic: {status:?}"
    );
    code
}

pub fn resource(name: &str) -> Option<Resource> {
    Some(Resource {
        resource_namespace: String::new(),
        name: name.to_owned(),
    })
}

pub fn now_ms() -> i64 {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(elapsed.as_millis()).expect("fits")
}

pub fn timestamp_ms(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).expect("fits"),
    }
}

pub fn to_ms(timestamp: &Timestamp) -> i64 {
    timestamp.seconds * 1000 + i64::from(timestamp.nanos) / 1_000_000
}

fn proto_duration(duration: Duration) -> ProtoDuration {
    ProtoDuration::try_from(duration).expect("a small duration")
}

/// A NORMAL message of [`TOPIC`] on queue 0, with every property a client sets.
pub fn message(message_id: &str, body: impl Into<Vec<u8>>) -> Message {
    Message {
        topic: resource(TOPIC),
        user_properties: HashMap::from([("origin".to_owned(), "conformance".to_owned())]),
        system_properties: Some(SystemProperties {
            tag: Some("t".to_owned()),
            keys: vec!["key-1".to_owned(), "key-2".to_owned()],
            message_id: message_id.to_owned(),
            body_encoding: Encoding::Identity as i32,
            message_type: MessageType::Normal as i32,
            born_timestamp: Some(timestamp_ms(now_ms() / 1000 * 1000)),
            born_host: "test-host".to_owned(),
            queue_id: 0,
            ..SystemProperties::default()
        }),
        body: body.into(),
    }
}

/// The system properties of a message built by [`message`], to change them.
pub fn properties(message: &mut Message) -> &mut SystemProperties {
    message
        .system_properties
        .as_mut()
        .expect("built with system properties")
}

/// What a delivered message is expected to carry besides the test's own fields.
pub fn delivered_properties(message: &Message) -> &SystemProperties {
    message
        .system_properties
        .as_ref()
        .expect("a delivered message carries system properties")
}

/// A ReceiveMessage call's parameters.
#[derive(Debug, Clone)]
pub struct Receive {
    pub group: String,
    pub filter: String,
    pub batch: i32,
    pub invisible: Option<Duration>,
    pub poll: Duration,
    /// The call's `grpc-timeout`; none by default.
    pub deadline: Option<Duration>,
}

impl Receive {
    /// Every tag, batch 32, invisible 30 s, long polling 1 s.
    pub fn new(group: &str) -> Receive {
        Receive {
            group: group.to_owned(),
            filter: "*".to_owned(),
            batch: 32,
            invisible: Some(Duration::from_secs(30)),
            poll: Duration::from_secs(1),
            deadline: None,
        }
    }
}

/// The frames of one receive, their shape checked.
#[derive(Debug)]
pub struct Received {
    pub code: Code,
    pub messages: Vec<Message>,
}

impl Received {
    /// The delivered messages; fails unless the receive answered OK.
    pub fn expect_messages(self, what: &str) -> Vec<Message> {
        assert_eq!(self.code, Code::Ok, "{what}: {self:?}");
        self.messages
    }

    pub fn expect_not_found(self, what: &str) {
        assert_eq!(
            self.code,
            Code::MessageNotFound,
            "{what}: {:?}",
            self.messages
        );
    }
}

/// The raw RocketMQ client of one (pretend) client instance.
pub struct Client {
    pub inner: MessagingServiceClient<Channel>,
    pub client_id: String,
}

impl Client {
    /// A request with this client's `x-mq-client-id`.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            "x-mq-client-id",
            self.client_id.parse().expect("an ASCII client id"),
        );
        request
    }

    pub async fn query_route(&mut self, topic: &str) -> QueryRouteResponse {
        let request = self.request(QueryRouteRequest {
            topic: resource(topic),
            endpoints: None,
        });
        within(STEP, "QueryRoute", self.inner.query_route(request))
            .await
            .expect("QueryRoute answers with gRPC OK")
            .into_inner()
    }

    pub async fn send(&mut self, messages: Vec<Message>) -> SendMessageResponse {
        let request = self.request(SendMessageRequest { messages });
        let response = within(STEP, "SendMessage", self.inner.send_message(request))
            .await
            .expect("SendMessage answers with gRPC OK")
            .into_inner();
        code(response.status.as_ref());
        for entry in &response.entries {
            code(entry.status.as_ref());
        }
        response
    }

    /// Sends one message and fails unless it is stored; returns its queue offset.
    pub async fn send_ok(&mut self, message: Message) -> i64 {
        let id = message
            .system_properties
            .as_ref()
            .map(|properties| properties.message_id.clone())
            .unwrap_or_default();
        let response = self.send(vec![message]).await;
        assert_eq!(
            code(response.status.as_ref()),
            Code::Ok,
            "send {id}: {response:?}"
        );
        assert_eq!(response.entries.len(), 1, "one entry per message");
        assert_eq!(
            response.entries[0].message_id, id,
            "the message id is echoed"
        );
        response.entries[0].offset
    }

    /// One ReceiveMessage call; checks the stream's shape (a status frame,
    /// then only messages, and messages only after OK).
    pub async fn receive(&mut self, receive: &Receive) -> Received {
        let mut request = self.request(ReceiveMessageRequest {
            group: resource(&receive.group),
            message_queue: Some(MessageQueue {
                topic: resource(TOPIC),
                id: -1,
                ..MessageQueue::default()
            }),
            filter_expression: Some(FilterExpression {
                r#type: FilterType::Tag as i32,
                expression: receive.filter.clone(),
            }),
            batch_size: receive.batch,
            invisible_duration: receive.invisible.map(proto_duration),
            auto_renew: false,
            long_polling_timeout: Some(proto_duration(receive.poll)),
            attempt_id: None,
        });
        if let Some(deadline) = receive.deadline {
            request.set_timeout(deadline);
        }
        let mut stream = within(
            receive.poll + POLL_SLACK,
            "ReceiveMessage",
            self.inner.receive_message(request),
        )
        .await
        .expect("ReceiveMessage answers with gRPC OK")
        .into_inner();
        let mut frames = Vec::new();
        while let Some(frame) = within(STEP, "the next frame", stream.message())
            .await
            .expect("the stream ends with gRPC OK")
        {
            frames.push(frame);
        }
        let mut frames = frames.into_iter().map(|frame| {
            frame
                .content
                .expect("every frame has content (Rust 5.0.0 panics on an empty one)")
        });
        let first = frames.next().expect("a receive answers at least one frame");
        let receive_message_response::Content::Status(status) = first else {
            panic!("the first frame is not a status: {first:?}");
        };
        let code = code(Some(&status));
        let mut messages = Vec::new();
        let mut delivered_at = None;
        for frame in frames {
            assert!(
                delivered_at.is_none(),
                "a frame after the delivery timestamp: {frame:?}"
            );
            match frame {
                receive_message_response::Content::Message(message) => messages.push(message),
                receive_message_response::Content::DeliveryTimestamp(at) => delivered_at = Some(at),
                other => panic!("unexpected frame after the status: {other:?}"),
            }
        }
        if code == Code::Ok {
            assert!(!messages.is_empty(), "OK without messages");
            assert!(
                delivered_at.is_some(),
                "messages without a delivery timestamp frame last (the Python PushConsumer needs it)"
            );
        } else {
            assert!(messages.is_empty(), "{code:?} followed by messages");
        }
        Received { code, messages }
    }

    /// Acks `(message_id, receipt_handle)` pairs; checks one entry per pair.
    pub async fn ack(&mut self, group: &str, entries: &[(&str, &str)]) -> AckMessageResponse {
        let request = self.request(AckMessageRequest {
            group: resource(group),
            topic: resource(TOPIC),
            entries: entries
                .iter()
                .map(|(message_id, receipt_handle)| AckMessageEntry {
                    message_id: (*message_id).to_owned(),
                    receipt_handle: (*receipt_handle).to_owned(),
                    lite_topic: None,
                })
                .collect(),
        });
        let response = within(STEP, "AckMessage", self.inner.ack_message(request))
            .await
            .expect("AckMessage answers with gRPC OK")
            .into_inner();
        code(response.status.as_ref());
        assert_eq!(
            response.entries.len(),
            entries.len(),
            "one entry per ack entry"
        );
        for (entry, (message_id, _)) in response.entries.iter().zip(entries) {
            code(entry.status.as_ref());
            assert_eq!(entry.message_id, *message_id, "the message id is echoed");
        }
        response
    }

    /// The code of acking one delivery.
    pub async fn ack_one(&mut self, group: &str, message: &Message) -> Code {
        let properties = delivered_properties(message);
        let handle = properties.receipt_handle.clone().expect("a receipt handle");
        let response = self
            .ack(group, &[(properties.message_id.as_str(), handle.as_str())])
            .await;
        code(response.entries[0].status.as_ref())
    }

    pub async fn change_invisible(
        &mut self,
        group: &str,
        message_id: &str,
        receipt_handle: &str,
        invisible: Duration,
    ) -> ChangeInvisibleDurationResponse {
        let request = self.request(ChangeInvisibleDurationRequest {
            group: resource(group),
            topic: resource(TOPIC),
            receipt_handle: receipt_handle.to_owned(),
            invisible_duration: Some(proto_duration(invisible)),
            message_id: message_id.to_owned(),
            lite_topic: None,
            suspend: None,
        });
        let response = within(
            STEP,
            "ChangeInvisibleDuration",
            self.inner.change_invisible_duration(request),
        )
        .await
        .expect("ChangeInvisibleDuration answers with gRPC OK")
        .into_inner();
        code(response.status.as_ref());
        assert!(
            !response.receipt_handle.is_empty(),
            "a receipt handle even on failure: {response:?}"
        );
        response
    }
}

/// `message_id` and `receipt_handle` of a delivered message.
pub fn id_and_handle(message: &Message) -> (String, String) {
    let properties = delivered_properties(message);
    (
        properties.message_id.clone(),
        properties.receipt_handle.clone().expect("a receipt handle"),
    )
}
