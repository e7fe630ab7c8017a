//! Topics and consumer groups changed at run time, over a topology file's.
//!
//! The topology file seeds a deployment's topics and groups; the admin API
//! creates, updates and deletes them while it runs. Each change is a
//! [`CatalogEntry`]: the item's whole definition as TOML (the same text a
//! topology file would hold under `[topics.NAME]` or `[groups.NAME]`), or
//! none for a deletion, stamped with a version (the time it was made and
//! the region that made it). A [`Catalog`] keeps the newest entry per item
//! (last writer wins, by version), whatever order entries arrive in, so
//! every region that has seen the same entries has the same catalog; and
//! [`Catalog::apply_to`] lays it over the file's topology and validates the
//! result like a file.

use crate::{Group, Topic, Topology, TopologyError};
use std::collections::BTreeMap;

/// What a catalog entry defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CatalogKind {
    Topic,
    Group,
}

impl CatalogKind {
    /// The kind's number in `meridian.v1.CatalogKind` (record.proto):
    /// 1 topic, 2 group.
    pub fn from_wire(number: i32) -> Option<CatalogKind> {
        match number {
            1 => Some(CatalogKind::Topic),
            2 => Some(CatalogKind::Group),
            _ => None,
        }
    }

    /// The inverse of [`CatalogKind::from_wire`].
    pub fn to_wire(self) -> i32 {
        match self {
            CatalogKind::Topic => 1,
            CatalogKind::Group => 2,
        }
    }

    /// `topic` or `group`.
    pub fn as_str(self) -> &'static str {
        match self {
            CatalogKind::Topic => "topic",
            CatalogKind::Group => "group",
        }
    }
}

/// One change of a topic or group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub kind: CatalogKind,
    pub name: String,
    /// The definition as TOML (for a deletion: the item's last one, if
    /// known, so that what it stored can still be retired).
    pub definition: Option<String>,
    /// The item was deleted.
    pub deleted: bool,
    /// When the change was made, ms since the Unix epoch (its region's clock).
    pub changed_at_ms: i64,
    /// The region whose admin API made it.
    pub region: String,
}

impl CatalogEntry {
    /// The version entries of one item are ordered by.
    pub fn version(&self) -> (i64, &str) {
        (self.changed_at_ms, &self.region)
    }

    /// An entry defining `topic`.
    pub fn topic(name: &str, topic: &Topic, changed_at_ms: i64, region: &str) -> CatalogEntry {
        CatalogEntry {
            kind: CatalogKind::Topic,
            name: name.to_owned(),
            definition: Some(toml::to_string(topic).unwrap_or_default()),
            deleted: false,
            changed_at_ms,
            region: region.to_owned(),
        }
    }

    /// An entry deleting topic `name`, whose last definition was `topic`.
    pub fn topic_deletion(
        name: &str,
        topic: &Topic,
        changed_at_ms: i64,
        region: &str,
    ) -> CatalogEntry {
        CatalogEntry {
            deleted: true,
            ..CatalogEntry::topic(name, topic, changed_at_ms, region)
        }
    }

    /// An entry defining `group`.
    pub fn group(name: &str, group: &Group, changed_at_ms: i64, region: &str) -> CatalogEntry {
        CatalogEntry {
            kind: CatalogKind::Group,
            name: name.to_owned(),
            definition: Some(toml::to_string(group).unwrap_or_default()),
            deleted: false,
            changed_at_ms,
            region: region.to_owned(),
        }
    }

    /// An entry deleting an item whose last definition is not kept.
    pub fn deletion(kind: CatalogKind, name: &str, changed_at_ms: i64, region: &str) -> Self {
        CatalogEntry {
            kind,
            name: name.to_owned(),
            definition: None,
            deleted: true,
            changed_at_ms,
            region: region.to_owned(),
        }
    }
}

/// The newest entry of every changed item; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    entries: BTreeMap<(CatalogKind, String), CatalogEntry>,
}

impl Catalog {
    /// Keeps `entry` unless an entry of the same item with a newer (or the
    /// same) version is kept already; returns whether it was kept.
    pub fn insert(&mut self, entry: CatalogEntry) -> bool {
        let key = (entry.kind, entry.name.clone());
        match self.entries.get(&key) {
            Some(kept) if kept.version() >= entry.version() => false,
            _ => {
                self.entries.insert(key, entry);
                true
            }
        }
    }

