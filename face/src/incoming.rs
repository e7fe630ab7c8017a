//! Accepting client connections for a gRPC server: at most a fixed number at
//! once, each with `TCP_NODELAY` (small RocketMQ frames must not wait for the
//! peer's delayed ACK: without it a request can stall ~40 ms).
//!
//! Once [`Limits::connections`] are open the server stops accepting until one
//! closes; new clients wait in the kernel's backlog instead of exhausting the
//! process's file descriptors. [`Limits::streams_per_connection`] is what the
//! server advertises as HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`. A
//! connection from an address that holds [`Limits::connections_per_address`]
//! already is closed at once (gRPC has no word for "go away" before the
//! HTTP/2 handshake; the client sees the connection reset). A connection
//! that sends nothing within [`Limits::first_bytes_timeout`] is closed too,
//! so silent sockets cannot hold places: connections wait for their first
//! bytes each in a task of its own, and the server sees them only then.
//!
//! Once served, a connection must keep sending: [`server`] has the server
//! ping an idle client every [`Limits::keepalive_interval`] (HTTP/2 PING,
//! RFC 9113 §6.7), which any live client answers, and a connection that sent
//! nothing at all for [`Limits::idle_timeout`] is closed. A client holds a
//! place only while it talks; a slowloris-style client that trickles bytes
//! holds at most its address's share. Request headers are capped at
//! [`Limits::max_header_list_bytes`].

use crate::accept::{AcceptLimits, Admission, Place};
use crate::tls::{ClientStream, ServerTls, starts_with_handshake};
use futures::Stream;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Caps of one gRPC server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Client connections open at once, at most.
    pub connections: usize,
    /// Client connections open at once from one IP address, at most.
    pub connections_per_address: usize,
    /// Concurrent requests (HTTP/2 streams) per connection, at most.
    pub streams_per_connection: u32,
    /// How long a new connection may take to send its first bytes.
    pub first_bytes_timeout: Duration,
    /// How long a connection may send nothing at all before it is closed.
    pub idle_timeout: Duration,
    /// How long the server waits, with nothing received, before it pings.
    pub keepalive_interval: Duration,
    /// How long the server waits for the answer to its ping before it
    /// closes the connection.
    pub keepalive_timeout: Duration,
    /// Bytes of one request's header list (HTTP/2
    /// `SETTINGS_MAX_HEADER_LIST_SIZE`), at most.
    pub max_header_list_bytes: u32,
}

impl Default for Limits {
    /// 4096 connections (512 from one address) of 256 streams: far above
    /// what the official clients open (one connection per endpoint, a few
    /// long polls each), far below what exhausts a node. 10 s for the first
    /// bytes (a client sends its HTTP/2 preface at once). Pings after 30 s
    /// of silence, answered within 20 s; closed after 120 s without a byte
    /// (a live client answers two pings in that time). 64 KiB of headers
    /// (the clients send well under 1 KiB).
    fn default() -> Self {
        Limits {
            connections: 4096,
            connections_per_address: 512,
            streams_per_connection: 256,
            first_bytes_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            max_header_list_bytes: 64 * 1024,
        }
    }
}

/// A gRPC server builder with `limits`' HTTP/2 settings: concurrent
/// streams, header list size, and keepalive pings. Serve it with
/// [`incoming`] and the same `limits`.
pub fn server(limits: &Limits) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(limits.streams_per_connection))
        .http2_max_header_list_size(Some(limits.max_header_list_bytes))
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
}

/// Connections that sent their first bytes, each waiting for them.
const READY_QUEUE: usize = 64;

