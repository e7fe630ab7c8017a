use crate::support::{LOOPBACK, PATIENCE, SLOW, delayed, eventually, pattern, tcp_echo, tcp_relay};
use meridian_linkemu::{Conditions, Direction};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

const MS: Duration = Duration::from_millis(1);
const MIB: usize = 1024 * 1024;

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind(LOOPBACK).await.expect("bind");
    let address = listener.local_addr().expect("address");
    (listener, address)
}

async fn connect(address: SocketAddr) -> TcpStream {
    timeout(PATIENCE, TcpStream::connect(address))
        .await
        .expect("connect in time")
        .expect("connect")
}

async fn accept(listener: &TcpListener) -> TcpStream {
    timeout(PATIENCE, listener.accept())
        .await
        .expect("accept in time")
        .expect("accept")
        .0
}

async fn read_exactly(stream: &mut TcpStream, length: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; length];
    timeout(PATIENCE, stream.read_exact(&mut bytes))
        .await
        .expect("read in time")
        .expect("read");
    bytes
}

async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    timeout(PATIENCE, stream.read_to_end(&mut bytes))
        .await
        .expect("read in time")
        .expect("read");
    bytes
}

/// Whether the peer ended the connection (end of stream or reset).
async fn ended(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8];
    match timeout(PATIENCE, stream.read(&mut byte)).await {
        Ok(Ok(0)) => true,
        Ok(Err(error)) => error.kind() == ErrorKind::ConnectionReset,
        Ok(Ok(_)) | Err(_) => false,
    }
}

#[tokio::test]
async fn echo_through_a_delayed_link() {
    let (echo_listener, echo_address) = listener().await;
    let echo = tcp_echo(echo_listener);
    let outbound = Direction::new(delayed(50 * MS), 1);
    let inbound = Direction::new(delayed(50 * MS), 2);
    let (relay_address, relay) = tcp_relay(echo_address, &outbound, &inbound).await;
    let mut client = connect(relay_address).await;

    let started = Instant::now();
    client.write_all(b"ping").await.expect("write");
    assert_eq!(read_exactly(&mut client, 4).await, b"ping");
    let round_trip = started.elapsed();
    assert!(
        round_trip >= 100 * MS && round_trip < SLOW,
        "took {round_trip:?}"
    );
    assert_eq!(outbound.stats().bytes, 4);
    assert_eq!(inbound.stats().bytes, 4);
    relay.stop().await.expect("the relay ends cleanly");
    echo.stop().await;
}

#[tokio::test]
async fn a_partition_holds_bytes_and_healing_delivers_them_all_in_order() {
    let (target_listener, target_address) = listener().await;
    let outbound = Direction::new(delayed(5 * MS), 1);
    let inbound = Direction::new(delayed(5 * MS), 2);
    let (relay_address, relay) = tcp_relay(target_address, &outbound, &inbound).await;
    let mut client = connect(relay_address).await;
    let mut served = accept(&target_listener).await;

    outbound.set(Conditions {
        delay: 5 * MS,
        partitioned: true,
        ..Conditions::default()
    });
    // Many small writes: many chunks held.
    let sent = pattern(100_000, 1);
    for piece in sent.chunks(100) {
        client.write_all(piece).await.expect("write");
    }
    eventually("every byte held by the relay", || {
        outbound.stats().queued_bytes == 100_000
    })
    .await;
    assert_eq!(outbound.stats().packets, 0);
    let mut byte = [0u8];
    assert_eq!(
        served.try_read(&mut byte).map_err(|error| error.kind()),
        Err(ErrorKind::WouldBlock),
        "nothing crossed the partition"
    );

    outbound.set(delayed(5 * MS));
    assert_eq!(read_exactly(&mut served, 100_000).await, sent);
    eventually("nothing held any more", || {
        outbound.stats().queued_bytes == 0
    })
    .await;
    assert_eq!(outbound.stats().bytes, 100_000);
    relay.stop().await.expect("the relay ends cleanly");
}

