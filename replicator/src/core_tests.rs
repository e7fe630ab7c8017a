//! State-machine tests of the sending side, plus a seeded fault simulation
//! that drives both cores (sender and receiver) over a virtual clock.
//!
//! The simulation runs seeds 1..=300 by default. `REPLICATION_SIM_SEEDS=N`
//! runs N seeds from a random start (printed), `REPLICATION_SIM_SEED=S`
//! replays one; a failure names its seed.

use super::*;
use crate::protocol::PROTOCOL_VERSION;
use crate::receiver_core::ReceiverCore;
use meridian_proto::meridian::v1::{Hello, Message as RecordMessage};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use std::collections::BTreeSet;

fn record(sequence: u64, body_bytes: usize) -> Record {
    Record {
        sequence,
        origin_region: "a".into(),
        message: Some(RecordMessage {
            topic: "orders".into(),
            body: vec![7; body_bytes],
            ..RecordMessage::default()
        }),
        ..Record::default()
    }
}

fn records(sequences: std::ops::RangeInclusive<u64>) -> Vec<Record> {
    sequences.map(|sequence| record(sequence, 10)).collect()
}

fn limits(window_batches: usize) -> SenderLimits {
    SenderLimits {
        window_batches,
        window_bytes: usize::MAX,
        batch_records_max: 2,
        batch_bytes_max: 1024,
        ack_timeout: ACK_TIMEOUT,
    }
}

const ACK_TIMEOUT: Duration = Duration::from_secs(5);

fn throughs(batches: &[Batch]) -> Vec<u64> {
    batches.iter().map(|batch| batch.through_sequence).collect()
}

fn drain(core: &mut SenderCore) -> Vec<Batch> {
    let now = Instant::now();
    std::iter::from_fn(|| core.poll_transmit(now)).collect()
}

#[test]
fn sends_in_order_up_to_the_window() {
    let mut core = SenderCore::new(0, limits(3));
    assert!(core.wants_tail());
    core.push_tail(records(1..=10), 10).expect("valid tail");
    assert!(!core.wants_tail(), "pending batches first");
    let sent = drain(&mut core);
    assert_eq!(throughs(&sent), vec![2, 4, 6]);
    assert_eq!(core.in_flight_batches(), 3);
    assert_eq!(core.sent_through(), 6);
    assert_eq!(core.queued_through(), 10);

    assert_eq!(
        core.on_ack(2),
        Ok(AckOutcome::Advanced { acked_through: 2 })
    );
    assert_eq!(throughs(&drain(&mut core)), vec![8]);
    core.on_ack(8).expect("cumulative ack");
    assert_eq!(throughs(&drain(&mut core)), vec![10]);
    assert!(core.wants_tail() || core.in_flight_batches() == 1);
}

#[test]
fn batch_covers_filtered_records_so_the_checkpoint_advances() {
    let mut core = SenderCore::new(5, limits(8));
    core.push_tail(Vec::new(), 40)
        .expect("everything filtered out");
    let sent = drain(&mut core);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].records.is_empty());
    assert_eq!(sent[0].through_sequence, 40);
    core.on_ack(40).expect("ack");
    assert_eq!(core.checkpoint_to_persist(), Some(40));
    core.on_persisted(40);
    assert_eq!(core.checkpoint_to_persist(), None);
    assert_eq!(core.persisted_through(), 40);
}

#[test]
fn last_batch_of_a_tail_batch_ends_at_its_through_sequence() {
    let mut core = SenderCore::new(0, limits(8));
    // Records 1, 2, 5 survive the filter; the tail examined up to 9.
    let kept = vec![record(1, 10), record(2, 10), record(5, 10)];
    core.push_tail(kept, 9).expect("valid");
    let sent = drain(&mut core);
    assert_eq!(throughs(&sent), vec![2, 9]);
    assert_eq!(sent[1].records.len(), 1);
}

#[test]
fn splits_by_bytes_and_lets_a_large_record_travel_alone() {
    let mut core = SenderCore::new(
        0,
        SenderLimits {
            window_batches: 8,
            window_bytes: usize::MAX,
            batch_records_max: 100,
            batch_bytes_max: 1000,
            ack_timeout: ACK_TIMEOUT,
        },
    );
    let tail = vec![
        record(1, 400),
        record(2, 400),
        record(3, 5000),
        record(4, 10),
    ];
    core.push_tail(tail, 4).expect("valid");
    let sent = drain(&mut core);
    let sizes: Vec<usize> = sent.iter().map(|batch| batch.records.len()).collect();
    assert_eq!(sizes, vec![2, 1, 1]);
    assert_eq!(throughs(&sent), vec![2, 3, 4]);
}

