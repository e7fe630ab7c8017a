//! Transactional messages: half messages, their outcomes, and check-backs of
//! transactions left open.
//!
//! A producer sends a message of type TRANSACTION; the node stores it as a
//! *half message* (in the log and the dedup index, in no consume queue: an
//! open transaction, see [`LogStore::end_transaction`]) and answers a
//! transaction id naming this region and the half message's dedup id
//! ([`transaction_id`]). EndTransaction appends a `TRANSACTION_END` record
//! (commit or rollback) whose dedup id is derived from the half message's
//! ([`end_dedup_id`]), then applies it: a commit moves the half message to
//! its queue, a rollback closes it. The record replicates by the topic's
//! policy like a message, and every region that stores it applies it to its
//! own copy; because every outcome of one transaction has the same dedup id,
//! the first one stored wins and a second resolution is a duplicate (the
//! same one answers OK, the other is refused).
//!
//! The check task ([`run`]) looks at the open transactions every
//! [`TICK`]: one whose outcome record is already stored (it arrived before
//! its half message, or the node stopped between storing and applying it)
//! is applied; in the region that took the half message, an open one is
//! offered to a connected producer of its topic
//! (`RecoverOrphanedTransactionCommand` on its Telemetry stream: the node's
//! own producers first, then routers that watch check-backs) first
//! `first_after_ms` after the send, then every `interval_ms`
//! ([`meridian_topology::TransactionChecks`]), and after `max` check-backs
//! it is rolled back; in any region, a transaction open for longer than its
//! topic's retention is rolled back.

use crate::acks::apply_enqueued;
use crate::consumer::{ConsumerEngine, ConsumerError};
use crate::error::NodeError;
use crate::grpc::NodeContext;
use crate::grpc::convert::{now_ms, rocketmq_message};
use crate::storage::{Appended, LogStore, TransactionEnded};
use meridian_face::Producers;
use meridian_proto::meridian::v1::{
    Record, RecordKind, TraceEventKind, TransactionCheck, TransactionEnd, TransactionEndSource,
};
use meridian_topology::Topology;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the check task looks at the open transactions.
pub const TICK: Duration = Duration::from_millis(250);

/// The version prefix of [`transaction_id`]s.
const TRANSACTION_ID_PREFIX: &str = "t1";

/// The transaction id SendMessage answers for a half message: `t1.<region
/// that took it>.<its dedup id, 32 hex digits>` (region names never contain
/// `.`). Any region holding the half message can end the transaction; a
/// router in proxy mode sends EndTransaction to the named region while it is
/// up.
pub fn transaction_id(region: &str, dedup_id: &[u8]) -> String {
    format!("{TRANSACTION_ID_PREFIX}.{region}.{}", hex::encode(dedup_id))
}

/// The region and half-message dedup id a [`transaction_id`] names.
pub fn parse_transaction_id(text: &str) -> Result<(String, Vec<u8>), NodeError> {
    let invalid = |reason: &str| NodeError::InvalidTransactionId {
        transaction_id: text.chars().take(128).collect(),
        reason: reason.to_owned(),
    };
    let mut parts = text.trim().split('.');
    let (Some(TRANSACTION_ID_PREFIX), Some(region), Some(dedup), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(
            "expected `t1.<region>.<32 hex digits>`, as SendMessage answered for the half message",
        ));
    };
    let dedup_id = hex::decode(dedup)
        .ok()
        .filter(|id| id.len() == crate::storage::DEDUP_ID_BYTES)
        .ok_or_else(|| invalid("its message part is not 32 hex digits"))?;
    if region.is_empty() {
        return Err(invalid("it names no region"));
    }
    Ok((region.to_owned(), dedup_id))
}

/// The dedup id of every outcome of the transaction of the half message
/// with `message_dedup_id`, in every region.
pub fn end_dedup_id(message_dedup_id: &[u8]) -> Vec<u8> {
    crate::rules::derived_dedup_id(b"meridian transaction end\0", &[message_dedup_id])
}

/// What the node knows of a half message, to end its transaction.
#[derive(Debug, Clone)]
pub struct HalfMessage {
    pub record: Record,
}

impl HalfMessage {
    fn message(&self) -> &meridian_proto::meridian::v1::Message {
        self.record
            .message
            .as_ref()
            .expect("a half message is a message record")
    }

    pub fn topic(&self) -> &str {
        &self.message().topic
    }
}

