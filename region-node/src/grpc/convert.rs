//! Between RocketMQ messages (what clients send and receive) and commit-log records.

use crate::consumer::Delivery;
use crate::error::NodeError;
use md5::{Digest as _, Md5};
use meridian_proto::meridian::v1::{self as internal, Record, RecordKind};
use meridian_proto::prost_types::{Duration, Timestamp};
use meridian_proto::rocketmq::v2::{
    self as rocketmq, Digest, DigestType, Encoding, Resource, SystemProperties,
};
use meridian_topology::MessageType;

/// The furthest ahead a delay message may be scheduled (40 days).
pub const MAX_DELAY_MS: i64 = 40 * 24 * 60 * 60 * 1000;

/// Longest message group, in bytes (the RocketMQ proxy's
/// `maxMessageGroupSize`).
pub const MAX_MESSAGE_GROUP_BYTES: usize = 64;

/// The queue of a FIFO message group among `queue_count` queues: CRC32C of
/// the group's UTF-8 bytes modulo the queue count, the same in every
/// region and release.
pub fn queue_of_message_group(group: &str, queue_count: u16) -> i32 {
    let queues = u32::from(queue_count.max(1));
    i32::try_from(crc32c::crc32c(group.as_bytes()) % queues).unwrap_or(0)
}

/// Builds the record for a message a client sent to this region: checks
/// what only a client's send must satisfy (a message id, a supported message
/// type, a message group for FIFO messages, a delivery time at most 40 days
/// ahead) and puts a FIFO message in its group's queue of the topic's
/// `queue_count`; the caller then applies [`crate::rules::check_record`], as
/// to every record.
pub fn record_from_client(
    message: &rocketmq::Message,
    topic_name: &str,
    queue_count: u16,
    local_region: &str,
    now_ms: i64,
) -> Result<Record, NodeError> {
    let properties = message.system_properties.clone().unwrap_or_default();
    if properties.message_id.trim().is_empty() {
        return Err(NodeError::MessageIdMissing);
    }
    let delivery_ms = properties.delivery_timestamp.as_ref().map(timestamp_to_ms);
    // A NORMAL message with a delivery time (older clients send that) is
    // a delay message: held until due, and refused by topics that do not
    // accept delay messages (MESSAGE_PROPERTY_CONFLICT_WITH_TYPE).
    let message_type = match (properties.message_type(), delivery_ms) {
        (rocketmq::MessageType::Normal | rocketmq::MessageType::Unspecified, None) => {
            MessageType::Normal
        }
        (rocketmq::MessageType::Delay, _)
        | (rocketmq::MessageType::Normal | rocketmq::MessageType::Unspecified, Some(_)) => {
            MessageType::Delay
        }
        (rocketmq::MessageType::Fifo, _) => MessageType::Fifo,
        (rocketmq::MessageType::Transaction, None) => MessageType::Transaction,
        // A half message joins its queue when its transaction commits; it
        // cannot also wait for a time (RocketMQ refuses this too).
        (rocketmq::MessageType::Transaction, Some(delivery_ms)) => {
            return Err(NodeError::IllegalDeliveryTime {
                delivery_ms,
                reason: "a transactional message cannot have a delivery time",
            });
        }
        (rocketmq::MessageType::Lite | rocketmq::MessageType::Priority, _) => {
            return Err(NodeError::MessageTypeUnsupported {
                message_type: "lite and priority",
            });
        }
    };
    if message_type == MessageType::Delay {
        let Some(delivery_ms) = delivery_ms else {
            return Err(NodeError::IllegalDeliveryTime {
                delivery_ms: 0,
                reason: "a DELAY message needs a delivery_timestamp",
            });
        };
        if delivery_ms > now_ms.saturating_add(MAX_DELAY_MS) {
            return Err(NodeError::IllegalDeliveryTime {
                delivery_ms,
                reason: "more than 40 days ahead (is it in milliseconds instead of seconds?)",
            });
        }
    }
    // The server orders a message group, whatever queue the client picked
    // (each official client hashes groups to queues its own way).
    let queue_id = match message_type {
        MessageType::Fifo => {
            let group = properties
                .message_group
                .as_deref()
                .map(str::trim)
                .unwrap_or_default();
            if group.is_empty() || group.len() > MAX_MESSAGE_GROUP_BYTES {
                return Err(NodeError::IllegalMessageGroup {
                    length: group.len(),
                    max: MAX_MESSAGE_GROUP_BYTES,
                });
            }
            queue_of_message_group(group, queue_count)
        }
        _ => properties.queue_id,
    };
    Ok(Record {
        sequence: 0,
        kind: RecordKind::Message as i32,
        dedup_id: uuid::Uuid::now_v7().as_bytes().to_vec(),
        origin_region: local_region.to_owned(),
        origin_sequence: 0,
        path: vec![local_region.to_owned()],
        ack: None,
        group_start: None,
        transaction_end: None,
        trace: None,
        catalog: None,
        message: Some(internal::Message {
            client_message_id: properties.message_id,
            topic: topic_name.to_owned(),
            queue_id,
            message_type: internal_type(message_type) as i32,
            tag: properties.tag,
            keys: properties.keys,
            message_group: properties.message_group,
            delivery_timestamp_ms: delivery_ms.filter(|_| message_type == MessageType::Delay),
            user_properties: message.user_properties.clone(),
            born_timestamp_ms: properties
                .born_timestamp
                .as_ref()
                .map_or(now_ms, timestamp_to_ms),
            born_host: properties.born_host,
            store_timestamp_ms: now_ms,
            body: message.body.clone(),
            trace_context: properties.trace_context,
            producer_client_id: String::new(),
        }),
    })
}

