//! The HTTP and STOMP faces with their official clients: the Alibaba Cloud
//! MQ HTTP SDK (PyPI `mq-http-sdk` 1.0.3) and stomp.py (PyPI `stomp-py`
//! 9.0.0), unmodified, against real nodes; and messages crossing protocols
//! and regions: what one protocol sends in one region, every other protocol
//! receives in the other, with tag, keys and properties intact.

use crate::json::{Access as _, Value};
use crate::python_client::Python;
use crate::support::{CLIENT_CALL_TIMEOUT, ack, receive, start_consumer, start_producer, within};
use meridian_tests::{TEST_TOPIC, TestCluster};
use rocketmq::model::message::MessageBuilder;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// A message as every protocol can describe it: body, tag, keys, the
/// `origin` property.
type Seen = (String, String, String, String);

fn seen_from_json(value: &Value) -> anyhow::Result<Seen> {
    let text = |name: &str| -> anyhow::Result<String> {
        let field = value.field(name)?;
        Ok(if field.is_null() {
            String::new()
        } else {
            field.str()?.to_owned()
        })
    };
    Ok((
        text("body")?,
        text("tag")?,
        text("keys")?,
        value
            .field("properties")?
            .field("origin")?
            .str()?
            .to_owned(),
    ))
}

fn messages_of(run: &crate::script::ScriptRun) -> anyhow::Result<BTreeSet<Seen>> {
    run.completed()?
        .field("messages")?
        .array()?
        .iter()
        .map(seen_from_json)
        .collect()
}

/// Runs `cross_protocol.py action` against `endpoint`.
async fn cross(
    python: &Python,
    action: &str,
    endpoint: &str,
    extra: &[&str],
) -> anyhow::Result<crate::script::ScriptRun> {
    let mut args: Vec<String> = [action, "--endpoint", endpoint, "--topic", TEST_TOPIC]
        .map(str::to_owned)
        .to_vec();
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    python.run("cross_protocol.py", &args).await
}

/// Sends three messages over gRPC (official Rust client, region a's router)
/// tagged `cross`, keyed `grpc-<i>`, with `origin=grpc`.
async fn grpc_sends(cluster: &TestCluster) -> anyhow::Result<BTreeSet<Seen>> {
    let producer = start_producer(&cluster.router_endpoint("a")).await?;
    let mut sent = BTreeSet::new();
    for index in 0..3 {
        let body = format!("grpc #{index}");
        let key = format!("grpc-{index}");
        let message = MessageBuilder::builder()
            .set_topic(TEST_TOPIC)
            .set_tag("cross")
            .set_keys(vec![key.clone()])
            .set_properties(HashMap::from([("origin".to_owned(), "grpc".to_owned())]))
            .set_body(body.clone().into_bytes())
            .build()
            .map_err(|error| anyhow::anyhow!("build a message: {error:?}"))?;
        within(CLIENT_CALL_TIMEOUT, "send", producer.send(message))
            .await?
            .map_err(|error| anyhow::anyhow!("send over gRPC: {error:?}"))?;
        sent.insert((body, "cross".to_owned(), key, "grpc".to_owned()));
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), producer.shutdown()).await;
    Ok(sent)
}

/// Receives `count` messages over gRPC (official Rust client, `group`,
/// region `region`'s router), acknowledging each.
async fn grpc_receives(
    cluster: &TestCluster,
    region: &str,
    group: &str,
    count: usize,
) -> anyhow::Result<BTreeSet<Seen>> {
    let consumer = start_consumer(&cluster.router_endpoint(region), group).await?;
    let mut received = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.len() < count {
        anyhow::ensure!(
            Instant::now() < deadline,
            "gRPC in region {region} received {} of {count}: {received:?}",
            received.len()
        );
        for message in receive(&consumer).await? {
            ack(&consumer, &message).await?;
            received.insert((
                String::from_utf8_lossy(message.body()).into_owned(),
                message.tag().unwrap_or_default().to_owned(),
                message.keys().join(" "),
                message
                    .properties()
                    .get("origin")
                    .cloned()
                    .unwrap_or_default(),
            ));
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), consumer.shutdown()).await;
    Ok(received)
}

