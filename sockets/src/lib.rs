//! The sockets a region's processes listen on, and how a parent hands them to
//! a child without a moment in which the port is free.
//!
//! A process that binds its own port races every other program on the
//! machine: if a parent picks a free port, releases it and lets the child bind
//! it, the kernel may give that port to someone's outgoing connection in
//! between. So parents (`meridian up`, the test harness) bind first and pass
//! the bound sockets down, using systemd's socket-activation protocol
//! (`sd_listen_fds(3)`): the sockets are file descriptors 3, 4, … of the child,
//! `LISTEN_FDS` holds their count and `LISTEN_FDNAMES` their names, separated
//! by `:`. `LISTEN_PID` is not set by our parents (it cannot be known before
//! the child exists); when set, as by systemd, it must be the child's pid.
//! So a systemd `.socket` unit can start Meridian's processes as well.
//!
//! Names are `<region>.<socket>`: `eu-west.node`, `eu-west.admin` (TCP,
//! the node), `eu-west.replicator` (UDP), `eu-west.router` (TCP). A role
//! process takes the sockets of its own region and role and binds the
//! topology's address itself for any socket it did not inherit; `meridian up`
//! takes any it inherited and passes each on to the child that owns it.
//!
//! For test deployments, [`HeldAddress`] keeps an OS-chosen port bound for
//! the whole life of a deployment and gives each incarnation of the owning
//! process a socket on it, so a killed and restarted process gets the same
//! port back and nobody else can take it in between.

mod held;
mod inherited;

pub use held::HeldAddress;
pub use inherited::Inherited;

use meridian_topology::Region;
use socket2::{Domain, Socket, Type};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

/// How many connections a TCP listener queues before `accept`.
const LISTEN_BACKLOG: i32 = 1024;

/// The three long-running roles of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Node,
    Replicator,
    Router,
}

impl Role {
    /// In start order: a replicator tails its node, a router probes nodes.
    pub const ALL: [Role; 3] = [Role::Node, Role::Replicator, Role::Router];

    /// The `meridian` subcommand, and the `role=` value of the readiness line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Replicator => "replicator",
            Role::Router => "router",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Transport of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A listening stream socket (gRPC).
    Tcp,
    /// A datagram socket (the replicator's QUIC endpoint).
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// One socket a role listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    /// `<region>.<socket>`, e.g. `eu-west.admin`; the `LISTEN_FDNAMES` entry.
    pub name: String,
    /// The address from the topology.
    pub address: SocketAddr,
    pub protocol: Protocol,
}

/// The sockets `role` of region `region_name` listens on, in a fixed order.
pub fn role_sockets(region_name: &str, region: &Region, role: Role) -> Vec<SocketSpec> {
    let spec = |socket: &str, address, protocol| SocketSpec {
        name: format!("{region_name}.{socket}"),
        address,
        protocol,
    };
    match role {
        // node, admin, then http and stomp when the region serves them.
        Role::Node => [
            Some(spec("node", region.node, Protocol::Tcp)),
            Some(spec("admin", region.admin, Protocol::Tcp)),
            region
                .http
                .map(|address| spec("http", address, Protocol::Tcp)),
            region
                .stomp
                .map(|address| spec("stomp", address, Protocol::Tcp)),
        ]
        .into_iter()
        .flatten()
        .collect(),
        // A private site's replicator only dials: it listens on nothing.
        Role::Replicator => region
            .replicator
            .map(|address| spec("replicator", address, Protocol::Udp))
            .into_iter()
            .collect(),
        Role::Router => vec![spec("router", region.router, Protocol::Tcp)],
    }
}

/// Why a socket could not be bound, inherited or handed over.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("failed to bind the {name} address {address} ({protocol}): {source}")]
    Bind {
        name: String,
        address: SocketAddr,
        protocol: Protocol,
        #[source]
        source: std::io::Error,
    },
    #[error("inherited sockets (LISTEN_FDS): {0}")]
    Inherit(String),
    #[error(
        "the inherited socket {name} is bound to {actual} ({actual_protocol}), but the topology says {expected} ({expected_protocol})"
    )]
    Mismatch {
        name: String,
        actual: SocketAddr,
        actual_protocol: Protocol,
        expected: SocketAddr,
        expected_protocol: Protocol,
    },
    #[error("hand sockets to a child process: {0}")]
    Handover(String),
}

