//! The UDP relay: one socket, one client, one target, like a NAT.
//!
//! Everything runs in the caller's task: one future receives and admits,
//! one per direction delivers, and the first to finish (or `shutdown`) ends
//! the relay, so no task outlives it.

use crate::direction::Direction;
use crate::errors::{Backoff, Severity, severity};
use crate::queue::{DelayQueue, Scheduled};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace, warn};

/// The largest datagram relayed, in bytes.
const DATAGRAM_BYTES_MAX: usize = 64 * 1024;
/// Datagrams one relay queues per direction at most, however small; the
/// direction's buffer bounds their bytes.
const QUEUED_DATAGRAMS_MAX: usize = 65_536;

/// Relays UDP datagrams between whoever sends to `socket` and `target`, until
/// `shutdown`.
///
/// Datagrams from any source other than `target` go to `target` through
/// `outbound`, and that source becomes the client (the last source other
/// than `target`); datagrams from `target` go back to the client through
/// `inbound` (those arriving before there is a client are dropped). Both are
/// sent from `socket` itself, so the target sees the relay as its peer.
/// Datagrams up to 64 KiB.
///
/// Errors sending to or receiving from an unreachable peer (ICMP port
/// unreachable, reported as connection refused on Linux) are logged at debug
/// level and the relay goes on, so it keeps working across restarts of the
/// target on the same address. Returns an error only when `socket` itself
/// cannot be used.
pub async fn relay_udp(
    socket: UdpSocket,
    target: SocketAddr,
    outbound: Direction,
    inbound: Direction,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let relay = UdpRelay {
        socket,
        target,
        outbound: Side::new(outbound),
        inbound: Side::new(inbound),
    };
    debug!(address = ?relay.socket.local_addr().ok(), %target, "UDP relay started");
    let result = tokio::select! {
        biased;
        () = shutdown.cancelled() => Ok(()),
        result = relay.receive() => result,
        never = relay.deliver(&relay.outbound) => match never {},
        never = relay.deliver(&relay.inbound) => match never {},
    };
    debug!(%target, ?result, "UDP relay ended");
    result
}

/// A datagram and where it goes.
#[derive(Debug)]
struct Datagram {
    payload: Vec<u8>,
    destination: SocketAddr,
}

/// One direction of the relay: its conditions and its queue.
struct Side {
    direction: Direction,
    queue: DelayQueue<Datagram>,
}

impl Side {
    fn new(direction: Direction) -> Side {
        Side {
            direction,
            queue: DelayQueue::new(QUEUED_DATAGRAMS_MAX),
        }
    }

    /// Queues `payload` for `destination`, or drops it (counted).
    fn admit(&self, payload: &[u8], destination: SocketAddr) {
        if self.queue.is_full() {
            self.direction.record_dropped_queue_full();
            trace!(%destination, "datagram dropped: too many queued");
            return;
        }
        match self.direction.admit_datagram(Instant::now(), payload.len()) {
            Ok(admitted) => self.queue.push(Scheduled {
                due: admitted.due,
                item: Datagram {
                    payload: payload.to_vec(),
                    destination,
                },
                _held: admitted.held,
            }),
            Err(refusal) => {
                trace!(%destination, ?refusal, "datagram dropped");
            }
        }
    }
}

struct UdpRelay {
    socket: UdpSocket,
    target: SocketAddr,
    outbound: Side,
    inbound: Side,
}

impl UdpRelay {
    /// Receives datagrams and admits each to its direction.
    async fn receive(&self) -> io::Result<()> {
        let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
        let mut client: Option<SocketAddr> = None;
        let mut backoff = Backoff::new();
        loop {
            let (length, source) = match self.socket.recv_from(&mut buffer).await {
                Ok(received) => {
                    backoff.succeeded();
                    received
                }
                Err(error) => match severity(&error) {
                    Severity::Peer => {
                        debug!(target = %self.target, %error, "UDP relay: a peer is unreachable; going on");
                        continue;
                    }
                    Severity::Fatal => return Err(error),
                    Severity::Resource => {
                        warn!(target = %self.target, %error, "UDP relay: receiving failed; retrying after a pause");
                        backoff.pause().await;
                        continue;
                    }
                },
            };
            let payload = &buffer[..length];
            if same_address(source, self.target) {
                match client {
                    Some(client) => self.inbound.admit(payload, client),
                    None => {
                        debug!(target = %self.target, "UDP relay: datagram from the target before any client; dropped")
                    }
                }
            } else {
                if client != Some(source) {
                    debug!(target = %self.target, client = %source, "UDP relay: new client");
                    client = Some(source);
                }
                self.outbound.admit(payload, self.target);
            }
        }
    }

    /// Delivers the datagrams of one side when due; never ends.
    async fn deliver(&self, side: &Side) -> Infallible {
        loop {
            let entry = side.queue.pop().await;
            tokio::time::sleep_until(entry.due).await;
            if side.direction.conditions().partitioned {
                side.direction.record_dropped_partition();
                continue;
            }
            let Datagram {
                payload,
                destination,
            } = &entry.item;
            match self.socket.send_to(payload, *destination).await {
                Ok(_) => side.direction.record_delivered(payload.len()),
                Err(error) => {
                    debug!(%destination, %error, "UDP relay: sending a datagram failed; it is lost");
                }
            }
        }
    }
}

/// Whether two addresses are the same, an IPv4 address and its IPv6-mapped
/// form counting as the same (a dual-stack socket reports the latter).
fn same_address(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_are_the_same() {
        let v4: SocketAddr = "127.0.0.1:5000".parse().expect("address");
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().expect("address");
        let other_port: SocketAddr = "127.0.0.1:5001".parse().expect("address");
        assert!(same_address(v4, mapped));
        assert!(!same_address(v4, other_port));
    }
}
