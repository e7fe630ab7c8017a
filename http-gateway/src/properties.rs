//! The Aliyun API's message properties: the string `k:v|k:v|` (brief A6)
//! and the reserved keys that stand for RocketMQ message fields.
//!
//! | key | RocketMQ field |
//! |---|---|
//! | `KEYS` | `keys` (split on spaces) |
//! | `__STARTDELIVERTIME` | `delivery_timestamp` (epoch ms) of a DELAY message |
//! | `__SHARDINGKEY` | `message_group` of a FIFO message |
//! | `__TransCheckT` | a TRANSACTION message; kept as a user property (seconds before the first check-back, which the node reads) |
//!
//! Every other pair is a user property. Parsing follows the SDKs: split on
//! `|`, skip empty parts and parts that are not `key:value`. Rendering (for
//! consume answers) writes the fields back under their reserved keys, then
//! the user properties sorted by key, each followed by `|` as Python and Go
//! write it. A property that cannot be written in this format (a key or
//! value holding `|` or `:`, or empty; RocketMQ clients may set such
//! properties) is left out of the string.

use meridian_proto::rocketmq::v2::{Message, MessageType};
use std::collections::BTreeMap;

pub const KEYS: &str = "KEYS";
pub const START_DELIVER_TIME: &str = "__STARTDELIVERTIME";
pub const SHARDING_KEY: &str = "__SHARDINGKEY";
pub const TRANSACTION_CHECK_SECONDS: &str = "__TransCheckT";

/// A reserved property whose value is not what it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    #[error("the property {key} must be {expected}, not `{value}`")]
    NotANumber {
        key: &'static str,
        expected: &'static str,
        value: String,
    },
}

/// The properties of a publish request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// `KEYS`, split on spaces.
    pub keys: Vec<String>,
    /// `__STARTDELIVERTIME`, epoch milliseconds.
    pub start_deliver_time_ms: Option<i64>,
    /// `__SHARDINGKEY`.
    pub sharding_key: Option<String>,
    /// `__TransCheckT` was given (it is also in `user`).
    pub transactional: bool,
    /// Every other pair, and `__TransCheckT`.
    pub user: BTreeMap<String, String>,
}

