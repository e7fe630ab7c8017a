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
//! A region that comes back after being down is **returning**: it is chosen
//! again only once it has caught up, that is once every replication
//! neighbour (`meridian_topology::Topology::replication_neighbours`) that was
//! up at its return has had confirmed, by the returning region, everything it
//! held at that moment (the checkpoints each node reports in `Health`), or
//! after [`CATCH_UP_MAX`]. Until then its clients stay where they were, so a
//! consumer group does not come home to a region that has not yet heard of
//! the messages and acknowledgements made while it was away. A returning
//! region is still chosen when no other region is up.
//!
//! The decision rules are pure functions ([`choose_region`],
//! [`choice_is_final`], [`RegionHealth::observe`], [`Returning::caught_up`])
//! tested without I/O.
//!
//! Left out for now: measured round-trip times, and sharing views between
//! routers (see DESIGN.md); the choice uses topology link latency only.

use parking_lot::RwLock;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::info;

/// Failed probes in a row after which a region is down.
pub(crate) const FAILURES_UNTIL_DOWN: u32 = 2;
/// Longest a request waits for the first probes right after start.
pub(crate) const FIRST_ROUND_WAIT: Duration = Duration::from_millis(1200);
/// Longest a returning region waits to catch up before it is chosen anyway
/// (a peer that stays behind must not keep its clients away for ever).
pub(crate) const CATCH_UP_MAX: Duration = Duration::from_secs(30);

/// What a node's last answered probe said about replication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// The node's last commit-log sequence.
    pub last_sequence: u64,
    /// Per peer: the peer confirmed every record through this sequence.
    pub checkpoints: BTreeMap<String, u64>,
}

/// A region back after being down, and what it must catch up on.
#[derive(Debug, Clone)]
pub(crate) struct Returning {
    /// Per region up at the return: its last sequence then.
    targets: BTreeMap<String, u64>,
    since: Instant,
}

