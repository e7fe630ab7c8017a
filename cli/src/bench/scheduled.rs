//! `--scheduled N`: a backlog of scheduled (DELAY) messages under the load.
//!
//! Before its warm-up, a bench run with `--scheduled N` sends N messages of
//! [`BODY_BYTES`] bytes to the same topic, each with a delivery time
//! [`DUE_IN_DAYS`] days ahead (RocketMQ allows 40), spread over the topic's
//! queues, in SendMessage requests of [`PER_REQUEST`] messages from
//! [`SENDERS`] concurrent senders, each waiting for every answer. The node
//! keeps them in its timer index until they are due, so the measured part
//! that follows runs exactly as without the flag, beside a million-message
//! backlog.
//!
//! After the run, bench checks that the backlog stayed where it should:
//! consumers count any scheduled message delivered to them (none should
//! be: they are due in a month), and one probe send to each queue of the
//! topic reads the queue's next offset, so the messages in the queues can be
//! compared with the other messages bench stored. Equal means none of the N
//! joined a queue.

use crate::drill::client::Transport;
use anyhow::Context as _;
use meridian_face::access::SignedChannel;
use meridian_proto::prost_types;
use meridian_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use meridian_proto::rocketmq::v2::{
    Code, Encoding, Message, MessageType, QueryRouteRequest, Resource, SendMessageRequest,
    SystemProperties,
};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The message id of every scheduled message starts with this.
pub(super) const ID_PREFIX: &str = "sched-";
/// Body of a scheduled message, bytes.
pub(super) const BODY_BYTES: usize = 64;
/// How far ahead the first scheduled message is due, days.
pub(super) const DUE_IN_DAYS: u64 = 30;
/// Messages per SendMessage request.
const PER_REQUEST: u64 = 256;
/// Senders at once, one connection each.
const SENDERS: usize = 8;
/// Tries of one request (a retry after a timeout is deduplicated by the
/// node: same message id and body).
const TRIES: u32 = 3;
/// Deadline of one request.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const CLIENT_ID_HEADER: &str = "x-mq-client-id";
const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// After the preload the node counts as settled (done flushing and
/// compacting what it just wrote) once it used at most this many CPU ticks
/// (1/100 s) in each of [`SETTLE_WINDOWS`] one-second windows in a row...
const SETTLE_IDLE_TICKS: u64 = 5;
const SETTLE_WINDOWS: usize = 3;
/// ... or after this long, whichever comes first.
const SETTLE_MAX: Duration = Duration::from_secs(120);

/// The scheduled backlog of a run and what became of it.
#[derive(Debug, Default, Serialize)]
pub struct Scheduled {
    /// Scheduled messages the node acknowledged before the warm-up.
    pub messages: u64,
    /// Their delivery times were this many days ahead (1 ms apart).
    pub due_in_days: u64,
    pub body_bytes: usize,
    /// How long sending them took, s.
    pub preload_s: f64,
    pub preload_messages_per_s: f64,
    /// How long the node then took to go idle (own deployment only), s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settle_s: Option<f64>,
    /// Whether it went idle before bench stopped waiting (120 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled: Option<bool>,
    /// Bytes of the node's RocksDB directory right after the preload (own
    /// deployment only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_bytes_after_preload: Option<u64>,
    /// Messages in the topic's queues after the run, read by one probe send
    /// to each queue (own deployment only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued_after_run: Option<u64>,
    /// The messages other than the scheduled ones bench stored in the topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub others_stored: Option<u64>,
    /// `queued_after_run - others_stored`: scheduled messages that joined a
    /// queue (0 when every one is still waiting in the timer index).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_queues: Option<u64>,
    /// Scheduled messages the consumers received (consume and latency).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u64>,
}

impl Scheduled {
    /// Records what the queue probe found, given the other messages bench
    /// stored in the topic.
    pub(super) fn set_queued(&mut self, queued: u64, others_stored: u64) {
        self.queued_after_run = Some(queued);
        self.others_stored = Some(others_stored);
        self.in_queues = Some(queued.saturating_sub(others_stored));
    }

