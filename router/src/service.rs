//! The router's side of the RocketMQ face (`meridian-face`).
//!
//! The router is an access point: it answers QueryRoute and QueryAssignment,
//! and the face keeps clients' sessions happy (Heartbeat, Telemetry settings,
//! NotifyClientTermination). In direct mode routes point at the nearest
//! healthy region's node and every other call is refused with
//! `NOT_IMPLEMENTED`, pointing clients at that node; in proxy mode routes
//! point at the router, which carries Send, Receive, Ack,
//! ChangeInvisibleDuration and ForwardMessageToDeadLetterQueue to the nodes
//! (`proxy.rs`).
//!
//! In both modes the router carries EndTransaction to the node (the Rust
//! client sends it to its access point) and pushes orphaned-transaction
//! check-backs the nodes send it (`checks.rs`) on its producers' Telemetry
//! streams.

use crate::proxy::Proxy;
use crate::route::Routes;
use meridian_face::access::Authentication;
use meridian_face::{Backend, Caller, Refusal, SendReceipt};
use meridian_proto::rocketmq::v2::{
    AckMessageRequest, ChangeInvisibleDurationRequest, EndTransactionRequest,
    ForwardMessageToDeadLetterQueueRequest, Message, MessageQueue, ReceiveMessageRequest, Resource,
};
use meridian_topology::RouterMode;

/// The router's business: routes, and in proxy mode the calls themselves.
pub(crate) struct RouterBackend {
    routes: std::sync::Arc<Routes>,
    /// Clients of the nodes: for every call in proxy mode, for
    /// EndTransaction in both.
    nodes: Proxy,
    mode: RouterMode,
}

impl RouterBackend {
    /// `authentication` signs the calls carried to nodes for their callers.
    pub(crate) fn new(
        routes: std::sync::Arc<Routes>,
        mode: RouterMode,
        authentication: Authentication,
        dialer: meridian_face::tls::Dialer,
    ) -> Self {
        RouterBackend {
            routes,
            nodes: Proxy::new(authentication, dialer),
            mode,
        }
    }

    /// The node clients, in proxy mode.
    fn proxy(&self) -> Option<&Proxy> {
        (self.mode == RouterMode::Proxy).then_some(&self.nodes)
    }

    fn unserved(&self, rpc: &str) -> Refusal {
        Refusal::not_implemented(rpc, self.unserved_hint())
    }
}

#[tonic::async_trait]
impl Backend for RouterBackend {
    fn unserved_hint(&self) -> &'static str {
        "the router only serves routes; send it to the node endpoints returned by QueryRoute"
    }

    fn group_policy(&self, group: &str) -> meridian_topology::Group {
        self.routes.topology().group(group).into_owned()
    }

    async fn route(
        &self,
        _caller: &Caller,
        rpc: &'static str,
        topic: Option<&Resource>,
    ) -> Result<Vec<MessageQueue>, Refusal> {
        self.routes
            .resolve(rpc, topic)
            .await
            .map_err(|error| error.refusal())
    }

    async fn send(
        &self,
        caller: &Caller,
        messages: Vec<Message>,
    ) -> Vec<Result<SendReceipt, Refusal>> {
        match self.proxy() {
            Some(proxy) => proxy.send(&self.routes, caller, messages).await,
            None => vec![Err(self.unserved("SendMessage")); messages.len()],
        }
    }

    async fn receive(
        &self,
        caller: &Caller,
        request: ReceiveMessageRequest,
    ) -> Result<Vec<Message>, Refusal> {
        match self.proxy() {
            Some(proxy) => proxy.receive(&self.routes, caller, request).await,
            None => Err(self.unserved("ReceiveMessage")),
        }
    }

    async fn ack(
        &self,
        caller: &Caller,
        request: AckMessageRequest,
    ) -> Result<Vec<Result<(), Refusal>>, Refusal> {
        match self.proxy() {
            Some(proxy) => proxy.ack(&self.routes, caller, request).await,
            None => Err(self.unserved("AckMessage")),
        }
    }

    async fn change_invisible_duration(
        &self,
        caller: &Caller,
        request: ChangeInvisibleDurationRequest,
    ) -> Result<String, Refusal> {
        match self.proxy() {
            Some(proxy) => {
                proxy
                    .change_invisible_duration(&self.routes, caller, request)
                    .await
            }
            None => Err(self.unserved("ChangeInvisibleDuration")),
        }
    }

    async fn forward_to_dead_letter(
        &self,
        caller: &Caller,
        request: ForwardMessageToDeadLetterQueueRequest,
    ) -> Result<(), Refusal> {
        match self.proxy() {
            Some(proxy) => {
                proxy
                    .forward_to_dead_letter(&self.routes, caller, request)
                    .await
            }
            None => Err(self.unserved("ForwardMessageToDeadLetterQueue")),
        }
    }

    async fn end_transaction(
        &self,
        caller: &Caller,
        request: EndTransactionRequest,
    ) -> Result<(), Refusal> {
        self.nodes
            .end_transaction(&self.routes, caller, request)
            .await
    }
}
