//! `meridian up`: a whole deployment on this machine, for demos and drills.
//!
//! Per region it starts the node first (routers and replicators talk to it),
//! then the replicator and the router, each as a child process of this binary,
//! each logging to `<data_dir>/logs/<role>.log`. It prints a table of
//! endpoints and runs until Ctrl-C or SIGTERM, then stops every child with
//! SIGTERM (routers first, nodes last) and waits for them. A child that
//! exits (a crash, a `kill -9` in a drill) is started again on the same
//! sockets after 1 s, backing off up to 30 s while it keeps exiting within
//! 10 s of starting.

use crate::process::ChildProcess;
use anyhow::Context as _;
use meridian_sockets::{Handover, Inherited, Reissue, Role, Sharing};
use meridian_topology::Topology;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

pub async fn run(
    topology_file: Option<PathBuf>,
    demo_data_dir: PathBuf,
    inherited: Inherited,
) -> anyhow::Result<()> {
    let path = match topology_file {
        Some(path) => path,
        None => write_demo(&demo_data_dir)?,
    };
    let topology = Topology::load(&path)?;
    // Every socket of the deployment is bound before any process starts, so a
    // port in use is reported at once, and each child inherits its sockets.
    let handovers = bind_all(&topology, inherited)?;
    // What restarting a process needs: sockets on the same addresses.
    let mut reissues = BTreeMap::new();
    for (key, handover) in &handovers {
        reissues.insert(key.clone(), handover.reissues()?);
    }
    let shutdown = crate::shutdown_on_signals(false)?;
    let mut children: Vec<ChildProcess> = Vec::new();
    let started = start_all(&topology, &path, handovers, &mut children).await;
    if let Err(error) = started {
        stop_all(&mut children).await;
        return Err(error);
    }
    println!(
        "Meridian is up ({} regions, topology {}).",
        topology.regions.len(),
        path.display()
    );
    print!("{}", endpoint_table(&topology));
    println!("Logs: <data_dir>/logs/<role>.log per region. Press Ctrl-C to stop.");

    let mut watched: Vec<Watched> = Vec::new();
    for child in children.drain(..) {
        let role = Role::ALL
            .into_iter()
            .find(|role| role.as_str() == child.role)
            .context("a child of an unknown role")?;
        let (stop, stop_requested) = tokio::sync::oneshot::channel::<()>();
        let supervisor = Supervisor {
            role,
            region: child.region.clone(),
            topology: path.clone(),
            log_path: child.log_path.clone(),
            reissues: reissues
                .remove(&(child.region.clone(), role))
                .unwrap_or_default(),
        };
        watched.push(Watched {
            role: child.role,
            region: child.region.clone(),
            stop: Some(stop),
            watcher: tokio::spawn(supervisor.watch(child, stop_requested)),
        });
    }
    shutdown.cancelled().await;
    println!("Stopping Meridian...");
    // Routers first, then replicators, nodes last: nothing talks to a stopped node.
    for role in ["router", "replicator", "node"] {
        for child in watched.iter_mut().filter(|child| child.role == role) {
            if let Some(stop) = child.stop.take() {
                let _ = stop.send(());
            }
        }
        for child in watched.iter_mut().filter(|child| child.role == role) {
            if let Err(error) = (&mut child.watcher).await {
                tracing::warn!(role, region = %child.region, %error, "watcher task failed");
            }
        }
    }
    println!("Stopped.");
    Ok(())
}

/// A child handed to its supervisor task.
struct Watched {
    role: &'static str,
    region: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    watcher: tokio::task::JoinHandle<()>,
}

/// A process that ran this long before exiting is restarted after the
/// shortest delay again; one that exits sooner counts as failing to start and
/// waits longer each time.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// Restarts one process of the deployment whenever it exits, until stopped.
struct Supervisor {
    role: Role,
    region: String,
    topology: PathBuf,
    log_path: PathBuf,
    reissues: Vec<Reissue>,
}

