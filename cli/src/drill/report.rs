//! What a drill found, computed from its ledger alone.
//!
//! - **Lost**: sends answered OK whose message id no consumer of the group
//!   received by the end of the drain.
//! - **Duplicates after ack**: deliveries to the group of a message the group
//!   had already acknowledged (a redelivery after an invisible time expired
//!   without an ack is counted apart, as a redelivery).
//! - **Recovery**, per step and client: from the step to the first success
//!   (a send answered OK, a message received) that follows the client's
//!   last failure in the step's window (up to the next step); with no
//!   failure, to its first success after the step, even if that comes after
//!   later steps. Conservative: a lucky success in between does not end the
//!   outage.
//! - **Replication lag**, per region: from a send's OK to the message's
//!   delivery to that region's observer, for every region but the first to
//!   deliver it (taken as where it was stored).

use super::load::{ClientInfo, Event, EventKind, Kind};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

/// Lost and duplicate ids listed up to this many; beyond, counted.
const LISTED_IDS_MAX: usize = 50;
/// Ids the text report lists per line before it only counts them.
const TEXT_IDS_MAX: usize = 5;

/// A step as it was played.
#[derive(Debug, Clone, Serialize)]
pub struct PlayedStep {
    pub index: usize,
    /// What the step did, e.g. `kill the node of eu-west`.
    pub action: String,
    /// When it took effect, ms since the drill started.
    pub at_ms: f64,
    /// What the deployment answered.
    pub outcome: String,
    /// Set when the step's `when` condition was not reached in time.
    pub condition_failed: Option<String>,
}

/// One client's recovery after one step.
#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    pub client: String,
    pub kind: Kind,
    /// ms; `None`: no success before the next step or the end.
    pub recovery_ms: Option<f64>,
    /// Failed calls in the step's window.
    pub failures: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    #[serde(flatten)]
    pub step: PlayedStep,
    pub recovery: Vec<Recovery>,
    /// Deliveries after an ack between this step and the next.
    pub duplicates_after_ack: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionLag {
    pub region: String,
    /// Messages this region delivered that were stored elsewhere first.
    pub replicated: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Acknowledged messages this region's observer never saw.
    pub missing: usize,
}

/// Records a returning node had accepted and not yet replicated, sent on
/// its return (see `meridian.v1.HealthResponse.unconfirmed_at_start`).
#[derive(Debug, Clone, Serialize)]
pub struct Reconciled {
    pub region: String,
    pub peer: String,
    /// Commit-log sequences (after, through].
    pub after_sequence: u64,
    pub through_sequence: u64,
    /// Client message ids of the messages among them.
    pub message_ids: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub drill: String,
    pub seed: u64,
    pub passed: bool,
    /// Every invariant that failed, and every step condition not reached.
    pub failures: Vec<String>,
    pub duration_ms: f64,
    pub clients: Vec<ClientInfo>,
    pub sends_acknowledged: usize,
    pub sends_failed: usize,
    pub delivered: usize,
    pub redeliveries: usize,
    pub duplicates_after_ack: usize,
    pub duplicate_ids: Vec<String>,
    pub lost: usize,
    pub lost_ids: Vec<String>,
    /// Messages delivered whose send was never answered OK (sends that timed
    /// out after being stored).
    pub delivered_unacknowledged_sends: usize,
    pub steps: Vec<StepReport>,
    pub replication_lag: Vec<RegionLag>,
    pub reconciled: Vec<Reconciled>,
}

/// The invariants to check.
pub struct Expect {
    pub max_lost: Option<u64>,
    pub max_duplicates_after_ack: Option<u64>,
    pub max_recovery_ms: Option<u64>,
}

/// What was played, besides the events.
pub struct Played {
    pub drill: String,
    pub seed: u64,
    pub clients: Vec<ClientInfo>,
    pub steps: Vec<PlayedStep>,
    pub reconciled: Vec<Reconciled>,
    pub duration_ms: f64,
}

