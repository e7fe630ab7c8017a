//! The official RocketMQ **Node.js** client (npm `rocketmq-client-nodejs`
//! 1.0.8, unmodified) against a two-region cluster, and round trips between it
//! and the official Rust client.
//!
//! The tests run the scripts in `tests/nodejs/` with `node`, resolving the
//! client from the `node_modules` directory that `TEST_NODEJS_MODULES` names:
//! the one `scripts/nodejs-env.sh` installs (`scripts/test.sh` exports it).
//! Without it the tests fail; they never skip. Every script prints one JSON
//! object on stdout; the tests assert on it and, when an assertion fails, print
//! the script's stdout and stderr (and the cluster prints its logs). The
//! client's own log file lands in the cluster's temp dir
//! (`nodejs-home/logs/`), which is kept on failure.
//!
//! Covered (shared/protocols/rocketmq-grpc.md): Node Producer startup, which
//! blocks until the settings reply, and what it takes from it (exponential
//! backoff, `max_body_size`); sends that only use queue 0 echoing the message
//! ids; a SimpleConsumer whose body-digest check passes, acks, and an empty
//! receive afterwards; shutdowns that log no error; Node ⇄ Node and Node ⇄
//! Rust round trips across regions with body, tag, keys and properties intact.

use crate::support::{client_message_ids, message_records};
use anyhow::Context as _;
use meridian_tests::{TEST_TOPIC, TestCluster};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::json::{Access as _, Value};
use crate::script::{self, ScriptRun};

/// The variable naming the `node_modules` directory holding the client (not
/// `MERIDIAN_*`: that prefix belongs to topology overrides).
const MODULES_VARIABLE: &str = "TEST_NODEJS_MODULES";
/// The `max_body_size` the settings reply carries (the proxy's 4 MiB).
const MAX_BODY_SIZE: u64 = 4 * 1024 * 1024;
/// Body sizes of the Node producer's messages: tiny to 64 KiB (echoed in full).
const SIZES: &str = "1,300,1024,65536";

/// `node` with the client's modules, and where its client may write (`HOME`
/// and the log files).
pub(crate) struct NodeJs {
    modules: PathBuf,
    home: PathBuf,
    runs: AtomicUsize,
    /// The cluster's client TLS CA, which grpc-js trusts through
    /// `GRPC_DEFAULT_SSL_ROOTS_FILE_PATH` (it does not see Node's
    /// `NODE_EXTRA_CA_CERTS`).
    ca: Option<PathBuf>,
}

impl NodeJs {
    /// The modules directory `TEST_NODEJS_MODULES` names, checked before any
    /// cluster starts.
    pub(crate) fn from_env() -> anyhow::Result<PathBuf> {
        let modules = std::env::var_os(MODULES_VARIABLE).with_context(|| {
            format!(
                "{MODULES_VARIABLE} is not set: the Node.js-client tests need the official \
                 client's node_modules. Run ./scripts/test.sh, or set \
                 {MODULES_VARIABLE}=\"$(./scripts/nodejs-env.sh)/node_modules\""
            )
        })?;
        let modules = PathBuf::from(modules);
        anyhow::ensure!(
            modules.join("rocketmq-client-nodejs").is_dir(),
            "{MODULES_VARIABLE}={} holds no rocketmq-client-nodejs: run ./scripts/nodejs-env.sh \
             and point {MODULES_VARIABLE} at the node_modules in the directory it prints",
            modules.display()
        );
        Ok(modules)
    }

    /// Scripts run with `modules` against `cluster`, with `HOME` in its temp dir.
    pub(crate) fn for_cluster(modules: PathBuf, cluster: &TestCluster) -> anyhow::Result<NodeJs> {
        let home = cluster.temp_dir().join("nodejs-home");
        std::fs::create_dir_all(&home).with_context(|| format!("create {}", home.display()))?;
        Ok(NodeJs {
            modules,
            home,
            runs: AtomicUsize::new(0),
            ca: cluster.client_ca().map(Path::to_path_buf),
        })
    }

