//! The drills' built-in RocketMQ 5 client: QueryRoute, SendMessage,
//! ReceiveMessage (long polling) and AckMessage over gRPC, as the official
//! clients call them (`apache.rocketmq.v2.MessagingService`).
//!
//! It behaves like a careful official client: it asks its access point for
//! the topic's route once, sends and receives on the endpoint the route
//! names, and asks for the route again after a failed call (the official
//! Python and Node.js clients only do so every 30 s; with a router in proxy
//! mode the route is the router itself either way). Every call has a
//! deadline, so a dead region costs a call at most [`CALL_TIMEOUT`].
//!
//! How it reaches the deployment is its [`Transport`]: plain or TLS (the
//! topology's `[client_tls]`), every call signed with an access key when the
//! deployment has `[access]`.

use meridian_face::access::{SignedChannel, Signer};
use meridian_face::tls::Dialer;
use meridian_proto::prost_types;
use meridian_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use meridian_proto::rocketmq::v2::{
    AckMessageEntry, AckMessageRequest, Code, Encoding, FilterExpression, FilterType, Message,
    MessageQueue, MessageType, QueryRouteRequest, ReceiveMessageRequest, Resource,
    SendMessageRequest, Status, SystemProperties, receive_message_response,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Deadline of a unary call (QueryRoute, SendMessage, AckMessage).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// `x-mq-client-id`: the official clients send it on every call.
const CLIENT_ID_HEADER: &str = "x-mq-client-id";

/// How clients reach a deployment's RocketMQ endpoints: dialed plain or
/// with TLS, each call signed with an access key or not at all. Cheap to
/// clone (shared).
#[derive(Debug, Clone)]
pub struct Transport {
    shared: std::sync::Arc<(Dialer, Signer)>,
}

impl Transport {
    pub fn new(dialer: Dialer, signer: Signer) -> Transport {
        Transport {
            shared: std::sync::Arc::new((dialer, signer)),
        }
    }

    /// Whether endpoints are dialed with TLS.
    pub fn is_tls(&self) -> bool {
        self.shared.0.is_tls()
    }

    /// A RocketMQ client of `endpoint` (`host:port`) that connects on its
    /// first call (within `connect_timeout`) and signs every call.
    pub fn messaging(
        &self,
        endpoint: &str,
        connect_timeout: Duration,
    ) -> Result<MessagingServiceClient<SignedChannel>, String> {
        let (dialer, signer) = &*self.shared;
        let channel = dialer
            .endpoint(endpoint)
            .map_err(|error| format!("bad endpoint {endpoint}: {error}"))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(
            MessagingServiceClient::with_interceptor(channel, signer.clone())
                .max_decoding_message_size(meridian_proto::GRPC_MAX_DECODE_BYTES),
        )
    }
}

/// One client instance.
pub struct Client {
    access_point: SocketAddr,
    client_id: String,
    topic: String,
    transport: Transport,
    channels: HashMap<String, MessagingServiceClient<SignedChannel>>,
    /// The endpoint the topic's route names, once known.
    route: Option<String>,
}

/// A message a receive delivered.
pub struct Delivery {
    pub message_id: String,
    pub receipt_handle: String,
}

impl Client {
    pub fn new(
        access_point: SocketAddr,
        client_id: String,
        topic: &str,
        transport: Transport,
    ) -> Client {
        Client {
            access_point,
            client_id,
            topic: topic.to_owned(),
            transport,
            channels: HashMap::new(),
            route: None,
        }
    }

    fn channel(&mut self, endpoint: &str) -> Result<MessagingServiceClient<SignedChannel>, String> {
        if let Some(channel) = self.channels.get(endpoint) {
            return Ok(channel.clone());
        }
        let client = self.transport.messaging(endpoint, CONNECT_TIMEOUT)?;
        self.channels.insert(endpoint.to_owned(), client.clone());
        Ok(client)
    }

    fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Ok(value) = self.client_id.parse() {
            request.metadata_mut().insert(CLIENT_ID_HEADER, value);
        }
        request.set_timeout(timeout);
        request
    }

    /// After a failure: forget the route and the connection it used, so the
    /// next call asks again and connects afresh.
    fn forget(&mut self) {
        if let Some(endpoint) = self.route.take() {
            self.channels.remove(&endpoint);
        }
        self.channels.remove(&self.access_point.to_string());
    }

    /// The endpoint to call for the topic, asking the access point if needed.
    async fn endpoint(&mut self) -> Result<String, String> {
        if let Some(endpoint) = &self.route {
            return Ok(endpoint.clone());
        }
        let mut access = self.channel(&self.access_point.to_string())?;
        let request = self.request(
            QueryRouteRequest {
                topic: Some(resource(&self.topic)),
                endpoints: None,
            },
            CALL_TIMEOUT,
        );
        let response = access
            .query_route(request)
            .await
            .map_err(|status| format!("QueryRoute: {}", grpc_error(&status)))?
            .into_inner();
        check(response.status.as_ref(), "QueryRoute")?;
        let endpoint = response
            .message_queues
            .iter()
            .filter_map(|queue| queue.broker.as_ref()?.endpoints.as_ref())
            .flat_map(|endpoints| endpoints.addresses.iter())
            .map(|address| format!("{}:{}", address.host, address.port))
            .next()
            .ok_or_else(|| "QueryRoute: the route names no endpoint".to_owned())?;
        self.route = Some(endpoint.clone());
        Ok(endpoint)
    }

    /// Sends one message; returns its message id once the server answered OK.
    pub async fn send(
        &mut self,
        message_id: String,
        tag: &str,
        body: Vec<u8>,
    ) -> Result<String, String> {
        let result = self.try_send(message_id, tag, body).await;
        if result.is_err() {
            self.forget();
        }
        result
    }

    async fn try_send(
        &mut self,
        message_id: String,
        tag: &str,
        body: Vec<u8>,
    ) -> Result<String, String> {
        let endpoint = self.endpoint().await?;
        let mut client = self.channel(&endpoint)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let message = Message {
            topic: Some(resource(&self.topic)),
            user_properties: HashMap::new(),
            system_properties: Some(SystemProperties {
                tag: Some(tag.to_owned()),
                message_id: message_id.clone(),
                body_encoding: Encoding::Identity as i32,
                message_type: MessageType::Normal as i32,
                born_timestamp: Some(prost_types::Timestamp {
                    seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
                    nanos: i32::try_from(now.subsec_nanos()).unwrap_or(0),
                }),
                born_host: "meridian-drill".to_owned(),
                ..SystemProperties::default()
            }),
            body,
        };
        let request = self.request(
            SendMessageRequest {
                messages: vec![message],
            },
            CALL_TIMEOUT,
        );
        let response = client
            .send_message(request)
            .await
            .map_err(|status| format!("SendMessage: {}", grpc_error(&status)))?
            .into_inner();
        check(response.status.as_ref(), "SendMessage")?;
        let entry = response
            .entries
            .first()
            .ok_or_else(|| "SendMessage: an answer without entries".to_owned())?;
        check(entry.status.as_ref(), "SendMessage")?;
        Ok(entry.message_id.clone())
    }

    /// One ReceiveMessage call with long polling; an empty result means no
    /// message arrived in time.
    pub async fn receive(
        &mut self,
        group: &str,
        batch: i32,
        invisible: Duration,
        long_polling: Duration,
    ) -> Result<Vec<Delivery>, String> {
        let result = self
            .try_receive(group, batch, invisible, long_polling)
            .await;
        if result.is_err() {
            self.forget();
        }
        result
    }

    async fn try_receive(
        &mut self,
        group: &str,
        batch: i32,
        invisible: Duration,
        long_polling: Duration,
    ) -> Result<Vec<Delivery>, String> {
        let endpoint = self.endpoint().await?;
        let mut client = self.channel(&endpoint)?;
        let request = self.request(
            ReceiveMessageRequest {
                group: Some(resource(group)),
                message_queue: Some(MessageQueue {
                    topic: Some(resource(&self.topic)),
                    id: -1,
                    ..MessageQueue::default()
                }),
                filter_expression: Some(FilterExpression {
                    r#type: FilterType::Tag as i32,
                    expression: "*".to_owned(),
                }),
                batch_size: batch,
                invisible_duration: Some(proto_duration(invisible)),
                auto_renew: false,
                long_polling_timeout: Some(proto_duration(long_polling)),
                attempt_id: None,
            },
            long_polling + CALL_TIMEOUT,
        );
        let mut stream = client
            .receive_message(request)
            .await
            .map_err(|status| format!("ReceiveMessage: {}", grpc_error(&status)))?
            .into_inner();
        let mut deliveries = Vec::new();
        let mut status = None;
        while let Some(frame) = stream
            .message()
            .await
            .map_err(|status| format!("ReceiveMessage: {}", grpc_error(&status)))?
        {
            match frame.content {
                Some(receive_message_response::Content::Status(frame_status)) => {
                    status = Some(frame_status);
                }
                Some(receive_message_response::Content::Message(message)) => {
                    let Some(properties) = message.system_properties else {
                        continue;
                    };
                    deliveries.push(Delivery {
                        message_id: properties.message_id,
                        receipt_handle: properties.receipt_handle.unwrap_or_default(),
                    });
                }
                Some(receive_message_response::Content::DeliveryTimestamp(_)) | None => {}
            }
        }
        match status.as_ref().map(|status| status.code()) {
            Some(Code::Ok) => Ok(deliveries),
            Some(Code::MessageNotFound) => Ok(Vec::new()),
            _ => {
                check(status.as_ref(), "ReceiveMessage")?;
                Ok(deliveries)
            }
        }
    }

    /// Acknowledges deliveries in one AckMessage call; one outcome per
    /// delivery, in order (`Err` for all when the call itself failed).
    pub async fn ack(&mut self, group: &str, deliveries: &[Delivery]) -> Vec<Result<(), String>> {
        let result = self.try_ack(group, deliveries).await;
        match result {
            Ok(outcomes) => outcomes,
            Err(error) => {
                self.forget();
                deliveries.iter().map(|_| Err(error.clone())).collect()
            }
        }
    }

    async fn try_ack(
        &mut self,
        group: &str,
        deliveries: &[Delivery],
    ) -> Result<Vec<Result<(), String>>, String> {
        let endpoint = self.endpoint().await?;
        let mut client = self.channel(&endpoint)?;
        let request = self.request(
            AckMessageRequest {
                group: Some(resource(group)),
                topic: Some(resource(&self.topic)),
                entries: deliveries
                    .iter()
                    .map(|delivery| AckMessageEntry {
                        message_id: delivery.message_id.clone(),
                        receipt_handle: delivery.receipt_handle.clone(),
                        lite_topic: None,
                    })
                    .collect(),
            },
            CALL_TIMEOUT,
        );
        let response = client
            .ack_message(request)
            .await
            .map_err(|status| format!("AckMessage: {}", grpc_error(&status)))?
            .into_inner();
        Ok(deliveries
            .iter()
            .map(|delivery| {
                let entry = response
                    .entries
                    .iter()
                    .find(|entry| entry.message_id == delivery.message_id);
                match entry {
                    Some(entry) => check(entry.status.as_ref(), "AckMessage"),
                    None => check(response.status.as_ref(), "AckMessage"),
                }
            })
            .collect())
    }
}

