//! Probing one region's node, for as long as the router runs.
//!
//! Each region's node is asked for `Health` on its admin address every
//! [`PROBE_INTERVAL`], each probe bounded by [`PROBE_TIMEOUT`] (connecting
//! by [`CONNECT_TIMEOUT`]). One channel per region is reused, and rebuilt
//! after any failed probe so that a restarted node is found again. Outcomes
//! go to the [`HealthView`]; state changes are logged once, at INFO (up) or
//! WARN (down), individual failures only at TRACE.

use crate::error::RouterError;
use crate::health::{HealthView, Outcome, Progress, State};
use meridian_face::access::{SignedChannel, Signer};
use meridian_face::tls::Dialer;
use meridian_proto::meridian::v1::node_service_client::NodeServiceClient;
use meridian_proto::meridian::v1::{HealthRequest, HealthResponse};
use meridian_report::Report;
use meridian_topology::Topology;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Endpoint;
use tracing::{debug, info, trace, warn};

/// Time between the starts of two probes of one region.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Longest a probe may take, connecting included.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a probe may spend connecting.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Starts one prober per region of `topology` on `tasks`; they stop when
/// `stop` is cancelled.
pub(crate) fn spawn_probers(
    view: &HealthView,
    topology: &Topology,
    signer: &Signer,
    dialer: &Dialer,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> Result<(), RouterError> {
    let probers = topology
        .regions
        .iter()
        .map(|(name, region)| Prober::new(view.clone(), name, region.admin, signer.clone(), dialer))
        .collect::<Result<Vec<_>, _>>()?;
    for prober in probers {
        tasks.spawn(prober.run(stop.clone()));
    }
    Ok(())
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("connect to the node's admin API at {address}")]
    Connect {
        address: SocketAddr,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("call Health on {address}")]
    Rpc {
        address: SocketAddr,
        #[source]
        source: tonic::Status,
    },
    #[error("probe {address}: no answer within {} ms", PROBE_TIMEOUT.as_millis())]
    Timeout { address: SocketAddr },
    #[error("probe {address}: the node answered for region {answered:?}, not {expected:?}")]
    WrongRegion {
        address: SocketAddr,
        expected: String,
        answered: String,
    },
}

/// Probes one region's node for as long as the router runs.
struct Prober {
    view: HealthView,
    region: String,
    address: SocketAddr,
    endpoint: Endpoint,
    /// The reused channel; `None` after a failure, rebuilt on the next probe.
    client: Option<NodeServiceClient<SignedChannel>>,
    /// Signs the probes with the deployment's internal key.
    signer: Signer,
}

impl Prober {
    fn new(
        view: HealthView,
        region: &str,
        address: SocketAddr,
        signer: Signer,
        dialer: &Dialer,
    ) -> Result<Self, RouterError> {
        let endpoint = dialer
            .endpoint(address)
            .map_err(|source| RouterError::ProbeEndpoint {
                region: region.to_owned(),
                address,
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(PROBE_TIMEOUT);
        Ok(Prober {
            view,
            region: region.to_owned(),
            address,
            endpoint,
            client: None,
            signer,
        })
    }

    async fn run(mut self, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(PROBE_INTERVAL);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let result = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                result = self.probe() => result,
            };
            self.record(&result);
        }
        debug!(region = %self.region, "health prober stopped");
    }

    async fn probe(&mut self) -> Result<HealthResponse, ProbeError> {
        let result = match tokio::time::timeout(PROBE_TIMEOUT, self.call()).await {
            Ok(result) => result,
            Err(_) => Err(ProbeError::Timeout {
                address: self.address,
            }),
        };
        if result.is_err() {
            self.client = None;
        }
        result
    }

    async fn call(&mut self) -> Result<HealthResponse, ProbeError> {
        let mut client = match &self.client {
            Some(client) => client.clone(),
            None => {
                let channel =
                    self.endpoint
                        .connect()
                        .await
                        .map_err(|source| ProbeError::Connect {
                            address: self.address,
                            source,
                        })?;
                let client = NodeServiceClient::with_interceptor(channel, self.signer.clone());
                self.client = Some(client.clone());
                client
            }
        };
        let health = client
            .health(HealthRequest {})
            .await
            .map_err(|source| ProbeError::Rpc {
                address: self.address,
                source,
            })?
            .into_inner();
        if health.region != self.region {
            return Err(ProbeError::WrongRegion {
                address: self.address,
                expected: self.region.clone(),
                answered: health.region,
            });
        }
        Ok(health)
    }

    /// Records the probe in the view; logs state changes once, at INFO/WARN.
    fn record(&self, result: &Result<HealthResponse, ProbeError>) {
        let outcome = match result {
            Ok(_) => Outcome::Answered,
            Err(ProbeError::WrongRegion { .. }) => Outcome::WrongRegion,
            Err(_) => Outcome::Failed,
        };
        let progress = result.as_ref().ok().map(|health| Progress {
            last_sequence: health.last_sequence,
            checkpoints: health
                .checkpoints
                .iter()
                .map(|checkpoint| {
                    (
                        checkpoint.peer_region.clone(),
                        checkpoint.acked_through_sequence,
                    )
                })
                .collect(),
        });
        let change = self.view.record(&self.region, outcome, progress);
        match (change, result) {
            (Some(State::Up), Ok(health)) => info!(
                region = %self.region,
                address = %self.address,
                last_sequence = health.last_sequence,
                started_at_ms = health.started_at_ms,
                "region is up"
            ),
            (Some(State::Down), Err(error)) => warn!(
                region = %self.region,
                address = %self.address,
                error = %Report(error),
                "region is down; routing its clients elsewhere"
            ),
            (_, Err(error)) => trace!(
                region = %self.region,
                error = %Report(error),
                "health probe failed"
            ),
            _ => {}
        }
    }
}
