//! Meridian's internal `NodeService`: health, commit-log tail, apply, checkpoints.
//!
//! Served on the region's admin address, never to clients. The replicator of
//! this region tails the log and applies what peers send; routers probe
//! health; operators and tests read topic statistics.

use super::NodeContext;
use crate::acks::{Arrival, apply_appended};
use crate::error::NodeError;
use crate::storage::{Appended, LogStore};
use meridian_proto::meridian::v1::node_service_server::NodeService;
use meridian_proto::meridian::v1::{
    ApplyRequest, ApplyResponse, Checkpoint, GetCatalogRequest, GetCatalogResponse,
    GetCheckpointRequest, HealthRequest, HealthResponse, PeerCheckpoint, PutCheckpointResponse,
    QueueStats, Record, StorageMemory, TailBatch, TailRequest, TopicStatsRequest,
    TopicStatsResponse, TransactionCheck, TransactionCheckInterest,
};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response};

/// Caps of one tail batch, whatever the caller asks for.
const TAIL_MAX_RECORDS: usize = 1024;
const TAIL_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Check-backs buffered per watching router; beyond, a check waits for the
/// next round.
const CHECKS_QUEUE: usize = 64;
/// Most records one Apply may carry.
const APPLY_MAX_RECORDS: usize = 4096;

pub struct Internal<S> {
    context: Arc<NodeContext<S>>,
}

impl<S> Internal<S> {
    pub fn new(context: Arc<NodeContext<S>>) -> Self {
        Self { context }
    }
}

impl<S: LogStore> Internal<S> {
    /// Checks a replicated record before it may enter the commit log,
    /// against `topology` (the topology with the batch's earlier catalog
    /// changes: a topic created on another region comes before its messages).
    fn check_replicated(
        &self,
        record: &mut Record,
        from_region: &str,
        topology: &meridian_topology::Topology,
    ) -> Result<(), NodeError> {
        crate::rules::check_record(record, topology)?;
        if record.origin_region == self.context.region {
            return Err(NodeError::InvalidRecord {
                reason: format!(
                    "origin region `{}` is this region (records never come home)",
                    record.origin_region
                ),
            });
        }
        if record.path.last().map(String::as_str) != Some(from_region) {
            record.path.push(from_region.to_owned());
        }
        record.path.push(self.context.region.clone());
        record.sequence = 0;
        Ok(())
    }
}