#[test]
fn refuses_a_record_too_large_for_a_frame() {
    let mut core = SenderCore::new(0, SenderLimits::default());
    let error = core
        .push_tail(vec![record(1, MAX_FRAME_BYTES)], 1)
        .expect_err("too large");
    assert!(matches!(
        error,
        CoreError::RecordTooLarge { sequence: 1, .. }
    ));
}

#[test]
fn duplicate_and_old_acks_are_stale() {
    let mut core = SenderCore::new(0, limits(8));
    core.push_tail(records(1..=6), 6).expect("valid");
    drain(&mut core);
    assert_eq!(
        core.on_ack(4),
        Ok(AckOutcome::Advanced { acked_through: 4 })
    );
    assert_eq!(core.on_ack(4), Ok(AckOutcome::Stale), "duplicate");
    assert_eq!(core.on_ack(2), Ok(AckOutcome::Stale), "older batch");
    assert_eq!(core.acked_through(), 4);
    assert_eq!(core.in_flight_batches(), 1);
}

#[test]
fn acks_for_unsent_or_partial_batches_are_errors() {
    let mut core = SenderCore::new(0, limits(1));
    core.push_tail(records(1..=6), 6).expect("valid");
    drain(&mut core);
    assert_eq!(
        core.on_ack(4),
        Err(CoreError::AckBeyondSent {
            through: 4,
            sent_through: 2
        })
    );
    assert_eq!(
        core.on_ack(1),
        Err(CoreError::AckNotBatchBoundary { through: 1 })
    );
    assert_eq!(core.acked_through(), 0, "errors change nothing");
}

#[test]
fn reconnect_in_the_middle_of_the_window_resends_after_the_ack() {
    let mut core = SenderCore::new(0, limits(4));
    core.push_tail(records(1..=10), 10).expect("valid");
    assert_eq!(throughs(&drain(&mut core)), vec![2, 4, 6, 8]);
    core.on_ack(4).expect("ack");

    let resume_after = core.on_disconnect();
    assert_eq!(resume_after, 4);
    assert_eq!(core.in_flight_batches(), 0);
    assert_eq!(core.queued_through(), 4);
    assert!(core.wants_tail());
    assert_eq!(
        core.poll_transmit(Instant::now()),
        None,
        "pending work was dropped"
    );

    // The tail is reopened after the ack: 5..=10 go again.
    core.push_tail(records(5..=10), 10).expect("resend");
    let resent = drain(&mut core);
    assert_eq!(throughs(&resent), vec![6, 8, 10]);
    assert_eq!(resent[0].records[0].sequence, 5);
    // An ack from before the reconnect arriving late is harmless.
    assert_eq!(core.on_ack(2), Ok(AckOutcome::Stale));
}

#[test]
fn resume_starts_over_from_the_persisted_checkpoint() {
    let mut core = SenderCore::new(0, limits(4));
    core.push_tail(records(1..=4), 4).expect("valid");
    drain(&mut core);
    core.on_ack(4).expect("ack");
    // Persisting failed; the node still says 2.
    assert_eq!(core.resume(2), 2);
    assert_eq!(core.acked_through(), 2);
    assert_eq!(core.checkpoint_to_persist(), None);
    core.push_tail(records(3..=4), 4)
        .expect("resend from the persisted point");
}

#[test]
fn refuses_a_tail_that_goes_backwards_or_out_of_order() {
    let mut core = SenderCore::new(10, limits(4));
    assert_eq!(
        core.push_tail(records(5..=6), 6),
        Err(CoreError::TailWentBackwards {
            through: 6,
            queued_through: 10
        })
    );
    assert!(matches!(
        core.push_tail(records(11..=12), 11),
        Err(CoreError::RecordOutOfOrder { sequence: 12, .. })
    ));
    assert!(matches!(
        core.push_tail(vec![record(12, 1), record(11, 1)], 12),
        Err(CoreError::RecordOutOfOrder { sequence: 11, .. })
    ));
    assert_eq!(core.push_tail(Vec::new(), 10), Ok(()), "keep-alive");
    assert_eq!(core.poll_transmit(Instant::now()), None);
}

