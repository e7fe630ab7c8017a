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

pub use prost;
pub use prost_types;
pub use tonic;

/// The largest message body the RocketMQ API accepts (4 MiB, as RocketMQ).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The gRPC decode limit servers set: a SendMessage with a 4 MiB body plus
/// its properties must fit (tonic's default of 4 MiB would refuse it).
pub const GRPC_MAX_DECODE_BYTES: usize = 8 * 1024 * 1024;
