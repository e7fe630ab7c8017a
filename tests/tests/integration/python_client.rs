//! The official RocketMQ **Python** client (PyPI `rocketmq-python-client`
//! 5.1.2, unmodified) against a two-region cluster, and round trips between
//! it and the official Rust client.
//!
//! The tests run the scripts in `tests/python/` with the interpreter that
//! `TEST_PYTHON` names: the virtualenv `scripts/python-env.sh` creates and
//! prints (`scripts/test.sh` exports it). Without it the tests fail; they
//! never skip. Every script prints one JSON object on stdout; the tests assert
//! on it and, when an assertion fails, print the script's stdout and stderr
//! (and the cluster prints its logs). The client's own log file lands in the
//! cluster's temp dir (`python-home/logs/rocketmq_python/`), which is kept on
//! failure.
//!
//! Covered (shared/protocols/rocketmq-grpc.md, conformance checklist): Python
//! Producer startup and settings reply (2, 5), sends echoing the message id
//! (4), a ~3.9 MiB body, an empty receive after the await duration (7), Rust ⇄
//! Python round trips across regions (9), tag filters, redelivery with attempt
//! 2 and a new handle, a stale handle refused (11), change_invisible_duration
//! (12), and shutdowns that log no error (14).

use crate::support::{client_message_ids, message_records};
use anyhow::Context as _;
use meridian_tests::meridian_topology::{ConsumeFrom, MessageType, Topic};
use meridian_tests::{TEST_TOPIC, TestCluster, region_name};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::json::{Access as _, Value};
use crate::rust_side::{Fields, rust_receives_exactly, rust_sends};
use crate::script::{self, ScriptRun};

/// The variable naming the Python interpreter (not `MERIDIAN_*`: that prefix
/// belongs to topology overrides).
const PYTHON_VARIABLE: &str = "TEST_PYTHON";
/// ~3.9 MiB: below the 4 MiB `max_body_size` of the settings reply.
const LARGE_BODY: usize = 3_900 * 1024 + 512;
/// The Python client's long polling (`await_duration`) in the empty-receive test.
const AWAIT_SECONDS: u64 = 4;
/// The Python client's default request timeout, added to its receive deadline.
const PYTHON_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The Python interpreter of the test virtualenv, and where its client may
/// write (`HOME`, for the client's log file).
pub(crate) struct Python {
    interpreter: PathBuf,
    home: PathBuf,
    /// The cluster's client TLS CA, which gRPC trusts through
    /// `GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`.
    ca: Option<PathBuf>,
}

impl Python {
    /// The interpreter `TEST_PYTHON` names, checked before any cluster starts.
    pub(crate) fn from_env() -> anyhow::Result<PathBuf> {
        let interpreter = std::env::var_os(PYTHON_VARIABLE).with_context(|| {
            format!(
                "{PYTHON_VARIABLE} is not set: the Python-client tests need the official \
                 client's virtualenv. Run ./scripts/test.sh, or set \
                 {PYTHON_VARIABLE}=\"$(./scripts/python-env.sh)\""
            )
        })?;
        let interpreter = PathBuf::from(interpreter);
        anyhow::ensure!(
            interpreter.is_file(),
            "{PYTHON_VARIABLE}={} is not a file: run ./scripts/python-env.sh and point \
             {PYTHON_VARIABLE} at the interpreter it prints",
            interpreter.display()
        );
        Ok(interpreter)
    }

    /// Scripts run by `interpreter` against `cluster`, with `HOME` in its temp dir.
    pub(crate) fn for_cluster(
        interpreter: PathBuf,
        cluster: &TestCluster,
    ) -> anyhow::Result<Python> {
        let home = cluster.temp_dir().join("python-home");
        std::fs::create_dir_all(&home).with_context(|| format!("create {}", home.display()))?;
        Ok(Python {
            interpreter,
            home,
            ca: cluster.client_ca().map(Path::to_path_buf),
        })
    }

