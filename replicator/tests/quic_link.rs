//! The QUIC layer end to end, in process: replicators of two regions over
//! loopback UDP (ports chosen by the OS) against in-memory fake nodes.

mod support;

use bytes::BufMut;
use meridian_proto::meridian::v1::replication_frame::Frame;
use meridian_proto::meridian::v1::{
    Ack, Batch, Hello, Message, Record, RecordKind, ReplicationFrame,
};
use meridian_replicator::frame::{self, FrameReader};
use meridian_replicator::protocol::{CLOSE_HANDSHAKE_REFUSED, CLOSE_MALFORMED};
use meridian_replicator::{ReplicatorError, server_name, tls};
use std::collections::HashSet;
use std::time::Duration;
use support::{RunningReplicator, TestRegion, init_tracing, topology, wait_until, within};
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(30);

/// Every record in `node`'s log has a distinct deduplication id.
fn assert_no_duplicates(region: &TestRegion) {
    let state = region.node.state();
    let ids: HashSet<&Vec<u8>> = state.log.iter().map(|record| &record.dedup_id).collect();
    assert_eq!(ids.len(), state.log.len(), "a record was stored twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_arrive_exactly_once_across_sender_restarts() {
    init_tracing();
    let shutdown = CancellationToken::new();
    let a = TestRegion::start("a", &shutdown).await;
    let b = TestRegion::start("b", &shutdown).await;
    let topology = topology(&[&a, &b], &[("orders", &["b"]), ("audit", &[])]);

    // 600 replicated records (several batches), interleaved with records the
    // policy keeps home and records of a topic the topology does not know.
    for index in 0..600 {
        a.node.produce("orders", &format!("order {index}"));
        if index % 50 == 0 {
            a.node.produce("audit", "stays in a");
            a.node.produce("ghost", "unknown topic");
        }
    }
    let a_last = a.node.log_len() as u64;

    // A starts first: B's certificate does not exist yet, so A's link fails
    // and retries (each session starts by reading the checkpoint).
    let replicator_a = RunningReplicator::start(&topology, &a);
    wait_until("a's link to b retried", PATIENCE, || {
        a.node.state().checkpoint_reads >= 2
    })
    .await;
    assert!(!tls::certificate_path(b.data_dir.path()).exists());
    let replicator_b = RunningReplicator::start(&topology, &b);

    // Stop A as soon as anything arrived, wherever it is in its window.
    wait_until("b stores a first record", PATIENCE, || b.node.log_len() > 0).await;
    replicator_a.stop().await;

    let replicator_a = RunningReplicator::start(&topology, &a);
    wait_until("b stores all 600 records", PATIENCE, || {
        b.node.log_len() == 600
    })
    .await;
    wait_until("a's checkpoint for b covers its log", PATIENCE, || {
        a.node.checkpoint("b") == a_last
    })
    .await;
    // B's link to A sends nothing (all of B's records came from A) yet its
    // checkpoint advances over them.
    wait_until("b's checkpoint for a covers its log", PATIENCE, || {
        b.node.checkpoint("a") == 600
    })
    .await;
    replicator_a.stop().await;

    // Lose A's checkpoint: everything is sent again and deduplicated.
    a.node.set_checkpoint("b", 0);
    for index in 0..10 {
        a.node.produce("orders", &format!("late order {index}"));
    }
    let replicator_a = RunningReplicator::start(&topology, &a);
    wait_until("b stores the 10 late records", PATIENCE, || {
        b.node.log_len() == 610
    })
    .await;
    wait_until(
        "the resent records were seen as duplicates",
        PATIENCE,
        || b.node.state().duplicates >= 600,
    )
    .await;

    replicator_a.stop().await;
    replicator_b.stop().await;
    shutdown.cancel();

    assert_no_duplicates(&b);
    let state = b.node.state();
    assert!(state.log.iter().all(|record| {
        record.origin_region == "a"
            && record
                .message
                .as_ref()
                .is_some_and(|message| message.topic == "orders")
    }));
    assert_eq!(
        a.node.log_len() as u64,
        a_last + 10,
        "nothing came back to a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_apply_closes_the_link_and_the_sender_retries() {
    init_tracing();
    let shutdown = CancellationToken::new();
    let a = TestRegion::start("a", &shutdown).await;
    let b = TestRegion::start("b", &shutdown).await;
    let topology = topology(&[&a, &b], &[("orders", &["b"])]);
    for index in 0..50 {
        a.node.produce("orders", &format!("order {index}"));
    }
    b.node.state().apply_failures_left = 3;

    let replicator_b = RunningReplicator::start(&topology, &b);
    let replicator_a = RunningReplicator::start(&topology, &a);
    wait_until("b stores all 50 records", PATIENCE, || {
        b.node.log_len() == 50
    })
    .await;
    wait_until("a's checkpoint for b covers its log", PATIENCE, || {
        a.node.checkpoint("b") == 50
    })
    .await;
    assert_eq!(b.node.state().apply_failures_left, 0);
    assert!(
        a.node.state().checkpoint_reads >= 4,
        "each refused apply ends a session"
    );
    replicator_a.stop().await;
    replicator_b.stop().await;
    shutdown.cancel();
    assert_no_duplicates(&b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_locked_data_directory_refuses_to_start() {
    init_tracing();
    let shutdown = CancellationToken::new();
    let a = TestRegion::start("a", &shutdown).await;
    let b = TestRegion::start("b", &shutdown).await;
    let topology = topology(&[&a, &b], &[]);
    let _held = meridian_replicator::lock_data_dir(a.data_dir.path()).expect("lock");
    let result =
        meridian_replicator::run(topology, "a".into(), Some(a.socket()), shutdown.clone()).await;
    assert!(matches!(result, Err(ReplicatorError::Locked { .. })));
    shutdown.cancel();
}

/// A raw QUIC client of a replicator, for feeding it hand-made frames.
struct RawPeer {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    send: quinn::SendStream,
    reader: FrameReader<quinn::RecvStream>,
}

impl RawPeer {
    async fn connect(target: &TestRegion) -> Self {
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("address"))
            .expect("client endpoint");
        let config = tls::client_config(&target.name, target.data_dir.path()).expect("config");
        let connection = endpoint
            .connect_with(
                config,
                target.replicator_address,
                &server_name(&target.name),
            )
            .expect("dial")
            .await
            .expect("handshake");
        let (send, receive) = connection.open_bi().await.expect("stream");
        Self {
            endpoint,
            connection,
            send,
            reader: FrameReader::new(receive),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.expect("write");
    }

    async fn send_frame(&mut self, body: Frame) {
        let encoded = frame::encode(&frame::frame(body));
        self.write(&encoded).await;
    }

    async fn next_frame(&mut self) -> Option<ReplicationFrame> {
        within(PATIENCE, "a frame arrives", self.reader.next_frame())
            .await
            .ok()
            .flatten()
    }

    /// Reads what is left: a Goodbye (if it arrived before the close), then
    /// the close's code and reason.
    async fn expect_goodbye_and_close(mut self, code: u32, reason_contains: &str) {
        if let Some(ReplicationFrame {
            frame: Some(Frame::Goodbye(goodbye)),
        }) = self.next_frame().await
        {
            assert!(
                goodbye.reason.contains(reason_contains),
                "goodbye reason {:?}",
                goodbye.reason
            );
        }
        let closed = within(PATIENCE, "the connection closes", self.connection.closed()).await;
        match closed {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(close.error_code, quinn::VarInt::from_u32(code));
                let reason = String::from_utf8_lossy(&close.reason);
                assert!(reason.contains(reason_contains), "close reason {reason:?}");
            }
            other => panic!("expected an application close, got {other}"),
        }
        self.endpoint.close(0u32.into(), b"done");
    }
}

/// Regions a and b (topic `orders` replicated to b) with only b's
/// replicator running, ready for a [`RawPeer`]: b's certificate exists.
async fn raw_peer_target() -> (CancellationToken, TestRegion, TestRegion, RunningReplicator) {
    init_tracing();
    let shutdown = CancellationToken::new();
    let a = TestRegion::start("a", &shutdown).await;
    let b = TestRegion::start("b", &shutdown).await;
    let topology = topology(&[&a, &b], &[("orders", &["b"])]);
    let replicator_b = RunningReplicator::start(&topology, &b);
    let certificate = tls::certificate_path(b.data_dir.path());
    wait_until("b's certificate exists", PATIENCE, || certificate.exists()).await;
    (shutdown, a, b, replicator_b)
}

fn hello(from: &str, to: &str) -> Frame {
    Frame::Hello(Hello {
        protocol_version: 1,
        from_region: from.into(),
        to_region: to.into(),
    })
}

/// The ack frame a raw peer expects: through `through_sequence`, with
/// `stored` records stored and `duplicates` skipped.
fn ack_frame(through_sequence: u64, stored: u32, duplicates: u32) -> Option<Frame> {
    Some(Frame::Ack(Ack {
        through_sequence,
        stored,
        duplicates,
    }))
}

fn record(sequence: u64) -> Record {
    Record {
        sequence,
        kind: RecordKind::Message as i32,
        dedup_id: format!("raw-{sequence}").into_bytes(),
        origin_region: "a".into(),
        origin_sequence: sequence,
        path: vec!["a".into()],
        message: Some(Message {
            topic: "orders".into(),
            ..Message::default()
        }),
        ack: None,
        group_start: None,
        transaction_end: None,
        trace: None,
        catalog: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_frames_close_the_connection_and_the_endpoint_keeps_serving() {
    let (shutdown, _a, b, replicator_b) = raw_peer_target().await;

    // A length far over the limit, right at the start.
    let mut peer = RawPeer::connect(&b).await;
    let mut garbage = bytes::BytesMut::new();
    garbage.put_u32(u32::MAX);
    garbage.put_slice(b"whatever follows");
    peer.write(&garbage).await;
    peer.expect_goodbye_and_close(CLOSE_MALFORMED, "malformed")
        .await;

    // Undecodable protobuf after a valid Hello.
    let mut peer = RawPeer::connect(&b).await;
    peer.send_frame(hello("a", "b")).await;
    peer.write(&[0, 0, 0, 3, 0x0a, 100, 0]).await;
    peer.expect_goodbye_and_close(CLOSE_MALFORMED, "malformed")
        .await;

    // The wrong frame kind after the Hello.
    let mut peer = RawPeer::connect(&b).await;
    peer.send_frame(hello("a", "b")).await;
    peer.send_frame(Frame::Ack(Ack::default())).await;
    peer.expect_goodbye_and_close(CLOSE_MALFORMED, "malformed")
        .await;

    // A Hello meant for another region.
    let mut peer = RawPeer::connect(&b).await;
    peer.send_frame(hello("a", "c")).await;
    peer.expect_goodbye_and_close(CLOSE_HANDSHAKE_REFUSED, "handshake refused")
        .await;

    // A Hello from a region the topology does not know.
    let mut peer = RawPeer::connect(&b).await;
    peer.send_frame(hello("mallory", "b")).await;
    peer.expect_goodbye_and_close(CLOSE_HANDSHAKE_REFUSED, "handshake refused")
        .await;

    // The endpoint still serves a well-behaved peer; a batch that does not
    // advance is refused as malformed.
    let mut peer = RawPeer::connect(&b).await;
    peer.send_frame(hello("a", "b")).await;
    peer.send_frame(Frame::Batch(Batch {
        records: vec![record(1), record(2)],
        through_sequence: 3,
    }))
    .await;
    let ack = peer.next_frame().await.expect("an ack");
    assert_eq!(ack.frame, ack_frame(3, 2, 0));
    assert_eq!(b.node.log_len(), 2);
    peer.send_frame(Frame::Batch(Batch {
        records: vec![record(2)],
        through_sequence: 3,
    }))
    .await;
    peer.expect_goodbye_and_close(CLOSE_MALFORMED, "does not increase")
        .await;

    replicator_b.stop().await;
    shutdown.cancel();
}

/// Batches that arrive while the node applies an earlier one are applied
/// together: one Apply and one cumulative ack for all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_arriving_during_an_apply_are_applied_and_acked_together() {
    let (shutdown, _a, b, replicator_b) = raw_peer_target().await;

    b.node.hold_applies(true);
    let mut peer = RawPeer::connect(&b).await;
    peer.send_frame(hello("a", "b")).await;
    peer.send_frame(Frame::Batch(Batch {
        records: vec![record(1)],
        through_sequence: 1,
    }))
    .await;
    wait_until("b's node is applying the first batch", PATIENCE, || {
        b.node.state().apply_calls == 1
    })
    .await;
    // Four more batches in one write: small enough for one QUIC packet, so
    // when the receiver reads the first of them the others are there too.
    let mut four = Vec::new();
    for sequence in 2..=5 {
        four.extend_from_slice(&frame::encode(&frame::frame(Frame::Batch(Batch {
            records: vec![record(sequence)],
            through_sequence: sequence,
        }))));
    }
    peer.write(&four).await;
    b.node.hold_applies(false);

    let first = peer.next_frame().await.expect("the first batch's ack");
    assert_eq!(first.frame, ack_frame(1, 1, 0));
    let second = peer.next_frame().await.expect("one ack for the other four");
    assert_eq!(second.frame, ack_frame(5, 4, 0));
    assert_eq!(
        b.node.state().apply_calls,
        2,
        "one Apply for the four batches"
    );
    assert_eq!(b.node.log_len(), 5);
    assert_no_duplicates(&b);

    peer.endpoint.close(0u32.into(), b"done");
    replicator_b.stop().await;
    shutdown.cancel();
}

/// Two private sites behind one hub, and a second public region: the sites
/// dial the hub (they listen for nothing), the hub sends to them over their
/// own connections and forwards between them, and every region stores each
/// record once, also after the hub's replicator restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_sites_dial_their_hub_which_forwards_between_them() {
    init_tracing();
    let shutdown = CancellationToken::new();
    let hub = TestRegion::start("hub", &shutdown).await;
    let far = TestRegion::start("far", &shutdown).await;
    let lyon = TestRegion::start_private("lyon", &["hub"], &shutdown).await;
    let pune = TestRegion::start_private("pune", &["hub"], &shutdown).await;
    let everywhere: &[&str] = &["hub", "far", "lyon", "pune"];
    let topology = topology(
        &[&hub, &far, &lyon, &pune],
        &[("orders", everywhere), ("factory", &["lyon", "hub"])],
    );

    for index in 0..40 {
        lyon.node.produce("orders", &format!("lyon order {index}"));
        pune.node.produce("orders", &format!("pune order {index}"));
        far.node.produce("orders", &format!("far order {index}"));
    }
    lyon.node.produce("factory", "stays in europe");
    let replicators: Vec<RunningReplicator> = [&hub, &far, &lyon, &pune]
        .into_iter()
        .map(|region| RunningReplicator::start(&topology, region))
        .collect();

    for region in [&hub, &far] {
        let expected = if region.name == "hub" { 121 } else { 120 };
        wait_until(
            &format!("{} stores every record", region.name),
            PATIENCE,
            || region.node.log_len() == expected,
        )
        .await;
    }
    wait_until("lyon stores far's and pune's orders", PATIENCE, || {
        lyon.node.log_len() == 41 + 80
    })
    .await;
    wait_until("pune stores far's and lyon's orders", PATIENCE, || {
        pune.node.log_len() == 40 + 80
    })
    .await;
    // Pune heard from Lyon through the hub, and from far through the hub.
    {
        let state = pune.node.state();
        let from_lyon = state
            .log
            .iter()
            .find(|record| record.origin_region == "lyon")
            .expect("a record from lyon");
        assert_eq!(from_lyon.path, ["lyon", "hub", "pune"]);
        assert!(
            state.log.iter().all(|record| record
                .message
                .as_ref()
                .is_some_and(|message| message.topic == "orders")),
            "the factory topic never leaves europe"
        );
    }
    // Far heard from the sites through the hub, never from them directly.
    assert!(
        far.node
            .state()
            .log
            .iter()
            .filter(|record| record.origin_region != "far")
            .all(|record| record.path.get(1).map(String::as_str) == Some("hub")),
        "far receives the sites' records through the hub"
    );

    // The hub's replicator restarts; the sites dial again and both
    // directions resume from their checkpoints.
    let mut replicators = replicators.into_iter();
    let hub_replicator = replicators.next().expect("hub's replicator");
    hub_replicator.stop().await;
    lyon.node.produce("orders", "after the restart");
    far.node.produce("orders", "far after the restart");
    let hub_replicator = RunningReplicator::start(&topology, &hub);
    wait_until("pune stores lyon's late order", PATIENCE, || {
        pune.node.log_len() == 122
    })
    .await;
    wait_until("lyon stores far's late order", PATIENCE, || {
        lyon.node.log_len() == 41 + 80 + 2
    })
    .await;
    for region in [&hub, &far, &lyon, &pune] {
        assert_no_duplicates(region);
    }
    // The sites' checkpoints at the hub cover the hub's log.
    let hub_last = hub.node.log_len() as u64;
    wait_until(
        "the hub's checkpoints for its sites advance",
        PATIENCE,
        || hub.node.checkpoint("lyon") == hub_last && hub.node.checkpoint("pune") == hub_last,
    )
    .await;
    hub_replicator.stop().await;
    for replicator in replicators {
        replicator.stop().await;
    }
    shutdown.cancel();
}
