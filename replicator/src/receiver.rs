//! The receiving side: a QUIC server that applies peers' batches to the local node.
//! What a connection must obey is decided by [`crate::receiver_core::ReceiverCore`];
//! this module moves the bytes.
//!
//! A public region's replicator is a QUIC server; a private site's serves the
//! streams its hubs open on the connections it dialed
//! (`serve_returning_streams`). Per stream: its first
//! frame must be a Hello with protocol version 1, this region as `to_region`
//! and a known other region as `from_region`; anything else gets a Goodbye and
//! the connection is closed with [`CLOSE_HANDSHAKE_REFUSED`]. Then each Batch
//! (with a `through_sequence` above the previous one) is handed to the node's
//! Apply and acknowledged once Apply returned (durable); batches that arrived
//! while the previous Apply ran go to the node together, in one Apply, and
//! are acknowledged with one ack through the last of them (acks are
//! cumulative). A malformed frame gets
//! a Goodbye and a close with [`CLOSE_MALFORMED`] and a reason starting with
//! "malformed replication frame"; other connections are not affected.
//!
//! At most [`CONNECTIONS_MAX`] connections are served at once, at most
//! [`CONNECTIONS_PER_ADDRESS_MAX`] of them from one IP address; more are
//! refused. An address counts only once the dialer proved it receives there:
//! a first attempt from an unproven address gets a QUIC Retry (RFC 9000
//! §8.1.2), so a flood with forged source addresses cannot take a real
//! peer's share.

use crate::error::ReplicatorError;
use crate::frame::{self, FrameError, FrameReader, ReceiverInbound};
use crate::node_client::NodeClient;
use crate::protocol::{
    CLOSE_HANDSHAKE_REFUSED, CLOSE_MALFORMED, CLOSE_NODE_UNAVAILABLE, CLOSE_NORMAL,
};
use crate::receiver_core::{ReceiverCore, Violation};
use futures::FutureExt as _;
use meridian_face::accept::{AcceptLimits, Admission};
use meridian_proto::meridian::v1::replication_frame::Frame;
use meridian_proto::meridian::v1::{Ack, ApplyResponse, Batch, Goodbye};
use meridian_report::chain as error_chain;
use prost::Message as _;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

/// Connections served at once, at most.
pub const CONNECTIONS_MAX: usize = 64;
/// Connections served at once from one IP address, at most: a peer keeps
/// one per link, and regions sharing a host (or a NAT) need a few each.
pub const CONNECTIONS_PER_ADDRESS_MAX: usize = 16;

/// Deadline for the QUIC handshake, the stream and the Hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a Goodbye may take to reach the peer before the connection closes.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);
/// QUIC close reasons must fit in one packet; ours stay well below.
const CLOSE_REASON_BYTES_MAX: usize = 256;

/// What every connection of the receiver shares.
pub(crate) struct Receiver {
    pub(crate) local_region: String,
    /// The neighbour regions whose Hello is accepted.
    pub(crate) known_peers: BTreeSet<String>,
    pub(crate) node: NodeClient,
    /// For each private site that dials this region (a hub): where to hand
    /// the site's connection once its Hello is accepted, for the link that
    /// sends to it.
    pub(crate) inbound_links: HashMap<String, watch::Sender<Option<quinn::Connection>>>,
    /// Mutual TLS with the deployment CA: the peer's certificate must name
    /// the region its Hello claims.
    pub(crate) checks_peer_names: bool,
}

/// Accepts connections until `shutdown` or until the endpoint closes.
pub(crate) async fn run_receiver(
    endpoint: quinn::Endpoint,
    receiver: Arc<Receiver>,
    shutdown: CancellationToken,
) {
    let admission = Admission::new(AcceptLimits {
        connections: CONNECTIONS_MAX,
        per_peer_address: CONNECTIONS_PER_ADDRESS_MAX,
    });
    let connections = TaskTracker::new();
    loop {
        let incoming = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { break };
        let remote = incoming.remote_address();
        if !incoming.remote_address_validated() && incoming.may_retry() {
            if let Err(error) = incoming.retry() {
                debug!(%remote, %error, "QUIC Retry not sent");
            }
            continue;
        }
        let place = match admission.admit(remote.ip()) {
            Ok(place) => place,
            Err(refused) => {
                warn!(%remote, reason = %refused, "refusing replication connection");
                incoming.refuse();
                continue;
            }
        };
        let receiver = Arc::clone(&receiver);
        let shutdown = shutdown.clone();
        let span = info_span!("peer_connection", %remote, peer = tracing::field::Empty);
        connections.spawn(
            async move {
                serve_connection(incoming, &receiver, &shutdown).await;
                drop(place);
            }
            .instrument(span),
        );
    }
    connections.close();
    connections.wait().await;
}

