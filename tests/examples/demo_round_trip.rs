//! Sends messages through one region's router with the official RocketMQ Rust
//! client (5.0.0, unmodified) and receives them through another region's router.
//!
//! With `meridian up` (the built-in demo) running, and the binary built by
//! `./scripts/up.sh` (or `cargo build -p meridian-tests --examples`;
//! `source scripts/env.sh` sets `CARGO_TARGET_DIR`):
//!
//! ```sh
//! "$CARGO_TARGET_DIR/debug/examples/demo_round_trip"
//! "$CARGO_TARGET_DIR/debug/examples/demo_round_trip" 127.0.0.1:8081 127.0.0.1:8281 100
//! ```
//!
//! Against `topology/examples/secured.toml` (access keys; routers on 9301
//! and 9401), from the clone's root:
//!
//! ```sh
//! MQ_SECRET_KEY=orders-app-secret "$CARGO_TARGET_DIR/debug/examples/demo_round_trip" \
//!   --access-key orders-app --topic orders --group billing 127.0.0.1:9301 127.0.0.1:9401
//! ```
//!
//! and, with its `[client_tls]` uncommented after `meridian certs --topology
//! topology/examples/secured.toml`, the same with `--tls` and
//! `SSL_CERT_FILE=topology/examples/certs/ca.pem`.
//!
//! Arguments: send-via (default 127.0.0.1:8081, eu-west), receive-via (default
//! 127.0.0.1:8181, us-east), count (default 10); `--topic NAME` (default
//! `demo`); `--group PREFIX`: the consumer group is `PREFIX-<run>` (default
//! `demo-round-trip`; a key's `sub` grant must match it); `--access-key ID`
//! to sign every call with access key ID (or the environment variable
//! `MQ_ACCESS_KEY`), whose secret is read from the environment variable
//! `MQ_SECRET_KEY` (an error when it is not set); `--tls` to connect with TLS
//! (the client trusts the OS roots, or the PEM file `SSL_CERT_FILE` names:
//! the deployment's CA, `certs/ca.pem` next to the topology file after
//! `meridian certs`). Each run tags its messages uniquely and consumes with
//! that tag in its own group, so earlier runs' messages are left alone.
//! Exits non-zero unless every message sent arrives exactly once within 60 s.

use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use rocketmq::{Producer, SimpleConsumer};
use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DEFAULT_TOPIC: &str = "demo";
const DEFAULT_GROUP: &str = "demo-round-trip";
/// Where the access key id may come from instead of `--access-key`.
const ACCESS_KEY_VARIABLE: &str = "MQ_ACCESS_KEY";
/// Where the access key's secret comes from (never the command line).
const SECRET_KEY_VARIABLE: &str = "MQ_SECRET_KEY";

const USAGE: &str = "usage: demo_round_trip [--tls] [--topic NAME] [--group PREFIX] [--access-key ID]\n       \
                     [SEND_VIA [RECEIVE_VIA [COUNT]]]\n  \
     SEND_VIA: router to send through (default 127.0.0.1:8081, eu-west)\n  \
     RECEIVE_VIA: router to receive through (default 127.0.0.1:8181, us-east)\n  \
     COUNT: messages (default 10); exits 1 unless every one arrives once\n  \
     --topic NAME: topic (default demo)\n  \
     --group PREFIX: consumer group PREFIX-<run> (default demo-round-trip)\n  \
     --access-key ID: sign with access key ID (default: $MQ_ACCESS_KEY, else unsigned);\n    \
     its secret is read from the environment variable MQ_SECRET_KEY\n  \
     --tls: connect with TLS (roots: OS, or the PEM file SSL_CERT_FILE names)\n\
     example (topology/examples/secured.toml, from the clone's root):\n  \
     MQ_SECRET_KEY=orders-app-secret demo_round_trip --access-key orders-app \\\n    \
     --topic orders --group billing 127.0.0.1:9301 127.0.0.1:9401";

fn client_option(access_url: &str, tls: bool, key: Option<&(String, String)>) -> ClientOption {
    let mut option = ClientOption::default();
    option.set_access_url(access_url);
    option.set_enable_tls(tls);
    option.set_long_polling_timeout(Duration::from_secs(5));
    if let Some((access_key, secret_key)) = key {
        option.set_access_key(access_key.as_str());
        option.set_secret_key(secret_key.as_str());
    }
    option
}

