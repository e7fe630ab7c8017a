//! ReceiveMessage on the node (and the HTTP and STOMP faces' receives,
//! with [`ReceiveOptions`]): request checks, then a long poll
//! (`consumer::long_poll`) over the consumer engine for min(requested
//! long-polling time, 20 s, the caller's `grpc-timeout` − 1 s).

use super::backend::{MAX_INVISIBLE_MS, MIN_INVISIBLE_MS, NodeBackend};
use super::convert::{self, duration_to_ms};
use crate::consumer::{Filter, ReceiveRequest, SystemClock, Try, Wakers, long_poll};
use crate::error::NodeError;
use crate::storage::LogStore;
use meridian_face::{Caller, ReceiveOptions};
use meridian_proto::meridian::v1::TraceEventKind;
use meridian_proto::rocketmq::v2::{FilterType, Message, ReceiveMessageRequest};
use std::sync::Arc;
use std::time::Duration;

/// Longest a receive waits for messages (the proxy's cap), in ms.
const MAX_POLL_MS: i64 = 20_000;
/// Time kept back from the caller's deadline to send the empty answer, in ms.
const DEADLINE_MARGIN_MS: i64 = 1_000;
/// Most messages one receive hands out, whatever the batch size asked.
const MAX_BATCH: usize = 1024;
/// Body bytes one receive hands out at most (beyond its first message), so a
/// large batch of large messages does not pile up in memory.
const MAX_RECEIVE_BYTES: usize = 16 * 1024 * 1024;
/// Batch size when the request names none.
const DEFAULT_BATCH: usize = 32;

impl<S: LogStore> NodeBackend<S> {
    /// The messages for one receive; empty when none became visible in time.
    pub(super) async fn receive_messages(
        &self,
        caller: &Caller,
        request: ReceiveMessageRequest,
        options: ReceiveOptions,
    ) -> Result<Vec<Message>, NodeError> {
        let remaining = caller.remaining;
        let group = self.consuming_group(caller, request.group.as_ref())?;
        let queue = request.message_queue.unwrap_or_default();
        let (topic_name, topic) = self.topic(queue.topic.as_ref())?;
        let (max_attempts, fifo, default_invisible_ms) = {
            let topology = self.context.topology.get();
            let policy = topology.group(&group);
            (
                policy.max_attempts,
                policy.fifo || options.ordered,
                policy.invisible_ms,
            )
        };
        let attempt_id = request
            .attempt_id
            .as_deref()
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        if let Some(answered) = attempt_id.as_deref().and_then(|attempt| {
            self.context
                .receive_attempts
                .answered(&group, &topic_name, attempt)
        }) {
            tracing::debug!(
                group,
                topic = topic_name,
                "a retried receive gets its earlier answer"
            );
            return Ok(answered);
        }
        let filter = match request.filter_expression {
            Some(expression) if expression.r#type() == FilterType::Sql => {
                Filter::parse_sql(&expression.expression)?
            }
            Some(expression) => Filter::parse_tags(&expression.expression)?,
            None => Filter::All,
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
            // Push consumers name none: the group's default, never 0.
            None => i64::try_from(default_invisible_ms).unwrap_or(MAX_INVISIBLE_MS),
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
        if let Some(remaining) = remaining {
            let remaining_ms = i64::try_from(remaining.as_millis()).unwrap_or(i64::MAX);
            if remaining_ms < DEADLINE_MARGIN_MS {
                return Err(NodeError::IllegalPollingTime { remaining_ms });
            }
            poll_ms = poll_ms.min(remaining_ms - DEADLINE_MARGIN_MS);
        }
        let poll_for = Duration::from_millis(u64::try_from(poll_ms).unwrap_or(0));
        let wakers = Wakers {
            commits: self.context.commit.subscribe_topic(&topic_name),
            invisibility_changes: self.context.consumers.subscribe_invisibility_changes(),
            shutdown: self.context.shutdown.clone(),
        };
        let filter = Arc::new(filter);
        // A face's own subscription starts at the topic's end.
        let own_subscription = caller.subscription.is_some();
        let consume_from = if own_subscription {
            meridian_topology::ConsumeFrom::Latest
        } else {
            topic.consume_from
        };
        let queues = topic.queues;
        let found = long_poll(
            &SystemClock,
            poll_for,
            wakers,
            &self.context.waiting_receives,
            |now| {
                let (group, topic_name) = (&group, &topic_name);
                let filter = filter.clone();
                let context = Arc::clone(&self.context);
                let (polled_group, polled_topic) = (group.clone(), topic_name.clone());
                let tried = self.context.blocking(move |_, consumers| {
                    let request = ReceiveRequest {
                        group: &polled_group,
                        topic: &polled_topic,
                        queue_count: queues,
                        consume_from,
                        filter: &filter,
                        max_messages: batch,
                        max_bytes: MAX_RECEIVE_BYTES,
                        invisible_ms,
                        max_attempts,
                        fifo,
                        now_ms: now,
                    };
                    let received = consumers.receive(&request)?;
                    // A face's own subscription lives in this region only.
                    let starts = if own_subscription {
                        Vec::new()
                    } else {
                        crate::acks::records_for_group_starts(
                            consumers,
                            &context.topology.get(),
                            &context.region,
                            &polled_group,
                            &polled_topic,
                            &received.created,
                        )?
                    };
                    let tried = Try {
                        next_deadline_ms: received.next_deadline_ms,
                        found: (!received.deliveries.is_empty()).then_some(received.deliveries),
                    };
                    Ok((tried, starts, received.dead_letters))
                });
                async move {
                    let (tried, starts, dead_letters) = tried.await?;
                    // A new group's start goes to the other regions before
                    // anything it acknowledges (log order).
                    if !starts.is_empty() {
                        self.context
                            .commit
                            .append(starts)
                            .await
                            .map_err(NodeError::from)?;
                    }
                    if !dead_letters.is_empty() {
                        self.move_to_dead_letters(group, topic_name, dead_letters)
                            .await;
                    }
                    Ok::<_, NodeError>(tried)
                }
            },
        )
        .await?;
        let store_host = self.context.node_address.to_string();
        let messages: Vec<Message> = found
            .unwrap_or_default()
            .into_iter()
            .map(|delivery| {
                self.context.tracer.note(
                    &topic_name,
                    &delivery.record.dedup_id,
                    TraceEventKind::Delivered,
                    &group,
                    &caller.client_id,
                    delivery.attempt,
                );
                convert::message_for_delivery(delivery, &store_host, invisible_ms)
            })
            .collect();
        if let Some(attempt) = attempt_id {
            self.context.receive_attempts.remember(
                &group,
                &topic_name,
                &attempt,
                &messages,
                Duration::from_millis(u64::try_from(invisible_ms).unwrap_or(0)),
            );
        }
        Ok(messages)
    }
}
