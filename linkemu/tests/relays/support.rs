//! Helpers: relays, echo servers and waiting on real conditions.

use meridian_linkemu::{Conditions, Direction};
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// How long anything that should happen may take on a busy machine.
pub const PATIENCE: Duration = Duration::from_secs(10);
/// The upper bound asserted on timings: generous, the machine is busy.
pub const SLOW: Duration = Duration::from_secs(2);

pub const LOOPBACK: (Ipv4Addr, u16) = (Ipv4Addr::LOCALHOST, 0);

pub fn delayed(delay: Duration) -> Conditions {
    Conditions {
        delay,
        ..Conditions::default()
    }
}

/// A task of the test that is stopped and awaited at the end.
pub struct Running<T> {
    stop: CancellationToken,
    handle: JoinHandle<T>,
}

impl<T: Send + 'static> Running<T> {
    pub fn spawn<F>(task: impl FnOnce(CancellationToken) -> F) -> Running<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let handle = tokio::spawn(task(stop.clone()));
        Running { stop, handle }
    }

    /// Stops the task and returns what it returned.
    pub async fn stop(self) -> T {
        self.stop.cancel();
        tokio::time::timeout(PATIENCE, self.handle)
            .await
            .expect("the task ends when stopped")
            .expect("the task did not panic")
    }
}

/// A UDP relay on an OS-chosen port towards `target`.
pub async fn udp_relay(
    target: SocketAddr,
    outbound: &Direction,
    inbound: &Direction,
) -> (SocketAddr, Running<io::Result<()>>) {
    let socket = UdpSocket::bind(LOOPBACK).await.expect("bind the relay");
    let address = socket.local_addr().expect("relay address");
    let (outbound, inbound) = (outbound.clone(), inbound.clone());
    let relay = Running::spawn(move |stop| {
        meridian_linkemu::relay_udp(socket, target, outbound, inbound, stop)
    });
    (address, relay)
}

/// A TCP relay on an OS-chosen port towards `target`.
pub async fn tcp_relay(
    target: SocketAddr,
    outbound: &Direction,
    inbound: &Direction,
) -> (SocketAddr, Running<io::Result<()>>) {
    let listener = TcpListener::bind(LOOPBACK).await.expect("bind the relay");
    let address = listener.local_addr().expect("relay address");
    let (outbound, inbound) = (outbound.clone(), inbound.clone());
    let relay = Running::spawn(move |stop| {
        meridian_linkemu::relay_tcp(listener, target, outbound, inbound, stop)
    });
    (address, relay)
}

/// Sends every datagram back to where it came from, until stopped; the
/// socket is closed when it ends.
pub fn udp_echo(socket: UdpSocket) -> Running<()> {
    Running::spawn(move |stop| async move {
        let mut buffer = vec![0u8; 65_536];
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                received = socket.recv_from(&mut buffer) => {
                    // A refused earlier send shows up here; echo servers go on.
                    if let Ok((length, source)) = received {
                        let _ = socket.send_to(&buffer[..length], source).await;
                    }
                }
            }
        }
    })
}

/// Echoes every connection's bytes, then ends its stream, until stopped.
pub fn tcp_echo(listener: TcpListener) -> Running<()> {
    Running::spawn(move |stop| async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => {
                    let (stream, _) = accepted.expect("accept");
                    connections.spawn(echo_connection(stream));
                }
            }
        }
    })
}

async fn echo_connection(stream: TcpStream) {
    let (mut reader, mut writer) = stream.into_split();
    if tokio::io::copy(&mut reader, &mut writer).await.is_ok() {
        let _ = writer.shutdown().await;
    }
}

/// Waits until `condition` holds, checking every few milliseconds; panics
/// naming `what` after [`PATIENCE`].
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {PATIENCE:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The next datagram on `socket`, within [`PATIENCE`].
pub async fn receive(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buffer = vec![0u8; 65_536];
    let (length, source) = tokio::time::timeout(PATIENCE, socket.recv_from(&mut buffer))
        .await
        .expect("a datagram in time")
        .expect("receive");
    buffer.truncate(length);
    (buffer, source)
}

/// `length` bytes that do not repeat with any short period, from `seed`.
pub fn pattern(length: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore as _, SeedableRng as _};
    let mut bytes = vec![0u8; length];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}
