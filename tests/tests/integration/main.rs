//! End-to-end tests of the `meridian` binaries, driven through their public
//! protocols: the official RocketMQ Rust client, raw RocketMQ gRPC, the node's
//! internal API and the replicators' QUIC port.
//!
//! One test binary, one module per area; every test starts its own
//! [`meridian_tests::TestCluster`] and never waits by sleeping. Run
//! `cargo build -p meridian-cli` before `cargo test -p meridian-tests`.

#![allow(clippy::unwrap_used)]

mod admin;
mod bench;
mod broadcast;
mod catalog;
mod client_tls;
mod colliding_ids;
mod conformance;
mod dead_letters;
mod delay;
mod drills;
mod durability;
mod fifo;
mod filters;
mod geo_acks;
mod geo_durability;
mod http_stomp;
mod hybrid;
mod json;
mod large_bodies;
mod lifecycle;
mod nodejs_client;
mod proxy;
mod push;
mod push_nodejs;
mod python_client;
mod replication;
mod replication_frames;
mod replication_tls;
mod retention;
mod round_trip;
mod routing;
mod rust_side;
mod script;
mod security;
mod setup_script;
mod status;
mod support;
mod topology_files;
mod transactions;
mod transactions_nodejs;
mod up;
