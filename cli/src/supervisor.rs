//! One process of a `meridian up` deployment, kept running and controllable.
//!
//! A supervisor task owns one child (a region's node, replicator or router).
//! When the child exits on its own (a crash, a `kill -9` from a shell) it is
//! started again on the same sockets after 1 s, backing off up to 30 s while
//! it keeps exiting within [`STABLE_AFTER`] of starting. Requests from
//! `meridian ctl` and drills ([`Request`]) stop or kill it and keep it down
//! until they start it again; [`ProcessState`] is what `meridian ctl status`
//! shows.

use crate::process::ChildProcess;
use meridian_sockets::{Handover, Reissue, Role};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// A process that ran this long before exiting is restarted after the
/// shortest delay again; one that exits sooner counts as failing to start and
/// waits longer each time.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// What a supervisor can be asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGKILL, and keep the process down until [`Request::Start`].
    Kill,
    /// SIGTERM (SIGKILL after 15 s), and keep it down until [`Request::Start`].
    Stop,
    /// Start it now if it is not running, and restart it on exits again.
    Start,
    /// Stop it (SIGTERM) if it runs, then start it.
    Restart,
}

/// Where a supervised process stands, for `meridian ctl status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessState {
    pub region: String,
    /// `node`, `replicator` or `router`.
    pub role: String,
    /// `running`, `down` (stopped or killed on request) or `restarting`
    /// (exited on its own; started again after a back-off).
    pub state: String,
    pub pid: Option<u32>,
    /// How many times it was started after the first time.
    pub restarts: u64,
    /// When it entered its state, in ms since the Unix epoch.
    pub since_unix_ms: u64,
}

/// The channel to one supervisor task.
pub struct Supervised {
    requests: mpsc::Sender<(Request, oneshot::Sender<Result<String, String>>)>,
    state: Arc<parking_lot::Mutex<ProcessState>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervised {
    /// Hands `child` to a new supervisor task.
    pub fn spawn(
        child: ChildProcess,
        role: Role,
        topology: PathBuf,
        reissues: Vec<Reissue>,
    ) -> Self {
        let state = Arc::new(parking_lot::Mutex::new(ProcessState {
            region: child.region.clone(),
            role: role.as_str().to_owned(),
            state: "running".to_owned(),
            pid: child.pid(),
            restarts: 0,
            since_unix_ms: unix_ms(),
        }));
        let (requests, receive) = mpsc::channel(8);
        let (stop, stop_requested) = oneshot::channel();
        let supervisor = Supervisor {
            role,
            region: child.region.clone(),
            topology,
            log_path: child.log_path.clone(),
            reissues,
            state: Arc::clone(&state),
        };
        let task = tokio::spawn(supervisor.run(child, receive, stop_requested));
        Self {
            requests,
            state,
            stop: Some(stop),
            task,
        }
    }

    /// Carries out `request`; the answer says what was done, the error why not.
    pub async fn request(&self, request: Request) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((request, reply))
            .await
            .map_err(|_| "the process's supervisor has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the process's supervisor has stopped".to_owned())?
    }

    pub fn state(&self) -> ProcessState {
        self.state.lock().clone()
    }

    /// Stops the process for good and waits until it has exited.
    pub async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(error) = (&mut self.task).await {
            let state = self.state();
            tracing::warn!(role = %state.role, region = %state.region, %error, "supervisor task failed");
        }
    }
}

struct Supervisor {
    role: Role,
    region: String,
    topology: PathBuf,
    log_path: PathBuf,
    reissues: Vec<Reissue>,
    state: Arc<parking_lot::Mutex<ProcessState>>,
}

