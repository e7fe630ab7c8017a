//! The rules every record obeys before it enters the commit log, whether a
//! client sent its message to this region or a replicator brought it from
//! another: one check for both paths ([`check_record`]). Storage keeps only
//! the structural checks its own layout needs.
//!
//! What a client's send must also satisfy (a message id, a supported message
//! type, a delivery time at most 40 days ahead) is checked where the message
//! becomes a record (`grpc::convert::record_from_client`): a record brought
//! from another region was checked there by its origin.

use crate::error::NodeError;
use crate::storage::DEDUP_ID_BYTES;
use meridian_proto::meridian::v1::{MessageType as RecordType, Record, RecordKind};
use meridian_topology::{MessageType, Topology};
use std::collections::BTreeMap;

/// Checks `record` against the rules and the topology: record kind, dedup id
/// length, origin, topic, queue range, message type accepted by the topic,
/// and body size (at most [`meridian_proto::MAX_BODY_BYTES`]: how a body of
/// that size reaches each client is `meridian_face::delivery`'s business).
pub fn check_record(record: &Record, topology: &Topology) -> Result<(), NodeError> {
    let invalid = |reason: String| NodeError::InvalidRecord { reason };
    if record.kind == RecordKind::Ack as i32 {
        return check_ack(record, topology);
    }
    if record.kind == RecordKind::GroupStart as i32 {
        return check_group_start(record, topology);
    }
    if record.kind == RecordKind::TransactionEnd as i32 {
        return check_transaction_end(record, topology);
    }
    if record.kind == RecordKind::Trace as i32 {
        return check_trace(record, topology);
    }
    if record.kind == RecordKind::Catalog as i32 {
        return check_catalog(record);
    }
    if record.kind != RecordKind::Message as i32 {
        return Err(invalid(format!("unknown record kind {}", record.kind)));
    }
    if record.dedup_id.len() != DEDUP_ID_BYTES {
        return Err(invalid(format!(
            "dedup id has {} bytes, expected {DEDUP_ID_BYTES}",
            record.dedup_id.len()
        )));
    }
    if record.origin_region.is_empty() {
        return Err(invalid("no origin region".into()));
    }
    let Some(message) = record.message.as_ref() else {
        return Err(invalid("message record without a message".into()));
    };
    let Some(topic) = topology.topic(&message.topic) else {
        return Err(NodeError::TopicNotFound {
            topic: message.topic.clone(),
        });
    };
    if message.queue_id < 0 || message.queue_id >= i32::from(topic.queues) {
        return Err(NodeError::IllegalQueue {
            topic: message.topic.clone(),
            queue_id: message.queue_id,
            queues: topic.queues,
        });
    }
    let message_type = match RecordType::try_from(message.message_type) {
        Ok(RecordType::Normal) => MessageType::Normal,
        Ok(RecordType::Fifo) => MessageType::Fifo,
        Ok(RecordType::Delay) => MessageType::Delay,
        Ok(RecordType::Transaction) => MessageType::Transaction,
        _ => {
            return Err(invalid(format!(
                "unknown message type {}",
                message.message_type
            )));
        }
    };
    if !topic.message_types.contains(&message_type) {
        return Err(NodeError::MessageTypeNotAccepted {
            topic: message.topic.clone(),
            message_type: message_type.as_str(),
        });
    }
    if message.body.len() > meridian_proto::MAX_BODY_BYTES {
        return Err(NodeError::BodyTooLarge {
            size: message.body.len(),
            limit: meridian_proto::MAX_BODY_BYTES,
        });
    }
    Ok(())
}

/// The topics a region refuses sends of, computed once from the topology:
/// those whose messages could not reach every region of their
/// `replicate_to` from here (records travel only between connected
/// replicators and through regions of the topic: a private site none of
/// whose hubs hold the topic, for one). Validation guarantees this for the
/// regions of `replicate_to` themselves.
#[derive(Debug, Clone, Default)]
pub struct ServedTopics {
    region: String,
    /// Topic → (the regions it cannot reach, its `replicate_to`), joined.
    unserved: BTreeMap<String, (String, String)>,
    /// The same for dead-letter topics (one policy for all), if unserved.
    dead_letters: Option<(String, String)>,
}

impl ServedTopics {
    pub fn new(topology: &Topology, region: &str) -> ServedTopics {
        let unserved = |topic: &meridian_topology::Topic| {
            let unreached = topology.unreached_from(topic, region);
            (!unreached.is_empty()).then(|| (unreached.join(", "), topic.replicate_to.join(", ")))
        };
        ServedTopics {
            region: region.to_owned(),
            unserved: topology
                .topics
                .iter()
                .filter_map(|(name, topic)| Some((name.clone(), unserved(topic)?)))
                .collect(),
            dead_letters: unserved(&topology.dead_letter_topic()),
        }
    }