/// The access key id (`--access-key`, else `MQ_ACCESS_KEY`) and its secret
/// (`MQ_SECRET_KEY`), or `None` to send unsigned calls.
fn access_key(from_arguments: Option<String>) -> anyhow::Result<Option<(String, String)>> {
    let variable = |name: &str| match std::env::var(name) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(anyhow::anyhow!("{name} is not UTF-8 text")),
    };
    let Some(access_key) =
        from_arguments.map_or_else(|| variable(ACCESS_KEY_VARIABLE), |id| Ok(Some(id)))?
    else {
        return Ok(None);
    };
    let Some(secret_key) = variable(SECRET_KEY_VARIABLE)? else {
        anyhow::bail!(
            "access key {access_key} given, but the environment variable {SECRET_KEY_VARIABLE} \
             holding its secret is not set (e.g. {SECRET_KEY_VARIABLE}=… demo_round_trip \
             --access-key {access_key} …)"
        );
    };
    Ok(Some((access_key, secret_key)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|arg| arg == "--help" || arg == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let mut tls = false;
    let mut topic = DEFAULT_TOPIC.to_owned();
    let mut group = DEFAULT_GROUP.to_owned();
    let mut access_key_id = None;
    let mut positional = Vec::new();
    let mut all = std::env::args().skip(1);
    while let Some(arg) = all.next() {
        match arg.as_str() {
            "--tls" => tls = true,
            "--topic" => {
                topic = all
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--topic takes a topic name"))?;
            }
            "--group" => {
                group = all
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--group takes a group name prefix"))?;
            }
            "--access-key" => {
                access_key_id = Some(
                    all.next()
                        .ok_or_else(|| anyhow::anyhow!("--access-key takes an access key id"))?,
                );
            }
            flag if flag.starts_with("--") => {
                anyhow::bail!("unknown option {flag}\n{USAGE}");
            }
            _ => positional.push(arg),
        }
    }
    let key = access_key(access_key_id)?;
    let mut args = positional.into_iter();
    let send_via = args.next().unwrap_or_else(|| "127.0.0.1:8081".to_owned());
    let receive_via = args.next().unwrap_or_else(|| "127.0.0.1:8181".to_owned());
    let count: usize = args.next().map_or(Ok(10), |text| text.parse())?;
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let tag = format!("run-{run}");

    let mut producer_option = ProducerOption::default();
    producer_option.set_topics(vec![topic.clone()]);
    let mut producer = Producer::new(producer_option, client_option(&send_via, tls, key.as_ref()))
        .map_err(|error| anyhow::anyhow!("create producer: {error:?}"))?;
    producer
        .start()
        .await
        .map_err(|error| anyhow::anyhow!("start producer via {send_via}: {error:?}"))?;

    let mut sent = HashSet::new();
    for index in 0..count {
        let message = MessageBuilder::builder()
            .set_topic(topic.clone())
            .set_tag(tag.clone())
            .set_body(format!("demo message {index} of {tag}").into_bytes())
            .build()
            .map_err(|error| anyhow::anyhow!("build message: {error:?}"))?;
        let receipt = producer
            .send(message)
            .await
            .map_err(|error| anyhow::anyhow!("send: {error:?}"))?;
        sent.insert(receipt.message_id().to_owned());
    }
    println!("sent {count} messages via {send_via} (tag {tag})");

    let mut consumer_option = SimpleConsumerOption::default();
    consumer_option.set_topics(vec![topic.clone()]);
    consumer_option.set_consumer_group(format!("{group}-{run}"));
    let mut consumer = SimpleConsumer::new(
        consumer_option,
        client_option(&receive_via, tls, key.as_ref()),
    )
    .map_err(|error| anyhow::anyhow!("create consumer: {error:?}"))?;
    consumer
        .start()
        .await
        .map_err(|error| anyhow::anyhow!("start consumer via {receive_via}: {error:?}"))?;

    let filter = FilterExpression::new(FilterType::Tag, tag.as_str());
    let mut received = HashSet::new();
    let started = Instant::now();
    while received.len() < sent.len() && started.elapsed() < Duration::from_secs(60) {
        let messages = consumer
            .receive(topic.clone(), &filter)
            .await
            .map_err(|error| anyhow::anyhow!("receive: {error:?}"))?;
        for message in messages {
            consumer
                .ack(&message)
                .await
                .map_err(|error| anyhow::anyhow!("ack: {error:?}"))?;
            if !received.insert(message.message_id().to_owned()) {
                anyhow::bail!("message {} was delivered twice", message.message_id());
            }
        }
    }
    let missing = sent.difference(&received).count();
    println!(
        "received {} of {count} via {receive_via} in {:.1} s; {missing} missing",
        received.len(),
        started.elapsed().as_secs_f64()
    );
    let _ = consumer.shutdown().await;
    let _ = producer.shutdown().await;
    if missing > 0 || received.len() != sent.len() {
        anyhow::bail!("{missing} messages did not arrive");
    }
    Ok(())
}
