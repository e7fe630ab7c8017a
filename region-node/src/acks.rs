//! Acknowledgements that cross regions.
//!
//! When a consumer group acknowledges a message here, and the message's
//! topic replicates to other regions, the node appends an acknowledgement
//! record (`RECORD_KIND_ACK`: group, topic, queue id and the message's dedup
//! id) to its commit log; replicators ship it like a message. Every region
//! that stores such a record finishes its own copy of the message for the
//! group ([`crate::consumer::ConsumerEngine::finish_replicated`]), found by
//! dedup id whatever its local queue offset. An acknowledgement that arrives
//! before its message is *held* (a storage entry keyed by the message's dedup
//! id) and applied when the message is stored. So a group that moves to
//! another region receives nothing it acknowledged, once the acknowledgements
//! have arrived there.
//!
//! Order of effects: a local ack is made durable in the group state first,
//! then its record is appended; a crash in between leaves that one
//! acknowledgement unreplicated (the other regions deliver the message again:
//! at least once). Applying an acknowledgement twice changes nothing.

use crate::consumer::{ConsumerEngine, ConsumerError, Finish};
use crate::storage::{Appended, Enqueued, LogStore, StorageError};
use meridian_proto::meridian::v1::{GroupAck, GroupStart, Record, RecordKind, TransactionEnd};
use meridian_topology::Topology;
use std::collections::BTreeSet;

/// What an append brought that concerns acknowledgements: taken from the
/// records before they are handed to the commit log.
#[derive(Debug, Clone)]
pub enum Arrival {
    /// A message brought from another region (held acks may wait for it).
    Message { dedup_id: Vec<u8> },
    /// An acknowledgement.
    Ack(GroupAck),
    /// A consumer group's start in another region.
    GroupStart(GroupStart),
    /// A transaction's outcome (from another region: applied here to this
    /// region's copy of its half message).
    TransactionEnd(TransactionEnd),
    /// Anything else (messages sent here: nothing can wait for them).
    Other,
}

impl Arrival {
    /// What `record` brings, for a node of `local_region`.
    pub fn of(record: &Record, local_region: &str) -> Arrival {
        if record.kind == RecordKind::Ack as i32 {
            return record.ack.clone().map_or(Arrival::Other, Arrival::Ack);
        }
        if record.kind == RecordKind::TransactionEnd as i32 {
            return record
                .transaction_end
                .clone()
                .map_or(Arrival::Other, Arrival::TransactionEnd);
        }
        if record.kind == RecordKind::GroupStart as i32 {
            return match &record.group_start {
                Some(start) if record.origin_region != local_region => {
                    Arrival::GroupStart(start.clone())
                }
                _ => Arrival::Other,
            };
        }
        if record.origin_region != local_region && record.message.is_some() {
            return Arrival::Message {
                dedup_id: record.dedup_id.clone(),
            };
        }
        Arrival::Other
    }
}

/// What applying acknowledgements (and transaction outcomes) did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Messages finished for a group.
    pub finished: usize,
    /// Acknowledgements held until their message arrives.
    pub held: usize,
    /// Group queues created by group starts from other regions.
    pub started: usize,
    /// Topics whose queues committed transactions' messages joined (their
    /// long polls are to be woken).
    pub committed: BTreeSet<String>,
}

