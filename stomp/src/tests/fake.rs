//! An in-memory [`Backend`]: topics as vectors of messages, consumers
//! (groups, or `group@subscription` for consumers of their own) as a cursor,
//! deliveries in flight by receipt handle, and a queue of messages made
//! visible again. It records every call the tests assert on and lets them
//! wait for a state without sleeping.

use meridian_face::{Backend, Caller, Refusal, SendReceipt};
use meridian_proto::rocketmq::v2::{
    AckMessageRequest, ChangeInvisibleDurationRequest, Code, Message, MessageQueue, Permission,
    ReceiveMessageRequest, Resource,
};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// Queues of every fake topic.
pub(crate) const QUEUES: i32 = 4;

#[derive(Default)]
struct Consumer {
    /// The next message of the topic not yet looked at.
    cursor: usize,
    /// Handle → (message index, attempt).
    in_flight: HashMap<String, (usize, i32)>,
    /// Messages visible again: (index, next attempt).
    again: VecDeque<(usize, i32)>,
}

/// What the fake holds and records.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) topics: BTreeMap<String, Vec<Message>>,
    /// Topics whose receives are refused.
    pub(crate) broken: HashSet<String>,
    consumers: HashMap<(String, String), Consumer>,
    /// Every receive request, with the caller's own subscription.
    pub(crate) receives: Vec<(ReceiveMessageRequest, Option<String>)>,
    /// (consumer, receipt handle) of every acknowledged delivery.
    pub(crate) acks: Vec<(String, String)>,
    /// Entries per AckMessage call.
    pub(crate) ack_calls: Vec<usize>,
    /// (consumer, receipt handle, invisible ms) of every change.
    pub(crate) changes: Vec<(String, String, i64)>,
    /// (group, subscription, topic) of every ended subscription.
    pub(crate) ended: Vec<(String, String, String)>,
    /// Client ids of the callers of send.
    pub(crate) senders: Vec<String>,
    last_handle: u64,
}

impl State {
    /// The messages stored in `topic`.
    pub(crate) fn messages(&self, topic: &str) -> &[Message] {
        self.topics
            .get(topic)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Deliveries of the consumer named `consumer` still in flight.
    pub(crate) fn in_flight(&self, consumer: &str) -> usize {
        self.consumers
            .iter()
            .filter(|((name, _), _)| name == consumer)
            .map(|(_, state)| state.in_flight.len())
            .sum()
    }
}

pub(crate) struct FakeBackend {
    state: Mutex<State>,
    changed: Notify,
}

fn refusal(code: Code, message: impl Into<String>) -> Refusal {
    Refusal::new(code, message)
}

fn consumer_name(caller: &Caller, group: &str) -> String {
    match &caller.subscription {
        Some(subscription) => format!("{group}@{subscription}"),
        None => group.to_owned(),
    }
}

fn matches_filter(request: &ReceiveMessageRequest, message: &Message) -> bool {
    let Some(filter) = &request.filter_expression else {
        return true;
    };
    if filter.expression.trim() == "*" {
        return true;
    }
    let tag = message
        .system_properties
        .as_ref()
        .and_then(|properties| properties.tag.clone())
        .unwrap_or_default();
    filter
        .expression
        .split("||")
        .any(|wanted| wanted.trim() == tag)
}

impl FakeBackend {
    /// Takes up to `batch` visible messages for the request's consumer.
    fn take(
        state: &mut State,
        caller: &Caller,
        request: &ReceiveMessageRequest,
    ) -> Result<Vec<Message>, Refusal> {
        let topic = request
            .message_queue
            .as_ref()
            .and_then(|queue| queue.topic.as_ref())
            .map(|topic| topic.name.clone())
            .unwrap_or_default();
        let group = request
            .group
            .as_ref()
            .map(|group| group.name.clone())
            .unwrap_or_default();
        let Some(stored) = state.topics.get(&topic).cloned() else {
            return Err(refusal(
                Code::TopicNotFound,
                format!("topic {topic} not found"),
            ));
        };
        if state.broken.contains(&topic) {
            return Err(refusal(
                Code::InternalServerError,
                "the fake refuses receives",
            ));
        }
        let name = consumer_name(caller, &group);
        let own = caller.subscription.is_some();
        let State {
            consumers,
            last_handle,
            ..
        } = state;
        let consumer = consumers.entry((name, topic)).or_insert_with(|| Consumer {
            // A consumer of its own starts at the topic's end.
            cursor: if own { stored.len() } else { 0 },
            ..Consumer::default()
        });
        let batch = usize::try_from(request.batch_size).unwrap_or(1).max(1);
        let mut taken = Vec::new();
        while taken.len() < batch {
            let (index, attempt) = if let Some(again) = consumer.again.pop_front() {
                again
            } else if consumer.cursor < stored.len() {
                consumer.cursor += 1;
                (consumer.cursor - 1, 1)
            } else {
                break;
            };
            if !matches_filter(request, &stored[index]) {
                continue;
            }
            *last_handle += 1;
            let handle = format!("h{last_handle}");
            consumer.in_flight.insert(handle.clone(), (index, attempt));
            let mut message = stored[index].clone();
            if let Some(properties) = message.system_properties.as_mut() {
                properties.receipt_handle = Some(handle);
                properties.delivery_attempt = Some(attempt);
            }
            taken.push(message);
        }
        Ok(taken)
    }