    /// One line for the text report.
    pub(super) fn describe(&self) -> String {
        let mut line = format!(
            "scheduled: {} messages of {} B due in {} days, preloaded in {:.1} s ({:.0} msgs/s)",
            self.messages,
            self.body_bytes,
            self.due_in_days,
            self.preload_s,
            self.preload_messages_per_s
        );
        if let Some(bytes) = self.disk_bytes_after_preload {
            line.push_str(&format!(
                ", node's RocksDB {:.1} MB after it",
                bytes as f64 / 1e6
            ));
        }
        if let (Some(seconds), Some(settled)) = (self.settle_s, self.settled) {
            line.push_str(&format!(
                "; the node {} {seconds:.1} s later",
                if settled {
                    "was idle"
                } else {
                    "was still busy (bench stopped waiting)"
                }
            ));
        }
        if let (Some(queued), Some(others), Some(in_queues)) =
            (self.queued_after_run, self.others_stored, self.in_queues)
        {
            line.push_str(&format!(
                "\n  after the run: {queued} messages in the topic's queues for {others} others \
                 stored: {in_queues} scheduled message(s) in a queue"
            ));
        }
        if let Some(delivered) = self.delivered {
            line.push_str(&format!(
                "\n  scheduled messages delivered to the consumers: {delivered}"
            ));
        }
        line
    }
}

/// Whether a delivered message is one of the scheduled backlog.
pub(super) fn is_scheduled(message_id: &str) -> bool {
    message_id.starts_with(ID_PREFIX)
}

/// The next request's share of `0..total` once `claimed` messages were
/// handed out: at most `per_request` of them, `None` when all were.
fn claim(claimed: u64, total: u64, per_request: u64) -> Option<Range<u64>> {
    (claimed < total).then(|| claimed..claimed.saturating_add(per_request).min(total))
}

