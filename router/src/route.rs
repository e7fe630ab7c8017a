//! Answering "where do I send and receive for this topic": the topic from the
//! topology, the region from the health view, the queues built from both.
//!
//! Every queue of a route points at one region's node: clients that refresh
//! their routes (Python and Node every 30 s) follow a failover; the Rust
//! client 5.0.0 never refreshes, so it moves only if failover happens below
//! it (DNS or a virtual IP). Queues are listed READ_WRITE with broker id 0,
//! the only ones every official client uses.

use crate::error::RouterError;
use crate::health::HealthView;
use meridian_proto::rocketmq::v2::{MessageQueue, MessageType, Resource};
use meridian_topology::{self as topology, Catalog, CatalogEntry, RouterMode, Topic, Topology};
use parking_lot::RwLock;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::{debug, info, warn};

/// The router's routing state: the topology, its own region and the regions
/// it may send clients to, nearest first.
#[derive(Debug)]
pub(crate) struct Routes {
    /// The topology file's topology.
    base: Topology,
    /// The file's with the admin API's changes laid over it (the catalog
    /// the nodes keep, polled by `catalog.rs`), and that catalog.
    now: RwLock<(Arc<Topology>, Catalog)>,
    own: String,
    /// Regions reachable from `own` by links, with their distance in ms.
    candidates: Vec<(String, u32)>,
    health: HealthView,
}

impl Routes {
    /// Routes for the router of region `own` (which the caller has checked exists).
    pub(crate) fn new(topology: Topology, own: String, health: HealthView) -> Self {
        let candidates = topology
            .regions_by_distance(&own)
            .into_iter()
            .map(|(name, distance)| (name.to_owned(), distance))
            .collect();
        Routes {
            now: RwLock::new((Arc::new(topology.clone()), Catalog::default())),
            base: topology,
            own,
            candidates,
            health,
        }
    }

    /// The deployment's topology.
    pub(crate) fn topology(&self) -> Arc<Topology> {
        Arc::clone(&self.now.read().0)
    }

    /// Lays the nodes' catalog (`entries`, the newest change of each topic
    /// and group) over the topology file. A catalog that does not make a
    /// valid topology with the file is logged and leaves routes as they were.
    pub(crate) fn apply_catalog(&self, entries: Vec<CatalogEntry>) {
        let mut catalog = self.now.read().1.clone();
        let mut changed = false;
        for entry in entries {
            changed |= catalog.insert(entry);
        }
        if !changed {
            return;
        }
        match catalog.apply_to(&self.base) {
            Ok(topology) => {
                info!(topics = topology.topics.len(), "topics and groups changed");
                *self.now.write() = (Arc::new(topology), catalog);
            }
            Err(error) => warn!(
                error = %error,
                "the nodes' topic and group changes do not fit this router's topology file"
            ),
        }
    }

    /// The queues of `topic` that QueryRoute answers: on the region clients
    /// should use now (direct mode), or on this router (proxy mode), which
    /// then carries each call there.
    pub(crate) async fn resolve(
        &self,
        rpc: &'static str,
        topic: Option<&Resource>,
    ) -> Result<Vec<MessageQueue>, RouterError> {
        let topic = requested_topic(rpc, topic)?;
        let choice = self.choose(rpc, &topic.name).await?;
        let topology = self.topology();
        let own = &topology.regions[&self.own];
        Ok(match own.router_mode {
            RouterMode::Direct => message_queues(topic, &choice.spec, &choice.region, choice.node),
            RouterMode::Proxy => message_queues(topic, &choice.spec, &self.own, own.router),
        })
    }

    /// The region (and its node) that calls about `topic` go to now: this
    /// router's own while healthy, else the nearest healthy one.
    pub(crate) async fn choose(
        &self,
        rpc: &'static str,
        topic: &str,
    ) -> Result<Choice, RouterError> {
        let topology = self.topology();
        let spec = topology
            .topic(topic)
            .ok_or_else(|| RouterError::TopicNotFound {
                rpc,
                topic: topic.to_owned(),
            })?;
        let candidates: Vec<(&str, u32)> = self
            .candidates
            .iter()
            .map(|(name, distance)| (name.as_str(), *distance))
            .collect();
        let region_name = self
            .health
            .choose(&self.own, &candidates)
            .await
            .ok_or_else(|| RouterError::NoRegionUp {
                topic: topic.to_owned(),
                regions: self
                    .candidates
                    .iter()
                    .map(|(name, _)| name.clone())
                    .collect(),
            })?;
        let region = topology
            .regions
            .get(region_name)
            .expect("chosen regions come from the topology");
        debug!(
            rpc,
            topic,
            own = %self.own,
            chosen = %region_name,
            node = %region.node,
            "routing to region"
        );
        Ok(Choice {
            region: region_name.to_owned(),
            node: region.node,
            spec: spec.into_owned(),
        })
    }

    /// Whether `region`'s node answers its probes now.
    pub(crate) fn is_up(&self, region: &str) -> bool {
        self.health.is_up(region)
    }

