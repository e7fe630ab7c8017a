//! What the session does for each client frame and each delivered batch.

use super::connection::{Connection, FLUSH_AT_BYTES};
use super::subscription::{
    self, AckMode, Pending, Received, Spec, Subscription, handle_of, release_request,
};
use super::transaction::{Action, Transaction};
use super::{Event, Session};
use crate::convert::{self, Delivery, Origin};
use crate::destination::{self, Destination, Kind};
use crate::error::SessionError;
use crate::frame::{Command, Frame};
use meridian_face::Backend;
use meridian_proto::rocketmq::v2::{
    AckMessageEntry, AckMessageRequest, FilterExpression, FilterType, Message, MessageQueue,
    Permission, Resource,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// How long a topic's queues are reused for SENDs.
const ROUTE_TTL: Duration = Duration::from_secs(5);
/// Most topics whose queues one session remembers.
const ROUTES_MAX: usize = 64;
/// Most messages of a COMMIT sent in one request.
const COMMIT_SEND_BATCH: usize = 64;
/// Default and bounds of a SUBSCRIBE's `ack-timeout`, in ms (RocketMQ's
/// invisible durations: 1 s to 12 h).
const ACK_TIMEOUT_DEFAULT_MS: u64 = 300_000;
const ACK_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 1_000..=43_200_000;

/// The queues SENDs to a topic take turns in.
struct Route {
    queue_ids: Vec<i32>,
    next: usize,
    fetched: Instant,
}

/// Each topic's queues, as the backend's route answered a few seconds ago.
#[derive(Default)]
pub(super) struct Routes(HashMap<String, Route>);

fn required<'a>(frame: &'a Frame, header: &'static str) -> Result<&'a str, SessionError> {
    frame.header(header).ok_or(SessionError::MissingHeader {
        command: frame.command,
        header,
    })
}

fn invalid(frame: &Frame, header: &'static str, expected: impl Into<String>) -> SessionError {
    SessionError::InvalidHeader {
        command: frame.command,
        header,
        value: frame
            .header(header)
            .unwrap_or_default()
            .chars()
            .take(80)
            .collect(),
        expected: expected.into(),
    }
}

fn number(text: &str) -> Option<u64> {
    let text = text.trim();
    (!text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

fn resource(name: String) -> Resource {
    Resource {
        resource_namespace: String::new(),
        name,
    }
}

impl Session {
    fn destination(&self, frame: &Frame) -> Result<(Destination, String), SessionError> {
        let text = required(frame, "destination")?;
        let destination =
            Destination::parse(text).map_err(|reason| SessionError::BadDestination {
                command: frame.command,
                destination: text.chars().take(80).collect(),
                reason,
            })?;
        let topic = destination::in_namespace(self.namespace.as_deref(), &destination.name);
        Ok((destination, topic))
    }

    fn transaction(&mut self, frame: &Frame, name: &str) -> Result<&mut Transaction, SessionError> {
        self.transactions
            .get_mut(name)
            .ok_or_else(|| SessionError::UnknownTransaction {
                command: frame.command,
                transaction: name.chars().take(80).collect(),
            })
    }

    pub(super) async fn on_send(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let transaction = frame.header("transaction");
        if let Some(name) = transaction {
            self.transaction(frame, name)?;
        }
        let (_, topic) = self.destination(frame)?;
        let topic = resource(topic);
        let queue_id = self.next_queue(&topic).await?;
        let born_host = self.peer.to_string();
        let message = convert::message_from_send(
            frame,
            Origin {
                topic,
                queue_id,
                born_host: &born_host,
                now: SystemTime::now(),
            },
        )?;
        match transaction {
            Some(name) => {
                let shared = Arc::clone(&self.shared);
                let limits = &shared.config.limits;
                self.transaction(frame, name)?.push(
                    name,
                    frame.command,
                    Action::Send(Box::new(message)),
                    limits,
                )
            }
            None => self.send(vec![message]).await,
        }
    }

    /// Stores `messages`; the first refusal ends the session.
    async fn send(&mut self, messages: Vec<Message>) -> Result<(), SessionError> {
        let topics: Vec<String> = messages
            .iter()
            .map(|message| {
                message
                    .topic
                    .as_ref()
                    .map(|topic| topic.name.clone())
                    .unwrap_or_default()
            })
            .collect();
        let outcomes = self.shared.backend.send(&self.caller, messages).await;
        for (outcome, topic) in outcomes.into_iter().zip(topics) {
            if let Err(refusal) = outcome {
                return Err(SessionError::Refused {
                    action: format!("SEND to topic {topic}"),
                    refusal,
                });
            }
        }
        Ok(())
    }

    /// The queue of `topic` the next SEND goes to: round robin over the
    /// writable queues the backend's route names.
    async fn next_queue(&mut self, topic: &Resource) -> Result<i32, SessionError> {
        let now = Instant::now();
        if let Some(route) = self
            .routes
            .0
            .get_mut(&topic.name)
            .filter(|route| now.duration_since(route.fetched) < ROUTE_TTL)
        {
            route.next = route.next.wrapping_add(1);
            return Ok(route.queue_ids[route.next % route.queue_ids.len()]);
        }
        let queues = self
            .shared
            .backend
            .route(&self.caller, "SendMessage", Some(topic))
            .await
            .map_err(|refusal| SessionError::Refused {
                action: format!("SEND to topic {}", topic.name),
                refusal,
            })?;
        let queue_ids = writable_queues(&queues);
        let routes = &mut self.routes.0;
        if routes.len() >= ROUTES_MAX {
            routes.retain(|_, route| now.duration_since(route.fetched) < ROUTE_TTL);
            if routes.len() >= ROUTES_MAX {
                routes.clear();
            }
        }
        // Sessions start at different queues.
        let next = self
            .id
            .get(self.id.len().saturating_sub(4)..)
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
            .unwrap_or(0);
        let queue_id = queue_ids[next % queue_ids.len()];
        routes.insert(
            topic.name.clone(),
            Route {
                queue_ids,
                next,
                fetched: now,
            },
        );
        Ok(queue_id)
    }

    pub(super) async fn on_subscribe(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let id = required(frame, "id")?;
        if id.is_empty() {
            return Err(invalid(frame, "id", "a non-empty subscription id"));
        }
        if self.subscriptions.contains_key(id) {
            return Err(SessionError::DuplicateSubscription {
                id: id.chars().take(80).collect(),
            });
        }
        let limits = &self.shared.config.limits;
        if self.subscriptions.len() >= limits.max_subscriptions {
            return Err(SessionError::TooManySubscriptions {
                limit: limits.max_subscriptions,
            });
        }
        let (destination, topic) = self.destination(frame)?;
        let ack = AckMode::parse(frame.header("ack"))
            .ok_or_else(|| invalid(frame, "ack", "auto, client or client-individual"))?;
        let prefetch = match frame.header("prefetch-count") {
            None => limits.default_prefetch,
            Some(text) => number(text)
                .and_then(|count| u32::try_from(count).ok())
                .filter(|count| (1..=limits.max_prefetch).contains(count))
                .ok_or_else(|| {
                    invalid(
                        frame,
                        "prefetch-count",
                        format!("a number from 1 to {}", limits.max_prefetch),
                    )
                })?,
        };
        let ack_timeout_ms = match frame.header("ack-timeout") {
            None => ACK_TIMEOUT_DEFAULT_MS,
            Some(text) => number(text)
                .filter(|millis| ACK_TIMEOUT_MS.contains(millis))
                .ok_or_else(|| {
                    invalid(
                        frame,
                        "ack-timeout",
                        "milliseconds from 1000 to 43200000 (12 hours)",
                    )
                })?,
        };
        let filter = match (frame.header("selector"), frame.header("tag")) {
            (Some(expression), _) | (None, Some(expression)) => {
                let from_selector = frame.header("selector").is_some();
                if expression.trim().is_empty() {
                    let header = if from_selector { "selector" } else { "tag" };
                    return Err(invalid(
                        frame,
                        header,
                        "a tag expression such as TagA||TagB or *, or (as a selector) an \
                         SQL92 expression over properties such as amount > 10",
                    ));
                }
                // A selector that is not a tag expression is SQL92 (JMS
                // selectors are); the node parses it and refuses a bad one.
                let sql = from_selector && !is_tag_expression(expression);
                Some(FilterExpression {
                    r#type: if sql {
                        FilterType::Sql
                    } else {
                        FilterType::Tag
                    } as i32,
                    expression: expression.trim().to_owned(),
                })
            }
            (None, None) => None,
        };
        let (group, own_consumer) = match frame.header("consumer-group") {
            Some(group) => {
                destination::check_group(group).map_err(|reason| {
                    invalid(
                        frame,
                        "consumer-group",
                        format!("a consumer group name: {reason}"),
                    )
                })?;
                (group.to_owned(), false)
            }
            None => (destination.default_group(), destination.kind == Kind::Topic),
        };
        let group = destination::in_namespace(self.namespace.as_deref(), &group);
        self.last_serial += 1;
        let serial = self.last_serial;
        let mut caller = self.caller.clone();
        if own_consumer {
            caller.subscription = Some(format!("{}-{serial}", self.id));
        }
        let topic = resource(topic);
        let spec = Spec {
            serial,
            id: id.to_owned(),
            destination: required(frame, "destination")?.to_owned(),
            topic,
            group: resource(group),
            caller,
            ack,
            filter,
            ack_timeout: Duration::from_millis(ack_timeout_ms),
        };
        tracing::debug!(
            subscription = %spec.id,
            topic = %spec.topic.name,
            group = %spec.group.name,
            own_consumer,
            ?ack,
            prefetch,
            "STOMP subscription started"
        );
        let action = format!("SUBSCRIBE to topic {}", spec.topic.name);
        let (subscription, first_receive) = Subscription::start(
            spec,
            prefetch,
            Arc::clone(&self.shared.backend),
            self.events.clone(),
        );
        // The task ended without a word only if it panicked; its batches
        // (none) and refusals (none) tell the rest.
        if let Ok(Err(refusal)) = first_receive.await {
            return Err(SessionError::Refused { action, refusal });
        }
        self.subscriptions.insert(id.to_owned(), subscription);
        Ok(())
    }

    pub(super) async fn on_unsubscribe(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let id = required(frame, "id")?;
        let subscription =
            self.subscriptions
                .remove(id)
                .ok_or_else(|| SessionError::UnknownSubscription {
                    id: id.chars().take(80).collect(),
                })?;
        subscription.stop(self.shared.backend.as_ref()).await;
        tracing::debug!(subscription = %id, "STOMP subscription ended");
        Ok(())
    }

    /// The subscription holding unacknowledged message `id`, if any.
    fn holder(&self, id: &str) -> Option<(&String, u64)> {
        let number = number(id)?;
        self.subscriptions
            .iter()
            .find(|(_, subscription)| subscription.pending.contains_key(&number))
            .map(|(name, _)| (name, number))
    }

    pub(super) async fn on_settle(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let id = required(frame, "id")?;
        if self.holder(id).is_none() {
            return Err(SessionError::UnknownMessage {
                command: frame.command,
                id: id.chars().take(80).collect(),
            });
        }
        match frame.header("transaction") {
            Some(name) => {
                let shared = Arc::clone(&self.shared);
                let limits = &shared.config.limits;
                let action = Action::Settle {
                    command: frame.command,
                    id: id.to_owned(),
                };
                self.transaction(frame, name)?
                    .push(name, frame.command, action, limits)
            }
            None => self.settle(frame.command, id).await,
        }
    }

    /// Applies an ACK or NACK of message `id`: ACK in `client` mode settles
    /// every earlier message of the subscription too; NACK only `id`.
    async fn settle(&mut self, command: Command, id: &str) -> Result<(), SessionError> {
        let unknown = || SessionError::UnknownMessage {
            command,
            id: id.chars().take(80).collect(),
        };
        let (name, number) = self.holder(id).ok_or_else(unknown)?;
        let name = name.clone();
        let subscription = self.subscriptions.get_mut(&name).ok_or_else(unknown)?;
        let spec = Arc::clone(&subscription.spec);
        let settled: Vec<Pending> = if command == Command::Ack && spec.ack == AckMode::Client {
            let later = subscription.pending.split_off(&(number + 1));
            std::mem::replace(&mut subscription.pending, later)
                .into_values()
                .collect()
        } else {
            subscription.pending.remove(&number).into_iter().collect()
        };
        let backend = self.shared.backend.as_ref();
        if command == Command::Nack {
            for pending in settled {
                let request = release_request(&spec, pending.message_id, pending.receipt_handle);
                backend
                    .change_invisible_duration(&spec.caller, request)
                    .await
                    .map_err(|refusal| SessionError::Refused {
                        action: format!("NACK of message {id} of topic {}", spec.topic.name),
                        refusal,
                    })?;
            }
            return Ok(());
        }
        let entries = settled
            .iter()
            .map(|pending| AckMessageEntry {
                message_id: pending.message_id.clone(),
                receipt_handle: pending.receipt_handle.clone(),
                lite_topic: None,
            })
            .collect();
        let outcomes = backend
            .ack(&spec.caller, ack_request(&spec, entries))
            .await
            .and_then(|outcomes| {
                outcomes
                    .into_iter()
                    .find_map(Result::err)
                    .map_or(Ok(()), Err)
            });
        outcomes.map_err(|refusal| SessionError::Refused {
            action: format!("ACK of message {id} of topic {}", spec.topic.name),
            refusal,
        })
    }

    pub(super) fn on_begin(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let name = required(frame, "transaction")?;
        if self.transactions.contains_key(name) {
            return Err(SessionError::DuplicateTransaction {
                transaction: name.chars().take(80).collect(),
            });
        }
        let limit = self.shared.config.limits.max_transactions;
        if self.transactions.len() >= limit {
            return Err(SessionError::TooManyTransactions { limit });
        }
        self.transactions
            .insert(name.to_owned(), Transaction::default());
        Ok(())
    }

    pub(super) fn on_abort(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let name = required(frame, "transaction")?;
        self.transaction(frame, name)?;
        self.transactions.remove(name);
        Ok(())
    }

    /// Applies a transaction's frames in order (runs of SENDs together).
    pub(super) async fn on_commit(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let name = required(frame, "transaction")?;
        self.transaction(frame, name)?;
        let transaction = self.transactions.remove(name).unwrap_or_default();
        let mut sends = Vec::new();
        for action in transaction.actions {
            match action {
                Action::Send(message) => {
                    sends.push(*message);
                    if sends.len() >= COMMIT_SEND_BATCH {
                        self.send(std::mem::take(&mut sends)).await?;
                    }
                }
                Action::Settle { command, id } => {
                    if !sends.is_empty() {
                        self.send(std::mem::take(&mut sends)).await?;
                    }
                    self.settle(command, &id).await?;
                }
            }
        }
        if !sends.is_empty() {
            self.send(sends).await?;
        }
        Ok(())
    }

    /// Handles what a receive task handed over.
    pub(super) async fn on_event(
        &mut self,
        event: Event,
        connection: &mut Connection,
    ) -> Result<(), SessionError> {
        let current = |session: &Session, spec: &Spec| {
            session
                .subscriptions
                .get(&spec.id)
                .is_some_and(|subscription| subscription.spec.serial == spec.serial)
        };
        match event {
            Event::Refused { spec, refusal } => {
                if current(self, &spec) {
                    return Err(SessionError::Refused {
                        action: format!(
                            "receive from topic {} for group {}",
                            spec.topic.name, spec.group.name
                        ),
                        refusal,
                    });
                }
                Ok(())
            }
            Event::Delivered { spec, messages } => {
                if current(self, &spec) {
                    self.deliver(&spec, messages, connection).await
                } else {
                    release_stale(self.shared.backend.as_ref(), &spec, messages).await;
                    Ok(())
                }
            }
        }
    }

    /// Writes MESSAGE frames; in `auto` mode acknowledges them once written,
    /// otherwise keeps them until ACK or NACK.
    async fn deliver(
        &mut self,
        spec: &Arc<Spec>,
        messages: Vec<Received>,
        connection: &mut Connection,
    ) -> Result<(), SessionError> {
        let mut written = Vec::new();
        for Received { message, credit } in messages {
            self.last_message += 1;
            let number = self.last_message;
            let message_id = number.to_string();
            let frame = convert::message_frame(
                &message,
                Delivery {
                    destination: &spec.destination,
                    subscription: &spec.id,
                    message_id: &message_id,
                },
            );
            connection.writer.queue(&frame);
            let handle = handle_of(&message);
            if handle.is_none() {
                tracing::warn!(
                    topic = %spec.topic.name,
                    "a received message has no receipt handle; it cannot be acknowledged"
                );
            }
            match (spec.ack, handle) {
                (AckMode::Auto, Some((message_id, receipt_handle))) => {
                    written.push((
                        AckMessageEntry {
                            message_id,
                            receipt_handle,
                            lite_topic: None,
                        },
                        credit,
                    ));
                }
                (
                    AckMode::Client | AckMode::ClientIndividual,
                    Some((message_id, receipt_handle)),
                ) => {
                    if let Some(subscription) = self.subscriptions.get_mut(&spec.id) {
                        subscription.pending.insert(
                            number,
                            Pending {
                                message_id,
                                receipt_handle,
                                _credit: credit,
                            },
                        );
                    }
                }
                (_, None) => {}
            }
            if connection.writer.buffered_bytes() >= FLUSH_AT_BYTES {
                connection.writer.flush().await?;
            }
        }
        connection.writer.flush().await?;
        if !written.is_empty() {
            let (entries, _credits): (Vec<_>, Vec<_>) = written.into_iter().unzip();
            acknowledge_written(self.shared.backend.as_ref(), spec, entries).await;
        }
        Ok(())
    }
}

fn ack_request(spec: &Spec, entries: Vec<AckMessageEntry>) -> AckMessageRequest {
    AckMessageRequest {
        group: Some(spec.group.clone()),
        topic: Some(spec.topic.clone()),
        entries,
    }
}

/// Acknowledges messages written in `auto` mode; failures are logged (the
/// messages come back after their ack timeout).
async fn acknowledge_written(backend: &dyn Backend, spec: &Spec, entries: Vec<AckMessageEntry>) {
    let count = entries.len();
    let failure = match backend.ack(&spec.caller, ack_request(spec, entries)).await {
        Ok(outcomes) => outcomes.into_iter().find_map(Result::err),
        Err(refusal) => Some(refusal),
    };
    if let Some(refusal) = failure {
        tracing::warn!(
            error = %refusal,
            count,
            topic = %spec.topic.name,
            group = %spec.group.name,
            "could not acknowledge messages delivered in STOMP auto ack mode; they will be \
             delivered again after their ack timeout"
        );
    }
}

/// Releases a batch of a subscription that ended before it was delivered
/// (a consumer of its own was dropped with its messages).
pub(super) async fn release_stale(backend: &dyn Backend, spec: &Spec, messages: Vec<Received>) {
    if spec.own_consumer() {
        return;
    }
    let held = messages
        .iter()
        .filter_map(|received| handle_of(&received.message))
        .collect();
    subscription::release(backend, spec, held).await;
}

/// The queue ids a route lets SENDs use (all of them if it marks none
/// writable, queue 0 if it names none).
fn writable_queues(queues: &[MessageQueue]) -> Vec<i32> {
    let writable: Vec<i32> = queues
        .iter()
        .filter(|queue| {
            matches!(
                queue.permission(),
                Permission::Write | Permission::ReadWrite
            )
        })
        .map(|queue| queue.id)
        .collect();
    if !writable.is_empty() {
        return writable;
    }
    let all: Vec<i32> = queues.iter().map(|queue| queue.id).collect();
    if all.is_empty() { vec![0] } else { all }
}

/// Whether `expression` is a tag expression: `*`, or tags separated by
/// `||`, none empty, none with spaces or SQL operators.
fn is_tag_expression(expression: &str) -> bool {
    let expression = expression.trim();
    expression == "*"
        || expression.split("||").all(|tag| {
            let tag = tag.trim();
            !tag.is_empty()
                && !tag.contains(|c: char| {
                    c.is_whitespace() || matches!(c, '=' | '<' | '>' | '(' | ')' | '\'' | '!')
                })
        })
}
