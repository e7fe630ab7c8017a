//! A subscription: what it consumes, the task that receives for it, and
//! the messages it delivered that wait for an acknowledgement.
//!
//! Flow control is a semaphore of `prefetch-count` credits per
//! subscription: the receive task takes credits before it receives (at
//! most one receive batch), each delivered message carries one until it is
//! settled (acknowledged, NACKed, released, or written in `auto` mode), and
//! credits the backend did not use go back at once. So a subscription never
//! holds more unacknowledged messages than its prefetch count, and a client
//! that stops acknowledging stops the receives instead of piling up
//! messages.
//!
//! The first receive does not wait (long polling 0 s), and the SUBSCRIBE
//! is answered after it: so a RECEIPT means the subscription exists on the
//! backend (a `/topic/` consumer of its own starts at the end of the topic
//! as of then), and a refusal (unknown topic, invalid group) is the answer
//! to the SUBSCRIBE itself.
//!
//! The task stops when its cancellation token fires (dropping an
//! outstanding long poll) and hands back a batch it received but could not
//! pass on, so that the session releases it.

use super::Event;
use meridian_face::{Backend, Caller, Refusal};
use meridian_proto::prost_types;
use meridian_proto::rocketmq::v2::{
    ChangeInvisibleDurationRequest, FilterExpression, Message, MessageQueue, ReceiveMessageRequest,
    Resource,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Most messages asked for in one receive.
const MAX_BATCH: usize = 32;
/// Long polling time of a receive (the node's cap).
const LONG_POLL: Duration = Duration::from_secs(20);
/// Shortest time between two receives that found nothing (in case a
/// backend answers at once instead of long polling).
const MIN_EMPTY_POLL: Duration = Duration::from_millis(200);
/// Releases of one ending subscription in flight at once.
const RELEASES_IN_FLIGHT: usize = 16;

/// How the client settles messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckMode {
    /// Settled when written.
    Auto,
    /// An ACK settles its message and every earlier one of the subscription.
    Client,
    /// An ACK settles only its message.
    ClientIndividual,
}

impl AckMode {
    pub(crate) fn parse(text: Option<&str>) -> Option<AckMode> {
        match text {
            None | Some("auto") => Some(AckMode::Auto),
            Some("client") => Some(AckMode::Client),
            Some("client-individual") => Some(AckMode::ClientIndividual),
            Some(_) => None,
        }
    }
}

/// What a subscription consumes and how; shared by the session and the
/// subscription's task.
#[derive(Debug)]
pub(crate) struct Spec {
    /// Unique on the connection, unlike the client's id (which it may reuse
    /// after UNSUBSCRIBE).
    pub(crate) serial: u64,
    /// The SUBSCRIBE's `id`.
    pub(crate) id: String,
    /// The SUBSCRIBE's `destination`, as written.
    pub(crate) destination: String,
    pub(crate) topic: Resource,
    pub(crate) group: Resource,
    /// The session's caller; for a consumer of its own (a `/topic/`
    /// subscription) with [`Caller::subscription`] set.
    pub(crate) caller: Caller,
    pub(crate) ack: AckMode,
    pub(crate) filter: Option<FilterExpression>,
    /// How long a delivered message stays invisible to other consumers.
    pub(crate) ack_timeout: Duration,
}

impl Spec {
    /// Whether the subscription is a consumer of its own, dropped by
    /// `end_subscription` instead of releasing its messages.
    pub(crate) fn own_consumer(&self) -> bool {
        self.caller.subscription.is_some()
    }

    fn receive_request(&self, batch: usize, long_poll: Duration) -> ReceiveMessageRequest {
        ReceiveMessageRequest {
            group: Some(self.group.clone()),
            message_queue: Some(MessageQueue {
                topic: Some(self.topic.clone()),
                ..MessageQueue::default()
            }),
            filter_expression: self.filter.clone(),
            batch_size: i32::try_from(batch).unwrap_or(i32::MAX),
            invisible_duration: Some(duration(self.ack_timeout)),
            auto_renew: false,
            long_polling_timeout: Some(duration(long_poll)),
            attempt_id: None,
        }
    }
}

