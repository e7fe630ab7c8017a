//! Accepting TCP connections for the faces that run a task of their own per
//! connection (HTTP, STOMP): at most [`AcceptLimits::connections`] at once
//! and at most [`AcceptLimits::per_peer_address`] from one IP address. A
//! connection beyond either is told why in the face's own words
//! ([`ConnectionHandler::refusal`]) and closed; a flood of them costs at most
//! [`REFUSALS_IN_FLIGHT`] small writes of at most [`REFUSAL_TIMEOUT`] each,
//! further ones are closed without a word.
//!
//! [`serve`] tracks every task it starts, and returns once the listener is
//! closed and all of them ended: the handler's tasks see the shutdown token
//! and wind down.

use crate::tls::{ClientStream, ServerTls, starts_with_handshake};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Refused sockets being told so at once; beyond, they are closed at once.
pub const REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refused socket may take to take its answer, and then to close
/// its side.
pub const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a client of a TLS listener may take to send its first bytes and
/// finish the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (out of file descriptors, for instance).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Most bytes of a refused client's request read and dropped while its
/// socket closes (reading them lets the answer arrive before a reset).
const LINGER_MAX_BYTES: usize = 64 * 1024;

/// How many connections a listener serves at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptLimits {
    /// Connections served at once, over all clients.
    pub connections: usize,
    /// Connections served at once from one IP address (a client, or a NAT
    /// or proxy in front of many).
    pub per_peer_address: usize,
}

/// Why a connection was not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the server serves at most {limit} connections at once")]
    TooManyConnections { limit: usize },
    #[error("the server serves at most {limit} connections at once from one address ({address})")]
    TooManyFromAddress { limit: usize, address: IpAddr },
}

/// What a face does with the connections [`serve`] accepts.
pub trait ConnectionHandler: Send + Sync + 'static {
    /// Serves one connection until it ends; `shutdown` fires when the
    /// listener stops.
    fn serve(
        self: Arc<Self>,
        stream: ClientStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static;

    /// What a refused client is sent before its connection closes, in the
    /// face's protocol (an HTTP 503, a STOMP ERROR frame).
    fn refusal(&self, refused: &Refused) -> Vec<u8>;

    /// What a client that sent plain text to a TLS listener is sent (in
    /// plain text) before its connection closes.
    fn plain_text_refusal(&self) -> Vec<u8>;
}

/// Serves `listener` with `handler` until `shutdown` fires; then stops
/// accepting and returns once every connection's task ended. `name` names
/// the listener in logs ("STOMP", "HTTP"). With `tls`, every connection
/// first completes a TLS handshake within [`TLS_HANDSHAKE_TIMEOUT`]; one
/// that starts with plain text gets [`ConnectionHandler::plain_text_refusal`].
pub async fn serve<H: ConnectionHandler>(
    listener: TcpListener,
    name: &'static str,
    limits: AcceptLimits,
    tls: Option<ServerTls>,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let address = listener.local_addr().ok();
    let admission = Admission::new(limits);
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
    let tasks = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, ?address, listener = name, "accept failed; trying again shortly");
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_PAUSE) => continue,
                }
            }
        };
        match admission.admit(peer.ip()) {
            Ok(place) => {
                let handler = Arc::clone(&handler);
                let shutdown = shutdown.child_token();
                let tls = tls.clone();
                tasks.spawn(async move {
                    if let Some(stream) = open(stream, peer, name, tls.as_ref(), &*handler).await {
                        handler.serve(stream, peer, shutdown).await;
                    }
                    drop(place);
                });
            }
            Err(refused) => {
                tracing::warn!(%peer, listener = name, reason = %refused, "connection refused");
                if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
                    let answer = handler.refusal(&refused);
                    let tls = tls.clone();
                    tasks.spawn(async move {
                        // A TLS client can read the answer only over TLS.
                        let stream = match tls {
                            None => Some(ClientStream::Plain(stream)),
                            Some(tls) => tokio::time::timeout(REFUSAL_TIMEOUT, tls.accept(stream))
                                .await
                                .ok()
                                .and_then(Result::ok),
                        };
                        if let Some(stream) = stream {
                            refuse(stream, &answer).await;
                        }
                        drop(permit);
                    });
                }
            }
        }
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

