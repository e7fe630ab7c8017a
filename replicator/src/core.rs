//! The sending side of a replication link as a state machine without I/O.
//!
//! [`SenderCore`] owns everything a link must get right: which local sequences
//! have been queued, sent and acknowledged, the window of batches in flight,
//! the checkpoint to persist, and what to send again after a reconnect (all
//! that lies after the acknowledged sequence). The quinn/tonic layer in
//! `sender.rs` only moves bytes: it feeds tail batches in with
//! [`SenderCore::push_tail`], writes what [`SenderCore::poll_transmit`] hands
//! out, reports acks with [`SenderCore::on_ack`] and persists
//! [`SenderCore::checkpoint_to_persist`].
//!
//! Sequences are the *sending* node's local commit-log sequences. A batch
//! covers every sequence up to its `through_sequence`, including records the
//! policy filtered out, so the checkpoint advances even when a peer receives
//! nothing from a stretch of the log.
//!
//! Time comes in as arguments (`now`), in the shape of quinn-proto: batches
//! are stamped when handed out by [`SenderCore::poll_transmit`], and
//! [`SenderCore::poll_timeout`] / [`SenderCore::handle_timeout`] detect a
//! peer that stopped acknowledging. So the seeded simulation drives it with a
//! virtual clock.
//!
//! [`RecordFilter`] is the pure replication policy (which records, of any
//! origin, go to which peer). Not here yet: rate limits and compression.

use crate::frame::MAX_FRAME_BYTES;
use meridian_proto::meridian::v1::{Batch, Record};
use meridian_topology::Topology;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// Bounds of one link's sending side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderLimits {
    /// Batches sent and not yet acknowledged, at most.
    pub window_batches: usize,
    /// Encoded record bytes sent and not yet acknowledged, at most (a batch
    /// is always let out when nothing is in flight, whatever its size).
    /// With the batch window, this bounds the memory a link holds while
    /// keeping enough in flight to fill a long link: a window too small for
    /// the round trip makes every batch wait for the previous acks.
    pub window_bytes: usize,
    /// Records in one batch, at most.
    pub batch_records_max: usize,
    /// Encoded record bytes in one batch, at most, unless a single record is
    /// larger (it then travels alone). Kept below the node's 8 MiB gRPC decode
    /// limit so that the receiver can hand a batch to Apply in one call.
    pub batch_bytes_max: usize,
    /// How long the oldest batch in flight may wait for its ack before the
    /// link counts as stalled ([`SenderCore::handle_timeout`]) and the driver
    /// reconnects: a peer whose node hangs must not hold the link forever.
    pub ack_timeout: Duration,
}

impl Default for SenderLimits {
    fn default() -> Self {
        Self {
            // The node's tail yields one batch per commit, so a link carries
            // as many batches per second as the sending region commits:
            // 700 commits/s over an 80 ms round trip (plus the peer's
            // Apply) keep about 60 in flight. A window of 64 made such a
            // link wait for acks and queue, which showed as the tail of
            // cross-region latency (docs/benchmarks.md); 1024 allow
            // 10,000 commits/s over a 100 ms round trip, while
            // `window_bytes` bounds the memory.
            window_batches: 1024,
            window_bytes: 16 * 1024 * 1024,
            batch_records_max: 256,
            batch_bytes_max: 4 * 1024 * 1024,
            ack_timeout: Duration::from_secs(30),
        }
    }
}

/// Bytes reserved in a frame for everything but the records.
const FRAME_OVERHEAD_BYTES: usize = 64;

/// A violation of the link's invariants, by the local tail or by the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("queue tail batch: through_sequence {through} does not pass {queued_through}")]
    TailWentBackwards { through: u64, queued_through: u64 },
    #[error(
        "queue tail batch: record sequence {sequence} is outside ({after}, {through}] or out of order"
    )]
    RecordOutOfOrder {
        sequence: u64,
        after: u64,
        through: u64,
    },
    #[error("queue tail batch: record {sequence} encodes to {bytes} bytes, over the frame limit")]
    RecordTooLarge { sequence: u64, bytes: usize },
    #[error("handle ack: through_sequence {through} was never sent (sent through {sent_through})")]
    AckBeyondSent { through: u64, sent_through: u64 },
    #[error("handle ack: through_sequence {through} is not the end of a batch in flight")]
    AckNotBatchBoundary { through: u64 },
}

/// The oldest batch in flight waited longer than [`SenderLimits::ack_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no ack for the batch through sequence {through} after {waited:?}")]
pub struct AckStalled {
    pub through: u64,
    pub waited: Duration,
}

