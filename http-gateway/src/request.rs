//! What both faces share: the gateway's state, who sent a request, the
//! publish path, and long polling over the backend.

use crate::error::GatewayError;
use crate::message::{self, Outgoing};
use crate::queues::QueuePicker;
use crate::{Config, Limits};
use futures::future::BoxFuture;
use meridian_face::{Backend, Caller, Refusal, SendReceipt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The longest one backend receive is asked to wait: the node caps a
/// receive's long poll at 20 s, so a longer wait is several receives.
pub(crate) const MAX_BACKEND_POLL: Duration = Duration::from_secs(20);
/// Pause before polling again after the backend answered "nothing" well
/// before the time it was given (so a backend that does not wait is not
/// called in a busy loop).
const EARLY_EMPTY_PAUSE: Duration = Duration::from_millis(200);

/// The gateway's state, shared by every connection.
pub(crate) struct Gateway {
    pub backend: Arc<dyn Backend>,
    pub config: Config,
    pub shutdown: CancellationToken,
    pub queues: QueuePicker,
    /// Bytes of request bodies that may be buffered at once.
    pub body_budget: Arc<Semaphore>,
    /// The listener's address (the `HostId` when a request names no Host).
    pub local_address: SocketAddr,
}

/// Who sent a request, and how to name it in answers.
#[derive(Debug, Clone)]
pub(crate) struct RequestContext {
    /// The `x-mq-request-id` of the answer.
    pub request_id: String,
    pub peer: SocketAddr,
    /// `http://host:port`, as the client addressed the server.
    pub host_id: String,
}

impl RequestContext {
    /// The backend's view of the caller: `http/<access key id>@<peer ip>`
    /// (`anonymous` in development mode), stable across a client's
    /// connections, holding the access key its signature proved.
    pub fn caller(&self, access_key: Option<&str>) -> Caller {
        Caller::other(format!(
            "http/{}@{}",
            access_key.unwrap_or("anonymous"),
            self.peer.ip()
        ))
        .with_access_key(access_key.map(str::to_owned))
    }
}

impl Gateway {
    pub fn new(
        backend: Arc<dyn Backend>,
        config: Config,
        shutdown: CancellationToken,
        local_address: SocketAddr,
    ) -> Self {
        let budget = config
            .limits
            .max_buffered_body_bytes
            .clamp(1, Semaphore::MAX_PERMITS);
        Gateway {
            backend,
            config,
            shutdown,
            queues: QueuePicker::default(),
            body_budget: Arc::new(Semaphore::new(budget)),
            local_address,
        }
    }

    /// `https` with TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// Stores `outgoing` with a fresh message id (a queue picked
    /// round-robin); the backend's receipt, its message id filled in.
    pub async fn publish(
        &self,
        caller: &Caller,
        peer: SocketAddr,
        outgoing: Outgoing,
    ) -> Result<SendReceipt, GatewayError> {
        const ACTION: &str = "publishing";
        if outgoing.body.len() > meridian_proto::MAX_BODY_BYTES {
            return Err(GatewayError::Argument {
                parameter: "message body",
                reason: format!(
                    "it is {} bytes; at most {} are allowed",
                    outgoing.body.len(),
                    meridian_proto::MAX_BODY_BYTES
                ),
            });
        }
        let queue_id = self
            .queues
            .pick(self.backend.as_ref(), caller, &outgoing.topic)
            .await
            .map_err(GatewayError::refused(ACTION))?;
        let message_id = message::new_message_id();
        let message = message::build(
            outgoing,
            message_id.clone(),
            message::now_ms(),
            peer.to_string(),
            queue_id,
        )?;
        let outcome = self
            .backend
            .send(caller, vec![message])
            .await
            .into_iter()
            .next()
            .ok_or(GatewayError::Internal {
                action: ACTION,
                reason: "the backend answered no outcome for the message".to_owned(),
            })?;
        let mut receipt = outcome.map_err(GatewayError::refused(ACTION))?;
        if receipt.message_id.is_empty() {
            receipt.message_id = message_id;
        }
        Ok(receipt)
    }

    /// Calls `attempt` with the time it may wait (at most
    /// [`MAX_BACKEND_POLL`]) until it finds something or `wait` has passed;
    /// at shutdown, ends at once with nothing (a receive cut short this way
    /// may have made messages invisible: they come back after their
    /// invisible time).
    pub async fn long_poll<T>(
        &self,
        wait: Duration,
        mut attempt: impl FnMut(Duration) -> BoxFuture<'static, Result<Vec<T>, Refusal>>,
    ) -> Result<Vec<T>, Refusal> {
        let deadline = Instant::now() + wait;
        loop {
            let slice = deadline
                .saturating_duration_since(Instant::now())
                .min(MAX_BACKEND_POLL);
            let asked_at = Instant::now();
            let found = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Ok(Vec::new()),
                found = attempt(slice) => found?,
            };
            let now = Instant::now();
            if !found.is_empty() || now >= deadline {
                return Ok(found);
            }
            if now.duration_since(asked_at) < slice / 2 {
                let pause = EARLY_EMPTY_PAUSE.min(deadline.saturating_duration_since(now));
                tokio::select! {
                    biased;
                    () = self.shutdown.cancelled() => return Ok(Vec::new()),
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}
