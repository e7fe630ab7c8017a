//! One `meridian <role>` child process: spawning, readiness, logs, signals.
//!
//! `std::process::Child` rather than tokio's, so that `Drop` can kill and reap
//! synchronously. Two plain threads copy the child's stdout and stderr into
//! its log file line by line; the stdout copier also watches for the readiness
//! line and reports it over a oneshot channel that async code awaits with a
//! timeout.

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::command::prepare_child_environment;

pub use meridian_sockets::Role;

/// How many lines of a log [`Process::log_tail`] keeps.
pub(crate) const LOG_TAIL_LINES: usize = 200;

/// A running (or exited, not yet reaped) `meridian <role>` process.
pub(crate) struct Process {
    region: String,
    role: Role,
    child: Child,
    log_path: PathBuf,
    log: Arc<Mutex<File>>,
    copiers: Vec<JoinHandle<()>>,
    ready: Option<oneshot::Receiver<Result<(), String>>>,
}

impl Process {
    /// Spawns `binary <role> --topology FILE --region REGION`, appending its
    /// output to `log_path`. Does not wait for readiness; see [`Process::wait_ready`].
    pub(crate) fn spawn(
        binary: &Path,
        topology_path: &Path,
        region: &str,
        role: Role,
        log_path: &Path,
        sockets: meridian_sockets::Handover,
    ) -> anyhow::Result<Process> {
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("open the log file {}", log_path.display()))?;
        let log = Arc::new(Mutex::new(log_file));

        let mut command = Command::new(binary);
        command
            .arg(role.as_str())
            .arg("--topology")
            .arg(topology_path)
            .arg("--region")
            .arg(region)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        prepare_child_environment(&mut command);
        sockets
            .apply(&mut command)
            .with_context(|| format!("hand its sockets to `{role}` of region {region}"))?;
        let mut child = command
            .spawn()
            .with_context(|| format!("spawn `{} {role}` for region {region}", binary.display()))?;
        write_line(
            &log,
            &format!(
                "----- harness: started `meridian {role} --region {region}` pid {} -----",
                child.id()
            ),
        );

        let stdout = child
            .stdout
            .take()
            .context("take the child's stdout pipe")?;
        let stderr = child
            .stderr
            .take()
            .context("take the child's stderr pipe")?;
        let (ready_sender, ready_receiver) = oneshot::channel();
        let expected = ReadyLine {
            role,
            region: region.to_owned(),
        };
        let stdout_copier = {
            let log = Arc::clone(&log);
            std::thread::Builder::new()
                .name(format!("{region}-{role}-stdout"))
                .spawn(move || copy_stdout(stdout, &log, &expected, ready_sender))
                .context("start the stdout copier thread")?
        };
        let stderr_copier = {
            let log = Arc::clone(&log);
            std::thread::Builder::new()
                .name(format!("{region}-{role}-stderr"))
                .spawn(move || copy_lines(stderr, &log))
                .context("start the stderr copier thread")?
        };

