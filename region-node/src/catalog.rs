//! The node's topology as it is now: its topology file's, with the topics
//! and consumer groups the admin API created, changed or deleted laid over
//! it ([`meridian_topology::Catalog`]).
//!
//! A change is a `CATALOG` record: appended by the admin API of the region
//! that made it, replicated to every region, and kept by storage in the
//! same write when it is the newest of its item ([`LogStore::catalog`]).
//! After every append that stored one the node reloads the kept changes and
//! swaps in the new topology ([`LiveTopology::reload`]); requests take a
//! snapshot ([`LiveTopology::get`]) and keep it for their whole life. At
//! start the node lays the kept changes over the file it was started with,
//! so changes survive restarts and the file only seeds.

use crate::rules::ServedTopics;
use crate::storage::LogStore;
use meridian_proto::meridian::v1::CatalogChange;
use meridian_topology::{Catalog, CatalogEntry, CatalogKind, Topology, TopologyError};
use parking_lot::RwLock;
use std::sync::Arc;

/// The file's topology and the catalog over it; see the module docs.
pub struct LiveTopology {
    region: String,
    base: Topology,
    now: RwLock<Now>,
}

struct Now {
    topology: Arc<Topology>,
    served: Arc<ServedTopics>,
    catalog: Catalog,
}

/// A catalog change as the topology crate models it (`None` for an unknown kind).
pub fn entry_of(change: &CatalogChange) -> Option<CatalogEntry> {
    Some(CatalogEntry {
        kind: CatalogKind::from_wire(change.kind)?,
        name: change.name.clone(),
        definition: change.definition_toml.clone(),
        deleted: change.deleted,
        changed_at_ms: change.changed_at_ms,
        region: change.region.clone(),
    })
}

/// A catalog entry as records carry it.
pub fn change_of(entry: &CatalogEntry) -> CatalogChange {
    CatalogChange {
        kind: entry.kind.to_wire(),
        name: entry.name.clone(),
        definition_toml: entry.definition.clone(),
        deleted: entry.deleted,
        changed_at_ms: entry.changed_at_ms,
        region: entry.region.clone(),
    }
}

/// The catalog of kept changes.
pub fn catalog_of(changes: &[CatalogChange]) -> Catalog {
    let mut catalog = Catalog::default();
    for entry in changes.iter().filter_map(entry_of) {
        catalog.insert(entry);
    }
    catalog
}

impl LiveTopology {
    /// The topology of `base` (the file's) with `changes` laid over it. If
    /// they do not make a valid topology together (a bug, or files that
    /// differ between regions), the file's is used and the error logged.
    pub fn new(base: Topology, region: &str, changes: &[CatalogChange]) -> Self {
        let catalog = catalog_of(changes);
        let topology = match catalog.apply_to(&base) {
            Ok(topology) => topology,
            Err(error) => {
                tracing::error!(
                    error = %error,
                    "the admin API's stored topic and group changes do not fit this topology \
                     file; serving the file's topics and groups"
                );
                base.clone()
            }
        };
        let served = ServedTopics::new(&topology, region);
        LiveTopology {
            region: region.to_owned(),
            base,
            now: RwLock::new(Now {
                topology: Arc::new(topology),
                served: Arc::new(served),
                catalog,
            }),
        }
    }

    /// The topology now.
    pub fn get(&self) -> Arc<Topology> {
        Arc::clone(&self.now.read().topology)
    }

    /// The topics this region refuses sends of, now.
    pub fn served(&self) -> Arc<ServedTopics> {
        Arc::clone(&self.now.read().served)
    }

    /// The catalog now.
    pub fn catalog(&self) -> Catalog {
        self.now.read().catalog.clone()
    }

    /// The topology the catalog would give with `entries` kept too (they
    /// are not): what a change would make, validated.
    pub fn with(&self, entries: &[CatalogEntry]) -> Result<Topology, TopologyError> {
        let mut catalog = self.catalog();
        for entry in entries {
            catalog.insert(entry.clone());
        }
        catalog.apply_to(&self.base)
    }

    /// Reloads the kept changes from `store` and swaps in the topology they
    /// give; an invalid combination keeps the topology as it was (logged).
    pub fn reload<S: LogStore>(&self, store: &S) -> Result<(), crate::storage::StorageError> {
        let catalog = catalog_of(&store.catalog()?);
        match catalog.apply_to(&self.base) {
            Ok(topology) => {
                let served = ServedTopics::new(&topology, &self.region);
                let mut now = self.now.write();
                if now.catalog != catalog {
                    tracing::info!(
                        topics = topology.topics.len(),
                        groups = topology.groups.len(),
                        "topics and groups changed"
                    );
                }
                *now = Now {
                    topology: Arc::new(topology),
                    served: Arc::new(served),
                    catalog,
                };
            }
            Err(error) => tracing::error!(
                error = %error,
                "stored topic and group changes do not make a valid topology; keeping the current one"
            ),
        }
        Ok(())
    }
}