/// Scheduled message number `index`: id `sched-<index>`, queue `index`
/// modulo `queues`, due `first_due_ms + index` ms.
fn message(topic: &str, index: u64, queues: u16, first_due_ms: i64, body: &[u8]) -> Message {
    let due_ms = first_due_ms.saturating_add(i64::try_from(index).unwrap_or(i64::MAX));
    Message {
        topic: Some(resource(topic)),
        user_properties: HashMap::new(),
        system_properties: Some(SystemProperties {
            tag: Some("scheduled".to_owned()),
            message_id: format!("{ID_PREFIX}{index}"),
            body_encoding: Encoding::Identity as i32,
            message_type: MessageType::Delay as i32,
            queue_id: i32::try_from(index % u64::from(queues.max(1))).unwrap_or(0),
            born_timestamp: Some(timestamp(now_ms())),
            born_host: "meridian-bench".to_owned(),
            delivery_timestamp: Some(timestamp(due_ms)),
            ..SystemProperties::default()
        }),
        body: body.to_vec(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

fn resource(name: &str) -> Resource {
    Resource {
        resource_namespace: String::new(),
        name: name.to_owned(),
    }
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = "bench-scheduler".parse() {
        request.metadata_mut().insert(CLIENT_ID_HEADER, value);
    }
    request.set_timeout(CALL_TIMEOUT);
    request
}

fn connect(
    transport: &Transport,
    endpoint: &str,
) -> anyhow::Result<MessagingServiceClient<SignedChannel>> {
    transport
        .messaging(endpoint, Duration::from_secs(1))
        .map_err(anyhow::Error::msg)
}

/// The endpoint the topic's route names (what the official clients send to).
async fn route(
    transport: &Transport,
    access_point: SocketAddr,
    topic: &str,
) -> anyhow::Result<String> {
    let response = connect(transport, &access_point.to_string())?
        .query_route(request(QueryRouteRequest {
            topic: Some(resource(topic)),
            endpoints: None,
        }))
        .await
        .context("QueryRoute")?
        .into_inner();
    check(response.status.as_ref(), "QueryRoute")?;
    response
        .message_queues
        .iter()
        .filter_map(|queue| queue.broker.as_ref()?.endpoints.as_ref())
        .flat_map(|endpoints| endpoints.addresses.iter())
        .map(|address| format!("{}:{}", address.host, address.port))
        .next()
        .context("QueryRoute: the route names no endpoint")
}

fn check(status: Option<&meridian_proto::rocketmq::v2::Status>, rpc: &str) -> anyhow::Result<()> {
    match status {
        Some(status) if status.code() == Code::Ok => Ok(()),
        Some(status) => anyhow::bail!("{rpc}: {:?} {}", status.code(), status.message),
        None => anyhow::bail!("{rpc}: an answer without status"),
    }
}

/// Where bench runs the node itself: its process and RocksDB directory.
pub(super) struct OwnNode<'a> {
    pub pid: Option<u32>,
    pub db: &'a std::path::Path,
}

/// Sends `count` scheduled messages to `topic` through `access_point`
/// (spread over `queues` queues), with a progress bar; when bench runs the
/// node, measures its data afterwards and waits for it to go idle.
pub(super) async fn preload(
    transport: &Transport,
    access_point: SocketAddr,
    topic: &str,
    count: u64,
    queues: u16,
    own: Option<OwnNode<'_>>,
) -> anyhow::Result<Scheduled> {
    let endpoint = route(transport, access_point, topic).await?;
    let first_due_ms = now_ms().saturating_add(
        i64::try_from(DUE_IN_DAYS)
            .unwrap_or(i64::MAX)
            .saturating_mul(DAY_MS),
    );
    let claimed = Arc::new(AtomicU64::new(0));
    let stored = Arc::new(AtomicU64::new(0));
    let progress = indicatif::ProgressBar::new(count);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} scheduled messages  {per_sec}  {elapsed}",
    ) {
        progress.set_style(style);
    }
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..SENDERS {
        let (claimed, stored, progress) =
            (Arc::clone(&claimed), Arc::clone(&stored), progress.clone());
        let (topic, mut client) = (topic.to_owned(), connect(transport, &endpoint)?);
        senders.spawn(async move {
            let body = vec![b's'; BODY_BYTES];
            loop {
                let from = claimed.fetch_add(PER_REQUEST, Ordering::Relaxed);
                let Some(range) = claim(from, count, PER_REQUEST) else {
                    return Ok::<(), anyhow::Error>(());
                };
                let messages: Vec<Message> = range
                    .clone()
                    .map(|index| message(&topic, index, queues, first_due_ms, &body))
                    .collect();
                let mut tries = 0;
                let response = loop {
                    tries += 1;
                    let answer = client
                        .send_message(request(SendMessageRequest {
                            messages: messages.clone(),
                        }))
                        .await;
                    match answer {
                        Ok(response) => break response.into_inner(),
                        Err(status) if tries < TRIES => {
                            tracing::debug!(%status, "scheduled batch failed; trying again");
                        }
                        Err(status) => {
                            return Err(anyhow::anyhow!(
                                "SendMessage of scheduled messages {range:?}: {:?} {}",
                                status.code(),
                                status.message()
                            ));
                        }
                    }
                };
                for entry in &response.entries {
                    check(entry.status.as_ref(), "SendMessage (scheduled)")?;
                }
                anyhow::ensure!(
                    response.entries.len() == messages.len(),
                    "SendMessage answered {} entries for {} scheduled messages",
                    response.entries.len(),
                    messages.len()
                );
                let sent = range.end - range.start;
                stored.fetch_add(sent, Ordering::Relaxed);
                progress.inc(sent);
            }
        });
    }
    while let Some(joined) = senders.join_next().await {
        joined.context("a scheduled-message sender failed")??;
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let messages = stored.load(Ordering::Relaxed);
    let mut scheduled = Scheduled {
        messages,
        due_in_days: DUE_IN_DAYS,
        body_bytes: BODY_BYTES,
        preload_s: seconds,
        preload_messages_per_s: messages as f64 / seconds.max(f64::EPSILON),
        ..Scheduled::default()
    };
    if let Some(own) = own {
        scheduled.disk_bytes_after_preload = Some(super::directory_bytes(own.db));
        if let Some(pid) = own.pid {
            let (waited, settled) = settle(pid).await;
            scheduled.settle_s = Some(waited.as_secs_f64());
            scheduled.settled = Some(settled);
        }
    }
    Ok(scheduled)
}

/// Waits until process `pid` is idle (see [`SETTLE_IDLE_TICKS`]), at most
/// [`SETTLE_MAX`]: how long it waited, and whether the process went idle.
async fn settle(pid: u32) -> (Duration, bool) {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message("waiting for the node to finish writing the scheduled messages");
    let started = Instant::now();
    let mut windows = Vec::new();
    let mut before = super::cpu_ticks(Some(pid));
    while started.elapsed() < SETTLE_MAX {
        tokio::time::sleep(Duration::from_secs(1)).await;
        spinner.tick();
        let now = super::cpu_ticks(Some(pid));
        let (Some(earlier), Some(later)) = (before, now) else {
            break;
        };
        windows.push(later.saturating_sub(earlier));
        before = now;
        if idle(&windows) {
            spinner.finish_and_clear();
            return (started.elapsed(), true);
        }
    }
    spinner.finish_and_clear();
    (started.elapsed(), false)
}

/// Whether the last [`SETTLE_WINDOWS`] CPU samples (ticks per window) are
/// all at most [`SETTLE_IDLE_TICKS`].
fn idle(windows: &[u64]) -> bool {
    windows.len() >= SETTLE_WINDOWS
        && windows[windows.len() - SETTLE_WINDOWS..]
            .iter()
            .all(|ticks| *ticks <= SETTLE_IDLE_TICKS)
}

/// Messages in the queues `0..queues` of `topic`: one NORMAL probe send to
/// each queue, whose answer carries the offset it took (the queue's length
/// before it).
pub(super) async fn queued(
    transport: &Transport,
    access_point: SocketAddr,
    topic: &str,
    queues: u16,
) -> anyhow::Result<u64> {
    let mut client = connect(transport, &route(transport, access_point, topic).await?)?;
    let mut total = 0;
    for queue_id in 0..queues {
        let mut probe = message(topic, 0, 1, 0, b"probe");
        if let Some(properties) = probe.system_properties.as_mut() {
            properties.message_id = format!("probe-{}", uuid::Uuid::now_v7().simple());
            properties.message_type = MessageType::Normal as i32;
            properties.delivery_timestamp = None;
            properties.queue_id = i32::from(queue_id);
            properties.tag = Some("probe".to_owned());
        }
        let response = client
            .send_message(request(SendMessageRequest {
                messages: vec![probe],
            }))
            .await
            .context("SendMessage (queue probe)")?
            .into_inner();
        let entry = response
            .entries
            .first()
            .context("SendMessage (queue probe): no entry")?;
        check(entry.status.as_ref(), "SendMessage (queue probe)")?;
        total += u64::try_from(entry.offset).unwrap_or(0);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_cover_every_message_once_in_requests_of_at_most_the_size() {
        for (total, per) in [(0, 256), (1, 256), (256, 256), (1_000_000, 256), (1_000, 7)] {
            let mut covered = 0;
            let mut claimed = 0;
            while let Some(range) = claim(claimed, total, per) {
                assert_eq!(range.start, covered, "no gap, no overlap");
                assert!(range.end > range.start && range.end - range.start <= per);
                covered = range.end;
                claimed += per;
            }
            assert_eq!(covered, total);
        }
        // Senders that overshoot (fetch_add past the end) get nothing.
        assert_eq!(claim(1_024, 1_000, 256), None);
    }

    #[test]
    fn a_scheduled_message_is_a_delay_message_due_later_in_its_queue() {
        let first_due_ms = 1_700_000_000_123;
        let message = message("bench", 11, 8, first_due_ms, &[b's'; BODY_BYTES]);
        let properties = message.system_properties.expect("system properties");
        assert_eq!(properties.message_type, MessageType::Delay as i32);
        assert_eq!(properties.queue_id, 3);
        assert!(is_scheduled(&properties.message_id));
        assert!(!is_scheduled("bench-0-1"));
        let due = properties.delivery_timestamp.expect("a delivery time");
        assert_eq!((due.seconds, due.nanos), (1_700_000_000, 134_000_000));
        assert_eq!(message.body.len(), BODY_BYTES);
        assert_eq!(message.topic.expect("topic").name, "bench");
    }

    #[test]
    fn the_node_is_idle_after_enough_quiet_windows_in_a_row() {
        assert!(!idle(&[]));
        assert!(!idle(&[0, 0]));
        assert!(idle(&[90, 80, 0, 5, 1]));
        assert!(!idle(&[0, 0, 0, 6]));
        assert!(!idle(&[0, 0, 40, 0, 0]));
    }

    #[test]
    fn queued_beyond_the_others_counts_as_scheduled_in_queues() {
        let mut scheduled = Scheduled::default();
        scheduled.set_queued(20_000, 20_000);
        assert_eq!(scheduled.in_queues, Some(0));
        scheduled.set_queued(20_010, 20_000);
        assert_eq!(scheduled.in_queues, Some(10));
        scheduled.set_queued(5, 20_000);
        assert_eq!(scheduled.in_queues, Some(0));
    }
}