        Ok(Process {
            region: region.to_owned(),
            role,
            child,
            log_path: log_path.to_owned(),
            log,
            copiers: vec![stdout_copier, stderr_copier],
            ready: Some(ready_receiver),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the readiness line. On a timeout or an early exit the error
    /// carries the exit status and the tail of the log.
    pub(crate) async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let receiver = self
            .ready
            .take()
            .context("wait for readiness: already waited for this process")?;
        let outcome = match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(Ok(()))) => return Ok(()),
            Ok(Ok(Err(reason))) => reason,
            Ok(Err(_)) => "the stdout copier stopped without reporting".to_owned(),
            Err(_) => format!("no readiness line within {timeout:?}"),
        };
        // Give an exiting process a moment to be reaped so the status is known.
        let status = match self.wait_exit(Duration::from_secs(1)).await {
            Ok(status) => {
                // Its last stderr lines may still be on their way to the log.
                self.join_copiers(Duration::from_secs(2));
                format!("exited with {status}")
            }
            Err(_) => "still running".to_owned(),
        };
        anyhow::bail!(
            "`meridian {}` for region {} did not become ready: {outcome}; process {status}\n{}",
            self.role,
            self.region,
            self.log_tail(LOG_TAIL_LINES)
        )
    }

    /// `true` while the process has not exited.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, then reap.
    pub(crate) fn kill9(&mut self) -> anyhow::Result<ExitStatus> {
        write_line(&self.log, "----- harness: SIGKILL -----");
        // Killing an already exited child is not an error worth failing on.
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .with_context(|| format!("reap `meridian {}` for region {}", self.role, self.region))?;
        self.join_copiers(Duration::from_secs(5));
        Ok(status)
    }

    /// SIGTERM, then waits up to `timeout` for the exit (SIGKILL after that).
    pub(crate) async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        write_line(&self.log, "----- harness: SIGTERM -----");
        let pid = Pid::from_raw(i32::try_from(self.child.id()).context("a pid fits in i32")?);
        kill(pid, Signal::SIGTERM).with_context(|| {
            format!(
                "send SIGTERM to `meridian {}` for region {}",
                self.role, self.region
            )
        })?;
        match self.wait_exit(timeout).await {
            Ok(status) => {
                self.join_copiers(Duration::from_secs(5));
                write_line(
                    &self.log,
                    &format!("----- harness: exited with {status} -----"),
                );
                Ok(status)
            }
            Err(error) => {
                let _ = self.kill9();
                Err(error.context(format!(
                    "`meridian {}` for region {} ignored SIGTERM for {timeout:?}; killed it",
                    self.role, self.region
                )))
            }
        }
    }

    /// Polls for the child's exit without blocking the runtime.
    async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .context("poll the child's exit status")?
            {
                return Ok(status);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the process did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The whole log file (every incarnation of this region's role).
    pub(crate) fn log(&self) -> String {
        read_log(&self.log_path)
    }

    pub(crate) fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    /// Waits (bounded) for the copier threads, so the log is complete. A
    /// grandchild holding the pipes open must not hang the harness.
    fn join_copiers(&mut self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.copiers.iter().any(|copier| !copier.is_finished()) {
            if std::time::Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for copier in self.copiers.drain(..) {
            let _ = copier.join();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.kill9();
        }
    }
}

/// The line a child prints on stdout once it serves.
struct ReadyLine {
    role: Role,
    region: String,
}

impl ReadyLine {
    /// `Some(Ok)` for our readiness line, `Some(Err)` for someone else's,
    /// `None` for any other output.
    fn check(&self, line: &str) -> Option<Result<(), String>> {
        let mut words = line.split_whitespace();
        if words.next() != Some("MERIDIAN_READY") {
            return None;
        }
        let mut role = None;
        let mut region = None;
        for word in words {
            if let Some(value) = word.strip_prefix("role=") {
                role = Some(value);
            } else if let Some(value) = word.strip_prefix("region=") {
                region = Some(value);
            }
        }
        Some(
            if role == Some(self.role.as_str()) && region == Some(self.region.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "unexpected readiness line {line:?}, wanted role={} region={}",
                    self.role, self.region
                ))
            },
        )
    }
}

fn copy_stdout(
    stdout: impl Read,
    log: &Mutex<File>,
    expected: &ReadyLine,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let mut ready = Some(ready);
    let mut reader = BufReader::new(stdout);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer) {
            Ok(0) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buffer);
                let line = line.trim_end_matches(['\n', '\r']);
                write_line(log, line);
                if let Some(outcome) = expected.check(line) {
                    if let Some(sender) = ready.take() {
                        let _ = sender.send(outcome);
                    } else {
                        write_line(
                            log,
                            "----- harness: a second readiness line (the contract says exactly one) -----",
                        );
                    }
                }
            }
            Err(error) => {
                write_line(
                    log,
                    &format!("----- harness: reading stdout failed: {error} -----"),
                );
                break;
            }
        }
    }
    if let Some(sender) = ready.take() {
        let _ = sender.send(Err("stdout closed before the readiness line".to_owned()));
    }
}

fn copy_lines(stream: impl Read, log: &Mutex<File>) {
    let mut reader = BufReader::new(stream);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer) {
            Ok(0) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buffer);
                write_line(log, line.trim_end_matches(['\n', '\r']));
            }
            Err(error) => {
                write_line(
                    log,
                    &format!("----- harness: reading stderr failed: {error} -----"),
                );
                break;
            }
        }
    }
}

/// Appends one line; unbuffered, so the file is current whenever it is read.
fn write_line(log: &Mutex<File>, line: &str) {
    let mut file = match log.lock() {
        Ok(file) => file,
        Err(poisoned) => poisoned.into_inner(),
    };
    let _ = writeln!(file, "{line}");
}

