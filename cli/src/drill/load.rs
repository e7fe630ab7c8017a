//! The verifying load of a drill: producers that record every acknowledged
//! message id, consumers that record every delivered and acknowledged one,
//! observers that record when each message becomes available in each
//! region, and official clients run as commands that report the same events
//! as JSON lines.
//!
//! Every event goes to the [`Ledger`] with the time it was seen, relative to
//! the start of the drill; the report is computed from the ledger alone.

use super::access::{ClientEnvironment, observer_group};
use super::client::{Client, Transport, new_message_id};
use anyhow::Context as _;
use parking_lot::Mutex;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a consumer's message stays invisible before it is redelivered.
const INVISIBLE: Duration = Duration::from_secs(10);
/// How long a receive waits for messages (long polling).
const LONG_POLLING: Duration = Duration::from_secs(2);
/// Pause after a failed call before the next try.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Messages per receive.
const BATCH: i32 = 16;
/// How long an external client may take to report `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long an external client may take to stop once its stdin is closed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// What a load client did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    Ready,
    Sent {
        message_id: String,
    },
    SendFailed {
        error: String,
    },
    Received {
        message_id: String,
    },
    Acked {
        message_id: String,
    },
    AckFailed {
        message_id: String,
        error: String,
    },
    ReceiveFailed {
        error: String,
    },
    /// An observer saw the message in `region`.
    Observed {
        region: String,
        message_id: String,
    },
    Stopped,
}

/// One event, when it was seen (ms since the drill started) and by whom.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at_ms: f64,
    pub client: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Every event of a drill, in the order seen.
pub struct Ledger {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

impl Ledger {
    pub fn new(start: Instant) -> Ledger {
        Ledger {
            start,
            events: Mutex::new(Vec::new()),
        }
    }

    /// ms since the drill started.
    pub fn now_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    pub fn record(&self, client: &str, kind: EventKind) {
        let event = Event {
            at_ms: self.now_ms(),
            client: client.to_owned(),
            kind,
        };
        self.events.lock().push(event);
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().clone()
    }
}

/// What kind of load client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Producer,
    Consumer,
    Observer,
}

/// A client of the load, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct ClientInfo {
    pub name: String,
    pub kind: Kind,
    /// `built-in` or the command line.
    pub program: String,
}

/// Where the load goes.
pub struct Target {
    /// The router the producers and consumers use.
    pub router: SocketAddr,
    pub topic: String,
    pub group: String,
    /// Per region holding the topic: its node, for the observers.
    pub observed: Vec<(String, SocketAddr)>,
    /// How the built-in clients reach the deployment.
    pub transport: Transport,
    /// The key and TLS the official clients are given.
    pub environment: ClientEnvironment,
}

/// The running load.
pub struct Load {
    pub clients: Vec<ClientInfo>,
    producers: Stoppable,
    consumers: Stoppable,
}

/// Built-in tasks and external processes of one kind, stopped together.
struct Stoppable {
    stop: CancellationToken,
    tasks: TaskTracker,
    processes: Vec<External>,
}

impl Stoppable {
    fn new() -> Stoppable {
        Stoppable {
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            processes: Vec::new(),
        }
    }

    async fn stop(&mut self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let stopping: Vec<_> = self.processes.drain(..).map(External::stop).collect();
        futures::future::join_all(stopping).await;
    }
}

/// What the drill file asks for (see `meridian_topology::DrillLoad`).
pub struct Plan<'a> {
    pub producers: u32,
    pub consumers: u32,
    pub send_interval: Duration,
    pub body_bytes: usize,
    pub seed: u64,
    pub external: &'a [meridian_topology::DrillClient],
}

impl Load {
    /// Starts observers first (so they see everything), then consumers,
    /// then producers; waits for external clients to report `ready`.
    pub async fn start(
        plan: &Plan<'_>,
        target: &Target,
        ledger: &Arc<Ledger>,
        logs: &Path,
    ) -> anyhow::Result<Load> {
        let mut load = Load {
            clients: Vec::new(),
            producers: Stoppable::new(),
            consumers: Stoppable::new(),
        };
        let started = load.start_clients(plan, target, ledger, logs).await;
        if let Err(error) = started {
            load.stop().await;
            return Err(error);
        }
        Ok(load)
    }

