//! Constants of the replication protocol that both ends use: the version
//! exchanged in Hello, and the QUIC application close codes.
//!
//! Frames themselves are in [`crate::frame`]; the sender and the receiver
//! both depend on this module and never on each other.

/// The replication protocol version this replicator speaks (sent in Hello;
/// a receiver refuses any other with [`CLOSE_HANDSHAKE_REFUSED`]).
pub const PROTOCOL_VERSION: u32 = 1;

/// Close code: normal end (shutdown, goodbye).
pub const CLOSE_NORMAL: u32 = 0;
/// Close code: the Hello was refused (version, region names).
pub const CLOSE_HANDSHAKE_REFUSED: u32 = 1;
/// Close code: the peer sent a malformed frame or broke the protocol.
pub const CLOSE_MALFORMED: u32 = 2;
/// Close code: the local node could not apply a batch; the dialer retries.
pub const CLOSE_NODE_UNAVAILABLE: u32 = 3;
