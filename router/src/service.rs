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
//! Left out: EndTransaction and the other RPCs the nodes do not serve yet,
//! and pushing orphaned-transaction checks on the Telemetry stream.

use crate::proxy::Proxy;
use crate::route::Routes;
use meridian_face::{Backend, Caller, Refusal, SendReceipt};
use meridian_proto::rocketmq::v2::{
    AckMessageRequest, ChangeInvisibleDurationRequest, ForwardMessageToDeadLetterQueueRequest,
    Message, MessageQueue, ReceiveMessageRequest, Resource,
};
use meridian_topology::RouterMode;

/// The router's business: routes, and in proxy mode the calls themselves.
pub(crate) struct RouterBackend {
    routes: Routes,
    /// Set in proxy mode.
    proxy: Option<Proxy>,
}

impl RouterBackend {
    pub(crate) fn new(routes: Routes, mode: RouterMode) -> Self {
        let proxy = (mode == RouterMode::Proxy).then(Proxy::default);
        RouterBackend { routes, proxy }
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
        match &self.proxy {
            Some(proxy) => proxy.send(&self.routes, caller, messages).await,
            None => vec![Err(self.unserved("SendMessage")); messages.len()],
        }
    }

    async fn receive(
        &self,
        caller: &Caller,
        request: ReceiveMessageRequest,
    ) -> Result<Vec<Message>, Refusal> {
        match &self.proxy {
            Some(proxy) => proxy.receive(&self.routes, caller, request).await,
            None => Err(self.unserved("ReceiveMessage")),
        }
    }

    async fn ack(
        &self,
        caller: &Caller,
        request: AckMessageRequest,
    ) -> Result<Vec<Result<(), Refusal>>, Refusal> {
        match &self.proxy {
            Some(proxy) => proxy.ack(&self.routes, caller, request).await,
            None => Err(self.unserved("AckMessage")),
        }
    }

    async fn change_invisible_duration(
        &self,
        caller: &Caller,
        request: ChangeInvisibleDurationRequest,
    ) -> Result<String, Refusal> {
        match &self.proxy {
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
        match &self.proxy {
            Some(proxy) => {
                proxy
                    .forward_to_dead_letter(&self.routes, caller, request)
                    .await
            }
            None => Err(self.unserved("ForwardMessageToDeadLetterQueue")),
        }
    }
}
