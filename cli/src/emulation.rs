//! The link emulator of `meridian up`: relays between regions, placed from
//! the topology's links.
//!
//! Every process of region A that talks to region B — A's replicator to B's
//! replicator (QUIC over UDP), A's router to B's node and admin API (gRPC
//! over TCP, health probes and proxied calls) — goes through a relay that
//! this process runs (`meridian-linkemu`). Region A's processes are started
//! with a *view* of the topology (`<A's data_dir>/emulated-topology.toml`)
//! in which B's addresses are those relays; their own addresses are
//! unchanged. Clients still reach every node and router directly.
//!
//! Each ordered pair of regions (A→B) has one set of conditions, shared by
//! everything A sends towards B: A's calls to B and A's answers to calls
//! from B. They start from the topology's link between A and B (latency,
//! jitter, loss, bandwidth). Two regions without a declared link still talk
//! directly (replication is a full mesh today), over an emulated link of
//! their own with the latency of the shortest path between them; cutting a
//! declared link does not cut them. `meridian ctl` and drills change any
//! pair's conditions while the deployment runs.

use anyhow::Context as _;
use meridian_linkemu::{Conditions, Direction, DirectionStats};
use meridian_topology::Topology;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A change of a link's conditions (both directions), from `meridian ctl
/// degrade` or a drill step. Fields left out keep their current values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkChange {
    /// One-way delay, ms.
    pub latency_ms: Option<u32>,
    /// Extra one-way delay, uniform in [0, jitter], ms.
    pub jitter_ms: Option<u32>,
    /// Share of datagrams lost, percent (0–100).
    pub loss_percent: Option<f64>,
    /// Capacity, kbit/s.
    pub bandwidth_kbps: Option<u64>,
}

/// One direction of a link as `meridian ctl status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectionState {
    pub from: String,
    pub to: String,
    pub latency_ms: u64,
    pub jitter_ms: u64,
    pub loss_percent: f64,
    /// kbit/s; `None` for unlimited.
    pub bandwidth_kbps: Option<u64>,
    pub partitioned: bool,
    pub stats: DirectionStats,
}