/// The connections `listener` accepts, at most `limits.connections` open at
/// once, each once it sent its first bytes (with `tls`: once its TLS
/// handshake finished, within the same [`Limits::first_bytes_timeout`]). The accept task ends when the
/// stream is dropped (the server stopped), closing the listener.
pub fn incoming(
    listener: TcpListener,
    limits: Limits,
    tls: Option<ServerTls>,
) -> impl Stream<Item = io::Result<Connection>> {
    let (ready, receiver) = tokio::sync::mpsc::channel(READY_QUEUE);
    tokio::spawn(accept(listener, limits, tls, ready));
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

async fn accept(
    listener: TcpListener,
    limits: Limits,
    tls: Option<ServerTls>,
    ready: tokio::sync::mpsc::Sender<io::Result<Connection>>,
) {
    let admission = Admission::new(AcceptLimits {
        connections: limits.connections,
        per_peer_address: limits.connections_per_address,
    });
    loop {
        let room = tokio::select! {
            () = ready.closed() => return,
            room = admission.wait_for_room() => room,
        };
        let accepted = tokio::select! {
            () = ready.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                if ready.send(Err(error)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let place = match room.take(peer.ip()) {
            Ok(place) => place,
            Err(refused) => {
                tracing::warn!(%peer, reason = %refused, "gRPC connection closed");
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "set TCP_NODELAY on a client connection");
        }
        let ready = ready.clone();
        let timeout = limits.first_bytes_timeout;
        let timeout_idle = limits.idle_timeout;
        let tls = tls.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, opening(stream, tls.as_ref())).await {
                Ok(Ok(Some(stream))) => {
                    let connection = Connection {
                        stream,
                        idle: Idle::new(timeout_idle),
                        _place: place,
                    };
                    let _ = ready.send(Ok(connection)).await;
                }
                Ok(Ok(None)) => {
                    tracing::debug!(%peer, "gRPC connection closed by the client before its first bytes");
                }
                Ok(Err(error)) if error.kind() == io::ErrorKind::InvalidData => {
                    tracing::warn!(%peer, %error, "gRPC connection closed");
                }
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "gRPC connection failed before its first bytes");
                }
                Err(_) => tracing::warn!(
                    %peer,
                    waited_ms = timeout.as_millis(),
                    "gRPC connection closed: it sent nothing{}",
                    if tls.is_some() { " or did not finish its TLS handshake" } else { "" }
                ),
            }
        });
    }
}

/// Waits for the client's first bytes (`peek`: readiness alone may be a
/// false positive) and, on a TLS listener, runs the handshake. `Ok(None)`:
/// the client closed first. A client speaking plain text to a TLS listener
/// gets an `InvalidData` error; before that, a plain HTTP/1.1 request (the
/// JSON admin API shares the admin port with gRPC) is answered
/// [`PLAIN_TEXT_REFUSAL`], while a plain HTTP/2 client is only closed
/// (gRPC has no way to tell it before the HTTP/2 handshake).
async fn opening(stream: TcpStream, tls: Option<&ServerTls>) -> io::Result<Option<ClientStream>> {
    let Some(handshake) = starts_with_handshake(&stream).await? else {
        return Ok(None);
    };
    match tls {
        None => Ok(Some(ClientStream::Plain(stream))),
        Some(tls) if handshake => tls.accept(stream).await.map(Some),
        Some(_) => {
            if starts_like_http1(&stream).await {
                crate::accept::refuse(ClientStream::Plain(stream), PLAIN_TEXT_REFUSAL).await;
            }
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the client sent plain text to a TLS port (enable TLS in the client)",
            ))
        }
    }
}

