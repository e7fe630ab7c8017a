//! Access keys and grants on the RocketMQ gRPC ports (issue 12), with the
//! official Rust client (5.0.0, unmodified) and raw signed requests: a key
//! with the grant sends and receives (through a router in direct and in
//! proxy mode); a wrong secret, an unknown key, no key, an expired
//! `x-mq-date-time` and a topic the key has no grant for each get the
//! documented status (UNAUTHORIZED 40100 / FORBIDDEN 40300) with a message
//! naming what was wrong, and nothing is stored. The official Python and
//! Node.js clients with keys; the admin port with admin keys only.

use crate::json::Access as _;
use crate::nodejs_client::NodeJs;
use crate::python_client::Python;
use crate::script::{self, ScriptRun};
use crate::support::{CLIENT_CALL_TIMEOUT, LONG_POLLING, TAG, topic_count, within};
use anyhow::Context as _;
use hmac::{Hmac, Mac as _};
use meridian_tests::meridian_proto::rocketmq::v2::{
    Code, Message as ProtoMessage, QueryRouteRequest, Resource, SendMessageRequest,
    SystemProperties,
};
use meridian_tests::meridian_topology::RouterMode;
use meridian_tests::{TEST_TOPIC, TestCluster};
use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use rocketmq::{Producer, SimpleConsumer};
use sha1::Sha1;
use std::time::Duration;

/// A key that may send to and consume the test topic as groups `sec-*`.
const WRITER: (&str, &str) = ("orders-app", "orders-secret");
const WRITER_ALLOW: &str =
    r#"[{ actions = ["pub", "sub"], topics = ["demo"], groups = ["sec-*"] }]"#;
/// A key that may only consume the test topic.
const READER: (&str, &str) = ("reader", "reader-secret");
const READER_ALLOW: &str = r#"[{ actions = ["sub"], topics = ["demo"], groups = ["sec-*"] }]"#;

fn client_option(access_url: &str, key: Option<(&str, &str)>) -> ClientOption {
    let mut option = ClientOption::default();
    option.set_access_url(access_url);
    option.set_enable_tls(false);
    option.set_long_polling_timeout(LONG_POLLING);
    if let Some((access_key, secret_key)) = key {
        option.set_access_key(access_key);
        option.set_secret_key(secret_key);
    }
    option
}

async fn producer(access_url: &str, key: Option<(&str, &str)>) -> anyhow::Result<Producer> {
    let mut option = ProducerOption::default();
    option.set_topics(vec![TEST_TOPIC]);
    let mut producer = Producer::new(option, client_option(access_url, key))
        .map_err(|error| anyhow::anyhow!("create a producer: {error}"))?;
    within(CLIENT_CALL_TIMEOUT, "start the producer", producer.start())
        .await?
        .map_err(|error| anyhow::anyhow!("start the producer: {error}"))?;
    Ok(producer)
}

async fn consumer(
    access_url: &str,
    group: &str,
    key: Option<(&str, &str)>,
) -> anyhow::Result<SimpleConsumer> {
    let mut option = SimpleConsumerOption::default();
    option.set_topics(vec![TEST_TOPIC]);
    option.set_consumer_group(group);
    let mut consumer = SimpleConsumer::new(option, client_option(access_url, key))
        .map_err(|error| anyhow::anyhow!("create a consumer: {error}"))?;
    within(CLIENT_CALL_TIMEOUT, "start the consumer", consumer.start())
        .await?
        .map_err(|error| anyhow::anyhow!("start the consumer: {error}"))?;
    Ok(consumer)
}

async fn send(producer: &Producer, body: &str) -> anyhow::Result<String> {
    let message = MessageBuilder::builder()
        .set_topic(TEST_TOPIC)
        .set_tag(TAG)
        .set_body(body.as_bytes().to_vec())
        .build()
        .map_err(|error| anyhow::anyhow!("build a message: {error}"))?;
    let receipt = within(CLIENT_CALL_TIMEOUT, "send", producer.send(message))
        .await?
        .map_err(|error| anyhow::anyhow!("send: {error}"))?;
    Ok(receipt.message_id().to_owned())
}