impl Supervisor {
    async fn run(
        self,
        first: ChildProcess,
        mut requests: mpsc::Receiver<(Request, oneshot::Sender<Result<String, String>>)>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let mut child = Some(first);
        let mut started = Instant::now();
        let mut delays = restart_delays();
        // When the process exited on its own: when to start it again.
        let mut restart_at: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = &mut stop => {
                    if let Some(mut running) = child.take() {
                        running.stop().await;
                    }
                    return;
                }
                status = exited(&mut child) => {
                    child = None;
                    if started.elapsed() >= STABLE_AFTER {
                        delays = restart_delays();
                    }
                    let delay = delays.next().unwrap_or(Duration::from_secs(30));
                    tracing::error!(
                        role = self.role.as_str(), region = %self.region, %status, log = %self.log_path.display(),
                        "a process of the deployment exited; restarting it in {} ms", delay.as_millis()
                    );
                    restart_at = Some(Instant::now() + delay);
                    self.set_state("restarting", None);
                }
                () = wait_until(restart_at) => {
                    restart_at = None;
                    match self.start().await {
                        Ok(restarted) => {
                            tracing::info!(role = self.role.as_str(), region = %self.region, "restarted");
                            self.set_started(&restarted);
                            child = Some(restarted);
                            started = Instant::now();
                        }
                        Err(error) => {
                            let delay = delays.next().unwrap_or(Duration::from_secs(30));
                            tracing::error!(
                                role = self.role.as_str(), region = %self.region, error = %format!("{error:#}"),
                                "restart failed; trying again in {} ms", delay.as_millis()
                            );
                            restart_at = Some(Instant::now() + delay);
                        }
                    }
                }
                received = requests.recv() => {
                    let Some((request, reply)) = received else {
                        continue;
                    };
                    let answer = self.handle(request, &mut child, &mut restart_at).await;
                    if child.is_some() {
                        started = Instant::now();
                        delays = restart_delays();
                    }
                    let _ = reply.send(answer);
                }
            }
        }
    }

    async fn handle(
        &self,
        request: Request,
        child: &mut Option<ChildProcess>,
        restart_at: &mut Option<Instant>,
    ) -> Result<String, String> {
        let name = format!("the {} of {}", self.role, self.region);
        match request {
            Request::Kill | Request::Stop => {
                *restart_at = None;
                let Some(mut running) = child.take() else {
                    self.set_state("down", None);
                    return Ok(format!("{name} was not running; it stays down"));
                };
                let how = if request == Request::Kill {
                    running.kill().await;
                    "killed (SIGKILL)"
                } else {
                    running.stop().await;
                    "stopped (SIGTERM)"
                };
                tracing::warn!(role = self.role.as_str(), region = %self.region, "{how} on request; it stays down until started");
                self.set_state("down", None);
                Ok(format!("{name} {how}; it stays down until started"))
            }
            Request::Start if child.is_some() => Ok(format!("{name} is already running")),
            Request::Start | Request::Restart => {
                *restart_at = None;
                if let Some(mut running) = child.take() {
                    running.stop().await;
                }
                match self.start().await {
                    Ok(started) => {
                        tracing::info!(role = self.role.as_str(), region = %self.region, "started on request");
                        self.set_started(&started);
                        let pid = started.pid();
                        *child = Some(started);
                        Ok(format!(
                            "{name} is running (pid {})",
                            pid.map_or_else(|| "unknown".to_owned(), |pid| pid.to_string())
                        ))
                    }
                    Err(error) => {
                        self.set_state("down", None);
                        Err(format!("{name} did not start: {error:#}"))
                    }
                }
            }
        }
    }

    fn set_state(&self, state: &'static str, pid: Option<u32>) {
        let mut current = self.state.lock();
        state.clone_into(&mut current.state);
        current.pid = pid;
        current.since_unix_ms = unix_ms();
    }

    fn set_started(&self, child: &ChildProcess) {
        self.set_state("running", child.pid());
        self.state.lock().restarts += 1;
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

/// Resolves when the running child exits; never, when there is none.
async fn exited(child: &mut Option<ChildProcess>) -> String {
    match child {
        Some(child) => child.exited().await,
        None => std::future::pending().await,
    }
}

/// Resolves at `at`; never, when there is no time.
async fn wait_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}
