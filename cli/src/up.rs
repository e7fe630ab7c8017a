//! `meridian up`: a whole deployment on this machine, for demos and drills.
//!
//! Per region it starts the node first (routers and replicators talk to it),
//! then the replicator and the router, each as a child process of this binary
//! (see [`crate::deployment`]), each logging to `<data_dir>/logs/<role>.log`,
//! with the link emulator between regions unless `--no-emulation`. It prints
//! a table of endpoints, answers `meridian ctl` on its control socket and runs
//! until Ctrl-C or SIGTERM, then stops every child with SIGTERM (routers
//! first, nodes last) and waits for them. A child that exits on its own (a
//! crash, a `kill -9` from a shell) is started again on the same sockets after
//! 1 s, backing off up to 30 s while it keeps exiting within 10 s of starting.

use crate::control::ControlSocket;
use crate::deployment::{Deployment, Options};
use anyhow::Context as _;
use meridian_sockets::Inherited;
use meridian_topology::Topology;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `meridian up` was asked for.
pub struct UpArgs {
    pub topology: Option<PathBuf>,
    pub demo_data_dir: PathBuf,
    pub emulate_links: bool,
    pub control: Option<PathBuf>,
}

pub async fn run(args: UpArgs, inherited: Inherited) -> anyhow::Result<()> {
    let path = match args.topology {
        Some(path) => path,
        None => write_demo(&args.demo_data_dir)?,
    };
    let topology = Topology::load(&path)?;
    let control_path = args
        .control
        .unwrap_or_else(|| crate::control::default_socket_path(&path));
    let control = ControlSocket::bind(&control_path).await?;
    // Every socket of the deployment is bound before any process starts, so a
    // port in use is reported at once, and each child inherits its sockets.
    let sockets = crate::deployment::bind_all(&topology, inherited)?;
    let shutdown = crate::shutdown_on_signals(false)?;
    let options = Options {
        emulate_links: args.emulate_links,
        seed: rand::random(),
    };
    let deployment = Arc::new(Deployment::start(topology, path.clone(), sockets, options).await?);
    let topology = deployment.topology();
    println!(
        "Meridian is up ({} regions, topology {}).",
        topology.regions.len(),
        path.display()
    );
    print!("{}", endpoint_table(topology));
    if args.emulate_links {
        println!(
            "Links between regions are emulated (latency, jitter, loss, bandwidth from the topology)."
        );
    }
    println!(
        "Control: meridian ctl --control {} status | kill|stop|start|restart REGION ROLE | partition|heal|degrade A B",
        control.path().display()
    );
    println!("Logs: <data_dir>/logs/<role>.log per region. Press Ctrl-C to stop.");

    control
        .serve(Arc::clone(&deployment), shutdown.clone())
        .await;
    println!("Stopping Meridian...");
    let mut deployment =
        Arc::into_inner(deployment).context("control connections still hold the deployment")?;
    deployment.shut_down().await;
    println!("Stopped.");
    Ok(())
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
            region.replicator.map_or_else(
                || format!("dials {}", region.hubs.join(", ")),
                |address| address.to_string()
            ),
            region.data_dir.display()
        );
    }
    let other_faces: Vec<String> = topology
        .regions
        .iter()
        .filter(|(_, region)| region.http.is_some() || region.stomp.is_some())
        .map(|(name, region)| {
            let show = |address: Option<std::net::SocketAddr>| {
                address.map_or_else(|| "off".to_owned(), |address| address.to_string())
            };
            format!(
                "{:<12} HTTP (Aliyun MQ API, JSON API under /v1/) {:<22} STOMP 1.2 {}",
                name,
                show(region.http),
                show(region.stomp)
            )
        })
        .collect();
    for line in other_faces {
        let _ = writeln!(table, "{line}");
    }
    let _ = writeln!(
        table,
        "access: {}",
        match &topology.access {
            None => "development mode: every client protocol and the admin API accept \
                     anonymous clients"
                .to_owned(),
            Some(access) => format!(
                "clients (RocketMQ, HTTP, STOMP) and the admin API need an access key from {}; \
                 this deployment's own processes sign as `{}`",
                access.keys_file.display(),
                access.internal_key
            ),
        }
    );
    let _ = writeln!(
        table,
        "TLS: {}",
        match &topology.client_tls {
            None => "off: every client endpoint speaks plain TCP".to_owned(),
            Some(tls) => format!(
                "every client endpoint (router, node, admin, HTTP, STOMP) takes TLS only; \
                 clients trust {} (Rust client: SSL_CERT_FILE, Python: \
                 GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, Node.js: GRPC_DEFAULT_SSL_ROOTS_FILE_PATH)",
                tls.ca.display()
            ),
        }
    );
    if topology.regions.len() > 1 {
        let _ = writeln!(
            table,
            "replication: {}",
            match &topology.replication_tls {
                None => "TLS with each replicator's self-signed certificate, which dialers \
                         read from the peer's data directory (this machine only; only the \
                         accepting side is authenticated)"
                    .to_owned(),
                Some(tls) => format!(
                    "mutual TLS: every replicator presents its certificate ({}) and accepts \
                     only peers whose certificate {} signed for their region \
                     (`<region>.replicator.meridian`); refused peers are logged in \
                     replicator.log",
                    tls.cert.display(),
                    tls.ca.display()
                ),
            }
        );
    }
    for (name, topic) in &topology.topics {
        let durability = match topic.durability {
            meridian_topology::Durability::Local => String::new(),
            meridian_topology::Durability::Geo => format!(
                "; sends answered once applied in {} other region(s) (durability geo)",
                topic.geo_copies
            ),
        };
        let _ = writeln!(
            table,
            "topic {name}: {} queues, replicated to {}{durability}",
            topic.queues,
            topic.replicate_to.join(", ")
        );
    }
    table
}
