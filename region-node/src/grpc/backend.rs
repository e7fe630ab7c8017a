//! The node's side of the RocketMQ face (`meridian-face`): request checks
//! that need the topology and the node, and the dispatch to [`super::send`]
//! and [`super::receive`]. The face does the protocol's part (client ids,
//! response shapes, Telemetry); every node error becomes what the client
//! sees in [`NodeError::refusal`].

use super::NodeContext;
use super::convert::{self, duration_to_ms, now_ms};
use crate::consumer::{ConsumerError, DeadLetter, ReceiptHandle};
use crate::error::NodeError;
use crate::storage::LogStore;
use meridian_face::{Backend, Caller, CheckBack, ReceiveOptions, Refusal, SendReceipt};
use meridian_proto::meridian::v1::TraceEventKind;
use meridian_proto::rocketmq::v2::{
    AckMessageRequest, ChangeInvisibleDurationRequest, EndTransactionRequest,
    ForwardMessageToDeadLetterQueueRequest, Message, MessageQueue, ReceiveMessageRequest, Resource,
};
use meridian_topology::Topic;
use std::sync::Arc;

/// Shortest invisible duration a receive may ask for (the proxy's minimum).
pub(super) const MIN_INVISIBLE_MS: i64 = 1_000;
/// Shortest invisible duration ChangeInvisibleDuration takes: 0 makes the
/// message visible again at once (a consumer's "failed, retry now").
const MIN_CHANGED_INVISIBLE_MS: i64 = 0;
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
        let topology = self.context.topology.get();
        let topic = topology
            .topic(name)
            .ok_or_else(|| NodeError::TopicNotFound {
                topic: name.to_owned(),
            })?;
        Ok((name.to_owned(), topic.into_owned()))
    }

    /// The consumer group a request names: not empty, at most 255
    /// characters, no control characters and no `@` (it separates a
    /// broadcast group from an instance's client id).
    pub(super) fn group(resource: Option<&Resource>) -> Result<String, NodeError> {
        let name = resource.map(|group| group.name.trim()).unwrap_or_default();
        if name.is_empty() {
            return Err(NodeError::IllegalConsumerGroup {
                group: String::new(),
                reason: "empty",
            });
        }
        if name.len() > meridian_topology::GROUP_NAME_LENGTH_MAX || name.contains(char::is_control)
        {
            return Err(NodeError::IllegalConsumerGroup {
                group: name.chars().take(64).collect(),
                reason: "longer than 255 characters or contains control characters",
            });
        }
        if name.contains(meridian_topology::BROADCAST_INSTANCE_SEPARATOR) {
            return Err(NodeError::IllegalConsumerGroup {
                group: name.chars().take(64).collect(),
                reason: "contains `@`, which is reserved (it names broadcast consumer instances)",
            });
        }
        Ok(name.to_owned())
    }

    /// The name a request's consumer state is kept under: the group it
    /// names, or for a broadcast group the caller's instance of it
    /// (`<group>@<client id>`, see [`meridian_topology::broadcast_instance`]),
    /// or for a caller's own subscription (`Caller::subscription`)
    /// `<group>@<subscription>`.
    pub(super) fn consuming_group(
        &self,
        caller: &Caller,
        resource: Option<&Resource>,
    ) -> Result<String, NodeError> {
        let group = Self::group(resource)?;
        if let Some(subscription) = caller.subscription.as_deref() {
            // A face's own subscription (STOMP `/topic/`): an instance of
            // the group named by the face, never by a client.
            if subscription.is_empty()
                || subscription.contains(meridian_topology::BROADCAST_INSTANCE_SEPARATOR)
            {
                return Err(NodeError::IllegalConsumerGroup {
                    group: subscription.chars().take(64).collect(),
                    reason: "a subscription id must be non-empty and contain no `@`",
                });
            }
            return Ok(meridian_topology::broadcast_instance(&group, subscription));
        }
        if self.context.topology.get().group(&group).broadcast {
            Ok(meridian_topology::broadcast_instance(
                &group,
                &caller.client_id,
            ))
        } else {
            Ok(group)
        }
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
        caller: &Caller,
        request: AckMessageRequest,
    ) -> Result<Vec<Result<(), Refusal>>, NodeError> {
        let group = self.consuming_group(caller, request.group.as_ref())?;
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
        // A face's own subscription lives in this region only.
        let replicate = caller.subscription.is_none();
        let acked = self
            .acknowledge(group, topic, handles, &caller.client_id, replicate)
            .await?;
        for (index, outcome) in handle_entries.into_iter().zip(acked) {
            outcomes[index] = outcome.map_err(|error| NodeError::from(error).refusal());
        }
        Ok(outcomes)
    }

    /// Finishes the deliveries `handles` name for `group` (one storage
    /// write), then appends the acknowledgement records that carry them to
    /// the other regions of the topic. One outcome per handle, in order.
    /// `client_id` is who acknowledged (empty for the node itself), for the
    /// messages' traces. `replicate` false keeps the acknowledgements in this
    /// region (a face's own subscription).
    pub(super) async fn acknowledge(
        &self,
        group: String,
        topic: String,
        handles: Vec<ReceiptHandle>,
        client_id: &str,
        replicate: bool,
    ) -> Result<Vec<Result<(), ConsumerError>>, NodeError> {
        let replicate = replicate
            && crate::acks::replicates_elsewhere(
                &self.context.topology.get(),
                &topic,
                &self.context.region,
            );
        let region = self.context.region.clone();
        let (traced_group, traced_topic) = (group.clone(), topic.clone());
        let (acked, ack_records) = self
            .context
            .blocking(move |store, consumers| {
                let acked = consumers.ack_many(&group, &topic, &handles)?;
                let finished: Vec<(i32, u64)> = handles
                    .iter()
                    .zip(&acked)
                    .filter(|(_, outcome)| outcome.is_ok())
                    .map(|(handle, _)| (handle.queue_id, handle.offset))
                    .collect();
                // The records name the acknowledged messages (their dedup
                // ids), for the traces and, when the topic replicates, for
                // the other regions.
                let records =
                    crate::acks::records_for_local_acks(store, &region, &group, &topic, &finished)?;
                Ok((acked, records))
            })
            .await?;
        for record in &ack_records {
            if let Some(ack) = record.ack.as_ref() {
                self.context.tracer.note(
                    &traced_topic,
                    &ack.message_dedup_id,
                    TraceEventKind::Acknowledged,
                    &traced_group,
                    client_id,
                    0,
                );
            }
        }
        if replicate && !ack_records.is_empty() {
            // The acks are in effect here already; only their replication
            // depends on this append.
            if let Err(error) = self.context.commit.append(ack_records).await {
                tracing::warn!(
                    error = %meridian_report::Report(&error),
                    "acknowledgements made here will not reach other regions"
                );
            }
        }
        Ok(acked)
    }

    /// Moves the messages a receive gave up on to the group's dead-letter
    /// topic: appends the copies (durably), then acknowledges the
    /// originals. A failure leaves the originals in flight, to be moved
    /// again once due ([`crate::consumer::DEAD_LETTER_RETRY_MS`]).
    pub(crate) async fn move_to_dead_letters(
        &self,
        group: &str,
        topic: &str,
        dead_letters: Vec<DeadLetter>,
    ) {
        let now = now_ms();
        let (copies, handles): (Vec<_>, Vec<_>) = dead_letters
            .into_iter()
            .filter_map(|dead| {
                self.context.tracer.note(
                    topic,
                    &dead.record.dedup_id,
                    TraceEventKind::DeadLettered,
                    group,
                    "",
                    dead.attempts,
                );
                let copy = crate::dead_letter::dead_letter_record(
                    &dead.record,
                    group,
                    dead.attempts,
                    &self.context.region,
                    now,
                )?;
                Some((copy, dead.handle))
            })
            .unzip();
        if copies.is_empty() {
            return;
        }
        let count = copies.len();
        if let Err(error) = self.context.commit.append(copies).await {
            tracing::warn!(
                error = %meridian_report::Report(&error),
                group,
                topic,
                "could not store dead letters; the messages will be moved again later"
            );
            return;
        }
        match self
            .acknowledge(group.to_owned(), topic.to_owned(), handles, "", true)
            .await
        {
            Ok(_) => tracing::info!(
                group,
                topic,
                count,
                "moved messages to the dead-letter topic after their last delivery attempt"
            ),
            Err(error) => tracing::warn!(
                error = %meridian_report::Report(&error),
                group,
                topic,
                "dead letters stored, but their originals are not acknowledged yet"
            ),
        }
    }

    async fn change_invisible(
        &self,
        caller: &Caller,
        request: ChangeInvisibleDurationRequest,
    ) -> Result<String, NodeError> {
        let group = self.consuming_group(caller, request.group.as_ref())?;
        let (topic, _) = self.topic(request.topic.as_ref())?;
        let handle = self.parse_handle(&request.receipt_handle)?;
        // A missing duration is refused (as -1 ms), not read as "now".
        let millis = request
            .invisible_duration
            .as_ref()
            .map_or(-1, duration_to_ms);
        if !(MIN_CHANGED_INVISIBLE_MS..=MAX_INVISIBLE_MS).contains(&millis) {
            return Err(NodeError::IllegalInvisibleTime {
                millis,
                min_ms: MIN_CHANGED_INVISIBLE_MS,
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

impl<S: LogStore> NodeBackend<S> {
    /// ForwardMessageToDeadLetterQueue: the delivery's copy goes to the
    /// group's dead-letter topic (durably), then the delivery is
    /// acknowledged. A retry after a failure between the two stores no
    /// second copy (the copy's dedup id is derived from the original's).
    async fn forward_to_dead_letter_queue(
        &self,
        caller: &Caller,
        request: ForwardMessageToDeadLetterQueueRequest,
    ) -> Result<(), NodeError> {
        let group = self.consuming_group(caller, request.group.as_ref())?;
        let (topic, _) = self.topic(request.topic.as_ref())?;
        let handle = self.parse_handle(&request.receipt_handle)?;
        let (read_group, read_topic, read_handle) = (group.clone(), topic.clone(), handle.clone());
        let original = self
            .context
            .blocking(move |_, consumers| {
                Ok(consumers.delivered(&read_group, &read_topic, &read_handle)?)
            })
            .await?;
        let attempts = u32::try_from(request.delivery_attempt)
            .ok()
            .filter(|attempts| *attempts > 0)
            .unwrap_or(handle.attempt);
        let copy = crate::dead_letter::dead_letter_record(
            &original,
            &group,
            attempts,
            &self.context.region,
            now_ms(),
        )
        .ok_or_else(|| NodeError::InvalidRecord {
            reason: "the delivered record carries no message".to_owned(),
        })?;
        self.context.commit.append(vec![copy]).await?;
        self.context.tracer.note(
            &topic,
            &original.dedup_id,
            TraceEventKind::DeadLettered,
            &group,
            &caller.client_id,
            attempts,
        );
        match self
            .acknowledge(group, topic, vec![handle], &caller.client_id, true)
            .await?
            .pop()
        {
            Some(Err(error)) => Err(error.into()),
            Some(Ok(())) | None => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl<S: LogStore> Backend for NodeBackend<S> {
    fn unserved_hint(&self) -> &'static str {
        "Meridian does not implement it yet"
    }

    fn group_policy(&self, group: &str) -> meridian_topology::Group {
        self.context.topology.get().group(group).into_owned()
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
        caller: &Caller,
        messages: Vec<Message>,
    ) -> Vec<Result<SendReceipt, Refusal>> {
        self.send_messages(&caller.client_id, messages).await
    }

    async fn receive(
        &self,
        caller: &Caller,
        request: ReceiveMessageRequest,
    ) -> Result<Vec<Message>, Refusal> {
        self.receive_messages(caller, request, ReceiveOptions::default())
            .await
            .map_err(|error| {
                tracing::debug!(error = %error, "receive refused");
                error.refusal()
            })
    }

    async fn receive_with(
        &self,
        caller: &Caller,
        request: ReceiveMessageRequest,
        options: ReceiveOptions,
    ) -> Result<Vec<Message>, Refusal> {
        self.receive_messages(caller, request, options)
            .await
            .map_err(|error| {
                tracing::debug!(error = %error, "receive refused");
                error.refusal()
            })
    }

    async fn end_subscription(
        &self,
        caller: &Caller,
        group: &Resource,
        topic: &Resource,
    ) -> Result<(), Refusal> {
        if caller.subscription.is_none() {
            return Err(NodeError::IllegalConsumerGroup {
                group: group.name.chars().take(64).collect(),
                reason: "only a subscription of its own can be ended",
            }
            .refusal());
        }
        let instance = self
            .consuming_group(caller, Some(group))
            .map_err(|error| error.refusal())?;
        self.topic(Some(topic)).map_err(|error| error.refusal())?;
        let forgotten = self
            .context
            .blocking(move |_, consumers| Ok(consumers.forget_group(&instance)?))
            .await
            .map_err(|error| error.refusal())?;
        tracing::debug!(
            group = group.name,
            topic = topic.name,
            forgotten,
            "subscription ended"
        );
        Ok(())
    }

    async fn take_check_backs(
        &self,
        _caller: &Caller,
        topic: &Resource,
        max: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<CheckBack>, Refusal> {
        let (topic, _) = self.topic(Some(topic)).map_err(|error| error.refusal())?;
        let checks = self
            .context
            .transactions
            .polled
            .take(&topic, max.max(1), wait)
            .await;
        Ok(checks
            .into_iter()
            .filter_map(|check| {
                Some(CheckBack {
                    message: check.message?,
                    transaction_id: check.transaction_id,
                })
            })
            .collect())
    }

    async fn ack(
        &self,
        caller: &Caller,
        request: AckMessageRequest,
    ) -> Result<Vec<Result<(), Refusal>>, Refusal> {
        self.ack_entries(caller, request)
            .await
            .map_err(|error| error.refusal())
    }

    async fn change_invisible_duration(
        &self,
        caller: &Caller,
        request: ChangeInvisibleDurationRequest,
    ) -> Result<String, Refusal> {
        self.change_invisible(caller, request)
            .await
            .map_err(|error| error.refusal())
    }

    async fn forward_to_dead_letter(
        &self,
        caller: &Caller,
        request: ForwardMessageToDeadLetterQueueRequest,
    ) -> Result<(), Refusal> {
        self.forward_to_dead_letter_queue(caller, request)
            .await
            .map_err(|error| error.refusal())
    }

    async fn end_transaction(
        &self,
        caller: &Caller,
        request: EndTransactionRequest,
    ) -> Result<(), Refusal> {
        self.end_transaction_request(caller, request)
            .await
            .map_err(|error| {
                tracing::debug!(error = %error, "EndTransaction refused");
                error.refusal()
            })
    }
}
