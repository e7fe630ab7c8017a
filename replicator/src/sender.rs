//! The sending side: one task per neighbour region.
//!
//! A *session* gets a connection to the peer ([`Transport`]: dials the
//! peer's replicator, or, for a private site that dials this hub, takes the
//! connection the site opened), reads the checkpoint the local node persisted
//! for the peer, opens a stream, says Hello, opens the node's tail after the
//! checkpoint and then moves bytes for [`SenderCore`]: tail batches in
//! (filtered by [`RecordFilter`]), Batch frames out, Acks in, checkpoints to
//! the node. Any failure ends the session; the link logs it (see [`Health`]:
//! WARN once per outage and error, DEBUG while it lasts) and starts a new
//! session after an exponential back-off (100 ms doubling to 2 s, jittered,
//! without a limit on attempts). Resending after a reconnect is harmless because the
//! receiving node deduplicates.

use crate::core::{AckOutcome, RecordFilter, SenderCore, SenderLimits, Verdict};
use crate::error::ReplicatorError;
use crate::frame::{self, FrameError, FrameReader, SenderInbound};
use crate::node_client::{NodeClient, TailLimits};
use crate::protocol::{CLOSE_MALFORMED, CLOSE_NORMAL, PROTOCOL_VERSION};
use crate::receiver::Receiver;
use crate::tls;
use backon::BackoffBuilder;
use futures::FutureExt as _;
use meridian_proto::meridian::v1::replication_frame::Frame;
use meridian_proto::meridian::v1::{Hello, TailBatch};
use meridian_report::chain as error_chain;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info, warn};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between two attempts to reach a peer: a returning peer is
/// found again within about this plus [`HANDSHAKE_TIMEOUT`].
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Deadline of the QUIC handshake with a peer (a few round trips even on
/// the longest links).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// What a link shows to the progress reporter.
#[derive(Debug, Default)]
pub(crate) struct LinkStatus {
    acked_through: AtomicU64,
    connected: AtomicBool,
}

impl LinkStatus {
    pub(crate) fn acked_through(&self) -> u64 {
        self.acked_through.load(Ordering::Relaxed)
    }

    pub(crate) fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// How a link reaches its peer.
pub(crate) enum Transport {
    /// This region dials the peer's replicator (public to public, and a
    /// private site to its hub).
    Dial {
        address: SocketAddr,
        peer_data_dir: PathBuf,
        /// A private site serves the streams its hub opens on the
        /// connection (the hub's direction) for as long as it lasts.
        serve_returning: Option<Arc<Receiver>>,
    },
    /// The peer is a private site that dials this region (its hub): send on
    /// the latest connection it opened, handed over by the receiver.
    Accept {
        connections: watch::Receiver<Option<quinn::Connection>>,
    },
}

impl Transport {
    /// For logs: the peer's address, or how it is reached.
    fn describe(&self) -> String {
        match self {
            Transport::Dial { address, .. } => address.to_string(),
            Transport::Accept { .. } => "(the peer dials in)".to_owned(),
        }
    }
}

/// Everything one link needs; owned by its task.
pub(crate) struct Link {
    pub(crate) local_region: String,
    pub(crate) peer: String,
    /// How this replicator proves itself and checks the peer.
    pub(crate) trust: tls::Trust,
    pub(crate) transport: Transport,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) node: NodeClient,
    pub(crate) filter: RecordFilter,
    pub(crate) limits: SenderLimits,
    pub(crate) status: Arc<LinkStatus>,
}

/// Runs the link until `shutdown`: sessions, each retried with back-off.
pub(crate) async fn run_link(mut link: Link, shutdown: CancellationToken) {
    let mut core = SenderCore::new(0, link.limits);
    let mut health = Health::new(&link);
    loop {
        let result = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            result = run_session(&mut link, &mut core, &mut health, &shutdown) => result,
        };
        link.status.connected.store(false, Ordering::Relaxed);
        let error = match result {
            Ok(never) => match never {},
            Err(error) => error,
        };
        let delay = health.on_session_end(&error);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    debug!(peer = %link.peer, "replication link stopped");
}

/// A link's back-off and log policy.
///
/// A session becomes *healthy* once an ack advanced the checkpoint or it has
/// been up for [`HEALTHY_AFTER`]. Only the end of a healthy session starts an
/// outage (one line: INFO when the peer left in order, else WARN) and resets
/// the back-off. During an outage each new error is logged once at WARN, and
/// repeats at DEBUG; the end of the outage is logged at INFO.
struct Health {
    peer: String,
    address: String,
    backoff: backon::ExponentialBackoff,
    /// The last error of the outage in progress, if there is one.
    outage: Option<String>,
    session_healthy: bool,
}

/// How long a session must stay up to count as healthy without an ack.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

impl Health {
    fn new(link: &Link) -> Self {
        Self {
            peer: link.peer.clone(),
            address: link.transport.describe(),
            backoff: new_backoff(),
            outage: None,
            session_healthy: false,
        }
    }

    fn on_connected(&self, resume_after: u64) {
        let (peer, address) = (&self.peer, &self.address);
        if self.outage.is_none() {
            info!(%peer, %address, resume_after, "replication link connected");
        } else {
            debug!(%peer, %address, resume_after, "replication link connected");
        }
    }

    fn on_healthy(&mut self) {
        if self.session_healthy {
            return;
        }
        self.session_healthy = true;
        self.backoff = new_backoff();
        if self.outage.take().is_some() {
            info!(peer = %self.peer, address = %self.address, "replication link recovered");
        }
    }

    /// Logs the end of a session; returns how long to wait before the next.
    fn on_session_end(&mut self, error: &ReplicatorError) -> Duration {
        let text = error_chain(error);
        let (peer, address) = (&self.peer, &self.address);
        if std::mem::take(&mut self.session_healthy) {
            if is_orderly(error) {
                info!(%peer, %address, reason = %text, "replication link disconnected");
            } else {
                warn!(%peer, %address, error = %text, "replication link disconnected");
            }
        } else if self.outage.as_deref() == Some(text.as_str()) {
            debug!(%peer, error = %text, "replication link still failing");
        } else if matches!(error, ReplicatorError::PeerCertificateMissing { .. }) {
            // Expected while regions start together: the peer creates its
            // certificate when it starts. Persisting, it shows at DEBUG above.
            info!(%peer, %address, reason = %text, "waiting for the peer replicator to start");
        } else {
            warn!(%peer, %address, error = %text, "replication link failed; retrying with back-off");
        }
        self.outage = Some(text);
        self.backoff.next().unwrap_or(BACKOFF_MAX)
    }
}

/// True when the peer ended the link on purpose (shutdown), not through a fault.
fn is_orderly(error: &ReplicatorError) -> bool {
    match error {
        ReplicatorError::PeerGoodbye { reason, .. } => reason == "shutdown",
        ReplicatorError::Connection {
            source: quinn::ConnectionError::ApplicationClosed(close),
            ..
        } => close.error_code == quinn::VarInt::from_u32(CLOSE_NORMAL),
        _ => false,
    }
}

fn new_backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::new()
        .with_min_delay(BACKOFF_MIN)
        .with_max_delay(BACKOFF_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Uninhabited: a session only ends with an error (shutdown drops it).
enum Never {}

/// One connection's worth of replication; reports its health to `health`.
async fn run_session(
    link: &mut Link,
    core: &mut SenderCore,
    health: &mut Health,
    shutdown: &CancellationToken,
) -> Result<Never, ReplicatorError> {
    let peer = link.peer.clone();
    // Only this link moves the checkpoint, so reading it before a (possibly
    // long) wait for the connection is as good as after.
    let checkpoint = link.node.get_checkpoint(&peer).await?;
    // Topics created or changed through the admin API since the topology
    // file was written.
    let catalog = link.node.get_catalog().await?;
    link.filter.apply_catalog(catalog);
    let resume_after = core.resume(checkpoint);
    link.status
        .acked_through
        .store(checkpoint, Ordering::Relaxed);
    let (connection, returning) = match &mut link.transport {
        Transport::Dial {
            address,
            peer_data_dir,
            serve_returning,
        } => {
            let connection =
                dial(&link.endpoint, &link.trust, &peer, *address, peer_data_dir).await?;
            (connection, serve_returning.clone())
        }
        Transport::Accept { connections } => (wait_for_dial_in(connections).await, None),
    };
    let address = connection.remote_address();
    // From here on, dropping `connection` on any exit closes it (a dialed
    // one; a site's connection stays open for its other direction).
    let mut returning_streams = tokio::task::JoinSet::new();
    if let Some(receiver) = returning {
        returning_streams.spawn(
            crate::receiver::serve_returning_streams(
                connection.clone(),
                receiver,
                shutdown.child_token(),
            )
            .in_current_span(),
        );
    }

    let connection_error = |source| ReplicatorError::Connection {
        peer: peer.clone(),
        address,
        source,
    };
    let (mut send, receive) = connection.open_bi().await.map_err(connection_error)?;
    let hello = frame::frame(Frame::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        from_region: link.local_region.clone(),
        to_region: peer.clone(),
    }));
    send.write_all(&frame::encode(&hello))
        .await
        .map_err(|source| ReplicatorError::Write {
            peer: peer.clone(),
            address,
            source,
        })?;

    let tail_limits = TailLimits {
        records_max: u32::try_from(link.limits.batch_records_max).unwrap_or(u32::MAX),
        bytes_max: u32::try_from(link.limits.batch_bytes_max).unwrap_or(u32::MAX),
    };
    let tail = link.node.tail(resume_after, tail_limits).await?;
    link.status.connected.store(true, Ordering::Relaxed);
    health.on_connected(resume_after);

    let streams = Streams {
        connection: &connection,
        address,
        send,
        reader: FrameReader::new(receive),
        tail,
    };
    let error = match exchange(link, core, health, streams).await {
        Ok(never) => match never {},
        Err(error) => error,
    };
    if let ReplicatorError::Protocol { .. } | ReplicatorError::Frame { .. } = error {
        crate::receiver::close(&connection, CLOSE_MALFORMED, &error_chain(&error));
    }
    Err(error)
}

