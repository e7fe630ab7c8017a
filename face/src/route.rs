//! Building RocketMQ routes: the message queues a QueryRoute answer lists.
//!
//! Shared by the node (which routes clients to itself) and the router (which
//! routes them to the nearest healthy region's node).

use meridian_proto::rocketmq::v2::{
    Address, AddressScheme, Broker, Endpoints, MessageQueue, MessageType, Permission, Resource,
};
use std::net::SocketAddr;

/// One queue per queue id `0..queue_count`, all served by broker
/// `broker_name` (id 0) at `node`; `topic` is echoed as the client sent it.
/// Queues are READ_WRITE, except a dead-letter topic's (`%DLQ%<group>`),
/// which only the node writes: READ.
pub fn message_queues(
    topic: &Resource,
    queue_count: u16,
    accept_message_types: &[MessageType],
    broker_name: &str,
    node: SocketAddr,
) -> Vec<MessageQueue> {
    let broker = Broker {
        name: broker_name.to_owned(),
        id: 0,
        endpoints: Some(endpoints(node)),
    };
    let accept: Vec<i32> = accept_message_types
        .iter()
        .map(|message_type| *message_type as i32)
        .collect();
    let permission = match meridian_topology::dead_letter_group(&topic.name) {
        Some(_) => Permission::Read,
        None => Permission::ReadWrite,
    };
    (0..i32::from(queue_count))
        .map(|id| MessageQueue {
            topic: Some(topic.clone()),
            id,
            permission: permission as i32,
            broker: Some(broker.clone()),
            accept_message_types: accept.clone(),
        })
        .collect()
}

/// The RocketMQ endpoints of one socket address.
pub fn endpoints(address: SocketAddr) -> Endpoints {
    let scheme = match address {
        SocketAddr::V4(_) => AddressScheme::IPv4,
        SocketAddr::V6(_) => AddressScheme::IPv6,
    };
    Endpoints {
        scheme: scheme as i32,
        addresses: vec![Address {
            host: address.ip().to_string(),
            port: i32::from(address.port()),
        }],
    }
}