impl Returning {
    /// Whether `region` has confirmed, from every target region that is
    /// still up, what that region held at the return; or waited long enough.
    pub(crate) fn caught_up<'a>(
        &self,
        region: &str,
        now: Instant,
        progress_of: impl Fn(&str) -> Option<&'a Progress>,
    ) -> bool {
        if now.duration_since(self.since) >= CATCH_UP_MAX {
            return true;
        }
        self.targets
            .iter()
            .all(|(peer, target)| match progress_of(peer) {
                // Down now: nothing more will come from it.
                None => true,
                Some(progress) => progress
                    .checkpoints
                    .get(region)
                    .is_some_and(|confirmed| confirmed >= target),
            })
    }
}

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

    pub(crate) fn state(&self) -> State {
        self.state
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

/// Everything the view holds about one region.
#[derive(Debug, Clone, Default)]
struct Entry {
    health: RegionHealth,
    /// From the last answered probe.
    progress: Option<Progress>,
    /// Set while the region is back but has not caught up.
    returning: Option<Returning>,
}

impl Entry {
    fn is_up(&self) -> bool {
        self.health.is_up()
    }

    fn is_probed(&self) -> bool {
        self.health.is_probed()
    }
}

#[derive(Debug)]
struct Inner {
    regions: RwLock<BTreeMap<String, Entry>>,
    /// Per region, the regions its replicator connects to (whose
    /// checkpoints show what it confirmed); `None`: every region.
    neighbours: Option<BTreeMap<String, BTreeSet<String>>>,
    /// Bumped whenever a region is probed for the first time or changes state.
    changes: watch::Sender<u64>,
}

impl HealthView {
    /// A view of `regions`, none of them probed yet (so none up), where a
    /// returning region waits to catch up with every other region.
    #[cfg(test)]
    pub(crate) fn new(regions: impl IntoIterator<Item = String>) -> Self {
        Self::with_neighbours(regions, None)
    }

    /// A view of the regions of `topology`, where a returning region waits
    /// to catch up only with its replication neighbours (records of other
    /// regions reach it through them).
    pub(crate) fn of_topology(topology: &meridian_topology::Topology) -> Self {
        let neighbours = topology
            .regions
            .keys()
            .map(|name| {
                let neighbours = topology
                    .replication_neighbours(name)
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                (name.clone(), neighbours)
            })
            .collect();
        Self::with_neighbours(topology.regions.keys().cloned(), Some(neighbours))
    }

    fn with_neighbours(
        regions: impl IntoIterator<Item = String>,
        neighbours: Option<BTreeMap<String, BTreeSet<String>>>,
    ) -> Self {
        let regions = regions
            .into_iter()
            .map(|name| (name, Entry::default()))
            .collect();
        HealthView {
            inner: Arc::new(Inner {
                regions: RwLock::new(regions),
                neighbours,
                changes: watch::Sender::new(0),
            }),
        }
    }

    /// Records a probe of `region` (with what the node said, when it
    /// answered); returns the new state when it changed.
    pub(crate) fn record(
        &self,
        region: &str,
        outcome: Outcome,
        progress: Option<Progress>,
    ) -> Option<State> {
        let (first_probe, change, settled) = {
            let mut regions = self.inner.regions.write();
            let (first_probe, previous, change) = {
                let entry = regions.entry(region.to_owned()).or_default();
                let first_probe = !entry.is_probed();
                let previous = entry.health.state();
                let change = entry.health.observe(outcome);
                if progress.is_some() {
                    entry.progress = progress;
                }
                if !entry.is_up() {
                    entry.returning = None;
                }
                (first_probe, previous, change)
            };
            if change == Some(State::Up) && previous == State::Down {
                let neighbour = |name: &str| {
                    self.inner.neighbours.as_ref().is_none_or(|neighbours| {
                        neighbours
                            .get(region)
                            .is_some_and(|neighbours| neighbours.contains(name))
                    })
                };
                let targets = regions
                    .iter()
                    .filter(|(name, entry)| {
                        name.as_str() != region && entry.is_up() && neighbour(name)
                    })
                    .filter_map(|(name, entry)| {
                        Some((name.clone(), entry.progress.as_ref()?.last_sequence))
                    })
                    .collect();
                if let Some(entry) = regions.get_mut(region) {
                    entry.returning = Some(Returning {
                        targets,
                        since: Instant::now(),
                    });
                }
                info!(
                    region,
                    "region is back; its clients return once it has caught up"
                );
            }
            // Any probe may complete a returning region's catch-up.
            let now = Instant::now();
            let settled: Vec<String> = regions
                .iter()
                .filter_map(|(name, entry)| {
                    let returning = entry.returning.as_ref()?;
                    let progress_of = |peer: &str| {
                        regions
                            .get(peer)
                            .filter(|peer| peer.is_up())
                            .and_then(|peer| peer.progress.as_ref())
                    };
                    returning
                        .caught_up(name, now, progress_of)
                        .then(|| name.clone())
                })
                .collect();
            for name in &settled {
                if let Some(entry) = regions.get_mut(name) {
                    entry.returning = None;
                }
                info!(region = %name, "region has caught up; its clients return to it");
            }
            (first_probe, change, !settled.is_empty())
        };
        if first_probe || change.is_some() || settled {
            self.inner
                .changes
                .send_modify(|generation| *generation = generation.wrapping_add(1));
        }
        change
    }

    /// Whether `region` answers its probes now (no waiting for a first probe).
    pub(crate) fn is_up(&self, region: &str) -> bool {
        self.inner
            .regions
            .read()
            .get(region)
            .is_some_and(Entry::is_up)
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
                let is_up = |name: &str| regions.get(name).is_some_and(Entry::is_up);
                let is_ready = |name: &str| {
                    regions
                        .get(name)
                        .is_some_and(|entry| entry.is_up() && entry.returning.is_none())
                };
                // A region the view does not know is never probed: do not wait for it.
                let is_probed = |name: &str| regions.get(name).is_none_or(Entry::is_probed);
                // A returning region only when no region that stayed is up.
                let chosen = choose_region(own, candidates_by_distance, is_ready)
                    .or_else(|| choose_region(own, candidates_by_distance, is_up));
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

    fn progress(last_sequence: u64, checkpoints: &[(&str, u64)]) -> Progress {
        Progress {
            last_sequence,
            checkpoints: checkpoints
                .iter()
                .map(|(peer, sequence)| ((*peer).to_owned(), *sequence))
                .collect(),
        }
    }

    #[test]
    fn a_returning_region_has_caught_up_once_each_peer_confirmed_its_target() {
        let now = Instant::now();
        let returning = Returning {
            targets: BTreeMap::from([("b".to_owned(), 40), ("c".to_owned(), 7)]),
            since: now,
        };
        let b_behind = progress(55, &[("a", 39)]);
        let b_done = progress(60, &[("a", 40)]);
        let c_done = progress(9, &[("a", 8)]);
        let check = |b: &Progress, c: Option<&Progress>, at: Instant| {
            let mut peers = BTreeMap::from([("b", b.clone())]);
            if let Some(c) = c {
                peers.insert("c", c.clone());
            }
            returning.caught_up("a", at, |peer| peers.get(peer))
        };
        assert!(
            !check(&b_behind, Some(&c_done), now),
            "b has not confirmed 40 yet"
        );
        assert!(check(&b_done, Some(&c_done), now));
        assert!(
            check(&b_done, None, now),
            "a peer that went down does not hold it back"
        );
        assert!(
            check(&b_behind, Some(&c_done), now + CATCH_UP_MAX),
            "never held back longer than CATCH_UP_MAX"
        );
    }

    #[tokio::test]
    async fn a_returning_own_region_is_skipped_until_it_has_caught_up() {
        let view = HealthView::new(["a".to_owned(), "c".to_owned()]);
        let candidates = [("a", 0), ("c", 10)];
        view.record("a", Outcome::Answered, Some(progress(5, &[("c", 5)])));
        view.record("c", Outcome::Answered, Some(progress(20, &[("a", 20)])));
        assert_eq!(view.choose("a", &candidates).await, Some("a"));
        // a dies and comes back while c holds 30 records a has not confirmed.
        view.record("a", Outcome::Failed, None);
        view.record("a", Outcome::Failed, None);
        assert_eq!(view.choose("a", &candidates).await, Some("c"));
        view.record("c", Outcome::Answered, Some(progress(30, &[("a", 20)])));
        view.record("a", Outcome::Answered, Some(progress(5, &[("c", 5)])));
        assert_eq!(
            view.choose("a", &candidates).await,
            Some("c"),
            "a is back but behind"
        );
        view.record("c", Outcome::Answered, Some(progress(31, &[("a", 30)])));
        assert_eq!(view.choose("a", &candidates).await, Some("a"), "caught up");
        // With no other region up, a returning region is chosen at once.
        view.record("c", Outcome::Failed, None);
        view.record("c", Outcome::Failed, None);
        view.record("a", Outcome::Failed, None);
        view.record("a", Outcome::Failed, None);
        view.record("a", Outcome::Answered, Some(progress(5, &[])));
        assert_eq!(view.choose("a", &candidates).await, Some("a"));
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
        view.record("b", Outcome::Answered, None);
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
        view.record("a", Outcome::Answered, None);
        assert_eq!(waiting.await.expect("choose task").as_deref(), Some("a"));
        assert_eq!(view.choose("a", &candidates).await, Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn choose_gives_up_waiting_after_the_first_round() {
        let view = HealthView::new(["a".to_owned(), "b".to_owned()]);
        view.record("b", Outcome::Answered, None);
        let started = Instant::now();
        assert_eq!(view.choose("a", &[("a", 0), ("b", 30)]).await, Some("b"));
        assert_eq!(started.elapsed(), FIRST_ROUND_WAIT);
    }
}
