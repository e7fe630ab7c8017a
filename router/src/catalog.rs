//! Topics and groups changed through the admin API, learnt from the nodes.
//!
//! Every node keeps the newest change of each topic and consumer group
//! (`NodeService.GetCatalog`); changes replicate to every region, so any
//! node's catalog will do. The router asks its own region's node every
//! [`POLL_EVERY`], the other regions' in turn while its own does not answer,
//! and lays what it learns over its topology file ([`Routes::apply_catalog`]),
//! so a topic created in any region is routed within about a second of its
//! creation reaching a node.

use crate::route::Routes;
use meridian_face::access::Signer;
use meridian_face::tls::Dialer;
use meridian_proto::meridian::v1::GetCatalogRequest;
use meridian_proto::meridian::v1::node_service_client::NodeServiceClient;
use meridian_topology::{CatalogEntry, CatalogKind, Topology};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::trace;

/// How often the router asks for the catalog.
pub(crate) const POLL_EVERY: Duration = Duration::from_secs(1);
/// Longest one ask may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Polls the nodes' catalog for `routes` until `stop`.
pub(crate) async fn poll(
    topology: &Topology,
    own: &str,
    routes: Arc<Routes>,
    signer: Signer,
    dialer: Dialer,
    stop: CancellationToken,
) {
    // Own region first, then the others by distance.
    let nodes: Vec<SocketAddr> = topology
        .regions_by_distance(own)
        .into_iter()
        .filter_map(|(name, _)| topology.regions.get(name).map(|region| region.admin))
        .collect();
    let mut ticks = tokio::time::interval(POLL_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let asked = async {
            for admin in &nodes {
                match ask(*admin, &signer, &dialer).await {
                    Ok(entries) => {
                        routes.apply_catalog(entries);
                        break;
                    }
                    Err(error) => trace!(%admin, %error, "catalog not available"),
                }
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = asked => {}
        }
    }
}

/// The catalog the node at `admin` keeps.
async fn ask(
    admin: SocketAddr,
    signer: &Signer,
    dialer: &Dialer,
) -> Result<Vec<CatalogEntry>, tonic::Status> {
    let channel = dialer
        .endpoint(admin)
        .map_err(|error| tonic::Status::invalid_argument(error.to_string()))?
        .connect_timeout(ASK_TIMEOUT)
        .timeout(ASK_TIMEOUT)
        .connect()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let changes = NodeServiceClient::with_interceptor(channel, signer.clone())
        .get_catalog(GetCatalogRequest {})
        .await?
        .into_inner()
        .changes;
    Ok(changes
        .into_iter()
        .filter_map(|change| {
            Some(CatalogEntry {
                kind: CatalogKind::from_wire(change.kind)?,
                name: change.name,
                definition: change.definition_toml,
                deleted: change.deleted,
                changed_at_ms: change.changed_at_ms,
                region: change.region,
            })
        })
        .collect())
}