/// Computes the report from the events.
pub fn analyse(played: Played, events: &[Event], expect: &Expect) -> Report {
    let Played {
        drill,
        seed,
        clients,
        steps,
        reconciled,
        duration_ms,
    } = played;
    let mut sent_at: HashMap<&str, f64> = HashMap::new();
    let mut sends_failed = 0;
    let mut received: HashSet<&str> = HashSet::new();
    let mut acked: HashSet<&str> = HashSet::new();
    let mut redeliveries = 0;
    let mut duplicate_ids = Vec::new();
    let mut duplicate_times = Vec::new();
    let mut observed: BTreeMap<&str, HashMap<&str, f64>> = BTreeMap::new();
    for event in events {
        match &event.kind {
            EventKind::Sent { message_id } => {
                sent_at.entry(message_id).or_insert(event.at_ms);
            }
            EventKind::SendFailed { .. } => sends_failed += 1,
            EventKind::Received { message_id } => {
                if acked.contains(message_id.as_str()) {
                    duplicate_ids.push(message_id.clone());
                    duplicate_times.push(event.at_ms);
                } else if !received.insert(message_id) {
                    redeliveries += 1;
                }
            }
            EventKind::Acked { message_id } => {
                acked.insert(message_id);
            }
            EventKind::Observed { region, message_id } => {
                observed
                    .entry(region)
                    .or_default()
                    .entry(message_id)
                    .or_insert(event.at_ms);
            }
            _ => {}
        }
    }
    let mut lost_ids: Vec<String> = sent_at
        .keys()
        .filter(|id| !received.contains(*id))
        .map(|id| (*id).to_owned())
        .collect();
    lost_ids.sort();
    let delivered_unacknowledged_sends = received
        .iter()
        .filter(|id| !sent_at.contains_key(*id))
        .count();

    let step_reports = recoveries(events, &clients, steps, &duplicate_times);
    let replication_lag = lags(&sent_at, &observed);

    let mut failures = Vec::new();
    for step in &step_reports {
        if let Some(condition) = &step.step.condition_failed {
            failures.push(format!("step {}: {condition}", step.step.index));
        }
    }
    let lost = lost_ids.len();
    if let Some(max) = expect.max_lost
        && lost as u64 > max
    {
        failures.push(format!(
            "{lost} acknowledged messages were never delivered (expected at most {max})"
        ));
    }
    let duplicates_after_ack = duplicate_ids.len();
    if let Some(max) = expect.max_duplicates_after_ack
        && duplicates_after_ack as u64 > max
    {
        failures.push(format!(
            "{duplicates_after_ack} deliveries of messages the group had acknowledged (expected at most {max})"
        ));
    }
    if let Some(max) = expect.max_recovery_ms {
        for step in &step_reports {
            for recovery in &step.recovery {
                match recovery.recovery_ms {
                    Some(ms) if ms <= max as f64 => {}
                    Some(ms) => failures.push(format!(
                        "step {} ({}): {} recovered after {ms:.0} ms (expected at most {max} ms)",
                        step.step.index, step.step.action, recovery.client
                    )),
                    None => failures.push(format!(
                        "step {} ({}): {} did not recover",
                        step.step.index, step.step.action, recovery.client
                    )),
                }
            }
        }
    }
    lost_ids.truncate(LISTED_IDS_MAX);
    duplicate_ids.truncate(LISTED_IDS_MAX);
    Report {
        drill,
        seed,
        passed: failures.is_empty(),
        failures,
        duration_ms,
        clients,
        sends_acknowledged: sent_at.len(),
        sends_failed,
        delivered: received.len(),
        redeliveries,
        duplicates_after_ack,
        duplicate_ids,
        lost,
        lost_ids,
        delivered_unacknowledged_sends,
        steps: step_reports,
        replication_lag,
        reconciled,
    }
}