    /// A backend serving `topics`, all empty.
    pub(crate) fn new(topics: &[&str]) -> Self {
        let state = State {
            topics: topics
                .iter()
                .map(|topic| ((*topic).to_owned(), Vec::new()))
                .collect(),
            ..State::default()
        };
        FakeBackend {
            state: Mutex::new(state),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("the fake's lock is never poisoned")
    }

    /// Changes the state and wakes waiters.
    pub(crate) fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let out = change(&mut self.lock());
        self.changed.notify_waiters();
        out
    }

    /// Reads the state.
    pub(crate) fn read<T>(&self, look: impl FnOnce(&State) -> T) -> T {
        look(&self.lock())
    }

    /// Waits (up to `timeout`) until `look` finds something; panics with
    /// `what` if it does not.
    pub(crate) async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        look: impl Fn(&State) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = look(&self.lock()) {
                return found;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out after {timeout:?} waiting for {what}");
            }
        }
    }

    /// Stores a message as a producer of another protocol would.
    pub(crate) fn store(&self, topic: &str, tag: Option<&str>, body: &[u8]) {
        let message = Message {
            topic: Some(Resource {
                resource_namespace: String::new(),
                name: topic.to_owned(),
            }),
            user_properties: HashMap::new(),
            system_properties: Some(meridian_proto::rocketmq::v2::SystemProperties {
                tag: tag.map(str::to_owned),
                message_id: crate::convert::new_message_id(),
                ..Default::default()
            }),
            body: body.to_vec(),
        };
        self.update(|state| {
            state
                .topics
                .get_mut(topic)
                .expect("a fake topic")
                .push(message)
        });
    }
}