/// Applies the acknowledgements an append stored, and those held for the
/// messages it stored. `arrivals` and `outcomes` are in record order.
pub fn apply_appended<S: LogStore>(
    store: &S,
    consumers: &ConsumerEngine<S>,
    topology: &Topology,
    arrivals: &[Arrival],
    outcomes: &[Appended],
) -> Result<Applied, ConsumerError> {
    let mut applied = Applied::default();
    // Acknowledgements whose message is stored, with its local offset.
    let mut ready: Vec<(GroupAck, u64)> = Vec::new();
    for (arrival, outcome) in arrivals.iter().zip(outcomes) {
        let Appended::Stored { sequence, .. } = outcome else {
            continue;
        };
        match arrival {
            Arrival::Ack(ack) => match store.find_message(&ack.message_dedup_id)? {
                Some((_, offset)) => ready.push((ack.clone(), offset)),
                None => {
                    store.hold_ack(&ack.message_dedup_id, *sequence)?;
                    // The message may have been stored by another Apply
                    // between the lookup and the hold, and its scan for held
                    // acks missed this one: look again (finishing twice is
                    // harmless).
                    match store.find_message(&ack.message_dedup_id)? {
                        Some((_, offset)) => {
                            ready.push((ack.clone(), offset));
                            for held in store.take_held_acks(&ack.message_dedup_id)? {
                                if let Some(other) = store.get(held)?.and_then(|record| record.ack)
                                {
                                    ready.push((other, offset));
                                }
                            }
                        }
                        None => applied.held += 1,
                    }
                }
            },
            Arrival::Message { dedup_id } => {
                // A message with a delivery time is in no queue yet: its
                // held acknowledgements wait for `apply_enqueued`.
                let Some((_, offset)) = store.find_message(dedup_id)? else {
                    continue;
                };
                for ack_sequence in store.take_held_acks(dedup_id)? {
                    if let Some(ack) = store.get(ack_sequence)?.and_then(|record| record.ack) {
                        ready.push((ack, offset));
                    }
                }
            }
            // Applied at once: acknowledgements of the group that follow
            // it (in this batch too) then finish messages of the created queue.
            Arrival::GroupStart(start) => {
                if consumers.start_replicated(start)? {
                    applied.started += 1;
                }
            }
            Arrival::TransactionEnd(end) => {
                applied.committed.extend(crate::transactions::apply_end(
                    store,
                    consumers,
                    topology,
                    end,
                    crate::grpc::convert::now_ms(),
                )?);
            }
            Arrival::Other => {}
        }
    }
    applied.finished = finish_ready(consumers, topology, &ready)?;
    Ok(applied)
}

/// Finishes each acknowledged message of `ready` (the acknowledgement, and
/// the message's local queue offset) for its group, in one group-state write.
fn finish_ready<S: LogStore>(
    consumers: &ConsumerEngine<S>,
    topology: &Topology,
    ready: &[(GroupAck, u64)],
) -> Result<usize, ConsumerError> {
    let finishes: Vec<Finish<'_>> = ready
        .iter()
        .map(|(ack, offset)| Finish {
            group: &ack.group,
            topic: &ack.topic,
            queue_id: ack.queue_id,
            offset: *offset,
            consume_from: topology
                .topic(&ack.topic)
                .map(|topic| topic.consume_from)
                .unwrap_or_default(),
        })
        .collect();
    consumers.finish_replicated(&finishes)
}

/// Applies the acknowledgements held for messages that just left the timer
/// index for their queues (an acknowledgement made in a region where the
/// message was due earlier, by that region's clock). Returns how many
/// messages were finished.
pub fn apply_enqueued<S: LogStore>(
    store: &S,
    consumers: &ConsumerEngine<S>,
    topology: &Topology,
    enqueued: &[Enqueued],
) -> Result<usize, ConsumerError> {
    let mut ready: Vec<(GroupAck, u64)> = Vec::new();
    for message in enqueued {
        for ack_sequence in store.take_held_acks(&message.dedup_id)? {
            if let Some(ack) = store.get(ack_sequence)?.and_then(|record| record.ack) {
                ready.push((ack, message.offset));
            }
        }
    }
    finish_ready(consumers, topology, &ready)
}

