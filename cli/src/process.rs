//! Child processes of `meridian up`: started, watched for readiness, logged, stopped.

use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// How long a child may take to report readiness.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a child may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// One running child: `meridian <role> --topology … --region …`.
pub struct ChildProcess {
    pub role: &'static str,
    pub region: String,
    pub log_path: PathBuf,
    child: Child,
    /// The write end of the child's stdin: when this process dies, the pipe
    /// closes and the child (started with `--stop-on-stdin-eof`) shuts down.
    _lifeline: ChildStdin,
}

/// This binary, for starting children. On Linux `/proc/self/exe` names the
/// file this process runs even after a rebuild replaced it on disk, so a
/// long-running `meridian up` keeps restarting its processes with its own
/// version (`current_exe` would name the replaced, deleted file).
fn own_executable() -> anyhow::Result<PathBuf> {
    let proc_self = Path::new("/proc/self/exe");
    if proc_self.exists() {
        return Ok(proc_self.to_owned());
    }
    std::env::current_exe().context("failed to find the meridian executable")
}

impl ChildProcess {
    /// Starts the child with stderr (its log) appended to `log_path`, and waits
    /// for its readiness line on stdout.
    pub async fn start(
        role: &'static str,
        region: &str,
        topology: &Path,
        log_path: PathBuf,
        sockets: meridian_sockets::Handover,
    ) -> anyhow::Result<Self> {
        let executable = own_executable()?;
        if let Some(parent) = log_path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("failed to create {}", parent.display()))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("failed to open log file {}", log_path.display()))?;
        let mut command = Command::new(executable);
        // `meridian …` in `ps` and for `pkill -f`, whatever path started it.
        command.arg0("meridian");
        sockets.apply_tokio(&mut command)?;
        let mut child = command
            .arg(role)
            .arg("--topology")
            .arg(topology)
            .arg("--region")
            .arg(region)
            .arg("--stop-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            // Own process group: a terminal's Ctrl-C reaches only `meridian up`,
            // which then stops the children in order (routers first, nodes last).
            .process_group(0)
            .spawn()
            .with_context(|| format!("failed to start the {role} of {region}"))?;
        let stdout = child
            .stdout
            .take()
            .context("child stdout was not captured")?;
        let lifeline = child.stdin.take().context("child stdin was not captured")?;
        let mut lines = BufReader::new(stdout).lines();
        let expected = format!("MERIDIAN_READY role={role} region={region}");
        let waited = tokio::time::timeout(READY_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if line.trim() == expected {
                    return Ok::<bool, std::io::Error>(true);
                }
            }
            Ok(false)
        })
        .await;
        match waited {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Ok(Err(_)) => {
                bail!(
                    "the {role} of {region} exited before it was ready; see {}",
                    log_path.display()
                )
            }
            Err(_) => bail!(
                "the {role} of {region} was not ready after {READY_TIMEOUT:?}; see {}",
                log_path.display()
            ),
        }
        // Keep draining stdout so the child never blocks on a full pipe; the
        // task ends when the child closes its stdout (at exit).
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            role,
            region: region.to_owned(),
            log_path,
            child,
            _lifeline: lifeline,
        })
    }

    /// Waits until the child exits; returns a description of how.
    pub async fn exited(&mut self) -> String {
        match self.child.wait().await {
            Ok(status) => status.to_string(),
            Err(error) => format!("unknown status ({error})"),
        }
    }

    /// The child's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL, as a crash would end it, and waits for it to exit.
    pub async fn kill(&mut self) {
        if let Err(error) = self.child.kill().await {
            tracing::warn!(role = self.role, region = %self.region, %error, "could not kill child");
        }
    }

    /// SIGTERM, then SIGKILL if it has not stopped in time.
    pub async fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Some(pid) = self.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => {
                tracing::warn!(role = self.role, region = %self.region, %status, "stopped with an error")
            }
            Ok(Err(error)) => {
                tracing::warn!(role = self.role, region = %self.region, %error, "could not wait for child")
            }
            Err(_) => {
                tracing::warn!(role = self.role, region = %self.region, "did not stop in time; killing it");
                let _ = self.child.kill().await;
            }
        }
    }
}
