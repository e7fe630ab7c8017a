//! SendMessage on the node: each message turned into a record
//! (`convert::record_from_client`) and checked by the record rules
//! (`rules::check_record`), the valid ones appended together through group
//! commit.

use super::backend::NodeBackend;
use super::convert::{self, now_ms};
use crate::error::NodeError;
use crate::rules;
use crate::storage::{Appended, LogStore};
use meridian_face::{Refusal, SendReceipt};
use meridian_proto::rocketmq::v2::Message;
use std::sync::atomic::Ordering;

impl<S: LogStore> NodeBackend<S> {
    /// One outcome per message, in order.
    pub(super) async fn send_messages(
        &self,
        messages: Vec<Message>,
    ) -> Vec<Result<SendReceipt, Refusal>> {
        let now = now_ms();
        let mut outcomes: Vec<Result<SendReceipt, Refusal>> = Vec::with_capacity(messages.len());
        let mut records = Vec::new();
        // For each record, the index of its message.
        let mut record_message = Vec::new();
        for message in &messages {
            let message_id = message
                .system_properties
                .as_ref()
                .map(|properties| properties.message_id.clone())
                .unwrap_or_default();
            let built = self
                .topic(message.topic.as_ref())
                .and_then(|(name, _)| {
                    convert::record_from_client(message, &name, &self.context.region, now)
                })
                .and_then(|record| {
                    rules::check_record(&record, &self.context.topology)?;
                    Ok(record)
                });
            match built {
                Ok(record) => {
                    record_message.push(outcomes.len());
                    records.push(record);
                    outcomes.push(Ok(SendReceipt {
                        message_id,
                        ..SendReceipt::default()
                    }));
                }
                Err(error) => {
                    tracing::debug!(error = %error, %message_id, "send refused");
                    outcomes.push(Err(error.refusal()));
                }
            }
        }
        if records.is_empty() {
            return outcomes;
        }
        match self.context.commit.append(records).await {
            Ok(appended) => {
                for (index, outcome) in record_message.into_iter().zip(appended) {
                    let Ok(receipt) = &mut outcomes[index] else {
                        continue;
                    };
                    let offset = match outcome {
                        Appended::Stored {
                            queue_offset,
                            reused_client_id,
                            ..
                        } => {
                            if reused_client_id {
                                self.context
                                    .reused_client_ids
                                    .fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(
                                    message_id = %receipt.message_id,
                                    "a different message with this message id is already stored; \
                                     stored this one too (producers' message ids are not unique)"
                                );
                            }
                            queue_offset
                        }
                        // A producer's retry of a stored message is told the
                        // offset of the stored copy, in the queue that copy
                        // went to (a retry may name another).
                        Appended::Duplicate { queue_offset, .. } => queue_offset,
                    };
                    if let Some(offset) = offset {
                        receipt.offset = i64::try_from(offset).unwrap_or(i64::MAX);
                    }
                }
            }
            Err(error) => {
                let error = NodeError::from(error);
                tracing::error!(error = %meridian_report::Report(&error), "send failed");
                let refusal = error.refusal();
                for index in record_message {
                    outcomes[index] = Err(refusal.clone());
                }
            }
        }
        outcomes
    }
}
