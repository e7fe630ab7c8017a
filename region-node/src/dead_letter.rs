//! Dead letters: a message a consumer group gave up on moves to the group's
//! dead-letter topic `%DLQ%<group>` (RocketMQ's name), where it can be
//! consumed, inspected and sent again.
//!
//! A message moves when a redelivery would exceed the group's
//! `max_attempts` (the node decides, [`crate::consumer::Received::dead_letters`]),
//! or when a consumer asks with ForwardMessageToDeadLetterQueue (FIFO push
//! consumers, after their local retries). Either way the copy is appended
//! durably first and the original is acknowledged after, so a crash in
//! between leaves the original in flight and the move is made again. The
//! copy's dedup id is derived from the original's and the group's, so a
//! move made twice (after a crash, or by two regions at once) is one
//! message everywhere.

use meridian_proto::meridian::v1::{self as internal, Record, RecordKind};
use meridian_topology::dead_letter_topic_name;

/// User property naming the topic a dead letter came from (RocketMQ's
/// `MessageConst.PROPERTY_DLQ_ORIGIN_TOPIC`).
pub const ORIGIN_TOPIC_PROPERTY: &str = "DLQ_ORIGIN_TOPIC";
/// User property carrying the original message id (RocketMQ's
/// `MessageConst.PROPERTY_DLQ_ORIGIN_MESSAGE_ID`).
pub const ORIGIN_MESSAGE_ID_PROPERTY: &str = "DLQ_ORIGIN_MESSAGE_ID";
/// User property: how many times the group received the message before
/// giving up (Meridian's own).
pub const DELIVERY_ATTEMPTS_PROPERTY: &str = "DLQ_DELIVERY_ATTEMPTS";

/// The dead-letter copy, for `group`, of the message record `original`,
/// as a record born in `region` at `now_ms`: a normal message of the
/// group's dead-letter topic (queue 0) with the original's id, tag, keys,
/// message group, properties and body, plus the properties above. `None`
/// if `original` carries no message.
pub fn dead_letter_record(
    original: &Record,
    group: &str,
    attempts: u32,
    region: &str,
    now_ms: i64,
) -> Option<Record> {
    let message = original.message.as_ref()?;
    let mut user_properties = message.user_properties.clone();
    user_properties.insert(ORIGIN_TOPIC_PROPERTY.to_owned(), message.topic.clone());
    user_properties.insert(
        ORIGIN_MESSAGE_ID_PROPERTY.to_owned(),
        message.client_message_id.clone(),
    );
    user_properties.insert(DELIVERY_ATTEMPTS_PROPERTY.to_owned(), attempts.to_string());
    Some(Record {
        sequence: 0,
        kind: RecordKind::Message as i32,
        dedup_id: dead_letter_dedup_id(&original.dedup_id, group),
        origin_region: region.to_owned(),
        origin_sequence: 0,
        path: vec![region.to_owned()],
        ack: None,
        group_start: None,
        transaction_end: None,
        trace: None,
        catalog: None,
        message: Some(internal::Message {
            topic: dead_letter_topic_name(group),
            queue_id: 0,
            message_type: internal::MessageType::Normal as i32,
            delivery_timestamp_ms: None,
            user_properties,
            store_timestamp_ms: now_ms,
            ..message.clone()
        }),
    })
}

/// The dedup id of the dead-letter copy for `group` of the message whose
/// dedup id is `original`: the first 16 bytes of SHA-256 over both, marked
/// as a UUID of version 8 (custom). The same in every region.
fn dead_letter_dedup_id(original: &[u8], group: &str) -> Vec<u8> {
    crate::rules::derived_dedup_id(b"meridian dead letter\0", &[original, group.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original() -> Record {
        Record {
            kind: RecordKind::Message as i32,
            dedup_id: vec![7; 16],
            origin_region: "us-east".to_owned(),
            message: Some(internal::Message {
                client_message_id: "01ABC".to_owned(),
                topic: "orders".to_owned(),
                queue_id: 5,
                message_type: internal::MessageType::Delay as i32,
                delivery_timestamp_ms: Some(1),
                tag: Some("paid".to_owned()),
                body: b"body".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_dead_letter_keeps_the_message_and_names_where_it_came_from() {
        let copy = dead_letter_record(&original(), "billing", 17, "eu-west", 99).expect("copy");
        let message = copy.message.expect("a message");
        assert_eq!(message.topic, "%DLQ%billing");
        assert_eq!(message.queue_id, 0);
        assert_eq!(message.message_type, internal::MessageType::Normal as i32);
        assert_eq!(message.delivery_timestamp_ms, None);
        assert_eq!(message.client_message_id, "01ABC");
        assert_eq!(message.tag.as_deref(), Some("paid"));
        assert_eq!(message.body, b"body");
        assert_eq!(message.user_properties[ORIGIN_TOPIC_PROPERTY], "orders");
        assert_eq!(message.user_properties[ORIGIN_MESSAGE_ID_PROPERTY], "01ABC");
        assert_eq!(message.user_properties[DELIVERY_ATTEMPTS_PROPERTY], "17");
        assert_eq!(copy.origin_region, "eu-west");
        assert_eq!(copy.dedup_id.len(), 16);
    }

    #[test]
    fn the_same_move_has_the_same_dedup_id_everywhere() {
        let here = dead_letter_record(&original(), "billing", 17, "eu-west", 1).expect("copy");
        let there = dead_letter_record(&original(), "billing", 3, "us-east", 2).expect("copy");
        let other = dead_letter_record(&original(), "audit", 17, "eu-west", 1).expect("copy");
        assert_eq!(here.dedup_id, there.dedup_id);
        assert_ne!(here.dedup_id, other.dedup_id);
        assert_ne!(here.dedup_id, original().dedup_id);
    }
}
