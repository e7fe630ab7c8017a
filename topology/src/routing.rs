//! Which replicators connect, and along which links each record travels.
//!
//! **Connections.** Public regions form a full mesh: every public region's
//! replicator dials every other public region. A private site never listens:
//! its replicator dials each of its [`Region::hubs`](crate::Region::hubs)
//! and both directions flow over that one connection. So two regions are
//! *neighbours* when both are public, or when one is a private site and the
//! other one of its hubs; two private sites are never neighbours.
//!
//! **Forwarding.** A record of a topic, born in region `origin`, must reach
//! every region of the topic's `replicate_to`. Each target gets it from
//! exactly one *parent*: the origin itself when the two are neighbours, else
//! the last region before the target on the shortest path from the origin
//! over neighbours that hold the topic (the regions of `replicate_to`, plus
//! the origin). Path lengths are link latencies (a declared link's
//! `latency_ms`, else the shortest distance over declared links), ties broken
//! by fewer hops, then by region name, so every replicator computes the same
//! routes from the same topology. A region forwards a record to a neighbour
//! when it is that neighbour's parent for the record's origin (or on a
//! redundant route, below); the record's `path` (the regions it passed) is
//! checked as well, so a record never returns to a region it has been
//! through whatever the topologies say.
//!
//! **Several hubs.** A private site with more than one hub must stay
//! connected when one hub, or the link to it, is lost. So besides the tree,
//! every hub of a site that holds the topic sends the site every record the
//! site should get, and every hub of a site relays the site's own records
//! to its neighbours: each record then reaches the site, and the site's
//! records reach every region, along as many routes as the site has hubs.
//! Receivers store the first copy and skip the others (deduplication), and
//! each copy comes in origin order, so order per origin holds. A site with
//! one hub costs nothing extra.
//!
//! Otherwise one copy per region travels (no flooding): a cut between two
//! public regions is not routed around, the records wait for the link, as
//! they would with a direct connection only.

use crate::{Site, Topic, Topology};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// A path length when no declared links join two regions at all: far, but
/// small enough that sums do not overflow.
const UNLINKED_MS: u64 = 1 << 32;

impl Topology {
    /// Whether the replicators of `a` and `b` connect (see the module docs).
    /// False for unknown regions and for `a == b`.
    pub fn replication_neighbours_are(&self, a: &str, b: &str) -> bool {
        let (Some(first), Some(second)) = (self.regions.get(a), self.regions.get(b)) else {
            return false;
        };
        if a == b {
            return false;
        }
        match (first.site, second.site) {
            (Site::Public, Site::Public) => true,
            (Site::Private, Site::Public) => first.hubs.iter().any(|hub| hub == b),
            (Site::Public, Site::Private) => second.hubs.iter().any(|hub| hub == a),
            (Site::Private, Site::Private) => false,
        }
    }

    /// The regions whose replicators `region`'s replicator connects to, in
    /// name order: every other public region and the private sites it is a
    /// hub of (public), or its hubs (private).
    pub fn replication_neighbours(&self, region: &str) -> Vec<&str> {
        self.regions
            .keys()
            .map(String::as_str)
            .filter(|other| self.replication_neighbours_are(region, other))
            .collect()
    }

    /// Whether `region` dials `neighbour` (rather than waiting for it to
    /// dial): public regions dial each other; a private site dials its hubs.
    pub fn dials(&self, region: &str, neighbour: &str) -> bool {
        self.replication_neighbours_are(region, neighbour)
            && self
                .regions
                .get(neighbour)
                .is_some_and(|peer| peer.site == Site::Public)
    }

    /// The region that sends a record of `topic` born in `origin` to
    /// `target`: `origin` when they are neighbours, else the last region
    /// before `target` on the shortest route (module docs). `None` when
    /// `target` is `origin`, is not in the topic's `replicate_to`, or cannot
    /// be reached over regions that hold the topic.
    pub fn forwarding_parent(&self, topic: &Topic, origin: &str, target: &str) -> Option<&str> {
        if origin == target || !topic.replicate_to.iter().any(|region| region == target) {
            return None;
        }
        self.forwarding_tree(topic, origin).remove(target)
    }

