//! The TCP relay: each accepted connection is joined to a new connection to
//! the target, and each direction's bytes go through a delay queue.
//!
//! A connection's two directions run in the connection's task (one
//! `JoinSet` entry per connection, owned by the accept loop): each reads
//! chunks into a bounded queue and writes them out when due. Before each
//! read it reserves room for a whole chunk from the direction's 4 MiB, and a
//! chunk gives its room back once written, so the bytes held (queued, being
//! written or waiting out a partition) never exceed 4 MiB. Reading also
//! pauses, with a bandwidth limit, while the direction's queue is longer
//! than its buffer. Bytes are never dropped.

use crate::direction::Direction;
use crate::errors::{Backoff, Severity, severity};
use crate::queue::{DelayQueue, Scheduled};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

/// The most one read takes, in bytes: a chunk.
const CHUNK_BYTES_MAX: usize = 16 * 1024;
/// Bytes a connection holds per direction at most.
const HELD_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Chunks a connection holds per direction at most, however small.
const HELD_CHUNKS_MAX: usize = 4096;
/// Connections a relay serves at once; more wait in the listen backlog.
const CONNECTIONS_MAX: usize = 1024;
/// How long connecting to the target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Relays every TCP connection accepted on `listener` to a new connection to
/// `target`, until `shutdown` (which also ends open connections).
///
/// Bytes from the client to the target go through `outbound`, bytes back
/// through `inbound`, in chunks as read (at most 16 KiB); each chunk is
/// delayed like a datagram. If connecting to `target` fails, the accepted
/// connection is closed. `TCP_NODELAY` is set on both sides. When one side
/// ends its stream (or fails), the other side's stream is shut down after the
/// bytes queued before it are delivered. A chunk the loss draw hits is
/// delayed by a retransmission timeout, `max(200 ms, 2 × delay)`, never
/// dropped; a partition holds bytes until it heals. At most 4 MiB are held
/// per connection and direction; beyond that the relay stops reading.
///
/// Returns an error only when `listener` itself cannot be used; other accept
/// errors are logged and retried.
pub async fn relay_tcp(
    listener: TcpListener,
    target: SocketAddr,
    outbound: Direction,
    inbound: Direction,
    shutdown: CancellationToken,
) -> io::Result<()> {
    debug!(address = ?listener.local_addr().ok(), %target, "TCP relay started");
    let mut connections = JoinSet::new();
    let mut backoff = Backoff::new();
    let result = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined {
                    error!(%target, %error, "TCP relay: a connection's task failed");
                }
            }
            accepted = listener.accept(), if connections.len() < CONNECTIONS_MAX => match accepted {
                Ok((client, client_address)) => {
                    backoff.succeeded();
                    let connection = Connection {
                        target,
                        client_address,
                        outbound: outbound.clone(),
                        inbound: inbound.clone(),
                    };
                    connections.spawn(connection.relay(client, shutdown.clone()));
                }
                Err(error) => match severity(&error) {
                    Severity::Peer => debug!(%target, %error, "TCP relay: accepting a connection failed; going on"),
                    Severity::Fatal => break Err(error),
                    Severity::Resource => {
                        warn!(%target, %error, "TCP relay: accepting failed; retrying after a pause");
                        tokio::select! {
                            () = shutdown.cancelled() => {}
                            () = backoff.pause() => {}
                        }
                    }
                },
            },
        }
    };
    // The connections watch `shutdown` too; on an error, end them here.
    if result.is_err() {
        connections.abort_all();
    }
    while connections.join_next().await.is_some() {}
    debug!(%target, ?result, "TCP relay ended");
    result
}

/// One relayed connection.
struct Connection {
    target: SocketAddr,
    client_address: SocketAddr,
    outbound: Direction,
    inbound: Direction,
}

