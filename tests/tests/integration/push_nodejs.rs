//! The official **Node.js** PushConsumer (npm `rocketmq-client-nodejs` 1.0.8,
//! unmodified; `tests/nodejs/push_consume.js`): QueryAssignment, receives
//! with auto-renew and attempt ids, a listener that fails (returns FAILURE, or
//! throws: the client nacks through ChangeInvisibleDuration, then the message
//! is redelivered with attempt + 1), and a message that always fails moving
//! to the group's dead-letter topic after its max attempts, the dead-letter
//! copy read back with the Node SimpleConsumer. The Python twin is `push`.

use crate::json::{Access as _, Value};
use crate::nodejs_client::{NodeJs, succeeded};
use crate::script;
use meridian_tests::{Role, TEST_TOPIC, TestCluster};
use meridian_topology::Group;
use std::collections::BTreeMap;

const GROUP: &str = "node-pusher";
const DEAD_LETTER_TOPIC: &str = "%DLQ%node-pusher";
const NORMAL: usize = 5;
const MAX_ATTEMPTS: u64 = 3;

/// The sent messages of a `produce.js` run: message id → sha256 of the body.
fn sent(output: &Value) -> anyhow::Result<BTreeMap<String, String>> {
    output
        .field("sent")?
        .array()?
        .iter()
        .map(|sent| {
            Ok((
                sent.field("message_id")?.str()?.to_owned(),
                sent.field("sha256")?.str()?.to_owned(),
            ))
        })
        .collect()
}

