//! Between the faces' requests and RocketMQ v2 messages: what a publish
//! becomes, and what the faces read from a delivered message. Shared by the
//! Aliyun and the JSON API so both build the same messages.

use crate::error::GatewayError;
use md5::{Digest as _, Md5};
use meridian_face::{Backend, Caller, Refusal};
use meridian_proto::prost_types::Timestamp;
use meridian_proto::rocketmq::v2::{
    AckMessageEntry, AckMessageRequest, Code, Encoding, Message, MessageType, Resource,
    SystemProperties,
};
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// A message to publish, in the faces' terms.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outgoing {
    pub topic: Resource,
    pub body: Vec<u8>,
    pub tag: Option<String>,
    pub keys: Vec<String>,
    pub user_properties: HashMap<String, String>,
    /// When to deliver it (epoch ms); a time that passed means now.
    pub deliver_at_ms: Option<i64>,
    /// The ordering key (FIFO message group).
    pub message_group: Option<String>,
    /// A half message that waits for commit or rollback.
    pub transactional: bool,
}

/// The topic or group `name` within namespace `ns`: `NS%NAME` (RocketMQ 4's
/// namespace convention), the plain name without one.
pub(crate) fn resource(ns: Option<&str>, name: &str) -> Resource {
    let name = match ns.filter(|ns| !ns.is_empty()) {
        Some(ns) => format!("{ns}%{name}"),
        None => name.to_owned(),
    };
    Resource {
        resource_namespace: String::new(),
        name,
    }
}

/// Acknowledges `receipt_handles` of `group` on `topic` in one request:
/// the backend's outcome for each handle, in order. A handle the backend
/// answered nothing for fails with an internal error; `Err` when the backend
/// refused the whole request.
pub(crate) async fn acknowledge(
    backend: &dyn Backend,
    caller: &Caller,
    topic: Resource,
    group: Resource,
    receipt_handles: &[String],
) -> Result<Vec<Result<(), Refusal>>, GatewayError> {
    let request = AckMessageRequest {
        group: Some(group),
        topic: Some(topic),
        entries: receipt_handles
            .iter()
            .map(|handle| AckMessageEntry {
                message_id: String::new(),
                receipt_handle: handle.clone(),
                lite_topic: None,
            })
            .collect(),
    };
    let mut outcomes = backend
        .ack(caller, request)
        .await
        .map_err(GatewayError::refused("acknowledging"))?
        .into_iter();
    Ok(receipt_handles
        .iter()
        .map(|_| {
            outcomes.next().unwrap_or_else(|| {
                Err(Refusal::new(
                    Code::InternalServerError,
                    "the backend answered no outcome for this handle",
                ))
            })
        })
        .collect())
}

/// A fresh message id: a UUID v7 as 32 uppercase hex digits (unique, and
/// in time order per process).
pub(crate) fn new_message_id() -> String {
    hex::encode_upper(uuid::Uuid::now_v7().as_bytes())
}

/// Uppercase hex MD5 of `body`.
pub(crate) fn body_md5(body: &[u8]) -> String {
    hex::encode_upper(Md5::digest(body))
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

pub(crate) fn timestamp_ms(timestamp: &Timestamp) -> i64 {
    timestamp
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(timestamp.nanos / 1_000_000))
}

pub(crate) fn ms_timestamp(millis: i64) -> Timestamp {
    Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// The RocketMQ message for `outgoing`, with id `message_id`, born now at
/// `born_host`, for queue `queue_id` (the node puts FIFO messages in their
/// group's queue whatever this says).
///
/// The type follows from what is set: TRANSACTION when `transactional`,
/// else FIFO with a message group, else DELAY with a delivery time, else
/// NORMAL. A delivery time that passed is dropped for transactional and
/// FIFO messages (it asks for nothing) and becomes "now" for the others; a
/// future one with a message group is refused (RocketMQ has no ordered
/// timed messages), with a transaction the backend refuses it.
pub(crate) fn build(
    outgoing: Outgoing,
    message_id: String,
    now_ms: i64,
    born_host: String,
    queue_id: i32,
) -> Result<Message, GatewayError> {
    let future_delivery = outgoing.deliver_at_ms.filter(|at| *at > now_ms);
    let (message_type, delivery_ms) = if outgoing.transactional {
        (MessageType::Transaction, future_delivery)
    } else if outgoing.message_group.is_some() {
        if let Some(at) = future_delivery {
            return Err(GatewayError::Argument {
                parameter: "delivery time",
                reason: format!(
                    "an ordered message (with a sharding key or message group) cannot wait for a \
                     delivery time ({at} is in the future)"
                ),
            });
        }
        (MessageType::Fifo, None)
    } else if let Some(at) = outgoing.deliver_at_ms {
        (MessageType::Delay, Some(at.max(now_ms)))
    } else {
        (MessageType::Normal, None)
    };
    Ok(Message {
        topic: Some(outgoing.topic),
        user_properties: outgoing.user_properties,
        system_properties: Some(SystemProperties {
            tag: outgoing.tag,
            keys: outgoing.keys,
            message_id,
            body_encoding: Encoding::Identity as i32,
            message_type: message_type as i32,
            born_timestamp: Some(ms_timestamp(now_ms)),
            born_host,
            delivery_timestamp: delivery_ms.map(ms_timestamp),
            queue_id,
            message_group: outgoing.message_group,
            ..SystemProperties::default()
        }),
        body: outgoing.body,
    })
}

/// What the faces read from a delivered message.
pub(crate) struct Delivered<'a>(pub &'a Message);