    /// `Ok` when a send of `topic` may be taken here.
    pub fn check(&self, topic: &str) -> Result<(), NodeError> {
        let unserved = self.unserved.get(topic).or_else(|| {
            meridian_topology::dead_letter_group(topic).and(self.dead_letters.as_ref())
        });
        match unserved {
            None => Ok(()),
            Some((unreached, serving)) => Err(NodeError::TopicNotServedHere {
                topic: topic.to_owned(),
                region: self.region.clone(),
                unreached: unreached.clone(),
                serving: serving.clone(),
            }),
        }
    }
}

/// The rules of an acknowledgement record: dedup id, origin, a group, a
/// known topic, a queue in range and a message dedup id, and no message.
fn check_ack(record: &Record, topology: &Topology) -> Result<(), NodeError> {
    let invalid = |reason: String| NodeError::InvalidRecord { reason };
    if record.dedup_id.len() != DEDUP_ID_BYTES || record.origin_region.is_empty() {
        return Err(invalid(
            "acknowledgement without a 16-byte dedup id or an origin".into(),
        ));
    }
    let Some(ack) = record.ack.as_ref() else {
        return Err(invalid("acknowledgement record without an ack".into()));
    };
    if record.message.is_some() {
        return Err(invalid("acknowledgement record with a message".into()));
    }
    if ack.group.is_empty() || ack.message_dedup_id.len() != DEDUP_ID_BYTES {
        return Err(invalid(
            "acknowledgement without a group or a 16-byte message dedup id".into(),
        ));
    }
    let Some(topic) = topology.topic(&ack.topic) else {
        return Err(NodeError::TopicNotFound {
            topic: ack.topic.clone(),
        });
    };
    if ack.queue_id < 0 || ack.queue_id >= i32::from(topic.queues) {
        return Err(NodeError::IllegalQueue {
            topic: ack.topic.clone(),
            queue_id: ack.queue_id,
            queues: topic.queues,
        });
    }
    Ok(())
}

/// The rules of a transaction outcome: dedup id, origin, a known topic, a
/// 16-byte half-message dedup id, and no message or ack.
fn check_transaction_end(record: &Record, topology: &Topology) -> Result<(), NodeError> {
    let invalid = |reason: String| NodeError::InvalidRecord { reason };
    if record.dedup_id.len() != DEDUP_ID_BYTES || record.origin_region.is_empty() {
        return Err(invalid(
            "transaction outcome without a 16-byte dedup id or an origin".into(),
        ));
    }
    let Some(end) = record.transaction_end.as_ref() else {
        return Err(invalid(
            "transaction outcome record without its transaction".into(),
        ));
    };
    if record.message.is_some() || record.ack.is_some() || record.group_start.is_some() {
        return Err(invalid(
            "transaction outcome record with a message, an ack or a group start".into(),
        ));
    }
    if end.message_dedup_id.len() != DEDUP_ID_BYTES {
        return Err(invalid(
            "transaction outcome without a 16-byte half-message dedup id".into(),
        ));
    }
    if topology.topic(&end.topic).is_none() {
        return Err(NodeError::TopicNotFound {
            topic: end.topic.clone(),
        });
    }
    Ok(())
}

/// The rules of a catalog record: dedup id, origin, and a change of a named
/// topic or group (its definition is checked when it is laid over the
/// topology, see `crate::catalog`).
fn check_catalog(record: &Record) -> Result<(), NodeError> {
    let invalid = |reason: String| NodeError::InvalidRecord { reason };
    if record.dedup_id.len() != DEDUP_ID_BYTES || record.origin_region.is_empty() {
        return Err(invalid(
            "catalog record without a 16-byte dedup id or an origin".into(),
        ));
    }
    match record.catalog.as_ref() {
        Some(change) if !change.name.is_empty() && crate::catalog::entry_of(change).is_some() => {
            Ok(())
        }
        _ => Err(invalid(
            "catalog record without a change of a named topic or group".into(),
        )),
    }
}

/// The rules of a trace record: dedup id, origin, a known topic, events
/// about 16-byte message dedup ids, and nothing else.
fn check_trace(record: &Record, topology: &Topology) -> Result<(), NodeError> {
    let invalid = |reason: String| NodeError::InvalidRecord { reason };
    if record.dedup_id.len() != DEDUP_ID_BYTES || record.origin_region.is_empty() {
        return Err(invalid(
            "trace record without a 16-byte dedup id or an origin".into(),
        ));
    }
    let Some(trace) = record.trace.as_ref() else {
        return Err(invalid("trace record without events".into()));
    };
    if record.message.is_some() || record.ack.is_some() || record.transaction_end.is_some() {
        return Err(invalid(
            "trace record with a message, an ack or a transaction outcome".into(),
        ));
    }
    if trace
        .events
        .iter()
        .any(|event| event.message_dedup_id.len() != DEDUP_ID_BYTES)
    {
        return Err(invalid(
            "trace event without a 16-byte message dedup id".into(),
        ));
    }
    if topology.topic(&trace.topic).is_none() {
        return Err(NodeError::TopicNotFound {
            topic: trace.topic.clone(),
        });
    }
    Ok(())
}

