//! The timer: messages with a delivery time (delay messages) join their
//! queue when it comes.
//!
//! Storage keeps such messages in its timer index, ordered by delivery time
//! ([`LogStore::enqueue_due`]), so that millions of undue messages cost
//! sends and receives nothing. This task sleeps until the earliest delivery
//! time (at most [`MAX_SLEEP`], so a wall clock that jumps is followed
//! within a second), moves every due message to its queue in one write,
//! applies acknowledgements held for them and wakes the long polls of their
//! topics. A commit that stored a message with a delivery time wakes it to
//! look again. The index survives restarts: a node that was down delivers
//! what fell due meanwhile as soon as it starts.
//!
//! [`sweep_dead_letters`] runs beside it: once a second it moves messages
//! whose last delivery attempt ended to their group's dead-letter topic,
//! so they move even when the group stopped receiving (a receive moves
//! them too, at once).

use crate::grpc::NodeContext;
use crate::grpc::convert::now_ms;
use crate::storage::{Enqueued, LogStore};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Longest sleep between two looks at the timer index.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Most messages moved to their queues in one write.
const MAX_PER_WRITE: usize = 4096;

/// What one look at the timer index found.
enum Look {
    /// These messages were due and joined their queues.
    Moved(Vec<Enqueued>),
    /// Nothing due; the earliest delivery time, if any message waits.
    Next(Option<i64>),
}

/// Runs the timer until the node shuts down.
pub async fn run<S: LogStore>(context: Arc<NodeContext<S>>) {
    let mut stored = context.commit.subscribe_timers();
    loop {
        let now = now_ms();
        let topology = Arc::clone(&context.topology.get());
        let moved = context
            .blocking(move |store, consumers| match store.next_timer_due()? {
                Some(due) if due <= now => {
                    let enqueued = store.enqueue_due(now, MAX_PER_WRITE)?;
                    crate::acks::apply_enqueued(store, consumers, &topology, &enqueued)?;
                    Ok(Look::Moved(enqueued))
                }
                next => Ok(Look::Next(next)),
            })
            .await;
        let sleep = match moved {
            Ok(Look::Moved(enqueued)) => {
                let topics: BTreeSet<String> =
                    enqueued.into_iter().map(|message| message.topic).collect();
                context.commit.signal_topics(&topics);
                continue;
            }
            Ok(Look::Next(next)) => next.map_or(MAX_SLEEP, |due| {
                Duration::from_millis(u64::try_from(due - now).unwrap_or(0)).min(MAX_SLEEP)
            }),
            Err(error) => {
                tracing::warn!(
                    error = %meridian_report::Report(&error),
                    "could not move due delay messages to their queues; trying again"
                );
                MAX_SLEEP
            }
        };
        tokio::select! {
            () = context.shutdown.cancelled() => break,
            () = tokio::time::sleep(sleep) => {}
            changed = stored.changed() => if changed.is_err() { break },
        }
    }
}

/// How often the dead-letter sweep looks at every group's in-flight messages.
const DEAD_LETTER_SWEEP: Duration = Duration::from_secs(1);

/// Moves messages whose last delivery attempt ended to their group's
/// dead-letter topic, once a second, until the node shuts down. The sweep
/// walks the in-memory state of every group queue (in-flight offsets only).
pub async fn sweep_dead_letters<S: LogStore>(context: Arc<NodeContext<S>>) {
    let backend = crate::grpc::NodeBackend::new(Arc::clone(&context));
    loop {
        tokio::select! {
            () = context.shutdown.cancelled() => break,
            () = tokio::time::sleep(DEAD_LETTER_SWEEP) => {}
        }
        let now = now_ms();
        let topology = Arc::clone(&context.topology.get());
        let swept =
            context
                .blocking(move |_, consumers| {
                    Ok(consumers
                        .sweep_dead_letters(now, |group| topology.group(group).max_attempts)?)
                })
                .await;
        match swept {
            Ok(swept) => {
                for (group, topic, letters) in swept {
                    backend.move_to_dead_letters(&group, &topic, letters).await;
                }
            }
            Err(error) => tracing::warn!(
                error = %meridian_report::Report(&error),
                "could not look for messages past their last delivery attempt"
            ),
        }
    }
}
