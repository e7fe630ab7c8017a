//! A whole deployment on this machine: every region's node, replicator and
//! router as child processes of this binary, each under a supervisor, with
//! the link emulator between regions. `meridian up` runs one until Ctrl-C;
//! `meridian drill run` runs one for the length of a drill.

use crate::control::{
    ControlAnswer, ControlRequest, Controlled, DeploymentStatus, ProcessAction, ProcessRole,
    refusal,
};
use crate::emulation::Emulator;
use crate::process::ChildProcess;
use crate::supervisor::{Request, Supervised};
use anyhow::Context as _;
use meridian_sockets::{Handover, Inherited, Role, Sharing, SocketSpec};
use meridian_topology::Topology;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How to run a deployment.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Place the link emulator between regions.
    pub emulate_links: bool,
    /// Seeds the emulator's loss and jitter.
    pub seed: u64,
}

/// The sockets of every process of a deployment, by region and role.
pub type Sockets = BTreeMap<(String, Role), Handover>;

/// A running deployment.
pub struct Deployment {
    topology: Topology,
    path: PathBuf,
    processes: BTreeMap<(String, Role), Supervised>,
    emulator: Option<Emulator>,
}

impl Deployment {
    /// Starts every process of `topology` (loaded from `path`) on `sockets`:
    /// per role, all regions at once, nodes first (replicators tail their
    /// node, routers probe nodes), each child ready before the next role.
    pub async fn start(
        topology: Topology,
        path: PathBuf,
        mut sockets: Sockets,
        options: Options,
    ) -> anyhow::Result<Deployment> {
        let (emulator, views) = if options.emulate_links {
            let (emulator, views) = Emulator::start(&topology, options.seed).await?;
            (Some(emulator), views)
        } else {
            (None, BTreeMap::new())
        };
        let mut deployment = Deployment {
            topology,
            path,
            processes: BTreeMap::new(),
            emulator,
        };
        let started = deployment.start_processes(&mut sockets, &views).await;
        if let Err(error) = started {
            deployment.shut_down().await;
            return Err(error);
        }
        Ok(deployment)
    }

