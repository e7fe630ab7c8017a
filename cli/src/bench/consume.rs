//! `meridian bench consume` and `meridian bench latency`: the receiving side.
//!
//! **consume**: producers (16, not measured) first store `--messages`
//! messages; then `--concurrency` consumers of one consumer group each
//! receive batches of 32 (long polling) and acknowledge every batch in one
//! AckMessage call, until all were consumed. Reported: msgs/s consumed
//! (receive + ack), the latency of a receive-and-ack round (ms) and CPU per
//! message.
//!
//! **latency**: one producer sends `--rate` messages per second for the
//! measured time while consumers receive and acknowledge them; a message's
//! latency is from the start of its send to its delivery (same process and
//! clock: the send time travels in the message id). With `--cross-region`
//! the deployment has two regions joined by an emulated link of
//! `--link-latency-ms` one way: messages are sent in `near` and consumed in
//! `far`, so the figure includes replication.
//!
//! With `--scheduled N` (one region only for latency) the topic first
//! receives N scheduled messages due in 30 days (`super::scheduled`);
//! consumers count any of them delivered (none should be).

use super::scheduled::{self, Scheduled};
use super::{Flush, Latency, Target, histogram, latency_of, micros};
use crate::deployment::Deployment;
use crate::drill::client::{Client, Transport};
use anyhow::Context as _;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The consumer group the bench consumes with.
const GROUP: &str = "bench";
/// Messages per receive.
const BATCH: i32 = 32;
const INVISIBLE: Duration = Duration::from_secs(30);
const LONG_POLLING: Duration = Duration::from_secs(1);
/// How long consumers may take to drain what was sent, after the sends.
const DRAIN: Duration = Duration::from_secs(15);

/// `meridian bench consume`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumeArgs {
    /// Messages stored first, then consumed.
    #[arg(long, default_value_t = 20_000)]
    pub messages: u64,
    /// Body size, bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Consumers receiving at once (one consumer group).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// The flush mode of bench's deployment.
    #[arg(long, value_enum, default_value = "sync")]
    pub flush: Flush,
    /// Scheduled messages to load into the topic first: 64 B bodies, DELAY
    /// messages due in 30 days, in batched sends.
    #[arg(long, default_value_t = 0)]
    pub scheduled: u64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `meridian bench latency`.
