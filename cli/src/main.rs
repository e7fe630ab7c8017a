//! `meridian`: the one binary of a Meridian deployment.
//!
//! A thin shell: clap parses the command line, the topology crate loads and
//! validates the topology file, and each subcommand hands bound sockets to the
//! library crate that does the work. `meridian up` runs a whole deployment on
//! this machine as child processes of this same binary.

mod admin;
mod bench;
mod certs;
mod control;
mod credentials;
mod deployment;
mod drill;
mod emulation;
mod messages;
mod process;
mod status;
mod supervisor;
mod up;

use clap::{Parser, Subcommand};
use meridian_sockets::{Inherited, Role, Sharing};
use meridian_topology::Topology;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Exit code for a topology file or region name that cannot be used.
const EXIT_INVALID_TOPOLOGY: u8 = 2;
/// Exit code for a drill that could not be played to the end.
const EXIT_DRILL_ERROR: u8 = 3;

#[derive(Parser)]
#[command(
    name = "meridian",
    version,
    about = "Geo-replicated message queue, RocketMQ 5 compatible"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a whole deployment on this machine: per region a node, a replicator and a router.
    Up {
        /// Topology file; without it, the built-in three-region demo.
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Where the built-in demo keeps its data (ignored with --topology).
        #[arg(long, default_value = "meridian-data")]
        data_dir: PathBuf,
        /// Connect regions directly instead of through the link emulator.
        #[arg(long)]
        no_emulation: bool,
        /// Control socket for `meridian ctl` (default: the topology file's
        /// path with the extension `.sock`).
        #[arg(long)]
        control: Option<PathBuf>,
    },
    /// Control a running `meridian up`: kill, stop, start or restart a
    /// process, cut, heal or degrade a link, show what runs.
    Ctl {
        #[command(flatten)]
        target: ControlTarget,
        #[command(subcommand)]
        command: CtlCommand,
    },
    /// Load a deployment and measure it (throughput, latency, CPU).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Failure drills: a scripted scenario from a topology file's [drill].
    Drill {
        #[command(subcommand)]
        command: DrillCommand,
    },
    /// Run one region's node (storage + RocketMQ gRPC + internal API +
    /// HTTP and STOMP when the topology or the flags give their addresses).
    Node(NodeArgs),
    /// Run one region's replicator (QUIC commit-log shipping to peers).
    Replicator(RoleArgs),
    /// Run one region's router (QueryRoute to the nearest healthy region).
    Router(RoleArgs),
    /// Print every region's node health and every replication link's backlog.
    /// Exits with 1 if a region's node does not answer.
    Status {
        #[arg(long)]
        topology: PathBuf,
    },
    /// Make a development CA and a certificate per region for mutual TLS
    /// between replicators, and print the `[replication_tls]` table that
    /// uses them.
    Certs {
        #[arg(long)]
        topology: PathBuf,
        /// Where to write the PEM files (default: `certs/` next to the topology).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace existing region certificates (the CA is always kept).
        #[arg(long)]
        force: bool,
    },
    /// Validate a topology file and print what it describes.
    Check {
        #[arg(long)]
        topology: PathBuf,
    },
    /// A region's topics, consumer groups and messages: list, describe,
    /// create, update, delete, reset progress, query and trace messages,
    /// export the topology; through its node's admin address.
    Admin {
        /// Topology file of the deployment.
        #[arg(long, default_value = "meridian-data/demo-topology.toml")]
        topology: PathBuf,
        /// Region whose node to ask (default: the topology's first).
        #[arg(long)]
        region: Option<String>,
        /// JSON instead of tables.
        #[arg(long, global = true)]
        json: bool,
        // A key granted `admin`; without one, the topology's internal key.
        #[command(flatten)]
        key: credentials::AccessKeyArgs,
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
}

/// Which running `meridian up` a `meridian ctl` talks to.
#[derive(clap::Args)]
struct ControlTarget {
    /// The topology file `meridian up` runs (its control socket is the same
    /// path with the extension `.sock`).
    #[arg(long, global = true, conflicts_with_all = ["data_dir", "control"])]
    topology: Option<PathBuf>,
    /// The built-in demo's data directory, as given to `meridian up`
    /// (relative to the current directory).
    #[arg(
        long,
        global = true,
        default_value = "meridian-data",
        conflicts_with = "control"
    )]
    data_dir: PathBuf,
    /// The control socket itself (as given to `meridian up --control`).
    #[arg(long, global = true)]
    control: Option<PathBuf>,
}