#[meridian_proto::tonic::async_trait]
impl Backend for FakeBackend {
    fn unserved_hint(&self) -> &'static str {
        "the fake serves no more"
    }

    fn group_policy(&self, _group: &str) -> meridian_topology::Group {
        meridian_topology::Group::default()
    }

    async fn route(
        &self,
        _caller: &Caller,
        _rpc: &'static str,
        topic: Option<&Resource>,
    ) -> Result<Vec<MessageQueue>, Refusal> {
        let topic = topic.cloned().unwrap_or_default();
        if !self.lock().topics.contains_key(&topic.name) {
            return Err(refusal(
                Code::TopicNotFound,
                format!("topic {} not found", topic.name),
            ));
        }
        Ok((0..QUEUES)
            .map(|id| MessageQueue {
                topic: Some(topic.clone()),
                id,
                permission: Permission::ReadWrite as i32,
                ..MessageQueue::default()
            })
            .collect())
    }

    async fn send(
        &self,
        caller: &Caller,
        messages: Vec<Message>,
    ) -> Vec<Result<SendReceipt, Refusal>> {
        self.update(|state| {
            state.senders.push(caller.client_id.clone());
            messages
                .into_iter()
                .map(|message| {
                    let topic = message
                        .topic
                        .as_ref()
                        .map(|topic| topic.name.clone())
                        .unwrap_or_default();
                    let message_id = message
                        .system_properties
                        .as_ref()
                        .map(|properties| properties.message_id.clone())
                        .unwrap_or_default();
                    let stored = state.topics.get_mut(&topic).ok_or_else(|| {
                        refusal(Code::TopicNotFound, format!("topic {topic} not found"))
                    })?;
                    stored.push(message);
                    Ok(SendReceipt {
                        message_id,
                        offset: i64::try_from(stored.len()).unwrap_or(0) - 1,
                        transaction_id: String::new(),
                    })
                })
                .collect()
        })
    }

    async fn receive(
        &self,
        caller: &Caller,
        request: ReceiveMessageRequest,
    ) -> Result<Vec<Message>, Refusal> {
        let wait = request
            .long_polling_timeout
            .map(|timeout| Duration::from_secs(u64::try_from(timeout.seconds).unwrap_or(0)))
            .unwrap_or_default();
        let deadline = tokio::time::Instant::now() + wait;
        let mut first = true;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let taken = {
                let mut state = self.lock();
                if first {
                    // Recorded with the consumer's creation, so that a
                    // test seeing the receive knows where it starts.
                    state
                        .receives
                        .push((request.clone(), caller.subscription.clone()));
                }
                Self::take(&mut state, caller, &request)
            };
            if std::mem::take(&mut first) {
                self.changed.notify_waiters();
            }
            let taken = taken?;
            if !taken.is_empty() {
                return Ok(taken);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(
        &self,
        caller: &Caller,
        request: AckMessageRequest,
    ) -> Result<Vec<Result<(), Refusal>>, Refusal> {
        let group = request.group.map(|group| group.name).unwrap_or_default();
        let topic = request.topic.map(|topic| topic.name).unwrap_or_default();
        let name = consumer_name(caller, &group);
        Ok(self.update(|state| {
            state.ack_calls.push(request.entries.len());
            request
                .entries
                .into_iter()
                .map(|entry| {
                    let removed = state
                        .consumers
                        .get_mut(&(name.clone(), topic.clone()))
                        .and_then(|consumer| consumer.in_flight.remove(&entry.receipt_handle));
                    match removed {
                        Some(_) => {
                            state.acks.push((name.clone(), entry.receipt_handle));
                            Ok(())
                        }
                        None => Err(refusal(Code::InvalidReceiptHandle, "unknown handle")),
                    }
                })
                .collect()
        }))
    }

    async fn change_invisible_duration(
        &self,
        caller: &Caller,
        request: ChangeInvisibleDurationRequest,
    ) -> Result<String, Refusal> {
        let group = request.group.map(|group| group.name).unwrap_or_default();
        let topic = request.topic.map(|topic| topic.name).unwrap_or_default();
        let name = consumer_name(caller, &group);
        let millis = request
            .invisible_duration
            .map(|duration| duration.seconds * 1000 + i64::from(duration.nanos / 1_000_000))
            .unwrap_or(-1);
        self.update(|state| {
            let consumer = state
                .consumers
                .get_mut(&(name.clone(), topic))
                .ok_or_else(|| refusal(Code::InvalidReceiptHandle, "unknown consumer"))?;
            let (index, attempt) = consumer
                .in_flight
                .remove(&request.receipt_handle)
                .ok_or_else(|| refusal(Code::InvalidReceiptHandle, "unknown handle"))?;
            if millis == 0 {
                consumer.again.push_back((index, attempt + 1));
            }
            state
                .changes
                .push((name, request.receipt_handle.clone(), millis));
            Ok(format!("{}-changed", request.receipt_handle))
        })
    }

    async fn end_subscription(
        &self,
        caller: &Caller,
        group: &Resource,
        topic: &Resource,
    ) -> Result<(), Refusal> {
        let subscription = caller.subscription.clone().unwrap_or_default();
        self.update(|state| {
            state
                .consumers
                .remove(&(consumer_name(caller, &group.name), topic.name.clone()));
            state
                .ended
                .push((group.name.clone(), subscription, topic.name.clone()));
        });
        Ok(())
    }
}
