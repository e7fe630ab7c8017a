//! Codec tests: round trips over seeded random frames and chunkings, truncated
//! input, oversized lengths and garbage bytes.

use super::*;
use meridian_proto::meridian::v1::{Message as RecordMessage, Record, RecordKind};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio_util::codec::Decoder;

fn random_string(random: &mut StdRng, max_length: usize) -> String {
    let length = random.random_range(0..max_length as u64 + 1) as usize;
    (0..length)
        .map(|_| char::from(b'a' + random.random_range(0..26) as u8))
        .collect()
}

fn random_bytes(random: &mut StdRng, max_length: usize) -> Vec<u8> {
    let length = random.random_range(0..max_length as u64 + 1) as usize;
    (0..length).map(|_| random.random::<u8>()).collect()
}

fn random_record(random: &mut StdRng, sequence: u64) -> Record {
    Record {
        sequence,
        kind: RecordKind::Message as i32,
        dedup_id: random_bytes(random, 16),
        origin_region: random_string(random, 8),
        origin_sequence: random.random::<u64>(),
        path: vec![random_string(random, 8)],
        message: Some(RecordMessage {
            client_message_id: random_string(random, 20),
            topic: random_string(random, 12),
            queue_id: random.random_range(0..16),
            body: random_bytes(random, 300),
            ..RecordMessage::default()
        }),
        ack: None,
        group_start: None,
        transaction_end: None,
        trace: None,
        catalog: None,
    }
}

fn random_frame(random: &mut StdRng) -> ReplicationFrame {
    let body = match random.random_range(0..4) {
        0 => Frame::Hello(Hello {
            protocol_version: random.random::<u32>(),
            from_region: random_string(random, 10),
            to_region: random_string(random, 10),
        }),
        1 => {
            let count = random.random_range(0..6);
            Frame::Batch(Batch {
                records: (0..count)
                    .map(|index| random_record(random, index + 1))
                    .collect(),
                through_sequence: random.random::<u64>(),
            })
        }
        2 => Frame::Ack(Ack {
            through_sequence: random.random::<u64>(),
            stored: random.random::<u32>(),
            duplicates: random.random::<u32>(),
        }),
        _ => Frame::Goodbye(Goodbye {
            reason: random_string(random, 40),
        }),
    };
    frame(body)
}

#[test]
fn round_trips_random_frames_fed_in_random_chunks() {
    for seed in 1..=200 {
        let mut random = StdRng::seed_from_u64(seed);
        let frames: Vec<ReplicationFrame> = (0..5).map(|_| random_frame(&mut random)).collect();
        let wire: Vec<u8> = frames
            .iter()
            .flat_map(|frame| encode(frame).to_vec())
            .collect();
        assert_eq!(
            wire.len(),
            frames.iter().map(encoded_len).sum::<usize>(),
            "seed {seed}"
        );

        let mut codec = FrameCodec;
        let mut buffer = BytesMut::new();
        let mut decoded = Vec::new();
        let mut position = 0;
        while position < wire.len() {
            let chunk = 1 + random.random_range(0..64) as usize;
            let end = (position + chunk).min(wire.len());
            buffer.extend_from_slice(&wire[position..end]);
            position = end;
            while let Some(frame) = codec.decode(&mut buffer).expect("valid input decodes") {
                decoded.push(frame);
            }
        }
        assert!(buffer.is_empty(), "seed {seed}: leftover bytes");
        assert_eq!(decoded, frames, "seed {seed}");
    }
}

#[test]
fn every_proper_prefix_is_incomplete_then_truncated_at_eof() {
    let mut random = StdRng::seed_from_u64(7);
    let frame = frame(Frame::Batch(Batch {
        records: vec![random_record(&mut random, 1)],
        through_sequence: 9,
    }));
    let wire = encode(&frame);
    for cut in 0..wire.len() {
        let mut buffer = BytesMut::from(&wire[..cut]);
        assert!(
            decode(&mut buffer)
                .expect("prefix is not an error")
                .is_none()
        );
        assert_eq!(
            buffer.len(),
            cut,
            "nothing consumed from an incomplete frame"
        );
        let result = FrameCodec.decode_eof(&mut buffer);
        if cut == 0 {
            assert!(result.expect("empty input is a clean end").is_none());
        } else {
            match result {
                Err(FrameError::Truncated { expected, received }) => {
                    assert_eq!(received, cut);
                    let expected_total = if cut < LENGTH_PREFIX_BYTES {
                        LENGTH_PREFIX_BYTES
                    } else {
                        wire.len()
                    };
                    assert_eq!(expected, expected_total);
                }
                other => panic!("cut {cut}: expected Truncated, got {other:?}"),
            }
        }
    }
}

