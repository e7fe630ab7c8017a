//! Failover drills with the official clients: a producer sends every 100 ms
//! through region a's router, in proxy mode, while a's node is killed. The
//! producer keeps its access point; its sends go on (served by b) with no
//! gap between successful sends over [`MAX_GAP_MS`]; and every send answered
//! OK is stored in some region (a's once its node is back). The producing
//! scripts are `steady_produce.py` and `steady_produce.js`.

use crate::json::Access as _;
use crate::script::{self, ScriptRun};
use crate::support::{client_message_ids, message_records, topic_count};
use anyhow::Context as _;
use meridian_tests::meridian_topology::RouterMode;
use meridian_tests::{Role, TEST_TOPIC, TestCluster};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The longest time a producer may go without a successful send.
pub const MAX_GAP_MS: u64 = 2_000;

/// A two-region cluster whose routers proxy.
pub async fn proxying_cluster() -> anyhow::Result<TestCluster> {
    script::two_region_cluster()
        .router_mode(RouterMode::Proxy)
        .build()
        .await
}

/// The steady producer scripts' arguments besides the endpoint.
pub fn producer_args() -> Vec<String> {
    script::args([
        "--topic",
        TEST_TOPIC,
        "--tag",
        "drill",
        "--seconds",
        "8",
        "--interval-ms",
        "100",
    ])
}

/// Kills a's node once `producing` is sending, then checks the gap and that
/// nothing answered OK was lost.
pub async fn producer_survives_node_loss(
    mut cluster: TestCluster,
    producing: JoinHandle<anyhow::Result<ScriptRun>>,
    client: &str,
) -> anyhow::Result<()> {
    meridian_tests::wait_until(
        Duration::from_secs(60),
        "sends to reach region a",
        || async { Ok::<_, anyhow::Error>(topic_count(&cluster, "a").await? >= 5) },
    )
    .await?;
    cluster.kill9("a", Role::Node)?;

    let produced = producing.await??;
    // Sends in flight at the kill fail, and the client logs them as errors.
    let output = produced.completed()?;
    let mut ok_ids = BTreeSet::new();
    let mut last_ok_ms: Option<u64> = None;
    let mut longest_gap_ms = 0;
    let mut failed = 0;
    let mut last_at_ms = 0;
    for send in output.field("sends")?.array()? {
        let at_ms = send.field("at_ms")?.u64()?;
        last_at_ms = at_ms;
        if send.field("ok")?.bool()? {
            ok_ids.insert(send.field("message_id")?.str()?.to_owned());
            if let Some(last) = last_ok_ms {
                longest_gap_ms = longest_gap_ms.max(at_ms.saturating_sub(last));
            }
            last_ok_ms = Some(at_ms);
        } else {
            failed += 1;
        }
    }
    // An outage that lasts to the end of the run counts too.
    let last_ok_ms = last_ok_ms.context("no send was answered OK")?;
    longest_gap_ms = longest_gap_ms.max(last_at_ms.saturating_sub(last_ok_ms));
    println!(
        "{client} drill: {} sends answered OK, {failed} failed, longest gap between OKs {longest_gap_ms} ms",
        ok_ids.len()
    );
    anyhow::ensure!(
        longest_gap_ms <= MAX_GAP_MS,
        "the {client} producer went {longest_gap_ms} ms without a successful send (budget {MAX_GAP_MS} ms)\n{produced}"
    );

    // Nothing answered OK is lost: a's node comes back with what it had.
    cluster.start("a", Role::Node).await?;
    let mut stored = client_message_ids(&message_records(&cluster, "a").await?);
    stored.extend(client_message_ids(&message_records(&cluster, "b").await?));
    let lost: Vec<&String> = ok_ids.iter().filter(|id| !stored.contains(id)).collect();
    anyhow::ensure!(
        lost.is_empty(),
        "sends answered OK but stored nowhere: {lost:?}"
    );
    cluster.finish();
    Ok(())
}

