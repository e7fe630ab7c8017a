//! The RocketMQ 5 gRPC `MessagingService`, as the official clients use it.
//!
//! Business errors travel in the response's `Status` while the gRPC status
//! stays OK (as the reference proxy does); every error becomes a status in
//! [`NodeError::to_status`]. See shared/protocols/rocketmq-grpc.md for the
//! client behaviours this follows (stream shapes, long polling, entries).

use super::NodeContext;
use super::convert::{self, duration_to_ms, now_ms};
use crate::consumer::{ReceiptHandle, ReceiveRequest, TagFilter};
use crate::error::NodeError;
use crate::storage::{Appended, LogStore};
use futures::Stream;
use meridian_proto::client_settings::{self, ok, status};
use meridian_proto::rocketmq::v2::MessageQueue;
use meridian_proto::rocketmq::v2::messaging_service_server::MessagingService;
use meridian_proto::rocketmq::v2::{
    AckMessageRequest, AckMessageResponse, AckMessageResultEntry, Assignment,
    ChangeInvisibleDurationRequest, ChangeInvisibleDurationResponse, Code, EndTransactionRequest,
    EndTransactionResponse, FilterType, ForwardMessageToDeadLetterQueueRequest,
    ForwardMessageToDeadLetterQueueResponse, GetOffsetRequest, GetOffsetResponse, HeartbeatRequest,
    HeartbeatResponse, NotifyClientTerminationRequest, NotifyClientTerminationResponse,
    PullMessageRequest, PullMessageResponse, QueryAssignmentRequest, QueryAssignmentResponse,
    QueryOffsetRequest, QueryOffsetResponse, QueryRouteRequest, QueryRouteResponse,
    RecallMessageRequest, RecallMessageResponse, ReceiveMessageRequest, ReceiveMessageResponse,
    Resource, SendMessageRequest, SendMessageResponse, SendResultEntry, Status,
    SyncLiteSubscriptionRequest, SyncLiteSubscriptionResponse, TelemetryCommand,
    UpdateOffsetRequest, UpdateOffsetResponse, pull_message_response, receive_message_response,
    telemetry_command,
};
use meridian_topology::Topic;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Streaming};

/// Longest a receive waits for messages (the proxy's cap).
const MAX_POLL_MS: i64 = 20_000;
/// Time kept back from the caller's deadline to send the empty answer.
const DEADLINE_MARGIN_MS: i64 = 1_000;
/// Invisible duration used when a client asks for auto-renewal without one.
const DEFAULT_INVISIBLE_MS: i64 = 60_000;
const MIN_INVISIBLE_MS: i64 = 1_000;
const MAX_INVISIBLE_MS: i64 = 12 * 60 * 60 * 1000;
const MAX_BATCH: usize = 1024;
/// Body bytes one receive hands out at most (beyond its first message), so a
/// large batch of large messages does not pile up in memory.
const MAX_RECEIVE_BYTES: usize = 16 * 1024 * 1024;
const DEFAULT_BATCH: usize = 32;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

/// The node's RocketMQ service.
pub struct Messaging<S> {
    context: Arc<NodeContext<S>>,
}

impl<S> Messaging<S> {
    pub fn new(context: Arc<NodeContext<S>>) -> Self {
        Self { context }
    }
}

/// Refuses requests without the client id every official client sends.
fn require_client_id<T>(request: &Request<T>) -> Result<(), NodeError> {
    let present = request
        .metadata()
        .get("x-mq-client-id")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| !value.trim().is_empty());
    if present {
        Ok(())
    } else {
        Err(NodeError::ClientIdRequired)
    }
}

/// The milliseconds left before the caller's `grpc-timeout`, if it sent one.
fn remaining_ms<T>(request: &Request<T>) -> Option<i64> {
    let text = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let value: i64 = digits.parse().ok()?;
    let ms = match unit {
        "H" => value.saturating_mul(3_600_000),
        "M" => value.saturating_mul(60_000),
        "S" => value.saturating_mul(1000),
        "m" => value,
        "u" => value / 1000,
        "n" => value / 1_000_000,
        _ => return None,
    };
    Some(ms)
}