/// Reads the half message with `dedup_id`; `None` when no message record of
/// type TRANSACTION has it here.
pub fn find_half_message<S: LogStore>(
    store: &S,
    dedup_id: &[u8],
) -> Result<Option<HalfMessage>, NodeError> {
    let Some(sequence) = store.find_dedup(dedup_id)? else {
        return Ok(None);
    };
    Ok(store.get(sequence)?.and_then(|record| {
        let is_half = record.message.as_ref().is_some_and(|message| {
            message.message_type == meridian_proto::meridian::v1::MessageType::Transaction as i32
        });
        is_half.then_some(HalfMessage { record })
    }))
}

/// The outcome stored for the half message with `message_dedup_id`, if any.
pub fn stored_end<S: LogStore>(
    store: &S,
    message_dedup_id: &[u8],
) -> Result<Option<TransactionEnd>, NodeError> {
    let Some(sequence) = store.find_dedup(&end_dedup_id(message_dedup_id))? else {
        return Ok(None);
    };
    Ok(store
        .get(sequence)?
        .and_then(|record| record.transaction_end))
}

/// Applies a stored outcome to this region's copy of its half message: a
/// commit moves it to its queue (joining at `now_ms`) and finishes it for
/// the groups whose acknowledgements from other regions wait for it; a
/// rollback closes it. Returns the topic to wake when a message joined it.
pub fn apply_end<S: LogStore>(
    store: &S,
    consumers: &ConsumerEngine<S>,
    topology: &Topology,
    end: &TransactionEnd,
    now_ms: i64,
) -> Result<Option<String>, ConsumerError> {
    match store.end_transaction(&end.message_dedup_id, end.commit, now_ms)? {
        TransactionEnded::Committed(enqueued) => {
            let topic = enqueued.topic.clone();
            apply_enqueued(store, consumers, topology, &[enqueued])?;
            Ok(Some(topic))
        }
        TransactionEnded::RolledBack { .. }
        | TransactionEnded::NotOpen { .. }
        | TransactionEnded::NotStored => Ok(None),
    }
}

/// How an [`end`] call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// This call's outcome is stored (and applied here).
    Ended,
    /// An outcome was stored before: the same one (`same`) or the other.
    AlreadyEnded { committed: bool, same: bool },
}

/// Ends the transaction of `half` here: appends its outcome record
/// (durably, through group commit), then applies it. The outcome of a
/// transaction that already has one is not stored again.
pub async fn end<S: LogStore>(
    context: &NodeContext<S>,
    half: &HalfMessage,
    commit: bool,
    source: TransactionEndSource,
    client_id: &str,
) -> Result<Ending, NodeError> {
    let message = half.message();
    let now = now_ms();
    let end = TransactionEnd {
        topic: message.topic.clone(),
        queue_id: message.queue_id,
        message_dedup_id: half.record.dedup_id.clone(),
        commit,
        source: source as i32,
        ended_at_ms: now,
        client_id: client_id.to_owned(),
        client_message_id: message.client_message_id.clone(),
    };
    let record = Record {
        kind: RecordKind::TransactionEnd as i32,
        dedup_id: end_dedup_id(&half.record.dedup_id),
        origin_region: context.region.clone(),
        path: vec![context.region.clone()],
        transaction_end: Some(end.clone()),
        ..Record::default()
    };
    crate::rules::check_record(&record, &context.topology.get())?;
    let appended = context.commit.append(vec![record]).await?;
    let ending = match appended.first() {
        Some(Appended::Stored { .. }) => Ending::Ended,
        Some(Appended::Duplicate { sequence, .. }) => {
            let sequence = *sequence;
            let stored = context
                .blocking(move |store, _| Ok(store.get(sequence)?))
                .await?
                .and_then(|record| record.transaction_end);
            let committed = stored.is_some_and(|stored| stored.commit);
            Ending::AlreadyEnded {
                committed,
                same: committed == commit,
            }
        }
        None => return Err(NodeError::Commit(crate::commit::CommitError::Stopped)),
    };
    // Applied in both cases: a stored outcome that a crash kept from being
    // applied is applied now (applying twice changes nothing).
    let applied_end = match ending {
        Ending::Ended => end,
        Ending::AlreadyEnded { committed, .. } => TransactionEnd {
            commit: committed,
            ..end
        },
    };
    let topology = Arc::clone(&context.topology.get());
    let woken = context
        .blocking(move |store, consumers| {
            Ok(apply_end(store, consumers, &topology, &applied_end, now)?)
        })
        .await?;
    if let Some(topic) = woken {
        context.commit.signal_topics(&BTreeSet::from([topic]));
    }
    Ok(ending)
}

