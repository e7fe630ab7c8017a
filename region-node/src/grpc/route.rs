//! The node's own answer to QueryRoute and QueryAssignment: itself.
//!
//! Clients normally reach a node through their region's router, which picks
//! the region; a client whose access point is a node directly gets that node.

use super::convert::rocketmq_type;
use meridian_proto::rocketmq::v2::{
    Address, AddressScheme, Broker, Endpoints, MessageQueue, Permission, Resource,
};
use meridian_topology::Topic;
use std::net::SocketAddr;

/// The message queues of `topic` served by the node at `address`.
pub fn queues(
    region: &str,
    address: SocketAddr,
    topic: &Resource,
    config: &Topic,
) -> Vec<MessageQueue> {
    let scheme = if address.is_ipv4() {
        AddressScheme::IPv4
    } else {
        AddressScheme::IPv6
    };
    let broker = Broker {
        name: region.to_owned(),
        id: 0,
        endpoints: Some(Endpoints {
            scheme: scheme as i32,
            addresses: vec![Address {
                host: address.ip().to_string(),
                port: i32::from(address.port()),
            }],
        }),
    };
    let accept: Vec<i32> = config
        .message_types
        .iter()
        .map(|message_type| rocketmq_type(*message_type) as i32)
        .collect();
    (0..i32::from(config.queues))
        .map(|id| MessageQueue {
            topic: Some(topic.clone()),
            id,
            permission: Permission::ReadWrite as i32,
            broker: Some(broker.clone()),
            accept_message_types: accept.clone(),
        })
        .collect()
}
