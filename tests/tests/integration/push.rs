//! The official Python PushConsumer: QueryAssignment, receives with
//! auto-renew and attempt ids, a listener that fails (nack through
//! ChangeInvisibleDuration with the group's back-off, then redelivery with
//! attempt + 1), and a message that always fails moving to the group's
//! dead-letter topic after its max attempts.

use crate::json::Access as _;
use crate::python_client::Python;
use crate::script;
use meridian_tests::{Role, TEST_TOPIC, TestCluster};
use meridian_topology::{Group, RouterMode};

const GROUP: &str = "pusher";

/// A one-region cluster with consumer group `name` configured, and the
/// Python client scripts pointed at its router.
struct Rig {
    cluster: TestCluster,
    python: Python,
    endpoint: String,
}

impl Rig {
    async fn start(name: &str, group: Group, mode: RouterMode) -> anyhow::Result<Rig> {
        let interpreter = Python::from_env()?;
        let cluster = TestCluster::builder()
            .regions(1)
            .router_mode(mode)
            .group(name, group)
            .build()
            .await?;
        let python = Python::for_cluster(interpreter, &cluster)?;
        let endpoint = cluster.router_endpoint("a");
        Ok(Rig {
            cluster,
            python,
            endpoint,
        })
    }

    /// Kills the node with SIGKILL and starts it again.
    async fn crash_node(&mut self) -> anyhow::Result<()> {
        self.cluster.kill9("a", Role::Node)?;
        self.cluster.start("a", Role::Node).await
    }

    /// `--endpoints` and `--topic` (the test topic), then `extra`.
    fn args(&self, extra: &[&str]) -> Vec<String> {
        self.args_of(TEST_TOPIC, extra)
    }

    /// `--endpoints` and `--topic topic`, then `extra`.
    fn args_of(&self, topic: &str, extra: &[&str]) -> Vec<String> {
        let mut args = script::args(["--endpoints", &self.endpoint, "--topic", topic]);
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    }

    /// Runs push_consume.py with `extra`; it must complete with none but
    /// the client's known ERROR lines, then pass `checks`.
    async fn push_consume(
        &self,
        extra: &[&str],
        checks: impl FnOnce(&crate::json::Value) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let pushed = self
            .python
            .run("push_consume.py", &self.args(extra))
            .await?;
        pushed.completed()?;
        pushed.check(|output| {
            only_known_client_errors(output)?;
            checks(output)
        })
    }

