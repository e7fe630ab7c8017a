//! The RocketMQ 5 gRPC face that the region node and the router share.
//!
//! [`Face`] implements `apache.rocketmq.v2.MessagingService` (the 15+ RPCs the
//! official clients call) once, over a [`Backend`] that holds the business
//! rules: the node's backend stores and delivers messages, the router's
//! answers routes. What every server of the protocol must do the same way
//! lives here, so node and router cannot disagree:
//!
//! * every request must carry a non-blank `x-mq-client-id` header, else the
//!   answer is `CLIENT_ID_REQUIRED`;
//! * business errors travel in the response's `Status` with gRPC OK (as the
//!   reference proxy does); codes the oldest supported client cannot decode
//!   are downgraded in [`client_settings::status`];
//! * responses keep the shapes clients rely on (shared/protocols/rocketmq-grpc.md):
//!   SendMessage and AckMessage answers carry one entry per request item and
//!   at least one (the Rust client 5.0.0 indexes entry 0 without checking),
//!   streams carry a status frame first, ChangeInvisibleDuration always
//!   returns a usable receipt handle;
//! * Telemetry answers every `Settings` with the server's settings
//!   ([`client_settings::reply`]), and opens the response at once (the Rust
//!   client's start() waits for the headers without a timeout);
//! * RPCs a backend does not serve answer `NOT_IMPLEMENTED` with the
//!   backend's hint of where to go instead.
//!
//! The crate never depends on a Meridian service crate; both services depend
//! on it.

pub mod accept;
pub mod access;
pub mod client_settings;
pub mod delivery;
pub mod incoming;
pub mod route;
pub mod tls;

mod guard;

mod producers;
mod refusal;
mod renewal;
mod request;
mod service;

pub use guard::Guarded;
pub use producers::Producers;
pub use refusal::Refusal;
pub use renewal::{CLIENT_IDLE, MAX_LEASES, MAX_RENEWAL};
pub use service::Face;

use meridian_proto::rocketmq::v2::{
    AckMessageRequest, ChangeInvisibleDurationRequest, EndTransactionRequest,
    ForwardMessageToDeadLetterQueueRequest, Message, MessageQueue, ReceiveMessageRequest, Resource,
};
use std::time::Duration;

/// The metadata header naming the client (every official client sends it).
pub const CLIENT_ID_HEADER: &str = "x-mq-client-id";
/// The metadata header naming the client's language.
pub const LANGUAGE_HEADER: &str = "x-mq-language";

/// The region that issued a receipt handle: the routing part of the
/// node's handle format `v1.<region>.<queue>.<offset>.<attempt>.<deadline_ms>`
/// (region names never contain `.`). A router in proxy mode sends an ack or
/// invisibility change to that region's node. `None` for any other text.
pub fn receipt_handle_region(handle: &str) -> Option<&str> {
    let mut parts = handle.split('.');
    (parts.next() == Some("v1"))
        .then(|| parts.next())
        .flatten()
        .filter(|region| !region.is_empty())
}

/// The region that took a transaction's half message: the routing part of
/// the node's transaction id format `t1.<region>.<dedup id in hex>`. A router
/// sends EndTransaction to that region's node while it is up. `None` for any
/// other text.
pub fn transaction_id_region(transaction_id: &str) -> Option<&str> {
    let mut parts = transaction_id.trim().split('.');
    (parts.next() == Some("t1"))
        .then(|| parts.next())
        .flatten()
        .filter(|region| !region.is_empty())
}

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The non-blank `x-mq-client-id` header, trimmed.
    pub client_id: String,
    /// The `x-mq-language` header (`RUST`, `PYTHON`, `HTTP` for Node.js,
    /// `JAVA`, …), empty when missing: what deliveries must fit (see
    /// [`delivery`]).
    pub language: String,
    /// Time left before the caller's `grpc-timeout` (the gRPC-over-HTTP/2
    /// spec's "Timeout" header), if it sent one.
    pub remaining: Option<Duration>,
    /// A consumer of its own rather than a member of its group: a STOMP
    /// `/topic/` subscription. Its consumer state is kept under
    /// `<group>@<subscription>` (as a broadcast group's instance, see
    /// [`meridian_topology::broadcast_instance`]), starts at the topic's
    /// end, and is dropped by [`Backend::end_subscription`] (or after a day
    /// without receives). `None` for every RocketMQ client.
    pub subscription: Option<String>,
    /// The access key the caller proved it holds (its id), which the grants
    /// are checked against; `None` in development mode.
    pub access_key: Option<String>,
}

impl Caller {
    /// A caller that is not a RocketMQ client (an HTTP or STOMP face's
    /// client): `client_id` names it in traces, `language` is empty (no
    /// RocketMQ delivery limits apply), no deadline, no own subscription.
    pub fn other(client_id: impl Into<String>) -> Self {
        Caller {
            client_id: client_id.into(),
            language: String::new(),
            remaining: None,
            subscription: None,
            access_key: None,
        }
    }

    /// This caller, proven to hold `access_key`.
    #[must_use]
    pub fn with_access_key(mut self, access_key: Option<String>) -> Self {
        self.access_key = access_key;
        self
    }
}

/// What a receive from a face other than RocketMQ's may ask beyond a
/// `ReceiveMessageRequest`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// Deliver in order whatever the group's policy (a message group's next
    /// message waits until the one before is acknowledged): the Aliyun MQ
    /// HTTP API's `trans=order`.
    pub ordered: bool,
}

