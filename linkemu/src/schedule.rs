//! When each datagram or chunk of one direction is due: the I/O-free core.
//!
//! A packet sent at `now` arrives at `now + delay + jitter`, but never before
//! the packet ahead of it was delivered, and then takes `size / bandwidth` to
//! pass. Dues therefore never go backwards, whatever the conditions do
//! between two packets, so one first-in-first-out queue per direction
//! delivers everything in order: when the delay shrinks, later packets wait
//! their turn behind earlier ones instead of overtaking them.
//!
//! The caller draws the jitter, so this stays deterministic and can be tested
//! with made-up instants.

use crate::conditions::Conditions;
use std::time::Duration;
use tokio::time::Instant;

/// The schedule of one direction: the due time of the last packet admitted.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    last_due: Option<Instant>,
}

impl Schedule {
    /// The due time of a packet of `bytes` admitted at `now` with `jitter`
    /// (already drawn from `[0, conditions.jitter]`); it becomes the last due.
    pub(crate) fn next_due(
        &mut self,
        now: Instant,
        bytes: u64,
        conditions: &Conditions,
        jitter: Duration,
    ) -> Instant {
        let arrival = now + conditions.delay + jitter;
        let start = self.last_due.map_or(arrival, |last| last.max(arrival));
        let due = start + serialization_time(bytes, conditions.bandwidth);
        if let Some(last) = self.last_due {
            debug_assert!(due >= last, "dues never go backwards");
        }
        self.last_due = Some(due);
        due
    }

    /// How much later than its bare delay a packet admitted at `now` would
    /// be delivered, because of the traffic queued ahead of it.
    pub(crate) fn backlog(&self, now: Instant, conditions: &Conditions) -> Duration {
        self.last_due.map_or(Duration::ZERO, |last| {
            last.saturating_duration_since(now + conditions.delay)
        })
    }
}

/// How long `bytes` take to pass at `bandwidth` bytes per second (zero
/// without a limit).
pub(crate) fn serialization_time(bytes: u64, bandwidth: Option<u64>) -> Duration {
    match bandwidth {
        None => Duration::ZERO,
        Some(bandwidth) => {
            let nanos = u128::from(bytes) * 1_000_000_000 / u128::from(bandwidth.max(1));
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn delayed(delay: Duration) -> Conditions {
        Conditions {
            delay,
            ..Conditions::default()
        }
    }

    #[test]
    fn a_packet_is_due_after_delay_and_jitter() {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        let due = schedule.next_due(start, 100, &delayed(100 * MS), 7 * MS);
        assert_eq!(due, start + 107 * MS);
        // An idle link: the next packet is not held back.
        let due = schedule.next_due(start + 500 * MS, 100, &delayed(100 * MS), Duration::ZERO);
        assert_eq!(due, start + 600 * MS);
    }

    #[test]
    fn jitter_never_reorders() {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        let first = schedule.next_due(start, 1, &delayed(10 * MS), 50 * MS);
        let second = schedule.next_due(start + MS, 1, &delayed(10 * MS), Duration::ZERO);
        assert_eq!(first, start + 60 * MS);
        assert_eq!(second, first, "the second waits for the first");
    }

    #[test]
    fn a_shorter_delay_makes_later_packets_wait_their_turn() {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        let slow = schedule.next_due(start, 1, &delayed(1000 * MS), Duration::ZERO);
        let fast = schedule.next_due(start + MS, 1, &delayed(MS), Duration::ZERO);
        assert_eq!(fast, slow);
        // Once the slow packet is gone, the short delay applies again.
        let later = schedule.next_due(start + 2000 * MS, 1, &delayed(MS), Duration::ZERO);
        assert_eq!(later, start + 2001 * MS);
    }

    #[test]
    fn bandwidth_serializes_and_queues() {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        let conditions = Conditions {
            delay: 10 * MS,
            bandwidth: Some(1_000_000),
            ..Conditions::default()
        };
        // 100 packets of 1000 bytes at 1 MB/s, all sent at once: 1 ms each.
        let mut due = start;
        for _ in 0..100 {
            due = schedule.next_due(start, 1000, &conditions, Duration::ZERO);
        }
        assert_eq!(due, start + 110 * MS);
        assert_eq!(schedule.backlog(start, &conditions), 100 * MS);
        assert_eq!(
            schedule.backlog(start + 200 * MS, &conditions),
            Duration::ZERO
        );
    }

    #[test]
    fn serialization_time_in_units() {
        assert_eq!(serialization_time(1000, None), Duration::ZERO);
        assert_eq!(serialization_time(1000, Some(1_000_000)), MS);
        assert_eq!(serialization_time(3, Some(2)), 1500 * MS);
        assert_eq!(
            serialization_time(u64::MAX, Some(1)),
            Duration::from_nanos(u64::MAX)
        );
        assert_eq!(serialization_time(1, Some(0)), Duration::from_secs(1));
    }
}