#[tokio::test]
async fn a_target_that_is_down_closes_the_clients_connection() {
    let (gone, target_address) = listener().await;
    drop(gone);
    let outbound = Direction::new(Conditions::default(), 1);
    let inbound = Direction::new(Conditions::default(), 2);
    let (relay_address, relay) = tcp_relay(target_address, &outbound, &inbound).await;
    let mut client = connect(relay_address).await;
    assert!(ended(&mut client).await, "the client sees the end");
    relay.stop().await.expect("the relay ends cleanly");
}

#[tokio::test]
async fn a_large_transfer_arrives_intact() {
    let (echo_listener, echo_address) = listener().await;
    let echo = tcp_echo(echo_listener);
    let outbound = Direction::new(delayed(MS), 1);
    let inbound = Direction::new(delayed(MS), 2);
    let (relay_address, relay) = tcp_relay(echo_address, &outbound, &inbound).await;
    let client = connect(relay_address).await;

    // More than a connection may hold per direction: back-pressure on the way.
    let sent = pattern(8 * MIB, 2);
    let (mut reader, mut writer) = client.into_split();
    let writing = async {
        writer.write_all(&sent).await.expect("write");
        writer.shutdown().await.expect("shut down");
    };
    let reading = async {
        let mut received = Vec::with_capacity(sent.len());
        reader.read_to_end(&mut received).await.expect("read");
        received
    };
    let ((), received) = timeout(Duration::from_secs(60), async {
        tokio::join!(writing, reading)
    })
    .await
    .expect("the transfer ends in time");
    assert!(received == sent, "{} bytes back, intact", received.len());
    assert_eq!(outbound.stats().bytes, 8 * MIB as u64);
    assert_eq!(inbound.stats().bytes, 8 * MIB as u64);
    relay.stop().await.expect("the relay ends cleanly");
    echo.stop().await;
}

#[tokio::test]
async fn loss_and_jitter_delay_but_never_damage_the_stream() {
    let (echo_listener, echo_address) = listener().await;
    let echo = tcp_echo(echo_listener);
    let rough = Conditions {
        delay: MS,
        jitter: 5 * MS,
        loss: 0.2,
        ..Conditions::default()
    };
    let outbound = Direction::new(rough, 3);
    let inbound = Direction::new(rough, 4);
    let (relay_address, relay) = tcp_relay(echo_address, &outbound, &inbound).await;
    let mut client = connect(relay_address).await;

    let sent = pattern(64 * 1024, 3);
    for piece in sent.chunks(1024) {
        client.write_all(piece).await.expect("write");
    }
    client.shutdown().await.expect("shut down");
    assert!(read_to_end(&mut client).await == sent, "intact");
    assert!(outbound.stats().retransmitted > 0, "some chunks were hit");
    relay.stop().await.expect("the relay ends cleanly");
    echo.stop().await;
}

#[tokio::test]
async fn a_lost_chunk_arrives_a_retransmission_timeout_late() {
    let (echo_listener, echo_address) = listener().await;
    let echo = tcp_echo(echo_listener);
    let outbound = Direction::new(
        Conditions {
            delay: 10 * MS,
            loss: 1.0,
            ..Conditions::default()
        },
        1,
    );
    let inbound = Direction::new(delayed(10 * MS), 2);
    let (relay_address, relay) = tcp_relay(echo_address, &outbound, &inbound).await;
    let mut client = connect(relay_address).await;

    let started = Instant::now();
    client.write_all(b"ping").await.expect("write");
    assert_eq!(read_exactly(&mut client, 4).await, b"ping");
    let round_trip = started.elapsed();
    // 10 ms + a 200 ms timeout there, 10 ms back.
    assert!(
        round_trip >= 220 * MS && round_trip < SLOW,
        "took {round_trip:?}"
    );
    assert_eq!(outbound.stats().retransmitted, 1);
    relay.stop().await.expect("the relay ends cleanly");
    echo.stop().await;
}

