//! The node's side of the RocketMQ face (`meridian-face`): request checks
//! that need the topology and the node, and the dispatch to [`super::send`]
//! and [`super::receive`]. The face does the protocol's part (client ids,
//! response shapes, Telemetry); every node error becomes what the client
//! sees in [`NodeError::refusal`].

use super::NodeContext;
use super::convert::{self, duration_to_ms, now_ms};
use crate::consumer::ReceiptHandle;
use crate::error::NodeError;
use crate::storage::LogStore;
use meridian_face::{Backend, Caller, Refusal, SendReceipt};
use meridian_proto::rocketmq::v2::{
    AckMessageRequest, ChangeInvisibleDurationRequest, Message, MessageQueue,
    ReceiveMessageRequest, Resource,
};
use meridian_topology::Topic;
use std::sync::Arc;

/// Shortest invisible duration a client may ask for (the proxy's minimum).
pub(super) const MIN_INVISIBLE_MS: i64 = 1_000;
/// Longest invisible duration a client may ask for: 12 hours (the proxy's maximum).
pub(super) const MAX_INVISIBLE_MS: i64 = 12 * 60 * 60 * 1000;

/// The node's business behind the RocketMQ face.
pub struct NodeBackend<S> {
    pub(super) context: Arc<NodeContext<S>>,
}

impl<S> NodeBackend<S> {
    pub fn new(context: Arc<NodeContext<S>>) -> Self {
        Self { context }
    }
}

impl<S: LogStore> NodeBackend<S> {
    /// The topic a request names, with its definition.
    pub(super) fn topic(&self, resource: Option<&Resource>) -> Result<(String, Topic), NodeError> {
        let name = resource.map(|topic| topic.name.trim()).unwrap_or_default();
        if name.is_empty() {
            return Err(NodeError::TopicMissing);
        }
        let topic = self
            .context
            .topology
            .topic(name)
            .ok_or_else(|| NodeError::TopicNotFound {
                topic: name.to_owned(),
            })?;
        Ok((name.to_owned(), topic.clone()))
    }

    /// The consumer group a request names: not empty, at most 255
    /// characters, no control characters.
    pub(super) fn group(resource: Option<&Resource>) -> Result<String, NodeError> {
        let name = resource.map(|group| group.name.trim()).unwrap_or_default();
        if name.is_empty() {
            return Err(NodeError::IllegalConsumerGroup {
                group: String::new(),
                reason: "empty",
            });
        }
        if name.len() > 255 || name.contains(char::is_control) {
            return Err(NodeError::IllegalConsumerGroup {
                group: name.chars().take(64).collect(),
                reason: "longer than 255 characters or contains control characters",
            });
        }
        Ok(name.to_owned())
    }

    /// A receipt handle this node issued.
    pub(super) fn parse_handle(&self, text: &str) -> Result<ReceiptHandle, NodeError> {
        let handle: ReceiptHandle = text.parse()?;
        if handle.region != self.context.region {
            return Err(NodeError::ForeignHandle {
                region: handle.region,
                local: self.context.region.clone(),
            });
        }
        Ok(handle)
    }

    /// The topic's queues, all on this node: the node's answer to QueryRoute
    /// and QueryAssignment (clients normally ask their region's router).
    fn own_queues(&self, topic: Option<&Resource>) -> Result<Vec<MessageQueue>, NodeError> {
        let (_, definition) = self.topic(topic)?;
        let accept: Vec<_> = definition
            .message_types
            .iter()
            .map(|kind| convert::rocketmq_type(*kind))
            .collect();
        let resource = topic.cloned().unwrap_or_default();
        Ok(meridian_face::route::message_queues(
            &resource,
            definition.queues,
            &accept,
            &self.context.region,
            self.context.node_address,
        ))
    }