    /// Runs `tests/nodejs/<script>` with `args` (plus `--deadline` and `--log-file`).
    pub(crate) async fn run(&self, script: &str, args: &[String]) -> anyhow::Result<ScriptRun> {
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        let log_file = self
            .home
            .join("logs")
            .join(format!("{run:02}-{script}.log"));
        let mut command = tokio::process::Command::new("node");
        command
            .arg(script_dir().join(script))
            .args(args)
            .arg(script::deadline_arg())
            .arg(format!("--log-file={}", log_file.display()))
            .current_dir(script_dir())
            .env("HOME", &self.home)
            .env("NODE_PATH", &self.modules)
            .env_remove("NODE_OPTIONS");
        if let Some(ca) = &self.ca {
            command.env("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", ca);
        }
        let described = format!("node {} {}", script, args.join(" "));
        script::run("nodejs", command, described, log_file.display().to_string()).await
    }
}

fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("nodejs")
}

/// A run's JSON result, once it is known to have succeeded and its client
/// to have received the server's settings reply.
pub(crate) fn succeeded(run: &ScriptRun) -> anyhow::Result<&Value> {
    run.succeeded(|output| {
        anyhow::ensure!(
            output.field("settings_received")?.bool()?,
            "no settings command reached the client"
        );
        Ok(())
    })
}

use crate::rust_side::{Fields as Described, rust_receives_exactly, rust_sends};

/// Runs `produce.js` via `endpoint` and returns the sent
/// messages by id, after checking startup, the settings reply and the sends.
async fn node_produce(
    node: &NodeJs,
    endpoint: &str,
    tag: &str,
) -> anyhow::Result<(ScriptRun, BTreeMap<String, Described>)> {
    let mut produce_args = script::args([
        "--endpoints",
        endpoint,
        "--topic",
        TEST_TOPIC,
        "--tag",
        tag,
        "--key",
        tag,
        "--key",
        "second key",
        "--property",
        "origin=nodejs",
        "--property",
        "unicode=größe ✓ 東京 😀",
    ]);
    produce_args.push(format!("--sizes={SIZES}"));
    let produced = node.run("produce.js", &produce_args).await?;
    succeeded(&produced)?;
    let mut sent = BTreeMap::new();
    produced.check(|output| {
        let max_body = output.field("max_body_size")?.u64()?;
        anyhow::ensure!(
            max_body == MAX_BODY_SIZE,
            "the client took max_body_size {max_body} from the settings reply, expected \
             {MAX_BODY_SIZE}"
        );
        let backoff = output.field("backoff")?;
        anyhow::ensure!(
            backoff
                .field("exponentialBackoff")?
                .field("multiplier")?
                .as_f64()
                > Some(0.0),
            "the producer's retry policy has no exponential backoff: {backoff}"
        );
        let commands = output.field("settings_commands")?.array()?;
        let publishing = commands
            .first()
            .context("no settings command")?
            .field("settings")?
            .field("publishing")?;
        let topics = publishing.field("topicsList")?.array()?;
        anyhow::ensure!(
            topics
                .iter()
                .any(|topic| topic.get("name").and_then(Value::as_str) == Some(TEST_TOPIC)),
            "the settings reply does not echo topic {TEST_TOPIC}: {publishing}"
        );
        let entries = output.field("sent")?.array()?;
        for entry in entries {
            let described = Described::from_json(entry)?;
            // The Node client publishes only to route queues with id 0.
            anyhow::ensure!(
                entry.field("queue_id")?.u64()? == 0,
                "message {} went to queue {}, expected queue 0",
                described.message_id,
                entry.field("queue_id")?
            );
            anyhow::ensure!(
                !described.message_id.is_empty(),
                "a send result has an empty message id"
            );
            anyhow::ensure!(
                sent.insert(described.message_id.clone(), described)
                    .is_none(),
                "two sends got the same message id"
            );
        }
        let expected = SIZES.split(',').count();
        anyhow::ensure!(
            sent.len() == expected,
            "{} distinct message ids for {expected} sends",
            sent.len()
        );
        Ok(())
    })?;
    let output = produced.json()?;
    println!(
        "node produce.js: {} messages in {:?} (startup incl. settings reply {} ms, shutdown {} ms)",
        sent.len(),
        produced.elapsed,
        output.field("startup_ms")?.u64()?,
        output.field("shutdown_ms")?.u64()?
    );
    Ok((produced, sent))
}