    async fn start_clients(
        &mut self,
        plan: &Plan<'_>,
        target: &Target,
        ledger: &Arc<Ledger>,
        logs: &Path,
    ) -> anyhow::Result<()> {
        for (region, node) in &target.observed {
            let name = format!("observer-{region}");
            let client = Client::new(*node, name.clone(), &target.topic, target.transport.clone());
            let group = observer_group(region);
            self.consumers.tasks.spawn(consume(
                client,
                group,
                name.clone(),
                Some(region.clone()),
                Arc::clone(ledger),
                self.consumers.stop.clone(),
            ));
            self.clients.push(ClientInfo {
                name,
                kind: Kind::Observer,
                program: format!("built-in, on {region}'s node {node}"),
            });
        }
        for index in 0..plan.consumers {
            let name = format!("consumer-{index}");
            let client = Client::new(
                target.router,
                format!("meridian-drill-{name}"),
                &target.topic,
                target.transport.clone(),
            );
            ledger.record(&name, EventKind::Ready);
            self.consumers.tasks.spawn(consume(
                client,
                target.group.clone(),
                name.clone(),
                None,
                Arc::clone(ledger),
                self.consumers.stop.clone(),
            ));
            self.clients.push(ClientInfo {
                name,
                kind: Kind::Consumer,
                program: "built-in".to_owned(),
            });
        }
        let mut ready = Vec::new();
        for client in plan.external {
            let command =
                client.command_for(&target.router.to_string(), &target.topic, &target.group);
            let external =
                External::start(&client.name, &command, &target.environment, ledger, logs).await?;
            ready.push((external.ready.clone(), external.closed.clone()));
            let kind = match client.kind {
                meridian_topology::ClientKind::Producer => Kind::Producer,
                meridian_topology::ClientKind::Consumer => Kind::Consumer,
            };
            self.clients.push(ClientInfo {
                name: client.name.clone(),
                kind,
                program: command.join(" "),
            });
            match kind {
                Kind::Producer => self.producers.processes.push(external),
                _ => self.consumers.processes.push(external),
            }
        }
        for (index, (ready, closed)) in ready.into_iter().enumerate() {
            let name = &plan.external[index].name;
            let log = logs.join(format!("{name}.log"));
            let reported = tokio::time::timeout(READY_TIMEOUT, async {
                tokio::select! {
                    biased;
                    () = ready.cancelled() => true,
                    () = closed.cancelled() => false,
                }
            })
            .await;
            match reported {
                Ok(true) => {}
                Ok(false) => anyhow::bail!(
                    "client {name} exited before it reported ready (a relative path in its \
                     command is taken from the directory `meridian drill run` runs in); see {}",
                    log.display()
                ),
                Err(_) => anyhow::bail!(
                    "client {name} did not report ready within {} s; see {}",
                    READY_TIMEOUT.as_secs(),
                    log.display()
                ),
            }
        }
        for index in 0..plan.producers {
            let name = format!("producer-{index}");
            let client = Client::new(
                target.router,
                format!("meridian-drill-{name}"),
                &target.topic,
                target.transport.clone(),
            );
            ledger.record(&name, EventKind::Ready);
            self.producers.tasks.spawn(produce(
                client,
                name.clone(),
                plan.send_interval,
                body(plan.body_bytes, plan.seed.wrapping_add(u64::from(index))),
                Arc::clone(ledger),
                self.producers.stop.clone(),
            ));
            self.clients.push(ClientInfo {
                name,
                kind: Kind::Producer,
                program: "built-in".to_owned(),
            });
        }
        Ok(())
    }

    /// Stops every producer; consumers go on.
    pub async fn stop_producers(&mut self) {
        self.producers.stop().await;
    }

    /// Stops everything.
    pub async fn stop(&mut self) {
        self.producers.stop().await;
        self.consumers.stop().await;
    }
}

/// A body of `size` bytes, the same for the same seed.
fn body(size: usize, seed: u64) -> Vec<u8> {
    use rand::{Rng as _, SeedableRng as _};
    let mut random = rand::rngs::StdRng::seed_from_u64(seed);
    (0..size)
        .map(|_| random.random_range(b'a'..=b'z'))
        .collect()
}

async fn produce(
    mut client: Client,
    name: String,
    interval: Duration,
    body: Vec<u8>,
    ledger: Arc<Ledger>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        // A send in flight when the producers stop completes: its outcome counts.
        match client.send(new_message_id(), "drill", body.clone()).await {
            Ok(message_id) => ledger.record(&name, EventKind::Sent { message_id }),
            Err(error) => ledger.record(&name, EventKind::SendFailed { error }),
        }
    }
    ledger.record(&name, EventKind::Stopped);
}

