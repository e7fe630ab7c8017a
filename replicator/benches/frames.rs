//! Micro-benchmark of the replication frame codec: a Batch frame of 64
//! records of 1 KiB messages, encoded (length prefix + protobuf) and
//! decoded from a buffer, as the sender and receiver do per batch.
//!
//! `cargo bench -p meridian-replicator --bench frames`; figures in
//! docs/benchmarks.md.

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meridian_proto::meridian::v1::replication_frame::Frame;
use meridian_proto::meridian::v1::{Batch, Message, Record, RecordKind};
use meridian_replicator::frame::{decode, encode, frame};
use std::hint::black_box;

fn batch(records: u64, body: usize) -> meridian_proto::meridian::v1::ReplicationFrame {
    frame(Frame::Batch(Batch {
        records: (1..=records)
            .map(|sequence| Record {
                sequence,
                kind: RecordKind::Message as i32,
                dedup_id: vec![7; 16],
                origin_region: "eu-west".to_owned(),
                origin_sequence: sequence,
                path: vec!["eu-west".to_owned()],
                message: Some(Message {
                    client_message_id: format!("01BENCH{sequence:024X}"),
                    topic: "orders".to_owned(),
                    tag: Some("paid".to_owned()),
                    keys: vec![format!("order-{sequence}")],
                    born_timestamp_ms: 1_796_000_000_000,
                    store_timestamp_ms: 1_796_000_000_000,
                    body: vec![b'x'; body],
                    ..Message::default()
                }),
                ..Record::default()
            })
            .collect(),
        through_sequence: records,
    }))
}

fn frames(c: &mut Criterion) {
    let frame = batch(64, 1024);
    let encoded = encode(&frame);
    let mut group = c.benchmark_group("replication frame");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("encode a batch of 64 × 1 KiB", |b| {
        b.iter(|| encode(black_box(&frame)))
    });
    group.bench_function("decode a batch of 64 × 1 KiB", |b| {
        b.iter(|| {
            let mut buffer = BytesMut::from(&encoded[..]);
            decode(black_box(&mut buffer))
                .expect("valid")
                .expect("whole")
        })
    });
    group.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
