use crate::support::{LOOPBACK, PATIENCE, SLOW, delayed, eventually, receive, udp_echo, udp_relay};
use meridian_linkemu::{Conditions, Direction};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

async fn bound() -> UdpSocket {
    UdpSocket::bind(LOOPBACK).await.expect("bind")
}

#[tokio::test]
async fn delay_is_applied_in_each_direction() {
    let target = bound().await;
    let outbound = Direction::new(delayed(50 * MS), 1);
    let inbound = Direction::new(delayed(150 * MS), 2);
    let (relay_address, relay) =
        udp_relay(target.local_addr().expect("address"), &outbound, &inbound).await;
    let client = bound().await;

    let sent = Instant::now();
    client.send_to(b"there", relay_address).await.expect("send");
    let (payload, relay_seen) = receive(&target).await;
    let there = sent.elapsed();
    assert_eq!(payload, b"there");
    assert_eq!(relay_seen, relay_address, "the target sees the relay");

    let replied = Instant::now();
    target.send_to(b"back", relay_seen).await.expect("send");
    let (payload, from) = receive(&client).await;
    let back = replied.elapsed();
    assert_eq!((payload.as_slice(), from), (&b"back"[..], relay_address));

    assert!(there >= 50 * MS && there < SLOW, "outbound took {there:?}");
    assert!(back >= 150 * MS && back < SLOW, "inbound took {back:?}");
    assert_eq!((outbound.stats().packets, outbound.stats().bytes), (1, 5));
    assert_eq!((inbound.stats().packets, inbound.stats().bytes), (1, 4));
    relay.stop().await.expect("the relay ends cleanly");
}

#[tokio::test]
async fn total_loss_drops_everything_and_counts_it() {
    let echo_socket = bound().await;
    let echo_address = echo_socket.local_addr().expect("address");
    let echo = udp_echo(echo_socket);
    let lossy = Conditions {
        loss: 1.0,
        ..Conditions::default()
    };
    let outbound = Direction::new(lossy, 1);
    let inbound = Direction::new(Conditions::default(), 2);
    let (relay_address, relay) = udp_relay(echo_address, &outbound, &inbound).await;
    let client = bound().await;

    for index in 0..20u8 {
        client.send_to(&[index], relay_address).await.expect("send");
    }
    eventually("20 datagrams lost", || outbound.stats().dropped_loss == 20).await;
    assert_eq!(outbound.stats().packets, 0);

    outbound.set(Conditions::default());
    client
        .send_to(b"through", relay_address)
        .await
        .expect("send");
    let (payload, _) = receive(&client).await;
    assert_eq!(payload, b"through", "nothing lost came through first");
    assert_eq!(inbound.stats().packets, 1);
    relay.stop().await.expect("the relay ends cleanly");
    echo.stop().await;
}

#[tokio::test]
async fn half_loss_with_a_seed_drops_about_half() {
    let echo_socket = bound().await;
    let echo_address = echo_socket.local_addr().expect("address");
    let echo = udp_echo(echo_socket);
    let outbound = Direction::new(
        Conditions {
            loss: 0.5,
            ..Conditions::default()
        },
        42,
    );
    let inbound = Direction::new(Conditions::default(), 43);
    let (relay_address, relay) = udp_relay(echo_address, &outbound, &inbound).await;
    let client = bound().await;

    const SENT: u64 = 100;
    for index in 0..SENT {
        client
            .send_to(&index.to_be_bytes(), relay_address)
            .await
            .expect("send");
    }
    eventually("every datagram delivered or lost", || {
        let stats = outbound.stats();
        stats.packets + stats.dropped_loss == SENT
    })
    .await;
    let lost = outbound.stats().dropped_loss;
    println!("seed 42: {lost} of {SENT} lost");
    assert!((30..=70).contains(&lost), "{lost} of {SENT} lost");

    outbound.set(Conditions::default());
    client.send_to(b"end", relay_address).await.expect("send");
    let mut echoed = Vec::new();
    loop {
        let (payload, _) = receive(&client).await;
        if payload == b"end" {
            break;
        }
        echoed.push(u64::from_be_bytes(payload.try_into().expect("8 bytes")));
    }
    assert_eq!(echoed.len() as u64, SENT - lost);
    assert!(echoed.is_sorted(), "in order: {echoed:?}");
    relay.stop().await.expect("the relay ends cleanly");
    echo.stop().await;
}

#[tokio::test]
async fn a_partition_drops_and_healing_resumes() {
    let echo_socket = bound().await;
    let echo_address = echo_socket.local_addr().expect("address");
    let echo = udp_echo(echo_socket);
    let cut = Conditions {
        partitioned: true,
        ..Conditions::default()
    };
    let outbound = Direction::new(cut, 1);
    let inbound = Direction::new(cut, 2);
    let (relay_address, relay) = udp_relay(echo_address, &outbound, &inbound).await;
    let client = bound().await;

    for index in 0..5u8 {
        client.send_to(&[index], relay_address).await.expect("send");
    }
    eventually("5 datagrams dropped", || {
        outbound.stats().dropped_partition == 5
    })
    .await;
    assert_eq!(outbound.stats().packets, 0);

    outbound.set(Conditions::default());
    inbound.set(Conditions::default());
    client
        .send_to(b"healed", relay_address)
        .await
        .expect("send");
    let (payload, _) = receive(&client).await;
    assert_eq!(payload, b"healed");
    relay.stop().await.expect("the relay ends cleanly");
    echo.stop().await;
}