/// Dials `peer`'s replicator at `address`, trusting exactly its certificate.
async fn dial(
    endpoint: &quinn::Endpoint,
    trust: &tls::Trust,
    peer: &str,
    address: SocketAddr,
    peer_data_dir: &std::path::Path,
) -> Result<quinn::Connection, ReplicatorError> {
    let client_config = trust.client_config(peer, peer_data_dir)?;
    let connecting = endpoint
        .connect_with(client_config, address, &tls::server_name(peer))
        .map_err(|source| ReplicatorError::Connect {
            peer: peer.to_owned(),
            address,
            source,
        })?;
    let connection_error = |source| ReplicatorError::Connection {
        peer: peer.to_owned(),
        address,
        source,
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(result) => result.map_err(connection_error),
        Err(_elapsed) => Err(connection_error(quinn::ConnectionError::TimedOut)),
    }
}

/// Waits until the private site this link sends to has dialed in, and
/// returns its open connection. Waits forever while it stays away (the
/// link's shutdown ends the wait).
async fn wait_for_dial_in(
    connections: &mut watch::Receiver<Option<quinn::Connection>>,
) -> quinn::Connection {
    loop {
        let open = connections
            .borrow_and_update()
            .as_ref()
            .filter(|connection| connection.close_reason().is_none())
            .cloned();
        if let Some(connection) = open {
            return connection;
        }
        if connections.changed().await.is_err() {
            // The receiver is gone: only shutdown remains.
            std::future::pending::<()>().await;
        }
    }
}