    async fn ack_entries(
        &self,
        request: AckMessageRequest,
    ) -> Result<Vec<Result<(), Refusal>>, NodeError> {
        let group = Self::group(request.group.as_ref())?;
        let (topic, _) = self.topic(request.topic.as_ref())?;
        // Each entry's outcome; the parsed handles are acknowledged together,
        // in one storage write.
        let mut outcomes: Vec<Result<(), Refusal>> = Vec::with_capacity(request.entries.len());
        let mut handles = Vec::new();
        let mut handle_entries = Vec::new();
        for (index, entry) in request.entries.iter().enumerate() {
            match self.parse_handle(&entry.receipt_handle) {
                Err(error) => outcomes.push(Err(error.refusal())),
                Ok(handle) => {
                    outcomes.push(Ok(()));
                    handles.push(handle);
                    handle_entries.push(index);
                }
            }
        }
        if handles.is_empty() {
            return Ok(outcomes);
        }
        let replicate =
            crate::acks::replicates_elsewhere(&self.context.topology, &topic, &self.context.region);
        let region = self.context.region.clone();
        let (acked, ack_records) = self
            .context
            .blocking(move |store, consumers| {
                let acked = consumers.ack_many(&group, &topic, &handles)?;
                if !replicate {
                    return Ok((acked, Vec::new()));
                }
                let finished: Vec<(i32, u64)> = handles
                    .iter()
                    .zip(&acked)
                    .filter(|(_, outcome)| outcome.is_ok())
                    .map(|(handle, _)| (handle.queue_id, handle.offset))
                    .collect();
                let records =
                    crate::acks::records_for_local_acks(store, &region, &group, &topic, &finished)?;
                Ok((acked, records))
            })
            .await?;
        for (index, outcome) in handle_entries.into_iter().zip(acked) {
            outcomes[index] = outcome.map_err(|error| NodeError::from(error).refusal());
        }
        if !ack_records.is_empty() {
            // The acks are in effect here already; only their replication
            // depends on this append.
            if let Err(error) = self.context.commit.append(ack_records).await {
                tracing::warn!(
                    error = %meridian_report::Report(&error),
                    "acknowledgements made here will not reach other regions"
                );
            }
        }
        Ok(outcomes)
    }

    async fn change_invisible(
        &self,
        request: ChangeInvisibleDurationRequest,
    ) -> Result<String, NodeError> {
        let group = Self::group(request.group.as_ref())?;
        let (topic, _) = self.topic(request.topic.as_ref())?;
        let handle = self.parse_handle(&request.receipt_handle)?;
        let millis = request
            .invisible_duration
            .as_ref()
            .map_or(0, duration_to_ms);
        if !(MIN_INVISIBLE_MS..=MAX_INVISIBLE_MS).contains(&millis) {
            return Err(NodeError::IllegalInvisibleTime {
                millis,
                min_ms: MIN_INVISIBLE_MS,
                max_ms: MAX_INVISIBLE_MS,
            });
        }
        let now = now_ms();
        let new_handle = self
            .context
            .blocking(move |_, consumers| {
                Ok(consumers.change_invisible(&group, &topic, &handle, millis, now)?)
            })
            .await?;
        Ok(new_handle.to_string())
    }
}

#[tonic::async_trait]
impl<S: LogStore> Backend for NodeBackend<S> {
    fn unserved_hint(&self) -> &'static str {
        "Meridian does not implement it yet"
    }

    async fn route(
        &self,
        _caller: &Caller,
        _rpc: &'static str,
        topic: Option<&Resource>,
    ) -> Result<Vec<MessageQueue>, Refusal> {
        self.own_queues(topic).map_err(|error| error.refusal())
    }

    async fn send(
        &self,
        _caller: &Caller,
        messages: Vec<Message>,
    ) -> Vec<Result<SendReceipt, Refusal>> {
        self.send_messages(messages).await
    }

    async fn receive(
        &self,
        caller: &Caller,
        request: ReceiveMessageRequest,
    ) -> Result<Vec<Message>, Refusal> {
        self.receive_messages(request, caller.remaining)
            .await
            .map_err(|error| {
                tracing::debug!(error = %error, "receive refused");
                error.refusal()
            })
    }

    async fn ack(
        &self,
        _caller: &Caller,
        request: AckMessageRequest,
    ) -> Result<Vec<Result<(), Refusal>>, Refusal> {
        self.ack_entries(request)
            .await
            .map_err(|error| error.refusal())
    }

    async fn change_invisible_duration(
        &self,
        _caller: &Caller,
        request: ChangeInvisibleDurationRequest,
    ) -> Result<String, Refusal> {
        self.change_invisible(request)
            .await
            .map_err(|error| error.refusal())
    }
}