/// What an acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// The checkpoint moved to `acked_through`; persist it.
    Advanced { acked_through: u64 },
    /// The ack covers nothing new (a duplicate, or an older batch already
    /// covered by a later ack); nothing to do.
    Stale,
}

/// The sending side of one link.
#[derive(Debug)]
pub struct SenderCore {
    limits: SenderLimits,
    /// Highest sequence the peer acknowledged as durable.
    acked_through: u64,
    /// Highest acknowledged sequence known to be persisted by the local node.
    persisted_through: u64,
    /// Highest sequence taken from the tail (pending, in flight or acked).
    queued_through: u64,
    /// Batches planned but not yet sent, in order.
    pending: VecDeque<Batch>,
    /// `through_sequence`, send time and record bytes of each batch sent
    /// and not acknowledged, increasing.
    in_flight: VecDeque<(u64, Instant, usize)>,
    /// Sum of the record bytes in `in_flight`.
    in_flight_bytes: usize,
}

impl SenderCore {
    /// A link starting from the persisted `checkpoint`.
    pub fn new(checkpoint: u64, limits: SenderLimits) -> Self {
        assert!(
            limits.window_batches > 0,
            "a window holds at least one batch"
        );
        assert!(
            limits.batch_records_max > 0,
            "a batch holds at least one record"
        );
        Self {
            limits,
            acked_through: checkpoint,
            persisted_through: checkpoint,
            queued_through: checkpoint,
            pending: VecDeque::new(),
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
        }
    }

    /// Starts a new session from the checkpoint the local node has persisted:
    /// forgets everything pending or in flight. Returns the sequence to tail after.
    pub fn resume(&mut self, persisted_checkpoint: u64) -> u64 {
        *self = Self::new(persisted_checkpoint, self.limits);
        self.acked_through
    }

    /// The connection is gone: everything not acknowledged must be sent again.
    /// Returns the sequence to tail after (the acknowledged one).
    pub fn on_disconnect(&mut self) -> u64 {
        self.pending.clear();
        self.in_flight.clear();
        self.in_flight_bytes = 0;
        self.queued_through = self.acked_through;
        self.acked_through
    }

    pub fn acked_through(&self) -> u64 {
        self.acked_through
    }

    pub fn persisted_through(&self) -> u64 {
        self.persisted_through
    }

    /// Highest sequence covered by a batch already handed out for sending.
    pub fn sent_through(&self) -> u64 {
        self.in_flight
            .back()
            .map_or(self.acked_through, |(through, _, _)| *through)
    }

    pub fn queued_through(&self) -> u64 {
        self.queued_through
    }

    pub fn in_flight_batches(&self) -> usize {
        self.in_flight.len()
    }

    /// True when the next tail batch should be read: nothing pending and room
    /// in the window. Reading no further keeps memory bounded.
    pub fn wants_tail(&self) -> bool {
        self.pending.is_empty() && self.window_has_room()
    }

    fn window_has_room(&self) -> bool {
        self.in_flight.len() < self.limits.window_batches
            && (self.in_flight.is_empty() || self.in_flight_bytes < self.limits.window_bytes)
    }

    /// Queues a tail batch (records already filtered by policy) covering local
    /// sequences up to `through`, split into batches by the limits.
    pub fn push_tail(&mut self, records: Vec<Record>, through: u64) -> Result<(), CoreError> {
        if records.is_empty() && through == self.queued_through {
            return Ok(()); // a keep-alive of the tail: nothing new
        }
        if through <= self.queued_through {
            return Err(CoreError::TailWentBackwards {
                through,
                queued_through: self.queued_through,
            });
        }
        let mut previous = self.queued_through;
        for record in &records {
            if record.sequence <= previous || record.sequence > through {
                return Err(CoreError::RecordOutOfOrder {
                    sequence: record.sequence,
                    after: self.queued_through,
                    through,
                });
            }
            previous = record.sequence;
            let bytes = record_bytes(record);
            if bytes + FRAME_OVERHEAD_BYTES > MAX_FRAME_BYTES {
                return Err(CoreError::RecordTooLarge {
                    sequence: record.sequence,
                    bytes,
                });
            }
        }

        let mut current = Batch::default();
        let mut current_bytes = 0;
        for record in records {
            let bytes = record_bytes(&record);
            let full = current.records.len() >= self.limits.batch_records_max
                || current_bytes + bytes > self.limits.batch_bytes_max;
            if !current.records.is_empty() && full {
                current.through_sequence = current.records.last().map_or(0, |last| last.sequence);
                self.pending.push_back(std::mem::take(&mut current));
                current_bytes = 0;
            }
            current_bytes += bytes;
            current.records.push(record);
        }
        current.through_sequence = through;
        self.pending.push_back(current);
        self.queued_through = through;
        Ok(())
    }

