//! The node's errors: a request's ([`NodeError`], with its one mapping to
//! RocketMQ status codes) and the node's own start-up and serving ([`StartError`]).

use crate::commit::CommitError;
use crate::consumer::{ConsumerError, FilterError, MalformedHandle};
use crate::storage::StorageError;
use meridian_face::Refusal;
use meridian_proto::rocketmq::v2::Code;
use std::path::PathBuf;

/// Why a request failed: what a client is told (through
/// [`NodeError::refusal`] or, on the internal API, [`NodeError::to_grpc`]).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("topic `{topic}` does not exist in this deployment's topology")]
    TopicNotFound { topic: String },
    #[error(
        "topic `{topic}` is not served in region {region}: messages sent here could not reach {unreached} (regions of its replicate_to) through replicator connections; send through one of: {serving}"
    )]
    TopicNotServedHere {
        topic: String,
        region: String,
        unreached: String,
        serving: String,
    },
    #[error(
        "topic `{topic}` is a dead-letter topic: only the node writes it, when group `{group}` gives up on a message; consume it, and send what you want retried to its original topic (user property DLQ_ORIGIN_TOPIC)"
    )]
    DeadLetterTopicReadOnly { topic: String, group: String },
    #[error("request names no topic")]
    TopicMissing,
    #[error("consumer group name `{group}` is invalid: {reason}")]
    IllegalConsumerGroup { group: String, reason: &'static str },
    #[error("message has no message_id")]
    MessageIdMissing,
    #[error("message body of {size} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("topic `{topic}` does not accept {message_type} messages")]
    MessageTypeNotAccepted {
        topic: String,
        message_type: &'static str,
    },
    #[error(
        "a FIFO message needs a message group of 1 to {max} bytes (this one has {length}); messages of one group are delivered in order"
    )]
    IllegalMessageGroup { length: usize, max: usize },
    #[error("{message_type} messages are not supported yet")]
    MessageTypeUnsupported { message_type: &'static str },
    #[error("delivery time {delivery_ms} ms is invalid: {reason}")]
    IllegalDeliveryTime {
        delivery_ms: i64,
        reason: &'static str,
    },
    #[error("queue {queue_id} does not exist in topic `{topic}` ({queues} queues)")]
    IllegalQueue {
        topic: String,
        queue_id: i32,
        queues: u16,
    },
    #[error("invisible duration of {millis} ms is outside {min_ms}..={max_ms} ms")]
    IllegalInvisibleTime {
        millis: i64,
        min_ms: i64,
        max_ms: i64,
    },
    #[error("long polling time is too short: {remaining_ms} ms left before the call's deadline")]
    IllegalPollingTime { remaining_ms: i64 },
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    MalformedHandle(#[from] MalformedHandle),
    #[error("receipt handle belongs to region `{region}`, this node serves `{local}`")]
    ForeignHandle { region: String, local: String },
    #[error("replicated record is invalid: {reason}")]
    InvalidRecord { reason: String },
    #[error(
        "message stored here, but not yet applied in {copies} other region(s) of topic `{topic}` after {waited_ms} ms (durability = \"geo\"); it replicates when the link allows, and a retry of the same message is not stored twice"
    )]
    GeoDurabilityTimeout {
        topic: String,
        copies: u8,
        waited_ms: u64,
    },
    #[error(
        "consumer group `{group}` is neither configured nor tracked by this node (create it first to place a new group)"
    )]
    UnknownGroup { group: String },
    #[error("transaction id `{transaction_id}` is invalid: {reason}")]
    InvalidTransactionId {
        transaction_id: String,
        reason: String,
    },
    #[error(
        "transaction `{transaction_id}` was already {ended}; a {asked} is refused (the first outcome stored wins in every region)"
    )]
    TransactionAlreadyEnded {
        transaction_id: String,
        ended: &'static str,
        asked: &'static str,
    },
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl NodeError {
    /// What a client sees for this error. The only place where node errors
    /// become RocketMQ status codes.
    pub fn refusal(&self) -> Refusal {
        let code = match self {
            Self::TopicNotFound { .. } => Code::TopicNotFound,
            Self::TopicNotServedHere { .. } | Self::DeadLetterTopicReadOnly { .. } => {
                Code::Forbidden
            }
            Self::TopicMissing => Code::IllegalTopic,
            Self::IllegalConsumerGroup { .. } => Code::IllegalConsumerGroup,
            Self::MessageIdMissing => Code::IllegalMessageId,
            Self::BodyTooLarge { .. } => Code::MessageBodyTooLarge,
            Self::MessageTypeNotAccepted { .. } => Code::MessagePropertyConflictWithType,
            Self::MessageTypeUnsupported { .. } => Code::Unsupported,
            Self::IllegalMessageGroup { .. } => Code::IllegalMessageGroup,
            Self::IllegalDeliveryTime { .. } => Code::IllegalDeliveryTime,
            Self::IllegalQueue { .. } => Code::BadRequest,
            Self::IllegalInvisibleTime { .. } => Code::IllegalInvisibleTime,
            Self::IllegalPollingTime { .. } => Code::IllegalPollingTime,
            Self::Filter(FilterError::Invalid { .. } | FilterError::InvalidSql { .. }) => {
                Code::IllegalFilterExpression
            }
            Self::MalformedHandle(_) | Self::ForeignHandle { .. } => Code::InvalidReceiptHandle,
            Self::InvalidTransactionId { .. } | Self::TransactionAlreadyEnded { .. } => {
                Code::InvalidTransactionId
            }
            Self::UnknownGroup { .. } => Code::IllegalConsumerGroup,
            Self::Consumer(ConsumerError::InvalidReceiptHandle { .. }) => {
                Code::InvalidReceiptHandle
            }
            Self::Consumer(ConsumerError::TooManyGroups { .. }) => Code::IllegalConsumerGroup,
            Self::InvalidRecord { .. } => Code::BadRequest,
            Self::GeoDurabilityTimeout { .. } => Code::SlavePersistenceTimeout,
            Self::Consumer(ConsumerError::Storage(_)) | Self::Commit(_) | Self::Storage(_) => {
                Code::InternalError
            }
        };
        Refusal::new(code, meridian_report::chain(self))
    }

    /// The gRPC status for the internal NodeService API.
    pub fn to_grpc(&self) -> tonic::Status {
        match self {
            Self::InvalidRecord { .. } | Self::TopicNotFound { .. } => {
                tonic::Status::invalid_argument(meridian_report::chain(self))
            }
            Self::Commit(CommitError::Stopped) => {
                tonic::Status::unavailable(meridian_report::chain(self))
            }
            Self::UnknownGroup { .. } => tonic::Status::not_found(meridian_report::chain(self)),
            _ => tonic::Status::internal(meridian_report::chain(self)),
        }
    }
}

/// Why a node could not start, or stopped serving: never a client's request.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Topology(#[from] meridian_topology::TopologyError),
    #[error(
        "data directory {path} is locked by another process (is another node of this region running?)"
    )]
    Locked { path: PathBuf },
    #[error("failed to prepare data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} listener has no local address")]
    Listener {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("open storage")]
    Storage(#[from] StorageError),
    #[error("client endpoint TLS (`[client_tls]`)")]
    Tls(#[from] meridian_face::tls::TlsError),
    #[error("gRPC server on {address} failed")]
    Serve {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the {what} listener failed")]
    Face {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}
