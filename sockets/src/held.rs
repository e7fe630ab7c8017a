//! Ports held for the whole life of a test deployment.

use crate::{BoundSocket, Protocol, Sharing, SocketError, SocketSpec};
use socket2::Socket;
use std::net::{IpAddr, SocketAddr};

/// An OS-chosen port kept bound while a deployment lives, so the process that
/// owns it can be started, killed and started again on the same address with
/// no moment in which another program could take the port.
///
/// - TCP: a placeholder socket bound with `SO_REUSEPORT` that never listens
///   (so it takes no connections: while the owner is down, connecting is
///   refused, as with a real dead process). Each incarnation gets a fresh
///   listening socket on the same port ([`HeldAddress::socket_for_child`]).
/// - UDP: the held socket itself; each incarnation gets a duplicate of it. A
///   datagram that arrives while the owner is down waits in the socket's
///   buffer and reaches the next incarnation (QUIC discards it as stale).
#[derive(Debug)]
pub struct HeldAddress {
    spec: SocketSpec,
    holder: Socket,
}

impl HeldAddress {
    /// Binds port 0 on `ip` for the socket called `name`.
    pub fn new(name: &str, ip: IpAddr, protocol: Protocol) -> Result<HeldAddress, SocketError> {
        let wanted = SocketAddr::new(ip, 0);
        let error = |source| SocketError::Bind {
            name: name.to_owned(),
            address: wanted,
            protocol,
            source,
        };
        let holder =
            crate::new_socket(wanted, protocol, Sharing::WithPlaceholder).map_err(error)?;
        // Without SO_REUSEADDR, a socket that sets only that (as std's
        // `TcpListener::bind` does) cannot bind the held port either; only
        // `SO_REUSEPORT` sockets of this user can, i.e. the incarnations.
        holder.set_reuse_address(false).map_err(error)?;
        holder.bind(&wanted.into()).map_err(error)?;
        let address = crate::local_address(&holder).map_err(error)?;
        Ok(HeldAddress {
            spec: SocketSpec {
                name: name.to_owned(),
                address,
                protocol,
            },
            holder,
        })
    }

    /// The address held (a real port, not 0).
    pub fn address(&self) -> SocketAddr {
        self.spec.address
    }

    /// A socket on the held address for one incarnation of its owner.
    pub fn socket_for_child(&self) -> Result<BoundSocket, SocketError> {
        match self.spec.protocol {
            Protocol::Tcp => crate::bind(&self.spec, Sharing::WithPlaceholder),
            Protocol::Udp => {
                let socket = self
                    .holder
                    .try_clone()
                    .map_err(|source| SocketError::Bind {
                        name: self.spec.name.clone(),
                        address: self.spec.address,
                        protocol: self.spec.protocol,
                        source,
                    })?;
                Ok(BoundSocket {
                    name: self.spec.name.clone(),
                    address: self.spec.address,
                    protocol: Protocol::Udp,
                    socket,
                })
            }
        }
    }
}
