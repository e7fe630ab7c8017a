//! Group commit: many concurrent appends, one storage batch.
//!
//! Every send (and every replicated batch) goes through one writer thread.
//! The writer takes whatever requests are queued when it wakes up, appends all of
//! their records in a single [`LogStore::append`] call (one RocksDB write batch,
//! one fsync in `sync` mode), then answers each caller with its own slice of
//! the results. Under load, fsyncs are shared by many clients; alone, a send
//! pays one fsync. After each batch the new last sequence is published on a
//! watch channel, which wakes commit-log tailers; and each topic that got new
//! messages is signalled on its own channel ([`CommitLog::subscribe_topic`]),
//! which wakes only the long-polling receivers of that topic.

use crate::storage::{Appended, LogStore, StorageError};
use meridian_proto::meridian::v1::Record;
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Requests waiting for the writer; senders wait (back-pressure) beyond this.
const QUEUE_CAPACITY: usize = 1024;
/// Most records written in one storage batch.
const MAX_RECORDS_PER_BATCH: usize = 4096;

struct AppendRequest {
    records: Vec<Record>,
    reply: oneshot::Sender<Result<Vec<Appended>, Arc<StorageError>>>,
}

/// Errors of an append through the commit log.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("failed to append to the commit log")]
    Storage(#[source] Arc<StorageError>),
    #[error("the commit log writer has stopped (the node is shutting down)")]
    Stopped,
}

/// Handle to the group-commit writer; cheap to clone.
#[derive(Clone)]
pub struct CommitLog {
    requests: mpsc::Sender<Job>,
    last_sequence: watch::Receiver<u64>,
    topics: TopicSignals,
    /// Counts the batches that stored messages with a delivery time.
    timers: watch::Receiver<u64>,
}

/// One watch channel per topic that someone waits on; its value counts the
/// batches that stored messages of the topic.
#[derive(Clone, Default)]
struct TopicSignals(Arc<Mutex<HashMap<String, watch::Sender<u64>>>>);

impl TopicSignals {
    fn subscribe(&self, topic: &str) -> watch::Receiver<u64> {
        self.0
            .lock()
            .entry(topic.to_owned())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe()
    }

    fn signal(&self, topics: &BTreeSet<String>) {
        let senders = self.0.lock();
        for topic in topics {
            if let Some(sender) = senders.get(topic) {
                sender.send_modify(|batches| *batches = batches.wrapping_add(1));
            }
        }
    }
}

impl CommitLog {
    /// Starts the writer thread, tracked by a task on `tracker`. It stops
    /// when `shutdown` fires and the queue is drained, or when every handle
    /// is dropped.
    pub fn start<S: LogStore>(
        store: Arc<S>,
        local_region: String,
        tracker: &tokio_util::task::TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self, StorageError> {
        let (requests, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let (sequence_sender, last_sequence) = watch::channel(store.last_sequence()?);
        let topics = TopicSignals::default();
        let (timer_sender, timers) = watch::channel(0);
        let published = Published {
            last_sequence: sequence_sender,
            topics: topics.clone(),
            timers: timer_sender,
        };
        let (finished, writer_done) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("commit-writer".to_owned())
            .spawn(move || {
                write_batches(store, local_region, receiver, published);
                drop(finished);
            })
            .map_err(|error| StorageError::Backend {
                operation: "start the commit writer thread",
                source: Box::new(error),
            })?;
        // Holds no strong handle: dropping every `CommitLog` still ends
        // the writer.
        let stopper = requests.downgrade();
        tracker.spawn(async move {
            let mut writer_done = writer_done;
            tokio::select! {
                _ = &mut writer_done => return,
                () = shutdown.cancelled() => {}
            }
            if let Some(requests) = stopper.upgrade() {
                // Queued behind the requests already sent, which are
                // written first.
                let _ = requests.send(Job::Stop).await;
            }
            let _ = writer_done.await;
        });
        Ok(Self {
            requests,
            last_sequence,
            topics,
            timers,
        })
    }

    /// Appends records (see [`LogStore::append`]); returns once they are
    /// written with the store's durability.
    pub async fn append(&self, records: Vec<Record>) -> Result<Vec<Appended>, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Job::Append(AppendRequest { records, reply }))
            .await
            .map_err(|_| CommitError::Stopped)?;
        answer
            .await
            .map_err(|_| CommitError::Stopped)?
            .map_err(CommitError::Storage)
    }

