//! Transactional messages through the official Rust client 5.0.0: half
//! messages hidden until committed, rollbacks never delivered, orphaned
//! transactions checked back on the producer's Telemetry stream (the
//! router's: the Rust client keeps only its access point's stream open),
//! outcomes replicated to another region, open transactions through a node
//! crash, a new producer incarnation answering for its predecessor, and a
//! proxying router. EndTransaction's refusals are checked with raw gRPC.

use crate::support::{CLIENT_CALL_TIMEOUT, TAG, receive_exactly, start_consumer_of, within};
use meridian_tests::meridian_proto::rocketmq::v2::{
    Code, EndTransactionRequest, Resource, TransactionResolution as WireResolution,
    TransactionSource,
};
use meridian_tests::{Role, TestCluster};
use meridian_topology::{FlushMode, MessageType, RouterMode, Topic, TransactionChecks};
use rocketmq::Producer;
use rocketmq::conf::{ClientOption, ProducerOption};
use rocketmq::model::message::{MessageBuilder, MessageView};
use rocketmq::model::transaction::{Transaction, TransactionResolution};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A topic of transactional messages.
pub(crate) const TOPIC: &str = "payments";

/// Open transactions checked back after 1 s, then every 500 ms, at most 3 times.
pub(crate) const FAST_CHECKS: TransactionChecks = TransactionChecks {
    first_after_ms: 1_000,
    interval_ms: 500,
    max: 3,
};

/// Open transactions checked back only after a minute (not during a test).
const NO_CHECKS: TransactionChecks = TransactionChecks {
    first_after_ms: 60_000,
    interval_ms: 60_000,
    max: 1,
};

fn transactional_topic(regions: &[&str], checks: TransactionChecks) -> Topic {
    Topic {
        queues: 4,
        message_types: vec![MessageType::Transaction],
        replicate_to: regions.iter().map(|region| (*region).to_owned()).collect(),
        consume_from: Default::default(),
        durability: Default::default(),
        geo_copies: 1,
        retention_ms: meridian_topology::DEFAULT_RETENTION_MS,
        retention_bytes: None,
        transaction_checks: checks,
    }
}

pub(crate) async fn cluster(
    regions: usize,
    mode: RouterMode,
    checks: TransactionChecks,
) -> anyhow::Result<TestCluster> {
    let names: Vec<String> = (0..regions).map(meridian_tests::region_name).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    TestCluster::builder()
        .regions(regions)
        .router_mode(mode)
        .flush(FlushMode::Sync)
        .topic(TOPIC, transactional_topic(&names, checks))
        .build()
        .await
}

/// What a producer's checker was asked, and what it answers: by body,
/// `commit…` commits, `rollback…` rolls back, anything else stays unknown.
#[derive(Default, Clone)]
struct Checker {
    asked: Arc<Mutex<Vec<String>>>,
}

impl Checker {
    fn boxed(&self) -> Box<rocketmq::model::transaction::TransactionChecker> {
        let asked = Arc::clone(&self.asked);
        Box::new(move |transaction_id: String, message: MessageView| {
            asked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(transaction_id);
            let body = String::from_utf8_lossy(message.body()).into_owned();
            if body.starts_with("commit") {
                TransactionResolution::COMMIT
            } else if body.starts_with("rollback") {
                TransactionResolution::ROLLBACK
            } else {
                TransactionResolution::UNKNOWN
            }
        })
    }

