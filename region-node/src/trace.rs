//! Message traces: what happened to each message, in every region.
//!
//! The node notes events as they happen ([`Tracer`]: a copy arrived from
//! another region, a delivery, an acknowledgement, a move to the dead-letter
//! topic, a transaction check-back) without waiting for anything: an event
//! goes into a bounded channel, and one task ([`run`]) writes what gathered
//! every [`FLUSH_EVERY`] (or [`MAX_EVENTS`]) as one `TRACE` record per
//! topic, appended like any record (not waiting for the disk to sync beyond
//! the region's flush mode). Trace records replicate by the topic's policy
//! and storage indexes them by message, so the trace of a message can be
//! read in every region that holds it; they leave with the topic's
//! retention. A full channel drops events (counted and logged), never
//! delays a send, receive or ack.
//!
//! What the record and the log already say is not repeated as an event:
//! the message's record gives its send (producer, host, time) and its
//! storage here (queue, offset); a transaction's outcome record gives its
//! commit or rollback ([`crate::transactions`]).

use crate::grpc::NodeContext;
use crate::grpc::convert::now_ms;
use crate::storage::LogStore;
use meridian_proto::meridian::v1::{Record, RecordKind, TraceEvent, TraceEventKind, TraceEvents};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long events gather before they are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Most events written at once.
pub const MAX_EVENTS: usize = 4096;
/// Events waiting to be written; beyond, new ones are dropped.
const CHANNEL: usize = 65_536;

/// Notes trace events for the writer task; cheap to call on every request.
pub struct Tracer {
    region: String,
    events: mpsc::Sender<(String, TraceEvent)>,
    dropped: AtomicU64,
}

/// The receiving end of a [`Tracer`], for [`run`].
pub struct TraceEventsReceiver(mpsc::Receiver<(String, TraceEvent)>);

impl Tracer {
    /// A tracer for the node of `region`, and what [`run`] reads.
    pub fn new(region: &str) -> (Tracer, TraceEventsReceiver) {
        let (events, receiver) = mpsc::channel(CHANNEL);
        (
            Tracer {
                region: region.to_owned(),
                events,
                dropped: AtomicU64::new(0),
            },
            TraceEventsReceiver(receiver),
        )
    }

    /// Notes that `kind` happened here now to the message with
    /// `message_dedup_id` of `topic`.
    pub fn note(
        &self,
        topic: &str,
        message_dedup_id: &[u8],
        kind: TraceEventKind,
        group: &str,
        client_id: &str,
        attempt: u32,
    ) {
        self.send(
            topic,
            TraceEvent {
                message_dedup_id: message_dedup_id.to_vec(),
                kind: kind as i32,
                at_ms: now_ms(),
                region: self.region.clone(),
                group: group.to_owned(),
                client_id: client_id.to_owned(),
                attempt,
                from_region: String::new(),
            },
        );
    }

    /// Notes that a copy of the message arrived here from `from_region` at
    /// `at_ms` (taken before it was stored, so before any delivery of it).
    pub fn note_arrival(
        &self,
        topic: &str,
        message_dedup_id: &[u8],
        from_region: &str,
        at_ms: i64,
    ) {
        self.send(
            topic,
            TraceEvent {
                message_dedup_id: message_dedup_id.to_vec(),
                kind: TraceEventKind::Arrived as i32,
                at_ms,
                region: self.region.clone(),
                from_region: from_region.to_owned(),
                ..TraceEvent::default()
            },
        );
    }

    fn send(&self, topic: &str, event: TraceEvent) {
        if self.events.try_send((topic.to_owned(), event)).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "trace events dropped: the trace writer is behind");
            }
        }
    }
}

/// Writes the noted events until the node shuts down (then writes what is left).
pub async fn run<S: LogStore>(context: Arc<NodeContext<S>>, events: TraceEventsReceiver) {
    let mut events = events.0;
    loop {
        let first = tokio::select! {
            () = context.shutdown.cancelled() => None,
            first = events.recv() => first,
        };
        let Some(first) = first else {
            break;
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < MAX_EVENTS {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                () = context.shutdown.cancelled() => break,
                next = events.recv() => match next {
                    Some(next) => batch.push(next),
                    None => break,
                },
            }
        }
        write(&context, batch).await;
    }
    let mut rest = Vec::new();
    while let Ok(event) = events.try_recv() {
        rest.push(event);
    }
    if !rest.is_empty() {
        write(&context, rest).await;
    }
}

/// Appends `events` as one trace record per topic.
async fn write<S: LogStore>(context: &NodeContext<S>, events: Vec<(String, TraceEvent)>) {
    let mut by_topic: BTreeMap<String, Vec<TraceEvent>> = BTreeMap::new();
    for (topic, event) in events {
        by_topic.entry(topic).or_default().push(event);
    }
    let written_at_ms = now_ms();
    let records: Vec<Record> = by_topic
        .into_iter()
        .filter(|(topic, _)| context.topology.get().topic(topic).is_some())
        .map(|(topic, events)| Record {
            kind: RecordKind::Trace as i32,
            dedup_id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            origin_region: context.region.clone(),
            path: vec![context.region.clone()],
            trace: Some(TraceEvents {
                topic,
                events,
                written_at_ms,
            }),
            ..Record::default()
        })
        .collect();
    if records.is_empty() {
        return;
    }
    if let Err(error) = context.commit.append(records).await {
        tracing::warn!(
            error = %meridian_report::Report(&error),
            "trace events could not be written"
        );
    }
}
