//! [`Refusal`]: a business error as the client will see it.

use crate::client_settings;
use meridian_proto::rocketmq::v2::{Code, Status};

/// A RocketMQ status code and a message for the client: what a [`crate::Backend`]
/// answers instead of a result. It becomes the response's `Status` through
/// [`client_settings::status`] (which downgrades codes the oldest supported
/// client cannot decode).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Refusal {
    pub code: Code,
    pub message: String,
}

impl Refusal {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }

    /// No `x-mq-client-id` header, or a blank one.
    pub fn client_id_required() -> Self {
        Refusal::new(
            Code::ClientIdRequired,
            "the x-mq-client-id header is required (every official client sends it)",
        )
    }

    /// An RPC this server does not serve; `hint` says what to do instead.
    pub fn not_implemented(rpc: &str, hint: &str) -> Self {
        Refusal::new(
            Code::NotImplemented,
            format!("{rpc} is not implemented here: {hint}"),
        )
    }

    /// The status the client receives.
    pub fn to_status(&self) -> Status {
        client_settings::status(self.code, self.message.clone())
    }
}