#[derive(Debug, Clone, clap::Args)]
pub struct LatencyArgs {
    /// Messages sent per second.
    #[arg(long, default_value_t = 500)]
    pub rate: u64,
    /// Body size, bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Consumers receiving at once (one consumer group).
    #[arg(long, default_value_t = 2)]
    pub consumers: usize,
    /// Producers sharing `--rate`, each sending at `rate / producers` and
    /// waiting for each answer, so a slow answer delays only its own
    /// producer's next send.
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// How long the measured part lasts, seconds.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Sends before the measured part, not counted, seconds.
    #[arg(long, default_value_t = 2)]
    pub warmup_s: u64,
    /// Send in one region and consume in another, over an emulated link.
    #[arg(long)]
    pub cross_region: bool,
    /// One-way delay of that link, ms.
    #[arg(long, default_value_t = 40)]
    pub link_latency_ms: u32,
    /// Bandwidth of that link each way, kbit/s (default: unlimited); the
    /// report says what share of it the measured part used.
    #[arg(long)]
    pub link_bandwidth_kbps: Option<u64>,
    /// The flush mode of bench's deployment.
    #[arg(long, value_enum, default_value = "sync")]
    pub flush: Flush,
    /// Scheduled messages to load into the topic first: 64 B bodies, DELAY
    /// messages due in 30 days, in batched sends.
    #[arg(long, default_value_t = 0)]
    pub scheduled: u64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// What the emulated link near → far carried during the measured part of
/// `meridian bench latency --cross-region`.
#[derive(Debug, Serialize)]
pub struct LinkUse {
    /// The link's bandwidth each way, kbit/s; `None` for unlimited.
    pub bandwidth_kbps: Option<u64>,
    /// Bytes delivered near → far (replication frames and their QUIC
    /// packets' payload) while measured.
    pub bytes: u64,
    /// Those bytes per second, as kbit/s.
    pub kbps: f64,
    /// `kbps` as a share of `bandwidth_kbps`, percent.
    pub utilisation_percent: Option<f64>,
    /// Bytes waiting in the emulator near → far when sending ended (a
    /// link at its limit queues).
    pub queued_bytes_at_end: u64,
}

/// What `meridian bench consume` measured.
#[derive(Debug, Serialize)]
pub struct ConsumeReport {
    pub scenario: &'static str,
    pub size_bytes: usize,
    pub concurrency: usize,
    pub messages: u64,
    pub consumed: u64,
    pub duration_s: f64,
    pub messages_per_s: f64,
    /// One receive plus its ack, ms.
    pub round_ms: Latency,
    pub client_cpu_us_per_message: f64,
    pub node_cpu_us_per_message: Option<f64>,
    /// Scheduled messages loaded before the fill (`--scheduled`).
    pub scheduled_messages: u64,
    /// Their preload, and where they were after the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<Scheduled>,
}

/// What `meridian bench latency` measured.
#[derive(Debug, Serialize)]
pub struct LatencyReport {
    pub scenario: &'static str,
    /// `one region` or `near -> far over an emulated N ms link`.
    pub path: String,
    pub rate_per_s: u64,
    pub size_bytes: usize,
    pub sent: u64,
    pub delivered: u64,
    /// From the start of the send to the delivery, ms.
    pub latency_ms: Latency,
    /// The link near → far while measured (`--cross-region`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkUse>,
    /// Scheduled messages loaded before the warm-up (`--scheduled`).
    pub scheduled_messages: u64,
    /// Their preload, and where they were after the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<Scheduled>,
}

/// Runs `meridian bench consume` against bench's own one-region deployment.
pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    anyhow::ensure!(args.messages >= 1, "--messages must be at least 1");
    let directory = tempfile::Builder::new()
        .prefix("meridian-bench-")
        .tempdir()
        .context("create the bench's data directory")?;
    let mut deployment =
        super::start_own(directory.path(), args.flush, &["bench"], 0, None).await?;
    let router = deployment.topology().region("bench")?.router;
    let node_pid = deployment.pid("bench", "node");
    let db = directory.path().join("bench").join("node").join("db");
    let measured = async {
        let transport = super::own_transport(&deployment)?;
        let preloaded = preload(&transport, args.scheduled, router, node_pid, &db).await?;
        let (mut report, scheduled_seen) = run_consume(&args, &transport, router, node_pid).await?;
        if let Some(mut preloaded) = preloaded {
            preloaded.delivered = Some(scheduled_seen);
            let queued =
                scheduled::queued(&transport, router, super::BENCH_TOPIC, super::BENCH_QUEUES)
                    .await?;
            preloaded.set_queued(queued, args.messages);
            report.scheduled_messages = preloaded.messages;
            report.scheduled = Some(preloaded);
        }
        anyhow::Ok(report)
    }
    .await;
    deployment.shut_down().await;
    let report = measured?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "consume: {} messages of {} B stored, {} consumer(s), batches of {BATCH}{}",
            report.messages,
            report.size_bytes,
            report.concurrency,
            match report.scheduled_messages {
                0 => String::new(),
                scheduled => format!(", after {scheduled} scheduled messages"),
            }
        );
        println!(
            "  {} consumed in {:.2} s: {:.0} msgs/s",
            report.consumed, report.duration_s, report.messages_per_s
        );
        let round = &report.round_ms;
        println!(
            "  receive + ack ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            round.p50, round.p99, round.p999, round.max
        );
        if let Some(node) = report.node_cpu_us_per_message {
            println!(
                "  CPU per message: client {:.0} µs, node {node:.0} µs",
                report.client_cpu_us_per_message
            );
        }
        if let Some(scheduled) = &report.scheduled {
            println!("{}", scheduled.describe());
        }
    }
    Ok(())
}

/// `--scheduled count` into bench's topic through `router`, if any.
async fn preload(
    transport: &Transport,
    count: u64,
    router: SocketAddr,
    pid: Option<u32>,
    db: &std::path::Path,
) -> anyhow::Result<Option<Scheduled>> {
    if count == 0 {
        return Ok(None);
    }
    let preloaded = scheduled::preload(
        transport,
        router,
        super::BENCH_TOPIC,
        count,
        super::BENCH_QUEUES,
        Some(scheduled::OwnNode { pid, db }),
    )
    .await?;
    Ok(Some(preloaded))
}