/// `meridian drill run FILE --json --no-timing-invariants`, parsed; the
/// report's text form printed for the log.
pub async fn run_drill(
    file: &std::path::Path,
    extra: &[&str],
) -> anyhow::Result<serde_json::Value> {
    let mut args = vec![
        "drill".to_owned(),
        "run".to_owned(),
        file.display().to_string(),
        "--json".to_owned(),
        // Recovery times are reported, not asserted: CI machines are busy.
        "--no-timing-invariants".to_owned(),
    ];
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    let output = meridian_tests::run_meridian(&args, Duration::from_secs(600)).await?;
    anyhow::ensure!(
        output.code() == Some(0),
        "drill {} failed: {output}",
        file.display()
    );
    let report: serde_json::Value = serde_json::from_str(&output.stdout)
        .with_context(|| format!("the drill's JSON report: {output}"))?;
    println!("{}", summary(&report));
    Ok(report)
}

/// The report's figures in a few lines, for the test log.
fn summary(report: &serde_json::Value) -> String {
    let mut lines = vec![format!(
        "drill {}: passed {}, acknowledged {}, lost {}, duplicates after ack {}, seed {}",
        report["drill"],
        report["passed"],
        report["sends_acknowledged"],
        report["lost"],
        report["duplicates_after_ack"],
        report["seed"]
    )];
    for step in report["steps"].as_array().into_iter().flatten() {
        let recoveries: Vec<String> = step["recovery"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|recovery| format!("{} {}", recovery["client"], recovery["recovery_ms"]))
            .collect();
        lines.push(format!(
            "  step {} {}: recovery ms {}",
            step["index"],
            step["action"],
            recoveries.join(", ")
        ));
    }
    lines.join("\n")
}

