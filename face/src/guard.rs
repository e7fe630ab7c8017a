//! [`Guarded`]: the grants of the caller's access key, checked around a
//! backend, so that every face above it (RocketMQ gRPC, HTTP, STOMP) and
//! every service below it (node, router) apply the same rules.
//!
//! | backend call | needs |
//! |---|---|
//! | `route` (QueryRoute) | `pub` or `sub` on the topic |
//! | `route` (QueryAssignment) | `sub` on the topic, any group |
//! | `send` | `pub` on each message's topic (a denied message fails alone) |
//! | `end_transaction`, `take_check_backs` | `pub` on the topic |
//! | `receive`, `receive_with`, `ack`, `change_invisible_duration`, `forward_to_dead_letter`, `end_subscription` | `sub` on the topic as the group |

use crate::access::{Authentication, Permission};
use crate::{Backend, Caller, CheckBack, ReceiveOptions, Refusal, SendReceipt};
use meridian_proto::rocketmq::v2::{
    AckMessageRequest, ChangeInvisibleDurationRequest, Code, EndTransactionRequest,
    ForwardMessageToDeadLetterQueueRequest, Message, MessageQueue, ReceiveMessageRequest, Resource,
};
use std::time::Duration;

/// A backend whose every call is first checked against the caller's grants.
pub struct Guarded<B> {
    inner: B,
    authentication: Authentication,
}

impl<B: Backend> Guarded<B> {
    pub fn new(inner: B, authentication: Authentication) -> Self {
        Guarded {
            inner,
            authentication,
        }
    }

    /// The backend within.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    pub fn authentication(&self) -> &Authentication {
        &self.authentication
    }

    fn consume(
        &self,
        caller: &Caller,
        topic: Option<&Resource>,
        group: Option<&Resource>,
    ) -> Result<(), Refusal> {
        if self.authentication.keys().is_none() {
            return Ok(());
        }
        self.authentication.authorize(
            caller,
            Permission::Consume {
                topic: named(topic, "topic")?,
                group: named(group, "consumer group")?,
            },
        )
    }

    fn publish(&self, caller: &Caller, topic: Option<&Resource>) -> Result<(), Refusal> {
        if self.authentication.keys().is_none() {
            return Ok(());
        }
        self.authentication.authorize(
            caller,
            Permission::Publish {
                topic: named(topic, "topic")?,
            },
        )
    }
}

/// The name of a resource a request must name to be authorized.
fn named<'a>(resource: Option<&'a Resource>, what: &str) -> Result<&'a str, Refusal> {
    resource
        .map(|resource| resource.name.as_str())
        .filter(|name| !name.is_empty())
        .ok_or_else(|| {
            Refusal::new(
                if what == "topic" {
                    Code::IllegalTopic
                } else {
                    Code::IllegalConsumerGroup
                },
                format!("the request names no {what}"),
            )
        })
}

fn queue_topic(queue: Option<&MessageQueue>) -> Option<&Resource> {
    queue.and_then(|queue| queue.topic.as_ref())
}

#[tonic::async_trait]
impl<B: Backend> Backend for Guarded<B> {
    fn unserved_hint(&self) -> &'static str {
        self.inner.unserved_hint()
    }

    fn group_policy(&self, group: &str) -> meridian_topology::Group {
        self.inner.group_policy(group)
    }

    async fn route(
        &self,
        caller: &Caller,
        rpc: &'static str,
        topic: Option<&Resource>,
    ) -> Result<Vec<MessageQueue>, Refusal> {
        if self.authentication.keys().is_some() {
            let topic = named(topic, "topic")?;
            let wanted = if rpc == "QueryAssignment" {
                Permission::Subscribe { topic }
            } else {
                Permission::Route { topic }
            };
            self.authentication.authorize(caller, wanted)?;
        }
        self.inner.route(caller, rpc, topic).await
    }

    async fn send(
        &self,
        caller: &Caller,
        messages: Vec<Message>,
    ) -> Vec<Result<SendReceipt, Refusal>> {
        let checks: Vec<Result<(), Refusal>> = messages
            .iter()
            .map(|message| self.publish(caller, message.topic.as_ref()))
            .collect();
        if checks.iter().all(Result::is_ok) {
            return self.inner.send(caller, messages).await;
        }
        let allowed: Vec<Message> = messages
            .into_iter()
            .zip(&checks)
            .filter(|(_, check)| check.is_ok())
            .map(|(message, _)| message)
            .collect();
        let mut sent = if allowed.is_empty() {
            Vec::new()
        } else {
            self.inner.send(caller, allowed).await
        }
        .into_iter();
        checks
            .into_iter()
            .map(|check| match check {
                Ok(()) => sent.next().unwrap_or_else(|| {
                    Err(Refusal::new(
                        Code::InternalError,
                        "the backend answered no outcome for this message",
                    ))
                }),
                Err(refusal) => Err(refusal),
            })
            .collect()
    }

    async fn receive(
        &self,
        caller: &Caller,
        request: ReceiveMessageRequest,
    ) -> Result<Vec<Message>, Refusal> {
        self.consume(
            caller,
            queue_topic(request.message_queue.as_ref()),
            request.group.as_ref(),
        )?;
        self.inner.receive(caller, request).await
    }

    async fn ack(
        &self,
        caller: &Caller,
        request: AckMessageRequest,
    ) -> Result<Vec<Result<(), Refusal>>, Refusal> {
        self.consume(caller, request.topic.as_ref(), request.group.as_ref())?;
        self.inner.ack(caller, request).await
    }

    async fn change_invisible_duration(
        &self,
        caller: &Caller,
        request: ChangeInvisibleDurationRequest,
    ) -> Result<String, Refusal> {
        self.consume(caller, request.topic.as_ref(), request.group.as_ref())?;
        self.inner.change_invisible_duration(caller, request).await
    }

    async fn end_transaction(
        &self,
        caller: &Caller,
        request: EndTransactionRequest,
    ) -> Result<(), Refusal> {
        self.publish(caller, request.topic.as_ref())?;
        self.inner.end_transaction(caller, request).await
    }

    async fn receive_with(
        &self,
        caller: &Caller,
        request: ReceiveMessageRequest,
        options: ReceiveOptions,
    ) -> Result<Vec<Message>, Refusal> {
        self.consume(
            caller,
            queue_topic(request.message_queue.as_ref()),
            request.group.as_ref(),
        )?;
        self.inner.receive_with(caller, request, options).await
    }

    async fn end_subscription(
        &self,
        caller: &Caller,
        group: &Resource,
        topic: &Resource,
    ) -> Result<(), Refusal> {
        self.consume(caller, Some(topic), Some(group))?;
        self.inner.end_subscription(caller, group, topic).await
    }

    async fn take_check_backs(
        &self,
        caller: &Caller,
        topic: &Resource,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<CheckBack>, Refusal> {
        self.publish(caller, Some(topic))?;
        self.inner.take_check_backs(caller, topic, max, wait).await
    }

    async fn forward_to_dead_letter(
        &self,
        caller: &Caller,
        request: ForwardMessageToDeadLetterQueueRequest,
    ) -> Result<(), Refusal> {
        self.consume(caller, request.topic.as_ref(), request.group.as_ref())?;
        self.inner.forward_to_dead_letter(caller, request).await
    }
}
