//! SEND frames as RocketMQ messages, and RocketMQ messages as MESSAGE
//! frames, without I/O.
//!
//! SEND headers: `tag` → the tag; `keys` → the keys (split on spaces and
//! commas); `message-group` → a FIFO message of that group; `deliver-at`
//! (epoch ms) or `delay` (ms from now) → a DELAY message; `content-type` →
//! user property `content-type`; every other header except the frame's own
//! (`destination`, `content-length`, `receipt`, `transaction`) → a user
//! property. MESSAGE frames carry them back, with the delivery's
//! `rocketmq-message-id`, `redelivered` and `delivery-attempt`.

use crate::error::SessionError;
use crate::frame::{Command, Frame};
use meridian_proto::prost_types::Timestamp;
use meridian_proto::rocketmq::v2::{Encoding, Message, MessageType, Resource, SystemProperties};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// SEND headers that are not copied into user properties.
const SEND_HEADERS: [&str; 10] = [
    "destination",
    "content-length",
    "content-type",
    "receipt",
    "transaction",
    "tag",
    "keys",
    "message-group",
    "deliver-at",
    "delay",
];

/// MESSAGE headers the server sets; user properties of these names are not
/// copied into the frame.
const MESSAGE_HEADERS: [&str; 13] = [
    "destination",
    "subscription",
    "message-id",
    "ack",
    "content-length",
    "content-type",
    "tag",
    "keys",
    "message-group",
    "rocketmq-message-id",
    "redelivered",
    "delivery-attempt",
    "receipt-id",
];

/// The user property holding the SEND's `content-type`.
const CONTENT_TYPE_PROPERTY: &str = "content-type";

/// Where a SEND's message goes and when it was sent.
pub(crate) struct Origin<'a> {
    pub(crate) topic: Resource,
    pub(crate) queue_id: i32,
    pub(crate) born_host: &'a str,
    pub(crate) now: SystemTime,
}

/// A fresh RocketMQ message id: a UUID v7 as 32 upper-case hex digits.
pub(crate) fn new_message_id() -> String {
    format!("{:X}", uuid::Uuid::now_v7().simple())
}

fn timestamp(time: SystemTime) -> Timestamp {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
    }
}

fn invalid(header: &'static str, value: &str, expected: &str) -> SessionError {
    SessionError::InvalidHeader {
        command: Command::Send,
        header,
        value: value.chars().take(80).collect(),
        expected: expected.to_owned(),
    }
}