fn duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

/// A received message and the credit it holds until settled.
pub(crate) struct Received {
    pub(crate) message: Message,
    pub(crate) credit: Option<OwnedSemaphorePermit>,
}

/// A delivered message waiting for ACK or NACK.
pub(crate) struct Pending {
    pub(crate) message_id: String,
    pub(crate) receipt_handle: String,
    /// Held until the message is settled.
    pub(crate) _credit: Option<OwnedSemaphorePermit>,
}

/// An open subscription of the session.
pub(crate) struct Subscription {
    pub(crate) spec: Arc<Spec>,
    cancel: CancellationToken,
    task: Task,
    /// By the message's number on the connection (its `message-id`), so
    /// the earlier messages of a cumulative ACK are a range.
    pub(crate) pending: BTreeMap<u64, Pending>,
}

/// The receive task; aborted if dropped without [`Subscription::stop`].
struct Task(JoinHandle<Vec<Message>>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Subscription {
    /// Starts receiving for `spec` with `prefetch` credits; deliveries go
    /// to `events`. The receiver learns how the first receive went.
    pub(crate) fn start(
        spec: Spec,
        prefetch: u32,
        backend: Arc<dyn Backend>,
        events: mpsc::Sender<Event>,
    ) -> (Subscription, oneshot::Receiver<Result<(), Refusal>>) {
        let (started, first_receive) = oneshot::channel();
        let spec = Arc::new(spec);
        let cancel = CancellationToken::new();
        let credit = Arc::new(Semaphore::new(
            usize::try_from(prefetch).unwrap_or(MAX_BATCH),
        ));
        let task = tokio::spawn(receive_loop(
            Arc::clone(&spec),
            backend,
            credit,
            events,
            cancel.clone(),
            started,
        ));
        let subscription = Subscription {
            spec,
            cancel,
            task: Task(task),
            pending: BTreeMap::new(),
        };
        (subscription, first_receive)
    }

    /// Stops the receive task and ends the subscription on the backend:
    /// drops a consumer of its own, or makes the messages it holds (waiting
    /// for acknowledgement, or received and not delivered) visible again at
    /// once.
    pub(crate) async fn stop(mut self, backend: &dyn Backend) {
        self.cancel.cancel();
        let undelivered = match (&mut self.task.0).await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(error = %error, subscription = %self.spec.id, "a STOMP receive task failed");
                Vec::new()
            }
        };
        if self.spec.own_consumer() {
            if let Err(refusal) = backend
                .end_subscription(&self.spec.caller, &self.spec.group, &self.spec.topic)
                .await
            {
                tracing::warn!(
                    error = %refusal,
                    subscription = %self.spec.id,
                    topic = %self.spec.topic.name,
                    "could not end a STOMP topic subscription (the node drops it after a day)"
                );
            }
            return;
        }
        let mut held: Vec<(String, String)> = std::mem::take(&mut self.pending)
            .into_values()
            .map(|pending| (pending.message_id, pending.receipt_handle))
            .collect();
        held.extend(undelivered.iter().filter_map(handle_of));
        release(backend, &self.spec, held).await;
    }
}

/// The message id and receipt handle of a received message, if it has one.
pub(crate) fn handle_of(message: &Message) -> Option<(String, String)> {
    let properties = message.system_properties.as_ref()?;
    let handle = properties.receipt_handle.clone()?;
    Some((properties.message_id.clone(), handle))
}