/// HTTP in region a, STOMP in region b and gRPC in region a each send three
/// messages; STOMP and gRPC in region b and HTTP in region a each receive
/// all nine, with body, tag, key and `origin` property as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_protocols_and_regions() -> anyhow::Result<()> {
    let interpreter = Python::from_env()?;
    let cluster = TestCluster::builder().regions(2).build().await?;
    let python = Python::for_cluster(interpreter, &cluster)?;
    let http_a = format!("http://{}", cluster.http_endpoint("a"));
    let (stomp_a, stomp_b) = (cluster.stomp_endpoint("a"), cluster.stomp_endpoint("b"));
    let http_b = format!("http://{}", cluster.http_endpoint("b"));

    let mut sent =
        messages_of(&cross(&python, "send-http", &http_a, &["--prefix", "http"]).await?)?;
    sent.extend(messages_of(
        &cross(&python, "send-stomp", &stomp_b, &["--prefix", "stomp"]).await?,
    )?);
    sent.extend(grpc_sends(&cluster).await?);
    anyhow::ensure!(sent.len() == 9, "sent {sent:?}");
    let count = sent.len().to_string();

    for (action, endpoint, group) in [
        ("receive-stomp", &stomp_b, "cross-stomp"),
        ("receive-stomp", &stomp_a, "cross-stomp-a"),
        ("receive-http", &http_a, "cross-http"),
        ("receive-http", &http_b, "cross-http-b"),
    ] {
        let run = cross(
            &python,
            action,
            endpoint,
            &["--group", group, "--count", &count],
        )
        .await?;
        let received = messages_of(&run)?;
        anyhow::ensure!(
            received == sent,
            "{action} at {endpoint} received\n{received:#?}\nexpected\n{sent:#?}\n{run}"
        );
    }
    let received = grpc_receives(&cluster, "b", "cross-grpc", sent.len()).await?;
    anyhow::ensure!(
        received == sent,
        "gRPC in region b received\n{received:#?}\nexpected\n{sent:#?}"
    );
    cluster.finish();
    Ok(())
}

/// Splits `host:port`.
fn host_and_port(endpoint: &str) -> anyhow::Result<(String, String)> {
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("{endpoint} is not host:port"))?;
    Ok((host.to_owned(), port.to_owned()))
}

/// stomp.py 9.0.0 against region a's node in development mode: CONNECT and
/// STOMP, a round trip with every header, each ack mode, NACK redelivery,
/// transactions, `/topic/` subscriptions, receipts, heart-beats and ERROR
/// frames (tests/python/stomp_client.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_py_against_a_node() -> anyhow::Result<()> {
    let interpreter = Python::from_env()?;
    let cluster = TestCluster::builder().regions(1).build().await?;
    let python = Python::for_cluster(interpreter, &cluster)?;
    let (host, port) = host_and_port(&cluster.stomp_endpoint("a"))?;
    let run = python
        .run(
            "stomp_client.py",
            &crate::script::args(["--host", &host, "--port", &port, "--topic", TEST_TOPIC]),
        )
        .await?;
    run.succeeded(|output| {
        let checks = output.field("checks")?.object()?;
        anyhow::ensure!(checks.len() == 11, "checks run: {:?}", checks.keys());
        Ok(())
    })?;
    cluster.finish();
    Ok(())
}

/// With access keys configured, stomp.py connects with its key and secret
/// (login / passcode) and does everything it did in development mode; a
/// wrong passcode gets an ERROR naming the login, never the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_py_with_an_access_key() -> anyhow::Result<()> {
    let interpreter = Python::from_env()?;
    let cluster = TestCluster::builder()
        .regions(1)
        .access_key("stomp-user", "stomp-secret")
        .build()
        .await?;
    let python = Python::for_cluster(interpreter, &cluster)?;
    let (host, port) = host_and_port(&cluster.stomp_endpoint("a"))?;
    let run = python
        .run(
            "stomp_client.py",
            &crate::script::args([
                "--host",
                &host,
                "--port",
                &port,
                "--topic",
                TEST_TOPIC,
                "--login",
                "stomp-user",
                "--passcode",
                "stomp-secret",
                "--checks",
                "connect,round_trip,authentication",
            ]),
        )
        .await?;
    run.succeeded(|output| {
        let refused = output
            .field("checks")?
            .field("authentication")?
            .field("message")?
            .str()?;
        anyhow::ensure!(
            refused.contains("stomp-user") && !refused.contains("stomp-secret"),
            "the refusal: {refused}"
        );
        Ok(())
    })?;
    cluster.finish();
    Ok(())
}

