//! The RocketMQ `MessagingService` as the router serves it.
//!
//! The router is an access point, not a broker: it answers QueryRoute and
//! QueryAssignment, keeps clients' sessions happy (Heartbeat, Telemetry
//! settings, NotifyClientTermination) and refuses everything else with
//! `NOT_IMPLEMENTED`, pointing clients at the node endpoints of the route.
//! Refusals keep the shapes clients rely on: one status frame on streams, one
//! entry per request item where responses carry entries.
//!
//! Every request must carry a non-blank `x-mq-client-id` header. Business
//! errors travel in the body status with gRPC OK; the codes are chosen in
//! [`RouterError::to_status`] only.
//!
//! Left out: forwarding EndTransaction, AckMessage and friends to the owning
//! node (the Rust client sends EndTransaction to the access point), and
//! pushing orphaned-transaction checks on the Telemetry stream.

use crate::error::RouterError;
use crate::route::Routes;
use meridian_proto::client_settings;
use meridian_proto::rocketmq::v2::messaging_service_server::MessagingService;
use meridian_proto::rocketmq::v2::{
    AckMessageRequest, AckMessageResponse, AckMessageResultEntry, Assignment,
    ChangeInvisibleDurationRequest, ChangeInvisibleDurationResponse, EndTransactionRequest,
    EndTransactionResponse, ForwardMessageToDeadLetterQueueRequest,
    ForwardMessageToDeadLetterQueueResponse, GetOffsetRequest, GetOffsetResponse, HeartbeatRequest,
    HeartbeatResponse, NotifyClientTerminationRequest, NotifyClientTerminationResponse,
    PullMessageRequest, PullMessageResponse, QueryAssignmentRequest, QueryAssignmentResponse,
    QueryOffsetRequest, QueryOffsetResponse, QueryRouteRequest, QueryRouteResponse,
    RecallMessageRequest, RecallMessageResponse, ReceiveMessageRequest, ReceiveMessageResponse,
    SendMessageRequest, SendMessageResponse, SendResultEntry, Status, SyncLiteSubscriptionRequest,
    SyncLiteSubscriptionResponse, TelemetryCommand, UpdateOffsetRequest, UpdateOffsetResponse,
    pull_message_response, receive_message_response, telemetry_command,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Streaming};
use tracing::{debug, trace};

/// The metadata header naming the client.
pub(crate) const CLIENT_ID_HEADER: &str = "x-mq-client-id";
/// Telemetry replies buffered per stream before the router waits for the client.
const TELEMETRY_QUEUE: usize = 8;

type GrpcResult<T> = Result<Response<T>, tonic::Status>;

/// The router's `MessagingService`.
pub(crate) struct RouterService {
    routes: Routes,
    /// Owns the per-stream Telemetry tasks.
    tasks: TaskTracker,
    /// Ends Telemetry streams when the router stops.
    stop: CancellationToken,
}

impl RouterService {
    pub(crate) fn new(routes: Routes, tasks: TaskTracker, stop: CancellationToken) -> Self {
        RouterService {
            routes,
            tasks,
            stop,
        }
    }
}

