//! Consumer groups (`[groups.NAME]`) and their dead-letter topics.
//!
//! A group's policies are the server's: clients learn them from the
//! Telemetry settings reply (max attempts, retry back-off) and the node
//! enforces them (default invisible time, the move to the dead-letter
//! topic). A group the topology does not list is created on first use with
//! [`Group::default`].

use crate::{ConsumeFrom, Durability, MessageType, Topic, Topology};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Prefix of a group's dead-letter topic: `%DLQ%<group>` (RocketMQ's name).
pub const DEAD_LETTER_PREFIX: &str = "%DLQ%";

/// Delivery attempts before a message moves to the dead-letter topic when
/// the group names none: RocketMQ's 16 retries plus the first delivery.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 17;
/// Invisible time of a receive that names none (push consumers), in ms
/// (the RocketMQ proxy's 60 s).
pub const DEFAULT_INVISIBLE_MS: u64 = 60_000;
/// RocketMQ's retry delays in ms (delay levels 3 to 18: 10 s … 2 h are the
/// broker's; the 5.x proxy advertises 1 s, 5 s, 10 s, 30 s, 1 min … 2 h).
pub const DEFAULT_RETRY_BACKOFF_MS: [u64; 18] = [
    1_000, 5_000, 10_000, 30_000, 60_000, 120_000, 180_000, 240_000, 300_000, 360_000, 420_000,
    480_000, 540_000, 600_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000,
];

/// A consumer group's policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Broadcast consumption: every consumer instance (client id) gets
    /// every message, each with its own progress, acknowledgements, retries
    /// and invisibility, instead of the instances sharing the messages
    /// (clustering, the default). An instance's progress is kept under the
    /// name `<group>@<client id>` ([`broadcast_instance`]); a new instance
    /// starts where the topic's `consume_from` says.
    #[serde(default, skip_serializing_if = "is_false")]
    pub broadcast: bool,
    /// Ordered consumption (RocketMQ's FIFO consumer group): within each
    /// message group, a message is not delivered while an earlier one is
    /// in flight, and an earlier one whose invisibility ended is delivered
    /// again first. Clients learn it as `subscription.fifo` (default false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub fifo: bool,
    /// Deliveries of a message to the group before it moves to the group's
    /// dead-letter topic `%DLQ%<group>` instead of being delivered again
    /// (1..=1000; default 17).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Invisible time of a delivery whose receive names none (push
    /// consumers ask for none), in ms (1000..=43200000; default 60000).
    #[serde(default = "default_invisible_ms")]
    pub invisible_ms: u64,
    /// How long a message a consumer gave up on (a push consumer's failed
    /// listener) stays invisible before its next attempt, per retry: entry
    /// `n - 1` before attempt `n + 1`, the last entry for every later one;
    /// in ms (1..=64 entries, each 1000..=43200000; default RocketMQ's
    /// 1 s, 5 s, 10 s, 30 s, 1 min, 2 min … 10 min, 20 min, 30 min, 1 h, 2 h).
    /// Sent to clients in their settings; push consumers apply it.
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: Vec<u64>,
}