/// A bound socket (a TCP one also listening), ready to serve or to hand over.
#[derive(Debug)]
pub struct BoundSocket {
    name: String,
    address: SocketAddr,
    protocol: Protocol,
    socket: Socket,
}

impl BoundSocket {
    /// The address actually bound.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// What a supervisor keeps to give a restarted owner a socket on the
    /// same address ([`Reissue::socket`]).
    pub fn reissue(&self) -> Result<Reissue, SocketError> {
        let error = |source| SocketError::Bind {
            name: self.name.clone(),
            address: self.address,
            protocol: self.protocol,
            source,
        };
        match self.protocol {
            Protocol::Tcp => {
                let sharing = if self.socket.reuse_port().map_err(error)? {
                    Sharing::WithPlaceholder
                } else {
                    Sharing::Exclusive
                };
                Ok(Reissue::Tcp {
                    spec: SocketSpec {
                        name: self.name.clone(),
                        address: self.address,
                        protocol: Protocol::Tcp,
                    },
                    sharing,
                })
            }
            Protocol::Udp => Ok(Reissue::Udp(BoundSocket {
                name: self.name.clone(),
                address: self.address,
                protocol: Protocol::Udp,
                socket: self.socket.try_clone().map_err(error)?,
            })),
        }
    }

    /// The listener, non-blocking (ready for `tokio::net::TcpListener::from_std`).
    /// Errors if this is a UDP socket.
    pub fn into_tcp_listener(self) -> Result<std::net::TcpListener, SocketError> {
        self.expect(Protocol::Tcp)?;
        self.socket
            .set_nonblocking(true)
            .map_err(|source| self.bind_error_of(source))?;
        Ok(std::net::TcpListener::from(self.socket))
    }

    /// The datagram socket, non-blocking. Errors if this is a TCP socket.
    pub fn into_udp_socket(self) -> Result<std::net::UdpSocket, SocketError> {
        self.expect(Protocol::Udp)?;
        self.socket
            .set_nonblocking(true)
            .map_err(|source| self.bind_error_of(source))?;
        Ok(std::net::UdpSocket::from(self.socket))
    }

    fn expect(&self, protocol: Protocol) -> Result<(), SocketError> {
        if self.protocol == protocol {
            return Ok(());
        }
        Err(SocketError::Mismatch {
            name: self.name.clone(),
            actual: self.address,
            actual_protocol: self.protocol,
            expected: self.address,
            expected_protocol: protocol,
        })
    }

    fn bind_error_of(&self, source: std::io::Error) -> SocketError {
        SocketError::Bind {
            name: self.name.clone(),
            address: self.address,
            protocol: self.protocol,
            source,
        }
    }
}

/// How a supervisor gives a restarted process a socket on the same address.
///
/// A TCP socket is bound again, with the sharing the first one had (so a
/// port held by a test harness's placeholder stays shared with it); while the
/// process is down, connecting is refused, as with any dead server. A UDP
/// socket is kept (a duplicate) and handed out again: datagrams that arrive
/// while the process is down wait for the next one.
#[derive(Debug)]
pub enum Reissue {
    Tcp { spec: SocketSpec, sharing: Sharing },
    Udp(BoundSocket),
}

impl Reissue {
    /// A socket for the next incarnation.
    pub fn socket(&self) -> Result<BoundSocket, SocketError> {
        match self {
            Reissue::Tcp { spec, sharing } => bind(spec, *sharing),
            Reissue::Udp(kept) => Ok(BoundSocket {
                name: kept.name.clone(),
                address: kept.address,
                protocol: Protocol::Udp,
                socket: kept
                    .socket
                    .try_clone()
                    .map_err(|source| SocketError::Bind {
                        name: kept.name.clone(),
                        address: kept.address,
                        protocol: Protocol::Udp,
                        source,
                    })?,
            }),
        }
    }
}

/// Whether another socket of this user may bind the same port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// The port is this socket's alone: a second `meridian up` on the same
    /// machine fails with "address in use" instead of splitting connections.
    Exclusive,
    /// `SO_REUSEPORT`: shares the port with a [`HeldAddress`] placeholder.
    WithPlaceholder,
}