impl ControlTarget {
    fn socket(&self) -> PathBuf {
        match (&self.control, &self.topology) {
            (Some(control), _) => control.clone(),
            (None, Some(topology)) => control::default_socket_path(topology),
            (None, None) => control::default_socket_path(&self.data_dir.join("demo-topology.toml")),
        }
    }
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Every process's state, every emulated link's conditions and counters.
    Status {
        /// JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// SIGKILL a process, as a crash would; it stays down until `start`.
    Kill { region: String, role: RoleName },
    /// SIGTERM a process; it stays down until `start`.
    Stop { region: String, role: RoleName },
    /// Start a process that is down.
    Start { region: String, role: RoleName },
    /// Stop a process, then start it.
    Restart { region: String, role: RoleName },
    /// Cut the link between two regions (both ways, or with --one-way only
    /// what the first sends to the second).
    Partition {
        a: String,
        b: String,
        #[arg(long)]
        one_way: bool,
    },
    /// Restore the link between two regions to the topology's conditions.
    Heal { a: String, b: String },
    /// Change the conditions of the link between two regions (both directions).
    Degrade {
        a: String,
        b: String,
        /// One-way delay, ms.
        #[arg(long)]
        latency_ms: Option<u32>,
        /// Extra one-way delay, uniform in [0, N], ms.
        #[arg(long)]
        jitter_ms: Option<u32>,
        /// Datagrams lost, percent (0-100); on TCP paths a lost chunk is
        /// delayed by a retransmission timeout instead.
        #[arg(long)]
        loss_percent: Option<f64>,
        /// Capacity, kbit/s.
        #[arg(long)]
        bandwidth_kbps: Option<u64>,
    },
}

/// `meridian bench` scenarios.
#[derive(Debug, clap::Subcommand)]
enum BenchCommand {
    /// Durable publish throughput and latency: producers each waiting for
    /// every send's answer.
    Produce(bench::ProduceArgs),
    /// Consume throughput: a topic filled first, then received in batches
    /// of 32 and acknowledged by consumers of one group.
    Consume(bench::ConsumeArgs),
    /// End-to-end latency, send to delivery, at a fixed rate; in one region
    /// or across two over an emulated link (`--cross-region`).
    Latency(bench::LatencyArgs),
}

#[derive(Subcommand)]
enum DrillCommand {
    /// Start the file's deployment (fresh data, links emulated), run its
    /// load, play its steps and report. Exits with 1 if an invariant failed.
    Run {
        /// A topology file with a [drill] section.
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Seed for link loss and jitter and the message bodies (default:
        /// the drill's `seed`, else random; the report shows it).
        #[arg(long)]
        seed: Option<u64>,
        /// Keep the deployment's data here (default: a temporary directory,
        /// removed after a passing drill).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Keep the data directory even when the drill passes.
        #[arg(long)]
        keep_data: bool,
        /// Use the file's addresses instead of ports chosen by the OS.
        #[arg(long)]
        fixed_ports: bool,
        /// Report recovery times but do not fail on the drill's
        /// `max_recovery_ms` (for busy machines such as CI runners).
        #[arg(long)]
        no_timing_invariants: bool,
        /// With `[access]` in the file: the key of its keys file that the
        /// load's clients sign with (default: the `internal_key`, if it is
        /// granted what the load does). The runner reads the secret from
        /// the keys file, as the deployment does.
        #[arg(long)]
        access_key: Option<String>,
    },
}

/// A region's process, for `meridian ctl`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleName {
    Node,
    Replicator,
    Router,
}

impl From<RoleName> for control::ProcessRole {
    fn from(role: RoleName) -> Self {
        match role {
            RoleName::Node => control::ProcessRole::Node,
            RoleName::Replicator => control::ProcessRole::Replicator,
            RoleName::Router => control::ProcessRole::Router,
        }
    }
}

#[derive(clap::Args)]
struct RoleArgs {
    /// Topology file describing the deployment.
    #[arg(long)]
    topology: PathBuf,
    /// Which region of the topology this process serves.
    #[arg(long)]
    region: String,
    /// Also shut down gracefully when stdin reaches end of file: how
    /// `meridian up` makes its children follow it even if it is killed.
    #[arg(long, hide = true)]
    stop_on_stdin_eof: bool,
}

#[derive(clap::Args)]
struct NodeArgs {
    #[command(flatten)]
    role: RoleArgs,
    /// Serve the HTTP faces (the Aliyun MQ HTTP API and the JSON REST API)
    /// on this address instead of the topology's `http`; `off` serves none.
    #[arg(long, value_name = "ADDRESS|off")]
    http: Option<ListenFlag>,
    /// Serve STOMP 1.2 on this address instead of the topology's `stomp`;
    /// `off` serves none.
    #[arg(long, value_name = "ADDRESS|off")]
    stomp: Option<ListenFlag>,
}

/// A `--http` / `--stomp` value: an address, or `off`.
#[derive(Debug, Clone, Copy)]
struct ListenFlag(Option<std::net::SocketAddr>);

impl std::str::FromStr for ListenFlag {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("off") {
            return Ok(ListenFlag(None));
        }
        text.parse()
            .map(|address| ListenFlag(Some(address)))
            .map_err(|_| format!("`{text}` is neither an address like 127.0.0.1:8080 nor `off`"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    // Before any thread starts: reading them also removes LISTEN_FDS from the
    // environment (see meridian-sockets).
    let inherited = match Inherited::from_env() {
        Ok(inherited) => inherited,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli.command, inherited))
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // async-nats (bench's NATS comparison) logs every connection at info.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(command: Command, inherited: Inherited) -> ExitCode {
    match command {
        Command::Up {
            topology,
            data_dir,
            no_emulation,
            control,
        } => report(
            up::run(
                up::UpArgs {
                    topology,
                    demo_data_dir: data_dir,
                    emulate_links: !no_emulation,
                    control,
                },
                inherited,
            )
            .await,
        ),
        Command::Ctl { target, command } => ctl(&target.socket(), command).await,
        Command::Bench { command } => match match command {
            BenchCommand::Produce(args) => bench::produce(args).await,
            BenchCommand::Consume(args) => bench::consume(args).await,
            BenchCommand::Latency(args) => bench::latency(args).await,
        } {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::from(2)
            }
        },
        Command::Drill {
            command:
                DrillCommand::Run {
                    file,
                    json,
                    seed,
                    data_dir,
                    keep_data,
                    fixed_ports,
                    no_timing_invariants,
                    access_key,
                },
        } => {
            let args = drill::RunArgs {
                file,
                json,
                seed,
                data_dir,
                keep_data,
                fixed_ports,
                timing_invariants: !no_timing_invariants,
                access_key,
            };
            match drill::run(args, inherited).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::from(EXIT_DRILL_ERROR)
                }
            }
        }
        Command::Status { topology } => {
            let topology = match load(&topology, None) {
                Ok(topology) => topology,
                Err(code) => return code,
            };
            let report = status::report(&topology).await;
            print!("{}", report.text);
            if report.regions_down.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "error: no answer from the node of {}",
                    report.regions_down.join(", ")
                );
                ExitCode::FAILURE
            }
        }
        Command::Admin {
            topology,
            region,
            json,
            key,
            command,
        } => {
            let topology = match load(&topology, region.as_deref()) {
                Ok(topology) => topology,
                Err(code) => return code,
            };
            let region = region.or_else(|| topology.regions.keys().next().cloned());
            let Some(admin) = region
                .as_deref()
                .and_then(|region| topology.regions.get(region))
                .map(|region| region.admin)
            else {
                eprintln!("error: the topology has no region");
                return ExitCode::from(EXIT_INVALID_TOPOLOGY);
            };
            let signer = match key.signer() {
                Ok(Some(signer)) => signer,
                Ok(None) => admin::internal_signer(&topology),
                Err(error) => return report(Err(error)),
            };
            match admin::run(admin, signer, &topology, &command, json).await {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(error) => report(Err(error)),
            }
        }
        Command::Certs {
            topology: path,
            out,
            force,
        } => {
            // The files may not exist yet: read the topology without them.
            let topology = match Topology::load(&path) {
                Ok(topology) => topology,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(EXIT_INVALID_TOPOLOGY);
                }
            };
            let directory = out.unwrap_or_else(|| certs::default_directory(&path));
            match certs::make(&topology, &path, &directory, force) {
                Ok(text) => {
                    // A closed pipe (`| head`) is not an error worth a panic.
                    let _ = writeln!(std::io::stdout().lock(), "{text}");
                    ExitCode::SUCCESS
                }
                Err(error) => report(Err(error)),
            }
        }
        Command::Check { topology } => match load(&topology, None) {
            Ok(topology) => {
                print!("{}", up::endpoint_table(&topology));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Node(args) => {
            let mut topology = match load(&args.role.topology, Some(&args.role.region)) {
                Ok(topology) => topology,
                Err(code) => return code,
            };
            if let Some(region) = topology.regions.get_mut(&args.role.region) {
                if let Some(ListenFlag(http)) = args.http {
                    region.http = http;
                }
                if let Some(ListenFlag(stomp)) = args.stomp {
                    region.stomp = stomp;
                }
            }
            if let Err(error) = topology.validate() {
                eprintln!("error: with the --http / --stomp flags: {error}");
                return ExitCode::from(2);
            }
            report(
                run_node(
                    topology,
                    &args.role.region,
                    args.role.stop_on_stdin_eof,
                    inherited,
                )
                .await,
            )
        }
        Command::Replicator(args) => {
            let topology = match load(&args.topology, Some(&args.region)) {
                Ok(topology) => topology,
                Err(code) => return code,
            };
            report(run_replicator(topology, args.region, args.stop_on_stdin_eof, inherited).await)
        }
        Command::Router(args) => {
            let topology = match load(&args.topology, Some(&args.region)) {
                Ok(topology) => topology,
                Err(code) => return code,
            };
            report(run_router(topology, args.region, args.stop_on_stdin_eof, inherited).await)
        }
    }
}