    /// A receiver of the last committed sequence; changes after every batch.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.last_sequence.clone()
    }

    /// A receiver that changes after every batch that stored messages of `topic`.
    pub fn subscribe_topic(&self, topic: &str) -> watch::Receiver<u64> {
        self.topics.subscribe(topic)
    }

    /// A receiver that changes after every batch that stored messages with
    /// a delivery time (they wait in the timer index; see `timers`).
    pub fn subscribe_timers(&self) -> watch::Receiver<u64> {
        self.timers.clone()
    }

    /// Wakes the long polls of `topics`, as a commit of their messages
    /// does (used when due timer messages join their queues).
    pub fn signal_topics(&self, topics: &BTreeSet<String>) {
        self.topics.signal(topics);
    }

    /// The last committed sequence.
    pub fn last_sequence(&self) -> u64 {
        *self.last_sequence.borrow()
    }
}

/// What the writer publishes after each batch.
struct Published {
    last_sequence: watch::Sender<u64>,
    topics: TopicSignals,
    timers: watch::Sender<u64>,
}

/// What the writer thread is asked to do.
enum Job {
    Append(AppendRequest),
    /// Take no new requests; finish the queued ones, then end.
    Stop,
}

/// The writer thread: waits for requests, writes each batch of them with
/// one [`LogStore::append`], answers, repeats until the queue is closed
/// and empty. It is an OS thread of its own rather than a task that hands
/// each batch to the blocking pool, so that a send costs two thread
/// wake-ups (to the writer, back to the caller) instead of four.
fn write_batches<S: LogStore>(
    store: Arc<S>,
    local_region: String,
    mut receiver: mpsc::Receiver<Job>,
    published: Published,
) {
    while let Some(job) = receiver.blocking_recv() {
        let first = match job {
            Job::Append(request) => request,
            Job::Stop => {
                receiver.close();
                continue;
            }
        };
        let mut record_count = first.records.len();
        let mut batch = vec![first];
        while record_count < MAX_RECORDS_PER_BATCH {
            match receiver.try_recv() {
                Ok(Job::Append(request)) => {
                    record_count += request.records.len();
                    batch.push(request);
                }
                Ok(Job::Stop) => receiver.close(),
                Err(_) => break,
            }
        }
        write_batch(&*store, &local_region, batch, record_count, &published);
    }
}

