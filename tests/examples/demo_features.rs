//! Delay messages, ordered (FIFO) consumption, dead letters, broadcast
//! consumption, SQL92 filters and the largest bodies, with the official
//! RocketMQ Rust client (5.0.0, unmodified) against the built-in demo
//! (`meridian up`), whose topology configures the consumer groups
//! `demo-fifo` (`fifo = true`), `demo-retry` (`max_attempts = 2`) and
//! `demo-broadcast` (`broadcast = true`).
//!
//! ```sh
//! "$CARGO_TARGET_DIR/debug/examples/demo_features"              # via 127.0.0.1:8081
//! "$CARGO_TARGET_DIR/debug/examples/demo_features" 127.0.0.1:8181
//! ```
//!
//! 1. A delay message due in 3 s is hidden until then and arrives within a
//!    second of its delivery time.
//! 2. Two message groups, sent interleaved as FIFO messages, are consumed by
//!    `demo-fifo` in order per group; the first message of group `b` is
//!    left unacknowledged once, and nothing later of `b` comes before it
//!    comes again.
//! 3. A message `demo-retry` receives twice without acknowledging moves to
//!    `%DLQ%demo-retry`, where another group reads it.
//! 4. Two consumer instances of `demo-broadcast` each get the same message.
//! 5. A consumer whose SQL92 filter says `amount > 10` gets 2 of 3 messages.
//! 6. A body of exactly 4 MiB is taken and one byte more is refused with
//!    MESSAGE_BODY_TOO_LARGE; a body of 4 MiB less 1 KiB (the most the Rust
//!    client can receive: its inbound limit is 4 MiB for the whole delivery)
//!    comes back intact.
//! 7. Three transactional (half) messages: the committed one is delivered,
//!    the rolled-back one never, and the one left open is checked back by
//!    the node (after the topic's 6 s) through the producer's checker, which
//!    commits it.
//!
//! Each run tags each step's messages uniquely and filters on that tag, so
//! other steps' and earlier runs' messages are left alone. Exits non-zero if a step fails (60 s each).

use anyhow::Context as _;
use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::{MessageBuilder, MessageView};
use rocketmq::model::transaction::{Transaction, TransactionResolution};
use rocketmq::{Producer, SimpleConsumer};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TOPIC: &str = "demo";
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

fn client_option(access_url: &str) -> ClientOption {
    let mut option = ClientOption::default();
    option.set_access_url(access_url);
    option.set_enable_tls(false);
    option.set_long_polling_timeout(Duration::from_secs(5));
    option
}

fn wall_ms() -> anyhow::Result<i64> {
    Ok(i64::try_from(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis(),
    )?)
}

async fn consumer(access_url: &str, group: &str, topic: &str) -> anyhow::Result<SimpleConsumer> {
    let mut option = SimpleConsumerOption::default();
    option.set_topics(vec![topic]);
    option.set_consumer_group(group);
    let mut consumer = SimpleConsumer::new(option, client_option(access_url))
        .map_err(|error| anyhow::anyhow!("create consumer: {error:?}"))?;
    consumer
        .start()
        .await
        .map_err(|error| anyhow::anyhow!("start consumer {group}: {error:?}"))?;
    Ok(consumer)
}

async fn receive(
    consumer: &SimpleConsumer,
    topic: &str,
    tag: &str,
    invisible: Duration,
) -> anyhow::Result<Vec<MessageView>> {
    let filter = FilterExpression::new(FilterType::Tag, tag);
    consumer
        .receive_with(topic, &filter, 16, invisible)
        .await
        .map_err(|error| anyhow::anyhow!("receive from {topic}: {error:?}"))
}

async fn ack(consumer: &SimpleConsumer, message: &MessageView) -> anyhow::Result<()> {
    consumer
        .ack(message)
        .await
        .map_err(|error| anyhow::anyhow!("ack: {error:?}"))
}

async fn send(producer: &Producer, builder: MessageBuilder) -> anyhow::Result<String> {
    let message = builder
        .build()
        .map_err(|error| anyhow::anyhow!("build a message: {error:?}"))?;
    let receipt = producer
        .send(message)
        .await
        .map_err(|error| anyhow::anyhow!("send: {error:?}"))?;
    Ok(receipt.message_id().to_owned())
}

