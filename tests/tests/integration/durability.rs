//! `flush = "sync"` means an acknowledged send survives a crash of the node.

use crate::support::{client_message_ids, message_records, send, start_producer};
use meridian_tests::meridian_topology::FlushMode;
use meridian_tests::{Role, TestCluster, wait_until};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Sends acknowledged before the kill; enough that the kill lands mid-stream.
const ACKNOWLEDGED_BEFORE_KILL: usize = 200;
/// Sends in flight at once.
const CONCURRENT_SENDERS: usize = 4;

#[tokio::test(flavor = "multi_thread")]
async fn sync_flush_node_kill9_keeps_every_acknowledged_send() {
    let mut cluster = TestCluster::builder()
        .regions(2)
        .flush(FlushMode::Sync)
        .build()
        .await
        .expect("start a two-region cluster with sync flush");

    let producer = Arc::new(
        start_producer(&cluster.router_endpoint("a"))
            .await
            .expect("start a producer via a's router"),
    );
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    // Several senders, so that the kill lands while a group commit holds more
    // than one send. Sends after the kill fail (or the client panics); only Ok
    // results count.
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..CONCURRENT_SENDERS {
        let producer = Arc::clone(&producer);
        let acknowledged = Arc::clone(&acknowledged);
        let stop = Arc::clone(&stop);
        senders.spawn(async move {
            let mut failures = 0_u64;
            let mut index = 0_u64;
            while !stop.load(Ordering::SeqCst) {
                index += 1;
                let body = format!("durable message {sender}-{index}").into_bytes();
                match send(&producer, body).await {
                    Ok(id) => acknowledged
                        .lock()
                        .expect("the ids lock is not poisoned")
                        .push(id),
                    Err(_) => {
                        failures += 1;
                        // Pacing so a dead node is not hammered, not a readiness wait.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            failures
        });
    }

    wait_until(
        Duration::from_secs(60),
        format!("a acknowledged {ACKNOWLEDGED_BEFORE_KILL} sends"),
        || async {
            acknowledged
                .lock()
                .expect("the ids lock is not poisoned")
                .len()
                >= ACKNOWLEDGED_BEFORE_KILL
        },
    )
    .await
    .expect("the producer makes progress");
    cluster.kill9("a", Role::Node).expect("kill -9 a's node");
    stop.store(true, Ordering::SeqCst);
    let stopped = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(outcome) = senders.join_next().await {
            match outcome {
                Ok(failures) => {
                    eprintln!("a sender saw {failures} failed sends after the kill, as expected")
                }
                Err(panic) => eprintln!("a sender panicked after the kill (tolerated): {panic}"),
            }
        }
    })
    .await;
    assert!(
        stopped.is_ok(),
        "the senders did not stop within 60 s of the kill"
    );
    let acknowledged: BTreeSet<String> = acknowledged
        .lock()
        .expect("the ids lock is not poisoned")
        .iter()
        .cloned()
        .collect();

    cluster
        .start("a", Role::Node)
        .await
        .expect("restart a's node on the same data dir");
    let stored: BTreeSet<String> = client_message_ids(
        &message_records(&cluster, "a")
            .await
            .expect("read a's commit log"),
    )
    .into_iter()
    .collect();
    let lost: Vec<&String> = acknowledged.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged sends are missing from a's commit log after kill -9, e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        lost.iter().take(10).collect::<Vec<_>>()
    );
    eprintln!(
        "all {} acknowledged sends survived kill -9 ({} stored)",
        acknowledged.len(),
        stored.len()
    );
    cluster.finish();
}