    /// Every target of `topic`'s records born in `origin` with its parent
    /// (see [`Topology::forwarding_parent`]); targets that cannot be reached
    /// are missing.
    pub fn forwarding_tree(&self, topic: &Topic, origin: &str) -> BTreeMap<&str, &str> {
        let mut members: BTreeSet<&str> = topic
            .replicate_to
            .iter()
            .filter_map(|region| self.regions.get_key_value(region))
            .map(|(name, _)| name.as_str())
            .collect();
        let Some((origin, _)) = self.regions.get_key_value(origin) else {
            return BTreeMap::new();
        };
        members.insert(origin.as_str());

        // Dijkstra over neighbours within `members`; keys are (length, hops, name).
        let mut best: BTreeMap<&str, (u64, u32)> = BTreeMap::new();
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut done: BTreeSet<&str> = BTreeSet::new();
        let mut queue = BinaryHeap::from([Reverse((0_u64, 0_u32, origin.as_str()))]);
        best.insert(origin.as_str(), (0, 0));
        while let Some(Reverse((length, hops, region))) = queue.pop() {
            if !done.insert(region) {
                continue;
            }
            for &next in &members {
                if done.contains(next) || !self.replication_neighbours_are(region, next) {
                    continue;
                }
                let key = (length + self.hop_ms(region, next), hops + 1);
                if best.get(next).is_none_or(|known| key < *known) {
                    best.insert(next, key);
                    parent.insert(next, region);
                    queue.push(Reverse((key.0, key.1, next)));
                }
            }
        }
        parent.retain(|target, _| {
            *target != origin.as_str() && topic.replicate_to.iter().any(|region| region == target)
        });
        // Neighbours of the origin always get the record from the origin.
        let targets: Vec<&str> = parent.keys().copied().collect();
        for target in targets {
            if self.replication_neighbours_are(origin, target) {
                parent.insert(target, origin.as_str());
            }
        }
        parent
    }

    /// The regions of `topic`'s `replicate_to` that records born in `origin`
    /// cannot reach (empty for every region of `replicate_to` in a valid
    /// topology; a region outside it may be cut off, such as a private site
    /// none of whose hubs hold the topic).
    pub fn unreached_from<'a>(&self, topic: &'a Topic, origin: &str) -> Vec<&'a str> {
        let tree = self.forwarding_tree(topic, origin);
        topic
            .replicate_to
            .iter()
            .map(String::as_str)
            .filter(|target| *target != origin && !tree.contains_key(target))
            .collect()
    }

    /// Whether region `from` sends records of `topic` born in `origin` to
    /// its neighbour `to`: `from` is `to`'s parent for `origin`, or one of
    /// the redundant routes of a private site with several hubs (module
    /// docs): every hub of a site that holds the topic feeds the site, and
    /// every such hub of the origin relays the site's records to its own
    /// neighbours.
    pub fn forwards(&self, topic: &Topic, origin: &str, from: &str, to: &str) -> bool {
        let holds = |region: &str| topic.replicate_to.iter().any(|held| held == region);
        if to == origin
            || !holds(to)
            || !(from == origin || holds(from))
            || !self.replication_neighbours_are(from, to)
        {
            return false;
        }
        self.forwarding_parent(topic, origin, to) == Some(from)
            || self.is_hub_of(from, to)
            || self.is_hub_of(from, origin)
    }

    /// Whether `hub` is one of the hubs of the private site `site`.
    fn is_hub_of(&self, hub: &str, site: &str) -> bool {
        self.regions.get(site).is_some_and(|region| {
            region.site == Site::Private && region.hubs.iter().any(|name| name == hub)
        })
    }

    /// The length of the connection between neighbours `a` and `b`: the
    /// declared link's latency, else their distance over declared links.
    fn hop_ms(&self, a: &str, b: &str) -> u64 {
        match self.link_between(a, b) {
            Some(link) => u64::from(link.latency_ms),
            None => self.distance_ms(a, b).map_or(UNLINKED_MS, u64::from),
        }
    }
}

#[cfg(test)]
#[path = "routing_tests.rs"]
mod tests;