fn recoveries(
    events: &[Event],
    clients: &[ClientInfo],
    steps: Vec<PlayedStep>,
    duplicate_times: &[f64],
) -> Vec<StepReport> {
    let ends: Vec<f64> = steps
        .iter()
        .skip(1)
        .map(|step| step.at_ms)
        .chain(std::iter::once(f64::INFINITY))
        .collect();
    steps
        .into_iter()
        .zip(ends)
        .map(|(step, end)| {
            let recovery = clients
                .iter()
                .filter(|client| client.kind != Kind::Observer)
                .map(|client| recovery(events, client, step.at_ms, end))
                .collect();
            let duplicates_after_ack = duplicate_times
                .iter()
                .filter(|at| **at >= step.at_ms && **at < end)
                .count();
            StepReport {
                step,
                recovery,
                duplicates_after_ack,
            }
        })
        .collect()
}

fn recovery(events: &[Event], client: &ClientInfo, from: f64, to: f64) -> Recovery {
    let is_success = |event: &Event| {
        matches!(
            (&event.kind, client.kind),
            (EventKind::Sent { .. }, Kind::Producer) | (EventKind::Received { .. }, Kind::Consumer)
        )
    };
    let is_failure = |event: &Event| {
        matches!(
            event.kind,
            EventKind::SendFailed { .. }
                | EventKind::ReceiveFailed { .. }
                | EventKind::AckFailed { .. }
        )
    };
    let own = || events.iter().filter(|event| event.client == client.name);
    let failures: Vec<f64> = own()
        .filter(|event| event.at_ms >= from && event.at_ms < to && is_failure(event))
        .map(|event| event.at_ms)
        .collect();
    let after = failures.last().copied().unwrap_or(from);
    // The first success may come after later steps (steps in quick succession).
    let recovered = own()
        .find(|event| event.at_ms >= after && is_success(event))
        .map(|event| event.at_ms);
    Recovery {
        client: client.name.clone(),
        kind: client.kind,
        recovery_ms: recovered.map(|at| at - from),
        failures: failures.len() as u64,
    }
}

fn lags(
    sent_at: &HashMap<&str, f64>,
    observed: &BTreeMap<&str, HashMap<&str, f64>>,
) -> Vec<RegionLag> {
    // Where each message showed up first: taken as the region that stored it.
    let mut first: HashMap<&str, (&str, f64)> = HashMap::new();
    for (region, seen) in observed {
        for (id, at) in seen {
            let entry = first.entry(id).or_insert((region, *at));
            if *at < entry.1 {
                *entry = (region, *at);
            }
        }
    }
    observed
        .iter()
        .map(|(region, seen)| {
            let mut lags: Vec<f64> = seen
                .iter()
                .filter(|(id, _)| first.get(*id).is_some_and(|(origin, _)| origin != region))
                .filter_map(|(id, at)| sent_at.get(id).map(|sent| (at - sent).max(0.0)))
                .collect();
            lags.sort_by(f64::total_cmp);
            let missing = sent_at.keys().filter(|id| !seen.contains_key(*id)).count();
            RegionLag {
                region: (*region).to_owned(),
                replicated: lags.len(),
                p50_ms: percentile(&lags, 0.50),
                p99_ms: percentile(&lags, 0.99),
                max_ms: lags.last().copied(),
                missing,
            }
        })
        .collect()
}

/// The `q` quantile of sorted values (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