async fn serve_connection(
    incoming: quinn::Incoming,
    receiver: &Receiver,
    shutdown: &CancellationToken,
) {
    let remote = incoming.remote_address();
    let connection = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            // A peer without a certificate of the deployment CA ends here.
            warn!(%remote, error = %error_chain(&error), "replication handshake failed");
            return;
        }
        Err(_elapsed) => {
            debug!(%remote, "replication handshake timed out");
            return;
        }
    };
    let stream = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return close(&connection, CLOSE_NORMAL, "shutdown"),
        stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, connection.accept_bi()) => stream,
    };
    let (mut send, receive) = match stream {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            debug!(%remote, error = %error_chain(&error), "replication peer left before opening a stream");
            return;
        }
        Err(_elapsed) => {
            return close(
                &connection,
                CLOSE_HANDSHAKE_REFUSED,
                "no stream opened in time",
            );
        }
    };
    serve_stream(&connection, &mut send, receive, receiver, shutdown).await;
}

/// Serves the streams a hub opens on a connection this private site dialed
/// (the hub's direction of the link), until the connection ends.
pub(crate) async fn serve_returning_streams(
    connection: quinn::Connection,
    receiver: Arc<Receiver>,
    shutdown: CancellationToken,
) {
    let mut streams = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = connection.accept_bi() => accepted,
        };
        let Ok((mut send, receive)) = accepted else {
            break; // the connection ended; the sending session notices too
        };
        let (connection, receiver, shutdown) =
            (connection.clone(), Arc::clone(&receiver), shutdown.clone());
        streams.spawn(
            async move {
                serve_stream(&connection, &mut send, receive, &receiver, &shutdown).await;
            }
            .in_current_span(),
        );
        // Reap finished streams so a long-lived connection holds no garbage.
        while streams.try_join_next().is_some() {}
    }
}

/// Serves one stream of replication: Hello, then batches applied and
/// acknowledged, until it ends or breaks a rule.
async fn serve_stream(
    connection: &quinn::Connection,
    send: &mut quinn::SendStream,
    receive: quinn::RecvStream,
    receiver: &Receiver,
    shutdown: &CancellationToken,
) {
    let remote = connection.remote_address();
    let mut reader = FrameReader::new(receive);
    let mut session = Session {
        connection,
        send,
        remote,
    };

    let mut core = ReceiverCore::new(
        &receiver.local_region,
        receiver.known_peers.clone(),
        std::time::Instant::now(),
        HANDSHAKE_TIMEOUT,
    );
    let hello_deadline = core
        .poll_timeout()
        .map_or_else(tokio::time::Instant::now, tokio::time::Instant::from_std);
    let first = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return session.goodbye(CLOSE_NORMAL, "shutdown").await,
        first = tokio::time::timeout_at(hello_deadline, reader.next_frame()) => first,
    };
    let hello = match first {
        Ok(Ok(Some(first))) => frame::expect_hello(first),
        Ok(Ok(None)) => return close(connection, CLOSE_NORMAL, "no hello"),
        Ok(Err(error)) => Err(error),
        Err(_elapsed) => {
            let violation = core
                .handle_timeout(std::time::Instant::now())
                .err()
                .unwrap_or(Violation::NoHelloInTime(HANDSHAKE_TIMEOUT));
            return session.violation(&violation).await;
        }
    };
    let hello = match hello {
        Ok(hello) => hello,
        Err(error) => return session.malformed(&error).await,
    };
    if let Err(violation) = core.on_hello(&hello) {
        warn!(%remote, from_region = %hello.from_region, %violation, "refusing replication peer");
        return session.violation(&violation).await;
    }
    if receiver.checks_peer_names
        && !crate::tls::certificate_names_region(connection, &hello.from_region)
    {
        warn!(
            %remote,
            from_region = %hello.from_region,
            "refusing replication peer: its certificate does not name {}",
            crate::tls::server_name(&hello.from_region)
        );
        return close(
            connection,
            CLOSE_HANDSHAKE_REFUSED,
            &format!(
                "your certificate does not name {}",
                crate::tls::server_name(&hello.from_region)
            ),
        );
    }
    let peer = hello.from_region;
    tracing::Span::current().record("peer", peer.as_str());
    info!(%remote, peer = %peer, "replication peer connected");
    if let Some(link) = receiver.inbound_links.get(&peer) {
        // A private site dialed in: this region's link to it sends on the
        // same connection.
        link.send_replace(Some(connection.clone()));
    }

    // A frame read while coalescing that was not a batch: handled next.
    let mut pending = None;
    loop {
        let next = match pending.take() {
            Some(next) => next,
            None => tokio::select! {
                biased;
                _ = shutdown.cancelled() => return session.goodbye(CLOSE_NORMAL, "shutdown").await,
                next = reader.next_frame() => next.map(|next| next.map(frame::expect_receiver_inbound)),
            },
        };
        let mut batch = match next {
            Ok(Some(Ok(ReceiverInbound::Batch(batch)))) => batch,
            Ok(Some(Ok(ReceiverInbound::Goodbye(goodbye)))) => {
                info!(peer = %peer, reason = %goodbye.reason, "replication peer said goodbye");
                return close(connection, CLOSE_NORMAL, "goodbye");
            }
            Ok(Some(Err(error)))
            | Err(
                error @ (FrameError::TooLarge { .. }
                | FrameError::Truncated { .. }
                | FrameError::Undecodable(_)
                | FrameError::Empty
                | FrameError::Unexpected { .. }),
            ) => {
                return session.malformed(&error).await;
            }
            Ok(None) => {
                info!(peer = %peer, "replication peer disconnected: stream finished");
                return close(connection, CLOSE_NORMAL, "stream finished");
            }
            Err(FrameError::Io(error)) => {
                let reason = connection
                    .close_reason()
                    .map_or_else(|| error_chain(&error), |reason| error_chain(&reason));
                info!(peer = %peer, %reason, "replication peer disconnected");
                return;
            }
        };
        if let Err(violation) = core.on_batch(batch.through_sequence) {
            warn!(%remote, peer = %peer, %violation, "closing replication connection");
            return session.violation(&violation).await;
        }
        // Batches that arrived meanwhile join this one: one Apply (one
        // commit on the node) and one cumulative ack for all of them, so a
        // sender of many small batches is not held to one commit each.
        let mut coalesced_bytes = batch.encoded_len();
        while coalesced_bytes < COALESCE_BYTES_MAX {
            let Some(next) = reader.next_frame().now_or_never() else {
                break;
            };
            match next.map(|next| next.map(frame::expect_receiver_inbound)) {
                Ok(Some(Ok(ReceiverInbound::Batch(more)))) => {
                    if let Err(violation) = core.on_batch(more.through_sequence) {
                        warn!(%remote, peer = %peer, %violation, "closing replication connection");
                        return session.violation(&violation).await;
                    }
                    coalesced_bytes += more.encoded_len();
                    batch.through_sequence = more.through_sequence;
                    batch.records.extend(more.records);
                }
                other => {
                    pending = Some(other);
                    break;
                }
            }
        }

        let through_sequence = batch.through_sequence;
        let applied = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return session.goodbye(CLOSE_NORMAL, "shutdown").await,
            applied = apply(&receiver.node, &peer, batch) => applied,
        };
        let response = match applied {
            Ok(response) => response,
            Err(error) => {
                let text = error_chain(&error);
                warn!(peer = %peer, error = %text, "applying a replicated batch failed");
                return session
                    .goodbye(CLOSE_NODE_UNAVAILABLE, &format!("apply failed: {text}"))
                    .await;
            }
        };
        let ack = frame::frame(Frame::Ack(Ack {
            through_sequence,
            stored: response.stored,
            duplicates: response.duplicates,
        }));
        if let Err(error) = session.send.write_all(&frame::encode(&ack)).await {
            info!(peer = %peer, error = %error_chain(&error), "replication peer disconnected");
            return;
        }
        debug!(
            peer = %peer,
            through_sequence,
            stored = response.stored,
            duplicates = response.duplicates,
            "batch applied"
        );
    }
}

