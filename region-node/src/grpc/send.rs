//! SendMessage on the node: each message turned into a record
//! (`convert::record_from_client`) and checked by the record rules
//! (`rules::check_record`), the valid ones appended together through group
//! commit.

use super::backend::NodeBackend;
use super::convert::{self, now_ms};
use crate::error::NodeError;
use crate::rules;
use crate::storage::{Appended, LogStore};
use meridian_face::{Refusal, SendReceipt};
use meridian_proto::rocketmq::v2::Message;
use meridian_topology::Durability;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Whether `record` is a half message (a transactional message).
fn is_half_message(record: &meridian_proto::meridian::v1::Record) -> bool {
    record.message.as_ref().is_some_and(|message| {
        message.message_type == meridian_proto::meridian::v1::MessageType::Transaction as i32
    })
}

/// Longest a geo-durable send waits for other regions to apply it: below
/// the official clients' 3 s request timeout, so they get this node's answer
/// (`SLAVE_PERSISTENCE_TIMEOUT`) rather than a deadline error.
const GEO_WAIT: Duration = Duration::from_millis(2_500);

impl<S: LogStore> NodeBackend<S> {
    /// For a topic with `durability = "geo"`, waits until `geo_copies` other
    /// regions of its `replicate_to` that this region's replicator connects
    /// to confirmed the local sequence `sequence` (their replication
    /// checkpoints toward this node), at most [`GEO_WAIT`].
    /// Concurrent sends wait on the same checkpoint moves, so the cost is
    /// about one replication round trip, not one per message.
    async fn wait_geo(&self, topic: &str, sequence: u64) -> Result<(), NodeError> {
        let topology = self.context.topology.get();
        let Some(spec) = topology.topic(topic) else {
            return Ok(());
        };
        if spec.durability != Durability::Geo {
            return Ok(());
        }
        let region = &self.context.region;
        let peers: Vec<&str> = spec
            .replicate_to
            .iter()
            .map(String::as_str)
            // The origin sends its records to its neighbours itself, so
            // their checkpoints confirm them (others get them forwarded).
            .filter(|peer| {
                self.context
                    .topology
                    .get()
                    .replication_neighbours_are(region, peer)
            })
            .collect();
        let needed = usize::from(spec.geo_copies);
        let mut checkpoints = self.context.checkpoints.subscribe();
        let started = std::time::Instant::now();
        let confirmed = tokio::time::timeout(
            GEO_WAIT,
            checkpoints.wait_for(|checkpoints| {
                peers
                    .iter()
                    .filter(|peer| {
                        checkpoints
                            .get(**peer)
                            .is_some_and(|done| *done >= sequence)
                    })
                    .count()
                    >= needed
            }),
        )
        .await;
        match confirmed {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(NodeError::GeoDurabilityTimeout {
                topic: topic.to_owned(),
                copies: spec.geo_copies,
                waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    /// Gives the answer of each stored half message its transaction id:
    /// this region and the dedup id of the stored copy (a producer's retry
    /// gets the id of the copy stored first).
    async fn name_transactions(
        &self,
        outcomes: &mut [Result<SendReceipt, Refusal>],
        record_message: &[usize],
        half_messages: &[bool],
        appended: &[Appended],
    ) {
        let sequences: Vec<(usize, u64)> = record_message
            .iter()
            .zip(half_messages)
            .zip(appended)
            .filter(|((_, half), _)| **half)
            .map(|((index, _), outcome)| match outcome {
                Appended::Stored { sequence, .. } | Appended::Duplicate { sequence, .. } => {
                    (*index, *sequence)
                }
            })
            .collect();
        if sequences.is_empty() {
            return;
        }
        let read = self
            .context
            .blocking(move |store, _| {
                let mut named = Vec::with_capacity(sequences.len());
                for (index, sequence) in sequences {
                    if let Some(record) = store.get(sequence)? {
                        named.push((index, record.dedup_id));
                    }
                }
                Ok(named)
            })
            .await;
        match read {
            Ok(named) => {
                for (index, dedup_id) in named {
                    if let Ok(receipt) = &mut outcomes[index] {
                        receipt.transaction_id =
                            crate::transactions::transaction_id(&self.context.region, &dedup_id);
                    }
                }
            }
            Err(error) => {
                for index in record_message {
                    if half_messages.get(*index).copied().unwrap_or(false) {
                        outcomes[*index] = Err(error.refusal());
                    }
                }
            }
        }
    }

    /// One outcome per message, in order; `client_id` is the producer's.
    pub(super) async fn send_messages(
        &self,
        client_id: &str,
        messages: Vec<Message>,
    ) -> Vec<Result<SendReceipt, Refusal>> {
        let now = now_ms();
        let mut outcomes: Vec<Result<SendReceipt, Refusal>> = Vec::with_capacity(messages.len());
        let mut records = Vec::new();
        // For each record, the index of its message.
        let mut record_message = Vec::new();
        // For each record, whether it is a half message (its answer carries
        // a transaction id).
        let mut half_messages = Vec::new();
        for message in &messages {
            let message_id = message
                .system_properties
                .as_ref()
                .map(|properties| properties.message_id.clone())
                .unwrap_or_default();
            let built = self
                .topic(message.topic.as_ref())
                .and_then(|(name, spec)| {
                    if let Some(group) = meridian_topology::dead_letter_group(&name) {
                        return Err(NodeError::DeadLetterTopicReadOnly {
                            group: group.to_owned(),
                            topic: name,
                        });
                    }
                    self.context.topology.served().check(&name)?;
                    convert::record_from_client(
                        message,
                        &name,
                        spec.queues,
                        &self.context.region,
                        now,
                    )
                })
                .and_then(|mut record| {
                    if let Some(message) = record.message.as_mut() {
                        message.producer_client_id = client_id.to_owned();
                    }
                    rules::check_record(&record, &self.context.topology.get())?;
                    Ok(record)
                });
            match built {
                Ok(record) => {
                    half_messages.push(is_half_message(&record));
                    record_message.push(outcomes.len());
                    records.push(record);
                    outcomes.push(Ok(SendReceipt {
                        message_id,
                        ..SendReceipt::default()
                    }));
                }
                Err(error) => {
                    tracing::debug!(error = %error, %message_id, "send refused");
                    outcomes.push(Err(error.refusal()));
                }
            }
        }
        if records.is_empty() {
            return outcomes;
        }
        let topics = crate::commit::record_topics(&records);
        match self.context.commit.append(records).await {
            Ok(appended) => {
                // Geo-durable topics: answer once other regions applied them.
                let waits = record_message.iter().zip(&appended).zip(&topics).map(
                    |((index, outcome), topic)| {
                        let sequence = match outcome {
                            Appended::Stored { sequence, .. }
                            | Appended::Duplicate { sequence, .. } => *sequence,
                        };
                        async move { (*index, self.wait_geo(topic, sequence).await) }
                    },
                );
                for (index, waited) in futures::future::join_all(waits).await {
                    if let Err(error) = waited {
                        tracing::warn!(error = %error, "geo-durable send not confirmed in time");
                        outcomes[index] = Err(error.refusal());
                    }
                }
                self.name_transactions(&mut outcomes, &record_message, &half_messages, &appended)
                    .await;
                for (index, outcome) in record_message.into_iter().zip(appended) {
                    let Ok(receipt) = &mut outcomes[index] else {
                        continue;
                    };
                    let offset = match outcome {
                        Appended::Stored {
                            queue_offset,
                            reused_client_id,
                            ..
                        } => {
                            if reused_client_id {
                                self.context
                                    .reused_client_ids
                                    .fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(
                                    message_id = %receipt.message_id,
                                    "a different message with this message id is already stored; \
                                     stored this one too (producers' message ids are not unique)"
                                );
                            }
                            queue_offset
                        }
                        // A producer's retry of a stored message is told the
                        // offset of the stored copy, in the queue that copy
                        // went to (a retry may name another).
                        Appended::Duplicate { queue_offset, .. } => queue_offset,
                    };
                    if let Some(offset) = offset {
                        receipt.offset = i64::try_from(offset).unwrap_or(i64::MAX);
                    }
                }
            }
            Err(error) => {
                let error = NodeError::from(error);
                tracing::error!(error = %meridian_report::Report(&error), "send failed");
                let refusal = error.refusal();
                for index in record_message {
                    outcomes[index] = Err(refusal.clone());
                }
            }
        }
        outcomes
    }
}
