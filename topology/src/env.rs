//! The `MERIDIAN_*` environment layer that [`Topology::load`](crate::Topology::load)
//! merges over the file.
//!
//! A variable's name, after the `MERIDIAN_` prefix, is a key path with `__`
//! (two underscores) between the segments; single underscores stay part of a
//! segment because field names contain them (`data_dir`, `latency_ms`):
//!
//! ```text
//! MERIDIAN_REGIONS__EU_WEST__FLUSH=async          regions.eu-west.flush = "async"
//! MERIDIAN_REGIONS__EU_WEST__DATA_DIR=/srv/eu     regions.eu-west.data_dir = "/srv/eu"
//! MERIDIAN_TOPICS__ORDER_EVENTS__QUEUES=16        topics.order-events.queues = 16
//! MERIDIAN_LINKS='[{between=["a","b"],latency_ms=5}]'   replaces all links
//! MERIDIAN_DRILL__LOAD__PRODUCERS=4               drill.load.producers = 4
//! ```
//!
//! Names and dashes: environment variable names cannot portably contain `-`,
//! and figment lower-cases keys. So:
//! - the segment after `REGIONS` is lower-cased and every `_` becomes `-`;
//!   this is unambiguous because region names never contain `_`
//!   (`EU_WEST` is `eu-west`, `USEAST1` is `useast1`);
//! - the segment after `TOPICS` is matched against the topics the file
//!   defines, ignoring case and treating `_` and `-` alike (`ORDER_EVENTS`
//!   finds `order-events` or `Order_Events`); when no file topic or more than
//!   one matches, the lower-cased segment is used as is, which defines a new
//!   topic;
//! - every other segment is lower-cased (field names are lower-case).
//!
//! Values are parsed by figment: numbers, booleans, `[arrays]` and
//! `{inline = "tables"}` are recognised, anything else is a string.
//! Links are an array and cannot be changed one field at a time; set
//! `MERIDIAN_LINKS` to replace them all (the same goes for `drill.steps`
//! and `drill.load.clients`).
//!
//! Only variables whose name contains `__`, or is exactly `MERIDIAN_REGIONS`,
//! `MERIDIAN_LINKS`, `MERIDIAN_TOPICS` or `MERIDIAN_DRILL`, belong to this
//! layer. Other `MERIDIAN_*` variables (say `MERIDIAN_LOG`) are left to the programs that
//! read them instead of being refused as unknown keys; a misspelt override
//! with `__` (`MERIDIAN_REGION__EU_WEST__FLUSH`) is still refused.

use figment::providers::Env;
use figment::value::Uncased;

/// The prefix of every override variable.
pub(crate) const PREFIX: &str = "MERIDIAN_";
const SEPARATOR: &str = "__";
const TOP_LEVEL_KEYS: [&str; 4] = ["regions", "links", "topics", "drill"];

/// The environment provider; `file_topics` are the topic names the file defines.
pub(crate) fn provider(file_topics: Vec<String>) -> Env {
    Env::prefixed(PREFIX)
        .lowercase(false)
        .filter_map(move |name| key_path(name.as_str(), &file_topics).map(Uncased::from))
}

/// The variable behind an error at `key`: the one whose key path shares the
/// longest leading part with `key` (it set the key, a table holding it, or
/// created the table the key is missing from). Ties go to the first name.
pub(crate) fn variable_setting(key: &[String], file_topics: &[String]) -> Option<String> {
    let mut candidates: Vec<(usize, String)> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter_map(|name| {
            let suffix = strip_prefix_ignoring_case(&name)?;
            let path = key_path(suffix, file_topics)?;
            let shared = path
                .split('.')
                .zip(key)
                .take_while(|(segment, key)| segment == key)
                .count();
            (shared > 0).then_some((shared, name))
        })
        .collect();
    candidates.sort_by(|(shared_a, name_a), (shared_b, name_b)| {
        shared_b.cmp(shared_a).then_with(|| name_a.cmp(name_b))
    });
    candidates.into_iter().next().map(|(_, name)| name)
}

fn strip_prefix_ignoring_case(name: &str) -> Option<&str> {
    let head = name.get(..PREFIX.len())?;
    if head.eq_ignore_ascii_case(PREFIX) {
        name.get(PREFIX.len()..)
    } else {
        None
    }
}

/// Maps a variable name without the prefix to a dotted key path, or `None`
/// when the variable is not a topology override.
fn key_path(suffix: &str, file_topics: &[String]) -> Option<String> {
    let lower = suffix.trim().to_ascii_lowercase();
    if !lower.contains(SEPARATOR) && !TOP_LEVEL_KEYS.contains(&lower.as_str()) {
        return None;
    }
    let original: Vec<&str> = suffix.trim().split(SEPARATOR).collect();
    let mut segments: Vec<String> = lower.split(SEPARATOR).map(str::to_owned).collect();
    if let (Some(top), Some(name)) = (segments.first(), original.get(1)) {
        let mapped = match top.as_str() {
            "regions" => Some(name.to_ascii_lowercase().replace('_', "-")),
            "topics" => Some(topic_name(name, file_topics)),
            _ => None,
        };
        if let (Some(mapped), Some(slot)) = (mapped, segments.get_mut(1)) {
            *slot = mapped;
        }
    }
    Some(segments.join("."))
}

fn topic_name(segment: &str, file_topics: &[String]) -> String {
    let wanted = normalized(segment);
    let mut matches = file_topics
        .iter()
        .filter(|topic| normalized(topic) == wanted);
    match (matches.next(), matches.next()) {
        (Some(topic), None) => topic.clone(),
        _ => segment.to_ascii_lowercase(),
    }
}

fn normalized(name: &str) -> String {
    name.to_ascii_lowercase().replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn region_segment_gets_dashes_back() {
        let path = key_path("REGIONS__EU_WEST__DATA_DIR", &[]);
        assert_eq!(path.as_deref(), Some("regions.eu-west.data_dir"));
    }

    #[test]
    fn topic_segment_matches_file_topics() {
        let file = topics(&["order-events", "Audit_Log"]);
        assert_eq!(
            key_path("TOPICS__ORDER_EVENTS__QUEUES", &file).as_deref(),
            Some("topics.order-events.queues")
        );
        assert_eq!(
            key_path("TOPICS__AUDIT_LOG__QUEUES", &file).as_deref(),
            Some("topics.Audit_Log.queues")
        );
        assert_eq!(
            key_path("TOPICS__NEW__QUEUES", &file).as_deref(),
            Some("topics.new.queues")
        );
    }

    #[test]
    fn ambiguous_topic_segment_is_left_alone() {
        let file = topics(&["a-b", "a_b"]);
        assert_eq!(
            key_path("TOPICS__A_B__QUEUES", &file).as_deref(),
            Some("topics.a_b.queues")
        );
    }

    #[test]
    fn other_meridian_variables_are_not_overrides() {
        assert_eq!(key_path("LOG", &[]), None);
        assert_eq!(key_path("DATA_ROOT", &[]), None);
        assert_eq!(key_path("LINKS", &[]).as_deref(), Some("links"));
        assert_eq!(
            key_path("REGION__EU__FLUSH", &[]).as_deref(),
            Some("region.eu.flush")
        );
    }
}
