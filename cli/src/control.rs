//! Controlling a running `meridian up` from another terminal: `meridian ctl`.
//!
//! `meridian up` listens on a Unix socket next to its topology file (the
//! file's path with the extension `.sock`; `--control` sets another path).
//! Each request is one line of JSON ([`ControlRequest`]), each answer one
//! line of JSON ([`ControlAnswer`]); a connection may carry several. Only the
//! user who owns the socket file can connect (mode 0600).

use crate::emulation::{DirectionState, LinkChange};
use crate::supervisor::ProcessState;
use anyhow::Context as _;
pub use meridian_topology::{ProcessAction, ProcessRole};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// The longest path a Unix socket can have on Linux (`sun_path`, less the NUL).
const UNIX_PATH_MAX: usize = 107;
/// The longest request line accepted, bytes.
const REQUEST_LINE_MAX: usize = 64 * 1024;

/// One request to a running deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum ControlRequest {
    /// Every process's state and every link direction's conditions.
    Status,
    /// Kill, stop, start or restart a region's node, replicator or router.
    Process {
        action: ProcessAction,
        region: String,
        role: ProcessRole,
    },
    /// Cut the link between two regions (with `one_way`, only what the
    /// first sends to the second).
    Partition { link: [String; 2], one_way: bool },
    /// Restore a link to the topology's conditions.
    Heal { link: [String; 2] },
    /// Change a link's conditions, both directions.
    Degrade {
        link: [String; 2],
        change: LinkChange,
    },
}

/// The answer to a [`ControlRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlAnswer {
    pub ok: bool,
    /// What was done, or why not.
    pub message: String,
    /// For [`ControlRequest::Status`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeploymentStatus>,
}

/// A running deployment's processes and links.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentStatus {
    pub topology: PathBuf,
    pub processes: Vec<ProcessState>,
    /// Empty when links are not emulated.
    pub links: Vec<DirectionState>,
    pub links_emulated: bool,
}

/// Something that carries out control requests: the deployment.
pub trait Controlled: Send + Sync + 'static {
    fn control(
        &self,
        request: ControlRequest,
    ) -> impl std::future::Future<Output = ControlAnswer> + Send;
}

/// The control socket's path for the topology file `topology`.
pub fn default_socket_path(topology: &Path) -> PathBuf {
    topology.with_extension("sock")
}

/// A listening control socket; the file is removed on drop.
pub struct ControlSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ControlSocket {
    /// Binds `path`, replacing a stale socket file left by a process that
    /// died; refuses if a running deployment answers on it.
    pub async fn bind(path: &Path) -> anyhow::Result<ControlSocket> {
        check_length(path)?;
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                anyhow::bail!(
                    "another `meridian up` is running this deployment: its control socket {} answers \
                     (stop it first, or pass --control with another path)",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("failed to remove the stale socket {}", path.display()))?;
        }
        let listener = UnixListener::bind(path).with_context(|| {
            format!("failed to listen on the control socket {}", path.display())
        })?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("failed to restrict {}", path.display()))?;
        Ok(ControlSocket {
            path: path.to_owned(),
            listener,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers requests until `stop`.
    pub async fn serve<C: Controlled>(&self, controlled: Arc<C>, stop: CancellationToken) {
        let connections = tokio_util::task::TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    let (controlled, stop) = (Arc::clone(&controlled), stop.clone());
                    connections.spawn(async move {
                        if let Err(error) = answer(stream, controlled.as_ref(), stop).await {
                            tracing::debug!(%error, "control connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
        connections.close();
        connections.wait().await;
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn answer<C: Controlled>(
    stream: UnixStream,
    controlled: &C,
    stop: CancellationToken,
) -> std::io::Result<()> {
    use futures::StreamExt as _;
    let (read, mut write) = stream.into_split();
    let mut lines = tokio_util::codec::FramedRead::new(
        read,
        tokio_util::codec::LinesCodec::new_with_max_length(REQUEST_LINE_MAX),
    );
    loop {
        let line = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            line = lines.next() => line,
        };
        let answer = match line {
            None => return Ok(()),
            Some(Err(tokio_util::codec::LinesCodecError::Io(error))) => return Err(error),
            Some(Err(tokio_util::codec::LinesCodecError::MaxLineLengthExceeded)) => {
                refusal(format!("request longer than {REQUEST_LINE_MAX} bytes"))
            }
            Some(Ok(line)) => match serde_json::from_str::<ControlRequest>(&line) {
                Ok(request) => controlled.control(request).await,
                Err(error) => refusal(format!("malformed request: {error}")),
            },
        };
        let mut text = serde_json::to_string(&answer).unwrap_or_else(|error| {
            format!(r#"{{"ok":false,"message":"cannot encode the answer: {error}"}}"#)
        });
        text.push('\n');
        write.write_all(text.as_bytes()).await?;
    }
}

/// A failed answer.
pub fn refusal(message: String) -> ControlAnswer {
    ControlAnswer {
        ok: false,
        message,
        status: None,
    }
}

/// Sends one request to the deployment listening on `path`.
pub async fn request(path: &Path, request: &ControlRequest) -> anyhow::Result<ControlAnswer> {
    check_length(path)?;
    let stream = UnixStream::connect(path).await.with_context(|| {
        format!(
            "no `meridian up` answers on {} (is it running, with this topology?)",
            path.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    let answer = lines
        .next_line()
        .await?
        .context("the deployment closed the control connection without answering")?;
    serde_json::from_str(&answer).context("the deployment's answer is not valid")
}

fn check_length(path: &Path) -> anyhow::Result<()> {
    let length = path.as_os_str().len();
    anyhow::ensure!(
        length <= UNIX_PATH_MAX,
        "control socket path {} is {length} bytes, longer than Unix sockets allow ({UNIX_PATH_MAX}); \
         pass --control with a shorter path",
        path.display()
    );
    Ok(())
}

/// The status as a table for people.
pub fn status_text(status: &DeploymentStatus) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    let _ = writeln!(text, "topology {}", status.topology.display());
    let _ = writeln!(
        text,
        "{:<14} {:<11} {:<11} {:>8} {:>9}",
        "region", "role", "state", "pid", "restarts"
    );
    for process in &status.processes {
        let _ = writeln!(
            text,
            "{:<14} {:<11} {:<11} {:>8} {:>9}",
            process.region,
            process.role,
            process.state,
            process
                .pid
                .map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
            process.restarts
        );
    }
    if !status.links_emulated {
        let _ = writeln!(text, "links: not emulated (started with --no-emulation)");
        return text;
    }
    let _ = writeln!(
        text,
        "\n{:<28} {:>8} {:>7} {:>7} {:>12} {:<11} {:>9} {:>11} {:>8} {:>9}",
        "link direction",
        "latency",
        "jitter",
        "loss%",
        "bandwidth",
        "state",
        "packets",
        "bytes",
        "lost",
        "cut"
    );
    for link in &status.links {
        let _ = writeln!(
            text,
            "{:<28} {:>6}ms {:>5}ms {:>7.2} {:>12} {:<11} {:>9} {:>11} {:>8} {:>9}",
            format!("{} -> {}", link.from, link.to),
            link.latency_ms,
            link.jitter_ms,
            link.loss_percent,
            link.bandwidth_kbps
                .map_or_else(|| "unlimited".to_owned(), |kbps| format!("{kbps}kbit/s")),
            if link.partitioned {
                "partitioned"
            } else {
                "up"
            },
            link.stats.packets,
            link.stats.bytes,
            link.stats.dropped_loss,
            link.stats.dropped_partition,
        );
    }
    text
}
