//! EndTransaction on the node: the outcome of a half message's transaction,
//! from its producer or answering a check-back (`crate::transactions`).

use super::backend::NodeBackend;
use crate::error::NodeError;
use crate::storage::LogStore;
use crate::transactions::{self, Ending};
use meridian_face::Caller;
use meridian_proto::meridian::v1::TransactionEndSource;
use meridian_proto::rocketmq::v2::{
    EndTransactionRequest, TransactionResolution, TransactionSource,
};

impl<S: LogStore> NodeBackend<S> {
    /// Commits or rolls back the transaction `request` names. UNSPECIFIED
    /// (a producer's checker that does not know yet) keeps it open. A
    /// repeated resolution answers OK; the other resolution of a
    /// transaction that already ended is refused (`INVALID_TRANSACTION_ID`).
    pub(super) async fn end_transaction_request(
        &self,
        caller: &Caller,
        request: EndTransactionRequest,
    ) -> Result<(), NodeError> {
        let (region, dedup_id) = transactions::parse_transaction_id(&request.transaction_id)?;
        let (topic, _) = self.topic(request.topic.as_ref())?;
        let commit = match request.resolution() {
            TransactionResolution::Commit => true,
            TransactionResolution::Rollback => false,
            TransactionResolution::Unspecified => {
                tracing::debug!(
                    transaction_id = request.transaction_id,
                    client_id = caller.client_id,
                    "the producer does not know the transaction's outcome yet; it stays open"
                );
                return Ok(());
            }
        };
        let source = match request.source() {
            TransactionSource::SourceServerCheck => TransactionEndSource::ServerCheck,
            _ => TransactionEndSource::Client,
        };
        let half = self
            .context
            .blocking(move |store, _| transactions::find_half_message(store, &dedup_id))
            .await?;
        let invalid = |reason: String| NodeError::InvalidTransactionId {
            transaction_id: request.transaction_id.clone(),
            reason,
        };
        let Some(half) = half else {
            return Err(invalid(if region == self.context.region {
                "no half message with this id is stored in this region (retention may have \
                 removed it)"
                    .to_owned()
            } else {
                format!(
                    "region `{region}` took its half message, which has not reached region \
                     `{}` (yet)",
                    self.context.region
                )
            }));
        };
        if half.topic() != topic {
            return Err(invalid(format!(
                "its half message belongs to topic `{}`, not `{topic}`",
                half.topic()
            )));
        }
        match transactions::end(&self.context, &half, commit, source, &caller.client_id).await? {
            Ending::Ended | Ending::AlreadyEnded { same: true, .. } => Ok(()),
            Ending::AlreadyEnded { committed, .. } => Err(NodeError::TransactionAlreadyEnded {
                transaction_id: request.transaction_id,
                ended: if committed {
                    "committed"
                } else {
                    "rolled back"
                },
                asked: if commit { "commit" } else { "rollback" },
            }),
        }
    }
}