/// The node's transaction state outside storage: who can be asked about
/// open transactions.
#[derive(Default)]
pub struct Transactions {
    /// The node's own producers (its RocketMQ face's), set once it serves.
    producers: OnceLock<Arc<Producers>>,
    /// Routers watching check-backs (`WatchTransactionChecks`).
    pub watchers: CheckWatchers,
    /// Check-backs waiting for producers that poll for them (the Aliyun MQ
    /// HTTP API's `trans=pop`).
    pub polled: PolledChecks,
}

/// How long a producer that polled for a topic's check-backs counts as
/// there (the HTTP SDKs poll again within seconds).
const POLLER_PRESENT: Duration = Duration::from_secs(30);
/// How long an offered check-back waits for a poll before it is dropped
/// (the transaction is offered again at its next check time).
const POLLED_CHECK_KEPT: Duration = Duration::from_secs(30);
/// Check-backs kept waiting per topic at most.
const POLLED_CHECKS_MAX: usize = 1024;

#[derive(Default)]
struct PolledState {
    /// Per topic: when a producer last polled.
    pollers: BTreeMap<String, std::time::Instant>,
    /// Per topic: offered check-backs, oldest first, with when offered.
    waiting: BTreeMap<String, std::collections::VecDeque<(std::time::Instant, TransactionCheck)>>,
}

/// Check-backs for producers that poll for them instead of holding a
/// Telemetry stream: an open transaction due for a check is queued for its
/// topic while such a producer polled recently, and the next poll takes it.
#[derive(Default)]
pub struct PolledChecks {
    state: Mutex<PolledState>,
    offered: tokio::sync::Notify,
}

impl PolledChecks {
    /// Whether a producer polled for `topic`'s check-backs recently.
    fn present(&self, topic: &str) -> bool {
        self.state
            .lock()
            .pollers
            .get(topic)
            .is_some_and(|polled| polled.elapsed() < POLLER_PRESENT)
    }

    /// Queues `check` for the next poll of its topic, if a poller is there.
    fn offer(&self, check: &TransactionCheck) -> bool {
        let mut state = self.state.lock();
        let present = state
            .pollers
            .get(&check.topic)
            .is_some_and(|polled| polled.elapsed() < POLLER_PRESENT);
        if !present {
            return false;
        }
        let waiting = state.waiting.entry(check.topic.clone()).or_default();
        waiting.retain(|(offered, queued)| {
            offered.elapsed() < POLLED_CHECK_KEPT && queued.transaction_id != check.transaction_id
        });
        if waiting.len() >= POLLED_CHECKS_MAX {
            return false;
        }
        waiting.push_back((std::time::Instant::now(), check.clone()));
        drop(state);
        self.offered.notify_waiters();
        true
    }

    /// Takes up to `max` check-backs of `topic`, waiting up to `wait` for
    /// one; notes that a producer polls for the topic.
    pub async fn take(&self, topic: &str, max: usize, wait: Duration) -> Vec<TransactionCheck> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so an offer in between wakes it.
            let offered = self.offered.notified();
            {
                let mut state = self.state.lock();
                state
                    .pollers
                    .insert(topic.to_owned(), std::time::Instant::now());
                if let Some(waiting) = state.waiting.get_mut(topic) {
                    waiting.retain(|(offered, _)| offered.elapsed() < POLLED_CHECK_KEPT);
                    let count = waiting.len().min(max);
                    let taken: Vec<TransactionCheck> =
                        waiting.drain(..count).map(|(_, check)| check).collect();
                    if !taken.is_empty() {
                        return taken;
                    }
                }
            }
            if tokio::time::timeout_at(deadline, offered).await.is_err() {
                return Vec::new();
            }
        }
    }
}

impl Transactions {
    /// Gives the node's face's producers, once.
    pub fn set_producers(&self, producers: Arc<Producers>) {
        let _ = self.producers.set(producers);
    }

    /// Whether anyone could be asked about a transaction of `topic` now.
    fn can_check(&self, topic: &str) -> bool {
        self.producers
            .get()
            .is_some_and(|producers| producers.publishes(topic))
            || self.watchers.interested(topic)
            || self.polled.present(topic)
    }

    /// Offers a check-back to the node's own producers of its topic, else
    /// to a watching router; names who took it (`None`: nobody).
    fn offer(&self, check: &TransactionCheck) -> Option<String> {
        let message = check.message.as_ref()?;
        let own = self
            .producers
            .get()
            .and_then(|producers| producers.offer(&check.topic, message, &check.transaction_id));
        own.or_else(|| {
            self.watchers
                .offer(check)
                .then(|| "a producer connected to a router".to_owned())
        })
        .or_else(|| {
            self.polled
                .offer(check)
                .then(|| "a producer polling for check-backs".to_owned())
        })
    }
}

