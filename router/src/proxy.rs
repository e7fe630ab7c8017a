//! Proxy mode: the router carries clients' calls to a region's node.
//!
//! Send and Receive go to the region [`Routes::choose`] picks at that moment
//! (its own while healthy, else the nearest healthy one), so a client whose
//! region died keeps its access point and loses at most the calls in flight.
//! Ack and ChangeInvisibleDuration go to the region that issued the receipt
//! handle ([`meridian_face::receipt_handle_region`]), the one that holds the
//! delivery. EndTransaction (which the router carries in direct mode too:
//! the Rust client sends it to its access point) goes to the region that
//! took the half message ([`meridian_face::transaction_id_region`]) while it
//! is up. A node that cannot be reached answers `HA_NOT_AVAILABLE`.
//!
//! The client's id travels in `x-mq-client-id`, its remaining time in
//! `grpc-timeout` (so a long poll ends before the client gives up).

use crate::route::Routes;
use meridian_face::access::Authentication;
use meridian_face::tls::Dialer;
use meridian_face::{Caller, Refusal, SendReceipt};
use meridian_proto::GRPC_MAX_DECODE_BYTES;
use meridian_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use meridian_proto::rocketmq::v2::{
    AckMessageRequest, ChangeInvisibleDurationRequest, Code, EndTransactionRequest,
    ForwardMessageToDeadLetterQueueRequest, Message, ReceiveMessageRequest, SendMessageRequest,
    Status, receive_message_response,
};
use meridian_report::Report;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;
use tonic::transport::Channel;

/// How long connecting to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest a forwarded call without the client's own deadline may take
/// (a receive's long poll is bounded by the node at 20 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Clients of the nodes, one (lazily connected) channel per node.
#[derive(Debug)]
pub(crate) struct Proxy {
    nodes: Mutex<HashMap<SocketAddr, MessagingServiceClient<Channel>>>,
    /// Signs each carried call for its caller's access key, afresh.
    authentication: Authentication,
    /// Plain or TLS (`[client_tls]`) to the nodes.
    dialer: Dialer,
}

impl Proxy {
    pub(crate) fn new(authentication: Authentication, dialer: Dialer) -> Self {
        Proxy {
            nodes: Mutex::default(),
            authentication,
            dialer,
        }
    }

    fn node(&self, address: SocketAddr) -> Result<MessagingServiceClient<Channel>, Refusal> {
        let mut nodes = self.nodes.lock();
        if let Some(client) = nodes.get(&address) {
            return Ok(client.clone());
        }
        let endpoint = self
            .dialer
            .endpoint(address)
            .map_err(|error| unavailable(address, &error))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let client = MessagingServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(GRPC_MAX_DECODE_BYTES)
            .max_encoding_message_size(GRPC_MAX_DECODE_BYTES);
        nodes.insert(address, client.clone());
        Ok(client)
    }

    /// `message` as a call for `caller`: its client id, its remaining time,
    /// and a signature of its access key made now.
    fn request<T>(&self, caller: &Caller, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Ok(client_id) = caller.client_id.parse() {
            request
                .metadata_mut()
                .insert(meridian_face::CLIENT_ID_HEADER, client_id);
        }
        self.authentication
            .sign_grpc(caller.access_key.as_deref(), request.metadata_mut());
        request.set_timeout(caller.remaining.unwrap_or(CALL_TIMEOUT));
        request
    }

    /// Stores `messages` in the region chosen for their topic.
    pub(crate) async fn send(
        &self,
        routes: &Routes,
        caller: &Caller,
        messages: Vec<Message>,
    ) -> Vec<Result<SendReceipt, Refusal>> {
        let count = messages.len();
        let topic = messages
            .first()
            .and_then(|message| message.topic.as_ref())
            .map(|topic| topic.name.clone())
            .unwrap_or_default();
        let node = match routes.choose("SendMessage", &topic).await {
            Ok(choice) => choice.node,
            Err(error) => return vec![Err(error.refusal()); count],
        };
        let client = self.node(node);
        let answer = match client {
            Ok(mut client) => client
                .send_message(self.request(caller, SendMessageRequest { messages }))
                .await
                .map_err(|status| unavailable(node, &status)),
            Err(refusal) => Err(refusal),
        };
        let entries = match answer {
            Ok(answer) => answer.into_inner().entries,
            Err(refusal) => return vec![Err(refusal); count],
        };
        let mut outcomes: Vec<Result<SendReceipt, Refusal>> = entries
            .into_iter()
            .map(|entry| match refusal(entry.status.as_ref()) {
                None => Ok(SendReceipt {
                    message_id: entry.message_id,
                    offset: entry.offset,
                    transaction_id: entry.transaction_id,
                }),
                Some(refusal) => Err(refusal),
            })
            .collect();
        outcomes.truncate(count);
        outcomes
    }