    /// The next batch to send at `now`, if the window has room. The caller
    /// must send it (or report a disconnect): it now counts as in flight.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Batch> {
        if !self.window_has_room() {
            return None;
        }
        let batch = self.pending.pop_front()?;
        let bytes: usize = batch.records.iter().map(record_bytes).sum();
        self.in_flight
            .push_back((batch.through_sequence, now, bytes));
        self.in_flight_bytes += bytes;
        Some(batch)
    }

    /// When [`Self::handle_timeout`] must next be called: the oldest batch in
    /// flight's ack deadline; `None` with nothing in flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight
            .front()
            .map(|(_, sent, _)| *sent + self.limits.ack_timeout)
    }

    /// Checks the ack deadline at `now`: `Err` when the oldest batch in
    /// flight has waited too long (the driver then drops the connection and
    /// resumes from the checkpoint, as after any disconnect).
    pub fn handle_timeout(&self, now: Instant) -> Result<(), AckStalled> {
        match self.in_flight.front() {
            Some((through, sent, _))
                if now.saturating_duration_since(*sent) >= self.limits.ack_timeout =>
            {
                Err(AckStalled {
                    through: *through,
                    waited: now.saturating_duration_since(*sent),
                })
            }
            _ => Ok(()),
        }
    }

    /// Handles an acknowledgement of every sequence up to `through`.
    /// Acks are cumulative: one ack also covers the batches before it.
    pub fn on_ack(&mut self, through: u64) -> Result<AckOutcome, CoreError> {
        if through <= self.acked_through {
            return Ok(AckOutcome::Stale);
        }
        let sent_through = self.sent_through();
        if through > sent_through {
            return Err(CoreError::AckBeyondSent {
                through,
                sent_through,
            });
        }
        if !self.in_flight.iter().any(|(sent, _, _)| *sent == through) {
            return Err(CoreError::AckNotBatchBoundary { through });
        }
        while self
            .in_flight
            .front()
            .is_some_and(|(front, _, _)| *front <= through)
        {
            if let Some((_, _, bytes)) = self.in_flight.pop_front() {
                self.in_flight_bytes -= bytes;
            }
        }
        self.acked_through = through;
        Ok(AckOutcome::Advanced {
            acked_through: through,
        })
    }

    /// The checkpoint the local node should persist, if it is behind.
    pub fn checkpoint_to_persist(&self) -> Option<u64> {
        (self.acked_through > self.persisted_through).then_some(self.acked_through)
    }

    /// The local node persisted `checkpoint`.
    pub fn on_persisted(&mut self, checkpoint: u64) {
        self.persisted_through = self.persisted_through.max(checkpoint);
    }
}

/// Size of a record inside a `Batch` (field tag and length prefix included).
fn record_bytes(record: &Record) -> usize {
    let length = record.encoded_len();
    1 + prost::encoding::encoded_len_varint(length as u64) + length
}

/// Why a record is or is not sent to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// The topic does not go to the peer from this region: the peer is not
    /// in its `replicate_to`, or another region is the peer's parent for
    /// the record's origin (see `meridian_topology`'s routing).
    NotForPeer,
    /// The peer is the record's origin or already on its path.
    AlreadyThere,
    /// The topic is not in the topology; `first_time` is true once per topic,
    /// so the caller warns once rather than per record.
    UnknownTopic {
        first_time: bool,
    },
    /// The record carries neither a message nor an acknowledgement (a kind
    /// this version does not replicate).
    NotAMessage,
}

/// A catalog change as the topology crate models it.
pub fn catalog_entry(
    change: &meridian_proto::meridian::v1::CatalogChange,
) -> Option<meridian_topology::CatalogEntry> {
    Some(meridian_topology::CatalogEntry {
        kind: meridian_topology::CatalogKind::from_wire(change.kind)?,
        name: change.name.clone(),
        definition: change.definition_toml.clone(),
        deleted: change.deleted,
        changed_at_ms: change.changed_at_ms,
        region: change.region.clone(),
    })
}

