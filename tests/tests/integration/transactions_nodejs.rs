//! Transactional messages through the official **Node.js** client (npm
//! `rocketmq-client-nodejs` 1.0.8, unmodified; `tests/nodejs/transaction.js`)
//! against a one-region cluster whose router answers routes directly: a half
//! message committed with `Transaction.commit()` is delivered, one rolled back
//! with `Transaction.rollback()` never is, and one left open is checked back
//! (a RecoverOrphanedTransactionCommand on the producer's telemetry stream,
//! after the topic's first check delay of 1 s): the producer's checker
//! commits it through EndTransaction (source SOURCE_SERVER_CHECK) and it is
//! delivered. The script's own SimpleConsumer verifies the deliveries while
//! the producer is up. The Rust-client twin is `transactions`.

use crate::json::{Access as _, Value};
use crate::nodejs_client::{NodeJs, succeeded};
use crate::script;
use crate::transactions::{FAST_CHECKS, TOPIC, cluster};
use meridian_topology::RouterMode;
use std::collections::BTreeMap;

const GROUP: &str = "nodejs-billing";
const TAG: &str = "nodejs-transaction";
/// The bodies `transaction.js` sends, by what happens to each.
const BODIES: [(&str, &str); 3] = [
    ("commit", "commit now"),
    ("rollback", "rollback now"),
    ("orphan", "commit when checked"),
];

/// `sent.<name>` of the output: (message id, transaction id).
fn sent_ids(output: &Value, name: &str) -> anyhow::Result<(String, String)> {
    let sent = output.field("sent")?.field(name)?;
    Ok((
        sent.field("message_id")?.str()?.to_owned(),
        sent.field("transaction_id")?.str()?.to_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn nodejs_producer_commits_rolls_back_and_answers_a_check_back() -> anyhow::Result<()> {
    let modules = NodeJs::from_env()?;
    let cluster = cluster(1, RouterMode::Direct, FAST_CHECKS).await?;
    let node = NodeJs::for_cluster(modules, &cluster)?;
    let run = node
        .run(
            "transaction.js",
            &script::args([
                "--endpoints",
                &cluster.router_endpoint("a"),
                "--topic",
                TOPIC,
                "--group",
                GROUP,
                "--tag",
                TAG,
            ]),
        )
        .await?;
    // Exit 0, "ok", the settings reply, and no ERROR line from either client
    // (the producer logs one if its checker or the EndTransaction after a
    // check-back fails).
    succeeded(&run)?;
    run.check(|output| {
        let mut sent = BTreeMap::new();
        for (name, body) in BODIES {
            let (message_id, transaction_id) = sent_ids(output, name)?;
            anyhow::ensure!(
                transaction_id.starts_with("t1.a."),
                "{name}: transaction id {transaction_id:?}, expected one of region a (t1.a.…)"
            );
            anyhow::ensure!(
                sent.insert(message_id.clone(), (name, body)).is_none(),
                "two half messages got message id {message_id}"
            );
        }
        let (commit, _) = sent_ids(output, "commit")?;
        let (rollback, _) = sent_ids(output, "rollback")?;
        let (orphan, _) = sent_ids(output, "orphan")?;

        // The checker was asked about the open transaction only (the others
        // were resolved before their first check), once: its commit ended it.
        let checked = output.field("checked")?.array()?;
        let asked: Vec<&str> = checked
            .iter()
            .map(|check| check.field("message_id")?.str())
            .collect::<anyhow::Result<_>>()?;
        anyhow::ensure!(
            asked == [orphan.as_str()],
            "the checker was asked about {asked:?}, expected only the open transaction {orphan}"
        );
        let check = &checked[0];
        anyhow::ensure!(
            check.field("body")?.str()? == "commit when checked"
                && check.field("resolution")?.str()? == "COMMIT",
            "the check-back carried {check}, expected the open half message's body, committed"
        );
        let checked_at = check.field("at_ms")?.u64()?;

        // Delivered: the committed message and the one committed on check,
        // once each, first attempt, intact; never the rolled-back one.
        let mut received = BTreeMap::new();
        for message in output.field("received")?.array()? {
            let id = message.field("message_id")?.str()?;
            let (name, body) = sent
                .get(id)
                .copied()
                .ok_or_else(|| anyhow::anyhow!("received {id}, which was never sent"))?;
            anyhow::ensure!(
                id != rollback,
                "the rolled-back half message {id} was delivered"
            );
            anyhow::ensure!(
                received.insert(id.to_owned(), name).is_none(),
                "{name} message {id} was delivered twice"
            );
            anyhow::ensure!(
                message.field("body_hex")?.str()? == hex::encode(body),
                "{name} message {id} arrived with body {}",
                message.field("body_hex")?
            );
            anyhow::ensure!(
                message.field("topic")?.str()? == TOPIC
                    && message.field("tag")?.str()? == TAG
                    && message.field("delivery_attempt")?.u64()? == 1
                    && !message.field("corrupted")?.bool()?,
                "{name} message {id} arrived as {message}"
            );
            if id == orphan {
                // Hidden until the check-back's commit.
                let at = message.field("at_ms")?.u64()?;
                anyhow::ensure!(
                    at >= checked_at,
                    "the open transaction's message was delivered at {at} ms, before the \
                     checker was asked at {checked_at} ms"
                );
            }
        }
        let expected = BTreeMap::from([(commit.clone(), "commit"), (orphan.clone(), "orphan")]);
        anyhow::ensure!(
            received == expected,
            "delivered {received:?}, expected {expected:?}"
        );
        let acked = output.field("acked")?.array()?.len();
        anyhow::ensure!(acked == 2, "{acked} acks for 2 messages");
        let receives = output.field("receives")?.array()?;
        let last = receives
            .last()
            .ok_or_else(|| anyhow::anyhow!("no receives"))?;
        anyhow::ensure!(
            last.field("count")?.u64()? == 0,
            "the last receive (after both commits) was not empty: {receives:?}"
        );

        // The check-back went to the producer: a client that is no producer
        // (the SimpleConsumer) logs a WARN when it gets one.
        let warnings = output.field("client_log")?.field("warnings")?.array()?;
        anyhow::ensure!(
            !warnings.iter().any(|warning| warning
                .as_str()
                .is_some_and(|line| line.contains("orphaned transaction"))),
            "a client ignored a check-back: {warnings:?}"
        );
        Ok(())
    })?;
    let output = run.json()?;
    println!(
        "node transaction.js: {:?} (checked at {} ms after the first send, shutdown {} ms)",
        run.elapsed,
        output.field("checked")?.array()?[0].field("at_ms")?,
        output.field("shutdown_ms")?.u64()?
    );
    cluster.finish();
    Ok(())
}
