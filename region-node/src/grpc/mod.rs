//! The node's two gRPC faces: the RocketMQ 5 `MessagingService` for clients,
//! and Meridian's internal `NodeService` for replicators, routers and operators.

pub mod admin;
mod attempts;
mod backend;
mod catalog_admin;
pub mod convert;
pub mod internal;
mod messages;
mod receive;
mod send;
mod transaction;

pub use attempts::ReceiveAttempts;
pub use backend::NodeBackend;

use crate::commit::CommitLog;
use crate::consumer::ConsumerEngine;
use crate::storage::LogStore;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything a request handler needs; shared by both services.
pub struct NodeContext<S> {
    pub region: String,
    /// The topology now: the file's with the admin API's changes.
    pub topology: crate::catalog::LiveTopology,
    pub store: Arc<S>,
    pub commit: CommitLog,
    pub consumers: Arc<ConsumerEngine<S>>,
    /// The RocketMQ endpoint this node serves (advertised in routes and as store host).
    pub node_address: SocketAddr,
    pub started_at_ms: i64,
    /// Sends stored although their topic and client message id were already
    /// stored for a message with other content (since start; see
    /// `Appended::Stored::reused_client_id`).
    pub reused_client_ids: std::sync::atomic::AtomicU64,
    /// Long polls waiting for messages now (reported in `Health`).
    pub waiting_receives: crate::consumer::WaitingReceives,
    /// Per peer: its checkpoint and this node's last sequence at start
    /// (reported in `Health`).
    pub unconfirmed_at_start: Vec<meridian_proto::meridian::v1::UnconfirmedAtStart>,
    /// Per peer, the sequence it confirmed (as the replicator persists it):
    /// geo-durable sends wait on it.
    pub checkpoints: tokio::sync::watch::Sender<std::collections::BTreeMap<String, u64>>,
    /// Recent receive answers by attempt id (push consumers' retries).
    pub receive_attempts: ReceiveAttempts,
    /// Who can be asked about open transactions.
    pub transactions: crate::transactions::Transactions,
    /// Notes trace events (deliveries, acknowledgements, arrivals, …).
    pub tracer: crate::trace::Tracer,
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