/// Receives (and acknowledges) until a message with `body` arrives.
async fn receive_body(consumer: &SimpleConsumer, body: &str) -> anyhow::Result<()> {
    let filter = FilterExpression::new(FilterType::Tag, "*");
    within(Duration::from_secs(60), "receive the message", async {
        loop {
            let messages = within(
                LONG_POLLING + CLIENT_CALL_TIMEOUT,
                "receive",
                consumer.receive(TEST_TOPIC.to_owned(), &filter),
            )
            .await?
            .map_err(|error| anyhow::anyhow!("receive: {error}"))?;
            for message in messages {
                within(CLIENT_CALL_TIMEOUT, "ack", consumer.ack(&message))
                    .await?
                    .map_err(|error| anyhow::anyhow!("ack: {error}"))?;
                if message.body() == body.as_bytes() {
                    return anyhow::Ok(());
                }
            }
        }
    })
    .await?
}

/// Starts a consumer of `group` and receives once (what a grant for the
/// group's heartbeat or for the receive refuses).
async fn consume_once(
    access_url: &str,
    group: &str,
    key: Option<(&str, &str)>,
) -> anyhow::Result<()> {
    let consumer = consumer(access_url, group, key).await?;
    let filter = FilterExpression::new(FilterType::Tag, "*");
    let received = within(
        LONG_POLLING + CLIENT_CALL_TIMEOUT,
        "receive",
        consumer.receive(TEST_TOPIC.to_owned(), &filter),
    )
    .await?
    .map_err(|error| anyhow::anyhow!("receive: {error}"));
    let _ = within(Duration::from_secs(10), "shutdown", consumer.shutdown()).await;
    received.map(drop)
}

/// Shuts the clients down, each within 10 s (a failed shutdown is not what
/// these tests are about).
async fn shut_down<const P: usize, const C: usize>(
    producers: [Producer; P],
    consumers: [SimpleConsumer; C],
) {
    for producer in producers {
        let _ = within(Duration::from_secs(10), "shutdown", producer.shutdown()).await;
    }
    for consumer in consumers {
        let _ = within(Duration::from_secs(10), "shutdown", consumer.shutdown()).await;
    }
}

/// Asserts that `outcome` failed with `code` (its name, as the Rust client
/// reports it) and a message containing each of `expected`.
fn assert_refused<T>(
    outcome: anyhow::Result<T>,
    code: &str,
    expected: &[&str],
    what: &str,
) -> anyhow::Result<()> {
    let Err(error) = outcome else {
        anyhow::bail!("{what}: succeeded, expected {code}");
    };
    let text = format!("{error:#}");
    anyhow::ensure!(text.contains(code), "{what}: expected {code}, got: {text}");
    for part in expected {
        anyhow::ensure!(text.contains(part), "{what}: expected `{part}` in: {text}");
    }
    Ok(())
}

