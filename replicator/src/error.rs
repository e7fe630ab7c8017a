//! The replicator's one error type.
//!
//! Variants carry the context an operator needs (peer region, address, path)
//! and keep the cause as `#[source]`. Errors of a link are logged where the
//! link handles them (sender.rs / receiver.rs), not where they are created.

use crate::core::CoreError;
use crate::frame::FrameError;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReplicatorError {
    #[error("start replicator: region {region:?} is not in the topology")]
    UnknownRegion {
        region: String,
        #[source]
        source: Box<meridian_topology::TopologyError>,
    },

    #[error("start replicator: the CA of `[client_tls]` to dial the node with")]
    ClientTls {
        #[source]
        source: Box<meridian_face::tls::TlsError>,
    },

    #[error("start replicator: load the access keys")]
    AccessKeys {
        #[source]
        source: Box<meridian_topology::TopologyError>,
    },

    #[error(
        "lock data directory: {path} is locked by another process (is another replicator of this region running?)"
    )]
    Locked { path: PathBuf },

    #[error("lock data directory: open {path}")]
    LockFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("prepare data directory {path}")]
    CreateDirectory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("read or write TLS file {path}")]
    TlsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("generate TLS certificate for region {region}")]
    GenerateCertificate {
        region: String,
        #[source]
        source: rcgen::Error,
    },

    #[error(
        "dial peer {peer}: its certificate {path} does not exist yet (has its replicator started?)"
    )]
    PeerCertificateMissing { peer: String, path: PathBuf },

    #[error("configure TLS for region {region}")]
    Tls {
        region: String,
        #[source]
        source: rustls::Error,
    },

    #[error("configure QUIC for region {region}: the TLS provider has no QUIC initial suite")]
    QuicCrypto {
        region: String,
        #[source]
        source: quinn::crypto::rustls::NoInitialCipherSuite,
    },

    #[error(
        "start replicator: region {region:?} is public, so its replicator needs its UDP socket (the topology's replicator address)"
    )]
    NoSocket { region: String },

    #[error("open QUIC endpoint on {address}")]
    Endpoint {
        address: String,
        #[source]
        source: std::io::Error,
    },

    #[error("dial peer {peer} at {address}")]
    Connect {
        peer: String,
        address: SocketAddr,
        #[source]
        source: quinn::ConnectError,
    },

    #[error("connection to peer {peer} at {address}")]
    Connection {
        peer: String,
        address: SocketAddr,
        #[source]
        source: quinn::ConnectionError,
    },

    #[error("write to peer {peer} at {address}")]
    Write {
        peer: String,
        address: SocketAddr,
        #[source]
        source: quinn::WriteError,
    },

    #[error("read from peer {peer} at {address}")]
    Frame {
        peer: String,
        address: SocketAddr,
        #[source]
        source: FrameError,
    },

    #[error("read from peer {peer} at {address}: the peer closed the stream")]
    PeerClosedStream { peer: String, address: SocketAddr },

    #[error("replicate to peer {peer} at {address}: the peer said goodbye: {reason}")]
    PeerGoodbye {
        peer: String,
        address: SocketAddr,
        reason: String,
    },

    #[error("replicate to peer {peer} at {address}: the link stalled")]
    AckStalled {
        peer: String,
        address: SocketAddr,
        #[source]
        source: crate::core::AckStalled,
    },

    #[error("replicate to peer {peer}: protocol violation")]
    Protocol {
        peer: String,
        #[source]
        source: CoreError,
    },

    #[error("connect to the local node at {address}")]
    NodeConnect {
        address: SocketAddr,
        #[source]
        source: tonic::transport::Error,
    },

    #[error("call {call} on the local node at {address}")]
    NodeCall {
        address: SocketAddr,
        call: &'static str,
        #[source]
        source: tonic::Status,
    },

    #[error("call {call} on the local node at {address}: no answer within {timeout_ms} ms")]
    NodeTimeout {
        address: SocketAddr,
        call: &'static str,
        timeout_ms: u64,
    },

    #[error("tail the local node at {address}: the stream ended")]
    TailEnded { address: SocketAddr },

    #[error("run replicator task {task}")]
    Task {
        task: String,
        #[source]
        source: tokio::task::JoinError,
    },
}