/// `meridian ctl`: one request to a running `meridian up`.
async fn ctl(socket: &Path, command: CtlCommand) -> ExitCode {
    use control::{ControlRequest, ProcessAction};
    let process = |action, region: String, role: RoleName| ControlRequest::Process {
        action,
        region,
        role: role.into(),
    };
    let mut json = false;
    let request = match command {
        CtlCommand::Status { json: as_json } => {
            json = as_json;
            ControlRequest::Status
        }
        CtlCommand::Kill { region, role } => process(ProcessAction::Kill, region, role),
        CtlCommand::Stop { region, role } => process(ProcessAction::Stop, region, role),
        CtlCommand::Start { region, role } => process(ProcessAction::Start, region, role),
        CtlCommand::Restart { region, role } => process(ProcessAction::Restart, region, role),
        CtlCommand::Partition { a, b, one_way } => ControlRequest::Partition {
            link: [a, b],
            one_way,
        },
        CtlCommand::Heal { a, b } => ControlRequest::Heal { link: [a, b] },
        CtlCommand::Degrade {
            a,
            b,
            latency_ms,
            jitter_ms,
            loss_percent,
            bandwidth_kbps,
        } => ControlRequest::Degrade {
            link: [a, b],
            change: emulation::LinkChange {
                latency_ms,
                jitter_ms,
                loss_percent,
                bandwidth_kbps,
            },
        },
    };
    let answer = match control::request(socket, &request).await {
        Ok(answer) => answer,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    if !answer.ok {
        eprintln!("error: {}", answer.message);
        return ExitCode::FAILURE;
    }
    match &answer.status {
        Some(status) if json => match serde_json::to_string_pretty(status) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        },
        Some(status) => print!("{}", control::status_text(status)),
        None => println!("{}", answer.message),
    }
    ExitCode::SUCCESS
}

