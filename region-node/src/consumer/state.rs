//! The state of one group queue, and changes to it computed before they are
//! stored and installed only after.
//!
//! An operation stages its changes on top of the installed state
//! ([`Staged`]), turns them into the [`GroupWrite`] storage persists and the
//! [`QueueChange`] memory installs: the two describe the same change, and the
//! change reaches memory only once storage has it. So a failed write leaves
//! the engine exactly as the store is (a retried ack is retried for real, a
//! receive that could not be recorded hands nothing out).

use crate::storage::{GroupCursor, GroupQueueKey, GroupWrite, OffsetState};
use std::collections::{BTreeMap, BTreeSet};

/// The installed state of one group queue: a cursor plus the state of the
/// offsets in `floor..next` that are tracked (see [`GroupCursor`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct QueueState {
    pub cursor: GroupCursor,
    pub offsets: BTreeMap<u64, OffsetState>,
}

/// Changes staged over a queue's installed state (or over a queue not
/// installed yet, `base` `None`), without touching it.
#[derive(Debug)]
pub(super) struct Staged<'a> {
    key: GroupQueueKey,
    base: Option<&'a QueueState>,
    cursor: GroupCursor,
    set: BTreeMap<u64, OffsetState>,
    removed: BTreeSet<u64>,
    /// A new queue: its cursor must be written even if nothing else changes.
    created: bool,
}

impl<'a> Staged<'a> {
    /// Stages over the installed `base`.
    pub fn over(key: GroupQueueKey, base: &'a QueueState) -> Self {
        Staged {
            key,
            base: Some(base),
            cursor: base.cursor,
            set: BTreeMap::new(),
            removed: BTreeSet::new(),
            created: false,
        }
    }

    /// Stages a queue that does not exist yet, starting at `cursor`.
    pub fn create(key: GroupQueueKey, cursor: GroupCursor) -> Self {
        Staged {
            key,
            base: None,
            cursor,
            set: BTreeMap::new(),
            removed: BTreeSet::new(),
            created: true,
        }
    }

    pub fn key(&self) -> &GroupQueueKey {
        &self.key
    }

    pub fn cursor(&self) -> GroupCursor {
        self.cursor
    }

    pub fn cursor_mut(&mut self) -> &mut GroupCursor {
        &mut self.cursor
    }

    /// The staged state of `offset`.
    pub fn get(&self, offset: u64) -> Option<OffsetState> {
        if let Some(state) = self.set.get(&offset) {
            return Some(*state);
        }
        if self.removed.contains(&offset) {
            return None;
        }
        self.base
            .and_then(|base| base.offsets.get(&offset))
            .copied()
    }

    pub fn insert(&mut self, offset: u64, state: OffsetState) {
        self.removed.remove(&offset);
        self.set.insert(offset, state);
    }

    fn remove(&mut self, offset: u64) {
        self.set.remove(&offset);
        if self
            .base
            .is_some_and(|base| base.offsets.contains_key(&offset))
        {
            self.removed.insert(offset);
        }
    }

    /// Every tracked offset and its staged state, in no particular order.
    pub fn offsets(&self) -> impl Iterator<Item = (u64, OffsetState)> + '_ {
        let installed = self
            .base
            .into_iter()
            .flat_map(|base| base.offsets.iter())
            .filter(|(offset, _)| !self.set.contains_key(offset) && !self.removed.contains(offset))
            .map(|(offset, state)| (*offset, *state));
        installed.chain(self.set.iter().map(|(offset, state)| (*offset, *state)))
    }

    /// Moves the queue's cursor to `position`, forgetting every offset's
    /// state (a reset of the group's progress).
    pub fn reset(&mut self, position: u64) {
        let tracked: Vec<u64> = self.offsets().map(|(offset, _)| offset).collect();
        for offset in tracked {
            self.remove(offset);
        }
        self.cursor = GroupCursor {
            floor: position,
            next: position,
        };
        self.created = true;
    }

    /// Moves the floor over finished offsets, dropping their state.
    pub fn advance_floor(&mut self) {
        while self.cursor.floor < self.cursor.next {
            match self.get(self.cursor.floor) {
                Some(OffsetState::InFlight { .. }) => break,
                Some(OffsetState::Done) => self.remove(self.cursor.floor),
                // Not tracked: finished before.
                None => {}
            }
            self.cursor.floor += 1;
        }
    }

    /// Whether anything differs from the installed state.
    pub fn is_changed(&self) -> bool {
        self.created
            || !self.set.is_empty()
            || !self.removed.is_empty()
            || self.base.is_some_and(|base| base.cursor != self.cursor)
    }

    /// What storage writes and what memory installs: the same change.
    pub fn finish(self) -> (GroupWrite, QueueChange) {
        let write = GroupWrite {
            key: self.key.clone(),
            cursor: self.cursor,
            set: self
                .set
                .iter()
                .map(|(offset, state)| (*offset, *state))
                .collect(),
            remove: self.removed.iter().copied().collect(),
        };
        let change = QueueChange {
            key: self.key,
            cursor: self.cursor,
            set: self.set,
            removed: self.removed,
        };
        (write, change)
    }
}

/// A staged change, detached from the state it was computed on.
#[derive(Debug)]
pub(super) struct QueueChange {
    pub key: GroupQueueKey,
    cursor: GroupCursor,
    set: BTreeMap<u64, OffsetState>,
    removed: BTreeSet<u64>,
}

impl QueueChange {
    /// Installs the change (after storage accepted the matching write).
    pub fn install(self, queue: &mut QueueState) {
        queue.cursor = self.cursor;
        for offset in self.removed {
            queue.offsets.remove(&offset);
        }
        queue.offsets.extend(self.set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> GroupQueueKey {
        GroupQueueKey::new("g", "t", 0)
    }

    fn in_flight(deadline_ms: i64) -> OffsetState {
        OffsetState::InFlight {
            deadline_ms,
            attempt: 1,
        }
    }

    #[test]
    fn staging_leaves_the_installed_state_alone_until_installed() {
        let mut installed = QueueState {
            cursor: GroupCursor { floor: 0, next: 3 },
            offsets: BTreeMap::from([(0, in_flight(5)), (1, OffsetState::Done), (2, in_flight(7))]),
        };
        let before = installed.clone();
        let mut staged = Staged::over(key(), &installed);
        staged.insert(0, OffsetState::Done);
        staged.advance_floor();
        assert_eq!(staged.cursor(), GroupCursor { floor: 2, next: 3 });
        assert_eq!(staged.get(1), None);
        assert_eq!(staged.get(2), Some(in_flight(7)));
        let (write, change) = staged.finish();
        assert_eq!(installed, before, "nothing installed before the write");
        assert_eq!(write.cursor, GroupCursor { floor: 2, next: 3 });
        assert_eq!(write.remove, vec![0, 1]);
        assert!(write.set.is_empty(), "{write:?}");
        change.install(&mut installed);
        assert_eq!(
            installed,
            QueueState {
                cursor: GroupCursor { floor: 2, next: 3 },
                offsets: BTreeMap::from([(2, in_flight(7))]),
            }
        );
    }

    #[test]
    fn a_created_queue_is_written_even_unchanged() {
        let staged = Staged::create(key(), GroupCursor { floor: 4, next: 4 });
        assert!(staged.is_changed());
        let mut installed = QueueState::default();
        let (write, change) = staged.finish();
        assert_eq!(write.cursor, GroupCursor { floor: 4, next: 4 });
        change.install(&mut installed);
        assert_eq!(installed.cursor, GroupCursor { floor: 4, next: 4 });
    }
}
