//! A STOMP transaction: SEND, ACK and NACK frames held until COMMIT,
//! dropped at ABORT or when the connection ends. It is a buffer on this
//! connection, not a RocketMQ transaction: COMMIT applies the frames in
//! order, and a failure part-way leaves the earlier ones applied (the ERROR
//! says which one failed).

use crate::Limits;
use crate::error::SessionError;
use crate::frame::Command;
use meridian_proto::rocketmq::v2::Message;

/// A buffered frame.
pub(super) enum Action {
    /// A SEND, already turned into its message.
    Send(Box<Message>),
    /// An ACK or NACK of message `id` (checked when buffered, looked up
    /// again at COMMIT).
    Settle { command: Command, id: String },
}

#[derive(Default)]
pub(super) struct Transaction {
    pub(super) actions: Vec<Action>,
    body_bytes: usize,
}

impl Transaction {
    /// Buffers `action` of `command` in transaction `name`, within the limits.
    pub(super) fn push(
        &mut self,
        name: &str,
        command: Command,
        action: Action,
        limits: &Limits,
    ) -> Result<(), SessionError> {
        let body = match &action {
            Action::Send(message) => message.body.len(),
            Action::Settle { .. } => 0,
        };
        let bytes = self.body_bytes.saturating_add(body);
        if self.actions.len() >= limits.max_transaction_frames
            || bytes > limits.max_transaction_bytes
        {
            return Err(SessionError::TransactionTooLarge {
                command,
                transaction: name.to_owned(),
                max_frames: limits.max_transaction_frames,
                max_bytes: limits.max_transaction_bytes,
            });
        }
        self.body_bytes = bytes;
        self.actions.push(action);
        Ok(())
    }
}
