//! Accepting client connections for a gRPC server: at most a fixed number at
//! once, each with `TCP_NODELAY` (small RocketMQ frames must not wait for the
//! peer's delayed ACK: without it a request can stall ~40 ms).
//!
//! Once [`Limits::connections`] are open the server stops accepting until one
//! closes; new clients wait in the kernel's backlog instead of exhausting the
//! process's file descriptors. [`Limits::streams_per_connection`] is what the
//! server advertises as HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`.

use futures::Stream;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Caps of one gRPC server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Client connections open at once, at most.
    pub connections: usize,
    /// Concurrent requests (HTTP/2 streams) per connection, at most.
    pub streams_per_connection: u32,
}

impl Default for Limits {
    /// 4096 connections of 256 streams: far above what the official clients
    /// open (one connection per endpoint, a few long polls each), far below
    /// what exhausts a node.
    fn default() -> Self {
        Limits {
            connections: 4096,
            streams_per_connection: 256,
        }
    }
}

/// The connections `listener` accepts, at most `limits.connections` open at once.
pub fn incoming(
    listener: TcpListener,
    limits: Limits,
) -> impl Stream<Item = io::Result<Connection>> {
    let permits = Arc::new(Semaphore::new(limits.connections.max(1)));
    futures::stream::unfold((listener, permits), |(listener, permits)| async move {
        // The semaphore is never closed, so a permit always comes.
        let permit = permits.clone().acquire_owned().await.ok()?;
        let accepted = listener.accept().await.map(|(stream, _)| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::warn!(%error, "set TCP_NODELAY on a client connection");
            }
            Connection {
                stream,
                _permit: permit,
            }
        });
        Some((accepted, (listener, permits)))
    })
}

/// An accepted connection; it frees its place when dropped.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(context, buffer)
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
    use std::time::Duration;

    #[tokio::test]
    async fn at_most_the_limit_is_accepted_until_one_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let limits = Limits {
            connections: 2,
            streams_per_connection: 1,
        };
        let mut accepted = Box::pin(incoming(listener, limits));
        let _clients: Vec<TcpStream> =
            futures::future::join_all((0..3).map(|_| TcpStream::connect(address)))
                .await
                .into_iter()
                .map(|client| client.expect("the kernel completes the handshake"))
                .collect();
        let first = accepted
            .next()
            .await
            .expect("a connection")
            .expect("accepted");
        assert!(first.stream.nodelay().expect("read TCP_NODELAY"));
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
}