/// A JSON array of delivery attempts as numbers.
fn attempts(value: &Value) -> anyhow::Result<Vec<u64>> {
    value.array()?.iter().map(|attempt| attempt.u64()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn nodejs_push_consumer_retries_failures_and_dead_letters_a_poison_message()
-> anyhow::Result<()> {
    let modules = NodeJs::from_env()?;
    let mut cluster = TestCluster::builder()
        .regions(1)
        .group(
            GROUP,
            Group {
                max_attempts: u32::try_from(MAX_ATTEMPTS)?,
                retry_backoff_ms: vec![1_000],
                ..Group::default()
            },
        )
        .build()
        .await?;
    let node = NodeJs::for_cluster(modules, &cluster)?;
    let endpoint = cluster.router_endpoint("a");
    let produce = |extra: &[&str]| {
        let mut args = script::args(["--endpoints", &endpoint, "--topic", TEST_TOPIC]);
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    };
    let normal_run = node
        .run(
            "produce.js",
            &produce(&["--tag", "push", "--sizes=64,64,64,64,64"]),
        )
        .await?;
    let normal = sent(succeeded(&normal_run)?)?;
    anyhow::ensure!(normal.len() == NORMAL, "{normal:?}\n{normal_run}");
    let poison_run = node
        .run(
            "produce.js",
            &produce(&["--tag", "push", "--property", "poison=1", "--sizes=64"]),
        )
        .await?;
    let poison = sent(succeeded(&poison_run)?)?;
    let (poison_id, poison_sha256) = poison
        .iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the poison message was sent\n{poison_run}"))?;
    // A crash between the sends and the push consumer loses nothing.
    cluster.kill9("a", Role::Node)?;
    cluster.start("a", Role::Node).await?;

    let pushed = node
        .run(
            "push_consume.js",
            &script::args([
                "--endpoints",
                &endpoint,
                "--topic",
                TEST_TOPIC,
                "--group",
                GROUP,
                "--tag",
                "push",
                "--expect",
                &NORMAL.to_string(),
                "--poison-attempts",
                &MAX_ATTEMPTS.to_string(),
            ]),
        )
        .await?;
    // Unlike the Python one, the Node PushConsumer logs no ERROR line, its
    // shutdown included: none is tolerated.
    succeeded(&pushed)?;
    pushed.check(|output| {
        // Every normal message: failed at attempt 1, succeeded at attempt 2,
        // never delivered again (the output includes the deliveries during
        // the shutdown).
        let consumed = output.field("consumed")?.array()?;
        anyhow::ensure!(
            consumed.len() == NORMAL,
            "{} normal messages delivered, expected {NORMAL}",
            consumed.len()
        );
        for message in consumed {
            let id = message.field("message_id")?.str()?;
            anyhow::ensure!(normal.contains_key(id), "{id} is not a sent message");
            let seen = attempts(message.field("attempts")?)?;
            anyhow::ensure!(seen == [1, 2], "{id} delivered at attempts {seen:?}");
            anyhow::ensure!(message.field("succeeded_attempt")?.u64()? == 2);
        }
        // The poison message: attempts 1, 2 and 3, then no more (not even
        // while the consumer shuts down, some 20 s later).
        let poisoned = output.field("poison")?.object()?;
        anyhow::ensure!(
            poisoned.keys().collect::<Vec<_>>() == [poison_id],
            "poison deliveries {poisoned:?}, expected only {poison_id}"
        );
        let seen = attempts(output.field("poison")?.field(poison_id)?)?;
        anyhow::ensure!(seen == [1, 2, 3], "poison attempts {seen:?}");
        Ok(())
    })?;
    // The back-off: the Node client 1.0.8 ignores a CustomizedBackoff retry
    // policy in the settings reply (its PushSubscriptionSettings.sync only
    // reads ExponentialBackoff), so it nacks with ChangeInvisibleDuration(0 s);
    // the server holds a push consumer's nacked message for at least the
    // group's back-off (1 s here) all the same.
    let output = pushed.json()?;
    let mut last_delivery = BTreeMap::new();
    let mut gaps_ms = Vec::new();
    for delivery in output.field("deliveries")?.array()? {
        let id = delivery.field("message_id")?.str()?;
        let at_ms = delivery.field("at_ms")?.u64()?;
        if let Some(last) = last_delivery.insert(id, at_ms) {
            gaps_ms.push(at_ms.saturating_sub(last));
        }
    }
    anyhow::ensure!(
        !gaps_ms.is_empty() && gaps_ms.iter().all(|gap| *gap >= 950),
        "redeliveries {gaps_ms:?} ms after the previous delivery, expected at least the 1 s back-off"
    );
    println!(
        "node push_consume.js: {} deliveries in {:?} (startup {} ms, shutdown {} ms); client \
         retry policy {}; redeliveries {gaps_ms:?} ms after the previous delivery",
        output.field("deliveries")?.array()?.len(),
        pushed.elapsed,
        output.field("startup_ms")?.u64()?,
        output.field("shutdown_ms")?.u64()?,
        output.field("retry_policy")?,
    );

    // The poison message is in the group's dead-letter topic, alone.
    let dead = node
        .run(
            "consume.js",
            &script::args([
                "--endpoints",
                &endpoint,
                "--topic",
                DEAD_LETTER_TOPIC,
                "--group",
                "node-dlq-reader",
                "--expect",
                "1",
                "--await-duration",
                "3",
                "--then-empty",
            ]),
        )
        .await?;
    succeeded(&dead)?;
    dead.check(|output| {
        let received = output.field("received")?.array()?;
        anyhow::ensure!(received.len() == 1, "{} dead letters", received.len());
        let first = &received[0];
        anyhow::ensure!(first.field("message_id")?.str()? == poison_id);
        anyhow::ensure!(first.field("topic")?.str()? == DEAD_LETTER_TOPIC);
        anyhow::ensure!(first.field("tag")?.str()? == "push");
        anyhow::ensure!(first.field("sha256")?.str()? == poison_sha256);
        let properties = first.field("properties")?;
        for (name, value) in [
            ("poison", "1"),
            ("DLQ_ORIGIN_TOPIC", TEST_TOPIC),
            ("DLQ_ORIGIN_MESSAGE_ID", poison_id.as_str()),
            ("DLQ_DELIVERY_ATTEMPTS", "3"),
        ] {
            anyhow::ensure!(
                properties.field(name)?.str()? == value,
                "dead letter property {name} is {}, expected {value}",
                properties.field(name)?
            );
        }
        Ok(())
    })?;
    cluster.finish();
    Ok(())
}