/// Runs `consume.js` via `endpoint` for `expect` messages tagged `tag`, then
/// one more (empty) receive; returns the received messages by id after
/// checking each was delivered once, first time, not flagged corrupted.
async fn node_consume(
    node: &NodeJs,
    endpoint: &str,
    group: &str,
    tag: &str,
    expect: usize,
) -> anyhow::Result<(ScriptRun, BTreeMap<String, Described>)> {
    let mut consume_args = script::args([
        "--endpoints",
        endpoint,
        "--topic",
        TEST_TOPIC,
        "--group",
        group,
        "--filter",
        tag,
        "--await-duration",
        "3",
        "--then-empty",
    ]);
    consume_args.push(format!("--expect={expect}"));
    let consumed = node.run("consume.js", &consume_args).await?;
    succeeded(&consumed)?;
    let mut received = BTreeMap::new();
    consumed.check(|output| {
        let duplicates = output.field("duplicates")?.array()?;
        anyhow::ensure!(
            duplicates.is_empty(),
            "{} message(s) were delivered more than once",
            duplicates.len()
        );
        for message in output.field("received")?.array()? {
            let described = Described::from_json(message)?;
            let id = described.message_id.clone();
            anyhow::ensure!(
                message.field("delivery_attempt")?.u64()? == 1,
                "message {id} arrived with delivery_attempt {:?}, expected 1",
                message.field("delivery_attempt")?
            );
            anyhow::ensure!(
                !message.field("corrupted")?.bool()?,
                "the Node.js client flagged message {id} as corrupted (body digest mismatch)"
            );
            anyhow::ensure!(
                message.field("has_receipt_handle")?.bool()?,
                "message {id} arrived without a receipt handle"
            );
            anyhow::ensure!(
                message.field("topic")?.str()? == TEST_TOPIC,
                "message {id} arrived with topic {:?}",
                message.field("topic")?
            );
            anyhow::ensure!(
                received.insert(id.clone(), described).is_none(),
                "message {id} is listed twice"
            );
        }
        let acked = output.field("acked")?.array()?.len();
        anyhow::ensure!(
            acked == received.len(),
            "{acked} acks for {} messages",
            received.len()
        );
        Ok(())
    })?;
    let output = consumed.json()?;
    println!(
        "node consume.js: {} messages in {:?} (startup incl. settings reply {} ms, shutdown {} ms)",
        received.len(),
        consumed.elapsed,
        output.field("startup_ms")?.u64()?,
        output.field("shutdown_ms")?.u64()?
    );
    Ok((consumed, received))
}

/// Node Producer (region a's router) → Node SimpleConsumer (region b's
/// router): startup waits for the settings reply, every message arrives once
/// with body, tag, keys and properties intact; acks, then nothing more.
#[tokio::test(flavor = "multi_thread")]
async fn nodejs_producer_to_nodejs_consumer_in_the_other_region_gets_every_message_once()
-> anyhow::Result<()> {
    const TAG: &str = "nodejs-to-nodejs";
    let modules = NodeJs::from_env()?;
    let cluster = script::two_region_cluster().build().await?;
    let node = NodeJs::for_cluster(modules, &cluster)?;

    let (produced, sent) = node_produce(&node, &cluster.router_endpoint("a"), TAG).await?;
    let stored = client_message_ids(&message_records(&cluster, "a").await?);
    for id in sent.keys() {
        anyhow::ensure!(
            stored.contains(id),
            "region a's commit log lacks message {id}; it holds {stored:?}\n{produced}"
        );
    }

    let (consumed, received) = node_consume(
        &node,
        &cluster.router_endpoint("b"),
        "nodejs-from-nodejs",
        TAG,
        sent.len(),
    )
    .await?;
    consumed.check(|_| {
        anyhow::ensure!(
            received == sent,
            "region b delivered {received:#?}\nbut region a was sent {sent:#?}\n{produced}"
        );
        Ok(())
    })?;
    cluster.finish();
    Ok(())
}

