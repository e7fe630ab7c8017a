//! Loopback ports held for the whole life of a test deployment.
//!
//! Every socket of a test topology is bound (port 0, chosen by the OS) before
//! the topology file is written and stays bound until the deployment is
//! dropped; each process started on it inherits a socket on its ports (see
//! `meridian-sockets`). So no port is ever free between being chosen and
//! being served: a busy machine's outgoing connections cannot take it, and a
//! killed process restarted by a test gets its ports back.

use anyhow::Context as _;
use meridian_sockets::{Handover, HeldAddress, Protocol, Role, role_sockets};
use meridian_topology::Topology;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The held ports of a test topology, by socket name (`a.node`, `a.replicator`, …).
#[derive(Debug, Default)]
pub struct HeldPorts {
    by_name: HashMap<String, HeldAddress>,
}

impl HeldPorts {
    /// Holds an OS-chosen loopback port for the socket `name` and returns it.
    pub(crate) fn hold(&mut self, name: String, protocol: Protocol) -> anyhow::Result<SocketAddr> {
        let held = HeldAddress::new(&name, IpAddr::V4(Ipv4Addr::LOCALHOST), protocol)
            .with_context(|| format!("hold a loopback {protocol} port for {name}"))?;
        let address = held.address();
        self.by_name.insert(name, held);
        Ok(address)
    }

    /// Sockets for one incarnation of `role` in `region`.
    pub fn handover(
        &self,
        topology: &Topology,
        region: &str,
        role: Role,
    ) -> anyhow::Result<Handover> {
        let mut handover = Handover::new();
        for spec in role_sockets(region, topology.region(region)?, role) {
            let held = self
                .by_name
                .get(&spec.name)
                .with_context(|| format!("no held port for {}", spec.name))?;
            anyhow::ensure!(
                held.address() == spec.address,
                "{} is held on {} but the topology says {}",
                spec.name,
                held.address(),
                spec.address
            );
            handover.push(held.socket_for_child()?);
        }
        Ok(handover)
    }

    /// Sockets for every process of `topology`: what `meridian up` inherits.
    pub fn handover_all(&self, topology: &Topology) -> anyhow::Result<Handover> {
        let mut all = Handover::new();
        for region in topology.regions.keys() {
            for role in Role::ALL {
                all.extend(self.handover(topology, region, role)?);
            }
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn held_ports_are_distinct_and_stay_taken() {
        let mut held = HeldPorts::default();
        let mut ports = BTreeSet::new();
        for index in 0..20 {
            let address = held
                .hold(format!("r{index}.node"), Protocol::Tcp)
                .expect("hold a TCP port");
            assert!(address.ip().is_loopback());
            assert!(
                ports.insert(address.port()),
                "port {address} handed out twice"
            );
            assert!(
                std::net::TcpListener::bind(address).is_err(),
                "{address} can be bound by someone else"
            );
        }
        let udp = held
            .hold("a.replicator".to_owned(), Protocol::Udp)
            .expect("hold a UDP port");
        assert!(std::net::UdpSocket::bind(udp).is_err());
    }
}
