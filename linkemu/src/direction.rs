//! One direction of a link: its conditions, its schedule, its randomness and
//! its counters, shared by every relay that sends that way.
//!
//! Relays ask a direction to *admit* each datagram or chunk; the direction
//! draws loss and jitter, computes the due time with [`Schedule`] and hands
//! back a [`Held`] guard that counts the bytes as queued until it is dropped,
//! so a relay that ends with bytes still queued cannot leave the counters
//! wrong.

use crate::conditions::Conditions;
use crate::schedule::{Schedule, serialization_time};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Datagrams a direction holds at least, in bytes, before it tail-drops.
const DATAGRAM_BUFFER_BYTES_MIN: u64 = 1024 * 1024;
/// With a bandwidth limit the buffer holds at least this long of traffic.
const BUFFER_TIME_MIN: Duration = Duration::from_millis(100);
/// A TCP chunk the loss draw hits is late by at least this long.
const RETRANSMISSION_TIMEOUT_MIN: Duration = Duration::from_millis(200);

/// Counters of one direction since it was created.
///
/// Serializable both ways so a status answer can carry them; a field missing
/// when reading (an answer from an older version) counts as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DirectionStats {
    /// Datagrams and TCP chunks delivered.
    pub packets: u64,
    /// Bytes delivered (payload only).
    pub bytes: u64,
    /// Datagrams dropped by the loss draw.
    pub dropped_loss: u64,
    /// Datagrams dropped because the direction was partitioned when they
    /// were sent or when they were due.
    pub dropped_partition: u64,
    /// Datagrams dropped because the direction's buffer was full.
    pub dropped_queue_full: u64,
    /// Bytes admitted and not yet delivered (datagrams and TCP bytes, held
    /// ones included), now.
    pub queued_bytes: u64,
    /// TCP chunks the loss draw hit, delivered a retransmission timeout late
    /// instead of being lost.
    pub retransmitted: u64,
}

/// One direction of a link: changeable conditions and counters.
///
/// Cheap to clone; all clones share the conditions, the schedule (so relays
/// sharing a direction share its bandwidth and never overtake each other's
/// traffic), the random generator and the counters.
#[derive(Clone)]
pub struct Direction {
    inner: Arc<Inner>,
}

struct Inner {
    conditions: watch::Sender<Conditions>,
    state: Mutex<State>,
}

struct State {
    random: StdRng,
    schedule: Schedule,
    stats: DirectionStats,
    /// The part of `stats.queued_bytes` that is datagrams: what the buffer
    /// limit applies to.
    queued_datagram_bytes: u64,
}

/// Why a datagram was not admitted (already counted in the stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Partition,
    Loss,
    QueueFull,
}

/// A datagram or chunk admitted: when it is due, and its share of
/// `queued_bytes` until dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) due: Instant,
    pub(crate) held: Held,
}

/// Counts bytes as queued in a direction for as long as it lives.
pub(crate) struct Held {
    inner: Arc<Inner>,
    bytes: u64,
    datagram: bool,
}

impl fmt::Debug for Held {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Held")
            .field("bytes", &self.bytes)
            .field("datagram", &self.datagram)
            .finish()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut state = self.inner.state.lock();
        debug_assert!(state.stats.queued_bytes >= self.bytes);
        state.stats.queued_bytes = state.stats.queued_bytes.saturating_sub(self.bytes);
        if self.datagram {
            debug_assert!(state.queued_datagram_bytes >= self.bytes);
            state.queued_datagram_bytes = state.queued_datagram_bytes.saturating_sub(self.bytes);
        }
    }
}

impl Direction {
    /// A direction with `conditions` (clamped to what
    /// [`Conditions::validate`] accepts); `seed` drives its loss and jitter
    /// draws, so runs with the same seed and traffic draw the same.
    pub fn new(conditions: Conditions, seed: u64) -> Direction {
        let (conditions, _) = watch::channel(conditions.clamped());
        Direction {
            inner: Arc::new(Inner {
                conditions,
                state: Mutex::new(State {
                    random: StdRng::seed_from_u64(seed),
                    schedule: Schedule::default(),
                    stats: DirectionStats::default(),
                    queued_datagram_bytes: 0,
                }),
            }),
        }
    }

    /// Changes the conditions (clamped to what [`Conditions::validate`]
    /// accepts). They apply at once to traffic not yet admitted; traffic
    /// already queued keeps its due time. Healing a partition releases held
    /// TCP bytes.
    pub fn set(&self, conditions: Conditions) {
        self.inner.conditions.send_replace(conditions.clamped());
    }

    /// The current conditions.
    pub fn conditions(&self) -> Conditions {
        *self.inner.conditions.borrow()
    }

    /// The counters now.
    pub fn stats(&self) -> DirectionStats {
        self.inner.state.lock().stats
    }

    /// Follows changes of the conditions (to wait for a partition to heal).
    pub(crate) fn subscribe(&self) -> watch::Receiver<Conditions> {
        self.inner.conditions.subscribe()
    }