/// A message id in the official clients' shape: 34 upper-case hex digits
/// starting with version `01`; the rest here is a UUID v7 (time ordered).
pub fn new_message_id() -> String {
    format!("01{}", uuid::Uuid::now_v7().simple()).to_uppercase()
}

fn resource(name: &str) -> Resource {
    Resource {
        resource_namespace: String::new(),
        name: name.to_owned(),
    }
}

fn proto_duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

/// Whether a call's error is the server refusing the caller's key
/// (`UNAUTHORIZED` or `FORBIDDEN`, as [`check`] writes them).
pub fn is_refusal(error: &str) -> bool {
    [Code::Unauthorized, Code::Forbidden]
        .iter()
        .any(|code| error.contains(&format!(": {code:?} ")))
}

/// Whether a call's error is gRPC's rather than the server's answer: the
/// connection failed or broke (as [`grpc_error`] writes it).
pub fn is_connection_failure(error: &str) -> bool {
    [
        tonic::Code::Unavailable,
        tonic::Code::Unknown,
        tonic::Code::Cancelled,
    ]
    .iter()
    .any(|code| error.contains(&format!(": {code:?} ")))
}

fn check(status: Option<&Status>, rpc: &str) -> Result<(), String> {
    match status {
        Some(status) if status.code() == Code::Ok => Ok(()),
        Some(status) => Err(format!("{rpc}: {:?} {}", status.code(), status.message)),
        None => Err(format!("{rpc}: an answer without status")),
    }
}

fn grpc_error(status: &tonic::Status) -> String {
    format!("{:?} {}", status.code(), status.message())
}