impl Delivered<'_> {
    fn system(&self) -> Option<&SystemProperties> {
        self.0.system_properties.as_ref()
    }

    pub fn message_id(&self) -> &str {
        self.system()
            .map_or("", |system| system.message_id.as_str())
    }

    pub fn receipt_handle(&self) -> &str {
        self.system()
            .and_then(|system| system.receipt_handle.as_deref())
            .unwrap_or_default()
    }

    pub fn tag(&self) -> &str {
        self.system()
            .and_then(|system| system.tag.as_deref())
            .unwrap_or_default()
    }

    pub fn keys(&self) -> &[String] {
        self.system().map_or(&[], |system| system.keys.as_slice())
    }

    pub fn message_group(&self) -> Option<&str> {
        self.system()
            .and_then(|system| system.message_group.as_deref())
    }

    /// When the producer made it, epoch ms (0 if unknown).
    pub fn born_ms(&self) -> i64 {
        self.system()
            .and_then(|system| system.born_timestamp.as_ref())
            .map_or(0, timestamp_ms)
    }

    /// The message's `delivery_timestamp`, epoch ms.
    pub fn delivery_ms(&self) -> Option<i64> {
        self.system()
            .and_then(|system| system.delivery_timestamp.as_ref())
            .map(timestamp_ms)
    }

    /// Which delivery this is (1 for the first).
    pub fn attempt(&self) -> i64 {
        self.system()
            .and_then(|system| system.delivery_attempt)
            .map_or(1, |attempt| i64::from(attempt.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing() -> Outgoing {
        Outgoing {
            topic: resource(None, "T"),
            body: b"hello".to_vec(),
            ..Outgoing::default()
        }
    }

    fn built(outgoing: Outgoing) -> Result<SystemProperties, GatewayError> {
        build(outgoing, "ID".to_owned(), 1_000, "h:1".to_owned(), 2)
            .map(|message| message.system_properties.expect("system properties"))
    }

    #[test]
    fn namespaces_prefix_names() {
        assert_eq!(resource(Some("MQ_INST_1"), "T1").name, "MQ_INST_1%T1");
        assert_eq!(resource(Some(""), "T1").name, "T1");
        assert_eq!(resource(None, "T1").name, "T1");
    }

    #[test]
    fn message_ids_are_unique_uppercase_hex() {
        let first = new_message_id();
        let second = new_message_id();
        assert_ne!(first, second);
        assert_eq!(first.len(), 32);
        assert!(
            first
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
        assert_eq!(body_md5(b"hello"), "5D41402ABC4B2A76B9719D911017C592");
    }

    #[test]
    fn types_follow_from_what_is_set() {
        let normal = built(outgoing()).expect("builds");
        assert_eq!(normal.message_type(), MessageType::Normal);
        assert_eq!(normal.queue_id, 2);
        assert_eq!(normal.body_encoding(), Encoding::Identity);
        assert_eq!(normal.born_timestamp, Some(ms_timestamp(1_000)));

        let delayed = built(Outgoing {
            deliver_at_ms: Some(5_000),
            ..outgoing()
        })
        .expect("builds");
        assert_eq!(delayed.message_type(), MessageType::Delay);
        assert_eq!(delayed.delivery_timestamp, Some(ms_timestamp(5_000)));
        let past = built(Outgoing {
            deliver_at_ms: Some(10),
            ..outgoing()
        })
        .expect("builds");
        assert_eq!(past.delivery_timestamp, Some(ms_timestamp(1_000)));

        let fifo = built(Outgoing {
            message_group: Some("g".to_owned()),
            deliver_at_ms: Some(10),
            ..outgoing()
        })
        .expect("builds");
        assert_eq!(fifo.message_type(), MessageType::Fifo);
        assert_eq!(fifo.delivery_timestamp, None);
        assert!(
            built(Outgoing {
                message_group: Some("g".to_owned()),
                deliver_at_ms: Some(5_000),
                ..outgoing()
            })
            .is_err()
        );

        let transactional = built(Outgoing {
            transactional: true,
            deliver_at_ms: Some(10),
            ..outgoing()
        })
        .expect("builds");
        assert_eq!(transactional.message_type(), MessageType::Transaction);
        assert_eq!(transactional.delivery_timestamp, None);
    }

    #[test]
    fn timestamps_round_trip_in_milliseconds() {
        for millis in [0, 1, 999, 1_700_000_000_123, -1] {
            assert_eq!(timestamp_ms(&ms_timestamp(millis)), millis);
        }
    }
}
