//! The rules a topology must follow beyond what its types already say.
//!
//! Rules are checked in a fixed order (regions, addresses, data directories,
//! links, topics, then the drill; maps in name order) and the first broken
//! one is reported, so the same file always gives the same error. The
//! drill's rules live in `validate_drill.rs`.
//!
//! Choices made here:
//! - Addresses are compared per protocol. Node, admin and router are TCP and
//!   must all differ; replicators are UDP (QUIC) and must differ from each
//!   other, but a replicator may share a port number with a TCP address.
//! - Addresses must be dialable by the other regions and by clients (the
//!   router hands node addresses out), so port 0 and the unspecified
//!   addresses (`0.0.0.0`, `::`) are refused.
//! - Every region needs its own, non-empty, UTF-8 `data_dir` (two nodes on
//!   one directory would corrupt each other; UTF-8 so the topology can be
//!   written back for child processes).
//! - The links must connect every region to every other, possibly through
//!   others: replication and failover both travel over links.
//! - Topic names starting with `%RETRY%`, `%DLQ%` (the broker's retry and
//!   dead-letter topics) or `rmq_sys_` (RocketMQ's system topics) are
//!   reserved.
//! - A link's emulation values are bounded: jitter like latency (a minute),
//!   loss between 0 and 100 percent, bandwidth between 1 kbit/s and
//!   1 Tbit/s (leave it out for no limit). A drill's `degrade` step obeys
//!   the same bounds.
//! - Public regions need a `replicator` address; private sites must not have
//!   one (they never listen for replication) and name one or more public
//!   `hubs` that their replicator dials.
//! - Every region of a topic's `replicate_to` reaches every other over
//!   replicator connections between regions of the topic (see
//!   `routing.rs`): a private site's topics that leave the site list one of
//!   its hubs. With `durability = "geo"`, each region of the topic connects
//!   directly to at least `geo_copies` others of it (they confirm its sends).
//! - Not checked: whether private sites can actually reach their hubs
//!   through NAT, and whether a data directory lies inside another one.

use crate::error::{TopologyError, key_segment, quoted};
use crate::{Link, Region, Site, Topic, Topology};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

/// Region names: `[a-z0-9][a-z0-9-]{0,31}`.
const REGION_NAME_LENGTH_MAX: usize = 32;
/// Topic names: RocketMQ's `^[%|a-zA-Z0-9_-]{1,127}$`.
const TOPIC_NAME_LENGTH_MAX: usize = 127;
const RESERVED_TOPIC_PREFIXES: [&str; 3] = ["%RETRY%", "%DLQ%", "rmq_sys_"];
/// A minute: anything slower is a typo or a dead link.
pub(crate) const LINK_LATENCY_MS_MAX: u32 = 60_000;
/// One terabit per second: anything faster is no limit at all.
pub(crate) const LINK_BANDWIDTH_KBPS_MAX: u64 = 1_000_000_000;
const LINK_LOSS_PERCENT_MAX: f64 = 100.0;
const TOPIC_QUEUES_MIN: u16 = 1;
const TOPIC_QUEUES_MAX: u16 = 1024;

impl Topology {
    /// Checks every rule of a topology; the error names the key, the value
    /// and what is allowed (but no file: see [`TopologyError::in_file`]).
    ///
    /// [`Topology::load`] and [`Topology::from_toml_str`] call this; call it
    /// yourself after building or changing a topology in code.
    pub fn validate(&self) -> Result<(), TopologyError> {
        if self.regions.is_empty() {
            return Err(TopologyError::invalid(
                "regions",
                "{}",
                "at least one region is required",
            ));
        }
        for (name, region) in &self.regions {
            check_region_name(name)?;
            check_storage_memory_mb(name, region.storage_memory_mb)?;
        }
        check_addresses(&self.regions)?;
        self.check_hubs()?;
        check_data_dirs(&self.regions)?;
        for (index, link) in self.links.iter().enumerate() {
            self.check_link(index, link)?;
        }
        check_duplicate_links(&self.links)?;
        self.check_connected()?;
        for (name, topic) in &self.topics {
            self.check_topic(name, topic)?;
        }
        for (name, group) in &self.groups {
            check_group(name, group)?;
        }
        if let Some(drill) = &self.drill {
            self.check_drill(drill)?;
        }
        Ok(())
    }