/// Appends one batch of requests' records and answers each request.
fn write_batch<S: LogStore>(
    store: &S,
    local_region: &str,
    batch: Vec<AppendRequest>,
    record_count: usize,
    published: &Published,
) {
    let sizes: Vec<usize> = batch.iter().map(|request| request.records.len()).collect();
    let mut replies = Vec::with_capacity(batch.len());
    let mut records = Vec::with_capacity(record_count);
    for request in batch {
        records.extend(request.records);
        replies.push(request.reply);
    }
    let topics = record_topics(&records);
    let timed: Vec<bool> = records
        .iter()
        .map(|record| {
            record
                .message
                .as_ref()
                .is_some_and(|message| message.delivery_timestamp_ms.is_some())
        })
        .collect();
    // A panic in the store answers this batch with an error instead of
    // ending the writer (and with it every later send).
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.append(records, local_region)
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        Err(StorageError::Backend {
            operation: "append",
            source: what.into(),
        })
    });
    match result {
        Ok(appended) => {
            if let Some(highest) = appended
                .iter()
                .filter_map(|outcome| match outcome {
                    Appended::Stored { sequence, .. } => Some(*sequence),
                    Appended::Duplicate { .. } => None,
                })
                .max()
            {
                published.last_sequence.send_if_modified(|current| {
                    let advanced = highest > *current;
                    if advanced {
                        *current = highest;
                    }
                    advanced
                });
            }
            // Messages with a delivery time wait in the timer index:
            // they wake the timer, not the topic's receivers.
            let mut stored_topics = BTreeSet::new();
            let mut stored_timers = false;
            for ((outcome, topic), timed) in appended.iter().zip(topics).zip(timed) {
                if matches!(outcome, Appended::Stored { .. }) {
                    if timed {
                        stored_timers = true;
                    } else {
                        stored_topics.insert(topic);
                    }
                }
            }
            published.topics.signal(&stored_topics);
            if stored_timers {
                published
                    .timers
                    .send_modify(|batches| *batches = batches.wrapping_add(1));
            }
            let mut outcomes = appended.into_iter();
            for (reply, size) in replies.into_iter().zip(sizes) {
                let part: Vec<Appended> = outcomes.by_ref().take(size).collect();
                // A caller that went away no longer needs its answer.
                let _ = reply.send(Ok(part));
            }
        }
        Err(error) => {
            tracing::error!(error = %error, "commit log append failed");
            let error = Arc::new(error);
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// The topic of each record's message, in order (empty for records without one).
pub(crate) fn record_topics(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|record| {
            record
                .message
                .as_ref()
                .map(|message| message.topic.clone())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;

    fn record(body: &str) -> Record {
        crate::test_records::message_record(0, body.as_bytes())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_in_the_store_fails_its_batch_and_the_writer_goes_on() {
        let store = Arc::new(crate::storage::FailingStore::new());
        let tracker = tokio_util::task::TaskTracker::new();
        let shutdown = CancellationToken::new();
        let log = CommitLog::start(store.clone(), "here".into(), &tracker, shutdown.clone())
            .expect("start");
        store.panic_next_append();
        let error = log
            .append(vec![record("first")])
            .await
            .expect_err("the store panicked");
        let chain = meridian_report::chain(&error);
        assert!(chain.contains("injected panic in append"), "{chain}");
        let outcomes = log
            .append(vec![record("second")])
            .await
            .expect("the writer still writes");
        assert!(matches!(
            outcomes[..],
            [Appended::Stored { sequence: 1, .. }]
        ));
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_each_get_their_own_outcomes() {
        let store = Arc::new(MemoryStore::new());
        let tracker = tokio_util::task::TaskTracker::new();
        let shutdown = CancellationToken::new();
        let log = CommitLog::start(store.clone(), "here".into(), &tracker, shutdown.clone())
            .expect("start");
        let mut callers = tokio::task::JoinSet::new();
        for caller in 0..64 {
            let log = log.clone();
            callers.spawn(async move {
                let records: Vec<Record> = (0..=caller % 3)
                    .map(|index| record(&format!("{caller}/{index}")))
                    .collect();
                let count = records.len();
                let outcomes = log.append(records).await.expect("append");
                assert_eq!(
                    outcomes.len(),
                    count,
                    "caller {caller} got another caller's outcomes"
                );
                outcomes
            });
        }
        let mut sequences = Vec::new();
        while let Some(outcomes) = callers.join_next().await {
            for outcome in outcomes.expect("caller task") {
                match outcome {
                    Appended::Stored { sequence, .. } => sequences.push(sequence),
                    Appended::Duplicate { .. } => panic!("no record was sent twice"),
                }
            }
        }
        sequences.sort_unstable();
        let expected: Vec<u64> = (1..=u64::try_from(sequences.len()).expect("fits")).collect();
        assert_eq!(sequences, expected, "sequences are dense and unique");
        assert_eq!(log.last_sequence(), expected.len() as u64);
        // Every body is stored under the sequence its caller was told.
        for sequence in expected {
            assert!(store.get(sequence).expect("read").is_some());
        }
        shutdown.cancel();
        tracker.close();
        drop(log);
        tracker.wait().await;
    }

    #[tokio::test]
    async fn a_commit_signals_only_the_topics_it_stored_messages_of() {
        let store = Arc::new(MemoryStore::new());
        let tracker = tokio_util::task::TaskTracker::new();
        let shutdown = CancellationToken::new();
        let log =
            CommitLog::start(store, "here".into(), &tracker, shutdown.clone()).expect("start");
        let mut orders = log.subscribe_topic("orders");
        let payments = log.subscribe_topic("payments");
        let stored = log
            .append(vec![record("for orders")])
            .await
            .expect("append");
        assert!(matches!(stored[0], Appended::Stored { .. }));
        assert!(orders.has_changed().expect("open"), "orders was signalled");
        assert!(!payments.has_changed().expect("open"), "payments was not");
        orders.borrow_and_update();
        // A duplicate stores nothing: no signal.
        let mut again = record("again");
        let first = record("first");
        again.dedup_id = first.dedup_id.clone();
        log.append(vec![first]).await.expect("append");
        orders.borrow_and_update();
        let duplicate = log.append(vec![again]).await.expect("append");
        assert!(matches!(duplicate[0], Appended::Duplicate { .. }));
        assert!(
            !orders.has_changed().expect("open"),
            "a duplicate wakes nobody"
        );
        shutdown.cancel();
        tracker.close();
        drop(log);
        tracker.wait().await;
    }

    #[tokio::test]
    async fn appends_after_shutdown_are_refused() {
        let store = Arc::new(MemoryStore::new());
        let tracker = tokio_util::task::TaskTracker::new();
        let shutdown = CancellationToken::new();
        let log =
            CommitLog::start(store, "here".into(), &tracker, shutdown.clone()).expect("start");
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
        assert!(matches!(
            log.append(vec![record("late")]).await,
            Err(CommitError::Stopped)
        ));
    }
}