/// The relays of a deployment.
pub struct Emulator {
    /// Conditions of everything region `.0` sends towards region `.1`.
    directions: BTreeMap<(String, String), Direction>,
    /// What the topology says for each direction: what `heal` restores.
    base: BTreeMap<(String, String), Conditions>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Emulator {
    /// Starts every relay of `topology` and writes each region's view of the
    /// topology; returns the emulator and the views' paths by region.
    /// `seed` makes loss and jitter reproducible.
    pub async fn start(
        topology: &Topology,
        seed: u64,
    ) -> anyhow::Result<(Emulator, BTreeMap<String, PathBuf>)> {
        let mut directions = BTreeMap::new();
        let mut base = BTreeMap::new();
        let names: Vec<&String> = topology.regions.keys().collect();
        let mut index = 0u64;
        for from in &names {
            for to in &names {
                if from == to {
                    continue;
                }
                let conditions = base_conditions(topology, from, to);
                index += 1;
                let key = ((*from).clone(), (*to).clone());
                directions.insert(
                    key.clone(),
                    Direction::new(conditions, seed.wrapping_mul(1_000_003).wrapping_add(index)),
                );
                base.insert(key, conditions);
            }
        }
        let emulator = Emulator {
            directions,
            base,
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        };
        let mut views = BTreeMap::new();
        for (from, region) in &topology.regions {
            let mut view = topology.clone();
            for (to, target) in &topology.regions {
                if to == from {
                    continue;
                }
                let outbound = emulator.direction(from, to)?;
                let inbound = emulator.direction(to, from)?;
                let seen = view
                    .regions
                    .get_mut(to)
                    .context("the view has every region")?;
                seen.node = emulator.tcp_relay(target.node, &outbound, &inbound).await?;
                seen.admin = emulator
                    .tcp_relay(target.admin, &outbound, &inbound)
                    .await?;
                // Only public regions listen for replication (private sites dial).
                if let Some(replicator) = target.replicator {
                    seen.replicator =
                        Some(emulator.udp_relay(replicator, &outbound, &inbound).await?);
                }
            }
            view.validate()
                .with_context(|| format!("the emulated view of {from} is not a valid topology"))?;
            std::fs::create_dir_all(&region.data_dir)
                .with_context(|| format!("failed to create {}", region.data_dir.display()))?;
            let path = region.data_dir.join("emulated-topology.toml");
            let text = format!(
                "# Region {from}'s view of the deployment, written by `meridian up`: the other\n\
                 # regions' node, admin and replicator addresses are link-emulator relays.\n{}",
                view.to_toml_string()
            );
            std::fs::write(&path, text)
                .with_context(|| format!("failed to write {}", path.display()))?;
            views.insert(from.clone(), path);
        }
        Ok((emulator, views))
    }

    fn direction(&self, from: &str, to: &str) -> anyhow::Result<Direction> {
        self.directions
            .get(&(from.to_owned(), to.to_owned()))
            .cloned()
            .with_context(|| format!("no link from {from} to {to}"))
    }

    async fn tcp_relay(
        &self,
        target: SocketAddr,
        outbound: &Direction,
        inbound: &Direction,
    ) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind((target.ip(), 0))
            .await
            .with_context(|| format!("failed to bind a TCP relay towards {target}"))?;
        let address = listener.local_addr()?;
        let (outbound, inbound, stop) = (outbound.clone(), inbound.clone(), self.stop.clone());
        self.tasks.spawn(async move {
            if let Err(error) =
                meridian_linkemu::relay_tcp(listener, target, outbound, inbound, stop).await
            {
                tracing::error!(%target, %error, "TCP relay failed");
            }
        });
        Ok(address)
    }

    async fn udp_relay(
        &self,
        target: SocketAddr,
        outbound: &Direction,
        inbound: &Direction,
    ) -> anyhow::Result<SocketAddr> {
        let socket = tokio::net::UdpSocket::bind((target.ip(), 0))
            .await
            .with_context(|| format!("failed to bind a UDP relay towards {target}"))?;
        let address = socket.local_addr()?;
        let (outbound, inbound, stop) = (outbound.clone(), inbound.clone(), self.stop.clone());
        self.tasks.spawn(async move {
            if let Err(error) =
                meridian_linkemu::relay_udp(socket, target, outbound, inbound, stop).await
            {
                tracing::error!(%target, %error, "UDP relay failed");
            }
        });
        Ok(address)
    }

    /// Cuts the link between `a` and `b`: both ways, or with `one_way` only
    /// what `a` sends towards `b`.
    pub fn partition(&self, a: &str, b: &str, one_way: bool) -> anyhow::Result<String> {
        let set = |from: &str, to: &str| -> anyhow::Result<()> {
            let direction = self.direction(from, to)?;
            let mut conditions = direction.conditions();
            conditions.partitioned = true;
            direction.set(conditions);
            Ok(())
        };
        set(a, b)?;
        if one_way {
            return Ok(format!(
                "partitioned {a} -> {b} (one way; {b} -> {a} still flows)"
            ));
        }
        set(b, a)?;
        Ok(format!("partitioned {a} <-> {b}"))
    }

    /// Restores the link between `a` and `b` to what the topology says.
    pub fn heal(&self, a: &str, b: &str) -> anyhow::Result<String> {
        for (from, to) in [(a, b), (b, a)] {
            let key = (from.to_owned(), to.to_owned());
            let base = self
                .base
                .get(&key)
                .copied()
                .with_context(|| format!("no link from {from} to {to}"))?;
            self.direction(from, to)?.set(base);
        }
        Ok(format!(
            "healed {a} <-> {b} (back to the topology's conditions)"
        ))
    }

