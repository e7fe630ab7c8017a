//! Transaction check-backs for the producers connected to this router.
//!
//! The node that took a half message asks a producer of its topic about an
//! open transaction; its own producers first, else the routers watching it
//! (`NodeService.WatchTransactionChecks`). The Rust client 5.0.0 keeps only
//! its access point's Telemetry stream open, so a Rust producer can only be
//! asked through its router. One watcher per region: it tells the region's
//! node which topics this router's producers publish (again whenever that
//! changes) and pushes each check-back the node sends on a producer's
//! Telemetry stream ([`Producers::offer`]). A lost connection is retried
//! with back-off (100 ms doubling to 2 s).

use meridian_face::Producers;
use meridian_face::access::Signer;
use meridian_face::tls::Dialer;
use meridian_proto::meridian::v1::TransactionCheckInterest;
use meridian_proto::meridian::v1::node_service_client::NodeServiceClient;
use meridian_report::Report;
use meridian_topology::Topology;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, trace};

/// Back-off between attempts to watch a node.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Starts one watcher per region of `topology` on `tasks`; they stop when
/// `stop` is cancelled.
pub(crate) fn spawn_watchers(
    topology: &Topology,
    producers: &Arc<Producers>,
    signer: &Signer,
    dialer: &Dialer,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) {
    for (region, config) in &topology.regions {
        tasks.spawn(watch(
            region.clone(),
            config.admin,
            Arc::clone(producers),
            signer.clone(),
            dialer.clone(),
            stop.clone(),
        ));
    }
}

/// Watches the check-backs of `region`'s node until `stop`.
async fn watch(
    region: String,
    admin: SocketAddr,
    producers: Arc<Producers>,
    signer: Signer,
    dialer: Dialer,
    stop: CancellationToken,
) {
    let mut backoff = new_backoff();
    loop {
        let watched = tokio::select! {
            () = stop.cancelled() => return,
            watched = watch_once(admin, &producers, &signer, &dialer) => watched,
        };
        match watched {
            // The node ended the stream (it is stopping): look again soon.
            Ok(()) => backoff = new_backoff(),
            Err(error) => {
                trace!(region, error = %Report(&error), "watching transaction checks failed")
            }
        }
        let delay = backoff.next().unwrap_or(BACKOFF_MAX);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// One watch of a node: until the stream ends or fails.
async fn watch_once(
    admin: SocketAddr,
    producers: &Producers,
    signer: &Signer,
    dialer: &Dialer,
) -> Result<(), tonic::Status> {
    let channel = dialer
        .endpoint(admin)
        .map_err(|error| tonic::Status::invalid_argument(error.to_string()))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|error| tonic::Status::unavailable(Report(&error).to_string()))?;
    let interests = WatchStream::new(producers.topics()).map(|topics| TransactionCheckInterest {
        topics: topics.into_iter().collect(),
    });
    let mut checks = NodeServiceClient::with_interceptor(channel, signer.clone())
        .watch_transaction_checks(interests)
        .await?
        .into_inner();
    while let Some(check) = checks.message().await? {
        let Some(message) = check.message.as_ref() else {
            continue;
        };
        let taken = producers.offer(&check.topic, message, &check.transaction_id);
        debug!(
            topic = check.topic,
            transaction_id = check.transaction_id,
            producer = taken.as_deref().unwrap_or("none connected"),
            "check-back from a node"
        );
    }
    Ok(())
}

fn new_backoff() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder as _;
    backon::ExponentialBuilder::new()
        .with_min_delay(BACKOFF_MIN)
        .with_max_delay(BACKOFF_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}
