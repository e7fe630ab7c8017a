//! Long polling: a receive that finds nothing waits, then tries again, until
//! something is found, its time is up or the node stops.
//!
//! [`long_poll`] re-tries after every commit of its topic (new messages), every
//! invisibility change (a nack may make a message visible sooner) and at the
//! earliest invisibility deadline the last try reported; it sleeps in between.
//! Time comes from a [`Clock`] for message deadlines (ms since the Unix
//! epoch) and from tokio's clock for sleeping, so tests run it in paused time
//! with a [`TokioClock`]. While it waits it counts itself in a
//! [`WaitingReceives`] gauge, which the node reports in `Health` (and tests
//! use to know a poll is waiting).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Wall-clock time as message deadlines use it.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
            })
    }
}

/// A clock that starts at `start_ms` and advances with tokio's clock: in a
/// test with paused time it moves only when the test advances time.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start_ms: i64,
    started: Instant,
}

#[cfg(test)]
impl TokioClock {
    pub fn starting_at(start_ms: i64) -> Self {
        TokioClock {
            start_ms,
            started: Instant::now(),
        }
    }
}

#[cfg(test)]
impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.start_ms.saturating_add(elapsed)
    }
}

/// How many long polls are waiting right now.
#[derive(Debug, Clone, Default)]
pub struct WaitingReceives(Arc<AtomicU64>);

impl WaitingReceives {
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn enter(&self) -> WaitingGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        WaitingGuard(self.0.clone())
    }
}

/// Counts one waiting poll until dropped (also when the poll is cancelled).
struct WaitingGuard(Arc<AtomicU64>);

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What wakes a waiting poll.
#[derive(Debug, Clone)]
pub struct Wakers {
    /// Changes on every commit that stored messages of the polled topic.
    pub commits: watch::Receiver<u64>,
    /// Changes on every invisibility change.
    pub invisibility_changes: watch::Receiver<u64>,
    /// Ends every poll (node stopping).
    pub shutdown: CancellationToken,
}

/// One try of a long poll.
#[derive(Debug)]
pub struct Try<T> {
    /// What was found; `None` to wait and try again.
    pub found: Option<T>,
    /// When, in ms since the Unix epoch, the earliest invisible message of
    /// the polled queues becomes visible again, if any.
    pub next_deadline_ms: Option<i64>,
}