impl Default for Group {
    fn default() -> Self {
        Group {
            broadcast: false,
            fifo: false,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            invisible_ms: DEFAULT_INVISIBLE_MS,
            retry_backoff_ms: DEFAULT_RETRY_BACKOFF_MS.to_vec(),
        }
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

fn default_invisible_ms() -> u64 {
    DEFAULT_INVISIBLE_MS
}

fn default_retry_backoff_ms() -> Vec<u64> {
    DEFAULT_RETRY_BACKOFF_MS.to_vec()
}

impl Group {
    /// How long a message stays invisible after the consumer gave up on
    /// delivery `attempt` (1 for the first delivery), in ms.
    pub fn retry_delay_ms(&self, attempt: u32) -> u64 {
        let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        self.retry_backoff_ms
            .get(index)
            .or(self.retry_backoff_ms.last())
            .copied()
            .unwrap_or(DEFAULT_RETRY_BACKOFF_MS[0])
    }
}

/// Separates a broadcast group's name from a consumer instance's client id
/// in the name its progress is kept under (`<group>@<client id>`). Group
/// names never contain it: the topology's follow RocketMQ's
/// `^[%|a-zA-Z0-9_-]+$`, and the node refuses it in the names clients send.
pub const BROADCAST_INSTANCE_SEPARATOR: char = '@';

/// The name under which consumer instance `client_id` of broadcast group
/// `group` keeps its progress: `<group>@<client id>`.
pub fn broadcast_instance(group: &str, client_id: &str) -> String {
    format!("{group}{BROADCAST_INSTANCE_SEPARATOR}{client_id}")
}

/// The configured group a consumer state belongs to: `group` for
/// `group@client-id` (a broadcast instance), else `name` itself.
pub fn configured_group(name: &str) -> &str {
    name.split_once(BROADCAST_INSTANCE_SEPARATOR)
        .map_or(name, |(group, _)| group)
}

/// The dead-letter topic of `group`: `%DLQ%<group>`; a broadcast
/// instance's (`group@client-id`) is its group's.
pub fn dead_letter_topic_name(group: &str) -> String {
    format!("{DEAD_LETTER_PREFIX}{}", configured_group(group))
}

/// The group whose dead-letter topic `topic` is, if it is one.
pub fn dead_letter_group(topic: &str) -> Option<&str> {
    topic
        .strip_prefix(DEAD_LETTER_PREFIX)
        .filter(|group| !group.is_empty() && group.len() <= GROUP_NAME_LENGTH_MAX)
        .filter(|group| !group.contains(char::is_control))
}

/// Longest consumer group name, in bytes (RocketMQ's limit).
pub const GROUP_NAME_LENGTH_MAX: usize = 255;

impl Topology {
    /// The policies of consumer group `name`: its `[groups.NAME]` entry, or
    /// [`Group::default`]; a broadcast instance (`group@client-id`) has
    /// its group's.
    pub fn group(&self, name: &str) -> Cow<'_, Group> {
        match self.groups.get(configured_group(name)) {
            Some(group) => Cow::Borrowed(group),
            None => Cow::Owned(Group::default()),
        }
    }

    /// The topic called `name`: a `[topics.NAME]` entry, or a consumer
    /// group's dead-letter topic (`%DLQ%<group>`, see
    /// [`Topology::dead_letter_topic`]); `None` for anything else.
    pub fn topic(&self, name: &str) -> Option<Cow<'_, Topic>> {
        match self.topics.get(name) {
            Some(topic) => Some(Cow::Borrowed(topic)),
            None => dead_letter_group(name).map(|_| Cow::Owned(self.dead_letter_topic())),
        }
    }

    /// What every dead-letter topic is: one queue of normal messages,
    /// replicated to every region (a group may consume topics of any
    /// region, and its dead letters must be found wherever it runs),
    /// consumed from the earliest message, local durability.
    pub fn dead_letter_topic(&self) -> Topic {
        Topic {
            queues: 1,
            message_types: vec![MessageType::Normal],
            replicate_to: self.regions.keys().cloned().collect(),
            consume_from: ConsumeFrom::Earliest,
            durability: Durability::Local,
            geo_copies: 1,
            retention_ms: crate::DEFAULT_RETENTION_MS,
            retention_bytes: None,
            transaction_checks: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_follows_the_list_then_repeats_its_last_entry() {
        let group = Group {
            retry_backoff_ms: vec![1_000, 5_000],
            ..Group::default()
        };
        assert_eq!(group.retry_delay_ms(1), 1_000);
        assert_eq!(group.retry_delay_ms(2), 5_000);
        assert_eq!(group.retry_delay_ms(9), 5_000);
        assert_eq!(group.retry_delay_ms(0), 1_000);
    }

    #[test]
    fn broadcast_instances_have_their_groups_policies_and_dead_letter_topic() {
        let mut topology = Topology::demo(std::path::Path::new("/tmp/meridian-demo"));
        let group = Group {
            broadcast: true,
            max_attempts: 3,
            ..Group::default()
        };
        topology.groups.insert("fan-out".to_owned(), group.clone());
        let instance = broadcast_instance("fan-out", "host@4242#1#17");
        assert_eq!(instance, "fan-out@host@4242#1#17");
        assert_eq!(configured_group(&instance), "fan-out");
        assert_eq!(configured_group("fan-out"), "fan-out");
        assert_eq!(*topology.group(&instance), group);
        assert_eq!(dead_letter_topic_name(&instance), "%DLQ%fan-out");
    }

    #[test]
    fn dead_letter_topics_name_their_group() {
        assert_eq!(dead_letter_topic_name("billing"), "%DLQ%billing");
        assert_eq!(dead_letter_group("%DLQ%billing"), Some("billing"));
        assert_eq!(dead_letter_group("%DLQ%"), None);
        assert_eq!(dead_letter_group("billing"), None);
    }

    #[test]
    fn a_dead_letter_topic_exists_for_any_group_and_spans_every_region() {
        let topology = Topology::demo(std::path::Path::new("/tmp/meridian-demo"));
        let topic = topology.topic("%DLQ%anyone").expect("a dead-letter topic");
        assert_eq!(topic.queues, 1);
        assert_eq!(topic.replicate_to.len(), topology.regions.len());
        assert!(topology.topic("nothing").is_none());
        assert_eq!(topology.group("anyone").max_attempts, DEFAULT_MAX_ATTEMPTS);
    }
}