#[tokio::test]
async fn a_one_way_partition_lets_the_other_way_through() {
    let target = bound().await;
    let outbound = Direction::new(Conditions::default(), 1);
    let inbound = Direction::new(Conditions::default(), 2);
    let (relay_address, relay) =
        udp_relay(target.local_addr().expect("address"), &outbound, &inbound).await;
    let client = bound().await;
    client.send_to(b"hello", relay_address).await.expect("send");
    assert_eq!(receive(&target).await.0, b"hello");

    outbound.set(Conditions {
        partitioned: true,
        ..Conditions::default()
    });
    client.send_to(b"cut", relay_address).await.expect("send");
    eventually("the datagram dropped", || {
        outbound.stats().dropped_partition == 1
    })
    .await;
    target
        .send_to(b"still here", relay_address)
        .await
        .expect("send");
    assert_eq!(receive(&client).await.0, b"still here");
    assert_eq!(inbound.stats().dropped_partition, 0);

    outbound.set(Conditions::default());
    client.send_to(b"again", relay_address).await.expect("send");
    assert_eq!(receive(&target).await.0, b"again", "the cut one never came");
    relay.stop().await.expect("the relay ends cleanly");
}

#[tokio::test]
async fn bandwidth_paces_the_datagrams() {
    let target = bound().await;
    let outbound = Direction::new(
        Conditions {
            bandwidth: Some(1_000_000),
            ..Conditions::default()
        },
        1,
    );
    let inbound = Direction::new(Conditions::default(), 2);
    let (relay_address, relay) =
        udp_relay(target.local_addr().expect("address"), &outbound, &inbound).await;
    let client = bound().await;

    // 100 KB at 1 MB/s: 100 ms. Few large datagrams, so no socket buffer
    // on the way overflows.
    let datagram = vec![7u8; 10_000];
    let started = Instant::now();
    for _ in 0..10 {
        client
            .send_to(&datagram, relay_address)
            .await
            .expect("send");
    }
    for _ in 0..10 {
        assert_eq!(receive(&target).await.0.len(), 10_000);
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= 90 * MS && elapsed < SLOW, "took {elapsed:?}");
    assert_eq!(outbound.stats().bytes, 100_000);
    relay.stop().await.expect("the relay ends cleanly");
}

#[tokio::test]
async fn jitter_keeps_the_order() {
    let target = bound().await;
    let outbound = Direction::new(
        Conditions {
            delay: 5 * MS,
            jitter: 30 * MS,
            ..Conditions::default()
        },
        9,
    );
    let inbound = Direction::new(Conditions::default(), 10);
    let (relay_address, relay) =
        udp_relay(target.local_addr().expect("address"), &outbound, &inbound).await;
    let client = bound().await;

    for index in 0..100u32 {
        client
            .send_to(&index.to_be_bytes(), relay_address)
            .await
            .expect("send");
    }
    for expected in 0..100u32 {
        let (payload, _) = receive(&target).await;
        let index = u32::from_be_bytes(payload.try_into().expect("4 bytes"));
        assert_eq!(index, expected);
    }
    relay.stop().await.expect("the relay ends cleanly");
}

#[tokio::test]
async fn replies_go_to_the_latest_client() {
    let target = bound().await;
    let outbound = Direction::new(Conditions::default(), 1);
    let inbound = Direction::new(Conditions::default(), 2);
    let (relay_address, relay) =
        udp_relay(target.local_addr().expect("address"), &outbound, &inbound).await;
    let (first, second) = (bound().await, bound().await);
    first.send_to(b"first", relay_address).await.expect("send");
    assert_eq!(receive(&target).await.0, b"first");
    second
        .send_to(b"second", relay_address)
        .await
        .expect("send");
    assert_eq!(receive(&target).await.0, b"second");
    target.send_to(b"reply", relay_address).await.expect("send");
    assert_eq!(receive(&second).await.0, b"reply");
    relay.stop().await.expect("the relay ends cleanly");
}

#[tokio::test]
async fn a_restarted_target_is_reached_again() {
    let echo_socket = bound().await;
    let echo_address = echo_socket.local_addr().expect("address");
    let echo = udp_echo(echo_socket);
    let outbound = Direction::new(delayed(5 * MS), 1);
    let inbound = Direction::new(delayed(5 * MS), 2);
    let (relay_address, relay) = udp_relay(echo_address, &outbound, &inbound).await;
    let client = bound().await;
    client.send_to(b"one", relay_address).await.expect("send");
    assert_eq!(receive(&client).await.0, b"one");

    // The target is gone: what is sent now is lost (and the kernel answers
    // with port unreachable).
    echo.stop().await;
    for _ in 0..3 {
        client.send_to(b"lost", relay_address).await.expect("send");
    }
    eventually("the datagrams sent to nobody", || {
        outbound.stats().packets == 4
    })
    .await;

    let echo = udp_echo(UdpSocket::bind(echo_address).await.expect("bind again"));
    client.send_to(b"two", relay_address).await.expect("send");
    assert_eq!(receive(&client).await.0, b"two");
    relay.stop().await.expect("the relay ends cleanly");
    echo.stop().await;
}

#[tokio::test]
async fn shutdown_ends_the_relay_even_with_datagrams_queued() {
    let target = bound().await;
    let outbound = Direction::new(delayed(PATIENCE), 1);
    let inbound = Direction::new(Conditions::default(), 2);
    let (relay_address, relay) =
        udp_relay(target.local_addr().expect("address"), &outbound, &inbound).await;
    let client = bound().await;
    client.send_to(b"slow", relay_address).await.expect("send");
    eventually("the datagram queued", || outbound.stats().queued_bytes == 4).await;
    let started = Instant::now();
    relay.stop().await.expect("the relay ends cleanly");
    assert!(started.elapsed() < SLOW);
    assert_eq!(outbound.stats().queued_bytes, 0, "released on shutdown");
}
