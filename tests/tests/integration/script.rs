//! Running an official client's script (Python, Node.js) that prints one JSON
//! result line: a hard timeout, captured output, and failures that show the
//! whole run.

use crate::json::{self, Access as _, Value};
use anyhow::Context as _;
use std::fmt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::AsyncReadExt as _;
use tokio::time::Instant;

/// The strings of a script's command line.
pub fn args<const N: usize>(items: [&str; N]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

/// The cluster every client-script test runs against.
pub fn two_region_cluster() -> meridian_tests::TestClusterBuilder {
    meridian_tests::TestCluster::builder().regions(2)
}

/// A body with every byte value (not UTF-8) and a per-message prefix.
pub fn binary_body(index: usize) -> Vec<u8> {
    let mut body = format!("cross-language message {index}: ").into_bytes();
    body.extend(0..=u8::MAX);
    body.extend((0..=u8::MAX).rev());
    body
}

/// A body a script printed as hex.
pub fn decode_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    hex::decode(text).with_context(|| format!("body is not hex: {:.40}", text))
}

/// Hard limit of one script run; scripts give up 10 s earlier by themselves.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// The `--deadline=SECONDS` argument every script takes.
pub fn deadline_arg() -> String {
    let deadline = SCRIPT_TIMEOUT.saturating_sub(Duration::from_secs(10));
    format!("--deadline={}", deadline.as_secs())
}

/// One finished (or killed) script run.
pub struct ScriptRun {
    /// "python", "nodejs": names the client in messages.
    language: &'static str,
    command: String,
    /// `None` when the run was killed after [`SCRIPT_TIMEOUT`].
    status: Option<ExitStatus>,
    pub elapsed: Duration,
    stdout: String,
    stderr: String,
    /// The last JSON line of stdout, parsed.
    output: Option<anyhow::Result<Value>>,
    /// Where the client's own log is, for a failure report.
    client_log: String,
}

/// Runs `command` (program and arguments set; `described` says what it is),
/// with no stdin, captured output and no `MERIDIAN_*` variables (those are
/// topology overrides), killing it after [`SCRIPT_TIMEOUT`]. Fails only if it
/// cannot be run at all; see [`ScriptRun::succeeded`].
pub async fn run(
    language: &'static str,
    mut command: tokio::process::Command,
    described: String,
    client_log: String,
) -> anyhow::Result<ScriptRun> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MERIDIAN_") {
            command.env_remove(&name);
        }
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("start `{described}`"))?;
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let status = match tokio::time::timeout(SCRIPT_TIMEOUT, child.wait()).await {
        Ok(status) => Some(status.with_context(|| format!("wait for `{described}`"))?),
        Err(_) => {
            let _ = child.kill().await;
            None
        }
    };
    let stdout = stdout.await.unwrap_or_default();
    let stderr = stderr.await.unwrap_or_default();
    let output = stdout
        .lines()
        .rev()
        .find(|line| line.trim_start().starts_with('{'))
        .map(json::parse);
    Ok(ScriptRun {
        language,
        command: described,
        status,
        elapsed: started.elapsed(),
        stdout,
        stderr,
        output,
        client_log,
    })
}

fn read_all<R>(pipe: Option<R>) -> tokio::task::JoinHandle<String>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes).await;
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

impl fmt::Display for ScriptRun {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.status.map_or_else(
            || format!("killed after {SCRIPT_TIMEOUT:?}"),
            |status| status.to_string(),
        );
        writeln!(formatter, "===== {}: {} =====", self.language, self.command)?;
        writeln!(formatter, "{status} after {:?}", self.elapsed)?;
        writeln!(formatter, "----- stdout -----\n{}", self.stdout.trim_end())?;
        writeln!(formatter, "----- stderr -----\n{}", self.stderr.trim_end())?;
        write!(
            formatter,
            "----- the client's log: {} -----",
            self.client_log
        )
    }
}

impl ScriptRun {
    /// The JSON result of a run that exited 0 with `"ok": true`, whose client
    /// logged no ERROR line, and that passes the language's own `checks`.
    pub fn succeeded(
        &self,
        checks: impl FnOnce(&Value) -> anyhow::Result<()>,
    ) -> anyhow::Result<&Value> {
        let output = self.completed()?;
        self.check(|output| {
            let errors = output.field("client_log")?.field("errors")?.array()?;
            anyhow::ensure!(
                errors.is_empty(),
                "the {} client logged {} ERROR line(s): {errors:?}",
                self.language,
                errors.len()
            );
            checks(output)
        })?;
        Ok(output)
    }

    /// The JSON result of a run that exited 0 with `"ok": true`, whatever
    /// its client logged: for drills, where failed calls are expected and
    /// logged as errors by the clients.
    pub fn completed(&self) -> anyhow::Result<&Value> {
        self.check(|output| {
            anyhow::ensure!(
                self.status.is_some_and(|status| status.success()),
                "the script did not exit 0"
            );
            anyhow::ensure!(
                output.field("ok")?.bool()?,
                "the script reported a failure: {}",
                output.field("error")?.str()?
            );
            Ok(())
        })?;
        self.json()
    }

    pub fn json(&self) -> anyhow::Result<&Value> {
        match &self.output {
            Some(Ok(value)) => Ok(value),
            Some(Err(error)) => Err(anyhow::anyhow!(
                "the script's JSON line does not parse: {error:#}\n{self}"
            )),
            None => Err(anyhow::anyhow!("the script printed no JSON line\n{self}")),
        }
    }

    /// Runs `checks` on the JSON result; a failure carries the whole run.
    pub fn check(&self, checks: impl FnOnce(&Value) -> anyhow::Result<()>) -> anyhow::Result<()> {
        checks(self.json()?).map_err(|error| anyhow::anyhow!("{error:#}\n{self}"))
    }
}