    /// Runs produce.py with `extra`; the message ids it sent, in order.
    async fn produce(&self, extra: &[&str]) -> anyhow::Result<Vec<String>> {
        let sent = self.python.run("produce.py", &self.args(extra)).await?;
        sent.succeeded(|_| Ok(()))?
            .field("sent")?
            .array()?
            .iter()
            .map(|sent| Ok(sent.field("message_id")?.str()?.to_owned()))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn python_push_consumer_retries_failures_and_dead_letters_a_poison_message()
-> anyhow::Result<()> {
    let mut rig = Rig::start(
        GROUP,
        Group {
            max_attempts: 3,
            retry_backoff_ms: vec![1_000],
            ..Group::default()
        },
        RouterMode::Direct,
    )
    .await?;
    rig.produce(&["--tag", "push", "--sizes=64,64,64,64,64"])
        .await?;
    let poison_id = rig
        .produce(&["--tag", "push", "--property", "poison=1", "--sizes=64"])
        .await?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("the poison message was sent"))?;
    // A crash between the sends and the push consumer loses nothing.
    rig.crash_node().await?;

    rig.push_consume(
        &[
            "--group",
            GROUP,
            "--tag",
            "push",
            "--expect",
            "5",
            "--poison-attempts",
            "3",
        ],
        |output| {
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
        },
    )
    .await?;

    // The poison message is in the group's dead-letter topic.
    let dead = rig
        .python
        .run(
            "consume.py",
            &rig.args_of("%DLQ%pusher", &["--group", "dlq-reader", "--expect", "1"]),
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
    rig.cluster.finish();
    Ok(())
}

/// A push consumer's listener slower than the group's invisible time: the
/// server renews the invisibility while the client is alive (receives with
/// `auto_renew`), so each message is delivered once and its ack, made with
/// the handle the client got at first, succeeds. Once with the client on
/// the node (the node's face renews), once through a router in proxy mode
/// (the router's face renews through the node).
async fn slow_listener_keeps_its_messages(mode: RouterMode) -> anyhow::Result<()> {
    let rig = Rig::start(
        SLOW_GROUP,
        Group {
            invisible_ms: 2_000,
            ..Group::default()
        },
        mode,
    )
    .await?;
    rig.produce(&["--tag", "slow", "--sizes=64,64,64"]).await?;
    rig.push_consume(
        &[
            "--group",
            SLOW_GROUP,
            "--tag",
            "slow",
            "--expect",
            "3",
            "--succeed-first",
            // Three times the invisible time.
            "--work-ms",
            "6000",
        ],
        |output| {
            let attempts = output.field("attempts")?.object()?;
            anyhow::ensure!(attempts.len() == 3, "{attempts:?}");
            for (id, seen) in attempts {
                let seen: Vec<u64> = seen
                    .array()?
                    .iter()
                    .map(|attempt| attempt.u64())
                    .collect::<anyhow::Result<_>>()?;
                anyhow::ensure!(seen == [1], "{id} was delivered at attempts {seen:?}");
            }
            Ok(())
        },
    )
    .await?;
    // Acknowledged: nothing comes back to the group.
    rig.python
        .run(
            "consume.py",
            &rig.args(&[
                "--group",
                SLOW_GROUP,
                "--filter",
                "slow",
                "--expect",
                "0",
                "--invisible-duration",
                "2",
            ]),
        )
        .await?
        .succeeded(|_| Ok(()))?;
    rig.cluster.finish();
    Ok(())
}

/// Fails on any ERROR line of the Python client's log but the two its
/// PushConsumer 5.1.2 always logs.
fn only_known_client_errors(output: &crate::json::Value) -> anyhow::Result<()> {
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
    Ok(())
}

const SLOW_GROUP: &str = "slow-listener";

#[tokio::test(flavor = "multi_thread")]
async fn the_node_renews_a_slow_push_listeners_messages() -> anyhow::Result<()> {
    slow_listener_keeps_its_messages(RouterMode::Direct).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxying_router_renews_a_slow_push_listeners_messages() -> anyhow::Result<()> {
    slow_listener_keeps_its_messages(RouterMode::Proxy).await
}

const FIFO_PUSH_GROUP: &str = "fifo-pusher";

/// The Python PushConsumer in a FIFO group (conformance item 21): a message
/// its listener always fails is retried by the client itself up to the
/// group's max attempts, then forwarded with ForwardMessageToDeadLetterQueue
/// (copied to `%DLQ%<group>`, the original acknowledged), and the rest of
/// its message group follows in order.
#[tokio::test(flavor = "multi_thread")]
async fn python_fifo_push_consumer_forwards_a_poison_message_and_keeps_group_order()
-> anyhow::Result<()> {
    let rig = Rig::start(
        FIFO_PUSH_GROUP,
        Group {
            fifo: true,
            max_attempts: 3,
            retry_backoff_ms: vec![1_000],
            ..Group::default()
        },
        RouterMode::Direct,
    )
    .await?;
    let mut order = Vec::new();
    let mut poison_id = String::new();
    for poison in [false, true, false, false] {
        let mut extra = vec![
            "--tag",
            "fifo-push",
            "--message-group",
            "orders-42",
            "--sizes=64",
        ];
        if poison {
            extra.extend(["--property", "poison=1"]);
        }
        let id = rig
            .produce(&extra)
            .await?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("nothing sent"))?;
        if poison {
            poison_id = id;
        } else {
            order.push(id);
        }
    }
    rig.push_consume(
        &[
            "--group",
            FIFO_PUSH_GROUP,
            "--tag",
            "fifo-push",
            "--expect",
            "3",
            "--succeed-first",
            "--poison-attempts",
            "3",
        ],
        |output| {
            let processed: Vec<&str> = output
                .field("order")?
                .array()?
                .iter()
                .map(|id| id.str())
                .collect::<anyhow::Result<_>>()?;
            anyhow::ensure!(
                processed == order,
                "processed {processed:?}, sent {order:?}"
            );
            let tries = output.field("poison")?.field(&poison_id)?.array()?.len();
            anyhow::ensure!(tries == 3, "the poison message was tried {tries} times");
            Ok(())
        },
    )
    .await?;
    let dead_letters = format!("%DLQ%{FIFO_PUSH_GROUP}");
    rig.python
        .run(
            "consume.py",
            &rig.args_of(
                &dead_letters,
                &["--group", "dlq-reader", "--expect", "1", "--then-empty"],
            ),
        )
        .await?
        .succeeded(|output| {
            let received = output.field("received")?.array()?;
            anyhow::ensure!(received.len() == 1, "{} dead letters", received.len());
            anyhow::ensure!(received[0].field("message_id")?.str()? == poison_id);
            Ok(())
        })?;
    rig.cluster.finish();
    Ok(())
}
