//! The router's side of the RocketMQ face (`meridian-face`).
//!
//! The router is an access point, not a broker: it answers QueryRoute and
//! QueryAssignment with the nearest healthy region's node; the face keeps
//! clients' sessions happy (Heartbeat, Telemetry settings,
//! NotifyClientTermination) and refuses everything else with
//! `NOT_IMPLEMENTED`, pointing clients at the node endpoints of the route.
//!
//! Left out: forwarding EndTransaction, AckMessage and friends to the owning
//! node (the Rust client sends EndTransaction to the access point), and
//! pushing orphaned-transaction checks on the Telemetry stream.

use crate::route::Routes;
use meridian_face::{Backend, Caller, Refusal};
use meridian_proto::rocketmq::v2::{MessageQueue, Resource};

/// The router's business: routes.
pub(crate) struct RouterBackend {
    routes: Routes,
}

impl RouterBackend {
    pub(crate) fn new(routes: Routes) -> Self {
        RouterBackend { routes }
    }
}

#[tonic::async_trait]
impl Backend for RouterBackend {
    fn unserved_hint(&self) -> &'static str {
        "the router only serves routes; send it to the node endpoints returned by QueryRoute"
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
}