impl Connection {
    async fn relay(self, client: TcpStream, shutdown: CancellationToken) {
        let Connection {
            target,
            client_address,
            outbound,
            inbound,
        } = self;
        let connecting = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target));
        let connected = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            connected = connecting => connected,
        };
        let server = match connected {
            Ok(Ok(server)) => server,
            Ok(Err(error)) => {
                debug!(%target, client = %client_address, %error, "TCP relay: connecting to the target failed; closing the client's connection");
                return;
            }
            Err(_) => {
                debug!(%target, client = %client_address, "TCP relay: connecting to the target timed out; closing the client's connection");
                return;
            }
        };
        for stream in [&client, &server] {
            if let Err(error) = stream.set_nodelay(true) {
                debug!(%target, %error, "TCP relay: setting TCP_NODELAY failed");
            }
        }
        debug!(%target, client = %client_address, "TCP relay: connection open");
        let (client_reader, client_writer) = client.into_split();
        let (server_reader, server_writer) = server.into_split();
        let both = async {
            tokio::join!(
                pump(client_reader, server_writer, &outbound),
                pump(server_reader, client_writer, &inbound),
            )
        };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {}
            ((), ()) = both => {}
        }
        debug!(%target, client = %client_address, "TCP relay: connection closed");
    }
}

/// Moves one direction's bytes from `from` to `to` through `direction`,
/// until the end of the stream is delivered or either side fails.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, direction: &Direction) {
    let queue = DelayQueue::new(HELD_CHUNKS_MAX);
    let reading = read_chunks(&mut from, direction, &queue);
    let writing = write_chunks(&mut to, direction, &queue);
    tokio::pin!(reading, writing);
    tokio::select! {
        // Writing ends first only if the destination failed: stop reading.
        () = &mut writing => return,
        () = &mut reading => {}
    }
    writing.await;
}

/// Bytes read from one side, holding their room until written.
#[derive(Debug)]
struct Chunk {
    bytes: Vec<u8>,
    _room: OwnedSemaphorePermit,
}

/// A chunk, or `None` for the end of the stream.
type Item = Option<Chunk>;

/// Reads chunks and queues them, ending with the end of the stream (also
/// after a read error).
async fn read_chunks(from: &mut OwnedReadHalf, direction: &Direction, queue: &DelayQueue<Item>) {
    let room = Arc::new(Semaphore::new(HELD_BYTES_MAX));
    let mut buffer = vec![0u8; CHUNK_BYTES_MAX];
    loop {
        while let Some(wait) = direction.stream_wait(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let mut reserved = Arc::clone(&room)
            .acquire_many_owned(CHUNK_BYTES_MAX as u32)
            .await
            .expect("the semaphore is never closed");
        let length = match from.read(&mut buffer).await {
            Ok(length) => length,
            Err(error) => {
                debug!(%error, "TCP relay: reading failed; ending the stream");
                0
            }
        };
        // Give back the room the read did not use.
        drop(reserved.split(CHUNK_BYTES_MAX - length));
        let admitted = direction.admit_chunk(Instant::now(), length);
        let chunk = (length > 0).then(|| Chunk {
            bytes: buffer[..length].to_vec(),
            _room: reserved,
        });
        let end = chunk.is_none();
        queue
            .push_when_room(Scheduled {
                due: admitted.due,
                item: chunk,
                _held: admitted.held,
            })
            .await;
        if end {
            return;
        }
    }
}

/// Writes chunks when due (and not partitioned), then shuts the stream down.
async fn write_chunks(to: &mut OwnedWriteHalf, direction: &Direction, queue: &DelayQueue<Item>) {
    let mut conditions = direction.subscribe();
    loop {
        let entry = queue.pop().await;
        tokio::time::sleep_until(entry.due).await;
        // Held through a partition, then one delay to arrive after it heals.
        while conditions.borrow_and_update().partitioned {
            if conditions.wait_for(|now| !now.partitioned).await.is_err() {
                return;
            }
            let delay = conditions.borrow().delay;
            tokio::time::sleep(delay).await;
        }
        let Some(chunk) = &entry.item else {
            if let Err(error) = to.shutdown().await {
                debug!(%error, "TCP relay: shutting the stream down failed");
            }
            return;
        };
        if let Err(error) = to.write_all(&chunk.bytes).await {
            debug!(%error, "TCP relay: writing failed; ending this direction");
            return;
        }
        direction.record_delivered(chunk.bytes.len());
    }
}