/// A consumer of `group` (or, with `observe`, an observer of that region).
async fn consume(
    mut client: Client,
    group: String,
    name: String,
    observe: Option<String>,
    ledger: Arc<Ledger>,
    stop: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => break,
            received = client.receive(&group, BATCH, INVISIBLE, LONG_POLLING) => received,
        };
        let deliveries = match received {
            Ok(deliveries) => deliveries,
            Err(error) => {
                if observe.is_none() {
                    ledger.record(&name, EventKind::ReceiveFailed { error });
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(RETRY_PAUSE) => {}
                }
                continue;
            }
        };
        for delivery in &deliveries {
            let message_id = delivery.message_id.clone();
            match &observe {
                Some(region) => ledger.record(
                    &name,
                    EventKind::Observed {
                        region: region.clone(),
                        message_id,
                    },
                ),
                None => ledger.record(&name, EventKind::Received { message_id }),
            }
        }
        if deliveries.is_empty() {
            continue;
        }
        // One AckMessage per receive, as a batch.
        let outcomes = client.ack(&group, &deliveries).await;
        if observe.is_some() {
            continue;
        }
        for (delivery, outcome) in deliveries.into_iter().zip(outcomes) {
            let message_id = delivery.message_id;
            match outcome {
                Ok(()) => ledger.record(&name, EventKind::Acked { message_id }),
                Err(error) => ledger.record(&name, EventKind::AckFailed { message_id, error }),
            }
        }
    }
    ledger.record(&name, EventKind::Stopped);
}

/// An official client run as a command: events on stdout as JSON lines,
/// stopped by closing its stdin.
struct External {
    name: String,
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    /// Cancelled when the client reports `ready`.
    ready: CancellationToken,
    /// Cancelled when the client closes its stdout (it exited).
    closed: CancellationToken,
    reader: tokio::task::JoinHandle<()>,
}

impl External {
    async fn start(
        name: &str,
        command: &[String],
        environment: &ClientEnvironment,
        ledger: &Arc<Ledger>,
        logs: &Path,
    ) -> anyhow::Result<External> {
        let (program, arguments) = command
            .split_first()
            .with_context(|| format!("client {name} has an empty command"))?;
        std::fs::create_dir_all(logs)
            .with_context(|| format!("failed to create {}", logs.display()))?;
        let log_path = logs.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("failed to create {}", log_path.display()))?;
        let mut child = tokio::process::Command::new(program);
        environment.apply(&mut child);
        let mut child = child
            .args(arguments)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("failed to start client {name}: {}", command.join(" ")))?;
        let stdout = child
            .stdout
            .take()
            .context("client stdout was not captured")?;
        let stdin = child.stdin.take();
        let ready = CancellationToken::new();
        let closed = CancellationToken::new();
        let reader = tokio::spawn({
            let (name, ledger, ready, closed) = (
                name.to_owned(),
                Arc::clone(ledger),
                ready.clone(),
                closed.clone(),
            );
            async move {
                read_events(name, stdout, ledger, ready).await;
                closed.cancel();
            }
        });
        Ok(External {
            name: name.to_owned(),
            child,
            stdin,
            ready,
            closed,
            reader,
        })
    }

    /// Closes stdin and waits for the client to exit (killing it after
    /// [`STOP_TIMEOUT`]), then for its last events.
    async fn stop(mut self) {
        drop(self.stdin.take());
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => {
                tracing::warn!(client = %self.name, %status, "client exited with an error")
            }
            Ok(Err(error)) => {
                tracing::warn!(client = %self.name, %error, "could not wait for client")
            }
            Err(_) => {
                tracing::warn!(client = %self.name, "client did not stop in time; killing it");
                let _ = self.child.kill().await;
            }
        }
        let _ = self.reader.await;
    }
}

/// The JSON-line events a client command prints on stdout.
#[derive(serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Line {
    Ready,
    Sent { message_id: String },
    SendFailed { error: String },
    Received { message_id: String },
    Acked { message_id: String },
    AckFailed { message_id: String, error: String },
    ReceiveFailed { error: String },
    Stopped,
    Failed { error: String },
}

async fn read_events(
    name: String,
    stdout: tokio::process::ChildStdout,
    ledger: Arc<Ledger>,
    ready: CancellationToken,
) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let kind = match serde_json::from_str::<Line>(&line) {
            Ok(Line::Ready) => {
                ready.cancel();
                EventKind::Ready
            }
            Ok(Line::Sent { message_id }) => EventKind::Sent { message_id },
            Ok(Line::SendFailed { error }) => EventKind::SendFailed { error },
            Ok(Line::Received { message_id }) => EventKind::Received { message_id },
            Ok(Line::Acked { message_id }) => EventKind::Acked { message_id },
            Ok(Line::AckFailed { message_id, error }) => EventKind::AckFailed { message_id, error },
            Ok(Line::ReceiveFailed { error }) => EventKind::ReceiveFailed { error },
            Ok(Line::Stopped) => EventKind::Stopped,
            Ok(Line::Failed { error }) => {
                tracing::error!(client = %name, %error, "client failed");
                continue;
            }
            Err(error) => {
                tracing::warn!(client = %name, %error, line = %line, "not a drill event");
                continue;
            }
        };
        ledger.record(&name, kind);
    }
}
