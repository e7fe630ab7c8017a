//! The router's one error type, and its translation to a RocketMQ body status.
//!
//! Business failures (an unknown topic, no region up)
//! reach clients as `Status {code, message}` inside a gRPC-OK response, as the
//! reference proxy does; [`RouterError::refusal`] is the only place that
//! picks those codes. Startup and serving failures end [`crate::run`] instead.

use meridian_face::Refusal;
use meridian_proto::rocketmq::v2::Code;
use meridian_topology::TopologyError;
use std::net::SocketAddr;

/// Everything that can go wrong in the router.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The request names no topic (or a blank one).
    #[error("resolve topic for {rpc}: the request names no topic")]
    TopicMissing { rpc: &'static str },

    /// The topology defines no such topic.
    #[error("resolve topic {topic:?} for {rpc}: the topology defines no such topic")]
    TopicNotFound { rpc: &'static str, topic: String },

    /// Every region the router could send the client to is down.
    #[error(
        "choose a region for topic {topic:?}: no region is up; regions {} are down",
        .regions.join(", ")
    )]
    NoRegionUp { topic: String, regions: Vec<String> },

    /// `run` was asked to serve a region the topology does not define.
    #[error("start the router of region {region:?}")]
    UnknownRegion {
        region: String,
        #[source]
        source: Box<TopologyError>,
    },

    /// The topology's `[access] keys_file` cannot be loaded.
    #[error("client endpoint TLS (`[client_tls]`)")]
    Tls {
        #[source]
        source: Box<meridian_face::tls::TlsError>,
    },
    #[error("load the access keys")]
    AccessKeys {
        #[source]
        source: Box<TopologyError>,
    },

    /// A region's admin address does not make a valid gRPC endpoint.
    #[error("build the health probe endpoint of region {region:?} at {address}")]
    ProbeEndpoint {
        region: String,
        address: SocketAddr,
        #[source]
        source: tonic::transport::Error,
    },

    /// The gRPC server failed.
    #[error("serve the RocketMQ API")]
    Serve(#[source] tonic::transport::Error),
}

impl RouterError {
    /// What a client receives for this error. The one place that maps
    /// router errors to RocketMQ codes.
    pub fn refusal(&self) -> Refusal {
        let code = match self {
            RouterError::TopicMissing { .. } => Code::IllegalTopic,
            RouterError::TopicNotFound { .. } => Code::TopicNotFound,
            RouterError::NoRegionUp { .. } => Code::HaNotAvailable,
            RouterError::UnknownRegion { .. }
            | RouterError::ProbeEndpoint { .. }
            | RouterError::AccessKeys { .. }
            | RouterError::Tls { .. }
            | RouterError::Serve(_) => Code::InternalError,
        };
        Refusal::new(code, self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_errors_map_to_their_codes() {
        let cases = [
            (
                RouterError::TopicMissing { rpc: "QueryRoute" },
                Code::IllegalTopic,
            ),
            (
                RouterError::TopicNotFound {
                    rpc: "QueryRoute",
                    topic: "t".to_owned(),
                },
                Code::TopicNotFound,
            ),
            (
                RouterError::NoRegionUp {
                    topic: "t".to_owned(),
                    regions: vec!["a".to_owned()],
                },
                Code::HaNotAvailable,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.refusal().code, code, "{error}");
        }
    }

    #[test]
    fn no_region_up_names_the_regions() {
        let error = RouterError::NoRegionUp {
            topic: "orders".to_owned(),
            regions: vec!["eu-west".to_owned(), "us-east".to_owned()],
        };
        assert_eq!(
            error.refusal().message,
            "choose a region for topic \"orders\": no region is up; \
             regions eu-west, us-east are down"
        );
    }
}
