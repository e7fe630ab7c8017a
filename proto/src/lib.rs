//! Protocol definitions shared by every Meridian process.
//!
//! * [`rocketmq::v2`]: the RocketMQ 5 gRPC API (`apache.rocketmq.v2`) that the
//!   official clients speak, transcribed from the public definition.
//! * [`meridian::v1`]: Meridian's own protos: the commit-log [`Record`], the
//!   node's internal API and the replication frames.
//!
//! Generated code and constants only; what node and router share of the
//! RocketMQ protocol's behaviour is in `meridian-face`. Code is generated at
//! build time by protox + tonic-prost-build; no system `protoc` is needed.
//! This crate must not depend on any Meridian crate.
//!
//! [`Record`]: meridian::v1::Record

/// The RocketMQ 5 gRPC API.
pub mod rocketmq {
    pub mod v2 {
        #![allow(clippy::all, rust_2018_idioms)]
        tonic::include_proto!("apache.rocketmq.v2");
    }
}

/// The path generated code uses for `apache.rocketmq.v2` types named in
/// Meridian's protos (`meridian.v1.TransactionCheck` carries a RocketMQ
/// message): the same module as [`rocketmq`].
#[doc(hidden)]
pub mod apache {
    pub use crate::rocketmq;
}

/// Meridian's internal protos.
pub mod meridian {
    pub mod v1 {
        #![allow(clippy::all, rust_2018_idioms)]
        tonic::include_proto!("meridian.v1");
    }
}

/// `bytes` fields of the admin API in JSON: standard base64 (as protobuf's
/// JSON mapping writes bytes), `null` when absent.
#[doc(hidden)]
pub mod json_bytes {
    pub fn serialize<S: serde::Serializer>(
        bytes: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => serializer.serialize_str(&base64(bytes)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        _deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Err(serde::de::Error::custom("bodies are never read from JSON"))
    }

    fn base64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

pub use prost;
pub use prost_types;
pub use tonic;

/// The largest message body the RocketMQ API accepts (4 MiB, as RocketMQ).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The gRPC decode limit servers set: a SendMessage with a 4 MiB body plus
/// its properties must fit (tonic's default of 4 MiB would refuse it).
pub const GRPC_MAX_DECODE_BYTES: usize = 8 * 1024 * 1024;