/// A transaction check-back taken by a polling producer (the Aliyun MQ
/// HTTP API's `trans=pop`): the half message, and the transaction id that
/// ends it (through [`Backend::end_transaction`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckBack {
    pub transaction_id: String,
    pub message: Message,
}

/// What SendMessage answers for one stored message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReceipt {
    /// The message id (the client's own, RocketMQ's `message_id`).
    pub message_id: String,
    /// The message's offset in its queue.
    pub offset: i64,
    /// For a transactional message (a half message): what the producer
    /// names in EndTransaction; empty otherwise.
    pub transaction_id: String,
}

/// The business side of the RocketMQ face. Every method gets a request whose
/// client id was checked; a method a backend leaves out answers
/// `NOT_IMPLEMENTED` with [`Backend::unserved_hint`].
#[tonic::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Appended to `NOT_IMPLEMENTED` messages: what the client should do instead.
    fn unserved_hint(&self) -> &'static str;

    /// The policies of consumer group `group` (the topology's, or the
    /// defaults), which the Telemetry settings reply tells consumers.
    fn group_policy(&self, group: &str) -> meridian_topology::Group;

    /// The queues of `topic` that QueryRoute and QueryAssignment answer
    /// (`rpc` names which, for messages).
    async fn route(
        &self,
        caller: &Caller,
        rpc: &'static str,
        topic: Option<&Resource>,
    ) -> Result<Vec<MessageQueue>, Refusal>;

    /// Stores `messages` (at least one): one outcome per message, in order.
    async fn send(
        &self,
        _caller: &Caller,
        messages: Vec<Message>,
    ) -> Vec<Result<SendReceipt, Refusal>> {
        let refusal = Refusal::not_implemented("SendMessage", self.unserved_hint());
        messages.iter().map(|_| Err(refusal.clone())).collect()
    }

    /// Messages for a SimpleConsumer's receive, after long polling if none
    /// is visible yet; an empty list answers `MESSAGE_NOT_FOUND`.
    async fn receive(
        &self,
        _caller: &Caller,
        _request: ReceiveMessageRequest,
    ) -> Result<Vec<Message>, Refusal> {
        Err(Refusal::not_implemented(
            "ReceiveMessage",
            self.unserved_hint(),
        ))
    }

    /// Acknowledges the request's entries: `Err` refuses the whole request,
    /// else one outcome per entry, in order.
    async fn ack(
        &self,
        _caller: &Caller,
        _request: AckMessageRequest,
    ) -> Result<Vec<Result<(), Refusal>>, Refusal> {
        Err(Refusal::not_implemented("AckMessage", self.unserved_hint()))
    }

    /// Changes a delivery's invisible duration; returns the new receipt handle.
    async fn change_invisible_duration(
        &self,
        _caller: &Caller,
        _request: ChangeInvisibleDurationRequest,
    ) -> Result<String, Refusal> {
        Err(Refusal::not_implemented(
            "ChangeInvisibleDuration",
            self.unserved_hint(),
        ))
    }

    /// Commits or rolls back the transaction of a half message
    /// (EndTransaction, from the producer or answering a check-back).
    async fn end_transaction(
        &self,
        _caller: &Caller,
        _request: EndTransactionRequest,
    ) -> Result<(), Refusal> {
        Err(Refusal::not_implemented(
            "EndTransaction",
            self.unserved_hint(),
        ))
    }

    /// A receive with [`ReceiveOptions`]; the default options are a plain
    /// [`Backend::receive`].
    async fn receive_with(
        &self,
        caller: &Caller,
        request: ReceiveMessageRequest,
        options: ReceiveOptions,
    ) -> Result<Vec<Message>, Refusal> {
        if options == ReceiveOptions::default() {
            self.receive(caller, request).await
        } else {
            Err(Refusal::not_implemented(
                "ordered receive",
                self.unserved_hint(),
            ))
        }
    }

    /// Drops the consumer state of `caller`'s own subscription
    /// ([`Caller::subscription`]) to `topic` in `group`: its undelivered
    /// and unacknowledged messages are not delivered to it again.
    async fn end_subscription(
        &self,
        _caller: &Caller,
        _group: &Resource,
        _topic: &Resource,
    ) -> Result<(), Refusal> {
        Err(Refusal::not_implemented(
            "ending a subscription",
            self.unserved_hint(),
        ))
    }

    /// Up to `max` check-backs of `topic`'s open transactions that are due,
    /// waiting up to `wait` for one: what a producer that polls for them
    /// gets (each counts as one check-back of its transaction). Polling
    /// also tells the node that such a producer exists.
    async fn take_check_backs(
        &self,
        _caller: &Caller,
        _topic: &Resource,
        _max: usize,
        _wait: Duration,
    ) -> Result<Vec<CheckBack>, Refusal> {
        Err(Refusal::not_implemented(
            "polling for transaction check-backs",
            self.unserved_hint(),
        ))
    }

    /// Copies the delivery a receipt handle names to the group's
    /// dead-letter topic, then acknowledges it (what FIFO push consumers
    /// call once their local retries are exhausted).
    async fn forward_to_dead_letter(
        &self,
        _caller: &Caller,
        _request: ForwardMessageToDeadLetterQueueRequest,
    ) -> Result<(), Refusal> {
        Err(Refusal::not_implemented(
            "ForwardMessageToDeadLetterQueue",
            self.unserved_hint(),
        ))
    }
}
