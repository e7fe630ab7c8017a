//! [`Face`]: `MessagingService` over a [`Backend`].

use crate::access::{Authentication, Permission};
use crate::client_settings::{self, ok, status};
use crate::delivery::{self, Shaped};
use crate::producers::{Producers, StreamId};
use crate::renewal::{self, Handed, Renewals};
use crate::request::{aggregate, answered, at_least_one, caller};
use crate::{Backend, Caller, Guarded, Refusal};
use meridian_proto::rocketmq::v2::messaging_service_server::MessagingService;
use meridian_proto::rocketmq::v2::{
    AckMessageRequest, AckMessageResponse, AckMessageResultEntry, Assignment,
    ChangeInvisibleDurationRequest, ChangeInvisibleDurationResponse, Code, EndTransactionRequest,
    EndTransactionResponse, ForwardMessageToDeadLetterQueueRequest,
    ForwardMessageToDeadLetterQueueResponse, GetOffsetRequest, GetOffsetResponse, HeartbeatRequest,
    HeartbeatResponse, Message, MessageQueue, MessageType, NotifyClientTerminationRequest,
    NotifyClientTerminationResponse, PullMessageRequest, PullMessageResponse,
    QueryAssignmentRequest, QueryAssignmentResponse, QueryOffsetRequest, QueryOffsetResponse,
    QueryRouteRequest, QueryRouteResponse, RecallMessageRequest, RecallMessageResponse,
    ReceiveMessageRequest, ReceiveMessageResponse, Resource, SendMessageRequest,
    SendMessageResponse, SendResultEntry, Status, SyncLiteSubscriptionRequest,
    SyncLiteSubscriptionResponse, TelemetryCommand, UpdateOffsetRequest, UpdateOffsetResponse,
    pull_message_response, receive_message_response, settings, telemetry_command,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Streaming};
use tracing::{debug, trace, warn};

/// Telemetry replies buffered per stream before the server waits for the client.
const TELEMETRY_QUEUE: usize = 8;

type GrpcResult<T> = Result<Response<T>, tonic::Status>;
type Frames<T> = tokio_stream::Iter<std::vec::IntoIter<Result<T, tonic::Status>>>;

/// The RocketMQ `MessagingService` of a node or a router: the protocol's
/// rules here, the business in `B`.
pub struct Face<B> {
    backend: Arc<Guarded<B>>,
    /// Who may call: the guard's, checked on every RPC.
    authentication: Authentication,
    /// Messages handed out with `auto_renew`, renewed while their client lives.
    renewals: Arc<Renewals>,
    /// Producers with a live Telemetry stream, for transaction check-backs.
    producers: Arc<Producers>,
    /// Owns the per-stream Telemetry tasks.
    tasks: TaskTracker,
    /// Ends Telemetry streams when the server stops.
    stop: CancellationToken,
}

impl<B: Backend> Face<B> {
    /// A face over `backend`, whose guard's authentication every RPC is
    /// checked against, and whose Telemetry and renewal tasks belong to
    /// `tasks` and end on `stop`. Call within a Tokio runtime.
    pub fn new(backend: Arc<Guarded<B>>, tasks: TaskTracker, stop: CancellationToken) -> Self {
        let authentication = backend.authentication().clone();
        let renewals = Arc::new(Renewals::default());
        tasks.spawn(renewal::run(
            Arc::clone(&renewals),
            Arc::clone(&backend),
            stop.clone(),
        ));
        Face {
            backend,
            authentication,
            renewals,
            producers: Arc::new(Producers::default()),
            tasks,
            stop,
        }
    }

    /// The producers connected to this face by Telemetry, to which the
    /// server pushes transaction check-backs.
    pub fn producers(&self) -> Arc<Producers> {
        Arc::clone(&self.producers)
    }