/// Binds `spec` (a TCP socket also listens).
pub fn bind(spec: &SocketSpec, sharing: Sharing) -> Result<BoundSocket, SocketError> {
    let error = |source| SocketError::Bind {
        name: spec.name.clone(),
        address: spec.address,
        protocol: spec.protocol,
        source,
    };
    let socket = new_socket(spec.address, spec.protocol, sharing).map_err(error)?;
    socket.bind(&spec.address.into()).map_err(error)?;
    if spec.protocol == Protocol::Tcp {
        socket.listen(LISTEN_BACKLOG).map_err(error)?;
    }
    let address = local_address(&socket).map_err(error)?;
    Ok(BoundSocket {
        name: spec.name.clone(),
        address,
        protocol: spec.protocol,
        socket,
    })
}

/// The socket for `spec`: the inherited one if the parent passed it (checked
/// against the topology's address), else bound here.
pub fn obtain(
    inherited: &mut Inherited,
    spec: &SocketSpec,
    sharing: Sharing,
) -> Result<BoundSocket, SocketError> {
    match inherited.take(spec)? {
        Some(socket) => Ok(socket),
        None => bind(spec, sharing),
    }
}

fn new_socket(
    address: SocketAddr,
    protocol: Protocol,
    sharing: Sharing,
) -> std::io::Result<Socket> {
    let socket = match protocol {
        Protocol::Tcp => Socket::new(Domain::for_address(address), Type::STREAM, None)?,
        Protocol::Udp => Socket::new(Domain::for_address(address), Type::DGRAM, None)?,
    };
    if protocol == Protocol::Tcp {
        // Rebinding a port whose old connections linger in TIME_WAIT.
        socket.set_reuse_address(true)?;
    }
    if sharing == Sharing::WithPlaceholder {
        socket.set_reuse_port(true)?;
    }
    Ok(socket)
}

fn local_address(socket: &Socket) -> std::io::Result<SocketAddr> {
    socket.local_addr()?.as_socket().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the socket has no IP address",
        )
    })
}

/// Sockets to pass to one child process: its file descriptors 3, 4, … and
/// `LISTEN_FDS` / `LISTEN_FDNAMES` in its environment.
#[derive(Debug, Default)]
pub struct Handover {
    sockets: Vec<BoundSocket>,
}

impl Handover {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, socket: BoundSocket) {
        self.sockets.push(socket);
    }

    /// Adds every socket of `other`.
    pub fn extend(&mut self, other: Handover) {
        self.sockets.extend(other.sockets);
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// What a supervisor keeps to hand the same addresses to a restarted child.
    pub fn reissues(&self) -> Result<Vec<Reissue>, SocketError> {
        self.sockets.iter().map(BoundSocket::reissue).collect()
    }

    /// Sets the child's descriptors and environment. The sockets stay open in
    /// this process until `command` is dropped (after spawning it).
    pub fn apply(self, command: &mut std::process::Command) -> Result<(), SocketError> {
        use command_fds::CommandFdExt as _;
        let (mappings, names) = self.into_mappings()?;
        command
            .env_remove("LISTEN_PID")
            .env("LISTEN_FDS", mappings.len().to_string())
            .env("LISTEN_FDNAMES", names);
        command
            .fd_mappings(mappings)
            .map_err(|error| SocketError::Handover(error.to_string()))?;
        Ok(())
    }

    /// [`Handover::apply`] for tokio's `Command` (it spawns from the
    /// standard `Command` it wraps).
    pub fn apply_tokio(self, command: &mut tokio::process::Command) -> Result<(), SocketError> {
        self.apply(command.as_std_mut())
    }

    fn into_mappings(self) -> Result<(Vec<command_fds::FdMapping>, String), SocketError> {
        let mut names = Vec::with_capacity(self.sockets.len());
        let mut mappings = Vec::with_capacity(self.sockets.len());
        for (index, socket) in self.sockets.into_iter().enumerate() {
            if socket.name.contains(':') {
                return Err(SocketError::Handover(format!(
                    "socket name {:?} contains ':', the LISTEN_FDNAMES separator",
                    socket.name
                )));
            }
            let child_fd = i32::try_from(index)
                .ok()
                .and_then(|index| index.checked_add(inherited::FIRST_FD))
                .ok_or_else(|| SocketError::Handover("too many sockets".to_owned()))?;
            names.push(socket.name);
            mappings.push(command_fds::FdMapping {
                parent_fd: OwnedFd::from(socket.socket),
                child_fd,
            });
        }
        Ok((mappings, names.join(":")))
    }
}

#[cfg(test)]
mod tests;
