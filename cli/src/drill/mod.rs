//! `meridian drill run FILE`: plays the `[drill]` of a topology file against
//! a fresh deployment of that topology and reports what the clients saw.
//!
//! The runner copies the topology with every region's data directory under a
//! new directory (a temporary one unless `--data-dir`) and, unless
//! `--fixed-ports`, every address on a port the OS chooses, so a drill never
//! collides with a running demo or another drill. It starts the deployment
//! with the link emulator (seeded), starts the load (see [`load`]), waits
//! `warmup_ms`, plays the steps, keeps the load running `tail_ms`, stops the
//! producers, lets the consumers drain for up to `drain_timeout_ms`, then
//! stops everything and reports (see [`report`]). Progress goes to stderr;
//! the report to stdout, as text or with `--json` as one JSON document. The
//! exit code is 0 when every declared invariant held, 1 when one failed.
//!
//! With `[access]` in the topology the load's clients sign with an access
//! key, and with `[client_tls]` they dial with TLS (see [`access`]).

mod access;
pub(crate) mod client;
mod failback;
mod load;
mod report;

use crate::control::{ControlRequest, ControlSocket, Controlled as _};
use crate::deployment::{Deployment, Options};
use crate::emulation::LinkChange;
use anyhow::Context as _;
use load::{EventKind, Ledger, Load, Plan, Target};
use meridian_sockets::Inherited;
use meridian_topology::{Drill, StepAction, StepCondition, Topology};
use report::{Expect, PlayedStep, Reconciled, Report};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often a step's `when` condition is checked.
const CONDITION_POLL: Duration = Duration::from_millis(100);

/// What `meridian drill run` was asked for.
pub struct RunArgs {
    pub file: PathBuf,
    pub json: bool,
    pub seed: Option<u64>,
    pub data_dir: Option<PathBuf>,
    pub keep_data: bool,
    pub fixed_ports: bool,
    /// Whether `max_recovery_ms` counts.
    pub timing_invariants: bool,
    /// The key of the topology's keys file the load's clients sign with
    /// (default: its `internal_key`, if granted what the load does).
    pub access_key: Option<String>,
}