    /// Admits a datagram of `bytes` sent at `now`, or drops it (and counts
    /// why): partition, then loss, then a full buffer.
    pub(crate) fn admit_datagram(&self, now: Instant, bytes: usize) -> Result<Admitted, Refusal> {
        let conditions = self.conditions();
        let bytes = bytes as u64;
        let mut state = self.inner.state.lock();
        if conditions.partitioned {
            state.stats.dropped_partition += 1;
            return Err(Refusal::Partition);
        }
        if draw_loss(&mut state.random, conditions.loss) {
            state.stats.dropped_loss += 1;
            return Err(Refusal::Loss);
        }
        if state.queued_datagram_bytes + bytes > datagram_buffer_bytes(conditions.bandwidth) {
            state.stats.dropped_queue_full += 1;
            return Err(Refusal::QueueFull);
        }
        let jitter = draw_jitter(&mut state.random, conditions.jitter);
        let due = state.schedule.next_due(now, bytes, &conditions, jitter);
        state.stats.queued_bytes += bytes;
        state.queued_datagram_bytes += bytes;
        Ok(Admitted {
            due,
            held: Held {
                inner: Arc::clone(&self.inner),
                bytes,
                datagram: true,
            },
        })
    }

    /// Admits a TCP chunk of `bytes` read at `now` (0 for the end of the
    /// stream). A chunk the loss draw hits is due a retransmission timeout
    /// later; that delay is the connection's own and does not hold back
    /// other traffic of the direction.
    pub(crate) fn admit_chunk(&self, now: Instant, bytes: usize) -> Admitted {
        let conditions = self.conditions();
        let bytes = bytes as u64;
        let mut state = self.inner.state.lock();
        let lost = draw_loss(&mut state.random, conditions.loss);
        let jitter = draw_jitter(&mut state.random, conditions.jitter);
        let mut due = state.schedule.next_due(now, bytes, &conditions, jitter);
        if lost {
            state.stats.retransmitted += 1;
            due += retransmission_timeout(conditions.delay);
        }
        state.stats.queued_bytes += bytes;
        Admitted {
            due,
            held: Held {
                inner: Arc::clone(&self.inner),
                bytes,
                datagram: false,
            },
        }
    }

    /// How long a TCP relay should wait before admitting more at `now`: with
    /// a bandwidth limit, by how much the queue ahead is longer than the
    /// direction's buffer takes to drain; `None` when it may go on.
    pub(crate) fn stream_wait(&self, now: Instant) -> Option<Duration> {
        let conditions = self.conditions();
        let bandwidth = conditions.bandwidth?;
        let limit = serialization_time(datagram_buffer_bytes(Some(bandwidth)), Some(bandwidth));
        let backlog = self.inner.state.lock().schedule.backlog(now, &conditions);
        backlog.checked_sub(limit).filter(|wait| !wait.is_zero())
    }

    pub(crate) fn record_delivered(&self, bytes: usize) {
        let mut state = self.inner.state.lock();
        state.stats.packets += 1;
        state.stats.bytes += bytes as u64;
    }

    /// A datagram admitted earlier that was due while partitioned.
    pub(crate) fn record_dropped_partition(&self) {
        self.inner.state.lock().stats.dropped_partition += 1;
    }

    /// A datagram refused because the relay's own queue was full.
    pub(crate) fn record_dropped_queue_full(&self) {
        self.inner.state.lock().stats.dropped_queue_full += 1;
    }
}

impl fmt::Debug for Direction {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Direction")
            .field("conditions", &self.conditions())
            .field("stats", &self.stats())
            .finish()
    }
}

/// The datagram buffer of a direction, in bytes: 1 MiB, or 100 ms at the
/// bandwidth if that is more.
fn datagram_buffer_bytes(bandwidth: Option<u64>) -> u64 {
    let buffer_time_millis = BUFFER_TIME_MIN.as_millis() as u64;
    let per_buffer_time = bandwidth.map_or(0, |bandwidth| {
        bandwidth.saturating_mul(buffer_time_millis) / 1000
    });
    DATAGRAM_BUFFER_BYTES_MIN.max(per_buffer_time)
}

/// `max(200 ms, 2 × delay)`.
pub(crate) fn retransmission_timeout(delay: Duration) -> Duration {
    RETRANSMISSION_TIMEOUT_MIN.max(delay.saturating_mul(2))
}

/// Whether a packet is lost; draws only when the outcome is uncertain.
fn draw_loss(random: &mut StdRng, loss: f64) -> bool {
    if loss <= 0.0 {
        false
    } else if loss >= 1.0 {
        true
    } else {
        random.random::<f64>() < loss
    }
}