    /// Changes the conditions of both directions between `a` and `b`.
    pub fn degrade(&self, a: &str, b: &str, change: LinkChange) -> anyhow::Result<String> {
        if let Some(loss) = change.loss_percent {
            anyhow::ensure!(
                loss.is_finite() && (0.0..=100.0).contains(&loss),
                "loss_percent = {loss}: must be between 0 and 100"
            );
        }
        anyhow::ensure!(
            change.bandwidth_kbps != Some(0),
            "bandwidth_kbps = 0: must be at least 1"
        );
        anyhow::ensure!(
            change != LinkChange::default(),
            "nothing to change: give at least one of latency_ms, jitter_ms, loss_percent, bandwidth_kbps"
        );
        for (from, to) in [(a, b), (b, a)] {
            let direction = self.direction(from, to)?;
            let mut conditions = direction.conditions();
            if let Some(latency) = change.latency_ms {
                conditions.delay = Duration::from_millis(latency.into());
            }
            if let Some(jitter) = change.jitter_ms {
                conditions.jitter = Duration::from_millis(jitter.into());
            }
            if let Some(loss) = change.loss_percent {
                conditions.loss = loss / 100.0;
            }
            if let Some(kbps) = change.bandwidth_kbps {
                conditions.bandwidth = Some(bytes_per_second(kbps));
            }
            direction.set(conditions);
        }
        let state = self.state(a, b)?;
        let cut: Vec<String> = [(a, b), (b, a)]
            .into_iter()
            .filter(|(from, to)| {
                self.direction(from, to)
                    .is_ok_and(|direction| direction.conditions().partitioned)
            })
            .map(|(from, to)| format!("{from} -> {to}"))
            .collect();
        Ok(format!(
            "{a} <-> {b} now: latency {} ms, jitter {} ms, loss {}%, bandwidth {}{}",
            state.latency_ms,
            state.jitter_ms,
            state.loss_percent,
            state
                .bandwidth_kbps
                .map_or_else(|| "unlimited".to_owned(), |kbps| format!("{kbps} kbit/s")),
            if cut.is_empty() {
                String::new()
            } else {
                format!("; still partitioned: {} (heal to restore)", cut.join(", "))
            }
        ))
    }

    fn state(&self, from: &str, to: &str) -> anyhow::Result<DirectionState> {
        let direction = self.direction(from, to)?;
        let conditions = direction.conditions();
        Ok(DirectionState {
            from: from.to_owned(),
            to: to.to_owned(),
            latency_ms: millis(conditions.delay),
            jitter_ms: millis(conditions.jitter),
            loss_percent: conditions.loss * 100.0,
            bandwidth_kbps: conditions
                .bandwidth
                .map(|bytes| bytes.saturating_mul(8) / 1000),
            partitioned: conditions.partitioned,
            stats: direction.stats(),
        })
    }

    /// Every direction's conditions and counters.
    pub fn states(&self) -> Vec<DirectionState> {
        self.directions
            .keys()
            .filter_map(|(from, to)| self.state(from, to).ok())
            .collect()
    }

    /// Stops every relay and waits for them.
    pub async fn shut_down(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// The topology's conditions for what `from` sends to `to`.
fn base_conditions(topology: &Topology, from: &str, to: &str) -> Conditions {
    match topology.link_between(from, to) {
        Some(link) => Conditions {
            delay: Duration::from_millis(link.latency_ms.into()),
            jitter: Duration::from_millis(link.jitter_ms.into()),
            loss: link.loss_percent / 100.0,
            bandwidth: link.bandwidth_kbps.map(bytes_per_second),
            partitioned: false,
        },
        None => Conditions {
            delay: Duration::from_millis(topology.distance_ms(from, to).unwrap_or(0).into()),
            ..Conditions::default()
        },
    }
}

/// kbit/s to bytes/s.
fn bytes_per_second(kbps: u64) -> u64 {
    (kbps.saturating_mul(1000) / 8).max(1)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