/// Runs the drill; `Ok(true)` when every invariant held.
pub async fn run(args: RunArgs, inherited: Inherited) -> anyhow::Result<bool> {
    let topology = Topology::load(&args.file)?;
    let mut drill = topology.drill.clone().with_context(|| {
        format!(
            "{} has no [drill] section (see topology/examples/*-drill.toml)",
            args.file.display()
        )
    })?;
    let name = args.file.file_stem().map_or_else(
        || "drill".to_owned(),
        |stem| stem.to_string_lossy().into_owned(),
    );
    let seed = args.seed.or(drill.seed).unwrap_or_else(rand::random);
    if !args.timing_invariants {
        drill.expect.max_recovery_ms = None;
    }
    let load_access = access::choose(
        &args.file,
        &topology,
        &drill.load,
        &observed_regions(&topology, &drill.load)?,
        args.access_key.as_deref(),
    )?;

    let (root, temporary) = match &args.data_dir {
        Some(directory) => {
            std::fs::create_dir_all(directory)
                .with_context(|| format!("failed to create {}", directory.display()))?;
            (std::fs::canonicalize(directory)?, None)
        }
        None => {
            let directory = tempfile::Builder::new()
                .prefix(&format!("meridian-drill-{name}-"))
                .tempdir()
                .context("failed to create a temporary directory")?;
            (directory.path().to_owned(), Some(directory))
        }
    };
    let scenario = Scenario {
        drill: &drill,
        load_access: &load_access,
        seed,
        name: &name,
    };
    let outcome = deploy_and_play(&args, inherited, topology, &scenario, &root).await;
    let report = match outcome {
        Ok(Some(report)) => report,
        Ok(None) => anyhow::bail!(
            "interrupted; data kept in {}",
            keep(root, temporary).display()
        ),
        Err(error) => {
            let kept = keep(root, temporary);
            return Err(error.context(format!(
                "the drill stopped; data and logs kept in {}",
                kept.display()
            )));
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    if !report.passed || args.keep_data {
        let kept = keep(root, temporary);
        eprintln!(
            "data and logs kept in {} (processes: <region>/logs/<role>.log, clients: clients/<name>.log)",
            kept.display()
        );
    }
    Ok(report.passed)
}

/// What a run plays: the drill, how its load reaches the deployment, the
/// seed and the drill's name.
struct Scenario<'a> {
    drill: &'a Drill,
    load_access: &'a access::LoadAccess,
    seed: u64,
    name: &'a str,
}

/// Starts the deployment under `root`, plays the drill, stops the
/// deployment; `None` when interrupted.
async fn deploy_and_play(
    args: &RunArgs,
    inherited: Inherited,
    mut topology: Topology,
    scenario: &Scenario<'_>,
    root: &Path,
) -> anyhow::Result<Option<Report>> {
    let (seed, name) = (scenario.seed, scenario.name);
    for (region_name, region) in &mut topology.regions {
        region.data_dir = root.join(region_name);
    }
    let (topology, sockets) = if args.fixed_ports {
        let sockets = crate::deployment::bind_all(&topology, inherited)?;
        (topology, sockets)
    } else {
        crate::deployment::bind_ephemeral(topology)?
    };
    let path = root.join("drill-topology.toml");
    crate::deployment::write_topology(
        &topology,
        &path,
        &format!("Written by `meridian drill run {}`.", args.file.display()),
    )?;

    let progress = Progress::new();
    progress.say(format!(
        "drill {name} (seed {seed}): starting {} regions under {}",
        topology.regions.len(),
        root.display()
    ));
    let deployment = Deployment::start(
        topology.clone(),
        path,
        sockets,
        Options {
            emulate_links: true,
            seed,
        },
    )
    .await?;
    let deployment = Arc::new(deployment);
    let control = ControlSocket::bind(&root.join("drill.sock")).await?;
    progress.say(format!(
        "deployment up; watch it with: meridian ctl --control {} status",
        control.path().display()
    ));
    let stop_control = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn({
        let (deployment, stop) = (Arc::clone(&deployment), stop_control.clone());
        async move { control.serve(deployment, stop).await }
    });

    let interrupted = crate::shutdown_on_signals(false)?;
    let played = tokio::select! {
        played = play(scenario, &topology, &deployment, root, &progress) => Some(played),
        () = interrupted.cancelled() => None,
    };

    stop_control.cancel();
    let _ = serving.await;
    progress.say("stopping the deployment".to_owned());
    match Arc::into_inner(deployment) {
        Some(mut deployment) => deployment.shut_down().await,
        None => tracing::warn!("the deployment is still shared; its processes stop on exit"),
    }
    played.transpose()
}

/// `1 producer`, `2 producers`.
fn count(number: usize, noun: &str) -> String {
    if number == 1 {
        format!("1 {noun}")
    } else {
        format!("{number} {noun}s")
    }
}

/// Keeps a temporary directory on disk; returns its path.
fn keep(root: PathBuf, temporary: Option<tempfile::TempDir>) -> PathBuf {
    match temporary {
        Some(directory) => directory.keep(),
        None => root,
    }
}

/// Progress lines on stderr, stamped with the time since the drill started.
struct Progress {
    start: Instant,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            start: Instant::now(),
        }
    }

    fn say(&self, line: String) {
        eprintln!("[{:>6.1} s] {line}", self.start.elapsed().as_secs_f64());
    }
}

/// The regions the load's observers watch: every region the topic
/// replicates to, and the load's own, in name order.
fn observed_regions(
    topology: &Topology,
    load: &meridian_topology::DrillLoad,
) -> anyhow::Result<Vec<String>> {
    let topic = topology
        .topic(&load.topic)
        .with_context(|| format!("no topic {}", load.topic))?;
    let mut regions: Vec<String> = topic.replicate_to.clone();
    if !regions.contains(&load.region) {
        regions.push(load.region.clone());
    }
    regions.sort();
    Ok(regions)
}

