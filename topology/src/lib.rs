//! Topology files: the regions, sites, links and topics of a Meridian deployment.
//!
//! Pure data plus validation. This crate must not depend on tokio, on any server
//! crate, or on anything that does I/O beyond reading the topology file.
//!
//! Every process of a deployment reads the same topology: the node learns its
//! addresses and data directory, the replicator its peers, the router the
//! link latencies that order failover, `meridian up` what to start.
//!
//! - [`Topology::load`] reads a file in layers — the TOML file, then
//!   `MERIDIAN_*` environment variables such as
//!   `MERIDIAN_REGIONS__EU_WEST__FLUSH=async` (`__` separates key segments,
//!   `_` in a region name stands for `-`; see [`Topology::load`]) — resolves
//!   relative data directories against the file's directory and calls
//!   [`Topology::validate`]. Unknown keys are refused.
//! - [`Topology::from_toml_str`] does the same from a string, without the
//!   environment layer; [`Topology::to_toml_string`] writes a topology back.
//! - [`Topology::demo`] is the built-in three-region demo.
//! - [`Topology::region`], [`Topology::topic`], [`Topology::peers`],
//!   [`Topology::distance_ms`] and [`Topology::regions_by_distance`] answer
//!   the questions the services ask.
//!
//! Every failure is a [`TopologyError`] naming the file, the key
//! (`topics.demo.queues`), the value and what is allowed. Example files,
//! each one commented, live in `topology/examples/`; a test parses them all.
//!
//! Not here yet: drills (scripted failure scenarios) and link loss/jitter for
//! the emulator.

mod demo;
mod env;
mod error;
mod graph;
mod load;
mod model;
mod validate;

pub use demo::DEMO_TOPIC;
pub use error::TopologyError;
pub use model::{
    ConsumeFrom, FlushMode, Link, MessageType, Region, RouterMode, Site, Topic, Topology,
};