/// The open streams of a session.
struct Streams<'a> {
    connection: &'a quinn::Connection,
    address: SocketAddr,
    send: quinn::SendStream,
    reader: FrameReader<quinn::RecvStream>,
    tail: tonic::Streaming<TailBatch>,
}

/// Moves tail batches out and acks in until something fails.
async fn exchange(
    link: &mut Link,
    core: &mut SenderCore,
    health: &mut Health,
    mut streams: Streams<'_>,
) -> Result<Never, ReplicatorError> {
    let peer = link.peer.clone();
    let address = streams.address;
    let node_address = link.node.address();
    let healthy_after = tokio::time::sleep(HEALTHY_AFTER);
    tokio::pin!(healthy_after);
    loop {
        // The oldest batch in flight's ack deadline (far away with none).
        let stall_check = core.poll_timeout().map_or_else(
            || tokio::time::Instant::now() + HANDSHAKE_TIMEOUT,
            tokio::time::Instant::from_std,
        );
        tokio::select! {
            () = &mut healthy_after, if !health.session_healthy => health.on_healthy(),
            () = tokio::time::sleep_until(stall_check) => {
                if let Err(source) = core.handle_timeout(std::time::Instant::now()) {
                    return Err(ReplicatorError::AckStalled { peer, address, source });
                }
            }
            inbound = streams.reader.next_frame() => {
                let inbound = match inbound {
                    Ok(Some(inbound)) => frame::expect_sender_inbound(inbound),
                    Ok(None) => return Err(transport_ended(&peer, address, streams.connection, None)),
                    Err(error @ FrameError::Io(_)) => {
                        return Err(transport_ended(&peer, address, streams.connection, Some(error)));
                    }
                    Err(error) => Err(error),
                };
                match inbound {
                    Ok(SenderInbound::Ack(ack)) => {
                        if handle_ack(link, core, ack.through_sequence).await? {
                            health.on_healthy();
                        }
                        debug!(
                            through_sequence = ack.through_sequence,
                            stored = ack.stored,
                            duplicates = ack.duplicates,
                            "batch acknowledged"
                        );
                    }
                    Ok(SenderInbound::Goodbye(goodbye)) => {
                        let reason = goodbye.reason;
                        return Err(ReplicatorError::PeerGoodbye { peer, address, reason });
                    }
                    Err(source) => return Err(ReplicatorError::Frame { peer, address, source }),
                }
            }
            tail_batch = streams.tail.next(), if core.wants_tail() => {
                let tail_batch = match tail_batch {
                    Some(Ok(tail_batch)) => tail_batch,
                    Some(Err(source)) => {
                        let call = "Tail";
                        return Err(ReplicatorError::NodeCall { address: node_address, call, source });
                    }
                    None => return Err(ReplicatorError::TailEnded { address: node_address }),
                };
                let mut through = tail_batch.through_sequence;
                let mut kept = select_records(&mut link.filter, &peer, tail_batch);
                // The node streams a tail batch per commit, so while the link
                // waited (a slow peer, a cut link) many small ones queued up:
                // take every one already there, so they go out as full
                // batches instead of one round trip each.
                while kept.len() < link.limits.batch_records_max {
                    let Some(next) = streams.tail.next().now_or_never() else {
                        break;
                    };
                    match next {
                        Some(Ok(tail_batch)) => {
                            through = tail_batch.through_sequence;
                            kept.extend(select_records(&mut link.filter, &peer, tail_batch));
                        }
                        Some(Err(source)) => {
                            let call = "Tail";
                            return Err(ReplicatorError::NodeCall { address: node_address, call, source });
                        }
                        None => return Err(ReplicatorError::TailEnded { address: node_address }),
                    }
                }
                core.push_tail(kept, through)
                    .map_err(|source| ReplicatorError::Protocol { peer: peer.clone(), source })?;
            }
        }
        while let Some(batch) = core.poll_transmit(std::time::Instant::now()) {
            let encoded = frame::encode(&frame::frame(Frame::Batch(batch)));
            streams
                .send
                .write_all(&encoded)
                .await
                .map_err(|source| ReplicatorError::Write {
                    peer: peer.clone(),
                    address,
                    source,
                })?;
        }
    }
}