async fn play(
    scenario: &Scenario<'_>,
    topology: &Topology,
    deployment: &Deployment,
    root: &Path,
    progress: &Progress,
) -> anyhow::Result<Report> {
    let Scenario {
        drill,
        load_access,
        seed,
        name,
    } = *scenario;
    let load_plan = &drill.load;
    let router = topology.region(&load_plan.region)?.router;
    let mut observed = Vec::new();
    for region in observed_regions(topology, load_plan)? {
        let node = topology.region(&region)?.node;
        observed.push((region, node));
    }
    let target = Target {
        router,
        topic: load_plan.topic.clone(),
        group: load_plan.group.clone(),
        observed,
        transport: load_access.transport.clone(),
        environment: load_access.environment.clone(),
    };
    let ledger = Arc::new(Ledger::new(Instant::now()));
    let plan = Plan {
        producers: load_plan.producers,
        consumers: load_plan.consumers,
        send_interval: Duration::from_millis(load_plan.send_interval_ms.into()),
        body_bytes: usize::try_from(load_plan.body_bytes).unwrap_or(usize::MAX),
        seed,
        external: &load_plan.clients,
    };
    let mut load = Load::start(&plan, &target, &ledger, &root.join("clients")).await?;
    progress.say(format!(
        "load running through {}'s router {router}{}: {} every {} ms, {} of group {}, {}",
        load_plan.region,
        load_access.describe(),
        count(
            usize::try_from(load_plan.producers).unwrap_or(usize::MAX),
            "built-in producer"
        ),
        load_plan.send_interval_ms,
        count(
            usize::try_from(load_plan.consumers).unwrap_or(usize::MAX),
            "built-in consumer"
        ),
        load_plan.group,
        count(load_plan.clients.len(), "official client")
    ));
    let outcome = steps(drill, topology, deployment, &ledger, progress).await;
    let (played_steps, reconciled) = match outcome {
        Ok(played) => played,
        Err(error) => {
            load.stop().await;
            return Err(error);
        }
    };
    tokio::time::sleep(Duration::from_millis(drill.tail_ms)).await;
    progress.say("stopping the producers; draining".to_owned());
    load.stop_producers().await;
    let observed_regions: Vec<String> = target
        .observed
        .iter()
        .map(|(region, _)| region.clone())
        .collect();
    drain(
        &ledger,
        &observed_regions,
        Duration::from_millis(drill.drain_timeout_ms),
        progress,
    )
    .await;
    load.stop().await;
    let expect = Expect {
        max_lost: drill.expect.max_lost,
        max_duplicates_after_ack: drill.expect.max_duplicates_after_ack,
        max_recovery_ms: drill.expect.max_recovery_ms,
    };
    let events = ledger.events();
    Ok(report::analyse(
        report::Played {
            drill: name.to_owned(),
            seed,
            clients: load.clients.clone(),
            steps: played_steps,
            reconciled,
            duration_ms: ledger.now_ms(),
        },
        &events,
        &expect,
    ))
}

async fn steps(
    drill: &Drill,
    topology: &Topology,
    deployment: &Deployment,
    ledger: &Ledger,
    progress: &Progress,
) -> anyhow::Result<(Vec<PlayedStep>, Vec<Reconciled>)> {
    tokio::time::sleep(Duration::from_millis(drill.load.warmup_ms)).await;
    let mut played = Vec::new();
    let mut reconciled = Vec::new();
    for (position, step) in drill.steps.iter().enumerate() {
        let index = position + 1;
        tokio::time::sleep(Duration::from_millis(step.after_ms)).await;
        let (description, request) = control_request(&step.action);
        // The fault starts when it is applied: calls failing while a kill
        // waits for the process to exit belong to this step.
        let at_ms = ledger.now_ms();
        let answer = deployment.control(request).await;
        anyhow::ensure!(
            answer.ok,
            "step {index} ({description}) failed: {}",
            answer.message
        );
        progress.say(format!("step {index}: {description}: {}", answer.message));
        if let StepAction::Process {
            signal:
                meridian_topology::ProcessAction::Start | meridian_topology::ProcessAction::Restart,
            region,
            role: meridian_topology::ProcessRole::Node,
        } = &step.action
        {
            match failback::unconfirmed(topology, region).await {
                Ok(found) => {
                    for entry in &found {
                        progress.say(format!(
                            "step {index}: {region} had {} records {} had not confirmed ({} messages); its replicator sends them",
                            entry.through_sequence - entry.after_sequence,
                            entry.peer,
                            entry.message_ids.len()
                        ));
                    }
                    reconciled.extend(found);
                }
                Err(error) => progress.say(format!(
                    "step {index}: could not list what {region} had not replicated: {error:#}"
                )),
            }
        }
        let mut condition_failed = None;
        if let Some(condition) = step.when {
            let within = Duration::from_millis(step.within_ms);
            progress.say(format!(
                "step {index}: waiting until {} (at most {} ms)",
                condition.as_str(),
                step.within_ms
            ));
            let mut caught_up = CaughtUp::default();
            let reached = tokio::time::timeout(within, async {
                loop {
                    let holds = match condition {
                        StepCondition::Recovered => recovered(ledger, at_ms),
                        StepCondition::CaughtUp => caught_up.holds(topology).await,
                    };
                    if holds {
                        break;
                    }
                    tokio::time::sleep(CONDITION_POLL).await;
                }
            })
            .await
            .is_ok();
            if reached {
                progress.say(format!("step {index}: {}", condition.as_str()));
            } else {
                let failure = format!("not {} within {} ms", condition.as_str(), step.within_ms);
                progress.say(format!("step {index}: {failure}"));
                condition_failed = Some(failure);
            }
        }
        played.push(PlayedStep {
            index,
            action: description,
            at_ms,
            outcome: answer.message,
            condition_failed,
        });
    }
    Ok((played, reconciled))
}