/// The replication policy of one link, `local → peer`: which records of the
/// local commit log (born here or forwarded from elsewhere) go to the peer.
///
/// A record goes when its topic lists the peer in `replicate_to`, this
/// region is the peer's parent for the record's origin
/// ([`Topology::forwarding_parent`]), and the peer is neither the origin nor
/// on the record's `path` (so nothing ever loops, whatever the topology).
///
/// Topics and groups created, changed or deleted through the admin API
/// (`CATALOG` records) go to every region, like dead-letter topics; the
/// filter lays each one it sees (and the node's catalog at the start of a
/// session, [`RecordFilter::apply_catalog`]) over the topology file, so the
/// messages of a topic created at run time, which follow its creation in
/// the log, go where its `replicate_to` says.
#[derive(Debug, Clone)]
pub struct RecordFilter {
    peer: String,
    local_region: String,
    /// The topology file's topology, and the admin API's changes over it.
    base: Topology,
    catalog: meridian_topology::Catalog,
    /// Topic name → the origins whose records of the topic go to the peer
    /// from this region (empty when none do).
    topics: BTreeMap<String, BTreeSet<String>>,
    /// The same for every dead-letter topic (`%DLQ%<group>`, one policy).
    dead_letters: BTreeSet<String>,
    warned_topics: BTreeSet<String>,
}

impl RecordFilter {
    pub fn new(topology: &Topology, local_region: &str, peer: &str) -> Self {
        let mut filter = Self {
            peer: peer.to_owned(),
            local_region: local_region.to_owned(),
            base: topology.clone(),
            catalog: meridian_topology::Catalog::default(),
            topics: BTreeMap::new(),
            dead_letters: BTreeSet::new(),
            warned_topics: BTreeSet::new(),
        };
        filter.rebuild(topology);
        filter
    }

    /// The policies of `topology`'s topics.
    fn rebuild(&mut self, topology: &Topology) {
        let (local_region, peer) = (self.local_region.as_str(), self.peer.as_str());
        let origins = |topic: &meridian_topology::Topic| -> BTreeSet<String> {
            topology
                .regions
                .keys()
                .filter(|origin| topology.forwards(topic, origin, local_region, peer))
                .cloned()
                .collect()
        };
        self.topics = topology
            .topics
            .iter()
            .map(|(name, topic)| (name.clone(), origins(topic)))
            .collect();
        self.dead_letters = origins(&topology.dead_letter_topic());
    }

    /// Keeps the newest of `entries` per item and, if that changed the
    /// catalog, recomputes the topics' policies. A catalog that does not make
    /// a valid topology with the file leaves the policies as they were.
    pub fn apply_catalog(
        &mut self,
        entries: impl IntoIterator<Item = meridian_topology::CatalogEntry>,
    ) {
        let mut changed = false;
        for entry in entries {
            changed |= self.catalog.insert(entry);
        }
        if !changed {
            return;
        }
        match self.catalog.apply_to(&self.base) {
            Ok(topology) => self.rebuild(&topology),
            Err(error) => tracing::error!(
                peer = self.peer,
                error = %error,
                "topic and group changes do not fit this replicator's topology file"
            ),
        }
    }

    pub fn verdict(&mut self, record: &Record) -> Verdict {
        if let Some(change) = record.catalog.as_ref() {
            self.apply_catalog(catalog_entry(change));
            if record.origin_region == self.peer || record.path.contains(&self.peer) {
                return Verdict::AlreadyThere;
            }
            return if self.dead_letters.contains(&record.origin_region) {
                Verdict::Send
            } else {
                Verdict::NotForPeer
            };
        }
        // Messages, acknowledgements, group starts, transaction outcomes and
        // trace events follow their topic's policy.
        let topic = if let Some(message) = &record.message {
            &message.topic
        } else if let Some(ack) = &record.ack {
            &ack.topic
        } else if let Some(start) = &record.group_start {
            &start.topic
        } else if let Some(end) = &record.transaction_end {
            &end.topic
        } else if let Some(trace) = &record.trace {
            &trace.topic
        } else {
            return Verdict::NotAMessage;
        };
        let origins = self
            .topics
            .get(topic)
            .or_else(|| meridian_topology::dead_letter_group(topic).map(|_| &self.dead_letters));
        let Some(origins) = origins else {
            return Verdict::UnknownTopic {
                first_time: self.warned_topics.insert(topic.clone()),
            };
        };
        if record.origin_region == self.peer || record.path.contains(&self.peer) {
            return Verdict::AlreadyThere;
        }
        if origins.contains(&record.origin_region) {
            Verdict::Send
        } else {
            Verdict::NotForPeer
        }
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
