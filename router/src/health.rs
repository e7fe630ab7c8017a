//! The router's view of which regions are up, and the choice of region.
//!
//! The view is fed by the probers (the `probe` module): a region is *up*
//! after one answered probe and *down* after [`FAILURES_UNTIL_DOWN`] failed
//! probes in a row, or at once when its node answers for another region (a
//! mis-wired topology must not attract traffic). One failure is tolerated so
//! that a single lost probe does not move every client. With probes every
//! 500 ms, a killed node (refusing connections) is seen down about 1 s after
//! it dies, a hung one (each probe timing out after 1 s) after about 2.5 s.
//!
//! The view starts **pessimistic**: a region never probed is not up, so the
//! router never sends clients to a node it has not seen alive. The cost is
//! at start-up: [`HealthView::choose`] waits (at most [`FIRST_ROUND_WAIT`])
//! until first probes have settled its answer, rather than failing the
//! request. Only the regions that could change the answer are waited for:
//! once the own region has answered, nothing is.
//!
//! The decision rules are pure functions ([`choose_region`],
//! [`choice_is_final`], [`RegionHealth::observe`]) tested without I/O.
//!
//! Left out for now: measured round-trip times, replication lag and the
//! staleness budget, and sharing views between routers (see DESIGN.md); the
//! choice uses topology link latency only.

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Failed probes in a row after which a region is down.
pub(crate) const FAILURES_UNTIL_DOWN: u32 = 2;
/// Longest a request waits for the first probes right after start.
pub(crate) const FIRST_ROUND_WAIT: Duration = Duration::from_millis(1200);

/// The region to send clients to: `own` while it is up, else the nearest up
/// region of `candidates_by_distance` (the first one listed among equally
/// near ones). `None` when no region is up.
pub(crate) fn choose_region<'a>(
    own: &'a str,
    candidates_by_distance: &[(&'a str, u32)],
    is_up: impl Fn(&str) -> bool,
) -> Option<&'a str> {
    if is_up(own) {
        return Some(own);
    }
    candidates_by_distance
        .iter()
        .filter(|(name, _)| is_up(name))
        .min_by_key(|(_, distance)| *distance)
        .map(|(name, _)| *name)
}

/// Whether `chosen` (the answer of [`choose_region`]) can no longer change
/// with the outcome of a first probe: every region that would be preferred
/// to it has been probed at least once.
pub(crate) fn choice_is_final(
    own: &str,
    candidates_by_distance: &[(&str, u32)],
    chosen: Option<&str>,
    is_probed: impl Fn(&str) -> bool,
) -> bool {
    if chosen == Some(own) {
        return true;
    }
    if !is_probed(own) {
        return false;
    }
    let chosen_rank = chosen.and_then(|chosen| {
        candidates_by_distance
            .iter()
            .position(|(name, _)| *name == chosen)
            .map(|index| (candidates_by_distance[index].1, index))
    });
    candidates_by_distance
        .iter()
        .enumerate()
        .filter(|(index, (_, distance))| chosen_rank.is_none_or(|rank| (*distance, *index) < rank))
        .all(|(_, (name, _))| is_probed(name))
}

/// What the router believes about a region.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum State {
    /// Not probed successfully yet, and not failed often enough to be down.
    #[default]
    Unknown,
    Up,
    Down,
}

/// How one probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The node answered for the expected region.
    Answered,
    /// No answer: refused, timed out or an RPC error.
    Failed,
    /// The node answered for another region.
    WrongRegion,
}

/// The probe history of one region, reduced to what the decision needs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RegionHealth {
    state: State,
    probes: u64,
    consecutive_failures: u32,
}

impl RegionHealth {
    /// Records one probe; returns the new state when it changed.
    pub(crate) fn observe(&mut self, outcome: Outcome) -> Option<State> {
        self.probes = self.probes.saturating_add(1);
        let next = match outcome {
            Outcome::Answered => {
                self.consecutive_failures = 0;
                State::Up
            }
            Outcome::WrongRegion => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                State::Down
            }
            Outcome::Failed => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.consecutive_failures >= FAILURES_UNTIL_DOWN {
                    State::Down
                } else {
                    self.state
                }
            }
        };
        if next == self.state {
            return None;
        }
        self.state = next;
        Some(next)
    }

    pub(crate) fn is_up(&self) -> bool {
        self.state == State::Up
    }

    pub(crate) fn is_probed(&self) -> bool {
        self.probes > 0
    }
}