#[tokio::test]
async fn bandwidth_paces_the_stream() {
    let (target_listener, target_address) = listener().await;
    let outbound = Direction::new(
        Conditions {
            bandwidth: Some(1_000_000),
            ..Conditions::default()
        },
        1,
    );
    let inbound = Direction::new(Conditions::default(), 2);
    let (relay_address, relay) = tcp_relay(target_address, &outbound, &inbound).await;
    let mut client = connect(relay_address).await;
    let mut served = accept(&target_listener).await;

    let sent = pattern(200_000, 4);
    let started = Instant::now();
    let ((), received) = tokio::join!(
        async { client.write_all(&sent).await.expect("write") },
        read_exactly(&mut served, sent.len()),
    );
    let elapsed = started.elapsed();
    assert!(received == sent, "intact");
    // 200 KB at 1 MB/s: 200 ms.
    assert!(elapsed >= 180 * MS && elapsed < SLOW, "took {elapsed:?}");
    relay.stop().await.expect("the relay ends cleanly");
}

#[tokio::test]
async fn a_full_connection_stops_reading_and_loses_nothing() {
    let (target_listener, target_address) = listener().await;
    let cut = Conditions {
        partitioned: true,
        ..Conditions::default()
    };
    let outbound = Direction::new(cut, 1);
    let inbound = Direction::new(Conditions::default(), 2);
    let (relay_address, relay) = tcp_relay(target_address, &outbound, &inbound).await;
    let client = connect(relay_address).await;
    let mut served = accept(&target_listener).await;

    let sent = pattern(8 * MIB, 5);
    let (_reader, mut writer) = client.into_split();
    let writing = async {
        writer.write_all(&sent).await.expect("write");
        writer.shutdown().await.expect("shut down");
    };
    let receiving = async {
        eventually("the connection's queue full", || {
            outbound.stats().queued_bytes >= (4 * MIB - 16 * 1024) as u64
        })
        .await;
        let held = outbound.stats().queued_bytes;
        assert!(held <= (4 * MIB) as u64, "{held} bytes held");
        outbound.set(Conditions::default());
        read_to_end(&mut served).await
    };
    let ((), received) = tokio::join!(writing, receiving);
    assert!(received == sent, "{} bytes arrived, intact", received.len());
    relay.stop().await.expect("the relay ends cleanly");
}

#[tokio::test]
async fn each_end_of_stream_follows_the_bytes_before_it() {
    let (target_listener, target_address) = listener().await;
    let outbound = Direction::new(delayed(20 * MS), 1);
    let inbound = Direction::new(delayed(20 * MS), 2);
    let (relay_address, relay) = tcp_relay(target_address, &outbound, &inbound).await;
    let mut client = connect(relay_address).await;
    let mut served = accept(&target_listener).await;

    client.write_all(b"request").await.expect("write");
    client.shutdown().await.expect("shut down");
    assert_eq!(read_to_end(&mut served).await, b"request");
    served.write_all(b"reply").await.expect("write");
    drop(served);
    assert_eq!(read_to_end(&mut client).await, b"reply");
    relay.stop().await.expect("the relay ends cleanly");
}

#[tokio::test]
async fn shutdown_ends_the_relay_and_its_connections() {
    let (echo_listener, echo_address) = listener().await;
    let echo = tcp_echo(echo_listener);
    let outbound = Direction::new(Conditions::default(), 1);
    let inbound = Direction::new(Conditions::default(), 2);
    let (relay_address, relay) = tcp_relay(echo_address, &outbound, &inbound).await;
    let mut client = connect(relay_address).await;
    client.write_all(b"hello").await.expect("write");
    assert_eq!(read_exactly(&mut client, 5).await, b"hello");

    relay.stop().await.expect("the relay ends cleanly");
    assert!(ended(&mut client).await, "the open connection ends too");
    assert!(
        TcpStream::connect(relay_address).await.is_err(),
        "the relay no longer listens"
    );
    echo.stop().await;
}
