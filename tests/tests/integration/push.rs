//! The official Python PushConsumer: QueryAssignment, receives with
//! auto-renew and attempt ids, a listener that fails (nack through
//! ChangeInvisibleDuration with the group's back-off, then redelivery with
//! attempt + 1), and a message that always fails moving to the group's
//! dead-letter topic after its max attempts.

use crate::json::Access as _;
use crate::python_client::Python;
use crate::script;
use meridian_tests::{TEST_TOPIC, TestCluster};
use meridian_topology::Group;

const GROUP: &str = "pusher";

#[tokio::test(flavor = "multi_thread")]
async fn python_push_consumer_retries_failures_and_dead_letters_a_poison_message()
-> anyhow::Result<()> {
    let interpreter = Python::from_env()?;
    let cluster = TestCluster::builder()
        .regions(1)
        .group(
            GROUP,
            Group {
                max_attempts: 3,
                retry_backoff_ms: vec![1_000],
                ..Group::default()
            },
        )
        .build()
        .await?;
    let python = Python::for_cluster(interpreter, &cluster)?;
    let endpoint = cluster.router_endpoint("a");
    let produce = |extra: &[&str]| {
        let mut args = script::args(["--endpoints", &endpoint, "--topic", TEST_TOPIC]);
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    };
    let normal = python
        .run(
            "produce.py",
            &produce(&["--tag", "push", "--sizes=64,64,64,64,64"]),
        )
        .await?;
    normal.succeeded(|_| Ok(()))?;
    let poison = python
        .run(
            "produce.py",
            &produce(&["--tag", "push", "--property", "poison=1", "--sizes=64"]),
        )
        .await?;
    let poison_id = poison
        .succeeded(|_| Ok(()))?
        .field("sent")?
        .array()?
        .first()
        .map(|sent| {
            sent.field("message_id")
                .and_then(|id| id.str())
                .map(str::to_owned)
        })
        .transpose()?
        .ok_or_else(|| anyhow::anyhow!("the poison message was sent"))?;

    let pushed = python
        .run(
            "push_consume.py",
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
                "5",
                "--poison-attempts",
                "3",
            ]),
        )
        .await?;
    pushed.completed()?;
    pushed.check(|output| {
        // The Python client 5.1.2's PushConsumer registers metric gauges on
        // every settings reply, even with metrics off, and logs this one
        // error (rocketmq/v5/consumer/push/push_consumer.py, reset_metric):
        // whatever the server sends, the reply always carries `metric`. Its
        // shutdown cancels the receives still long-polling, and each
        // cancelled one is logged as "process received message error, "
        // with an empty reason (a CancelledError).
        let errors: Vec<&str> = output
            .field("client_log")?
            .field("errors")?
            .array()?
            .iter()
            .map(|error| error.str())
            .collect::<anyhow::Result<_>>()?;
        let unexpected: Vec<&&str> = errors
            .iter()
            .filter(|error| {
                !error.contains("has no attribute 'get_meter'")
                    && !error.ends_with("process received message error, ")
            })
            .collect();
        anyhow::ensure!(unexpected.is_empty(), "client errors: {unexpected:?}");
        for (id, attempt) in output.field("succeeded")?.object()? {
            anyhow::ensure!(attempt.u64()? == 2, "{id} succeeded at attempt {attempt}");
        }
        anyhow::ensure!(output.field("succeeded")?.object()?.len() == 5);
        let poison = output.field("poison")?.field(&poison_id)?.array()?;
        let attempts: Vec<u64> = poison
            .iter()
            .map(|a| a.u64())
            .collect::<anyhow::Result<_>>()?;
        anyhow::ensure!(attempts == [1, 2, 3], "poison attempts {attempts:?}");
        Ok(())
    })?;

    // The poison message is in the group's dead-letter topic.
    let dead = python
        .run(
            "consume.py",
            &script::args([
                "--endpoints",
                &endpoint,
                "--topic",
                "%DLQ%pusher",
                "--group",
                "dlq-reader",
                "--expect",
                "1",
            ]),
        )
        .await?;
    dead.succeeded(|output| {
        let received = output.field("received")?.array()?;
        let first = received
            .first()
            .ok_or_else(|| anyhow::anyhow!("nothing read"))?;
        anyhow::ensure!(first.field("message_id")?.str()? == poison_id);
        anyhow::ensure!(
            first
                .field("properties")?
                .field("DLQ_DELIVERY_ATTEMPTS")?
                .str()?
                == "3",
            "{first:?}"
        );
        Ok(())
    })?;
    cluster.finish();
    Ok(())
}