/// The shared health view: written by the probers, read by every request.
#[derive(Debug, Clone)]
pub(crate) struct HealthView {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    regions: RwLock<BTreeMap<String, RegionHealth>>,
    /// Bumped whenever a region is probed for the first time or changes state.
    changes: watch::Sender<u64>,
}

impl HealthView {
    /// A view of `regions`, none of them probed yet (so none up).
    pub(crate) fn new(regions: impl IntoIterator<Item = String>) -> Self {
        let regions = regions
            .into_iter()
            .map(|name| (name, RegionHealth::default()))
            .collect();
        HealthView {
            inner: Arc::new(Inner {
                regions: RwLock::new(regions),
                changes: watch::Sender::new(0),
            }),
        }
    }

    /// Records a probe of `region`; returns the new state when it changed.
    pub(crate) fn record(&self, region: &str, outcome: Outcome) -> Option<State> {
        let (first_probe, change) = {
            let mut regions = self.inner.regions.write();
            let health = regions.entry(region.to_owned()).or_default();
            let first_probe = !health.is_probed();
            (first_probe, health.observe(outcome))
        };
        if first_probe || change.is_some() {
            self.inner
                .changes
                .send_modify(|generation| *generation = generation.wrapping_add(1));
        }
        change
    }

    /// [`choose_region`] over this view. Right after start, waits (at most
    /// [`FIRST_ROUND_WAIT`]) until first probes can no longer change the answer.
    pub(crate) async fn choose<'a>(
        &self,
        own: &'a str,
        candidates_by_distance: &[(&'a str, u32)],
    ) -> Option<&'a str> {
        let deadline = Instant::now() + FIRST_ROUND_WAIT;
        let mut changes = self.inner.changes.subscribe();
        loop {
            changes.borrow_and_update();
            let (chosen, is_final) = {
                let regions = self.inner.regions.read();
                let is_up = |name: &str| regions.get(name).is_some_and(RegionHealth::is_up);
                // A region the view does not know is never probed: do not wait for it.
                let is_probed = |name: &str| regions.get(name).is_none_or(RegionHealth::is_probed);
                let chosen = choose_region(own, candidates_by_distance, is_up);
                let is_final = choice_is_final(own, candidates_by_distance, chosen, is_probed);
                (chosen, is_final)
            };
            if is_final {
                return chosen;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // Waited long enough, or the view is gone: answer with what is known.
                Ok(Err(_)) | Err(_) => return chosen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANDIDATES: [(&str, u32); 3] = [("a", 0), ("c", 10), ("b", 30)];

    fn up<'a>(regions: &'a [&'a str]) -> impl Fn(&str) -> bool + 'a {
        move |name| regions.contains(&name)
    }

    #[test]
    fn own_region_while_up() {
        assert_eq!(
            choose_region("a", &CANDIDATES, up(&["a", "b", "c"])),
            Some("a")
        );
        assert_eq!(choose_region("a", &CANDIDATES, up(&["a"])), Some("a"));
    }

    #[test]
    fn nearest_up_region_when_own_is_down() {
        assert_eq!(choose_region("a", &CANDIDATES, up(&["b", "c"])), Some("c"));
        assert_eq!(choose_region("a", &CANDIDATES, up(&["b"])), Some("b"));
    }

    #[test]
    fn none_when_every_region_is_down() {
        assert_eq!(choose_region("a", &CANDIDATES, up(&[])), None);
        assert_eq!(choose_region("a", &[], up(&[])), None);
    }

    #[test]
    fn nearest_wins_even_if_listed_later() {
        let unordered = [("a", 0), ("far", 90), ("near", 5)];
        assert_eq!(
            choose_region("a", &unordered, up(&["far", "near"])),
            Some("near")
        );
        let tied = [("a", 0), ("x", 5), ("y", 5)];
        assert_eq!(choose_region("a", &tied, up(&["x", "y"])), Some("x"));
    }

    #[test]
    fn own_region_is_chosen_even_when_not_a_candidate() {
        assert_eq!(choose_region("a", &[("b", 3)], up(&["a", "b"])), Some("a"));
    }

    #[test]
    fn choice_of_own_region_is_final_at_once() {
        assert!(choice_is_final("a", &CANDIDATES, Some("a"), up(&[])));
    }

    #[test]
    fn choice_waits_for_nearer_unprobed_regions() {
        // c is nearer than b and not probed yet: it may still come up.
        assert!(!choice_is_final(
            "a",
            &CANDIDATES,
            Some("b"),
            up(&["a", "b"])
        ));
        assert!(choice_is_final(
            "a",
            &CANDIDATES,
            Some("b"),
            up(&["a", "c"])
        ));
        // Farther regions do not matter.
        assert!(choice_is_final("a", &CANDIDATES, Some("c"), up(&["a"])));
        // Own region not probed: it would win if it came up.
        assert!(!choice_is_final("a", &CANDIDATES, Some("c"), up(&["c"])));
    }

    #[test]
    fn no_choice_is_final_once_everything_was_probed() {
        assert!(!choice_is_final("a", &CANDIDATES, None, up(&["a", "c"])));
        assert!(choice_is_final(
            "a",
            &CANDIDATES,
            None,
            up(&["a", "b", "c"])
        ));
    }

    #[test]
    fn one_answer_makes_a_region_up() {
        let mut health = RegionHealth::default();
        assert!(!health.is_up());
        assert_eq!(health.observe(Outcome::Answered), Some(State::Up));
        assert!(health.is_up());
        assert_eq!(health.observe(Outcome::Answered), None);
    }

    #[test]
    fn two_failures_in_a_row_make_a_region_down() {
        let mut health = RegionHealth::default();
        health.observe(Outcome::Answered);
        assert_eq!(health.observe(Outcome::Failed), None);
        assert!(health.is_up(), "one failure is tolerated");
        assert_eq!(health.observe(Outcome::Answered), None);
        assert_eq!(health.observe(Outcome::Failed), None);
        assert_eq!(health.observe(Outcome::Failed), Some(State::Down));
        assert!(!health.is_up());
        assert_eq!(
            health.observe(Outcome::Failed),
            None,
            "down is reported once"
        );
        assert_eq!(health.observe(Outcome::Answered), Some(State::Up));
    }

    #[test]
    fn a_node_of_another_region_is_down_at_once() {
        let mut health = RegionHealth::default();
        health.observe(Outcome::Answered);
        assert_eq!(health.observe(Outcome::WrongRegion), Some(State::Down));
    }

    #[test]
    fn never_answered_region_is_probed_but_not_up() {
        let mut health = RegionHealth::default();
        assert!(!health.is_probed());
        assert_eq!(health.observe(Outcome::Failed), None);
        assert!(health.is_probed());
        assert!(!health.is_up());
        assert_eq!(health.observe(Outcome::Failed), Some(State::Down));
    }

    #[tokio::test(start_paused = true)]
    async fn choose_waits_for_the_first_probe_of_the_own_region() {
        let view = HealthView::new(["a".to_owned(), "b".to_owned()]);
        view.record("b", Outcome::Answered);
        let candidates = [("a", 0), ("b", 30)];
        let waiting = {
            let view = view.clone();
            tokio::spawn(async move {
                view.choose("a", &[("a", 0), ("b", 30)])
                    .await
                    .map(str::to_owned)
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "a is not probed yet, and it would win"
        );
        view.record("a", Outcome::Answered);
        assert_eq!(waiting.await.expect("choose task").as_deref(), Some("a"));
        assert_eq!(view.choose("a", &candidates).await, Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn choose_gives_up_waiting_after_the_first_round() {
        let view = HealthView::new(["a".to_owned(), "b".to_owned()]);
        view.record("b", Outcome::Answered);
        let started = Instant::now();
        assert_eq!(view.choose("a", &[("a", 0), ("b", 30)]).await, Some("b"));
        assert_eq!(started.elapsed(), FIRST_ROUND_WAIT);
    }
}
