//! Integration harness for Meridian: starts the real `meridian` binaries and
//! lets tests drive them the way operators and clients would.
//!
//! [`TestCluster::builder`] holds OS-chosen loopback ports for the cluster's
//! whole life (each process inherits its sockets, so no port is ever free in
//! between; see `meridian-sockets`), writes a topology file with them into a
//! fresh temp dir, starts one node, one replicator and one router per region as
//! separate processes and waits for each to print its readiness line
//! (`MERIDIAN_READY role=… region=…`) on stdout — a real signal, never a sleep.
//! Every process's stdout and stderr go to a log file in the temp dir; a cluster
//! dropped during a panic, or dropped without [`TestCluster::finish`] (an early
//! `?` return), prints the tail of every log to stderr and keeps the temp dir.
//! Dropping always kills every child with SIGKILL.
//!
//! Waiting is done with [`wait_until`], which polls a real condition with a
//! deadline and names the condition when it times out.
//!
//! The binary is found at `target/debug/meridian` next to the test executable,
//! or wherever `TEST_MERIDIAN_BIN` points. It is not built by `cargo test`; run
//! `cargo build -p meridian-cli` first. Children never inherit `MERIDIAN_*`
//! variables, since those override topology settings.
//!
//! What was left out: link emulation (latency/loss) and `meridian up`; the
//! harness runs each role as its own process so tests can kill them one by one.
//! This crate must not depend on the service crates: it only speaks to the
//! processes through their public protocols.

mod cluster;
mod command;
#[cfg(test)]
mod fake;
mod ports;
mod process;
mod wait;

pub use cluster::{
    TEST_TOPIC, TestCluster, TestClusterBuilder, region_name, topology_with_held_ports,
};
pub use command::{BINARY_OVERRIDE_VARIABLE, CommandOutput, meridian_binary, run_meridian};
pub use ports::HeldPorts;
pub use process::Role;
pub use wait::{Condition, wait_until};

pub use meridian_proto;
pub use meridian_topology;