    pub(crate) fn known_regions(&self) -> Vec<String> {
        self.regions.keys().cloned().collect()
    }

    fn check_link(&self, index: usize, link: &Link) -> Result<(), TopologyError> {
        for (end, name) in link.between.iter().enumerate() {
            if !self.regions.contains_key(name) {
                let key = format!("links[{index}].between[{end}]");
                return Err(TopologyError::unknown_region_at(
                    key,
                    name,
                    self.known_regions(),
                ));
            }
        }
        let [a, b] = &link.between;
        if a == b {
            return Err(TopologyError::invalid(
                format!("links[{index}].between"),
                pair(link),
                "a link must join two different regions",
            ));
        }
        let key = format!("links[{index}]");
        check_latency_ms(&format!("{key}.latency_ms"), link.latency_ms)?;
        check_jitter_ms(&format!("{key}.jitter_ms"), link.jitter_ms)?;
        check_loss_percent(&format!("{key}.loss_percent"), link.loss_percent)?;
        if let Some(bandwidth_kbps) = link.bandwidth_kbps {
            check_bandwidth_kbps(&format!("{key}.bandwidth_kbps"), bandwidth_kbps)?;
        }
        Ok(())
    }

    fn check_connected(&self) -> Result<(), TopologyError> {
        let Some(first) = self.regions.keys().next() else {
            return Ok(());
        };
        let reachable = self.shortest_paths(first);
        if let Some(unreached) = self
            .regions
            .keys()
            .find(|name| !reachable.contains_key(name.as_str()))
        {
            let links: Vec<String> = self.links.iter().map(pair).collect();
            return Err(TopologyError::invalid(
                "links",
                format!("[{}]", links.join(", ")),
                format!(
                    "must connect every region, directly or through others; region {} \
                     cannot be reached from {}",
                    quoted(unreached),
                    quoted(first)
                ),
            ));
        }
        Ok(())
    }

    fn check_topic(&self, name: &str, topic: &Topic) -> Result<(), TopologyError> {
        let key = format!("topics.{}", key_segment(name));
        check_topic_name(&key, name)?;
        if !(TOPIC_QUEUES_MIN..=TOPIC_QUEUES_MAX).contains(&topic.queues) {
            return Err(TopologyError::invalid(
                format!("{key}.queues"),
                topic.queues.to_string(),
                format!("must be between {TOPIC_QUEUES_MIN} and {TOPIC_QUEUES_MAX}"),
            ));
        }
        let all_types: Vec<&str> = crate::MessageType::ALL
            .iter()
            .map(|kind| kind.as_str())
            .collect();
        if topic.message_types.is_empty() {
            return Err(TopologyError::invalid(
                format!("{key}.message_types"),
                "[]",
                format!("must list at least one of {}", all_types.join(", ")),
            ));
        }
        let mut seen_types = BTreeSet::new();
        for (index, kind) in topic.message_types.iter().enumerate() {
            if !seen_types.insert(kind) {
                return Err(TopologyError::invalid(
                    format!("{key}.message_types[{index}]"),
                    quoted(kind.as_str()),
                    "is listed twice; list each message type at most once",
                ));
            }
        }
        if topic.replicate_to.is_empty() {
            return Err(TopologyError::invalid(
                format!("{key}.replicate_to"),
                "[]",
                format!(
                    "must list at least one region of {}",
                    self.known_regions().join(", ")
                ),
            ));
        }
        let mut seen_regions = BTreeSet::new();
        for (index, region) in topic.replicate_to.iter().enumerate() {
            let region_key = format!("{key}.replicate_to[{index}]");
            if !self.regions.contains_key(region) {
                return Err(TopologyError::unknown_region_at(
                    region_key,
                    region,
                    self.known_regions(),
                ));
            }
            if !seen_regions.insert(region) {
                return Err(TopologyError::invalid(
                    region_key,
                    quoted(region),
                    "is listed twice; list each region at most once",
                ));
            }
        }
        let others = topic.replicate_to.len().saturating_sub(1);
        if topic.geo_copies == 0 || usize::from(topic.geo_copies) > others.max(1) {
            return Err(TopologyError::invalid(
                format!("{key}.geo_copies"),
                topic.geo_copies.to_string(),
                format!(
                    "must be between 1 and the number of other regions in replicate_to ({})",
                    others.max(1)
                ),
            ));
        }
        if !TOPIC_RETENTION_MS.contains(&topic.retention_ms) {
            return Err(TopologyError::invalid(
                format!("{key}.retention_ms"),
                topic.retention_ms.to_string(),
                format!(
                    "must be between {} and {} ms (1 s to one year)",
                    TOPIC_RETENTION_MS.start(),
                    TOPIC_RETENTION_MS.end()
                ),
            ));
        }
        let checks = &topic.transaction_checks;
        for (field, value) in [
            ("first_after_ms", checks.first_after_ms),
            ("interval_ms", checks.interval_ms),
        ] {
            if !(100..=86_400_000).contains(&value) {
                return Err(TopologyError::invalid(
                    format!("{key}.transaction_checks.{field}"),
                    value.to_string(),
                    "must be between 100 and 86400000 ms (one day)",
                ));
            }
        }
        if !(1..=1000).contains(&checks.max) {
            return Err(TopologyError::invalid(
                format!("{key}.transaction_checks.max"),
                checks.max.to_string(),
                "must be between 1 and 1000 check-backs",
            ));
        }
        if topic.retention_bytes == Some(0) {
            return Err(TopologyError::invalid(
                format!("{key}.retention_bytes"),
                "0",
                "must be at least 1 byte (leave it out for no limit)",
            ));
        }
        if topic.durability == crate::Durability::Geo && others == 0 {
            return Err(TopologyError::invalid(
                format!("{key}.durability"),
                "\"geo\"",
                "needs at least two regions in replicate_to (a copy in another region)",
            ));
        }
        self.check_topic_routes(&key, topic)
    }