/// Loads and validates the topology (and the region, when given); on failure
/// prints why and yields exit code 2.
fn load(path: &Path, region: Option<&str>) -> Result<Topology, ExitCode> {
    let topology = Topology::load(path).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::from(EXIT_INVALID_TOPOLOGY)
    })?;
    if let Some(region) = region {
        topology.region(region).map_err(|error| {
            eprintln!("error: {}: {error}", path.display());
            ExitCode::from(EXIT_INVALID_TOPOLOGY)
        })?;
    }
    // A broken keys file is refused here, before any process starts.
    meridian_face::access::Authentication::of_topology(topology.access.as_ref()).map_err(
        |error| {
            eprintln!("error: {}: {error}", path.display());
            ExitCode::from(EXIT_INVALID_TOPOLOGY)
        },
    )?;
    // So are unreadable `[client_tls]` files (every region's certificate
    // and key, and the CA).
    let tls_error = |error: meridian_face::tls::TlsError| {
        eprintln!("error: {}: [client_tls]: {error}", path.display());
        ExitCode::from(EXIT_INVALID_TOPOLOGY)
    };
    meridian_face::tls::Dialer::of_topology(&topology).map_err(tls_error)?;
    for name in topology.regions.keys() {
        meridian_face::tls::ServerTls::of_topology(&topology, name).map_err(tls_error)?;
    }
    Ok(topology)
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Tells whoever started this process that it is serving (see tests/ and `up`).
fn announce_ready(role: &str, region: &str) {
    let mut stdout = std::io::stdout().lock();
    // If nobody reads stdout, readiness has no audience; nothing to do.
    let _ = writeln!(stdout, "MERIDIAN_READY role={role} region={region}");
    let _ = stdout.flush();
}

