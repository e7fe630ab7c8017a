//! Where a consumer group starts, carried to other regions.
//!
//! A group created on a queue of a `consume_from = "latest"` topic starts at
//! the queue's end: the messages already there are not for it. So that the
//! group starts from the same messages in every region, the region that
//! created it describes its start by *origin marks*: per origin region, the
//! highest origin sequence of that origin's messages the queue held before
//! the start ([`ConsumerEngine::origin_marks`]). Messages of one origin keep
//! their order in every region's queue, so another region can tell its own
//! copies apart whatever order origins interleave in there
//! ([`ConsumerEngine::start_replicated`]): a message is *before the start*
//! when its origin has a mark at or above its origin sequence.
//!
//! Both sides look at most [`MARK_SCAN_ENTRIES`] entries back from the end
//! of the queue. An origin whose last message before the start lies further
//! back has no mark, so the other region treats its messages in the window
//! as after the start: it may deliver a few old messages the group never
//! received anywhere, never fewer than it should. Below the window, the
//! other region counts everything as before the start. A region that has
//! already created the group on that queue (its own first receive, or an
//! acknowledgement that arrived first) keeps its own start.

use super::state::{QueueState, Staged};
use super::{ConsumerEngine, ConsumerError};
use crate::storage::{GroupCursor, GroupQueueKey, LogStore, OffsetState, StorageError};
use meridian_proto::meridian::v1::{GroupStart, OriginMark, Record};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Queue entries examined, at most, to find or apply origin marks.
pub const MARK_SCAN_ENTRIES: u64 = 4096;
/// Entries read from storage at once while scanning backwards.
const SCAN_CHUNK: u64 = 256;

/// A record's sequence in its origin region (a local record is stored
/// without one: its own sequence is that).
fn origin_sequence(record: &Record) -> u64 {
    if record.origin_sequence == 0 {
        record.sequence
    } else {
        record.origin_sequence
    }
}

impl<S: LogStore> ConsumerEngine<S> {
    /// Visits the entries of a queue from `end` (exclusive) backwards, at
    /// most [`MARK_SCAN_ENTRIES`], while `visit` returns true.
    fn scan_back(
        &self,
        topic: &str,
        queue_id: i32,
        end: u64,
        mut visit: impl FnMut(u64, &Record) -> bool,
    ) -> Result<(), StorageError> {
        let bounds = self.store.queue_bounds(topic, queue_id)?;
        let lowest = bounds.min.max(end.saturating_sub(MARK_SCAN_ENTRIES));
        let mut end = end.min(bounds.max);
        while end > lowest {
            let from = end.saturating_sub(SCAN_CHUNK).max(lowest);
            let count = usize::try_from(end - from).unwrap_or(usize::MAX);
            let entries = self.store.read_queue(topic, queue_id, from, count)?;
            for (offset, record) in entries.iter().rev() {
                if !visit(*offset, record) {
                    return Ok(());
                }
            }
            end = from;
        }
        Ok(())
    }

    /// The origin marks of a group that starts at `start` on a queue: per
    /// origin, the highest origin sequence among the entries before `start`
    /// (within the last [`MARK_SCAN_ENTRIES`]), sorted by origin. `origins`
    /// (every region of the topology) ends the scan early once all are seen.
    pub fn origin_marks(
        &self,
        topic: &str,
        queue_id: i32,
        start: u64,
        origins: usize,
    ) -> Result<Vec<OriginMark>, StorageError> {
        let mut marks: BTreeMap<String, u64> = BTreeMap::new();
        self.scan_back(topic, queue_id, start, |_, record| {
            marks
                .entry(record.origin_region.clone())
                .or_insert_with(|| origin_sequence(record));
            marks.len() < origins
        })?;
        Ok(marks
            .into_iter()
            .map(|(origin_region, origin_sequence)| OriginMark {
                origin_region,
                origin_sequence,
            })
            .collect())
    }

    /// Creates the group queue a [`GroupStart`] from another region names,
    /// unless this node has it already: starting at the lowest entry of the
    /// scanned window that is after the start, with every entry at or above
    /// it that is before the start finished. Returns whether it created the
    /// queue (a group beyond [`super::MAX_GROUPS`] is skipped with a
    /// warning: replication must not stall on it).
    pub fn start_replicated(&self, start: &GroupStart) -> Result<bool, ConsumerError> {
        let key = GroupQueueKey::new(&start.group, &start.topic, start.queue_id);
        if self.queue(&key).is_some() {
            return Ok(false);
        }
        let mut index = self.groups.write();
        if index.queues.contains_key(&key) {
            return Ok(false);
        }
        if !index.names.contains(&start.group) && index.names.len() >= self.max_groups {
            tracing::warn!(
                group = %start.group,
                limit = self.max_groups,
                "a group start from another region names a group this node cannot track"
            );
            return Ok(false);
        }
        let marks: BTreeMap<&str, u64> = start
            .marks
            .iter()
            .map(|mark| (mark.origin_region.as_str(), mark.origin_sequence))
            .collect();
        let bounds = self.store.queue_bounds(&start.topic, start.queue_id)?;
        // Origins whose mark has not been passed yet, scanning backwards.
        let mut pending: BTreeSet<&str> = marks.keys().copied().collect();
        let mut before_start = Vec::new();
        let mut lowest_after_start = None;
        self.scan_back(
            &start.topic,
            start.queue_id,
            bounds.max,
            |offset, record| {
                let origin = record.origin_region.as_str();
                match marks.get(origin) {
                    Some(mark) if origin_sequence(record) <= *mark => {
                        before_start.push(offset);
                        pending.remove(origin);
                    }
                    _ => lowest_after_start = Some(offset),
                }
                // Below the last mark passed, every marked origin's messages are
                // before the start; unmarked ones are treated so as well. With
                // no marks at all (an empty queue at the start), the whole
                // window is after the start.
                !pending.is_empty() || marks.is_empty()
            },
        )?;
        let first = lowest_after_start.unwrap_or(bounds.max);
        let mut staged = Staged::create(
            key.clone(),
            GroupCursor {
                floor: first,
                next: first,
            },
        );
        for offset in before_start.into_iter().filter(|offset| *offset >= first) {
            staged.insert(offset, OffsetState::Done);
        }
        for change in self.persist(vec![staged])? {
            let mut created = QueueState::default();
            change.install(&mut created);
            index.names.insert(key.group.clone());
            index
                .queues
                .insert(key.clone(), Arc::new(Mutex::new(created)));
        }
        Ok(true)
    }
}