/// Up to [`TEXT_IDS_MAX`] ids, then how many more.
fn listed(ids: &[String]) -> String {
    if ids.is_empty() {
        return "none".to_owned();
    }
    let mut text = ids
        .iter()
        .take(TEXT_IDS_MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    if ids.len() > TEXT_IDS_MAX {
        let _ = write!(
            text,
            " and {} more (--json lists all)",
            ids.len() - TEXT_IDS_MAX
        );
    }
    text
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms"))
}

impl Report {
    /// The report for people.
    pub fn text(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "drill {}: {} (seed {}, {:.1} s)",
            self.drill,
            if self.passed { "PASSED" } else { "FAILED" },
            self.seed,
            self.duration_ms / 1000.0
        );
        let _ = writeln!(
            text,
            "sends: {} acknowledged, {} failed; delivered to the group: {} ({} redeliveries before an ack)",
            self.sends_acknowledged, self.sends_failed, self.delivered, self.redeliveries
        );
        let _ = writeln!(text, "acknowledged messages lost: {}", self.lost);
        for id in &self.lost_ids {
            let _ = writeln!(text, "  lost {id}");
        }
        let _ = writeln!(
            text,
            "duplicates delivered after an ack: {}",
            self.duplicates_after_ack
        );
        if self.delivered_unacknowledged_sends > 0 {
            let _ = writeln!(
                text,
                "delivered although the send was not answered OK: {} (stored, then the answer was lost)",
                self.delivered_unacknowledged_sends
            );
        }
        for step in &self.steps {
            let _ = writeln!(
                text,
                "step {} at {:.1} s: {} — {}{}",
                step.step.index,
                step.step.at_ms / 1000.0,
                step.step.action,
                step.step.outcome,
                if step.duplicates_after_ack > 0 {
                    format!(
                        " ({} duplicates after an ack until the next step)",
                        step.duplicates_after_ack
                    )
                } else {
                    String::new()
                }
            );
            for recovery in &step.recovery {
                let _ = writeln!(
                    text,
                    "  {:<24} {:<9} recovered after {:>9}  ({} failed calls)",
                    recovery.client,
                    format!("{:?}", recovery.kind).to_lowercase(),
                    recovery
                        .recovery_ms
                        .map_or_else(|| "never".to_owned(), |ms| format!("{ms:.0} ms")),
                    recovery.failures
                );
            }
        }
        if !self.replication_lag.is_empty() {
            let _ = writeln!(
                text,
                "replication lag (send OK -> delivered in the region):"
            );
            for lag in &self.replication_lag {
                let _ = writeln!(
                    text,
                    "  {:<14} {:>6} messages  p50 {:>8}  p99 {:>8}  max {:>8}  missing {}",
                    lag.region,
                    lag.replicated,
                    ms(lag.p50_ms),
                    ms(lag.p99_ms),
                    ms(lag.max_ms),
                    lag.missing
                );
            }
        }
        for reconciled in &self.reconciled {
            let _ = writeln!(
                text,
                "failback: {} sent {} records to {} on its return (sequences {}..={}), messages: {}",
                reconciled.region,
                reconciled.through_sequence - reconciled.after_sequence,
                reconciled.peer,
                reconciled.after_sequence + 1,
                reconciled.through_sequence,
                listed(&reconciled.message_ids)
            );
        }
        for failure in &self.failures {
            let _ = writeln!(text, "FAILED: {failure}");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at_ms: f64, client: &str, kind: EventKind) -> Event {
        Event {
            at_ms,
            client: client.to_owned(),
            kind,
        }
    }

    fn sent(id: &str) -> EventKind {
        EventKind::Sent {
            message_id: id.to_owned(),
        }
    }

    fn received(id: &str) -> EventKind {
        EventKind::Received {
            message_id: id.to_owned(),
        }
    }

    fn acked(id: &str) -> EventKind {
        EventKind::Acked {
            message_id: id.to_owned(),
        }
    }

    fn client(name: &str, kind: Kind) -> ClientInfo {
        ClientInfo {
            name: name.to_owned(),
            kind,
            program: "built-in".to_owned(),
        }
    }

    fn played(clients: Vec<ClientInfo>, steps: Vec<PlayedStep>) -> Played {
        Played {
            drill: "t".into(),
            seed: 1,
            clients,
            steps,
            reconciled: Vec::new(),
            duration_ms: 10_000.0,
        }
    }

    fn expect_all() -> Expect {
        Expect {
            max_lost: Some(0),
            max_duplicates_after_ack: Some(0),
            max_recovery_ms: Some(2000),
        }
    }

    #[test]
    fn counts_lost_duplicates_and_redeliveries() {
        let events = vec![
            event(1.0, "p", sent("a")),
            event(2.0, "p", sent("b")),
            event(3.0, "p", sent("c")),
            event(4.0, "c", received("a")),
            event(5.0, "c", received("b")),
            event(6.0, "c", acked("a")),
            // b redelivered before any ack: a redelivery, not a duplicate.
            event(7.0, "c", received("b")),
            // a delivered again after its ack: a duplicate.
            event(8.0, "c", received("a")),
        ];
        let clients = vec![client("p", Kind::Producer), client("c", Kind::Consumer)];
        let report = analyse(played(clients, Vec::new()), &events, &expect_all());
        assert_eq!(report.sends_acknowledged, 3);
        assert_eq!(report.lost_ids, vec!["c".to_owned()]);
        assert_eq!(report.redeliveries, 1);
        assert_eq!(report.duplicate_ids, vec!["a".to_owned()]);
        assert!(!report.passed);
        assert_eq!(report.failures.len(), 2, "{:?}", report.failures);
    }

    #[test]
    fn recovery_ends_with_the_first_success_after_the_last_failure() {
        let step = PlayedStep {
            index: 1,
            action: "kill".into(),
            at_ms: 100.0,
            outcome: "killed".into(),
            condition_failed: None,
        };
        let events = vec![
            event(50.0, "p", sent("a")),
            // In flight at the kill: succeeds, but the outage follows.
            event(101.0, "p", sent("b")),
            event(300.0, "p", EventKind::SendFailed { error: "x".into() }),
            event(900.0, "p", EventKind::SendFailed { error: "x".into() }),
            event(1_400.0, "p", sent("c")),
            event(1_500.0, "c", received("a")),
        ];
        let clients = vec![client("p", Kind::Producer), client("c", Kind::Consumer)];
        let report = analyse(played(clients, vec![step]), &events, &expect_all());
        let recovery = &report.steps[0].recovery;
        assert_eq!(recovery[0].recovery_ms, Some(1_300.0));
        assert_eq!(recovery[0].failures, 2);
        assert_eq!(recovery[1].recovery_ms, Some(1_400.0));
    }

    #[test]
    fn a_success_after_later_steps_still_ends_the_recovery() {
        let step = |index, at_ms| PlayedStep {
            index,
            action: "start".into(),
            at_ms,
            outcome: "started".into(),
            condition_failed: None,
        };
        let events = vec![event(300.0, "c", received("a"))];
        let clients = vec![client("c", Kind::Consumer)];
        let report = analyse(
            played(clients, vec![step(1, 100.0), step(2, 150.0)]),
            &events,
            &expect_all(),
        );
        assert_eq!(report.steps[0].recovery[0].recovery_ms, Some(200.0));
        assert_eq!(report.steps[1].recovery[0].recovery_ms, Some(150.0));
    }

    #[test]
    fn lag_skips_the_region_that_stored_the_message() {
        let events = vec![
            event(10.0, "p", sent("a")),
            event(
                12.0,
                "o-a",
                EventKind::Observed {
                    region: "a".into(),
                    message_id: "a".into(),
                },
            ),
            event(
                60.0,
                "o-b",
                EventKind::Observed {
                    region: "b".into(),
                    message_id: "a".into(),
                },
            ),
            event(20.0, "c", received("a")),
        ];
        let report = analyse(played(Vec::new(), Vec::new()), &events, &expect_all());
        let lag: BTreeMap<_, _> = report
            .replication_lag
            .iter()
            .map(|lag| (lag.region.as_str(), (lag.replicated, lag.p50_ms)))
            .collect();
        assert_eq!(lag["a"], (0, None));
        assert_eq!(lag["b"], (1, Some(50.0)));
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), Some(50.0));
        assert_eq!(percentile(&values, 0.99), Some(99.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