#[test]
fn filter_follows_topic_policy_and_routes_and_warns_once_per_unknown_topic() {
    // The demo: eu-west and us-east public, on-prem private behind both.
    let mut topology = meridian_topology::Topology::demo(std::path::Path::new("/d"));
    let mut local = topology.topics["demo"].clone();
    local.replicate_to = vec!["eu-west".to_owned()];
    topology.topics.insert("local".to_owned(), local);
    let mut to_us = RecordFilter::new(&topology, "eu-west", "us-east");
    let record = |topic: &str, origin: &str| Record {
        origin_region: origin.into(),
        path: vec![origin.into()],
        message: Some(RecordMessage {
            topic: topic.into(),
            ..RecordMessage::default()
        }),
        ..Record::default()
    };
    assert_eq!(to_us.verdict(&record("demo", "eu-west")), Verdict::Send);
    assert_eq!(
        to_us.verdict(&record("local", "eu-west")),
        Verdict::NotForPeer
    );
    // us-east hears on-prem directly, and from eu-west too: on-prem has
    // two hubs, so each relays its records (losing one route loses nothing).
    let mut forwarded = record("demo", "on-prem");
    forwarded.path.push("eu-west".into());
    assert_eq!(to_us.verdict(&forwarded), Verdict::Send);
    forwarded.path.push("us-east".into());
    assert_eq!(to_us.verdict(&forwarded), Verdict::AlreadyThere);
    assert_eq!(
        to_us.verdict(&record("demo", "us-east")),
        Verdict::AlreadyThere
    );
    assert_eq!(
        to_us.verdict(&record("ghost", "eu-west")),
        Verdict::UnknownTopic { first_time: true }
    );
    assert_eq!(
        to_us.verdict(&record("ghost", "eu-west")),
        Verdict::UnknownTopic { first_time: false }
    );
    let bare = Record {
        origin_region: "eu-west".into(),
        ..Record::default()
    };
    assert_eq!(to_us.verdict(&bare), Verdict::NotAMessage);

    // With on-prem behind eu-west only, eu-west forwards us-east's records to it.
    topology.regions.get_mut("on-prem").expect("on-prem").hubs = vec!["eu-west".to_owned()];
    let mut to_site = RecordFilter::new(&topology, "eu-west", "on-prem");
    let mut from_us = record("demo", "us-east");
    from_us.path.push("eu-west".into());
    assert_eq!(to_site.verdict(&from_us), Verdict::Send);
    let mut to_us = RecordFilter::new(&topology, "eu-west", "us-east");
    let mut from_site = record("demo", "on-prem");
    from_site.path.push("eu-west".into());
    assert_eq!(to_us.verdict(&from_site), Verdict::Send);
}

#[test]
fn a_batch_without_an_ack_stalls_the_link_after_the_timeout() {
    let start = Instant::now();
    let mut core = SenderCore::new(0, limits(4));
    assert_eq!(core.poll_timeout(), None, "nothing in flight");
    core.push_tail(records(1..=4), 4).expect("valid");
    assert!(core.poll_transmit(start).is_some());
    let later = start + Duration::from_secs(1);
    assert!(core.poll_transmit(later).is_some());
    assert_eq!(core.poll_timeout(), Some(start + ACK_TIMEOUT));
    core.handle_timeout(start + ACK_TIMEOUT - Duration::from_millis(1))
        .expect("not yet");
    assert_eq!(
        core.handle_timeout(start + ACK_TIMEOUT),
        Err(AckStalled {
            through: 2,
            waited: ACK_TIMEOUT
        })
    );
    // An ack of the first batch moves the deadline to the second's.
    core.on_ack(2).expect("ack");
    assert_eq!(core.poll_timeout(), Some(later + ACK_TIMEOUT));
    core.handle_timeout(start + ACK_TIMEOUT)
        .expect("the next batch has time");
}