    /// A receive in the region chosen for the topic.
    pub(crate) async fn receive(
        &self,
        routes: &Routes,
        caller: &Caller,
        mut receive: ReceiveMessageRequest,
    ) -> Result<Vec<Message>, Refusal> {
        // The router's face renews what it hands out with auto_renew (the
        // client's heartbeats reach the router, not the node): the node
        // must not renew the same deliveries too.
        receive.auto_renew = false;
        let topic = receive
            .message_queue
            .as_ref()
            .and_then(|queue| queue.topic.as_ref())
            .map(|topic| topic.name.clone())
            .unwrap_or_default();
        let node = routes
            .choose("ReceiveMessage", &topic)
            .await
            .map_err(|error| error.refusal())?
            .node;
        let mut frames = self
            .node(node)?
            .receive_message(self.request(caller, receive))
            .await
            .map_err(|status| unavailable(node, &status))?
            .into_inner();
        let mut messages = Vec::new();
        while let Some(frame) = frames
            .message()
            .await
            .map_err(|status| unavailable(node, &status))?
        {
            match frame.content {
                Some(receive_message_response::Content::Status(status)) => {
                    match Code::try_from(status.code) {
                        Ok(Code::Ok) => {}
                        // Nothing arrived: the face answers MESSAGE_NOT_FOUND.
                        Ok(Code::MessageNotFound) => return Ok(Vec::new()),
                        _ => {
                            return Err(refusal(Some(&status)).unwrap_or_else(|| {
                                Refusal::new(Code::InternalError, "a status frame without a code")
                            }));
                        }
                    }
                }
                Some(receive_message_response::Content::Message(message)) => messages.push(message),
                _ => {}
            }
        }
        Ok(messages)
    }

    /// Acknowledges each entry at the region that issued its receipt handle.
    pub(crate) async fn ack(
        &self,
        routes: &Routes,
        caller: &Caller,
        ack: AckMessageRequest,
    ) -> Result<Vec<Result<(), Refusal>>, Refusal> {
        let mut outcomes: Vec<Result<(), Refusal>> = vec![Ok(()); ack.entries.len()];
        // Entries by issuing region, with their positions.
        let mut by_region: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (index, entry) in ack.entries.iter().enumerate() {
            match meridian_face::receipt_handle_region(&entry.receipt_handle) {
                Some(region) => by_region.entry(region.to_owned()).or_default().push(index),
                None => {
                    outcomes[index] = Err(Refusal::new(
                        Code::InvalidReceiptHandle,
                        format!("receipt handle `{}` names no region", entry.receipt_handle),
                    ));
                }
            }
        }
        for (region, indexes) in by_region {
            let Some(node) = routes.node_of(&region) else {
                for index in indexes {
                    outcomes[index] = Err(Refusal::new(
                        Code::InvalidReceiptHandle,
                        format!("receipt handle of region `{region}`, which the topology lacks"),
                    ));
                }
                continue;
            };
            let part = AckMessageRequest {
                group: ack.group.clone(),
                topic: ack.topic.clone(),
                entries: indexes
                    .iter()
                    .map(|index| ack.entries[*index].clone())
                    .collect(),
            };
            let answer = match self.node(node) {
                Ok(mut client) => client
                    .ack_message(self.request(caller, part))
                    .await
                    .map_err(|status| unavailable(node, &status)),
                Err(refusal) => Err(refusal),
            };
            match answer {
                Ok(answer) => {
                    let entries = answer.into_inner().entries;
                    for (position, index) in indexes.iter().enumerate() {
                        outcomes[*index] = match entries.get(position) {
                            Some(entry) => refusal(entry.status.as_ref()).map_or(Ok(()), Err),
                            None => Err(Refusal::new(
                                Code::InternalError,
                                format!("the node of region `{region}` answered fewer entries"),
                            )),
                        };
                    }
                }
                Err(refusal) => {
                    for index in indexes {
                        outcomes[index] = Err(refusal.clone());
                    }
                }
            }
        }
        Ok(outcomes)
    }