/// `authorization` and `x-mq-date-time` as the clients write them, signed
/// with `secret` over `date_time`.
fn signed<T>(message: T, access_key: &str, secret: &str, date_time: &str) -> tonic::Request<T> {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(date_time.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("x-mq-client-id", "security-test".parse().expect("ascii"));
    metadata.insert("x-mq-date-time", date_time.parse().expect("ascii"));
    metadata.insert(
        "authorization",
        format!(
            "MQv2-HMAC-SHA1 Credential={access_key}, SignedHeaders=x-mq-date-time, Signature={signature}"
        )
        .parse()
        .expect("ascii"),
    );
    request
}

/// `yyyyMMddTHHmmssZ` of the UTC time `offset` from now.
fn date_time(offset: time::Duration) -> String {
    let at = time::OffsetDateTime::now_utc() + offset;
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

fn topic() -> Option<Resource> {
    Some(Resource {
        resource_namespace: String::new(),
        name: TEST_TOPIC.to_owned(),
    })
}

/// Through region a's router (direct mode: the client then talks to the
/// node itself): the writer sends and a consumer receives; every wrong
/// credential and a denied action is refused with its status and reason,
/// and nothing of theirs is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_rust_client_with_keys_and_grants() -> anyhow::Result<()> {
    let cluster = TestCluster::builder()
        .regions(1)
        .access_key_allowing(WRITER.0, WRITER.1, WRITER_ALLOW)
        .access_key_allowing(READER.0, READER.1, READER_ALLOW)
        .build()
        .await?;
    let router = cluster.router_endpoint("a");

    let writer = producer(&router, Some(WRITER)).await?;
    send(&writer, "with the right key").await?;
    let reader = consumer(&router, "sec-readers", Some(READER)).await?;
    receive_body(&reader, "with the right key").await?;
    let stored = topic_count(&cluster, "a").await?;
    anyhow::ensure!(stored == 1, "{stored} messages stored, expected 1");

    assert_refused(
        producer(&router, Some((WRITER.0, "not-the-secret"))).await,
        "UNAUTHORIZED",
        &["the signature does not match access key `orders-app`"],
        "a wrong secret",
    )?;
    assert_refused(
        producer(&router, Some(("nobody", "whatever"))).await,
        "UNAUTHORIZED",
        &["access key `nobody` is unknown"],
        "an unknown key",
    )?;
    assert_refused(
        producer(&router, None).await,
        "UNAUTHORIZED",
        &["requires an access key"],
        "no key",
    )?;
    // The reader may see the topic's route, so its producer starts; its
    // sends are refused.
    let reader_producer = producer(&router, Some(READER)).await?;
    assert_refused(
        send(&reader_producer, "from a reader").await,
        "FORBIDDEN",
        &["access key `reader` is not granted `pub` on topic `demo`"],
        "a send without `pub`",
    )?;
    assert_refused(
        consume_once(&router, "other-group", Some(READER)).await,
        "FORBIDDEN",
        &[
            "access key `reader` is not granted `sub`",
            "consumer group `other-group`",
        ],
        "a consumer group outside the grant",
    )?;

    // Raw requests to the node: an expired date, and a send the writer
    // signs for a day ago.
    let node = cluster.node_endpoint("a");
    let mut client = TestCluster::messaging_client(&node).await?;
    let stale = date_time(-time::Duration::hours(1));
    let route = client
        .query_route(signed(
            QueryRouteRequest {
                topic: topic(),
                endpoints: None,
            },
            WRITER.0,
            WRITER.1,
            &stale,
        ))
        .await
        .context("QueryRoute")?
        .into_inner();
    let status = route.status.context("a status")?;
    anyhow::ensure!(
        status.code == Code::Unauthorized as i32
            && status.message.contains("away from the server's clock"),
        "an expired date: {status:?}"
    );
    let message = ProtoMessage {
        topic: topic(),
        system_properties: Some(SystemProperties {
            message_id: "0000000000000000000000000000E1".to_owned(),
            tag: Some(TAG.to_owned()),
            ..SystemProperties::default()
        }),
        body: b"signed a day ago".to_vec(),
        ..ProtoMessage::default()
    };
    let sent = client
        .send_message(signed(
            SendMessageRequest {
                messages: vec![message],
            },
            WRITER.0,
            WRITER.1,
            &date_time(-time::Duration::days(1)),
        ))
        .await
        .context("SendMessage")?
        .into_inner();
    let status = sent.status.context("a status")?;
    anyhow::ensure!(
        status.code == Code::Unauthorized as i32,
        "a send signed a day ago: {status:?}"
    );
    let stored = topic_count(&cluster, "a").await?;
    anyhow::ensure!(
        stored == 1,
        "{stored} messages stored after the refused sends, expected still 1"
    );
    shut_down([writer, reader_producer], [reader]).await;
    Ok(())
}

/// In proxy mode the router carries every call to the node, signing it
/// afresh for the caller's key: the node checks the same key and grants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxying_router_carries_the_caller_s_key() -> anyhow::Result<()> {
    let cluster = TestCluster::builder()
        .regions(2)
        .router_mode(RouterMode::Proxy)
        .access_key_allowing(WRITER.0, WRITER.1, WRITER_ALLOW)
        .access_key_allowing(READER.0, READER.1, READER_ALLOW)
        .build()
        .await?;
    let router = cluster.router_endpoint("b");
    let writer = producer(&router, Some(WRITER)).await?;
    send(&writer, "through the proxy").await?;
    let reader = consumer(&router, "sec-proxy", Some(READER)).await?;
    receive_body(&reader, "through the proxy").await?;
    let reader_producer = producer(&router, Some(READER)).await?;
    assert_refused(
        send(&reader_producer, "from a reader").await,
        "FORBIDDEN",
        &["access key `reader` is not granted `pub` on topic `demo`"],
        "a send without `pub` through the proxy",
    )?;
    shut_down([writer, reader_producer], [reader]).await;
    Ok(())
}