    /// Every region of the topic reaches every other through regions of the
    /// topic (a private site only through its hubs), and with geo
    /// durability each has `geo_copies` neighbours in the topic to confirm.
    fn check_topic_routes(&self, key: &str, topic: &Topic) -> Result<(), TopologyError> {
        let listed = || {
            format!(
                "[{}]",
                topic
                    .replicate_to
                    .iter()
                    .map(|name| quoted(name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        for origin in &topic.replicate_to {
            let tree = self.forwarding_tree(topic, origin);
            if let Some(unreached) = topic
                .replicate_to
                .iter()
                .find(|target| *target != origin && !tree.contains_key(target.as_str()))
            {
                return Err(TopologyError::invalid(
                    format!("{key}.replicate_to"),
                    listed(),
                    format!(
                        "region {} cannot reach {} through regions of this topic: records \
                         travel only between replicators that connect (public regions with \
                         each other, a private site with its hubs){}; list a hub of the \
                         private site(s) in replicate_to",
                        quoted(origin),
                        quoted(unreached),
                        self.hubs_note(&[origin, unreached]),
                    ),
                ));
            }
            if topic.durability == crate::Durability::Geo {
                let confirming = topic
                    .replicate_to
                    .iter()
                    .filter(|other| self.replication_neighbours_are(origin, other))
                    .count();
                if confirming < usize::from(topic.geo_copies) {
                    return Err(TopologyError::invalid(
                        format!("{key}.geo_copies"),
                        topic.geo_copies.to_string(),
                        format!(
                            "region {} connects to only {confirming} other region(s) of \
                             replicate_to{}, so its sends could never be confirmed; lower \
                             geo_copies or add hubs",
                            quoted(origin),
                            self.hubs_note(&[origin]),
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// "(x's hubs: a, b)" for the private sites among `regions`.
    fn hubs_note(&self, regions: &[&String]) -> String {
        let notes: Vec<String> = regions
            .iter()
            .filter_map(|name| {
                let region = self.regions.get(name.as_str())?;
                (region.site == Site::Private)
                    .then(|| format!("{}'s hubs: {}", name, region.hubs.join(", ")))
            })
            .collect();
        if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        }
    }

    /// Private sites name at least one hub, each a public region of the
    /// topology, listed once; public regions name none.
    fn check_hubs(&self) -> Result<(), TopologyError> {
        for (name, region) in &self.regions {
            let key = format!("regions.{}.hubs", key_segment(name));
            let value = || {
                format!(
                    "[{}]",
                    region
                        .hubs
                        .iter()
                        .map(|hub| quoted(hub))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            match region.site {
                Site::Public if !region.hubs.is_empty() => {
                    return Err(TopologyError::invalid(
                        key,
                        value(),
                        "only private sites have hubs (public regions connect to every \
                         other public region); remove this key",
                    ));
                }
                Site::Private if region.hubs.is_empty() => {
                    let public: Vec<&str> = self
                        .regions
                        .iter()
                        .filter(|(_, other)| other.site == Site::Public)
                        .map(|(other, _)| other.as_str())
                        .collect();
                    return Err(TopologyError::invalid(
                        key,
                        "[]",
                        format!(
                            "a private site needs at least one hub, a public region its \
                             replicator dials (one of: {})",
                            public.join(", ")
                        ),
                    ));
                }
                _ => {}
            }
            let mut seen = BTreeSet::new();
            for (index, hub) in region.hubs.iter().enumerate() {
                let hub_key = format!("{key}[{index}]");
                let Some(hub_region) = self.regions.get(hub) else {
                    return Err(TopologyError::unknown_region_at(
                        hub_key,
                        hub,
                        self.known_regions(),
                    ));
                };
                if hub_region.site != Site::Public {
                    return Err(TopologyError::invalid(
                        hub_key,
                        quoted(hub),
                        "a hub must be a public region (private sites never listen for \
                         replication)",
                    ));
                }
                if !seen.insert(hub) {
                    return Err(TopologyError::invalid(
                        hub_key,
                        quoted(hub),
                        "is listed twice; list each hub at most once",
                    ));
                }
            }
        }
        Ok(())
    }
}

fn check_storage_memory_mb(region: &str, megabytes: u32) -> Result<(), TopologyError> {
    if !(Region::MIN_STORAGE_MEMORY_MB..=Region::MAX_STORAGE_MEMORY_MB).contains(&megabytes) {
        return Err(TopologyError::invalid(
            format!("regions.{region}.storage_memory_mb"),
            megabytes.to_string(),
            format!(
                "must be between {} and {} (MiB)",
                Region::MIN_STORAGE_MEMORY_MB,
                Region::MAX_STORAGE_MEMORY_MB
            ),
        ));
    }
    Ok(())
}

pub(crate) fn check_latency_ms(key: &str, latency_ms: u32) -> Result<(), TopologyError> {
    if latency_ms > LINK_LATENCY_MS_MAX {
        return Err(TopologyError::invalid(
            key,
            latency_ms.to_string(),
            format!("must be at most {LINK_LATENCY_MS_MAX} (one minute)"),
        ));
    }
    Ok(())
}

pub(crate) fn check_jitter_ms(key: &str, jitter_ms: u32) -> Result<(), TopologyError> {
    if jitter_ms > LINK_LATENCY_MS_MAX {
        return Err(TopologyError::invalid(
            key,
            jitter_ms.to_string(),
            format!("must be at most {LINK_LATENCY_MS_MAX} (one minute)"),
        ));
    }
    Ok(())
}

pub(crate) fn check_loss_percent(key: &str, loss_percent: f64) -> Result<(), TopologyError> {
    if !(0.0..=LINK_LOSS_PERCENT_MAX).contains(&loss_percent) {
        return Err(TopologyError::invalid(
            key,
            float_value(loss_percent),
            "must be between 0 and 100",
        ));
    }
    Ok(())
}

pub(crate) fn check_bandwidth_kbps(key: &str, bandwidth_kbps: u64) -> Result<(), TopologyError> {
    if !(1..=LINK_BANDWIDTH_KBPS_MAX).contains(&bandwidth_kbps) {
        return Err(TopologyError::invalid(
            key,
            bandwidth_kbps.to_string(),
            format!(
                "must be between 1 and {LINK_BANDWIDTH_KBPS_MAX} (kilobits per second, up to \
                 1 Tbit/s); leave it out for no limit"
            ),
        ));
    }
    Ok(())
}

/// A float as TOML spells it (`nan`, `inf`, `-inf`, `120`, `2.5`).
pub(crate) fn float_value(value: f64) -> String {
    if value.is_nan() {
        "nan".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        value.to_string()
    }
}

fn check_region_name(name: &str) -> Result<(), TopologyError> {
    let bytes = name.as_bytes();
    let allowed = |byte: &u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
    let valid = bytes.first().is_some_and(allowed)
        && bytes.len() <= REGION_NAME_LENGTH_MAX
        && bytes.iter().all(|byte| allowed(byte) || *byte == b'-');
    if valid {
        return Ok(());
    }
    Err(TopologyError::invalid(
        format!("regions.{}", key_segment(name)),
        quoted(name),
        "region names must match [a-z0-9][a-z0-9-]{0,31}: lower-case letters, digits and \
         dashes, 1 to 32 characters, not starting with a dash",
    ))
}

/// Fewest and most delivery attempts a group may allow.
const GROUP_MAX_ATTEMPTS: std::ops::RangeInclusive<u32> = 1..=1000;
/// Shortest and longest invisible time or retry delay, in ms (the RocketMQ
/// proxy's bounds on invisible durations: 1 s to 12 h).
const GROUP_INVISIBLE_MS: std::ops::RangeInclusive<u64> = 1_000..=43_200_000;
/// Most entries of a retry back-off list.
const GROUP_BACKOFF_ENTRIES_MAX: usize = 64;

/// Accepted [`crate::Topic::retention_ms`]: 1 s to one year.
const TOPIC_RETENTION_MS: std::ops::RangeInclusive<u64> = 1_000..=365 * 24 * 60 * 60 * 1000;

fn check_group(name: &str, group: &crate::Group) -> Result<(), TopologyError> {
    let key = format!("groups.{}", key_segment(name));
    let valid_chars = name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'%' | b'|' | b'_' | b'-'));
    if name.is_empty() || name.len() > crate::GROUP_NAME_LENGTH_MAX || !valid_chars {
        return Err(TopologyError::invalid(
            key,
            quoted(name),
            "group names must match ^[%|a-zA-Z0-9_-]{1,255}$ (RocketMQ's rule)",
        ));
    }
    if !GROUP_MAX_ATTEMPTS.contains(&group.max_attempts) {
        return Err(TopologyError::invalid(
            format!("{key}.max_attempts"),
            group.max_attempts.to_string(),
            format!(
                "must be between {} and {} deliveries",
                GROUP_MAX_ATTEMPTS.start(),
                GROUP_MAX_ATTEMPTS.end()
            ),
        ));
    }
    let between = format!(
        "must be between {} and {} ms (1 s to 12 h)",
        GROUP_INVISIBLE_MS.start(),
        GROUP_INVISIBLE_MS.end()
    );
    if !GROUP_INVISIBLE_MS.contains(&group.invisible_ms) {
        return Err(TopologyError::invalid(
            format!("{key}.invisible_ms"),
            group.invisible_ms.to_string(),
            between,
        ));
    }
    if group.retry_backoff_ms.is_empty() || group.retry_backoff_ms.len() > GROUP_BACKOFF_ENTRIES_MAX
    {
        return Err(TopologyError::invalid(
            format!("{key}.retry_backoff_ms"),
            format!("a list of {} delays", group.retry_backoff_ms.len()),
            format!("must list 1 to {GROUP_BACKOFF_ENTRIES_MAX} delays in ms"),
        ));
    }
    if let Some((index, delay)) = group
        .retry_backoff_ms
        .iter()
        .enumerate()
        .find(|(_, delay)| !GROUP_INVISIBLE_MS.contains(delay))
    {
        return Err(TopologyError::invalid(
            format!("{key}.retry_backoff_ms[{index}]"),
            delay.to_string(),
            between,
        ));
    }
    Ok(())
}

fn check_topic_name(key: &str, name: &str) -> Result<(), TopologyError> {
    let valid_chars = name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'%' | b'|' | b'_' | b'-'));
    if name.is_empty() || name.len() > TOPIC_NAME_LENGTH_MAX || !valid_chars {
        return Err(TopologyError::invalid(
            key,
            quoted(name),
            "topic names must match ^[%|a-zA-Z0-9_-]{1,127}$ (RocketMQ's rule)",
        ));
    }
    if let Some(prefix) = RESERVED_TOPIC_PREFIXES
        .iter()
        .find(|prefix| name.starts_with(**prefix))
    {
        return Err(TopologyError::invalid(
            key,
            quoted(name),
            format!(
                "topic names starting with {prefix} are reserved; reserved prefixes: {}",
                RESERVED_TOPIC_PREFIXES.join(", ")
            ),
        ));
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Tcp,
    Udp,
}

fn check_addresses(regions: &BTreeMap<String, Region>) -> Result<(), TopologyError> {
    let mut tcp: HashMap<SocketAddr, String> = HashMap::new();
    let mut udp: HashMap<SocketAddr, String> = HashMap::new();
    for (name, region) in regions {
        let region_key = format!("regions.{}", key_segment(name));
        match (region.site, region.replicator) {
            (Site::Public, None) => {
                return Err(TopologyError::invalid(
                    format!("{region_key}.replicator"),
                    "(missing)",
                    "a public region needs a replicator address (UDP): its peers and the \
                     private sites it is a hub of dial it",
                ));
            }
            (Site::Private, Some(address)) => {
                return Err(TopologyError::invalid(
                    format!("{region_key}.replicator"),
                    quoted(&address.to_string()),
                    "a private site never listens for replication (it dials its hubs); \
                     remove this key",
                ));
            }
            _ => {}
        }
        let addresses = [
            ("node", Some(region.node), Protocol::Tcp),
            ("admin", Some(region.admin), Protocol::Tcp),
            ("router", Some(region.router), Protocol::Tcp),
            ("http", region.http, Protocol::Tcp),
            ("stomp", region.stomp, Protocol::Tcp),
            ("replicator", region.replicator, Protocol::Udp),
        ];
        for (field, address, protocol) in addresses {
            let Some(address) = address else { continue };
            let key = format!("{region_key}.{field}");
            check_dialable(&key, address)?;
            let used = match protocol {
                Protocol::Tcp => &mut tcp,
                Protocol::Udp => &mut udp,
            };
            if let Some(owner) = used.get(&address) {
                let rule = if protocol == Protocol::Udp {
                    "every replicator (UDP) address must be distinct"
                } else {
                    "every node, admin, router, http and stomp (TCP) address must be distinct"
                };
                return Err(TopologyError::invalid(
                    key,
                    quoted(&address.to_string()),
                    format!("already used by {owner}; {rule}"),
                ));
            }
            used.insert(address, key);
        }
    }
    Ok(())
}

fn check_dialable(key: &str, address: SocketAddr) -> Result<(), TopologyError> {
    if address.port() == 0 {
        return Err(TopologyError::invalid(
            key,
            quoted(&address.to_string()),
            "the port must be between 1 and 65535 (other regions and clients dial it)",
        ));
    }
    if address.ip().is_unspecified() {
        return Err(TopologyError::invalid(
            key,
            quoted(&address.to_string()),
            "must be an address other regions and clients can dial, not 0.0.0.0 or ::",
        ));
    }
    Ok(())
}

fn check_data_dirs(regions: &BTreeMap<String, Region>) -> Result<(), TopologyError> {
    let mut used: HashMap<&std::path::Path, String> = HashMap::new();
    for (name, region) in regions {
        let key = format!("regions.{}.data_dir", key_segment(name));
        let dir = region.data_dir.as_path();
        let Some(text) = dir.to_str() else {
            return Err(TopologyError::invalid(
                key,
                quoted(&dir.to_string_lossy()),
                "must be valid UTF-8 (the topology is written back to TOML)",
            ));
        };
        if text.is_empty() {
            return Err(TopologyError::invalid(key, "\"\"", "must not be empty"));
        }
        if let Some(owner) = used.get(dir) {
            return Err(TopologyError::invalid(
                key,
                quoted(text),
                format!("already used by {owner}; every region needs its own data directory"),
            ));
        }
        used.insert(dir, key);
    }
    Ok(())
}

fn check_duplicate_links(links: &[Link]) -> Result<(), TopologyError> {
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for (index, link) in links.iter().enumerate() {
        let [a, b] = &link.between;
        let ends = if a <= b {
            (a.as_str(), b.as_str())
        } else {
            (b.as_str(), a.as_str())
        };
        if let Some(first) = seen.get(&ends) {
            return Err(TopologyError::invalid(
                format!("links[{index}].between"),
                pair(link),
                format!(
                    "joins the same regions as links[{first}]; at most one link per pair of regions"
                ),
            ));
        }
        seen.insert(ends, index);
    }
    Ok(())
}

/// `["eu-west", "us-east"]`, as in the file.
fn pair(link: &Link) -> String {
    crate::drill::pair(&link.between)
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