    /// Every kept entry, topics first, by name.
    pub fn entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.entries.values()
    }

    /// The kept entry of an item, if it changed.
    pub fn get(&self, kind: CatalogKind, name: &str) -> Option<&CatalogEntry> {
        self.entries.get(&(kind, name.to_owned()))
    }

    /// Deleted topics with their last definitions (where an entry kept it):
    /// what their stored messages are retired by.
    pub fn deleted_topics(&self) -> Vec<(String, Topic)> {
        self.entries
            .values()
            .filter(|entry| entry.kind == CatalogKind::Topic && entry.deleted)
            .filter_map(|entry| {
                let topic = toml::from_str(entry.definition.as_deref()?).ok()?;
                Some((entry.name.clone(), topic))
            })
            .collect()
    }

    /// `base` (a topology file's) with every kept entry laid over it:
    /// definitions replace or add items, deletions remove them; then
    /// validated as a file would be. An error names the item's key
    /// (`topics.NAME…`) and what is wrong.
    pub fn apply_to(&self, base: &Topology) -> Result<Topology, TopologyError> {
        let mut topology = base.clone();
        for entry in self.entries.values() {
            let key = match entry.kind {
                CatalogKind::Topic => format!("topics.{}", entry.name),
                CatalogKind::Group => format!("groups.{}", entry.name),
            };
            let parse_error = |error: toml::de::Error| {
                TopologyError::invalid(
                    key.clone(),
                    "…",
                    format!(
                        "the catalog's definition does not parse: {}",
                        error.message()
                    ),
                )
            };
            match (entry.kind, entry.deleted, entry.definition.as_deref()) {
                (CatalogKind::Topic, true, _) => {
                    topology.topics.remove(&entry.name);
                }
                (CatalogKind::Group, true, _) => {
                    topology.groups.remove(&entry.name);
                }
                (CatalogKind::Topic, false, Some(text)) => {
                    let topic: Topic = toml::from_str(text).map_err(parse_error)?;
                    topology.topics.insert(entry.name.clone(), topic);
                }
                (CatalogKind::Group, false, Some(text)) => {
                    let group: Group = toml::from_str(text).map_err(parse_error)?;
                    topology.groups.insert(entry.name.clone(), group);
                }
                (_, false, None) => {
                    return Err(TopologyError::invalid(
                        key,
                        "…",
                        "the catalog's change has no definition",
                    ));
                }
            }
        }
        topology.validate()?;
        Ok(topology)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConsumeFrom, MessageType};

    fn topic(queues: u16) -> Topic {
        Topic {
            queues,
            message_types: vec![MessageType::Normal],
            replicate_to: vec!["eu-west".to_owned(), "us-east".to_owned()],
            consume_from: ConsumeFrom::Earliest,
            durability: Default::default(),
            geo_copies: 1,
            retention_ms: crate::DEFAULT_RETENTION_MS,
            retention_bytes: None,
            transaction_checks: Default::default(),
        }
    }

    fn base() -> Topology {
        crate::Topology::demo(std::path::Path::new("/tmp/meridian-catalog-test"))
    }

    #[test]
    fn the_newest_entry_of_an_item_wins_in_any_order() {
        let older = CatalogEntry::topic("orders", &topic(4), 10, "eu-west");
        let newer = CatalogEntry::topic("orders", &topic(8), 20, "us-east");
        let mut one = Catalog::default();
        assert!(one.insert(older.clone()));
        assert!(one.insert(newer.clone()));
        let mut other = Catalog::default();
        assert!(other.insert(newer.clone()));
        assert!(!other.insert(older));
        assert_eq!(one, other);
        assert!(!one.insert(newer), "the same entry again changes nothing");
    }

    #[test]
    fn entries_add_replace_and_remove_items_of_the_file() {
        let mut catalog = Catalog::default();
        catalog.insert(CatalogEntry::topic("orders", &topic(4), 1, "eu-west"));
        catalog.insert(CatalogEntry::deletion(
            CatalogKind::Topic,
            "demo",
            2,
            "eu-west",
        ));
        catalog.insert(CatalogEntry::group(
            "billing",
            &Group {
                max_attempts: 3,
                ..Group::default()
            },
            3,
            "us-east",
        ));
        let topology = catalog.apply_to(&base()).expect("valid");
        assert_eq!(topology.topics["orders"].queues, 4);
        assert!(!topology.topics.contains_key("demo"));
        assert_eq!(topology.groups["billing"].max_attempts, 3);
    }

    #[test]
    fn a_deleted_topic_keeps_its_last_definition_for_retirement() {
        let mut catalog = Catalog::default();
        catalog.insert(CatalogEntry::topic("orders", &topic(4), 1, "eu-west"));
        catalog.insert(CatalogEntry::topic_deletion(
            "orders",
            &topic(4),
            2,
            "eu-west",
        ));
        catalog.insert(CatalogEntry::deletion(
            CatalogKind::Topic,
            "demo",
            3,
            "eu-west",
        ));
        let topology = catalog.apply_to(&base()).expect("valid");
        assert!(!topology.topics.contains_key("orders"));
        let deleted = catalog.deleted_topics();
        assert_eq!(deleted.len(), 1, "demo's last definition is unknown");
        assert_eq!((deleted[0].0.as_str(), deleted[0].1.queues), ("orders", 4));
    }

    #[test]
    fn a_definition_that_breaks_a_rule_is_refused_naming_it() {
        let mut catalog = Catalog::default();
        let mut bad = topic(4);
        bad.replicate_to = vec!["mars".to_owned()];
        catalog.insert(CatalogEntry::topic("orders", &bad, 1, "eu-west"));
        let error = catalog.apply_to(&base()).expect_err("invalid").to_string();
        assert!(error.contains("topics.orders"), "{error}");
        assert!(error.contains("mars"), "{error}");
    }
}
