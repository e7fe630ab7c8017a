//! `meridian up`: a whole deployment on this machine, for demos and drills.
//!
//! Per region it starts the node first (routers and replicators talk to it),
//! then the replicator and the router, each as a child process of this binary,
//! each logging to `<data_dir>/logs/<role>.log`. It prints a table of
//! endpoints and runs until Ctrl-C or SIGTERM, then stops every child with
//! SIGTERM (routers first, nodes last) and waits for them.

use crate::process::ChildProcess;
use anyhow::Context as _;
use meridian_sockets::{Handover, Inherited, Role, Sharing};
use meridian_topology::Topology;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

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

    let (exit_sender, mut exits) =
        tokio::sync::mpsc::channel::<(usize, String)>(children.len().max(1));
    let mut watched: Vec<Watched> = Vec::new();
    for (index, mut child) in children.drain(..).enumerate() {
        let sender = exit_sender.clone();
        let (stop, stop_requested) = tokio::sync::oneshot::channel::<()>();
        watched.push(Watched {
            role: child.role,
            region: child.region.clone(),
            log_path: child.log_path.clone(),
            stop: Some(stop),
            watcher: tokio::spawn(async move {
                tokio::select! {
                    status = child.exited() => { let _ = sender.send((index, status)).await; }
                    _ = stop_requested => child.stop().await,
                }
            }),
        });
    }
    drop(exit_sender);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some((index, status)) = exits.recv() => {
                let child = &watched[index];
                tracing::error!(
                    role = child.role, region = %child.region, %status, log = %child.log_path.display(),
                    "a process of the deployment exited; the others keep running"
                );
            }
        }
    }
    println!("Stopping Meridian...");
    // Routers first, then replicators, nodes last: nothing talks to a stopped node.
    for role in ["router", "replicator", "node"] {
        for child in watched.iter_mut().filter(|child| child.role == role) {
            if let Some(stop) = child.stop.take() {
                // A watcher that already finished (its child exited) needs no signal.
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

/// A child handed to its watcher task.
struct Watched {
    role: &'static str,
    region: String,
    log_path: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    watcher: tokio::task::JoinHandle<()>,
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
        "{:<12} {:<8} {:<22} {:<22} {:<22} {:<22} data",
        "region",
        "site",
        "router (RocketMQ)",
        "node (RocketMQ)",
        "admin (internal)",
        "replicator (QUIC)"
    );
    for (name, region) in &topology.regions {
        let _ = writeln!(
            table,
            "{:<12} {:<8} {:<22} {:<22} {:<22} {:<22} {}",
            name,
            format!("{:?}", region.site).to_lowercase(),
            region.router,
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