/// Encoded bytes of batches joined into one Apply, at most before another
/// joins: a batch is at most 4 MiB (`SenderLimits::batch_bytes_max`), so
/// the Apply request stays below the node's 8 MiB gRPC decode limit.
const COALESCE_BYTES_MAX: usize = 2 * 1024 * 1024;

/// Applies a batch; an empty one (everything filtered by the sender) needs no call.
async fn apply(
    node: &NodeClient,
    from_region: &str,
    batch: Batch,
) -> Result<ApplyResponse, ReplicatorError> {
    if batch.records.is_empty() {
        return Ok(ApplyResponse::default());
    }
    node.apply(from_region, batch.records).await
}

/// The sending half of an accepted connection, for goodbyes.
struct Session<'a> {
    connection: &'a quinn::Connection,
    send: &'a mut quinn::SendStream,
    remote: SocketAddr,
}

impl Session<'_> {
    async fn violation(&mut self, violation: &Violation) {
        self.goodbye(violation.close_code(), &violation.to_string())
            .await;
    }

    async fn malformed(&mut self, error: &FrameError) {
        let reason = error_chain(error);
        warn!(remote = %self.remote, %reason, "closing replication connection");
        self.goodbye(CLOSE_MALFORMED, &reason).await;
    }

    /// Sends Goodbye{reason}, gives it a moment to arrive, then closes.
    async fn goodbye(&mut self, code: u32, reason: &str) {
        let goodbye = frame::frame(Frame::Goodbye(Goodbye {
            reason: reason.to_owned(),
        }));
        let delivered = async {
            self.send.write_all(&frame::encode(&goodbye)).await.ok()?;
            self.send.finish().ok()?;
            self.send.stopped().await.ok()
        };
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, delivered).await;
        close(self.connection, code, reason);
    }
}

/// Closes `connection` with `code` and `reason` (cut to fit a close frame).
pub(crate) fn close(connection: &quinn::Connection, code: u32, reason: &str) {
    let mut end = reason.len().min(CLOSE_REASON_BYTES_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    connection.close(code.into(), &reason.as_bytes()[..end]);
}