async fn delay_step(access_url: &str, producer: &Producer, tag: &str) -> anyhow::Result<()> {
    let due_s = wall_ms()? / 1000 + 3;
    let id = send(
        producer,
        MessageBuilder::delay_message_builder(TOPIC, b"on time".to_vec(), due_s).set_tag(tag),
    )
    .await?;
    let consumer = consumer(access_url, &format!("demo-delay-{tag}"), TOPIC).await?;
    let started = Instant::now();
    loop {
        anyhow::ensure!(
            started.elapsed() < STEP_TIMEOUT,
            "the delay message did not arrive"
        );
        let messages = receive(&consumer, TOPIC, tag, Duration::from_secs(30)).await?;
        let arrived = wall_ms()?;
        if let Some(message) = messages.iter().find(|message| message.message_id() == id) {
            ack(&consumer, message).await?;
            let late = arrived - due_s * 1000;
            anyhow::ensure!(late >= 0, "delivered {} ms early", -late);
            println!("delay: due in 3 s, delivered {late} ms after its delivery time");
            break;
        }
    }
    let _ = consumer.shutdown().await;
    Ok(())
}

async fn fifo_step(access_url: &str, producer: &Producer, tag: &str) -> anyhow::Result<()> {
    for index in 0..5 {
        for group in ["a", "b"] {
            let body = format!("{group}{index}").into_bytes();
            send(
                producer,
                MessageBuilder::fifo_message_builder(TOPIC, body, group).set_tag(tag),
            )
            .await?;
        }
    }
    let consumer = consumer(access_url, "demo-fifo", TOPIC).await?;
    let mut order: Vec<String> = Vec::new();
    let mut failed_once = false;
    let started = Instant::now();
    while order.len() < 10 {
        anyhow::ensure!(started.elapsed() < STEP_TIMEOUT, "FIFO: got only {order:?}");
        // Set when b0 fails in this receive: the rest of group b in it is
        // left alone too, as a FIFO consumer stops a group at a failure.
        let mut group_b_failed = false;
        for message in receive(&consumer, TOPIC, tag, Duration::from_secs(2)).await? {
            let body = String::from_utf8(message.body().to_vec())?;
            if body == "b0" && !failed_once {
                // Not acknowledged: b0 comes again after 2 s, before b1.
                failed_once = true;
                group_b_failed = true;
                continue;
            }
            if group_b_failed && message.message_group() == Some("b") {
                continue;
            }
            if message.message_group() == Some("b") && !failed_once {
                anyhow::bail!("FIFO: {body} came before b0");
            }
            if order.contains(&body) {
                continue;
            }
            ack(&consumer, &message).await?;
            order.push(body);
        }
    }
    for group in ["a", "b"] {
        let of_group: Vec<&str> = order
            .iter()
            .filter(|body| body.starts_with(group))
            .map(String::as_str)
            .collect();
        let expected: Vec<String> = (0..5).map(|index| format!("{group}{index}")).collect();
        anyhow::ensure!(
            of_group == expected,
            "FIFO: group {group} came as {of_group:?}"
        );
    }
    println!(
        "fifo: groups a and b each in order ({}), b0 redelivered first",
        order.join(" ")
    );
    let _ = consumer.shutdown().await;
    Ok(())
}

async fn dead_letter_step(access_url: &str, producer: &Producer, tag: &str) -> anyhow::Result<()> {
    let id = send(
        producer,
        MessageBuilder::builder()
            .set_topic(TOPIC)
            .set_tag(tag)
            .set_body(b"poison".to_vec()),
    )
    .await?;
    let retrying = consumer(access_url, "demo-retry", TOPIC).await?;
    let dead_letters = "%DLQ%demo-retry";
    let reader = consumer(access_url, &format!("demo-dlq-{tag}"), dead_letters).await?;
    let started = Instant::now();
    let mut deliveries = 0;
    loop {
        anyhow::ensure!(started.elapsed() < STEP_TIMEOUT, "no dead letter arrived");
        // Each receive of demo-retry may deliver it again (1 s invisible,
        // never acknowledged) or, after the second delivery, move it.
        for message in receive(&retrying, TOPIC, tag, Duration::from_secs(1)).await? {
            if message.message_id() == id {
                deliveries += 1;
            }
        }
        let found = receive(&reader, dead_letters, tag, Duration::from_secs(30)).await?;
        if let Some(message) = found.iter().find(|message| message.message_id() == id) {
            ack(&reader, message).await?;
            let origin = message
                .properties()
                .get("DLQ_ORIGIN_TOPIC")
                .context("DLQ_ORIGIN_TOPIC")?;
            println!(
                "dead letter: delivered {deliveries} times to demo-retry, then read from \
                 {dead_letters} (DLQ_ORIGIN_TOPIC={origin})"
            );
            break;
        }
    }
    let _ = retrying.shutdown().await;
    let _ = reader.shutdown().await;
    Ok(())
}