/// Parses a `k:v|k:v|` string. A repeated key keeps its last value.
pub fn parse(text: &str) -> Result<Properties, PropertyError> {
    let mut properties = Properties::default();
    for part in text.split('|') {
        let Some((key, value)) = part.split_once(':') else {
            continue;
        };
        if key.is_empty() || value.is_empty() || value.contains(':') {
            continue;
        }
        match key {
            KEYS => {
                properties.keys = value
                    .split(' ')
                    .filter(|key| !key.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            START_DELIVER_TIME => {
                let millis =
                    value
                        .trim()
                        .parse::<i64>()
                        .map_err(|_| PropertyError::NotANumber {
                            key: START_DELIVER_TIME,
                            expected: "epoch milliseconds",
                            value: value.chars().take(32).collect(),
                        })?;
                properties.start_deliver_time_ms = Some(millis);
            }
            SHARDING_KEY => properties.sharding_key = Some(value.to_owned()),
            TRANSACTION_CHECK_SECONDS => {
                value
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| PropertyError::NotANumber {
                        key: TRANSACTION_CHECK_SECONDS,
                        expected: "a number of seconds",
                        value: value.chars().take(32).collect(),
                    })?;
                properties.transactional = true;
                properties
                    .user
                    .insert(key.to_owned(), value.trim().to_owned());
            }
            _ => {
                properties.user.insert(key.to_owned(), value.to_owned());
            }
        }
    }
    Ok(properties)
}

/// The properties string of a delivered message: its fields under their
/// reserved keys, then its user properties; empty when it has none.
pub fn render(message: &Message) -> String {
    let mut rendered = String::new();
    let mut push = |key: &str, value: &str| {
        let writable = |text: &str| !text.is_empty() && !text.contains(['|', ':']);
        if writable(key) && writable(value) {
            rendered.push_str(key);
            rendered.push(':');
            rendered.push_str(value);
            rendered.push('|');
        }
    };
    if let Some(system) = message.system_properties.as_ref() {
        let keys: Vec<&str> = system
            .keys
            .iter()
            .map(String::as_str)
            .filter(|key| !key.is_empty())
            .collect();
        if !keys.is_empty() {
            push(KEYS, &keys.join(" "));
        }
        if system.message_type() == MessageType::Delay
            && let Some(at) = system.delivery_timestamp.as_ref()
        {
            push(
                START_DELIVER_TIME,
                &crate::message::timestamp_ms(at).to_string(),
            );
        }
        if let Some(group) = system.message_group.as_deref() {
            push(SHARDING_KEY, group);
        }
    }
    let mut user: Vec<(&String, &String)> = message.user_properties.iter().collect();
    user.sort();
    for (key, value) in user {
        if !matches!(key.as_str(), KEYS | START_DELIVER_TIME | SHARDING_KEY) {
            push(key, value);
        }
    }
    rendered
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::prost_types::Timestamp;
    use meridian_proto::rocketmq::v2::SystemProperties;

    #[test]
    fn parses_python_and_java_strings() {
        let python = parse("KEYS:k1 k2|a:1|").expect("parses");
        assert_eq!(python.keys, ["k1", "k2"]);
        assert_eq!(python.user.get("a").map(String::as_str), Some("1"));
        let java = parse("a:1|b:2").expect("parses");
        assert_eq!(java.user.len(), 2);
    }

    #[test]
    fn skips_what_is_not_key_value() {
        let parsed = parse("|novalue|:v|k:|a:b:c|ok:yes||").expect("parses");
        assert_eq!(parsed.user.len(), 1);
        assert_eq!(parsed.user.get("ok").map(String::as_str), Some("yes"));
        assert_eq!(parse("").expect("parses"), Properties::default());
    }

    #[test]
    fn reserved_keys() {
        let parsed =
            parse("__STARTDELIVERTIME:1700000000000|__SHARDINGKEY:shard1|__TransCheckT:10|")
                .expect("parses");
        assert_eq!(parsed.start_deliver_time_ms, Some(1_700_000_000_000));
        assert_eq!(parsed.sharding_key.as_deref(), Some("shard1"));
        assert!(parsed.transactional);
        assert_eq!(
            parsed
                .user
                .get(TRANSACTION_CHECK_SECONDS)
                .map(String::as_str),
            Some("10")
        );
        assert!(matches!(
            parse("__STARTDELIVERTIME:soon|"),
            Err(PropertyError::NotANumber { .. })
        ));
        assert!(matches!(
            parse("__TransCheckT:-1|"),
            Err(PropertyError::NotANumber { .. })
        ));
    }

    #[test]
    fn renders_fields_then_sorted_user_properties() {
        let message = Message {
            user_properties: [
                ("b".to_owned(), "2".to_owned()),
                ("a".to_owned(), "1".to_owned()),
                ("bad|key".to_owned(), "x".to_owned()),
                ("colon".to_owned(), "x:y".to_owned()),
                (TRANSACTION_CHECK_SECONDS.to_owned(), "10".to_owned()),
            ]
            .into_iter()
            .collect(),
            system_properties: Some(SystemProperties {
                keys: vec!["k1".to_owned(), "k2".to_owned()],
                message_type: MessageType::Delay as i32,
                delivery_timestamp: Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5_000_000,
                }),
                message_group: Some("g".to_owned()),
                ..SystemProperties::default()
            }),
            ..Message::default()
        };
        assert_eq!(
            render(&message),
            "KEYS:k1 k2|__STARTDELIVERTIME:1700000000005|__SHARDINGKEY:g|__TransCheckT:10|a:1|b:2|"
        );
        assert_eq!(render(&Message::default()), "");
    }

    #[test]
    fn a_normal_message_s_delivery_time_is_not_a_start_deliver_time() {
        let message = Message {
            system_properties: Some(SystemProperties {
                message_type: MessageType::Normal as i32,
                delivery_timestamp: Some(Timestamp {
                    seconds: 1,
                    nanos: 0,
                }),
                ..SystemProperties::default()
            }),
            ..Message::default()
        };
        assert_eq!(render(&message), "");
    }

    #[test]
    fn parse_render_round_trip() {
        let text = "KEYS:k1|__SHARDINGKEY:s|__TransCheckT:10|x:y|";
        let parsed = parse(text).expect("parses");
        let message = Message {
            user_properties: parsed.user.clone().into_iter().collect(),
            system_properties: Some(SystemProperties {
                keys: parsed.keys.clone(),
                message_group: parsed.sharding_key.clone(),
                ..SystemProperties::default()
            }),
            ..Message::default()
        };
        assert_eq!(render(&message), text);
    }

    proptest::proptest! {
        #[test]
        fn user_properties_round_trip(
            user in proptest::collection::btree_map("[a-zA-Z][a-zA-Z0-9_.]{0,15}", "[^|:\\s]{1,20}", 0..8)
        ) {
            let user: BTreeMap<String, String> = user
                .into_iter()
                .filter(|(key, _)| !matches!(key.as_str(), KEYS | START_DELIVER_TIME | SHARDING_KEY | TRANSACTION_CHECK_SECONDS))
                .collect();
            let message = Message {
                user_properties: user.clone().into_iter().collect(),
                ..Message::default()
            };
            let parsed = parse(&render(&message)).expect("parses");
            proptest::prop_assert_eq!(parsed.user, user);
        }
    }
}