/// Every producer and consumer recovered after every step.
fn everyone_recovered(report: &serde_json::Value) -> anyhow::Result<()> {
    for step in report["steps"].as_array().context("steps")? {
        for recovery in step["recovery"].as_array().context("recovery")? {
            anyhow::ensure!(
                recovery["recovery_ms"].is_number(),
                "{} did not recover after step {}: {}",
                recovery["client"],
                step["index"],
                summary(report)
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn example_drills_hold_their_invariants() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("topology")
        .join("examples");
    for name in [
        "region-outage",
        "link-partition",
        "one-way-partition",
        "replicator-crash",
        "failback",
    ] {
        let file = examples.join(format!("{name}-drill.toml"));
        let report = run_drill(&file, &[]).await.expect("the drill runs");
        assert_eq!(report["passed"], true, "{}", summary(&report));
        assert_eq!(report["lost"], 0, "{}", summary(&report));
        assert!(report["sends_acknowledged"].as_u64().unwrap_or(0) > 0);
        everyone_recovered(&report).expect("recovered");
        if name == "failback" {
            let reconciled = report["reconciled"].as_array().expect("reconciled");
            assert!(
                reconciled
                    .iter()
                    .any(|entry| !entry["message_ids"].as_array().expect("ids").is_empty()),
                "the returning region lists what it had not replicated: {reconciled:?}"
            );
        }
    }
}

/// `meridian drill run FILE` without `--access-key`: the runner's refusal
/// (exit 3) before anything starts.
async fn refused_without_a_key(file: &std::path::Path) -> meridian_tests::CommandOutput {
    let output = meridian_tests::run_meridian(
        [
            "drill".to_owned(),
            "run".to_owned(),
            file.display().to_string(),
        ],
        Duration::from_secs(60),
    )
    .await
    .expect("run the drill without a key");
    assert_eq!(output.code(), Some(3), "{output}");
    output
}

/// The shipped secured drill (`topology/examples/secured-drill.toml`, keys
/// in `secured-keys.toml`) runs as the README says: refused before anything
/// starts without `--access-key` (naming `drill-load`), and passing with
/// `--access-key drill-load`.
#[tokio::test(flavor = "multi_thread")]
async fn the_secured_example_drill_passes_with_its_key() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("topology")
        .join("examples")
        .join("secured-drill.toml");
    let output = refused_without_a_key(&file).await;
    assert!(
        output.stderr.contains("pass --access-key with a key of")
            && output.stderr.contains(": drill-load"),
        "the refusal names drill-load: {output}"
    );

    let report = run_drill(&file, &["--access-key", "drill-load"])
        .await
        .expect("the drill runs with drill-load");
    assert_eq!(report["passed"], true, "{}", summary(&report));
    assert_eq!(report["lost"], 0, "{}", summary(&report));
    assert!(report["sends_acknowledged"].as_u64().unwrap_or(0) > 0);
    everyone_recovered(&report).expect("recovered");
}

/// A two-region drill whose load is one official client family's producer
/// and consumer (`command` gives the program and its first arguments), on
/// a's router in proxy mode, while a's node is killed and started again.
fn official_client_drill(root: &std::path::Path, family: &str, command: &[String]) -> String {
    let client = |role: &str| {
        let mut words: Vec<String> = command.to_vec();
        words.extend(
            [
                "--role",
                role,
                "--endpoints",
                "{endpoint}",
                "--topic",
                "{topic}",
                "--group",
                "{group}",
            ]
            .map(str::to_owned),
        );
        let quoted: Vec<String> = words.iter().map(|word| format!("{word:?}")).collect();
        format!(
            "[[drill.load.clients]]\nname = \"{family}-{role}\"\nkind = \"{role}\"\ncommand = [{}]\n",
            quoted.join(", ")
        )
    };
    // Addresses are placeholders: the runner binds ports the OS chooses.
    format!(
        r#"
[regions.a]
site = "public"
node = "127.0.0.1:1001"
admin = "127.0.0.1:1002"
replicator = "127.0.0.1:1003"
router = "127.0.0.1:1004"
data_dir = "{root}/a"
router_mode = "proxy"

[regions.b]
site = "public"
node = "127.0.0.1:1011"
admin = "127.0.0.1:1012"
replicator = "127.0.0.1:1013"
router = "127.0.0.1:1014"
data_dir = "{root}/b"
router_mode = "proxy"

[[links]]
between = ["a", "b"]
latency_ms = 10

[topics.{TEST_TOPIC}]
queues = 4
message_types = ["normal"]
replicate_to = ["a", "b"]

[drill]
description = "{family} producer and consumer across kill -9 of a's node"
seed = 11

[drill.load]
region = "a"
topic = "{TEST_TOPIC}"
producers = 0
consumers = 0
warmup_ms = 3000

{producer}
{consumer}
[[drill.steps]]
action = "kill"
region = "a"
role = "node"
when = "recovered"
within_ms = 20000

[[drill.steps]]
after_ms = 3000
action = "start"
region = "a"
role = "node"
when = "caught-up"

[drill.expect]
max_lost = 0
max_recovery_ms = 2000
"#,
        root = root.display(),
        producer = client("producer"),
        consumer = client("consumer"),
    )
}

/// Runs the official-client drill of one family and checks it.
async fn official_clients_survive_node_loss(family: &str, command: Vec<String>) {
    let directory = tempfile::tempdir().expect("temp dir");
    let file = directory.path().join(format!("{family}-drill.toml"));
    std::fs::write(
        &file,
        official_client_drill(directory.path(), family, &command),
    )
    .expect("write the drill");
    let report = run_drill(&file, &[]).await.expect("the drill runs");
    assert_eq!(report["passed"], true, "{}", summary(&report));
    assert_eq!(report["lost"], 0, "{}", summary(&report));
    assert!(
        report["sends_acknowledged"].as_u64().unwrap_or(0) >= 10,
        "{}",
        summary(&report)
    );
    everyone_recovered(&report).expect("every official client recovered");
}

/// The program and first arguments that run `family`'s drill client
/// (`python`, `nodejs` or `rust`), with a `HOME` of its own for the
/// client's logs (the returned directory; keep it while the client runs).
fn drill_client_command(family: &str) -> (Vec<String>, tempfile::TempDir) {
    let home = tempfile::tempdir().expect("home");
    let home_variable = format!("HOME={}", home.path().display());
    let sources = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let command = match family {
        "python" => {
            let python = crate::python_client::Python::from_env().expect("Python client");
            vec![
                "env".to_owned(),
                home_variable,
                python.display().to_string(),
                sources.join("python/drill_client.py").display().to_string(),
            ]
        }
        "nodejs" => {
            let modules = crate::nodejs_client::NodeJs::from_env().expect("Node.js client");
            vec![
                "env".to_owned(),
                home_variable,
                format!("NODE_PATH={}", modules.display()),
                "node".to_owned(),
                sources.join("nodejs/drill_client.js").display().to_string(),
            ]
        }
        "rust" => {
            // `cargo test` builds the tests crate's examples next to its test binaries.
            let examples = std::env::current_exe()
                .expect("test binary")
                .parent()
                .and_then(std::path::Path::parent)
                .expect("target directory")
                .join("examples");
            let client = examples.join("drill_client");
            assert!(
                client.is_file(),
                "{} is not built: run `cargo build -p meridian-tests --examples` (scripts/test.sh does)",
                client.display()
            );
            vec![
                "env".to_owned(),
                home_variable,
                client.display().to_string(),
            ]
        }
        other => panic!("no drill client family {other}"),
    };
    (command, home)
}

#[tokio::test(flavor = "multi_thread")]
async fn python_clients_survive_node_loss_in_a_drill() {
    let (command, _home) = drill_client_command("python");
    official_clients_survive_node_loss("python", command).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nodejs_clients_survive_node_loss_in_a_drill() {
    let (command, _home) = drill_client_command("nodejs");
    official_clients_survive_node_loss("nodejs", command).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_clients_survive_node_loss_in_a_drill() {
    let (command, _home) = drill_client_command("rust");
    official_clients_survive_node_loss("rust", command).await;
}

/// The keys of the secured drills: `drill-load` is granted what the load
/// does; the internal key only `admin`, so it cannot be the load's key.
const SECURED_KEYS: &str = r#"
[[keys]]
id = "drill-load"
secret = "drill-load-secret"
allow = [{ actions = ["pub", "sub"], topics = ["demo"], groups = ["drill", "drill-observer-*"] }]

[[keys]]
id = "meridian-internal"
secret = "internal-secret"
allow = [{ actions = ["admin"] }]
"#;

/// A one-region drill with `[access]` (keys in `root`, [`SECURED_KEYS`])
/// and, with `tls`, `[client_tls]` (certificates `meridian certs` makes in
/// `root/certs`): a built-in producer and consumer plus a producer and a
/// consumer of each official client family in `families`, while a's
/// replicator restarts. Returns the file.
async fn secured_drill(
    root: &std::path::Path,
    tls: bool,
    families: &[(&str, &[String])],
) -> std::path::PathBuf {
    std::fs::write(root.join("keys.toml"), SECURED_KEYS).expect("write the keys");
    let mut clients = String::new();
    for (family, command) in families {
        for role in ["producer", "consumer"] {
            let mut words: Vec<String> = command.to_vec();
            words.extend(
                [
                    "--role",
                    role,
                    "--endpoints",
                    "{endpoint}",
                    "--topic",
                    "{topic}",
                    "--group",
                    "{group}",
                ]
                .map(str::to_owned),
            );
            let quoted: Vec<String> = words.iter().map(|word| format!("{word:?}")).collect();
            clients.push_str(&format!(
                "[[drill.load.clients]]\nname = \"{family}-{role}\"\nkind = \"{role}\"\ncommand = [{}]\n\n",
                quoted.join(", ")
            ));
        }
    }
    let certs = root.join("certs");
    let client_tls = if tls {
        format!(
            "[client_tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            certs.join("ca.pem"),
            certs.join("{region}.pem"),
            certs.join("{region}-key.pem")
        )
    } else {
        String::new()
    };
    // Addresses are placeholders: the runner binds ports the OS chooses.
    let text = format!(
        r#"
[access]
keys_file = "keys.toml"
internal_key = "meridian-internal"

{client_tls}
[regions.a]
site = "public"
node = "127.0.0.1:1001"
admin = "127.0.0.1:1002"
replicator = "127.0.0.1:1003"
router = "127.0.0.1:1004"
data_dir = "{root}/a"

[topics.{TEST_TOPIC}]
queues = 4
message_types = ["normal"]
replicate_to = ["a"]

[drill]
description = "a secured deployment's load, while a's replicator restarts"
seed = 5
tail_ms = 1000

[drill.load]
region = "a"
topic = "{TEST_TOPIC}"
warmup_ms = 1000

{clients}
[[drill.steps]]
action = "restart"
region = "a"
role = "replicator"

[drill.expect]
max_lost = 0
"#,
        root = root.display(),
    );
    let file = root.join(if tls {
        "tls-drill.toml"
    } else {
        "secured-drill.toml"
    });
    std::fs::write(&file, text).expect("write the drill");
    if tls {
        let output = meridian_tests::run_meridian(
            [
                "certs".to_owned(),
                "--topology".to_owned(),
                file.display().to_string(),
                "--out".to_owned(),
                certs.display().to_string(),
            ],
            Duration::from_secs(60),
        )
        .await
        .expect("run meridian certs");
        assert_eq!(output.code(), Some(0), "meridian certs: {output}");
    }
    file
}

/// The drill passed, nothing acknowledged was lost, and every client (each
/// official one named) sent or received after the step.
fn secured_drill_passed(report: &serde_json::Value, families: &[(&str, &[String])]) {
    everyone_recovered(report).expect("every client succeeded after the step");
    assert_eq!(report["passed"], true, "{}", summary(report));
    assert_eq!(report["lost"], 0, "{}", summary(report));
    assert!(
        report["sends_acknowledged"].as_u64().unwrap_or(0) > 0,
        "{}",
        summary(report)
    );
    let names: Vec<&str> = report["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .filter_map(|client| client["name"].as_str())
        .collect();
    for (family, _) in families {
        for role in ["producer", "consumer"] {
            let name = format!("{family}-{role}");
            assert!(names.contains(&name.as_str()), "{name} in {names:?}");
        }
    }
}

/// A drill of a deployment with `[access]`: without `--access-key` the
/// runner refuses before starting anything, naming the grants the internal
/// key lacks and the key that has them; with `--access-key drill-load` the
/// built-in clients and the official Rust client (given the key in its
/// environment) sign and the drill passes.
#[tokio::test(flavor = "multi_thread")]
async fn a_drill_of_a_secured_deployment_signs_with_the_chosen_key() {
    let directory = tempfile::tempdir().expect("temp dir");
    let (rust, _home) = drill_client_command("rust");
    let families: [(&str, &[String]); 1] = [("rust", &rust)];
    let file = secured_drill(directory.path(), false, &families).await;

    let output = refused_without_a_key(&file).await;
    for expected in [
        "the internal key meridian-internal",
        "is not granted any of it",
        "`pub` on topic `demo`",
        "pass --access-key with a key of",
        ": drill-load",
    ] {
        assert!(output.stderr.contains(expected), "{expected:?} in {output}");
    }
    assert!(
        !output.stderr.contains("starting"),
        "nothing started: {output}"
    );

    let report = run_drill(&file, &["--access-key", "drill-load"])
        .await
        .expect("the drill runs with the key");
    secured_drill_passed(&report, &families);
}

/// A drill of a deployment with `[access]` and `[client_tls]`: the built-in
/// clients dial with TLS, and the official Rust, Python and Node.js clients
/// turn TLS on and trust the deployment's CA from their environment.
#[tokio::test(flavor = "multi_thread")]
async fn a_drill_of_a_tls_deployment_runs_every_client_over_tls() {
    let directory = tempfile::tempdir().expect("temp dir");
    let (rust, _rust_home) = drill_client_command("rust");
    let (python, _python_home) = drill_client_command("python");
    let (nodejs, _nodejs_home) = drill_client_command("nodejs");
    let families: [(&str, &[String]); 3] =
        [("rust", &rust), ("python", &python), ("nodejs", &nodejs)];
    let file = secured_drill(directory.path(), true, &families).await;
    let report = run_drill(&file, &["--access-key", "drill-load"])
        .await
        .expect("the drill runs over TLS");
    secured_drill_passed(&report, &families);
}