    /// Runs `tests/python/<script>` with `args` (plus `--deadline`).
    pub(crate) async fn run(&self, script: &str, args: &[String]) -> anyhow::Result<ScriptRun> {
        let mut command = tokio::process::Command::new(&self.interpreter);
        command
            .arg(script_dir().join(script))
            .args(args)
            .arg(script::deadline_arg())
            .current_dir(script_dir())
            .env("HOME", &self.home)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONNOUSERSITE", "1");
        if let Some(ca) = &self.ca {
            command.env("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", ca);
        }
        let described = format!(
            "{} {} {}",
            self.interpreter.display(),
            script,
            args.join(" ")
        );
        let log_dir = self.home.join("logs").join("rocketmq_python");
        script::run(
            "python",
            command,
            described,
            format!("in {}", log_dir.display()),
        )
        .await
    }
}

fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// A run's JSON result, once it is known to have succeeded.
fn succeeded(run: &ScriptRun) -> anyhow::Result<&Value> {
    run.succeeded(|_| Ok(()))
}

fn endpoint_args(flag: &str, endpoint: &str) -> [String; 2] {
    [flag.to_owned(), endpoint.to_owned()]
}

/// A message as the Python consumer or producer script describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Described {
    message_id: String,
    tag: Option<String>,
    keys: BTreeSet<String>,
    properties: BTreeMap<String, String>,
    size: u64,
    sha256: String,
    body: Option<Vec<u8>>,
}

impl Described {
    fn from_json(value: &Value) -> anyhow::Result<Described> {
        let body = value
            .get("body_hex")
            .map(|hex| script::decode_hex(hex.str()?))
            .transpose()?;
        let fields = Fields::from_json_with_body(value, Vec::new())?;
        Ok(Described {
            message_id: fields.message_id,
            tag: fields.tag,
            keys: fields.keys,
            properties: fields.properties,
            size: value.field("size")?.u64()?,
            sha256: value.field("sha256")?.str()?.to_owned(),
            body,
        })
    }
}

impl Described {
    /// The fields a round trip compares (the body must have been echoed).
    fn fields(&self) -> anyhow::Result<Fields> {
        Ok(Fields {
            message_id: self.message_id.clone(),
            tag: self.tag.clone(),
            keys: self.keys.clone(),
            properties: self.properties.clone(),
            body: self.body.clone().with_context(|| {
                format!("message {} was described without its body", self.message_id)
            })?,
        })
    }
}

/// The `received` messages of a consume.py run, by message id, after
/// checking that each was delivered once, first time, uncorrupted.
fn first_deliveries(output: &Value) -> anyhow::Result<BTreeMap<String, Described>> {
    let duplicates = output.field("duplicates")?.array()?;
    anyhow::ensure!(
        duplicates.is_empty(),
        "{} message(s) were delivered more than once",
        duplicates.len()
    );
    let mut received = BTreeMap::new();
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
            "the Python client flagged message {id} as corrupted (body digest mismatch)"
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
            message.field("message_type")?.str()? == "NORMAL",
            "message {id} arrived with type {:?}, expected NORMAL",
            message.field("message_type")?
        );
        anyhow::ensure!(
            received.insert(id.clone(), described).is_none(),
            "message {id} is listed twice"
        );
    }
    Ok(received)
}