/// Tries `attempt(now_ms)` until it finds something or `poll_for` has passed
/// (then `Ok(None)`), or the node stops (`Ok(None)` at once). An error of a
/// try ends the poll with that error.
pub async fn long_poll<T, E, F, Fut>(
    clock: &dyn Clock,
    poll_for: Duration,
    mut wakers: Wakers,
    waiting: &WaitingReceives,
    mut attempt: F,
) -> Result<Option<T>, E>
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = Result<Try<T>, E>>,
{
    let poll_until = Instant::now() + poll_for;
    loop {
        // Mark the current versions seen before trying, so that a change
        // during the try wakes the wait below.
        wakers.commits.borrow_and_update();
        wakers.invisibility_changes.borrow_and_update();
        let now_ms = clock.now_ms();
        let tried = attempt(now_ms).await?;
        if tried.found.is_some() {
            return Ok(tried.found);
        }
        if Instant::now() >= poll_until || wakers.shutdown.is_cancelled() {
            return Ok(None);
        }
        let mut wake = poll_until;
        if let Some(deadline_ms) = tried.next_deadline_ms {
            let wait = Duration::from_millis(u64::try_from(deadline_ms - now_ms).unwrap_or(0));
            wake = wake.min(Instant::now() + wait);
        }
        let _waiting = waiting.enter();
        tokio::select! {
            biased;
            () = wakers.shutdown.cancelled() => return Ok(None),
            changed = wakers.commits.changed() => if changed.is_err() { return Ok(None) },
            changed = wakers.invisibility_changes.changed() => if changed.is_err() { return Ok(None) },
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const START_MS: i64 = 1_700_000_000_000;

    struct Setup {
        clock: TokioClock,
        commits: watch::Sender<u64>,
        invisibility_changes: watch::Sender<u64>,
        shutdown: CancellationToken,
        waiting: WaitingReceives,
    }

    impl Setup {
        fn new() -> Self {
            Setup {
                clock: TokioClock::starting_at(START_MS),
                commits: watch::Sender::new(0),
                invisibility_changes: watch::Sender::new(0),
                shutdown: CancellationToken::new(),
                waiting: WaitingReceives::default(),
            }
        }

        fn wakers(&self) -> Wakers {
            Wakers {
                commits: self.commits.subscribe(),
                invisibility_changes: self.invisibility_changes.subscribe(),
                shutdown: self.shutdown.clone(),
            }
        }
    }

    /// A poll over a shared "store": a list of found values and the next
    /// deadline; records the times (ms since start) of its tries.
    struct Store {
        available: Mutex<Option<&'static str>>,
        next_deadline_ms: Mutex<Option<i64>>,
        tries: Mutex<Vec<i64>>,
    }

    impl Store {
        fn new() -> Arc<Store> {
            Arc::new(Store {
                available: Mutex::new(None),
                next_deadline_ms: Mutex::new(None),
                tries: Mutex::new(Vec::new()),
            })
        }

        fn tries(&self) -> Vec<i64> {
            self.tries.lock().expect("lock").clone()
        }
    }

    fn spawn_poll(
        setup: &Setup,
        store: &Arc<Store>,
        poll_for: Duration,
    ) -> tokio::task::JoinHandle<(Option<&'static str>, Instant)> {
        let (clock, wakers, waiting, store) = (
            setup.clock,
            setup.wakers(),
            setup.waiting.clone(),
            store.clone(),
        );
        tokio::spawn(async move {
            let found = long_poll(&clock, poll_for, wakers, &waiting, |now_ms| {
                let store = store.clone();
                async move {
                    store.tries.lock().expect("lock").push(now_ms - START_MS);
                    Ok::<_, ()>(Try {
                        found: store.available.lock().expect("lock").take(),
                        next_deadline_ms: *store.next_deadline_ms.lock().expect("lock"),
                    })
                }
            })
            .await
            .expect("no try fails");
            (found, Instant::now())
        })
    }

    /// Lets spawned tasks run until the poll is waiting (a real signal: the gauge).
    async fn until_waiting(setup: &Setup, count: u64) {
        while setup.waiting.count() != count {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_wakes_a_waiting_poll_at_once() {
        let setup = Setup::new();
        let store = Store::new();
        let started = Instant::now();
        let poll = spawn_poll(&setup, &store, Duration::from_secs(20));
        until_waiting(&setup, 1).await;
        tokio::time::advance(Duration::from_millis(1_500)).await;
        *store.available.lock().expect("lock") = Some("new message");
        setup.commits.send_modify(|version| *version += 1);
        let (found, at) = poll.await.expect("poll task");
        assert_eq!(found, Some("new message"));
        assert_eq!(at - started, Duration::from_millis(1_500));
        assert_eq!(store.tries(), [0, 1_500]);
        assert_eq!(setup.waiting.count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_invisibility_change_wakes_a_waiting_poll() {
        let setup = Setup::new();
        let store = Store::new();
        let poll = spawn_poll(&setup, &store, Duration::from_secs(20));
        until_waiting(&setup, 1).await;
        tokio::time::advance(Duration::from_millis(300)).await;
        // A nack shortened an invisibility: the poll re-tries and learns the
        // new deadline, then wakes exactly then.
        *store.next_deadline_ms.lock().expect("lock") = Some(START_MS + 1_300);
        setup
            .invisibility_changes
            .send_modify(|version| *version += 1);
        // Waiting again after its second try.
        while store.tries().len() < 2 || setup.waiting.count() != 1 {
            tokio::task::yield_now().await;
        }
        *store.available.lock().expect("lock") = Some("redelivery");
        let (found, _) = poll.await.expect("poll task");
        assert_eq!(found, Some("redelivery"));
        assert_eq!(store.tries(), [0, 300, 1_300]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_earliest_deadline_wakes_the_poll_without_any_signal() {
        let setup = Setup::new();
        let store = Store::new();
        *store.next_deadline_ms.lock().expect("lock") = Some(START_MS + 4_000);
        let poll = spawn_poll(&setup, &store, Duration::from_secs(20));
        until_waiting(&setup, 1).await;
        *store.available.lock().expect("lock") = Some("visible again");
        let (found, _) = poll.await.expect("poll task");
        assert_eq!(found, Some("visible again"));
        assert_eq!(store.tries(), [0, 4_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_with_nothing_ends_exactly_when_its_time_is_up() {
        let setup = Setup::new();
        let store = Store::new();
        let started = Instant::now();
        let poll = spawn_poll(&setup, &store, Duration::from_secs(20));
        let (found, at) = poll.await.expect("poll task");
        assert_eq!(found, None);
        assert_eq!(at - started, Duration::from_secs(20));
        assert_eq!(store.tries(), [0, 20_000]);
        assert_eq!(setup.waiting.count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_ends_every_waiting_poll_at_once() {
        let setup = Setup::new();
        let store = Store::new();
        let started = Instant::now();
        let polls = [
            spawn_poll(&setup, &store, Duration::from_secs(20)),
            spawn_poll(&setup, &store, Duration::from_secs(20)),
        ];
        until_waiting(&setup, 2).await;
        setup.shutdown.cancel();
        for poll in polls {
            let (found, at) = poll.await.expect("poll task");
            assert_eq!(found, None);
            assert_eq!(at, started);
        }
        assert_eq!(setup.waiting.count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_try_ends_the_poll_with_its_error() {
        let setup = Setup::new();
        let outcome: Result<Option<()>, &str> = long_poll(
            &setup.clock,
            Duration::from_secs(20),
            setup.wakers(),
            &setup.waiting,
            |_| async { Err("storage failed") },
        )
        .await;
        assert_eq!(outcome, Err("storage failed"));
    }
}
