//! The first-in-first-out queue between a relay's reading side and its
//! delivering side, bounded in entries.
//!
//! Due times never go backwards within a direction (see `schedule.rs`), so
//! the delivering side only ever needs the front entry: it pops it, sleeps
//! until it is due and delivers it. No timer wheel, no heap.
//!
//! The bytes are bounded elsewhere: for datagrams by the direction's buffer
//! (shared by every relay of the direction), for TCP by the connection's
//! room (which also covers the chunk being written). The entry bound here
//! keeps tiny datagrams or chunks from piling up under a byte limit.

use crate::direction::Held;
use parking_lot::Mutex;
use std::collections::VecDeque;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A datagram or chunk waiting to be delivered.
#[derive(Debug)]
pub(crate) struct Scheduled<T> {
    pub(crate) due: Instant,
    pub(crate) item: T,
    /// Its bytes, counted as queued in its direction until delivered or
    /// dropped.
    pub(crate) _held: Held,
}

/// One producer, one consumer.
pub(crate) struct DelayQueue<T> {
    entries: Mutex<VecDeque<Scheduled<T>>>,
    pushed: Notify,
    popped: Notify,
    entries_max: usize,
}

impl<T> DelayQueue<T> {
    /// A queue that holds at most `entries_max` entries.
    pub(crate) fn new(entries_max: usize) -> DelayQueue<T> {
        DelayQueue {
            entries: Mutex::new(VecDeque::new()),
            pushed: Notify::new(),
            popped: Notify::new(),
            entries_max,
        }
    }

    /// Whether another entry would not fit now.
    pub(crate) fn is_full(&self) -> bool {
        self.entries.lock().len() >= self.entries_max
    }

    /// Appends `entry`; the caller checked [`DelayQueue::is_full`] (it is the
    /// only producer, so nothing changed in between but pops).
    pub(crate) fn push(&self, entry: Scheduled<T>) {
        self.entries.lock().push_back(entry);
        self.pushed.notify_one();
    }

    /// Appends `entry` once there is room for it.
    pub(crate) async fn push_when_room(&self, entry: Scheduled<T>) {
        while self.is_full() {
            // `notify_one` keeps a permit when nobody waits, so a pop between
            // the check and this wait is not missed.
            self.popped.notified().await;
        }
        self.push(entry);
    }

    /// The front entry, once there is one.
    pub(crate) async fn pop(&self) -> Scheduled<T> {
        loop {
            let front = self.entries.lock().pop_front();
            if let Some(entry) = front {
                self.popped.notify_one();
                return entry;
            }
            self.pushed.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Conditions, Direction};
    use std::time::Duration;

    fn entry(direction: &Direction, bytes: usize, item: u32) -> Scheduled<u32> {
        let admitted = direction.admit_chunk(Instant::now(), bytes);
        Scheduled {
            due: admitted.due,
            item,
            _held: admitted.held,
        }
    }

    #[tokio::test]
    async fn pops_in_order_and_waits_for_pushes() {
        let direction = Direction::new(Conditions::default(), 1);
        let queue = DelayQueue::new(10);
        queue.push(entry(&direction, 10, 1));
        queue.push(entry(&direction, 10, 2));
        assert_eq!(queue.pop().await.item, 1);
        assert_eq!(queue.pop().await.item, 2);
        let (popped, ()) = tokio::join!(queue.pop(), async {
            tokio::task::yield_now().await;
            queue.push(entry(&direction, 10, 3));
        });
        assert_eq!(popped.item, 3);
        drop(popped);
        assert_eq!(direction.stats().queued_bytes, 0);
    }

    #[tokio::test]
    async fn a_full_queue_makes_the_producer_wait_for_a_pop() {
        let direction = Direction::new(Conditions::default(), 1);
        let queue = DelayQueue::new(2);
        queue.push(entry(&direction, 60, 1));
        assert!(!queue.is_full());
        queue.push(entry(&direction, 1, 2));
        assert!(queue.is_full(), "two entries at most");
        let waiting = queue.push_when_room(entry(&direction, 50, 3));
        let ((), first) = tokio::join!(waiting, async {
            tokio::task::yield_now().await;
            queue.pop().await
        });
        assert_eq!(first.item, 1);
        let rest = [queue.pop().await.item, queue.pop().await.item];
        assert_eq!(rest, [2, 3]);
    }

    #[tokio::test]
    async fn dropping_the_queue_releases_its_bytes() {
        let direction = Direction::new(
            Conditions {
                delay: Duration::from_secs(1),
                ..Conditions::default()
            },
            1,
        );
        let queue = DelayQueue::new(10);
        queue.push(entry(&direction, 30, 1));
        assert_eq!(direction.stats().queued_bytes, 30);
        drop(queue);
        assert_eq!(direction.stats().queued_bytes, 0);
    }
}