/// The acknowledgement records of messages `group` finished here, for a
/// topic that replicates to other regions: one per (queue id, offset) whose
/// message is still retained.
pub fn records_for_local_acks<S: LogStore>(
    store: &S,
    local_region: &str,
    group: &str,
    topic: &str,
    finished: &[(i32, u64)],
) -> Result<Vec<Record>, StorageError> {
    let mut records = Vec::with_capacity(finished.len());
    let acked_at_ms = crate::grpc::convert::now_ms();
    for &(queue_id, offset) in finished {
        let Some((_, message)) = store
            .read_queue(topic, queue_id, offset, 1)?
            .into_iter()
            .find(|(found, _)| *found == offset)
        else {
            continue;
        };
        records.push(Record {
            sequence: 0,
            kind: RecordKind::Ack as i32,
            dedup_id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            origin_region: local_region.to_owned(),
            origin_sequence: 0,
            path: vec![local_region.to_owned()],
            message: None,
            ack: Some(GroupAck {
                group: group.to_owned(),
                topic: topic.to_owned(),
                queue_id,
                message_dedup_id: message.dedup_id,
                acked_at_ms,
            }),
            group_start: None,
            transaction_end: None,
            trace: None,
            catalog: None,
        });
    }
    Ok(records)
}

/// The group-start records of the group queues a receive created here
/// (`created`: queue id and start offset), for a topic that starts new groups
/// at the end and replicates to other regions; none otherwise.
pub fn records_for_group_starts<S: LogStore>(
    consumers: &ConsumerEngine<S>,
    topology: &Topology,
    local_region: &str,
    group: &str,
    topic: &str,
    created: &[(i32, u64)],
) -> Result<Vec<Record>, StorageError> {
    // Every receive passes here; nearly all created nothing.
    if created.is_empty() {
        return Ok(Vec::new());
    }
    let latest = topology
        .topic(topic)
        .is_some_and(|spec| spec.consume_from == meridian_topology::ConsumeFrom::Latest);
    if !latest || !replicates_elsewhere(topology, topic, local_region) {
        return Ok(Vec::new());
    }
    let created_at_ms = crate::grpc::convert::now_ms();
    let mut records = Vec::with_capacity(created.len());
    for &(queue_id, start) in created {
        let marks = consumers.origin_marks(topic, queue_id, start, topology.regions.len())?;
        records.push(Record {
            kind: RecordKind::GroupStart as i32,
            dedup_id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            origin_region: local_region.to_owned(),
            path: vec![local_region.to_owned()],
            group_start: Some(GroupStart {
                group: group.to_owned(),
                topic: topic.to_owned(),
                queue_id,
                created_at_ms,
                marks,
            }),
            ..Record::default()
        });
    }
    Ok(records)
}