    async fn start_processes(
        &mut self,
        sockets: &mut Sockets,
        views: &BTreeMap<String, PathBuf>,
    ) -> anyhow::Result<()> {
        for role in Role::ALL {
            let mut starting = tokio::task::JoinSet::new();
            for (name, region) in &self.topology.regions {
                let log = region.data_dir.join("logs").join(format!("{role}.log"));
                let topology = views.get(name).unwrap_or(&self.path).clone();
                let handover = sockets.remove(&(name.clone(), role)).unwrap_or_default();
                let reissues = handover.reissues()?;
                let name = name.clone();
                starting.spawn(async move {
                    let child =
                        ChildProcess::start(role.as_str(), &name, &topology, log, handover).await;
                    (name, role, topology, reissues, child)
                });
            }
            let mut failure = None;
            while let Some(joined) = starting.join_next().await {
                let (name, role, topology, reissues, child) =
                    joined.context("a start task failed")?;
                match child {
                    Ok(child) => {
                        let supervised = Supervised::spawn(child, role, topology, reissues);
                        self.processes.insert((name, role), supervised);
                    }
                    Err(error) => failure = Some(error),
                }
            }
            if let Some(error) = failure {
                return Err(error);
            }
        }
        Ok(())
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// What the link emulator counted for everything `from` sent `to`;
    /// `None` without emulation or without such a link.
    pub fn link_stats(&self, from: &str, to: &str) -> Option<meridian_linkemu::DirectionStats> {
        self.emulator
            .as_ref()?
            .states()
            .into_iter()
            .find(|state| state.from == from && state.to == to)
            .map(|state| state.stats)
    }

    /// The pid of `region`'s `role` process (`node`, `replicator`,
    /// `router`) while it runs.
    pub fn pid(&self, region: &str, role: &str) -> Option<u32> {
        self.processes
            .iter()
            .find(|((name, process_role), _)| name == region && process_role.as_str() == role)
            .and_then(|(_, supervised)| supervised.state().pid)
    }

    /// Stops every process (routers first, nodes last: nothing talks to a
    /// stopped node) and the link emulator.
    pub async fn shut_down(&mut self) {
        for role in [Role::Router, Role::Replicator, Role::Node] {
            let mut stopping = Vec::new();
            for ((_, process_role), process) in &mut self.processes {
                if *process_role == role {
                    stopping.push(process.shut_down());
                }
            }
            futures::future::join_all(stopping).await;
        }
        self.processes.clear();
        if let Some(emulator) = &self.emulator {
            emulator.shut_down().await;
        }
    }

    fn status(&self) -> DeploymentStatus {
        DeploymentStatus {
            topology: self.path.clone(),
            processes: self.processes.values().map(Supervised::state).collect(),
            links: self
                .emulator
                .as_ref()
                .map(Emulator::states)
                .unwrap_or_default(),
            links_emulated: self.emulator.is_some(),
        }
    }

    fn link(&self, link: &[String; 2]) -> Result<&Emulator, String> {
        let emulator = self
            .emulator
            .as_ref()
            .ok_or("links are not emulated in this deployment (started with --no-emulation)")?;
        for region in link {
            if !self.topology.regions.contains_key(region) {
                return Err(format!(
                    "no region {region:?} (regions: {})",
                    self.region_names()
                ));
            }
        }
        if link[0] == link[1] {
            return Err(format!(
                "a link joins two different regions, not {0} and {0}",
                link[0]
            ));
        }
        Ok(emulator)
    }

    fn region_names(&self) -> String {
        let names: Vec<&str> = self.topology.regions.keys().map(String::as_str).collect();
        names.join(", ")
    }
}

impl Controlled for Deployment {
    async fn control(&self, request: ControlRequest) -> ControlAnswer {
        let done = |result: anyhow::Result<String>| match result {
            Ok(message) => ControlAnswer {
                ok: true,
                message,
                status: None,
            },
            Err(error) => refusal(format!("{error:#}")),
        };
        match request {
            ControlRequest::Status => ControlAnswer {
                ok: true,
                message: "status".to_owned(),
                status: Some(self.status()),
            },
            ControlRequest::Process {
                action,
                region,
                role,
            } => {
                let role = match role {
                    ProcessRole::Node => Role::Node,
                    ProcessRole::Replicator => Role::Replicator,
                    ProcessRole::Router => Role::Router,
                };
                let Some(process) = self.processes.get(&(region.clone(), role)) else {
                    return refusal(format!(
                        "no region {region:?} (regions: {})",
                        self.region_names()
                    ));
                };
                let request = match action {
                    ProcessAction::Kill => Request::Kill,
                    ProcessAction::Stop => Request::Stop,
                    ProcessAction::Start => Request::Start,
                    ProcessAction::Restart => Request::Restart,
                };
                match process.request(request).await {
                    Ok(message) => ControlAnswer {
                        ok: true,
                        message,
                        status: None,
                    },
                    Err(message) => refusal(message),
                }
            }
            ControlRequest::Partition { link, one_way } => match self.link(&link) {
                Ok(emulator) => done(emulator.partition(&link[0], &link[1], one_way)),
                Err(message) => refusal(message),
            },
            ControlRequest::Heal { link } => match self.link(&link) {
                Ok(emulator) => done(emulator.heal(&link[0], &link[1])),
                Err(message) => refusal(message),
            },
            ControlRequest::Degrade { link, change } => match self.link(&link) {
                Ok(emulator) => done(emulator.degrade(&link[0], &link[1], change)),
                Err(message) => refusal(message),
            },
        }
    }
}

/// The sockets of every process of `topology`: those this process inherited
/// (the test harness passes held ports to `meridian up`), the rest bound
/// here, each for that address alone.
pub fn bind_all(topology: &Topology, mut inherited: Inherited) -> anyhow::Result<Sockets> {
    let mut sockets = BTreeMap::new();
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
            sockets.insert((name.clone(), role), handover);
        }
    }
    let unused = inherited.remaining();
    if !unused.is_empty() {
        tracing::warn!(
            ?unused,
            "inherited sockets that no process of the topology listens on"
        );
    }
    Ok(sockets)
}

/// Binds every socket of `topology` on its IP address with a port chosen by
/// the OS, and returns the topology with those addresses: a deployment that
/// cannot collide with anything else on the machine (drills).
pub fn bind_ephemeral(mut topology: Topology) -> anyhow::Result<(Topology, Sockets)> {
    let mut sockets = BTreeMap::new();
    let names: Vec<String> = topology.regions.keys().cloned().collect();
    for name in names {
        let region = topology
            .regions
            .get_mut(&name)
            .context("regions come from the topology")?;
        for role in Role::ALL {
            let mut handover = Handover::new();
            for spec in meridian_sockets::role_sockets(&name, region, role) {
                let any_port = SocketSpec {
                    address: std::net::SocketAddr::new(spec.address.ip(), 0),
                    ..spec.clone()
                };
                let socket = meridian_sockets::bind(&any_port, Sharing::Exclusive)?;
                let address = socket.address();
                match spec.name.rsplit('.').next() {
                    Some("node") => region.node = address,
                    Some("admin") => region.admin = address,
                    Some("replicator") => region.replicator = Some(address),
                    Some("router") => region.router = address,
                    Some("http") => region.http = Some(address),
                    Some("stomp") => region.stomp = Some(address),
                    _ => anyhow::bail!("unexpected socket {}", spec.name),
                }
                handover.push(socket);
            }
            sockets.insert((name.clone(), role), handover);
        }
    }
    topology.validate()?;
    Ok((topology, sockets))
}

/// Writes `topology` to `path` with a header saying who wrote it.
pub fn write_topology(topology: &Topology, path: &Path, header: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
    }
    let text = format!("# {header}\n{}", topology.to_toml_string());
    std::fs::write(path, text).with_context(|| format!("failed to write {}", path.display()))
}