fn digits(text: &str) -> Option<u64> {
    let text = text.trim();
    (!text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// The delivery time a SEND asks for, if any.
fn delivery_time(frame: &Frame, now: SystemTime) -> Result<Option<SystemTime>, SessionError> {
    match (frame.header("deliver-at"), frame.header("delay")) {
        (None, None) => Ok(None),
        (Some(_), Some(delay)) => Err(invalid(
            "delay",
            delay,
            "a message has deliver-at or delay, not both",
        )),
        (Some(at), None) => digits(at)
            .map(|millis| Some(UNIX_EPOCH + Duration::from_millis(millis)))
            .ok_or_else(|| invalid("deliver-at", at, "epoch milliseconds")),
        (None, Some(delay)) => digits(delay)
            .map(|millis| Some(now + Duration::from_millis(millis)))
            .ok_or_else(|| invalid("delay", delay, "milliseconds from now")),
    }
}

/// The message a SEND frame stores.
pub(crate) fn message_from_send(
    frame: &Frame,
    origin: Origin<'_>,
) -> Result<Message, SessionError> {
    if frame.body.len() > meridian_proto::MAX_BODY_BYTES {
        return Err(SessionError::BodyTooLarge {
            length: frame.body.len(),
            limit: meridian_proto::MAX_BODY_BYTES,
        });
    }
    let tag = frame
        .header("tag")
        .filter(|tag| !tag.is_empty())
        .map(str::to_owned);
    let keys = frame
        .header("keys")
        .map(|keys| {
            keys.split([' ', ','])
                .filter(|key| !key.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let message_group = match frame.header("message-group") {
        Some(group) if group.trim().is_empty() => {
            return Err(invalid("message-group", group, "a non-empty message group"));
        }
        group => group.map(str::to_owned),
    };
    let delivery = delivery_time(frame, origin.now)?;
    let message_type = match (&message_group, delivery) {
        (Some(group), Some(_)) => {
            return Err(invalid(
                "message-group",
                group,
                "a message is ordered (message-group) or delayed (deliver-at, delay), not both",
            ));
        }
        (Some(_), None) => MessageType::Fifo,
        (None, Some(_)) => MessageType::Delay,
        (None, None) => MessageType::Normal,
    };
    let mut user_properties = HashMap::new();
    if let Some(content_type) = frame.header("content-type") {
        user_properties.insert(CONTENT_TYPE_PROPERTY.to_owned(), content_type.to_owned());
    }
    for (name, value) in &frame.headers {
        if !SEND_HEADERS.contains(&name.as_str()) {
            user_properties
                .entry(name.clone())
                .or_insert_with(|| value.clone());
        }
    }
    Ok(Message {
        topic: Some(origin.topic),
        user_properties,
        system_properties: Some(SystemProperties {
            tag,
            keys,
            message_id: new_message_id(),
            body_encoding: Encoding::Identity as i32,
            message_type: message_type as i32,
            born_timestamp: Some(timestamp(origin.now)),
            born_host: origin.born_host.to_owned(),
            delivery_timestamp: delivery.map(timestamp),
            queue_id: origin.queue_id,
            message_group,
            ..SystemProperties::default()
        }),
        body: frame.body.to_vec(),
    })
}

/// Where a MESSAGE frame goes: the subscription's destination (as the
/// client wrote it) and id, and the message's id on this connection.
pub(crate) struct Delivery<'a> {
    pub(crate) destination: &'a str,
    pub(crate) subscription: &'a str,
    pub(crate) message_id: &'a str,
}

/// The MESSAGE frame of a received message.
pub(crate) fn message_frame(message: &Message, delivery: Delivery<'_>) -> Frame {
    let properties = message.system_properties.clone().unwrap_or_default();
    let mut frame = Frame::new(Command::Message)
        .with_header("destination", delivery.destination)
        .with_header("subscription", delivery.subscription)
        .with_header("message-id", delivery.message_id)
        .with_header("ack", delivery.message_id)
        .with_header("content-length", message.body.len().to_string());
    if let Some(content_type) = message.user_properties.get(CONTENT_TYPE_PROPERTY) {
        frame = frame.with_header("content-type", content_type.clone());
    }
    if let Some(tag) = properties.tag.filter(|tag| !tag.is_empty()) {
        frame = frame.with_header("tag", tag);
    }
    if !properties.keys.is_empty() {
        frame = frame.with_header("keys", properties.keys.join(","));
    }
    if let Some(group) = properties.message_group.filter(|group| !group.is_empty()) {
        frame = frame.with_header("message-group", group);
    }
    frame = frame.with_header("rocketmq-message-id", properties.message_id);
    if let Some(attempt) = properties.delivery_attempt {
        if attempt > 1 {
            frame = frame.with_header("redelivered", "true");
        }
        frame = frame.with_header("delivery-attempt", attempt.to_string());
    }
    let mut user_properties: Vec<(&String, &String)> = message
        .user_properties
        .iter()
        .filter(|(name, _)| !MESSAGE_HEADERS.contains(&name.as_str()))
        .collect();
    user_properties.sort_unstable();
    for (name, value) in user_properties {
        frame = frame.with_header(name.clone(), value.clone());
    }
    frame.with_body(message.body.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(headers: &[(&str, &str)], body: &'static [u8]) -> Frame {
        let mut frame = Frame::new(Command::Send).with_body(body);
        for (name, value) in headers {
            frame = frame.with_header(*name, *value);
        }
        frame
    }

    fn origin() -> Origin<'static> {
        Origin {
            topic: Resource {
                resource_namespace: String::new(),
                name: "demo".to_owned(),
            },
            queue_id: 3,
            born_host: "127.0.0.1:5555",
            now: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        }
    }

    #[test]
    fn a_plain_send_is_a_normal_message() {
        let frame = send(
            &[("destination", "/queue/demo"), ("content-length", "5")],
            b"hello",
        );
        let message = message_from_send(&frame, origin()).expect("valid");
        let properties = message.system_properties.expect("set");
        assert_eq!(message.body, b"hello");
        assert_eq!(properties.message_type(), MessageType::Normal);
        assert_eq!(properties.body_encoding(), Encoding::Identity);
        assert_eq!(properties.queue_id, 3);
        assert_eq!(properties.born_host, "127.0.0.1:5555");
        let born = properties.born_timestamp.expect("set");
        assert_eq!((born.seconds, born.nanos), (1_700_000_000, 123_000_000));
        assert_eq!(properties.message_id.len(), 32);
        assert!(
            properties
                .message_id
                .bytes()
                .all(|byte| byte.is_ascii_digit() || byte.is_ascii_uppercase())
        );
        assert!(message.user_properties.is_empty());
        assert_ne!(new_message_id(), new_message_id());
    }

    #[test]
    fn headers_become_tag_keys_and_properties() {
        let frame = send(
            &[
                ("destination", "/queue/demo"),
                ("tag", "TagA"),
                ("keys", "k1 k2,k3,, "),
                ("content-type", "text/plain"),
                ("receipt", "r-1"),
                ("transaction", "tx"),
                ("x-custom", "a:b"),
                ("x-custom", "ignored repeat"),
            ],
            b"",
        );
        let message = message_from_send(&frame, origin()).expect("valid");
        let properties = message.system_properties.clone().expect("set");
        assert_eq!(properties.tag.as_deref(), Some("TagA"));
        assert_eq!(properties.keys, ["k1", "k2", "k3"]);
        let mut names: Vec<_> = message.user_properties.iter().collect();
        names.sort();
        assert_eq!(
            names,
            [
                (&"content-type".to_owned(), &"text/plain".to_owned()),
                (&"x-custom".to_owned(), &"a:b".to_owned())
            ]
        );
    }

    #[test]
    fn message_group_and_delays() {
        let fifo = message_from_send(&send(&[("message-group", "g1")], b"x"), origin())
            .expect("valid")
            .system_properties
            .expect("set");
        assert_eq!(fifo.message_type(), MessageType::Fifo);
        assert_eq!(fifo.message_group.as_deref(), Some("g1"));
        let at = message_from_send(&send(&[("deliver-at", "1700000005000")], b"x"), origin())
            .expect("valid")
            .system_properties
            .expect("set");
        assert_eq!(at.message_type(), MessageType::Delay);
        assert_eq!(
            at.delivery_timestamp.map(|t| t.seconds),
            Some(1_700_000_005)
        );
        let delay = message_from_send(&send(&[("delay", "2000")], b"x"), origin())
            .expect("valid")
            .system_properties
            .expect("set");
        assert_eq!(delay.message_type(), MessageType::Delay);
        let due = delay.delivery_timestamp.expect("set");
        assert_eq!((due.seconds, due.nanos), (1_700_000_002, 123_000_000));
        for bad in [
            vec![("delay", "-5")],
            vec![("deliver-at", "soon")],
            vec![("delay", "1"), ("deliver-at", "1")],
            vec![("message-group", "g"), ("delay", "1")],
            vec![("message-group", " ")],
        ] {
            assert!(
                matches!(
                    message_from_send(&send(&bad, b"x"), origin()),
                    Err(SessionError::InvalidHeader { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bodies_over_the_limit_are_refused() {
        let frame =
            Frame::new(Command::Send).with_body(vec![0_u8; meridian_proto::MAX_BODY_BYTES + 1]);
        assert!(matches!(
            message_from_send(&frame, origin()),
            Err(SessionError::BodyTooLarge { .. })
        ));
    }

    #[test]
    fn a_delivery_carries_its_properties() {
        let mut message = message_from_send(
            &send(
                &[
                    ("tag", "TagA"),
                    ("keys", "k1 k2"),
                    ("content-type", "application/json"),
                    ("x-b", "2"),
                    ("x-a", "1"),
                    ("destination", "ignored"),
                ],
                b"{}",
            ),
            origin(),
        )
        .expect("valid");
        message
            .user_properties
            .insert("subscription".to_owned(), "spoofed".to_owned());
        if let Some(properties) = message.system_properties.as_mut() {
            properties.delivery_attempt = Some(2);
        }
        let frame = message_frame(
            &message,
            Delivery {
                destination: "/queue/demo",
                subscription: "sub-1",
                message_id: "7",
            },
        );
        assert_eq!(frame.command, Command::Message);
        assert_eq!(frame.header("destination"), Some("/queue/demo"));
        assert_eq!(frame.header("subscription"), Some("sub-1"));
        assert_eq!(frame.header("message-id"), Some("7"));
        assert_eq!(frame.header("ack"), Some("7"));
        assert_eq!(frame.header("content-length"), Some("2"));
        assert_eq!(frame.header("content-type"), Some("application/json"));
        assert_eq!(frame.header("tag"), Some("TagA"));
        assert_eq!(frame.header("keys"), Some("k1,k2"));
        assert_eq!(frame.header("redelivered"), Some("true"));
        assert_eq!(frame.header("delivery-attempt"), Some("2"));
        let id = message
            .system_properties
            .as_ref()
            .map(|p| p.message_id.as_str());
        assert_eq!(frame.header("rocketmq-message-id"), id);
        let custom: Vec<_> = frame
            .headers
            .iter()
            .filter(|(name, _)| name.starts_with("x-"))
            .collect();
        assert_eq!(
            custom,
            [
                &("x-a".to_owned(), "1".to_owned()),
                &("x-b".to_owned(), "2".to_owned())
            ]
        );
        assert_eq!(
            frame
                .headers
                .iter()
                .filter(|(name, _)| name == "subscription")
                .count(),
            1
        );
        assert_eq!(&frame.body[..], b"{}");
    }
}