/// Requests that name a topic (QueryRoute, QueryAssignment).
trait TopicRequest {
    fn topic(&self) -> Option<&Resource>;
}

impl TopicRequest for QueryRouteRequest {
    fn topic(&self) -> Option<&Resource> {
        self.topic.as_ref()
    }
}

impl TopicRequest for QueryAssignmentRequest {
    fn topic(&self) -> Option<&Resource> {
        self.topic.as_ref()
    }
}

fn aggregate(statuses: &[Status]) -> Status {
    match statuses {
        [] => ok(),
        [only] => only.clone(),
        [first, rest @ ..] if rest.iter().all(|other| other.code == first.code) => first.clone(),
        _ => status(Code::MultipleResults, "entries have different results"),
    }
}

impl<S: LogStore> Messaging<S> {
    fn topic(&self, resource: Option<&Resource>) -> Result<(String, Topic), NodeError> {
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

    /// The topic's queues, all on this node: the node's answer to QueryRoute
    /// and QueryAssignment (clients normally ask their region's router).
    fn own_queues<T: TopicRequest>(
        &self,
        request: Request<T>,
    ) -> Result<Vec<MessageQueue>, NodeError> {
        require_client_id(&request)?;
        let request = request.into_inner();
        let (_, topic) = self.topic(request.topic())?;
        let accept: Vec<_> = topic
            .message_types
            .iter()
            .map(|kind| convert::rocketmq_type(*kind))
            .collect();
        let resource = request.topic().cloned().unwrap_or_default();
        Ok(meridian_proto::route::message_queues(
            &resource,
            topic.queues,
            &accept,
            &self.context.region,
            self.context.node_address,
        ))
    }

    fn group(resource: Option<&Resource>) -> Result<String, NodeError> {
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

    async fn send(&self, request: SendMessageRequest) -> SendMessageResponse {
        let now = now_ms();
        let mut entries: Vec<SendResultEntry> = Vec::with_capacity(request.messages.len());
        let mut records = Vec::new();
        let mut record_entry = Vec::new();
        for message in &request.messages {
            let message_id = message
                .system_properties
                .as_ref()
                .map(|properties| properties.message_id.clone())
                .unwrap_or_default();
            let built = self
                .topic(message.topic.as_ref())
                .and_then(|(name, topic)| {
                    convert::record_from_client(message, &name, &topic, &self.context.region, now)
                });
            match built {
                Ok(record) => {
                    record_entry.push(entries.len());
                    records.push(record);
                    entries.push(SendResultEntry {
                        status: Some(ok()),
                        message_id,
                        ..Default::default()
                    });
                }
                Err(error) => {
                    tracing::debug!(error = %error, %message_id, "send refused");
                    entries.push(SendResultEntry {
                        status: Some(error.to_status()),
                        message_id,
                        ..Default::default()
                    });
                }
            }
        }
        if request.messages.is_empty() {
            let error = status(Code::BadRequest, "SendMessage carries no messages");
            return SendMessageResponse {
                status: Some(error),
                entries: Vec::new(),
            };
        }
        if !records.is_empty() {
            match self.context.commit.append(records).await {
                Ok(outcomes) => {
                    for (index, outcome) in record_entry.into_iter().zip(outcomes) {
                        match outcome {
                            Appended::Stored {
                                queue_offset,
                                reused_client_id,
                                ..
                            } => {
                                entries[index].offset =
                                    i64::try_from(queue_offset).unwrap_or(i64::MAX);
                                if reused_client_id {
                                    self.context
                                        .reused_client_ids
                                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    tracing::warn!(
                                        message_id = %entries[index].message_id,
                                        "a different message with this message id is already stored; \
                                         stored this one too (producers' message ids are not unique)"
                                    );
                                }
                            }
                            // A producer's retry of a stored message is told
                            // the offset of the stored copy, in the queue that
                            // copy went to (a retry may name another).
                            Appended::Duplicate { queue_offset, .. } => {
                                if let Some(offset) = queue_offset {
                                    entries[index].offset =
                                        i64::try_from(offset).unwrap_or(i64::MAX);
                                }
                            }
                        }
                    }
                }
                Err(error) => {
                    let error = NodeError::from(error);
                    tracing::error!(error = %crate::error::error_chain(&error), "send failed");
                    for index in record_entry {
                        entries[index].status = Some(error.to_status());
                    }
                }
            }
        }
        let statuses: Vec<Status> = entries
            .iter()
            .filter_map(|entry| entry.status.clone())
            .collect();
        SendMessageResponse {
            status: Some(aggregate(&statuses)),
            entries,
        }
    }

    async fn receive(
        &self,
        request: ReceiveMessageRequest,
        remaining_ms: Option<i64>,
    ) -> Result<Vec<ReceiveMessageResponse>, NodeError> {
        let group = Self::group(request.group.as_ref())?;
        let queue = request.message_queue.unwrap_or_default();
        let (topic_name, topic) = self.topic(queue.topic.as_ref())?;
        let filter = match request.filter_expression {
            Some(expression) if expression.r#type() == FilterType::Sql => {
                return Err(crate::consumer::FilterError::SqlUnsupported {
                    expression: expression.expression,
                }
                .into());
            }
            Some(expression) => TagFilter::parse_tags(&expression.expression)?,
            None => TagFilter::All,
        };
        let invisible_ms = match request.invisible_duration.as_ref().map(duration_to_ms) {
            Some(millis) if !(MIN_INVISIBLE_MS..=MAX_INVISIBLE_MS).contains(&millis) => {
                return Err(NodeError::IllegalInvisibleTime {
                    millis,
                    min_ms: MIN_INVISIBLE_MS,
                    max_ms: MAX_INVISIBLE_MS,
                });
            }
            Some(millis) => millis,
            None => DEFAULT_INVISIBLE_MS,
        };
        let batch = usize::try_from(request.batch_size)
            .ok()
            .filter(|size| *size > 0)
            .unwrap_or(DEFAULT_BATCH)
            .min(MAX_BATCH);
        let requested_poll = request
            .long_polling_timeout
            .as_ref()
            .map_or(MAX_POLL_MS, duration_to_ms);
        let mut poll_ms = requested_poll.clamp(0, MAX_POLL_MS);
        if let Some(remaining) = remaining_ms {
            if remaining < DEADLINE_MARGIN_MS {
                return Err(NodeError::IllegalPollingTime {
                    remaining_ms: remaining,
                });
            }
            poll_ms = poll_ms.min(remaining - DEADLINE_MARGIN_MS);
        }
        let poll_until = tokio::time::Instant::now()
            + Duration::from_millis(u64::try_from(poll_ms).unwrap_or(0));
        let mut commits = self.context.commit.subscribe();
        let mut invisibility_changes = self.context.consumers.subscribe_invisibility_changes();
        let filter = Arc::new(filter);
        loop {
            commits.borrow_and_update();
            invisibility_changes.borrow_and_update();
            let now = now_ms();
            let (group, topic_name, filter) = (group.clone(), topic_name.clone(), filter.clone());
            let (queues, consume_from) = (topic.queues, topic.consume_from);
            let received = self
                .context
                .blocking(move |_, consumers| {
                    let request = ReceiveRequest {
                        group: &group,
                        topic: &topic_name,
                        queue_count: queues,
                        consume_from,
                        filter: &filter,
                        max_messages: batch,
                        max_bytes: MAX_RECEIVE_BYTES,
                        invisible_ms,
                        now_ms: now,
                    };
                    Ok(consumers.receive(&request)?)
                })
                .await?;
            if !received.deliveries.is_empty() {
                let store_host = self.context.node_address.to_string();
                let mut frames = vec![ReceiveMessageResponse {
                    content: Some(receive_message_response::Content::Status(ok())),
                }];
                frames.extend(received.deliveries.into_iter().map(|delivery| {
                    ReceiveMessageResponse {
                        content: Some(receive_message_response::Content::Message(
                            convert::message_for_delivery(delivery, &store_host, invisible_ms),
                        )),
                    }
                }));
                return Ok(frames);
            }
            let mut wake = poll_until;
            if let Some(deadline) = received.next_deadline_ms {
                let wait = Duration::from_millis(u64::try_from(deadline - now).unwrap_or(0));
                wake = wake.min(tokio::time::Instant::now() + wait);
            }
            if tokio::time::Instant::now() >= poll_until {
                break;
            }
            tokio::select! {
                biased;
                () = self.context.shutdown.cancelled() => break,
                changed = commits.changed() => if changed.is_err() { break },
                changed = invisibility_changes.changed() => if changed.is_err() { break },
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        Ok(vec![ReceiveMessageResponse {
            content: Some(receive_message_response::Content::Status(status(
                Code::MessageNotFound,
                "no new message",
            ))),
        }])
    }

    fn parse_handle(&self, text: &str) -> Result<ReceiptHandle, NodeError> {
        let handle: ReceiptHandle = text.parse()?;
        if handle.region != self.context.region {
            return Err(NodeError::ForeignHandle {
                region: handle.region,
                local: self.context.region.clone(),
            });
        }
        Ok(handle)
    }

    async fn ack(&self, request: AckMessageRequest) -> AckMessageResponse {
        let prepared = Self::group(request.group.as_ref())
            .and_then(|group| Ok((group, self.topic(request.topic.as_ref())?.0)));
        // Each entry's outcome; the parsed handles are acknowledged together,
        // in one storage write.
        let mut results: Vec<Option<Result<(), Status>>> =
            Vec::with_capacity(request.entries.len());
        let mut handles = Vec::new();
        let mut handle_entries = Vec::new();
        for (index, entry) in request.entries.iter().enumerate() {
            match &prepared {
                Err(error) => results.push(Some(Err(error.to_status()))),
                Ok(_) => match self.parse_handle(&entry.receipt_handle) {
                    Err(error) => results.push(Some(Err(error.to_status()))),
                    Ok(handle) => {
                        results.push(None);
                        handles.push(handle);
                        handle_entries.push(index);
                    }
                },
            }
        }
        if let (Ok((group, topic)), false) = (&prepared, handles.is_empty()) {
            let (group, topic) = (group.clone(), topic.clone());
            let outcomes = self
                .context
                .blocking(move |_, consumers| Ok(consumers.ack_many(&group, &topic, &handles)?))
                .await;
            match outcomes {
                Ok(outcomes) => {
                    for (index, outcome) in handle_entries.into_iter().zip(outcomes) {
                        results[index] =
                            Some(outcome.map_err(|error| NodeError::from(error).to_status()));
                    }
                }
                Err(error) => {
                    let status = error.to_status();
                    for index in handle_entries {
                        results[index] = Some(Err(status.clone()));
                    }
                }
            }
        }
        let entries: Vec<AckMessageResultEntry> = request
            .entries
            .into_iter()
            .zip(results)
            .map(|(entry, result)| AckMessageResultEntry {
                message_id: entry.message_id,
                receipt_handle: entry.receipt_handle,
                status: Some(match result {
                    Some(Err(status)) => status,
                    Some(Ok(())) | None => ok(),
                }),
            })
            .collect();
        let statuses: Vec<Status> = entries
            .iter()
            .filter_map(|entry| entry.status.clone())
            .collect();
        let overall = match (&prepared, statuses.is_empty()) {
            (Err(error), true) => error.to_status(),
            (_, true) => status(Code::BadRequest, "AckMessage carries no entries"),
            _ => aggregate(&statuses),
        };
        AckMessageResponse {
            status: Some(overall),
            entries,
        }
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

fn not_implemented(what: &str) -> Status {
    status(
        Code::NotImplemented,
        format!("{what} is not implemented by Meridian yet"),
    )
}

#[tonic::async_trait]
impl<S: LogStore> MessagingService for Messaging<S> {
    async fn query_route(
        &self,
        request: Request<QueryRouteRequest>,
    ) -> Result<Response<QueryRouteResponse>, tonic::Status> {
        Ok(Response::new(match self.own_queues(request) {
            Ok(message_queues) => QueryRouteResponse {
                status: Some(ok()),
                message_queues,
            },
            Err(error) => QueryRouteResponse {
                status: Some(error.to_status()),
                message_queues: Vec::new(),
            },
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, tonic::Status> {
        let status = require_client_id(&request).map_or_else(|error| error.to_status(), |()| ok());
        Ok(Response::new(HeartbeatResponse {
            status: Some(status),
        }))
    }

    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, tonic::Status> {
        if let Err(error) = require_client_id(&request) {
            let request = request.into_inner();
            let entries = request
                .messages
                .iter()
                .map(|message| SendResultEntry {
                    status: Some(error.to_status()),
                    message_id: message
                        .system_properties
                        .as_ref()
                        .map(|p| p.message_id.clone())
                        .unwrap_or_default(),
                    ..Default::default()
                })
                .collect();
            return Ok(Response::new(SendMessageResponse {
                status: Some(error.to_status()),
                entries,
            }));
        }
        Ok(Response::new(self.send(request.into_inner()).await))
    }

    async fn query_assignment(
        &self,
        request: Request<QueryAssignmentRequest>,
    ) -> Result<Response<QueryAssignmentResponse>, tonic::Status> {
        Ok(Response::new(match self.own_queues(request) {
            Ok(queues) => QueryAssignmentResponse {
                status: Some(ok()),
                assignments: queues
                    .into_iter()
                    .map(|queue| Assignment {
                        message_queue: Some(queue),
                    })
                    .collect(),
            },
            Err(error) => QueryAssignmentResponse {
                status: Some(error.to_status()),
                assignments: Vec::new(),
            },
        }))
    }

    type ReceiveMessageStream = BoxStream<ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        request: Request<ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, tonic::Status> {
        let frames = match require_client_id(&request) {
            Err(error) => Err(error),
            Ok(()) => {
                let remaining = remaining_ms(&request);
                self.receive(request.into_inner(), remaining).await
            }
        };
        let frames = frames.unwrap_or_else(|error| {
            tracing::debug!(error = %error, "receive refused");
            vec![ReceiveMessageResponse {
                content: Some(receive_message_response::Content::Status(error.to_status())),
            }]
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(
            frames.into_iter().map(Ok),
        ))))
    }

    async fn ack_message(
        &self,
        request: Request<AckMessageRequest>,
    ) -> Result<Response<AckMessageResponse>, tonic::Status> {
        if let Err(error) = require_client_id(&request) {
            let entries = request
                .into_inner()
                .entries
                .into_iter()
                .map(|entry| AckMessageResultEntry {
                    message_id: entry.message_id,
                    receipt_handle: entry.receipt_handle,
                    status: Some(error.to_status()),
                })
                .collect();
            return Ok(Response::new(AckMessageResponse {
                status: Some(error.to_status()),
                entries,
            }));
        }
        Ok(Response::new(self.ack(request.into_inner()).await))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        _request: Request<ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<ForwardMessageToDeadLetterQueueResponse>, tonic::Status> {
        Ok(Response::new(ForwardMessageToDeadLetterQueueResponse {
            status: Some(not_implemented("ForwardMessageToDeadLetterQueue")),
        }))
    }

    type PullMessageStream = BoxStream<PullMessageResponse>;

    async fn pull_message(
        &self,
        _request: Request<PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, tonic::Status> {
        let frame = PullMessageResponse {
            content: Some(pull_message_response::Content::Status(not_implemented(
                "PullMessage",
            ))),
        };
        Ok(Response::new(Box::pin(tokio_stream::iter([Ok(frame)]))))
    }

    async fn update_offset(
        &self,
        _request: Request<UpdateOffsetRequest>,
    ) -> Result<Response<UpdateOffsetResponse>, tonic::Status> {
        Ok(Response::new(UpdateOffsetResponse {
            status: Some(not_implemented("UpdateOffset")),
        }))
    }

    async fn get_offset(
        &self,
        _request: Request<GetOffsetRequest>,
    ) -> Result<Response<GetOffsetResponse>, tonic::Status> {
        Ok(Response::new(GetOffsetResponse {
            status: Some(not_implemented("GetOffset")),
            offset: 0,
        }))
    }

    async fn query_offset(
        &self,
        _request: Request<QueryOffsetRequest>,
    ) -> Result<Response<QueryOffsetResponse>, tonic::Status> {
        Ok(Response::new(QueryOffsetResponse {
            status: Some(not_implemented("QueryOffset")),
            offset: 0,
        }))
    }

    async fn end_transaction(
        &self,
        _request: Request<EndTransactionRequest>,
    ) -> Result<Response<EndTransactionResponse>, tonic::Status> {
        Ok(Response::new(EndTransactionResponse {
            status: Some(not_implemented("EndTransaction")),
        }))
    }

    type TelemetryStream = ReceiverStream<Result<TelemetryCommand, tonic::Status>>;

    async fn telemetry(
        &self,
        request: Request<Streaming<TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, tonic::Status> {
        let (sender, receiver) = mpsc::channel(16);
        if let Err(error) = require_client_id(&request) {
            let reply = TelemetryCommand {
                status: Some(error.to_status()),
                command: None,
            };
            // The channel has room for one reply; a full channel cannot happen here.
            let _ = sender.try_send(Ok(reply));
            return Ok(Response::new(ReceiverStream::new(receiver)));
        }
        let mut inbound = request.into_inner();
        let shutdown = self.context.shutdown.clone();
        self.context.tasks.spawn(async move {
            loop {
                let command = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    command = inbound.message() => command,
                };
                // End of stream or a cancelled call is not the client's death:
                // clients keep their registration through heartbeats.
                let Ok(Some(command)) = command else { break };
                if let Some(telemetry_command::Command::Settings(settings)) = command.command
                    && sender
                        .send(Ok(client_settings::reply(settings)))
                        .await
                        .is_err()
                {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn notify_client_termination(
        &self,
        request: Request<NotifyClientTerminationRequest>,
    ) -> Result<Response<NotifyClientTerminationResponse>, tonic::Status> {
        let status = require_client_id(&request).map_or_else(|error| error.to_status(), |()| ok());
        Ok(Response::new(NotifyClientTerminationResponse {
            status: Some(status),
        }))
    }

    async fn change_invisible_duration(
        &self,
        request: Request<ChangeInvisibleDurationRequest>,
    ) -> Result<Response<ChangeInvisibleDurationResponse>, tonic::Status> {
        let checked = require_client_id(&request);
        let request = request.into_inner();
        let old_handle = request.receipt_handle.clone();
        let result = match checked {
            Err(error) => Err(error),
            Ok(()) => self.change_invisible(request).await,
        };
        // Clients keep the returned handle even on failure: always return a valid one.
        Ok(Response::new(match result {
            Ok(receipt_handle) => ChangeInvisibleDurationResponse {
                status: Some(ok()),
                receipt_handle,
            },
            Err(error) => ChangeInvisibleDurationResponse {
                status: Some(error.to_status()),
                receipt_handle: old_handle,
            },
        }))
    }

    async fn recall_message(
        &self,
        _request: Request<RecallMessageRequest>,
    ) -> Result<Response<RecallMessageResponse>, tonic::Status> {
        Ok(Response::new(RecallMessageResponse {
            status: Some(not_implemented("RecallMessage")),
            message_id: String::new(),
        }))
    }

    async fn sync_lite_subscription(
        &self,
        _request: Request<SyncLiteSubscriptionRequest>,
    ) -> Result<Response<SyncLiteSubscriptionResponse>, tonic::Status> {
        Ok(Response::new(SyncLiteSubscriptionResponse {
            status: Some(not_implemented("SyncLiteSubscription")),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_header_is_read_in_every_unit() {
        let mut request = Request::new(());
        for (text, expected) in [
            ("40S", 40_000),
            ("39999m", 39_999),
            ("1M", 60_000),
            ("5000000u", 5_000),
        ] {
            request
                .metadata_mut()
                .insert("grpc-timeout", text.parse().expect("ascii"));
            assert_eq!(remaining_ms(&request), Some(expected), "{text}");
        }
        request
            .metadata_mut()
            .insert("grpc-timeout", "x".parse().expect("ascii"));
        assert_eq!(remaining_ms(&request), None);
    }

    #[test]
    fn aggregate_status_reports_mixed_results() {
        assert_eq!(aggregate(&[ok(), ok()]).code, Code::Ok as i32);
        let mixed = aggregate(&[ok(), status(Code::TopicNotFound, "x")]);
        assert_eq!(mixed.code, Code::MultipleResults as i32);
    }
}
