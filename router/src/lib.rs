//! The router: one per region, the RocketMQ access point clients dial first.
//!
//! A client asks the router for a route (`QueryRoute`, also `QueryAssignment`)
//! and gets the queues of its topic on the node of the nearest healthy
//! region: the router's own region while that one is up, else the nearest up
//! region by topology link latency. The router probes every region's node
//! continuously (the `health` and `probe` modules) so that a dead region stops
//! receiving new routes within a few seconds. It also keeps client sessions
//! going (Heartbeat, Telemetry settings, NotifyClientTermination) and refuses
//! the data-path RPCs with `NOT_IMPLEMENTED`: those go to the nodes.
//!
//! This crate depends on `meridian-proto` and `meridian-topology` only. It
//! must not depend on `meridian-region-node` or `meridian-replicator`: it
//! talks to nodes over their public gRPC APIs, like any other process.
//!
//! Entry point: [`run`]. Not here yet (see DESIGN.md): measured round-trip
//! times and replication lag in the choice, routers sharing their views,
//! epochs and FIFO home regions.

mod catalog;
mod checks;
mod error;
mod health;
mod probe;
mod proxy;
mod route;
mod service;

pub use error::RouterError;

use meridian_face::incoming::{Limits, incoming, server};
use meridian_face::tls::{Alpn, Dialer, ServerTls};
use meridian_proto::GRPC_MAX_DECODE_BYTES;
use meridian_proto::rocketmq::v2::messaging_service_server::MessagingServiceServer;
use meridian_topology::Topology;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

/// Serves the router of `region` on `listener` (plaintext HTTP/2, h2c) until
/// `shutdown` is cancelled, then stops probing, ends open Telemetry streams
/// and returns once every task it started has finished.
///
/// Fails at once if `topology` has no region `region`.
pub async fn run(
    topology: Topology,
    region: String,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RouterError> {
    topology
        .region(&region)
        .map_err(|source| RouterError::UnknownRegion {
            region: region.clone(),
            source: Box::new(source),
        })?;
    let authentication = meridian_face::access::Authentication::of_topology(
        topology.access.as_ref(),
    )
    .map_err(|source| RouterError::AccessKeys {
        source: Box::new(source),
    })?;
    let tls = ServerTls::of_topology(&topology, &region)
        .map_err(|source| RouterError::Tls {
            source: Box::new(source),
        })?
        .map(|tls| tls.with_alpn(Alpn::Grpc));
    let dialer = Dialer::of_topology(&topology).map_err(|source| RouterError::Tls {
        source: Box::new(source),
    })?;
    let tasks = TaskTracker::new();
    // Stops the probers and Telemetry streams, also when serving fails.
    let stop = shutdown.child_token();
    let view = health::HealthView::of_topology(&topology);
    let signer = authentication.internal_signer();
    probe::spawn_probers(&view, &topology, &signer, &dialer, &tasks, &stop)?;
    info!(
        region = %region,
        address = ?listener.local_addr().ok(),
        regions = topology.regions.len(),
        tls = tls.is_some(),
        "router serving"
    );
    let mode = topology
        .regions
        .get(&region)
        .map(|own| own.router_mode)
        .unwrap_or_default();
    let routes = std::sync::Arc::new(route::Routes::new(topology.clone(), region.clone(), view));
    {
        let (topology, routes, stop) = (topology.clone(), routes.clone(), stop.clone());
        let (signer, dialer) = (signer.clone(), dialer.clone());
        tasks.spawn(async move {
            catalog::poll(&topology, &region, routes, signer, dialer, stop).await
        });
    }
    let face = meridian_face::Face::new(
        std::sync::Arc::new(meridian_face::Guarded::new(
            service::RouterBackend::new(routes, mode, authentication.clone(), dialer.clone()),
            authentication,
        )),
        tasks.clone(),
        stop.clone(),
    );
    checks::spawn_watchers(
        &topology,
        &face.producers(),
        &signer,
        &dialer,
        &tasks,
        &stop,
    );
    let service =
        MessagingServiceServer::new(face).max_decoding_message_size(GRPC_MAX_DECODE_BYTES);
    let limits = Limits::default();
    let served = server(&limits)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming(listener, limits, tls), shutdown.cancelled())
        .await;
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    served.map_err(RouterError::Serve)?;
    info!("router stopped");
    Ok(())
}