#[tonic::async_trait]
impl<S: LogStore> NodeService for Internal<S> {
    async fn health(
        &self,
        _request: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, tonic::Status> {
        let peers: Vec<String> = self
            .context
            .topology
            .get()
            .replication_neighbours(&self.context.region)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let (checkpoints, memory) = self
            .context
            .blocking(move |store, _| {
                let mut checkpoints = Vec::with_capacity(peers.len());
                for peer in peers {
                    let acked_through_sequence = store.checkpoint(&peer)?;
                    checkpoints.push(PeerCheckpoint {
                        peer_region: peer,
                        acked_through_sequence,
                    });
                }
                Ok((checkpoints, store.memory()?))
            })
            .await
            .map_err(|error| error.to_grpc())?;
        Ok(Response::new(HealthResponse {
            checkpoints,
            storage_memory: memory.map(|memory| StorageMemory {
                budget_bytes: memory.budget_bytes,
                memtable_bytes: memory.memtable_bytes,
                cache_bytes: memory.cache_bytes,
                table_reader_bytes: memory.table_reader_bytes,
            }),
            region: self.context.region.clone(),
            last_sequence: self.context.commit.last_sequence(),
            started_at_ms: u64::try_from(self.context.started_at_ms).unwrap_or(0),
            reused_client_ids: self
                .context
                .reused_client_ids
                .load(std::sync::atomic::Ordering::Relaxed),
            waiting_receives: self.context.waiting_receives.count(),
            unconfirmed_at_start: self.context.unconfirmed_at_start.clone(),
        }))
    }

    type WatchTransactionChecksStream = ReceiverStream<Result<TransactionCheck, tonic::Status>>;

    /// Registers the caller (a router) as a watcher of check-backs for the
    /// topics it sends, until either side ends the stream or the node stops.
    async fn watch_transaction_checks(
        &self,
        request: Request<tonic::Streaming<TransactionCheckInterest>>,
    ) -> Result<Response<Self::WatchTransactionChecksStream>, tonic::Status> {
        let mut interests = request.into_inner();
        let (sender, receiver) = mpsc::channel(CHECKS_QUEUE);
        let context = Arc::clone(&self.context);
        let id = context.transactions.watchers.add(sender.clone());
        self.context.tasks.spawn(async move {
            loop {
                let interest = tokio::select! {
                    () = context.shutdown.cancelled() => break,
                    () = sender.closed() => break,
                    interest = interests.message() => interest,
                };
                match interest {
                    Ok(Some(interest)) => context
                        .transactions
                        .watchers
                        .set_topics(id, interest.topics.into_iter().collect()),
                    Ok(None) | Err(_) => break,
                }
            }
            context.transactions.watchers.remove(id);
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn get_catalog(
        &self,
        _request: Request<GetCatalogRequest>,
    ) -> Result<Response<GetCatalogResponse>, tonic::Status> {
        let changes = self
            .context
            .topology
            .catalog()
            .entries()
            .map(crate::catalog::change_of)
            .collect();
        Ok(Response::new(GetCatalogResponse { changes }))
    }

    type TailStream = ReceiverStream<Result<TailBatch, tonic::Status>>;

    async fn tail(
        &self,
        request: Request<TailRequest>,
    ) -> Result<Response<Self::TailStream>, tonic::Status> {
        let request = request.into_inner();
        let max_records = usize::try_from(request.max_records)
            .unwrap_or(TAIL_MAX_RECORDS)
            .clamp(1, TAIL_MAX_RECORDS);
        let max_bytes = usize::try_from(request.max_bytes)
            .unwrap_or(TAIL_MAX_BYTES)
            .clamp(1, TAIL_MAX_BYTES);
        let local_only = request.local_origin_only;
        let (sender, receiver) = mpsc::channel(4);
        let context = self.context.clone();
        let mut commits = context.commit.subscribe();
        let mut after = request.after_sequence;
        self.context.tasks.spawn(async move {
            let region = context.region.clone();
            loop {
                commits.borrow_and_update();
                let read = context
                    .blocking(move |store, _| Ok(store.read_log(after, max_records, max_bytes)?))
                    .await;
                let records = match read {
                    Ok(records) => records,
                    Err(error) => {
                        tracing::error!(error = %meridian_report::Report(&error), after, "commit log tail failed");
                        let _ = sender.send(Err(error.to_grpc())).await;
                        break;
                    }
                };
                if let Some(last) = records.last() {
                    let through_sequence = last.sequence;
                    let records: Vec<Record> = records
                        .into_iter()
                        .filter(|record| !local_only || record.origin_region == region)
                        .map(|mut record| {
                            if record.origin_region == region && record.origin_sequence == 0 {
                                record.origin_sequence = record.sequence;
                            }
                            record
                        })
                        .collect();
                    after = through_sequence;
                    let batch = TailBatch { records, through_sequence };
                    tokio::select! {
                        biased;
                        () = context.shutdown.cancelled() => break,
                        sent = sender.send(Ok(batch)) => if sent.is_err() { break },
                    }
                    continue;
                }
                tokio::select! {
                    biased;
                    () = context.shutdown.cancelled() => break,
                    () = sender.closed() => break,
                    changed = commits.changed() => if changed.is_err() { break },
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn apply(
        &self,
        request: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, tonic::Status> {
        let request = request.into_inner();
        if request.records.len() > APPLY_MAX_RECORDS {
            return Err(tonic::Status::invalid_argument(format!(
                "apply carries {} records, at most {APPLY_MAX_RECORDS} allowed",
                request.records.len()
            )));
        }
        let mut records = request.records;
        let mut topology = self.context.topology.get();
        let mut changes = Vec::new();
        for record in &mut records {
            if let Some(entry) = record.catalog.as_ref().and_then(crate::catalog::entry_of) {
                changes.push(entry);
                match self.context.topology.with(&changes) {
                    Ok(changed) => topology = Arc::new(changed),
                    // Stored all the same (every region keeps the newest
                    // change); this region's topology stays as it is.
                    Err(error) => tracing::error!(
                        from = %request.from_region,
                        error = %error,
                        "a replicated topic or group change does not fit this region's topology"
                    ),
                }
            }
            if let Err(error) = self.check_replicated(record, &request.from_region, &topology) {
                tracing::warn!(from = %request.from_region, error = %error, "refused replicated batch");
                return Err(error.to_grpc());
            }
        }
        if records.is_empty() {
            return Ok(Response::new(ApplyResponse {
                stored: 0,
                duplicates: 0,
            }));
        }
        let region = self.context.region.clone();
        // The messages among them, for the trace of their arrival here.
        let messages: Vec<Option<(String, Vec<u8>)>> = records
            .iter()
            .map(|record| {
                let message = record.message.as_ref()?;
                Some((message.topic.clone(), record.dedup_id.clone()))
            })
            .collect();
        let arrivals: Vec<Arrival> = records
            .iter()
            .map(|record| Arrival::of(record, &region))
            .collect();
        // Before the append: consumers may get the messages before this
        // handler goes on.
        let arrived_at = crate::grpc::convert::now_ms();
        let outcomes = self
            .context
            .commit
            .append(records)
            .await
            .map_err(|error| NodeError::from(error).to_grpc())?;
        let topology = self.context.topology.get().clone();
        let applied_outcomes = outcomes.clone();
        // Before the answer: once the sender hears "applied", the
        // acknowledgements it carried are in effect here.
        let applied = self
            .context
            .blocking(move |store, consumers| {
                Ok(apply_appended(
                    store,
                    consumers,
                    &topology,
                    &arrivals,
                    &applied_outcomes,
                )?)
            })
            .await
            .map_err(|error| error.to_grpc())?;
        if !applied.committed.is_empty() {
            self.context.commit.signal_topics(&applied.committed);
        }
        if !changes.is_empty() {
            let context = Arc::clone(&self.context);
            self.context
                .blocking(move |store, _| Ok(context.topology.reload(store)?))
                .await
                .map_err(|error| error.to_grpc())?;
        }
        for (message, outcome) in messages.iter().zip(&outcomes) {
            if let (Some((topic, dedup_id)), Appended::Stored { .. }) = (message, outcome) {
                self.context
                    .tracer
                    .note_arrival(topic, dedup_id, &request.from_region, arrived_at);
            }
        }
        let stored = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, Appended::Stored { .. }))
            .count();
        let duplicates = outcomes.len() - stored;
        Ok(Response::new(ApplyResponse {
            stored: u32::try_from(stored).unwrap_or(u32::MAX),
            duplicates: u32::try_from(duplicates).unwrap_or(u32::MAX),
        }))
    }

    async fn get_checkpoint(
        &self,
        request: Request<GetCheckpointRequest>,
    ) -> Result<Response<Checkpoint>, tonic::Status> {
        let peer = request.into_inner().peer_region;
        let acked_through_sequence = self
            .context
            .blocking({
                let peer = peer.clone();
                move |store, _| Ok(store.checkpoint(&peer)?)
            })
            .await
            .map_err(|error| error.to_grpc())?;
        Ok(Response::new(Checkpoint {
            peer_region: peer,
            acked_through_sequence,
        }))
    }

    async fn put_checkpoint(
        &self,
        request: Request<Checkpoint>,
    ) -> Result<Response<PutCheckpointResponse>, tonic::Status> {
        let checkpoint = request.into_inner();
        if !self
            .context
            .topology
            .get()
            .regions
            .contains_key(&checkpoint.peer_region)
        {
            return Err(tonic::Status::invalid_argument(format!(
                "unknown peer region `{}`",
                checkpoint.peer_region
            )));
        }
        // Checkpoints only move forward: a late, smaller ack must not rewind
        // (storage decides atomically).
        let peer = checkpoint.peer_region.clone();
        let advanced = self
            .context
            .blocking(move |store, _| {
                Ok(store.advance_checkpoint(
                    &checkpoint.peer_region,
                    checkpoint.acked_through_sequence,
                )?)
            })
            .await
            .map_err(|error| error.to_grpc())?;
        // Wakes geo-durable sends waiting for this peer.
        self.context.checkpoints.send_if_modified(|checkpoints| {
            let current = checkpoints.entry(peer).or_default();
            let moved = *current < advanced;
            *current = (*current).max(advanced);
            moved
        });
        Ok(Response::new(PutCheckpointResponse {}))
    }

    async fn topic_stats(
        &self,
        request: Request<TopicStatsRequest>,
    ) -> Result<Response<TopicStatsResponse>, tonic::Status> {
        let topic_name = request.into_inner().topic;
        let topology = self.context.topology.get();
        let Some(topic) = topology.topic(&topic_name) else {
            return Err(NodeError::TopicNotFound { topic: topic_name }.to_grpc());
        };
        let queue_count = topic.queues;
        let name = topic_name.clone();
        let queues = self
            .context
            .blocking(move |store, _| {
                let mut queues = Vec::new();
                for queue_id in 0..i32::from(queue_count) {
                    let bounds = store.queue_bounds(&name, queue_id)?;
                    queues.push(QueueStats {
                        queue_id,
                        min_offset: bounds.min,
                        max_offset: bounds.max,
                    });
                }
                Ok(queues)
            })
            .await
            .map_err(|error| error.to_grpc())?;
        let message_count = queues
            .iter()
            .map(|queue| queue.max_offset - queue.min_offset)
            .sum();
        Ok(Response::new(TopicStatsResponse {
            topic: topic_name,
            queues,
            message_count,
        }))
    }
}