#[test]
fn refuses_lengths_over_the_limit_before_the_body_arrives() {
    let mut buffer = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
    let error = decode(&mut buffer).expect_err("oversized length");
    assert!(matches!(
        error,
        FrameError::TooLarge {
            length: 4_294_967_295,
            max: MAX_FRAME_BYTES
        }
    ));
    assert!(error.is_malformed());
    assert_eq!(
        error.to_string(),
        "malformed replication frame: length 4294967295 exceeds 16777216"
    );

    let just_over = u32::try_from(MAX_FRAME_BYTES + 1).expect("fits in u32");
    let mut buffer = BytesMut::from(&just_over.to_be_bytes()[..]);
    assert!(matches!(
        decode(&mut buffer),
        Err(FrameError::TooLarge { .. })
    ));

    // The limit itself is allowed: the decoder waits for the body.
    let at_limit = u32::try_from(MAX_FRAME_BYTES).expect("fits in u32");
    let mut buffer = BytesMut::from(&at_limit.to_be_bytes()[..]);
    assert!(decode(&mut buffer).expect("at the limit").is_none());
}

#[test]
fn zero_length_frame_is_empty() {
    let mut buffer = BytesMut::from(&[0u8, 0, 0, 0][..]);
    assert!(matches!(decode(&mut buffer), Err(FrameError::Empty)));
    assert_eq!(
        encode(&ReplicationFrame { frame: None }).as_ref(),
        &[0, 0, 0, 0]
    );
}

#[test]
fn garbage_bodies_never_panic() {
    let mut undecodable = 0;
    for seed in 1..=2_000 {
        let mut random = StdRng::seed_from_u64(seed);
        let body = random_bytes(&mut random, 64);
        let mut buffer = BytesMut::new();
        buffer.put_u32(u32::try_from(body.len()).expect("small"));
        buffer.extend_from_slice(&body);
        match decode(&mut buffer) {
            Ok(Some(_)) | Err(FrameError::Empty) => {}
            Err(FrameError::Undecodable(_)) => undecodable += 1,
            other => panic!("seed {seed}: unexpected result {other:?}"),
        }
    }
    assert!(undecodable > 0, "random bytes should mostly fail to decode");

    // Fully random streams, length prefix included.
    for seed in 1..=2_000 {
        let mut random = StdRng::seed_from_u64(seed);
        let mut buffer = BytesMut::from(&random_bytes(&mut random, 40)[..]);
        let mut codec = FrameCodec;
        while let Ok(Some(_)) = codec.decode(&mut buffer) {}
        let _ = codec.decode_eof(&mut buffer);
    }
}

#[test]
fn invalid_protobuf_is_undecodable() {
    // Field 1 (hello), wire type 2 (length-delimited), claiming 100 bytes but giving 1.
    let body = [0x0a, 100, 0];
    let mut buffer = BytesMut::new();
    buffer.put_u32(body.len() as u32);
    buffer.extend_from_slice(&body);
    let error = decode(&mut buffer).expect_err("bad protobuf");
    assert!(matches!(error, FrameError::Undecodable(_)));
    assert!(error.is_malformed());
}

#[test]
fn unexpected_kinds_are_named() {
    let ack = frame(Frame::Ack(Ack::default()));
    let error = expect_hello(ack.clone()).expect_err("an Ack is not a Hello");
    assert_eq!(
        error.to_string(),
        "malformed replication frame: expected Hello, got Ack"
    );
    assert!(matches!(
        expect_receiver_inbound(ack),
        Err(FrameError::Unexpected {
            actual: FrameKind::Ack,
            ..
        })
    ));
    let batch = frame(Frame::Batch(Batch::default()));
    assert!(matches!(
        expect_sender_inbound(batch),
        Err(FrameError::Unexpected {
            actual: FrameKind::Batch,
            ..
        })
    ));
    assert!(matches!(
        expect_sender_inbound(ReplicationFrame { frame: None }),
        Err(FrameError::Empty)
    ));
}

#[tokio::test]
async fn async_reader_reads_frames_then_clean_end() {
    let first = frame(Frame::Hello(Hello {
        protocol_version: 1,
        from_region: "a".into(),
        to_region: "b".into(),
    }));
    let second = frame(Frame::Ack(Ack {
        through_sequence: 5,
        stored: 1,
        duplicates: 2,
    }));
    let mut wire = encode(&first).to_vec();
    wire.extend_from_slice(&encode(&second));
    let mut reader = FrameReader::new(&wire[..]);
    assert_eq!(reader.next_frame().await.expect("first"), Some(first));
    assert_eq!(reader.next_frame().await.expect("second"), Some(second));
    assert_eq!(reader.next_frame().await.expect("end"), None);
}

#[tokio::test]
async fn async_reader_reports_truncation() {
    let wire = encode(&frame(Frame::Goodbye(Goodbye {
        reason: "bye".into(),
    })));
    let cut = &wire[..wire.len() - 1];
    let mut reader = FrameReader::new(cut);
    assert!(matches!(
        reader.next_frame().await,
        Err(FrameError::Truncated { .. })
    ));
}