/// Python Producer (region a) → Python SimpleConsumer (region b): startup,
/// the settings reply, a 1 KiB and a ~3.9 MiB send with ids echoed, both
/// bodies intact in the other region, shutdowns without ERROR logs.
#[tokio::test(flavor = "multi_thread")]
async fn python_producer_sends_1_kib_and_3_9_mib_and_a_python_consumer_in_the_other_region_gets_both()
-> anyhow::Result<()> {
    let interpreter = Python::from_env()?;
    let cluster = script::two_region_cluster().build().await?;
    let python = Python::for_cluster(interpreter, &cluster)?;

    let mut produce_args = endpoint_args("--endpoints", &cluster.router_endpoint("a")).to_vec();
    produce_args.extend(script::args([
        "--topic",
        TEST_TOPIC,
        "--tag",
        "python-large",
        "--key",
        "size-test",
    ]));
    produce_args.push(format!("--sizes=1024,{LARGE_BODY}"));
    let produced = python.run("produce.py", &produce_args).await?;
    let output = succeeded(&produced)?;
    let mut sent = BTreeMap::new();
    produced.check(|output| {
        anyhow::ensure!(
            output.field("settings_received")?.bool()?,
            "no settings reply reached the producer"
        );
        let max_body = output.field("max_body_size")?.u64()?;
        anyhow::ensure!(
            max_body >= LARGE_BODY as u64,
            "the settings reply set max_body_size {max_body}, below the {LARGE_BODY}-byte body"
        );
        for entry in output.field("sent")?.array()? {
            let described = Described::from_json(entry)?;
            let client_id = entry.field("client_message_id")?.str()?;
            anyhow::ensure!(
                !described.message_id.is_empty() && described.message_id == client_id,
                "the send result's message id {:?} is not the one the client generated ({client_id:?})",
                described.message_id
            );
            anyhow::ensure!(
                sent.insert(described.message_id.clone(), described).is_none(),
                "two sends got the same message id"
            );
        }
        let sizes: BTreeSet<u64> = sent.values().map(|message| message.size).collect();
        anyhow::ensure!(
            sizes == BTreeSet::from([1024, LARGE_BODY as u64]),
            "sent sizes {sizes:?}"
        );
        Ok(())
    })?;
    println!(
        "python produce.py: {} messages in {:?}, settings reply max_body_size {}",
        sent.len(),
        produced.elapsed,
        output.field("max_body_size")?.u64()?
    );

    let stored = client_message_ids(&message_records(&cluster, "a").await?);
    for id in sent.keys() {
        anyhow::ensure!(
            stored.contains(id),
            "region a's commit log lacks message {id}; it holds {stored:?}"
        );
    }

    let mut consume_args = endpoint_args("--endpoints", &cluster.router_endpoint("b")).to_vec();
    consume_args.extend(script::args([
        "--topic",
        TEST_TOPIC,
        "--group",
        "python-large",
        "--filter",
        "python-large",
        "--expect",
        "2",
        "--max-messages",
        "1",
        "--then-empty",
    ]));
    let consumed = python.run("consume.py", &consume_args).await?;
    succeeded(&consumed)?;
    consumed.check(|output| {
        let received = first_deliveries(output)?;
        anyhow::ensure!(
            received == sent,
            "region b delivered {received:#?}\nbut region a was sent {sent:#?}"
        );
        Ok(())
    })?;
    println!("python consume.py: 2 messages in {:?}", consumed.elapsed);
    cluster.finish();
    Ok(())
}

/// A Python SimpleConsumer of a topic with no messages gets an empty list,
/// without an exception, after about its await duration.
#[tokio::test(flavor = "multi_thread")]
async fn python_simple_consumer_on_an_empty_topic_gets_an_empty_list_after_the_await_duration()
-> anyhow::Result<()> {
    let topic = Topic {
        queues: 4,
        message_types: vec![MessageType::Normal],
        replicate_to: vec![region_name(0), region_name(1)],
        consume_from: ConsumeFrom::Earliest,
        durability: Default::default(),
        geo_copies: 1,
        retention_ms: meridian_topology::DEFAULT_RETENTION_MS,
        retention_bytes: None,
        transaction_checks: Default::default(),
    };
    let interpreter = Python::from_env()?;
    let cluster = script::two_region_cluster()
        .topic("python-empty", topic)
        .build()
        .await?;
    let python = Python::for_cluster(interpreter, &cluster)?;

    let mut consume_args = endpoint_args("--endpoints", &cluster.router_endpoint("b")).to_vec();
    consume_args.extend(script::args([
        "--topic",
        "python-empty",
        "--group",
        "python-empty",
        "--expect",
        "0",
        "--receives",
        "2",
    ]));
    consume_args.push(format!("--await-duration={AWAIT_SECONDS}"));
    let consumed = python.run("consume.py", &consume_args).await?;
    succeeded(&consumed)?;
    consumed.check(|output| {
        let receives = output.field("receives")?.array()?;
        anyhow::ensure!(
            receives.len() == 2,
            "{} receives, expected 2",
            receives.len()
        );
        let poll = Duration::from_secs(AWAIT_SECONDS);
        for receive in receives {
            anyhow::ensure!(
                receive.field("count")?.u64()? == 0,
                "a receive got messages"
            );
            let elapsed = Duration::from_millis(receive.field("elapsed_ms")?.u64()?);
            anyhow::ensure!(
                elapsed + Duration::from_millis(500) >= poll,
                "an empty receive returned after {elapsed:?}: the server did not long-poll \
                 for the requested {poll:?}"
            );
            anyhow::ensure!(
                elapsed < poll + PYTHON_REQUEST_TIMEOUT,
                "an empty receive took {elapsed:?}, past the client's own deadline \
                 ({poll:?} + {PYTHON_REQUEST_TIMEOUT:?})"
            );
        }
        Ok(())
    })?;
    let elapsed = consumed
        .json()?
        .field("receives")?
        .array()?
        .iter()
        .map(|receive| receive.field("elapsed_ms")?.u64())
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!("python empty receives: [] after {elapsed:?} ms (await {AWAIT_SECONDS} s)");
    cluster.finish();
    Ok(())
}