/// A step's action as a control request, and how to describe it.
fn control_request(action: &StepAction) -> (String, ControlRequest) {
    match action {
        StepAction::Process {
            signal,
            region,
            role,
        } => (
            format!("{} the {} of {region}", signal.as_str(), role.as_str()),
            ControlRequest::Process {
                action: *signal,
                region: region.clone(),
                role: *role,
            },
        ),
        StepAction::Partition { link, one_way } => (
            if *one_way {
                format!("partition {} -> {} (one way)", link[0], link[1])
            } else {
                format!("partition {} <-> {}", link[0], link[1])
            },
            ControlRequest::Partition {
                link: link.clone(),
                one_way: *one_way,
            },
        ),
        StepAction::Heal { link } => (
            format!("heal {} <-> {}", link[0], link[1]),
            ControlRequest::Heal { link: link.clone() },
        ),
        StepAction::Degrade { link, change } => (
            format!("degrade {} <-> {}", link[0], link[1]),
            ControlRequest::Degrade {
                link: link.clone(),
                change: LinkChange {
                    latency_ms: change.latency_ms,
                    jitter_ms: change.jitter_ms,
                    loss_percent: change.loss_percent,
                    bandwidth_kbps: change.bandwidth_kbps,
                },
            },
        ),
    }
}

/// The `caught-up` condition: every link has confirmed what its sending
/// node held when the condition was first checked (or, for a node down
/// then, when it first answered). Load keeps running, so "no backlog at all"
/// might never be seen.
#[derive(Default)]
struct CaughtUp {
    /// Per sending region, the sequence its peers must confirm.
    targets: std::collections::BTreeMap<String, u64>,
}

impl CaughtUp {
    async fn holds(&mut self, topology: &Topology) -> bool {
        let links = crate::status::link_backlogs(topology).await;
        let mut holds = true;
        for link in &links {
            match &link.progress {
                Ok(progress) => {
                    let target = *self
                        .targets
                        .entry(link.from.clone())
                        .or_insert(progress.last_sequence);
                    holds &= progress.acknowledged >= target;
                }
                Err(_) => holds = false,
            }
        }
        holds
    }
}

/// Every producer and consumer succeeded after `since_ms`.
fn recovered(ledger: &Ledger, since_ms: f64) -> bool {
    let events = ledger.events();
    let mut clients: std::collections::HashMap<&str, bool> = std::collections::HashMap::new();
    for event in &events {
        match &event.kind {
            EventKind::Ready => {
                clients.entry(&event.client).or_insert(false);
            }
            EventKind::Sent { .. } | EventKind::Received { .. } if event.at_ms >= since_ms => {
                clients.insert(&event.client, true);
            }
            _ => {}
        }
    }
    clients.values().all(|succeeded| *succeeded)
}

/// Waits until every acknowledged send was delivered to the group and to
/// every observed region, or `timeout`.
async fn drain(ledger: &Ledger, observed: &[String], timeout: Duration, progress: &Progress) {
    let deadline = Instant::now() + timeout;
    loop {
        let events = ledger.events();
        let mut delivered: HashSet<&str> = HashSet::new();
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        for event in &events {
            match &event.kind {
                EventKind::Received { message_id } => {
                    delivered.insert(message_id);
                }
                EventKind::Observed { region, message_id } => {
                    seen.insert((region, message_id));
                }
                _ => {}
            }
        }
        let mut undelivered = 0;
        let mut unreplicated = 0;
        for event in &events {
            if let EventKind::Sent { message_id } = &event.kind {
                undelivered += usize::from(!delivered.contains(message_id.as_str()));
                unreplicated += observed
                    .iter()
                    .filter(|region| !seen.contains(&(region.as_str(), message_id.as_str())))
                    .count();
            }
        }
        if undelivered == 0 && unreplicated == 0 {
            progress.say("every acknowledged message was delivered, in every region".to_owned());
            return;
        }
        if Instant::now() >= deadline {
            progress.say(format!(
                "after {} ms: {undelivered} acknowledged messages not delivered to the group, \
                 {unreplicated} (message, region) pairs not seen by the regions' observers",
                timeout.as_millis()
            ));
            return;
        }
        tokio::time::sleep(CONDITION_POLL).await;
    }
}