/// Makes messages of `spec`'s group visible again at once (a NACK, or the
/// end of a subscription that held them). Failures are logged: the
/// messages come back anyway when their invisible time ends.
pub(crate) async fn release(backend: &dyn Backend, spec: &Spec, held: Vec<(String, String)>) {
    use futures::StreamExt as _;
    let count = held.len();
    let failures = futures::stream::iter(held)
        .map(|(message_id, receipt_handle)| async move {
            backend
                .change_invisible_duration(
                    &spec.caller,
                    release_request(spec, message_id, receipt_handle),
                )
                .await
                .err()
        })
        .buffer_unordered(RELEASES_IN_FLIGHT)
        .filter_map(|failure| async move { failure })
        .collect::<Vec<_>>()
        .await;
    if let Some(first) = failures.first() {
        tracing::warn!(
            error = %first,
            failed = failures.len(),
            released = count,
            topic = %spec.topic.name,
            group = %spec.group.name,
            "could not release messages of a STOMP subscription (they return after their ack timeout)"
        );
    }
}

/// ChangeInvisibleDuration 0 for one delivery of `spec`.
pub(crate) fn release_request(
    spec: &Spec,
    message_id: String,
    receipt_handle: String,
) -> ChangeInvisibleDurationRequest {
    ChangeInvisibleDurationRequest {
        group: Some(spec.group.clone()),
        topic: Some(spec.topic.clone()),
        receipt_handle,
        invisible_duration: Some(duration(Duration::ZERO)),
        message_id,
        lite_topic: None,
        suspend: None,
    }
}

/// Credits for the next receive: waits for one, takes up to a batch.
async fn take_credit(
    credit: &Arc<Semaphore>,
    cancel: &CancellationToken,
) -> Option<Vec<OwnedSemaphorePermit>> {
    let first = tokio::select! {
        biased;
        () = cancel.cancelled() => return None,
        permit = Arc::clone(credit).acquire_owned() => permit.ok()?,
    };
    let mut permits = vec![first];
    while permits.len() < MAX_BATCH {
        match Arc::clone(credit).try_acquire_owned() {
            Ok(permit) => permits.push(permit),
            Err(_) => break,
        }
    }
    Some(permits)
}

/// Receives for `spec` until cancelled or refused; returns a batch it
/// received but could not hand over. `started` hears how the first receive
/// went (a refusal of it ends the task without an event).
async fn receive_loop(
    spec: Arc<Spec>,
    backend: Arc<dyn Backend>,
    credit: Arc<Semaphore>,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
    started: oneshot::Sender<Result<(), Refusal>>,
) -> Vec<Message> {
    let mut started = Some(started);
    loop {
        let Some(mut permits) = take_credit(&credit, &cancel).await else {
            return Vec::new();
        };
        let long_poll = if started.is_some() {
            Duration::ZERO
        } else {
            LONG_POLL
        };
        let request = spec.receive_request(permits.len(), long_poll);
        let asked = tokio::time::Instant::now();
        let received = tokio::select! {
            biased;
            () = cancel.cancelled() => return Vec::new(),
            received = backend.receive(&spec.caller, request) => received,
        };
        if let Some(started) = started.take() {
            let refused = received.as_ref().err().cloned();
            let _ = started.send(refused.map_or(Ok(()), Err));
            if received.is_err() {
                return Vec::new();
            }
        }
        let event = match received {
            Ok(messages) if messages.is_empty() => {
                drop(permits);
                if long_poll.is_zero() {
                    continue;
                }
                let again = asked + MIN_EMPTY_POLL;
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Vec::new(),
                    () = tokio::time::sleep_until(again) => {}
                }
                continue;
            }
            Ok(messages) => {
                // Credits the backend did not use go back now.
                permits.truncate(messages.len());
                let mut permits = permits.into_iter();
                Event::Delivered {
                    spec: Arc::clone(&spec),
                    messages: messages
                        .into_iter()
                        .map(|message| Received {
                            message,
                            credit: permits.next(),
                        })
                        .collect(),
                }
            }
            Err(refusal) => Event::Refused {
                spec: Arc::clone(&spec),
                refusal,
            },
        };
        let refused = matches!(event, Event::Refused { .. });
        let slot = tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            slot = events.reserve() => slot.ok(),
        };
        match slot {
            Some(slot) => slot.send(event),
            None => return event.into_messages(),
        }
        if refused {
            return Vec::new();
        }
    }
}