/// Tag filter `a||b`, an unacked message redelivered with attempt 2 and a
/// new handle, the stale handle refused with INVALID_RECEIPT_HANDLE,
/// change_invisible_duration's new handle acking — see tests/python/lifecycle.py.
#[tokio::test(flavor = "multi_thread")]
async fn python_simple_consumer_filters_tags_redelivers_and_changes_invisible_duration()
-> anyhow::Result<()> {
    let interpreter = Python::from_env()?;
    let cluster = script::two_region_cluster().build().await?;
    let python = Python::for_cluster(interpreter, &cluster)?;

    let mut lifecycle_args =
        endpoint_args("--producer-endpoints", &cluster.router_endpoint("a")).to_vec();
    lifecycle_args.extend(endpoint_args(
        "--consumer-endpoints",
        &cluster.router_endpoint("b"),
    ));
    lifecycle_args.extend(script::args([
        "--topic",
        TEST_TOPIC,
        "--group",
        "python-lifecycle",
        "--invisible-duration",
        "4",
    ]));
    let run = python.run("lifecycle.py", &lifecycle_args).await?;
    succeeded(&run)?;
    run.check(|output| {
        let problems = output.field("problems")?.array()?;
        anyhow::ensure!(problems.is_empty(), "problems: {problems:?}");
        let unexpected = output.field("unexpected")?.array()?;
        anyhow::ensure!(
            unexpected.is_empty(),
            "messages outside the tag filter or the run were delivered: {unexpected:?}"
        );
        let redelivery = output.field("redelivery")?;
        anyhow::ensure!(
            redelivery.field("delivery_attempt")?.u64()? == 2,
            "the redelivery has delivery_attempt {:?}",
            redelivery.field("delivery_attempt")?
        );
        anyhow::ensure!(
            redelivery.field("handle_changed")?.bool()?,
            "the redelivery reused the receipt handle"
        );
        anyhow::ensure!(
            redelivery.field("after_ms")?.u64()? >= 3_000,
            "the message came back before its 4 s invisible duration"
        );
        let stale = output.field("stale_ack")?;
        anyhow::ensure!(
            stale.field("code")?.str()? == "INVALID_RECEIPT_HANDLE",
            "ack with the stale handle: {stale:?}"
        );
        anyhow::ensure!(
            output
                .field("change_invisible")?
                .field("handle_changed")?
                .bool()?,
            "change_invisible_duration returned the old handle"
        );
        for role in ["redeliver", "extend"] {
            let acked = output.field("acks")?.field(role)?.str()?;
            anyhow::ensure!(acked == "OK", "ack of {role}: {acked}");
        }
        anyhow::ensure!(
            output.field("final_receive")?.u64()? == 0,
            "messages were left after every ack"
        );
        Ok(())
    })?;
    println!("python lifecycle.py: passed in {:?}", run.elapsed);
    cluster.finish();
    Ok(())
}