type CheckSender = mpsc::Sender<Result<TransactionCheck, tonic::Status>>;

/// Routers watching check-backs, with the topics their producers publish.
#[derive(Default)]
pub struct CheckWatchers {
    watchers: Mutex<BTreeMap<u64, (BTreeSet<String>, CheckSender)>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl CheckWatchers {
    /// Adds a watcher; returns its id.
    pub fn add(&self, sender: CheckSender) -> u64 {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.watchers.lock().insert(id, (BTreeSet::new(), sender));
        id
    }

    /// Replaces watcher `id`'s topics.
    pub fn set_topics(&self, id: u64, topics: BTreeSet<String>) {
        if let Some(watcher) = self.watchers.lock().get_mut(&id) {
            watcher.0 = topics;
        }
    }

    pub fn remove(&self, id: u64) {
        self.watchers.lock().remove(&id);
    }

    fn interested(&self, topic: &str) -> bool {
        self.watchers
            .lock()
            .values()
            .any(|(topics, sender)| topics.contains(topic) && !sender.is_closed())
    }

    fn offer(&self, check: &TransactionCheck) -> bool {
        self.watchers
            .lock()
            .values()
            .filter(|(topics, _)| topics.contains(&check.topic))
            .any(|(_, sender)| sender.try_send(Ok(check.clone())).is_ok())
    }
}

/// An open transaction the check task follows.
struct Followed {
    half: HalfMessage,
    checks: u32,
    last_check_ms: i64,
}

/// What the check task decided for one open transaction.
enum Step {
    Wait,
    Check,
    RollBack(&'static str),
}

/// Runs the check task until the node shuts down; see the module docs.
pub async fn run<S: LogStore>(context: Arc<NodeContext<S>>) {
    let mut followed: BTreeMap<u64, Followed> = BTreeMap::new();
    loop {
        tokio::select! {
            () = context.shutdown.cancelled() => return,
            () = tokio::time::sleep(TICK) => {}
        }
        if let Err(error) = look(&context, &mut followed).await {
            tracing::warn!(
                error = %meridian_report::Report(&error),
                "could not check the open transactions; trying again"
            );
        }
    }
}

/// One look at the open transactions.
async fn look<S: LogStore>(
    context: &Arc<NodeContext<S>>,
    followed: &mut BTreeMap<u64, Followed>,
) -> Result<(), NodeError> {
    let known: BTreeSet<u64> = followed.keys().copied().collect();
    let topology = Arc::clone(&context.topology.get());
    let now = now_ms();
    // Open transactions, new ones read (and applied at once when their
    // outcome is already stored).
    let (open, new, woken) = context
        .blocking(move |store, consumers| {
            let open = store.open_transactions()?;
            let mut new = Vec::new();
            let mut woken = BTreeSet::new();
            for transaction in &open {
                if known.contains(&transaction.sequence) {
                    continue;
                }
                let Some(record) = store.get(transaction.sequence)? else {
                    continue;
                };
                if let Some(end) = stored_end(store, &record.dedup_id)? {
                    woken.extend(apply_end(store, consumers, &topology, &end, now)?);
                    continue;
                }
                new.push((*transaction, record));
            }
            Ok((open, new, woken))
        })
        .await?;
    if !woken.is_empty() {
        context.commit.signal_topics(&woken);
    }
    let open: BTreeSet<u64> = open.iter().map(|open| open.sequence).collect();
    followed.retain(|sequence, _| open.contains(sequence));
    for (transaction, record) in new {
        if record.message.is_none() {
            continue;
        }
        followed.insert(
            transaction.sequence,
            Followed {
                half: HalfMessage { record },
                checks: transaction.checks,
                last_check_ms: transaction.last_check_ms,
            },
        );
    }
    let mut ended = Vec::new();
    for (sequence, transaction) in followed.iter_mut() {
        match step(context, transaction, now) {
            Step::Wait => {}
            Step::RollBack(reason) => {
                tracing::warn!(
                    topic = transaction.half.topic(),
                    message_id = transaction.half.message().client_message_id,
                    checks = transaction.checks,
                    reason,
                    "rolling back an open transaction"
                );
                end(
                    context,
                    &transaction.half,
                    false,
                    TransactionEndSource::Timeout,
                    "",
                )
                .await?;
                ended.push(*sequence);
            }
            Step::Check => {
                let check = TransactionCheck {
                    topic: transaction.half.topic().to_owned(),
                    message: Some(rocketmq_message(
                        transaction.half.message().clone(),
                        &context.node_address.to_string(),
                    )),
                    transaction_id: transaction_id(
                        &context.region,
                        &transaction.half.record.dedup_id,
                    ),
                };
                let Some(producer) = context.transactions.offer(&check) else {
                    continue;
                };
                let (sequence, checks) = (*sequence, transaction.checks + 1);
                context.tracer.note(
                    &check.topic,
                    &transaction.half.record.dedup_id,
                    TraceEventKind::TransactionChecked,
                    "",
                    &producer,
                    checks,
                );
                let still_open = context
                    .blocking(move |store, _| {
                        Ok(store.note_transaction_check(sequence, checks, now)?)
                    })
                    .await?;
                transaction.checks = checks;
                transaction.last_check_ms = now;
                if !still_open {
                    ended.push(sequence);
                }
            }
        }
    }
    for sequence in ended {
        followed.remove(&sequence);
    }
    Ok(())
}

/// The user property by which a half message names its own check time, in
/// seconds (the Aliyun MQ HTTP API's, set by its SDKs'
/// `set_trans_check_immunity_time`).
pub const CHECK_IMMUNITY_PROPERTY: &str = "__TransCheckT";

/// A half message's own check time in ms, from [`CHECK_IMMUNITY_PROPERTY`]
/// (1 s to 1 day; other values are ignored).
fn check_immunity_ms(message: &meridian_proto::meridian::v1::Message) -> Option<i64> {
    message
        .user_properties
        .get(CHECK_IMMUNITY_PROPERTY)
        .and_then(|seconds| seconds.trim().parse::<i64>().ok())
        .filter(|seconds| (1..=86_400).contains(seconds))
        .map(|seconds| seconds * 1000)
}

/// What to do now about one open transaction.
fn step<S: LogStore>(context: &NodeContext<S>, transaction: &Followed, now: i64) -> Step {
    let message = transaction.half.message();
    let topology = context.topology.get();
    let Some(topic) = topology.topic(&message.topic) else {
        return Step::RollBack("its topic is no longer in the topology");
    };
    // When the half message was stored (by its origin), else its birth.
    let stored_at = if message.store_timestamp_ms != 0 {
        message.store_timestamp_ms
    } else {
        message.born_timestamp_ms
    };
    let age = now.saturating_sub(stored_at);
    if age >= i64::try_from(topic.retention_ms).unwrap_or(i64::MAX) {
        return Step::RollBack("open for longer than the topic's retention");
    }
    if transaction.half.record.origin_region != context.region {
        // The region that took it asks its producers.
        return Step::Wait;
    }
    let checks = &topic.transaction_checks;
    // A message's own check time (the Aliyun MQ HTTP API's `__TransCheckT`,
    // seconds) replaces the topic's first check and interval.
    let own = check_immunity_ms(message);
    let due = if transaction.checks == 0 {
        stored_at.saturating_add(
            own.unwrap_or_else(|| i64::try_from(checks.first_after_ms).unwrap_or(i64::MAX)),
        )
    } else {
        transaction.last_check_ms.saturating_add(
            own.unwrap_or_else(|| i64::try_from(checks.interval_ms).unwrap_or(i64::MAX)),
        )
    };
    if now < due {
        return Step::Wait;
    }
    if transaction.checks >= checks.max {
        return Step::RollBack("no outcome after the topic's maximum number of check-backs");
    }
    if context.transactions.can_check(&message.topic) {
        Step::Check
    } else {
        Step::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_name_the_region_and_the_half_message() {
        let id = transaction_id("eu-west", &[0xab; 16]);
        assert_eq!(id, format!("t1.eu-west.{}", "ab".repeat(16)));
        assert_eq!(
            parse_transaction_id(&id).expect("parse"),
            ("eu-west".to_owned(), vec![0xab; 16])
        );
        for bad in [
            "",
            "t1",
            "t1.eu-west",
            "t2.eu-west.abab",
            "t1.eu-west.zz",
            "t1..abababababababababababababababab",
            "t1.a.b.c",
        ] {
            assert!(parse_transaction_id(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn every_outcome_of_a_transaction_has_one_dedup_id() {
        assert_eq!(end_dedup_id(&[1; 16]), end_dedup_id(&[1; 16]));
        assert_ne!(end_dedup_id(&[1; 16]), end_dedup_id(&[2; 16]));
        assert_ne!(end_dedup_id(&[1; 16]), vec![1; 16]);
    }
}