/// The admin port answers keys granted `admin` only: `meridian admin` with
/// the topology's internal key works, with a key without the grant (or
/// none) it is refused naming the key; the JSON admin API likewise over
/// HTTP Basic; the deployment's own processes (routers, replicators) keep
/// working, which the cluster's readiness already shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_takes_admin_keys_only() -> anyhow::Result<()> {
    let cluster = TestCluster::builder()
        .regions(1)
        .access_key_allowing(WRITER.0, WRITER.1, WRITER_ALLOW)
        .build()
        .await?;
    let topology = cluster.topology_path().display().to_string();
    let list = ["admin", "--topology", &topology, "topics", "list"];
    let output = cluster.run_meridian(list, Duration::from_secs(30)).await?;
    anyhow::ensure!(
        output.code() == Some(0) && output.stdout.contains(TEST_TOPIC),
        "meridian admin with the internal key: {output:?}"
    );
    let mut as_writer = list.to_vec();
    as_writer.extend([
        "--access-key",
        WRITER.0,
        "--secret-key-env",
        "SECURITY_TEST_SECRET",
    ]);
    let output = cluster
        .run_meridian_with_env(
            &as_writer,
            &[("SECURITY_TEST_SECRET", WRITER.1)],
            Duration::from_secs(30),
        )
        .await?;
    anyhow::ensure!(
        output.code() != Some(0)
            && output
                .stderr
                .contains("access key `orders-app` is not granted `admin`"),
        "meridian admin with a key without `admin`: {output:?}"
    );
    let output = cluster
        .run_meridian_with_env(
            &as_writer,
            &[("SECURITY_TEST_SECRET", "wrong")],
            Duration::from_secs(30),
        )
        .await?;
    anyhow::ensure!(
        output.code() != Some(0) && output.stderr.contains("does not match access key"),
        "meridian admin with a wrong secret: {output:?}"
    );

    // The JSON admin API on the same port, over HTTP/1.1 with Basic.
    let admin = cluster.admin_endpoint("a");
    let anonymous = http_get(&admin, "/v1/topics", None).await?;
    anyhow::ensure!(
        anonymous.starts_with("HTTP/1.1 401") && anonymous.contains("www-authenticate: Basic"),
        "JSON admin API without credentials: {anonymous}"
    );
    let writer = http_get(&admin, "/v1/topics", Some(WRITER)).await?;
    anyhow::ensure!(
        writer.starts_with("HTTP/1.1 403") && writer.contains("is not granted `admin`"),
        "JSON admin API as a key without `admin`: {writer}"
    );
    let document = http_get(&admin, "/openapi.json", None).await?;
    anyhow::ensure!(
        document.starts_with("HTTP/1.1 200"),
        "the OpenAPI document is public: {document}"
    );
    Ok(())
}