/// Official Rust Producer (region a) → Python SimpleConsumer (region b):
/// body, tag, keys, user properties and message id arrive unchanged, first
/// attempt, not flagged corrupted.
#[tokio::test(flavor = "multi_thread")]
async fn rust_producer_to_python_consumer_in_the_other_region_preserves_every_field()
-> anyhow::Result<()> {
    const MESSAGES: usize = 5;
    const TAG: &str = "rust-to-python";
    let interpreter = Python::from_env()?;
    let cluster = script::two_region_cluster().build().await?;
    let python = Python::for_cluster(interpreter, &cluster)?;

    let sent = rust_sends(&cluster, TAG, MESSAGES).await?;

    let mut consume_args = endpoint_args("--endpoints", &cluster.router_endpoint("b")).to_vec();
    consume_args.extend(script::args([
        "--topic",
        TEST_TOPIC,
        "--group",
        "python-from-rust",
        "--filter",
        TAG,
        "--then-empty",
    ]));
    consume_args.push(format!("--expect={MESSAGES}"));
    let consumed = python.run("consume.py", &consume_args).await?;
    succeeded(&consumed)?;
    consumed.check(|output| {
        let received = first_deliveries(output)?;
        anyhow::ensure!(
            received.keys().collect::<Vec<_>>() == sent.keys().collect::<Vec<_>>(),
            "region b delivered ids {:?}, region a was sent {:?}",
            received.keys(),
            sent.keys()
        );
        for (id, expected) in &sent {
            let got = received[id].fields()?;
            anyhow::ensure!(
                &got == expected,
                "message {id} changed between the Rust producer and the Python consumer:\n\
                 sent {expected:#?}\nreceived {got:#?}"
            );
        }
        Ok(())
    })?;
    println!(
        "rust → python: {MESSAGES} messages, consume.py took {:?}",
        consumed.elapsed
    );
    cluster.finish();
    Ok(())
}

/// Python Producer (region a) → official Rust SimpleConsumer (region b):
/// body, tag, keys, user properties and message id arrive unchanged, first
/// attempt.
#[tokio::test(flavor = "multi_thread")]
async fn python_producer_to_rust_consumer_in_the_other_region_preserves_every_field()
-> anyhow::Result<()> {
    const TAG: &str = "python-to-rust";
    let interpreter = Python::from_env()?;
    let cluster = script::two_region_cluster().build().await?;
    let python = Python::for_cluster(interpreter, &cluster)?;

    let mut produce_args = endpoint_args("--endpoints", &cluster.router_endpoint("a")).to_vec();
    produce_args.extend(script::args([
        "--topic",
        TEST_TOPIC,
        "--tag",
        TAG,
        "--key",
        "python-to-rust",
        "--key",
        "second key",
        "--property",
        "origin=python",
        "--property",
        "unicode=größe ✓ 東京 😀",
        "--sizes",
        "1,300,1024,65536",
    ]));
    let produced = python.run("produce.py", &produce_args).await?;
    let mut sent = BTreeMap::new();
    succeeded(&produced)?;
    produced.check(|output| {
        for entry in output.field("sent")?.array()? {
            let fields = Fields::from_json(entry)?;
            sent.insert(fields.message_id.clone(), fields);
        }
        anyhow::ensure!(
            sent.len() == 4,
            "{} distinct message ids for 4 sends",
            sent.len()
        );
        Ok(())
    })?;
    rust_receives_exactly(&cluster, "rust-from-python", &sent, &produced).await?;
    println!(
        "python → rust: {} messages, produce.py took {:?}",
        sent.len(),
        produced.elapsed
    );
    cluster.finish();
    Ok(())
}

/// Two Python producers whose message ids collide: every message is stored
/// and delivered in the other region (see `colliding_ids`).
#[tokio::test(flavor = "multi_thread")]
async fn python_producers_with_colliding_message_ids_lose_nothing() -> anyhow::Result<()> {
    let interpreter = Python::from_env()?;
    let cluster = script::two_region_cluster().build().await?;
    let python = Python::for_cluster(interpreter, &cluster)?;
    crate::colliding_ids::scenario(&cluster, |args| {
        let python = &python;
        async move { python.run("produce.py", &args).await }
    })
    .await?;
    cluster.finish();
    Ok(())
}

/// Failover drill with the official Python client through a proxying
/// router (see `drills`).
#[tokio::test(flavor = "multi_thread")]
async fn python_producer_survives_its_regions_node_through_a_proxying_router() -> anyhow::Result<()>
{
    let interpreter = Python::from_env()?;
    let cluster = crate::drills::proxying_cluster().await?;
    let python = Python::for_cluster(interpreter, &cluster)?;
    let mut args = endpoint_args("--endpoints", &cluster.router_endpoint("a")).to_vec();
    args.extend(crate::drills::producer_args());
    let producing = tokio::spawn(async move { python.run("steady_produce.py", &args).await });
    crate::drills::producer_survives_node_loss(cluster, producing, "python").await
}