    /// The node of `region`, if the topology has it.
    pub(crate) fn node_of(&self, region: &str) -> Option<SocketAddr> {
        self.base.regions.get(region).map(|region| region.node)
    }
}

/// Where calls about a topic go now.
#[derive(Debug, Clone)]
pub(crate) struct Choice {
    pub(crate) region: String,
    pub(crate) node: SocketAddr,
    pub(crate) spec: Topic,
}

/// The topic a request names, refusing a missing or blank one.
pub(crate) fn requested_topic<'a>(
    rpc: &'static str,
    topic: Option<&'a Resource>,
) -> Result<&'a Resource, RouterError> {
    topic
        .filter(|topic| !topic.name.trim().is_empty())
        .ok_or(RouterError::TopicMissing { rpc })
}

/// One READ_WRITE queue per queue of `spec`, ids `0..queues`, all served by
/// broker `broker_name` (id 0) at `node`. `topic` is echoed as requested.
pub(crate) fn message_queues(
    topic: &Resource,
    spec: &Topic,
    broker_name: &str,
    node: SocketAddr,
) -> Vec<MessageQueue> {
    let accept: Vec<MessageType> = spec
        .message_types
        .iter()
        .map(|kind| message_type(*kind))
        .collect();
    meridian_face::route::message_queues(topic, spec.queues, &accept, broker_name, node)
}

/// The RocketMQ message type of a topology message type.
pub(crate) fn message_type(kind: topology::MessageType) -> MessageType {
    match kind {
        topology::MessageType::Normal => MessageType::Normal,
        topology::MessageType::Fifo => MessageType::Fifo,
        topology::MessageType::Delay => MessageType::Delay,
        topology::MessageType::Transaction => MessageType::Transaction,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_face::route::endpoints;
    use meridian_proto::rocketmq::v2::{Address, AddressScheme, Permission};
    use meridian_topology::ConsumeFrom;

    fn resource(namespace: &str, name: &str) -> Resource {
        Resource {
            resource_namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    fn topic(queues: u16, message_types: Vec<topology::MessageType>) -> Topic {
        Topic {
            queues,
            message_types,
            replicate_to: Vec::new(),
            consume_from: ConsumeFrom::Earliest,
            durability: Default::default(),
            geo_copies: 1,
            retention_ms: meridian_topology::DEFAULT_RETENTION_MS,
            retention_bytes: None,
            transaction_checks: Default::default(),
        }
    }

    #[test]
    fn one_queue_per_topic_queue_on_the_chosen_node() {
        let node: SocketAddr = "10.0.0.7:8082".parse().expect("address");
        let requested = resource("ns", "orders");
        let spec = topic(3, vec![topology::MessageType::Normal]);
        let queues = message_queues(&requested, &spec, "eu-west", node);
        assert_eq!(queues.len(), 3);
        for (expected_id, queue) in (0..).zip(&queues) {
            assert_eq!(queue.id, expected_id);
            assert_eq!(queue.topic.as_ref(), Some(&requested));
            assert_eq!(queue.permission, Permission::ReadWrite as i32);
            assert_eq!(queue.accept_message_types, vec![MessageType::Normal as i32]);
            let broker = queue.broker.as_ref().expect("broker");
            assert_eq!(broker.name, "eu-west");
            assert_eq!(broker.id, 0);
            let endpoints = broker.endpoints.as_ref().expect("endpoints");
            assert_eq!(endpoints.scheme, AddressScheme::IPv4 as i32);
            assert_eq!(
                endpoints.addresses,
                vec![Address {
                    host: "10.0.0.7".to_owned(),
                    port: 8082
                }]
            );
        }
    }

    #[test]
    fn ipv6_nodes_get_the_ipv6_scheme_and_a_bare_host() {
        let endpoints = endpoints("[::1]:9000".parse().expect("address"));
        assert_eq!(endpoints.scheme, AddressScheme::IPv6 as i32);
        assert_eq!(endpoints.addresses[0].host, "::1");
        assert_eq!(endpoints.addresses[0].port, 9000);
    }

    #[test]
    fn every_topology_message_type_is_mapped() {
        let spec = topic(1, topology::MessageType::ALL.to_vec());
        let queues = message_queues(
            &resource("", "t"),
            &spec,
            "a",
            "127.0.0.1:1".parse().expect("address"),
        );
        assert_eq!(
            queues[0].accept_message_types,
            [
                MessageType::Normal,
                MessageType::Fifo,
                MessageType::Delay,
                MessageType::Transaction
            ]
            .map(|kind| kind as i32)
            .to_vec()
        );
    }

    #[test]
    fn missing_or_blank_topics_are_refused() {
        assert!(matches!(
            requested_topic("QueryRoute", None),
            Err(RouterError::TopicMissing { rpc: "QueryRoute" })
        ));
        let blank = resource("ns", "  ");
        assert!(requested_topic("QueryRoute", Some(&blank)).is_err());
        let named = resource("", "orders");
        assert_eq!(
            requested_topic("QueryRoute", Some(&named)).ok(),
            Some(&named)
        );
    }
}