/// The report and the scheduled messages the consumers received.
async fn run_consume(
    args: &ConsumeArgs,
    transport: &Transport,
    router: SocketAddr,
    node_pid: Option<u32>,
) -> anyhow::Result<(ConsumeReport, u64)> {
    // Fill the topic first (not measured).
    let target = Target::Meridian {
        access_point: router,
        topic: super::BENCH_TOPIC.to_owned(),
        transport: transport.clone(),
    };
    let remaining = Arc::new(AtomicU64::new(args.messages));
    let mut fillers = tokio::task::JoinSet::new();
    for index in 0..16 {
        let (target, remaining, body) = (
            target.clone(),
            Arc::clone(&remaining),
            vec![b'c'; args.size],
        );
        fillers.spawn(async move {
            let mut producer = super::Producer::connect(&target, index).await?;
            let mut sequence = 0_u64;
            while remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .is_ok()
            {
                sequence += 1;
                producer
                    .send(format!("fill-{index}-{sequence}"), body.clone())
                    .await?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(joined) = fillers.join_next().await {
        joined
            .context("a filling producer failed")?
            .map_err(|error| anyhow::anyhow!("fill the topic: {error}"))?;
    }

    let consumed = Arc::new(AtomicU64::new(0));
    // Scheduled messages delivered (none should be: they are due in 30 days).
    let scheduled_seen = Arc::new(AtomicU64::new(0));
    let (client_before, node_before) = (
        super::cpu_ticks(None),
        node_pid.and_then(|pid| super::cpu_ticks(Some(pid))),
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    let mut consumers = tokio::task::JoinSet::new();
    for index in 0..args.concurrency {
        let (consumed, scheduled_seen, total, transport) = (
            Arc::clone(&consumed),
            Arc::clone(&scheduled_seen),
            args.messages,
            transport.clone(),
        );
        consumers.spawn(async move {
            let mut client = Client::new(
                router,
                format!("bench-consumer-{index}"),
                super::BENCH_TOPIC,
                transport,
            );
            let mut rounds = histogram();
            while consumed.load(Ordering::Relaxed) < total && Instant::now() < deadline {
                let began = Instant::now();
                let Ok(deliveries) = client.receive(GROUP, BATCH, INVISIBLE, LONG_POLLING).await
                else {
                    continue;
                };
                if deliveries.is_empty() {
                    continue;
                }
                let outcomes = client.ack(GROUP, &deliveries).await;
                rounds.saturating_record(micros(began.elapsed()));
                let mut acked = 0;
                for (delivery, outcome) in deliveries.iter().zip(outcomes) {
                    if scheduled::is_scheduled(&delivery.message_id) {
                        scheduled_seen.fetch_add(1, Ordering::Relaxed);
                    } else if outcome.is_ok() {
                        acked += 1;
                    }
                }
                consumed.fetch_add(acked, Ordering::Relaxed);
            }
            rounds
        });
    }
    let mut rounds = histogram();
    while let Some(joined) = consumers.join_next().await {
        rounds
            .add(joined.context("a consumer failed")?)
            .context("merge histograms")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let consumed = consumed.load(Ordering::Relaxed);
    let (client_after, node_after) = (
        super::cpu_ticks(None),
        node_pid.and_then(|pid| super::cpu_ticks(Some(pid))),
    );
    let report = ConsumeReport {
        scenario: "consume",
        size_bytes: args.size,
        concurrency: args.concurrency,
        messages: args.messages,
        consumed,
        duration_s: elapsed,
        messages_per_s: consumed as f64 / elapsed.max(f64::EPSILON),
        round_ms: latency_of(&rounds),
        client_cpu_us_per_message: super::per_message(client_before, client_after, consumed)
            .unwrap_or(0.0),
        node_cpu_us_per_message: super::per_message(node_before, node_after, consumed),
        scheduled_messages: 0,
        scheduled: None,
    };
    Ok((report, scheduled_seen.load(Ordering::Relaxed)))
}

/// Runs `meridian bench latency` against bench's own deployment.
pub async fn latency(args: LatencyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate >= 1, "--rate must be at least 1");
    anyhow::ensure!(args.consumers >= 1, "--consumers must be at least 1");
    anyhow::ensure!(
        args.scheduled == 0 || !args.cross_region,
        "--scheduled is for one region: with --cross-region the backlog's replication \
         would overlap the measured part"
    );
    anyhow::ensure!(
        args.link_bandwidth_kbps.is_none() || args.cross_region,
        "--link-bandwidth-kbps shapes the link of --cross-region; one region has no link"
    );
    anyhow::ensure!(
        args.link_bandwidth_kbps != Some(0),
        "--link-bandwidth-kbps must be at least 1"
    );
    let directory = tempfile::Builder::new()
        .prefix("meridian-bench-")
        .tempdir()
        .context("create the bench's data directory")?;
    let regions: &[&str] = if args.cross_region {
        &["near", "far"]
    } else {
        &["near"]
    };
    let mut deployment = super::start_own(
        directory.path(),
        args.flush,
        regions,
        args.link_latency_ms,
        args.link_bandwidth_kbps,
    )
    .await?;
    let send_to = deployment.topology().region("near")?.router;
    let consume_at = deployment
        .topology()
        .region(regions[regions.len() - 1])?
        .router;
    let db = directory.path().join("near").join("node").join("db");
    let node_pid = deployment.pid("near", "node");
    let measured = async {
        let transport = super::own_transport(&deployment)?;
        let preloaded = preload(&transport, args.scheduled, send_to, node_pid, &db).await?;
        let (mut report, stored, scheduled_seen) =
            run_latency(&args, &transport, send_to, consume_at, &deployment).await?;
        if let Some(mut preloaded) = preloaded {
            preloaded.delivered = Some(scheduled_seen);
            let queued =
                scheduled::queued(&transport, send_to, super::BENCH_TOPIC, super::BENCH_QUEUES)
                    .await?;
            preloaded.set_queued(queued, stored);
            report.scheduled_messages = preloaded.messages;
            report.scheduled = Some(preloaded);
        }
        anyhow::Ok(report)
    }
    .await;
    deployment.shut_down().await;
    let report = measured?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "latency: {} msgs/s of {} B, {}",
            report.rate_per_s, report.size_bytes, report.path
        );
        println!("  {} sent, {} delivered", report.sent, report.delivered);
        let latency = &report.latency_ms;
        println!(
            "  send to delivery ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            latency.p50, latency.p99, latency.p999, latency.max
        );
        if let Some(link) = &report.link {
            println!(
                "  link near -> far: {:.0} kbit/s{}, {} B queued at the end",
                link.kbps,
                match (link.bandwidth_kbps, link.utilisation_percent) {
                    (Some(bandwidth), Some(share)) =>
                        format!(" of {bandwidth} kbit/s ({share:.1} %)"),
                    _ => " (unlimited link)".to_owned(),
                },
                link.queued_bytes_at_end
            );
        }
        if let Some(scheduled) = &report.scheduled {
            println!("{}", scheduled.describe());
        }
    }
    Ok(())
}

/// The report, every message the producer stored (warm-up included) and
/// the scheduled messages the consumers received.
async fn run_latency(
    args: &LatencyArgs,
    transport: &Transport,
    send_to: SocketAddr,
    consume_at: SocketAddr,
    deployment: &Deployment,
) -> anyhow::Result<(LatencyReport, u64, u64)> {
    let link_stats = || deployment.link_stats("near", "far");
    let base = Instant::now();
    let measure_from = base + Duration::from_secs(args.warmup_s);
    let end = measure_from + Duration::from_secs(args.duration_s);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let scheduled_seen = Arc::new(AtomicU64::new(0));
    let mut stored = 0_u64;

    let mut consumers = tokio::task::JoinSet::new();
    for index in 0..args.consumers {
        let (stop, delivered, scheduled_seen, transport) = (
            Arc::clone(&stop),
            Arc::clone(&delivered),
            Arc::clone(&scheduled_seen),
            transport.clone(),
        );
        consumers.spawn(async move {
            let mut client = Client::new(
                consume_at,
                format!("bench-consumer-{index}"),
                super::BENCH_TOPIC,
                transport,
            );
            let mut latencies = histogram();
            while !stop.load(Ordering::Relaxed) {
                let Ok(deliveries) = client.receive(GROUP, BATCH, INVISIBLE, LONG_POLLING).await
                else {
                    continue;
                };
                let now = base.elapsed();
                for delivery in &deliveries {
                    if scheduled::is_scheduled(&delivery.message_id) {
                        scheduled_seen.fetch_add(1, Ordering::Relaxed);
                    }
                    // `lat-<µs since base>-<sequence>`, measured ones only.
                    let sent_at = delivery
                        .message_id
                        .strip_prefix("lat-")
                        .and_then(|rest| rest.split('-').next())
                        .and_then(|micros| micros.parse::<u64>().ok());
                    if let Some(sent_at) = sent_at {
                        latencies.saturating_record(micros(now).saturating_sub(sent_at));
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if !deliveries.is_empty() {
                    client.ack(GROUP, &deliveries).await;
                }
            }
            latencies
        });
    }

    // Producer `index` sends at ticks `index`, `index + producers`, … of
    // the whole rate's schedule.
    let producers = args.producers.max(1);
    let interval = Duration::from_secs(1) / u32::try_from(args.rate).unwrap_or(u32::MAX);
    let bodies = Arc::new(super::random_bodies(args.size));
    let mut sending = tokio::task::JoinSet::new();
    for index in 0..producers {
        let (sent, transport, bodies) = (Arc::clone(&sent), transport.clone(), Arc::clone(&bodies));
        sending.spawn(async move {
            let mut producer = Client::new(
                send_to,
                format!("bench-producer-{index}"),
                super::BENCH_TOPIC,
                transport,
            );
            let first = tokio::time::Instant::from_std(base) + interval * index as u32;
            let mut ticker = tokio::time::interval_at(first, interval * producers as u32);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut stored = 0_u64;
            let mut sequence = 0_u64;
            // At least one send, even when a loaded machine starts this task
            // late in a short run.
            loop {
                ticker.tick().await;
                sequence += 1;
                let began = Instant::now();
                // Warm-up sends carry no time, so they are not counted.
                let message_id = if began >= measure_from {
                    format!(
                        "lat-{}-{index}.{sequence}",
                        micros(began.duration_since(base))
                    )
                } else {
                    format!("warm-{index}.{sequence}")
                };
                let body = super::pick_body(&bodies);
                let stored_one = match producer.send(message_id, "bench", body).await {
                    Ok(_) => true,
                    Err(error) => {
                        tracing::warn!(producer = index, %error, "bench latency: a send failed");
                        false
                    }
                };
                if stored_one {
                    stored += 1;
                }
                if stored_one && began >= measure_from {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                if Instant::now() >= end {
                    break;
                }
            }
            stored
        });
    }
    tokio::time::sleep_until(tokio::time::Instant::from_std(measure_from)).await;
    let link_at_start = (Instant::now(), link_stats());
    while let Some(joined) = sending.join_next().await {
        stored += joined.context("a producer failed")?;
    }
    let link_at_end = (Instant::now(), link_stats());
    let drain_until = Instant::now() + DRAIN;
    while delivered.load(Ordering::Relaxed) < sent.load(Ordering::Relaxed)
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The bytes the measured messages took over the link (read after the
    // drain, so the last of them have arrived), per second of sending;
    // the queue as sending ended.
    let link = match (link_at_start, link_at_end) {
        ((started, Some(first)), (ended, Some(at_end))) => link_stats().map(|last| {
            let seconds = ended
                .duration_since(started)
                .as_secs_f64()
                .max(f64::EPSILON);
            let bytes = last.bytes.saturating_sub(first.bytes);
            let kbps = bytes as f64 * 8.0 / 1000.0 / seconds;
            LinkUse {
                bandwidth_kbps: args.link_bandwidth_kbps,
                bytes,
                kbps,
                utilisation_percent: args
                    .link_bandwidth_kbps
                    .map(|bandwidth| kbps * 100.0 / bandwidth as f64),
                queued_bytes_at_end: at_end.queued_bytes,
            }
        }),
        _ => None,
    };
    stop.store(true, Ordering::Relaxed);
    let mut latencies = histogram();
    while let Some(joined) = consumers.join_next().await {
        latencies
            .add(joined.context("a consumer failed")?)
            .context("merge histograms")?;
    }
    let report = LatencyReport {
        scenario: "latency",
        path: if args.cross_region {
            format!(
                "sent in near, consumed in far, over an emulated {} ms link",
                args.link_latency_ms
            )
        } else {
            "one region".to_owned()
        },
        rate_per_s: args.rate,
        size_bytes: args.size,
        sent: sent.load(Ordering::Relaxed),
        delivered: delivered.load(Ordering::Relaxed),
        latency_ms: latency_of(&latencies),
        link,
        scheduled_messages: 0,
        scheduled: None,
    };
    Ok((report, stored, scheduled_seen.load(Ordering::Relaxed)))
}