    /// The messages of a receive in the shape their client can decode
    /// ([`delivery::shape`]). One that fits no shape is not sent (the
    /// client would fail the whole receive): it is made visible again at
    /// once, for the group's other consumers, and as every delivery counts
    /// as an attempt, it reaches the dead-letter topic after the group's
    /// max attempts if no consumer can take it.
    async fn deliverable(
        &self,
        caller: &Caller,
        group: Option<Resource>,
        topic: Option<Resource>,
        messages: Vec<Message>,
    ) -> Vec<Message> {
        let mut deliverable = Vec::with_capacity(messages.len());
        for mut message in messages {
            match delivery::shape(&mut message, &caller.language) {
                Shaped::AsIs => deliverable.push(message),
                Shaped::Compressed => {
                    debug!(
                        message_id = message_id(&message),
                        language = caller.language,
                        "large body sent GZIP-compressed"
                    );
                    deliverable.push(message);
                }
                Shaped::TooLarge { frame_bytes } => {
                    let properties = message.system_properties.unwrap_or_default();
                    warn!(
                        message_id = properties.message_id,
                        client_id = caller.client_id,
                        language = caller.language,
                        frame_bytes,
                        limit = delivery::CLIENT_INBOUND_FRAME_MAX,
                        "delivery larger than this client accepts, and its body does not \
                         compress enough: not sent to it, visible again for other consumers"
                    );
                    let release = ChangeInvisibleDurationRequest {
                        group: group.clone(),
                        topic: topic.clone(),
                        receipt_handle: properties.receipt_handle.unwrap_or_default(),
                        invisible_duration: Some(proto_duration(Duration::ZERO)),
                        message_id: properties.message_id,
                        ..ChangeInvisibleDurationRequest::default()
                    };
                    if let Err(refusal) = self
                        .backend
                        .change_invisible_duration(caller, release)
                        .await
                    {
                        debug!(%refusal, "an undeliverable message could not be released");
                    }
                }
            }
        }
        deliverable
    }

    /// Starts renewing what a receive with `auto_renew` handed out, for
    /// the receive's invisible time, or the group's default.
    fn lease(&self, caller: &Caller, request: &ReceiveMessageRequest, messages: &[Message]) {
        let group = request.group.clone().unwrap_or_default();
        let topic = request
            .message_queue
            .as_ref()
            .and_then(|queue| queue.topic.clone())
            .unwrap_or_default();
        let invisible = match request.invisible_duration.as_ref() {
            Some(duration) => std_duration(duration),
            None => {
                Duration::from_millis(self.backend.group_policy(group.name.trim()).invisible_ms)
            }
        };
        let handed: Vec<Handed<'_>> = messages
            .iter()
            .filter_map(|message| message.system_properties.as_ref())
            .map(|properties| Handed {
                group: &group,
                topic: &topic,
                message_id: &properties.message_id,
                receipt_handle: properties.receipt_handle.as_deref().unwrap_or_default(),
                attempt: u32::try_from(properties.delivery_attempt.unwrap_or(1)).unwrap_or(1),
                invisible,
                access_key: caller.access_key.as_deref(),
            })
            .filter(|handed| !handed.receipt_handle.is_empty())
            .collect();
        self.renewals
            .lease(&caller.client_id, &handed, tokio::time::Instant::now());
    }

    fn not_implemented(&self, rpc: &str) -> Refusal {
        Refusal::not_implemented(rpc, self.backend.unserved_hint())
    }

    /// The status of an RPC that no backend serves yet.
    fn unserved<T>(&self, rpc: &str, request: &Request<T>) -> Status {
        answered(
            rpc,
            caller(request, &self.authentication).and(Err(self.not_implemented(rpc))),
        )
    }
}

