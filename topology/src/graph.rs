//! Looking regions and topics up, and distances over the link graph.
//!
//! Links are undirected and weighted by their one-way `latency_ms`; the
//! distance between two regions is the lowest total latency of any path of
//! links between them (Dijkstra; topologies are small, so everything is
//! recomputed per call and nothing is cached). The router uses this order
//! when it has no measured round-trip times yet. Links that name undefined
//! regions are ignored here (validation refuses them).

use crate::{Link, Region, Topology, TopologyError};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

impl Topology {
    /// The region called `name`, or [`TopologyError::UnknownRegion`] listing
    /// the regions that exist.
    pub fn region(&self, name: &str) -> Result<&Region, TopologyError> {
        self.regions
            .get(name)
            .ok_or_else(|| TopologyError::UnknownRegion {
                path: None,
                key: None,
                name: name.to_owned(),
                known: self.regions.keys().cloned().collect(),
            })
    }

    /// The link joining `a` and `b`, in either order, if the topology
    /// declares one (validation allows at most one per pair).
    pub fn link_between(&self, a: &str, b: &str) -> Option<&Link> {
        self.links.iter().find(|link| link.joins(a, b))
    }

    /// Every region other than `region`, sorted by name (all regions when
    /// `region` is not one of them).
    pub fn peers(&self, region: &str) -> Vec<&str> {
        self.regions
            .keys()
            .map(String::as_str)
            .filter(|name| *name != region)
            .collect()
    }

    /// The lowest total link latency from `from` to `to`: `Some(0)` for the
    /// same region, `None` when either region is unknown or no path of links
    /// joins them. Sums saturate at `u32::MAX`.
    pub fn distance_ms(&self, from: &str, to: &str) -> Option<u32> {
        self.shortest_paths(from).get(to).copied()
    }

    /// Every region reachable from `from`, nearest first, starting with
    /// `from` itself at 0; equal distances are ordered by name. Empty when
    /// `from` is not a region.
    pub fn regions_by_distance(&self, from: &str) -> Vec<(&str, u32)> {
        let mut regions: Vec<(&str, u32)> = self.shortest_paths(from).into_iter().collect();
        regions.sort_by(|(name_a, distance_a), (name_b, distance_b)| {
            distance_a.cmp(distance_b).then_with(|| name_a.cmp(name_b))
        });
        regions
    }

    /// Distances from `from` to every region reachable from it.
    pub(crate) fn shortest_paths(&self, from: &str) -> BTreeMap<&str, u32> {
        let mut distances = BTreeMap::new();
        let Some((start, _)) = self.regions.get_key_value(from) else {
            return distances;
        };
        let mut neighbours: BTreeMap<&str, Vec<(&str, u32)>> = BTreeMap::new();
        for link in &self.links {
            let [a, b] = &link.between;
            if self.regions.contains_key(a) && self.regions.contains_key(b) {
                neighbours
                    .entry(a.as_str())
                    .or_default()
                    .push((b.as_str(), link.latency_ms));
                neighbours
                    .entry(b.as_str())
                    .or_default()
                    .push((a.as_str(), link.latency_ms));
            }
        }
        let mut queue = BinaryHeap::from([Reverse((0_u32, start.as_str()))]);
        while let Some(Reverse((distance, region))) = queue.pop() {
            if distances.contains_key(region) {
                continue;
            }
            distances.insert(region, distance);
            for &(next, latency_ms) in neighbours.get(region).into_iter().flatten() {
                if !distances.contains_key(next) {
                    queue.push(Reverse((distance.saturating_add(latency_ms), next)));
                }
            }
        }
        distances
    }
}

#[cfg(test)]
mod tests {
    use crate::{Link, Topology};
    use std::path::Path;

    fn demo() -> Topology {
        Topology::demo(Path::new("/data"))
    }

    #[test]
    fn distance_to_self_is_zero() {
        assert_eq!(demo().distance_ms("on-prem", "on-prem"), Some(0));
    }

    #[test]
    fn distance_takes_the_shortest_path() {
        let mut topology = demo();
        // eu-west → us-east directly is 40 ms; through on-prem 8 + 45 = 53 ms.
        assert_eq!(topology.distance_ms("eu-west", "us-east"), Some(40));
        assert_eq!(topology.distance_ms("us-east", "eu-west"), Some(40));
        topology.links[0].latency_ms = 100;
        assert_eq!(topology.distance_ms("eu-west", "us-east"), Some(53));
    }

    #[test]
    fn distance_is_none_when_unreachable_or_unknown() {
        let mut topology = demo();
        topology
            .links
            .retain(|link| !link.between.contains(&"on-prem".to_owned()));
        assert_eq!(topology.distance_ms("eu-west", "on-prem"), None);
        assert_eq!(topology.distance_ms("eu-west", "mars"), None);
        assert_eq!(topology.distance_ms("mars", "mars"), None);
    }

    #[test]
    fn regions_by_distance_is_nearest_first_with_ties_by_name() {
        let topology = demo();
        assert_eq!(
            topology.regions_by_distance("eu-west"),
            vec![("eu-west", 0), ("on-prem", 8), ("us-east", 40)]
        );
        let mut tied = demo();
        tied.links = vec![
            Link::new("us-east", "eu-west", 10),
            Link::new("on-prem", "eu-west", 10),
        ];
        assert_eq!(
            tied.regions_by_distance("eu-west"),
            vec![("eu-west", 0), ("on-prem", 10), ("us-east", 10)]
        );
        assert_eq!(
            tied.regions_by_distance("us-east"),
            vec![("us-east", 0), ("eu-west", 10), ("on-prem", 20)]
        );
        assert!(tied.regions_by_distance("mars").is_empty());
    }

    #[test]
    fn peers_are_the_other_regions_sorted() {
        assert_eq!(demo().peers("on-prem"), vec!["eu-west", "us-east"]);
        assert_eq!(demo().peers("mars"), vec!["eu-west", "on-prem", "us-east"]);
    }

    #[test]
    fn unknown_region_lists_the_known_ones() {
        let topology = demo();
        assert!(topology.region("us-east").is_ok());
        let error = topology.region("mars").expect_err("mars is not a region");
        assert_eq!(
            error.to_string(),
            "unknown region \"mars\"; known regions: eu-west, on-prem, us-east"
        );
    }

    #[test]
    fn link_between_ignores_order() {
        let topology = demo();
        let link = topology
            .link_between("on-prem", "eu-west")
            .expect("the demo links them");
        assert_eq!(link.between, ["eu-west".to_owned(), "on-prem".to_owned()]);
        assert_eq!(link.latency_ms, 8);
        assert_eq!(
            topology
                .link_between("eu-west", "on-prem")
                .map(|l| l.latency_ms),
            Some(8)
        );
        assert!(topology.link_between("eu-west", "mars").is_none());
        assert!(topology.link_between("eu-west", "eu-west").is_none());
    }

    #[test]
    fn topic_lookup() {
        let topology = demo();
        assert_eq!(topology.topic("demo").map(|topic| topic.queues), Some(8));
        assert!(topology.topic("missing").is_none());
    }
}