impl Supervisor {
    /// Waits for `child` to exit and starts it again after 1 s (doubling up to
    /// 30 s while it keeps exiting within [`STABLE_AFTER`] of starting), until
    /// `stop`.
    async fn watch(self, mut child: ChildProcess, mut stop: tokio::sync::oneshot::Receiver<()>) {
        let mut delays = restart_delays();
        loop {
            let started = Instant::now();
            let status = tokio::select! {
                status = child.exited() => status,
                _ = &mut stop => {
                    child.stop().await;
                    return;
                }
            };
            if started.elapsed() >= STABLE_AFTER {
                delays = restart_delays();
            }
            tracing::error!(
                role = self.role.as_str(), region = %self.region, %status, log = %self.log_path.display(),
                "a process of the deployment exited; restarting it"
            );
            loop {
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = &mut stop => return,
                }
                match self.start().await {
                    Ok(restarted) => {
                        tracing::info!(role = self.role.as_str(), region = %self.region, "restarted");
                        child = restarted;
                        break;
                    }
                    Err(error) => tracing::error!(
                        role = self.role.as_str(), region = %self.region, error = %format!("{error:#}"),
                        "restart failed; trying again"
                    ),
                }
            }
        }
    }

    async fn start(&self) -> anyhow::Result<ChildProcess> {
        let mut handover = Handover::new();
        for reissue in &self.reissues {
            handover.push(reissue.socket()?);
        }
        ChildProcess::start(
            self.role.as_str(),
            &self.region,
            &self.topology,
            self.log_path.clone(),
            handover,
        )
        .await
    }
}

/// Delays between restarts: 1 s, doubling, at most 30 s, with jitter.
fn restart_delays() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder as _;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The sockets of every process of the deployment, by region and role:
/// those `meridian up` itself inherited (the test harness passes held ports),
/// the rest bound here, each for that address alone.
fn bind_all(
    topology: &Topology,
    mut inherited: Inherited,
) -> anyhow::Result<BTreeMap<(String, Role), Handover>> {
    let mut handovers = BTreeMap::new();
    for (name, region) in &topology.regions {
        for role in Role::ALL {
            let mut handover = Handover::new();
            for spec in meridian_sockets::role_sockets(name, region, role) {
                handover.push(meridian_sockets::obtain(
                    &mut inherited,
                    &spec,
                    Sharing::Exclusive,
                )?);
            }
            handovers.insert((name.clone(), role), handover);
        }
    }
    let unused = inherited.remaining();
    if !unused.is_empty() {
        tracing::warn!(
            ?unused,
            "inherited sockets that no process of the topology listens on"
        );
    }
    Ok(handovers)
}

async fn start_all(
    topology: &Topology,
    path: &Path,
    mut handovers: BTreeMap<(String, Role), Handover>,
    children: &mut Vec<ChildProcess>,
) -> anyhow::Result<()> {
    for role in Role::ALL {
        let mut starting = tokio::task::JoinSet::new();
        for (name, region) in &topology.regions {
            let log = region.data_dir.join("logs").join(format!("{role}.log"));
            let (name, path) = (name.clone(), path.to_owned());
            let handover = handovers.remove(&(name.clone(), role)).unwrap_or_default();
            starting.spawn(async move {
                ChildProcess::start(role.as_str(), &name, &path, log, handover).await
            });
        }
        while let Some(result) = starting.join_next().await {
            children.push(result.context("a start task failed")??);
        }
    }
    Ok(())
}

async fn stop_all(children: &mut [ChildProcess]) {
    for child in children.iter_mut().rev() {
        child.stop().await;
    }
}

/// Writes the built-in demo topology under `data_dir` and returns its path.
fn write_demo(data_dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("failed to create {}", data_dir.display()))?;
    let root = std::fs::canonicalize(data_dir)
        .with_context(|| format!("failed to resolve {}", data_dir.display()))?;
    let path = root.join("demo-topology.toml");
    let text = format!(
        "# The built-in demo topology, written by `meridian up`.\n{}",
        Topology::demo(&root).to_toml_string()
    );
    std::fs::write(&path, text).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(path)
}

/// A table of every region's endpoints.
pub fn endpoint_table(topology: &Topology) -> String {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<12} {:<8} {:<22} {:<7} {:<22} {:<22} {:<22} data",
        "region",
        "site",
        "router (RocketMQ)",
        "mode",
        "node (RocketMQ)",
        "admin (internal)",
        "replicator (QUIC)"
    );
    for (name, region) in &topology.regions {
        let _ = writeln!(
            table,
            "{:<12} {:<8} {:<22} {:<7} {:<22} {:<22} {:<22} {}",
            name,
            format!("{:?}", region.site).to_lowercase(),
            region.router,
            format!("{:?}", region.router_mode).to_lowercase(),
            region.node,
            region.admin,
            region.replicator,
            region.data_dir.display()
        );
    }
    for (name, topic) in &topology.topics {
        let _ = writeln!(
            table,
            "topic {name}: {} queues, replicated to {}",
            topic.queues,
            topic.replicate_to.join(", ")
        );
    }
    table
}
