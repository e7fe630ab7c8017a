//! Sends messages through one region's router with the official RocketMQ Rust
//! client (5.0.0, unmodified) and receives them through another region's router.
//!
//! With `meridian up` (the built-in demo) running, and the binary built by
//! `./scripts/up.sh` (`source scripts/env.sh` sets `CARGO_TARGET_DIR`):
//!
//! ```sh
//! "$CARGO_TARGET_DIR/debug/examples/demo_round_trip"
//! "$CARGO_TARGET_DIR/debug/examples/demo_round_trip" 127.0.0.1:8081 127.0.0.1:8281 100
//! ```
//!
//! Arguments: send-via (default 127.0.0.1:8081, eu-west), receive-via (default
//! 127.0.0.1:8181, us-east), count (default 10); `--topic NAME` (default
//! `demo`); `--tls` to connect with TLS (the client trusts the OS roots, or
//! the PEM file `SSL_CERT_FILE` names: `SSL_CERT_FILE=certs/ca.pem` for a
//! deployment with `[client_tls]` and `meridian certs`). Each run tags its
//! messages uniquely and consumes with that tag in its own group, so earlier
//! runs' messages are left alone. Exits non-zero unless every message sent
//! arrives exactly once within 60 s.

use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use rocketmq::{Producer, SimpleConsumer};
use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DEFAULT_TOPIC: &str = "demo";

fn client_option(access_url: &str, tls: bool) -> ClientOption {
    let mut option = ClientOption::default();
    option.set_access_url(access_url);
    option.set_enable_tls(tls);
    option.set_long_polling_timeout(Duration::from_secs(5));
    option
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|arg| arg == "--help" || arg == "-h") {
        println!(
            "usage: demo_round_trip [--tls] [--topic NAME] [SEND_VIA [RECEIVE_VIA [COUNT]]]\n  \
             SEND_VIA: router to send through (default 127.0.0.1:8081, eu-west)\n  \
             RECEIVE_VIA: router to receive through (default 127.0.0.1:8181, us-east)\n  \
             COUNT: messages (default 10); exits 1 unless every one arrives once\n  \
             --topic NAME: topic (default demo); --tls: connect with TLS (roots: OS, or SSL_CERT_FILE)"
        );
        return Ok(());
    }
    let mut tls = false;
    let mut topic = DEFAULT_TOPIC.to_owned();
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
            _ => positional.push(arg),
        }
    }
    let mut args = positional.into_iter();
    let send_via = args.next().unwrap_or_else(|| "127.0.0.1:8081".to_owned());
    let receive_via = args.next().unwrap_or_else(|| "127.0.0.1:8181".to_owned());
    let count: usize = args.next().map_or(Ok(10), |text| text.parse())?;
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let tag = format!("run-{run}");

    let mut producer_option = ProducerOption::default();
    producer_option.set_topics(vec![topic.clone()]);
    let mut producer = Producer::new(producer_option, client_option(&send_via, tls))
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
    consumer_option.set_consumer_group(format!("demo-round-trip-{run}"));
    let mut consumer = SimpleConsumer::new(consumer_option, client_option(&receive_via, tls))
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
