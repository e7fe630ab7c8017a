//! The receiving side of a replication link as a state machine without I/O.
//!
//! [`ReceiverCore`] decides what the receiving end of one connection must
//! get right: the Hello comes first and in time, names this region and a
//! known peer, and speaks our protocol version; batches arrive with
//! increasing `through_sequence`. The quinn layer in `receiver.rs` reads
//! frames, asks the core, applies batches through the node and writes acks;
//! it closes the connection with the close code of a [`Violation`].
//!
//! Time comes in as arguments (`now`), as in [`crate::core::SenderCore`].

use crate::protocol::{CLOSE_HANDSHAKE_REFUSED, CLOSE_MALFORMED, PROTOCOL_VERSION};
use meridian_proto::meridian::v1::Hello;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Why the receiver ends a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("handshake refused: {0}")]
    HelloRefused(String),
    #[error("handshake refused: no hello within {0:?}")]
    NoHelloInTime(Duration),
    #[error("malformed replication frame: a batch before the hello")]
    BatchBeforeHello,
    #[error(
        "malformed replication frame: batch through_sequence {through} does not increase past {last}"
    )]
    BatchNotIncreasing { through: u64, last: u64 },
}

impl Violation {
    /// The QUIC application close code to end the connection with.
    pub fn close_code(&self) -> u32 {
        match self {
            Violation::HelloRefused(_) | Violation::NoHelloInTime(_) => CLOSE_HANDSHAKE_REFUSED,
            Violation::BatchBeforeHello | Violation::BatchNotIncreasing { .. } => CLOSE_MALFORMED,
        }
    }
}

/// The receiving side of one connection.
#[derive(Debug, Clone)]
pub struct ReceiverCore {
    local_region: String,
    known_peers: BTreeSet<String>,
    /// The peer, once its Hello was accepted.
    peer: Option<String>,
    /// The last batch's `through_sequence` on this connection.
    last_through: Option<u64>,
    /// The Hello must arrive before this.
    hello_deadline: Instant,
    hello_timeout: Duration,
}

impl ReceiverCore {
    /// A connection of region `local_region` accepted at `now`; `known_peers`
    /// are the other regions of the topology.
    pub fn new(
        local_region: &str,
        known_peers: BTreeSet<String>,
        now: Instant,
        hello_timeout: Duration,
    ) -> Self {
        ReceiverCore {
            local_region: local_region.to_owned(),
            known_peers,
            peer: None,
            last_through: None,
            hello_deadline: now + hello_timeout,
            hello_timeout,
        }
    }

    /// The peer region, once its Hello was accepted.
    pub fn peer(&self) -> Option<&str> {
        self.peer.as_deref()
    }

    /// Checks the Hello; on success the connection belongs to its `from_region`.
    pub fn on_hello(&mut self, hello: &Hello) -> Result<(), Violation> {
        let refused = |reason: String| Err(Violation::HelloRefused(reason));
        if self.peer.is_some() {
            return refused("a second hello".to_owned());
        }
        if hello.protocol_version != PROTOCOL_VERSION {
            return refused(format!(
                "protocol version {} is not supported (this replicator speaks {PROTOCOL_VERSION})",
                hello.protocol_version
            ));
        }
        if hello.to_region != self.local_region {
            return refused(format!(
                "this is region {:?}, not {:?}",
                self.local_region, hello.to_region
            ));
        }
        if !self.known_peers.contains(&hello.from_region) {
            return refused(format!(
                "{:?} is not another region of the topology",
                hello.from_region
            ));
        }
        self.peer = Some(hello.from_region.clone());
        Ok(())
    }

    /// Checks a batch covering local sequences of the peer up to `through`:
    /// after the Hello, and past the previous batch of this connection.
    pub fn on_batch(&mut self, through: u64) -> Result<(), Violation> {
        if self.peer.is_none() {
            return Err(Violation::BatchBeforeHello);
        }
        if let Some(last) = self.last_through
            && through <= last
        {
            return Err(Violation::BatchNotIncreasing { through, last });
        }
        self.last_through = Some(through);
        Ok(())
    }

    /// When [`Self::handle_timeout`] must next be called: the Hello
    /// deadline, until the Hello came.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peer.is_none().then_some(self.hello_deadline)
    }

    /// `Err` once the Hello is overdue at `now`.
    pub fn handle_timeout(&self, now: Instant) -> Result<(), Violation> {
        if self.peer.is_none() && now >= self.hello_deadline {
            return Err(Violation::NoHelloInTime(self.hello_timeout));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn core(now: Instant) -> ReceiverCore {
        ReceiverCore::new(
            "b",
            BTreeSet::from(["a".to_owned(), "c".to_owned()]),
            now,
            TIMEOUT,
        )
    }

    fn hello(from: &str, to: &str, version: u32) -> Hello {
        Hello {
            protocol_version: version,
            from_region: from.to_owned(),
            to_region: to.to_owned(),
        }
    }

    #[test]
    fn a_good_hello_names_the_peer_and_batches_must_increase() {
        let mut core = core(Instant::now());
        assert_eq!(core.on_batch(5), Err(Violation::BatchBeforeHello));
        core.on_hello(&hello("a", "b", PROTOCOL_VERSION))
            .expect("accepted");
        assert_eq!(core.peer(), Some("a"));
        assert_eq!(core.poll_timeout(), None);
        core.on_batch(5).expect("first batch");
        core.on_batch(9).expect("increasing");
        let error = core.on_batch(9).expect_err("not increasing");
        assert_eq!(
            error,
            Violation::BatchNotIncreasing {
                through: 9,
                last: 9
            }
        );
        assert_eq!(error.close_code(), CLOSE_MALFORMED);
    }

    #[test]
    fn bad_hellos_are_refused_with_the_handshake_code() {
        for bad in [
            hello("a", "b", PROTOCOL_VERSION + 1),
            hello("a", "c", PROTOCOL_VERSION),
            hello("z", "b", PROTOCOL_VERSION),
            hello("b", "b", PROTOCOL_VERSION),
        ] {
            let error = core(Instant::now()).on_hello(&bad).expect_err("refused");
            assert_eq!(error.close_code(), CLOSE_HANDSHAKE_REFUSED, "{bad:?}");
        }
        let mut twice = core(Instant::now());
        twice
            .on_hello(&hello("a", "b", PROTOCOL_VERSION))
            .expect("first");
        assert!(twice.on_hello(&hello("c", "b", PROTOCOL_VERSION)).is_err());
    }

    #[test]
    fn the_hello_is_due_within_the_timeout() {
        let start = Instant::now();
        let core = core(start);
        assert_eq!(core.poll_timeout(), Some(start + TIMEOUT));
        core.handle_timeout(start + TIMEOUT - Duration::from_millis(1))
            .expect("not yet");
        let error = core.handle_timeout(start + TIMEOUT).expect_err("overdue");
        assert_eq!(error.close_code(), CLOSE_HANDSHAKE_REFUSED);
    }
}