/// A dedup id derived from others, the same in every region: the first 16
/// bytes of SHA-256 over `label` and `parts`, marked as a UUID of version 8
/// (custom). Records that stand for one event wherever they are made (a
/// dead-letter move, a transaction's outcome) get one, so two regions making
/// the same record store it once.
pub fn derived_dedup_id(label: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    hasher.update(label);
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut id = digest[..DEDUP_ID_BYTES].to_vec();
    id[6] = (id[6] & 0x0f) | 0x80;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

fn check_group_start(record: &Record, topology: &Topology) -> Result<(), NodeError> {
    let invalid = |reason: String| NodeError::InvalidRecord { reason };
    if record.dedup_id.len() != DEDUP_ID_BYTES || record.origin_region.is_empty() {
        return Err(invalid(
            "group start without a 16-byte dedup id or an origin".into(),
        ));
    }
    let Some(start) = record.group_start.as_ref() else {
        return Err(invalid("group start record without its group".into()));
    };
    if record.message.is_some() || record.ack.is_some() {
        return Err(invalid(
            "group start record with a message or an ack".into(),
        ));
    }
    if start.group.is_empty() {
        return Err(invalid("group start without a group".into()));
    }
    let Some(topic) = topology.topic(&start.topic) else {
        return Err(NodeError::TopicNotFound {
            topic: start.topic.clone(),
        });
    };
    if start.queue_id < 0 || start.queue_id >= i32::from(topic.queues) {
        return Err(NodeError::IllegalQueue {
            topic: start.topic.clone(),
            queue_id: start.queue_id,
            queues: topic.queues,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        Topology::demo(std::path::Path::new("/tmp/rules"))
    }

    fn record() -> Record {
        let mut record = crate::test_records::message_record(0, b"body");
        if let Some(message) = record.message.as_mut() {
            message.topic = "demo".into();
            message.message_type = RecordType::Normal as i32;
        }
        record
    }

    fn refused(change: impl FnOnce(&mut Record)) -> NodeError {
        let mut record = record();
        change(&mut record);
        check_record(&record, &topology()).expect_err("refused")
    }

    #[test]
    fn a_site_whose_hubs_do_not_hold_a_topic_does_not_serve_it() {
        let mut topology = topology();
        topology.regions.get_mut("on-prem").expect("on-prem").hubs = vec!["eu-west".to_owned()];
        let mut us_only = topology.topics["demo"].clone();
        us_only.replicate_to = vec!["us-east".to_owned()];
        topology.topics.insert("us-only".to_owned(), us_only);
        let served = |region: &str| ServedTopics::new(&topology, region);
        served("eu-west")
            .check("us-only")
            .expect("eu-west reaches us-east");
        served("us-east").check("us-only").expect("its own region");
        let error = served("on-prem")
            .check("us-only")
            .expect_err("on-prem reaches us-east only through eu-west, which lacks the topic");
        let text = error.to_string();
        assert!(text.contains("not served in region on-prem"), "{text}");
        assert!(text.contains("could not reach us-east"), "{text}");
    }

    #[test]
    fn a_valid_record_passes() {
        check_record(&record(), &topology()).expect("valid");
    }

    #[test]
    fn each_rule_refuses_with_its_own_error() {
        assert!(matches!(
            refused(|record| record.dedup_id.truncate(15)),
            NodeError::InvalidRecord { .. }
        ));
        assert!(matches!(
            refused(|record| record.origin_region.clear()),
            NodeError::InvalidRecord { .. }
        ));
        assert!(matches!(
            refused(|record| record.message = None),
            NodeError::InvalidRecord { .. }
        ));
        let message = |record: &mut Record| record.message.as_mut().expect("message").clone();
        assert!(matches!(
            refused(|record| {
                let mut changed = message(record);
                changed.topic = "nope".into();
                record.message = Some(changed);
            }),
            NodeError::TopicNotFound { .. }
        ));
        for queue_id in [-1, 8] {
            assert!(matches!(
                refused(|record| record.message.as_mut().expect("message").queue_id = queue_id),
                NodeError::IllegalQueue { .. }
            ));
        }
        assert!(matches!(
            refused(|record| record.message.as_mut().expect("message").message_type = 99),
            NodeError::InvalidRecord { .. }
        ));
        assert!(matches!(
            refused(|record| {
                record.message.as_mut().expect("message").body =
                    vec![0; meridian_proto::MAX_BODY_BYTES + 1]
            }),
            NodeError::BodyTooLarge { .. }
        ));
    }
}