/// One HTTP/1.1 GET of `path` on `address`, with Basic credentials: the
/// whole answer as text (lower-case header names as hyper writes them).
async fn http_get(address: &str, path: &str, key: Option<(&str, &str)>) -> anyhow::Result<String> {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n");
    if let Some((id, secret)) = key {
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        request.push_str(&format!("authorization: Basic {credentials}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    within(
        CLIENT_CALL_TIMEOUT,
        "the HTTP answer",
        stream.read_to_end(&mut answer),
    )
    .await??;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// `args` with the key's `--access-key` / `--secret-key`.
fn keyed(mut args: Vec<String>, key: (&str, &str)) -> Vec<String> {
    args.extend(script::args(["--access-key", key.0, "--secret-key", key.1]));
    args
}

/// Asserts that a script run failed (`"ok": false`) with an error naming
/// each of `expected`.
fn assert_script_refused(run: &ScriptRun, expected: &[&str], what: &str) -> anyhow::Result<()> {
    run.check(|output| {
        anyhow::ensure!(!output.field("ok")?.bool()?, "{what}: the script succeeded");
        let error = output.field("error")?.str()?;
        for part in expected {
            anyhow::ensure!(error.contains(part), "{what}: `{part}` not in: {error}");
        }
        Ok(())
    })
}

/// The official Python (5.1.2) and Node.js (1.0.8) clients with access
/// keys: the writer's messages reach the reader, in both directions; a
/// send without `pub` is FORBIDDEN and a wrong secret UNAUTHORIZED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_and_nodejs_clients_with_keys() -> anyhow::Result<()> {
    let python = Python::from_env()?;
    let modules = NodeJs::from_env()?;
    let cluster = TestCluster::builder()
        .regions(1)
        .access_key_allowing(WRITER.0, WRITER.1, WRITER_ALLOW)
        .access_key_allowing(READER.0, READER.1, READER_ALLOW)
        .build()
        .await?;
    let python = Python::for_cluster(python, &cluster)?;
    let node = NodeJs::for_cluster(modules, &cluster)?;
    let router = cluster.router_endpoint("a");
    let produce = |tag: &str| {
        script::args([
            "--endpoints",
            &router,
            "--topic",
            TEST_TOPIC,
            "--tag",
            tag,
            "--sizes",
            "64",
        ])
    };
    let consume = |group: &str, tag: &str| {
        script::args([
            "--endpoints",
            &router,
            "--topic",
            TEST_TOPIC,
            "--group",
            group,
            "--filter",
            tag,
            "--expect",
            "1",
        ])
    };

    // Python sends, Node.js receives; then the other way round.
    python
        .run("produce.py", &keyed(produce("py"), WRITER))
        .await?
        .succeeded(|_| Ok(()))?;
    node.run("consume.js", &keyed(consume("sec-node", "py"), READER))
        .await?
        .succeeded(|_| Ok(()))?;
    node.run("produce.js", &keyed(produce("js"), WRITER))
        .await?
        .succeeded(|_| Ok(()))?;
    python
        .run("consume.py", &keyed(consume("sec-python", "js"), READER))
        .await?
        .succeeded(|_| Ok(()))?;
    let stored = topic_count(&cluster, "a").await?;
    anyhow::ensure!(stored == 2, "{stored} messages stored, expected 2");

    let run = python
        .run("produce.py", &keyed(produce("py"), READER))
        .await?;
    assert_script_refused(
        &run,
        &["40300", "access key `reader` is not granted `pub`"],
        "Python, no `pub`",
    )?;
    let run = node
        .run("produce.js", &keyed(produce("js"), READER))
        .await?;
    assert_script_refused(
        &run,
        &["40300", "access key `reader` is not granted `pub`"],
        "Node.js, no `pub`",
    )?;
    let run = python
        .run("produce.py", &keyed(produce("py"), (WRITER.0, "wrong")))
        .await?;
    assert_script_refused(
        &run,
        &["40100", "does not match access key `orders-app`"],
        "Python, wrong secret",
    )?;
    let run = node
        .run("produce.js", &keyed(produce("js"), (WRITER.0, "wrong")))
        .await?;
    assert_script_refused(
        &run,
        &["40100", "does not match access key `orders-app`"],
        "Node.js, wrong secret",
    )?;
    let stored = topic_count(&cluster, "a").await?;
    anyhow::ensure!(
        stored == 2,
        "{stored} messages stored after the refused sends, expected 2"
    );
    Ok(())
}