/// Whether `topic` replicates to a region other than `local_region`.
pub fn replicates_elsewhere(topology: &Topology, topic: &str, local_region: &str) -> bool {
    topology.topic(topic).is_some_and(|topic| {
        topic
            .replicate_to
            .iter()
            .any(|region| region != local_region)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;
    use std::sync::Arc;

    fn topology() -> Topology {
        Topology::demo(std::path::Path::new("/tmp/acks"))
    }

    fn message(origin: &str) -> Record {
        let mut record = crate::test_records::message_record(0, b"body");
        record.origin_region = origin.to_owned();
        if let Some(message) = record.message.as_mut() {
            message.topic = "demo".to_owned();
        }
        record
    }

    /// An ack record of group `g` for `message`, as region `origin` writes it.
    fn ack_of(message: &Record, origin: &str) -> Record {
        Record {
            kind: RecordKind::Ack as i32,
            dedup_id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            origin_region: origin.to_owned(),
            path: vec![origin.to_owned()],
            ack: Some(GroupAck {
                group: "g".to_owned(),
                topic: "demo".to_owned(),
                queue_id: 0,
                message_dedup_id: message.dedup_id.clone(),
                acked_at_ms: 0,
            }),
            ..Record::default()
        }
    }

    fn append(
        store: &Arc<MemoryStore>,
        consumers: &ConsumerEngine<MemoryStore>,
        records: Vec<Record>,
    ) -> Applied {
        let arrivals: Vec<Arrival> = records
            .iter()
            .map(|record| Arrival::of(record, "eu-west"))
            .collect();
        let outcomes = store.append(records, "eu-west").expect("append");
        apply_appended(store.as_ref(), consumers, &topology(), &arrivals, &outcomes).expect("apply")
    }

    fn receive_all(consumers: &ConsumerEngine<MemoryStore>) -> usize {
        received(consumers, meridian_topology::ConsumeFrom::Earliest).len()
    }

    /// The bodies one receive of group `g` gets, the group starting at
    /// `consume_from` if new.
    fn received(
        consumers: &ConsumerEngine<MemoryStore>,
        consume_from: meridian_topology::ConsumeFrom,
    ) -> Vec<String> {
        let filter = crate::consumer::Filter::All;
        consumers
            .receive(&crate::consumer::ReceiveRequest {
                group: "g",
                topic: "demo",
                queue_count: 1,
                consume_from,
                filter: &filter,
                max_messages: 32,
                max_bytes: usize::MAX,
                invisible_ms: 10_000,
                max_attempts: 17,
                fifo: false,
                now_ms: 1_700_000_000_000,
            })
            .expect("receive")
            .deliveries
            .into_iter()
            .map(|delivery| {
                String::from_utf8(delivery.record.message.expect("a message").body)
                    .unwrap_or_default()
            })
            .collect()
    }

    /// A message of `origin` with origin sequence `sequence`, with a body
    /// naming both.
    fn numbered(origin: &str, sequence: u64) -> Record {
        let mut record = message(origin);
        record.origin_sequence = sequence;
        if let Some(message) = record.message.as_mut() {
            message.body = format!("{origin} {sequence}").into_bytes();
        }
        record
    }

    fn group_start(marks: &[(&str, u64)]) -> Record {
        Record {
            kind: RecordKind::GroupStart as i32,
            dedup_id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            origin_region: "us-east".to_owned(),
            path: vec!["us-east".to_owned()],
            group_start: Some(GroupStart {
                group: "g".to_owned(),
                topic: "demo".to_owned(),
                queue_id: 0,
                created_at_ms: 0,
                marks: marks
                    .iter()
                    .map(
                        |(origin, sequence)| meridian_proto::meridian::v1::OriginMark {
                            origin_region: (*origin).to_owned(),
                            origin_sequence: *sequence,
                        },
                    )
                    .collect(),
            }),
            ..Record::default()
        }
    }

    fn received_bodies(consumers: &ConsumerEngine<MemoryStore>) -> Vec<String> {
        received(consumers, meridian_topology::ConsumeFrom::Latest)
    }

    #[test]
    fn a_group_started_elsewhere_starts_here_after_the_same_messages_per_origin() {
        let store = Arc::new(MemoryStore::new());
        let consumers = ConsumerEngine::load(store.clone(), "eu-west".into()).expect("load");
        // Here, on-prem's second message arrived before us-east's second.
        append(
            &store,
            &consumers,
            vec![
                numbered("us-east", 1),
                numbered("on-prem", 1),
                numbered("on-prem", 2),
                numbered("us-east", 2),
                numbered("us-east", 3),
            ],
        );
        // us-east created the group when it held us-east 1 and on-prem 1..=2.
        let applied = append(
            &store,
            &consumers,
            vec![group_start(&[("us-east", 1), ("on-prem", 2)])],
        );
        assert_eq!(applied.started, 1);
        // A second start of the same group changes nothing.
        let again = append(&store, &consumers, vec![group_start(&[("us-east", 3)])]);
        assert_eq!(again.started, 0);
        // Later messages of either origin are after the start.
        append(&store, &consumers, vec![numbered("on-prem", 3)]);
        assert_eq!(
            received_bodies(&consumers),
            ["us-east 2", "us-east 3", "on-prem 3"]
        );
    }

    #[test]
    fn a_group_started_on_an_empty_queue_gets_everything() {
        let store = Arc::new(MemoryStore::new());
        let consumers = ConsumerEngine::load(store.clone(), "eu-west".into()).expect("load");
        append(&store, &consumers, vec![numbered("us-east", 1)]);
        append(&store, &consumers, vec![group_start(&[])]);
        assert_eq!(received_bodies(&consumers), ["us-east 1"]);
    }

    #[test]
    fn origin_marks_name_the_last_message_of_each_origin_before_the_start() {
        let store = Arc::new(MemoryStore::new());
        let consumers = ConsumerEngine::load(store.clone(), "eu-west".into()).expect("load");
        append(
            &store,
            &consumers,
            vec![
                numbered("us-east", 1),
                numbered("on-prem", 7),
                numbered("us-east", 2),
                numbered("us-east", 3),
            ],
        );
        let marks = consumers.origin_marks("demo", 0, 3, 3).expect("marks");
        let marks: Vec<(&str, u64)> = marks
            .iter()
            .map(|mark| (mark.origin_region.as_str(), mark.origin_sequence))
            .collect();
        assert_eq!(marks, [("on-prem", 7), ("us-east", 2)]);
    }

    #[test]
    fn an_ack_from_another_region_finishes_the_local_copy() {
        let store = Arc::new(MemoryStore::new());
        let consumers = ConsumerEngine::load(store.clone(), "eu-west".into()).expect("load");
        let first = message("us-east");
        let second = message("us-east");
        append(&store, &consumers, vec![first.clone(), second]);
        let applied = append(&store, &consumers, vec![ack_of(&first, "us-east")]);
        assert_eq!(
            applied,
            Applied {
                finished: 1,
                held: 0,
                started: 0,
                ..Applied::default()
            }
        );
        assert_eq!(
            receive_all(&consumers),
            1,
            "only the unacknowledged message"
        );
    }

    #[test]
    fn an_ack_before_its_message_is_held_then_applied() {
        let store = Arc::new(MemoryStore::new());
        let consumers = ConsumerEngine::load(store.clone(), "eu-west".into()).expect("load");
        let early = message("us-east");
        let applied = append(&store, &consumers, vec![ack_of(&early, "us-east")]);
        assert_eq!(
            applied,
            Applied {
                finished: 0,
                held: 1,
                started: 0,
                ..Applied::default()
            }
        );
        let applied = append(&store, &consumers, vec![early, message("us-east")]);
        assert_eq!(
            applied,
            Applied {
                finished: 1,
                held: 0,
                started: 0,
                ..Applied::default()
            }
        );
        assert_eq!(receive_all(&consumers), 1);
        assert!(store.take_held_acks(&[0; 16]).expect("take").is_empty());
    }

    #[test]
    fn a_resent_ack_is_a_duplicate_and_changes_nothing() {
        let store = Arc::new(MemoryStore::new());
        let consumers = ConsumerEngine::load(store.clone(), "eu-west".into()).expect("load");
        let first = message("us-east");
        append(&store, &consumers, vec![first.clone()]);
        let ack = ack_of(&first, "us-east");
        append(&store, &consumers, vec![ack.clone()]);
        let again = append(&store, &consumers, vec![ack]);
        assert_eq!(again, Applied::default());
    }

    #[test]
    fn local_acks_become_records_naming_the_message() {
        let store = Arc::new(MemoryStore::new());
        let sent = message("eu-west");
        store.append(vec![sent.clone()], "eu-west").expect("append");
        let records =
            records_for_local_acks(store.as_ref(), "eu-west", "g", "demo", &[(0, 0), (0, 9)])
                .expect("records");
        assert_eq!(records.len(), 1, "offset 9 holds no message");
        let ack = records[0].ack.as_ref().expect("an ack");
        assert_eq!(ack.message_dedup_id, sent.dedup_id);
        assert_eq!(records[0].kind, RecordKind::Ack as i32);
        assert!(replicates_elsewhere(&topology(), "demo", "eu-west"));
    }
}
