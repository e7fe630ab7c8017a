//! Finding the `meridian` binary and running one-shot commands with it.

use anyhow::Context as _;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

/// Environment variable that overrides where the `meridian` binary is.
///
/// Deliberately not `MERIDIAN_*`: that prefix belongs to topology overrides.
pub const BINARY_OVERRIDE_VARIABLE: &str = "TEST_MERIDIAN_BIN";

/// The `meridian` binary: `$TEST_MERIDIAN_BIN`, else `meridian` in the cargo
/// profile directory of the running test (`target/debug/deps/…` → `target/debug/meridian`).
pub fn meridian_binary() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os(BINARY_OVERRIDE_VARIABLE) {
        Some(path) => PathBuf::from(path),
        None => {
            let test_executable = std::env::current_exe()
                .context("locate the meridian binary: read the test executable's path")?;
            let mut directory = test_executable
                .parent()
                .context("locate the meridian binary: the test executable has no parent directory")?
                .to_path_buf();
            if directory.ends_with("deps") {
                directory.pop();
            }
            directory.join(format!("meridian{}", std::env::consts::EXE_SUFFIX))
        }
    };
    anyhow::ensure!(
        path.is_file(),
        "the meridian binary was not found at {}: run `cargo build -p meridian-cli` first \
         (or point {BINARY_OVERRIDE_VARIABLE} at it)",
        path.display()
    );
    Ok(path)
}

/// Removes every `MERIDIAN_*` variable from a child's environment (they would
/// override the topology file) and sets what makes logs readable.
pub(crate) fn prepare_child_environment(command: &mut std::process::Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MERIDIAN_") {
            command.env_remove(&name);
        }
    }
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "info");
    }
    command.env("RUST_BACKTRACE", "1").env("NO_COLOR", "1");
}

/// The result of a one-shot command.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    /// The exit code, `None` when the process was killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl std::fmt::Display for CommandOutput {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `meridian ARGS…` to completion (killing it after `timeout`) and
/// captures its exit status, stdout and stderr.
pub async fn run_meridian<I, S>(args: I, timeout: Duration) -> anyhow::Result<CommandOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_binary(&meridian_binary()?, args, timeout).await
}

/// [`run_meridian`] with an explicit binary.
pub(crate) async fn run_binary<I, S>(
    binary: &Path,
    args: I,
    timeout: Duration,
) -> anyhow::Result<CommandOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_binary_with_env(binary, args, &[], timeout).await
}

/// [`run_binary`] with `env` (name, value) set for the child.
pub(crate) async fn run_binary_with_env<I, S>(
    binary: &Path,
    args: I,
    env: &[(&str, &str)],
    timeout: Duration,
) -> anyhow::Result<CommandOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args
        .into_iter()
        .map(|arg| arg.as_ref().to_os_string())
        .collect();
    let description = format!(
        "{} {}",
        binary.display(),
        args.iter()
            .map(|arg| arg.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut command = std::process::Command::new(binary);
    command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    prepare_child_environment(&mut command);
    command.envs(env.iter().copied());
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let child = command
        .spawn()
        .with_context(|| format!("run `{description}`"))?;
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("`{description}` did not exit within {timeout:?}; killed it"))?
        .with_context(|| format!("wait for `{description}`"))?;
    Ok(CommandOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}
