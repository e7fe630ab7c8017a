//! Micro-benchmarks of the node's hot paths below the network: the record
//! codec, storage appends and queue reads (RocksDB, no fsync: the CPU and
//! RocksDB cost, not the disk's), the timer index with many messages
//! pending, and the consumer filter evaluator (tags and SQL92).
//!
//! `cargo bench -p meridian-region-node --bench storage`; figures and the
//! machine they came from are in docs/benchmarks.md.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use meridian_region_node::bench_support::{
    BenchFilter, BenchStore, decode_record, encode_record, message_record,
};
use std::hint::black_box;

const BODY: usize = 1024;
const BATCH: usize = 64;

fn codec(c: &mut Criterion) {
    let record = message_record(1, "orders", 0, BODY, None);
    let encoded = encode_record(&record);
    let mut group = c.benchmark_group("record codec");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("encode 1 KiB message", |b| {
        b.iter(|| encode_record(black_box(&record)))
    });
    group.bench_function("decode 1 KiB message", |b| {
        b.iter(|| decode_record(black_box(&encoded)).expect("decodes"))
    });
    group.finish();
}

fn append_and_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = BenchStore::open(dir.path(), false).expect("open");
    let mut n = 0_u64;
    // Messages to read even when only the read benchmark runs.
    for _ in 0..100 {
        let records = (0..BATCH)
            .map(|index| {
                n += 1;
                message_record(n, "orders", (index % 8) as i32, BODY, None)
            })
            .collect();
        store.append(records).expect("append");
    }
    let mut group = c.benchmark_group("storage");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("append 64 × 1 KiB messages, one batch", |b| {
        b.iter_batched(
            || {
                (0..BATCH)
                    .map(|index| {
                        n += 1;
                        message_record(n, "orders", (index % 8) as i32, BODY, None)
                    })
                    .collect::<Vec<_>>()
            },
            |records| store.append(records).expect("append"),
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(32));
    group.bench_function("read 32 messages of a queue", |b| {
        let mut offset = 0_u64;
        b.iter(|| {
            let read = store.read_queue("orders", 0, offset, 32).expect("read");
            offset = if read == 32 { offset + 32 } else { 0 };
            read
        })
    });
    group.finish();
}

fn timers(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = BenchStore::open(dir.path(), false).expect("open");
    // 100,000 delay messages due over a day, far in the future.
    let far = 4_000_000_000_000_i64;
    for chunk in 0..100_u64 {
        let records = (0..1000_u64)
            .map(|index| {
                let n = chunk * 1000 + index;
                message_record(n, "later", 0, 64, Some(far + (n as i64) * 864))
            })
            .collect();
        store.append(records).expect("append");
    }
    let mut n = 1_000_000_u64;
    let mut group = c.benchmark_group("timer index");
    group.bench_function("earliest due of 100,000 pending", |b| {
        b.iter(|| store.next_timer_due().expect("due"))
    });
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(
        "move 64 due messages to their queue, 100,000 pending",
        |b| {
            b.iter_batched(
                || {
                    let records = (0..BATCH)
                        .map(|_| {
                            n += 1;
                            message_record(n, "now", 0, 64, Some(1))
                        })
                        .collect();
                    store.append(records).expect("append");
                },
                |()| store.enqueue_due(2, BATCH).expect("enqueue"),
                BatchSize::SmallInput,
            )
        },
    );
    group.finish();
}

fn filters(c: &mut Criterion) {
    let record = message_record(42, "orders", 0, BODY, None);
    let tags = BenchFilter::parse("new || paid", false).expect("tags");
    let sql = BenchFilter::parse(
        "amount > 10 AND region IN ('eu-west', 'us-east') AND TAGS = 'paid'",
        true,
    )
    .expect("sql");
    let mut group = c.benchmark_group("filter");
    group.bench_function("tag expression a || b", |b| {
        b.iter(|| tags.matches(black_box(&record)))
    });
    group.bench_function("SQL92, three conditions", |b| {
        b.iter(|| sql.matches(black_box(&record)))
    });
    group.bench_function("parse SQL92", |b| {
        b.iter(|| {
            BenchFilter::parse(
                black_box("amount > 10 AND region IN ('eu-west', 'us-east') AND TAGS = 'paid'"),
                true,
            )
            .is_ok()
        })
    });
    group.finish();
}

criterion_group!(benches, codec, append_and_read, timers, filters);
criterion_main!(benches);