    /// Changes an invisible duration at the region that issued the handle.
    pub(crate) async fn change_invisible_duration(
        &self,
        routes: &Routes,
        caller: &Caller,
        change: ChangeInvisibleDurationRequest,
    ) -> Result<String, Refusal> {
        let node = handle_node(routes, &change.receipt_handle)?;
        let answer = self
            .node(node)?
            .change_invisible_duration(self.request(caller, change))
            .await
            .map_err(|status| unavailable(node, &status))?
            .into_inner();
        match refusal(answer.status.as_ref()) {
            None => Ok(answer.receipt_handle),
            Some(refusal) => Err(refusal),
        }
    }

    /// Moves a delivery to its group's dead-letter topic at the region that
    /// issued the handle.
    pub(crate) async fn forward_to_dead_letter(
        &self,
        routes: &Routes,
        caller: &Caller,
        forward: ForwardMessageToDeadLetterQueueRequest,
    ) -> Result<(), Refusal> {
        let node = handle_node(routes, &forward.receipt_handle)?;
        let answer = self
            .node(node)?
            .forward_message_to_dead_letter_queue(self.request(caller, forward))
            .await
            .map_err(|status| unavailable(node, &status))?
            .into_inner();
        refusal(answer.status.as_ref()).map_or(Ok(()), Err)
    }

    /// Ends a transaction at the region that took its half message while
    /// that region is up, else at the region chosen for its topic now (any
    /// region holding a replica of the half message can end it).
    pub(crate) async fn end_transaction(
        &self,
        routes: &Routes,
        caller: &Caller,
        end: EndTransactionRequest,
    ) -> Result<(), Refusal> {
        let region = meridian_face::transaction_id_region(&end.transaction_id)
            .filter(|region| routes.is_up(region))
            .and_then(|region| routes.node_of(region));
        let node = match region {
            Some(node) => node,
            None => {
                let topic = end
                    .topic
                    .as_ref()
                    .map(|topic| topic.name.clone())
                    .unwrap_or_default();
                routes
                    .choose("EndTransaction", &topic)
                    .await
                    .map_err(|error| error.refusal())?
                    .node
            }
        };
        let answer = self
            .node(node)?
            .end_transaction(self.request(caller, end))
            .await
            .map_err(|status| unavailable(node, &status))?
            .into_inner();
        refusal(answer.status.as_ref()).map_or(Ok(()), Err)
    }
}

/// The node of the region that issued `receipt_handle`.
fn handle_node(routes: &Routes, receipt_handle: &str) -> Result<SocketAddr, Refusal> {
    let invalid = || {
        Refusal::new(
            Code::InvalidReceiptHandle,
            format!("receipt handle `{receipt_handle}` names no known region"),
        )
    };
    let region = meridian_face::receipt_handle_region(receipt_handle).ok_or_else(invalid)?;
    routes.node_of(region).ok_or_else(invalid)
}

/// A request to a node on behalf of `caller`.
/// The refusal a node's status means, or `None` for OK.
fn refusal(status: Option<&Status>) -> Option<Refusal> {
    let Some(status) = status else {
        return Some(Refusal::new(
            Code::InternalError,
            "the node answered without a status",
        ));
    };
    match Code::try_from(status.code) {
        Ok(Code::Ok) => None,
        Ok(code) => Some(Refusal::new(code, status.message.clone())),
        Err(_) => Some(Refusal::new(Code::InternalError, status.message.clone())),
    }
}

/// A node that could not be reached or failed the call.
fn unavailable(node: SocketAddr, error: &(dyn std::error::Error + 'static)) -> Refusal {
    Refusal::new(
        Code::HaNotAvailable,
        format!("the node at {node} did not answer: {}", Report(error)),
    )
}