/// The message a consumer receives for one delivery.
pub fn message_for_delivery(
    delivery: Delivery,
    store_host: &str,
    invisible_ms: i64,
) -> rocketmq::Message {
    let mut message = rocketmq_message(delivery.record.message.unwrap_or_default(), store_host);
    if let Some(properties) = message.system_properties.as_mut() {
        properties.receipt_handle = Some(delivery.handle.to_string());
        properties.queue_id = delivery.queue_id;
        properties.queue_offset = i64::try_from(delivery.offset).ok();
        properties.invisible_duration = Some(Duration {
            seconds: invisible_ms / 1000,
            nanos: i32::try_from((invisible_ms % 1000) * 1_000_000).unwrap_or(0),
        });
        properties.delivery_attempt = Some(i32::try_from(delivery.attempt).unwrap_or(i32::MAX));
    }
    message
}

/// A stored message as RocketMQ carries it, without what only a delivery
/// has (receipt handle, offset, invisible time, attempt): a transaction
/// check-back's message. The body digest is the MD5 the clients check
/// (the Node.js client refuses a message without one).
pub fn rocketmq_message(message: internal::Message, store_host: &str) -> rocketmq::Message {
    let message_type = match internal::MessageType::try_from(message.message_type) {
        Ok(internal::MessageType::Fifo) => rocketmq::MessageType::Fifo,
        Ok(internal::MessageType::Delay) => rocketmq::MessageType::Delay,
        Ok(internal::MessageType::Transaction) => rocketmq::MessageType::Transaction,
        _ => rocketmq::MessageType::Normal,
    };
    let digest = hex::encode_upper(Md5::digest(&message.body));
    let system_properties = SystemProperties {
        tag: message.tag,
        keys: message.keys,
        message_id: message.client_message_id,
        body_digest: Some(Digest {
            r#type: DigestType::Md5 as i32,
            checksum: digest,
        }),
        body_encoding: Encoding::Identity as i32,
        message_type: message_type as i32,
        born_timestamp: Some(ms_to_timestamp(message.born_timestamp_ms)),
        born_host: message.born_host,
        store_timestamp: Some(ms_to_timestamp(message.store_timestamp_ms)),
        store_host: store_host.to_owned(),
        delivery_timestamp: message.delivery_timestamp_ms.map(ms_to_timestamp),
        queue_id: message.queue_id,
        message_group: message.message_group,
        trace_context: message.trace_context,
        ..SystemProperties::default()
    };
    rocketmq::Message {
        topic: Some(Resource {
            resource_namespace: String::new(),
            name: message.topic,
        }),
        user_properties: message.user_properties,
        system_properties: Some(system_properties),
        body: message.body,
    }
}

fn internal_type(message_type: MessageType) -> internal::MessageType {
    match message_type {
        MessageType::Normal => internal::MessageType::Normal,
        MessageType::Fifo => internal::MessageType::Fifo,
        MessageType::Delay => internal::MessageType::Delay,
        MessageType::Transaction => internal::MessageType::Transaction,
    }
}

/// The RocketMQ message type a topology message type stands for.
pub fn rocketmq_type(message_type: MessageType) -> rocketmq::MessageType {
    match message_type {
        MessageType::Normal => rocketmq::MessageType::Normal,
        MessageType::Fifo => rocketmq::MessageType::Fifo,
        MessageType::Delay => rocketmq::MessageType::Delay,
        MessageType::Transaction => rocketmq::MessageType::Transaction,
    }
}

pub fn timestamp_to_ms(timestamp: &Timestamp) -> i64 {
    timestamp
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(timestamp.nanos) / 1_000_000)
}

pub fn ms_to_timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

pub fn duration_to_ms(duration: &Duration) -> i64 {
    duration
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(duration.nanos) / 1_000_000)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
