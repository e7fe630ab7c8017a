//! The local node's internal API as the replicator uses it.
//!
//! A thin wrapper over the generated tonic client that adds a deadline to every
//! unary call and turns failures into [`ReplicatorError`]s naming the call and
//! the node's address. The channel connects lazily and reconnects by itself,
//! so one client serves the replicator for its whole life; an unreachable node
//! shows up as failed calls, which the links retry.

use crate::error::ReplicatorError;
use crate::frame::MAX_FRAME_BYTES;
use meridian_face::access::{SignedChannel, Signer};
use meridian_face::tls::Dialer;
use meridian_proto::meridian::v1::node_service_client::NodeServiceClient;
use meridian_proto::meridian::v1::{
    ApplyRequest, ApplyResponse, Checkpoint, GetCheckpointRequest, HealthRequest, HealthResponse,
    Record, TailBatch, TailRequest,
};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline of the small unary calls (health, checkpoints) and of opening a tail.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of Apply: a durable write of one batch (at most a few MiB).
const APPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Bounds of the batches the replicator asks the node's tail for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TailLimits {
    pub records_max: u32,
    pub bytes_max: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct NodeClient {
    address: SocketAddr,
    client: NodeServiceClient<SignedChannel>,
}

impl NodeClient {
    /// A client of the node at `address`, whose calls `signer` signs, dialed
    /// plain or with TLS as `dialer` says; connects on first use.
    pub(crate) fn connect_lazy(
        address: SocketAddr,
        signer: Signer,
        dialer: &Dialer,
    ) -> Result<Self, ReplicatorError> {
        let endpoint = dialer
            .endpoint(address)
            .map_err(|source| ReplicatorError::NodeConnect { address, source })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let client = NodeServiceClient::with_interceptor(endpoint.connect_lazy(), signer)
            .max_decoding_message_size(MAX_FRAME_BYTES)
            .max_encoding_message_size(MAX_FRAME_BYTES);
        Ok(Self { address, client })
    }

    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    async fn call<T>(
        &self,
        call: &'static str,
        timeout: Duration,
        future: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ReplicatorError> {
        let address = self.address;
        match tokio::time::timeout(timeout, future).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(source)) => Err(ReplicatorError::NodeCall {
                address,
                call,
                source,
            }),
            Err(_elapsed) => Err(ReplicatorError::NodeTimeout {
                address,
                call,
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    pub(crate) async fn health(&self) -> Result<HealthResponse, ReplicatorError> {
        let mut client = self.client.clone();
        self.call("Health", CALL_TIMEOUT, client.health(HealthRequest {}))
            .await
    }

    /// The topic and group changes the node keeps (its catalog).
    pub(crate) async fn get_catalog(
        &self,
    ) -> Result<Vec<meridian_topology::CatalogEntry>, ReplicatorError> {
        let mut client = self.client.clone();
        let catalog = self
            .call(
                "GetCatalog",
                CALL_TIMEOUT,
                client.get_catalog(meridian_proto::meridian::v1::GetCatalogRequest {}),
            )
            .await?;
        Ok(catalog
            .changes
            .iter()
            .filter_map(crate::core::catalog_entry)
            .collect())
    }

    /// The checkpoint persisted for the outgoing link to `peer`.
    pub(crate) async fn get_checkpoint(&self, peer: &str) -> Result<u64, ReplicatorError> {
        let mut client = self.client.clone();
        let request = GetCheckpointRequest {
            peer_region: peer.to_owned(),
        };
        let checkpoint = self
            .call(
                "GetCheckpoint",
                CALL_TIMEOUT,
                client.get_checkpoint(request),
            )
            .await?;
        Ok(checkpoint.acked_through_sequence)
    }

    pub(crate) async fn put_checkpoint(
        &self,
        peer: &str,
        acked_through_sequence: u64,
    ) -> Result<(), ReplicatorError> {
        let mut client = self.client.clone();
        let request = Checkpoint {
            peer_region: peer.to_owned(),
            acked_through_sequence,
        };
        self.call(
            "PutCheckpoint",
            CALL_TIMEOUT,
            client.put_checkpoint(request),
        )
        .await
        .map(drop)
    }

    /// Follows the commit log after `after_sequence`, local-origin records only.
    pub(crate) async fn tail(
        &self,
        after_sequence: u64,
        limits: TailLimits,
    ) -> Result<tonic::Streaming<TailBatch>, ReplicatorError> {
        let mut client = self.client.clone();
        let request = TailRequest {
            after_sequence,
            max_records: limits.records_max,
            max_bytes: limits.bytes_max,
            local_origin_only: false,
        };
        self.call("Tail", CALL_TIMEOUT, client.tail(request)).await
    }

    /// Stores records replicated from `from_region`; returns once durable.
    pub(crate) async fn apply(
        &self,
        from_region: &str,
        records: Vec<Record>,
    ) -> Result<ApplyResponse, ReplicatorError> {
        let mut client = self.client.clone();
        let request = ApplyRequest {
            from_region: from_region.to_owned(),
            records,
        };
        self.call("Apply", APPLY_TIMEOUT, client.apply(request))
            .await
    }
}