/// A jitter uniform in `[0, jitter]`; draws only when jitter is not zero.
fn draw_jitter(random: &mut StdRng, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return Duration::ZERO;
    }
    let nanos = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(random.random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    fn drops(seed: u64, loss: f64, count: usize) -> Vec<bool> {
        let direction = Direction::new(
            Conditions {
                loss,
                ..Conditions::default()
            },
            seed,
        );
        let now = Instant::now();
        (0..count)
            .map(|_| direction.admit_datagram(now, 10).is_err())
            .collect()
    }

    #[test]
    fn the_same_seed_draws_the_same_losses() {
        let first = drops(7, 0.5, 1000);
        assert_eq!(first, drops(7, 0.5, 1000));
        assert_ne!(first, drops(8, 0.5, 1000));
        let lost = first.iter().filter(|lost| **lost).count();
        assert!((400..=600).contains(&lost), "{lost} of 1000 lost");
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let direction = Direction::new(Conditions::default(), 1);
        let now = Instant::now();
        direction.set(Conditions {
            partitioned: true,
            loss: 1.0,
            ..Conditions::default()
        });
        assert_eq!(
            direction.admit_datagram(now, 10).map(|_| ()),
            Err(Refusal::Partition),
            "a partition is checked first"
        );
        direction.set(Conditions {
            loss: 1.0,
            ..Conditions::default()
        });
        assert_eq!(
            direction.admit_datagram(now, 10).map(|_| ()),
            Err(Refusal::Loss)
        );
        let stats = direction.stats();
        assert_eq!((stats.dropped_partition, stats.dropped_loss), (1, 1));
        assert_eq!((stats.packets, stats.queued_bytes), (0, 0));
    }

    #[test]
    fn the_datagram_buffer_tail_drops_and_frees_on_release() {
        let direction = Direction::new(
            Conditions {
                delay: Duration::from_secs(1),
                ..Conditions::default()
            },
            1,
        );
        let now = Instant::now();
        let held: Vec<Admitted> = (0..16)
            .map(|_| {
                direction
                    .admit_datagram(now, 64 * KIB)
                    .expect("fits in 1 MiB")
            })
            .collect();
        assert_eq!(direction.stats().queued_bytes, 1024 * 1024);
        assert_eq!(
            direction.admit_datagram(now, 1).map(|_| ()),
            Err(Refusal::QueueFull)
        );
        assert_eq!(direction.stats().dropped_queue_full, 1);
        // TCP bytes do not count against the datagram buffer.
        let chunk = direction.admit_chunk(now, 16 * KIB);
        assert_eq!(direction.stats().queued_bytes, 1024 * 1024 + 16 * 1024);
        drop(held);
        drop(chunk);
        assert_eq!(direction.stats().queued_bytes, 0);
        assert!(direction.admit_datagram(now, 64 * KIB).is_ok());
    }

    #[test]
    fn a_larger_bandwidth_has_a_larger_buffer() {
        assert_eq!(datagram_buffer_bytes(None), 1024 * 1024);
        assert_eq!(datagram_buffer_bytes(Some(1_000_000)), 1024 * 1024);
        assert_eq!(datagram_buffer_bytes(Some(100_000_000)), 10_000_000);
    }

    #[test]
    fn a_lost_chunk_is_late_by_the_retransmission_timeout_alone() {
        let direction = Direction::new(
            Conditions {
                delay: Duration::from_millis(300),
                loss: 1.0,
                ..Conditions::default()
            },
            1,
        );
        let now = Instant::now();
        let lost = direction.admit_chunk(now, 100);
        assert_eq!(lost.due, now + Duration::from_millis(300 + 600));
        assert_eq!(direction.stats().retransmitted, 1);
        // Other traffic of the direction is not held back by it.
        direction.set(Conditions {
            delay: Duration::from_millis(300),
            ..Conditions::default()
        });
        let next = direction.admit_datagram(now, 100).expect("admitted");
        assert_eq!(next.due, now + Duration::from_millis(300));
        assert_eq!(
            retransmission_timeout(Duration::ZERO),
            RETRANSMISSION_TIMEOUT_MIN
        );
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let mut random = StdRng::seed_from_u64(3);
        let bound = Duration::from_millis(5);
        for _ in 0..1000 {
            assert!(draw_jitter(&mut random, bound) <= bound);
        }
        assert_eq!(draw_jitter(&mut random, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn streams_wait_only_when_the_bandwidth_queue_overflows_the_buffer() {
        let conditions = Conditions {
            bandwidth: Some(1024 * 1024),
            ..Conditions::default()
        };
        let direction = Direction::new(conditions, 1);
        let now = Instant::now();
        // The buffer is 1 MiB, one second at 1 MiB/s.
        let chunks: Vec<Admitted> = (0..64)
            .map(|_| direction.admit_chunk(now, 16 * KIB))
            .collect();
        assert_eq!(direction.stream_wait(now), None);
        let one_more = direction.admit_chunk(now, 16 * KIB);
        let wait = direction.stream_wait(now).expect("over the buffer");
        assert!(wait <= Duration::from_millis(16), "{wait:?}");
        assert_eq!(direction.stream_wait(now + Duration::from_secs(2)), None);
        drop((chunks, one_more));
        direction.set(Conditions::default());
        assert_eq!(direction.stream_wait(now), None, "no limit, no wait");
    }
}
