//! Retention: messages a topic no longer keeps leave the region.
//!
//! Once a second this task looks at the head of every queue of every topic
//! the region holds (and of the dead-letter topics of the groups it tracks)
//! and removes what the topic's `retention_ms` and `retention_bytes` no
//! longer keep, with their queue and dedup entries ([`LogStore::trim_queue`]):
//! the cost is one seek per queue plus the removed entries, never a scan of
//! what stays. Acknowledgement and group-start records (in the log, in no
//! queue) leave once older than their topic's `retention_ms`
//! ([`LogStore::trim_control_records`], a walk that resumes where it
//! stopped, so each record is visited once). Broadcast consumer instances
//! that have not received for a day are forgotten here too. A message is removed only once every replication neighbour
//! of this region that holds its topic confirmed it (its checkpoint), so a
//! region that was offline still gets everything when it comes back; a
//! long outage therefore holds retention back. Consumer groups behind the
//! retention point resume at the earliest message left (their next read of
//! the queue starts there).

use crate::consumer::BROADCAST_INSTANCE_IDLE_MS;
use crate::grpc::NodeContext;
use crate::grpc::convert::now_ms;
use crate::storage::{LogStore, Retention};
use meridian_topology::{Topic, Topology};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// How often retention looks at every queue.
const INTERVAL: Duration = Duration::from_secs(1);
/// Most messages removed from one queue in one write.
const MAX_PER_WRITE: usize = 1024;

/// Applies retention until the node shuts down.
pub async fn run<S: LogStore>(context: Arc<NodeContext<S>>) {
    loop {
        tokio::select! {
            () = context.shutdown.cancelled() => break,
            () = tokio::time::sleep(INTERVAL) => {}
        }
        let now = now_ms();
        let topology = Arc::clone(&context.topology.get());
        // Topics deleted through the admin API: their stored messages leave
        // as their last definition's retention says.
        let deleted: Vec<(String, Topic)> = context
            .topology
            .catalog()
            .deleted_topics()
            .into_iter()
            .filter(|(name, _)| !topology.topics.contains_key(name))
            .collect();
        let region = context.region.clone();
        let trimmed = context
            .blocking(move |store, consumers| {
                let dead_letter_topics: BTreeSet<String> = consumers
                    .group_names()
                    .iter()
                    .map(|group| meridian_topology::dead_letter_topic_name(group))
                    .collect();
                let dead_letter_policy = topology.dead_letter_topic();
                let topics = topology
                    .topics
                    .iter()
                    .map(|(name, topic)| (name.as_str(), topic))
                    .chain(
                        dead_letter_topics
                            .iter()
                            .map(|name| (name.as_str(), &dead_letter_policy)),
                    )
                    .chain(deleted.iter().map(|(name, topic)| (name.as_str(), topic)));
                let mut removed = 0;
                for (name, topic) in topics {
                    if !topic.replicate_to.contains(&region) {
                        continue;
                    }
                    let through = replicated_through(store, &topology, &region, Some(topic))?;
                    removed += trim_topic(store, name, topic, now, through)?;
                }
                let through = replicated_through(store, &topology, &region, None)?;
                let max_age_ms = |topic: &str| {
                    topology
                        .topic(topic)
                        .map(|topic| i64::try_from(topic.retention_ms).unwrap_or(i64::MAX))
                };
                loop {
                    let trimmed =
                        store.trim_control_records(now, &max_age_ms, through, MAX_PER_WRITE)?;
                    removed += trimmed.removed;
                    if trimmed.walked < MAX_PER_WRITE {
                        break;
                    }
                }
                for instance in consumers.forget_idle_instances(now, BROADCAST_INSTANCE_IDLE_MS)? {
                    tracing::info!(
                        instance,
                        "forgot a broadcast consumer instance that has not received for a day"
                    );
                }
                Ok(removed)
            })
            .await;
        match trimmed {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "retention removed expired messages"),
            Err(error) => tracing::warn!(
                error = %meridian_report::Report(&error),
                "could not apply retention; trying again"
            ),
        }
    }
}

/// The highest local sequence every replication neighbour holding `topic`
/// (every neighbour, for `None`) confirmed (`u64::MAX` when there is none).
fn replicated_through<S: LogStore>(
    store: &S,
    topology: &Topology,
    region: &str,
    topic: Option<&Topic>,
) -> Result<u64, crate::error::NodeError> {
    let mut through = u64::MAX;
    for neighbour in topology.replication_neighbours(region) {
        if topic.is_none_or(|topic| topic.replicate_to.iter().any(|held| held == neighbour)) {
            through = through.min(store.checkpoint(neighbour)?);
        }
    }
    Ok(through)
}

/// Trims every queue of one topic; how many messages went.
fn trim_topic<S: LogStore>(
    store: &S,
    name: &str,
    topic: &Topic,
    now_ms: i64,
    replicated_through: u64,
) -> Result<usize, crate::error::NodeError> {
    let retention = Retention {
        max_age_ms: i64::try_from(topic.retention_ms).unwrap_or(i64::MAX),
        max_bytes: topic
            .retention_bytes
            .map(|bytes| (bytes / u64::from(topic.queues.max(1))).max(1)),
    };
    let mut removed = 0;
    for queue_id in 0..i32::from(topic.queues) {
        loop {
            let trimmed = store.trim_queue(
                name,
                queue_id,
                &retention,
                now_ms,
                replicated_through,
                MAX_PER_WRITE,
            )?;
            removed += trimmed.removed;
            if trimmed.removed < MAX_PER_WRITE {
                break;
            }
        }
    }
    Ok(removed)
}