/// A token cancelled on Ctrl-C or SIGTERM, and on end of stdin when asked.
fn shutdown_on_signals(stop_on_stdin_eof: bool) -> anyhow::Result<CancellationToken> {
    let token = CancellationToken::new();
    if stop_on_stdin_eof {
        let cancel = token.clone();
        // A plain thread: a blocking read must not hold up the runtime's shutdown.
        std::thread::Builder::new()
            .name("stdin-watch".into())
            .spawn(move || {
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut sink);
                tracing::info!("stdin closed (the parent went away); shutting down");
                cancel.cancel();
            })?;
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM; shutting down"),
        }
        cancel.cancel();
    });
    Ok(token)
}

/// The role's sockets in topology order: inherited from the parent when it
/// passed them (`meridian up`, the test harness, systemd), else bound here.
fn role_sockets(
    topology: &Topology,
    region: &str,
    role: Role,
    mut inherited: Inherited,
) -> anyhow::Result<Vec<meridian_sockets::BoundSocket>> {
    let config = topology.region(region)?;
    let mut sockets = Vec::new();
    for spec in meridian_sockets::role_sockets(region, config, role) {
        sockets.push(meridian_sockets::obtain(
            &mut inherited,
            &spec,
            Sharing::Exclusive,
        )?);
    }
    let unused = inherited.remaining();
    if !unused.is_empty() {
        tracing::warn!(?unused, "inherited sockets that this {role} does not use");
    }
    Ok(sockets)
}

fn tcp_listener(socket: meridian_sockets::BoundSocket) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = socket.into_tcp_listener()?;
    Ok(tokio::net::TcpListener::from_std(listener)?)
}

async fn run_node(
    topology: Topology,
    region: &str,
    stop_on_stdin_eof: bool,
    inherited: Inherited,
) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signals(stop_on_stdin_eof)?;
    let node = tokio::task::spawn_blocking({
        let (topology, region) = (topology.clone(), region.to_owned());
        move || meridian_region_node::Node::open(topology, &region)
    })
    .await??;
    // node, admin, then http and stomp when served (`role_sockets`' order).
    let config = topology.region(region)?;
    let mut sockets = role_sockets(&topology, region, Role::Node, inherited)?.into_iter();
    let mut next = |what: &str| {
        sockets
            .next()
            .ok_or_else(|| anyhow::anyhow!("the node's {what} socket is missing"))
            .and_then(tcp_listener)
    };
    let listeners = meridian_region_node::Listeners {
        node: next("node")?,
        admin: next("admin")?,
        http: config.http.map(|_| next("http")).transpose()?,
        stomp: config.stomp.map(|_| next("stomp")).transpose()?,
    };
    announce_ready("node", region);
    node.serve(listeners, shutdown).await?;
    Ok(())
}

async fn run_replicator(
    topology: Topology,
    region: String,
    stop_on_stdin_eof: bool,
    inherited: Inherited,
) -> anyhow::Result<()> {
    let config = topology.region(&region)?;
    let lock = meridian_replicator::lock_data_dir(&config.data_dir)?;
    let shutdown = shutdown_on_signals(stop_on_stdin_eof)?;
    // A public region's replicator listens on one socket; a private site's
    // on none (it dials its hubs from an ephemeral port of its own).
    let socket = match <[_; 1]>::try_from(role_sockets(
        &topology,
        &region,
        Role::Replicator,
        inherited,
    )?) {
        Ok([socket]) => Some(socket.into_udp_socket()?),
        Err(none) if none.is_empty() => None,
        Err(_) => anyhow::bail!("a replicator listens on at most one socket"),
    };
    announce_ready("replicator", &region);
    meridian_replicator::serve(topology, region, socket, lock, shutdown).await?;
    Ok(())
}

async fn run_router(
    topology: Topology,
    region: String,
    stop_on_stdin_eof: bool,
    inherited: Inherited,
) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signals(stop_on_stdin_eof)?;
    let [socket]: [_; 1] = role_sockets(&topology, &region, Role::Router, inherited)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("a router listens on one socket"))?;
    let listener = tcp_listener(socket)?;
    announce_ready("router", &region);
    meridian_router::run(topology, region, listener, shutdown).await?;
    Ok(())
}