async fn broadcast_step(access_url: &str, producer: &Producer, tag: &str) -> anyhow::Result<()> {
    let id = send(
        producer,
        MessageBuilder::builder()
            .set_topic(TOPIC)
            .set_tag(tag)
            .set_body(b"for everyone".to_vec()),
    )
    .await?;
    // Two clients: two client ids, two instances of the broadcast group.
    let instances = [
        consumer(access_url, "demo-broadcast", TOPIC).await?,
        consumer(access_url, "demo-broadcast", TOPIC).await?,
    ];
    for (index, instance) in instances.iter().enumerate() {
        let started = Instant::now();
        loop {
            anyhow::ensure!(
                started.elapsed() < STEP_TIMEOUT,
                "instance {index} did not get the message"
            );
            let messages = receive(instance, TOPIC, tag, Duration::from_secs(30)).await?;
            if let Some(message) = messages.iter().find(|message| message.message_id() == id) {
                ack(instance, message).await?;
                break;
            }
        }
    }
    println!("broadcast: both instances of demo-broadcast got message {id}");
    for instance in instances {
        let _ = instance.shutdown().await;
    }
    Ok(())
}

async fn sql_step(access_url: &str, producer: &Producer, tag: &str) -> anyhow::Result<()> {
    for amount in [5, 50, 500] {
        send(
            producer,
            MessageBuilder::builder()
                .set_topic(TOPIC)
                .set_tag(tag)
                .set_body(format!("amount {amount}").into_bytes())
                .set_properties(std::collections::HashMap::from([(
                    "amount",
                    amount.to_string(),
                )])),
        )
        .await?;
    }
    let consumer = consumer(access_url, &format!("demo-sql-{tag}"), TOPIC).await?;
    let filter = FilterExpression::new(FilterType::Sql, format!("amount > 10 AND TAGS = '{tag}'"));
    let mut bodies = Vec::new();
    let started = Instant::now();
    while bodies.len() < 2 {
        anyhow::ensure!(started.elapsed() < STEP_TIMEOUT, "got only {bodies:?}");
        let messages = consumer
            .receive_with(TOPIC, &filter, 16, Duration::from_secs(30))
            .await
            .map_err(|error| anyhow::anyhow!("receive: {error:?}"))?;
        for message in messages {
            bodies.push(String::from_utf8_lossy(message.body()).into_owned());
            ack(&consumer, &message).await?;
        }
    }
    bodies.sort();
    anyhow::ensure!(bodies == ["amount 50", "amount 500"], "got {bodies:?}");
    println!("sql92: `amount > 10` selected {bodies:?} of amounts 5, 50, 500");
    let _ = consumer.shutdown().await;
    Ok(())
}

async fn large_step(access_url: &str, producer: &Producer, tag: &str) -> anyhow::Result<()> {
    const MAX_BODY: usize = 4 * 1024 * 1024;
    let message = |len: usize| {
        MessageBuilder::builder()
            .set_topic(TOPIC)
            .set_tag(format!("{tag}-{len}"))
            .set_body(vec![b'm'; len])
    };
    send(producer, message(MAX_BODY)).await?;
    let refused = send(producer, message(MAX_BODY + 1)).await;
    anyhow::ensure!(refused.is_err(), "a body of 4 MiB + 1 byte was taken");
    let largest = MAX_BODY - 1024;
    let id = send(producer, message(largest)).await?;
    let consumer = consumer(access_url, &format!("demo-large-{tag}"), TOPIC).await?;
    let started = Instant::now();
    loop {
        anyhow::ensure!(
            started.elapsed() < STEP_TIMEOUT,
            "the large message did not arrive"
        );
        let messages = receive(
            &consumer,
            TOPIC,
            &format!("{tag}-{largest}"),
            Duration::from_secs(30),
        )
        .await?;
        if let Some(message) = messages.iter().find(|message| message.message_id() == id) {
            anyhow::ensure!(message.body().len() == largest, "the body changed");
            ack(&consumer, message).await?;
            break;
        }
    }
    println!(
        "large bodies: {MAX_BODY} bytes taken, {} refused, {largest} received intact",
        MAX_BODY + 1
    );
    let _ = consumer.shutdown().await;
    Ok(())
}