    fn asked(&self) -> Vec<String> {
        self.asked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

async fn start_transaction_producer(
    access_url: &str,
    checker: &Checker,
) -> anyhow::Result<Producer> {
    let mut option = ProducerOption::default();
    option.set_topics(vec![TOPIC]);
    let mut client_option = ClientOption::default();
    client_option.set_access_url(access_url);
    client_option.set_enable_tls(false);
    let mut producer =
        Producer::new_transaction_producer(option, client_option, checker.boxed())
            .map_err(|error| anyhow::anyhow!("create a transaction producer: {error:?}"))?;
    within(CLIENT_CALL_TIMEOUT, "start the producer", producer.start())
        .await?
        .map_err(|error| anyhow::anyhow!("start a transaction producer: {error:?}"))?;
    Ok(producer)
}

/// Sends a half message with `body`; returns its transaction.
async fn send_half(producer: &Producer, body: &str) -> anyhow::Result<impl Transaction> {
    let message = MessageBuilder::transaction_message_builder(TOPIC, body.as_bytes().to_vec())
        .set_tag(TAG)
        .build()
        .map_err(|error| anyhow::anyhow!("build a transactional message: {error:?}"))?;
    let transaction = within(
        CLIENT_CALL_TIMEOUT,
        "send a half message",
        producer.send_transaction_message(message),
    )
    .await?
    .map_err(|error| anyhow::anyhow!("send a half message: {error:?}"))?;
    anyhow::ensure!(
        transaction.transaction_id().starts_with("t1."),
        "transaction id {:?}",
        transaction.transaction_id()
    );
    Ok(transaction)
}

async fn end(transaction: impl Transaction, commit: bool) -> anyhow::Result<()> {
    let what = if commit { "commit" } else { "rollback" };
    let ended = if commit {
        within(CLIENT_CALL_TIMEOUT, what, transaction.commit()).await?
    } else {
        within(CLIENT_CALL_TIMEOUT, what, transaction.rollback()).await?
    };
    ended.map_err(|error| anyhow::anyhow!("{what}: {error:?}"))
}

/// EndTransaction by raw gRPC to `endpoint`: the answer's status code.
async fn raw_end(
    endpoint: &str,
    message_id: &str,
    transaction_id: &str,
    resolution: WireResolution,
) -> anyhow::Result<(Code, String)> {
    let mut client = TestCluster::messaging_client(endpoint).await?;
    let mut request = tonic::Request::new(EndTransactionRequest {
        topic: Some(Resource {
            name: TOPIC.to_owned(),
            resource_namespace: String::new(),
        }),
        message_id: message_id.to_owned(),
        transaction_id: transaction_id.to_owned(),
        resolution: resolution as i32,
        source: TransactionSource::SourceClient as i32,
        trace_context: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-mq-client-id", "meridian-tests-transactions".parse()?);
    let status = client
        .end_transaction(request)
        .await?
        .into_inner()
        .status
        .unwrap_or_default();
    Ok((
        Code::try_from(status.code).unwrap_or(Code::Unspecified),
        status.message,
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_messages_are_delivered_in_every_region_and_rolled_back_ones_never()
-> anyhow::Result<()> {
    let cluster = cluster(2, RouterMode::Direct, NO_CHECKS).await?;
    let checker = Checker::default();
    let producer = start_transaction_producer(&cluster.router_endpoint("a"), &checker).await?;
    let committed = send_half(&producer, "commit: order 1").await?;
    let rolled_back = send_half(&producer, "rollback: order 2").await?;
    let (committed_id, committed_transaction) = (
        committed.message_id().to_owned(),
        committed.transaction_id().to_owned(),
    );
    let rolled_back_id = rolled_back.message_id().to_owned();
    let consumer = start_consumer_of(&cluster.router_endpoint("b"), "billing", TOPIC).await?;
    // Nothing is visible before the outcome.
    receive_exactly(&consumer, TOPIC, &BTreeSet::new(), "before the outcomes").await?;
    // The Rust client sends EndTransaction to its access point (the router).
    end(committed, true).await?;
    end(rolled_back, false).await?;
    receive_exactly(
        &consumer,
        TOPIC,
        &BTreeSet::from([committed_id.clone()]),
        "region b after the outcomes",
    )
    .await?;
    let here = start_consumer_of(&cluster.router_endpoint("a"), "billing-a", TOPIC).await?;
    receive_exactly(
        &here,
        TOPIC,
        &BTreeSet::from([committed_id.clone()]),
        "region a after the outcomes",
    )
    .await?;

    // A repeated resolution answers OK, the other one is refused, and a
    // malformed id names what is wrong; the node of b, which holds a copy,
    // answers like a's.
    for endpoint in [cluster.node_endpoint("a"), cluster.node_endpoint("b")] {
        let (code, message) = raw_end(
            &endpoint,
            &committed_id,
            &committed_transaction,
            WireResolution::Commit,
        )
        .await?;
        anyhow::ensure!(
            code == Code::Ok,
            "repeated commit at {endpoint}: {code:?} {message}"
        );
        let (code, message) = raw_end(
            &endpoint,
            &committed_id,
            &committed_transaction,
            WireResolution::Rollback,
        )
        .await?;
        anyhow::ensure!(
            code == Code::InvalidTransactionId && message.contains("already committed"),
            "rollback after commit at {endpoint}: {code:?} {message}"
        );
    }
    let (code, message) = raw_end(
        &cluster.node_endpoint("a"),
        &rolled_back_id,
        "not-a-transaction",
        WireResolution::Commit,
    )
    .await?;
    anyhow::ensure!(
        code == Code::InvalidTransactionId && message.contains("t1.<region>"),
        "malformed id: {code:?} {message}"
    );
    anyhow::ensure!(
        checker.asked().is_empty(),
        "checked back: {:?}",
        checker.asked()
    );
    cluster.finish();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn orphaned_transactions_are_checked_back_through_the_router() -> anyhow::Result<()> {
    let cluster = cluster(1, RouterMode::Direct, FAST_CHECKS).await?;
    let checker = Checker::default();
    let producer = start_transaction_producer(&cluster.router_endpoint("a"), &checker).await?;
    // Left open: the node asks the producer (on its router's stream).
    let commit = send_half(&producer, "commit on check").await?;
    let rollback = send_half(&producer, "rollback on check").await?;
    let unknown = send_half(&producer, "unknown").await?;
    let ids: Vec<String> = [&commit, &rollback, &unknown]
        .iter()
        .map(|transaction| transaction.transaction_id().to_owned())
        .collect();
    let commit_id = commit.message_id().to_owned();
    drop((commit, rollback, unknown));
    let consumer = start_consumer_of(&cluster.router_endpoint("a"), "billing", TOPIC).await?;
    receive_exactly(
        &consumer,
        TOPIC,
        &BTreeSet::from([commit_id.clone()]),
        "after check-backs",
    )
    .await?;
    // The unknown one is asked up to 3 times, then rolled back by the node.
    within(
        Duration::from_secs(30),
        "three checks of the unknown transaction",
        async {
            while checker.asked().iter().filter(|id| **id == ids[2]).count() < 3 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await?;
    within(
        Duration::from_secs(30),
        "the rollback of the unknown transaction",
        async {
            loop {
                if cluster
                    .log("a", Role::Node)
                    .contains("rolling back an open transaction")
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await?;
    let asked = checker.asked();
    anyhow::ensure!(
        asked.iter().filter(|id| **id == ids[0]).count() == 1
            && asked.iter().filter(|id| **id == ids[1]).count() == 1
            && asked.iter().filter(|id| **id == ids[2]).count() == 3,
        "check-backs: {asked:?} for {ids:?}"
    );
    // Resolving after the node's rollback is refused.
    let (code, message) = raw_end(
        &cluster.node_endpoint("a"),
        "whatever",
        &ids[2],
        WireResolution::Commit,
    )
    .await?;
    anyhow::ensure!(
        code == Code::InvalidTransactionId && message.contains("already rolled back"),
        "commit after the node's rollback: {code:?} {message}"
    );
    receive_exactly(&consumer, TOPIC, &BTreeSet::new(), "nothing else").await?;
    // The committed orphan's trace shows its check-back and its commit.
    let (shown, steps) = crate::admin::trace_in(&cluster, "a", &commit_id).await?;
    let events: Vec<String> = steps.into_iter().map(|(event, _, _)| event).collect();
    anyhow::ensure!(
        events.iter().any(|event| event == "transaction checked")
            && events.iter().any(|event| event == "transaction committed")
            && events.iter().any(|event| event == "delivered"),
        "trace events {events:?}: {shown}"
    );
    cluster.finish();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn open_transactions_survive_a_node_crash_and_a_new_producer_answers_for_the_old()
-> anyhow::Result<()> {
    let mut cluster = cluster(
        1,
        RouterMode::Direct,
        TransactionChecks {
            first_after_ms: 2_000,
            ..FAST_CHECKS
        },
    )
    .await?;
    let first =
        start_transaction_producer(&cluster.router_endpoint("a"), &Checker::default()).await?;
    let explicit = send_half(&first, "explicit").await?;
    let orphan = send_half(&first, "commit: the old producer's").await?;
    let expected = BTreeSet::from([
        explicit.message_id().to_owned(),
        orphan.message_id().to_owned(),
    ]);
    let (explicit_id, explicit_transaction) = (
        explicit.message_id().to_owned(),
        explicit.transaction_id().to_owned(),
    );
    drop((explicit, orphan));
    // The first incarnation goes away before any check-back.
    let _ = within(Duration::from_secs(10), "shutdown", first.shutdown()).await;
    cluster.kill9("a", Role::Node)?;
    cluster.start("a", Role::Node).await?;
    // An outcome after the crash (as the first producer's would arrive).
    let (code, message) = raw_end(
        &cluster.router_endpoint("a"),
        &explicit_id,
        &explicit_transaction,
        WireResolution::Commit,
    )
    .await?;
    anyhow::ensure!(
        code == Code::Ok,
        "commit after the crash: {code:?} {message}"
    );
    // A new incarnation, whose checker commits, answers for the orphan.
    let checker = Checker::default();
    let second = start_transaction_producer(&cluster.router_endpoint("a"), &checker).await?;
    let consumer = start_consumer_of(&cluster.router_endpoint("a"), "billing", TOPIC).await?;
    receive_exactly(&consumer, TOPIC, &expected, "after the crash").await?;
    anyhow::ensure!(
        checker.asked().len() == 1,
        "check-backs: {:?}",
        checker.asked()
    );
    drop(second);
    cluster.finish();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxying_router_carries_outcomes_and_check_backs() -> anyhow::Result<()> {
    let cluster = cluster(2, RouterMode::Proxy, FAST_CHECKS).await?;
    let checker = Checker::default();
    let producer = start_transaction_producer(&cluster.router_endpoint("a"), &checker).await?;
    let explicit = send_half(&producer, "explicit").await?;
    let orphan = send_half(&producer, "commit when asked").await?;
    let rolled_back = send_half(&producer, "rolled back").await?;
    let expected = BTreeSet::from([
        explicit.message_id().to_owned(),
        orphan.message_id().to_owned(),
    ]);
    end(explicit, true).await?;
    end(rolled_back, false).await?;
    drop(orphan);
    let consumer = start_consumer_of(&cluster.router_endpoint("b"), "billing", TOPIC).await?;
    receive_exactly(&consumer, TOPIC, &expected, "through the proxies").await?;
    anyhow::ensure!(
        checker.asked().len() == 1,
        "check-backs: {:?}",
        checker.asked()
    );
    cluster.finish();
    Ok(())
}

/// Runs `tests/python/transaction.py` (commit, rollback and a check-back
/// with the official Python client 5.1.2) against region a's router.
async fn python_transactions(mode: RouterMode) -> anyhow::Result<()> {
    use crate::json::Access as _;
    let interpreter = crate::python_client::Python::from_env()?;
    let cluster = cluster(1, mode, FAST_CHECKS).await?;
    let python = crate::python_client::Python::for_cluster(interpreter, &cluster)?;
    let run = python
        .run(
            "transaction.py",
            &crate::script::args([
                "--endpoints",
                &cluster.router_endpoint("a"),
                "--topic",
                TOPIC,
                "--group",
                "python-billing",
            ]),
        )
        .await?;
    run.succeeded(|_| Ok(()))?;
    run.check(|output| {
        let sent = output.field("sent")?;
        let orphan = sent.field("orphan")?.field("message_id")?.str()?.to_owned();
        let checked: Vec<String> = output
            .field("checked")?
            .array()?
            .iter()
            .map(|check| Ok(check.field("message_id")?.str()?.to_owned()))
            .collect::<anyhow::Result<_>>()?;
        anyhow::ensure!(
            checked == [orphan.clone()],
            "check-backs {checked:?}, expected only the open transaction {orphan}"
        );
        let errors = output.field("client_log")?.field("errors")?.array()?;
        anyhow::ensure!(errors.is_empty(), "the client logged errors: {errors:?}");
        for name in ["commit", "rollback", "orphan"] {
            let id = sent.field(name)?.field("transaction_id")?.str()?;
            anyhow::ensure!(id.starts_with("t1.a."), "{name}: transaction id {id}");
        }
        Ok(())
    })?;
    cluster.finish();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn python_commits_rolls_back_and_answers_check_backs() -> anyhow::Result<()> {
    python_transactions(RouterMode::Direct).await
}

#[tokio::test(flavor = "multi_thread")]
async fn python_transactions_through_a_proxying_router() -> anyhow::Result<()> {
    python_transactions(RouterMode::Proxy).await
}
