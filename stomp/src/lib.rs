//! The region node's STOMP 1.2 face: a TCP server that stomp.py and other
//! STOMP clients talk to, over the same [`meridian_face::Backend`] as the
//! RocketMQ gRPC face. It must not depend on the node (or any other
//! Meridian service crate): everything it does to messages goes through the
//! backend trait, with RocketMQ v2 requests.
//!
//! What a STOMP client sees, and what it becomes in RocketMQ terms:
//!
//! * `SEND /queue/NAME`, `/topic/NAME` or a bare `NAME` stores a message in
//!   topic NAME (headers `tag`, `keys`, `message-group`, `deliver-at`,
//!   `delay`, `content-type`, custom headers as properties; see the `convert` module);
//! * `SUBSCRIBE /queue/NAME` consumes as the shared group `stomp_NAME`
//!   (competing consumers), `SUBSCRIBE /topic/NAME` as a consumer of its own
//!   starting at the topic's end (broadcast), `consumer-group: GID` picks a
//!   durable group instead (see the `destination` module);
//! * ack modes `auto`, `client` (cumulative) and `client-individual` map to
//!   AckMessage; NACK and unacknowledged messages of an ending subscription
//!   to ChangeInvisibleDuration 0 (delivered again at once);
//! * a host header that names no host (`MQ_INST_1`) is an instance
//!   namespace: names become `NS%NAME`.
//!
//! Left out: STOMP 1.0/1.1 (CONNECT must accept 1.2), `/temp-queue/` and
//! other broker-specific destinations, and TLS (put a TLS terminator in
//! front). A `selector` is a tag expression (`TagA||TagB`) when it is one,
//! else an SQL92 expression over properties (RocketMQ's SQL filter).
//!
//! [`serve`] accepts connections until its shutdown token fires; each one
//! runs in a session task (the `session` module) that owns its subscriptions' receive tasks.

pub mod frame;

mod convert;
mod destination;
mod error;
mod heartbeat;
mod server;
mod session;

#[cfg(test)]
mod tests;

pub use server::serve;

use meridian_face::access::Authentication;
use std::time::Duration;

/// The server's version, as the CONNECTED frame's `server` header shows it.
pub const SERVER_NAME: &str = concat!("meridian/", env!("CARGO_PKG_VERSION"));

/// What the node tells its STOMP server.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node's region (for logs).
    pub region: String,
    /// Who may connect: key id as `login`, secret as `passcode`, or anyone.
    pub authentication: Authentication,
    pub limits: Limits,
    /// TLS (the topology's `[client_tls]`), or plain TCP.
    pub tls: Option<meridian_face::tls::ServerTls>,
}

/// Bounds on what one client may make the server hold or wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; a connection beyond gets an ERROR frame
    /// and is closed.
    pub max_connections: usize,
    /// Connections served at once from one IP address; beyond, the same.
    pub max_connections_per_address: usize,
    /// Largest frame (command, headers and body) read; never more than this
    /// is buffered for one frame.
    pub max_frame_bytes: usize,
    /// Most headers in one frame.
    pub max_headers: usize,
    /// Longest command or header line, in bytes, without its EOL.
    pub max_header_line_bytes: usize,
    /// How long a new socket may take to send its CONNECT (or STOMP) frame.
    pub connect_timeout: Duration,
    /// Most subscriptions open at once on one connection.
    pub max_subscriptions: usize,
    /// Unacknowledged messages a subscription may hold when its SUBSCRIBE
    /// names no `prefetch-count`.
    pub default_prefetch: u32,
    /// Largest `prefetch-count` a SUBSCRIBE may ask for.
    pub max_prefetch: u32,
    /// The server's heart-beat offer `sx`: it sends a heart-beat at most this
    /// often (the client may ask for less often). Zero: it sends none.
    pub heart_beat_send: Duration,
    /// The server's heart-beat offer `sy`: it wants to hear from the client
    /// at least this often if the client offers heart-beats (the client may
    /// offer less often); silence for twice the agreed interval closes the
    /// connection. Zero: it wants none.
    pub heart_beat_receive: Duration,
    /// Longest a write to the client may take (a client that does not read
    /// is disconnected).
    pub write_timeout: Duration,
    /// Most transactions open at once on one connection.
    pub max_transactions: usize,
    /// Most SEND, ACK and NACK frames one transaction may buffer.
    pub max_transaction_frames: usize,
    /// Most body bytes one transaction may buffer.
    pub max_transaction_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_connections_per_address: 256,
            max_frame_bytes: meridian_proto::MAX_BODY_BYTES + 64 * 1024,
            max_headers: 64,
            max_header_line_bytes: 8 * 1024,
            connect_timeout: Duration::from_secs(10),
            max_subscriptions: 64,
            default_prefetch: 32,
            max_prefetch: 1024,
            heart_beat_send: Duration::from_secs(10),
            heart_beat_receive: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_transactions: 16,
            max_transaction_frames: 1024,
            max_transaction_bytes: 64 * 1024 * 1024,
        }
    }
}