async fn transaction_step(access_url: &str, tag: &str) -> anyhow::Result<()> {
    let mut option = ProducerOption::default();
    option.set_topics(vec![TOPIC]);
    // The checker the node asks about open transactions: it commits the
    // bodies that say so.
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&asked);
    let checker = Box::new(move |_transaction_id: String, message: MessageView| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if message.body().starts_with(b"commit") {
            TransactionResolution::COMMIT
        } else {
            TransactionResolution::ROLLBACK
        }
    });
    let mut producer =
        Producer::new_transaction_producer(option, client_option(access_url), checker)
            .map_err(|error| anyhow::anyhow!("create a transaction producer: {error:?}"))?;
    producer
        .start()
        .await
        .map_err(|error| anyhow::anyhow!("start a transaction producer: {error:?}"))?;
    let half = |body: &str| {
        MessageBuilder::transaction_message_builder(TOPIC, body.as_bytes().to_vec())
            .set_tag(tag)
            .build()
            .map_err(|error| anyhow::anyhow!("build a half message: {error:?}"))
    };
    let sent = Instant::now();
    let committed = producer
        .send_transaction_message(half("commit now")?)
        .await
        .map_err(|error| anyhow::anyhow!("send a half message: {error:?}"))?;
    let rolled_back = producer
        .send_transaction_message(half("rollback now")?)
        .await
        .map_err(|error| anyhow::anyhow!("send a half message: {error:?}"))?;
    let open = producer
        .send_transaction_message(half("commit when asked")?)
        .await
        .map_err(|error| anyhow::anyhow!("send a half message: {error:?}"))?;
    let expected = [
        committed.message_id().to_owned(),
        open.message_id().to_owned(),
    ];
    let rolled_back_id = rolled_back.message_id().to_owned();
    committed
        .commit()
        .await
        .map_err(|error| anyhow::anyhow!("commit: {error:?}"))?;
    rolled_back
        .rollback()
        .await
        .map_err(|error| anyhow::anyhow!("rollback: {error:?}"))?;
    let consumer = consumer(access_url, &format!("demo-transaction-{tag}"), TOPIC).await?;
    let mut received = Vec::new();
    while !expected.iter().all(|id| received.contains(id)) {
        anyhow::ensure!(
            sent.elapsed() < STEP_TIMEOUT,
            "got only {received:?} of {expected:?}"
        );
        for message in receive(&consumer, TOPIC, tag, Duration::from_secs(30)).await? {
            received.push(message.message_id().to_owned());
            ack(&consumer, &message).await?;
        }
    }
    let checked_after = sent.elapsed();
    for message in receive(&consumer, TOPIC, tag, Duration::from_secs(30)).await? {
        received.push(message.message_id().to_owned());
    }
    anyhow::ensure!(
        !received.contains(&rolled_back_id) && received.len() == 2,
        "delivered {received:?}; expected {expected:?} once each"
    );
    println!(
        "transactions: committed one delivered, rolled-back one not, open one checked back \
         ({} check) and committed by the checker {} ms after the send",
        asked.load(std::sync::atomic::Ordering::SeqCst),
        checked_after.as_millis()
    );
    let _ = consumer.shutdown().await;
    let _ = producer.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|arg| arg == "--help" || arg == "-h") {
        println!(
            "usage: demo_features [ACCESS_POINT]\n  \
             ACCESS_POINT: router to use (default 127.0.0.1:8081, eu-west); topic `demo`"
        );
        return Ok(());
    }
    let access_url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".to_owned());
    let tag = format!("features-{}", wall_ms()?);
    let mut option = ProducerOption::default();
    option.set_topics(vec![TOPIC]);
    let mut producer = Producer::new(option, client_option(&access_url))
        .map_err(|error| anyhow::anyhow!("create producer: {error:?}"))?;
    producer
        .start()
        .await
        .map_err(|error| anyhow::anyhow!("start producer via {access_url}: {error:?}"))?;
    delay_step(&access_url, &producer, &format!("{tag}-delay")).await?;
    fifo_step(&access_url, &producer, &format!("{tag}-fifo")).await?;
    dead_letter_step(&access_url, &producer, &format!("{tag}-dead")).await?;
    broadcast_step(&access_url, &producer, &format!("{tag}-broadcast")).await?;
    sql_step(&access_url, &producer, &format!("{tag}-sql")).await?;
    large_step(&access_url, &producer, &format!("{tag}-large")).await?;
    let _ = producer.shutdown().await;
    transaction_step(&access_url, &format!("{tag}-transaction")).await?;
    Ok(())
}
