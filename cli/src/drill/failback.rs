//! What a returning region sends out: after a drill starts a region's node
//! again, the runner asks it (`Health.unconfirmed_at_start`) which records
//! each peer had not confirmed when it started, and reads them back from its
//! commit log (`Tail`), so the report lists, by message id, what the region
//! had accepted and not yet replicated when it went down. Its replicator
//! sends them again with their dedup ids; the peers store each once.

use super::report::Reconciled;
use anyhow::Context as _;
use meridian_proto::meridian::v1::node_service_client::NodeServiceClient;
use meridian_proto::meridian::v1::{HealthRequest, TailRequest};
use meridian_topology::Topology;
use std::time::Duration;

/// Longest the whole read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Records per tail batch.
const BATCH_RECORDS: u32 = 1024;
/// Bytes per tail batch.
const BATCH_BYTES: u32 = 4 * 1024 * 1024;

/// Per peer, the messages `region`'s node had not had confirmed when it
/// started, of topics replicated to that peer (empty entries left out).
pub async fn unconfirmed(topology: &Topology, region: &str) -> anyhow::Result<Vec<Reconciled>> {
    tokio::time::timeout(READ_TIMEOUT, read(topology, region))
        .await
        .with_context(|| format!("{region}'s node did not list its unconfirmed records in time"))?
}

async fn read(topology: &Topology, region: &str) -> anyhow::Result<Vec<Reconciled>> {
    let admin = topology.region(region)?.admin;
    let channel = crate::admin::dialer(topology)?
        .endpoint(admin)?
        .connect()
        .await
        .with_context(|| format!("failed to connect to {region}'s admin API at {admin}"))?;
    let mut client =
        NodeServiceClient::with_interceptor(channel, crate::admin::internal_signer(topology))
            .max_decoding_message_size(64 * 1024 * 1024);
    let health = client.health(HealthRequest {}).await?.into_inner();
    let mut reconciled = Vec::new();
    for entry in health.unconfirmed_at_start {
        if entry.last_sequence <= entry.acked_through_sequence {
            continue;
        }
        let replicated: Vec<&str> = topology
            .topics
            .iter()
            .filter(|(_, topic)| topic.replicate_to.contains(&entry.peer_region))
            .map(|(name, _)| name.as_str())
            .collect();
        let mut stream = client
            .tail(TailRequest {
                after_sequence: entry.acked_through_sequence,
                max_records: BATCH_RECORDS,
                max_bytes: BATCH_BYTES,
                local_origin_only: true,
            })
            .await?
            .into_inner();
        let mut message_ids = Vec::new();
        while let Some(batch) = stream.message().await? {
            for record in &batch.records {
                if record.sequence > entry.last_sequence {
                    break;
                }
                if let Some(message) = &record.message
                    && replicated.contains(&message.topic.as_str())
                {
                    message_ids.push(message.client_message_id.clone());
                }
            }
            if batch.through_sequence >= entry.last_sequence {
                break;
            }
        }
        reconciled.push(Reconciled {
            region: region.to_owned(),
            peer: entry.peer_region,
            after_sequence: entry.acked_through_sequence,
            through_sequence: entry.last_sequence,
            message_ids,
        });
    }
    Ok(reconciled)
}