/// The Alibaba Cloud MQ HTTP SDK for Python against region a's node:
/// publish / consume / ack with tag filters, keys and properties, the
/// 404-as-empty answer, a wrong handle's ReceiptHandleError, ordered and
/// timed messages, transactional commit, rollback and a pull check-back;
/// then the JSON API and its OpenAPI document (tests/python/http_sdk.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sdk_against_a_node() -> anyhow::Result<()> {
    let interpreter = Python::from_env()?;
    let cluster = TestCluster::builder().regions(1).build().await?;
    let python = Python::for_cluster(interpreter, &cluster)?;
    let endpoint = format!("http://{}", cluster.http_endpoint("a"));
    let run = python
        .run(
            "http_sdk.py",
            &crate::script::args(["--endpoint", &endpoint, "--topic", TEST_TOPIC]),
        )
        .await?;
    run.succeeded(|output| {
        let steps = output.field("steps")?.object()?;
        anyhow::ensure!(steps.len() == 7, "steps run: {:?}", steps.keys());
        Ok(())
    })?;
    cluster.finish();
    Ok(())
}

/// With access keys configured and an instance id: the SDK's signed
/// requests are verified (publish, consume with a tag filter, a wrong
/// handle) on the namespaced topic `MQ_INST_1%<topic>`; a wrong secret is
/// refused with SignatureDoesNotMatch and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sdk_with_an_access_key_and_an_instance() -> anyhow::Result<()> {
    let interpreter = Python::from_env()?;
    let namespaced = format!("MQ_INST_1%{TEST_TOPIC}");
    let topic = meridian_tests::meridian_topology::Topic {
        queues: 4,
        message_types: meridian_tests::meridian_topology::MessageType::ALL.to_vec(),
        replicate_to: vec!["a".to_owned()],
        consume_from: meridian_tests::meridian_topology::ConsumeFrom::Earliest,
        durability: Default::default(),
        geo_copies: 1,
        retention_ms: meridian_tests::meridian_topology::DEFAULT_RETENTION_MS,
        retention_bytes: None,
        transaction_checks: Default::default(),
    };
    let cluster = TestCluster::builder()
        .regions(1)
        .topic(namespaced.clone(), topic)
        .access_key("http-user", "http-secret")
        .build()
        .await?;
    let python = Python::for_cluster(interpreter, &cluster)?;
    let endpoint = format!("http://{}", cluster.http_endpoint("a"));
    let signed = |secret: &str, steps: &str| {
        crate::script::args([
            "--endpoint",
            &endpoint,
            "--topic",
            TEST_TOPIC,
            "--instance",
            "MQ_INST_1",
            "--access-key",
            "http-user",
            "--secret-key",
            secret,
            "--steps",
            steps,
        ])
    };
    let run = python
        .run(
            "http_sdk.py",
            &signed("http-secret", "empty,tags,wrong_handle"),
        )
        .await?;
    run.succeeded(|_| Ok(()))?;
    let stored = crate::support::topic_count_of(&cluster, "a", &namespaced).await?;
    anyhow::ensure!(stored > 0, "the signed run stored nothing in {namespaced}");
    let refused = python
        .run("http_sdk.py", &signed("not-the-secret", "tags"))
        .await?;
    anyhow::ensure!(
        refused.to_string().contains("SignatureDoesNotMatch"),
        "a wrong secret was not refused with SignatureDoesNotMatch:\n{refused}"
    );
    let after = crate::support::topic_count_of(&cluster, "a", &namespaced).await?;
    anyhow::ensure!(
        after == stored,
        "{after} messages in {namespaced} after the refused run, {stored} before"
    );
    cluster.finish();
    Ok(())
}