pub(crate) fn read_log(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(error) => format!("(could not read {}: {error})", path.display()),
    }
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("… ({start} earlier lines omitted)\n"));
    }
    for line in &all[start..] {
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake;

    #[test]
    fn only_the_exact_readiness_line_counts() {
        let expected = ReadyLine {
            role: Role::Replicator,
            region: "b".to_owned(),
        };
        assert_eq!(
            expected.check("MERIDIAN_READY role=replicator region=b"),
            Some(Ok(()))
        );
        assert_eq!(
            expected.check("MERIDIAN_READY role=replicator region=b\r"),
            Some(Ok(()))
        );
        assert!(matches!(
            expected.check("MERIDIAN_READY role=node region=b"),
            Some(Err(_))
        ));
        assert!(matches!(
            expected.check("MERIDIAN_READY role=replicator region=bb"),
            Some(Err(_))
        ));
        assert_eq!(
            expected.check("2025-01-01 INFO MERIDIAN_READY role=replicator region=b"),
            None
        );
        assert_eq!(expected.check("listening on 127.0.0.1:1234"), None);
    }

    #[tokio::test]
    async fn readiness_sigterm_and_logs_of_a_well_behaved_process() {
        let directory = tempfile::tempdir().expect("temp dir");
        let binary = fake::binary(directory.path(), fake::SERVES_UNTIL_SIGTERM);
        let log_path = directory.path().join("a-router.log");
        let topology = directory.path().join("topology.toml");
        let mut process = Process::spawn(
            &binary,
            &topology,
            "a",
            Role::Router,
            &log_path,
            Default::default(),
        )
        .expect("spawn");
        process
            .wait_ready(Duration::from_secs(10))
            .await
            .expect("ready");
        assert!(process.is_running());
        let status = process
            .terminate(Duration::from_secs(10))
            .await
            .expect("exits on SIGTERM");
        assert_eq!(status.code(), Some(0));
        let log = process.log();
        assert!(log.contains("starting router for a"), "{log}");
        assert!(log.contains("MERIDIAN_READY role=router region=a"), "{log}");
        assert!(log.contains("got SIGTERM"), "{log}");
    }

    #[tokio::test]
    async fn kill9_stops_a_process_that_ignores_sigterm() {
        let directory = tempfile::tempdir().expect("temp dir");
        let script = r#"trap '' TERM
echo "MERIDIAN_READY role=$1 region=$5"
while true; do sleep 0.05; done"#;
        let binary = fake::binary(directory.path(), script);
        let log_path = directory.path().join("b-node.log");
        let topology = directory.path().join("topology.toml");
        let mut process = Process::spawn(
            &binary,
            &topology,
            "b",
            Role::Node,
            &log_path,
            Default::default(),
        )
        .expect("spawn");
        process
            .wait_ready(Duration::from_secs(10))
            .await
            .expect("ready");
        let error = process
            .terminate(Duration::from_millis(300))
            .await
            .expect_err("SIGTERM is ignored");
        assert!(
            format!("{error:#}").contains("ignored SIGTERM"),
            "{error:#}"
        );
        assert!(!process.is_running());
    }

    #[tokio::test]
    async fn an_early_exit_is_reported_with_status_and_log() {
        let directory = tempfile::tempdir().expect("temp dir");
        let script = r#"echo "error: invalid topology file $3: unknown key colour" >&2
exit 2"#;
        let binary = fake::binary(directory.path(), script);
        let log_path = directory.path().join("a-node.log");
        let topology = directory.path().join("broken.toml");
        let mut process = Process::spawn(
            &binary,
            &topology,
            "a",
            Role::Node,
            &log_path,
            Default::default(),
        )
        .expect("spawn");
        let error = process
            .wait_ready(Duration::from_secs(10))
            .await
            .expect_err("it exits before being ready");
        let message = format!("{error:#}");
        assert!(message.contains("exit status: 2"), "{message}");
        assert!(message.contains("unknown key colour"), "{message}");
    }

    #[tokio::test]
    async fn a_process_that_never_gets_ready_times_out() {
        let directory = tempfile::tempdir().expect("temp dir");
        let binary = fake::binary(directory.path(), "while true; do sleep 0.05; done");
        let log_path = directory.path().join("a-replicator.log");
        let topology = directory.path().join("topology.toml");
        let mut process = Process::spawn(
            &binary,
            &topology,
            "a",
            Role::Replicator,
            &log_path,
            Default::default(),
        )
        .expect("spawn");
        let error = process
            .wait_ready(Duration::from_millis(300))
            .await
            .expect_err("never ready");
        let message = format!("{error:#}");
        assert!(message.contains("no readiness line"), "{message}");
        assert!(message.contains("still running"), "{message}");
        process.kill9().expect("kill -9");
        assert!(!process.is_running());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "… (1 earlier lines omitted)\nb\nc\n");
        assert_eq!(tail("a\nb", 5), "a\nb\n");
    }
}