/// What a plain HTTP/1.1 request to a TLS gRPC port (the admin port's JSON
/// API, or curl on a router) is answered.
const PLAIN_TEXT_REFUSAL: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
    content-type: text/plain; charset=utf-8\r\ncontent-length: 64\r\nconnection: close\r\n\r\n\
    this port takes HTTPS only; send the request with TLS (https://)";

/// Whether the client's first bytes are an HTTP/1.1 request line's method
/// (RFC 9110 §9.3) and a space.
async fn starts_like_http1(stream: &TcpStream) -> bool {
    const METHODS: [&[u8]; 8] = [
        b"GET ",
        b"HEAD ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"TRACE ",
    ];
    let mut first = [0_u8; 8];
    let Ok(read) = stream.peek(&mut first).await else {
        return false;
    };
    METHODS
        .iter()
        .any(|method| first[..read].starts_with(method))
}

/// An accepted connection; it frees its place when dropped.
#[derive(Debug)]
pub struct Connection {
    stream: ClientStream,
    idle: Idle,
    _place: Place,
}

/// When a connection last sent bytes, and the timer that closes it when it
/// sends nothing for `timeout`.
#[derive(Debug)]
struct Idle {
    timeout: Duration,
    last_read: tokio::time::Instant,
    /// Fires at `last_read + timeout` or earlier (it is moved on lazily,
    /// when it fires, not on every read).
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Idle {
    fn new(timeout: Duration) -> Self {
        let now = tokio::time::Instant::now();
        Idle {
            timeout,
            last_read: now,
            timer: Box::pin(tokio::time::sleep_until(now + timeout)),
        }
    }

    /// `true` once the connection sent nothing for the timeout; registers
    /// the waker otherwise.
    fn expired(&mut self, context: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(context).is_pending() {
                return false;
            }
            let deadline = self.last_read + self.timeout;
            if deadline <= tokio::time::Instant::now() {
                return true;
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.tcp().connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buffer.filled().len();
        match Pin::new(&mut this.stream).poll_read(context, buffer) {
            Poll::Ready(Ok(())) if buffer.filled().len() > before => {
                this.idle.last_read = tokio::time::Instant::now();
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.idle.expired(context) => {
                let peer = this.stream.tcp().peer_addr().ok();
                tracing::info!(
                    ?peer,
                    idle_ms = this.idle.timeout.as_millis(),
                    "gRPC connection closed: it sent nothing"
                );
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing for the idle timeout",
                )))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(context, buffer)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;

    /// A client that connected and sent a byte (as an HTTP/2 client sends
    /// its preface at once).
    async fn speaking(address: std::net::SocketAddr) -> TcpStream {
        let mut client = TcpStream::connect(address).await.expect("connect");
        client.write_all(b"P").await.expect("write");
        client
    }

    fn limits(connections: usize, connections_per_address: usize) -> Limits {
        Limits {
            connections,
            connections_per_address,
            streams_per_connection: 1,
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn at_most_the_limit_is_accepted_until_one_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let mut accepted = Box::pin(incoming(listener, limits(2, 2), None));
        let _clients: Vec<TcpStream> =
            futures::future::join_all((0..3).map(|_| speaking(address))).await;
        let first = accepted
            .next()
            .await
            .expect("a connection")
            .expect("accepted");
        assert!(first.stream.tcp().nodelay().expect("read TCP_NODELAY"));
        let _second = accepted
            .next()
            .await
            .expect("a connection")
            .expect("accepted");
        // The third waits for a free place…
        assert!(
            tokio::time::timeout(Duration::from_millis(200), accepted.next())
                .await
                .is_err()
        );
        // …which closing one connection makes.
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), accepted.next())
            .await
            .expect("accepted once a place is free");
        assert!(third.expect("a connection").is_ok());
    }

    #[tokio::test]
    async fn an_address_over_its_share_is_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let mut accepted = Box::pin(incoming(listener, limits(8, 1), None));
        let _first_client = speaking(address).await;
        let first = accepted
            .next()
            .await
            .expect("a connection")
            .expect("accepted");
        let mut second_client = speaking(address).await;
        // The second is accepted and closed inside the stream, which yields
        // nothing for it.
        let mut byte = [0; 1];
        tokio::select! {
            item = accepted.next() => panic!("a connection over the share was yielded: {item:?}"),
            closed = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::io::AsyncReadExt::read(&mut second_client, &mut byte),
            ) => assert!(matches!(closed.expect("closed by the server"), Ok(0) | Err(_))),
        }
        drop(first);
        let _third_client = speaking(address).await;
        let third = tokio::time::timeout(Duration::from_secs(5), accepted.next())
            .await
            .expect("accepted once the first closed");
        assert!(third.expect("a connection").is_ok());
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_and_frees_its_place() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let limits = Limits {
            first_bytes_timeout: Duration::from_millis(200),
            ..limits(1, 1)
        };
        let mut accepted = Box::pin(incoming(listener, limits, None));
        let mut silent = TcpStream::connect(address).await.expect("connect");
        let mut byte = [0; 1];
        tokio::select! {
            item = accepted.next() => panic!("a silent connection was yielded: {item:?}"),
            closed = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::io::AsyncReadExt::read(&mut silent, &mut byte),
            ) => assert!(matches!(closed.expect("closed by the server"), Ok(0) | Err(_))),
        }
        let _speaking = speaking(address).await;
        let next = tokio::time::timeout(Duration::from_secs(5), accepted.next())
            .await
            .expect("the silent connection's place is free");
        assert!(next.expect("a connection").is_ok());
    }

    #[tokio::test]
    async fn a_connection_that_goes_silent_is_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let limits = Limits {
            idle_timeout: Duration::from_millis(300),
            ..limits(1, 1)
        };
        let mut accepted = Box::pin(incoming(listener, limits, None));
        let mut client = speaking(address).await;
        let mut connection = accepted
            .next()
            .await
            .expect("a connection")
            .expect("accepted");
        let mut byte = [0; 1];
        tokio::io::AsyncReadExt::read_exact(&mut connection, &mut byte)
            .await
            .expect("the first byte");
        // Bytes keep it open…
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            client.write_all(b"x").await.expect("write");
            tokio::io::AsyncReadExt::read_exact(&mut connection, &mut byte)
                .await
                .expect("the server reads");
        }
        // …silence does not.
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut connection, &mut byte),
        )
        .await
        .expect("the idle timeout ends the read");
        let error = read.expect_err("an idle connection errs");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
