//! Free loopback ports chosen by the OS.
//!
//! A port is reserved by binding port 0 and holding the socket until just
//! before the process that will own the port is spawned. Holding every socket
//! of a cluster at once guarantees the ports are distinct; releasing them as
//! late as possible keeps the window in which another program could take one
//! small. (A fully race-free hand-over would need the binary to accept
//! inherited listeners, which the CLI does not offer.)

use anyhow::Context as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

/// Sockets bound to port 0 on 127.0.0.1, held until dropped.
#[derive(Debug, Default)]
pub(crate) struct PortReservation {
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
}

impl PortReservation {
    /// Binds a TCP listener on an OS-chosen loopback port and returns its address.
    pub(crate) fn tcp(&mut self) -> anyhow::Result<SocketAddr> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("reserve a TCP port: bind 127.0.0.1:0")?;
        let address = listener
            .local_addr()
            .context("reserve a TCP port: read the bound address")?;
        self.tcp.push(listener);
        Ok(address)
    }

    /// Binds a UDP socket on an OS-chosen loopback port and returns its address.
    pub(crate) fn udp(&mut self) -> anyhow::Result<SocketAddr> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .context("reserve a UDP port: bind 127.0.0.1:0")?;
        let address = socket
            .local_addr()
            .context("reserve a UDP port: read the bound address")?;
        self.udp.push(socket);
        Ok(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn reserved_ports_are_distinct_while_held() {
        let mut reservation = PortReservation::default();
        let mut ports = BTreeSet::new();
        for _ in 0..20 {
            let address = reservation.tcp().expect("bind a TCP port");
            assert!(address.ip().is_loopback());
            assert_ne!(address.port(), 0);
            assert!(
                ports.insert(address.port()),
                "port {address} handed out twice"
            );
        }
        let udp = reservation.udp().expect("bind a UDP port");
        assert_ne!(udp.port(), 0);
    }

    #[test]
    fn a_released_port_can_be_bound_again() {
        let mut reservation = PortReservation::default();
        let address = reservation.tcp().expect("bind a TCP port");
        drop(reservation);
        TcpListener::bind(address).expect("rebind the released port");
    }
}