/// The client id of a request: its non-blank `x-mq-client-id` header.
fn client_id<T>(request: &Request<T>) -> Result<&str, RouterError> {
    request
        .metadata()
        .get(CLIENT_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .ok_or(RouterError::ClientIdRequired)
}

/// The body status of a request the router does not serve: CLIENT_ID_REQUIRED
/// without a client id, else NOT_IMPLEMENTED.
fn not_served<T>(rpc: &'static str, request: &Request<T>) -> Status {
    let error = match client_id(request) {
        Ok(_) => RouterError::NotImplemented { rpc },
        Err(error) => error,
    };
    answered_with_error(rpc, &error)
}

/// The body status of a request the router answers with OK once the client is known.
fn acknowledged<T>(rpc: &'static str, request: &Request<T>) -> Status {
    match client_id(request) {
        Ok(client_id) => {
            trace!(rpc, client_id, "acknowledged");
            client_settings::ok()
        }
        Err(error) => answered_with_error(rpc, &error),
    }
}

/// Logs a business error where it is handled and turns it into a body status.
fn answered_with_error(rpc: &'static str, error: &RouterError) -> Status {
    debug!(rpc, %error, "answering with an error status");
    error.to_status()
}

#[tonic::async_trait]
impl MessagingService for RouterService {
    async fn query_route(
        &self,
        request: Request<QueryRouteRequest>,
    ) -> GrpcResult<QueryRouteResponse> {
        const RPC: &str = "QueryRoute";
        let result = match client_id(&request) {
            Ok(_) => {
                self.routes
                    .resolve(RPC, request.get_ref().topic.as_ref())
                    .await
            }
            Err(error) => Err(error),
        };
        Ok(Response::new(match result {
            Ok(message_queues) => QueryRouteResponse {
                status: Some(client_settings::ok()),
                message_queues,
            },
            Err(error) => QueryRouteResponse {
                status: Some(answered_with_error(RPC, &error)),
                message_queues: Vec::new(),
            },
        }))
    }

    async fn query_assignment(
        &self,
        request: Request<QueryAssignmentRequest>,
    ) -> GrpcResult<QueryAssignmentResponse> {
        const RPC: &str = "QueryAssignment";
        let result = match client_id(&request) {
            Ok(_) => {
                self.routes
                    .resolve(RPC, request.get_ref().topic.as_ref())
                    .await
            }
            Err(error) => Err(error),
        };
        Ok(Response::new(match result {
            Ok(message_queues) => QueryAssignmentResponse {
                status: Some(client_settings::ok()),
                assignments: message_queues
                    .into_iter()
                    .map(|message_queue| Assignment {
                        message_queue: Some(message_queue),
                    })
                    .collect(),
            },
            Err(error) => QueryAssignmentResponse {
                status: Some(answered_with_error(RPC, &error)),
                assignments: Vec::new(),
            },
        }))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> GrpcResult<HeartbeatResponse> {
        Ok(Response::new(HeartbeatResponse {
            status: Some(acknowledged("Heartbeat", &request)),
        }))
    }

    async fn notify_client_termination(
        &self,
        request: Request<NotifyClientTerminationRequest>,
    ) -> GrpcResult<NotifyClientTerminationResponse> {
        Ok(Response::new(NotifyClientTerminationResponse {
            status: Some(acknowledged("NotifyClientTermination", &request)),
        }))
    }

    type TelemetryStream = ReceiverStream<Result<TelemetryCommand, tonic::Status>>;

    async fn telemetry(
        &self,
        request: Request<Streaming<TelemetryCommand>>,
    ) -> GrpcResult<Self::TelemetryStream> {
        let (replies, receiver) = mpsc::channel(TELEMETRY_QUEUE);
        match client_id(&request).map(str::to_owned) {
            Ok(client_id) => {
                let commands = request.into_inner();
                self.tasks.spawn(answer_telemetry(
                    client_id,
                    commands,
                    replies,
                    self.stop.clone(),
                ));
            }
            Err(error) => {
                let refusal = TelemetryCommand {
                    status: Some(answered_with_error("Telemetry", &error)),
                    command: None,
                };
                // The channel is new and has room; dropping `replies` then ends the stream.
                if replies.try_send(Ok(refusal)).is_err() {
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
        let status = not_served("SendMessage", &request);
        let message_ids: Vec<String> = request
            .get_ref()
            .messages
            .iter()
            .map(|message| {
                message
                    .system_properties
                    .as_ref()
                    .map(|properties| properties.message_id.clone())
                    .unwrap_or_default()
            })
            .collect();
        Ok(Response::new(SendMessageResponse {
            entries: at_least_one(message_ids)
                .into_iter()
                .map(|message_id| SendResultEntry {
                    status: Some(status.clone()),
                    message_id,
                    ..SendResultEntry::default()
                })
                .collect(),
            status: Some(status),
        }))
    }

    async fn ack_message(
        &self,
        request: Request<AckMessageRequest>,
    ) -> GrpcResult<AckMessageResponse> {
        let status = not_served("AckMessage", &request);
        let handles: Vec<(String, String)> = request
            .get_ref()
            .entries
            .iter()
            .map(|entry| (entry.message_id.clone(), entry.receipt_handle.clone()))
            .collect();
        Ok(Response::new(AckMessageResponse {
            entries: at_least_one(handles)
                .into_iter()
                .map(|(message_id, receipt_handle)| AckMessageResultEntry {
                    message_id,
                    receipt_handle,
                    status: Some(status.clone()),
                })
                .collect(),
            status: Some(status),
        }))
    }

    type ReceiveMessageStream = tokio_stream::Once<Result<ReceiveMessageResponse, tonic::Status>>;

    async fn receive_message(
        &self,
        request: Request<ReceiveMessageRequest>,
    ) -> GrpcResult<Self::ReceiveMessageStream> {
        let status = not_served("ReceiveMessage", &request);
        Ok(Response::new(tokio_stream::once(Ok(
            ReceiveMessageResponse {
                content: Some(receive_message_response::Content::Status(status)),
            },
        ))))
    }

    type PullMessageStream = tokio_stream::Once<Result<PullMessageResponse, tonic::Status>>;

    async fn pull_message(
        &self,
        request: Request<PullMessageRequest>,
    ) -> GrpcResult<Self::PullMessageStream> {
        let status = not_served("PullMessage", &request);
        Ok(Response::new(tokio_stream::once(Ok(PullMessageResponse {
            content: Some(pull_message_response::Content::Status(status)),
        }))))
    }

    async fn change_invisible_duration(
        &self,
        request: Request<ChangeInvisibleDurationRequest>,
    ) -> GrpcResult<ChangeInvisibleDurationResponse> {
        let status = not_served("ChangeInvisibleDuration", &request);
        // Python keeps the returned handle even on failure: give back a valid one.
        let receipt_handle = request.into_inner().receipt_handle;
        Ok(Response::new(ChangeInvisibleDurationResponse {
            status: Some(status),
            receipt_handle,
        }))
    }

    async fn end_transaction(
        &self,
        request: Request<EndTransactionRequest>,
    ) -> GrpcResult<EndTransactionResponse> {
        Ok(Response::new(EndTransactionResponse {
            status: Some(not_served("EndTransaction", &request)),
        }))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<ForwardMessageToDeadLetterQueueRequest>,
    ) -> GrpcResult<ForwardMessageToDeadLetterQueueResponse> {
        Ok(Response::new(ForwardMessageToDeadLetterQueueResponse {
            status: Some(not_served("ForwardMessageToDeadLetterQueue", &request)),
        }))
    }

    async fn update_offset(
        &self,
        request: Request<UpdateOffsetRequest>,
    ) -> GrpcResult<UpdateOffsetResponse> {
        Ok(Response::new(UpdateOffsetResponse {
            status: Some(not_served("UpdateOffset", &request)),
        }))
    }

    async fn get_offset(
        &self,
        request: Request<GetOffsetRequest>,
    ) -> GrpcResult<GetOffsetResponse> {
        Ok(Response::new(GetOffsetResponse {
            status: Some(not_served("GetOffset", &request)),
            offset: 0,
        }))
    }

    async fn query_offset(
        &self,
        request: Request<QueryOffsetRequest>,
    ) -> GrpcResult<QueryOffsetResponse> {
        Ok(Response::new(QueryOffsetResponse {
            status: Some(not_served("QueryOffset", &request)),
            offset: 0,
        }))
    }

    async fn recall_message(
        &self,
        request: Request<RecallMessageRequest>,
    ) -> GrpcResult<RecallMessageResponse> {
        Ok(Response::new(RecallMessageResponse {
            status: Some(not_served("RecallMessage", &request)),
            message_id: String::new(),
        }))
    }

    async fn sync_lite_subscription(
        &self,
        request: Request<SyncLiteSubscriptionRequest>,
    ) -> GrpcResult<SyncLiteSubscriptionResponse> {
        Ok(Response::new(SyncLiteSubscriptionResponse {
            status: Some(not_served("SyncLiteSubscription", &request)),
        }))
    }
}

/// `items`, or one default item when there are none: the Rust client indexes
/// the first entry of SendMessage and AckMessage responses without checking.
fn at_least_one<T: Default>(mut items: Vec<T>) -> Vec<T> {
    if items.is_empty() {
        items.push(T::default());
    }
    items
}

/// Answers one Telemetry stream: a settings reply for every `Settings` the
/// client sends, nothing for other commands. Ends when the client ends its
/// side or goes away, or when the router stops. The end of a stream says
/// nothing about the client's liveness (the Rust client drops streams to
/// broker endpoints right after first use), so no client state is touched.
async fn answer_telemetry(
    client_id: String,
    mut commands: Streaming<TelemetryCommand>,
    replies: mpsc::Sender<Result<TelemetryCommand, tonic::Status>>,
    stop: CancellationToken,
) {
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
        let reply = client_settings::reply(settings);
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            sent = replies.send(Ok(reply)) => if sent.is_err() { break },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::rocketmq::v2::Code;

    fn with_client_id<T>(message: T, client_id: &str) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            CLIENT_ID_HEADER,
            client_id.parse().expect("ascii header value"),
        );
        request
    }

    #[test]
    fn blank_client_ids_are_refused() {
        assert!(client_id(&Request::new(())).is_err());
        assert!(client_id(&with_client_id((), "   ")).is_err());
        assert_eq!(
            client_id(&with_client_id((), "host@1#2")).ok(),
            Some("host@1#2")
        );
    }

    #[test]
    fn unserved_requests_say_not_implemented_once_the_client_is_known() {
        let status = not_served("SendMessage", &with_client_id((), "c"));
        assert_eq!(status.code, Code::NotImplemented as i32);
        assert!(
            status
                .message
                .contains("node endpoints returned by QueryRoute")
        );
        let status = not_served("SendMessage", &Request::new(()));
        assert_eq!(status.code, Code::ClientIdRequired as i32);
    }

    #[test]
    fn empty_entry_lists_get_one_entry() {
        assert_eq!(at_least_one(Vec::<String>::new()), vec![String::new()]);
        assert_eq!(at_least_one(vec![1, 2]), vec![1, 2]);
    }
}
