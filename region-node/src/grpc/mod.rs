//! The node's two gRPC faces: the RocketMQ 5 `MessagingService` for clients,
//! and Meridian's internal `NodeService` for replicators, routers and operators.

pub mod convert;
pub mod internal;
pub mod messaging;

use crate::commit::CommitLog;
use crate::consumer::ConsumerEngine;
use crate::storage::LogStore;
use meridian_topology::Topology;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything a request handler needs; shared by both services.
pub struct NodeContext<S> {
    pub region: String,
    pub topology: Arc<Topology>,
    pub store: Arc<S>,
    pub commit: CommitLog,
    pub consumers: Arc<ConsumerEngine<S>>,
    /// The RocketMQ endpoint this node serves (advertised in routes and as store host).
    pub node_address: SocketAddr,
    pub started_at_ms: i64,
    pub shutdown: CancellationToken,
    /// Owner of the tasks spawned by streaming calls.
    pub tasks: TaskTracker,
}

impl<S: LogStore> NodeContext<S> {
    /// Runs a blocking storage operation off the async threads.
    pub async fn blocking<T, F>(&self, operation: F) -> Result<T, crate::error::NodeError>
    where
        T: Send + 'static,
        F: FnOnce(&S, &ConsumerEngine<S>) -> Result<T, crate::error::NodeError> + Send + 'static,
    {
        let store = self.store.clone();
        let consumers = self.consumers.clone();
        tokio::task::spawn_blocking(move || operation(&store, &consumers))
            .await
            .unwrap_or_else(|join_error| {
                Err(crate::error::NodeError::Storage(
                    crate::storage::StorageError::Backend {
                        operation: "blocking task",
                        source: Box::new(join_error),
                    },
                ))
            })
    }
}

/// The queue offset of the record stored at `sequence`. Offsets of a queue
/// are given in commit order, so sequences grow with offsets and a binary
/// search over the queue finds it (a few reads; only resends come here).
pub fn stored_queue_offset<S: LogStore>(
    store: &S,
    sequence: u64,
) -> Result<Option<u64>, crate::error::NodeError> {
    let Some(message) = store.get(sequence)?.and_then(|record| record.message) else {
        return Ok(None);
    };
    let (topic, queue_id) = (message.topic.as_str(), message.queue_id);
    let bounds = store.queue_bounds(topic, queue_id)?;
    let (mut low, mut high) = (bounds.min, bounds.max);
    while low < high {
        let middle = low + (high - low) / 2;
        let Some((offset, record)) = store.read_queue(topic, queue_id, middle, 1)?.pop() else {
            break;
        };
        match record.sequence.cmp(&sequence) {
            std::cmp::Ordering::Equal => return Ok(Some(offset)),
            std::cmp::Ordering::Less => low = offset + 1,
            std::cmp::Ordering::Greater => high = middle,
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Appended, MemoryStore};
    use meridian_proto::meridian::v1::Record;

    fn record(queue_id: i32) -> Record {
        crate::test_records::message_record(queue_id, b"")
    }

    #[test]
    fn stored_queue_offset_finds_every_record_in_its_own_queue() {
        let store = MemoryStore::new();
        let records = (0..37).map(|index| record(index % 3)).collect();
        let appended = store.append(records, "here").expect("append");
        for outcome in appended {
            let Appended::Stored {
                sequence,
                queue_offset,
            } = outcome
            else {
                panic!("nothing was sent twice");
            };
            let found = stored_queue_offset(&store, sequence).expect("read");
            assert_eq!(found, Some(queue_offset), "sequence {sequence}");
        }
        assert_eq!(stored_queue_offset(&store, 1_000).expect("read"), None);
    }
}