/// The error for a receive stream that ended: why the connection closed if it
/// did, else the read error, else a plain "peer closed the stream".
fn transport_ended(
    peer: &str,
    address: SocketAddr,
    connection: &quinn::Connection,
    read_error: Option<FrameError>,
) -> ReplicatorError {
    let peer = peer.to_owned();
    match (connection.close_reason(), read_error) {
        (Some(source), _) => ReplicatorError::Connection {
            peer,
            address,
            source,
        },
        (None, Some(source)) => ReplicatorError::Frame {
            peer,
            address,
            source,
        },
        (None, None) => ReplicatorError::PeerClosedStream { peer, address },
    }
}

/// Applies an ack to the core and persists the checkpoint it yields.
/// Returns whether the checkpoint advanced.
async fn handle_ack(
    link: &Link,
    core: &mut SenderCore,
    through: u64,
) -> Result<bool, ReplicatorError> {
    let outcome = core
        .on_ack(through)
        .map_err(|source| ReplicatorError::Protocol {
            peer: link.peer.clone(),
            source,
        })?;
    let AckOutcome::Advanced { acked_through } = outcome else {
        return Ok(false);
    };
    link.status
        .acked_through
        .store(acked_through, Ordering::Relaxed);
    if let Some(checkpoint) = core.checkpoint_to_persist() {
        link.node.put_checkpoint(&link.peer, checkpoint).await?;
        core.on_persisted(checkpoint);
    }
    Ok(true)
}

/// The records of a tail batch that go to the peer, by topic policy.
fn select_records(
    filter: &mut RecordFilter,
    peer: &str,
    tail_batch: TailBatch,
) -> Vec<meridian_proto::meridian::v1::Record> {
    tail_batch
        .records
        .into_iter()
        .filter(|record| match filter.verdict(record) {
            Verdict::Send => true,
            Verdict::NotForPeer | Verdict::AlreadyThere | Verdict::NotAMessage => false,
            Verdict::UnknownTopic { first_time } => {
                if first_time {
                    let topic = record.message.as_ref().map_or("", |message| &message.topic);
                    warn!(
                        peer,
                        topic, "skipping records of a topic that is not in the topology"
                    );
                }
                false
            }
        })
        .collect()
}