/// The connection `handler` serves: `stream` itself without `tls`, else
/// once its handshake finished. `None` (logged) if the handshake failed or
/// took too long, or the client sent plain text (it is told so).
async fn open<H: ConnectionHandler>(
    stream: TcpStream,
    peer: SocketAddr,
    name: &'static str,
    tls: Option<&ServerTls>,
    handler: &H,
) -> Option<ClientStream> {
    let Some(tls) = tls else {
        return Some(ClientStream::Plain(stream));
    };
    let opened = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, async {
        match starts_with_handshake(&stream).await {
            Ok(Some(true)) => tls.accept(stream).await.map(Some),
            Ok(Some(false)) => {
                tracing::warn!(%peer, listener = name, "plain text sent to a TLS port; connection refused");
                refuse(ClientStream::Plain(stream), &handler.plain_text_refusal()).await;
                Ok(None)
            }
            Ok(None) => Ok(None),
            Err(error) => Err(error),
        }
    })
    .await;
    match opened {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::warn!(%peer, listener = name, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::warn!(
                %peer,
                listener = name,
                waited_ms = TLS_HANDSHAKE_TIMEOUT.as_millis(),
                "connection closed: no TLS handshake in time"
            );
            None
        }
    }
}

/// Writes `answer`, closes the write side, and reads (and drops) what the
/// client still sends until it closes too, each step within
/// [`REFUSAL_TIMEOUT`].
pub(crate) async fn refuse(mut stream: ClientStream, answer: &[u8]) {
    let written = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        stream.write_all(answer).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        let mut buffer = vec![0; 4096];
        let mut dropped = 0;
        while dropped < LINGER_MAX_BYTES {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => dropped += read,
            }
        }
    })
    .await;
}

/// The count of connections served, overall and per IP address.
#[derive(Debug, Clone)]
pub struct Admission {
    limits: AcceptLimits,
    overall: Arc<Semaphore>,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Admission {
    pub fn new(limits: AcceptLimits) -> Self {
        Admission {
            limits,
            overall: Arc::new(Semaphore::new(limits.connections.max(1))),
            per_address: Arc::default(),
        }
    }

    /// A place for one more connection from `address`, or why there is none.
    pub fn admit(&self, address: IpAddr) -> Result<Place, Refused> {
        let overall = Arc::clone(&self.overall).try_acquire_owned().map_err(|_| {
            Refused::TooManyConnections {
                limit: self.limits.connections.max(1),
            }
        })?;
        self.room(overall).take(address)
    }

    /// Waits until there is room for one more connection overall, and holds
    /// it (so a listener need not accept before there is).
    pub async fn wait_for_room(&self) -> Room {
        loop {
            // The semaphore is never closed; were it, waiting again is all
            // there is to do.
            if let Ok(overall) = Arc::clone(&self.overall).acquire_owned().await {
                return self.room(overall);
            }
        }
    }

    fn room(&self, overall: OwnedSemaphorePermit) -> Room {
        Room {
            overall,
            per_address_limit: self.limits.per_peer_address.max(1),
            per_address: Arc::clone(&self.per_address),
        }
    }
}

/// Room for one more connection overall, not yet given to an address.
#[derive(Debug)]
pub struct Room {
    overall: OwnedSemaphorePermit,
    per_address_limit: usize,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Room {
    /// The place of a connection from `address`, unless that address holds
    /// its share already.
    pub fn take(self, address: IpAddr) -> Result<Place, Refused> {
        let limit = self.per_address_limit;
        {
            let mut counts = self.per_address.lock();
            let count = counts.entry(address).or_insert(0);
            if *count >= limit {
                return Err(Refused::TooManyFromAddress { limit, address });
            }
            *count += 1;
        }
        Ok(Place {
            _overall: self.overall,
            address,
            per_address: self.per_address,
        })
    }
}

/// One served connection's place; freed when dropped.
#[derive(Debug)]
pub struct Place {
    _overall: OwnedSemaphorePermit,
    address: IpAddr,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = self.per_address.lock();
        if let Some(count) = counts.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn one_address_gets_its_share_and_no_more() {
        let admission = Admission::new(AcceptLimits {
            connections: 3,
            per_peer_address: 2,
        });
        let first = admission.admit(A).expect("first");
        let _second = admission.admit(A).expect("second");
        assert_eq!(
            admission.admit(A).unwrap_err(),
            Refused::TooManyFromAddress {
                limit: 2,
                address: A
            }
        );
        let _other = admission.admit(B).expect("another address");
        assert_eq!(
            admission.admit(B).unwrap_err(),
            Refused::TooManyConnections { limit: 3 }
        );
        drop(first);
        admission.admit(A).expect("a freed place");
    }

    #[test]
    fn freed_places_leave_no_entries_behind() {
        let admission = Admission::new(AcceptLimits {
            connections: 8,
            per_peer_address: 8,
        });
        let places: Vec<_> = (0..4).map(|_| admission.admit(A).expect("place")).collect();
        drop(places);
        assert!(admission.per_address.lock().is_empty());
    }

    #[test]
    fn a_refusal_names_the_limit_and_the_address() {
        let refused = Refused::TooManyFromAddress {
            limit: 2,
            address: A,
        };
        assert_eq!(
            refused.to_string(),
            "the server serves at most 2 connections at once from one address (10.0.0.1)"
        );
    }
}