/// What QueryAssignment answers, as the reference proxy does: for an
/// ordered (FIFO) group every queue of the route, so a push consumer
/// receives from each; otherwise one queue per broker with id -1 ("any
/// queue": a receive pops from all of the broker's queues), so a push
/// consumer runs one receive loop per broker, not one per queue.
fn assignments(message_queues: Vec<MessageQueue>, fifo: bool) -> Vec<Assignment> {
    let mut assignments: Vec<Assignment> = Vec::new();
    for mut message_queue in message_queues {
        if !fifo {
            let broker = message_queue.broker.as_ref().map(|broker| &broker.name);
            let known = assignments.iter().any(|assignment| {
                assignment
                    .message_queue
                    .as_ref()
                    .and_then(|queue| queue.broker.as_ref())
                    .map(|known| &known.name)
                    == broker
            });
            if known {
                continue;
            }
            message_queue.id = -1;
        }
        assignments.push(Assignment {
            message_queue: Some(message_queue),
        });
    }
    assignments
}

/// A message's id, empty when it has no system properties.
fn message_id(message: &Message) -> &str {
    message
        .system_properties
        .as_ref()
        .map_or("", |properties| properties.message_id.as_str())
}

/// `duration` as a protobuf Duration.
pub(crate) fn proto_duration(duration: Duration) -> meridian_proto::prost_types::Duration {
    meridian_proto::prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf Duration as a std one; negative parts count as 0.
fn std_duration(duration: &meridian_proto::prost_types::Duration) -> Duration {
    Duration::new(
        u64::try_from(duration.seconds).unwrap_or(0),
        u32::try_from(duration.nanos).unwrap_or(0),
    )
}

/// An outcome's status code, for [`renewal::Held::settle`].
fn outcome_code<T>(outcome: &Result<T, Refusal>) -> Result<(), Code> {
    outcome.as_ref().map(drop).map_err(|refusal| refusal.code)
}

fn status_frame(status: Status) -> ReceiveMessageResponse {
    ReceiveMessageResponse {
        content: Some(receive_message_response::Content::Status(status)),
    }
}

#[tonic::async_trait]
impl<B: Backend> MessagingService for Face<B> {
    async fn query_route(
        &self,
        request: Request<QueryRouteRequest>,
    ) -> GrpcResult<QueryRouteResponse> {
        let routed = match caller(&request, &self.authentication) {
            Ok(caller) => {
                self.backend
                    .route(&caller, "QueryRoute", request.get_ref().topic.as_ref())
                    .await
            }
            Err(refusal) => Err(refusal),
        };
        Ok(Response::new(match routed {
            Ok(message_queues) => QueryRouteResponse {
                status: Some(ok()),
                message_queues,
            },
            Err(refusal) => QueryRouteResponse {
                status: Some(answered("QueryRoute", Err(refusal))),
                message_queues: Vec::new(),
            },
        }))
    }

    async fn query_assignment(
        &self,
        request: Request<QueryAssignmentRequest>,
    ) -> GrpcResult<QueryAssignmentResponse> {
        let routed = match caller(&request, &self.authentication) {
            Ok(caller) => {
                self.backend
                    .route(&caller, "QueryAssignment", request.get_ref().topic.as_ref())
                    .await
            }
            Err(refusal) => Err(refusal),
        };
        let group = request
            .get_ref()
            .group
            .as_ref()
            .map(|group| group.name.trim())
            .unwrap_or_default();
        Ok(Response::new(match routed {
            Ok(message_queues) => QueryAssignmentResponse {
                status: Some(ok()),
                assignments: assignments(message_queues, self.backend.group_policy(group).fifo),
            },
            Err(refusal) => QueryAssignmentResponse {
                status: Some(answered("QueryAssignment", Err(refusal))),
                assignments: Vec::new(),
            },
        }))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> GrpcResult<HeartbeatResponse> {
        let group = request
            .get_ref()
            .group
            .as_ref()
            .map(|group| group.name.trim())
            .filter(|group| !group.is_empty());
        let checked = caller(&request, &self.authentication).and_then(|caller| {
            if let Some(group) = group {
                self.authentication
                    .authorize(&caller, Permission::Group { group })?;
            }
            Ok(caller)
        });
        if let Ok(caller) = &checked {
            self.renewals
                .seen(&caller.client_id, tokio::time::Instant::now());
        }
        Ok(Response::new(HeartbeatResponse {
            status: Some(answered("Heartbeat", checked.map(drop))),
        }))
    }

    async fn notify_client_termination(
        &self,
        request: Request<NotifyClientTerminationRequest>,
    ) -> GrpcResult<NotifyClientTerminationResponse> {
        let checked = caller(&request, &self.authentication);
        if let Ok(caller) = &checked {
            self.renewals.forget_client(&caller.client_id);
        }
        Ok(Response::new(NotifyClientTerminationResponse {
            status: Some(answered("NotifyClientTermination", checked.map(drop))),
        }))
    }

    type TelemetryStream = ReceiverStream<Result<TelemetryCommand, tonic::Status>>;

    async fn telemetry(
        &self,
        request: Request<Streaming<TelemetryCommand>>,
    ) -> GrpcResult<Self::TelemetryStream> {
        let (replies, receiver) = mpsc::channel(TELEMETRY_QUEUE);
        match caller(&request, &self.authentication) {
            Ok(caller) => {
                let commands = request.into_inner();
                self.tasks.spawn(answer_telemetry(
                    Arc::clone(&self.backend),
                    Arc::clone(&self.producers),
                    caller.client_id,
                    commands,
                    replies,
                    self.stop.clone(),
                ));
            }
            Err(refusal) => {
                let reply = TelemetryCommand {
                    status: Some(answered("Telemetry", Err(refusal))),
                    command: None,
                };
                // The channel is new and has room; dropping `replies` then ends the stream.
                if replies.try_send(Ok(reply)).is_err() {
                    debug!("telemetry refusal could not be queued");
                }
            }
        }
        // Returning the stream now sends the response headers at once: the
        // Rust client's start() waits for them with no timeout.
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> GrpcResult<SendMessageResponse> {
        let checked = caller(&request, &self.authentication);
        let messages = request.into_inner().messages;
        let message_ids: Vec<String> = messages
            .iter()
            .map(|message| message_id(message).to_owned())
            .collect();
        let outcomes = match checked {
            Err(refusal) => vec![Err(refusal); messages.len().max(1)],
            Ok(_) if messages.is_empty() => vec![Err(Refusal::new(
                Code::BadRequest,
                "SendMessage carries no messages",
            ))],
            Ok(caller) => {
                let count = messages.len();
                // A producer whose settings did not list this topic still
                // gets its check-backs (the Rust client lists only the
                // topics its options name). Only transactional sends need
                // it, so other sends take no lock here.
                for message in &messages {
                    let transactional =
                        message
                            .system_properties
                            .as_ref()
                            .is_some_and(|properties| {
                                properties.message_type == MessageType::Transaction as i32
                            });
                    if let (true, Some(topic)) = (transactional, message.topic.as_ref()) {
                        self.producers.sent(&caller.client_id, topic.name.trim());
                    }
                }
                let mut outcomes = self.backend.send(&caller, messages).await;
                // A backend that answers for fewer messages than it got has a
                // bug; the client still gets one entry per message.
                outcomes.resize_with(count, || {
                    Err(Refusal::new(
                        Code::InternalError,
                        "no outcome for this message",
                    ))
                });
                outcomes
            }
        };
        let entries: Vec<SendResultEntry> = at_least_one(message_ids)
            .into_iter()
            .zip(outcomes)
            .map(|(message_id, outcome)| match outcome {
                Ok(receipt) => SendResultEntry {
                    status: Some(ok()),
                    message_id: receipt.message_id,
                    transaction_id: receipt.transaction_id,
                    offset: receipt.offset,
                    ..SendResultEntry::default()
                },
                Err(refusal) => SendResultEntry {
                    status: Some(answered("SendMessage", Err(refusal))),
                    message_id,
                    ..SendResultEntry::default()
                },
            })
            .collect();
        let statuses: Vec<Status> = entries
            .iter()
            .filter_map(|entry| entry.status.clone())
            .collect();
        Ok(Response::new(SendMessageResponse {
            status: Some(aggregate(&statuses)),
            entries,
        }))
    }

    type ReceiveMessageStream = Frames<ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        request: Request<ReceiveMessageRequest>,
    ) -> GrpcResult<Self::ReceiveMessageStream> {
        let received = match caller(&request, &self.authentication) {
            Ok(caller) => {
                self.renewals
                    .seen(&caller.client_id, tokio::time::Instant::now());
                let request = request.into_inner();
                let auto_renew = request.auto_renew.then(|| request.clone());
                let (group, topic) = (
                    request.group.clone(),
                    request
                        .message_queue
                        .as_ref()
                        .and_then(|queue| queue.topic.clone()),
                );
                match self.backend.receive(&caller, request).await {
                    Ok(messages) => {
                        let messages = self.deliverable(&caller, group, topic, messages).await;
                        if let Some(request) = auto_renew {
                            self.lease(&caller, &request, &messages);
                        }
                        Ok(messages)
                    }
                    Err(refusal) => Err(refusal),
                }
            }
            Err(refusal) => Err(refusal),
        };
        let frames = match received {
            Ok(messages) if messages.is_empty() => {
                vec![status_frame(status(
                    Code::MessageNotFound,
                    "no new message",
                ))]
            }
            // Status, the messages, then when they were handed out: the
            // Python PushConsumer computes its receive latency from that
            // last frame and fails every batch without it.
            Ok(messages) => std::iter::once(status_frame(ok()))
                .chain(messages.into_iter().map(|message| ReceiveMessageResponse {
                    content: Some(receive_message_response::Content::Message(message)),
                }))
                .chain(std::iter::once(ReceiveMessageResponse {
                    content: Some(receive_message_response::Content::DeliveryTimestamp(
                        meridian_proto::prost_types::Timestamp::from(std::time::SystemTime::now()),
                    )),
                }))
                .collect(),
            Err(refusal) => vec![status_frame(answered("ReceiveMessage", Err(refusal)))],
        };
        Ok(Response::new(tokio_stream::iter(
            frames.into_iter().map(Ok).collect::<Vec<_>>(),
        )))
    }

    async fn ack_message(
        &self,
        request: Request<AckMessageRequest>,
    ) -> GrpcResult<AckMessageResponse> {
        let checked = caller(&request, &self.authentication);
        let mut request = request.into_inner();
        let handles: Vec<(String, String)> = request
            .entries
            .iter()
            .map(|entry| (entry.message_id.clone(), entry.receipt_handle.clone()))
            .collect();
        let count = handles.len();
        let outcomes = match checked {
            Err(refusal) => Err(refusal),
            Ok(_) if count == 0 => Err(Refusal::new(
                Code::BadRequest,
                "AckMessage carries no entries",
            )),
            Ok(caller) => {
                let mut renewed: Vec<&mut String> = request
                    .entries
                    .iter_mut()
                    .map(|entry| &mut entry.receipt_handle)
                    .collect();
                let held = self.renewals.hold(&mut renewed).await;
                let outcomes = self.backend.ack(&caller, request).await;
                let codes: Vec<Result<(), Code>> = match &outcomes {
                    Ok(outcomes) => outcomes
                        .iter()
                        .map(|outcome| outcome.as_ref().map(drop).map_err(|refusal| refusal.code))
                        .collect(),
                    Err(refusal) => vec![Err(refusal.code); count],
                };
                held.settle(&self.renewals, &codes);
                outcomes
            }
        };
        let (overall, mut outcomes) = match outcomes {
            Ok(outcomes) => (None, outcomes),
            Err(refusal) => (Some(refusal.clone()), vec![Err(refusal); count.max(1)]),
        };
        outcomes.resize_with(count.max(1), || {
            Err(Refusal::new(
                Code::InternalError,
                "no outcome for this entry",
            ))
        });
        let entries: Vec<AckMessageResultEntry> = at_least_one(handles)
            .into_iter()
            .zip(outcomes)
            .map(
                |((message_id, receipt_handle), outcome)| AckMessageResultEntry {
                    message_id,
                    receipt_handle,
                    status: Some(answered("AckMessage", outcome)),
                },
            )
            .collect();
        let status = match overall {
            Some(refusal) => refusal.to_status(),
            None => {
                let statuses: Vec<Status> = entries
                    .iter()
                    .filter_map(|entry| entry.status.clone())
                    .collect();
                aggregate(&statuses)
            }
        };
        Ok(Response::new(AckMessageResponse {
            status: Some(status),
            entries,
        }))
    }

    async fn change_invisible_duration(
        &self,
        request: Request<ChangeInvisibleDurationRequest>,
    ) -> GrpcResult<ChangeInvisibleDurationResponse> {
        let checked = caller(&request, &self.authentication);
        let mut request = request.into_inner();
        let old_handle = request.receipt_handle.clone();
        let changed = match checked {
            Ok(caller) => {
                let held = self.renewals.hold(&mut [&mut request.receipt_handle]).await;
                if let Some(attempt) = held.attempt(0) {
                    // A push consumer's nack: the message comes back no
                    // sooner than the group's back-off says (the Node.js
                    // client 1.0.8 ignores the back-off in its settings
                    // and nacks with 0 s).
                    let group = request.group.as_ref().map(|group| group.name.trim());
                    let backoff = Duration::from_millis(
                        self.backend
                            .group_policy(group.unwrap_or_default())
                            .retry_delay_ms(attempt),
                    );
                    let asked = request
                        .invisible_duration
                        .as_ref()
                        .map_or(Duration::ZERO, std_duration);
                    if asked < backoff {
                        request.invisible_duration = Some(proto_duration(backoff));
                    }
                }
                let changed = self
                    .backend
                    .change_invisible_duration(&caller, request)
                    .await;
                held.settle(&self.renewals, &[outcome_code(&changed)]);
                changed
            }
            Err(refusal) => Err(refusal),
        };
        // Clients keep the returned handle even on failure: always return a usable one.
        Ok(Response::new(match changed {
            Ok(receipt_handle) => ChangeInvisibleDurationResponse {
                status: Some(ok()),
                receipt_handle,
            },
            Err(refusal) => ChangeInvisibleDurationResponse {
                status: Some(answered("ChangeInvisibleDuration", Err(refusal))),
                receipt_handle: old_handle,
            },
        }))
    }

    type PullMessageStream = Frames<PullMessageResponse>;

    async fn pull_message(
        &self,
        request: Request<PullMessageRequest>,
    ) -> GrpcResult<Self::PullMessageStream> {
        let frame = PullMessageResponse {
            content: Some(pull_message_response::Content::Status(
                self.unserved("PullMessage", &request),
            )),
        };
        Ok(Response::new(tokio_stream::iter(vec![Ok(frame)])))
    }

    async fn end_transaction(
        &self,
        request: Request<EndTransactionRequest>,
    ) -> GrpcResult<EndTransactionResponse> {
        let ended = match caller(&request, &self.authentication) {
            Ok(caller) => {
                let request = request.into_inner();
                if request.transaction_id.trim().is_empty() {
                    Err(Refusal::new(
                        Code::InvalidTransactionId,
                        "EndTransaction carries no transaction_id (the one SendMessage \
                         answered for the half message)",
                    ))
                } else {
                    self.backend.end_transaction(&caller, request).await
                }
            }
            Err(refusal) => Err(refusal),
        };
        Ok(Response::new(EndTransactionResponse {
            status: Some(answered("EndTransaction", ended)),
        }))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<ForwardMessageToDeadLetterQueueRequest>,
    ) -> GrpcResult<ForwardMessageToDeadLetterQueueResponse> {
        let forwarded = match caller(&request, &self.authentication) {
            Ok(caller) => {
                let mut request = request.into_inner();
                let held = self.renewals.hold(&mut [&mut request.receipt_handle]).await;
                let forwarded = self.backend.forward_to_dead_letter(&caller, request).await;
                held.settle(&self.renewals, &[outcome_code(&forwarded)]);
                forwarded
            }
            Err(refusal) => Err(refusal),
        };
        Ok(Response::new(ForwardMessageToDeadLetterQueueResponse {
            status: Some(answered("ForwardMessageToDeadLetterQueue", forwarded)),
        }))
    }

    async fn update_offset(
        &self,
        request: Request<UpdateOffsetRequest>,
    ) -> GrpcResult<UpdateOffsetResponse> {
        Ok(Response::new(UpdateOffsetResponse {
            status: Some(self.unserved("UpdateOffset", &request)),
        }))
    }

    async fn get_offset(
        &self,
        request: Request<GetOffsetRequest>,
    ) -> GrpcResult<GetOffsetResponse> {
        Ok(Response::new(GetOffsetResponse {
            status: Some(self.unserved("GetOffset", &request)),
            offset: 0,
        }))
    }

    async fn query_offset(
        &self,
        request: Request<QueryOffsetRequest>,
    ) -> GrpcResult<QueryOffsetResponse> {
        Ok(Response::new(QueryOffsetResponse {
            status: Some(self.unserved("QueryOffset", &request)),
            offset: 0,
        }))
    }

    async fn recall_message(
        &self,
        request: Request<RecallMessageRequest>,
    ) -> GrpcResult<RecallMessageResponse> {
        Ok(Response::new(RecallMessageResponse {
            status: Some(self.unserved("RecallMessage", &request)),
            message_id: String::new(),
        }))
    }

    async fn sync_lite_subscription(
        &self,
        request: Request<SyncLiteSubscriptionRequest>,
    ) -> GrpcResult<SyncLiteSubscriptionResponse> {
        Ok(Response::new(SyncLiteSubscriptionResponse {
            status: Some(self.unserved("SyncLiteSubscription", &request)),
        }))
    }
}

/// Answers one Telemetry stream: a settings reply for every `Settings` the
/// client sends, nothing for other commands. Ends when the client ends its
/// side or goes away, or when the server stops. The end of a stream says
/// nothing about the client's liveness (the Rust client drops streams to
/// broker endpoints right after first use), so no client state is touched.
async fn answer_telemetry<B: Backend>(
    backend: Arc<B>,
    producers: Arc<Producers>,
    client_id: String,
    mut commands: Streaming<TelemetryCommand>,
    replies: mpsc::Sender<Result<TelemetryCommand, tonic::Status>>,
    stop: CancellationToken,
) {
    let mut producer: Option<StreamId> = None;
    loop {
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = replies.closed() => break,
            next = commands.message() => next,
        };
        let command = match next {
            Ok(Some(command)) => command,
            Ok(None) => {
                debug!(client_id, "client ended its telemetry stream");
                break;
            }
            Err(status) => {
                debug!(client_id, %status, "telemetry stream from client failed");
                break;
            }
        };
        let Some(telemetry_command::Command::Settings(settings)) = command.command else {
            trace!(
                client_id,
                "ignoring a telemetry command other than settings"
            );
            continue;
        };
        debug!(client_id, "answering client settings");
        if let Some(settings::PubSub::Publishing(publishing)) = &settings.pub_sub {
            let topics = publishing
                .topics
                .iter()
                .map(|topic| topic.name.trim().to_owned());
            producer = Some(producers.publish(producer, &client_id, topics, &replies));
        }
        let reply = client_settings::reply(settings, |group| backend.group_policy(group));
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            sent = replies.send(Ok(reply)) => if sent.is_err() { break },
        }
    }
    if let Some(producer) = producer {
        producers.forget(producer);
    }
}