/// One seeded run of a link with random disconnects, lost acks, failed
/// checkpoint writes, random tail batch sizes and random delays, both cores
/// driven over a virtual clock, against a deduplicating store. Invariants:
/// the receiver core accepts every batch (so batches increase within a
/// connection), the persisted checkpoint never goes backwards, every sequence
/// at or below it is stored, and the log is eventually delivered whole
/// (lost acks end in a stall timeout and a reconnect if nothing else helps).
fn simulate(seed: u64) {
    const LOG_LENGTH: u64 = 300;
    let mut random = StdRng::seed_from_u64(seed);
    let for_peer: BTreeSet<u64> = (1..=LOG_LENGTH)
        .filter(|_| random.random_bool(0.6))
        .collect();
    let mut now = Instant::now();
    let connect = |now: Instant| {
        let mut receiver = ReceiverCore::new(
            "b",
            BTreeSet::from(["a".to_owned()]),
            now,
            Duration::from_secs(10),
        );
        receiver
            .on_hello(&Hello {
                protocol_version: PROTOCOL_VERSION,
                from_region: "a".to_owned(),
                to_region: "b".to_owned(),
            })
            .unwrap_or_else(|violation| panic!("seed {seed}: {violation}"));
        receiver
    };

    let mut persisted = 0;
    let mut core = SenderCore::new(persisted, limits(random.random_range(1..=6)));
    let mut tail_after = core.resume(persisted);
    let mut receiver = connect(now);
    let mut to_receiver: VecDeque<Batch> = VecDeque::new();
    let mut to_sender: VecDeque<u64> = VecDeque::new();
    let mut stored: BTreeSet<u64> = BTreeSet::new();
    let mut reconnects = 0;

    for step in 0..100_000 {
        if persisted == LOG_LENGTH && core.in_flight_batches() == 0 {
            assert_eq!(
                stored.iter().copied().collect::<Vec<_>>(),
                for_peer.iter().copied().collect::<Vec<_>>(),
                "seed {seed}: receiver holds exactly the peer's records"
            );
            return;
        }
        now += Duration::from_millis(random.random_range(0..200));
        let stalled = core.handle_timeout(now).is_err();
        let roll = random.random_range(0..10);
        if stalled || (roll == 0 && random.random_bool(0.2)) {
            // Disconnect (chosen, or the stall timeout): both directions
            // lose what is in transit; the next session resumes from what
            // the node persisted, on a new connection with a new Hello.
            to_receiver.clear();
            to_sender.clear();
            tail_after = core.resume(persisted);
            receiver = connect(now);
            reconnects += 1;
            continue;
        }
        match roll {
            1 | 2 if core.wants_tail() && tail_after < LOG_LENGTH => {
                let through = (tail_after + random.random_range(1..=20)).min(LOG_LENGTH);
                let kept = (tail_after + 1..=through)
                    .filter(|sequence| for_peer.contains(sequence))
                    .map(|sequence| record(sequence, 1))
                    .collect();
                core.push_tail(kept, through)
                    .unwrap_or_else(|error| panic!("seed {seed} step {step}: {error}"));
                tail_after = through;
            }
            3 | 4 => {
                while let Some(batch) = core.poll_transmit(now) {
                    to_receiver.push_back(batch);
                }
            }
            5 | 6 => {
                if let Some(batch) = to_receiver.pop_front() {
                    receiver
                        .on_batch(batch.through_sequence)
                        .unwrap_or_else(|violation| panic!("seed {seed} step {step}: {violation}"));
                    stored.extend(batch.records.iter().map(|record| record.sequence));
                    if !random.random_bool(0.1) {
                        to_sender.push_back(batch.through_sequence);
                    }
                }
            }
            7 | 8 => {
                if let Some(through) = to_sender.pop_front() {
                    core.on_ack(through)
                        .unwrap_or_else(|error| panic!("seed {seed} step {step}: {error}"));
                }
            }
            _ => {
                if let Some(checkpoint) = core.checkpoint_to_persist()
                    && !random.random_bool(0.2)
                {
                    assert!(
                        checkpoint > persisted,
                        "seed {seed}: checkpoint went backwards"
                    );
                    persisted = checkpoint;
                    core.on_persisted(checkpoint);
                    let missing = for_peer
                        .range(..=persisted)
                        .find(|sequence| !stored.contains(sequence));
                    assert_eq!(missing, None, "seed {seed}: acked but not stored");
                }
            }
        }
    }
    panic!(
        "seed {seed}: the link made no progress to the end of the log ({reconnects} reconnects)"
    );
}

/// The seeds to simulate: `REPLICATION_SIM_SEED` (one), or
/// `REPLICATION_SIM_SEEDS` (that many from a random start), else 1..=300.
fn seeds() -> Vec<u64> {
    let number = |name: &str| {
        std::env::var(name).ok().map(|value| {
            value
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}={value:?} is not a number"))
        })
    };
    if let Some(seed) = number("REPLICATION_SIM_SEED") {
        return vec![seed];
    }
    if let Some(count) = number("REPLICATION_SIM_SEEDS") {
        let start: u64 = rand::rng().random_range(0..u64::MAX / 2);
        eprintln!(
            "simulating {count} seeds from {start} (REPLICATION_SIM_SEED=<seed> replays one)"
        );
        return (start..start.saturating_add(count)).collect();
    }
    (1..=300).collect()
}

#[test]
fn seeded_fault_simulation_delivers_everything() {
    for seed in seeds() {
        simulate(seed);
    }
}

#[test]
fn the_byte_window_holds_batches_back_but_always_lets_one_out() {
    let mut core = SenderCore::new(
        0,
        SenderLimits {
            window_batches: 100,
            window_bytes: 100,
            batch_records_max: 1,
            batch_bytes_max: 1 << 20,
            ack_timeout: ACK_TIMEOUT,
        },
    );
    // Three records of about 70 bytes each, one per batch.
    let big = |sequence| record(sequence, 60);
    core.push_tail(vec![big(1), big(2), big(3)], 3)
        .expect("push");
    let now = Instant::now();
    assert!(
        core.poll_transmit(now).is_some(),
        "an empty window lets one out"
    );
    assert!(
        core.poll_transmit(now).is_some(),
        "still under 100 bytes in flight"
    );
    assert!(core.poll_transmit(now).is_none(), "over the byte budget");
    assert!(!core.wants_tail());
    core.on_ack(1).expect("ack");
    assert!(
        core.poll_transmit(now).is_some(),
        "room again after the ack"
    );
}
