//! Producers connected to this server by a Telemetry stream, so the server
//! can ask one of them about a transaction left open.
//!
//! RocketMQ 5 asks producers about orphaned transactions with a
//! `RecoverOrphanedTransactionCommand` pushed on a Telemetry stream of a
//! producer whose settings name the transaction's topic
//! (shared/protocols/rocketmq-grpc.md, "Transaction" §3). The face records
//! every stream whose client sent `Settings` with `publishing`, with the
//! topics listed there and the topics the client has since sent to (the
//! Rust client 5.0.0 lists only the topics its options name), and forgets
//! it when the stream ends. The Rust client keeps only its access point's
//! stream open (the router's), Python and Node.js one per endpoint, so the
//! node offers a check to its own producers first and to routers second
//! (`meridian.v1.NodeService.WatchTransactionChecks`), and a router offers
//! what it is sent to its producers.

use meridian_proto::rocketmq::v2::{
    Message, RecoverOrphanedTransactionCommand, TelemetryCommand, telemetry_command,
};
use parking_lot::Mutex;
use std::collections::BTreeSet;
use tokio::sync::{mpsc, watch};
use tracing::debug;

type Replies = mpsc::Sender<Result<TelemetryCommand, tonic::Status>>;

/// The live producer streams of one server; see the module docs.
pub struct Producers {
    streams: Mutex<Streams>,
    /// Every topic some live producer stream publishes.
    topics: watch::Sender<BTreeSet<String>>,
}

#[derive(Default)]
struct Streams {
    next_id: u64,
    /// Oldest first.
    live: Vec<ProducerStream>,
}

struct ProducerStream {
    id: u64,
    client_id: String,
    topics: BTreeSet<String>,
    replies: Replies,
}

/// One registered Telemetry stream, for [`Producers::forget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamId(u64);

impl Default for Producers {
    fn default() -> Self {
        Producers {
            streams: Mutex::new(Streams::default()),
            topics: watch::Sender::new(BTreeSet::new()),
        }
    }
}

impl Producers {
    /// Records (or updates) the stream `id` of producer `client_id`
    /// publishing `topics`; `None` registers a new stream. Returns its id.
    pub(crate) fn publish(
        &self,
        id: Option<StreamId>,
        client_id: &str,
        topics: impl IntoIterator<Item = String>,
        replies: &Replies,
    ) -> StreamId {
        let topics: BTreeSet<String> = topics.into_iter().collect();
        let mut streams = self.streams.lock();
        let id = match id.and_then(|id| streams.live.iter_mut().find(|stream| stream.id == id.0)) {
            Some(stream) => {
                stream.topics.extend(topics);
                StreamId(stream.id)
            }
            None => {
                streams.next_id += 1;
                let id = streams.next_id;
                streams.live.push(ProducerStream {
                    id,
                    client_id: client_id.to_owned(),
                    topics,
                    replies: replies.clone(),
                });
                StreamId(id)
            }
        };
        self.publish_topics(&streams);
        id
    }

    /// Forgets the stream `id` (it ended).
    pub(crate) fn forget(&self, id: StreamId) {
        let mut streams = self.streams.lock();
        streams.live.retain(|stream| stream.id != id.0);
        self.publish_topics(&streams);
    }

    /// Notes that `client_id` sent a message of `topic`: its streams publish it.
    pub(crate) fn sent(&self, client_id: &str, topic: &str) {
        let mut streams = self.streams.lock();
        let mut added = false;
        for stream in streams
            .live
            .iter_mut()
            .filter(|stream| stream.client_id == client_id)
        {
            added |= stream.topics.insert(topic.to_owned());
        }
        if added {
            self.publish_topics(&streams);
        }
    }

    /// Every topic a live producer stream publishes, and its changes.
    pub fn topics(&self) -> watch::Receiver<BTreeSet<String>> {
        self.topics.subscribe()
    }

    /// Whether a live producer stream publishes `topic`.
    pub fn publishes(&self, topic: &str) -> bool {
        self.topics.borrow().contains(topic)
    }

    /// Pushes a check-back of the transaction `transaction_id` (its half
    /// message `message`, of `topic`) on the newest live stream of a
    /// producer of `topic` that has room; returns the client id of the
    /// producer that took it, `None` when none did.
    pub fn offer(&self, topic: &str, message: &Message, transaction_id: &str) -> Option<String> {
        let command = TelemetryCommand {
            status: None,
            command: Some(
                telemetry_command::Command::RecoverOrphanedTransactionCommand(
                    RecoverOrphanedTransactionCommand {
                        message: Some(message.clone()),
                        transaction_id: transaction_id.to_owned(),
                    },
                ),
            ),
        };
        let mut streams = self.streams.lock();
        let mut closed = false;
        let mut taken = None;
        for stream in streams
            .live
            .iter()
            .rev()
            .filter(|stream| stream.topics.contains(topic))
        {
            match stream.replies.try_send(Ok(command.clone())) {
                Ok(()) => {
                    debug!(
                        client_id = stream.client_id,
                        topic, transaction_id, "asked a producer about an open transaction"
                    );
                    taken = Some(stream.client_id.clone());
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => closed = true,
                Err(mpsc::error::TrySendError::Full(_)) => {}
            }
        }
        if closed {
            streams.live.retain(|stream| !stream.replies.is_closed());
            self.publish_topics(&streams);
        }
        taken
    }

    fn publish_topics(&self, streams: &Streams) {
        let topics: BTreeSet<String> = streams
            .live
            .iter()
            .flat_map(|stream| stream.topics.iter().cloned())
            .collect();
        self.topics.send_if_modified(|current| {
            let changed = *current != topics;
            if changed {
                *current = topics;
            }
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message::default()
    }

    fn check_of(
        receiver: &mut mpsc::Receiver<Result<TelemetryCommand, tonic::Status>>,
    ) -> Option<String> {
        match receiver.try_recv().ok()?.ok()?.command? {
            telemetry_command::Command::RecoverOrphanedTransactionCommand(command) => {
                Some(command.transaction_id)
            }
            _ => None,
        }
    }

    #[test]
    fn a_check_goes_to_the_newest_producer_of_its_topic() {
        let producers = Producers::default();
        let (old, mut old_receiver) = mpsc::channel(4);
        let (new, mut new_receiver) = mpsc::channel(4);
        let (other, mut other_receiver) = mpsc::channel(4);
        producers.publish(None, "a", ["orders".to_owned()], &old);
        producers.publish(None, "b", ["orders".to_owned()], &new);
        producers.publish(None, "c", ["audit".to_owned()], &other);
        assert_eq!(
            producers.offer("orders", &message(), "t1").as_deref(),
            Some("b")
        );
        assert_eq!(check_of(&mut new_receiver).as_deref(), Some("t1"));
        assert_eq!(check_of(&mut old_receiver), None);
        assert_eq!(check_of(&mut other_receiver), None);
        assert_eq!(producers.offer("payments", &message(), "t2"), None);
    }

    #[test]
    fn ended_streams_are_forgotten_and_topics_follow() {
        let producers = Producers::default();
        let topics = producers.topics();
        let (replies, receiver) = mpsc::channel(4);
        let id = producers.publish(None, "a", [], &replies);
        assert!(topics.borrow().is_empty());
        producers.sent("a", "orders");
        assert!(producers.publishes("orders"));
        drop(receiver);
        assert_eq!(producers.offer("orders", &message(), "t1"), None);
        assert!(!producers.publishes("orders"), "a closed stream is dropped");
        producers.forget(id);
        assert!(topics.borrow().is_empty());
    }
}