/// Node Producer (region a) → official Rust SimpleConsumer (region b): body,
/// tag, keys, user properties and message id arrive unchanged, first attempt.
#[tokio::test(flavor = "multi_thread")]
async fn nodejs_producer_to_rust_consumer_in_the_other_region_preserves_every_field()
-> anyhow::Result<()> {
    const TAG: &str = "nodejs-to-rust";
    let modules = NodeJs::from_env()?;
    let cluster = script::two_region_cluster().build().await?;
    let node = NodeJs::for_cluster(modules, &cluster)?;

    let (produced, sent) = node_produce(&node, &cluster.router_endpoint("a"), TAG).await?;
    rust_receives_exactly(&cluster, "rust-from-nodejs", &sent, &produced).await?;
    println!("nodejs → rust: {} messages", sent.len());
    cluster.finish();
    Ok(())
}

/// Official Rust Producer (region a) → Node SimpleConsumer (region b): body,
/// tag, keys, user properties and message id arrive unchanged, first attempt,
/// not flagged corrupted by the client's body-digest check.
#[tokio::test(flavor = "multi_thread")]
async fn rust_producer_to_nodejs_consumer_in_the_other_region_preserves_every_field()
-> anyhow::Result<()> {
    const MESSAGES: usize = 5;
    const TAG: &str = "rust-to-nodejs";
    let modules = NodeJs::from_env()?;
    let cluster = script::two_region_cluster().build().await?;
    let node = NodeJs::for_cluster(modules, &cluster)?;

    let sent = rust_sends(&cluster, TAG, MESSAGES).await?;

    let (consumed, received) = node_consume(
        &node,
        &cluster.router_endpoint("b"),
        "nodejs-from-rust",
        TAG,
        MESSAGES,
    )
    .await?;
    consumed.check(|_| {
        anyhow::ensure!(
            received == sent,
            "the Node.js consumer in region b got {received:#?}\nbut the Rust producer in \
             region a sent {sent:#?}"
        );
        Ok(())
    })?;
    println!("rust → nodejs: {MESSAGES} messages");
    cluster.finish();
    Ok(())
}

/// Two Node.js producers whose message ids collide: every message is stored
/// and delivered in the other region (see `colliding_ids`).
#[tokio::test(flavor = "multi_thread")]
async fn nodejs_producers_with_colliding_message_ids_lose_nothing() -> anyhow::Result<()> {
    let modules = NodeJs::from_env()?;
    let cluster = script::two_region_cluster().build().await?;
    let nodejs = NodeJs::for_cluster(modules, &cluster)?;
    crate::colliding_ids::scenario(&cluster, |args| {
        let nodejs = &nodejs;
        async move { nodejs.run("produce.js", &args).await }
    })
    .await?;
    cluster.finish();
    Ok(())
}

/// Failover drill with the official Node.js client through a proxying
/// router (see `drills`).
#[tokio::test(flavor = "multi_thread")]
async fn nodejs_producer_survives_its_regions_node_through_a_proxying_router() -> anyhow::Result<()>
{
    let modules = NodeJs::from_env()?;
    let cluster = crate::drills::proxying_cluster().await?;
    let nodejs = NodeJs::for_cluster(modules, &cluster)?;
    let mut args = script::args(["--endpoints", &cluster.router_endpoint("a")]);
    args.extend(crate::drills::producer_args());
    let producing = tokio::spawn(async move { nodejs.run("steady_produce.js", &args).await });
    crate::drills::producer_survives_node_loss(cluster, producing, "nodejs").await
}
